//! The forward proxy (`[forward_proxy] enabled`): requests whose target is
//! absolute-form (`GET http://host:port/path`) or CONNECT's `host:port`.
//! [`handle`] admits the request (client address, user), checks the
//! destination's port and name, resolves it off the shard (`upstream::dns`),
//! keeps only the addresses the ACL admits (`acl`, so a name that resolves
//! to an internal address is refused like the address itself), then either
//! opens a tunnel (`tunnel`) or forwards the request: rewritten to
//! origin-form with `Host` from the target, hop-by-hop and `Proxy-*` fields
//! removed, over a connection from the shard's pool (keyed by destination
//! address, like every upstream connection), through the same phases 4 to 6
//! as a reverse-proxied request. With `[forward_proxy] cache` on, GET and
//! HEAD go through the response cache first (`cached`), under keys of their
//! own (`cache::key::forward_request_key`); only a miss resolves the name
//! and picks its way out (`origin`).
//!
//! With `[[forward_proxy.parent]]`s, requests and tunnels leave through a
//! parent instead (`parent`), or direct when none answers and
//! `parent_fallback = "direct"`.
//!
//! New connections race the admitted addresses (`eyeballs`); users'
//! limits are counted per shard (`user_limits`).
//!
//! Per-shard state ([`ForwardShard`]): the resolver and its cache, the
//! authenticator and its remembered credentials, the parents' round-robin,
//! the users' counters.

use std::{
    net::{IpAddr, SocketAddr},
    rc::Rc,
};

use super::{
    acl,
    auth::Auth,
    cached,
    client::Client,
    duplex::stream_request,
    error::ProxyError,
    exchange::{buffered_body, whole_request, Exchange, Forward, Lookup, Next},
    eyeballs::connect_first,
    origin::{ForwardOrigin, Origin},
    parent::{self, Parents},
    response::ResponseEnd,
    target::Target,
    trip::CacheUse,
    tunnel::{self, upgrade as upgrade_to, upgrade_requested, UpgradeTo},
    user_limits::UserLimits,
};
use crate::{
    cache::ownership::CacheShard,
    config::{ForwardConfig, ParentFallback, ParentProxy, RouteConfig},
    http::{
        head::{host_without_port, Framing, HeadError, RequestHead, ResponseHead, TargetForm},
        rewrite::{write_forward_request_head, write_parent_request_head, RequestEdit},
        target::{absolute, connect_authority},
    },
    shard::context::ShardContext,
    upstream::{
        dns::{Dns, DnsSettings},
        pool::UpstreamConn,
    },
};

/// One shard's forward-proxy state.
pub struct ForwardShard {
    pub dns: Dns,
    pub auth: Auth,
    parents: Parents,
    limits: UserLimits,
    /// Forward requests have no `[[route]]`; the shared phases 3 to 6 take
    /// one, so this stands in: no default TTL, no Set-Cookie stored, and an
    /// upstream index nothing here reads (connections come from [`acquire`]
    /// through `origin`, not a balancer). Whether the cache applies is
    /// `[forward_proxy] cache`, not this route's `cache`.
    route: RouteConfig,
}

impl ForwardShard {
    /// Starts the shard's resolver and hashing threads.
    pub fn start(shard: usize, config: &ForwardConfig) -> std::io::Result<ForwardShard> {
        let settings = DnsSettings {
            threads: config.dns_threads,
            cache_size: config.dns_cache_size,
            ttl: config.dns_ttl,
            negative_ttl: config.dns_negative_ttl,
        };
        Ok(ForwardShard {
            dns: Dns::start(shard, settings)?,
            auth: Auth::start(shard)?,
            parents: Parents::new(config.parents.len()),
            limits: UserLimits::new(&config.users),
            route: RouteConfig {
                host: None,
                path_prefix: "/".into(),
                upstream: usize::MAX,
                cache: false,
                cache_default_ttl: None,
                cache_set_cookie: false,
                priority: 0,
                priority_header: None,
                rate_limit: None,
            },
        })
    }
}

impl ForwardShard {
    /// One line at shutdown: how names were resolved.
    pub fn log_counters(&self, shard: usize) {
        let dns = self.dns.counters();
        log::info!(
            "shard {shard} forward proxy: dns lookups {} cache-hits {} joined {}",
            dns.lookups,
            dns.hits,
            dns.joined
        );
    }
}

/// Where a forward request goes, copied out of the head before it is consumed.
#[derive(Clone)]
pub struct Destination {
    /// Lower case; an IPv6 literal without brackets.
    pub host: String,
    pub port: u16,
}

