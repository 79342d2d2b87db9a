//! stale-while-revalidate: refreshing a stale entry in the background while
//! the stale copy answers clients (RFC 5861 §3). The refresh is its own task
//! on the shard that served the stale copy, with no client: it owns copies
//! of what it needs, and reaches the key's owner through `CacheShard`. A
//! forward proxy's entry is refreshed from its destination, the way out
//! chosen afresh (`origin`).

use std::{rc::Rc, sync::Arc};

use super::{
    fetch::write_conditional,
    freshness, store_options,
    whole::{read_payload, Payload},
    CacheKey,
};
use crate::proxy::{
    forward::Destination,
    origin::{ForwardOrigin, Origin},
    response::ResponseEnd,
    target::Target,
    upstream::{acquire, exchange_head},
};
use crate::{
    cache::{age, entry::CachedResponse, policy::storable, Secs},
    config::{CacheConfig, RouteConfig},
    http::{
        body::BodyState,
        head::{parse_request_with, Framing, Method, RequestHead, ResponseHead},
    },
    net::PeerText,
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// What a refresh needs, owned: the task outlives the request that started it.
pub(super) struct Refresh {
    pub route: RouteConfig,
    /// The head of the request that found the entry stale.
    pub head: Vec<u8>,
    pub key: Vec<u8>,
    pub hash: u64,
    pub stale: Arc<CachedResponse>,
    pub client_ip: PeerText,
    /// A forward request's destination; `None`: the route's upstream.
    pub destination: Option<Destination>,
}

/// A response head from the refresh's exchange, with its times (RFC 9111 §4.2.3).
struct Answered {
    conn: UpstreamConn,
    resp: ResponseHead,
    /// The response head's bytes, consumed from the connection's buffer.
    head: Vec<u8>,
    request_time: Secs,
    response_time: Secs,
}

/// Refreshes a stale entry: one conditional request; a 304 freshens the
/// entry, a cacheable 200 replaces it. Whatever happens, the claim on the key
/// is released with a `fill`.
pub(super) async fn refresh(ctx: Rc<ShardContext>, job: Refresh) {
    let Some(cache) = &ctx.cache else { return };
    let Refresh {
        route,
        head,
        key,
        hash,
        stale,
        client_ip,
        destination,
    } = job;
    let fill = CacheKey {
        cache,
        hash,
        bytes: key,
    }
    .fill_guard(true);
    let mut req = RequestHead::default();
    if !matches!(
        parse_request_with(&head, &ctx.request_limits, ctx.target_forms, &mut req),
        Ok(true)
    ) {
        return;
    }
    let fwd = ctx.forward_proxy.clone();
    let mut origin = match (&fwd, &destination) {
        (Some(fwd), Some(destination)) => Origin::Forward(ForwardOrigin::new(fwd, destination)),
        _ => Origin::Upstream,
    };
    if let Origin::Forward(forward) = &mut origin {
        // No DNS answer, a refusal, no parent: the stale entry stays as it is.
        if forward.choose(&ctx).await.is_err() {
            return;
        }
    }
    let mut out = Vec::new();
    let to = (&origin, &client_ip[..], ctx.forward);
    write_conditional(&mut out, &head, &req, to, Some(&stale));
    let Some(mut answered) = exchange(&ctx, &route, &mut origin, &mut out).await else {
        return;
    };
    let resp = &answered.resp;
    let fresh = if resp.status == 304 {
        let (request_time, response_time) = (answered.request_time, answered.response_time);
        let freshness = freshness(&ctx.config.cache, &route);
        (stale.freshen(
            resp,
            &answered.head,
            request_time,
            response_time,
            &freshness,
        ))
        .ok()
    } else {
        let limit = cache.config().max_object_size;
        let mut body = BodyState::new(resp.fields.framing);
        let read = read_payload(&ctx, &mut answered.conn, &mut body, limit).await;
        let Ok(Payload::Whole(body)) = read else {
            ctx.pool.discard(answered.conn);
            return;
        };
        replacement(&ctx.config.cache, &route, &req, &head, &answered, body)
    };
    fill.complete(fresh.map(Arc::new));
    let fields = &answered.resp.fields;
    let end = ResponseEnd {
        complete: true,
        close_client: false,
        upstream_reusable: fields.wants_keep_alive() && fields.framing != Framing::UntilClose,
    };
    origin.settle(&ctx, &route, answered.conn, end, true);
}

/// Sends the conditional request in `out` and reads the response head.
/// `None`: no usable answer (the connection, if any, is closed).
async fn exchange(
    ctx: &ShardContext,
    route: &RouteConfig,
    origin: &mut Origin<'_>,
    out: &mut Vec<u8>,
) -> Option<Answered> {
    let (mut conn, server) = match origin {
        Origin::Upstream => {
            let conn = acquire(ctx, &Target::of_route(route), &[]).await.ok()?;
            let server = conn.addr;
            (conn, server)
        }
        Origin::Forward(forward) => forward.connection(ctx).await.ok()?,
    };
    let request_time = age::now();
    let mut resp = ResponseHead::default();
    // No client to tell about interim responses.
    if exchange_head(ctx, out, &mut conn, Method::Get, &mut resp, server, None)
        .await
        .is_err()
    {
        ctx.pool.discard(conn);
        return None;
    }
    let response_time = age::now();
    let head = conn.buf.filled()[..resp.fields.head_len].to_vec();
    conn.buf.consume(resp.fields.head_len);
    Some(Answered {
        conn,
        resp,
        head,
        request_time,
        response_time,
    })
}

/// The entry that replaces the stale one, if the response may be stored.
fn replacement(
    cache: &CacheConfig,
    route: &RouteConfig,
    req: &RequestHead,
    req_head: &[u8],
    answered: &Answered,
    body: Vec<u8>,
) -> Option<CachedResponse> {
    let resp = &answered.resp;
    storable(
        req,
        req_head,
        resp,
        &answered.head,
        &store_options(cache, route),
    )
    .ok()?;
    CachedResponse::from_response(
        resp,
        &answered.head,
        Arc::from(body),
        req,
        req_head,
        answered.request_time,
        answered.response_time,
        &freshness(cache, route),
    )
    .ok()
}
