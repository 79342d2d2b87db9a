//! The per-shard, per-upstream wait queue for `max_conns`: when every usable
//! server has `max_conns` requests in flight from this shard, a request waits
//! here (at most `queue_timeout`) for one to finish. Waiters are served
//! highest priority class first (0 lowest, 7 highest), first come first
//! served within a class. When the queue is full (`queue_size`), a newcomer
//! of a higher class takes the place of the newest waiter of the lowest class
//! below its own, which is shed; otherwise the newcomer is shed. Shed
//! requests are answered 503 with Retry-After.
//!
//! A finished request wakes one waiter ([`Queue::wake_one`]); a waiter that
//! gives up after being woken passes the wake-up on, so none is lost.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

/// Priority classes: 0 (lowest) to 7.
pub const CLASSES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Woken,
    Shed,
    /// The waiter has seen its wake-up or shedding: nothing left to undo.
    Taken,
}

struct Slot {
    state: Cell<State>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn set(&self, state: State) {
        self.state.set(state);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A request finished: try to pick a server again.
    Woken,
    /// The queue was full, or a higher class took this place.
    Shed,
    /// `queue_timeout` passed.
    TimedOut,
}

pub struct Queue {
    classes: RefCell<[VecDeque<Rc<Slot>>; CLASSES]>,
    len: Cell<usize>,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            classes: RefCell::new(Default::default()),
            len: Cell::new(0),
            capacity,
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// Waits (at most `limit`) until a request finishes, as class `class`.
    pub async fn wait(&self, class: u8, limit: Duration) -> Admission {
        let Some(slot) = self.admit(usize::from(class).min(CLASSES - 1)) else {
            return Admission::Shed;
        };
        let waiting = Waiting {
            queue: self,
            slot,
            class: usize::from(class).min(CLASSES - 1),
        };
        match compio::time::timeout(limit, SlotFuture(&waiting.slot)).await {
            Ok(state) => {
                // The wake-up (or the shedding) is taken: nothing to pass on.
                waiting.slot.state.set(State::Taken);
                state
            }
            Err(_) => Admission::TimedOut,
        }
    }

    /// A place in the queue for class `class`, making room by shedding a
    /// lower class when full; `None` when the newcomer itself is shed.
    fn admit(&self, class: usize) -> Option<Rc<Slot>> {
        let mut classes = self.classes.borrow_mut();
        if self.len.get() >= self.capacity {
            let lowest = (0..class).find(|&c| !classes[c].is_empty())?;
            // The queue is non-empty below `class`, so pop_back succeeds.
            let victim = classes[lowest].pop_back()?;
            victim.set(State::Shed);
            self.len.set(self.len.get() - 1);
        }
        let slot = Rc::new(Slot {
            state: Cell::new(State::Waiting),
            waker: RefCell::new(None),
        });
        classes[class].push_back(slot.clone());
        self.len.set(self.len.get() + 1);
        Some(slot)
    }

    /// Wakes the first waiter of the highest class, if any: a request finished.
    pub fn wake_one(&self) {
        let mut classes = self.classes.borrow_mut();
        for class in classes.iter_mut().rev() {
            if let Some(slot) = class.pop_front() {
                self.len.set(self.len.get() - 1);
                slot.set(State::Woken);
                return;
            }
        }
    }
}

/// A place in the queue; leaving it early (timeout, the request dropped)
/// removes it, and a wake-up it received but did not use goes to the next.
struct Waiting<'q> {
    queue: &'q Queue,
    slot: Rc<Slot>,
    class: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        match self.slot.state.get() {
            State::Waiting => {
                let mut classes = self.queue.classes.borrow_mut();
                let list = &mut classes[self.class];
                if let Some(at) = list.iter().position(|s| Rc::ptr_eq(s, &self.slot)) {
                    list.remove(at);
                    self.queue.len.set(self.queue.len.get() - 1);
                }
            }
            State::Woken => self.queue.wake_one(),
            State::Shed | State::Taken => {}
        }
    }
}

struct SlotFuture<'s>(&'s Rc<Slot>);

impl Future for SlotFuture<'_> {
    type Output = Admission;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Admission> {
        match self.0.state.get() {
            State::Waiting => {
                *self.0.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
            State::Woken => Poll::Ready(Admission::Woken),
            State::Shed | State::Taken => Poll::Ready(Admission::Shed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_classes_go_first_and_shed_lower_ones_when_full() {
        let queue = Queue::new(2);
        let low = queue.admit(0).unwrap();
        let mid = queue.admit(3).unwrap();
        // Full: a class-5 newcomer sheds the class-0 waiter.
        let high = queue.admit(5).unwrap();
        assert_eq!(low.state.get(), State::Shed);
        // Full of classes 3 and 5: a class-3 newcomer has no one below it to shed.
        assert!(queue.admit(3).is_none());
        queue.wake_one();
        assert_eq!(high.state.get(), State::Woken);
        assert_eq!(mid.state.get(), State::Waiting);
        queue.wake_one();
        assert_eq!(mid.state.get(), State::Woken);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_zero_sized_queue_sheds_everyone() {
        let queue = Queue::new(0);
        assert!(queue.admit(7).is_none());
    }
}
