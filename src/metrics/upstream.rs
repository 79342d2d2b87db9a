//! The upstream servers' families of `/metrics`: every shard's per-server
//! counters summed by (upstream, server), the health table's up/down gauge,
//! and the per-upstream count of requests that found no server. Only the
//! admin thread runs this, on snapshots the shards sent.

use std::collections::BTreeMap;

use super::{
    exposition::Page,
    names::*,
    shard::{ServerCounts, ShardSnapshot},
};

/// Every shard's upstream server counters summed, by (upstream, server), sorted.
pub fn merge_servers(shards: &[ShardSnapshot]) -> BTreeMap<(String, String), ServerCounts> {
    let mut merged: BTreeMap<(String, String), ServerCounts> = BTreeMap::new();
    for server in shards.iter().flat_map(|s| &s.servers) {
        merged
            .entry((server.upstream.clone(), server.addr.to_string()))
            .or_default()
            .add(&server.counts);
    }
    merged
}

/// The running config's servers, up (1) or down (0) by the health checks.
/// Every shard reads the same table; a server any shard saw down counts as
/// down (they differ only for the instant of a change).
pub fn merge_health(shards: &[ShardSnapshot]) -> BTreeMap<(String, String), bool> {
    let mut merged: BTreeMap<(String, String), bool> = BTreeMap::new();
    for server in shards.iter().flat_map(|s| &s.health) {
        let key = (server.upstream.clone(), server.addr.to_string());
        let up = merged.entry(key).or_insert(true);
        *up &= server.up;
    }
    merged
}

type Get = fn(&ServerCounts) -> u64;

/// (name, help, type, value) of each per-server family.
const SERVER_FAMILIES: [(&str, &str, &str, Get); 8] = [
    (
        UPSTREAM_REQUESTS,
        "Requests sent to an upstream server.",
        "counter",
        |t| t.requests,
    ),
    (
        UPSTREAM_FAILURES,
        "Requests to an upstream server that ended in an error.",
        "counter",
        |t| t.failures,
    ),
    (
        UPSTREAM_POOLED,
        "Requests sent on a pooled keep-alive connection: pool hits (reuse ratio: this / requests).",
        "counter",
        |t| t.pooled,
    ),
    (
        UPSTREAM_CONNECTS,
        "New connections opened to an upstream server: pool misses.",
        "counter",
        |t| t.connects,
    ),
    (
        UPSTREAM_CONNECT_ERRORS,
        "Connection attempts to an upstream server that failed (refused, unreachable, timed out).",
        "counter",
        |t| t.connect_errors,
    ),
    (
        UPSTREAM_RETRIES,
        "Retries (tries after a failed one, under the retry policy) sent to an upstream server.",
        "counter",
        |t| t.retries,
    ),
    (
        UPSTREAM_EJECTIONS,
        "Times a shard's outlier detection ejected an upstream server.",
        "counter",
        |t| t.ejections,
    ),
    (
        UPSTREAM_IN_FLIGHT,
        "Requests to an upstream server between connection and the response's end.",
        "gauge",
        |t| t.in_flight,
    ),
];

pub(super) fn upstreams(page: &mut Page, shards: &[ShardSnapshot]) {
    let merged = merge_servers(shards);
    for (name, help, kind, get) in SERVER_FAMILIES {
        page.family(name, help, kind);
        for ((upstream, server), totals) in &merged {
            let labels = [("upstream", upstream.as_str()), ("server", server.as_str())];
            page.sample(name, &labels, get(totals) as f64);
        }
    }
    page.family(
        UPSTREAM_UP,
        "1 if the active health checks have the server up (always 1 without checks), else 0.",
        "gauge",
    );
    for ((upstream, server), up) in merge_health(shards) {
        let labels = [("upstream", upstream.as_str()), ("server", server.as_str())];
        page.sample(UPSTREAM_UP, &labels, if up { 1.0 } else { 0.0 });
    }
    let mut failures: BTreeMap<&str, u64> = BTreeMap::new();
    for (upstream, n) in shards.iter().flat_map(|s| &s.connect_failures) {
        *failures.entry(upstream.as_str()).or_default() += n;
    }
    page.family(
        UPSTREAM_CONNECT_FAILURES,
        "Requests that found no server of the upstream accepting a connection (502/504).",
        "counter",
    );
    for (upstream, n) in failures {
        page.sample(
            UPSTREAM_CONNECT_FAILURES,
            &[("upstream", upstream)],
            n as f64,
        );
    }
}
