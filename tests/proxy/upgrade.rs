//! Upgrade (WebSocket) passthrough in reverse and forward modes: the
//! `Upgrade` and `Connection: upgrade` fields reach the origin, a 101 turns
//! the connection into a tunnel carrying WebSocket frames both ways until
//! each side closes, and an upgrade answered without 101 stays HTTP.

use std::io::{Read, Write};
use std::net::Shutdown;

use crate::forward_proxy::{connect_to, forward_config, read_head};
use crate::support::{
    assert_status, for_each_shard_count,
    origin::{self, After, Origin},
    Proxy,
};

/// An origin that switches an `Upgrade: websocket` request to a raw byte
/// echo after `101` (the proxy must not care what the new protocol is), and
/// answers anything else with `200` and the target.
fn websocket_echo_origin() -> Origin {
    Origin::start(|request, stream| {
        if request.header("upgrade") != Some("websocket") {
            origin::send_ok(stream, request.target.as_bytes());
            return After::KeepAlive;
        }
        let connection = request.header("connection").unwrap_or_default();
        assert!(connection.eq_ignore_ascii_case("upgrade"), "{connection}");
        origin::send(
            stream,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        );
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            origin::send(stream, &chunk[..n]);
        }
        After::Close
    })
}

/// Sends an upgrade request with `target` and `host` on a fresh connection,
/// expects a 101, and echoes a frame through the tunnel.
fn assert_websocket_echo(proxy: &Proxy, target: &str, host: &str) {
    upgrade_and_echo(connect_to(proxy), target, host);
}

/// The same after an ordinary request on the connection: from its second
/// request on, a client connection reads through its multishot receive,
/// and the tunnel must get the bytes from there.
fn assert_websocket_echo_after_a_request(proxy: &Proxy, target: &str, host: &str) {
    let mut stream = connect_to(proxy);
    let warm = format!("GET {target}/warm HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(warm.as_bytes()).unwrap();
    let response = read_head(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let length: usize = response
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("the warm-up response has a Content-Length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    upgrade_and_echo(stream, target, host);
}

fn upgrade_head(target: &str, host: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked WebSocket text frame "hi" (RFC 6455 §5.7).
const FRAME: [u8; 8] = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];

fn upgrade_and_echo(mut stream: std::net::TcpStream, target: &str, host: &str) {
    stream
        .write_all(upgrade_head(target, host).as_bytes())
        .unwrap();
    let response = read_head(&mut stream);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{response}");
    assert!(lower.contains("connection: upgrade"), "{response}");
    assert!(lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="));
    // The frame, and it back.
    stream.write_all(&FRAME).unwrap();
    let mut echoed = [0u8; 8];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, FRAME);
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn websocket_upgrade_passes_through_in_both_modes() {
    for_each_shard_count(|shards| {
        let origin = websocket_echo_origin();
        let reverse = Proxy::in_front_of(&origin, shards);
        assert_websocket_echo(&reverse, "/chat", "example.test");
        let forward = Proxy::start(&forward_config(shards));
        let host = origin.addr().to_string();
        assert_websocket_echo(&forward, &format!("http://{host}/chat"), &host);
        assert_eq!(origin.request_count(), 2);
    });
}

#[test]
fn websocket_upgrade_as_a_connections_second_request() {
    for_each_shard_count(|shards| {
        let origin = websocket_echo_origin();
        let reverse = Proxy::in_front_of(&origin, shards);
        assert_websocket_echo_after_a_request(&reverse, "/chat", "example.test");
        let forward = Proxy::start(&forward_config(shards));
        let host = origin.addr().to_string();
        assert_websocket_echo_after_a_request(&forward, &format!("http://{host}/chat"), &host);
        assert_eq!(origin.request_count(), 4);
    });
}

#[test]
fn an_upgrade_answered_without_101_stays_http() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(b"GET /no HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
        let response = client.read_response("GET");
        assert_status(&response, 200);
        assert_eq!(origin.single_request().header("upgrade"), Some("h2c"));
        // Still HTTP: a second request on the same connection works.
        assert_eq!(client.get("/again").body_text(), "/again");
        assert_eq!(origin.requests()[1].header("upgrade"), None);
    });
}

/// Bytes the client sends while the proxy still waits for the origin's 101
/// (on a connection's second request, so its multishot receive takes them)
/// reach the tunnel: the origin holds its 101 until the client has sent the
/// frame, so the frame is read before the tunnel starts waiting.
#[test]
fn bytes_sent_before_the_101_reach_the_tunnel() {
    use std::sync::{mpsc, Arc, Mutex};
    for_each_shard_count(|shards| {
        let (got_tx, got_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (got_tx, go_rx) = (Arc::new(Mutex::new(got_tx)), Arc::new(Mutex::new(go_rx)));
        let origin = Origin::start(move |request, stream| {
            if request.header("upgrade") != Some("websocket") {
                origin::send_ok(stream, request.target.as_bytes());
                return After::KeepAlive;
            }
            got_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            origin::send(
                stream,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                origin::send(stream, &chunk[..n]);
            }
            After::Close
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut stream = connect_to(&proxy);
        stream
            .write_all(b"GET /warm HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let warm = read_head(&mut stream);
        assert!(warm.starts_with("HTTP/1.1 200"), "{warm}");
        let mut body = [0u8; 5];
        stream.read_exact(&mut body).unwrap();
        assert_eq!(&body, b"/warm");
        stream
            .write_all(upgrade_head("/chat", "example.test").as_bytes())
            .unwrap();
        got_rx.recv().unwrap();
        stream.write_all(&FRAME).unwrap();
        go_tx.send(()).unwrap();
        let response = read_head(&mut stream);
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        let mut echoed = [0u8; 8];
        stream.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, FRAME);
    });
}
