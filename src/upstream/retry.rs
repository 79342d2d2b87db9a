//! Retry timing and the retry budget. Backoff is exponential with full
//! jitter: the n-th retry waits a uniform random time in
//! `0..=min(backoff_max, backoff_base * 2^(n-1))`, so clients that failed
//! together do not come back together. The budget caps the retries one shard
//! has in flight for an upstream at `budget_percent` of its requests in flight
//! (or `budget_min`, whichever is more), so an outage cannot turn into a
//! retry storm that multiplies the load on the servers still standing.

use std::{cell::Cell, time::Duration};

use crate::{config::RetryPolicy, upstream::rng::Rng};

/// How long to wait before retry number `retry` (1 for the first).
pub fn backoff(policy: &RetryPolicy, retry: u32, rng: &Rng) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1 << (retry.saturating_sub(1)).min(20))
        .min(policy.backoff_max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.below(nanos.saturating_add(1)))
}

/// The retries one shard has in flight for one upstream.
#[derive(Default)]
pub struct RetryBudget {
    retrying: Cell<u32>,
}

/// A request's claim on the budget; released when dropped (the request ended).
pub struct RetryToken<'a>(&'a RetryBudget);

impl Drop for RetryToken<'_> {
    fn drop(&mut self) {
        self.0.retrying.set(self.0.retrying.get() - 1);
    }
}

impl RetryBudget {
    /// A claim for one more retrying request, if the budget has room with
    /// `requests` requests in flight.
    pub fn claim(&self, policy: &RetryPolicy, requests: u32) -> Option<RetryToken<'_>> {
        let share = u64::from(requests) * u64::from(policy.budget_percent) / 100;
        let allowed = share.max(u64::from(policy.budget_min));
        if u64::from(self.retrying.get()) >= allowed {
            return None;
        }
        self.retrying.set(self.retrying.get() + 1);
        Some(RetryToken(self))
    }

    /// Requests retrying now.
    pub fn retrying(&self) -> u32 {
        self.retrying.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            budget_percent: 20,
            budget_min: 2,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_and_is_capped_with_full_jitter() {
        let (policy, rng) = (policy(), Rng::seeded(3));
        for (retry, ceiling_ms) in [(1, 10), (2, 20), (3, 40), (4, 50), (9, 50)] {
            let waits: Vec<Duration> = (0..2000).map(|_| backoff(&policy, retry, &rng)).collect();
            let max = waits.iter().max().unwrap();
            let mean = waits.iter().sum::<Duration>() / 2000;
            assert!(
                *max <= Duration::from_millis(ceiling_ms),
                "retry {retry}: {max:?}"
            );
            // Full jitter: uniform over the range, so the mean is near half the ceiling.
            let half = Duration::from_millis(ceiling_ms) / 2;
            assert!(
                mean > half * 8 / 10 && mean < half * 12 / 10,
                "retry {retry}: mean {mean:?}"
            );
        }
    }

    #[test]
    fn budget_is_a_share_of_requests_in_flight_with_a_floor() {
        let (policy, budget) = (policy(), RetryBudget::default());
        // 5 requests in flight: 20 % is 1, the floor 2 wins.
        let a = budget.claim(&policy, 5).expect("first");
        let b = budget.claim(&policy, 5).expect("second");
        assert!(budget.claim(&policy, 5).is_none(), "over the floor");
        // 50 requests: 20 % is 10.
        let more: Vec<_> = (0..8).map_while(|_| budget.claim(&policy, 50)).collect();
        assert_eq!(more.len(), 8);
        assert!(budget.claim(&policy, 50).is_none());
        drop((a, b, more));
        assert_eq!(budget.retrying(), 0);
        let none = RetryPolicy {
            budget_percent: 0,
            budget_min: 0,
            ..policy
        };
        assert!(budget.claim(&none, 1000).is_none());
    }
}
