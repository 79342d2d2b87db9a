//! Phases 4 to 6 of a GET that goes to the origin for the cache: a miss that
//! fills the key, a revalidation of a stale entry, or a fetch the stored
//! response cannot spare. Build the request (conditional when revalidating),
//! exchange it for a response head, then by what came back: a 304 freshens
//! the entry and the entry answers; an error (or no answer) with
//! stale-if-error serves the stale entry; anything else streams to the client
//! while a copy goes into the cache.

use std::{io::Write, sync::Arc};

use super::{
    freshness,
    reply::{plan_reply, reply_stored},
    store_options,
    whole::{answered_from_entry, fill_then_reply},
    FillGuard,
};
use crate::proxy::{
    error::ProxyError,
    exchange::{Exchange, Next},
    origin::Origin,
    relay::Tee,
    response::{send_response, ClientSide, Interim, ResponseEnd, ToClient},
    retrying::Retries,
    upstream::exchange_head,
};
use crate::{
    cache::{
        age,
        entry::CachedResponse,
        ownership::CacheShard,
        policy::{is_dropped_by_cache_fetch, is_error_status, storable, write_validators},
        Secs,
    },
    http::{
        head::{Framing, Method, RequestHead},
        rewrite::{ForwardOptions, RequestEdit},
    },
    upstream::pool::UpstreamConn,
};

/// A trip to the origin the cache lookup asked for.
pub(in crate::proxy) struct Fetch<'c> {
    /// Releases the key's waiters on every path that does not fill it.
    pub(super) fill: FillGuard<'c>,
    /// The stored response being revalidated.
    pub(super) stale: Option<Stale>,
    /// The `fwd=` reason for `Cache-Status` (RFC 9211).
    pub(super) forwarded: &'static str,
}

/// A stored response being revalidated.
pub(super) struct Stale {
    pub entry: Arc<CachedResponse>,
    /// It may answer if the origin fails or answers with an error (RFC 5861 §4).
    pub if_error: bool,
}

/// What the response steps need from the request step.
#[derive(Clone)]
pub(super) struct Sent {
    /// How the client wants its response, read when the fetch began.
    pub side: ClientSide,
    /// The client's request head, copied before its bytes were consumed:
    /// storing the response and answering from the entry both need it.
    pub head: Vec<u8>,
    /// When the request left and its response head arrived, for the age of
    /// what is stored (RFC 9111 §4.2.3).
    pub request_time: Secs,
    pub response_time: Secs,
}

/// Goes to the origin for a GET. The client's own validators are not
/// forwarded (the cache wants the full response); they are answered from the
/// stored copy afterwards.
pub(in crate::proxy) async fn fetch(
    ex: &mut Exchange<'_>,
    fetch: Fetch<'_>,
) -> Result<Next, ProxyError> {
    // In a cluster the key's owner node may fetch it instead (`cluster`).
    let fetch = match Box::pin(super::cluster::route(ex, fetch)).await {
        super::cluster::Routed::Done(result) => return result,
        super::cluster::Routed::Local(fetch) => fetch,
    };
    let Fetch {
        fill,
        stale,
        forwarded,
    } = fetch;
    let side = ex.side();
    // 4. Upstream exchange.
    let head = write_upstream_head(ex, stale.as_ref());
    let (conn, request_time) = match exchange(ex, Some(side)).await {
        Ok(exchanged) => exchanged,
        Err(e) => {
            return match stale.as_ref().filter(|s| s.if_error) {
                Some(stale) => serve_stale(ex, fill.key.cache, &head, &stale.entry).await,
                None => Err(e),
            }
        }
    };
    let sent = Sent {
        side,
        head,
        request_time,
        response_time: age::now(),
    };
    // 5. Respond and 6. after, by what came back.
    let status = ex.resp.status;
    match &stale {
        Some(stale) if status == 304 => {
            freshen(ex, conn, &stale.entry, fill, forwarded, sent).await
        }
        Some(stale) if stale.if_error && is_error_status(status) => {
            // The error response is never read: the connection cannot be reused.
            ex.ctx.pool.discard(conn);
            serve_stale(ex, fill.key.cache, &sent.head, &stale.entry).await
        }
        _ => respond(ex, conn, fill, forwarded, &sent).await,
    }
}

/// Phases 5 and 6 for a full response: answered from the entry it fills
/// (HEAD, Range) or streamed while a copy is stored.
async fn respond(
    ex: &mut Exchange<'_>,
    conn: UpstreamConn,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: &Sent,
) -> Result<Next, ProxyError> {
    if answered_from_entry(ex.req, &sent.head) {
        fill_then_reply(ex, conn, fill, forwarded, sent).await
    } else {
        store_and_stream(ex, conn, fill, forwarded, sent).await
    }
}