/// Serves an absolute-form or CONNECT request. Like [`super::exchange::handle`],
/// an `Err` means nothing reached the client yet.
pub async fn handle(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
) -> Result<Next, ProxyError> {
    let Some(fwd) = &ctx.forward_proxy else {
        // The parser takes these forms only with a forward-proxy state.
        client.buf.consume(req.fields.head_len);
        return Err(ProxyError::BadRequest(HeadError::NotOriginForm));
    };
    let admitted = admit(ctx, fwd, client, req).await;
    // Held until the request or tunnel is over.
    let slot = admitted.and_then(|(destination, user)| {
        client.trip.user = user;
        let slot = fwd.limits.enter(&ctx.config.forward.users, user)?;
        Ok((destination, slot))
    });
    let (destination, _slot) = match slot {
        Ok(admitted) => admitted,
        Err(e) => {
            // Nothing went anywhere: the connection may carry on after a 403 or 407.
            client.buf.consume(req.fields.head_len);
            return Err(e);
        }
    };
    if req.form != TargetForm::Authority {
        return forward(ctx, fwd, client, req, resp, &destination).await;
    }
    // A tunnel's connection never goes back to the pool: a fresh one each.
    let hop = next_hop(ctx, fwd, &destination, false).await;
    match hop.map_err(|e| refused(client, req, e))? {
        Hop::Direct(addrs) => {
            let (conn, _) = acquire(ctx, &addrs, false).await?;
            tunnel::connect(ctx, client, req, conn).await
        }
        Hop::Parent(mut conn, _, parent) => {
            let authority = req.target.of(client.buf.filled());
            if let Err(e) = parent::open_tunnel(ctx, &mut conn, parent, authority, resp).await {
                ctx.pool.discard(conn);
                return Err(e);
            }
            tunnel::connect(ctx, client, req, conn).await
        }
    }
}

/// The way out for one request: straight to the destination's admitted
/// addresses, or a connection to a parent proxy.
pub(super) enum Hop<'c> {
    Direct(Vec<SocketAddr>),
    /// A connection is a pointer (`UpstreamConn` boxes its state).
    Parent(UpstreamConn, SocketAddr, &'c ParentProxy),
}

