//! Name resolution for forward-proxy destinations, never on the shard:
//! getaddrinfo blocks (and reads /etc/hosts, nsswitch, resolv.conf), so each
//! shard hands lookups to its own resolver threads (`crate::offload`).
//! Answers and failures are kept in a per-shard cache (bounded, `dns_ttl` /
//! `dns_negative_ttl`), so a busy name costs one lookup per TTL per shard.
//!
//! getaddrinfo reports no record TTLs, so the cache's lifetimes are the
//! configured ones (the alternative, a DNS client in-process, would bypass
//! /etc/hosts and nsswitch unless it reimplemented them).

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::{IpAddr, ToSocketAddrs},
    rc::Rc,
    time::{Duration, Instant},
};

use crate::offload::{Offload, OffloadError};

/// Lookups one shard may have queued for its resolver threads; past this a
/// lookup fails at once instead of queueing without bound.
const QUEUE: usize = 256;

/// Why a name gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS lookup of {0} failed: {1}")]
    Failed(String, String),
    #[error("DNS lookup of {0} gave no address")]
    NoAddress(String),
    #[error("DNS lookup of {0} timed out")]
    TimedOut(String),
    #[error("too many DNS lookups in progress")]
    Busy,
}

/// The cache's lifetimes and size, from `[forward_proxy]`.
#[derive(Debug, Clone, Copy)]
pub struct DnsSettings {
    pub threads: usize,
    pub cache_size: usize,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

struct Cached {
    answer: Result<Rc<[IpAddr]>, DnsError>,
    expires: Instant,
}

/// One shard's resolver: its threads and its cache.
pub struct Dns {
    threads: Offload,
    cache: RefCell<HashMap<Box<str>, Cached>>,
    settings: DnsSettings,
    /// Lookups that went to a resolver thread (tests and stats).
    lookups: Cell<u64>,
}

impl Dns {
    /// Starts `settings.threads` resolver threads for shard `shard`.
    pub fn start(shard: usize, settings: DnsSettings) -> std::io::Result<Dns> {
        Ok(Dns {
            threads: Offload::start(&format!("dns-{shard}"), settings.threads, QUEUE)?,
            cache: RefCell::new(HashMap::new()),
            settings,
            lookups: Cell::new(0),
        })
    }

    /// Lookups this shard sent to its resolver threads (cache misses).
    pub fn lookups(&self) -> u64 {
        self.lookups.get()
    }

    /// The addresses of `name` (an IP literal is its own answer), from the
    /// cache or a resolver thread within `limit`.
    pub async fn resolve(&self, name: &str, limit: Duration) -> Result<Rc<[IpAddr]>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Rc::from([ip]));
        }
        let key = name.to_ascii_lowercase();
        if let Some(answer) = self.cached(&key) {
            return answer;
        }
        self.lookups.set(self.lookups.get() + 1);
        let asked = key.clone();
        let lookup = self.threads.run(move || lookup(&asked));
        let answer = match compio::time::timeout(limit, lookup).await {
            Ok(Ok(answer)) => answer.map(Rc::from),
            Ok(Err(OffloadError::Busy)) => Err(DnsError::Busy),
            Ok(Err(OffloadError::Gone)) => Err(DnsError::Failed(key, "no resolver thread".into())),
            Err(_) => Err(DnsError::TimedOut(key)),
        };
        // A busy queue or a timeout says nothing about the name: not cached.
        if let Ok(_) | Err(DnsError::Failed(..) | DnsError::NoAddress(_)) = &answer {
            self.remember(name.to_ascii_lowercase(), answer.clone());
        }
        answer
    }

    fn cached(&self, key: &str) -> Option<Result<Rc<[IpAddr]>, DnsError>> {
        let cache = self.cache.borrow();
        let entry = cache.get(key)?;
        (entry.expires > Instant::now()).then(|| entry.answer.clone())
    }

    fn remember(&self, key: String, answer: Result<Rc<[IpAddr]>, DnsError>) {
        let ttl = match answer {
            Ok(_) => self.settings.ttl,
            Err(_) => self.settings.negative_ttl,
        };
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= self.settings.cache_size && !cache.contains_key(key.as_str()) {
            let now = Instant::now();
            cache.retain(|_, entry| entry.expires > now);
            if cache.len() >= self.settings.cache_size {
                // Still full of live names: drop one; any is as good as
                // another without a use order worth its upkeep here.
                if let Some(victim) = cache.keys().next().cloned() {
                    cache.remove(&victim);
                }
            }
        }
        let expires = Instant::now() + ttl;
        cache.insert(key.into_boxed_str(), Cached { answer, expires });
    }
}

/// getaddrinfo through std, both address families, duplicates removed.
fn lookup(name: &str) -> Result<Vec<IpAddr>, DnsError> {
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|e| DnsError::Failed(name.to_string(), e.to_string()))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in addrs {
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    if ips.is_empty() {
        return Err(DnsError::NoAddress(name.to_string()));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            threads: 1,
            cache_size: 2,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn resolves_off_thread_and_caches_answers_and_failures() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dns = Dns::start(0, settings()).unwrap();
            let limit = Duration::from_secs(10);
            let first = dns.resolve("localhost", limit).await.unwrap();
            assert!(first.iter().any(|ip| ip.is_loopback()), "{first:?}");
            let again = dns.resolve("LOCALHOST", limit).await.unwrap();
            assert_eq!(first, again);
            assert_eq!(
                dns.lookups(),
                1,
                "the second lookup must come from the cache"
            );
            // RFC 6761: .invalid never resolves.
            let bad = dns.resolve("no-such-host.invalid", limit).await;
            assert!(bad.is_err());
            assert!(dns.resolve("no-such-host.invalid", limit).await.is_err());
            assert_eq!(dns.lookups(), 2, "a failure must be cached too");
            assert_eq!(
                &*dns.resolve("127.0.0.9", limit).await.unwrap(),
                &["127.0.0.9".parse::<IpAddr>().unwrap()]
            );
            assert_eq!(dns.lookups(), 2, "an IP literal needs no lookup");
        });
    }

    #[test]
    fn cache_stays_within_its_size() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dns = Dns::start(0, settings()).unwrap();
            for i in 0..5 {
                dns.remember(format!("n{i}"), Err(DnsError::NoAddress(String::new())));
            }
            assert!(dns.cache.borrow().len() <= 2);
        });
    }
}
