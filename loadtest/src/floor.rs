//! `loadtest floor`: the least a keep-alive HTTP/1.1 forwarding proxy can do
//! on compio, run beside shardproxy by `compare --systems ...,floor` as a
//! reference. Its CPU time per request is what the runtime (one compio
//! runtime per thread, on io_uring with the origin's ring flags) and the
//! kernel's TCP work cost on this machine, with no proxy work on top:
//! shardproxy's ratio to it is what our own code costs, whatever the machine,
//! where the ratio to nginx also moves with how cheap nginx is there.
//!
//! Per shard: a thread (pinned only with `--cpus`), a runtime and an
//! SO_REUSEPORT listener, as the origin's. Per client connection: one
//! upstream connection of its own, opened at its first request and kept;
//! each request head is forwarded unchanged, the response head is parsed
//! for its length, and head and body are relayed unchanged. No pool, no
//! timeouts, no header rewriting, no retries. Requests with a body and
//! responses without a Content-Length are refused (501 / 502, then close):
//! the benchmark's scenarios have neither.

use crate::cli::FloorArgs;
use crate::origin::{bind_all, runtime};
use crate::util;
use compio::buf::{IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::BufResult;
use std::io;
use std::net::SocketAddr;

/// Each direction's buffer: a request head must fit; bodies stream through.
const BUF: usize = 32 * 1024;
const MAX_HEADERS: usize = 64;

pub fn main(a: &FloorArgs) -> Result<(), String> {
    let shards = a.shards.unwrap_or_else(util::cpu_count);
    if shards == 0 {
        return Err("--shards must be at least 1".into());
    }
    util::raise_limits();
    let (sockets, bound) = bind_all(&[a.listen], shards)?;
    let mut handles = Vec::new();
    for (index, mut socks) in sockets.into_iter().enumerate() {
        let cpu = a.cpus.as_ref().map(|c| util::cpu_for(index, Some(c)));
        let upstream = a.upstream;
        let socket = socks.pop().ok_or("no listening socket for a shard")?;
        let h = std::thread::Builder::new()
            .name(format!("floor-{index}"))
            .spawn(move || shard(cpu, socket, upstream))
            .map_err(|e| format!("cannot start shard thread: {e}"))?;
        handles.push(h);
    }
    util::announce_and_join("floor", &bound, handles)
}

fn shard(cpu: Option<usize>, socket: socket2::Socket, upstream: SocketAddr) -> Result<(), String> {
    if let Some(cpu) = cpu {
        util::pin_current_thread(cpu);
    }
    let rt = runtime().map_err(|e| format!("cannot start the compio runtime: {e}"))?;
    rt.block_on(async move {
        let listener = TcpListener::from_std(socket.into())
            .map_err(|e| format!("cannot register listening socket: {e}"))?;
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    compio::runtime::spawn(async move {
                        if let Err(e) = Forwarder::new(client, upstream).serve().await {
                            log::debug!("floor connection ended: {e}");
                        }
                    })
                    .detach();
                }
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    compio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    })
}

/// One client connection and the upstream connection it alone uses.
struct Forwarder {
    client: TcpStream,
    upstream_addr: SocketAddr,
    upstream: Option<TcpStream>,
    /// Bytes from the client not yet forwarded (a pipelined request's start).
    from_client: Vec<u8>,
    from_upstream: Vec<u8>,
}

/// What a request head says.
struct Request {
    head_len: usize,
    has_body: bool,
    head_method: bool,
    close: bool,
}

/// What a response head says.
struct Response {
    head_len: usize,
    body_len: Option<u64>,
    close: bool,
}

impl Forwarder {
    fn new(client: TcpStream, upstream_addr: SocketAddr) -> Forwarder {
        Forwarder {
            client,
            upstream_addr,
            upstream: None,
            from_client: Vec::with_capacity(BUF),
            from_upstream: Vec::with_capacity(BUF),
        }
    }

    async fn serve(mut self) -> io::Result<()> {
        loop {
            let Some(request) = self.read_request().await? else {
                return Ok(());
            };
            if request.has_body {
                return self.refuse(b"501 Not Implemented").await;
            }
            let upstream = self.upstream().await?;
            let head = std::mem::take(&mut self.from_client);
            let BufResult(sent, head) = (&upstream).write_all(head.slice(..request.head_len)).await;
            self.from_client = head.into_inner();
            sent?;
            self.from_client.drain(..request.head_len);
            let Some(response) = self.read_response(&upstream, request.head_method).await? else {
                return self.refuse(b"502 Bad Gateway").await;
            };
            self.relay(&upstream, &response).await?;
            if response.close {
                self.upstream = None;
            } else {
                self.upstream = Some(upstream);
            }
            if request.close {
                return Ok(());
            }
        }
    }

