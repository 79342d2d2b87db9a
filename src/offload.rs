//! Blocking work a shard must not do itself (getaddrinfo, argon2
//! verification), handed to a few threads of its own: jobs go through a
//! bounded channel, and each answer comes back through a one-value channel
//! and a thread-safe waker, which wakes the shard's ring. A full queue is an
//! immediate error, so a flood sheds instead of queueing without bound.
//!
//! Cross-thread objects, deliberately: the job channel (shard → its worker
//! threads) and each job's reply. The threads end when their shard drops
//! its [`Offload`] (the job channel disconnects).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

type Job = Box<dyn FnOnce() + Send>;

/// Why offloaded work gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("too much work queued")]
    Busy,
    #[error("worker thread gone")]
    Gone,
}

/// One shard's worker threads for one kind of blocking work.
pub struct Offload {
    jobs: Sender<Job>,
}

impl Offload {
    /// Starts `threads` threads named `name-N`, with room for `queue` waiting jobs.
    pub fn start(name: &str, threads: usize, queue: usize) -> std::io::Result<Offload> {
        let (jobs, waiting) = bounded::<Job>(queue);
        for i in 0..threads.max(1) {
            let waiting = waiting.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || run_jobs(waiting))?;
        }
        Ok(Offload { jobs })
    }

    /// Runs `work` on a worker thread and waits (without blocking the
    /// shard) for its result. Dropping the returned future abandons the
    /// answer; the work itself still runs to its end.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, OffloadError> {
        let (reply, answer) = bounded(1);
        let waker = Arc::new(AtomicWaker::new());
        let wake = waker.clone();
        let job: Job = Box::new(move || {
            // The asker may have given up: nobody to tell then.
            let _ = reply.send(work());
            wake.wake();
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(OffloadError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(OffloadError::Gone),
        }
        Answer { answer, waker }.await.ok_or(OffloadError::Gone)
    }
}

/// A worker's answer, or `None` if the job was dropped without one.
struct Answer<T> {
    answer: Receiver<T>,
    waker: Arc<AtomicWaker>,
}

impl<T> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Register before looking, so an answer sent in between still wakes us.
        self.waker.register(cx.waker());
        match self.answer.try_recv() {
            Ok(answer) => Poll::Ready(Some(answer)),
            Err(TryRecvError::Empty) => Poll::Pending,
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
        }
    }
}

/// A worker thread: one job at a time until its shard goes.
fn run_jobs(waiting: Receiver<Job>) {
    while let Ok(job) = waiting.recv() {
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_another_thread_and_sheds_when_full() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let offload = Offload::start("test", 1, 1).unwrap();
            let here = std::thread::current().id();
            let there = offload.run(move || std::thread::current().id()).await;
            assert_ne!(there.unwrap(), here);
            // One job holds the only thread, one waits in the queue: a third is refused.
            let (started, running) = bounded::<()>(1);
            let (release, gate) = bounded::<()>(0);
            let mut blocker = Box::pin(offload.run(move || {
                let _ = started.send(());
                gate.recv().is_ok()
            }));
            futures_lite::future::poll_once(&mut blocker).await;
            running.recv().unwrap();
            let mut queued = Box::pin(offload.run(|| 1));
            futures_lite::future::poll_once(&mut queued).await;
            assert_eq!(offload.run(|| 2).await, Err(OffloadError::Busy));
            release.send(()).unwrap();
            assert_eq!(blocker.await, Ok(true));
            assert_eq!(queued.await, Ok(1));
        });
    }
}
