//! The response's way back (the end of phase 4 and phase 5): read the
//! upstream's head (forwarding interim 1xx), rewrite it for the client, and
//! stream the body. Sockets are borrowed shared (`&Socket`): compio lets the
//! two directions of one socket run at once, which the full-duplex path
//! needs. Touches only the two sockets and buffers it is lent.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use super::{
    error::{upstream_read_error, ProxyError},
    relay::{read_at_most, relay_body, relay_dechunked, RelayError, Tee},
};
use crate::{
    buffer::IoBuf,
    http::{
        body::BodyState,
        head::{parse_response, Framing, HeadError, Limits, Method, ResponseHead},
        rewrite::{write_response_head, ClientFraming},
    },
    net::{Socket, Splicer},
};

/// How the response head is read. It is due `first_byte` after the request
/// was fully sent. While the request body is still streaming (`sent_at` unset) the
/// upstream may legitimately stay silent: the read waits without a deadline,
/// the request side's own idle timeout guards progress, and the caller puts
/// the head's deadline on the rest of the wait once the request is sent.
pub struct HeadRead<'a> {
    pub first_byte: Duration,
    pub sent_at: &'a Cell<Option<Instant>>,
    /// Most bytes one receive takes ([`ConnState::head_read_at_most`]):
    /// with splicing on, a large body must stay in the socket to be spliced.
    ///
    /// [`ConnState::head_read_at_most`]: crate::upstream::pool::ConnState::head_read_at_most
    pub read_at_most: usize,
}

/// A wait long enough to stand for "no deadline" (a timer must have one).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where interim (1xx) responses go: the client, as they arrive (RFC 9110
/// §15.2: a proxy forwards them). `None` where there is no client (a
/// background refresh) or the client speaks HTTP/1.0, which must not get
/// any (§15.2).
#[derive(Clone, Copy)]
pub struct Interim<'a> {
    pub client: &'a Socket,
    pub via: bool,
    pub write_timeout: Duration,
}

