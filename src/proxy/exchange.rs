//! The path of one request, phase by phase; [`handle`] reads top to bottom:
//!
//! 1. **read head**: `client.rs` reads the head into the connection's buffer
//!    and parses it (strictly) before calling [`handle`].
//! 2. **route**: Host and path pick the `[[route]]`; none is a 404. Then
//!    the client IP's and the route's rate limits (`admit`): over one, a 429.
//!    An absolute-form or CONNECT request (forward proxy) takes `forward`'s
//!    path instead: admission, destination ACL, then phases 4 to 6 or a tunnel.
//! 3. **cache lookup**: on a route with the cache on, `cached::lookup`
//!    answers from a stored response (or a PURGE) or says what the trip
//!    upstream is for: a plain forward, or a fetch for the cache.
//! 4. **upstream exchange**: the head rewritten into `client.out`, a pooled
//!    or new connection (`upstream`), head and buffered body in one write,
//!    the response head read back. A body still arriving streams up full
//!    duplex while the response comes back (`duplex`).
//! 5. **respond**: the response head rewritten for the client and the body
//!    streamed through (`response`), or a stored response (`cached::reply`).
//! 6. **after**: the upstream connection pooled or closed, the client kept or
//!    closed ([`Next`]); a fetched response goes into the cache. Then, for
//!    every request however it ended, [`after`] counts it in the shard's
//!    metrics from what the phases noted in `client.trip`.
//!
//! This file holds the plain forward's phases 4 to 6; the cache's fetch has
//! its own (`cached::fetch`: conditional request, 304, stale-if-error, store).
//! A request touches only its shard's state; other shards are reached only
//! through the cache's messages.

use std::rc::Rc;

use super::{
    admission::admit,
    cached::{self, Fetch, Invalidation},
    client::Client,
    duplex::stream_request,
    error::ProxyError,
    forward,
    origin::Origin,
    response::{send_response, ClientSide, Interim, ResponseEnd, ToClient},
    retrying::Retries,
    target::Target,
    trip::CacheUse,
    tunnel,
    upstream::{exchange_head, finish},
};
use crate::{
    config::RouteConfig,
    http::{
        body::BodyState,
        head::{host_without_port, Framing, RequestHead, ResponseHead, TargetForm},
        rewrite::write_request_head,
        status::CONTINUE,
    },
    shard::clock,
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// Marks responses on routes that opt out of an enabled cache (RFC 9211).
const BYPASS: &[u8] = b"Cache-Status: shardproxy; fwd=bypass\r\n";

/// What the client connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// One request in hand, passed to every phase as one value rather than a
/// parameter per part. It holds only borrows: building it costs nothing.
pub struct Exchange<'a> {
    /// An `Rc` so that a background refresh can hold the shard after the
    /// request is answered; everything else borrows it.
    pub ctx: &'a Rc<ShardContext>,
    pub client: &'a mut Client,
    /// Parsed from the front of `client.buf`: its spans hold only until the
    /// head is consumed ([`Exchange::consume_head`]); its fields stay valid.
    pub req: &'a RequestHead,
    /// Parsed from the front of the upstream connection's buffer.
    pub resp: &'a mut ResponseHead,
    pub route: &'a RouteConfig,
    /// The upstream, hash key and priority class (`target.rs`).
    pub target: Target,
    /// Where trips to the origin go: the route's upstream, or a forward
    /// proxy's destination (`origin.rs`).
    pub origin: Origin<'a>,
}

impl Exchange<'_> {
    /// How the client wants its response delivered. Read where a response is
    /// planned, not when the request arrives: a shutdown that begins while the
    /// request waits must still be able to close the connection.
    pub fn side(&self) -> ClientSide {
        let fields = &self.req.fields;
        ClientSide {
            keep_alive: fields.wants_keep_alive(),
            http10: fields.minor_version == 0,
            draining: self.ctx.draining.get(),
            via: self.ctx.forward.via,
            body_idle: self.ctx.config.timeouts.body_idle,
        }
    }

    /// Drops the request head from the client buffer; `req`'s spans are stale after.
    pub fn consume_head(&mut self) {
        self.client.buf.consume(self.req.fields.head_len);
    }
}

