//! Per-connection client state: the socket, reusable read/write buffers, the
//! requests in flight and the response being framed. The I/O readiness loop
//! lives in `worker`; this file turns bytes that arrived into completed
//! responses (or a failure kind) without allocating.

use super::response::{parse_head, BodyDecoder, Framing, Head, ParseError};
use crate::report::ErrorKind;
use crate::util::Rng;
use socket2::Socket;
use std::io;
use std::time::Instant;

/// Per-connection read buffer; larger bodies stream through it.
pub const READ_BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting in the schedule (open-loop due time, or backoff).
    Sleeping,
    /// Non-blocking connect in progress.
    Connecting,
    /// Requests written (or being written) and responses awaited.
    Active,
    /// Done for this run.
    Finished,
}

/// A response that was read completely.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub status: u16,
    pub close: bool,
    pub wire_bytes: u64,
}

/// A failed exchange; `detail` is kept for the first few (e.g. checksum mismatches).
#[derive(Debug)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: Option<String>,
}

impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        Failure { kind, detail: None }
    }
}

fn bad(e: ParseError) -> Failure {
    Failure {
        kind: ErrorKind::BadResponse,
        detail: Some(e.to_string()),
    }
}

pub fn classify(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
        _ => ErrorKind::Other,
    }
}

pub struct Conn {
    pub target: usize,
    pub phase: Phase,
    pub sock: Option<Socket>,
    /// EPOLLOUT is currently requested (a write or connect is pending).
    pub want_write: bool,
    pub rng: Rng,
    pub rbuf: Box<[u8]>,
    pub rstart: usize,
    pub rend: usize,
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    /// Requests of the current batch whose responses are still due.
    pub inflight: u64,
    /// Latency base of the current batch: send time (closed loop), intended
    /// time (open loop), or connect start (new connection per request).
    pub sent: Instant,
    /// Timeout for the current connect / response.
    pub deadline: Option<Instant>,
    /// Open loop: when the next request is due.
    pub due: Instant,
    head: Option<Head>,
    dec: BodyDecoder,
    wire: u64,
}

impl Conn {
    pub fn new(target: usize, seed: u64, now: Instant) -> Conn {
        Conn {
            target,
            phase: Phase::Sleeping,
            sock: None,
            want_write: false,
            rng: Rng::new(seed),
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(4096),
            wpos: 0,
            inflight: 0,
            sent: now,
            deadline: None,
            due: now,
            head: None,
            dec: BodyDecoder::new(Framing::Empty, false),
            wire: 0,
        }
    }

    /// Forgets the socket and any partial exchange.
    pub fn reset(&mut self) {
        self.sock = None;
        self.want_write = false;
        self.rstart = 0;
        self.rend = 0;
        self.wpos = 0;
        self.wbuf.clear();
        self.inflight = 0;
        self.deadline = None;
        self.head = None;
    }

    /// Space to read into, compacting the buffer first if needed.
    pub fn read_space(&mut self) -> &mut [u8] {
        crate::util::make_read_room(&mut self.rbuf, &mut self.rstart, &mut self.rend);
        &mut self.rbuf[self.rend..]
    }

    /// Tries to complete the response at the front of the buffer.
    /// `Ok(None)` means more bytes are needed.
    pub fn next_response(
        &mut self,
        verify: bool,
        head_request: bool,
        eof: bool,
    ) -> Result<Option<Done>, Failure> {
        if self.head.is_none() {
            if self.rend == self.rstart {
                return if eof {
                    Err(ErrorKind::Reset.into())
                } else {
                    Ok(None)
                };
            }
            match parse_head(&self.rbuf[self.rstart..self.rend], head_request).map_err(bad)? {
                Some(h) => {
                    self.rstart += h.len;
                    self.wire = h.len as u64;
                    self.dec = BodyDecoder::new(h.framing, verify);
                    self.head = Some(h);
                }
                None if self.rstart == 0 && self.rend == self.rbuf.len() => {
                    return Err(bad(ParseError::Head("response head too large".into())));
                }
                None if eof => return Err(ErrorKind::Reset.into()),
                None => return Ok(None),
            }
        }
        if self.rend > self.rstart && !self.dec.is_done() {
            let n = self
                .dec
                .feed(&self.rbuf[self.rstart..self.rend])
                .map_err(bad)?;
            self.rstart += n;
            self.wire += n as u64;
        }
        if !self.dec.is_done() {
            if !eof {
                return Ok(None);
            }
            if !self.dec.until_close() {
                return Err(ErrorKind::Reset.into());
            }
            self.dec.finish_on_close();
        }
        // Invariant: head was set above or on an earlier call.
        let Some(head) = self.head.take() else {
            return Ok(None);
        };
        // HEAD, 204 and 304 responses describe a body they do not carry.
        let has_body = !head_request && head.status != 204 && head.status != 304;
        if verify && has_body {
            if let (Some(want), Some(got)) = (
                head.checksum.or(self.dec.trailer_checksum),
                self.dec.checksum(),
            ) {
                if want != got {
                    return Err(Failure {
                        kind: ErrorKind::Checksum,
                        detail: Some(format!(
                            "checksum mismatch: header {want:016x}, body {got:016x} ({} bytes, status {})",
                            self.dec.body_bytes, head.status
                        )),
                    });
                }
            }
        }
        Ok(Some(Done {
            status: head.status,
            close: head.close,
            wire_bytes: self.wire,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{fnv64, to_hex};

    fn load(c: &mut Conn, bytes: &[u8]) {
        let space = c.read_space();
        space[..bytes.len()].copy_from_slice(bytes);
        c.rend += bytes.len();
    }

    #[test]
    fn pipelined_responses_in_one_buffer() {
        let mut c = Conn::new(0, 1, Instant::now());
        load(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200",
        );
        let a = c.next_response(false, false, false).unwrap().unwrap();
        assert_eq!((a.status, a.wire_bytes), (200, 40));
        let b = c.next_response(false, false, false).unwrap().unwrap();
        assert_eq!(b.status, 404);
        assert!(c.next_response(false, false, false).unwrap().is_none());
        assert_eq!(
            c.next_response(false, false, true).unwrap_err().kind,
            ErrorKind::Reset
        );
    }

    #[test]
    fn verify_detects_mismatch() {
        let mut c = Conn::new(0, 1, Instant::now());
        let good = String::from_utf8(to_hex(fnv64(b"abc")).to_vec()).unwrap();
        let msg = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Checksum: {good}\r\n\r\nabcHTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Checksum: {good}\r\n\r\nabd"
        );
        load(&mut c, msg.as_bytes());
        assert!(c.next_response(true, false, false).unwrap().is_some());
        let e = c.next_response(true, false, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Checksum);
    }

    #[test]
    fn until_close_body_ends_at_eof() {
        let mut c = Conn::new(0, 1, Instant::now());
        load(&mut c, b"HTTP/1.1 200 OK\r\n\r\nsome body");
        assert!(c.next_response(false, false, false).unwrap().is_none());
        let d = c.next_response(false, false, true).unwrap().unwrap();
        assert!(d.close);
    }
}
