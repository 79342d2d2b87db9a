//! Everything one shard owns: its view of the config, router, upstreams,
//! buffer pools, upstream pool and connection registry. Created on the shard's own thread and
//! reached through an `Rc`; nothing in it is shared with another shard except
//! the read-only `Arc<Config>` and the health table (read-mostly, written
//! only by each server's prober).
//!
//! A config reload makes a new *generation*: a new `ShardContext` with the
//! new config, router, upstream state, health table and limits, sharing by
//! `Rc` everything that outlives a config (connections, pools, buffers,
//! cache, cluster view, metrics, requests in flight). A request holds the
//! generation it started on to its end; a connection moves to the newest one
//! ([`ShardContext::latest`]) before its next request.

use std::{
    cell::{Cell, RefCell},
    rc::{Rc, Weak},
    sync::Arc,
    time::Instant,
};

use crate::{
    access_log::ShardLog,
    buffer::BufferPool,
    cache::ownership::CacheShard,
    cluster::ClusterShard,
    config::Config,
    http::{
        head::{AcceptedForms, Limits, RequestHead, ResponseHead},
        rewrite::ForwardOptions,
    },
    limits::{ClientLimits, ShardRate, TokenBucket},
    metrics::shard::{RouteStats, ShardMetrics, UserStats, NO_ROUTE},
    net::Splicer,
    proxy::{forward::ForwardShard, routing::Router},
    upstream::{health::HealthTable, pool::Pool, state::UpstreamState},
};

use super::registry::Registry;

pub struct ShardContext {
    pub id: usize,
    pub config: Arc<Config>,
    /// Limits for client request heads.
    pub request_limits: Limits,
    /// Limits for upstream response heads: as large as the upstream buffer.
    pub response_limits: Limits,
    pub forward: ForwardOptions,
    pub router: Router,
    /// This shard's view of each upstream (balancer, loads, queue, retry
    /// budget, ejections), same order as `config.upstreams`; rebuilt by a reload.
    pub upstreams: Vec<Rc<UpstreamState>>,
    /// Up/down of every server of this generation's config, written by the
    /// shards' health probers: the one object here other shards write (see
    /// `upstream/health.rs`). A reload brings a new table and new probers.
    pub health: Arc<HealthTable>,
    pub pool: Rc<Pool>,
    pub connections: Rc<Registry>,
    /// Set once on shutdown: finish the request in hand, then close.
    pub draining: Rc<Cell<bool>>,
    /// Requests past routing and not yet finished (`server.tuning.max_inflight`),
    /// over every generation.
    pub requests_in_flight: Rc<Cell<usize>>,
    /// Buffers for reading from clients (request heads and bodies), leased
    /// while a request arrives; each holds a whole request head.
    pub client_buffers: Rc<BufferPool>,
    /// Buffers for reading from upstream servers, leased for one exchange.
    pub upstream_buffers: Rc<BufferPool>,
    /// Splicing of large response bodies (`http.splice_above`), if on.
    pub splicer: Option<Splicer>,
    /// Idle connections wait in the ring's provided buffers (io_uring).
    pub provided_buffers: bool,
    /// Head-writing vectors of idle connections, kept for the next request.
    out_vecs: RefCell<Vec<Vec<u8>>>,
    /// Parsed heads (their field lists) of idle connections, likewise.
    heads: RefCell<Vec<(RequestHead, ResponseHead)>>,
    /// This shard's part of the response cache, when `[cache] enabled`.
    pub cache: Option<Rc<CacheShard>>,
    /// This shard's view of the other nodes, when `[cluster]` is configured
    /// (shared by generations: `[cluster]` changes need a restart).
    pub cluster: Option<Rc<ClusterShard>>,
    /// The shard's counters, shared by every generation.
    pub metrics: Rc<ShardMetrics>,
    /// Per route, in the router's order (`Router::find`'s index).
    pub route_stats: Vec<Rc<RouteStats>>,
    /// Requests that matched no route or were refused before routing.
    pub unrouted_stats: Rc<RouteStats>,
    /// Per forward-proxy user, in `config.forward.users` order.
    pub user_stats: Vec<Rc<UserStats>>,
    /// Per-client-IP connection counts and request buckets (shared by generations).
    pub client_limits: Rc<ClientLimits>,
    /// Per route (router order): its rate limit's share and bucket, if it has one.
    pub route_buckets: Vec<Option<(ShardRate, TokenBucket)>>,
    /// This shard's access log buffer, when `[log] access` is on.
    pub access_log: Option<Rc<ShardLog>>,
    /// The newest generation of this shard's context (see the module doc).
    newest: Rc<RefCell<Weak<ShardContext>>>,
    /// The forward proxy's resolver and authenticator, when `[forward_proxy]
    /// enabled` (shared by generations: its threads start once per shard).
    pub forward_proxy: Option<Rc<ForwardShard>>,
    /// Request targets the parser takes: proxy forms only with `forward_proxy`.
    pub target_forms: AcceptedForms,
}

