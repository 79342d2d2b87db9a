//! One client connection's life: connect, send requests (pipelined batches in
//! closed loop, or on a fixed schedule in open loop), read and frame each
//! response, and record latency or the kind of failure. Every buffer is
//! allocated once per connection and reused, so the steady state allocates
//! nothing in this code.

use super::response::{parse_head, BodyDecoder, ParseError};
use super::{Control, Shared};
use crate::report::ErrorKind;
use crate::util::Rng;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Per-connection read buffer; bodies larger than this stream through it.
const READ_BUF: usize = 64 * 1024;
/// Pause after a failed connect so a dead server does not cause a hot loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// A response that was read completely.
#[derive(Debug, Clone, Copy)]
struct Done {
    status: u16,
    close: bool,
    wire_bytes: u64,
}

/// A failed exchange; `detail` is printed for checksum mismatches.
struct Failure {
    kind: ErrorKind,
    detail: Option<String>,
}

impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        Failure { kind, detail: None }
    }
}

fn classify(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
        _ => ErrorKind::Other,
    }
}

pub struct Conn {
    shared: Rc<Shared>,
    target: usize,
    stream: Option<TcpStream>,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    rng: Rng,
}

impl Conn {
    pub fn new(shared: Rc<Shared>, target: usize, seed: u64) -> Conn {
        Conn {
            shared,
            target,
            stream: None,
            rbuf: vec![0u8; READ_BUF].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::with_capacity(4096),
            rng: Rng::new(seed),
        }
    }

    fn ctl(&self) -> &Control {
        &self.shared.ctl
    }

    pub async fn run(self) {
        match self.shared.cfg.rate_interval {
            Some(interval) => self.run_open(interval).await,
            None => self.run_closed().await,
        }
    }

    /// Closed loop: keep `pipeline` requests in flight, one batch at a time.
    async fn run_closed(mut self) {
        let depth = self.shared.cfg.pipeline as u64;
        let new_conn = self.shared.cfg.new_connection;
        loop {
            let t0 = Instant::now();
            let Some(n) = self.ctl().claim(t0, depth) else {
                break;
            };
            if self.stream.is_none() {
                if let Err(kind) = self.connect().await {
                    self.fail(t0, kind.into());
                    glommio::timer::sleep(CONNECT_BACKOFF).await;
                    continue;
                }
            }
            self.build_requests(n);
            // With a fresh connection per request, latency includes the connect.
            let sent = if new_conn { t0 } else { Instant::now() };
            if let Err(kind) = self.send().await {
                self.fail(sent, kind.into());
                self.drop_stream();
                continue;
            }
            for i in 0..n {
                match self.read_response().await {
                    Ok(done) => {
                        self.succeed(sent, done);
                        if done.close {
                            // Pipelined requests behind a closing response are lost.
                            for _ in i + 1..n {
                                self.fail(sent, ErrorKind::Reset.into());
                            }
                            self.drop_stream();
                            break;
                        }
                    }
                    Err(f) => {
                        self.fail(sent, f);
                        self.drop_stream();
                        break;
                    }
                }
            }
            if new_conn {
                self.drop_stream();
            }
        }
    }

    /// Open loop: request k is due at start + offset + k * interval; latency is
    /// measured from that intended time, so a stalled server is charged for
    /// every request it delayed (no coordinated omission).
    async fn run_open(mut self, interval: Duration) {
        let new_conn = self.shared.cfg.new_connection;
        let mut due = self.ctl().start + interval.mul_f64(self.rng.next_f64());
        loop {
            if self.ctl().past_deadline(due) {
                break;
            }
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
            }
            let Some(_) = self.ctl().claim(due, 1) else {
                break;
            };
            let intended = due;
            due += interval;
            if self.stream.is_none() {
                if let Err(kind) = self.connect().await {
                    self.fail(intended, kind.into());
                    continue;
                }
            }
            self.build_requests(1);
            if let Err(kind) = self.send().await {
                self.fail(intended, kind.into());
                self.drop_stream();
                continue;
            }
            match self.read_response().await {
                Ok(done) => {
                    self.succeed(intended, done);
                    if done.close || new_conn {
                        self.drop_stream();
                    }
                }
                Err(f) => {
                    self.fail(intended, f);
                    self.drop_stream();
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<(), ErrorKind> {
        let cfg = &self.shared.cfg;
        let addr = cfg.targets[self.target].connect_addr;
        let stream = TcpStream::connect_timeout(addr, cfg.timeout)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Best effort: a failure only affects latency, not correctness.
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(cfg.timeout));
        let _ = stream.set_write_timeout(Some(cfg.timeout));
        self.stream = Some(stream);
        self.rstart = 0;
        self.rend = 0;
        Ok(())
    }

    fn drop_stream(&mut self) {
        self.stream = None;
        self.rstart = 0;
        self.rend = 0;
    }

    fn build_requests(&mut self, n: u64) {
        let cfg = &self.shared.cfg;
        let template = &cfg.targets[self.target].template;
        self.wbuf.clear();
        for _ in 0..n {
            let key = cfg.dist.as_ref().map(|d| d.sample(&mut self.rng));
            template.write(&mut self.wbuf, key);
        }
    }

    async fn send(&mut self) -> Result<(), ErrorKind> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(ErrorKind::Other);
        };
        stream.write_all(&self.wbuf).await.map_err(|e| classify(&e))
    }