/// Writes the upstream head into `client.out` and consumes the client's
/// copy, returning a copy of it for later.
fn write_upstream_head(ex: &mut Exchange<'_>, stale: Option<&Stale>) -> Vec<u8> {
    let head = ex.client.buf.filled()[..ex.req.fields.head_len].to_vec();
    let (client, forward) = (&mut *ex.client, ex.ctx.forward);
    let (out, ip) = (&mut client.out, &client.ip);
    out.clear();
    let to = (&ex.origin, &ip[..], forward);
    write_conditional(out, &head, ex.req, to, stale.map(|s| &*s.entry));
    ex.consume_head();
    head
}

/// Writes the head of a request for the cache, in the form `to`'s origin
/// takes (with the client address and forwarding options): always a GET,
/// the client's validators and Range dropped, the stored entry's validators
/// added when revalidating one.
pub(super) fn write_conditional(
    out: &mut Vec<u8>,
    head: &[u8],
    req: &RequestHead,
    to: (&Origin<'_>, &[u8], ForwardOptions),
    stale: Option<&CachedResponse>,
) {
    let (origin, client_ip, forward) = to;
    let mut validators = Vec::new();
    if let Some(entry) = stale {
        write_validators(&mut validators, entry);
    }
    // Always a GET: a HEAD miss is filled with the whole response.
    let edit = RequestEdit {
        drop_field: is_dropped_by_cache_fetch,
        extra: &validators,
        method: Some(b"GET"),
    };
    origin.write_head(out, head, req, client_ip, forward, edit);
}

/// Sends the request in `client.out` and reads the response head, retried
/// under the upstream's policy; interim 1xx responses go on to the client
/// (none when `side` is `None`: the answer is for a peer node). Returns the
/// connection and when the request left (the first try: with retries the
/// age comes out a little older, which errs on the safe side).
pub(super) async fn exchange(
    ex: &mut Exchange<'_>,
    side: Option<ClientSide>,
) -> Result<(UpstreamConn, Secs), ProxyError> {
    let interim = side.and_then(|side| Interim::to(&ex.client.stream, side));
    let out = &mut ex.client.out;
    let (conn, request_time, exchanged) = match &mut ex.origin {
        Origin::Upstream => {
            let mut retries = Retries::new(ex.ctx, ex.target, Method::Get);
            let mut conn = retries.connection().await?;
            let request_time = age::now();
            let exchanged = retries
                .exchange(out, &mut conn, Method::Get, ex.resp, interim)
                .await;
            (conn, request_time, exchanged)
        }
        // A forward destination has no retry policy: one try (and a
        // dead pooled connection replaced once, `exchange_head`).
        Origin::Forward(origin) => {
            let (mut conn, server) = origin.connection(ex.ctx).await?;
            let request_time = age::now();
            let exchanged = exchange_head(
                ex.ctx,
                out,
                &mut conn,
                Method::Get,
                ex.resp,
                server,
                interim,
            )
            .await;
            (conn, request_time, exchanged)
        }
    };
    match exchanged {
        Ok(()) => Ok((conn, request_time)),
        Err(e) => {
            ex.ctx.pool.discard(conn);
            Err(e)
        }
    }
}

/// stale-if-error: the origin failed, so the stale entry answers.
async fn serve_stale(
    ex: &mut Exchange<'_>,
    cache: &CacheShard,
    head: &[u8],
    entry: &CachedResponse,
) -> Result<Next, ProxyError> {
    cache.counters.borrow_mut().stale_served += 1;
    let now = age::now();
    let plan = plan_reply(ex, head, entry, now);
    reply_stored(ex.client, entry, now, "hit; detail=stale-if-error", plan).await
}

/// A 304 answered the revalidation: the entry, freshened with its fields,
/// is stored again and answers the client (with a 304 of its own if the
/// client's conditional matches). A 304 whose validators select no stored
/// response (another ETag) cannot freshen anything: the request is repeated
/// unconditionally and the full response answers (RFC 9111 §4.3.3, §4.3.4).
async fn freshen(
    ex: &mut Exchange<'_>,
    mut conn: UpstreamConn,
    entry: &CachedResponse,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: Sent,
) -> Result<Next, ProxyError> {
    let resp = &*ex.resp;
    let (request_time, response_time) = (sent.request_time, sent.response_time);
    let route = ex.route;
    let freshened = entry.freshen(
        resp,
        conn.buf.filled(),
        request_time,
        response_time,
        &freshness(&ex.ctx.config.cache, route),
    );
    conn.buf.consume(resp.fields.head_len);
    finish_read(ex, conn);
    let Ok(fresh) = freshened else {
        return refetch(ex, fill, forwarded, sent, Again::Unconditional).await;
    };
    let fresh = Arc::new(fresh);
    fill.complete(Some(Arc::clone(&fresh)));
    let now = age::now();
    let plan = plan_reply(ex, &sent.head, &fresh, now);
    reply_stored(ex.client, &fresh, now, "fwd=stale; fwd-status=304", plan).await
}

/// How a request goes to the origin a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Again {
    /// Without validators, after a 304 for another representation; what
    /// comes back is stored and answers as usual.
    Unconditional,
    /// As the client sent it (Range, validators and all), passed through:
    /// for a Range request whose whole object will not be stored.
    AsSent,
}

