//! What one request did, noted by the phases as they go and read once in the
//! "after" phase (`exchange::after`) for the shard's metrics and the access
//! log. Lives in the request's [`super::client::Client`] (in the request's
//! box, not in the idle connection's task) and begins with each request;
//! noting a field is a plain store, nothing is formatted on the way.

use std::{net::SocketAddr, rc::Rc, time::Instant};

use crate::{
    access_log::{Entry, RequestText},
    http::head::{Framing, ResponseHead},
    metrics::shard::ServerStats,
    shard::clock,
    shard::context::ShardContext,
};

/// How the cache took part in a request, as the access log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The cache is off, or the method is not one it serves.
    None,
    /// The route opts out of an enabled cache.
    Bypass,
    /// Answered from a stored response (or a PURGE answered by the cache).
    Hit,
    /// Fetched from the origin for the cache (miss or revalidation).
    Miss,
}

impl CacheUse {
    pub fn name(self) -> &'static str {
        match self {
            CacheUse::None => "-",
            CacheUse::Bypass => "bypass",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
        }
    }
}

/// One request's outcome so far.
#[derive(Debug, Clone)]
pub struct Trip {
    pub started: Instant,
    /// Index of the matched route in the router's order.
    pub route: Option<usize>,
    /// The upstream (index into `config.upstreams`) and server the request went to.
    pub server: Option<(usize, SocketAddr)>,
    /// When the upstream exchange began (a connection was being acquired).
    pub upstream_started: Option<Instant>,
    /// When the after phase counted the request (`None` before).
    pub ended: Option<Instant>,
    /// The upstream connection came from the keep-alive pool (else it was new).
    pub pooled: bool,
    /// The counters of the server the request went to.
    pub server_stats: Option<Rc<ServerStats>>,
    /// A status a phase sent itself (a stored response, a PURGE answer);
    /// otherwise the upstream response head's status counts.
    pub status: Option<u16>,
    /// Body bytes of the response, when a phase knows them.
    pub bytes: Option<u64>,
    pub cache: CacheUse,
    /// The forward-proxy user the request authenticated as (index into
    /// `config.forward.users`).
    pub user: Option<usize>,
}

impl Trip {
    pub fn begin() -> Trip {
        Trip {
            started: clock::now(),
            route: None,
            server: None,
            upstream_started: None,
            ended: None,
            pooled: false,
            server_stats: None,
            status: None,
            bytes: None,
            cache: CacheUse::None,
            user: None,
        }
    }
}

impl Trip {
    /// The access log's view of the finished request. `resp`: the upstream
    /// response head, whose Content-Length gives the body size when no phase
    /// noted one (a chunked or close-delimited body's size is not known: `-`).
    pub fn log_entry<'a>(
        &self,
        ctx: &'a ShardContext,
        client: &'a [u8],
        request: &'a RequestText,
        resp: &ResponseHead,
    ) -> Entry<'a> {
        let ended = self.ended.unwrap_or_else(clock::now);
        let declared = match resp.fields.framing {
            Framing::Length(n) if resp.status != 0 => Some(n),
            _ => None,
        };
        Entry {
            client,
            request,
            status: self.status,
            bytes: self.bytes.or(declared),
            duration: ended - self.started,
            upstream: self.server.map(|(_, addr)| addr),
            upstream_time: self.upstream_started.map(|t| ended - t),
            cache: self.cache.name(),
            shard: ctx.id,
            user: self.user_name(ctx),
        }
    }

    /// The name of the user the request authenticated as.
    fn user_name<'a>(&self, ctx: &'a ShardContext) -> Option<&'a str> {
        let users = &ctx.config.forward.users;
        self.user
            .and_then(|i| users.get(i))
            .map(|u| u.name.as_str())
    }
}
