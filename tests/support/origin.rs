//! The scriptable test origin: a blocking std::net server on an ephemeral
//! loopback port, one thread per connection. It parses each request strictly
//! (head, Content-Length or chunked body), records what it received (raw head,
//! raw body bytes as framed on the wire, decoded body, digest) and counts
//! connections, heads and complete requests, then hands the request and the
//! socket to the test's handler, which writes whatever response it wants —
//! including broken ones — and says whether to keep the connection.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::digest::{BodyDigest, PatternBody};
use super::wire::{encode_chunk, find_header, owned_headers, tokens, Framing, ReadError, Wire};

/// Bodies longer than this are only digested, not kept.
const KEEP_BODY_BYTES: usize = 1024 * 1024;
/// How long `Origin::wait_*` and `Gate::wait` wait before failing.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// The head exactly as received, final CRLFCRLF included.
    pub head: Vec<u8>,
    /// Header names (case as received) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes as framed on the wire (chunk sizes included), first MiB.
    pub raw_body: Vec<u8>,
    /// Decoded body, first MiB.
    pub body: Vec<u8>,
    pub body_digest: BodyDigest,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What the origin does with the connection after the handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepAlive,
    Close,
}

pub type Handler = dyn Fn(&Request, &mut TcpStream) -> After + Send + Sync;

#[derive(Default)]
struct Counters {
    connections: usize,
    closed_connections: usize,
    heads: usize,
    requests: Vec<Request>,
}

struct Shared {
    counters: Mutex<Counters>,
    changed: Condvar,
    stopping: AtomicBool,
    handler: Box<Handler>,
    /// Call the handler as soon as the head is parsed, never reading the
    /// body, then close (an upstream that answers early, e.g. with 413).
    answer_before_body: bool,
}

pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Origin {
    /// Starts an origin that answers every request with `handler`.
    pub fn start(
        handler: impl Fn(&Request, &mut TcpStream) -> After + Send + Sync + 'static,
    ) -> Origin {
        Self::spawn(Box::new(handler), false)
    }

    /// An origin that answers with `handler` right after the request head,
    /// without reading the body, then closes the connection.
    pub fn start_answering_before_body(
        handler: impl Fn(&Request, &mut TcpStream) -> After + Send + Sync + 'static,
    ) -> Origin {
        Self::spawn(Box::new(handler), true)
    }

    fn spawn(handler: Box<Handler>, answer_before_body: bool) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test origin");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            counters: Mutex::default(),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            handler,
            answer_before_body,
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept_loop(listener, accepting));
        Origin { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        self.shared.counters.lock().unwrap()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters().connections
    }

    /// Request heads parsed so far (complete requests or not).
    pub fn heads(&self) -> usize {
        self.counters().heads
    }

    /// Complete requests (head and body) received so far.
    pub fn request_count(&self) -> usize {
        self.counters().requests.len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.counters().requests.clone()
    }

    /// The only request received; panics unless exactly one arrived.
    pub fn single_request(&self) -> Request {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "the origin received {} requests",
            requests.len()
        );
        requests.into_iter().next().unwrap()
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Counters) -> bool) {
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut counters = self.counters();
        while !done(&counters) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for the origin: {what}");
            counters = self.shared.changed.wait_timeout(counters, left).unwrap().0;
        }
    }

    /// Blocks until the origin has received `n` complete requests.
    pub fn wait_for_requests(&self, n: usize) {
        self.wait_until(&format!("{n} requests"), |c| c.requests.len() >= n);
    }

    /// Blocks until the origin has parsed `n` request heads.
    pub fn wait_for_heads(&self, n: usize) {
        self.wait_until(&format!("{n} request heads"), |c| c.heads >= n);
    }

    /// Blocks until `n` upstream connections have been closed (by either end).
    pub fn wait_for_closed_connections(&self, n: usize) {
        self.wait_until(&format!("{n} closed connections"), |c| {
            c.closed_connections >= n
        });
    }
}

