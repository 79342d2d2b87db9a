//! One shard's counters and latency histograms: plain `Cell`s and `RefCell`s
//! owned by the shard, bumped by the request path with no lock, no atomic and
//! no write to memory another shard reads. They outlive config reloads: a
//! route's counters are found again by its label.
//!
//! Nobody reads them from another thread. The admin side sends the shard a
//! `Control::Snapshot` over its control channel; the shard answers the next
//! time it polls control with a [`ShardSnapshot`] (plain numbers and
//! histogram copies, `Send`), and the admin thread merges the snapshots.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    net::SocketAddr,
    rc::Rc,
    time::Duration,
};

use hdrhistogram::Histogram;

use crate::http::head::Method;

/// Method classes counted separately; everything else is `other`.
pub const METHOD_CLASSES: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "other"];
/// Status classes; `none`: the client left before any answer.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The label of requests that matched no route (404) or were refused before routing.
pub const NO_ROUTE: &str = "(none)";

/// Latencies recorded from 1 µs to 1 h with 2 significant digits: ~20 KiB a route.
fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: 1 <= low, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant bounds")
}

pub fn method_class(method: Method) -> usize {
    match method {
        Method::Get => 0,
        Method::Head => 1,
        Method::Post => 2,
        Method::Put => 3,
        Method::Delete => 4,
        _ => 5,
    }
}

/// `None`: no status was sent.
pub fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100) - 1,
        _ => 5,
    }
}

