//! Tunnels: after `CONNECT host:port` is admitted, or after an upstream
//! answers an `Upgrade` request (WebSocket) with 101, the connection stops
//! being HTTP and bytes flow both ways as they are until both sides are done.
//!
//! Upgrade passthrough works in both modes: a request asking to upgrade
//! (HTTP/1.1, `Connection: upgrade`, an `Upgrade` field, no body) is sent
//! with those two fields kept (they are hop-by-hop and dropped otherwise)
//! and skips the cache; a 101 switches to the tunnel, any other answer is
//! an ordinary response and the connection stays HTTP.
//!
//! Each direction is one loop (receive into a leased buffer, send it all,
//! repeat; or splice, below), so a busy tunnel holds at most a streaming
//! buffer or a pipe per direction whatever the transfer size. A direction
//! quiet for [`HOLD`] gives its buffer or pipe back and waits for readiness
//! holding none, so thousands of idle tunnels (WebSockets, say) do not
//! starve the shard's pools. A side's EOF becomes a FIN to the other (half-close, RFC 9110
//! §9.3.6) and the other direction carries on until its own EOF. The tunnel
//! closes after `tunnel_idle` with no byte in either direction: a
//! direction waiting in silence is not idle while the other one moves.
//!
//! `duplex.rs` does not fit here: it relays HTTP-framed bodies (with
//! `BodyState`, limits and trailers) and ends with the response. The two
//! loops are raced on this task's stack like its two directions, though.
//!
//! Bulk directions are spliced (splice(2) through a pipe, as large response
//! bodies are: `net/splice.rs`): once a direction has carried
//! `http.splice_above` bytes and its source is not read by a multishot
//! receive, what arrives goes socket → pipe → socket without entering the
//! shard. That is both directions of a CONNECT tunnel, which is nearly
//! always its connection's first request (a client connection arms its
//! multishot only from the second request on). A client connection that
//! carried requests before keeps its multishot receive (cancelling it could
//! lose bytes already taken) and its direction is copied. A spliced
//! direction holds a pipe instead of a buffer, and gives it back when quiet.
//! Against copying through buffers, splicing halved the proxy's CPU per GiB
//! each way (`scripts/bench/squid.py --copy-too`, docs/PERFORMANCE.md).

