//! The shard's client connections, tracked so that shutdown can close the idle
//! ones at once (a half-close of the read side wakes their pending read with
//! EOF) while busy ones finish the request in hand.
//!
//! A connection registers once at accept time (a slab slot); per request it
//! only flips its slot's idle flag, so tracking costs the hot path nothing
//! measurable. The registry is
//! also the shard's connection limit (`max_connections`: the accept loop
//! waits for room) and its drain gate (shutdown waits for it to empty).

use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    os::fd::RawFd,
    rc::Rc,
    task::{Poll, Waker},
};

/// A live connection's socket and whether it is between requests.
#[derive(Clone, Copy)]
struct Entry {
    fd: RawFd,
    idle: bool,
}

/// The shard's connections in a slab: registering and unregistering are a
/// slot taken and given back (no hashing, no allocation once the slab has
/// grown to the shard's peak), which a connection per request pays each time.
pub struct Registry {
    slots: RefCell<Vec<Option<Entry>>>,
    /// Indices of empty slots, reused last-freed first.
    free: RefCell<Vec<usize>>,
    active: Cell<usize>,
    max: usize,
    /// Tasks waiting for a connection to close (room to accept, or the drain).
    watchers: RefCell<Vec<Waker>>,
}

/// A live connection's entry; unregisters on drop.
pub struct Registration {
    registry: Rc<Registry>,
    slot: usize,
}

impl Registry {
    pub fn new(max: usize) -> Rc<Registry> {
        Rc::new(Registry {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            active: Cell::new(0),
            max,
            watchers: RefCell::new(Vec::new()),
        })
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Connections serving a request now (the rest wait for their next one).
    /// Walks every entry: for a scrape, not for the request path.
    pub fn busy(&self) -> usize {
        self.slots
            .borrow()
            .iter()
            .flatten()
            .filter(|entry| !entry.idle)
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
        let entry = Some(Entry { fd, idle: true });
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => {
                slots[slot] = entry;
                slot
            }
            None => {
                slots.push(entry);
                slots.len() - 1
            }
        };
        self.active.set(self.active.get() + 1);
        Registration {
            registry: self.clone(),
            slot,
        }
    }

    /// Half-closes every connection waiting for its next request, so its read
    /// returns EOF and it closes cleanly. Returns how many were closed.
    pub fn close_idle(&self) -> usize {
        let mut closed = 0;
        for entry in self.slots.borrow().iter().flatten() {
            if entry.idle {
                // SAFETY: the fd is owned by a live connection (entries are removed
                // on drop, before the socket closes); shutdown(2) does not close it.
                unsafe { libc::shutdown(entry.fd, libc::SHUT_RD) };
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
        if let Some(entry) = &mut self.registry.slots.borrow_mut()[self.slot] {
            entry.idle = idle;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.slots.borrow_mut()[self.slot] = None;
        self.registry.free.borrow_mut().push(self.slot);
        self.registry.active.set(self.registry.active.get() - 1);
        // Few watchers (the accept loops, a drain): wake them all to re-check.
        let watchers = std::mem::take(&mut *self.registry.watchers.borrow_mut());
        for waker in watchers {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_counts_follow_registrations() {
        let registry = Registry::new(3);
        let first = registry.register(10);
        let second = registry.register(11);
        let third = registry.register(12);
        assert_eq!(registry.active(), 3);
        assert!(!registry.has_room());
        second.set_idle(false);
        third.set_idle(false);
        assert_eq!(registry.busy(), 2);
        drop(second);
        assert_eq!((registry.active(), registry.busy()), (2, 1));
        assert!(registry.has_room());
        // The freed slot is taken again; the slab does not grow.
        let fourth = registry.register(13);
        assert_eq!(fourth.slot, 1);
        assert_eq!(registry.slots.borrow().len(), 3);
        drop((first, third, fourth));
        assert_eq!((registry.active(), registry.busy()), (0, 0));
    }
}