impl ShardContext {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        cache: Option<CacheShard>,
        provided_buffers: bool,
        health: Arc<HealthTable>,
        metrics: Rc<ShardMetrics>,
        shards: usize,
    ) -> ShardContext {
        let http = &config.http;
        let request_limits = Limits {
            max_head_bytes: http.max_header_bytes,
            max_headers: http.max_headers,
            max_uri_length: http.max_uri_length,
        };
        let response_limits = Limits {
            max_head_bytes: http.buffer_size,
            max_headers: crate::config::MAX_HEADERS_CAP,
            max_uri_length: http.buffer_size,
        };
        let forward = ForwardOptions {
            x_forwarded_for: http.x_forwarded_for,
            x_forwarded_proto: http.x_forwarded_proto,
            x_forwarded_host: http.x_forwarded_host,
            via: http.via,
        };
        let upstreams = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| UpstreamState::new(id, index, u, health.clone(), &metrics))
            .collect();
        let router = Router::new(&config.routes);
        let route_stats = router
            .routes()
            .iter()
            .map(|r| metrics.route(&r.label()))
            .collect();
        let user_stats = config
            .forward
            .users
            .iter()
            .map(|u| metrics.user(&u.name))
            .collect();
        let now = Instant::now();
        let route_buckets = router
            .routes()
            .iter()
            .map(|r| {
                r.rate_limit.map(|rate| {
                    let share = ShardRate::share(rate, shards);
                    (share, TokenBucket::full(share, now))
                })
            })
            .collect();
        ShardContext {
            id,
            // Started by `start_forward_proxy`, once per shard.
            forward_proxy: None,
            target_forms: AcceptedForms::Origin,
            request_limits,
            response_limits,
            forward,
            router,
            upstreams,
            health,
            route_stats,
            unrouted_stats: metrics.route(NO_ROUTE),
            user_stats,
            metrics,
            newest: Rc::new(RefCell::new(Weak::new())),
            access_log: None,
            client_limits: Rc::new(ClientLimits::new(shards)),
            route_buckets,
            pool: Rc::new(Pool::new(provided_buffers)),
            connections: Registry::new(config.tuning.max_connections),
            draining: Rc::new(Cell::new(false)),
            requests_in_flight: Rc::new(Cell::new(0)),
            client_buffers: BufferPool::new(
                http.buffer_size.max(http.max_header_bytes),
                config.tuning.buffers,
            ),
            upstream_buffers: BufferPool::new(
                http.buffer_size + UPSTREAM_HEAD_ROOM,
                config.tuning.buffers,
            ),
            provided_buffers,
            splicer: Splicer::new(http.splice_above),
            out_vecs: RefCell::new(Vec::new()),
            heads: RefCell::new(Vec::new()),
            cache: cache.map(Rc::new),
            cluster: config
                .cluster
                .as_ref()
                .map(|c| Rc::new(ClusterShard::new(c))),
            config,
        }
    }

    /// Makes this the shard's newest generation and returns it shared.
    pub fn install(self) -> Rc<ShardContext> {
        let ctx = Rc::new(self);
        *ctx.newest.borrow_mut() = Rc::downgrade(&ctx);
        ctx
    }

    /// The next generation, for a reloaded `config`: config-derived parts
    /// (router, upstream state, limits, forwarding options) built anew, with
    /// `health`, the table the new config's probers write; the connections,
    /// pools, buffers, cache, cluster view and metrics shared with this one.
    /// The registry's `max_connections`, the buffer pools' sizes and the cache
    /// settings are the ones the shard started with.
    pub fn next_generation(&self, config: Arc<Config>, health: Arc<HealthTable>) -> ShardContext {
        let fresh = ShardContext::new(
            self.id,
            config,
            None,
            self.provided_buffers,
            health,
            self.metrics.clone(),
            self.client_limits.shards(),
        );
        ShardContext {
            pool: self.pool.clone(),
            connections: self.connections.clone(),
            draining: self.draining.clone(),
            requests_in_flight: self.requests_in_flight.clone(),
            client_buffers: self.client_buffers.clone(),
            upstream_buffers: self.upstream_buffers.clone(),
            cache: self.cache.clone(),
            cluster: self.cluster.clone(),
            forward_proxy: self.forward_proxy.clone(),
            target_forms: self.target_forms,
            access_log: self.access_log.clone(),
            client_limits: self.client_limits.clone(),
            newest: self.newest.clone(),
            ..fresh
        }
    }

    /// The shard's newest generation (this one unless a reload came since).
    pub fn latest(self: &Rc<Self>) -> Rc<ShardContext> {
        self.newest
            .borrow()
            .upgrade()
            .unwrap_or_else(|| self.clone())
    }
}

