//! Passive outlier detection: a server answering 5xx is ejected (per shard)
//! after `consecutive` failures, gets no requests while ejected, and comes
//! back when the ejection ends.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::fleet::{fleet, fleet_config};
use crate::support::*;

#[test]
fn a_failing_server_is_ejected_and_returns() {
    for_each_shard_count(|shards| {
        let members = fleet(3);
        members[1].fail_with(500);
        let keys = [(
            "outlier",
            r#"{ consecutive = 3, on = ["5xx"], base_ejection = "1s", max_ejection = "4s", max_ejected_percent = 50 }"#,
        )];
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &keys));
        let mut clients: Vec<Client> = (0..6).map(|_| proxy.client()).collect();
        let mut failures = 0;
        let started = Instant::now();
        for i in 0..90 {
            match clients[i % 6].get("/").status {
                200 => {}
                500 => failures += 1,
                other => panic!("status {other}"),
            }
        }
        // Each shard sent it 3 failing requests, then ejected it.
        assert!(
            failures <= 3 * shards,
            "{failures} failures reached clients"
        );
        assert_eq!(members[1].served(), failures);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "too slow to see the ejection; the machine is overloaded"
        );

        // The server recovers; once its ejection ends it gets requests again.
        members[1].fail_with(200);
        let deadline = Instant::now() + Duration::from_secs(5);
        let before = members[1].served();
        let mut i = 0;
        while members[1].served() == before {
            assert!(
                Instant::now() < deadline,
                "the ejected server never came back"
            );
            assert_status(&clients[i % 6].get("/"), 200);
            i += 1;
            thread::sleep(Duration::from_millis(10));
        }
    });
}
