//! One origin connection: parse pipelined request heads with httparse, consume
//! (or echo) request bodies, and write responses from the static content.
//! Responses to pipelined requests are batched into one write; every buffer
//! is allocated once per connection and reused (compio's I/O takes buffers by
//! value: they are moved into each operation and put back when it completes).

use super::content::{content, http_date, parse_http_date, unix_now};
use super::idle::Activity;
use super::routes::{plan, Action, Plan};
use super::ShardCtx;
use crate::body::{BodyDecoder, Framing};
use crate::checksum::{fnv64, to_hex};
use crate::util::{push_decimal, push_hex};
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWrite};
use compio::net::TcpStream;
use compio::BufResult;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

const READ_BUF: usize = 32 * 1024;
/// Pending responses are flushed once this much is queued.
const FLUSH_AT: usize = 64 * 1024;
/// Bodies up to this size are copied next to their head (one write);
/// larger ones are written straight from the static buffer.
const COPY_MAX: u64 = 128 * 1024;
/// Chunk size for chunked responses.
const CHUNK: usize = 16 * 1024;
/// An idle keep-alive connection is closed after this; it also bounds each
/// read and each write (a peer that stops reading). Enforced by `idle`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_HEADERS: usize = 64;

/// What the connection loop needs from a parsed request head.
struct Req {
    head_len: usize,
    head_method: bool,
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
    plan: Result<Plan, &'static str>,
    /// For `Action::Bytes`: the conditional headers say the client's copy is current.
    not_modified: bool,
}

enum HeadError {
    Bad,
    TooLarge,
}

pub struct OriginConn {
    stream: TcpStream,
    ctx: Rc<ShardCtx>,
    /// Declared after `stream`, so it is dropped after the socket is closed.
    activity: Rc<Activity>,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    out: Vec<u8>,
}

impl OriginConn {
    pub fn new(stream: TcpStream, ctx: Rc<ShardCtx>) -> OriginConn {
        let _ = stream.set_nodelay(true);
        let activity = ctx.idle.watch(stream.as_raw_fd());
        OriginConn {
            stream,
            ctx,
            activity,
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            out: Vec::with_capacity(FLUSH_AT + 1024),
        }
    }

    /// Serves requests until the peer closes, errs, or asks to close.
    pub async fn serve(mut self) {
        let _ = self.serve_inner().await;
        let _ = self.flush().await;
    }