/// Requests and latency of one route on one shard.
pub struct RouteStats {
    requests: [[Cell<u64>; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    latency: RefCell<Histogram<u64>>,
    latency_sum_us: Cell<u64>,
}

impl RouteStats {
    fn new() -> RouteStats {
        RouteStats {
            requests: Default::default(),
            latency: RefCell::new(latency_histogram()),
            latency_sum_us: Cell::new(0),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, method: Method, status: Option<u16>, elapsed: Duration) {
        let cell = &self.requests[method_class(method)][status_class(status)];
        cell.set(cell.get() + 1);
        let us = (elapsed.as_micros() as u64).max(1);
        self.latency_sum_us.set(self.latency_sum_us.get() + us);
        // Values over the top bound are clamped (saturating record).
        self.latency.borrow_mut().saturating_record(us);
    }

    fn snapshot(&self, label: &str) -> RouteSnapshot {
        RouteSnapshot {
            label: label.to_string(),
            requests: self
                .requests
                .each_ref()
                .map(|row| row.each_ref().map(Cell::get)),
            latency: self.latency.borrow().clone(),
            latency_sum_us: self.latency_sum_us.get(),
        }
    }
}

/// Requests one shard sent to one upstream server.
#[derive(Debug, Default)]
pub struct ServerStats {
    requests: Cell<u64>,
    failures: Cell<u64>,
    /// Requests sent on a pooled keep-alive connection (the rest opened one).
    pooled: Cell<u64>,
    /// Requests between acquiring a connection and their response's end.
    in_flight: Cell<u64>,
    /// New connections opened (a pool miss each, or a dead pooled one replaced).
    connects: Cell<u64>,
    /// Connection attempts that failed (refused, unreachable, timed out).
    connect_errors: Cell<u64>,
    /// Tries after a failed first one (retry policy) that went to this server.
    retries: Cell<u64>,
    /// Times outlier detection ejected the server from this shard's picks.
    ejections: Cell<u64>,
}

/// A request in flight to a server; uncounted when dropped (also when the
/// request's future is dropped midway).
pub struct InFlight(Rc<ServerStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = &self.0.in_flight;
        n.set(n.get().saturating_sub(1));
    }
}

impl ServerStats {
    /// Counts a request in flight until the guard is dropped.
    pub fn begin(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    /// One request sent to the server; `failed`: it ended in an error;
    /// `pooled`: on a connection from the keep-alive pool.
    pub fn record(&self, failed: bool, pooled: bool) {
        self.requests.set(self.requests.get() + 1);
        if failed {
            self.failures.set(self.failures.get() + 1);
        }
        if pooled {
            self.pooled.set(self.pooled.get() + 1);
        }
    }

    /// One attempt to open a connection; `opened`: it succeeded.
    pub fn count_connect(&self, opened: bool) {
        let counter = if opened {
            &self.connects
        } else {
            &self.connect_errors
        };
        counter.set(counter.get() + 1);
    }

    /// A retry (not the first try) was sent to the server.
    pub fn count_retry(&self) {
        self.retries.set(self.retries.get() + 1);
    }

    /// Outlier detection ejected the server.
    pub fn count_ejection(&self) {
        self.ejections.set(self.ejections.get() + 1);
    }

    fn snapshot(&self, upstream: &str, addr: SocketAddr) -> ServerSnapshot {
        ServerSnapshot {
            upstream: upstream.to_string(),
            addr,
            counts: ServerCounts {
                requests: self.requests.get(),
                failures: self.failures.get(),
                pooled: self.pooled.get(),
                in_flight: self.in_flight.get(),
                connects: self.connects.get(),
                connect_errors: self.connect_errors.get(),
                retries: self.retries.get(),
                ejections: self.ejections.get(),
            },
        }
    }
}

/// Requests of one forward-proxy user on one shard, by status class. Users
/// come from the config, so their number (the label's cardinality) is bounded.
#[derive(Debug, Default)]
pub struct UserStats {
    requests: [Cell<u64>; STATUS_CLASSES.len()],
}

impl UserStats {
    /// Counts one finished request of the user.
    pub fn record(&self, status: Option<u16>) {
        let cell = &self.requests[status_class(status)];
        cell.set(cell.get() + 1);
    }
}

/// One user's counters at the moment of a snapshot.
#[derive(Debug, Clone)]
pub struct UserSnapshot {
    pub name: String,
    /// By status class.
    pub requests: [u64; STATUS_CLASSES.len()],
}

/// The shard's metrics; one per shard, shared by every config generation.
pub struct ShardMetrics {
    /// The shard's I/O engine, as it logs it.
    pub engine: String,
    routes: RefCell<HashMap<String, Rc<RouteStats>>>,
    /// By upstream name, then server address: looked up per request without allocating.
    servers: RefCell<HashMap<String, HashMap<SocketAddr, Rc<ServerStats>>>>,
    pub accepted: Cell<u64>,
    /// Requests whose upstream had no server that accepted a connection, by upstream.
    connect_failures: RefCell<HashMap<String, u64>>,
    /// By forward-proxy user name (the configured ones, over every generation).
    users: RefCell<HashMap<String, Rc<UserStats>>>,
}

impl ShardMetrics {
    pub fn new(engine: String) -> ShardMetrics {
        ShardMetrics {
            engine,
            routes: RefCell::new(HashMap::new()),
            servers: RefCell::new(HashMap::new()),
            accepted: Cell::new(0),
            connect_failures: RefCell::new(HashMap::new()),
            users: RefCell::new(HashMap::new()),
        }
    }

    /// The counters of the forward-proxy user `name`, created on first use.
    /// Looked up when a config generation is built, not per request.
    pub fn user(&self, name: &str) -> Rc<UserStats> {
        self.users
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Copies of the users' counters, for [`ShardSnapshot`].
    pub fn user_snapshots(&self) -> Vec<UserSnapshot> {
        let users = self.users.borrow();
        users
            .iter()
            .map(|(name, stats)| UserSnapshot {
                name: name.clone(),
                requests: stats.requests.each_ref().map(Cell::get),
            })
            .collect()
    }

    /// A request found no server of `upstream` to connect to.
    pub fn count_connect_failure(&self, upstream: &str) {
        let mut failures = self.connect_failures.borrow_mut();
        match failures.get_mut(upstream) {
            Some(n) => *n += 1,
            None => {
                failures.insert(upstream.to_string(), 1);
            }
        }
    }

    /// Connect failures by upstream, for [`ShardSnapshot`].
    pub fn connect_failures(&self) -> Vec<(String, u64)> {
        let failures = self.connect_failures.borrow();
        failures.iter().map(|(u, n)| (u.clone(), *n)).collect()
    }

    /// The counters of the route labelled `label`, created on first use. Looked
    /// up when a config generation is built, not per request.
    pub fn route(&self, label: &str) -> Rc<RouteStats> {
        self.routes
            .borrow_mut()
            .entry(label.to_string())
            .or_insert_with(|| Rc::new(RouteStats::new()))
            .clone()
    }

    /// The counters of one server of an upstream, created on first use.
    pub fn server(&self, upstream: &str, addr: SocketAddr) -> Rc<ServerStats> {
        if let Some(stats) = self
            .servers
            .borrow()
            .get(upstream)
            .and_then(|s| s.get(&addr))
        {
            return stats.clone();
        }
        self.servers
            .borrow_mut()
            .entry(upstream.to_string())
            .or_default()
            .entry(addr)
            .or_default()
            .clone()
    }

    pub fn count_accept(&self) {
        self.accepted.set(self.accepted.get() + 1);
    }

    /// Copies of the route and server counters, for [`ShardSnapshot`].
    pub fn snapshot_parts(&self) -> (Vec<RouteSnapshot>, Vec<ServerSnapshot>) {
        let routes = self
            .routes
            .borrow()
            .iter()
            .map(|(label, stats)| stats.snapshot(label))
            .collect();
        let servers = self
            .servers
            .borrow()
            .iter()
            .flat_map(|(upstream, servers)| {
                servers
                    .iter()
                    .map(|(addr, stats)| stats.snapshot(upstream, *addr))
            })
            .collect();
        (routes, servers)
    }
}

/// One route's counters at the moment of a snapshot.
#[derive(Debug, Clone)]
pub struct RouteSnapshot {
    pub label: String,
    /// `[method class][status class]`.
    pub requests: [[u64; STATUS_CLASSES.len()]; METHOD_CLASSES.len()],
    /// Microseconds.
    pub latency: Histogram<u64>,
    pub latency_sum_us: u64,
}

impl RouteSnapshot {
    pub fn total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Adds another shard's counters of the same route.
    pub fn merge(&mut self, other: &RouteSnapshot) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
        // Same bounds on every shard, so adding cannot fail; saturating anyway.
        let _ = self.latency.add(&other.latency);
        self.latency_sum_us += other.latency_sum_us;
    }
}

/// One server's counters on one shard at the moment of a snapshot, or
/// summed over the shards.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerCounts {
    pub requests: u64,
    pub failures: u64,
    /// Requests on a pooled keep-alive connection (pool hits).
    pub pooled: u64,
    pub in_flight: u64,
    /// New connections opened (pool misses).
    pub connects: u64,
    pub connect_errors: u64,
    pub retries: u64,
    pub ejections: u64,
}

impl ServerCounts {
    /// Adds another shard's counts of the same server.
    pub fn add(&mut self, other: &ServerCounts) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.pooled += other.pooled;
        self.in_flight += other.in_flight;
        self.connects += other.connects;
        self.connect_errors += other.connect_errors;
        self.retries += other.retries;
        self.ejections += other.ejections;
    }
}

#[derive(Debug, Clone)]
pub struct ServerSnapshot {
    pub upstream: String,
    pub addr: SocketAddr,
    pub counts: ServerCounts,
}

/// A server of the running config as the shared health table shows it.
#[derive(Debug, Clone)]
pub struct ServerHealth {
    pub upstream: String,
    pub addr: SocketAddr,
    /// Up by the active health checks (always up without checks).
    pub up: bool,
}

/// The cache counters of one shard at the moment of a snapshot.
#[derive(Debug, Clone)]
pub struct CacheSnapshot {
    pub counters: crate::cache::ownership::Counters,
    pub store: crate::cache::store::Stats,
    /// Cross-shard lookup round trips, microseconds.
    pub lookup_latency: Histogram<u64>,
}

/// Everything one shard reports when asked; crosses to the admin thread.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub engine: String,
    pub connections_open: usize,
    /// Connections with a request in hand.
    pub connections_busy: usize,
    pub connections_accepted: u64,
    pub client_buffers_in_use: usize,
    pub upstream_buffers_in_use: usize,
    pub upstream_idle: usize,
    pub access_log_dropped: u64,
    pub routes: Vec<RouteSnapshot>,
    pub servers: Vec<ServerSnapshot>,
    /// The running config's servers, up or down.
    pub health: Vec<ServerHealth>,
    /// Requests that found no server to connect to, by upstream.
    pub connect_failures: Vec<(String, u64)>,
    /// Forward-proxy users' requests.
    pub users: Vec<UserSnapshot>,
    pub cache: Option<CacheSnapshot>,
    pub cluster: Option<ClusterSnapshot>,
}

/// One shard's view of the cluster (`[cluster]`), for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSnapshot {
    pub counters: crate::cluster::peer::ClusterCounters,
    pub members: usize,
    /// Members this shard does not hold down.
    pub members_up: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(STATUS_CLASSES[status_class(Some(204))], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(599))], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(None)], "none");
        assert_eq!(STATUS_CLASSES[status_class(Some(600))], "none");
        assert_eq!(METHOD_CLASSES[method_class(Method::Patch)], "other");
    }

    #[test]
    fn merged_snapshots_add_up() {
        let metrics = ShardMetrics::new("test".into());
        let route = metrics.route("/");
        route.record(Method::Get, Some(200), Duration::from_millis(3));
        route.record(Method::Post, Some(502), Duration::from_millis(7));
        assert!(Rc::ptr_eq(&route, &metrics.route("/")));
        let (routes, _) = metrics.snapshot_parts();
        let mut merged = routes[0].clone();
        merged.merge(&routes[0]);
        assert_eq!(merged.total(), 4);
        assert_eq!(merged.requests[0][1], 2);
        assert_eq!(merged.requests[2][4], 2);
        assert_eq!(merged.latency.len(), 4);
        assert_eq!(merged.latency_sum_us, 20_000);
    }
}
