//! The shard's idle keep-alive connections to upstream servers, keyed by
//! server address so the same pool serves every upstream (and, later, forward
//! proxy destinations) that names that address.
//!
//! A connection enters the pool only after a complete response left nothing
//! unread. Checkout is LIFO: the most recently used connection is the one least
//! likely to have been closed by the server. Expired connections are dropped on
//! checkout and by a periodic sweep.
//!
//! An idle pooled connection holds no read buffer: its buffer goes back to
//! the shard's pool when the connection is pooled, and a buffer is leased
//! again when the connection is checked out for an exchange.

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    buffer::IoBuf,
    net::{Socket, Splicer},
    shard::clock,
    upstream::state::Lease,
};

/// A connection to an upstream server, boxed: a pooled connection moves
/// into a request and back out to the pool on every request (take, acquire,
/// retry, finish, put), and each move of the 224-byte state was a memcpy
/// (~3 % of the user instructions of a 1 KiB request). The box is allocated
/// once, when the connection is opened, and moves as a pointer.
/// A plain `Box`, so the socket and the buffer still borrow apart.
pub type UpstreamConn = Box<ConnState>;

/// What an upstream connection holds: the socket and the buffer its
/// responses are read into.
pub struct ConnState {
    pub stream: Socket,
    /// Responses are read into this; empty (no buffer leased) while pooled.
    pub buf: IoBuf,
    pub addr: SocketAddr,
    /// Requests completed on this connection so far; >0 means it came from the pool.
    pub served: u64,
    /// The request in flight on it (counted against its server); none while pooled.
    pub lease: Option<Lease>,
    /// Bytes its previous exchange received: the next response is likely
    /// alike, which decides how its head is read (see `net::Splicer`).
    pub last_received: usize,
}

impl ConnState {
    /// How much one receive of this connection's next response head may
    /// take, given the shard's splicing (none: all there is).
    pub fn head_read_at_most(&self, splicer: Option<&Splicer>) -> usize {
        splicer.map_or(usize::MAX, |s| s.head_read_at_most(self.last_received))
    }
}

struct Idle {
    conn: UpstreamConn,
    expires: Instant,
}

/// Per-shard pool. Owned by the shard context; `RefCell` borrows never span an `.await`.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
    /// Whether the shard has a provided-buffer ring, so that a pooled
    /// connection may receive its next response with a multishot receive.
    ring: bool,
}

/// FNV-1a over the address's bytes. The pool is looked up twice per
/// request; SipHash's flood resistance buys nothing for keys that come from
/// the config (or, later, from resolved destinations an ACL admitted), and
/// cost more than the lookup itself.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Pool {
    /// `ring`: the shard has a provided-buffer ring (io_uring).
    pub fn new(ring: bool) -> Pool {
        Pool {
            ring,
            ..Pool::default()
        }
    }

    /// The most recently returned live connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let now = clock::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if entry.expires > now {
                return Some(entry.conn);
            }
            self.discard(entry.conn);
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly. Kept unless
    /// the pool for its address already holds `max_idle` connections.
    pub fn put(&self, mut conn: UpstreamConn, max_idle: usize, idle_timeout: Duration) {
        if max_idle == 0 || !conn.buf.is_empty() || conn.stream.has_unread() {
            self.discard(conn);
            return;
        }
        conn.last_received = conn
            .stream
            .choose_next_receive(self.ring, crate::shard::ring::PROVIDED_BUFFER_LEN);
        // The buffer's lease ends here, and the request's: an idle connection holds neither.
        conn.buf = IoBuf::default();
        conn.lease = None;
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.addr).or_default();
        if list.len() >= max_idle {
            // Drop the oldest: it is the likeliest to be closed by the server soon.
            let oldest = list.remove(0);
            self.discard(oldest.conn);
        }
        list.push(Idle {
            conn,
            expires: clock::now() + idle_timeout,
        });
    }

    /// Closes a connection that must not be reused. Dropping it would do the
    /// same (its buffer, if any, goes back to the shard's pool on drop); the
    /// call names the decision where it is made.
    pub fn discard(&self, conn: UpstreamConn) {
        drop(conn);
    }

    /// Drops expired idle connections; called periodically by the shard.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.borrow_mut();
            for list in idle.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    if list[i].expires <= now {
                        expired.push(list.remove(i).conn);
                    } else {
                        i += 1;
                    }
                }
            }
            idle.retain(|_, list| !list.is_empty());
        }
        for conn in expired {
            self.discard(conn);
        }
    }

    /// Idle connections currently held, for stats and tests.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}
