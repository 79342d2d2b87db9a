//! Each shard's compio runtime, with the io_uring setup flags chosen here and
//! not by the runtime's defaults, or compio's epoll driver where io_uring
//! cannot be used.
//!
//! Why the flags matter (measured, docs/PERFORMANCE.md): without them every
//! completion is delivered by task_work that interrupts the shard's thread,
//! often by a reschedule IPI from the core that ran the network stack.
//! `COOP_TASKRUN` lets completions wait until the shard next enters the
//! kernel; `SINGLE_ISSUER | DEFER_TASKRUN` goes further and runs them only
//! when the shard asks for events, which suits a thread-per-core design where
//! only the ring's own thread ever submits.

use std::{fmt, future::Future, io, num::NonZeroU16, time::Duration};

use compio::runtime::{Runtime, RuntimeBuilder};
use compio_driver::{DriverType, ProactorBuilder};

use super::clock::TurnClock;
use crate::config::{IoBackend, RingMode};

/// What a shard's runtime actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// io_uring with these setup flags.
    IoUring(RingMode),
    /// compio's epoll driver.
    Poll,
}

impl Engine {
    /// Whether receives can use the kernel-selected buffers of a
    /// provided-buffer ring (io_uring only; on epoll compio would pin a
    /// buffer per waiting receive, which is what leasing avoids).
    pub fn has_provided_buffers(self) -> bool {
        matches!(self, Engine::IoUring(_))
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::IoUring(RingMode::Defer) => {
                f.write_str("io_uring, SINGLE_ISSUER|DEFER_TASKRUN")
            }
            Engine::IoUring(RingMode::Coop) => f.write_str("io_uring, COOP_TASKRUN|TASKRUN_FLAG"),
            Engine::IoUring(_) => f.write_str("io_uring, no setup flags"),
            Engine::Poll => f.write_str("epoll"),
        }
    }
}

/// The order `ring_mode = "auto"` tries: DEFER_TASKRUN first (measured the
/// cheaper of the two on the proxied path, docs/PERFORMANCE.md), then
/// COOP_TASKRUN (Linux 5.19+), then no flags.
const AUTO_ORDER: [RingMode; 3] = [RingMode::Defer, RingMode::Coop, RingMode::Plain];

/// Builds the calling thread's runtime. `io` is the backend after the
/// process-wide preflight (an `Auto` that found io_uring unusable arrives
/// here as `Poll`). `Err` names what failed.
pub fn build(io: IoBackend, mode: RingMode, ring_depth: u32) -> Result<(Runtime, Engine), String> {
    if io == IoBackend::Poll {
        let mut proactor = ProactorBuilder::new();
        proactor.driver_type(DriverType::Poll);
        return runtime(&proactor)
            .map(|rt| (rt, Engine::Poll))
            .map_err(|e| format!("cannot start the epoll driver: {e}"));
    }
    let modes: &[RingMode] = match mode {
        RingMode::Auto => &AUTO_ORDER,
        RingMode::Defer => &[RingMode::Defer],
        RingMode::Coop => &[RingMode::Coop],
        RingMode::Plain => &[RingMode::Plain],
    };
    let mut last_error = None;
    for &mode in modes {
        match runtime(&ring(mode, ring_depth)) {
            Ok(rt) if rt.driver_type().is_iouring() => return Ok((rt, Engine::IoUring(mode))),
            Ok(_) => {
                last_error = Some(io::Error::other(
                    "the kernel lacks io_uring operations the runtime needs",
                ))
            }
            Err(e) => last_error = Some(e),
        }
    }
    let error = last_error.unwrap_or_else(|| io::Error::other("no ring mode to try"));
    Err(format!(
        "cannot set up io_uring (ring_mode {mode:?}): {}",
        crate::preflight::explain(error)
    ))
}

