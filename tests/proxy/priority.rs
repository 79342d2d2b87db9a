//! Priority classes under saturation: with the only server at `max_conns`
//! and the queue full, a high-class request (picked by `priority_header`)
//! takes the place of a queued low-class one, which is shed with 503 and
//! Retry-After; when the server frees up, the high-class requests are served
//! first and complete. With the shard at `max_inflight`, low classes are
//! shed while the headroom above them admits high ones.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::origin::{self, After, Gate};
use crate::support::*;

/// Enough low-class requests that every shard surely gets its server slot
/// and queue (1 + 2) filled: the rest are shed at once.
const LOWS: usize = 30;
const HIGHS: usize = 2;
const QUEUE: usize = 2;

/// Sends `GET path` with `headers` on a new connection; the response arrives on `done`.
fn send_async(
    proxy: &Proxy,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    done: &mpsc::Sender<(String, Response)>,
) {
    let mut client = proxy.client();
    client.send(client::request_head_with("GET", &path, &headers).as_bytes());
    let done = done.clone();
    thread::spawn(move || {
        let response = client.read_response("GET");
        let _ = done.send((path, response));
    });
}

/// Receives responses until `count` of them are 503s; returns all received.
fn until_shed(
    responses: &mpsc::Receiver<(String, Response)>,
    got: &mut Vec<(String, Response)>,
    count: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.iter().filter(|(_, r)| r.status == 503).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match responses.recv_timeout(left) {
            Ok(response) => got.push(response),
            Err(_) => panic!("waited for {count} 503s, got {got:?}"),
        }
    }
}

/// An origin that holds every request until `gate` opens.
fn held_origin(gate: &std::sync::Arc<Gate>) -> Origin {
    let held = gate.clone();
    Origin::start(move |request, stream| {
        held.wait();
        origin::send_ok(stream, request.target.as_bytes());
        After::KeepAlive
    })
}

/// Collects responses until there are `total`.
fn all_responses(
    responses: &mpsc::Receiver<(String, Response)>,
    got: &mut Vec<(String, Response)>,
    total: usize,
) {
    while got.len() < total {
        got.push(
            responses
                .recv_timeout(Duration::from_secs(10))
                .expect("a response"),
        );
    }
}

/// Checks every high-class response is a 200 and every shed one a proxy
/// 503 with Retry-After; returns how many low-class requests were served.
fn check_outcomes(got: &[(String, Response)]) -> usize {
    let mut low_served = 0;
    for (path, response) in got {
        if path.starts_with("/high/") {
            assert_status(response, 200);
        } else if response.status == 503 {
            assert_error_response(response, 503);
            assert_eq!(response.header("retry-after"), Some("1"), "{path}");
        } else {
            assert_status(response, 200);
            low_served += 1;
        }
    }
    low_served
}

#[test]
fn high_classes_complete_while_low_ones_are_shed() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = held_origin(&gate);
        let limits = [
            ("max_conns", "1"),
            ("queue_size", "2"),
            ("queue_timeout", "\"20s\""),
        ];
        let config = ProxyConfig::new(shards)
            .upstream_with("o", &[origin.addr()], &limits)
            .route_with(
                None,
                "/",
                "o",
                &[("priority", "2"), ("priority_header", "\"X-Priority\"")],
            );
        let proxy = Proxy::start(&config);
        let (done, responses) = mpsc::channel();
        let mut got = Vec::new();

        // Low class (the route's 2): per shard one in flight, QUEUE queued, the rest shed.
        for i in 0..LOWS {
            send_async(&proxy, format!("/low/{i}"), vec![], &done);
        }
        until_shed(&responses, &mut got, LOWS - (1 + QUEUE) * shards);
        // High class: each takes a queued low request's place.
        for i in 0..HIGHS {
            send_async(
                &proxy,
                format!("/high/{i}"),
                vec![("X-Priority", "7")],
                &done,
            );
        }
        until_shed(&responses, &mut got, LOWS - (1 + QUEUE) * shards + HIGHS);

        gate.open();
        while got.len() < LOWS + HIGHS {
            got.push(
                responses
                    .recv_timeout(Duration::from_secs(10))
                    .expect("a response"),
            );
        }
        for (path, response) in &got {
            if path.starts_with("/high/") {
                assert_status(response, 200);
            } else if response.status == 503 {
                assert_error_response(response, 503);
                assert_eq!(response.header("retry-after"), Some("1"), "{path}");
            } else {
                assert_status(response, 200);
            }
        }
        let low_served = got
            .iter()
            .filter(|(path, r)| path.starts_with("/low/") && r.status == 200)
            .count();
        assert_eq!(low_served, (1 + QUEUE) * shards - HIGHS);
        if shards == 1 {
            // Served in order: the low request in flight, then both high ones.
            let order: Vec<String> = origin.requests().into_iter().map(|r| r.target).collect();
            assert!(order[0].starts_with("/low/"), "{order:?}");
            assert!(
                order[1..].iter().all(|t| t.starts_with("/high/")),
                "{order:?}"
            );
        }
    });
}

