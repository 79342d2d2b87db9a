//! The admin endpoint from a test's side: its address (from the proxy's
//! `admin endpoint on http://ADDR/` log line) and plain HTTP/1.1 requests to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::proxy::Proxy;

impl Proxy {
    /// The admin endpoint's address; the proxy logs it before any shard listens.
    pub fn admin_addr(&self) -> SocketAddr {
        let output = self.output();
        output
            .lines()
            .find_map(|line| {
                let rest = line.split_once("admin endpoint on http://")?.1;
                rest.split('/').next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no admin endpoint in the proxy's output:\n{output}"))
    }

    /// `method path` on the admin endpoint: status and body.
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        admin_request(self.admin_addr(), method, path)
    }
}

/// One request on its own connection; the endpoint closes after answering.
pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connecting to admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("reading the admin response");
    let text = String::from_utf8(response).expect("admin answers in UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_string())
}
