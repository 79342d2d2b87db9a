//! The test client: a raw `TcpStream` that writes exactly the bytes a test
//! gives it (so malformed requests can be sent) and parses the proxy's
//! responses strictly. Every socket has a read timeout, so a proxy that hangs
//! fails the test instead of blocking it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::wire::{find_header, owned_headers, tokens, Framing, ReadError, Wire};

/// How long any single read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between the writes of `send_bytewise` (long enough for the bytes
/// to travel in separate segments).
pub const BYTEWISE_PAUSE: Duration = Duration::from_millis(1);

/// The Host header value the helpers send.
pub const TEST_HOST: &str = "test.example";

/// A response head as the client received it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub minor_version: u8,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// How the body that follows is delimited, for a response to `method`.
    pub fn framing(&self, method: &str) -> Result<Framing, ReadError> {
        if method == "HEAD" || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(Framing::NoBody);
        }
        if let Some(encoding) = self.header("transfer-encoding") {
            return match tokens(encoding).last().map(String::as_str) {
                Some("chunked") => Ok(Framing::Chunked),
                _ => Ok(Framing::UntilClose),
            };
        }
        match self.header("content-length") {
            Some(length) => length
                .trim()
                .parse()
                .map(Framing::ContentLength)
                .map_err(|_| {
                    ReadError::Malformed(format!("bad Content-Length {length:?} from the proxy"))
                }),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: ResponseHead,
    pub body: Vec<u8>,
}

impl std::ops::Deref for Response {
    type Target = ResponseHead;
    fn deref(&self) -> &ResponseHead {
        &self.head
    }
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A body-less request head with the test Host.
pub fn request_head(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n")
}

/// A body-less request head with the test Host and extra header lines.
pub fn request_head_with(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

pub struct Client {
    wire: Wire,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|error| panic!("connecting to the proxy at {addr}: {error}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            wire: Wire::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.wire.stream
    }

    /// Writes `bytes` as one write call.
    pub fn send(&mut self, bytes: &[u8]) {
        self.wire
            .stream
            .write_all(bytes)
            .unwrap_or_else(|error| panic!("sending {} bytes to the proxy: {error}", bytes.len()));
    }

    /// Writes `bytes` one byte per write, pausing between writes, so the
    /// proxy sees them split at every possible boundary.
    pub fn send_bytewise(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.send(std::slice::from_ref(byte));
            std::thread::sleep(BYTEWISE_PAUSE);
        }
    }

    /// Sends a body-less request with the test Host and reads the response.
    pub fn request(&mut self, method: &str, path: &str) -> Response {
        self.send(request_head(method, path).as_bytes());
        self.read_response(method)
    }

    /// Sends a body-less request with the test Host and `headers`, and reads
    /// the response.
    pub fn request_with(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send(request_head_with(method, path, headers).as_bytes());
        self.read_response(method)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path)
    }

    /// Like `get`, but returns read errors instead of panicking.
    pub fn try_get(&mut self, path: &str) -> Result<Response, ReadError> {
        self.send(request_head("GET", path).as_bytes());
        self.try_read_response("GET")
    }

    /// Reads one complete response to a `method` request; panics if the
    /// connection closes or stalls first.
    pub fn read_response(&mut self, method: &str) -> Response {
        self.try_read_response(method)
            .unwrap_or_else(|error| panic!("reading the response to {method}: {error:?}"))
    }

    pub fn try_read_response(&mut self, method: &str) -> Result<Response, ReadError> {
        let head = self.read_head()?;
        let mut body = Vec::new();
        self.read_body(&head, method, &mut |piece| body.extend_from_slice(piece))?;
        Ok(Response { head, body })
    }

    pub fn read_head(&mut self) -> Result<ResponseHead, ReadError> {
        let raw = self.wire.read_head(1024 * 1024)?;
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&raw) {
            Ok(httparse::Status::Complete(_)) => {}
            other => {
                return Err(ReadError::Malformed(format!(
                    "unparsable response head {:?}: {other:?}",
                    String::from_utf8_lossy(&raw)
                )))
            }
        }
        Ok(ResponseHead {
            minor_version: parsed.version.unwrap_or(1),
            status: parsed.code.unwrap_or(0),
            headers: owned_headers(parsed.headers),
            raw,
        })
    }

    /// Streams the body of the response `head` into `sink`.
    pub fn read_body(
        &mut self,
        head: &ResponseHead,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), ReadError> {
        let framing = head.framing(method)?;
        self.wire.read_body(framing, sink, &mut |_| {})
    }

    /// Waits until the proxy closes the connection and returns whatever it
    /// sent before; panics if it is still open after `IO_TIMEOUT`.
    pub fn expect_closed(&mut self) -> Vec<u8> {
        self.try_read_to_close().unwrap_or_else(|error| {
            panic!("expected the proxy to close the connection, got {error:?}")
        })
    }

    /// Everything until the proxy closes; `Err(TimedOut)` if it does not.
    pub fn try_read_to_close(&mut self) -> Result<Vec<u8>, ReadError> {
        self.wire.read_until_closed()
    }

    /// Reads a response then waits for the close; panics otherwise.
    pub fn expect_response_then_close(&mut self, method: &str) -> Response {
        let response = self.read_response(method);
        let extra = self.expect_closed();
        assert!(
            extra.is_empty(),
            "bytes after the {} response: {:?}",
            response.status,
            String::from_utf8_lossy(&extra)
        );
        response
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.wire.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Bytes the proxy sent after the last parsed response (pipelining).
    pub fn has_unread_bytes(&self) -> bool {
        self.wire.has_pending()
    }
}