/// What the cache lookup (phase 3) decided.
pub(super) enum Lookup<'c> {
    /// The cache answered (a stored response, a PURGE): nothing goes upstream.
    Answered(Next),
    /// To the upstream, the response passed through.
    Forward(Forward<'c>),
    /// To the upstream for the cache: a miss to fill, a revalidation, a
    /// fetch the stored response cannot spare.
    Fetch(Fetch<'c>),
}

/// What a plain forward adds on the way back, as the cache lookup decided.
pub(super) struct Forward<'c> {
    /// A `Cache-Status` field line (RFC 9211), or nothing.
    pub cache_status: &'static [u8],
    /// What a successful unsafe method removes from the cache.
    pub invalidation: Option<Invalidation<'c>>,
}

impl Forward<'_> {
    pub fn plain(cache_status: &'static [u8]) -> Self {
        Forward {
            cache_status,
            invalidation: None,
        }
    }
}

/// Handles the request whose head `req` was parsed from the front of
/// `client.buf` (phase 1). An `Err` means nothing reached the client yet, so
/// it can still be answered with the error's status; failures after the
/// response started end in `Ok(Next::Close)`.
pub async fn handle(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
) -> Result<Next, ProxyError> {
    // The response head is reused from the last request: no stale status.
    resp.status = 0;
    // The log shows the request's text, which the phases consume: copied first.
    let text = ctx
        .access_log
        .as_ref()
        .map(|log| log.capture(req, client.buf.filled()));
    let result = phases(ctx, client, req, resp).await;
    after(ctx, client, req, resp, &result);
    if let (Some(log), Some(text)) = (&ctx.access_log, text) {
        log.record(&client.trip.log_entry(ctx, &client.ip, &text, resp));
        log.recycle(text);
    }
    result
}

/// Phases 2 to 6 of one request.
async fn phases(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
) -> Result<Next, ProxyError> {
    // Absolute-form and CONNECT: the forward proxy's own path.
    if matches!(req.form, TargetForm::Absolute | TargetForm::Authority) {
        return Box::pin(forward::handle(ctx, client, req, resp)).await;
    }
    // 2. Route, and the client and route rate limits.
    let route = route(ctx, client, req)?;
    admit_rate(ctx, client, req)?;
    let target = Target::of_request(ctx, route, client.buf.filled(), req, &client.ip);
    // Past the shard's max_inflight for its class: shed (503 + Retry-After).
    let max_inflight = ctx.config.tuning.max_inflight;
    let _admitted = admit(&ctx.requests_in_flight, max_inflight, target.class)?;
    let mut ex = Exchange {
        ctx,
        client,
        req,
        resp,
        route,
        target,
        origin: Origin::Upstream,
    };
    // A protocol switch (WebSocket) skips the cache: 101 turns it into a tunnel.
    if let Some(upgrade) = tunnel::upgrade_requested(req, ex.client.buf.filled()) {
        let to = tunnel::UpgradeTo::Upstream(route.upstream);
        return Box::pin(tunnel::upgrade(&mut ex, upgrade, to)).await;
    }
    // 3. Cache lookup.
    let lookup = match &ctx.cache {
        Some(cache) if route.cache => Box::pin(cached::lookup(&mut ex, cache)).await?,
        Some(_) => {
            ex.client.trip.cache = CacheUse::Bypass;
            Lookup::Forward(Forward::plain(BYPASS))
        }
        None => Lookup::Forward(Forward::plain(b"")),
    };
    // 4. Upstream exchange, 5. respond, 6. after.
    match lookup {
        Lookup::Answered(next) => {
            ex.client.trip.cache = CacheUse::Hit;
            Ok(next)
        }
        Lookup::Forward(plan) => forward(&mut ex, plan).await,
        Lookup::Fetch(plan) => {
            ex.client.trip.cache = CacheUse::Miss;
            Box::pin(cached::fetch(&mut ex, plan)).await
        }
    }
}

