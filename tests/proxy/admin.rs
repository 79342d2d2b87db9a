//! The admin endpoint: `/metrics` parses strictly and its counters match the
//! requests sent exactly (per route, method and status class, latency count,
//! upstream server, accepted connections); `/status` is JSON with a row per
//! shard; `/healthz`, the status page, and unknown paths and methods.

use std::time::{Duration, Instant};

use crate::support::fleet::{fleet, fleet_config};
use crate::support::prometheus::{self, Exposition};
use crate::support::sockets;
use crate::support::*;

fn admin_config(shards: usize, origin: &Origin) -> ProxyConfig {
    ProxyConfig::new(shards)
        .upstream("o", &[origin.addr()])
        .route(None, "/app", "o")
        .set("admin", "listen", r#""127.0.0.1:0""#)
}

/// Scrapes until `shardproxy_requests_total` reaches `total` (a request is
/// counted just after its response is written), at most a few seconds.
fn scrape_when_counted(proxy: &Proxy, total: f64) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = proxy.admin("GET", "/metrics");
        assert_eq!(status, 200, "{text}");
        let metrics = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let counted = metrics.sum("shardproxy_requests_total", &[]);
        if counted >= total || Instant::now() > deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_parse_and_count_each_request_exactly() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&admin_config(shards, &origin));
        // A connection each, so that with two shards both get some.
        for i in 0..7 {
            assert_status(&proxy.client().get(&format!("/app/{i}")), 200);
        }
        let mut client = proxy.client();
        for _ in 0..3 {
            assert_status(&client.request("DELETE", "/app/x"), 200);
        }
        for _ in 0..2 {
            assert_status(&proxy.client().get("/elsewhere"), 404);
        }
        let m = scrape_when_counted(&proxy, 12.0);
        let requests = |route, method, status| {
            let labels = [("route", route), ("method", method), ("status", status)];
            m.sum("shardproxy_requests_total", &labels)
        };
        assert_eq!(requests("/app", "GET", "2xx"), 7.0);
        assert_eq!(requests("/app", "DELETE", "2xx"), 3.0);
        assert_eq!(requests("(none)", "GET", "4xx"), 2.0);
        assert_eq!(m.sum("shardproxy_requests_total", &[]), 12.0);
        let app = [("route", "/app")];
        assert_eq!(
            m.sum("shardproxy_request_duration_seconds_count", &app),
            10.0
        );
        let inf = [("route", "/app"), ("le", "+Inf")];
        assert_eq!(
            m.sum("shardproxy_request_duration_seconds_bucket", &inf),
            10.0
        );
        let server = origin.addr().to_string();
        let to_origin = [("upstream", "o"), ("server", server.as_str())];
        assert_eq!(
            m.sum("shardproxy_upstream_requests_total", &to_origin),
            10.0
        );
        assert_eq!(m.sum("shardproxy_upstream_failures_total", &to_origin), 0.0);
        // Every upstream request not on a new connection came from the pool.
        let pooled = m.sum("shardproxy_upstream_pooled_requests_total", &to_origin);
        assert_eq!(pooled, (10 - origin.connections()) as f64);
        assert!(pooled >= (10 - shards) as f64, "{pooled}");
        // The rest opened a connection each: the pool's misses.
        let connects = m.sum("shardproxy_upstream_connects_total", &to_origin);
        assert_eq!(connects, origin.connections() as f64);
        for quiet in [
            "shardproxy_upstream_connect_errors_total",
            "shardproxy_upstream_retries_total",
            "shardproxy_upstream_ejections_total",
        ] {
            assert_eq!(m.sum(quiet, &to_origin), 0.0, "{quiet}");
        }
        assert_eq!(m.sum("shardproxy_upstream_up", &to_origin), 1.0);
        assert_eq!(m.sum("shardproxy_connections_accepted_total", &[]), 10.0);
        assert_eq!(m.sum("shardproxy_shard_info", &[]), shards as f64);
        let uring = m.sum("shardproxy_shard_info", &[("engine", "io_uring")]);
        let poll = m.sum("shardproxy_shard_info", &[("engine", "poll")]);
        assert_eq!(uring + poll, shards as f64);
        if std::env::var("SHARDPROXY_TEST_IO").as_deref() == Ok("poll") {
            assert_eq!(poll, shards as f64);
        }
        assert_eq!(m.types["shardproxy_request_duration_seconds"], "histogram");
        assert!(m.sum("process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.sum("process_open_fds", &[]) > 0.0);
    });
}

#[test]
fn status_json_has_a_row_per_shard_and_the_page_polls_it() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&admin_config(shards, &origin));
        assert_status(&proxy.client().get("/app/one"), 200);
        assert_eq!(proxy.admin("GET", "/healthz"), (200, "ok\n".to_string()));
        let (status, body) = proxy.admin("GET", "/status");
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
        let rows = json["shards"].as_array().expect("a shards array");
        assert_eq!(rows.len(), shards, "{json}");
        assert_eq!(json["shards_expected"], shards);
        for (id, row) in rows.iter().enumerate() {
            assert_eq!(row["id"], id);
            assert!(row["io"].as_str().is_some_and(|io| !io.is_empty()));
        }
        let server = &json["upstreams"][0];
        assert_eq!(server["server"], origin.addr().to_string(), "{json}");
        assert_eq!(server["up"], true);
        assert_eq!(server["requests"], 1);
        assert_eq!(server["connects"], 1);
        assert_eq!(
            (&server["retries"], &server["ejections"]),
            (&0.into(), &0.into())
        );
        let (status, page) = proxy.admin("GET", "/");
        assert_eq!(status, 200);
        assert!(page.contains("<table id=\"shards\">") && page.contains("fetch(\"/status\""));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external assets"
        );
        assert_eq!(proxy.admin("GET", "/nope").0, 404);
        assert_eq!(proxy.admin("POST", "/metrics").0, 405);
    });
}

