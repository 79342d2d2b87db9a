//! The `/status` JSON the status page polls: per shard, per route, per
//! upstream server and for the cache, from the same merged snapshots as
//! `/metrics`. Field names are part of the page's contract (`page.html`).

use std::time::Instant;

use serde_json::{json, Value};

use super::ReloadState;
use crate::metrics::{
    exposition::{merge_routes, merge_users, CACHE_FAMILIES},
    process::{unix_now, ProcessStats},
    shard::{ShardSnapshot, STATUS_CLASSES},
    upstream::{merge_health, merge_servers},
};

/// `expected`: how many shards run (a shard that did not answer in time is
/// missing from `shards`, and `shards_answered` says so).
pub fn render(
    shards: &[ShardSnapshot],
    expected: usize,
    reloads: &ReloadState,
    started: Instant,
) -> String {
    let process = ProcessStats::read();
    let status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": unix_now(),
        "uptime_seconds": started.elapsed().as_secs_f64(),
        "shards_expected": expected,
        "shards_answered": shards.len(),
        "process": {
            "cpu_seconds": process.cpu_seconds,
            "resident_bytes": process.resident_bytes,
            "open_fds": process.open_fds,
        },
        "config": {
            "reloads": reloads.counts.succeeded,
            "reload_failures": reloads.counts.failed,
            "last_error": reloads.last_error,
        },
        "shards": shards.iter().map(shard).collect::<Vec<_>>(),
        "routes": routes(shards),
        "upstreams": upstreams(shards),
        "users": users(shards),
        "cache": cache(shards),
    });
    status.to_string()
}

fn shard(s: &ShardSnapshot) -> Value {
    json!({
        "id": s.shard,
        "io": s.engine,
        "connections_open": s.connections_open,
        "connections_busy": s.connections_busy,
        "connections_accepted": s.connections_accepted,
        "requests": s.routes.iter().map(|r| r.total()).sum::<u64>(),
        "client_buffers_in_use": s.client_buffers_in_use,
        "upstream_buffers_in_use": s.upstream_buffers_in_use,
        "upstream_idle": s.upstream_idle,
    })
}

fn routes(shards: &[ShardSnapshot]) -> Vec<Value> {
    merge_routes(shards)
        .iter()
        .map(|r| {
            let mut by_status = serde_json::Map::new();
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                let n: u64 = r.requests.iter().map(|row| row[i]).sum();
                by_status.insert((*class).to_string(), n.into());
            }
            let ms = |q: f64| r.latency.value_at_quantile(q) as f64 / 1000.0;
            json!({
                "route": r.label,
                "requests": r.total(),
                "status": by_status,
                "p50_ms": ms(0.5),
                "p99_ms": ms(0.99),
            })
        })
        .collect()
}

fn upstreams(shards: &[ShardSnapshot]) -> Vec<Value> {
    let health = merge_health(shards);
    merge_servers(shards)
        .into_iter()
        .map(|(key, t)| {
            // A server a reload removed has counters but no health: null.
            let up = health.get(&key).copied();
            let (upstream, server) = key;
            json!({
                "upstream": upstream,
                "server": server,
                "up": up,
                "requests": t.requests,
                "failures": t.failures,
                "pooled": t.pooled,
                "connects": t.connects,
                "connect_errors": t.connect_errors,
                "retries": t.retries,
                "ejections": t.ejections,
                "in_flight": t.in_flight,
            })
        })
        .collect()
}

/// Forward-proxy users' requests, by status class.
fn users(shards: &[ShardSnapshot]) -> Vec<Value> {
    merge_users(shards)
        .into_iter()
        .map(|(user, requests)| {
            let by_status: serde_json::Map<String, Value> = STATUS_CLASSES
                .iter()
                .zip(requests)
                .map(|(class, n)| ((*class).to_string(), n.into()))
                .collect();
            json!({
                "user": user,
                "requests": requests.iter().sum::<u64>(),
                "status": by_status,
            })
        })
        .collect()
}

fn cache(shards: &[ShardSnapshot]) -> Value {
    let caches: Vec<_> = shards.iter().filter_map(|s| s.cache.as_ref()).collect();
    if caches.is_empty() {
        return Value::Null;
    }
    let mut sums = serde_json::Map::new();
    for family in &CACHE_FAMILIES {
        let sum: u64 = caches.iter().map(|c| (family.get)(c)).sum();
        sums.insert(family.json.to_string(), sum.into());
    }
    Value::Object(sums)
}
