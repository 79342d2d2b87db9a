//! One request's trip through the proxy: pick the route and server, get a
//! warm upstream connection (or open one), send the rewritten head and the
//! body, bring the response back, and put the connection back in the pool if
//! the exchange left it clean.
//!
//! Two paths. A request whose body is already in the buffer (most requests:
//! no body at all) goes out in one write; if a pooled connection turns out to
//! have been closed by the server while idle (EOF or reset before any
//! response byte), an idempotent request is sent again, once, on a fresh
//! connection. A request whose body is still arriving runs full duplex: its
//! body streams up while the response is read, so an upstream that answers
//! early (or echoes) never deadlocks against the proxy.

use std::{cell::Cell, net::SocketAddr, pin::pin, time::Instant};

use compio::{net::TcpStream, time::timeout};
use futures_lite::future::or;

use super::{
    cached::Invalidation,
    client::Client,
    error::ProxyError,
    relay::{relay_body, RelayError},
    response::{read_response_head, send_response, ClientSide, HeadDeadline, ResponseEnd},
};
use crate::{
    config::{RouteConfig, UpstreamConfig},
    http::{
        body::BodyState,
        head::{Framing, Method, RequestHead, ResponseHead},
        rewrite::write_request_head,
        status::CONTINUE,
    },
    net::Socket,
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// What the client connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Forwards the request whose head `req` was parsed from the front of
/// `client.buf`. An `Err` means nothing was sent to the client yet, so it can
/// still be answered with the error's status; failures after the response
/// started end in `Ok(Next::Close)`.
pub async fn forward(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
    route: &RouteConfig,
    invalidation: Option<&Invalidation<'_>>,
    extra_fields: &[u8],
) -> Result<Next, ProxyError> {
    let config = &*ctx.config;
    let head_bytes = client.buf.filled();
    let upstream_index = route.upstream;
    let framing = req.fields.framing;
    let limit = config.http.max_body_size;
    if let (Framing::Length(n), Some(max)) = (framing, limit) {
        if n > max {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let upstream = &config.upstreams[upstream_index];
    let method = req.method();
    let side = client_side(ctx, req);
    client.out.clear();
    write_request_head(&mut client.out, head_bytes, req, &client.ip, ctx.forward);
    client.buf.consume(req.fields.head_len);
    // From here on `req`'s spans are stale.

    let (mut conn, server) = acquire(ctx, upstream_index).await?;
    if req.expect_continue && framing != Framing::None && client.buf.is_empty() {
        client
            .stream
            .send_static(CONTINUE, client.write_timeout)
            .await
            .map_err(|e| ProxyError::ClientGone(e.into()))?;
    }

    // Body bytes already buffered go out with the head, in the same write.
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

    let exchange = if body.is_done() {
        whole_request(
            ctx,
            client,
            &mut conn,
            method,
            resp,
            (side, extra_fields),
            server,
            invalidation,
        )
        .await
    } else {
        streaming_request(
            ctx,
            client,
            &mut conn,
            body,
            payload,
            method,
            resp,
            (side, extra_fields),
            invalidation,
        )
        .await
    };
    match exchange {
        Ok((end, request_complete)) => Ok(finish(ctx, conn, upstream, end, request_complete)),
        Err(e) => {
            ctx.pool.recycle(conn);
            Err(e)
        }
    }
}

/// How the client wants its response delivered.
pub(super) fn client_side(ctx: &ShardContext, req: &RequestHead) -> ClientSide {
    ClientSide {
        keep_alive: req.fields.wants_keep_alive(),
        http10: req.fields.minor_version == 0,
        draining: ctx.draining.get(),
        via: ctx.forward.via,
        body_idle: ctx.config.timeouts.body_idle,
    }
}

/// Pools or closes the upstream connection and decides the client's fate.
pub(super) fn finish(
    ctx: &ShardContext,
    mut conn: UpstreamConn,
    upstream: &UpstreamConfig,
    end: ResponseEnd,
    request_complete: bool,
) -> Next {
    let clean = end.complete && request_complete;
    if clean && end.upstream_reusable && conn.buf.is_empty() {
        conn.served += 1;
        ctx.pool
            .put(conn, upstream.keepalive, upstream.keepalive_timeout);
    } else {
        ctx.pool.recycle(conn);
    }
    if clean && !end.close_client {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// A connection to one of the upstream's servers, with a read buffer leased
/// for the exchange: a pooled one if the balancer's pick has one, else a new one. A server that cannot be reached is
/// skipped for the next pick (as nginx's `proxy_next_upstream error timeout`),
/// which is safe for any request because nothing has been sent yet.
pub(super) async fn acquire(
    ctx: &ShardContext,
    upstream_index: usize,
) -> Result<(UpstreamConn, SocketAddr), ProxyError> {
    let servers = &ctx.config.upstreams[upstream_index].servers;
    let mut last_error = None;
    for _ in 0..servers.len() {
        let server = servers[ctx.balancers[upstream_index].pick()].addr;
        if let Some(mut conn) = ctx.pool.take(server) {
            conn.buf = ctx.upstream_buffers.lease().await;
            return Ok((conn, server));
        }
        match connect(ctx, server).await {
            Ok(conn) => return Ok((conn, server)),
            Err(e) => {
                log::warn!("shard {}: upstream server {server}: {e}", ctx.id);
                last_error = Some(e);
            }
        }
    }
    // The loop ran at least once: config validation guarantees a server.
    Err(last_error.unwrap_or(ProxyError::UpstreamClosed))
}

/// Opens a new connection to `addr` within `upstream_connect`, with a read buffer.
async fn connect(ctx: &ShardContext, addr: SocketAddr) -> Result<UpstreamConn, ProxyError> {
    let limit = ctx.config.timeouts.upstream_connect;
    let stream = match timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(ProxyError::UpstreamConnectTimeout)
        }
        Ok(Err(e)) => return Err(ProxyError::UpstreamConnect(e)),
        Err(_) => return Err(ProxyError::UpstreamConnectTimeout),
    };
    Ok(UpstreamConn {
        stream: Socket::new(stream),
        buf: ctx.upstream_buffers.lease().await,
        addr,
        served: 0,
    })
}

/// The whole request is in `client.out`: one write, then the response.
#[allow(clippy::too_many_arguments)]
async fn whole_request(
    ctx: &ShardContext,
    client: &mut Client,
    conn: &mut UpstreamConn,
    method: Method,
    resp: &mut ResponseHead,
    (side, extra_fields): (ClientSide, &[u8]),
    server: SocketAddr,
    invalidation: Option<&Invalidation<'_>>,
) -> Result<(ResponseEnd, bool), ProxyError> {
    exchange_head(ctx, &mut client.out, conn, method, resp, server).await?;
    if let Some(invalidation) = invalidation {
        invalidation.apply(resp, conn.buf.filled()).await;
    }
    let end = send_response(
        &client.stream,
        &mut client.out,
        &conn.stream,
        &mut conn.buf,
        resp,
        side,
        extra_fields,
        None,
    )
    .await?;
    Ok((end, true))
}

/// Sends `request` (a complete request, body included) and reads the
/// response head into `resp`. A dead pooled connection is replaced and the
/// request sent again once, if that is safe.
pub(super) async fn exchange_head(
    ctx: &ShardContext,
    request: &mut Vec<u8>,
    conn: &mut UpstreamConn,
    method: Method,
    resp: &mut ResponseHead,
    server: SocketAddr,
) -> Result<(), ProxyError> {
    // Only a request whose bytes we still hold in full can be sent twice.
    let retryable = method.is_idempotent();
    let first_byte = ctx.config.timeouts.upstream_first_byte;
    let mut retried = false;
    loop {
        let sent_at = Cell::new(None);
        let write_limit = ctx.config.timeouts.body_idle;
        let outcome = match conn.stream.send_vec(request, write_limit).await {
            Ok(()) => {
                sent_at.set(Some(Instant::now()));
                let deadline = HeadDeadline {
                    first_byte,
                    sent_at: &sent_at,
                };
                read_response_head(
                    &conn.stream,
                    &mut conn.buf,
                    &ctx.response_limits,
                    method,
                    resp,
                    deadline,
                )
                .await
            }
            Err(e) => Err(ProxyError::UpstreamIo(e.into())),
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(ProxyError::UpstreamClosed | ProxyError::UpstreamIo(_))
                if retryable && !retried && conn.served > 0 =>
            {
                log::debug!(
                    "shard {}: pooled connection to {server} was dead; retrying",
                    ctx.id
                );
                retried = true;
                let fresh = connect(ctx, server).await?;
                ctx.pool.recycle(std::mem::replace(conn, fresh));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Which side of a full-duplex exchange finished first.
enum First<R, S> {
    Request(R),
    Response(S),
}

/// The request body is still arriving: stream it up while reading the
/// response. Returns how the response ended and whether the request body was
/// sent in full (if the response ended first, the client connection closes:
/// the rest of its body was never read).
#[allow(clippy::too_many_arguments)]
async fn streaming_request(
    ctx: &ShardContext,
    client: &mut Client,
    conn: &mut UpstreamConn,
    mut body: BodyState,
    payload: u64,
    method: Method,
    resp: &mut ResponseHead,
    (side, extra_fields): (ClientSide, &[u8]),
    invalidation: Option<&Invalidation<'_>>,
) -> Result<(ResponseEnd, bool), ProxyError> {
    let config = &*ctx.config;
    conn.stream
        .send_vec(&mut client.out, config.timeouts.body_idle)
        .await
        .map_err(|e| ProxyError::UpstreamIo(e.into()))?;

    let sent_at = Cell::new(None);
    // Both directions borrow each socket shared: compio runs a receive and a
    // send on one socket at once.
    let (client_stream, upstream_stream) = (&client.stream, &conn.stream);
    let (client_buf, upstream_buf, out) = (&mut client.buf, &mut conn.buf, &mut client.out);

    let mut request = pin!(async {
        let limit = config.http.max_body_size;
        let idle = config.timeouts.body_idle;
        relay_body(
            client_stream,
            client_buf,
            upstream_stream,
            &mut body,
            payload,
            limit,
            idle,
            None,
        )
        .await
        .map_err(request_body_error)?;
        sent_at.set(Some(Instant::now()));
        Ok::<(), ProxyError>(())
    });
    let mut request_complete = false;

    let head = {
        let mut head = pin!(async {
            let deadline = HeadDeadline {
                first_byte: config.timeouts.upstream_first_byte,
                sent_at: &sent_at,
            };
            read_response_head(
                upstream_stream,
                upstream_buf,
                &ctx.response_limits,
                method,
                resp,
                deadline,
            )
            .await
        });
        match or(async { First::Request((&mut request).await) }, async {
            First::Response((&mut head).await)
        })
        .await
        {
            First::Request(Err(e)) => Err(e),
            First::Request(Ok(())) => {
                request_complete = true;
                // The read in flight was started without a deadline.
                timeout(config.timeouts.upstream_first_byte, head)
                    .await
                    .unwrap_or(Err(ProxyError::UpstreamTimeout))
            }
            First::Response(result) => result,
        }
    };
    head?;
    if let Some(invalidation) = invalidation {
        invalidation.apply(resp, upstream_buf.filled()).await;
    }

    let mut response = pin!(async {
        send_response(
            client_stream,
            out,
            upstream_stream,
            upstream_buf,
            resp,
            side,
            extra_fields,
            None,
        )
        .await
    });
    if request_complete {
        return Ok((response.await?, true));
    }
    match or(async { First::Request((&mut request).await) }, async {
        First::Response((&mut response).await)
    })
    .await
    {
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
