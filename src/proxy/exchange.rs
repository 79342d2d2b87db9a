//! The path of one request, phase by phase; [`handle`] reads top to bottom:
//!
//! 1. **read head**: `client.rs` reads the head into the connection's buffer
//!    and parses it (strictly) before calling [`handle`].
//! 2. **route**: Host and path pick the `[[route]]`; none is a 404. An
//!    absolute-form or CONNECT request (forward proxy) takes `forward`'s
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
//!    closed ([`Next`]); a fetched response goes into the cache.
//!
//! This file holds the plain forward's phases 4 to 6; the cache's fetch has
//! its own (`cached::fetch`: conditional request, 304, stale-if-error, store).
//! A request touches only its shard's state; other shards are reached only
//! through the cache's messages.

use std::rc::Rc;

use super::{
    cached::{self, Fetch, Invalidation},
    client::Client,
    duplex::stream_request,
    error::ProxyError,
    forward,
    response::{send_response, ClientSide, ResponseEnd, ToClient},
    tunnel,
    upstream::{acquire, exchange_head, finish},
};
use crate::{
    config::RouteConfig,
    http::{
        body::BodyState,
        head::{host_without_port, Framing, RequestHead, ResponseHead, TargetForm},
        rewrite::write_request_head,
        status::CONTINUE,
    },
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
    // Absolute-form and CONNECT: the forward proxy's own path.
    if matches!(req.form, TargetForm::Absolute | TargetForm::Authority) {
        return Box::pin(forward::handle(ctx, client, req, resp)).await;
    }
    // 2. Route.
    let route = route(ctx, client, req)?;
    let mut ex = Exchange {
        ctx,
        client,
        req,
        resp,
        route,
    };
    // A protocol switch (WebSocket) skips the cache: 101 turns it into a tunnel.
    if let Some(upgrade) = tunnel::upgrade_requested(req, ex.client.buf.filled()) {
        let to = tunnel::UpgradeTo::Upstream(route.upstream);
        return Box::pin(tunnel::upgrade(&mut ex, upgrade, to)).await;
    }
    // 3. Cache lookup.
    let lookup = match &ctx.cache {
        Some(cache) if route.cache => Box::pin(cached::lookup(&mut ex, cache)).await?,
        Some(_) => Lookup::Forward(Forward::plain(BYPASS)),
        None => Lookup::Forward(Forward::plain(b"")),
    };
    // 4. Upstream exchange, 5. respond, 6. after.
    match lookup {
        Lookup::Answered(next) => Ok(next),
        Lookup::Forward(plan) => forward(&mut ex, plan).await,
        Lookup::Fetch(plan) => Box::pin(cached::fetch(&mut ex, plan)).await,
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
    match ctx.router.route(host, req.target.of(buf)) {
        Some(route) => Ok(route),
        None => {
            // The connection may carry on after a 404: the next request starts after this head.
            client.buf.consume(req.fields.head_len);
            Err(ProxyError::NoRoute)
        }
    }
}

/// Phases 4 to 6 of a request passed through as it is. With the cache off
/// this is every request's path: it allocates nothing of its own (the head
/// goes into the connection's `out` vector, bodies through leased buffers).
async fn forward(ex: &mut Exchange<'_>, plan: Forward<'_>) -> Result<Next, ProxyError> {
    // 4. Upstream exchange: the head, a connection, the body bytes already here.
    let side = ex.side();
    write_upstream_head(ex)?;
    let (mut conn, server) = acquire(ex.ctx, ex.route.upstream).await?;
    let (body, payload) = buffered_body(ex).await?;
    // 4 and 5: in turn when the whole request is in hand, else full duplex.
    let exchanged = if body.is_done() {
        whole_request(ex, &mut conn, server, side, &plan).await
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
    server: std::net::SocketAddr,
    side: ClientSide,
    plan: &Forward<'_>,
) -> Result<(ResponseEnd, bool), ProxyError> {
    let method = ex.req.method();
    exchange_head(ex.ctx, &mut ex.client.out, conn, method, ex.resp, server).await?;
    if let Some(invalidation) = &plan.invalidation {
        invalidation.apply(ex.resp, conn.buf.filled()).await;
    }
    let to = ToClient {
        stream: &ex.client.stream,
        out: &mut ex.client.out,
        side,
        extra_fields: plan.cache_status,
    };
    let end = send_response(to, &conn.stream, &mut conn.buf, ex.resp, None).await?;
    Ok((end, true))
}
