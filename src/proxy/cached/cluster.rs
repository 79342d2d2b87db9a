//! The cache's fetch in a cluster (`crate::cluster`): a miss whose key
//! another node owns is fetched from that node, signed, and its answer is
//! served only after its `Content-Digest` matched the body; a request that
//! came from a peer is checked (`admit`, 403 if its signature is bad),
//! never forwarded to another peer, and answered whole with a digest (from
//! the cache, or after one fetch from the origin that fills the cache).
//!
//! Both sides read the body whole (up to `max_object_size`) before
//! answering: a digest can only be written, or checked, once the body is in
//! hand. A peer that fails (refused, timed out, broken exchange) is marked
//! down; a failed or unverifiable peer answer makes the request fetch from
//! the origin itself, as it would without a cluster. A response from a peer
//! is not stored here: the owner holds the one copy (this node's own near
//! cache keeps short-lived copies of what other shards own, not other nodes).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use compio::time::timeout;

use super::{
    fetch, freshness,
    reply::{plan_reply, reply_stored},
    store_options, Fetch,
};
use crate::{
    buffer::IoBuf,
    cache::{
        age,
        entry::CachedResponse,
        first_field, has_field,
        policy::{is_dropped_by_cache_fetch, storable},
        Secs,
    },
    cluster::{
        digest::{self, DIGEST_FIELD},
        sign::PEER_FIELD,
        ClusterShard,
    },
    http::{
        body::BodyState,
        head::{Framing, HeadError, Method, ResponseHead},
        rewrite::{write_request_head_edited, RequestEdit},
    },
    proxy::{
        error::{upstream_read_error, ProxyError},
        exchange::{Exchange, Next},
        relay::{read_some, RelayError},
        upstream::{connect, exchange_head},
    },
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// Where a fetch for the cache goes in a cluster.
pub(super) enum Routed<'c> {
    /// Answered here: from the owner node, or (on the owner) for a peer.
    Done(Result<Next, ProxyError>),
    /// To the origin as usual: no cluster, this node owns the key, or the
    /// owner failed.
    Local(Fetch<'c>),
}

/// Phase 3's guard: a request carrying `Shardproxy-Peer` must be signed by
/// a member for this method and target, recently; else 403 (counted).
pub(super) fn admit(ex: &mut Exchange<'_>) -> Result<(), ProxyError> {
    let Some(cluster) = &ex.ctx.cluster else {
        return Ok(());
    };
    let (req, buf) = (ex.req, ex.client.buf.filled());
    let Some(value) = first_field(&req.fields, buf, PEER_FIELD) else {
        return Ok(());
    };
    match cluster.admit(value, req.method.of(buf), req.target.of(buf)) {
        Ok(()) => Ok(()),
        Err(e) => {
            log::warn!(
                "shard {}: refused a peer request from {}: {e}",
                ex.ctx.id,
                peer_ip(ex)
            );
            ex.consume_head();
            Err(ProxyError::PeerForbidden(e))
        }
    }
}

fn peer_ip(ex: &Exchange<'_>) -> String {
    String::from_utf8_lossy(&ex.client.ip).into_owned()
}

/// Whether the request (whose head is `head`) came from a peer node; it
/// passed `admit` if so.
pub(super) fn from_peer(ex: &Exchange<'_>, head: &[u8]) -> bool {
    ex.ctx.cluster.is_some() && has_field(&ex.req.fields, head, PEER_FIELD)
}

/// Decides where a GET fetch for the cache goes, and goes there unless
/// that is the origin as usual. Runs with the client's head still in
/// `client.buf`, and leaves it there when the answer is `Local`.
pub(super) async fn route<'c>(ex: &mut Exchange<'_>, plan: Fetch<'c>) -> Routed<'c> {
    let ctx = ex.ctx;
    let Some(cluster) = &ctx.cluster else {
        return Routed::Local(plan);
    };
    if ex.origin.is_forward() {
        // The nodes share `[[upstream]]`s, not a forward proxy's view of
        // destinations (ACLs, parents, DNS): each node fetches its own.
        return Routed::Local(plan);
    }
    if from_peer(ex, ex.client.buf.filled()) {
        return Routed::Done(answer_peer(ex, plan).await);
    }
    let Some(owner) = cluster.owner(plan.fill.key.hash) else {
        return Routed::Local(plan);
    };
    let Some((entry, head)) = ask_owner(ex, cluster, owner).await else {
        return Routed::Local(plan);
    };
    // The owner keeps the entry; releasing the key lets this node's waiters
    // ask it too (it answers them from its cache).
    let detail = format!("{}; detail=peer", plan.forwarded);
    drop(plan);
    let now = age::now();
    let reply = plan_reply(ex, &head, &entry, now);
    Routed::Done(reply_stored(ex.client, &entry, now, &detail, reply).await)
}

/// Fetches the request from `owner`; `None` when the owner failed or its
/// answer did not verify (the request then goes to the origin). On success
/// the client's head has been consumed and is returned as a copy.
async fn ask_owner(
    ex: &mut Exchange<'_>,
    cluster: &ClusterShard,
    owner: SocketAddr,
) -> Option<(Arc<CachedResponse>, Vec<u8>)> {
    let ctx = ex.ctx;
    let buf = ex.client.buf.filled();
    let mut signature = Vec::with_capacity(96);
    // Signed as what is sent: a HEAD miss goes to the owner as a GET.
    cluster.sign(&mut signature, b"GET", ex.req.target.of(buf));
    let edit = RequestEdit {
        drop_field: is_dropped_by_cache_fetch,
        extra: &signature,
        method: Some(b"GET"),
    };
    write_head(ex, edit);
    let request = (&mut ex.client.out, Method::Get);
    let exchanged = peer_exchange(ctx, cluster, request, ex.resp, owner).await;
    let (mut conn, times) = match exchanged {
        Ok(exchanged) => exchanged,
        Err(e) => {
            log::warn!(
                "shard {}: peer {owner}: {e}; fetching from the origin",
                ctx.id
            );
            cluster.peer_failed(owner);
            return None;
        }
    };
    let resp = &*ex.resp;
    let (head, body) = match read_whole(ctx, &mut conn, resp).await {
        Ok(whole) => whole,
        Err(e) => {
            log::warn!(
                "shard {}: peer {owner}: {e}; fetching from the origin",
                ctx.id
            );
            ctx.pool.discard(conn);
            // Too large for this node's max_object_size is the configs
            // disagreeing, not the peer failing.
            if !matches!(e, ProxyError::PeerResponseTooLarge) {
                cluster.peer_failed(owner);
            }
            return None;
        }
    };
    if !verified(ctx, cluster, owner, resp, &head, &body) {
        ctx.pool.discard(conn);
        return None;
    }
    cluster.peer_ok(owner);
    pool_or_close(ex, conn);
    let request_head = ex.client.buf.filled()[..ex.req.fields.head_len].to_vec();
    // Consumed only when answering: the origin fetch needs the head otherwise.
    let entry = as_entry(ex, &head, body, &request_head, times)?;
    ex.client.buf.consume(ex.req.fields.head_len);
    Some((entry, request_head))
}

/// The response read whole (`head`, `body`) as an entry answering the
/// request whose head is `request_head`; `times`: when the request left and
/// the response head arrived. `None` if it cannot be one (a Vary the cache
/// cannot key).
fn as_entry(
    ex: &Exchange<'_>,
    head: &[u8],
    body: Vec<u8>,
    request_head: &[u8],
    times: (Secs, Secs),
) -> Option<Arc<CachedResponse>> {
    let (request_time, response_time) = times;
    let (resp, opts) = (&*ex.resp, freshness(&ex.ctx.config.cache, ex.route));
    CachedResponse::from_response(
        resp,
        head,
        Arc::from(body),
        ex.req,
        request_head,
        request_time,
        response_time,
        &opts,
    )
    .ok()
    .map(Arc::new)
}

/// Whether the owner's answer may be served: its last `Content-Digest`
/// matches the body. A wrong or missing digest is counted and logged. An
/// answer without one may also be the owner's own error: a 403 means it
/// refused our signature (the nodes' secrets or clocks disagree), so it is
/// marked down; a 5xx means its fetch failed, which the origin may not repeat.
fn verified(
    ctx: &ShardContext,
    cluster: &ClusterShard,
    owner: SocketAddr,
    resp: &ResponseHead,
    head: &[u8],
    body: &[u8],
) -> bool {
    let id = ctx.id;
    match last_digest(resp, head) {
        Some(value) if digest::matches(&value, body) => return true,
        None if resp.status == 403 => {
            log::error!("shard {id}: peer {owner} refused our signature: do the nodes share one secret and a clock?");
            cluster.peer_failed(owner);
            return false;
        }
        None if resp.status >= 500 => {
            log::warn!(
                "shard {id}: peer {owner} answered {}; fetching from the origin",
                resp.status
            );
            return false;
        }
        _ => {}
    }
    cluster.digest_mismatch();
    log::warn!(
        "shard {id}: peer {owner} answered {} with a missing or wrong Content-Digest; \
         not served, fetching from the origin",
        resp.status
    );
    false
}

/// The value of the last `Content-Digest` line of the response head `head`:
/// the one the owner added after whatever the stored head carried.
fn last_digest(resp: &ResponseHead, head: &[u8]) -> Option<Vec<u8>> {
    crate::cache::field_lines(&resp.fields, head, DIGEST_FIELD)
        .last()
        .map(<[u8]>::to_vec)
}

/// Sends the request in `out` to `peer` over a pooled or new connection
/// and reads the response head into `resp`, within `peer_timeout` (a
/// cancelled exchange drops its connection; io_uring keeps the buffers until
/// the kernel lets go). Returns the connection and the request and response
/// times. Used for fetches and for PURGEs sent to the owner.
pub(super) async fn peer_exchange(
    ctx: &ShardContext,
    cluster: &ClusterShard,
    request: (&mut Vec<u8>, Method),
    resp: &mut ResponseHead,
    peer: SocketAddr,
) -> Result<(UpstreamConn, (Secs, Secs)), ProxyError> {
    let (out, method) = request;
    let exchange = async {
        let mut conn = match ctx.pool.take(peer) {
            Some(mut conn) => {
                conn.buf = ctx.upstream_buffers.lease().await;
                conn
            }
            None => connect(ctx, peer).await?,
        };
        let request_time = age::now();
        match exchange_head(ctx, out, &mut conn, method, resp, peer, None).await {
            Ok(()) => Ok((conn, (request_time, age::now()))),
            Err(e) => {
                ctx.pool.discard(conn);
                Err(e)
            }
        }
    };
    let exchanged = timeout(cluster.peer_timeout, exchange).await;
    exchanged.unwrap_or(Err(ProxyError::UpstreamTimeout))
}

/// On the owner, for a peer: the fetch from the origin, read whole, filled
/// into the cache if it may be stored, and answered with its digest. A
/// revalidation becomes a plain fetch (the peer needs the whole response).
async fn answer_peer(ex: &mut Exchange<'_>, plan: Fetch<'_>) -> Result<Next, ProxyError> {
    let ctx = ex.ctx;
    let edit = RequestEdit {
        drop_field: not_for_origin,
        extra: b"",
        method: Some(b"GET"),
    };
    write_head(ex, edit);
    let (mut conn, request_time) = fetch::exchange(ex, None).await?;
    let response_time = age::now();
    let resp = &*ex.resp;
    let (head, body) = match read_whole(ctx, &mut conn, resp).await {
        Ok(whole) => whole,
        Err(e) => {
            ctx.pool.discard(conn);
            return Err(e);
        }
    };
    pool_or_close(ex, conn);
    let request_head = ex.client.buf.filled()[..ex.req.fields.head_len].to_vec();
    let opts = store_options(&ctx.config.cache, ex.route);
    let cacheable = resp.fields.framing != Framing::UntilClose
        && storable(ex.req, &request_head, resp, &head, &opts).is_ok();
    let entry = as_entry(
        ex,
        &head,
        body,
        &request_head,
        (request_time, response_time),
    )
    .ok_or(ProxyError::BadResponse(HeadError::Malformed(
        "cannot be kept whole",
    )))?;
    plan.fill.complete(cacheable.then(|| Arc::clone(&entry)));
    let now = age::now();
    let reply = plan_reply(ex, &request_head, &entry, now);
    ex.consume_head();
    let detail = if cacheable {
        "fwd=uri-miss; stored"
    } else {
        "fwd=uri-miss"
    };
    reply_stored(ex.client, &entry, now, detail, reply).await
}

/// Writes the request head for the trip (to the owner node, or to the
/// origin for a peer) into `client.out`, edited as `edit` says.
fn write_head(ex: &mut Exchange<'_>, edit: RequestEdit<'_>) {
    let client = &mut *ex.client;
    client.out.clear();
    let forward = ex.ctx.forward;
    let buf = client.buf.filled();
    write_request_head_edited(&mut client.out, buf, ex.req, &client.ip, forward, edit);
}

/// What the owner does not pass on to the origin: the client's validators
/// (the cache wants the whole response) and the peer signature.
fn not_for_origin(name: &[u8]) -> bool {
    is_dropped_by_cache_fetch(name) || name.eq_ignore_ascii_case(PEER_FIELD)
}

/// Takes the response head (a copy, its spans unchanged) and the whole
/// decoded body off `conn`, refusing a body over `max_object_size`.
async fn read_whole(
    ctx: &ShardContext,
    conn: &mut UpstreamConn,
    resp: &ResponseHead,
) -> Result<(Vec<u8>, Vec<u8>), ProxyError> {
    let limit = ctx
        .cache
        .as_ref()
        .map_or(0, |cache| cache.config().max_object_size);
    if matches!(resp.fields.framing, Framing::Length(n) if n > limit) {
        return Err(ProxyError::PeerResponseTooLarge);
    }
    let head = conn.buf.filled()[..resp.fields.head_len].to_vec();
    conn.buf.consume(resp.fields.head_len);
    let idle = ctx.config.timeouts.body_idle;
    let body = read_body(
        &conn.stream,
        &mut conn.buf,
        resp.fields.framing,
        limit,
        idle,
    )
    .await
    .map_err(|e| match e {
        RelayError::TooLarge => ProxyError::PeerResponseTooLarge,
        RelayError::Malformed(e) => ProxyError::BadResponseBody(e),
        RelayError::SourceTimeout => ProxyError::UpstreamTimeout,
        RelayError::SourceIo(e) | RelayError::DestinationIo(e) => upstream_read_error(e),
        RelayError::SourceClosed => ProxyError::UpstreamClosed,
    })?;
    Ok((head, body))
}

/// Reads a body framed as `framing` into memory, payload only.
async fn read_body(
    src: &crate::net::Socket,
    buf: &mut IoBuf,
    framing: Framing,
    limit: u64,
    idle: Duration,
) -> Result<Vec<u8>, RelayError> {
    let mut body = BodyState::new(framing);
    let mut payload = Vec::new();
    while !body.is_done() {
        if buf.is_empty() && read_some(src, buf, idle).await? == 0 {
            return match body {
                BodyState::UntilClose => Ok(payload),
                _ => Err(RelayError::SourceClosed),
            };
        }
        let accepted = body
            .accept_with(buf.filled(), |piece| payload.extend_from_slice(piece))
            .map_err(RelayError::Malformed)?;
        if payload.len() as u64 > limit {
            return Err(RelayError::TooLarge);
        }
        buf.consume(accepted.bytes);
    }
    Ok(payload)
}

/// Pools the connection if the response left it clean, else closes it.
fn pool_or_close(ex: &Exchange<'_>, conn: UpstreamConn) {
    let upstream = &ex.ctx.config.upstreams[ex.route.upstream];
    let reusable = ex.resp.fields.framing != Framing::UntilClose
        && ex.resp.fields.wants_keep_alive()
        && conn.buf.is_empty();
    if reusable {
        ex.ctx
            .pool
            .put(conn, upstream.keepalive, upstream.keepalive_timeout);
    } else {
        ex.ctx.pool.discard(conn);
    }
}