/// The end of phase 6 for every request, however it ended: settles its
/// status and counts it in the shard's metrics (its route, method and status
/// class, latency; the upstream server it went to; the forward-proxy user it
/// authenticated as). Touches only this shard's `Cell`s; the access log line
/// (memory only) is written by the caller.
fn after(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
    resp: &ResponseHead,
    result: &Result<Next, ProxyError>,
) {
    let trip = &mut client.trip;
    let status = match result {
        Ok(_) => trip.status.or((resp.status != 0).then_some(resp.status)),
        Err(e) => e.status(),
    };
    trip.status = status;
    let stats = match trip.route.and_then(|i| ctx.route_stats.get(i)) {
        Some(stats) => stats,
        None => &ctx.unrouted_stats,
    };
    // One clock read for the metrics and the access log line.
    let ended = clock::now();
    trip.ended = Some(ended);
    stats.record(req.method(), status, ended - trip.started);
    if let Some(user) = trip.user.and_then(|i| ctx.user_stats.get(i)) {
        user.record(status);
    }
    let no_server = matches!(
        result,
        Err(ProxyError::UpstreamConnect(_) | ProxyError::UpstreamConnectTimeout)
    );
    if no_server && trip.server.is_none() {
        let route = trip.route.and_then(|i| ctx.router.routes().get(i));
        if let Some(upstream) = route.and_then(|r| ctx.config.upstreams.get(r.upstream)) {
            ctx.metrics.count_connect_failure(&upstream.name);
        }
    }
    if let Some(server) = trip.server_stats.take() {
        let failed = result.is_err() || status.is_some_and(|s| s >= 500);
        server.record(failed, trip.pooled);
    }
}

/// Phase 2: the most specific route for the request's Host and path.
fn route<'c>(
    ctx: &'c ShardContext,
    client: &mut Client,
    req: &RequestHead,
) -> Result<&'c RouteConfig, ProxyError> {
    let buf = client.buf.filled();
    let host = req.host.map(|h| host_without_port(h.of(buf)));
    match ctx.router.find(host, req.target.of(buf)) {
        Some((index, route)) => {
            client.trip.route = Some(index);
            Ok(route)
        }
        None => {
            // The connection may carry on after a 404: the next request starts after this head.
            client.buf.consume(req.fields.head_len);
            Err(ProxyError::NoRoute)
        }
    }
}

/// Phase 2's end: takes a token from the client IP's bucket (`[limits]
/// rate`) and the route's (`rate_limit`). Over either, a 429 with
/// Retry-After; the head is consumed so the connection can carry on.
fn admit_rate(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
) -> Result<(), ProxyError> {
    let route = client.trip.route.and_then(|i| ctx.route_buckets.get(i));
    let route_limited = matches!(route, Some(Some(_)));
    if ctx.config.limits.rate_per_ip.is_none() && !route_limited {
        // No limit applies: no clock read on the common path.
        return Ok(());
    }
    let now = clock::now();
    let per_ip = match (ctx.config.limits.rate_per_ip, client.addr) {
        (Some(rate), Some(ip)) => ctx.client_limits.admit(ip, rate, now),
        _ => Ok(()),
    };
    let verdict = per_ip.and_then(|()| match route {
        Some(Some((rate, bucket))) => bucket.take(*rate, now),
        _ => Ok(()),
    });
    verdict.map_err(|retry_after| {
        client.buf.consume(req.fields.head_len);
        ProxyError::RateLimited(retry_after)
    })
}

/// Phases 4 to 6 of a request passed through as it is. With the cache off
/// this is every request's path: it allocates nothing of its own (the head
/// goes into the connection's `out` vector, bodies through leased buffers).
async fn forward(ex: &mut Exchange<'_>, plan: Forward<'_>) -> Result<Next, ProxyError> {
    // 4. Upstream exchange: the head, a connection, the body bytes already here.
    let side = ex.side();
    write_upstream_head(ex)?;
    if ex.ctx.access_log.is_some() {
        // Only the access log reports the upstream's time.
        ex.client.trip.upstream_started = Some(clock::now());
    }
    let mut retries = Retries::new(ex.ctx, ex.target, ex.req.method());
    let mut conn = retries.connection().await?;
    // Metrics and the access log name the first try's server.
    let server = conn.addr;
    let stats = match &conn.lease {
        Some(lease) => lease.upstream().servers[lease.server].stats.clone(),
        None => {
            let upstream = &ex.ctx.config.upstreams[ex.target.upstream];
            ex.ctx.metrics.server(&upstream.name, server)
        }
    };
    // Counted in flight until this returns, however it returns.
    let _in_flight = stats.begin();
    let trip = &mut ex.client.trip;
    trip.server = Some((ex.target.upstream, server));
    trip.pooled = conn.served > 0;
    trip.server_stats = Some(stats.clone());
    let (body, payload) = buffered_body(ex).await?;
    // 4 and 5: in turn when the whole request is in hand (retried under the
    // upstream's policy), else full duplex (never retried: the body is gone).
    let exchanged = if body.is_done() {
        whole_request(ex, &mut conn, Some(&mut retries), side, &plan).await
    } else {
        Box::pin(stream_request(ex, &mut conn, body, payload, side, &plan)).await
    };
    // 6. After.
    match exchanged {
        Ok((end, request_complete)) => {
            let upstream = &ex.ctx.config.upstreams[ex.route.upstream];
            Ok(finish(ex.ctx, conn, upstream, end, request_complete))
        }
        Err(e) => {
            ex.ctx.pool.discard(conn);
            Err(e)
        }
    }
}

