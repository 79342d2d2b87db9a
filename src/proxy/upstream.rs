//! The upstream side of an exchange: a connection to the balancer's pick
//! (pooled, or new within `upstream_connect`, skipping servers that cannot be
//! reached; waiting in the upstream's priority queue while every server is
//! at `max_conns`), one request sent and its response head read back (with
//! one retry on a fresh connection when a pooled one turns out dead; each
//! outcome fed to outlier detection), and the connection's fate afterwards:
//! back to the pool or closed. Used by every trip upstream: the plain
//! forward, the cache's fetch and its background refresh. Touches the
//! shard's pool, upstream states and upstream buffers only.

use std::{cell::Cell, net::SocketAddr, time::Instant};

use compio::{net::TcpStream, time::timeout};

use super::{
    error::ProxyError,
    exchange::Next,
    response::{read_response_head, HeadRead, Interim, ResponseEnd},
    target::Target,
};
use crate::{
    config::{Failure, UpstreamConfig},
    http::head::{Method, ResponseHead},
    net::{IoError, Socket},
    shard::context::ShardContext,
    upstream::{
        pool::{ConnState, UpstreamConn},
        queue::Admission,
        state::{Lease, Pick},
    },
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
/// for the exchange and the request counted against its server: a pooled
/// one if the balancer's pick has one, else a new one. Servers in `tried`
/// are avoided where another is usable. A server that cannot be reached is
/// skipped for the next pick (as nginx's `proxy_next_upstream error
/// timeout`), which is safe for any request because nothing has been sent
/// yet. While every server is at `max_conns` the request waits in the queue.
pub(super) async fn acquire(
    ctx: &ShardContext,
    target: &Target,
    tried: &[usize],
) -> Result<UpstreamConn, ProxyError> {
    let state = &ctx.upstreams[target.upstream];
    let config = &ctx.config.upstreams[target.upstream];
    // Set when the request first waits in the queue: most never do, and
    // need no clock read for it.
    let mut deadline = None;
    // Servers that refused here, and those plus `tried`: allocated only when one fails.
    let (mut refused, mut avoid): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut last_error = None;
    // Set once a finished request woke this one: its turn has come.
    let mut woken = false;
    loop {
        let server = match state.pick(target.key, if avoid.is_empty() { tried } else { &avoid }) {
            // Others are queued: take a turn behind them (by class), unless
            // this request was just woken from the queue.
            Pick::Server(_) if !woken && !state.queue.is_empty() => {
                wait_in_queue(ctx, target, &mut deadline).await?;
                woken = true;
                continue;
            }
            // Only servers that already refused are left: give up.
            Pick::Server(server) if refused.contains(&server) => break,
            Pick::Server(server) => server,
            Pick::Busy => {
                wait_in_queue(ctx, target, &mut deadline).await?;
                woken = true;
                continue;
            }
            Pick::NoneUp => break,
        };
        let lease = state.lease(server);
        let addr = state.servers[server].addr;
        if let Some(mut conn) = ctx.pool.take(addr) {
            conn.buf = ctx.upstream_buffers.lease().await;
            conn.lease = Some(lease);
            return Ok(conn);
        }
        let connected = connect(ctx, addr).await;
        state.servers[server].stats.count_connect(connected.is_ok());
        match connected {
            Ok(mut conn) => {
                conn.lease = Some(lease);
                return Ok(conn);
            }
            Err(e) => {
                log::warn!("shard {}: upstream server {addr}: {e}", ctx.id);
                state.record(config, server, Err(Failure::Connect));
                if avoid.is_empty() {
                    avoid.extend_from_slice(tried);
                }
                avoid.push(server);
                refused.push(server);
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(ProxyError::NoServerUp))
}

/// Waits for a request to the upstream to finish; `Err` when the request is
/// shed (queue full) or `queue_timeout` passes. `deadline` is set at the
/// request's first wait (`queue_timeout` from then) and kept for later ones.
async fn wait_in_queue(
    ctx: &ShardContext,
    target: &Target,
    deadline: &mut Option<Instant>,
) -> Result<(), ProxyError> {
    let now = Instant::now();
    let queue_timeout = ctx.config.upstreams[target.upstream].queue_timeout;
    let left = deadline
        .get_or_insert(now + queue_timeout)
        .saturating_duration_since(now);
    if left.is_zero() {
        return Err(ProxyError::QueueTimeout);
    }
    match ctx.upstreams[target.upstream]
        .queue
        .wait(target.class, left)
        .await
    {
        Admission::Woken => Ok(()),
        Admission::Shed => Err(ProxyError::Shed),
        Admission::TimedOut => Err(ProxyError::QueueTimeout),
    }
}

/// Opens a new connection to `addr` within `upstream_connect`, with a read buffer.
pub(super) async fn connect(
    ctx: &ShardContext,
    addr: SocketAddr,
) -> Result<UpstreamConn, ProxyError> {
    let limit = ctx.config.timeouts.upstream_connect;
    // Boxed: a connect's state (1.5 KiB) would otherwise be part of every
    // exchange's future, which each request allocates and copies whole,
    // though most requests take a pooled connection.
    let stream = match Box::pin(timeout(limit, TcpStream::connect(addr))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(ProxyError::UpstreamConnectTimeout)
        }
        Ok(Err(e)) => return Err(ProxyError::UpstreamConnect(e)),
        Err(_) => return Err(ProxyError::UpstreamConnectTimeout),
    };
    Ok(Box::new(ConnState {
        stream: Socket::new(stream),
        buf: ctx.upstream_buffers.lease().await,
        addr,
        served: 0,
        lease: None,
        last_received: 0,
    }))
}

/// Sends `request` (a complete request, body included) and reads the
/// response head into `resp`, passing interim 1xx responses to `interim`.
/// A dead pooled connection is replaced and the request sent again once, if
/// that is safe.
pub(super) async fn exchange_head(
    ctx: &ShardContext,
    request: &mut Vec<u8>,
    conn: &mut UpstreamConn,
    method: Method,
    resp: &mut ResponseHead,
    server: SocketAddr,
    interim: Option<Interim<'_>>,
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
                let deadline = HeadRead {
                    first_byte,
                    sent_at: &sent_at,
                    read_at_most: conn.head_read_at_most(ctx.splicer.as_ref()),
                };
                read_response_head(
                    &conn.stream,
                    &mut conn.buf,
                    &ctx.response_limits,
                    method,
                    resp,
                    deadline,
                    interim,
                )
                .await
            }
            // A timed-out send took the request's bytes with it: never retried.
            Err(IoError::TimedOut) => Err(ProxyError::UpstreamTimeout),
            Err(IoError::Io(e)) => Err(ProxyError::UpstreamIo(e)),
        };
        match outcome {
            Ok(()) => {
                record(ctx, conn, Failure::Status(resp.status));
                return Ok(());
            }
            Err(ProxyError::UpstreamClosed | ProxyError::UpstreamIo(_))
                if retryable && !retried && conn.served > 0 =>
            {
                log::debug!(
                    "shard {}: pooled connection to {server} was dead; retrying",
                    ctx.id
                );
                retried = true;
                let fresh = connect(ctx, server).await;
                if let Some(lease) = &conn.lease {
                    lease.stats().count_connect(fresh.is_ok());
                }
                let mut fresh = fresh?;
                fresh.lease = conn.lease.take();
                ctx.pool.discard(std::mem::replace(conn, fresh));
            }
            Err(e) => {
                if let Some(failure) = e.failure() {
                    record(ctx, conn, failure);
                }
                return Err(e);
            }
        }
    }
}

/// Feeds outlier detection: a 5xx or a transport failure counts against
/// the server, anything else clears its run of failures.
fn record(ctx: &ShardContext, conn: &UpstreamConn, failure: Failure) {
    let Some(lease) = &conn.lease else { return };
    let upstream = lease.upstream();
    let config = &ctx.config.upstreams[upstream.index];
    let outcome = match failure {
        Failure::Status(status) if status < 500 => Ok(()),
        failure => Err(failure),
    };
    upstream.record(config, lease.server, outcome);
}

/// The server index a connection's request is counted against.
pub(super) fn server_of(conn: &UpstreamConn) -> Option<usize> {
    conn.lease.as_ref().map(|lease: &Lease| lease.server)
}
