//! Tracks where a message body ends while its bytes stream through, whatever
//! its framing: a byte count, chunked coding, or the connection closing.

use super::{
    chunked::{ChunkError, ChunkedDecoder},
    head::Framing,
};

/// Progress through one body.
#[derive(Debug, Clone)]
pub enum BodyState {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Bytes accepted from one input slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Leading bytes of the input that belong to this body (framing included).
    pub bytes: usize,
    /// Payload bytes among them (framing excluded), for size limits.
    pub payload: u64,
    pub done: bool,
}

impl BodyState {
    pub fn new(framing: Framing) -> BodyState {
        match framing {
            Framing::None | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length { remaining: n },
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// Accepts as much of `input` as belongs to this body. Bytes after the end
    /// (a pipelined next message) are left alone.
    pub fn accept(&mut self, input: &[u8]) -> Result<Accepted, ChunkError> {
        self.accept_with(input, |_| {})
    }

    /// Like [`BodyState::accept`], also handing every run of payload bytes
    /// (framing removed) to `payload_sink` — how a response is copied into the
    /// cache while it streams to the client unchanged.
    pub fn accept_with<F: FnMut(&[u8])>(
        &mut self,
        input: &[u8],
        mut payload_sink: F,
    ) -> Result<Accepted, ChunkError> {
        match self {
            BodyState::Done => Ok(Accepted {
                bytes: 0,
                payload: 0,
                done: true,
            }),
            BodyState::UntilClose => {
                payload_sink(input);
                Ok(Accepted {
                    bytes: input.len(),
                    payload: input.len() as u64,
                    done: false,
                })
            }
            BodyState::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64);
                payload_sink(&input[..take as usize]);
                *remaining -= take;
                let done = *remaining == 0;
                if done {
                    *self = BodyState::Done;
                }
                Ok(Accepted {
                    bytes: take as usize,
                    payload: take,
                    done,
                })
            }
            BodyState::Chunked(decoder) => {
                let mut at = 0;
                let mut payload = 0;
                while at < input.len() {
                    let step = decoder.advance(&input[at..])?;
                    if let Some((a, b)) = step.data {
                        payload += (b - a) as u64;
                        payload_sink(&input[at + a..at + b]);
                    }
                    at += step.consumed;
                    if step.done {
                        *self = BodyState::Done;
                        return Ok(Accepted {
                            bytes: at,
                            payload,
                            done: true,
                        });
                    }
                }
                Ok(Accepted {
                    bytes: at,
                    payload,
                    done: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_stops_at_end() {
        let mut body = BodyState::new(Framing::Length(5));
        let a = body.accept(b"hel").unwrap();
        assert_eq!(
            a,
            Accepted {
                bytes: 3,
                payload: 3,
                done: false
            }
        );
        let a = body.accept(b"loGET /").unwrap();
        assert_eq!(
            a,
            Accepted {
                bytes: 2,
                payload: 2,
                done: true
            }
        );
        assert!(body.is_done());
    }

    #[test]
    fn payload_sink_sees_payload_without_framing() {
        let mut body = BodyState::new(Framing::Chunked);
        let mut seen = Vec::new();
        body.accept_with(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", |p| {
            seen.extend_from_slice(p)
        })
        .unwrap();
        assert_eq!(seen, b"abcde");
        let mut body = BodyState::new(Framing::Length(3));
        seen.clear();
        body.accept_with(b"xyzNEXT", |p| seen.extend_from_slice(p))
            .unwrap();
        assert_eq!(seen, b"xyz");
    }

    #[test]
    fn chunked_counts_payload() {
        let mut body = BodyState::new(Framing::Chunked);
        let a = body.accept(b"3\r\nabc\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(
            a,
            Accepted {
                bytes: 13,
                payload: 3,
                done: true
            }
        );
    }
}
