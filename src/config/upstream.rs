//! `[[upstream]]`: named groups of origin servers, how a server is picked
//! (`balance`, `hash_key`), the per-shard limits (`max_conns`, the queue),
//! their keep-alive pools; the resilience tables are in `resilience.rs`.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use super::{
    raw::{RawServerEntry, RawUpstream, Text},
    resilience::{HealthCheck, OutlierPolicy, RetryPolicy},
    resolver::{Keyword, Resolver},
    ConfigError,
};

/// How a server is picked for a request (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each server in turn, weights ignored.
    RoundRobin,
    /// Smooth weighted round-robin.
    Weighted,
    /// Fewest requests in flight (from this shard) per unit of weight.
    LeastConn,
    /// Power of two choices: two random servers, the less loaded wins.
    P2c,
    /// A hash ring over `hash_key` with bounded load.
    ConsistentHash,
}

impl Keyword for Balance {
    const ALL: &'static [Self] = &[
        Balance::RoundRobin,
        Balance::Weighted,
        Balance::LeastConn,
        Balance::P2c,
        Balance::ConsistentHash,
    ];
    fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Weighted => "weighted",
            Balance::LeastConn => "least_conn",
            Balance::P2c => "p2c",
            Balance::ConsistentHash => "consistent_hash",
        }
    }
}

/// What `consistent_hash` hashes (`hash_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    /// The request target, query included.
    Uri,
    /// A request header's value; the name is lower case.
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerEntry>,
    /// Idle connections kept per server per shard.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub balance: Balance,
    /// Set exactly when `balance` is `ConsistentHash`.
    pub hash_key: Option<HashKey>,
    /// Bounded load: no server takes more than `1 + hash_epsilon` times the mean.
    pub hash_epsilon: f64,
    /// Requests in flight per server per shard; 0 = no limit.
    pub max_conns: usize,
    /// Requests one shard queues for this upstream while every server is at `max_conns`.
    pub queue_size: usize,
    /// Longest wait in that queue (then 503).
    pub queue_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<OutlierPolicy>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerEntry {
    pub addr: SocketAddr,
    pub weight: u32,
}

impl Resolver<'_> {
    /// The upstreams in file order, and their index by name for routes.
    pub(super) fn upstreams(
        &self,
        raw: Vec<RawUpstream>,
    ) -> Result<(Vec<UpstreamConfig>, HashMap<String, usize>), ConfigError> {
        if raw.is_empty() {
            return Err(self.error(None, "no [[upstream]] is defined".into()));
        }
        let mut upstreams = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::new();
        for up in raw {
            let name = up.name.get_ref().clone();
            if by_name.insert(name.clone(), upstreams.len()).is_some() {
                return Err(self.invalid(
                    "upstream.name",
                    up.name.span(),
                    format!("`{name}` is defined twice"),
                ));
            }
            let mut servers = Vec::new();
            let span = up.servers.span();
            for entry in up.servers.get_ref() {
                let (addr, weight) = match entry {
                    RawServerEntry::Plain(addr) => (addr, 1),
                    RawServerEntry::Weighted(w) => (&w.addr, w.weight.unwrap_or(1)),
                };
                if !(1..=1_000_000).contains(&weight) {
                    return Err(self.invalid(
                        "upstream.servers.weight",
                        span,
                        format!("{weight} is out of range 1..=1000000"),
                    ));
                }
                let addr = self.address("upstream.servers", addr, span.clone())?;
                servers.push(ServerEntry {
                    addr,
                    weight: weight as u32,
                });
            }
            if servers.is_empty() {
                return Err(self.invalid(
                    "upstream.servers",
                    up.servers.span(),
                    "needs at least one server",
                ));
            }
            upstreams.push(self.upstream_policies(name, servers, up)?);
        }
        Ok((upstreams, by_name))
    }

    /// Everything of one upstream but its name and servers.
    fn upstream_policies(
        &self,
        name: String,
        servers: Vec<ServerEntry>,
        up: RawUpstream,
    ) -> Result<UpstreamConfig, ConfigError> {
        let balance = self.keyword("upstream.balance", up.balance, Balance::Weighted)?;
        let hash_key = self.hash_key(balance, up.hash_key)?;
        let hash_epsilon = match up.hash_epsilon {
            None => 0.25,
            Some(e) if (0.01..=10.0).contains(e.get_ref()) => *e.get_ref(),
            Some(e) => {
                let why = format!("{} is out of range 0.01..=10", e.get_ref());
                return Err(self.invalid("upstream.hash_epsilon", e.span(), why));
            }
        };
        Ok(UpstreamConfig {
            name,
            servers,
            keepalive: self.count("upstream.keepalive", up.keepalive, 32, 0..100_001)?,
            keepalive_timeout: self.duration(
                "upstream.keepalive_timeout",
                up.keepalive_timeout,
                Duration::from_secs(60),
            )?,
            balance,
            hash_key,
            hash_epsilon,
            max_conns: self.count("upstream.max_conns", up.max_conns, 0, 0..1_000_001)?,
            queue_size: self.count("upstream.queue_size", up.queue_size, 1024, 0..1_000_001)?,
            queue_timeout: self.duration(
                "upstream.queue_timeout",
                up.queue_timeout,
                Duration::from_secs(1),
            )?,
            health_check: self.health_check(up.health_check)?,
            outlier: self.outlier(up.outlier)?,
            retry: self.retry(up.retry, up.retry_non_idempotent)?,
        })
    }

    /// `hash_key`: only with `consistent_hash` (default `client_ip` there).
    fn hash_key(
        &self,
        balance: Balance,
        raw: Option<Text>,
    ) -> Result<Option<HashKey>, ConfigError> {
        const KEY: &str = "upstream.hash_key";
        let Some(raw) = raw else {
            return Ok((balance == Balance::ConsistentHash).then_some(HashKey::ClientIp));
        };
        if balance != Balance::ConsistentHash {
            let why = "is only used with `balance = \"consistent_hash\"`";
            return Err(self.invalid(KEY, raw.span(), why));
        }
        let text = raw.get_ref().as_str();
        let named = |prefix: &str| text.strip_prefix(prefix).map(str::to_string);
        let key = match text {
            "client_ip" => HashKey::ClientIp,
            "uri" => HashKey::Uri,
            _ => match (named("header:"), named("cookie:")) {
                (Some(name), _) if valid_name(&name) => HashKey::Header(name.to_ascii_lowercase()),
                (_, Some(name)) if valid_name(&name) => HashKey::Cookie(name),
                (Some(_), _) | (_, Some(_)) => {
                    let why = format!(
                        "`{text}` needs a name after the colon (letters, digits, `-`, `_`)"
                    );
                    return Err(self.invalid(KEY, raw.span(), why));
                }
                _ => {
                    let why = format!("`{text}` is not one of \"client_ip\", \"uri\", \"header:NAME\", \"cookie:NAME\"");
                    return Err(self.invalid(KEY, raw.span(), why));
                }
            },
        };
        Ok(Some(key))
    }
}

/// A header or cookie name a hash key may use.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
