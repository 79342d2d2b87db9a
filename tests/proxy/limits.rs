//! Request size limits: target over `max_uri_length` (414), too many header
//! fields or a head over `max_header_bytes` (431), a Content-Length over
//! `max_body_size` (413), and a chunked body growing past it (413 while the
//! response has not started, otherwise a closed connection). A request right
//! at each limit still passes, so the limits are not off by one.

use crate::support::origin;
use crate::support::*;

const MAX_URI_LENGTH: usize = 256;
const MAX_HEADERS: usize = 10;
const MAX_HEADER_BYTES: usize = 2048;
const MAX_BODY_SIZE: usize = 1024;

fn limited_proxy(origin: &Origin, shards: usize) -> Proxy {
    let config = ProxyConfig::for_origin(shards, origin.addr())
        .http("max_uri_length", &MAX_URI_LENGTH.to_string())
        .http("max_headers", &MAX_HEADERS.to_string())
        .http("max_header_bytes", &MAX_HEADER_BYTES.to_string())
        .http("max_body_size", &MAX_BODY_SIZE.to_string());
    Proxy::start(&config)
}

/// A GET for a `target_len`-byte target with `extra_headers` after Host.
fn get_request(target_len: usize, extra_headers: &[String]) -> Vec<u8> {
    let target = format!("/{}", "t".repeat(target_len - 1));
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {TEST_HOST}\r\n");
    for header in extra_headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

fn numbered_headers(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("X-Header-{n}: {n}")).collect()
}

/// Sends `request` on a new connection and returns the response status.
fn status_of(proxy: &Proxy, request: &[u8], method: &str) -> u16 {
    let mut client = proxy.client();
    client.send(request);
    client.read_response(method).status
}

#[test]
fn long_target_gets_414() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = limited_proxy(&origin, shards);
        assert_eq!(
            status_of(&proxy, &get_request(MAX_URI_LENGTH, &[]), "GET"),
            200
        );
        assert_eq!(
            status_of(&proxy, &get_request(MAX_URI_LENGTH + 1, &[]), "GET"),
            414
        );
        assert_eq!(
            status_of(&proxy, &get_request(MAX_URI_LENGTH * 4, &[]), "GET"),
            414
        );
        assert_eq!(
            origin.heads(),
            1,
            "only the request within the limit may reach the upstream"
        );
    });
}

#[test]
fn too_many_header_fields_get_431() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = limited_proxy(&origin, shards);
        // Host plus the numbered ones.
        let at_limit = get_request(10, &numbered_headers(MAX_HEADERS - 1));
        assert_eq!(status_of(&proxy, &at_limit, "GET"), 200);
        let over_limit = get_request(10, &numbered_headers(MAX_HEADERS * 2));
        assert_eq!(status_of(&proxy, &over_limit, "GET"), 431);
        assert_eq!(origin.heads(), 1);
    });
}

#[test]
fn oversized_head_gets_431() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = limited_proxy(&origin, shards);
        let big_header = format!("X-Big: {}", "v".repeat(MAX_HEADER_BYTES));
        assert_eq!(
            status_of(&proxy, &get_request(10, &[big_header]), "GET"),
            431
        );
        let fitting_header = format!("X-Big: {}", "v".repeat(MAX_HEADER_BYTES / 2));
        assert_eq!(
            status_of(&proxy, &get_request(10, &[fitting_header]), "GET"),
            200
        );
        assert_eq!(origin.heads(), 1);
    });
}

/// The byte `post_with_length` bodies are made of.
const BODY_BYTE: u8 = b'b';

fn post_with_length(length: usize) -> Vec<u8> {
    let mut request =
        format!("POST /body HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: {length}\r\n\r\n")
            .into_bytes();
    request.extend(std::iter::repeat_n(BODY_BYTE, length));
    request
}

#[test]
fn content_length_over_limit_gets_413() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = limited_proxy(&origin, shards);
        assert_eq!(
            status_of(&proxy, &post_with_length(MAX_BODY_SIZE), "POST"),
            200
        );
        let mut client = proxy.client();
        client.send(
            format!(
                "POST /body HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY_SIZE + 1
            )
            .as_bytes(),
        );
        assert_status(&client.read_response("POST"), 413);
        assert_eq!(
            origin.heads(),
            1,
            "the oversized request reached the upstream"
        );
    });
}

/// A chunked POST of `chunks` chunks of 512 bytes.
fn chunked_post(chunks: usize) -> Vec<u8> {
    let chunk = format!("200\r\n{}\r\n", "c".repeat(0x200));
    let mut request = format!(
        "POST /chunked HTTP/1.1\r\nHost: {TEST_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    request.push_str(&chunk.repeat(chunks));
    request.push_str("0\r\n\r\n");
    request.into_bytes()
}

#[test]
fn chunked_body_growing_over_limit_gets_413_and_close() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = limited_proxy(&origin, shards);
        assert_eq!(
            status_of(&proxy, &chunked_post(MAX_BODY_SIZE / 0x200), "POST"),
            200
        );
        let mut client = proxy.client();
        client.send(&chunked_post(MAX_BODY_SIZE / 0x200 + 1));
        // The origin never answers an incomplete body, so the response has
        // not started when the limit is crossed: 413 is still possible.
        let response = client.expect_response_then_close("POST");
        assert_status(&response, 413);
        assert_eq!(
            origin.request_count(),
            1,
            "the upstream received the whole oversized body"
        );
    });
}

#[test]
fn zero_max_body_size_means_no_limit() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::start(
            &ProxyConfig::for_origin(shards, origin.addr()).http("max_body_size", "0"),
        );
        let body = vec![BODY_BYTE; 2 * 1024 * 1024];
        let mut client = proxy.client();
        client.send(&post_with_length(body.len()));
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(response.body_text(), BodyDigest::of(&body).to_text());
    });
}

/// With the smallest buffers (1 KiB) the first bytes of a request, which
/// arrive through the shard's 4 KiB provided-buffer ring, must still fit the
/// connection's buffer: a head larger than it gets 431, a small one passes.
#[test]
fn smallest_buffers_take_a_large_head_without_harm() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = ProxyConfig::for_origin(shards, origin.addr())
            .http("buffer_size", "1024")
            .http("max_header_bytes", "1024")
            .http("max_headers", "256");
        let proxy = Proxy::start(&config);
        let long_fields: Vec<String> = (0..100)
            .map(|n| format!("X-Long-{n}: {}", "v".repeat(40)))
            .collect();
        let big = get_request(64, &long_fields);
        assert!(big.len() > 3000, "the head must exceed the buffer by far");
        assert_eq!(status_of(&proxy, &big, "GET"), 431);
        assert_eq!(status_of(&proxy, &get_request(64, &[]), "GET"), 200);
    });
}
