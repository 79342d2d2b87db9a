//! Client-side timeouts: a request head that does not complete within
//! `client_header` (408 then close, also when trickled byte by byte), an idle
//! keep-alive connection past `client_keepalive`, and a request body that
//! stalls past `body_idle`. Each timeout is 300ms; the tests allow seconds.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::origin::{self, After};
use crate::support::*;

/// Longest the proxy may take to act on a 300ms timeout.
const TIMEOUT_SLACK: Duration = Duration::from_secs(2);

fn proxy_with_timeout(origin: &Origin, shards: usize, key: &str) -> Proxy {
    Proxy::start(&ProxyConfig::for_origin(shards, origin.addr()).timeout(key, "300ms"))
}

/// Waits for the proxy to close `client`; returns what it sent and when.
fn closed_within_slack(client: &mut Client, since: Instant) -> Vec<u8> {
    let received = client.expect_closed();
    let waited = since.elapsed();
    assert!(
        waited < TIMEOUT_SLACK,
        "a 300ms timeout closed the connection only after {waited:?}"
    );
    received
}

/// Asserts the proxy sent nothing, or a 408.
fn assert_nothing_or_408(received: &[u8]) {
    assert!(
        received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
        "expected a 408 or nothing, got {:?}",
        String::from_utf8_lossy(received)
    );
}

#[test]
fn partial_head_times_out_with_408() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = proxy_with_timeout(&origin, shards, "client_header");
        let mut client = proxy.client();
        let started = Instant::now();
        client.send(format!("GET /slow HTTP/1.1\r\nHost: {TEST_HOST}\r\n").as_bytes());
        let received = closed_within_slack(&mut client, started);
        assert!(
            received.starts_with(b"HTTP/1.1 408"),
            "expected a 408 before the close, got {:?}",
            String::from_utf8_lossy(&received)
        );
        assert_eq!(origin.heads(), 0);
    });
}

#[test]
fn trickled_head_still_times_out() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = proxy_with_timeout(&origin, shards, "client_header");
        let mut client = proxy.client();
        let mut trickle = client.stream().try_clone().unwrap();
        let started = Instant::now();
        // Slowloris: one byte every 50ms, never finishing the head; the
        // deadline is for the whole head, not per read.
        thread::spawn(move || {
            for byte in b"GET /slowloris HTTP/1.1\r\nHost: test.example\r\nX-Trickle: "
                .iter()
                .cycle()
            {
                if trickle.write_all(&[*byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let received = closed_within_slack(&mut client, started);
        assert_nothing_or_408(&received);
    });
}

#[test]
fn idle_keepalive_connection_is_closed() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = proxy_with_timeout(&origin, shards, "client_keepalive");
        let mut client = proxy.client();
        assert_status(&client.get("/once"), 200);
        let idle_since = Instant::now();
        let received = closed_within_slack(&mut client, idle_since);
        assert!(
            received.is_empty(),
            "unexpected bytes on an idle connection: {:?}",
            String::from_utf8_lossy(&received)
        );
    });
}

#[test]
fn stalled_request_body_closes_the_connection() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = proxy_with_timeout(&origin, shards, "body_idle");
        let mut client = proxy.client();
        let started = Instant::now();
        client.send(
            format!("POST /stall HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 100\r\n\r\nonly ten b").as_bytes(),
        );
        let received = closed_within_slack(&mut client, started);
        assert_nothing_or_408(&received);
        assert_eq!(
            origin.request_count(),
            0,
            "the upstream got a complete request from a truncated body"
        );
    });
}

#[test]
fn stalled_response_body_closes_the_client_connection() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = gate.clone();
        let origin = Origin::start(move |_, stream| {
            origin::send(
                stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
            );
            held.wait();
            After::Close
        });
        let proxy = proxy_with_timeout(&origin, shards, "body_idle");
        let mut client = proxy.client();
        let started = Instant::now();
        client.send(client::request_head("GET", "/stall").as_bytes());
        let head = client.read_head().expect("the response head");
        assert_eq!(head.status, 200);
        let outcome = client.read_body(&head, "GET", &mut |_| {});
        gate.open();
        assert!(
            matches!(outcome, Err(ReadError::Closed)),
            "a stalled upstream body must end in a closed client connection, got {outcome:?}"
        );
        assert!(
            started.elapsed() < TIMEOUT_SLACK,
            "closed only after {:?}",
            started.elapsed()
        );
    });
}

/// A config where every idle/first-byte timeout is 300ms.
fn proxy_with_short_timeouts(origin: &Origin, shards: usize) -> Proxy {
    let config = ProxyConfig::for_origin(shards, origin.addr())
        .timeout("body_idle", "300ms")
        .timeout("upstream_first_byte", "300ms");
    Proxy::start(&config)
}

/// Paced writes, one piece every 100ms: slow but never idle for 300ms.
const STEADY_PIECES: usize = 10;
const STEADY_PACE: Duration = Duration::from_millis(100);

#[test]
fn steady_slow_upload_is_not_timed_out() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = proxy_with_short_timeouts(&origin, shards);
        let mut client = proxy.client();
        client.send(
            format!("POST /steady HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: {STEADY_PIECES}\r\n\r\n").as_bytes(),
        );
        // The upload outlasts both timeouts; neither may fire: body_idle is
        // about silence, upstream_first_byte starts once the request is sent.
        for _ in 0..STEADY_PIECES {
            thread::sleep(STEADY_PACE);
            client.send(b"x");
        }
        let response = client.read_response("POST");
        assert_status(&response, 200);
        assert_eq!(
            response.body_text(),
            BodyDigest::of(&[b'x'; STEADY_PIECES]).to_text()
        );
    });
}

#[test]
fn steady_slow_download_is_not_timed_out() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|_, stream| {
            origin::send(
                stream,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {STEADY_PIECES}\r\n\r\n").as_bytes(),
            );
            for _ in 0..STEADY_PIECES {
                thread::sleep(STEADY_PACE);
                origin::send(stream, b"y");
            }
            After::KeepAlive
        });
        let proxy = proxy_with_short_timeouts(&origin, shards);
        let response = proxy.client().get("/steady");
        assert_status(&response, 200);
        assert_eq!(response.body, [b'y'; STEADY_PIECES]);
    });
}