/// Runs the shard's main task until it ends, driving the runtime's loop
/// here rather than with `Runtime::block_on`. `block_on` polls its future on
/// every turn of the loop, whether or not anything woke it; the shard's
/// main task (control poll, accept loops, sweepers) is almost always
/// waiting, so spawned as an ordinary task it is polled only when woken.
/// A panic of the main task is the shard's, as with `block_on`. Each turn
/// reads the clock once for the request path ([`super::clock`]).
pub fn run_main(runtime: &Runtime, main: impl Future<Output = ()> + 'static) {
    runtime.enter(|| {
        let clock = TurnClock::start();
        let main = runtime.spawn(main);
        loop {
            // `run` is true while woken tasks remain: then only reap
            // completions, without waiting for more.
            let more = runtime.run();
            if main.is_finished() {
                break;
            }
            if more {
                runtime.poll_with(Some(Duration::ZERO));
            } else {
                runtime.poll();
            }
            clock.tick();
        }
        drop(clock);
        if let Err(failed) = runtime.block_on(main) {
            failed.resume_unwind();
        }
    })
}

/// The shard's provided-buffer ring, which idle connections receive their
/// next request into (the kernel takes a buffer only when bytes arrive):
/// 256 × 4 KiB = 1 MiB per shard. A larger head continues in the
/// connection's leased buffer; an empty ring (ENOBUFS) falls back to waiting
/// for readiness, so the count bounds memory, not connections.
const PROVIDED_BUFFERS: u16 = 256;
pub const PROVIDED_BUFFER_LEN: usize = 4096;

fn ring(mode: RingMode, ring_depth: u32) -> ProactorBuilder {
    let mut proactor = ProactorBuilder::new();
    proactor
        .driver_type(DriverType::IoUring)
        .capacity(ring_depth)
        .buffer_pool_size(NonZeroU16::new(PROVIDED_BUFFERS).expect("a constant above zero"))
        .buffer_pool_buffer_len(PROVIDED_BUFFER_LEN);
    match mode {
        RingMode::Defer => {
            proactor.single_issuer(true).defer_taskrun(true);
        }
        RingMode::Coop => {
            proactor.coop_taskrun(true).taskrun_flag(true);
        }
        RingMode::Plain | RingMode::Auto => {}
    }
    proactor
}

fn runtime(proactor: &ProactorBuilder) -> io::Result<Runtime> {
    RuntimeBuilder::new()
        .with_proactor(proactor.clone())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds_here_and_runs_a_task() {
        // This machine's kernel (6.x) accepts every mode; each must also run I/O-free work.
        for mode in [RingMode::Defer, RingMode::Coop, RingMode::Plain] {
            let (rt, engine) = build(IoBackend::IoUring, mode, 64).unwrap();
            assert_eq!(engine, Engine::IoUring(mode));
            assert_eq!(rt.block_on(async { 2 + 2 }), 4);
        }
        let (rt, engine) = build(IoBackend::Poll, RingMode::Auto, 64).unwrap();
        assert_eq!(engine, Engine::Poll);
        assert!(rt.driver_type().is_polling());
    }

    #[test]
    fn run_main_returns_once_the_main_task_ends_with_its_timers_and_tasks_served() {
        use std::{cell::Cell, rc::Rc};
        for io in [IoBackend::IoUring, IoBackend::Poll] {
            let (rt, _) = build(io, RingMode::Auto, 64).unwrap();
            let answer = Rc::new(Cell::new(0));
            let seen = answer.clone();
            run_main(&rt, async move {
                // A timer and a task the main task waits for: both need the loop's turns.
                compio::time::sleep(Duration::from_millis(20)).await;
                let helper = compio::runtime::spawn(async { 7 });
                seen.set(helper.await.unwrap());
            });
            assert_eq!(
                answer.get(),
                7,
                "{io:?}: the main task did not run to its end"
            );
        }
    }

    #[test]
    #[should_panic(expected = "the main task's own panic")]
    fn a_panic_of_the_main_task_is_the_shards() {
        let (rt, _) = build(IoBackend::Auto, RingMode::Auto, 64).unwrap();
        run_main(&rt, async { panic!("the main task's own panic") });
    }

    #[test]
    fn auto_prefers_defer_taskrun() {
        let (_, engine) = build(IoBackend::Auto, RingMode::Auto, 64).unwrap();
        assert_eq!(engine, Engine::IoUring(RingMode::Defer));
    }
}
