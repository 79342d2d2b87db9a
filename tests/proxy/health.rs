//! Active health checks: a server whose checks fail (or that stops
//! listening) is marked down within `interval × fall` and gets no request
//! after that, even over warm pooled connections; `rise` passing checks
//! bring it back; with `consistent_hash`, only the down server's keys move.
//! Killed mid-run, under steady traffic: the last request it got arrived
//! within `interval × fall` (plus slack) of the kill, and no client saw an
//! error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::fleet::{fleet, fleet_config, tally, Member};
use crate::support::*;

/// With `interval = 100ms` and `fall = 2`: `interval × fall`, plus the time a check takes and scheduling slack on a
/// busy machine (the suite runs tests in parallel on two cores). Waiting
/// this long is the property under test: the bound within which a dead
/// server must be out.
const MARKED_DOWN_WITHIN: Duration = Duration::from_millis(100 * 2 + 500);

fn health_key() -> (&'static str, &'static str) {
    (
        "health_check",
        r#"{ path = "/health", interval = "100ms", timeout = "300ms", rise = 2, fall = 2 }"#,
    )
}

/// Sends requests until `member` serves one, at most for `limit`.
fn wait_until_serving(proxy: &Proxy, member: &Member, limit: Duration) {
    let before = member.served();
    let deadline = Instant::now() + limit;
    let mut client = proxy.client();
    while member.served() == before {
        assert!(
            Instant::now() < deadline,
            "{} never came back",
            member.name()
        );
        assert_status(&client.get("/"), 200);
        // Not too fast: leave the probers room on a 2-core machine.
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn failing_checks_take_a_server_out_and_passing_ones_bring_it_back() {
    for_each_shard_count(|shards| {
        let members = fleet(3);
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &[health_key()]));
        // Warm pools on every shard: a down server must not be used through them either.
        tally(&proxy, 60, 6, &[]);
        assert!(members[1].served() > 0);

        members[1].set_healthy(false);
        thread::sleep(MARKED_DOWN_WITHIN);
        let before = members[1].served();
        let counts = tally(&proxy, 60, 6, &[]);
        assert_eq!(
            members[1].served(),
            before,
            "a down server got requests: {counts:?}"
        );
        assert_eq!(counts.values().sum::<usize>(), 60);

        members[1].set_healthy(true);
        wait_until_serving(&proxy, &members[1], Duration::from_secs(5));
    });
}

#[test]
fn a_server_that_stops_listening_is_marked_down_and_skipped() {
    for_each_shard_count(|shards| {
        let members = fleet(3);
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &[health_key()]));
        tally(&proxy, 60, 6, &[]);
        // Killed: new connections are refused, but the proxy's pooled
        // connections to it still answer; only the health checks notice.
        members[2].origin.stop_listening();
        thread::sleep(MARKED_DOWN_WITHIN);
        let before = members[2].served();
        let counts = tally(&proxy, 60, 6, &[]);
        assert_eq!(
            members[2].served(),
            before,
            "a dead server got requests: {counts:?}"
        );
    });
}

#[test]
fn consistent_hash_moves_only_the_down_servers_keys() {
    const KEYS: usize = 400;
    for_each_shard_count(|shards| {
        let members = fleet(4);
        let keys = [
            ("balance", "\"consistent_hash\""),
            ("hash_key", "\"header:X-User\""),
            health_key(),
        ];
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &keys));
        let owners = |proxy: &Proxy| -> HashMap<usize, String> {
            let mut client = proxy.client();
            (0..KEYS)
                .map(|user| {
                    let response =
                        client.request_with("GET", "/", &[("X-User", &format!("u{user}"))]);
                    assert_status(&response, 200);
                    (user, response.body_text())
                })
                .collect()
        };
        let before = owners(&proxy);
        members[3].set_healthy(false);
        thread::sleep(MARKED_DOWN_WITHIN);
        let after = owners(&proxy);
        let mut moved = 0;
        for (user, owner) in &before {
            if owner == members[3].name() {
                assert_ne!(&after[user], owner, "u{user} stayed on the down server");
                moved += 1;
            } else {
                assert_eq!(&after[user], owner, "u{user} moved off a healthy server");
            }
        }
        // About a quarter of the keys lived on the server that went down:
        // its share of the ring depends on its (ephemeral) port, and which
        // keys fall in it is a draw, so the bounds are wide (an eighth to
        // three eighths: over four standard deviations with 400 keys; 80
        // keys and 8..=32 failed once in CI with 34).
        assert!(
            (KEYS / 8..=3 * KEYS / 8).contains(&moved),
            "{moved} of {KEYS} keys moved"
        );
    });
}

/// Keeps `connections` clients sending GETs until `stop` is set; returns
/// their threads, each yielding the statuses it saw that were not 200.
fn steady_traffic(
    proxy: &Proxy,
    connections: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<Vec<u16>>> {
    (0..connections)
        .map(|_| {
            let mut client = proxy.client();
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let status = client.get("/").status;
                    if status != 200 {
                        bad.push(status);
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                bad
            })
        })
        .collect()
}

#[test]
fn a_server_killed_mid_run_gets_nothing_after_interval_times_fall() {
    for_each_shard_count(|shards| {
        let members = fleet(3);
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &[health_key()]));
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = steady_traffic(&proxy, 4, &stop);
        // Traffic reaches the victim over pooled connections before the kill.
        let deadline = Instant::now() + Duration::from_secs(5);
        while members[2].served() < 10 {
            assert!(Instant::now() < deadline, "no traffic reached s2");
            thread::sleep(Duration::from_millis(5));
        }
        let killed = Instant::now();
        members[2].origin.stop_listening();
        // Keep the load on well past the bound, so a late request would show.
        thread::sleep(MARKED_DOWN_WITHIN + Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let bad: Vec<u16> = traffic
            .into_iter()
            .flat_map(|t| t.join().expect("a client thread panicked"))
            .collect();
        assert!(bad.is_empty(), "clients saw {bad:?}");
        let last = *members[2]
            .arrivals()
            .last()
            .expect("s2 served before the kill");
        let after_kill = last.saturating_duration_since(killed);
        assert!(
            after_kill <= MARKED_DOWN_WITHIN,
            "s2 got a request {after_kill:?} after the kill"
        );
        // The others carried the load after that.
        assert!(members[0].arrivals().last().unwrap() > &(killed + MARKED_DOWN_WITHIN));
        assert!(proxy.output().contains(&format!(
            "upstream server {} is down",
            members[2].origin.addr()
        )));
    });
}
