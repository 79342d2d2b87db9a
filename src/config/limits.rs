//! `[limits]`: per client IP, a connection limit and a token-bucket request
//! rate; and, per `[[route]]`, a rate for the route as a whole. Every limit
//! is enforced per shard with its share (`limit / shards`, rounded up); see
//! `limits` for why and what that approximates.

use toml::Spanned;

use super::{raw::RawLimits, resolver::Resolver, ConfigError};

/// A token bucket's rate and size, for the whole process (shards take a share).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second.
    pub per_second: f64,
    /// Most requests at once after a quiet spell.
    pub burst: u32,
}

#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// Open connections per client IP; `None`: no limit.
    pub connections_per_ip: Option<u32>,
    /// Requests per client IP; `None`: no limit.
    pub rate_per_ip: Option<Rate>,
}

impl Resolver<'_> {
    pub(super) fn limits(&self, raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
        let connections = self.count(
            "limits.connections_per_ip",
            raw.connections_per_ip,
            0,
            0..10_000_001,
        )?;
        Ok(LimitsConfig {
            connections_per_ip: (connections > 0).then_some(connections as u32),
            rate_per_ip: self.rate("limits.rate", raw.rate, "limits.burst", raw.burst)?,
        })
    }

    /// A rate (`0` or absent: none) and its burst (default: one second's worth).
    pub(super) fn rate(
        &self,
        rate_key: &str,
        rate: Option<Spanned<i64>>,
        burst_key: &str,
        burst: Option<Spanned<i64>>,
    ) -> Result<Option<Rate>, ConfigError> {
        let per_second = self.count(rate_key, rate, 0, 0..100_000_001)?;
        let burst = self.count(burst_key, burst, per_second, 0..100_000_001)?;
        Ok((per_second > 0).then_some(Rate {
            per_second: per_second as f64,
            burst: burst.max(1) as u32,
        }))
    }
}