    async fn serve_inner(&mut self) -> io::Result<()> {
        loop {
            let req = loop {
                if self.rend > self.rstart {
                    match parse_request(&self.rbuf[self.rstart..self.rend], &self.ctx) {
                        Ok(Some(r)) => break r,
                        Ok(None) => {}
                        Err(HeadError::Bad) => {
                            return self.simple_error(400, b"bad request\n").await;
                        }
                        Err(HeadError::TooLarge) => {
                            return self.simple_error(431, b"request head too large\n").await;
                        }
                    }
                    if self.rstart == 0 && self.rend == self.rbuf.len() {
                        return self.simple_error(431, b"request head too large\n").await;
                    }
                }
                // Out of complete requests: send what the batch produced first.
                self.flush().await?;
                if !self.fill().await? {
                    return Ok(());
                }
            };
            self.rstart += req.head_len;
            self.ctx.count_request();
            self.handle(&req).await?;
            if !req.keep_alive {
                return Ok(());
            }
            if self.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
    }

    /// One read into the free tail of the read buffer; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        crate::util::make_read_room(&mut self.rbuf, &mut self.rstart, &mut self.rend);
        // The buffer travels with the operation and comes back with the result.
        let tail = std::mem::take(&mut self.rbuf).slice(self.rend..);
        let BufResult(res, tail) = (&self.stream).read(tail).await;
        self.rbuf = tail.into_inner();
        self.activity.bump();
        let n = res?;
        self.rend += n;
        Ok(n > 0)
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let mut out = write_all(&self.stream, &self.activity, out).await?;
            out.clear();
            self.out = out;
        }
        Ok(())
    }

    async fn handle(&mut self, req: &Req) -> io::Result<()> {
        let plan = match req.plan {
            Ok(p) => p,
            Err(msg) => {
                self.body(req, false).await?;
                self.head(
                    req,
                    400,
                    None,
                    "text/plain",
                    Len::Fixed(msg.len() as u64 + 1),
                );
                self.out.extend_from_slice(b"\r\n");
                if !req.head_method {
                    self.out.extend_from_slice(msg.as_bytes());
                    self.out.push(b'\n');
                }
                return Ok(());
            }
        };
        if !plan.delay.is_zero() {
            self.flush().await?;
            self.activity.pause(true);
            compio::time::sleep(plan.delay).await;
            self.activity.pause(false);
        }
        match plan.action {
            Action::Echo => return self.echo(req, &plan).await,
            _ => self.body(req, false).await?,
        }
        match plan.action {
            Action::Bytes(n) => self.bytes(req, &plan, n).await,
            Action::Status(code) => {
                let mut text = [0u8; 64];
                let len = status_text(code, &mut text);
                self.small_body(req, &plan, code, "text/plain", &text[..len]);
                Ok(())
            }
            Action::Stats => {
                let json = self.ctx.stats_json();
                let mut plan = plan;
                plan.cache_control = Some(super::routes::no_store());
                self.small_body(req, &plan, 200, "application/json", json.as_bytes());
                Ok(())
            }
            Action::Echo => Ok(()),
        }
    }

    /// Reads the request body; echoes it as response chunks when `echo`.
    async fn body(&mut self, req: &Req, echo: bool) -> io::Result<()> {
        let mut dec = BodyDecoder::new(req.framing, echo);
        if dec.is_done() {
            return Ok(());
        }
        if req.expect_continue {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await?;
        }
        loop {
            if self.rend > self.rstart {
                let input = &self.rbuf[self.rstart..self.rend];
                let out = &mut self.out;
                let n = dec
                    .feed_with(input, &mut |d: &[u8]| {
                        if echo {
                            push_hex(out, d.len() as u64);
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(d);
                            out.extend_from_slice(b"\r\n");
                        }
                    })
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                self.rstart += n;
                if dec.is_done() {
                    break;
                }
            }
            if self.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
            if !self.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if echo {
            self.out.extend_from_slice(b"0\r\nX-Checksum: ");
            let sum = dec.checksum().unwrap_or_else(|| fnv64(b""));
            self.out.extend_from_slice(&to_hex(sum));
            self.out.extend_from_slice(b"\r\n\r\n");
        }
        Ok(())
    }

    async fn echo(&mut self, req: &Req, plan: &Plan) -> io::Result<()> {
        self.head(
            req,
            200,
            plan.cache_control.as_ref(),
            "application/octet-stream",
            Len::Chunked,
        );
        self.out.extend_from_slice(b"Trailer: X-Checksum\r\n\r\n");
        if req.head_method {
            return self.body(req, false).await;
        }
        if req.framing == Framing::Empty {
            self.out.extend_from_slice(b"0\r\nX-Checksum: ");
            self.out.extend_from_slice(&to_hex(fnv64(b"")));
            self.out.extend_from_slice(b"\r\n\r\n");
            return Ok(());
        }
        self.body(req, true).await
    }

    async fn bytes(&mut self, req: &Req, plan: &Plan, n: u64) -> io::Result<()> {
        let c = content();
        let sum = c.checksum(n);
        let cc = plan.cache_control.as_ref();
        if req.not_modified {
            self.head(req, 304, cc, "", Len::None);
            self.validators(sum);
            self.out.extend_from_slice(b"\r\n");
            return Ok(());
        }
        let len = if plan.chunked {
            Len::Chunked
        } else {
            Len::Fixed(n)
        };
        self.head(req, 200, cc, "application/octet-stream", len);
        self.validators(sum);
        self.checksum(sum);
        self.out.extend_from_slice(b"\r\n");
        if req.head_method {
            return Ok(());
        }
        if plan.chunked {
            for piece in c.pieces(n) {
                for chunk in piece.chunks(CHUNK) {
                    push_hex(&mut self.out, chunk.len() as u64);
                    self.out.extend_from_slice(b"\r\n");
                    self.out.extend_from_slice(chunk);
                    self.out.extend_from_slice(b"\r\n");
                    if self.out.len() >= FLUSH_AT {
                        self.flush().await?;
                    }
                }
            }
            self.out.extend_from_slice(b"0\r\n\r\n");
        } else if n <= COPY_MAX {
            for piece in c.pieces(n) {
                self.out.extend_from_slice(piece);
            }
        } else {
            self.flush().await?;
            for piece in c.pieces(n) {
                write_all(&self.stream, &self.activity, piece).await?;
            }
        }
        Ok(())
    }

    /// A response whose body is built in place (status text, stats JSON).
    fn small_body(&mut self, req: &Req, plan: &Plan, code: u16, ctype: &str, body: &[u8]) {
        let sum = fnv64(body);
        let len = if code == 204 || code == 304 {
            Len::None
        } else {
            Len::Fixed(body.len() as u64)
        };
        self.head(req, code, plan.cache_control.as_ref(), ctype, len);
        if len != Len::None {
            self.validators(sum);
            self.checksum(sum);
        }
        self.out.extend_from_slice(b"\r\n");
        if len != Len::None && !req.head_method {
            self.out.extend_from_slice(body);
        }
    }

    async fn simple_error(&mut self, code: u16, body: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(&mut self.out, code as u64);
        self.out.push(b' ');
        self.out.extend_from_slice(reason(code).as_bytes());
        self.out.extend_from_slice(
            b"\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ",
        );
        push_decimal(&mut self.out, body.len() as u64);
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(body);
        self.flush().await
    }

    /// Status line and common headers, without the final blank line.
    fn head(
        &mut self,
        req: &Req,
        code: u16,
        cc: Option<&super::routes::CacheControl>,
        ctype: &str,
        len: Len,
    ) {
        let o = &mut self.out;
        o.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(o, code as u64);
        o.push(b' ');
        o.extend_from_slice(reason(code).as_bytes());
        o.extend_from_slice(b"\r\nServer: loadtest-origin\r\nDate: ");
        o.extend_from_slice(&self.ctx.date());
        o.extend_from_slice(b"\r\n");
        if !ctype.is_empty() {
            o.extend_from_slice(b"Content-Type: ");
            o.extend_from_slice(ctype.as_bytes());
            o.extend_from_slice(b"\r\n");
        }
        match len {
            Len::Fixed(n) => {
                o.extend_from_slice(b"Content-Length: ");
                push_decimal(o, n);
                o.extend_from_slice(b"\r\n");
            }
            Len::Chunked => o.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Len::None => {}
        }
        if let Some(cc) = cc {
            o.extend_from_slice(b"Cache-Control: ");
            o.extend_from_slice(cc.as_bytes());
            o.extend_from_slice(b"\r\n");
        }
        if !req.keep_alive {
            o.extend_from_slice(b"Connection: close\r\n");
        }
    }

    fn validators(&mut self, sum: u64) {
        self.out.extend_from_slice(b"ETag: \"");
        self.out.extend_from_slice(&to_hex(sum));
        self.out.extend_from_slice(b"\"\r\nLast-Modified: ");
        self.out.extend_from_slice(&content().last_modified_text);
        self.out.extend_from_slice(b"\r\n");
    }

    fn checksum(&mut self, sum: u64) {
        self.out.extend_from_slice(b"X-Checksum: ");
        self.out.extend_from_slice(&to_hex(sum));
        self.out.extend_from_slice(b"\r\n");
    }
}

