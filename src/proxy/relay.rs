//! Streaming a body from one socket to another through the reading side's
//! buffer, in bounded memory whatever the body size: read into the buffer,
//! let the body tracker say how much of it belongs to the body, write that
//! much, repeat. Bytes past the body's end stay in the buffer for the next
//! message.

use std::{io, time::Duration};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::peer::Peer;
use crate::{
    buffer::IoBuf,
    http::{
        body::BodyState,
        chunked::{ChunkError, ChunkedDecoder},
    },
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

/// Reads once from `src` into `buf`. `Ok(0)` means EOF.
pub async fn read_some<S: Peer>(
    src: &mut S,
    buf: &mut IoBuf,
    timeout: Duration,
) -> Result<usize, RelayError> {
    // glommio arms the timeout with the read itself: no extra timer task.
    src.set_read_timeout(timeout);
    match src.read(buf.spare()).await {
        Ok(n) => {
            buf.commit(n);
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(RelayError::SourceTimeout),
        Err(e) => Err(RelayError::SourceIo(e)),
    }
}

/// Copies the rest of `body` from `src` to `dst`, verbatim (framing included).
/// `payload_seen` counts payload bytes already forwarded, against `limit`.
// Each argument is one side or one limit of the relay; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn relay_body<S: Peer, D: Peer>(
    src: &mut S,
    buf: &mut IoBuf,
    dst: &mut D,
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
        dst.write_all(&buf.filled()[..accepted.bytes])
            .await
            .map_err(RelayError::DestinationIo)?;
        buf.consume(accepted.bytes);
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
pub async fn relay_dechunked<S: Peer, D: Peer>(
    src: &mut S,
    buf: &mut IoBuf,
    dst: &mut D,
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
        if let Some((start, end)) = step.data {
            if let Some(tee) = tee.as_deref_mut() {
                tee.push(&buf.filled()[start..end]);
            }
            dst.write_all(&buf.filled()[start..end])
                .await
                .map_err(RelayError::DestinationIo)?;
        }
        buf.consume(step.consumed);
    }
    Ok(())
}
