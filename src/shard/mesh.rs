//! The only road between shards: a full mesh of bounded queues, one per
//! ordered pair of shards, each with a doorbell that wakes the receiving
//! shard's runtime from another thread.
//!
//! **Cross-shard object.** [`MeshEnd`] is `Send`: it is built on the main
//! thread and moved into its shard once. What it shares with other shards is
//! only the queues (crossbeam's bounded array channels, lock-free) and the
//! doorbells (an [`AtomicWaker`] per shard). The cache is its only user, for
//! key-ownership lookups; nothing else a shard owns is reachable from here.
//!
//! Sending never waits: a full queue hands the message back, and the cache
//! sheds that lookup to the origin instead of piling up work on a shard that
//! is already behind. The receiving shard drains its queues in one task and
//! sleeps on its doorbell when they are empty; a sender rings the doorbell
//! after every push, which costs one atomic operation unless the receiver is
//! asleep, in which case it wakes the receiver's runtime (compio's waker is
//! thread-safe: it queues the task and notifies the driver).

use std::{
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

/// Messages taken from the queues before the draining task yields to others.
const DRAIN_BATCH: usize = 64;

/// One shard's ends of the mesh.
pub struct MeshEnd<M> {
    id: usize,
    /// `to[peer]`: this shard's queue into `peer` (`None` for itself).
    to: Vec<Option<Sender<M>>>,
    /// `from[peer]`: `peer`'s queue into this shard (`None` for itself).
    from: Vec<Option<Receiver<M>>>,
    doorbells: Arc<[AtomicWaker]>,
}

/// Builds the mesh for `shards` shards, each queue holding `capacity` messages.
pub fn full<M>(shards: usize, capacity: usize) -> Vec<MeshEnd<M>> {
    let doorbells: Arc<[AtomicWaker]> = (0..shards).map(|_| AtomicWaker::new()).collect();
    let mut ends: Vec<MeshEnd<M>> = (0..shards)
        .map(|id| MeshEnd {
            id,
            to: (0..shards).map(|_| None).collect(),
            from: (0..shards).map(|_| None).collect(),
            doorbells: doorbells.clone(),
        })
        .collect();
    for sender in 0..shards {
        for receiver in 0..shards {
            if sender != receiver {
                let (tx, rx) = bounded(capacity);
                ends[sender].to[receiver] = Some(tx);
                ends[receiver].from[sender] = Some(rx);
            }
        }
    }
    ends
}

impl<M> MeshEnd<M> {
    /// Queues `message` for `peer` and rings its doorbell. `Err` gives the
    /// message back: the queue is full, the peer is gone, or `peer` is this shard.
    pub fn try_send(&self, peer: usize, message: M) -> Result<(), M> {
        let Some(Some(queue)) = self.to.get(peer) else {
            return Err(message);
        };
        match queue.try_send(message) {
            Ok(()) => {
                self.doorbells[peer].wake();
                Ok(())
            }
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => Err(message),
        }
    }

    /// Hands every message that arrives to `handle`, until every peer has
    /// gone. Runs as one task on the receiving shard.
    pub async fn receive(&self, mut handle: impl FnMut(M)) {
        let mut open = self.from.iter().flatten().count();
        let mut closed = vec![false; self.from.len()];
        while open > 0 {
            poll_fn(|cx| self.poll_batch(cx, &mut handle, &mut closed, &mut open)).await;
        }
    }

    /// Drains up to [`DRAIN_BATCH`] messages. Ready when it handled some (so
    /// the caller yields between batches) or when every queue closed; else
    /// sleeps on the doorbell, checking the queues once more after arming it
    /// so that a message pushed meanwhile is not missed.
    fn poll_batch(
        &self,
        cx: &mut Context<'_>,
        handle: &mut impl FnMut(M),
        closed: &mut [bool],
        open: &mut usize,
    ) -> Poll<()> {
        for attempt in 0..2 {
            let mut handled = 0;
            for (peer, queue) in self.from.iter().enumerate() {
                let Some(queue) = queue else { continue };
                while handled < DRAIN_BATCH && !closed[peer] {
                    match queue.try_recv() {
                        Ok(message) => {
                            handle(message);
                            handled += 1;
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            closed[peer] = true;
                            *open -= 1;
                        }
                    }
                }
            }
            if handled > 0 || *open == 0 {
                if handled == DRAIN_BATCH {
                    cx.waker().wake_by_ref();
                }
                return Poll::Ready(());
            }
            if attempt == 0 {
                self.doorbells[self.id].register(cx.waker());
            }
        }
        Poll::Pending
    }
}

/// A shard leaving the mesh closes its queues and rings every peer, so a
/// peer asleep on its doorbell wakes to see the queues closed.
impl<M> Drop for MeshEnd<M> {
    fn drop(&mut self) {
        let peers: Vec<usize> = (0..self.to.len())
            .filter(|&p| self.to[p].is_some())
            .collect();
        self.to.clear();
        for peer in peers {
            self.doorbells[peer].wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_hands_the_message_back() {
        let ends = full::<u32>(2, 1);
        assert!(ends[0].try_send(1, 7).is_ok());
        assert_eq!(ends[0].try_send(1, 8), Err(8), "capacity 1");
        assert_eq!(ends[0].try_send(0, 9), Err(9), "no queue to itself");
        assert!(
            ends[1].try_send(0, 10).is_ok(),
            "the other direction is its own queue"
        );
    }

    #[test]
    fn messages_cross_threads_and_wake_the_receiver() {
        let mut ends = full::<u32>(2, 8);
        let receiver = ends.pop().unwrap();
        let sender = ends.pop().unwrap();
        let thread = std::thread::spawn(move || {
            compio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let mut seen = Vec::new();
                    receiver.receive(|m| seen.push(m)).await;
                    seen
                })
        });
        for i in 0..100 {
            let mut message = i;
            // Bounded queue: retry while the receiver catches up.
            while let Err(back) = sender.try_send(1, message) {
                message = back;
                std::thread::yield_now();
            }
        }
        drop(sender);
        assert_eq!(thread.join().unwrap(), (0..100).collect::<Vec<_>>());
    }
}
