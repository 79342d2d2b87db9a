//! One upstream as one shard sees it: its servers' requests in flight from
//! this shard, their ejection records, the balancer, the `max_conns` queue,
//! the retry budget and a random source. [`UpstreamState::pick`] combines
//! them: a server is usable when the health table says up, this shard has not
//! ejected it, it is under `max_conns` and (for a retry) it was not tried
//! already. A [`Lease`] counts one request in flight to a server and, when
//! dropped, wakes the queue. Only the health table is read across shards.

use std::{cell::Cell, net::SocketAddr, rc::Rc, sync::Arc, time::Instant};

use super::{
    balance::{self, Balancer, Candidates},
    health::HealthTable,
    outlier::{self, Ejection},
    queue::Queue,
    retry::RetryBudget,
    rng::Rng,
};
use crate::{
    config::{Failure, UpstreamConfig},
    metrics::shard::{ServerStats, ShardMetrics},
    shard::clock,
};

/// One server of the upstream, on this shard.
pub struct ServerState {
    pub addr: SocketAddr,
    /// The server's metrics (kept by the shard across config generations),
    /// looked up once here rather than by name and address per request.
    pub stats: Rc<ServerStats>,
    /// Requests this shard has in flight to the server (leases held).
    in_flight: Cell<u32>,
    ejection: Ejection,
    /// The server's slot in the health table.
    slot: usize,
}

/// What [`UpstreamState::pick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Server(usize),
    /// Servers are up but every one is at `max_conns`: wait in the queue.
    Busy,
    /// No server is up (health-checked down or ejected).
    NoneUp,
}

pub struct UpstreamState {
    pub index: usize,
    pub servers: Vec<ServerState>,
    balancer: Box<dyn Balancer>,
    health: Arc<HealthTable>,
    pub queue: Queue,
    pub budget: RetryBudget,
    pub rng: Rng,
    /// Leases held: this shard's requests in flight to the upstream.
    leased: Cell<u32>,
    max_conns: u32,
    /// Outlier detection is on: picks must look at the clock.
    ejects: bool,
}

impl UpstreamState {
    pub fn new(
        shard: usize,
        index: usize,
        config: &UpstreamConfig,
        health: Arc<HealthTable>,
        metrics: &ShardMetrics,
    ) -> Rc<UpstreamState> {
        let servers = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, entry)| ServerState {
                addr: entry.addr,
                stats: metrics.server(&config.name, entry.addr),
                in_flight: Cell::new(0),
                ejection: Ejection::default(),
                slot: health.slot(index, i),
            })
            .collect();
        // A different sequence per shard, per upstream and per run.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = now ^ ((shard as u64) << 48) ^ ((index as u64) << 32);
        Rc::new(UpstreamState {
            index,
            servers,
            balancer: balance::build(config.balance, &config.servers, config.hash_epsilon),
            health,
            queue: Queue::new(config.queue_size),
            budget: RetryBudget::default(),
            rng: Rng::seeded(seed),
            leased: Cell::new(0),
            max_conns: u32::try_from(config.max_conns).unwrap_or(u32::MAX),
            ejects: config.outlier.is_some(),
        })
    }

    /// Whether server `i` may take requests at all: up and not ejected
    /// (`now` is `None` when outlier detection is off: nothing is ejected).
    fn is_up(&self, i: usize, now: Option<Instant>) -> bool {
        let server = &self.servers[i];
        self.health.is_up(server.slot) && now.is_none_or(|now| !server.ejection.is_ejected(now))
    }

    /// Whether the health table has server `i` up (metrics; picks use `is_up`).
    pub fn is_healthy(&self, i: usize) -> bool {
        self.health.is_up(self.servers[i].slot)
    }

    fn has_room(&self, i: usize) -> bool {
        self.max_conns == 0 || self.servers[i].in_flight.get() < self.max_conns
    }

    /// The server for a request with hash `key`, avoiding the servers in
    /// `tried` where another one is usable.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Pick {
        // Reading the clock costs a little on every request: only when needed.
        let now = self.ejects.then(clock::now);
        let load = |i: usize| self.servers[i].in_flight.get();
        let fresh = |i: usize| self.is_up(i, now) && self.has_room(i) && !tried.contains(&i);
        let any = |i: usize| self.is_up(i, now) && self.has_room(i);
        for usable in [&fresh as &dyn Fn(usize) -> bool, &any] {
            let candidates = Candidates {
                usable,
                load: &load,
                key,
                rng: &self.rng,
            };
            if let Some(i) = self.balancer.pick(&candidates) {
                return Pick::Server(i);
            }
            if tried.is_empty() {
                break;
            }
        }
        if (0..self.servers.len()).any(|i| self.is_up(i, now)) {
            Pick::Busy
        } else {
            Pick::NoneUp
        }
    }

    /// Counts a request in flight to server `server` until the lease drops.
    pub fn lease(self: &Rc<Self>, server: usize) -> Lease {
        let in_flight = &self.servers[server].in_flight;
        in_flight.set(in_flight.get() + 1);
        self.leased.set(self.leased.get() + 1);
        Lease {
            upstream: self.clone(),
            server,
        }
    }

    /// This shard's requests in flight to the upstream.
    pub fn requests_in_flight(&self) -> u32 {
        self.leased.get()
    }

    /// Feeds outlier detection (when configured) with one exchange's outcome.
    pub fn record(&self, config: &UpstreamConfig, server: usize, outcome: Result<(), Failure>) {
        let Some(policy) = &config.outlier else {
            return;
        };
        if let Some(length) = outlier::record(policy, self, server, outcome, clock::now()) {
            self.servers[server].stats.count_ejection();
            log::warn!(
                "upstream `{}`: server {} ejected for {length:?} after {} consecutive failures",
                config.name,
                self.servers[server].addr,
                policy.consecutive
            );
        }
    }
}

/// One request in flight to one server; dropping it ends the count and lets
/// a queued request try again.
pub struct Lease {
    upstream: Rc<UpstreamState>,
    pub server: usize,
}

impl Lease {
    pub fn upstream(&self) -> &UpstreamState {
        &self.upstream
    }

    /// The metrics of the server the lease counts against.
    pub fn stats(&self) -> &ServerStats {
        &self.upstream.servers[self.server].stats
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let in_flight = &self.upstream.servers[self.server].in_flight;
        in_flight.set(in_flight.get() - 1);
        self.upstream.leased.set(self.upstream.leased.get() - 1);
        self.upstream.queue.wake_one();
    }
}

impl outlier::Records for UpstreamState {
    fn servers(&self) -> usize {
        self.servers.len()
    }
    fn ejection(&self, server: usize) -> &Ejection {
        &self.servers[server].ejection
    }
}