impl Origin {
    /// Stops listening, as a killed server would: new connections are
    /// refused once this returns (connections already open still work).
    pub fn stop_listening(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let deadline = Instant::now() + WAIT_LIMIT;
        while TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            assert!(Instant::now() < deadline, "the origin kept listening");
            thread::yield_now();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        shared.counters.lock().unwrap().connections += 1;
        shared.changed.notify_all();
        let serving = Arc::clone(&shared);
        thread::spawn(move || {
            serve_connection(stream, &serving);
            serving.counters.lock().unwrap().closed_connections += 1;
            serving.changed.notify_all();
        });
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    // Generous: a pooled idle connection may legitimately sit for a while.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut wire = Wire::new(stream);
    loop {
        let Ok(head) = wire.read_head(1024 * 1024) else {
            return;
        };
        let Some(mut request) = parse_request_head(head) else {
            send(
                &mut wire.stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        };
        shared.counters.lock().unwrap().heads += 1;
        shared.changed.notify_all();
        if shared.answer_before_body {
            (shared.handler)(&request, &mut wire.stream);
            let _ = wire.stream.shutdown(Shutdown::Write);
            // Let the peer see the response before any reset from unread bytes.
            let _ = wire.read_until_closed();
            return;
        }
        let Some(framing) = request_framing(&request) else {
            send(
                &mut wire.stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
            return;
        };
        if read_request_body(&mut wire, framing, &mut request).is_err() {
            return;
        }
        shared
            .counters
            .lock()
            .unwrap()
            .requests
            .push(request.clone());
        shared.changed.notify_all();
        if (shared.handler)(&request, &mut wire.stream) == After::Close {
            let _ = wire.stream.flush();
            let _ = wire.stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn parse_request_head(head: Vec<u8>) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    Some(Request {
        method: parsed.method?.to_owned(),
        target: parsed.path?.to_owned(),
        headers: owned_headers(parsed.headers),
        head,
        raw_body: Vec::new(),
        body: Vec::new(),
        body_digest: BodyDigest::default(),
    })
}

/// Strict request framing; `None` for anything a proxy must never forward.
fn request_framing(request: &Request) -> Option<Framing> {
    let lengths: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.as_str())
        .collect();
    let encodings: Vec<String> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, value)| tokens(value))
        .collect();
    match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Some(Framing::NoBody),
        ([length], []) => length.parse().ok().map(Framing::ContentLength),
        ([], [.., last]) if last == "chunked" => Some(Framing::Chunked),
        _ => None,
    }
}

fn read_request_body(
    wire: &mut Wire,
    framing: Framing,
    request: &mut Request,
) -> Result<(), ReadError> {
    let Request {
        raw_body,
        body,
        body_digest,
        ..
    } = request;
    wire.read_body(
        framing,
        &mut |piece| {
            body_digest.update(piece);
            keep_prefix(body, piece);
        },
        &mut |piece| keep_prefix(raw_body, piece),
    )
}

fn keep_prefix(kept: &mut Vec<u8>, piece: &[u8]) {
    let room = KEEP_BODY_BYTES.saturating_sub(kept.len());
    kept.extend_from_slice(&piece[..piece.len().min(room)]);
}

/// Writes `bytes`, ignoring errors: the proxy may legitimately have gone.
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// Writes `bytes` one byte per write (see `Client::send_bytewise`).
pub fn send_bytewise(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.set_nodelay(true);
    for byte in bytes {
        send(stream, std::slice::from_ref(byte));
        std::thread::sleep(super::client::BYTEWISE_PAUSE);
    }
}

/// A complete `200 OK` with a Content-Length body.
pub fn send_ok(stream: &mut TcpStream, body: &[u8]) {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    send(stream, &response);
}

/// A `200 OK` whose body is sent in the given chunks.
pub fn send_chunked(stream: &mut TcpStream, chunks: &[&[u8]]) {
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in chunks {
        response.extend(encode_chunk(chunk));
    }
    response.extend_from_slice(b"0\r\n\r\n");
    send(stream, &response);
}

/// Streams a `len`-byte pattern body with Content-Length, generated on the fly.
pub fn send_pattern_body(stream: &mut TcpStream, seed: u64, len: u64) {
    send(
        stream,
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
    );
    PatternBody::new(seed, len).stream(&mut |piece| send(stream, piece));
}

/// Handler: `200 OK` whose body is the request target.
pub fn echo_target() -> impl Fn(&Request, &mut TcpStream) -> After + Send + Sync {
    |request, stream| {
        send_ok(stream, request.target.as_bytes());
        After::KeepAlive
    }
}

/// Handler: waits until `gate` opens, then `200 OK` with the request target
/// as body — a request the test holds "in flight".
pub fn held_until_open(
    gate: &Arc<Gate>,
) -> impl Fn(&Request, &mut TcpStream) -> After + Send + Sync {
    let gate = Arc::clone(gate);
    move |request, stream| {
        gate.wait();
        send_ok(stream, request.target.as_bytes());
        After::KeepAlive
    }
}

/// Handler: `200 OK` whose body is the digest text of the request body.
pub fn describe_body() -> impl Fn(&Request, &mut TcpStream) -> After + Send + Sync {
    |request, stream| {
        send_ok(stream, request.body_digest.to_text().as_bytes());
        After::KeepAlive
    }
}

/// Handler: writes `raw` verbatim, then does `after`.
pub fn raw_response(
    raw: &'static [u8],
    after: After,
) -> impl Fn(&Request, &mut TcpStream) -> After + Send + Sync {
    move |_, stream| {
        send(stream, raw);
        after
    }
}

/// A latch the origin's handlers wait on until the test opens it, so a test
/// can hold a request "in flight" without sleeping.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::default()
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits until opened; gives up after a long while so a failed test does
    /// not leave threads behind forever.
    pub fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _unused = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
            .unwrap();
    }
}
