//! Fetches that answer the client from the entry they fill, not from the
//! stream: a HEAD miss (filled with a GET: the client gets the head only) and
//! a Range GET (the whole object is fetched, then the ranges are cut from
//! it, `cache::range`). The body is read into memory (up to
//! `max_object_size`), stored, and the new entry answers like a hit.
//!
//! Responses that cannot be stored, or that are too large, are passed on
//! instead: a HEAD gets the head alone (the body is left unread and the
//! upstream connection closed); a GET gets the full 200, which RFC 9110
//! §14.2 allows for any Range request. A chunked body found too large
//! midway goes on to the client de-chunked and close-delimited, after the
//! payload already read. Touches the exchange's two connections and the
//! key's fill, like `fetch`.

use std::sync::Arc;

use super::{
    fetch::{finish_read, may_store, new_entry, store_and_stream, Sent},
    reply::{plan_reply, reply_stored},
    FillGuard,
};
use crate::proxy::{
    error::{upstream_read_error, ProxyError},
    exchange::{Exchange, Next},
    relay::{read_some, relay_dechunked, RelayError},
};
use crate::{
    cache::{age, has_field},
    http::{
        body::BodyState,
        head::{Framing, HeadError, Method, RequestHead},
        rewrite::{write_response_head, ClientFraming},
    },
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// Whether the request is answered from the filled entry rather than from
/// the stream: a HEAD, or a GET with a Range field. `head`: the request's bytes.
pub(super) fn answered_from_entry(req: &RequestHead, head: &[u8]) -> bool {
    req.method() == Method::Head || has_field(&req.fields, head, b"range")
}

/// A body read into memory.
pub(super) enum Payload {
    Whole(Vec<u8>),
    /// It grew past the limit: what was read so far (the decoder, in the
    /// body state, knows where the rest starts).
    TooLarge(Vec<u8>),
}

/// Reads the rest of `body` from `conn` into memory, stopping once the
/// payload passes `limit` bytes.
pub(super) async fn read_payload(
    ctx: &ShardContext,
    conn: &mut UpstreamConn,
    body: &mut BodyState,
    limit: u64,
) -> Result<Payload, RelayError> {
    let mut payload = Vec::new();
    let idle = ctx.config.timeouts.body_idle;
    while !body.is_done() {
        if conn.buf.is_empty() {
            match read_some(&conn.stream, &mut conn.buf, idle).await? {
                0 if matches!(body, BodyState::UntilClose) => break,
                0 => return Err(RelayError::SourceClosed),
                _ => {}
            }
        }
        let accepted = body
            .accept_with(conn.buf.filled(), |p| payload.extend_from_slice(p))
            .map_err(RelayError::Malformed)?;
        conn.buf.consume(accepted.bytes);
        if payload.len() as u64 > limit {
            return Ok(Payload::TooLarge(payload));
        }
    }
    Ok(Payload::Whole(payload))
}

/// The upstream's fault in reading a body, as the error the client gets
/// (nothing has reached it yet).
fn body_error(e: RelayError) -> ProxyError {
    match e {
        RelayError::SourceTimeout => ProxyError::UpstreamTimeout,
        RelayError::SourceIo(e) => upstream_read_error(e),
        RelayError::Malformed(e) => ProxyError::BadResponseBody(e),
        _ => ProxyError::UpstreamClosed,
    }
}

/// Fills the key with the whole response and answers the client from the
/// new entry; see the module doc for what is passed on instead.
pub(super) async fn fill_then_reply(
    ex: &mut Exchange<'_>,
    mut conn: UpstreamConn,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: &Sent,
) -> Result<Next, ProxyError> {
    let resp = &*ex.resp;
    let limit = fill.key.cache.config().max_object_size;
    let fits = match resp.fields.framing {
        Framing::Length(n) => n <= limit,
        Framing::UntilClose => false,
        Framing::None | Framing::Chunked => true,
    };
    let cacheable = fits && may_store(ex, sent, conn.buf.filled());
    let head_only = ex.req.method() == Method::Head;
    let mut detail = format!("{forwarded}; fwd-status={}", resp.status);
    let status_field = format!("Cache-Status: shardproxy; {detail}\r\n").into_bytes();
    if !cacheable {
        return if head_only {
            reply_head_only(ex, conn, &status_field, sent).await
        } else {
            store_and_stream(ex, conn, fill, forwarded, sent).await
        };
    }
    let resp_head = conn.buf.filled()[..resp.fields.head_len].to_vec();
    conn.buf.consume(resp.fields.head_len);
    let mut body = BodyState::new(resp.fields.framing);
    let payload = match read_payload(ex.ctx, &mut conn, &mut body, limit).await {
        Ok(Payload::Whole(payload)) => payload,
        Ok(Payload::TooLarge(payload)) => {
            return pass_on_too_large(ex, conn, &resp_head, &status_field, sent, payload, body)
                .await;
        }
        Err(e) => {
            ex.ctx.pool.discard(conn);
            return Err(body_error(e));
        }
    };
    finish_read(ex, conn);
    // `storable` passed, so the head parses again: this cannot fail in practice.
    let entry = new_entry(ex, &resp_head, payload, sent).ok_or(ProxyError::BadResponse(
        HeadError::Malformed("unstorable head"),
    ))?;
    fill.complete(Some(Arc::clone(&entry)));
    detail.push_str("; stored");
    let now = age::now();
    let plan = plan_reply(ex, &sent.head, &entry, now);
    reply_stored(ex.client, &entry, now, &detail, plan).await
}

/// A HEAD whose GET fill cannot be stored: the response head alone; the
/// unread body makes the upstream connection unusable, so it is closed.
async fn reply_head_only(
    ex: &mut Exchange<'_>,
    conn: UpstreamConn,
    status_field: &[u8],
    sent: &Sent,
) -> Result<Next, ProxyError> {
    let side = sent.side;
    let framing = ClientFraming {
        close: !side.keep_alive || side.draining,
        http10: side.http10,
        dechunk: false,
    };
    let out = &mut ex.client.out;
    out.clear();
    write_response_head(
        out,
        conn.buf.filled(),
        ex.resp,
        side.via,
        framing,
        status_field,
    );
    ex.ctx.pool.discard(conn);
    ex.client
        .send_out()
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;
    Ok(if framing.close {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// A chunked body that outgrew `max_object_size` while being read for a
/// HEAD or Range request: a HEAD gets the head; a GET gets the full 200,
/// de-chunked and close-delimited (what was read is no longer framed),
/// the payload already read first, then the rest as it arrives.
async fn pass_on_too_large(
    ex: &mut Exchange<'_>,
    mut conn: UpstreamConn,
    resp_head: &[u8],
    status_field: &[u8],
    sent: &Sent,
    mut payload: Vec<u8>,
    body: BodyState,
) -> Result<Next, ProxyError> {
    let side = sent.side;
    let head_only = ex.req.method() == Method::Head;
    let framing = ClientFraming {
        close: true,
        http10: side.http10,
        dechunk: !head_only,
    };
    let out = &mut ex.client.out;
    out.clear();
    write_response_head(out, resp_head, ex.resp, side.via, framing, status_field);
    let client = &ex.client.stream;
    let gone = |e: crate::net::IoError| ProxyError::ClientGone(e.into());
    let sent_head = client.send_vec(out, side.body_idle).await;
    if head_only {
        ex.ctx.pool.discard(conn);
        sent_head.map_err(gone)?;
        return Ok(Next::Close);
    }
    let relayed = match (
        sent_head,
        client.send_vec(&mut payload, side.body_idle).await,
    ) {
        // The read that passed the limit may have taken the body's end too.
        (Ok(()), Ok(())) => match body {
            BodyState::Chunked(decoder) => {
                let (src, buf) = (&conn.stream, &mut conn.buf);
                relay_dechunked(src, buf, client, side.body_idle, None, decoder)
                    .await
                    .is_ok()
            }
            _ => true,
        },
        _ => false,
    };
    if !relayed {
        log::warn!("response body cut short while passing on a too-large fill");
    }
    ex.ctx.pool.discard(conn);
    Ok(Next::Close)
}
