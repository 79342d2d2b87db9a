//! The upstream side of an exchange: a connection to the balancer's pick
//! (pooled, or new within `upstream_connect`, skipping servers that cannot be
//! reached), one request sent and its response head read back (with one retry
//! on a fresh connection when a pooled one turns out dead), and the
//! connection's fate afterwards: back to the pool or closed. Used by every
//! trip upstream: the plain forward, the cache's fetch and its background
//! refresh. Touches the shard's pool, balancers and upstream buffers only.

use std::{cell::Cell, net::SocketAddr, time::Instant};

use compio::{net::TcpStream, time::timeout};

use super::{
    error::ProxyError,
    exchange::Next,
    response::{read_response_head, HeadDeadline, ResponseEnd},
};
use crate::{
    config::UpstreamConfig,
    http::head::{Method, ResponseHead},
    net::{IoError, Socket},
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// Phase 6, after: pools the upstream connection if the exchange left it
/// clean (both messages whole, keep-alive allowed, nothing unread), else
/// closes it; then decides the client connection's fate.
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
        ctx.pool.discard(conn);
    }
    if clean && !end.close_client {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// A connection to one of the upstream's servers, with a read buffer leased
/// for the exchange: a pooled one if the balancer's pick has one, else a new
/// one. A server that cannot be reached is skipped for the next pick (as
/// nginx's `proxy_next_upstream error timeout`), which is safe for any
/// request because nothing has been sent yet.
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
pub(super) async fn connect(
    ctx: &ShardContext,
    addr: SocketAddr,
) -> Result<UpstreamConn, ProxyError> {
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
            // A timed-out send took the request's bytes with it: never retried.
            Err(IoError::TimedOut) => Err(ProxyError::UpstreamTimeout),
            Err(IoError::Io(e)) => Err(ProxyError::UpstreamIo(e)),
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
                ctx.pool.discard(std::mem::replace(conn, fresh));
            }
            Err(e) => return Err(e),
        }
    }
}