/// Writes all of `buf`, counting each completed write as activity (so a slow
/// reader of a large body is not cut off while it makes progress); gives the
/// buffer back for reuse. The buffer is dropped on error: the connection closes.
async fn write_all<B: IoBuf>(stream: &TcpStream, activity: &Activity, mut buf: B) -> io::Result<B> {
    let len = buf.buf_len();
    let mut done = 0;
    while done < len {
        let BufResult(res, rest) = (&*stream).write(buf.slice(done..)).await;
        buf = rest.into_inner();
        activity.bump();
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    Fixed(u64),
    Chunked,
    None,
}

fn parse_request(buf: &[u8], ctx: &ShardCtx) -> Result<Option<Req>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Bad),
    };
    // Invariant: httparse sets method, path and version on Complete.
    let method = r.method.unwrap_or("GET");
    let target = r.path.unwrap_or("/");
    let http10 = r.version == Some(0);
    // `--delay` slows every response of this origin, on top of any `/delay/`.
    let plan = plan(target.as_bytes(), ctx.default_size).map(|mut plan| {
        plan.delay += ctx.delay;
        plan
    });
    let mut keep_alive = !http10;
    let mut framing = Framing::Empty;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut inm: Option<&[u8]> = None;
    let mut ims: Option<&[u8]> = None;
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        let v = h.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_len(v).ok_or(HeadError::Bad)?;
            if matches!(framing, Framing::Length(m) if m != n) {
                return Err(HeadError::Bad);
            }
            framing = if n == 0 {
                Framing::Empty
            } else {
                Framing::Length(n)
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = v.rsplit(|&b| b == b',').next().unwrap_or(b"");
            if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Bad);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            inm = Some(v);
        } else if name.eq_ignore_ascii_case(b"if-modified-since") {
            ims = Some(v);
        }
    }
    if chunked {
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); such a
        // message may be smuggling, so don't reuse the connection after it.
        if framing != Framing::Empty {
            keep_alive = false;
        }
        framing = Framing::Chunked;
    }
    let head_method = method == "HEAD";
    let safe = method == "GET" || head_method;
    let not_modified = match plan {
        Ok(Plan {
            action: Action::Bytes(n),
            ..
        }) if safe => {
            if let Some(v) = inm {
                etag_matches(v, content().checksum(n))
            } else if let Some(v) = ims {
                parse_http_date(v).is_some_and(|t| content().last_modified <= t)
            } else {
                false
            }
        }
        _ => false,
    };
    Ok(Some(Req {
        head_len,
        head_method,
        keep_alive,
        framing,
        expect_continue,
        plan,
        not_modified,
    }))
}