/// Refuses a declared body over `max_body_size`, then writes the upstream
/// head into `client.out` (hop-by-hop fields dropped, X-Forwarded-* and Via
/// added) and consumes the client's copy.
fn write_upstream_head(ex: &mut Exchange<'_>) -> Result<(), ProxyError> {
    let limit = ex.ctx.config.http.max_body_size;
    if let (Framing::Length(n), Some(max)) = (ex.req.fields.framing, limit) {
        if n > max {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let client = &mut *ex.client;
    client.out.clear();
    write_request_head(
        &mut client.out,
        client.buf.filled(),
        ex.req,
        &client.ip,
        ex.ctx.forward,
    );
    ex.consume_head();
    Ok(())
}

/// Answers `Expect: 100-continue` while no body byte has come, and moves the
/// body bytes already buffered behind the head into `client.out`, so head and
/// body go out in one write. Runs once a connection is in hand, so the
/// client is invited to send only when the upstream is reachable. Returns the
/// body's state and the payload bytes taken.
pub(super) async fn buffered_body(ex: &mut Exchange<'_>) -> Result<(BodyState, u64), ProxyError> {
    let (framing, limit) = (ex.req.fields.framing, ex.ctx.config.http.max_body_size);
    let client = &mut *ex.client;
    if ex.req.expect_continue && framing != Framing::None && client.buf.is_empty() {
        client
            .stream
            .send_static(CONTINUE, client.write_timeout)
            .await
            .map_err(|e| ProxyError::ClientGone(e.into()))?;
    }
    let mut body = BodyState::new(framing);
    let mut payload = 0;
    if !body.is_done() && !client.buf.is_empty() {
        let accepted = body
            .accept(client.buf.filled())
            .map_err(ProxyError::BadRequestBody)?;
        payload = accepted.payload;
        if limit.is_some_and(|max| payload > max) {
            return Err(ProxyError::BodyTooLarge);
        }
        client
            .out
            .extend_from_slice(&client.buf.filled()[..accepted.bytes]);
        client.buf.consume(accepted.bytes);
    }
    Ok((body, payload))
}

/// Phases 4 and 5 when the whole request is in `client.out`: one write, the
/// response head, then the response. Returns how the response ended and that
/// the request went out whole.
pub(super) async fn whole_request(
    ex: &mut Exchange<'_>,
    conn: &mut UpstreamConn,
    retries: Option<&mut Retries<'_>>,
    side: ClientSide,
    plan: &Forward<'_>,
) -> Result<(ResponseEnd, bool), ProxyError> {
    let method = ex.req.method();
    let interim = Interim::to(&ex.client.stream, side);
    let out = &mut ex.client.out;
    match retries {
        Some(retries) => {
            retries
                .exchange(out, conn, method, ex.resp, interim)
                .await?
        }
        // The forward proxy's destinations have no retry policy.
        None => {
            let server = conn.addr;
            exchange_head(ex.ctx, out, conn, method, ex.resp, server, interim).await?
        }
    }
    if let Some(invalidation) = &plan.invalidation {
        // Boxed: only unsafe methods on a cached route get here, and inline
        // its state (6 KiB, it may purge on other shards and nodes) tripled
        // the per-request future every request allocates and copies.
        Box::pin(invalidation.apply(ex.resp, conn.buf.filled())).await;
    }
    let to = ToClient {
        stream: &ex.client.stream,
        out: &mut ex.client.out,
        side,
        extra_fields: plan.cache_status,
        splicer: ex.ctx.splicer.as_ref(),
    };
    let end = send_response(to, &conn.stream, &mut conn.buf, ex.resp, None).await?;
    Ok((end, true))
}
