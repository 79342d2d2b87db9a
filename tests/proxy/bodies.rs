//! Message bodies: chunked requests passed through verbatim, chunked and
//! close-delimited responses (de-chunked for HTTP/1.0 clients), bodies split
//! at every byte, body-less responses (HEAD, 204, 304) on a kept-alive
//! connection, and `Expect: 100-continue`. (64 MiB bodies: `large_bodies`.)

use std::net::TcpStream;

use crate::support::origin::{self, After};
use crate::support::*;

#[test]
fn chunked_request_body_is_forwarded_verbatim() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let chunks =
            "5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\nA\r\n0123456789\r\n0\r\n\r\n";
        let content = "helloabcdefghijklmnopqrstuvwxyz0123456789";
        client.send(
            format!("POST /chunked HTTP/1.1\r\nHost: {TEST_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
                .as_bytes(),
        );
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            BodyDigest::of(content.as_bytes()).to_text()
        );
        let seen = origin.single_request();
        assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
        assert_eq!(seen.header("content-length"), None);
        assert_eq!(
            String::from_utf8_lossy(&seen.raw_body),
            chunks,
            "chunk framing must pass verbatim"
        );
        assert_eq!(seen.body, content.as_bytes());
    });
}

#[test]
fn chunk_extensions_and_trailers_are_accepted() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let chunks = "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
        client.send(
            format!("POST /ext HTTP/1.1\r\nHost: {TEST_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}")
                .as_bytes(),
        );
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            BodyDigest::of(b"hello world").to_text()
        );
        assert_eq!(
            String::from_utf8_lossy(&origin.single_request().raw_body),
            chunks
        );
        // The connection is in sync afterwards.
        assert_status(&client.get("/after"), 200);
    });
}

#[test]
fn request_split_at_every_byte_is_parsed() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let chunks = "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let request = format!(
            "POST /split HTTP/1.1\r\nHost: {TEST_HOST}\r\nX-Some: header\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
        );
        client.send_bytewise(request.as_bytes());
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            BodyDigest::of(b"abc0123456789abcdef").to_text()
        );
        assert_eq!(
            String::from_utf8_lossy(&origin.single_request().raw_body),
            chunks
        );
    });
}

#[test]
fn response_split_at_every_byte_is_relayed() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|_, stream| {
            origin::send_bytewise(
                stream,
                b"HTTP/1.1 200 OK\r\nX-Split: yes\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n",
            );
            After::KeepAlive
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        for _ in 0..2 {
            let response = client.get("/split");
            assert_status(&response, 200);
            assert_eq!(response.header("x-split"), Some("yes"));
            assert_eq!(response.body_text(), "abcdef");
        }
    });
}

/// Chunked with a trailer field after the last chunk.
fn chunked_with_trailer(_: &Request, stream: &mut TcpStream) -> After {
    origin::send(
        stream,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    After::KeepAlive
}

#[test]
fn response_trailers_neither_leak_nor_desynchronise() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(chunked_with_trailer);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut modern = proxy.client();
        for _ in 0..2 {
            assert_eq!(modern.get("/trailer").body_text(), "wxyz");
        }
        let mut old = proxy.client();
        old.send(format!("GET /trailer HTTP/1.0\r\nHost: {TEST_HOST}\r\n\r\n").as_bytes());
        assert_eq!(old.expect_response_then_close("GET").body_text(), "wxyz");
    });
}

#[test]
fn expect_100_continue_with_body_sent_at_once_works() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        // An impatient client sends the body without waiting for the 100.
        client.send(format!("{}hello", expect_continue_head("/eager", 5)).as_bytes());
        let mut response = client.read_response("POST");
        if response.status == 100 {
            response = client.read_response("POST");
        }
        assert_status(&response, 200);
        assert_eq!(response.body_text(), BodyDigest::of(b"hello").to_text());
        assert_eq!(
            client.get("/next").status,
            200,
            "the connection is out of sync"
        );
    });
}

fn chunked_hello(_: &Request, stream: &mut TcpStream) -> After {
    origin::send_chunked(stream, &[b"hello ", b"chunked ", b"world"]);
    After::KeepAlive
}

