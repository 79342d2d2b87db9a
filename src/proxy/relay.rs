//! Streaming a body from one socket to another through the reading side's
//! buffer, in bounded memory whatever the body size: read into the buffer,
//! let the body tracker say how much of it belongs to the body, write that
//! much, repeat. Bytes past the body's end stay in the buffer for the next
//! message. A large Content-Length body may instead be spliced
//! ([`splice_rest`]) once the bytes already in the buffer are sent.

use std::{io, time::Duration};

use crate::{
    buffer::IoBuf,
    http::{
        body::BodyState,
        chunked::{ChunkError, ChunkedDecoder},
    },
    net::{IoError, Socket, SpliceError, Splicer},
};

/// Why a relay stopped early, by side, so callers can blame the right peer.
#[derive(Debug)]
pub enum RelayError {
    /// The sending side closed before the body ended.
    SourceClosed,
    SourceTimeout,
    SourceIo(io::Error),
    /// The body's framing was invalid.
    Malformed(ChunkError),
    /// The body grew past the configured limit.
    TooLarge,
    DestinationIo(io::Error),
}

impl From<SpliceError> for RelayError {
    fn from(e: SpliceError) -> RelayError {
        match e {
            SpliceError::SourceClosed => RelayError::SourceClosed,
            SpliceError::SourceTimeout => RelayError::SourceTimeout,
            SpliceError::Source(e) => RelayError::SourceIo(e),
            SpliceError::Destination(e) => RelayError::DestinationIo(e),
        }
    }
}

/// Reads once from `src` into `buf`. `Ok(0)` means EOF.
pub async fn read_some(
    src: &Socket,
    buf: &mut IoBuf,
    timeout: Duration,
) -> Result<usize, RelayError> {
    read_at_most(src, buf, usize::MAX, timeout).await
}

/// [`read_some`], taking at most `at_most` bytes.
pub async fn read_at_most(
    src: &Socket,
    buf: &mut IoBuf,
    at_most: usize,
    timeout: Duration,
) -> Result<usize, RelayError> {
    src.recv_at_most(buf, at_most, timeout)
        .await
        .map_err(|e| match e {
            IoError::TimedOut => RelayError::SourceTimeout,
            IoError::Io(e) => RelayError::SourceIo(e),
        })
}

/// Writes the first `len` bytes of `buf` to `dst` and consumes them.
async fn write_some(
    dst: &Socket,
    buf: &mut IoBuf,
    len: usize,
    timeout: Duration,
) -> Result<(), RelayError> {
    dst.send_buffered(buf, len, timeout)
        .await
        .map_err(|e| RelayError::DestinationIo(e.into()))
}

/// When `body` is a Content-Length body whose rest (past the bytes already
/// in `buf`) is over `splicer`'s threshold, and nothing else reads `src`,
/// sends those bytes and then splices the rest from `src` to `dst` through
/// a pipe. `Ok(false)`: not spliced, nothing done (relay it with
/// [`relay_body`]). Reads exactly the body, so a pipelined next request
/// stays in `src`.
pub async fn splice_rest(
    src: &Socket,
    buf: &mut IoBuf,
    dst: &Socket,
    body: &mut BodyState,
    splicer: Option<&Splicer>,
    idle: Duration,
) -> Result<bool, RelayError> {
    let (Some(splicer), BodyState::Length { remaining }) = (splicer, &*body) else {
        return Ok(false);
    };
    let in_hand = (buf.len() as u64).min(*remaining);
    let rest = *remaining - in_hand;
    if !splicer.wants(src, rest) {
        return Ok(false);
    }
    if in_hand > 0 {
        let accepted = body.accept(buf.filled()).map_err(RelayError::Malformed)?;
        write_some(dst, buf, accepted.bytes, idle).await?;
    }
    splicer.relay(src, dst, rest, idle).await?;
    *body = BodyState::Done;
    Ok(true)
}

/// Copies the rest of `body` from `src` to `dst`, verbatim (framing included).
/// `payload_seen` counts payload bytes already forwarded, against `limit`.
// Each argument is one side or one limit of the relay; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn relay_body(
    src: &Socket,
    buf: &mut IoBuf,
    dst: &Socket,
    body: &mut BodyState,
    mut payload_seen: u64,
    limit: Option<u64>,
    idle: Duration,
    mut tee: Option<&mut Tee>,
) -> Result<(), RelayError> {
    while !body.is_done() {
        if buf.is_empty() {
            let n = read_some(src, buf, idle).await?;
            if n == 0 {
                return match body {
                    BodyState::UntilClose => Ok(()),
                    _ => Err(RelayError::SourceClosed),
                };
            }
        }
        let accepted = body
            .accept_with(buf.filled(), |payload| {
                if let Some(tee) = tee.as_deref_mut() {
                    tee.push(payload);
                }
            })
            .map_err(RelayError::Malformed)?;
        payload_seen += accepted.payload;
        if limit.is_some_and(|max| payload_seen > max) {
            return Err(RelayError::TooLarge);
        }
        write_some(dst, buf, accepted.bytes, idle).await?;
    }
    Ok(())
}

/// A copy of a body's payload taken while it streams, for the cache; gives up
/// (and frees what it held) once the payload outgrows `limit`.
pub struct Tee {
    payload: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Tee {
    pub fn new(limit: usize) -> Tee {
        Tee {
            payload: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.payload.len() + data.len() > self.limit {
            self.overflowed = true;
            self.payload = Vec::new();
        } else {
            self.payload.extend_from_slice(data);
        }
    }

    /// The whole payload, unless it overflowed.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.overflowed).then_some(self.payload)
    }
}

/// Copies a chunked body from `src` to `dst` as plain payload bytes, for
/// clients that cannot read chunked coding (HTTP/1.0); the connection is
/// closed after, which is how such a client learns the body ended.
pub async fn relay_dechunked(
    src: &Socket,
    buf: &mut IoBuf,
    dst: &Socket,
    idle: Duration,
    mut tee: Option<&mut Tee>,
) -> Result<(), RelayError> {
    let mut decoder = ChunkedDecoder::default();
    while !decoder.is_done() {
        if buf.is_empty() && read_some(src, buf, idle).await? == 0 {
            return Err(RelayError::SourceClosed);
        }
        let step = decoder
            .advance(buf.filled())
            .map_err(RelayError::Malformed)?;
        match step.data {
            Some((start, end)) => {
                if let Some(tee) = tee.as_deref_mut() {
                    tee.push(&buf.filled()[start..end]);
                }
                // Chunk framing before the data is skipped, the data sent, the
                // framing after it skipped.
                buf.consume(start);
                write_some(dst, buf, end - start, idle).await?;
                buf.consume(step.consumed - end);
            }
            None => buf.consume(step.consumed),
        }
    }
    Ok(())
}
