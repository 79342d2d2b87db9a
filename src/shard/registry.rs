//! The shard's client connections, tracked so that shutdown can close the idle
//! ones at once (a half-close of the read side wakes their pending read with
//! EOF) while busy ones finish the request in hand.
//!
//! A connection registers once at accept time; per request it only flips a
//! `Cell`, so tracking costs the hot path nothing measurable.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    os::fd::RawFd,
    rc::Rc,
};

/// A connection's socket and whether it is between requests.
type Entry = (RawFd, Rc<Cell<bool>>);

pub struct Registry {
    entries: RefCell<HashMap<u64, Entry>>,
    next_id: Cell<u64>,
    max: usize,
}

/// A live connection's entry; unregisters on drop.
pub struct Registration<'r> {
    registry: &'r Registry,
    id: u64,
    idle: Rc<Cell<bool>>,
}

impl Registry {
    pub fn new(max: usize) -> Registry {
        Registry {
            entries: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            max,
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether another connection may be accepted (`max_connections`).
    pub fn has_room(&self) -> bool {
        self.active() < self.max
    }

    pub fn register(&self, fd: RawFd) -> Registration<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let idle = Rc::new(Cell::new(true));
        self.entries.borrow_mut().insert(id, (fd, idle.clone()));
        Registration {
            registry: self,
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

impl Registration<'_> {
    /// Marks the connection as waiting for a request (true) or serving one (false).
    #[inline]
    pub fn set_idle(&self, idle: bool) {
        self.idle.set(idle);
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.entries.borrow_mut().remove(&self.id);
    }
}
