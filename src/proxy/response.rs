//! The response's way back: read the upstream's head (dropping interim 1xx),
//! rewrite it for the client, and stream the body. Sockets are borrowed
//! shared (`&TcpStream`): compio lets the two directions of one socket run at
//! once, which the full-duplex path needs.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use super::{
    error::{upstream_read_error, ProxyError},
    relay::{read_some, relay_body, relay_dechunked, RelayError, Tee},
};
use crate::{
    buffer::IoBuf,
    http::{
        body::BodyState,
        head::{parse_response, Framing, HeadError, Limits, Method, ResponseHead},
        rewrite::{write_response_head, ClientFraming},
    },
    net::Socket,
};

/// When the response head is due: `first_byte` after the request was fully
/// sent. While the request body is still streaming (`sent_at` unset) the
/// upstream may legitimately stay silent: the read waits without a deadline,
/// the request side's own idle timeout guards progress, and the caller puts
/// the head's deadline on the rest of the wait once the request is sent.
pub struct HeadDeadline<'a> {
    pub first_byte: Duration,
    pub sent_at: &'a Cell<Option<Instant>>,
}

/// A wait long enough to stand for "no deadline" (a timer must have one).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Reads the final response head into `resp`. Interim 1xx responses are
/// dropped: the proxy already answered 100-continue itself.
pub async fn read_response_head(
    upstream: &Socket,
    buf: &mut IoBuf,
    limits: &Limits,
    method: Method,
    resp: &mut ResponseHead,
    deadline: HeadDeadline<'_>,
) -> Result<(), ProxyError> {
    let mut received = !buf.is_empty();
    loop {
        let complete = !buf.is_empty()
            && parse_response(buf.filled(), limits, method, resp)
                .map_err(ProxyError::BadResponse)?;
        if complete {
            match resp.status {
                101 => {
                    return Err(ProxyError::BadResponse(HeadError::Malformed(
                        "unrequested protocol upgrade",
                    )))
                }
                100..=199 => {
                    buf.consume(resp.fields.head_len);
                    continue;
                }
                _ => return Ok(()),
            }
        }
        let wait = match deadline.sent_at.get() {
            Some(sent) => deadline.first_byte.saturating_sub(sent.elapsed()),
            None => NO_DEADLINE,
        };
        if wait.is_zero() {
            return Err(ProxyError::UpstreamTimeout);
        }
        match read_some(upstream, buf, wait).await {
            Ok(0) if !received => return Err(ProxyError::UpstreamClosed),
            Ok(0) => {
                return Err(ProxyError::BadResponse(HeadError::Malformed(
                    "truncated response head",
                )))
            }
            Ok(_) => received = true,
            Err(RelayError::SourceTimeout) => return Err(ProxyError::UpstreamTimeout),
            Err(RelayError::SourceIo(e)) => return Err(upstream_read_error(e)),
            Err(e) => {
                return Err(ProxyError::UpstreamIo(std::io::Error::other(format!(
                    "{e:?}"
                ))))
            }
        }
    }
}

/// What the client asked for that shapes the response.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    pub keep_alive: bool,
    pub http10: bool,
    pub draining: bool,
    pub via: bool,
    pub body_idle: Duration,
}

/// How a response that reached the client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseEnd {
    /// The whole body reached the client.
    pub complete: bool,
    /// The client connection must close after this response.
    pub close_client: bool,
    /// The upstream connection may be pooled (if nothing unread remains).
    pub upstream_reusable: bool,
}

/// Sends the response whose head is in `resp` (parsed from the front of
/// `buf`) to the client. `Err`: nothing reached the client, which can still be
/// answered with an error; once the head is out, failures end in
/// `Ok(ResponseEnd { complete: false, .. })`.
// Each argument is one side or one limit of the relay; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn send_response(
    client: &Socket,
    out: &mut Vec<u8>,
    upstream: &Socket,
    buf: &mut IoBuf,
    resp: &ResponseHead,
    side: ClientSide,
    extra_fields: &[u8],
    mut tee: Option<&mut Tee>,
) -> Result<ResponseEnd, ProxyError> {
    let framing = resp.fields.framing;
    let upstream_reusable = resp.fields.wants_keep_alive() && framing != Framing::UntilClose;
    let dechunk = side.http10 && framing == Framing::Chunked;
    let close_client =
        !side.keep_alive || side.draining || dechunk || framing == Framing::UntilClose;
    out.clear();
    let client_framing = ClientFraming {
        close: close_client,
        http10: side.http10,
        dechunk,
    };
    write_response_head(
        out,
        buf.filled(),
        resp,
        side.via,
        client_framing,
        extra_fields,
    );
    buf.consume(resp.fields.head_len);

    // Whatever of the body already arrived goes out with the head in one write.
    let mut body = BodyState::new(framing);
    if !dechunk {
        let accepted = body
            .accept_with(buf.filled(), |payload| {
                if let Some(tee) = tee.as_deref_mut() {
                    tee.push(payload);
                }
            })
            .map_err(ProxyError::BadResponseBody)?;
        out.extend_from_slice(&buf.filled()[..accepted.bytes]);
        buf.consume(accepted.bytes);
    }
    client
        .send_vec(out, side.body_idle)
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;

    let relayed = if dechunk {
        relay_dechunked(upstream, buf, client, side.body_idle, tee).await
    } else {
        relay_body(
            upstream,
            buf,
            client,
            &mut body,
            0,
            None,
            side.body_idle,
            tee,
        )
        .await
    };
    if let Err(e) = &relayed {
        log::warn!("response body cut short: {e:?}");
    }
    Ok(ResponseEnd {
        complete: relayed.is_ok(),
        close_client,
        upstream_reusable,
    })
}
