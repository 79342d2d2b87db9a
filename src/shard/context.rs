//! Everything one shard owns: its view of the config, router, balancers,
//! buffer pools, upstream pool and connection registry. Created on the shard's own thread and
//! reached through an `Rc`; nothing in it is shared with another shard except
//! the read-only `Arc<Config>`.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::Arc,
};

use crate::{
    buffer::BufferPool,
    cache::ownership::CacheShard,
    config::Config,
    http::{
        head::{AcceptedForms, Limits, RequestHead, ResponseHead},
        rewrite::ForwardOptions,
    },
    proxy::{forward::ForwardShard, routing::Router},
    upstream::{
        balance::{Balancer, WeightedRoundRobin},
        pool::Pool,
    },
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
    /// One per upstream, same order as `config.upstreams`.
    pub balancers: Vec<Box<dyn Balancer>>,
    pub pool: Pool,
    pub connections: Rc<Registry>,
    /// Set once on shutdown: finish the request in hand, then close.
    pub draining: Cell<bool>,
    /// Buffers for reading from clients (request heads and bodies), leased
    /// while a request arrives; each holds a whole request head.
    pub client_buffers: Rc<BufferPool>,
    /// Buffers for reading from upstream servers, leased for one exchange.
    pub upstream_buffers: Rc<BufferPool>,
    /// Idle connections wait in the ring's provided buffers (io_uring).
    pub provided_buffers: bool,
    /// Head-writing vectors of idle connections, kept for the next request.
    out_vecs: RefCell<Vec<Vec<u8>>>,
    /// Parsed heads (their field lists) of idle connections, likewise.
    heads: RefCell<Vec<(RequestHead, ResponseHead)>>,
    /// This shard's part of the response cache, when `[cache] enabled`.
    pub cache: Option<CacheShard>,
    /// The forward proxy's resolver and authenticator, when `[forward_proxy] enabled`.
    pub forward_proxy: Option<ForwardShard>,
    /// Request targets the parser takes: proxy forms only with `forward_proxy`.
    pub target_forms: AcceptedForms,
}

impl ShardContext {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        cache: Option<CacheShard>,
        provided_buffers: bool,
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
        let balancers = config
            .upstreams
            .iter()
            .map(|u| Box::new(WeightedRoundRobin::new(&u.servers)) as Box<dyn Balancer>)
            .collect();
        let forward_proxy = start_forward_proxy(id, &config);
        let target_forms = match forward_proxy {
            Some(_) => AcceptedForms::OriginAndProxy,
            None => AcceptedForms::Origin,
        };
        ShardContext {
            id,
            forward_proxy,
            target_forms,
            request_limits,
            response_limits,
            forward,
            router: Router::new(&config.routes),
            balancers,
            pool: Pool::new(),
            connections: Registry::new(config.tuning.max_connections),
            draining: Cell::new(false),
            client_buffers: BufferPool::new(
                http.buffer_size.max(http.max_header_bytes),
                config.tuning.buffers,
            ),
            upstream_buffers: BufferPool::new(http.buffer_size, config.tuning.buffers),
            provided_buffers,
            out_vecs: RefCell::new(Vec::new()),
            heads: RefCell::new(Vec::new()),
            cache,
            config,
        }
    }
}

/// The forward proxy's per-shard threads, if it is enabled. A shard that
/// cannot start them (thread limit) serves as a reverse proxy only and says so.
fn start_forward_proxy(id: usize, config: &Config) -> Option<ForwardShard> {
    if !config.forward.enabled {
        return None;
    }
    ForwardShard::start(id, &config.forward)
        .map_err(|e| log::error!("shard {id}: forward proxy off: cannot start its threads: {e}"))
        .ok()
}

/// Head vectors and parsed heads kept for reuse per shard; past this, what an
/// idle connection gives back is freed.
const SPARE_REQUEST_STATE: usize = 256;

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