use std::{
    cell::Cell,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use futures_lite::future::or;

use super::{
    client::Client,
    error::{upstream_read_error, ProxyError},
    exchange::{Exchange, Next},
    forward::{self, acquire},
    response::{send_response, ToClient},
    target::Target,
    upstream,
};
use crate::{
    buffer::{BufferPool, IoBuf},
    http::{
        head::{parse_response, Framing, HeadError, Method, RequestHead, ResponseHead},
        rewrite::{
            write_forward_request_head, write_request_head_edited, write_response_head,
            ClientFraming, RequestEdit,
        },
        target::absolute,
        Span,
    },
    net::{IoError, Passed, Pipe, Socket, Splicer},
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// Sent once the destination is connected; the tunnel starts after it.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Serves `CONNECT host:port` once `conn` leads there (straight, or through
/// a parent that agreed): answers 200, then relays until both directions
/// end. The client connection always closes after.
pub(super) async fn connect(
    ctx: &ShardContext,
    client: &mut Client,
    req: &RequestHead,
    conn: UpstreamConn,
) -> Result<Next, ProxyError> {
    client.buf.consume(req.fields.head_len);
    client
        .stream
        .send_static(ESTABLISHED, client.write_timeout)
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;
    // The status the metrics and the access log show for the tunnel.
    client.trip.status = Some(200);
    // Bytes the client sent right behind the head (a TLS hello, say) are the tunnel's.
    Ok(tunnel(ctx, client, conn).await)
}

/// Relays between the client and `conn` until both are done (or idle for
/// `tunnel_idle`), then closes the upstream side; the client's closes next.
async fn tunnel(ctx: &ShardContext, client: &mut Client, mut conn: UpstreamConn) -> Next {
    let idle = ctx.config.forward.tunnel_idle;
    let client_side = Side {
        socket: &client.stream,
        buf: &mut client.buf,
        pool: &ctx.client_buffers,
    };
    let upstream_side = Side {
        socket: &conn.stream,
        buf: &mut conn.buf,
        pool: &ctx.upstream_buffers,
    };
    relay(client_side, upstream_side, ctx.splicer.as_ref(), idle).await;
    ctx.pool.discard(conn);
    Next::Close
}

/// How long a quiet direction keeps its buffer before giving it back: long
/// enough that a bulk transfer never pays a readiness wait per chunk.
const HOLD: Duration = Duration::from_millis(500);

/// One end of a tunnel: its socket, the buffer what it sends is received
/// into (holding what is still to be passed on), and the pool that buffer
/// is leased from.
struct Side<'a> {
    socket: &'a Socket,
    buf: &'a mut IoBuf,
    pool: &'a Rc<BufferPool>,
}

/// Why one direction of a tunnel stopped early.
#[derive(Debug)]
enum TunnelEnd {
    Idle,
    Failed,
}

/// Copies `a` → `b` and `b` → `a` until both have ended (each EOF passed on
/// as a FIN), or one fails, or neither moves for `idle`.
async fn relay(a: Side<'_>, b: Side<'_>, splicer: Option<&Splicer>, idle: Duration) {
    let activity = Cell::new(Instant::now());
    let (a_socket, b_socket) = (a.socket, b.socket);
    let a_to_b = std::pin::pin!(pump(a, b_socket, splicer, idle, &activity));
    let b_to_a = std::pin::pin!(pump(b, a_socket, splicer, idle, &activity));
    let (mut a_to_b, mut b_to_a) = (a_to_b, b_to_a);
    let first = or(async { (true, a_to_b.as_mut().await) }, async {
        (false, b_to_a.as_mut().await)
    })
    .await;
    match first {
        // One side is done and half-closed: the other carries on.
        (true, Ok(())) => {
            let _ = b_to_a.await;
        }
        (false, Ok(())) => {
            let _ = a_to_b.await;
        }
        (_, Err(end)) => log::debug!("tunnel ended: {end:?}"),
    }
}

/// One direction: receive from `from`, send all of it to `to`, until EOF
/// (then a FIN to `to`); spliced instead once `splicer` wants it.
/// `activity` is shared by both directions.
///
/// Waiting is always a readiness wait, never a receive given up on: a
/// receive abandoned at its deadline can take bytes that already arrived
/// with it (io_uring completes it anyway), which in a tunnel that carries
/// on would corrupt the stream. A receive is issued once bytes (or EOF) are
/// there, so it completes at once; a receive that still times out ends
/// the tunnel.
async fn pump(
    from: Side<'_>,
    to: &Socket,
    splicer: Option<&Splicer>,
    idle: Duration,
    activity: &Cell<Instant>,
) -> Result<(), TunnelEnd> {
    let mut direction = Direction {
        from,
        to,
        splicer,
        pipe: None,
        moved: 0,
    };
    // Dropping the direction gives its pipe back, however the tunnel ended.
    direction.run(idle, activity).await
}

/// One direction's state: what it reads and writes, the pipe it holds
/// while it splices, and how many bytes it has carried.
struct Direction<'a> {
    from: Side<'a>,
    to: &'a Socket,
    splicer: Option<&'a Splicer>,
    pipe: Option<Pipe<'a>>,
    moved: u64,
}

/// How one pass of a direction ended.
enum Step {
    Carried,
    /// The readiness was spurious: nothing moved, so the tunnel is no less idle.
    Nothing,
    Eof,
}

impl<'a> Direction<'a> {
    async fn run(&mut self, idle: Duration, activity: &Cell<Instant>) -> Result<(), TunnelEnd> {
        loop {
            let buf = &mut *self.from.buf;
            if !buf.is_empty() {
                let len = buf.len();
                self.to
                    .send_buffered(buf, len, idle)
                    .await
                    .map_err(|_| TunnelEnd::Failed)?;
                self.moved += len as u64;
                activity.set(Instant::now());
            }
            let quiet_for = activity.get().elapsed();
            if quiet_for >= idle {
                return Err(TunnelEnd::Idle);
            }
            let holding = self.from.buf.capacity() > 0 || self.pipe.is_some();
            let wait = match holding {
                true => HOLD.min(idle - quiet_for),
                false => idle - quiet_for,
            };
            match self.from.socket.readable(wait).await {
                Ok(true) => {}
                // Quiet this way: the (empty) buffer or pipe goes back; the
                // tunnel is idle only once the other way is quiet too.
                Ok(false) => {
                    *self.from.buf = IoBuf::default();
                    self.give_pipe_back();
                    continue;
                }
                Err(_) => return Err(TunnelEnd::Failed),
            }
            let step = match self.splicer {
                Some(splicer) if splicer.wants_stream(self.from.socket, self.moved) => {
                    self.splice(splicer, idle).await?
                }
                _ => self.copy(idle).await?,
            };
            match step {
                Step::Carried => activity.set(Instant::now()),
                Step::Nothing => {}
                Step::Eof => {
                    self.to.shutdown_write().await;
                    return Ok(());
                }
            }
        }
    }

