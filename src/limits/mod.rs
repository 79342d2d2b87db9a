//! Client limits, all per shard: open connections per client IP, a token
//! bucket of requests per client IP, and a token bucket per route. Over a
//! limit the client gets `429 Too Many Requests` with `Retry-After`.
//!
//! The configured limits are for the whole process; each shard enforces its
//! share (`limit / shards` rounded up; a rate divided, a burst rounded up).
//! Exact process-wide counts would need memory every shard writes on every
//! request, which the shards never share. The kernel spreads one client's
//! connections over the shards by a hash of the address and port pair, so a
//! client with several connections gets close to the configured total; one
//! client on a single connection stays on one shard and gets one share.
//! Per-IP state lives in `RefCell` maps owned by the shard; idle buckets
//! are dropped by the shard's one-second sweep.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::IpAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use crate::config::Rate;

/// One shard's share of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShardRate {
    per_second: f64,
    burst: f64,
}

impl ShardRate {
    pub fn share(rate: Rate, shards: usize) -> ShardRate {
        let shards = shards.max(1);
        ShardRate {
            per_second: rate.per_second / shards as f64,
            burst: (f64::from(rate.burst) / shards as f64).ceil().max(1.0),
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`; a request takes one.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl TokenBucket {
    pub fn full(rate: ShardRate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: Cell::new(rate.burst),
            last: Cell::new(now),
        }
    }

    fn refill(&self, rate: ShardRate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.last.get()).as_secs_f64();
        let tokens = (self.tokens.get() + elapsed * rate.per_second).min(rate.burst);
        self.tokens.set(tokens);
        self.last.set(now);
        tokens
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self, rate: ShardRate, now: Instant) -> Result<(), Duration> {
        let tokens = self.refill(rate, now);
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rate.per_second))
        }
    }
}

/// The shard's per-client-IP state; shared by its context generations, so a
/// reload keeps the counts (the limits themselves come from the config).
pub struct ClientLimits {
    shards: usize,
    connections: RefCell<HashMap<IpAddr, u32>>,
    buckets: RefCell<HashMap<IpAddr, TokenBucket>>,
}

/// This shard's share of a client's connections is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit;

/// One open connection counted against its IP; uncounted on drop.
pub struct IpSlot {
    limits: Rc<ClientLimits>,
    ip: IpAddr,
}

impl ClientLimits {
    pub fn new(shards: usize) -> ClientLimits {
        ClientLimits {
            shards: shards.max(1),
            connections: RefCell::new(HashMap::new()),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Counts a new connection from `ip` (`Ok(None)`: no limit, nothing
    /// counted); `OverLimit` if this shard's share of `limit` is taken.
    pub fn connect(
        self: &Rc<Self>,
        ip: IpAddr,
        limit: Option<u32>,
    ) -> Result<Option<IpSlot>, OverLimit> {
        let Some(limit) = limit else {
            return Ok(None);
        };
        let share = limit.div_ceil(self.shards as u32);
        let mut connections = self.connections.borrow_mut();
        let open = connections.entry(ip).or_insert(0);
        if *open >= share {
            return Err(OverLimit);
        }
        *open += 1;
        Ok(Some(IpSlot {
            limits: self.clone(),
            ip,
        }))
    }

    /// Takes a token from `ip`'s bucket; `Err`: how long until it may retry.
    pub fn admit(&self, ip: IpAddr, rate: Rate, now: Instant) -> Result<(), Duration> {
        let rate = ShardRate::share(rate, self.shards);
        let mut buckets = self.buckets.borrow_mut();
        let bucket = buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(rate, now));
        bucket.take(rate, now)
    }

    /// Forgets buckets that have refilled: they hold nothing a new one would not.
    pub fn sweep(&self, rate: Option<Rate>, now: Instant) {
        let mut buckets = self.buckets.borrow_mut();
        match rate {
            None => buckets.clear(),
            Some(rate) => {
                let rate = ShardRate::share(rate, self.shards);
                buckets.retain(|_, bucket| bucket.refill(rate, now) < rate.burst);
            }
        }
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut connections = self.limits.connections.borrow_mut();
        if let Some(open) = connections.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                connections.remove(&self.ip);
            }
        }
    }
}

/// `429 Too Many Requests` with `Retry-After` in whole seconds (at least 1).
pub fn write_too_many(out: &mut Vec<u8>, retry_after: Duration, close: bool) {
    use std::io::Write;
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let body = "429 Too Many Requests\n";
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: {seconds}\r\n{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let rate = ShardRate::share(
            Rate {
                per_second: 10.0,
                burst: 3,
            },
            1,
        );
        let t0 = Instant::now();
        let bucket = TokenBucket::full(rate, t0);
        for _ in 0..3 {
            assert!(bucket.take(rate, t0).is_ok());
        }
        let wait = bucket.take(rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        assert!(bucket.take(rate, t0 + Duration::from_millis(100)).is_ok());
        assert!(bucket.take(rate, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn shares_round_up() {
        let share = ShardRate::share(
            Rate {
                per_second: 5.0,
                burst: 5,
            },
            2,
        );
        assert_eq!(
            share,
            ShardRate {
                per_second: 2.5,
                burst: 3.0
            }
        );
        let limits = Rc::new(ClientLimits::new(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = limits.connect(ip, Some(3)).unwrap();
        let b = limits.connect(ip, Some(3)).unwrap();
        assert_eq!(
            limits.connect(ip, Some(3)).err(),
            Some(OverLimit),
            "2 of 3 on a shard of 2"
        );
        drop(a);
        assert!(limits.connect(ip, Some(3)).is_ok());
        drop(b);
        assert!(limits.connect(ip, None).unwrap().is_none());
        assert!(limits.connections.borrow().is_empty());
    }
}