    /// Reads more bytes into the buffer, compacting it first if needed.
    /// `Ok(false)` means the peer closed the connection.
    async fn fill(&mut self) -> Result<bool, ErrorKind> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rend == self.rbuf.len() {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ErrorKind::Other);
        };
        let n = stream
            .read(&mut self.rbuf[self.rend..])
            .await
            .map_err(|e| classify(&e))?;
        self.rend += n;
        Ok(n > 0)
    }

    async fn read_response(&mut self) -> Result<Done, Failure> {
        let verify = self.shared.cfg.verify;
        let head_request = self.shared.cfg.targets[self.target].template.head_request;
        let head = loop {
            if self.rend > self.rstart {
                match parse_head(&self.rbuf[self.rstart..self.rend], head_request) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => return Err(bad(e)),
                }
                if self.rstart == 0 && self.rend == self.rbuf.len() {
                    return Err(bad(ParseError::Head("response head too large".into())));
                }
            }
            if !self.fill().await? {
                return Err(ErrorKind::Reset.into());
            }
        };
        self.rstart += head.len;
        let mut wire = head.len as u64;
        let mut dec = BodyDecoder::new(head.framing, verify);
        while !dec.is_done() {
            if self.rend > self.rstart {
                let n = dec.feed(&self.rbuf[self.rstart..self.rend]).map_err(bad)?;
                self.rstart += n;
                wire += n as u64;
                if dec.is_done() {
                    break;
                }
            }
            if !self.fill().await? {
                if dec.until_close() {
                    dec.finish_on_close();
                    break;
                }
                return Err(ErrorKind::Reset.into());
            }
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        if verify {
            if let (Some(want), Some(got)) =
                (head.checksum.or(dec.trailer_checksum), dec.checksum())
            {
                if want != got {
                    return Err(Failure {
                        kind: ErrorKind::Checksum,
                        detail: Some(format!(
                            "checksum mismatch on {}: header {want:016x}, body {got:016x} ({} bytes, status {})",
                            self.shared.cfg.targets[self.target].label,
                            dec.body_bytes,
                            head.status
                        )),
                    });
                }
            }
        }
        Ok(Done {
            status: head.status,
            close: head.close,
            wire_bytes: wire,
        })
    }

    fn succeed(&mut self, sent: Instant, done: Done) {
        if sent < self.ctl().measure_start {
            return;
        }
        let now = Instant::now();
        let mut st = self.shared.stats.borrow_mut();
        st.record_latency(now.saturating_duration_since(sent));
        st.requests += 1;
        st.bytes += done.wire_bytes;
        let class = (done.status / 100) as usize;
        if class < st.status.len() {
            st.status[class] += 1;
        }
        match class {
            4 => st.errors.add(ErrorKind::Status4xx),
            5 => st.errors.add(ErrorKind::Status5xx),
            _ => {}
        }
        self.shared.progress.add(1, u64::from(class >= 4));
        self.shared.last_completion.set(Some(now));
    }

    fn fail(&mut self, at: Instant, f: Failure) {
        if at < self.ctl().measure_start {
            return;
        }
        let mut st = self.shared.stats.borrow_mut();
        st.errors.add(f.kind);
        if let Some(d) = f.detail {
            if st.mismatches.len() < 20 {
                st.mismatches.push(d);
            }
        }
        self.shared.progress.add(0, 1);
    }
}

fn bad(e: ParseError) -> Failure {
    Failure {
        kind: ErrorKind::BadResponse,
        detail: Some(e.to_string()),
    }
}
