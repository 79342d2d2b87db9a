//! Name resolution for forward-proxy destinations, never on the shard:
//! getaddrinfo blocks (and reads /etc/hosts, nsswitch, resolv.conf), so each
//! shard hands lookups to its own resolver threads (`crate::offload`).
//! Answers and failures are kept in a per-shard cache (bounded, `dns_ttl` /
//! `dns_negative_ttl`), so a busy name costs one lookup per TTL per shard,
//! and requests of a shard that want a name already being looked up wait
//! for that lookup instead of starting their own (a crawler's burst to a new
//! host is one lookup, not hundreds).
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

use crate::{
    offload::{Offload, OffloadError},
    shard::oneshot,
};

/// What a lookup gives: the addresses, or why there are none.
pub type Answer = Result<Rc<[IpAddr]>, DnsError>;

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

/// One shard's resolver: its threads, its cache and the lookups under way.
pub struct Dns {
    threads: Offload,
    cache: RefCell<HashMap<Box<str>, Cached>>,
    /// Names being looked up, with the requests waiting for the same answer.
    in_flight: RefCell<HashMap<Box<str>, Vec<oneshot::Sender<Answer>>>>,
    settings: DnsSettings,
    counters: Cell<DnsCounters>,
}

/// Per-shard counts, logged at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Lookups sent to a resolver thread.
    pub lookups: u64,
    /// Answers (and failures) from the cache.
    pub hits: u64,
    /// Requests that waited for another request's lookup.
    pub joined: u64,
}

impl Dns {
    /// Starts `settings.threads` resolver threads for shard `shard`.
    pub fn start(shard: usize, settings: DnsSettings) -> std::io::Result<Dns> {
        Ok(Dns {
            threads: Offload::start(&format!("dns-{shard}"), settings.threads, QUEUE)?,
            cache: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(HashMap::new()),
            settings,
            counters: Cell::new(DnsCounters::default()),
        })
    }

    pub fn counters(&self) -> DnsCounters {
        self.counters.get()
    }

    fn count(&self, add: impl FnOnce(&mut DnsCounters)) {
        let mut counters = self.counters.get();
        add(&mut counters);
        self.counters.set(counters);
    }

    /// The addresses of `name` (an IP literal is its own answer), from the
    /// cache, another request's lookup, or a resolver thread, within `limit`.
    pub async fn resolve(&self, name: &str, limit: Duration) -> Answer {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Rc::from([ip]));
        }
        let key = name.to_ascii_lowercase();
        if let Some(answer) = self.cached(&key) {
            self.count(|c| c.hits += 1);
            return answer;
        }
        let under_way = self
            .in_flight
            .borrow_mut()
            .get_mut(key.as_str())
            .map(|waiting| {
                let (tell, told) = oneshot::channel();
                waiting.push(tell);
                told
            });
        if let Some(told) = under_way {
            self.count(|c| c.joined += 1);
            return match compio::time::timeout(limit, told).await {
                Ok(Some(answer)) => answer,
                Ok(None) => Err(DnsError::Failed(key, "the lookup was abandoned".into())),
                Err(_) => Err(DnsError::TimedOut(key)),
            };
        }
        let asking = Asking::begin(self, &key);
        let answer = self.ask(key, limit).await;
        for tell in asking.finish() {
            tell.send(answer.clone());
        }
        answer
    }

    /// Asks a resolver thread; caches what says something about the name.
    async fn ask(&self, key: String, limit: Duration) -> Answer {
        self.count(|c| c.lookups += 1);
        let asked = key.clone();
        let lookup = self.threads.run(move || lookup(&asked));
        let answer = match compio::time::timeout(limit, lookup).await {
            Ok(Ok(answer)) => answer.map(Rc::from),
            Ok(Err(OffloadError::Busy)) => Err(DnsError::Busy),
            Ok(Err(OffloadError::Gone)) => {
                Err(DnsError::Failed(key.clone(), "no resolver thread".into()))
            }
            Err(_) => Err(DnsError::TimedOut(key.clone())),
        };
        // A busy queue or a timeout says nothing about the name: not cached.
        if let Ok(_) | Err(DnsError::Failed(..) | DnsError::NoAddress(_)) = &answer {
            self.remember(key, answer.clone());
        }
        answer
    }

    fn cached(&self, key: &str) -> Option<Answer> {
        let cache = self.cache.borrow();
        let entry = cache.get(key)?;
        (entry.expires > Instant::now()).then(|| entry.answer.clone())
    }

    fn remember(&self, key: String, answer: Answer) {
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

/// A lookup under way for `key`. Dropped without [`Asking::finish`] (the
/// asking request went away), it takes the entry with it: the waiting
/// requests' channels close and they report the lookup abandoned.
struct Asking<'a> {
    dns: &'a Dns,
    key: Box<str>,
}

impl<'a> Asking<'a> {
    fn begin(dns: &'a Dns, key: &str) -> Asking<'a> {
        let key: Box<str> = key.into();
        dns.in_flight.borrow_mut().insert(key.clone(), Vec::new());
        Asking { dns, key }
    }

    /// The requests waiting for this answer.
    fn finish(self) -> Vec<oneshot::Sender<Answer>> {
        // Drop runs next and finds the entry gone.
        self.dns
            .in_flight
            .borrow_mut()
            .remove(&self.key)
            .unwrap_or_default()
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.dns.in_flight.borrow_mut().remove(&self.key);
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
                dns.counters().lookups,
                1,
                "the second lookup must come from the cache"
            );
            // RFC 6761: .invalid never resolves.
            let bad = dns.resolve("no-such-host.invalid", limit).await;
            assert!(bad.is_err());
            assert!(dns.resolve("no-such-host.invalid", limit).await.is_err());
            assert_eq!(dns.counters().lookups, 2, "a failure must be cached too");
            assert_eq!(
                &*dns.resolve("127.0.0.9", limit).await.unwrap(),
                &["127.0.0.9".parse::<IpAddr>().unwrap()]
            );
            assert_eq!(dns.counters().lookups, 2, "an IP literal needs no lookup");
            assert_eq!(dns.counters().hits, 2);
        });
    }

    #[test]
    fn concurrent_requests_for_a_name_share_one_lookup() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dns = Dns::start(0, settings()).unwrap();
            let limit = Duration::from_secs(10);
            let (a, (b, c)) = futures_lite::future::zip(
                dns.resolve("localhost", limit),
                futures_lite::future::zip(
                    dns.resolve("localhost", limit),
                    dns.resolve("Localhost", limit),
                ),
            )
            .await;
            assert!(a.is_ok() && a == b && b == c);
            let counters = dns.counters();
            assert_eq!((counters.lookups, counters.joined), (1, 2), "{counters:?}");
            assert!(dns.in_flight.borrow().is_empty());
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
