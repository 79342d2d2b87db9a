//! The shard's client connections, tracked so that shutdown can close the idle
//! ones at once (a half-close of the read side wakes their pending read with
//! EOF) while busy ones finish the request in hand.
//!
//! A connection registers once at accept time; per request it only flips a
//! `Cell`, so tracking costs the hot path nothing measurable. The registry is
//! also the shard's connection limit (`max_connections`: the accept loop
//! waits for room) and its drain gate (shutdown waits for it to empty).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    future::poll_fn,
    os::fd::RawFd,
    rc::Rc,
    task::{Poll, Waker},
};

/// A connection's socket and whether it is between requests.
type Entry = (RawFd, Rc<Cell<bool>>);

pub struct Registry {
    entries: RefCell<HashMap<u64, Entry>>,
    next_id: Cell<u64>,
    max: usize,
    /// Tasks waiting for a connection to close (room to accept, or the drain).
    watchers: RefCell<Vec<Waker>>,
}

/// A live connection's entry; unregisters on drop.
pub struct Registration {
    registry: Rc<Registry>,
    id: u64,
    idle: Rc<Cell<bool>>,
}

impl Registry {
    pub fn new(max: usize) -> Rc<Registry> {
        Rc::new(Registry {
            entries: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            max,
            watchers: RefCell::new(Vec::new()),
        })
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Connections serving a request now (the rest wait for their next one).
    /// Walks every entry: for a scrape, not for the request path.
    pub fn busy(&self) -> usize {
        self.entries
            .borrow()
            .values()
            .filter(|(_, idle)| !idle.get())
            .count()
    }

    /// Whether another connection may be accepted (`max_connections`).
    pub fn has_room(&self) -> bool {
        self.active() < self.max
    }

    /// Waits until another connection may be accepted.
    pub async fn room(&self) {
        self.wait_until(|r| r.has_room()).await
    }

    /// Waits until every connection has closed.
    pub async fn drained(&self) {
        self.wait_until(|r| r.active() == 0).await
    }

    async fn wait_until(&self, ready: impl Fn(&Registry) -> bool) {
        poll_fn(|cx| {
            if ready(self) {
                return Poll::Ready(());
            }
            self.watchers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Registers a connection at accept time, so the limit counts it at once.
    pub fn register(self: &Rc<Self>, fd: RawFd) -> Registration {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        self.entries.borrow_mut().insert(id, (fd, idle.clone()));
        Registration {
            registry: self.clone(),
            id,
            idle,
        }
    }

    /// Half-closes every connection waiting for its next request, so its read
    /// returns EOF and it closes cleanly. Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let mut closed = 0;
        for (fd, idle) in self.entries.borrow().values() {
            if idle.get() {
                // SAFETY: the fd is owned by a live connection (entries are removed
                // on drop, before the socket closes); shutdown(2) does not close it.
                unsafe { libc::shutdown(*fd, libc::SHUT_RD) };
                closed += 1;
            }
        }
        closed
    }
}

impl Registration {
    /// Marks the connection as waiting for a request (true) or serving one (false).
    #[inline]
    pub fn set_idle(&self, idle: bool) {
        self.idle.set(idle);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries.borrow_mut().remove(&self.id);
        // Few watchers (the accept loops, a drain): wake them all to re-check.
        let watchers = std::mem::take(&mut *self.registry.watchers.borrow_mut());
        for waker in watchers {
            waker.wake();
        }
    }
}