#[test]
fn chunked_response_reaches_http11_client_intact() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(chunked_hello);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        for _ in 0..2 {
            let response = client.get("/chunked");
            assert_status(&response, 200);
            assert_eq!(response.header("transfer-encoding"), Some("chunked"));
            assert_eq!(response.body_text(), "hello chunked world");
        }
    });
}

#[test]
fn chunked_response_is_dechunked_for_http10_client() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(chunked_hello);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(format!("GET /chunked HTTP/1.0\r\nHost: {TEST_HOST}\r\n\r\n").as_bytes());
        let response = client.expect_response_then_close("GET");
        assert_status(&response, 200);
        assert!(
            !response.has_header("transfer-encoding"),
            "an HTTP/1.0 client must not get Transfer-Encoding: {:?}",
            String::from_utf8_lossy(&response.head.raw)
        );
        assert_eq!(response.body_text(), "hello chunked world");
    });
}

#[test]
fn close_delimited_response_reaches_client_intact() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::raw_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody delimited by close",
            After::Close,
        ));
        let proxy = Proxy::in_front_of(&origin, shards);
        let response = proxy.client().get("/close-delimited");
        assert_status(&response, 200);
        assert_eq!(response.body_text(), "body delimited by close");
    });
}

/// Answers HEAD like a GET without the body, in both framings.
fn head_aware(request: &Request, stream: &mut TcpStream) -> After {
    match (request.method.as_str(), request.target.as_str()) {
        ("HEAD", "/head-length") => origin::send(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n",
        ),
        ("HEAD", _) => origin::send(
            stream,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        _ => origin::send_ok(stream, request.target.as_bytes()),
    }
    After::KeepAlive
}

#[test]
fn head_response_has_no_body_and_connection_stays_usable() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(head_aware);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let head = client.request("HEAD", "/head-length");
        assert_status(&head, 200);
        assert_eq!(head.header("content-length"), Some("1234"));
        assert_eq!(client.get("/after-length").body_text(), "/after-length");
        assert_status(&client.request("HEAD", "/head-chunked"), 200);
        assert_eq!(client.get("/after-chunked").body_text(), "/after-chunked");
        assert!(
            !client.has_unread_bytes(),
            "stray bytes after the HEAD responses"
        );
    });
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            match request.target.as_str() {
                "/204" => origin::send(stream, b"HTTP/1.1 204 No Content\r\nX-Marker: nc\r\n\r\n"),
                // Content-Length on a 304 describes the representation, not a body.
                "/304" => origin::send(
                    stream,
                    b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n",
                ),
                other => origin::send_ok(stream, other.as_bytes()),
            }
            After::KeepAlive
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let no_content = client.get("/204");
        assert_status(&no_content, 204);
        assert_eq!(no_content.header("x-marker"), Some("nc"));
        assert_eq!(client.get("/after-204").body_text(), "/after-204");
        let not_modified = client.get("/304");
        assert_status(&not_modified, 304);
        assert_eq!(not_modified.header("etag"), Some("\"v1\""));
        assert_eq!(client.get("/after-304").body_text(), "/after-304");
        assert!(
            !client.has_unread_bytes(),
            "stray bytes after the body-less responses"
        );
    });
}

/// A POST head announcing `content_length` bytes with `Expect: 100-continue`.
fn expect_continue_head(path: &str, content_length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: {content_length}\r\nExpect: 100-continue\r\n\r\n"
    )
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(expect_continue_head("/expect", 11).as_bytes());
        let interim = client
            .read_head()
            .expect("an interim response before the body is sent");
        assert_eq!(
            interim.status,
            100,
            "{}",
            String::from_utf8_lossy(&interim.raw)
        );
        assert_eq!(interim.minor_version, 1);
        client.send(b"hello world");
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            BodyDigest::of(b"hello world").to_text()
        );
        let seen = origin.single_request();
        assert_eq!(
            seen.header("expect"),
            None,
            "Expect must not reach the upstream"
        );
        assert_eq!(seen.body, b"hello world");
    });
}

#[test]
fn expect_100_continue_over_body_limit_gets_413_without_continue() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let config = ProxyConfig::for_origin(shards, origin.addr()).http("max_body_size", "1024");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        client.send(expect_continue_head("/expect", 4096).as_bytes());
        assert_status(&client.read_response("POST"), 413);
        assert_eq!(
            origin.heads(),
            0,
            "an oversized request reached the upstream"
        );
    });
}
