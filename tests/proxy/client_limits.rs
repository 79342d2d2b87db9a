//! Client limits: a client IP over `connections_per_ip` gets 429 and a close,
//! and a slot frees when a connection closes; over the per-IP request rate
//! or a route's `rate_limit`, requests get 429 with Retry-After on a
//! connection that stays usable, while other routes are unaffected.
//! Rates are checked against the time the requests took, so a slow machine
//! cannot make the tests flaky.

use std::time::{Duration, Instant};

use crate::support::*;

fn limited(shards: usize, origin: &Origin) -> ProxyConfig {
    ProxyConfig::for_origin(shards, origin.addr())
}

#[test]
fn connections_over_the_per_ip_limit_get_429_and_close() {
    // One shard: with several, the kernel's hash decides which shard (and
    // so which share) a connection meets; the share arithmetic is unit-tested.
    let origin = Origin::start(origin::echo_target());
    let proxy = Proxy::start(&limited(1, &origin).set("limits", "connections_per_ip", "2"));
    let mut first = proxy.client();
    let mut second = proxy.client();
    assert_status(&first.get("/a"), 200);
    assert_status(&second.get("/b"), 200);
    let mut third = proxy.client();
    let refused = third.expect_response_then_close("GET");
    assert_status(&refused, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = proxy.client();
        match next.try_get("/c") {
            Ok(response) if response.status == 200 => break,
            _ => assert!(Instant::now() < deadline, "no slot freed after a close"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_status(&second.get("/d"), 200);
}

/// Sends `n` GETs to `path` on one connection; returns the statuses, the
/// first 429's Retry-After, and how long it took.
fn burst(client: &mut Client, path: &str, n: usize) -> (Vec<u16>, Option<String>, Duration) {
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..n {
        let response = client.get(path);
        if response.status == 429 && retry_after.is_none() {
            retry_after = response.header("retry-after").map(str::to_string);
        }
        statuses.push(response.status);
    }
    (statuses, retry_after, started.elapsed())
}

/// Checks a burst against a bucket of `burst` tokens refilled at `rate`/s.
#[track_caller]
fn check_burst(
    statuses: &[u16],
    retry_after: Option<String>,
    took: Duration,
    burst: u64,
    rate: u64,
) {
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert_eq!(ok + limited, statuses.len() as u64, "{statuses:?}");
    let most = burst + (took.as_secs_f64() * rate as f64).floor() as u64;
    assert!(
        ok >= burst && ok <= most,
        "{ok} OK of {statuses:?} in {took:?}"
    );
    if most < statuses.len() as u64 {
        assert!(limited > 0, "{statuses:?}");
        let seconds: u64 = retry_after.expect("Retry-After on a 429").parse().unwrap();
        assert!((1..=2).contains(&seconds), "Retry-After {seconds}");
    }
}

#[test]
fn per_ip_rate_answers_429_with_retry_after_and_keeps_the_connection() {
    let origin = Origin::start(origin::echo_target());
    let config = limited(1, &origin)
        .set("limits", "rate", "1")
        .set("limits", "burst", "4");
    let proxy = Proxy::start(&config);
    let mut client = proxy.client();
    let (statuses, retry_after, took) = burst(&mut client, "/x", 8);
    check_burst(&statuses, retry_after, took, 4, 1);
}

#[test]
fn route_rate_limit_applies_to_its_route_only() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = limited(shards, &origin).route_with(
            None,
            "/slow",
            "o",
            &[
                ("rate_limit", &shards.to_string()),
                ("rate_burst", &(2 * shards).to_string()),
            ],
        );
        let proxy = Proxy::start(&config);
        // One connection stays on one shard: it meets that shard's share,
        // a burst of 2 at 1 request/s.
        let mut client = proxy.client();
        let (statuses, retry_after, took) = burst(&mut client, "/slow/x", 6);
        check_burst(&statuses, retry_after, took, 2, 1);
        let (others, _, _) = burst(&mut client, "/fast", 6);
        assert!(others.iter().all(|s| *s == 200), "{others:?}");
    });
}
