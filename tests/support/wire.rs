//! Buffered reading of HTTP/1.1 messages from a blocking `TcpStream`, shared by
//! the test client (responses) and the test origin (requests): heads, lines,
//! Content-Length bodies, chunked bodies (decoded and raw) and close-delimited
//! bodies. Connection resets count as a close, because that is what a peer
//! that closed with unread data looks like.

use std::io::{self, Read};
use std::net::TcpStream;

/// Why a message could not be read completely.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (FIN or RST) before the message was complete.
    Closed,
    /// Nothing arrived within the socket's read timeout.
    TimedOut,
    /// The bytes are not valid HTTP/1.1 framing. (Fields are read through
    /// `Debug` in failure messages.)
    #[allow(dead_code)]
    Malformed(String),
    #[allow(dead_code)]
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadError::TimedOut,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => ReadError::Closed,
            _ => ReadError::Io(error),
        }
    }
}

/// How the end of a message body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    NoBody,
    ContentLength(u64),
    Chunked,
    UntilClose,
}

const MAX_LINE: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// A socket plus the bytes read from it but not consumed yet.
pub struct Wire {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            pending: Vec::new(),
        }
    }

    /// Reads more bytes into `pending`; `Closed` on EOF.
    fn fill(&mut self) -> Result<(), ReadError> {
        let mut buf = [0u8; READ_CHUNK];
        let n = self.stream.read(&mut buf)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.pending.extend_from_slice(&buf[..n]);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Whether unconsumed bytes are buffered (e.g. a pipelined message).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Reads up to and including the first `\r\n\r\n`. `Closed` if the peer
    /// closes first (also when nothing at all was sent).
    pub fn read_head(&mut self, max_len: usize) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(end) = find(&self.pending, b"\r\n\r\n") {
                return Ok(self.take(end + 4));
            }
            if self.pending.len() > max_len {
                return Err(ReadError::Malformed(format!("head over {max_len} bytes")));
            }
            self.fill()?;
        }
    }

    /// Reads one line including its `\r\n`.
    fn read_line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(end) = find(&self.pending, b"\r\n") {
                return Ok(self.take(end + 2));
            }
            if self.pending.len() > MAX_LINE {
                return Err(ReadError::Malformed("line too long".into()));
            }
            self.fill()?;
        }
    }

    /// Moves exactly `n` bytes to `sink`, in pieces.
    pub fn read_exact_into(
        &mut self,
        mut n: u64,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        while n > 0 {
            if self.pending.is_empty() {
                self.fill()?;
            }
            let step = self
                .pending
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            let piece = self.take(step);
            sink(&piece);
            n -= step as u64;
        }
        Ok(())
    }

    /// Reads a body with the given framing. `decoded` gets the payload,
    /// `raw` every body byte as it was on the wire (chunk framing included).
    pub fn read_body(
        &mut self,
        framing: Framing,
        decoded: &mut dyn FnMut(&[u8]),
        raw: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        match framing {
            Framing::NoBody => Ok(()),
            Framing::ContentLength(n) => self.read_exact_into(n, &mut |piece| {
                decoded(piece);
                raw(piece);
            }),
            Framing::Chunked => self.read_chunked(decoded, raw),
            Framing::UntilClose => loop {
                if !self.pending.is_empty() {
                    let piece = std::mem::take(&mut self.pending);
                    decoded(&piece);
                    raw(&piece);
                }
                match self.fill() {
                    Ok(()) => {}
                    Err(ReadError::Closed) => return Ok(()),
                    Err(other) => return Err(other),
                }
            },
        }
    }

    fn read_chunked(
        &mut self,
        decoded: &mut dyn FnMut(&[u8]),
        raw: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        loop {
            let line = self.read_line()?;
            raw(&line);
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                // Trailer section: header lines until an empty line.
                loop {
                    let trailer = self.read_line()?;
                    raw(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(());
                    }
                }
            }
            self.read_exact_into(size, &mut |piece| {
                decoded(piece);
                raw(piece);
            })?;
            let end = self.read_line()?;
            raw(&end);
            if end != b"\r\n" {
                return Err(ReadError::Malformed(
                    "chunk data not followed by CRLF".into(),
                ));
            }
        }
    }

    /// Reads until the peer closes; `Ok` with everything read if it did,
    /// `Err(TimedOut)` if it stayed open.
    pub fn read_until_closed(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut all = Vec::new();
        self.read_body(
            Framing::UntilClose,
            &mut |piece| all.extend_from_slice(piece),
            &mut |_| {},
        )?;
        Ok(all)
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| ReadError::Malformed("chunk size not UTF-8".into()))?;
    let digits = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    let valid =
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ReadError::Malformed(format!(
            "bad chunk size line {text:?}"
        )));
    }
    Ok(u64::from_str_radix(digits, 16).expect("validated hex digits"))
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The comma-separated tokens of a header value, trimmed and lowercased.
pub fn tokens(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

/// Parsed headers as owned (name, value) pairs, in order, name case kept.
pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The first value of header `name` (case-insensitive).
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// One chunk of a chunked body: size line, data, CRLF.
pub fn encode_chunk(data: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
}