    /// Receives what arrived into the direction's buffer (leased if it
    /// holds none); the next pass sends it on.
    async fn copy(&mut self, idle: Duration) -> Result<Step, TunnelEnd> {
        let Side { socket, buf, pool } = &mut self.from;
        if buf.capacity() == 0 {
            **buf = pool.lease().await;
        }
        match socket.recv(buf, idle).await {
            Ok(0) => Ok(Step::Eof),
            Ok(_) => Ok(Step::Carried),
            Err(_) => Err(TunnelEnd::Failed),
        }
    }

    /// Splices what arrived straight to the other side.
    async fn splice(&mut self, splicer: &'a Splicer, idle: Duration) -> Result<Step, TunnelEnd> {
        // The copied bytes went out at the top of the pass; no buffer is needed now.
        *self.from.buf = IoBuf::default();
        let pipe = match &mut self.pipe {
            Some(pipe) => pipe,
            None => self
                .pipe
                .insert(splicer.lend().map_err(|_| TunnelEnd::Failed)?),
        };
        match pipe.pass_on(self.from.socket, self.to, idle).await {
            Ok(Passed::Moved(0)) => Ok(Step::Nothing),
            Ok(Passed::Moved(n)) => {
                self.moved += n as u64;
                Ok(Step::Carried)
            }
            Ok(Passed::Eof) => Ok(Step::Eof),
            Err(e) => {
                log::debug!("tunnel splice: {e:?}");
                Err(TunnelEnd::Failed)
            }
        }
    }

    /// Dropping the pipe gives it back to the shard (see [`Pipe`]).
    fn give_pipe_back(&mut self) {
        self.pipe = None;
    }
}

/// The `Upgrade` value of a request that asks to switch protocols in a way
/// passed on (RFC 9110 §7.8): HTTP/1.1 (an HTTP/1.0 Upgrade is ignored),
/// `upgrade` among the Connection options, and no body.
pub(super) fn upgrade_requested(req: &RequestHead, buf: &[u8]) -> Option<Span> {
    let fields = &req.fields;
    if fields.minor_version == 0
        || fields.framing != Framing::None
        || !fields.is_connection_option(buf, b"upgrade")
    {
        return None;
    }
    let upgrade = fields
        .headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"upgrade"))?;
    Some(upgrade.value)
}

/// Where an upgrade request goes: a route's upstream, or (forward proxy)
/// the admitted addresses of its absolute-form target.
pub(super) enum UpgradeTo<'a> {
    Upstream(usize),
    Direct(&'a [SocketAddr]),
}

/// Phases 4 to 6 of a request asking to upgrade (`upgrade` is its
/// `Upgrade` value): 101 turns the connection into a tunnel until both
/// sides are done; another answer is sent on as an ordinary response.
pub(super) async fn upgrade(
    ex: &mut Exchange<'_>,
    upgrade: Span,
    to: UpgradeTo<'_>,
) -> Result<Next, ProxyError> {
    let ctx = ex.ctx;
    let side = ex.side();
    write_upgrade_head(ex, upgrade, &to)?;
    let (mut conn, _) = match to {
        UpgradeTo::Upstream(index) => {
            let target = Target {
                upstream: index,
                ..ex.target
            };
            let conn = upstream::acquire(ctx, &target, &[]).await?;
            let addr = conn.addr;
            (conn, addr)
        }
        UpgradeTo::Direct(addrs) => acquire(ctx, addrs, true).await?,
    };
    let method = ex.req.method();
    let answered = read_answer_head(ctx, &mut conn, &mut ex.client.out, method, ex.resp).await;
    if let Err(e) = answered {
        ctx.pool.discard(conn);
        return Err(e);
    }
    if ex.resp.status == 101 {
        return switch(ex, conn).await;
    }
    let to_client = ToClient {
        stream: &ex.client.stream,
        out: &mut ex.client.out,
        side,
        extra_fields: b"",
        splicer: ctx.splicer.as_ref(),
    };
    let end = send_response(to_client, &conn.stream, &mut conn.buf, ex.resp, None);
    let end = match end.await {
        Ok(end) => end,
        Err(e) => {
            ctx.pool.discard(conn);
            return Err(e);
        }
    };
    Ok(match to {
        UpgradeTo::Upstream(index) => {
            upstream::finish(ctx, conn, &ctx.config.upstreams[index], end, true)
        }
        UpgradeTo::Direct(_) => forward::after(ctx, conn, end, true),
    })
}