impl<'a> Interim<'a> {
    pub fn to(client: &'a Socket, side: ClientSide) -> Option<Interim<'a>> {
        (!side.http10).then_some(Interim {
            client,
            via: side.via,
            write_timeout: side.body_idle,
        })
    }

    /// Sends the 1xx head at the front of `buf` (parsed into `resp`) to the
    /// client, hop-by-hop fields dropped.
    async fn forward(&self, buf: &[u8], resp: &ResponseHead) -> Result<(), ProxyError> {
        let mut out = Vec::with_capacity(resp.fields.head_len + 32);
        let framing = ClientFraming {
            close: false,
            http10: false,
            dechunk: false,
        };
        write_response_head(&mut out, buf, resp, self.via, framing, b"");
        self.client
            .send_vec(&mut out, self.write_timeout)
            .await
            .map_err(|e| ProxyError::ClientGone(e.into()))
    }
}

/// Reads the final response head into `resp`. Interim 1xx responses (103
/// Early Hints, a 100 Continue the upstream sends itself) go to `interim`
/// as they arrive, else are dropped; they are never part of what is stored.
pub async fn read_response_head(
    upstream: &Socket,
    buf: &mut IoBuf,
    limits: &Limits,
    method: Method,
    resp: &mut ResponseHead,
    deadline: HeadRead<'_>,
    interim: Option<Interim<'_>>,
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
                    if let Some(interim) = &interim {
                        interim.forward(buf.filled(), resp).await?;
                    }
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
        match read_at_most(upstream, buf, deadline.read_at_most, wait).await {
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

/// Where a response goes: the client's socket, the vector its head is
/// written into, how the client wants it, and fields to add (`Cache-Status`).
/// One value because the full-duplex path lends these out while the request
/// body still borrows the client's buffer.
pub struct ToClient<'a> {
    pub stream: &'a Socket,
    pub out: &'a mut Vec<u8>,
    pub side: ClientSide,
    pub extra_fields: &'a [u8],
    /// The shard's splicing, if on: large bodies skip the buffer.
    pub splicer: Option<&'a Splicer>,
}

/// Sends the response whose head is in `resp` (parsed from the front of
/// `buf`) to the client. `Err`: nothing reached the client, which can still be
/// answered with an error; once the head is out, failures end in
/// `Ok(ResponseEnd { complete: false, .. })`. `tee`, if any, gets a copy of
/// the payload as it passes.
pub async fn send_response(
    mut to: ToClient<'_>,
    upstream: &Socket,
    buf: &mut IoBuf,
    resp: &ResponseHead,
    mut tee: Option<&mut Tee>,
) -> Result<ResponseEnd, ProxyError> {
    let framing = resp.fields.framing;
    let upstream_reusable = resp.fields.wants_keep_alive() && framing != Framing::UntilClose;
    let side = to.side;
    let dechunk = side.http10 && framing == Framing::Chunked;
    let close_client =
        !side.keep_alive || side.draining || dechunk || framing == Framing::UntilClose;
    let client_framing = ClientFraming {
        close: close_client,
        http10: side.http10,
        dechunk,
    };
    let mut body = BodyState::new(framing);
    let body_ready = write_head(
        &mut to,
        buf,
        resp,
        client_framing,
        &mut body,
        tee.as_deref_mut(),
    )?;
    let splice = match (&body, to.splicer, &tee) {
        (BodyState::Length { remaining }, Some(splicer), None)
            if splicer.wants(upstream, *remaining) =>
        {
            Some((splicer, *remaining))
        }
        _ => None,
    };
    let body_ready = if splice.is_some() {
        body_ready
    } else {
        take_arrived_rest(upstream, buf, &mut body, body_ready, tee.as_deref_mut())?
    };
    let client = to.stream;
    client
        .send_vec_then_buffered(to.out, buf, body_ready, side.body_idle)
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;

    let relayed = if let Some((splicer, remaining)) = splice {
        splicer
            .relay(upstream, client, remaining, side.body_idle)
            .await
            .map_err(RelayError::from)
    } else if dechunk {
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

/// The most arrived body bytes [`take_arrived_rest`] moves to make room.
const SLIDE_AT_MOST: usize = 4096;

/// When the rest of a Content-Length body fits in `buf` behind the `ready`
/// bytes in hand, takes what of it has already arrived (one non-blocking
/// receive), so the head and the whole body leave in one write. An origin
/// typically writes the head and then the body: a 64 KiB response arrived
/// in two pieces and went out in two writes with an awaited receive between.
/// Returns the body bytes now ready at the front of `buf`.
fn take_arrived_rest(
    upstream: &Socket,
    buf: &mut IoBuf,
    body: &mut BodyState,
    ready: usize,
    mut tee: Option<&mut Tee>,
) -> Result<usize, ProxyError> {
    let BodyState::Length { remaining } = *body else {
        return Ok(ready);
    };
    // Everything in hand is this body's (it is not complete yet). Sliding it
    // to the front copies all of it (a 64 KiB body cost 2 µs of memmove a
    // request), so only a few bytes are moved; upstream buffers have room
    // for a head beyond `http.buffer_size`, so a body that fits the buffer
    // rarely needs the slide.
    if remaining > buf.tail_room() as u64 {
        if remaining > (buf.capacity() - buf.len()) as u64 || buf.len() > SLIDE_AT_MOST {
            return Ok(ready);
        }
        buf.compact();
    }
    let arrived = upstream.recv_arrived(buf);
    if arrived == 0 {
        return Ok(ready);
    }
    let accepted = body
        .accept_with(&buf.filled()[ready..], |payload| {
            if let Some(tee) = tee.as_deref_mut() {
                tee.push(payload);
            }
        })
        .map_err(ProxyError::BadResponseBody)?;
    Ok(ready + accepted.bytes)
}

/// Writes the client's response head into `to.out` and consumes the
/// upstream's head from `buf`. Returns how many bytes at the front of `buf`
/// are body that already arrived behind the head (none when it is to be
/// de-chunked): they go out with the head in one vectored write, straight
/// from `buf` (copying a 64 KiB body into the head's vector cost more than
/// the write).
fn write_head(
    to: &mut ToClient<'_>,
    buf: &mut IoBuf,
    resp: &ResponseHead,
    framing: ClientFraming,
    body: &mut BodyState,
    mut tee: Option<&mut Tee>,
) -> Result<usize, ProxyError> {
    let out = &mut *to.out;
    out.clear();
    write_response_head(
        out,
        buf.filled(),
        resp,
        to.side.via,
        framing,
        to.extra_fields,
    );
    buf.consume(resp.fields.head_len);
    if !framing.dechunk {
        let accepted = body
            .accept_with(buf.filled(), |payload| {
                if let Some(tee) = tee.as_deref_mut() {
                    tee.push(payload);
                }
            })
            .map_err(ProxyError::BadResponseBody)?;
        return Ok(accepted.bytes);
    }
    Ok(0)
}
