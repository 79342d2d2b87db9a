//! Active health checks: a server whose checks fail (or that stops
//! listening) is marked down within `interval × fall` and gets no request
//! after that, even over warm pooled connections; `rise` passing checks
//! bring it back; with `consistent_hash`, only the down server's keys move.

use std::collections::HashMap;
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
            (0..80)
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
        // About a quarter of the keys lived on the server that went down.
        assert!((8..=32).contains(&moved), "{moved} of 80 keys moved");
    });
}