fn parse_len(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, &c| n * 10 + (c - b'0') as u64))
}

/// If-None-Match uses weak comparison: `W/` prefixes are ignored.
fn etag_matches(header: &[u8], sum: u64) -> bool {
    let hex = to_hex(sum);
    header.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == b"*" || (t.len() == 18 && t[0] == b'"' && t[17] == b'"' && t[1..17] == hex)
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// "418 I'm a teapot\n" into `out`; returns its length.
fn status_text(code: u16, out: &mut [u8; 64]) -> usize {
    // Codes are validated to 200..=599, so always three digits.
    let digits = [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    let r = reason(code).as_bytes();
    let mut n = 0;
    for &b in digits.iter().chain(b" ").chain(r).chain(b"\n") {
        if n < out.len() {
            out[n] = b;
            n += 1;
        }
    }
    n
}

/// Per-shard cached Date header, refreshed when the second changes.
pub struct DateCache {
    secs: std::cell::Cell<u64>,
    text: std::cell::Cell<[u8; 29]>,
}

impl Default for DateCache {
    fn default() -> Self {
        let now = unix_now();
        DateCache {
            secs: now.into(),
            text: http_date(now).into(),
        }
    }
}

impl DateCache {
    pub fn get(&self) -> [u8; 29] {
        let now = unix_now();
        if now != self.secs.get() {
            self.secs.set(now);
            self.text.set(http_date(now));
        }
        self.text.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let sum = 0xabcdef;
        let tag = format!("\"{}\"", String::from_utf8(to_hex(sum).to_vec()).unwrap());
        assert!(etag_matches(tag.as_bytes(), sum));
        assert!(etag_matches(format!("W/{tag}").as_bytes(), sum));
        assert!(etag_matches(format!("\"x\", {tag}").as_bytes(), sum));
        assert!(etag_matches(b"*", sum));
        assert!(!etag_matches(b"\"0000000000000000\"", sum));
    }

    #[test]
    fn status_texts() {
        let mut b = [0u8; 64];
        let n = status_text(418, &mut b);
        assert_eq!(&b[..n], b"418 I'm a teapot\n");
    }
}
