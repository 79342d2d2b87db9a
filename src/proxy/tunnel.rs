//! Tunnels: after `CONNECT host:port` is admitted (and, for Upgrade, after
//! a 101), the connection stops being HTTP and bytes flow both ways as they
//! are until both sides are done.
//!
//! Each direction is one loop (receive into a leased buffer, send it all,
//! repeat), so a tunnel holds two streaming buffers whatever the transfer
//! size: the client's (already leased for the request) and one upstream
//! buffer. A side's EOF becomes a FIN to the other (half-close, RFC 9110
//! §9.3.6) and the other direction carries on until its own EOF. The tunnel
//! closes after `tunnel_idle` with no byte in either direction: a
//! direction waiting in silence is not idle while the other one moves.
//!
//! `duplex.rs` does not fit here: it relays HTTP-framed bodies (with
//! `BodyState`, limits and trailers) and ends with the response. The two
//! loops are raced on this task's stack like its two directions, though.
//! No splice: compio 0.19 offers none, and the copy through a 64 KiB buffer
//! costs a memcpy per direction against a syscall per chunk.

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use futures_lite::future::or;

use super::{
    client::Client,
    error::ProxyError,
    exchange::Next,
    forward::{acquire, admitted_addresses, Destination, ForwardShard},
};
use crate::{
    buffer::IoBuf,
    http::head::RequestHead,
    net::{IoError, Socket},
    shard::context::ShardContext,
};

/// Sent once the destination is connected; the tunnel starts after it.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Serves `CONNECT host:port`: connects, answers 200, then relays until
/// both directions end. The client connection always closes after.
pub(super) async fn connect(
    ctx: &Rc<ShardContext>,
    fwd: &ForwardShard,
    client: &mut Client,
    req: &RequestHead,
    destination: &Destination,
) -> Result<Next, ProxyError> {
    let addrs = admitted_addresses(ctx, fwd, destination).await?;
    // A tunnel never goes back to the pool: a fresh connection each.
    let (mut conn, _) = acquire(ctx, &addrs, false).await?;
    client.buf.consume(req.fields.head_len);
    client
        .stream
        .send_static(ESTABLISHED, client.write_timeout)
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;
    let idle = ctx.config.forward.tunnel_idle;
    // Bytes the client sent right behind the head (a TLS hello, say) are the tunnel's.
    relay(
        &client.stream,
        &mut client.buf,
        &conn.stream,
        &mut conn.buf,
        idle,
    )
    .await;
    ctx.pool.discard(conn);
    Ok(Next::Close)
}

/// Why one direction of a tunnel stopped early.
#[derive(Debug)]
enum TunnelEnd {
    Idle,
    Failed,
}

/// Copies `a` → `b` and `b` → `a` until both have ended (each EOF passed on
/// as a FIN), or one fails, or neither moves for `idle`. `a_buf` / `b_buf`
/// hold what each side sent that is still to be passed on.
pub(super) async fn relay(
    a: &Socket,
    a_buf: &mut IoBuf,
    b: &Socket,
    b_buf: &mut IoBuf,
    idle: Duration,
) {
    let activity = Cell::new(Instant::now());
    let a_to_b = std::pin::pin!(pump(a, b, a_buf, idle, &activity));
    let b_to_a = std::pin::pin!(pump(b, a, b_buf, idle, &activity));
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
/// (then a FIN to `to`). `activity` is shared by both directions.
async fn pump(
    from: &Socket,
    to: &Socket,
    buf: &mut IoBuf,
    idle: Duration,
    activity: &Cell<Instant>,
) -> Result<(), TunnelEnd> {
    loop {
        if !buf.is_empty() {
            let len = buf.len();
            to.send_buffered(buf, len, idle)
                .await
                .map_err(|_| TunnelEnd::Failed)?;
            activity.set(Instant::now());
        }
        match from.recv(buf, idle).await {
            Ok(0) => {
                to.shutdown_write().await;
                return Ok(());
            }
            Ok(_) => activity.set(Instant::now()),
            // Quiet this way; the tunnel is idle only if the other way is too.
            Err(IoError::TimedOut) if activity.get().elapsed() < idle => {}
            Err(IoError::TimedOut) => return Err(TunnelEnd::Idle),
            Err(IoError::Io(_)) => return Err(TunnelEnd::Failed),
        }
    }
}