#[test]
fn a_full_shard_sheds_low_classes_first() {
    // max_inflight = 8: class 0 is admitted up to 6 in flight, class 7 up to 8.
    const LOW_LIMIT: usize = 6;
    const LOWS: usize = 40;
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = held_origin(&gate);
        let config = ProxyConfig::new(shards)
            .set("server.tuning", "max_inflight", "8")
            .upstream("o", &[origin.addr()])
            .route_with(None, "/", "o", &[("priority_header", "\"X-Priority\"")]);
        let proxy = Proxy::start(&config);
        let (done, responses) = mpsc::channel();
        let mut got = Vec::new();
        for i in 0..LOWS {
            send_async(&proxy, format!("/low/{i}"), vec![], &done);
        }
        until_shed(&responses, &mut got, LOWS - LOW_LIMIT * shards);
        for i in 0..HIGHS {
            send_async(
                &proxy,
                format!("/high/{i}"),
                vec![("X-Priority", "7")],
                &done,
            );
        }
        // The high-class requests reach the origin past the full low class.
        let deadline = Instant::now() + Duration::from_secs(10);
        while origin.heads() < LOW_LIMIT * shards + HIGHS {
            assert!(
                Instant::now() < deadline,
                "high-class requests were not admitted"
            );
            thread::sleep(Duration::from_millis(5));
        }
        gate.open();
        all_responses(&responses, &mut got, LOWS + HIGHS);
        assert_eq!(check_outcomes(&got), LOW_LIMIT * shards);
    });
}

#[test]
fn a_request_queued_past_queue_timeout_gets_503() {
    const REQUESTS: usize = 8;
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = held_origin(&gate);
        let limits = [("max_conns", "1"), ("queue_timeout", "\"200ms\"")];
        let config = ProxyConfig::new(shards)
            .upstream_with("o", &[origin.addr()], &limits)
            .route(None, "/", "o");
        let proxy = Proxy::start(&config);
        let (done, responses) = mpsc::channel();
        let started = Instant::now();
        for i in 0..REQUESTS {
            send_async(&proxy, format!("/low/{i}"), vec![], &done);
        }
        // Per shard in use one request holds the server; the others wait, then give up.
        let mut got: Vec<(String, Response)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() + origin.heads() < REQUESTS {
            assert!(
                Instant::now() < deadline,
                "queued requests never timed out: {got:?}"
            );
            // Short waits: the count also grows when a request reaches the origin.
            if let Ok(response) = responses.recv_timeout(Duration::from_millis(20)) {
                got.push(response);
            }
        }
        assert!(got.iter().all(|(_, r)| r.status == 503), "{got:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "shed before queue_timeout"
        );
        gate.open();
        all_responses(&responses, &mut got, REQUESTS);
        assert_eq!(
            check_outcomes(&got),
            origin.heads(),
            "one served per shard in use"
        );
        assert!(origin.heads() <= shards);
    });
}
