//! Retries: a 503 is retried on another server; backoff with full jitter
//! shows in the gaps between tries, and `backoff_max` caps them; the retry
//! budget caps retries (none with a zero budget; one in flight per shard
//! with a floor of one, when six requests fail together); POST is not
//! retried unless `retry_non_idempotent`; nothing is retried once response
//! bytes reached the client.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::fleet::{fleet, fleet_config, Member};
use crate::support::origin::{self, After};
use crate::support::*;

fn retry(spec: &str) -> (&'static str, String) {
    ("retry", format!("{{ {spec} }}"))
}

fn config(shards: usize, members: &[Member], keys: &[(&'static str, String)]) -> ProxyConfig {
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet_config(shards, members, &[], &keys)
}

/// The gaps between consecutive tries of each of `requests` requests that
/// each made `tries` tries on `member`, one request after the other.
#[track_caller]
fn gaps_between_tries(member: &Member, requests: usize, tries: usize) -> Vec<Duration> {
    let arrivals = member.arrivals();
    assert_eq!(
        arrivals.len(),
        requests * tries,
        "{tries} tries per request"
    );
    arrivals
        .chunks(tries)
        .flat_map(|each| each.windows(2).map(|w| w[1] - w[0]))
        .collect()
}

fn mean(gaps: &[Duration]) -> Duration {
    gaps.iter().sum::<Duration>() / gaps.len() as u32
}

#[test]
fn a_503_is_retried_on_the_other_server() {
    for_each_shard_count(|shards| {
        let members = fleet(2);
        members[0].fail_with(503);
        let keys = [retry(
            r#"attempts = 2, on = ["503"], backoff_base = "1ms", backoff_max = "5ms""#,
        )];
        let proxy = Proxy::start(&config(shards, &members, &keys));
        let mut client = proxy.client();
        for _ in 0..10 {
            let response = client.get("/");
            assert_status(&response, 200);
            assert_eq!(response.body_text(), "s1");
        }
        // Round-robin sends about half the first tries to the failing server.
        assert!(members[0].served() >= 3, "{}", members[0].served());
        assert_eq!(members[1].served(), 10);
    });
}

#[test]
fn backoff_shows_in_the_gaps_between_tries() {
    for_each_shard_count(|shards| {
        let members = fleet(1);
        members[0].fail_with(503);
        let keys = [retry(
            r#"attempts = 4, on = ["503"], backoff_base = "40ms", backoff_max = "80ms", budget_min = 10"#,
        )];
        let proxy = Proxy::start(&config(shards, &members, &keys));
        let mut client = proxy.client();
        let started = Instant::now();
        const REQUESTS: usize = 5;
        for _ in 0..REQUESTS {
            // The last try's 503 goes to the client as it is.
            assert_status(&client.get("/"), 503);
        }
        let elapsed = started.elapsed();
        let gaps = gaps_between_tries(&members[0], REQUESTS, 4);
        // The caps (40, 80, 80 ms here) are checked exactly by the unit test
        // in src/upstream/retry.rs; through a busy machine a single gap can
        // stretch by scheduling delay, so only the whole run is bounded here.
        // Full jitter averages half the cap (~33 ms here); an absent backoff
        // would average well under 5 ms. 15 gaps make a mean under 10 ms
        // vanishingly unlikely with backoff in place.
        let mean = mean(&gaps);
        assert!(
            mean > Duration::from_millis(10),
            "mean gap {mean:?}: no backoff?"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    });
}

#[test]
fn backoff_max_caps_the_gaps() {
    const TRIES: usize = 6;
    for_each_shard_count(|shards| {
        let members = fleet(1);
        members[0].fail_with(503);
        // Uncapped, the waits would be drawn below 20, 40, 80, 160 and 320 ms
        // (mean 62 ms); capped at 20 ms, their mean is 10 ms.
        let keys = [retry(&format!(
            r#"attempts = {TRIES}, on = ["503"], backoff_base = "20ms", backoff_max = "20ms", budget_min = 10"#
        ))];
        let proxy = Proxy::start(&config(shards, &members, &keys));
        let mut client = proxy.client();
        for _ in 0..3 {
            assert_status(&client.get("/"), 503);
        }
        let gaps = gaps_between_tries(&members[0], 3, TRIES);
        // The mean of 15 gaps, each its wait plus the try itself and any
        // scheduling delay: well under the uncapped 62 ms.
        let mean = mean(&gaps);
        assert!(
            mean < Duration::from_millis(35),
            "mean gap {mean:?}: backoff_max not applied? {gaps:?}"
        );
    });
}

#[test]
fn the_budget_caps_retries() {
    for_each_shard_count(|shards| {
        let members = fleet(1);
        members[0].fail_with(503);
        // No share and no floor: the budget allows no retry at all.
        let keys = [retry(
            r#"attempts = 3, on = ["503"], backoff_base = "1ms", budget_percent = 0, budget_min = 0"#,
        )];
        let proxy = Proxy::start(&config(shards, &members, &keys));
        let mut client = proxy.client();
        for _ in 0..4 {
            assert_status(&client.get("/"), 503);
        }
        assert_eq!(members[0].served(), 4, "the budget allowed retries");
    });
}

#[test]
fn the_budget_caps_retries_in_flight_when_requests_fail_together() {
    const REQUESTS: usize = 6;
    for_each_shard_count(|shards| {
        // Floor 1: one retry in flight per shard at a time; floor 6: room for all.
        for (budget_min, retries) in [(1, 1..=shards), (REQUESTS, REQUESTS..=REQUESTS)] {
            let members = fleet(1);
            members[0].fail_with(503);
            // Each try takes 200 ms: the six first tries overlap, and a
            // retry holds its budget claim for at least that long.
            members[0].set_delay(Duration::from_millis(200));
            let keys = [retry(&format!(
                r#"attempts = 2, on = ["503"], backoff_base = "1ms", budget_percent = 0, budget_min = {budget_min}"#
            ))];
            let proxy = Proxy::start(&config(shards, &members, &keys));
            let clients: Vec<_> = (0..REQUESTS)
                .map(|_| {
                    let mut client = proxy.client();
                    thread::spawn(move || client.get("/").status)
                })
                .collect();
            for client in clients {
                assert_eq!(client.join().expect("a client thread panicked"), 503);
            }
            let retried = members[0].served() - REQUESTS;
            assert!(
                retries.contains(&retried),
                "budget_min = {budget_min}: {retried} retries, expected {retries:?}"
            );
        }
    });
}

#[test]
fn post_is_retried_only_when_allowed() {
    for_each_shard_count(|shards| {
        for (allowed, tries) in [(false, 1), (true, 3)] {
            let members = fleet(1);
            members[0].fail_with(502);
            let mut keys = vec![retry(r#"attempts = 3, on = ["502"], backoff_base = "1ms""#)];
            if allowed {
                keys.push(("retry_non_idempotent", "true".into()));
            }
            let proxy = Proxy::start(&config(shards, &members, &keys));
            let mut client = proxy.client();
            client.send(b"POST /form HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
            assert_status(&client.read_response("POST"), 502);
            assert_eq!(
                members[0].methods(),
                vec!["POST"; tries],
                "retry_non_idempotent = {allowed}"
            );
        }
    });
}

#[test]
fn nothing_is_retried_after_response_bytes_reached_the_client() {
    for_each_shard_count(|shards| {
        // A head and part of the body, then the connection drops.
        let origin = Origin::start(|_, stream| {
            origin::send(
                stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial",
            );
            After::Close
        });
        let keys = [(
            "retry",
            r#"{ attempts = 3, on = ["reset", "timeout", "502"], backoff_base = "1ms" }"#,
        )];
        let config = ProxyConfig::new(shards)
            .upstream_with("o", &[origin.addr()], &keys)
            .route(None, "/", "o");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        client.send(client::request_head("GET", "/").as_bytes());
        let head = client.read_head().expect("the head is forwarded");
        assert_eq!(head.status, 200);
        let outcome = client.read_body(&head, "GET", &mut |_| {});
        assert!(matches!(outcome, Err(ReadError::Closed)), "{outcome:?}");
        assert_eq!(
            origin.request_count(),
            1,
            "retried after the response started"
        );
    });
}

#[test]
fn a_cache_fetch_is_retried_too() {
    for_each_shard_count(|shards| {
        let members = fleet(2);
        members[0].fail_with(503);
        let keys = [retry(r#"attempts = 2, on = ["503"], backoff_base = "1ms""#)];
        let proxy = Proxy::start(&config(shards, &members, &keys).with_cache());
        for i in 0..6 {
            // Distinct targets: each one is a cache miss that goes to the origin.
            let response = proxy.client().get(&format!("/miss/{i}"));
            assert_status(&response, 200);
            assert_eq!(response.body_text(), "s1");
            assert!(
                response.header("cache-status").is_some(),
                "went through the cache"
            );
        }
        assert!(
            members[0].served() >= 1,
            "round-robin never tried the failing server"
        );
    });
}