#[test]
fn requests_that_find_no_upstream_server_are_counted_per_upstream() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = admin_config(shards, &origin)
            .upstream("dead", &[sockets::closed_port()])
            .route(None, "/dead", "dead");
        let proxy = Proxy::start(&config);
        for _ in 0..3 {
            assert_status(&proxy.client().get("/dead/x"), 502);
        }
        assert_status(&proxy.client().get("/app/x"), 200);
        let m = scrape_when_counted(&proxy, 4.0);
        let dead = [("upstream", "dead")];
        assert_eq!(
            m.sum("shardproxy_upstream_connect_failures_total", &dead),
            3.0
        );
        let live = [("upstream", "o")];
        assert_eq!(
            m.sum("shardproxy_upstream_connect_failures_total", &live),
            0.0
        );
        let failed = [("route", "/dead"), ("status", "5xx")];
        assert_eq!(m.sum("shardproxy_requests_total", &failed), 3.0);
        // One attempt per request (the default policy does not retry).
        let dead = [("upstream", "dead")];
        let errors = m.sum("shardproxy_upstream_connect_errors_total", &dead);
        assert_eq!(errors, 3.0);
        assert_eq!(m.sum("shardproxy_upstream_connects_total", &dead), 0.0);
    });
}

#[test]
fn busy_connections_and_in_flight_requests_are_those_in_hand() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = Origin::start(origin::held_until_open(&gate));
        let proxy = Proxy::start(&admin_config(shards, &origin));
        let mut held = proxy.client();
        held.send(client::request_head("GET", "/app/held").as_bytes());
        let _idle = proxy.client();
        origin.wait_for_requests(1);
        let (_, text) = proxy.admin("GET", "/metrics");
        let m = prometheus::parse(&text).unwrap();
        assert_eq!(m.sum("shardproxy_connections_busy", &[]), 1.0, "{text}");
        let in_flight = m.sum("shardproxy_upstream_in_flight_requests", &[]);
        assert_eq!(in_flight, 1.0, "{text}");
        gate.open();
        assert_status(&held.read_response("GET"), 200);
        let m = scrape_when_counted(&proxy, 1.0);
        assert_eq!(m.sum("shardproxy_upstream_in_flight_requests", &[]), 0.0);
    });
}

#[test]
fn retries_and_ejections_are_counted_per_server() {
    for_each_shard_count(|shards| {
        let members = fleet(2);
        members[0].fail_with(503);
        // One 503 ejects s0 from the shard's picks for longer than the test,
        // and is retried on s1.
        let keys = [
            (
                "retry",
                r#"{ attempts = 2, on = ["503"], backoff_base = "1ms", backoff_max = "2ms" }"#,
            ),
            (
                "outlier",
                r#"{ consecutive = 1, on = ["5xx"], base_ejection = "60s", max_ejected_percent = 50 }"#,
            ),
        ];
        let config =
            fleet_config(shards, &members, &[], &keys).set("admin", "listen", r#""127.0.0.1:0""#);
        let proxy = Proxy::start(&config);
        for _ in 0..8 {
            assert_status(&proxy.client().get("/"), 200);
        }
        let m = scrape_when_counted(&proxy, 8.0);
        let server = |i: usize| members[i].origin.addr().to_string();
        let (s0, s1) = (server(0), server(1));
        let failed = members[0].served() as f64;
        assert!(failed >= 1.0 && failed <= shards as f64, "{failed}");
        let of = |name: &str, addr: &str| m.sum(name, &[("upstream", "u"), ("server", addr)]);
        let retries = "shardproxy_upstream_retries_total";
        assert_eq!((of(retries, &s0), of(retries, &s1)), (0.0, failed));
        let ejections = "shardproxy_upstream_ejections_total";
        assert_eq!((of(ejections, &s0), of(ejections, &s1)), (failed, 0.0));
        // Ejection is a shard's own judgement; the health table still has both up.
        assert_eq!(m.sum("shardproxy_upstream_up", &[("upstream", "u")]), 2.0);
    });
}

#[test]
fn the_up_gauge_follows_the_health_checks() {
    for_each_shard_count(|shards| {
        let members = fleet(2);
        let check = (
            "health_check",
            r#"{ path = "/health", interval = "50ms", timeout = "300ms", rise = 1, fall = 1 }"#,
        );
        let config = fleet_config(shards, &members, &[], &[check]).set(
            "admin",
            "listen",
            r#""127.0.0.1:0""#,
        );
        let proxy = Proxy::start(&config);
        let up = |i: usize| {
            let (_, text) = proxy.admin("GET", "/metrics");
            let m = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let addr = members[i].origin.addr().to_string();
            m.sum("shardproxy_upstream_up", &[("server", addr.as_str())])
        };
        let wait_for = |i: usize, value: f64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while up(i) != value {
                assert!(Instant::now() < deadline, "server {i} never showed {value}");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(1, 1.0);
        members[1].set_healthy(false);
        wait_for(1, 0.0);
        assert_eq!(up(0), 1.0);
        members[1].set_healthy(true);
        wait_for(1, 1.0);
    });
}