/// Sends the client's request again (`again` says how) and answers with
/// what comes back.
pub(super) async fn refetch(
    ex: &mut Exchange<'_>,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: Sent,
    again: Again,
) -> Result<Next, ProxyError> {
    let (client, forward) = (&mut *ex.client, ex.ctx.forward);
    let (out, ip) = (&mut client.out, &client.ip);
    out.clear();
    let to = (&ex.origin, &ip[..], forward);
    match again {
        Again::Unconditional => write_conditional(out, &sent.head, ex.req, to, None),
        Again::AsSent => {
            let origin = &ex.origin;
            origin.write_head(out, &sent.head, ex.req, ip, forward, RequestEdit::NONE)
        }
    }
    let (conn, request_time) = exchange(ex, Some(sent.side)).await?;
    let sent = Sent {
        request_time,
        response_time: age::now(),
        ..sent
    };
    match again {
        Again::Unconditional => respond(ex, conn, fill, forwarded, &sent).await,
        Again::AsSent => store_and_stream(ex, conn, fill, forwarded, &sent).await,
    }
}

/// Streams the response to the client; if it may be stored, a `Tee` copies
/// the payload on the way (up to `max_object_size`), and a complete copy is
/// filled into the cache.
pub(super) async fn store_and_stream(
    ex: &mut Exchange<'_>,
    mut conn: UpstreamConn,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: &Sent,
) -> Result<Next, ProxyError> {
    let (resp, route) = (&*ex.resp, ex.route);
    let resp_bytes = conn.buf.filled();
    let cacheable = may_store(ex, sent, resp_bytes);
    let stored_head = cacheable.then(|| resp_bytes[..resp.fields.head_len].to_vec());
    let mut status_field = Vec::with_capacity(64);
    let _ = write!(
        status_field,
        "Cache-Status: shardproxy; {forwarded}; fwd-status={}{}\r\n",
        resp.status,
        if cacheable { "; stored" } else { "" }
    );
    let max_object_size = fill.key.cache.config().max_object_size as usize;
    let mut tee = cacheable.then(|| Tee::new(max_object_size));
    let to = ToClient {
        stream: &ex.client.stream,
        out: &mut ex.client.out,
        side: sent.side,
        extra_fields: &status_field,
        splicer: ex.ctx.splicer.as_ref(),
    };
    let end = match send_response(to, &conn.stream, &mut conn.buf, resp, tee.as_mut()).await {
        Ok(end) => end,
        Err(e) => {
            ex.ctx.pool.discard(conn);
            return Err(e);
        }
    };
    let stored = match (end.complete, tee.and_then(Tee::finish), stored_head) {
        (true, Some(payload), Some(head)) => new_entry(ex, &head, payload, sent),
        _ => None,
    };
    fill.complete(stored);
    Ok(ex.origin.settle(ex.ctx, route, conn, end, true))
}

/// Whether the response whose head is at the front of `resp_bytes` may be
/// stored: RFC 9111 allows it and its end is not the connection's close.
pub(super) fn may_store(ex: &Exchange<'_>, sent: &Sent, resp_bytes: &[u8]) -> bool {
    let opts = store_options(&ex.ctx.config.cache, ex.route);
    let resp = &*ex.resp;
    resp.fields.framing != Framing::UntilClose
        && storable(ex.req, &sent.head, resp, resp_bytes, &opts).is_ok()
}

/// The entry for the response in `ex.resp` (head bytes `head`) with its
/// whole decoded `payload`; `None` if it cannot be built.
pub(super) fn new_entry(
    ex: &Exchange<'_>,
    head: &[u8],
    payload: Vec<u8>,
    sent: &Sent,
) -> Option<Arc<CachedResponse>> {
    CachedResponse::from_response(
        ex.resp,
        head,
        Arc::from(payload),
        ex.req,
        &sent.head,
        sent.request_time,
        sent.response_time,
        &freshness(&ex.ctx.config.cache, ex.route),
    )
    .ok()
    .map(Arc::new)
}

/// Pools (or closes) a connection whose response was read to its end here.
pub(super) fn finish_read(ex: &Exchange<'_>, conn: UpstreamConn) {
    let end = ResponseEnd {
        complete: true,
        close_client: false,
        upstream_reusable: ex.resp.fields.wants_keep_alive(),
    };
    ex.origin.settle(ex.ctx, ex.route, conn, end, true);
}