    async fn upstream(&mut self) -> io::Result<TcpStream> {
        match self.upstream.take() {
            Some(up) => Ok(up),
            None => {
                let up = TcpStream::connect(self.upstream_addr).await?;
                up.set_nodelay(true)?;
                Ok(up)
            }
        }
    }

    /// The next request head, read until complete; `None` at the client's EOF.
    async fn read_request(&mut self) -> io::Result<Option<Request>> {
        loop {
            if let Some(request) = parse_request(&self.from_client)? {
                return Ok(Some(request));
            }
            if self.from_client.len() == self.from_client.capacity() {
                return Err(io::Error::other("request head too large"));
            }
            if read_more(&self.client, &mut self.from_client).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The response head, read until complete; `None` when it has no
    /// Content-Length (and is not bodiless).
    async fn read_response(
        &mut self,
        upstream: &TcpStream,
        head_method: bool,
    ) -> io::Result<Option<Response>> {
        self.from_upstream.clear();
        loop {
            if let Some(response) = parse_response(&self.from_upstream, head_method)? {
                return Ok(response.body_len.is_some().then_some(response));
            }
            if self.from_upstream.len() == self.from_upstream.capacity() {
                return Err(io::Error::other("response head too large"));
            }
            if read_more(upstream, &mut self.from_upstream).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Sends the response head and body to the client as they arrive.
    async fn relay(&mut self, upstream: &TcpStream, response: &Response) -> io::Result<()> {
        let mut left = response.head_len as u64 + response.body_len.unwrap_or(0);
        loop {
            if self.from_upstream.len() as u64 > left {
                return Err(io::Error::other("upstream sent more than its response"));
            }
            left -= self.from_upstream.len() as u64;
            let out = std::mem::take(&mut self.from_upstream);
            let BufResult(sent, mut out) = (&self.client).write_all(out).await;
            out.clear();
            self.from_upstream = out;
            sent?;
            if left == 0 {
                return Ok(());
            }
            if read_more(upstream, &mut self.from_upstream).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn refuse(&self, status: &[u8]) -> io::Result<()> {
        let mut answer = b"HTTP/1.1 ".to_vec();
        answer.extend_from_slice(status);
        answer.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let BufResult(sent, _) = (&self.client).write_all(answer).await;
        sent
    }
}

/// Reads what `stream` has into `buf`'s spare capacity (compio's reads
/// take the buffer and give it back); 0 at EOF.
async fn read_more(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let BufResult(read, back) = { stream }.read(std::mem::take(buf)).await;
    *buf = back;
    read
}

fn parse_request(buf: &[u8]) -> io::Result<Option<Request>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let mut has_body = false;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
        {
            has_body = true;
        }
        if h.name.eq_ignore_ascii_case("connection") {
            close = has_token(h.value, b"close");
        }
    }
    Ok(Some(Request {
        head_len,
        has_body,
        head_method: req.method == Some("HEAD"),
        close,
    }))
}

fn parse_response(buf: &[u8], head_method: bool) -> io::Result<Option<Response>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let code = resp.code.unwrap_or(0);
    let bodiless = head_method || code < 200 || code == 204 || code == 304;
    let mut body_len = bodiless.then_some(0);
    let mut close = resp.version == Some(0);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") && !bodiless {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        }
        if h.name.eq_ignore_ascii_case("connection") {
            close = has_token(h.value, b"close");
        }
    }
    Ok(Some(Response {
        head_len,
        body_len,
        close,
    }))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_say_body_head_and_close() {
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost: a")
            .unwrap()
            .is_none());
        let r = parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET")
            .unwrap()
            .unwrap();
        assert_eq!(r.head_len, 27);
        assert!(!r.has_body && !r.head_method && !r.close);
        let r = parse_request(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert!(r.has_body);
        let r = parse_request(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.head_method && r.close);
        assert!(
            parse_request(b"GET / HTTP/1.0\r\n\r\n")
                .unwrap()
                .unwrap()
                .close
        );
        assert!(parse_request(b"G\0T / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn response_heads_say_length_or_none() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.head_len, r.body_len, r.close), (39, Some(12), false));
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body_len, Some(0), "a HEAD response has no body");
        let r = parse_response(
            b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.body_len, r.close), (Some(0), true));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body_len, None, "chunked is refused");
    }
}