/// The upstream head with `Connection: upgrade` and the client's `Upgrade`
/// kept, into `client.out`; consumes the client's copy.
fn write_upgrade_head(
    ex: &mut Exchange<'_>,
    upgrade: Span,
    to: &UpgradeTo<'_>,
) -> Result<(), ProxyError> {
    let client = &mut *ex.client;
    let buf = client.buf.filled();
    let extra = upgrade_fields(upgrade.of(buf));
    client.out.clear();
    let opts = ex.ctx.forward;
    let edit = RequestEdit {
        extra: &extra,
        ..RequestEdit::NONE
    };
    match to {
        UpgradeTo::Upstream(_) => {
            write_request_head_edited(&mut client.out, buf, ex.req, &client.ip, opts, edit);
        }
        UpgradeTo::Direct(_) => {
            let target = absolute(ex.req.target.of(buf))
                .ok_or(ProxyError::BadRequest(HeadError::NotOriginForm))?;
            let target = (target.authority.text, target.path);
            write_forward_request_head(
                &mut client.out,
                buf,
                ex.req,
                target,
                &client.ip,
                opts,
                edit,
            );
        }
    }
    ex.consume_head();
    Ok(())
}

/// Sends `head` and reads the answer's head into `resp`: a 101 or a final
/// response (other interim ones are dropped), within `upstream_first_byte`.
/// The head stays at the front of `conn.buf`.
pub(super) async fn read_answer_head(
    ctx: &ShardContext,
    conn: &mut UpstreamConn,
    head: &mut Vec<u8>,
    method: Method,
    resp: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let timeouts = &ctx.config.timeouts;
    conn.stream
        .send_vec(head, timeouts.body_idle)
        .await
        .map_err(|e| ProxyError::UpstreamIo(e.into()))?;
    let deadline = Instant::now() + timeouts.upstream_first_byte;
    loop {
        let parsed = !conn.buf.is_empty()
            && parse_response(conn.buf.filled(), &ctx.response_limits, method, resp)
                .map_err(ProxyError::BadResponse)?;
        match resp.status {
            100..=199 if parsed && resp.status != 101 => {
                conn.buf.consume(resp.fields.head_len);
                continue;
            }
            _ if parsed => return Ok(()),
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.stream.recv(&mut conn.buf, left).await {
            Ok(0) => return Err(ProxyError::UpstreamClosed),
            Ok(_) => {}
            Err(IoError::TimedOut) => return Err(ProxyError::UpstreamTimeout),
            Err(IoError::Io(e)) => return Err(upstream_read_error(e)),
        }
    }
}

/// Passes the 101 on (with `Connection: upgrade` and the upstream's
/// `Upgrade`), then tunnels until both sides are done.
async fn switch(ex: &mut Exchange<'_>, mut conn: UpstreamConn) -> Result<Next, ProxyError> {
    let buf = conn.buf.filled();
    let upgrade = ex
        .resp
        .fields
        .headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(b"upgrade"));
    let Some(upgrade) = upgrade else {
        ex.ctx.pool.discard(conn);
        return Err(ProxyError::BadResponse(HeadError::Malformed(
            "101 without Upgrade",
        )));
    };
    let extra = upgrade_fields(upgrade.value.of(buf));
    let framing = ClientFraming {
        close: false,
        http10: false,
        dechunk: false,
    };
    let client = &mut *ex.client;
    client.out.clear();
    write_response_head(
        &mut client.out,
        buf,
        ex.resp,
        ex.ctx.forward.via,
        framing,
        &extra,
    );
    conn.buf.consume(ex.resp.fields.head_len);
    if client.send_out().await.is_err() {
        ex.ctx.pool.discard(conn);
        return Ok(Next::Close);
    }
    Ok(tunnel(ex.ctx, client, conn).await)
}

/// The two hop-by-hop fields an upgrade keeps, as field lines.
fn upgrade_fields(upgrade: &[u8]) -> Vec<u8> {
    let mut fields = b"Connection: upgrade\r\nUpgrade: ".to_vec();
    fields.extend_from_slice(upgrade);
    fields.extend_from_slice(b"\r\n");
    fields
}
