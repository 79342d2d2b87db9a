//! Passive outlier detection: a server answering 5xx is ejected (per shard)
//! after `consecutive` failures, gets no requests while ejected, and comes
//! back when the ejection ends.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::fleet::{fleet, fleet_config};
use crate::support::sockets;
use crate::support::*;

#[test]
fn a_failing_server_is_ejected_and_returns() {
    for_each_shard_count(|shards| {
        let members = fleet(3);
        members[1].fail_with(500);
        let keys = [(
            "outlier",
            r#"{ consecutive = 3, on = ["5xx"], base_ejection = "2s", max_ejection = "8s", max_ejected_percent = 50 }"#,
        )];
        let proxy = Proxy::start(&fleet_config(shards, &members, &[], &keys));
        let mut clients: Vec<Client> = (0..6).map(|_| proxy.client()).collect();
        let mut failures = 0;
        let started = Instant::now();
        for i in 0..60 {
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
            started.elapsed() < Duration::from_secs(2),
            "too slow to see the ejection; the machine is overloaded"
        );

        // The server recovers; once its ejection ends it gets requests again.
        members[1].fail_with(200);
        let deadline = Instant::now() + Duration::from_secs(8);
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

#[test]
fn when_the_servers_left_refuse_the_request_fails_fast() {
    for_each_shard_count(|shards| {
        let members = fleet(1);
        members[0].fail_with(500);
        let refusing = [sockets::closed_port(), sockets::closed_port()];
        let servers = format!(
            "[\"{}\", \"{}\", \"{}\"]",
            members[0].origin.addr(),
            refusing[0],
            refusing[1]
        );
        // One 500 ejects the member; 34 % of 3 servers (1) leaves no room to
        // eject the refusing ones, so they stay "up" and keep refusing.
        let table = format!(
            "[[upstream]]\nname = \"u\"\nservers = {servers}\nbalance = \"round_robin\"\noutlier = {{ consecutive = 1, max_ejected_percent = 34 }}\n"
        );
        let proxy = Proxy::start(
            &ProxyConfig::new(shards)
                .raw_upstream(table)
                .route(None, "/", "u"),
        );
        let mut statuses = Vec::new();
        for _ in 0..6 {
            let mut client = proxy.client();
            client.set_read_timeout(Duration::from_secs(5));
            statuses.push(client.get("/").status);
        }
        assert!(
            statuses.iter().all(|s| [500, 502].contains(s)),
            "{statuses:?}"
        );
        assert!(
            statuses.iter().filter(|&&s| s == 500).count() <= shards,
            "{statuses:?}"
        );
        assert!(statuses.contains(&502), "{statuses:?}");
    });
}
