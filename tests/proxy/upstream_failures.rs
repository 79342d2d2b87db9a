//! Upstream failures: closing before the response (502) or mid-body (client
//! connection closed, body truncated), retrying an idempotent request once
//! when a pooled connection turns out dead, malformed responses (502),
//! connection refused (502), no first byte in time (504) and a connect that
//! never completes (504).

use std::time::{Duration, Instant};

use crate::support::origin::{self, After};
use crate::support::sockets;
use crate::support::*;

#[test]
fn upstream_closing_before_responding_gives_502() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|_, _| After::Close);
        let proxy = Proxy::in_front_of(&origin, shards);
        assert_error_response(&proxy.client().get("/closes"), 502);
    });
}

#[test]
fn upstream_closing_mid_body_closes_the_client_connection() {
    const PARTIAL_RESPONSES: [(&str, &[u8]); 2] = [
        (
            "/content-length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly the start of the body",
        ),
        (
            "/chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ),
    ];
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            let (_, raw) = PARTIAL_RESPONSES
                .iter()
                .find(|(path, _)| *path == request.target)
                .unwrap();
            origin::send(stream, raw);
            After::Close
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        for (path, _) in PARTIAL_RESPONSES {
            let mut client = proxy.client();
            client.send(client::request_head("GET", path).as_bytes());
            let head = client
                .read_head()
                .expect("the response head is forwarded before the body");
            assert_eq!(head.status, 200);
            let outcome = client.read_body(&head, "GET", &mut |_| {});
            assert!(
                matches!(outcome, Err(ReadError::Closed)),
                "{path}: a truncated upstream body must end in a closed client connection, got {outcome:?}"
            );
        }
    });
}

#[test]
fn get_on_dead_pooled_connection_is_retried() {
    for_each_shard_count(|shards| {
        // Every upstream connection is closed right after one complete
        // keep-alive response, so the proxy's pooled connection is dead.
        let origin = Origin::start(|request, stream| {
            origin::send_ok(stream, request.target.as_bytes());
            After::Close
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        for round in 1..=3 {
            let path = format!("/retry/{round}");
            let response = client.get(&path);
            assert_status(&response, 200);
            assert_eq!(response.body_text(), path);
            origin.wait_for_closed_connections(round);
        }
        assert_eq!(origin.request_count(), 3);
    });
}

#[test]
fn malformed_upstream_responses_give_502() {
    const MALFORMED: [(&str, &[u8]); 6] = [
        (
            "Content-Length with Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "non-numeric status",
            b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        ),
        ("not HTTP at all", b"this is not http\r\n\r\n"),
        (
            "two differing Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "non-numeric Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
        ),
        (
            "header without colon",
            b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            let index: usize = request.target.trim_start_matches('/').parse().unwrap();
            origin::send(stream, MALFORMED[index].1);
            After::Close
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        assert_every_case(
            "malformed upstream responses not turned into 502",
            &MALFORMED,
            |raw| {
                let index = MALFORMED
                    .iter()
                    .position(|(_, candidate)| candidate == raw)
                    .unwrap();
                expect_status(proxy.client().try_get(&format!("/{index}")), 502).map(drop)
            },
        );
    });
}

#[test]
fn refused_upstream_connection_gives_502() {
    for_each_shard_count(|shards| {
        let closed_port = sockets::closed_port();
        let config = ProxyConfig::new(shards)
            .upstream("o", &[closed_port])
            .route(None, "/", "o");
        let proxy = Proxy::start(&config);
        assert_error_response(&proxy.client().get("/refused"), 502);
    });
}

#[test]
fn upstream_not_answering_in_time_gives_504() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = Origin::start(origin::held_until_open(&gate));
        let config =
            ProxyConfig::for_origin(shards, origin.addr()).timeout("upstream_first_byte", "300ms");
        let proxy = Proxy::start(&config);
        let started = Instant::now();
        let response = proxy.client().get("/slow");
        gate.open();
        assert_error_response(&response, 504);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "504 only after {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn upstream_connect_timeout_gives_504() {
    for_each_shard_count(|shards| {
        let blackhole = sockets::Blackhole::new();
        let config = ProxyConfig::new(shards)
            .upstream("o", &[blackhole.addr])
            .route(None, "/", "o")
            .timeout("upstream_connect", "300ms");
        let proxy = Proxy::start(&config);
        let started = Instant::now();
        let response = proxy.client().get("/blackhole");
        assert_error_response(&response, 504);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the 300ms connect timeout took {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn post_is_not_retried_when_upstream_closes_without_answering() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|_, _| After::Close);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(
            format!("POST /once HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 4\r\n\r\nbody")
                .as_bytes(),
        );
        assert_error_response(&client.read_response("POST"), 502);
        assert_eq!(
            origin.request_count(),
            1,
            "a non-idempotent request was sent upstream twice"
        );
    });
}

#[test]
fn early_upstream_response_during_upload_reaches_the_client() {
    for_each_shard_count(|shards| {
        let origin = Origin::start_answering_before_body(origin::raw_response(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope",
            After::Close,
        ));
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        // Announce a large body but send only its start: the answer must
        // come without the client finishing the upload.
        client.send(
            format!("POST /early HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 1048576\r\n\r\n")
                .as_bytes(),
        );
        client.send(&[b'u'; 4096]);
        let response = client.read_response("POST");
        assert_status(&response, 413);
        assert_eq!(response.body_text(), "nope");
    });
}
