//! Trailers and the `Trailer` field stay consistent (RFC 9110 §6.6.2): a
//! chunked body passes through verbatim with its trailer section, so the
//! `Trailer` field announcing it is forwarded too, both ways; where the
//! trailers cannot follow (a de-chunked body for an HTTP/1.0 client, a body
//! served from the cache, which keeps payload only, a body that is not
//! chunked) neither does the field.

use crate::support::cache::{cache_config, scripted_origin, CacheStatus, Reply};
use crate::support::client::request_head_with;
use crate::support::origin::{self, After};
use crate::support::*;

const TRAILED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\
Cache-Control: max-age=60\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n";

/// Everything the proxy sends for one `Connection: close` request.
fn raw_exchange(proxy: &Proxy, request: &str) -> String {
    let mut client = proxy.client();
    client.send(request.as_bytes());
    String::from_utf8_lossy(&client.expect_closed()).into_owned()
}

#[test]
fn trailer_field_and_trailers_pass_through_together() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::raw_response(TRAILED, After::KeepAlive));
        let proxy = Proxy::in_front_of(&origin, shards);
        let request = request_head_with("GET", "/t", &[("Connection", "close")]);
        let raw = raw_exchange(&proxy, &request);
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole head");
        assert!(head.contains("\r\nTrailer: X-Checksum"), "{raw}");
        assert!(body.ends_with("0\r\nX-Checksum: abc\r\n\r\n"), "{raw}");
        // An HTTP/1.0 client gets the payload alone: neither.
        let raw = raw_exchange(&proxy, "GET /t HTTP/1.0\r\nHost: test.example\r\n\r\n");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole head");
        assert!(!head.to_ascii_lowercase().contains("trailer"), "{raw}");
        assert_eq!(body, "hello");
    });
}

#[test]
fn cached_bodies_carry_neither_trailers_nor_the_trailer_field() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, _| {
            Reply::ok("hello")
                .chunked()
                .header("Trailer", "X-Checksum")
                .cache_control("max-age=60")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_eq!(proxy.client().get("/ct").body, b"hello");
        let hit = proxy.client().get("/ct");
        assert!(CacheStatus::of(&hit).expect("a Cache-Status").hit);
        assert_eq!(hit.body, b"hello");
        assert!(!hit.has_header("trailer"), "{:?}", hit.headers);
    });
}

#[test]
fn a_chunked_request_keeps_its_trailer_field_and_trailers() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(
            b"POST /up HTTP/1.1\r\nHost: test.example\r\nTransfer-Encoding: chunked\r\n\
Trailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
        );
        assert_status(&client.read_response("POST"), 200);
        // A sized request's Trailer field announces nothing: dropped.
        client.send(
            b"POST /sized HTTP/1.1\r\nHost: test.example\r\nContent-Length: 3\r\nTrailer: X-Sum\r\n\r\nabc",
        );
        assert_status(&client.read_response("POST"), 200);
        let requests = origin.requests();
        let chunked = &requests[requests.len() - 2];
        assert_eq!(chunked.header("trailer"), Some("X-Sum"));
        assert!(chunked.raw_body.ends_with(b"0\r\nX-Sum: 1\r\n\r\n"));
        assert_eq!(requests[requests.len() - 1].header("trailer"), None);
    });
}
