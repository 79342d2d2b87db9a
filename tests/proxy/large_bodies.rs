//! 64 MiB bodies each way, with Content-Length and chunked: generated on the
//! fly, verified by digest on the other end, and the proxy's peak memory
//! must show it streamed them rather than buffering.

use std::net::TcpStream;

use crate::support::origin::{self, After};
use crate::support::proxy::peak_memory_bytes;
use crate::support::wire::encode_chunk;
use crate::support::*;

const LARGE_BODY: u64 = 64 * 1024 * 1024;
/// A proxy that buffered a whole large body would exceed this.
const STREAMING_MEMORY_LIMIT: u64 = 48 * 1024 * 1024;
const DOWNLOAD_SEED: u64 = 11;

fn assert_streamed(proxy: &Proxy) {
    let peak = peak_memory_bytes(proxy.pid());
    assert!(
        peak < STREAMING_MEMORY_LIMIT,
        "the proxy's peak RSS reached {} MiB moving a {} MiB body: is it buffering?",
        peak >> 20,
        LARGE_BODY >> 20
    );
}

/// POSTs a large pattern body: `framing` is the framing header, `frame`
/// turns each piece into wire bytes, `end` closes the body.
fn assert_large_upload(framing: &str, frame: fn(&[u8]) -> Vec<u8>, end: &[u8]) {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(
            format!("POST /upload HTTP/1.1\r\nHost: {TEST_HOST}\r\n{framing}\r\n\r\n").as_bytes(),
        );
        let sent = PatternBody::new(7, LARGE_BODY).stream(&mut |piece| client.send(&frame(piece)));
        client.send(end);
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            sent.to_text(),
            "the origin received a different body"
        );
        assert_eq!(origin.single_request().body_digest, sent);
        assert_streamed(&proxy);
    });
}

#[test]
fn large_request_body_is_streamed_to_origin() {
    assert_large_upload(
        &format!("Content-Length: {LARGE_BODY}"),
        <[u8]>::to_vec,
        b"",
    );
}

#[test]
fn large_chunked_request_body_is_streamed_to_origin() {
    assert_large_upload("Transfer-Encoding: chunked", encode_chunk, b"0\r\n\r\n");
}

/// `/length` and `/chunked`: the large pattern body in that framing;
/// anything else: a small body naming the target.
fn large_bodies(request: &Request, stream: &mut TcpStream) -> After {
    match request.target.as_str() {
        "/length" => origin::send_pattern_body(stream, DOWNLOAD_SEED, LARGE_BODY),
        "/chunked" => {
            origin::send(
                stream,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            PatternBody::new(DOWNLOAD_SEED, LARGE_BODY)
                .stream(&mut |piece| origin::send(stream, &encode_chunk(piece)));
            origin::send(stream, b"0\r\n\r\n");
        }
        other => origin::send_ok(stream, other.as_bytes()),
    }
    After::KeepAlive
}

/// GETs `path` from a `large_bodies` origin, checks the digest and that the
/// connection is still usable afterwards.
fn assert_large_download(path: &str, check_head: fn(&client::ResponseHead)) {
    for_each_shard_count(|shards| {
        let origin = Origin::start(large_bodies);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(client::request_head("GET", path).as_bytes());
        let head = client.read_head().expect("response head");
        assert_eq!(head.status, 200);
        check_head(&head);
        let mut received = BodyDigest::default();
        client
            .read_body(&head, "GET", &mut |piece| received.update(piece))
            .expect("the whole 64 MiB body");
        assert_eq!(
            received,
            PatternBody::new(DOWNLOAD_SEED, LARGE_BODY).stream(&mut |_| {})
        );
        assert_streamed(&proxy);
        assert_eq!(
            client.get("/again").body_text(),
            "/again",
            "the connection is unusable afterwards"
        );
    });
}

#[test]
fn large_response_body_is_streamed_to_client() {
    assert_large_download("/length", |head| {
        assert_eq!(
            head.header("content-length"),
            Some(LARGE_BODY.to_string().as_str())
        );
    });
}

#[test]
fn large_chunked_response_is_streamed_to_client() {
    assert_large_download("/chunked", |head| {
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    });
}
