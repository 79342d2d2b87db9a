//! Streaming HTTP/1.1 body framing shared by client and origin: a decoder for
//! Content-Length, chunked and read-until-close bodies that passes decoded
//! bytes to a sink as they arrive (for checksumming or echoing) and holds no
//! heap memory, so it can be reused for every message on a connection.

use crate::checksum::{self, Fnv64};

/// Why a response could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Head(String),
    Framing(&'static str),
    Chunk(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Head(e) => write!(f, "bad response head: {e}"),
            ParseError::Framing(e) => write!(f, "bad framing: {e}"),
            ParseError::Chunk(e) => write!(f, "bad chunked body: {e}"),
        }
    }
}

/// How the body that follows the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size { value: u64, digits: u8 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

/// Streaming body decoder. Reused across responses on a connection; holds no
/// heap memory.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    hash: Option<Fnv64>,
    /// Checksum announced in a chunked trailer (e.g. by `/echo`).
    pub trailer_checksum: Option<u64>,
    trailer: [u8; 64],
    trailer_len: usize,
    /// Decoded body bytes seen so far.
    pub body_bytes: u64,
}

impl BodyDecoder {
    pub fn new(framing: Framing, verify: bool) -> BodyDecoder {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkState::Size {
                value: 0,
                digits: 0,
            }),
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder {
            state,
            hash: verify.then(Fnv64::default),
            trailer_checksum: None,
            trailer: [0; 64],
            trailer_len: 0,
            body_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// True if the body only ends when the peer closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Marks an until-close body as complete (the peer closed).
    pub fn finish_on_close(&mut self) {
        if self.state == State::UntilClose {
            self.state = State::Done;
        }
    }

    pub fn checksum(&self) -> Option<u64> {
        self.hash.map(|h| h.finish())
    }

    fn data<F: FnMut(&[u8])>(&mut self, d: &[u8], sink: &mut F) {
        self.body_bytes += d.len() as u64;
        if let Some(h) = self.hash.as_mut() {
            h.update(d);
        }
        if !d.is_empty() {
            sink(d);
        }
    }

    /// Consumes as much of `input` as belongs to this body; returns the number
    /// of bytes consumed. Check `is_done` afterwards.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, ParseError> {
        self.feed_with(input, &mut |_| {})
    }

