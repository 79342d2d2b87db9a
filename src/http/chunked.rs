//! A strict, incremental decoder for the chunked transfer coding (RFC 9112 §7.1).
//!
//! The proxy forwards chunked bodies verbatim (no re-framing, no copy) after
//! this decoder has accepted every byte, so the upstream sees exactly the
//! framing the proxy understood. It also reports where the payload data lies,
//! for the rare client (HTTP/1.0) that needs the body de-chunked.

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    BadSize,
    #[error("chunk size too large")]
    SizeOverflow,
    #[error("invalid chunk extension")]
    BadExtension,
    #[error("missing CRLF after chunk")]
    MissingCrlf,
    #[error("invalid trailer field")]
    BadTrailer,
}

/// Longest chunk-size line (digits plus extensions) and trailer section we accept;
/// without a bound a peer could stream framing forever without sending data.
const MAX_LINE: u32 = 4096;
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        digits: u8,
        value: u64,
    },
    /// Whitespace after the size; only an extension may follow.
    SizeWhitespace,
    Extension,
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// One call's outcome: `consumed` bytes of the input belong to the body;
/// `data` is the range of payload bytes among them (at most one per call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Option<(usize, usize)>,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of the current size line or of the trailer section so far.
    line_bytes: u32,
    /// The chunk size, parked while its extensions are read.
    pending: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            line_bytes: 0,
            pending: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over `input`, stopping after the first run of payload data, at
    /// the end of the body, or at the end of the input.
    pub fn advance(&mut self, input: &[u8]) -> Result<Step, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            if let State::Data { remaining } = self.state {
                let take = remaining.min((input.len() - pos) as u64) as usize;
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: left }
                };
                return Ok(Step {
                    consumed: pos + take,
                    data: Some((pos, pos + take)),
                    done: false,
                });
            }
            let byte = input[pos];
            pos += 1;
            self.state = self.next(byte)?;
            if self.state == State::Done {
                return Ok(Step {
                    consumed: pos,
                    data: None,
                    done: true,
                });
            }
        }
        Ok(Step {
            consumed: pos,
            data: None,
            done: self.state == State::Done,
        })
    }

    /// The framing state machine, one byte at a time (payload data is skipped in bulk by `advance`).
    fn next(&mut self, byte: u8) -> Result<State, ChunkError> {
        use State::*;
        Ok(match self.state {
            Size { digits, value } => match (byte as char).to_digit(16) {
                Some(d) => {
                    // 16 hex digits fill a u64; more would overflow.
                    if digits >= 16 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    Size {
                        digits: digits + 1,
                        value: value << 4 | u64::from(d),
                    }
                }
                None if digits == 0 => return Err(ChunkError::BadSize),
                None => {
                    self.line_bytes = digits.into();
                    match byte {
                        b'\r' => SizeLf { value },
                        b';' => self.extension(value),
                        b' ' | b'\t' => self.whitespace(value),
                        _ => return Err(ChunkError::BadSize),
                    }
                }
            },
            SizeWhitespace => match byte {
                b' ' | b'\t' => self.bump(SizeWhitespace)?,
                b';' => self.bump(Extension)?,
                _ => return Err(ChunkError::BadExtension),
            },
            Extension => match byte {
                b'\r' => SizeLf {
                    value: self.pending_size(),
                },
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.bump(Extension)?,
                _ => return Err(ChunkError::BadExtension),
            },
            SizeLf { value } => match byte {
                b'\n' if value == 0 => {
                    self.line_bytes = 0;
                    TrailerLineStart
                }
                b'\n' => Data { remaining: value },
                _ => return Err(ChunkError::MissingCrlf),
            },
            Data { .. } => unreachable!("data is consumed in bulk by advance()"),
            DataCr => match byte {
                b'\r' => DataLf,
                _ => return Err(ChunkError::MissingCrlf),
            },
            DataLf => match byte {
                b'\n' => Size {
                    digits: 0,
                    value: 0,
                },
                _ => return Err(ChunkError::MissingCrlf),
            },
            TrailerLineStart => match byte {
                b'\r' => FinalLf,
                b if super::head::is_token(b) => self.trailer(TrailerName)?,
                _ => return Err(ChunkError::BadTrailer),
            },
            TrailerName => match byte {
                b':' => self.trailer(TrailerValue)?,
                b if super::head::is_token(b) => self.trailer(TrailerName)?,
                _ => return Err(ChunkError::BadTrailer),
            },
            TrailerValue => match byte {
                b'\r' => TrailerLf,
                b'\t' | b' '..=b'~' | 0x80..=0xff => self.trailer(TrailerValue)?,
                _ => return Err(ChunkError::BadTrailer),
            },
            TrailerLf => match byte {
                b'\n' => TrailerLineStart,
                _ => return Err(ChunkError::BadTrailer),
            },
            FinalLf => match byte {
                b'\n' => Done,
                _ => return Err(ChunkError::MissingCrlf),
            },
            Done => Done,
        })
    }

    fn extension(&mut self, value: u64) -> State {
        self.pending = value;
        State::Extension
    }

    fn whitespace(&mut self, value: u64) -> State {
        self.pending = value;
        State::SizeWhitespace
    }

    fn pending_size(&self) -> u64 {
        self.pending
    }

    fn bump(&mut self, state: State) -> Result<State, ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_LINE {
            return Err(ChunkError::BadExtension);
        }
        Ok(state)
    }

    fn trailer(&mut self, state: State) -> Result<State, ChunkError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_TRAILERS {
            return Err(ChunkError::BadTrailer);
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the payload and whether it ended.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut payload = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + step).min(input.len());
            let piece = &input[offset..end];
            let mut at = 0;
            while at < piece.len() {
                let s = decoder.advance(&piece[at..])?;
                if let Some((a, b)) = s.data {
                    payload.extend_from_slice(&piece[at + a..at + b]);
                }
                at += s.consumed;
                if s.done {
                    return Ok((payload, offset + at, true));
                }
            }
            offset = end;
        }
        Ok((payload, offset, false))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (payload, used, done) = decode(body, step).unwrap();
            assert!(done);
            assert_eq!(payload, b"hello world");
            assert_eq!(&body[used..], b"NEXT");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"-1\r\n",
            b"0x5\r\nhello\r\n",
            b"ffffffffffffffffff\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"\r\n",
            b"0\r\nBad Trailer: x\r\n\r\n",
            b"5 x\r\n",
        ] {
            assert!(
                decode(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn incomplete_is_not_done() {
        let (_, _, done) = decode(b"5\r\nhel", 64).unwrap();
        assert!(!done);
    }
}
