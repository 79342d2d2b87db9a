//! Self-checks of the test harness, without the proxy: the client and origin
//! agree on framing, the origin records raw chunked bytes, digests do not
//! depend on how a body is split, and a proxy failure can be told apart from
//! a harness failure.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::origin::{self, After};
use crate::support::sockets;
use crate::support::*;

#[test]
fn client_and_origin_agree_on_framing() {
    let origin = Origin::start(|request, stream| {
        match request.target.as_str() {
            "/chunked" => origin::send_chunked(stream, &[b"ab", b"cd"]),
            _ => origin::send_ok(stream, &request.body),
        }
        After::KeepAlive
    });
    let mut client = Client::connect(origin.addr());
    let chunked = client.get("/chunked");
    assert_eq!(chunked.body_text(), "abcd");
    client.send(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n");
    assert_eq!(client.read_response("POST").body_text(), "xyz");
    let seen = origin.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].raw_body, b"3\r\nxyz\r\n0\r\n\r\n");
    assert_eq!(origin.connections(), 1);
}

#[test]
fn origin_close_is_seen_as_closed() {
    let origin = Origin::start(origin::raw_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        After::Close,
    ));
    let mut client = Client::connect(origin.addr());
    client.send(client::request_head("GET", "/").as_bytes());
    let head = client.read_head().unwrap();
    assert!(matches!(
        client.read_body(&head, "GET", &mut |_| {}),
        Err(ReadError::Closed)
    ));
    origin.wait_for_closed_connections(1);
}

#[test]
fn digest_does_not_depend_on_piece_boundaries() {
    let mut whole = Vec::new();
    let streamed = PatternBody::new(3, 200_000).stream(&mut |piece| whole.extend_from_slice(piece));
    assert_eq!(BodyDigest::of(&whole), streamed);
    let mut split = BodyDigest::default();
    whole.chunks(777).for_each(|piece| split.update(piece));
    assert_eq!(split, streamed);
    assert_ne!(PatternBody::new(4, 200_000).stream(&mut |_| {}), streamed);
}

#[test]
fn unparsable_request_is_refused_by_the_origin() {
    // The origin must never accept what the proxy should have rejected.
    let origin = Origin::start(origin::echo_target());
    let mut stream = TcpStream::connect(origin.addr()).unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    origin.wait_for_closed_connections(1);
    assert_eq!(origin.request_count(), 0);
}

#[test]
fn blackhole_and_closed_port_fail_as_intended() {
    let blackhole = sockets::Blackhole::new();
    let error =
        TcpStream::connect_timeout(&blackhole.addr, Duration::from_millis(300)).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    let error = TcpStream::connect(sockets::closed_port()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}