    /// Like `feed`, handing each run of decoded body bytes to `sink`.
    pub fn feed_with<F: FnMut(&[u8])>(
        &mut self,
        input: &[u8],
        sink: &mut F,
    ) -> Result<usize, ParseError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::UntilClose => {
                    self.data(&input[i..], sink);
                    i = input.len();
                }
                State::Length(rem) => {
                    let take = rem.min((input.len() - i) as u64) as usize;
                    self.data(&input[i..i + take], sink);
                    i += take;
                    let left = rem - take as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                }
                State::Chunked(cs) => {
                    i += self.feed_chunked(cs, &input[i..], sink)?;
                }
            }
        }
        Ok(i)
    }

    fn feed_chunked<F: FnMut(&[u8])>(
        &mut self,
        cs: ChunkState,
        input: &[u8],
        sink: &mut F,
    ) -> Result<usize, ParseError> {
        use ChunkState::*;
        // Data is copied in bulk; every other state advances one byte.
        if let Data(rem) = cs {
            let take = rem.min(input.len() as u64) as usize;
            self.data(&input[..take], sink);
            let left = rem - take as u64;
            self.state = State::Chunked(if left == 0 { DataCr } else { Data(left) });
            return Ok(take);
        }
        let b = input[0];
        let next = match cs {
            Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(ParseError::Chunk("chunk size too large"));
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Size {
                        value: value * 16 + d,
                        digits: digits + 1,
                    }
                }
                b';' | b' ' | b'\t' if digits > 0 => Ext { value },
                b'\r' if digits > 0 => SizeLf { value },
                _ => return Err(ParseError::Chunk("invalid chunk size")),
            },
            Ext { value } => {
                if b == b'\r' {
                    SizeLf { value }
                } else {
                    Ext { value }
                }
            }
            SizeLf { value } => {
                if b != b'\n' {
                    return Err(ParseError::Chunk("missing LF after chunk size"));
                }
                if value == 0 {
                    TrailerStart
                } else {
                    Data(value)
                }
            }
            Data(_) => unreachable!("handled above"),
            DataCr => {
                if b != b'\r' {
                    return Err(ParseError::Chunk("missing CR after chunk data"));
                }
                DataLf
            }
            DataLf => {
                if b != b'\n' {
                    return Err(ParseError::Chunk("missing LF after chunk data"));
                }
                Size {
                    value: 0,
                    digits: 0,
                }
            }
            TrailerStart => {
                if b == b'\r' {
                    EndLf
                } else {
                    self.trailer_len = 0;
                    self.trailer_byte(b);
                    TrailerLine
                }
            }
            TrailerLine => {
                if b == b'\r' {
                    TrailerLf
                } else {
                    self.trailer_byte(b);
                    TrailerLine
                }
            }
            TrailerLf => {
                if b != b'\n' {
                    return Err(ParseError::Chunk("missing LF after trailer"));
                }
                self.trailer_done();
                TrailerStart
            }
            EndLf => {
                if b != b'\n' {
                    return Err(ParseError::Chunk("missing final LF"));
                }
                self.state = State::Done;
                return Ok(1);
            }
        };
        self.state = State::Chunked(next);
        Ok(1)
    }

    fn trailer_byte(&mut self, b: u8) {
        if self.trailer_len < self.trailer.len() {
            self.trailer[self.trailer_len] = b;
        }
        // Over-long trailer lines are counted but not kept; they can't be ours.
        self.trailer_len = self.trailer_len.saturating_add(1);
    }

    fn trailer_done(&mut self) {
        if self.trailer_len > self.trailer.len() {
            return;
        }
        let line = &self.trailer[..self.trailer_len];
        if let Some(colon) = line.iter().position(|&c| c == b':') {
            if line[..colon]
                .trim_ascii()
                .eq_ignore_ascii_case(checksum::HEADER.as_bytes())
            {
                self.trailer_checksum = checksum::parse_hex(&line[colon + 1..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::fnv64;

    fn decode_all(framing: Framing, body: &[u8], step: usize) -> (BodyDecoder, usize) {
        let mut d = BodyDecoder::new(framing, true);
        let mut used = 0;
        while used < body.len() && !d.is_done() {
            let end = (used + step).min(body.len());
            used += d.feed(&body[used..end]).unwrap();
        }
        (d, used)
    }

    #[test]
    fn length_body_in_pieces() {
        let body = b"0123456789";
        let mut input = body.to_vec();
        input.extend_from_slice(b"NEXT");
        for step in 1..6 {
            let (d, used) = decode_all(Framing::Length(10), &input, step);
            assert!(d.is_done());
            assert_eq!(used, 10);
            assert_eq!(d.checksum(), Some(fnv64(body)));
        }
    }

    #[test]
    fn chunked_body_with_ext_and_trailer() {
        let wire = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 0000000000000abc\r\nOther: 1\r\n\r\nNEXT";
        for step in 1..8 {
            let (d, used) = decode_all(Framing::Chunked, wire, step);
            assert!(d.is_done(), "step {step}");
            assert_eq!(&wire[used..], b"NEXT");
            assert_eq!(d.body_bytes, 11);
            assert_eq!(d.checksum(), Some(fnv64(b"hello world")));
            assert_eq!(d.trailer_checksum, Some(0xabc));
        }
    }

    #[test]
    fn chunked_errors() {
        let mut d = BodyDecoder::new(Framing::Chunked, false);
        assert!(d.feed(b"zz\r\n").is_err());
        let mut d = BodyDecoder::new(Framing::Chunked, false);
        assert!(d.feed(b"2\r\nabX").is_err());
        let mut d = BodyDecoder::new(Framing::Chunked, false);
        assert!(d.feed(b"ffffffffffffffffff\r\n").is_err());
    }

    #[test]
    fn until_close() {
        let mut d = BodyDecoder::new(Framing::UntilClose, true);
        assert_eq!(d.feed(b"abc").unwrap(), 3);
        assert!(!d.is_done());
        d.finish_on_close();
        assert!(d.is_done());
        assert_eq!(d.checksum(), Some(fnv64(b"abc")));
    }
}
