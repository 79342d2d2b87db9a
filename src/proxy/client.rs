//! One client connection's life: read a request head (within the header
//! timeout, or the keep-alive timeout between requests), forward it, and loop
//! while both sides keep the connection alive. Pipelined requests wait in the
//! buffer and are answered strictly in order.
//!
//! Errors the client can still be told about become one short response; after
//! an error the connection closes, since an unread body would desynchronise it.

use std::{net::Shutdown, os::fd::AsRawFd, rc::Rc, time::Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{dispatch::handle, error::ProxyError, forward::Next};
use crate::{
    buffer::IoBuf,
    http::{
        head::{parse_request, Framing, RequestHead, ResponseHead},
        status::write_error,
    },
    shard::{context::ShardContext, registry::Registration},
};

/// The client side of a connection.
pub struct Client {
    pub stream: TcpStream,
    /// Request heads and bodies are read into this buffer.
    pub buf: IoBuf,
    /// The client's address as text, for X-Forwarded-For; formatted once per connection.
    pub ip: Vec<u8>,
    /// Heads on their way out (to the upstream, then back to the client).
    pub out: Vec<u8>,
}

/// Serves one accepted connection until it closes.
pub async fn serve(ctx: Rc<ShardContext>, stream: TcpStream) {
    let ip = stream
        .peer_addr()
        .map(|a| a.ip().to_string().into_bytes())
        .unwrap_or_default();
    // Failing to set these only costs latency or a slower error; the connection still works.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(ctx.config.timeouts.body_idle));
    let mut client = Client {
        stream,
        buf: IoBuf::with_capacity(ctx.client_buffer_size),
        ip,
        out: Vec::with_capacity(2048),
    };
    let registration = ctx.connections.register(client.stream.as_raw_fd());
    let mut request = RequestHead::default();
    let mut response = ResponseHead::default();
    let mut first = true;
    loop {
        if ctx.draining.get() && client.buf.is_empty() {
            break;
        }
        registration.set_idle(client.buf.is_empty());
        match read_request_head(&ctx, &mut client, &mut request, first, &registration).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                log::debug!("shard {}: {e}", ctx.id);
                answer(&mut client, &e, true).await;
                linger_close(&mut client).await;
                return;
            }
        }
        first = false;
        registration.set_idle(false);
        let had_body = request.fields.framing != Framing::None;
        let keep_alive = request.fields.wants_keep_alive();
        match handle(&ctx, &mut client, &request, &mut response).await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => break,
            Err(e) => {
                if e.is_upstream() {
                    log::warn!("shard {}: {e}", ctx.id);
                } else {
                    log::debug!("shard {}: {e}", ctx.id);
                }
                // Only a request that never had a body can leave the connection in sync.
                let keep = matches!(e, ProxyError::NoRoute)
                    && !had_body
                    && keep_alive
                    && !ctx.draining.get();
                answer(&mut client, &e, !keep).await;
                if !keep {
                    linger_close(&mut client).await;
                    return;
                }
            }
        }
    }
    let _ = client.stream.shutdown(Shutdown::Both).await;
}

/// Reads until `request` holds a complete head. `Ok(false)`: the connection
/// closed or idled out between requests, which needs no answer.
async fn read_request_head(
    ctx: &ShardContext,
    client: &mut Client,
    request: &mut RequestHead,
    first: bool,
    registration: &Registration<'_>,
) -> Result<bool, ProxyError> {
    let timeouts = &ctx.config.timeouts;
    let mut deadline: Option<Instant> = None;
    loop {
        if !client.buf.is_empty() {
            if parse_request(client.buf.filled(), &ctx.request_limits, request)? {
                return Ok(true);
            }
            registration.set_idle(false);
        }
        let now = Instant::now();
        // Between requests the keep-alive timeout applies; once a head has begun
        // (or on a new connection) the whole head must arrive by one deadline,
        // so a client trickling bytes cannot hold the connection (slowloris).
        let timeout = if client.buf.is_empty() && !first {
            timeouts.client_keepalive
        } else {
            deadline
                .get_or_insert(now + timeouts.client_header)
                .saturating_duration_since(now)
        };
        if timeout.is_zero() {
            return Err(ProxyError::ClientHeaderTimeout);
        }
        let _ = client.stream.set_read_timeout(Some(timeout));
        match client.stream.read(client.buf.spare()).await {
            Ok(0) => return Ok(false),
            Ok(n) => client.buf.commit(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut && !client.buf.is_empty() => {
                return Err(ProxyError::ClientHeaderTimeout)
            }
            Err(_) => return Ok(false),
        }
    }
}

/// Sends the error's status page, if the client can still be answered.
async fn answer(client: &mut Client, error: &ProxyError, close: bool) {
    if let Some(status) = error.status() {
        client.out.clear();
        write_error(&mut client.out, status, close);
        let _ = client.stream.write_all(&client.out).await;
    }
}

/// Closes after an error without destroying the response just sent: closing a
/// socket with unread input makes the kernel send RST, which can discard our
/// response before the client reads it. So half-close, then drain briefly.
async fn linger_close(client: &mut Client) {
    let _ = client.stream.shutdown(Shutdown::Write).await;
    let _ = client
        .stream
        .set_read_timeout(Some(std::time::Duration::from_millis(500)));
    client.buf.clear();
    // Bounded: at most 64 reads or 500 ms of silence, whichever comes first.
    for _ in 0..64 {
        match client.stream.read(client.buf.spare()).await {
            Ok(0) | Err(_) => break,
            Ok(_) => client.buf.clear(),
        }
    }
}