/// Picks the way out: a parent when parents are configured and one answers
/// (`pooled`: an idle connection to it may do), else (no parents, or none
/// reachable with `parent_fallback = "direct"`) the destination itself.
pub(super) async fn next_hop<'c>(
    ctx: &'c ShardContext,
    fwd: &ForwardShard,
    destination: &Destination,
    pooled: bool,
) -> Result<Hop<'c>, ProxyError> {
    let config = &ctx.config.forward;
    if !config.parents.is_empty() {
        // The parent resolves names; an address typed in is still ours to check.
        if let Ok(ip) = destination.host.parse::<IpAddr>() {
            acl::check_address(config, &destination.host, ip).map_err(ProxyError::Denied)?;
        }
        match fwd.parents.acquire(ctx, pooled).await {
            Ok((conn, addr, parent)) => return Ok(Hop::Parent(conn, addr, parent)),
            Err(e) if config.parent_fallback == ParentFallback::Direct => {
                log::warn!(
                    "shard {}: no parent proxy reachable ({e}); going direct",
                    ctx.id
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Hop::Direct(
        admitted_addresses(ctx, fwd, destination).await?,
    ))
}

/// The checks before any destination address is known: client address,
/// user, target syntax, Host, port and name rules. Returns the destination
/// and the user's index (`None` without users).
async fn admit(
    ctx: &ShardContext,
    fwd: &ForwardShard,
    client: &Client,
    req: &RequestHead,
) -> Result<(Destination, Option<usize>), ProxyError> {
    let config = &ctx.config.forward;
    let client_ip = client.addr.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    acl::check_client(config, client_ip).map_err(ProxyError::Denied)?;
    let buf = client.buf.filled();
    let user = fwd.auth.authenticate(config, req, buf).await?;
    let target = req.target.of(buf);
    let connect = req.form == TargetForm::Authority;
    let authority = match connect {
        true => connect_authority(target),
        false => absolute(target).map(|t| t.authority),
    }
    .ok_or(ProxyError::BadRequest(HeadError::NotOriginForm))?;
    if !connect {
        // RFC 9112 §3.2.2 lets a proxy replace Host with the target's; a
        // Host naming another server is refused instead, so that nothing
        // behind the proxy can be told a different story than the proxy was.
        if let Some(host) = req.host.map(|h| h.of(buf)) {
            if !same_server(host, authority.host, authority.port) {
                return Err(ProxyError::BadRequest(HeadError::Malformed(
                    "Host does not match the request target",
                )));
            }
        }
    }
    let host = String::from_utf8_lossy(authority.host_for_lookup()).to_ascii_lowercase();
    acl::check_name(config, &host, authority.port, connect).map_err(ProxyError::Denied)?;
    let destination = Destination {
        host,
        port: authority.port,
    };
    Ok((destination, user))
}

/// `e`, with the request's head consumed first: nothing went anywhere, and
/// after a refusal the connection survives (a 403 for a resolved address)
/// the next request must not meet this head again (answering it forever).
fn refused(client: &mut Client, req: &RequestHead, e: ProxyError) -> ProxyError {
    client.buf.consume(req.fields.head_len);
    e
}

/// Whether a Host value names `host:port` (port 80 when Host has none).
fn same_server(host_field: &[u8], host: &[u8], port: u16) -> bool {
    let name = host_without_port(host_field);
    let field_port = match &host_field[name.len()..] {
        [] => Some(80),
        [b':', digits @ ..] => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok()),
        _ => None,
    };
    name.eq_ignore_ascii_case(host) && field_port == Some(port)
}

/// The destination's addresses the ACL admits, in resolver order. None
/// admitted: the first refusal, as a 403.
pub(super) async fn admitted_addresses(
    ctx: &ShardContext,
    fwd: &ForwardShard,
    destination: &Destination,
) -> Result<Vec<SocketAddr>, ProxyError> {
    let config = &ctx.config.forward;
    let limit = ctx.config.timeouts.upstream_connect;
    let ips = fwd
        .dns
        .resolve(&destination.host, limit)
        .await
        .map_err(ProxyError::Dns)?;
    let mut admitted = Vec::with_capacity(ips.len());
    let mut refusal = None;
    for &ip in ips.iter() {
        match acl::check_address(config, &destination.host, ip) {
            Ok(()) => admitted.push(SocketAddr::new(ip, destination.port)),
            Err(denial) => refusal = refusal.or(Some(denial)),
        }
    }
    match (admitted.is_empty(), refusal) {
        (true, Some(denial)) => Err(ProxyError::Denied(denial)),
        _ => Ok(admitted),
    }
}

/// A connection to one of `addrs`: a pooled one if any address has one
/// (`pooled`), else a new one to the first address that answers (Happy
/// Eyeballs, `eyeballs`).
pub(super) async fn acquire(
    ctx: &ShardContext,
    addrs: &[SocketAddr],
    pooled: bool,
) -> Result<(UpstreamConn, SocketAddr), ProxyError> {
    if pooled {
        for &addr in addrs {
            if let Some(mut conn) = ctx.pool.take(addr) {
                conn.buf = ctx.upstream_buffers.lease().await;
                return Ok((conn, addr));
            }
        }
    }
    connect_first(ctx, addrs).await
}

/// Names the address and the cause of a failed connect for the client.
pub(super) fn unreachable(addr: SocketAddr, error: ProxyError) -> ProxyError {
    match error {
        ProxyError::UpstreamConnectTimeout => ProxyError::Unreachable {
            what: format!("connecting to {addr} timed out"),
            timed_out: true,
        },
        ProxyError::UpstreamConnect(e) => ProxyError::Unreachable {
            what: format!("cannot connect to {addr}: {e}"),
            timed_out: false,
        },
        other => other,
    }
}

/// Phases 3 to 6 of an absolute-form request: the cache lookup (GET and
/// HEAD with `[forward_proxy] cache` on), then the trip to the destination.
async fn forward(
    ctx: &Rc<ShardContext>,
    fwd: &ForwardShard,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
    destination: &Destination,
) -> Result<Next, ProxyError> {
    let mut ex = Exchange {
        ctx,
        client,
        req,
        resp,
        route: &fwd.route,
        // Forward requests have no upstream: nothing on their path reads it
        // (no balancer, no retry policy: `whole_request` gets no `Retries`).
        target: Target {
            upstream: fwd.route.upstream,
            key: None,
            class: fwd.route.priority,
        },
        origin: Origin::Forward(ForwardOrigin::new(fwd, destination)),
    };
    let upgrade = upgrade_requested(req, ex.client.buf.filled());
    let mut plan = Forward::plain(b"");
    // A hit resolves nothing and meets no address rule: sound because every
    // entry was fetched through them, and `[forward_proxy]` (the rules) only
    // changes with a restart, which empties the cache. Were it reloadable,
    // hits would need the address check again.
    if let (Some(cache), None) = (cache_for(ctx), upgrade) {
        match Box::pin(cached::lookup(&mut ex, cache)).await? {
            Lookup::Answered(next) => {
                ex.client.trip.cache = CacheUse::Hit;
                return Ok(next);
            }
            Lookup::Fetch(plan) => {
                ex.client.trip.cache = CacheUse::Miss;
                if let Origin::Forward(origin) = &mut ex.origin {
                    let chosen = origin.choose(ctx).await;
                    chosen.map_err(|e| refused(ex.client, req, e))?;
                }
                return Box::pin(cached::fetch(&mut ex, plan)).await;
            }
            // Unsafe methods (invalidating on success), a GET with a body.
            Lookup::Forward(forward) => plan = forward,
        }
    }
    let hop = next_hop(ctx, fwd, destination, true).await;
    let (mut conn, _) = match hop.map_err(|e| refused(ex.client, req, e))? {
        Hop::Direct(addrs) => {
            if let Some(upgrade) = upgrade {
                return upgrade_to(&mut ex, upgrade, UpgradeTo::Direct(&addrs)).await;
            }
            write_head(ctx, ex.client, req, None)?;
            acquire(ctx, &addrs, true).await?
        }
        Hop::Parent(conn, addr, parent) => {
            write_head(ctx, ex.client, req, Some(parent))?;
            (conn, addr)
        }
    };
    let side = ex.side();
    let (body, payload) = buffered_body(&mut ex).await?;
    let exchanged = if body.is_done() {
        whole_request(&mut ex, &mut conn, None, side, &plan).await
    } else {
        Box::pin(stream_request(
            &mut ex, &mut conn, body, payload, side, &plan,
        ))
        .await
    };
    match exchanged {
        Ok((end, request_complete)) => Ok(after(ctx, conn, end, request_complete)),
        Err(e) => {
            ctx.pool.discard(conn);
            Err(e)
        }
    }
}

/// The shard's cache, if forward requests use it (`[forward_proxy] cache`):
/// GET and HEAD are looked up, unsafe methods invalidate. (RFC 9111 §3.5
/// is the cache's own rule: a response to a request with `Authorization` is
/// shared only if it says so; the client's `Proxy-Authorization` is ours,
/// checked before the lookup, and never reaches the origin, so it does not
/// make a response private.)
fn cache_for(ctx: &ShardContext) -> Option<&CacheShard> {
    let cache = ctx.cache.as_ref()?;
    ctx.config.forward.cache.then_some(cache)
}

/// Refuses a declared body over `max_body_size`, writes the head into
/// `client.out` and consumes the client's copy: origin-form for the
/// destination, or absolute-form with its credentials for a `parent`.
fn write_head(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
    parent: Option<&ParentProxy>,
) -> Result<(), ProxyError> {
    let limit = ctx.config.http.max_body_size;
    if let (Framing::Length(n), Some(max)) = (req.fields.framing, limit) {
        if n > max {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let buf = client.buf.filled();
    client.out.clear();
    if let Some(parent) = parent {
        let credentials = parent::authorization_line(parent);
        let edit = RequestEdit {
            extra: &credentials,
            ..RequestEdit::NONE
        };
        write_parent_request_head(&mut client.out, buf, req, &client.ip, ctx.forward, edit);
        client.buf.consume(req.fields.head_len);
        return Ok(());
    }
    // The parser accepted the target as absolute-form.
    let target =
        absolute(req.target.of(buf)).ok_or(ProxyError::BadRequest(HeadError::NotOriginForm))?;
    write_forward_request_head(
        &mut client.out,
        buf,
        req,
        (target.authority.text, target.path),
        &client.ip,
        ctx.forward,
        RequestEdit::NONE,
    );
    client.buf.consume(req.fields.head_len);
    Ok(())
}

/// Phase 6: the destination connection back to the pool if the exchange
/// left it clean, and the client connection's fate.
pub(super) fn after(
    ctx: &ShardContext,
    mut conn: UpstreamConn,
    end: ResponseEnd,
    request_complete: bool,
) -> Next {
    let config = &ctx.config.forward;
    let clean = end.complete && request_complete;
    if clean && end.upstream_reusable && conn.buf.is_empty() {
        conn.served += 1;
        ctx.pool
            .put(conn, config.keepalive, config.keepalive_timeout);
    } else {
        ctx.pool.discard(conn);
    }
    match clean && !end.close_client {
        true => Next::KeepAlive,
        false => Next::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::same_server;

    #[test]
    fn host_must_name_the_target() {
        assert!(same_server(b"Example.com", b"example.com", 80));
        assert!(same_server(b"example.com:80", b"example.com", 80));
        assert!(same_server(b"[::1]:8080", b"[::1]", 8080));
        assert!(!same_server(b"example.com", b"example.com", 8080));
        assert!(!same_server(b"other.com", b"example.com", 80));
        assert!(!same_server(b"example.com:x", b"example.com", 80));
    }
}
