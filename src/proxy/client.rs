//! One client connection's life: wait for a request (holding no buffer while
//! idle), read its head within the header timeout, hand it to
//! [`super::exchange`], and loop while both sides keep the connection alive.
//! Pipelined requests wait in the buffer and are answered strictly in order.
//!
//! Errors the client can still be told about become one short response; after
//! an error the connection closes, since an unread body would desynchronise it.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    rc::Rc,
    time::Duration,
};

use compio::net::TcpStream;

use super::{
    error::ProxyError,
    exchange::{handle, Next},
    trip::Trip,
};
use crate::{
    access_log::RequestText,
    buffer::IoBuf,
    http::{
        head::{parse_request_with, Framing, Method, RequestHead, ResponseHead},
        status::{write_error, write_error_detailed},
    },
    limits::{write_too_many, OverLimit},
    net::{Arrival, IoError, PeerText, RingWait, Socket},
    shard::clock,
    shard::{context::ShardContext, registry::Registration},
};

/// The client side of a connection while a request is in hand: what the
/// connection keeps between requests ([`Held`]) plus the request's own state.
/// It lives in the request's box and goes back to being a [`Held`] when the
/// request ends.
pub struct Client {
    pub stream: Socket,
    /// Request heads and bodies are read into this buffer; it is leased from
    /// the shard when bytes arrive and given back when the connection idles.
    pub buf: IoBuf,
    /// The client's address as text, for X-Forwarded-For; formatted once per connection.
    pub ip: PeerText,
    /// The client's address, for per-IP limits.
    pub addr: Option<IpAddr>,
    /// Heads on their way out (to the upstream, then back to the client).
    pub out: Vec<u8>,
    /// Longest silence while writing to the client (`timeouts.body_idle`).
    pub write_timeout: Duration,
    /// What the request in hand did so far, for the after phase.
    pub trip: Trip,
}

/// What a client connection keeps between requests. The idle connection's
/// task holds only this and its wait for the next request, so every byte
/// here is paid by each idle keep-alive connection; anything that lives for
/// one request belongs in [`Client`].
pub struct Held {
    stream: Socket,
    /// Empty while the connection idles (a buffer is leased when bytes
    /// arrive); may hold the start of a pipelined request after one ends.
    buf: IoBuf,
    ip: PeerText,
    addr: Option<IpAddr>,
    out: Vec<u8>,
}

impl Held {
    /// A connection the listener just accepted. `peer`: the client's address
    /// when the accept reported it (else it is asked of the socket).
    fn accepted(stream: TcpStream, peer: Option<SocketAddr>) -> Held {
        let stream = Socket::accepted(stream);
        let addr = peer.or_else(|| stream.peer_addr().ok()).map(|a| a.ip());
        Held {
            stream,
            buf: IoBuf::default(),
            ip: PeerText::of(addr),
            addr,
            out: Vec::new(),
        }
    }

    /// The connection with a request in hand; the request's trip begins now.
    fn resume(self, write_timeout: Duration) -> Client {
        Client {
            stream: self.stream,
            buf: self.buf,
            ip: self.ip,
            addr: self.addr,
            out: self.out,
            write_timeout,
            trip: Trip::begin(),
        }
    }
}

impl Client {
    /// What the connection keeps once the request in hand is done.
    fn hold(self) -> Held {
        Held {
            stream: self.stream,
            buf: self.buf,
            ip: self.ip,
            addr: self.addr,
            out: self.out,
        }
    }

    /// Sends `client.out` to the client.
    pub async fn send_out(&mut self) -> Result<(), IoError> {
        self.stream
            .send_vec(&mut self.out, self.write_timeout)
            .await
    }
}

/// Serves one accepted connection until it closes. `peer`: the client's
/// address when the accept reported it (else it is asked of the socket).
///
/// What this task holds while the connection idles is its size (the RSS of
/// an idle keep-alive connection): the [`Held`] connection, the registration
/// and the wait for the next request. Everything a request needs, from its
/// head to an error page, lives in [`boxed_request`]'s box, on the heap only
/// while a request is in hand; rarer paths are boxed where they are awaited.
///
/// A plain function returning an `async move` block rather than an `async
/// fn`: an async fn stores each argument twice (as passed, and as the local
/// it is moved into), where the block's captures are used in place.
pub fn serve(
    mut ctx: Rc<ShardContext>,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    registration: Registration,
) -> impl Future<Output = ()> {
    // `None` only while a request has the connection (see `request`).
    let mut held = Some(Held::accepted(stream, peer));
    async move {
        // `[limits] connections_per_ip`: over this shard's share, a 429 and close.
        let limit = ctx.config.limits.connections_per_ip;
        let addr = held.as_ref().and_then(|h| h.addr);
        let _ip_slot = match addr.map(|ip| ctx.client_limits.connect(ip, limit)) {
            Some(Err(OverLimit)) => {
                log::debug!("shard {}: connection over connections_per_ip", ctx.id);
                Box::pin(refuse_over_limit(&ctx, &mut held)).await;
                drop(registration);
                Box::pin(close(&ctx, held)).await;
                return;
            }
            Some(Ok(slot)) => slot,
            None => None,
        };
        let mut first = true;
        while let Some(idle) = held.as_mut() {
            if ctx.draining.get() && idle.buf.is_empty() {
                break;
            }
            if idle.buf.is_empty() && !wait_for_request(&ctx, idle, first, &registration).await {
                break;
            }
            // A reload since the last request: this one runs on the new config.
            ctx = ctx.latest();
            match boxed_request(&ctx, &mut held, &registration, &mut first).await {
                Next::KeepAlive => {}
                Next::Close => break,
            }
        }
        drop(registration);
        Box::pin(close(&ctx, held)).await;
    }
}

