//! Passive health checks (outlier detection), per shard: `consecutive`
//! failures of the kinds in `outlier.on` (connect errors, resets, timeouts,
//! 5xx) eject a server from this shard's picks for `base_ejection`, doubled on
//! each repeat ejection up to `max_ejection`. At most `max_ejected_percent` of
//! an upstream is ejected at once, so detection cannot empty it. A server
//! that has gone `max_ejection` without an ejection starts again from
//! `base_ejection`. Each shard judges from its own requests only: no counter
//! is shared between shards.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use crate::config::{Failure, OutlierPolicy};

/// One server's record on this shard.
#[derive(Default)]
pub struct Ejection {
    /// Consecutive failures counted since the last success or ejection.
    failures: Cell<u32>,
    /// Ejected until then.
    until: Cell<Option<Instant>>,
    /// Ejections in a row (each doubles the next one's length).
    times: Cell<u32>,
}

impl Ejection {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.until.get().is_some_and(|until| now < until)
    }
}

/// The servers of one upstream, as outlier detection sees them.
pub trait Records {
    fn servers(&self) -> usize;
    fn ejection(&self, server: usize) -> &Ejection;
}

impl Records for [Ejection] {
    fn servers(&self) -> usize {
        self.len()
    }
    fn ejection(&self, server: usize) -> &Ejection {
        &self[server]
    }
}

/// Records the outcome of an exchange with server `server`; returns how
/// long the server was ejected for, if this outcome ejected it.
pub fn record(
    policy: &OutlierPolicy,
    records: &(impl Records + ?Sized),
    server: usize,
    outcome: Result<(), Failure>,
    now: Instant,
) -> Option<Duration> {
    let this = records.ejection(server);
    if !matches!(outcome, Err(failure) if policy.on.matches(failure)) {
        // A success, or a failure this policy does not count, breaks the run.
        this.failures.set(0);
        return None;
    }
    if this.is_ejected(now) {
        return None;
    }
    this.failures.set(this.failures.get() + 1);
    if this.failures.get() < policy.consecutive {
        return None;
    }
    let ejected = (0..records.servers())
        .filter(|&i| records.ejection(i).is_ejected(now))
        .count();
    let allowed = records.servers() * policy.max_ejected_percent as usize / 100;
    if ejected >= allowed {
        return None;
    }
    // A server that stayed in for a whole max_ejection starts over.
    let forgiven = this
        .until
        .get()
        .is_none_or(|until| now.saturating_duration_since(until) >= policy.max_ejection);
    let times = if forgiven { 1 } else { this.times.get() + 1 };
    let length = policy
        .base_ejection
        .saturating_mul(1 << (times - 1).min(20))
        .min(policy.max_ejection);
    this.times.set(times);
    this.failures.set(0);
    this.until.set(Some(now + length));
    Some(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Failures;

    fn policy() -> OutlierPolicy {
        let config = crate::config::Config::parse(
            "[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\"]\noutlier = { consecutive = 3 }\n[[route]]\nupstream = \"u\"\n",
            "t",
        )
        .unwrap();
        let mut policy = config.upstreams[0].outlier.unwrap();
        policy.base_ejection = Duration::from_secs(1);
        policy.max_ejection = Duration::from_secs(5);
        policy
    }

    #[test]
    fn consecutive_failures_eject_with_doubling() {
        let policy = policy();
        let records: Vec<Ejection> = (0..2).map(|_| Ejection::default()).collect();
        let refs = &records[..];
        let mut now = Instant::now();
        let fail = Err(Failure::Status(503));
        assert_eq!(record(&policy, refs, 0, fail, now), None);
        assert_eq!(record(&policy, refs, 0, fail, now), None);
        assert_eq!(
            record(&policy, refs, 0, fail, now),
            Some(Duration::from_secs(1))
        );
        assert!(records[0].is_ejected(now));
        now += Duration::from_secs(1);
        assert!(!records[0].is_ejected(now));
        for _ in 0..2 {
            record(&policy, refs, 0, fail, now);
        }
        assert_eq!(
            record(&policy, refs, 0, fail, now),
            Some(Duration::from_secs(2))
        );
        now += Duration::from_secs(2);
        for expected in [4, 5] {
            for _ in 0..2 {
                record(&policy, refs, 0, fail, now);
            }
            let got = record(&policy, refs, 0, fail, now);
            assert_eq!(got, Some(Duration::from_secs(expected)));
            now += got.unwrap();
        }
    }

    #[test]
    fn successes_reset_the_count_and_other_failures_do_not_count() {
        let policy = OutlierPolicy {
            on: Failures::default(),
            ..self::policy()
        };
        let records: Vec<Ejection> = (0..2).map(|_| Ejection::default()).collect();
        let refs = &records[..];
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(record(&policy, refs, 0, Err(Failure::Connect), now), None);
        }
        let policy = self::policy();
        for _ in 0..10 {
            record(&policy, refs, 1, Err(Failure::Reset), now);
            record(&policy, refs, 1, Err(Failure::Reset), now);
            record(&policy, refs, 1, Ok(()), now);
        }
        assert!(!records[1].is_ejected(now));
    }

    #[test]
    fn never_more_than_max_ejected_percent() {
        let policy = self::policy(); // 50 %
        let records: Vec<Ejection> = (0..3).map(|_| Ejection::default()).collect();
        let refs = &records[..];
        let now = Instant::now();
        for server in 0..3 {
            for _ in 0..3 {
                record(&policy, refs, server, Err(Failure::Connect), now);
            }
        }
        let ejected = (0..records.servers())
            .filter(|&i| records.ejection(i).is_ejected(now))
            .count();
        assert_eq!(ejected, 1, "50 % of 3 servers is 1");
    }
}
