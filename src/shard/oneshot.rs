//! A single-value channel between two tasks of the same shard: how an answer
//! that arrives over the cross-shard mesh (handled by the shard's mesh task)
//! reaches the request task waiting for it. Not `Send`: it never leaves the shard.

use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

struct Inner<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
    /// The sending half was dropped without sending.
    abandoned: Cell<bool>,
}

/// The sending half.
pub struct Sender<T>(Rc<Inner<T>>);

/// The receiving half: a future resolving to the value, or `None` if the sender was dropped.
pub struct Receiver<T>(Rc<Inner<T>>);

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Rc::new(Inner {
        value: RefCell::new(None),
        waker: RefCell::new(None),
        abandoned: Cell::new(false),
    });
    (Sender(inner.clone()), Receiver(inner))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        *self.0.value.borrow_mut() = Some(value);
        if let Some(waker) = self.0.waker.borrow_mut().take() {
            waker.wake();
        }
        // Drop runs next; it sees the value and does not mark abandonment.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.value.borrow().is_none() {
            self.0.abandoned.set(true);
            if let Some(waker) = self.0.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(value) = self.0.value.borrow_mut().take() {
            return Poll::Ready(Some(value));
        }
        if self.0.abandoned.get() {
            return Poll::Ready(None);
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_or_reports_abandonment() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (tx, rx) = channel();
            compio::runtime::spawn(async move { tx.send(7) }).detach();
            assert_eq!(rx.await, Some(7));
            let (tx, rx) = channel::<u8>();
            compio::runtime::spawn(async move { drop(tx) }).detach();
            assert_eq!(rx.await, None);
        });
    }
}
