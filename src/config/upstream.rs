//! `[[upstream]]`: named groups of origin servers and their keep-alive pools.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use super::{
    raw::{RawServerEntry, RawUpstream},
    resolver::Resolver,
    ConfigError,
};

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerEntry>,
    /// Idle connections kept per server per shard.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
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
            upstreams.push(UpstreamConfig {
                name,
                servers,
                keepalive: self.count("upstream.keepalive", up.keepalive, 32, 0..100_001)?,
                keepalive_timeout: self.duration(
                    "upstream.keepalive_timeout",
                    up.keepalive_timeout,
                    Duration::from_secs(60),
                )?,
            });
        }
        Ok((upstreams, by_name))
    }
}
