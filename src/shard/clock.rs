//! The shard's clock: the time read once per turn of the shard's loop, for
//! the request path's timestamps and deadlines.
//!
//! Why: a proxied request read the clock eight to ten times (its start and
//! end, the upstream pool's take and put, a deadline per wait), about 1 % of
//! its CPU. nginx reads the time once per event-loop iteration for the same
//! reason. Within one turn every task sees the instant the turn began, at
//! most one turn's work (well under a millisecond) behind: a deadline from
//! it ends that much early, a duration reads that much long or short.
//!
//! The turn's instant lives in a thread-local cell, written only by
//! [`TurnClock`], which [`crate::shard::ring::run_main`] holds while it
//! turns the shard's loop: the cell is the shard thread's own, and nothing
//! else on the thread writes it. Off a shard's loop (helpers, tests),
//! [`now`] reads the clock itself.

use std::{cell::Cell, time::Instant};

thread_local! {
    static TURN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The current turn's instant on a shard's loop, else the time now.
pub fn now() -> Instant {
    TURN.get().unwrap_or_else(Instant::now)
}

/// Sets the thread's turn instant while the shard's loop runs; unset again
/// when dropped, so nothing after the loop sees a stale instant.
pub struct TurnClock(());

impl TurnClock {
    pub fn start() -> TurnClock {
        TURN.set(Some(Instant::now()));
        TurnClock(())
    }

    /// A new turn: read the clock once for it.
    pub fn tick(&self) {
        TURN.set(Some(Instant::now()));
    }
}

impl Drop for TurnClock {
    fn drop(&mut self) {
        TURN.set(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_turn_has_one_instant_and_the_next_a_later_one() {
        let before = now();
        let clock = TurnClock::start();
        let first = now();
        assert!(first >= before);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(now(), first, "the instant changed within a turn");
        clock.tick();
        assert!(now() >= first + Duration::from_millis(2));
        drop(clock);
        // Off the loop again: the real time, later than the last turn.
        let after = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            now() > after,
            "after the loop, now() still read a fixed instant"
        );
    }
}