impl ShardContext {
    /// Starts the forward proxy's per-shard threads, if it is enabled, and
    /// lets the parser take its request forms. A shard that cannot start
    /// them (thread limit) serves as a reverse proxy only and says so.
    pub fn start_forward_proxy(&mut self) {
        if !self.config.forward.enabled {
            return;
        }
        let id = self.id;
        self.forward_proxy = ForwardShard::start(id, &self.config.forward)
            .map_err(|e| {
                log::error!("shard {id}: forward proxy off: cannot start its threads: {e}")
            })
            .ok()
            .map(Rc::new);
        if self.forward_proxy.is_some() {
            self.target_forms = AcceptedForms::OriginAndProxy;
        }
    }
}

/// Head vectors and parsed heads kept for reuse per shard; past this, what an
/// idle connection gives back is freed.
const SPARE_REQUEST_STATE: usize = 256;

/// Upstream buffers are this much larger than `http.buffer_size`, so that a
/// response head and a body of `buffer_size` fit together and leave in one
/// write without sliding the body to the front of the buffer first.
const UPSTREAM_HEAD_ROOM: usize = 4096;

impl ShardContext {
    /// A vector for writing heads, for a connection that has a request in hand.
    pub fn take_out_vec(&self) -> Vec<u8> {
        self.out_vecs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(2048))
    }

    /// Heads to parse a request and its response into (field lists reused).
    pub fn take_heads(&self) -> (RequestHead, ResponseHead) {
        self.heads.borrow_mut().pop().unwrap_or_default()
    }

    /// Takes back an idle connection's heads; past the spare count they are freed.
    pub fn give_heads(&self, request: RequestHead, response: ResponseHead) {
        let mut spare = self.heads.borrow_mut();
        if spare.len() < SPARE_REQUEST_STATE {
            spare.push((request, response));
        }
    }

    /// Takes back an idle connection's vector.
    pub fn give_out_vec(&self, mut out: Vec<u8>) {
        let mut spare = self.out_vecs.borrow_mut();
        if out.capacity() > 0 && out.capacity() <= 64 * 1024 && spare.len() < SPARE_REQUEST_STATE {
            out.clear();
            spare.push(out);
        }
    }
}