/// Gives the connection's spare vector back and closes the socket. Boxed
/// where it is awaited: inline, the close's state (twice the connection's
/// size) would be part of every connection's task.
async fn close(ctx: &ShardContext, held: Option<Held>) {
    if let Some(mut held) = held {
        ctx.give_out_vec(std::mem::take(&mut held.out));
        held.stream.close().await;
    }
}

/// A 429 to a connection over `connections_per_ip`, then a lingering close.
async fn refuse_over_limit(ctx: &ShardContext, held: &mut Option<Held>) {
    let Some(idle) = held.take() else { return };
    let mut client = idle.resume(ctx.config.timeouts.body_idle);
    write_too_many(&mut client.out, Duration::from_secs(1), true);
    let _ = client.send_out().await;
    linger_close(&mut client).await;
    *held = Some(client.hold());
}

/// [`request`]'s state, on the heap only while a request is in hand, so an
/// idle connection's task stays small. A plain function: boxing inside the
/// async loop made the compiler keep room for the unboxed future in the
/// connection's task as well (3,992 bytes instead of ~1,400).
///
/// The box is allocated first and the future written into it: `Box::pin`
/// built the 3 KiB future on the stack and copied all of it to the heap on
/// every request, though only its four arguments are set before it runs.
fn boxed_request<'a>(
    ctx: &'a Rc<ShardContext>,
    held: &'a mut Option<Held>,
    registration: &'a Registration,
    first: &'a mut bool,
) -> Pin<Box<impl Future<Output = Next> + 'a>> {
    Box::into_pin(Box::write(
        Box::new_uninit(),
        request(ctx, held, registration, first),
    ))
}

/// One request: the connection moves into the request's box as a
/// [`Client`] (with the request's trip) and back when the request is done.
/// `Next::Close` also when `held` is empty, which `serve` never lets happen.
async fn request(
    ctx: &Rc<ShardContext>,
    held: &mut Option<Held>,
    registration: &Registration,
    first: &mut bool,
) -> Next {
    let Some(idle) = held.take() else {
        return Next::Close;
    };
    let mut client = idle.resume(ctx.config.timeouts.body_idle);
    let next = answer_one(ctx, &mut client, registration, first).await;
    *held = Some(client.hold());
    next
}

/// The request's head, the exchange, and the error page if one is due.
/// `Next::Close` when the connection must close (after a lingering close
/// where the client may still be sending).
async fn answer_one(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    registration: &Registration,
    first: &mut bool,
) -> Next {
    // Field lists that already grew on an earlier request (fresh ones grew
    // by a malloc per push); they go back to the shard when the request ends.
    let (mut request, mut response) = ctx.take_heads();
    let next = match read_request_head(ctx, client, &mut request).await {
        Ok(true) => {
            *first = false;
            registration.set_idle(false);
            exchange_and_answer(ctx, client, &request, &mut response).await
        }
        Ok(false) => Next::Close,
        Err(e) => {
            log::debug!("shard {}: {e}", ctx.id);
            refused_head(ctx, client, e.status());
            answer(client, &e, true).await;
            linger_close(client).await;
            Next::Close
        }
    };
    ctx.give_heads(request, response);
    next
}

/// Hands a parsed request to [`handle`]; an error becomes its status page,
/// and the connection stays open only when nothing of the request is left
/// unread.
async fn exchange_and_answer(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    request: &RequestHead,
    response: &mut ResponseHead,
) -> Next {
    let had_body = request.fields.framing != Framing::None;
    let keep_alive = request.fields.wants_keep_alive();
    match handle(ctx, client, request, response).await {
        Ok(next) => next,
        Err(e) => {
            if e.is_upstream() {
                log::warn!("shard {}: {e}", ctx.id);
            } else {
                log::debug!("shard {}: {e}", ctx.id);
            }
            // Only a request that never had a body can leave the connection in sync.
            let keep =
                e.leaves_connection_in_sync() && !had_body && keep_alive && !ctx.draining.get();
            answer(client, &e, !keep).await;
            if keep {
                Next::KeepAlive
            } else {
                linger_close(client).await;
                Next::Close
            }
        }
    }
}

