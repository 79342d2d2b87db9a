//! One request's trip through the proxy: pick the route and server, get a
//! warm upstream connection (or open one), send the rewritten head and the
//! body, read the response head, send it on, stream the response body, and
//! put the connection back in the pool if the exchange left it clean.
//!
//! A pooled connection the server closed while idle is detected when the
//! exchange fails before any response byte; an idempotent request without a
//! body is then sent again, once, on a fresh connection.

use std::net::SocketAddr;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use super::{
    client::Client,
    error::{upstream_read_error, ProxyError},
    relay::{read_some, relay_body, relay_dechunked, RelayError},
};
use crate::{
    http::{
        body::BodyState,
        head::{
            host_without_port, parse_response, Framing, HeadError, Method, RequestHead,
            ResponseHead,
        },
        rewrite::{write_request_head, write_response_head, ClientFraming},
        status::CONTINUE,
    },
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// What the client connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// What is still needed about the request once its head bytes are consumed.
struct Exchange {
    method: Method,
    framing: Framing,
    client_keep_alive: bool,
    client_http10: bool,
}

/// Forwards the request whose head `req` was parsed from the front of
/// `client.buf`. An `Err` means nothing was sent to the client yet, so it can
/// still be answered with the error's status; failures after the response
/// started are logged here and end in `Ok(Next::Close)`.
pub async fn forward(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
) -> Result<Next, ProxyError> {
    let config = &*ctx.config;
    let head_bytes = client.buf.filled();
    let host = req.host.map(|h| host_without_port(h.of(head_bytes)));
    let Some(upstream_index) = ctx.router.route(host, req.target.of(head_bytes)) else {
        // The connection may carry on after a 404: the next request starts after this head.
        client.buf.consume(req.fields.head_len);
        return Err(ProxyError::NoRoute);
    };
    let framing = req.fields.framing;
    if let (Framing::Length(n), Some(max)) = (framing, config.http.max_body_size) {
        if n > max {
            return Err(ProxyError::BodyTooLarge);
        }
    }
    let upstream = &config.upstreams[upstream_index];
    let server = upstream.servers[ctx.balancers[upstream_index].pick()].addr;
    let exchange = Exchange {
        method: req.method(),
        framing,
        client_keep_alive: req.fields.wants_keep_alive(),
        client_http10: req.fields.minor_version == 0,
    };
    client.out.clear();
    write_request_head(&mut client.out, head_bytes, req, &client.ip, ctx.forward);
    client.buf.consume(req.fields.head_len);
    // From here on `req`'s spans are stale: only `exchange` describes the request.

    let mut conn = match ctx.pool.take(server) {
        Some(conn) => conn,
        None => connect(ctx, server).await?,
    };
    if req.expect_continue && framing != Framing::None && client.buf.is_empty() {
        client
            .stream
            .write_all(CONTINUE)
            .await
            .map_err(ProxyError::ClientGone)?;
    }

    let retryable = exchange.method.is_idempotent() && framing == Framing::None;
    let mut retried = false;
    loop {
        let outcome = match send_request(ctx, client, &mut conn, &exchange).await {
            Ok(()) => read_response_head(ctx, &mut conn, exchange.method, resp).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => break,
            Err(ProxyError::UpstreamClosed | ProxyError::UpstreamIo(_))
                if retryable && !retried && conn.served > 0 =>
            {
                log::debug!(
                    "shard {}: pooled connection to {server} was dead; retrying",
                    ctx.id
                );
                retried = true;
                ctx.pool.recycle(conn);
                conn = connect(ctx, server).await?;
            }
            Err(e) => {
                ctx.pool.recycle(conn);
                return Err(e);
            }
        }
    }

    let upstream_reusable =
        resp.fields.wants_keep_alive() && resp.fields.framing != Framing::UntilClose;
    let dechunk = exchange.client_http10 && resp.fields.framing == Framing::Chunked;
    let close_client = !exchange.client_keep_alive
        || ctx.draining.get()
        || dechunk
        || resp.fields.framing == Framing::UntilClose;
    let client_framing = ClientFraming {
        close: close_client,
        http10: exchange.client_http10,
        dechunk,
    };
    client.out.clear();
    write_response_head(
        &mut client.out,
        conn.buf.filled(),
        resp,
        ctx.forward.via,
        client_framing,
    );
    conn.buf.consume(resp.fields.head_len);

    // Whatever of the body already arrived goes out with the head in one write.
    let mut body = BodyState::new(resp.fields.framing);
    if !dechunk {
        let accepted = match body.accept(conn.buf.filled()) {
            Ok(accepted) => accepted,
            Err(e) => {
                ctx.pool.recycle(conn);
                return Err(ProxyError::BadResponseBody(e));
            }
        };
        client
            .out
            .extend_from_slice(&conn.buf.filled()[..accepted.bytes]);
        conn.buf.consume(accepted.bytes);
    }
    if let Err(e) = client.stream.write_all(&client.out).await {
        ctx.pool.recycle(conn);
        return Err(ProxyError::ClientGone(e));
    }

    // The response has started: from here a failure can only close the connection.
    let idle = config.timeouts.body_idle;
    let relayed = if dechunk {
        relay_dechunked(&mut conn.stream, &mut conn.buf, &mut client.stream, idle).await
    } else {
        relay_body(
            &mut conn.stream,
            &mut conn.buf,
            &mut client.stream,
            &mut body,
            0,
            None,
            idle,
        )
        .await
    };
    if let Err(e) = relayed {
        log::warn!(
            "shard {}: response body from {server} cut short: {e:?}",
            ctx.id
        );
        ctx.pool.recycle(conn);
        return Ok(Next::Close);
    }
    if upstream_reusable && conn.buf.is_empty() {
        conn.served += 1;
        ctx.pool
            .put(conn, upstream.keepalive, upstream.keepalive_timeout);
    } else {
        ctx.pool.recycle(conn);
    }
    Ok(if close_client {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// Opens a new connection to `addr` within `upstream_connect`.
async fn connect(ctx: &ShardContext, addr: SocketAddr) -> Result<UpstreamConn, ProxyError> {
    let timeouts = &ctx.config.timeouts;
    let stream = TcpStream::connect_timeout(addr, timeouts.upstream_connect)
        .await
        .map_err(|e| {
            let e = std::io::Error::from(e);
            match e.kind() {
                std::io::ErrorKind::TimedOut => ProxyError::UpstreamConnectTimeout,
                _ => ProxyError::UpstreamConnect(e),
            }
        })?;
    // Failing to set these only costs latency or a slower error; the connection still works.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeouts.body_idle));
    Ok(UpstreamConn {
        stream,
        buf: ctx.pool.buffer(),
        addr,
        served: 0,
    })
}

/// Writes the prepared head in `client.out` (plus any body bytes already
/// buffered, in the same write) and streams the rest of the request body.
async fn send_request(
    ctx: &ShardContext,
    client: &mut Client,
    conn: &mut UpstreamConn,
    exchange: &Exchange,
) -> Result<(), ProxyError> {
    let limit = ctx.config.http.max_body_size;
    let mut body = BodyState::new(exchange.framing);
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
    conn.stream
        .write_all(&client.out)
        .await
        .map_err(ProxyError::UpstreamIo)?;
    if body.is_done() {
        return Ok(());
    }
    let idle = ctx.config.timeouts.body_idle;
    relay_body(
        &mut client.stream,
        &mut client.buf,
        &mut conn.stream,
        &mut body,
        payload,
        limit,
        idle,
    )
    .await
    .map_err(|e| match e {
        RelayError::SourceClosed => {
            ProxyError::ClientGone(std::io::ErrorKind::UnexpectedEof.into())
        }
        RelayError::SourceIo(e) => ProxyError::ClientGone(e),
        RelayError::SourceTimeout => ProxyError::ClientBodyTimeout,
        RelayError::Malformed(e) => ProxyError::BadRequestBody(e),
        RelayError::TooLarge => ProxyError::BodyTooLarge,
        RelayError::DestinationIo(e) => ProxyError::UpstreamIo(e),
    })
}

/// Reads the final response head into `resp` (interim 1xx responses are
/// dropped: the proxy already answered 100-continue itself), within
/// `upstream_first_byte`.
async fn read_response_head(
    ctx: &ShardContext,
    conn: &mut UpstreamConn,
    method: Method,
    resp: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let timeout = ctx.config.timeouts.upstream_first_byte;
    let mut received = !conn.buf.is_empty();
    loop {
        let complete = !conn.buf.is_empty()
            && parse_response(conn.buf.filled(), &ctx.response_limits, method, resp)
                .map_err(ProxyError::BadResponse)?;
        if complete {
            match resp.status {
                101 => {
                    return Err(ProxyError::BadResponse(HeadError::Malformed(
                        "unrequested upgrade",
                    )))
                }
                100..=199 => {
                    conn.buf.consume(resp.fields.head_len);
                    continue;
                }
                _ => return Ok(()),
            }
        }
        match read_some(&mut conn.stream, &mut conn.buf, timeout).await {
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
