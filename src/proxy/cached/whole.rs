//! Fetches that answer the client from the entry they fill, not from the
//! stream: a HEAD miss (filled with a GET: the client gets the head only) and
//! a Range GET (the whole object is fetched, then the ranges are cut from
//! it, `cache::range`). The body is read into memory (up to
//! `max_object_size`), stored if it may be, and the entry answers like a
//! hit (one that may not be stored answers this request only).
//!
//! A body too large to read whole is passed on instead: a HEAD gets the
//! head alone (the body is left unread and the upstream connection closed);
//! a Range GET is sent to the origin again as the client sent it, so the
//! client gets the origin's own 206 (the first answer is dropped unread:
//! one wasted request beats streaming a whole large object the client did
//! not ask for). Touches the exchange's two connections and the key's fill,
//! like `fetch`.

use std::sync::Arc;

use super::{
    fetch::{finish_read, may_store, new_entry, refetch, store_and_stream, Again, Sent},
    reply::{plan_reply, reply_stored},
    FillGuard,
};
use crate::proxy::{
    error::{upstream_read_error, ProxyError},
    exchange::{Exchange, Next},
    relay::{read_some, RelayError},
};
use crate::{
    cache::{age, has_field},
    http::{
        body::BodyState,
        head::{Framing, Method, RequestHead},
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
    /// It grew past the limit (what was read is dropped).
    TooLarge,
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
            return Ok(Payload::TooLarge);
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

/// Reads the whole response, fills the key with it if it may be stored,
/// and answers the client from the entry; see the module doc for what is
/// passed on instead.
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
    let storable = fits && may_store(ex, sent, conn.buf.filled());
    if !storable && resp.fields.framing == Framing::None {
        // No body to cut ranges from or to leave out (a 204, a 304, an
        // empty 200): passed on as it is, for HEAD and GET alike.
        return store_and_stream(ex, conn, fill, forwarded, sent).await;
    }
    let mut detail = format!("{forwarded}; fwd-status={}", resp.status);
    let resp_head = conn.buf.filled()[..resp.fields.head_len].to_vec();
    conn.buf.consume(resp.fields.head_len);
    let payload = match fits {
        true => read_payload(
            ex.ctx,
            &mut conn,
            &mut BodyState::new(resp.fields.framing),
            limit,
        )
        .await
        .map_err(body_error),
        false => Ok(Payload::TooLarge),
    };
    let payload = match payload {
        Ok(Payload::Whole(payload)) => payload,
        Ok(Payload::TooLarge) => {
            // The body is left unread: the connection cannot be reused.
            ex.ctx.pool.discard(conn);
            return pass_on(ex, fill, forwarded, sent, &resp_head, &detail).await;
        }
        Err(e) => {
            ex.ctx.pool.discard(conn);
            return Err(e);
        }
    };
    finish_read(ex, conn);
    // Only a Vary: * head fails here, and `may_store` refuses those.
    let Some(entry) = new_entry(ex, &resp_head, payload, sent) else {
        return pass_on(ex, fill, forwarded, sent, &resp_head, &detail).await;
    };
    if storable {
        fill.complete(Some(Arc::clone(&entry)));
        detail.push_str("; stored");
    } else {
        // Not stored: the entry answers this request only.
        drop(fill);
    }
    let now = age::now();
    let plan = plan_reply(ex, &sent.head, &entry, now);
    reply_stored(ex.client, &entry, now, &detail, plan).await
}

/// A response too large to be read whole: a HEAD gets its head (from
/// `resp_head`); a Range GET is sent again as the client sent it, Range and
/// all, so the client gets the origin's own 206 rather than a whole body it
/// did not ask for (the first answer was dropped unread). `detail`: the
/// first answer's Cache-Status parameters.
async fn pass_on(
    ex: &mut Exchange<'_>,
    fill: FillGuard<'_>,
    forwarded: &str,
    sent: &Sent,
    resp_head: &[u8],
    detail: &str,
) -> Result<Next, ProxyError> {
    if ex.req.method() != Method::Head {
        // Boxed: `refetch` can lead back here (after a 304 for another
        // representation), though never twice (`AsSent` streams).
        let again = Box::pin(refetch(ex, fill, forwarded, sent.clone(), Again::AsSent));
        return again.await;
    }
    drop(fill);
    let side = sent.side;
    let framing = ClientFraming {
        close: !side.keep_alive || side.draining,
        http10: side.http10,
        dechunk: false,
    };
    let status_field = format!("Cache-Status: shardproxy; {detail}\r\n");
    let out = &mut ex.client.out;
    out.clear();
    let resp = &*ex.resp;
    write_response_head(
        out,
        resp_head,
        resp,
        side.via,
        framing,
        status_field.as_bytes(),
    );
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
