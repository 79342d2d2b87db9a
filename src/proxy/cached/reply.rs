//! Phase 5 from the cache: answering from a stored response, a 304 when the
//! client's own conditional matches, else the stored head with `Age` and
//! `Cache-Status` and, for GET, the body straight from the shared `Arc`.
//! Touches the client connection only; the entry is read, never changed.

use std::io::Write;

use crate::proxy::{
    client::Client,
    error::ProxyError,
    exchange::{Exchange, Next},
};
use crate::{
    cache::{
        entry::CachedResponse,
        policy::{evaluate_conditional, Precondition},
        Secs,
    },
    http::{head::Method, rewrite::VIA},
};

/// Bodies up to this size go out in the same write as the head (one copy,
/// one syscall); larger ones are written straight from the stored `Arc`.
const COALESCE_BODY: usize = 16 * 1024;

/// How a stored response will answer one request; worked out while the
/// request head is still at hand, before its bytes are consumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct StoredReply {
    not_modified: bool,
    with_body: bool,
    close: bool,
    http10: bool,
    via: bool,
}

/// `head`: the request head's bytes, in the client buffer or a copy of them.
pub(super) fn plan_reply(
    ex: &Exchange<'_>,
    head: &[u8],
    entry: &CachedResponse,
    now: Secs,
) -> StoredReply {
    let req = ex.req;
    let not_modified = evaluate_conditional(req, head, entry, now) == Precondition::NotModified;
    let side = ex.side();
    StoredReply {
        not_modified,
        with_body: req.method() == Method::Get && !not_modified,
        close: !side.keep_alive || side.draining,
        http10: side.http10,
        via: side.via,
    }
}

/// Answers from a stored response: 304 if the client's conditional matched,
/// else the stored head (with Age and Cache-Status) and, for GET, the body.
pub(super) async fn reply_stored(
    client: &mut Client,
    entry: &CachedResponse,
    now: Secs,
    detail: &str,
    plan: StoredReply,
) -> Result<Next, ProxyError> {
    let age = entry.current_age(now);
    let out = &mut client.out;
    out.clear();
    if plan.not_modified {
        crate::cache::stored::write_not_modified_head(out, entry.parsed(), entry.head(), age);
    } else {
        crate::cache::stored::write_hit_head(out, entry.parsed(), entry.head(), age);
    }
    let _ = write!(
        out,
        "Cache-Status: shardproxy; {detail}; ttl={}\r\n",
        entry.ttl(now)
    );
    if plan.via {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(VIA);
        out.extend_from_slice(b"\r\n");
    }
    if plan.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if plan.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let body = entry.body();
    client.trip.status = Some(if plan.not_modified {
        304
    } else {
        entry.parsed().status
    });
    client.trip.bytes = Some(if plan.with_body { body.len() as u64 } else { 0 });
    if plan.with_body && body.len() <= COALESCE_BODY {
        out.extend_from_slice(body);
    }
    client
        .send_out()
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;
    if plan.with_body && body.len() > COALESCE_BODY {
        client
            .stream
            .send_shared(body, client.write_timeout)
            .await
            .map_err(|e| ProxyError::ClientGone(e.into()))?;
    }
    Ok(if plan.close {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Serves a stored response to the request whose head is still at the front of `client.buf`.
pub(super) async fn reply_hit(
    ex: &mut Exchange<'_>,
    entry: &CachedResponse,
    now: Secs,
    detail: &str,
) -> Result<Next, ProxyError> {
    let plan = plan_reply(ex, ex.client.buf.filled(), entry, now);
    ex.consume_head();
    reply_stored(ex.client, entry, now, detail, plan).await
}
