//! Phases 4 and 5 for a request whose body is still arriving: the body
//! streams up while the response head is read, then while the response
//! streams back, so an upstream that answers early (or echoes) never
//! deadlocks against the proxy. The two directions are two futures pinned on
//! this task's stack and raced with `or`; nothing is spawned or boxed. A
//! large Content-Length body goes up by splice when nothing else reads the
//! client socket (`relay::splice_rest`), copied otherwise.
//! Touches the exchange's two connections only.

use std::{
    cell::Cell,
    future::Future,
    pin::{pin, Pin},
    time::{Duration, Instant},
};

use compio::time::timeout;
use futures_lite::future::or;

use super::{
    error::ProxyError,
    exchange::{Exchange, Forward},
    relay::{relay_body, splice_rest, RelayError},
    response::{
        read_response_head, send_response, ClientSide, HeadRead, Interim, ResponseEnd, ToClient,
    },
};
use crate::{http::body::BodyState, shard::context::ShardContext, upstream::pool::UpstreamConn};

/// Which side of a full-duplex exchange finished first.
enum First<R, S> {
    Request(R),
    Response(S),
}

/// Sends the head in `client.out` (with the body bytes already buffered),
/// then streams the rest of the body up while the response comes back.
/// Returns how the response ended and whether the request body was sent in
/// full (if the response ended first, the client connection closes: the rest
/// of its body was never read).
pub(super) async fn stream_request(
    ex: &mut Exchange<'_>,
    conn: &mut UpstreamConn,
    mut body: BodyState,
    payload: u64,
    side: ClientSide,
    plan: &Forward<'_>,
) -> Result<(ResponseEnd, bool), ProxyError> {
    let ctx: &ShardContext = ex.ctx;
    let timeouts = &ctx.config.timeouts;
    let method = ex.req.method();
    conn.stream
        .send_vec(&mut ex.client.out, timeouts.body_idle)
        .await
        .map_err(|e| ProxyError::UpstreamIo(e.into()))?;

    let sent_at = Cell::new(None);
    let read_at_most = conn.head_read_at_most(ctx.splicer.as_ref());
    // Both directions borrow each socket shared: compio runs a receive and a
    // send on one socket at once.
    let (client_stream, upstream_stream) = (&ex.client.stream, &conn.stream);
    let (client_buf, upstream_buf, out) = (&mut ex.client.buf, &mut conn.buf, &mut ex.client.out);
    let resp = &mut *ex.resp;
    let mut request = pin!(async {
        let limit = ctx.config.http.max_body_size;
        let idle = timeouts.body_idle;
        let splicer = ctx.splicer.as_ref();
        let (from, to) = (client_stream, upstream_stream);
        let spliced = splice_rest(from, client_buf, to, &mut body, splicer, idle)
            .await
            .map_err(request_body_error)?;
        if !spliced {
            relay_body(from, client_buf, to, &mut body, payload, limit, idle, None)
                .await
                .map_err(request_body_error)?;
        }
        sent_at.set(Some(Instant::now()));
        Ok::<(), ProxyError>(())
    });

    // 4. The response head, while the body goes up.
    let request_complete = {
        let deadline = HeadRead {
            first_byte: timeouts.upstream_first_byte,
            sent_at: &sent_at,
            read_at_most,
        };
        let limits = &ctx.response_limits;
        let head = pin!(read_response_head(
            upstream_stream,
            upstream_buf,
            limits,
            method,
            resp,
            deadline,
            Interim::to(client_stream, side),
        ));
        head_while_sending(request.as_mut(), head, timeouts.upstream_first_byte).await?
    };
    if let Some(invalidation) = &plan.invalidation {
        invalidation.apply(resp, upstream_buf.filled()).await;
    }

    // 5. Respond, while the rest of the body goes up.
    let to = ToClient {
        stream: client_stream,
        out,
        side,
        extra_fields: plan.cache_status,
        splicer: ctx.splicer.as_ref(),
    };
    let response = pin!(send_response(to, upstream_stream, upstream_buf, resp, None));
    if request_complete {
        return Ok((response.await?, true));
    }
    respond_while_sending(ctx, request, response).await
}

/// Waits for the response head while the request body goes up. `Ok(true)`:
/// the body was sent in full before the head arrived.
async fn head_while_sending<R, H>(
    mut request: Pin<&mut R>,
    mut head: Pin<&mut H>,
    first_byte: Duration,
) -> Result<bool, ProxyError>
where
    R: Future<Output = Result<(), ProxyError>>,
    H: Future<Output = Result<(), ProxyError>>,
{
    let first = or(async { First::Request(request.as_mut().await) }, async {
        First::Response(head.as_mut().await)
    })
    .await;
    match first {
        First::Request(Err(e)) => Err(e),
        First::Request(Ok(())) => {
            // The read in flight was started without a deadline.
            timeout(first_byte, head)
                .await
                .unwrap_or(Err(ProxyError::UpstreamTimeout))?;
            Ok(true)
        }
        First::Response(result) => result.map(|()| false),
    }
}

/// Sends the response while the rest of the request body goes up. Returns
/// how the response ended and whether the body was sent in full.
async fn respond_while_sending<R, S>(
    ctx: &ShardContext,
    mut request: Pin<&mut R>,
    mut response: Pin<&mut S>,
) -> Result<(ResponseEnd, bool), ProxyError>
where
    R: Future<Output = Result<(), ProxyError>>,
    S: Future<Output = Result<ResponseEnd, ProxyError>>,
{
    let first = or(async { First::Request(request.as_mut().await) }, async {
        First::Response(response.as_mut().await)
    })
    .await;
    match first {
        First::Request(Ok(())) => Ok((response.await?, true)),
        First::Request(Err(e)) => {
            // The response may already be on its way to the client: all we can do is close.
            log::debug!(
                "shard {}: request body failed while the response streamed: {e}",
                ctx.id
            );
            let end = ResponseEnd {
                complete: false,
                close_client: true,
                upstream_reusable: false,
            };
            Ok((end, false))
        }
        First::Response(end) => Ok((end?, false)),
    }
}

/// Blames the right side for a failed request-body relay.
fn request_body_error(e: RelayError) -> ProxyError {
    match e {
        RelayError::SourceClosed => {
            ProxyError::ClientGone(std::io::ErrorKind::UnexpectedEof.into())
        }
        RelayError::SourceIo(e) => ProxyError::ClientGone(e),
        RelayError::SourceTimeout => ProxyError::ClientBodyTimeout,
        RelayError::Malformed(e) => ProxyError::BadRequestBody(e),
        RelayError::TooLarge => ProxyError::BodyTooLarge,
        RelayError::DestinationIo(e) => ProxyError::UpstreamIo(e),
    }
}
