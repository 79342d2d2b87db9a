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
        first_field,
        policy::{evaluate_conditional, Precondition},
        range::{partial, ranged, unsatisfiable_fields, Ranged},
        stored::{write_hit_head, write_not_modified_head, write_ranged_head},
        Secs,
    },
    http::{head::Method, rewrite::VIA},
};

/// Bodies up to this size go out in the same write as the head (one copy,
/// one syscall); larger ones are written straight from the stored `Arc`.
const COALESCE_BODY: usize = 16 * 1024;

/// How a stored response will answer one request; worked out while the
/// request head is still at hand, before its bytes are consumed.
#[derive(Debug, Clone)]
pub(super) struct StoredReply {
    answer: Answer,
    close: bool,
    http10: bool,
    via: bool,
    /// The request came from a peer node: add `Content-Digest` (`cluster`).
    digest: bool,
}

/// What the stored response answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The client's own conditional matched: 304.
    NotModified,
    /// The stored head, and the body unless the request is a HEAD.
    Whole { with_body: bool },
    /// A Range GET: 206 (one range or multipart/byteranges) or 416.
    Ranges(Ranged),
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
    let answer = match (not_modified, req.method()) {
        (true, _) => Answer::NotModified,
        (false, Method::Get) => match ranged(&req.fields, head, entry) {
            Ranged::Full => Answer::Whole { with_body: true },
            ranges => Answer::Ranges(ranges),
        },
        (false, _) => Answer::Whole { with_body: false },
    };
    let side = ex.side();
    StoredReply {
        answer,
        close: !side.keep_alive || side.draining,
        http10: side.http10,
        via: side.via,
        digest: super::cluster::from_peer(ex, head),
    }
}

/// Answers from a stored response: 304 if the client's conditional matched,
/// a 206 or 416 for a Range GET, else the stored head (with Age and
/// Cache-Status) and, for GET, the body.
pub(super) async fn reply_stored(
    client: &mut Client,
    entry: &CachedResponse,
    now: Secs,
    detail: &str,
    plan: StoredReply,
) -> Result<Next, ProxyError> {
    let out = &mut client.out;
    out.clear();
    let ranged_body = write_status_and_fields(out, entry, now, &plan.answer);
    let _ = write!(
        out,
        "Cache-Status: shardproxy; {detail}; ttl={}\r\n",
        entry.ttl(now)
    );
    if plan.digest && matches!(plan.answer, Answer::Whole { .. }) {
        crate::cluster::digest::write_field(out, entry.body());
    }
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
    let whole_body = plan.answer == Answer::Whole { with_body: true };
    let (status, bytes) = match &plan.answer {
        Answer::NotModified => (304, 0),
        Answer::Whole { .. } => (
            entry.parsed().status,
            if whole_body { body.len() } else { 0 },
        ),
        Answer::Ranges(Ranged::Partial(_)) => (206, ranged_body.as_ref().map_or(0, Vec::len)),
        Answer::Ranges(_) => (416, 0),
    };
    client.trip.status = Some(status);
    client.trip.bytes = Some(bytes as u64);
    if whole_body && body.len() <= COALESCE_BODY {
        out.extend_from_slice(body);
    }
    let gone = |e: crate::net::IoError| ProxyError::ClientGone(e.into());
    client.send_out().await.map_err(gone)?;
    if whole_body && body.len() > COALESCE_BODY {
        let write_timeout = client.write_timeout;
        client
            .stream
            .send_shared(body, write_timeout)
            .await
            .map_err(gone)?;
    }
    if let Some(mut part) = ranged_body {
        let write_timeout = client.write_timeout;
        client
            .stream
            .send_vec(&mut part, write_timeout)
            .await
            .map_err(gone)?;
    }
    Ok(if plan.close {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Writes the status line and the stored fields for `answer` (with `Age`),
/// and for a 206 its own fields; returns the 206's body. A ranged body is
/// built per request and sent from its own vector, so that the
/// connection's `out` never grows to a body's size.
fn write_status_and_fields(
    out: &mut Vec<u8>,
    entry: &CachedResponse,
    now: Secs,
    answer: &Answer,
) -> Option<Vec<u8>> {
    let age = entry.current_age(now);
    let (parsed, head) = (entry.parsed(), entry.head());
    match answer {
        Answer::NotModified => write_not_modified_head(out, parsed, head, age),
        Answer::Whole { .. } => write_hit_head(out, parsed, head, age),
        Answer::Ranges(Ranged::Partial(ranges)) => {
            let content_type = first_field(&parsed.fields, head, b"content-type");
            let part = partial(entry.body(), ranges, content_type, &boundary(entry, now));
            let several = ranges.len() > 1;
            let status = (206, &b"Partial Content"[..]);
            write_ranged_head(out, status, parsed, head, age, |name| {
                name.eq_ignore_ascii_case(b"content-length")
                    || (several && name.eq_ignore_ascii_case(b"content-type"))
            });
            out.extend_from_slice(&part.fields);
            return Some(part.body);
        }
        Answer::Ranges(_) => {
            let status = (416, &b"Range Not Satisfiable"[..]);
            write_ranged_head(out, status, parsed, head, age, |name| {
                name.eq_ignore_ascii_case(b"content-length")
                    || name.eq_ignore_ascii_case(b"content-type")
            });
            unsatisfiable_fields(out, entry.body().len() as u64);
        }
    }
    None
}

/// A multipart boundary for one answer: the entry's address and the time,
/// in hex. It only has to be absent from the parts, and 31 hex digits after
/// a fixed prefix do not turn up in a body by chance.
fn boundary(entry: &CachedResponse, now: Secs) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let at = entry as *const CachedResponse as usize;
    format!("shardproxy-{now:x}{nanos:08x}{at:x}")
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