/// Waits, holding no buffer, until the client sends something; then leases
/// a buffer for it. `false`: the client closed, or idled out (keep-alive
/// timeout between requests; the header timeout before the first request).
async fn wait_for_request(
    ctx: &ShardContext,
    client: &mut Held,
    first: bool,
    registration: &Registration,
) -> bool {
    client.buf = IoBuf::default();
    let spare = std::mem::take(&mut client.out);
    ctx.give_out_vec(spare);
    registration.set_idle(true);
    let timeouts = &ctx.config.timeouts;
    let limit = if first {
        timeouts.client_header
    } else {
        timeouts.client_keepalive
    };
    // The multishot receive pays off from a connection's second request on.
    let ring = match (ctx.provided_buffers, first) {
        (false, _) => RingWait::None,
        (true, true) => RingWait::Once,
        (true, false) => RingWait::Multishot,
    };
    let arrival = client
        .stream
        .wait_for_bytes(limit, ring, ctx.client_buffers.buffer_size())
        .await;
    if ctx.draining.get() && !matches!(arrival, Arrival::Bytes(_)) {
        return false;
    }
    registration.set_idle(false);
    match arrival {
        Arrival::Bytes(bytes) => {
            client.buf = ctx.client_buffers.lease().await;
            // At most the client buffer's size was received (wait_for_bytes' max_len).
            client.buf.push(bytes.bytes());
        }
        Arrival::Readable => client.buf = ctx.client_buffers.lease().await,
        Arrival::Closed | Arrival::TimedOut => return false,
    }
    client.out = ctx.take_out_vec();
    true
}

/// Reads until `request` holds a complete head. `Ok(false)`: the connection
/// closed before a head began, which needs no answer.
async fn read_request_head(
    ctx: &ShardContext,
    client: &mut Client,
    request: &mut RequestHead,
) -> Result<bool, ProxyError> {
    // The whole head must arrive by one deadline, so a client trickling
    // bytes cannot hold the connection (slowloris). The trip began just
    // now: its clock reading serves (one clock read fewer per request).
    let deadline = client.trip.started + ctx.config.timeouts.client_header;
    let mut received = !client.buf.is_empty();
    loop {
        if !client.buf.is_empty()
            && parse_request_with(
                client.buf.filled(),
                &ctx.request_limits,
                ctx.target_forms,
                request,
            )?
        {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(clock::now());
        if left.is_zero() {
            return Err(ProxyError::ClientHeaderTimeout);
        }
        match client.stream.recv(&mut client.buf, left).await {
            Ok(0) => return Ok(false),
            Ok(_) => received = true,
            Err(IoError::TimedOut) if received => return Err(ProxyError::ClientHeaderTimeout),
            Err(_) => return Ok(false),
        }
    }
}

/// Counts (as unrouted) and logs a request whose head was refused: it never
/// reaches the exchange, so its method and target are unknown (`-`).
fn refused_head(ctx: &ShardContext, client: &mut Client, status: Option<u16>) {
    let trip = &mut client.trip;
    trip.status = status;
    ctx.unrouted_stats
        .record(Method::Other, status, trip.started.elapsed());
    if let Some(log) = &ctx.access_log {
        let text = RequestText::unparsed();
        let no_response = ResponseHead::default();
        log.record(&trip.log_entry(ctx, &client.ip, &text, &no_response));
    }
}

/// Sends the error's status page, if the client can still be answered.
async fn answer(client: &mut Client, error: &ProxyError, close: bool) {
    if let ProxyError::RateLimited(retry_after) = error {
        client.out.clear();
        write_too_many(&mut client.out, *retry_after, close);
        let _ = client.send_out().await;
    } else if let Some(status) = error.status() {
        client.out.clear();
        match error.detail() {
            Some((fields, why)) => {
                write_error_detailed(&mut client.out, status, close, &fields, &why)
            }
            None => write_error(&mut client.out, status, close),
        }
        let _ = client.send_out().await;
    }
}

/// Closes after an error without destroying the response just sent: closing a
/// socket with unread input makes the kernel send RST, which can discard our
/// response before the client reads it. So half-close, then drain briefly.
async fn linger_close(client: &mut Client) {
    client.stream.shutdown_write().await;
    // Bounded: at most 64 reads or 500 ms of silence, whichever comes first.
    let mut scratch = Vec::with_capacity(4096);
    for _ in 0..64 {
        match client
            .stream
            .recv_scratch(&mut scratch, Duration::from_millis(500))
            .await
        {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
