//! The shard's idle keep-alive connections to upstream servers, keyed by
//! server address so the same pool serves every upstream (and, later, forward
//! proxy destinations) that names that address.
//!
//! A connection enters the pool only after a complete response left nothing
//! unread. Checkout is LIFO: the most recently used connection is the one least
//! likely to have been closed by the server. Expired connections are dropped on
//! checkout and by a periodic sweep, which also closes the surplus above
//! `keepalive` once it has been idle for [`SURPLUS_IDLE`].
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

/// How long connections beyond `keepalive` stay pooled after their last
/// use. Concurrent requests open as many upstream connections as they need;
/// closing each one beyond `keepalive` as its exchange ends (nginx's rule)
/// makes a load that stays that concurrent open and close a connection for
/// a share of its requests: 0.3 a request at 1,000 client connections and
/// `keepalive = 64`, 21.9–24.4 against 15.9–16.6 µs of CPU a request and a
/// p99 of 59–104 against 34–40 ms (docs/PERFORMANCE.md, eleventh pass). Kept a second, the
/// surplus serves the next requests, and is closed once the load that
/// needed it has passed. HAProxy likewise keeps idle connections and
/// purges them over time.
pub const SURPLUS_IDLE: Duration = Duration::from_secs(1);

struct Idle<C> {
    conn: C,
    /// When it was last returned: the list is in this order, oldest first.
    returned: Instant,
    expires: Instant,
}

/// One address's idle connections and how many of them to keep for good.
struct IdleList<C> {
    conns: Vec<Idle<C>>,
    /// `keepalive` as of the latest return (a reload may change it).
    keep: usize,
}

impl<C> Default for IdleList<C> {
    fn default() -> Self {
        IdleList {
            conns: Vec::new(),
            keep: 0,
        }
    }
}

impl<C> IdleList<C> {
    /// Takes out what expired, and the oldest of the surplus above `keep`
    /// that has been idle for `SURPLUS_IDLE`, for the caller to close.
    fn trim(&mut self, now: Instant) -> Vec<C> {
        let mut closed: Vec<C> = self
            .conns
            .extract_if(.., |idle| idle.expires <= now)
            .map(|idle| idle.conn)
            .collect();
        let surplus = self.conns.len().saturating_sub(self.keep);
        let idle_long = self.conns[..surplus]
            .iter()
            .take_while(|c| c.returned + SURPLUS_IDLE <= now)
            .count();
        closed.extend(self.conns.drain(..idle_long).map(|idle| idle.conn));
        closed
    }
}

/// Per-shard pool. Owned by the shard context; `RefCell` borrows never span an `.await`.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, IdleList<UpstreamConn>, BuildHasherDefault<AddrHasher>>>,
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
        while let Some(entry) = list.conns.pop() {
            if entry.expires > now {
                return Some(entry.conn);
            }
            self.discard(entry.conn);
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly. Kept for
    /// `idle_timeout`; the sweep closes those above `max_idle` sooner
    /// ([`SURPLUS_IDLE`]). `max_idle` 0 keeps none.
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
        let now = clock::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.addr).or_default();
        list.keep = max_idle;
        list.conns.push(Idle {
            conn,
            returned: now,
            expires: now + idle_timeout,
        });
    }

    /// Closes a connection that must not be reused. Dropping it would do the
    /// same (its buffer, if any, goes back to the shard's pool on drop); the
    /// call names the decision where it is made.
    pub fn discard(&self, conn: UpstreamConn) {
        drop(conn);
    }

    /// Drops expired idle connections and the surplus idle for
    /// [`SURPLUS_IDLE`]; called every second by the shard.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut idle = self.idle.borrow_mut();
            for list in idle.values_mut() {
                closed.extend(list.trim(now));
            }
            idle.retain(|_, list| !list.conns.is_empty());
        }
        for conn in closed {
            self.discard(conn);
        }
    }

    /// Idle connections currently held, for stats and tests.
    pub fn idle_count(&self) -> usize {
        self.idle
            .borrow()
            .values()
            .map(|list| list.conns.len())
            .sum()
    }

    /// Closes every idle connection (shutdown).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list of connections named by number, returned at `at[i]` ms after `t0`.
    fn returned_at(t0: Instant, at: &[u64], keep: usize) -> IdleList<u32> {
        let mut list = IdleList {
            keep,
            ..IdleList::default()
        };
        for (n, &ms) in at.iter().enumerate() {
            let returned = t0 + Duration::from_millis(ms);
            list.conns.push(Idle {
                conn: n as u32,
                returned,
                expires: returned + Duration::from_secs(60),
            });
        }
        list
    }

    #[test]
    fn the_surplus_stays_until_it_has_been_idle_for_a_second() {
        let t0 = Instant::now();
        let mut list = returned_at(t0, &[0, 100, 200, 900, 950], 2);
        // Half a second on: nothing has been idle long enough.
        assert!(list.trim(t0 + Duration::from_millis(500)).is_empty());
        // 1.15 s: the three oldest are surplus, two of them idle a second.
        let closed = list.trim(t0 + Duration::from_millis(1150));
        assert_eq!(closed, vec![0, 1]);
        // Much later: only the surplus goes; `keep` stay until they expire.
        let closed = list.trim(t0 + Duration::from_secs(10));
        assert_eq!(closed, vec![2]);
        assert_eq!(
            list.conns.iter().map(|c| c.conn).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }

    #[test]
    fn expired_connections_go_whatever_the_surplus() {
        let t0 = Instant::now();
        let mut list = returned_at(t0, &[0, 10], 8);
        list.conns[1].expires = t0 + Duration::from_millis(20);
        assert_eq!(list.trim(t0 + Duration::from_millis(30)), vec![1]);
        assert_eq!(list.trim(t0 + Duration::from_secs(61)), vec![0]);
        assert!(list.conns.is_empty());
    }

    #[test]
    fn keepalive_zero_keeps_nothing_past_the_grace() {
        let t0 = Instant::now();
        let mut list = returned_at(t0, &[0, 0, 0], 0);
        assert_eq!(list.trim(t0 + SURPLUS_IDLE), vec![0, 1, 2]);
    }
}
