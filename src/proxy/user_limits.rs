//! Per-user limits of the forward proxy (`max_connections`,
//! `requests_per_second` on a `[[forward_proxy.user]]`): how many requests
//! and tunnels a user may have in progress at once, and how fast new ones
//! may start (a token bucket holding one second's worth). Over either: 429
//! with the reason.
//!
//! Counted per shard, like everything on the request path (no cross-shard
//! counter, no lock): with N shards a user can reach N times a limit at
//! most, and the kernel's spreading of connections over shards makes the
//! usual figure much closer to the limit itself.

use std::{
    cell::{Cell, RefCell},
    time::Instant,
};

use super::error::ProxyError;
use crate::config::ForwardUser;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One shard's counters, indexed like `forward_proxy.users`.
pub struct UserLimits {
    in_progress: Vec<Cell<u32>>,
    buckets: RefCell<Vec<Bucket>>,
}

/// A request or tunnel counted against its user while it lasts.
pub struct Slot<'a> {
    counter: Option<&'a Cell<u32>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.counter {
            counter.set(counter.get().saturating_sub(1));
        }
    }
}

impl UserLimits {
    pub fn new(users: &[ForwardUser]) -> UserLimits {
        let now = Instant::now();
        UserLimits {
            in_progress: users.iter().map(|_| Cell::new(0)).collect(),
            buckets: RefCell::new(
                users
                    .iter()
                    .map(|u| Bucket {
                        tokens: f64::from(u.requests_per_second),
                        refilled: now,
                    })
                    .collect(),
            ),
        }
    }

    /// Counts a new request or tunnel of `user` (`None`: no users
    /// configured, nothing to count), or refuses it with a 429.
    pub fn enter<'a>(
        &'a self,
        users: &[ForwardUser],
        user: Option<usize>,
    ) -> Result<Slot<'a>, ProxyError> {
        let Some(index) = user else {
            return Ok(Slot { counter: None });
        };
        let limits = &users[index];
        let counter = &self.in_progress[index];
        if limits.max_connections > 0 && counter.get() >= limits.max_connections {
            return Err(ProxyError::UserLimit(format!(
                "user {} has {} requests or tunnels in progress (max_connections)",
                limits.name, limits.max_connections
            )));
        }
        if limits.requests_per_second > 0 && !self.take_token(index, limits.requests_per_second) {
            return Err(ProxyError::UserLimit(format!(
                "user {} is over {} requests per second",
                limits.name, limits.requests_per_second
            )));
        }
        counter.set(counter.get() + 1);
        Ok(Slot {
            counter: Some(counter),
        })
    }

    fn take_token(&self, index: usize, rate: u32) -> bool {
        let mut buckets = self.buckets.borrow_mut();
        let bucket = &mut buckets[index];
        let now = Instant::now();
        let rate = f64::from(rate);
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + earned).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(max_connections: u32, requests_per_second: u32) -> ForwardUser {
        ForwardUser {
            name: "ann".into(),
            password_hash: String::new(),
            max_connections,
            requests_per_second,
        }
    }

    #[test]
    fn concurrency_is_counted_while_slots_live() {
        let users = [user(2, 0)];
        let limits = UserLimits::new(&users);
        let a = limits.enter(&users, Some(0)).unwrap();
        let _b = limits.enter(&users, Some(0)).unwrap();
        assert!(matches!(
            limits.enter(&users, Some(0)),
            Err(ProxyError::UserLimit(_))
        ));
        drop(a);
        assert!(limits.enter(&users, Some(0)).is_ok());
        assert!(limits.enter(&users, None).is_ok(), "no user, no limit");
    }

    #[test]
    fn rate_allows_a_burst_of_one_second_then_refuses() {
        let users = [user(0, 3)];
        let limits = UserLimits::new(&users);
        for _ in 0..3 {
            drop(limits.enter(&users, Some(0)).unwrap());
        }
        assert!(limits.enter(&users, Some(0)).is_err());
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(limits.enter(&users, Some(0)).is_ok(), "a token came back");
    }
}
