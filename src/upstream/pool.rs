//! The shard's idle keep-alive connections to upstream servers, keyed by
//! server address so the same pool serves every upstream (and, later, forward
//! proxy destinations) that names that address.
//!
//! A connection enters the pool only after a complete response left nothing
//! unread. Checkout is LIFO: the most recently used connection is the one least
//! likely to have been closed by the server. Expired connections are dropped on
//! checkout and by a periodic sweep.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use glommio::net::TcpStream;

use crate::buffer::IoBuf;

/// A connection to an upstream server and the buffer its responses are read into.
pub struct UpstreamConn {
    pub stream: TcpStream,
    pub buf: IoBuf,
    pub addr: SocketAddr,
    /// Requests completed on this connection so far; >0 means it came from the pool.
    pub served: u64,
}

struct Idle {
    conn: UpstreamConn,
    expires: Instant,
}

/// Per-shard pool. Owned by the shard context; `RefCell` borrows never span an `.await`.
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    /// Buffers of closed connections, reused by new ones so that reconnecting allocates nothing.
    spare_buffers: RefCell<Vec<IoBuf>>,
    buffer_size: usize,
}

/// Buffers kept for reuse; beyond this they are freed.
const MAX_SPARE_BUFFERS: usize = 64;

impl Pool {
    pub fn new(buffer_size: usize) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            spare_buffers: RefCell::new(Vec::new()),
            buffer_size,
        }
    }

    /// The most recently returned live connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if entry.expires > now {
                return Some(entry.conn);
            }
            self.recycle(entry.conn);
        }
        None
    }

    /// Returns a connection whose last exchange completed cleanly. Kept unless
    /// the pool for its address already holds `max_idle` connections.
    pub fn put(&self, mut conn: UpstreamConn, max_idle: usize, idle_timeout: Duration) {
        if max_idle == 0 || !conn.buf.is_empty() {
            self.recycle(conn);
            return;
        }
        conn.buf.clear();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.addr).or_default();
        if list.len() >= max_idle {
            // Drop the oldest: it is the likeliest to be closed by the server soon.
            let oldest = list.remove(0);
            self.recycle(oldest.conn);
        }
        list.push(Idle {
            conn,
            expires: Instant::now() + idle_timeout,
        });
    }

    /// A buffer for a new upstream connection.
    pub fn buffer(&self) -> IoBuf {
        self.spare_buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| IoBuf::with_capacity(self.buffer_size))
    }

    /// Closes a connection, keeping its buffer for the next one.
    pub fn recycle(&self, conn: UpstreamConn) {
        let UpstreamConn { mut buf, .. } = conn;
        let mut spare = self.spare_buffers.borrow_mut();
        if spare.len() < MAX_SPARE_BUFFERS {
            buf.clear();
            spare.push(buf);
        }
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
            self.recycle(conn);
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
