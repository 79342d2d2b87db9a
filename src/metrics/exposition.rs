//! Renders merged shard snapshots in the Prometheus text exposition format
//! (version 0.0.4): `# HELP`, `# TYPE`, then samples with escaped label values.
//!
//! Hand-written rather than through `prometheus-client`: that crate's metric
//! types are live atomics meant to be updated on the request path, which is
//! exactly what the shards avoid; here every value already exists as a plain
//! number in a snapshot, and the format for counters, gauges and cumulative
//! histogram buckets is a few lines. The integration tests parse the output
//! strictly (`tests/proxy/admin.rs`).

use std::{collections::BTreeMap, fmt::Write};

use hdrhistogram::Histogram;

use super::{
    names::*,
    process::ProcessStats,
    shard::{
        CacheSnapshot, ClusterSnapshot, RouteSnapshot, ShardSnapshot, METHOD_CLASSES,
        STATUS_CLASSES,
    },
    upstream::upstreams,
};

/// Upper bounds of the latency buckets, seconds (Prometheus' default set,
/// widened at both ends for a proxy: sub-millisecond hits, minute-long streams).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Cross-shard cache lookups take microseconds: their own buckets, seconds.
pub const LOOKUP_BUCKETS: [f64; 10] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
];

/// Counters of the config reloads the control thread has done.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReloadCounts {
    pub succeeded: u64,
    pub failed: u64,
}

/// Every shard's routes merged into one snapshot per route label, sorted.
pub fn merge_routes(shards: &[ShardSnapshot]) -> Vec<RouteSnapshot> {
    let mut merged: BTreeMap<&str, RouteSnapshot> = BTreeMap::new();
    for route in shards.iter().flat_map(|s| &s.routes) {
        match merged.get_mut(route.label.as_str()) {
            Some(sum) => sum.merge(route),
            None => {
                merged.insert(&route.label, route.clone());
            }
        }
    }
    merged.into_values().collect()
}

/// The whole `/metrics` page.
pub fn render(shards: &[ShardSnapshot], process: &ProcessStats, reloads: ReloadCounts) -> String {
    let mut page = Page::default();
    requests(&mut page, &merge_routes(shards));
    users(&mut page, shards);
    shard_gauges(&mut page, shards);
    upstreams(&mut page, shards);
    cache(&mut page, shards);
    cluster(&mut page, shards);
    page.family(CONFIG_RELOADS, "Config reloads applied.", "counter");
    page.sample(CONFIG_RELOADS, &[], reloads.succeeded as f64);
    page.family(
        CONFIG_RELOAD_FAILURES,
        "Config reloads refused (invalid file).",
        "counter",
    );
    page.sample(CONFIG_RELOAD_FAILURES, &[], reloads.failed as f64);
    process_metrics(&mut page, process);
    page.text
}

fn requests(page: &mut Page, routes: &[RouteSnapshot]) {
    page.family(
        REQUESTS,
        "Requests answered, by route, method class and status class.",
        "counter",
    );
    for route in routes {
        for (m, row) in route.requests.iter().enumerate() {
            for (s, count) in row.iter().enumerate().filter(|(_, c)| **c > 0) {
                let labels = [
                    ("route", route.label.as_str()),
                    ("method", METHOD_CLASSES[m]),
                    ("status", STATUS_CLASSES[s]),
                ];
                page.sample(REQUESTS, &labels, *count as f64);
            }
        }
    }
    page.family(
        REQUEST_DURATION,
        "Time from request head to the end of the response, by route.",
        "histogram",
    );
    for route in routes {
        let labels = [("route", route.label.as_str())];
        let sum = route.latency_sum_us as f64 / 1e6;
        page.histogram(
            REQUEST_DURATION,
            &labels,
            &route.latency,
            &LATENCY_BUCKETS,
            sum,
        );
    }
}

/// Forward-proxy users' requests by status class, summed over the shards,
/// by user name, sorted.
pub fn merge_users(shards: &[ShardSnapshot]) -> BTreeMap<&str, [u64; STATUS_CLASSES.len()]> {
    let mut merged: BTreeMap<&str, [u64; STATUS_CLASSES.len()]> = BTreeMap::new();
    for user in shards.iter().flat_map(|s| &s.users) {
        let sum = merged.entry(&user.name).or_default();
        for (a, b) in sum.iter_mut().zip(user.requests) {
            *a += b;
        }
    }
    merged
}

/// The users' request counter. The label values are the configured user
/// names, so they stay few.
fn users(page: &mut Page, shards: &[ShardSnapshot]) {
    let merged = merge_users(shards);
    page.family(
        USER_REQUESTS,
        "Forward-proxy requests by authenticated user and status class.",
        "counter",
    );
    for (user, requests) in merged {
        for (class, count) in STATUS_CLASSES.iter().zip(requests) {
            if count > 0 {
                page.sample(
                    USER_REQUESTS,
                    &[("user", user), ("status", class)],
                    count as f64,
                );
            }
        }
    }
}

fn shard_gauges(page: &mut Page, shards: &[ShardSnapshot]) {
    page.family(
        SHARD_INFO,
        "One per shard; `engine` is io_uring or poll, `io` its setup as the shard logs it.",
        "gauge",
    );
    for s in shards {
        let id = s.shard.to_string();
        let engine = if s.engine.starts_with("io_uring") {
            "io_uring"
        } else {
            "poll"
        };
        let labels = [
            ("shard", id.as_str()),
            ("engine", engine),
            ("io", &s.engine),
        ];
        page.sample(SHARD_INFO, &labels, 1.0);
    }
    type Get = fn(&ShardSnapshot) -> f64;
    let per_shard: [(&str, &str, &str, Get); 5] = [
        (CONNECTIONS_OPEN, "Client connections open.", "gauge", |s| {
            s.connections_open as f64
        }),
        (
            CONNECTIONS_BUSY,
            "Client connections with a request in hand.",
            "gauge",
            |s| s.connections_busy as f64,
        ),
        (
            CONNECTIONS_ACCEPTED,
            "Client connections accepted.",
            "counter",
            |s| s.connections_accepted as f64,
        ),
        (
            UPSTREAM_IDLE_CONNECTIONS,
            "Idle pooled upstream connections.",
            "gauge",
            |s| s.upstream_idle as f64,
        ),
        (
            ACCESS_LOG_DROPPED,
            "Access log lines dropped because the writer fell behind.",
            "counter",
            |s| s.access_log_dropped as f64,
        ),
    ];
    for (name, help, kind, get) in per_shard {
        page.family(name, help, kind);
        for s in shards {
            page.sample(name, &[("shard", &s.shard.to_string())], get(s));
        }
    }
    page.family(
        BUFFERS_IN_USE,
        "Streaming buffers leased, by side.",
        "gauge",
    );
    for s in shards {
        let id = s.shard.to_string();
        page.sample(
            BUFFERS_IN_USE,
            &[("shard", &id), ("side", "client")],
            s.client_buffers_in_use as f64,
        );
        page.sample(
            BUFFERS_IN_USE,
            &[("shard", &id), ("side", "upstream")],
            s.upstream_buffers_in_use as f64,
        );
    }
}

/// One cache number: its metric, its key in `/status`, and where it comes from.
pub struct CacheFamily {
    pub name: &'static str,
    pub json: &'static str,
    pub help: &'static str,
    pub kind: &'static str,
    pub get: fn(&CacheSnapshot) -> u64,
}

/// Every cache number, for `/metrics` (per shard) and `/status` (summed).
pub const CACHE_FAMILIES: [CacheFamily; 11] = [
    CacheFamily {
        name: CACHE_HITS,
        json: "hits",
        help: "Requests answered from the cache.",
        kind: "counter",
        get: |c| c.counters.hits,
    },
    CacheFamily {
        name: CACHE_MISSES,
        json: "misses",
        help: "Cacheable requests not answered from the cache.",
        kind: "counter",
        get: |c| c.counters.misses,
    },
    CacheFamily {
        name: CACHE_STALE_SERVED,
        json: "stale_served",
        help: "Stale responses served.",
        kind: "counter",
        get: |c| c.counters.stale_served,
    },
    CacheFamily {
        name: CACHE_REVALIDATIONS,
        json: "revalidations",
        help: "Conditional requests sent to refresh stored responses.",
        kind: "counter",
        get: |c| c.counters.revalidated,
    },
    CacheFamily {
        name: CACHE_COALESCED_WAITS,
        json: "coalesced_waits",
        help: "Requests that waited for another request's fetch.",
        kind: "counter",
        get: |c| c.counters.coalesced_waits,
    },
    CacheFamily {
        name: CACHE_CROSS_SHARD_LOOKUPS,
        json: "cross_shard_lookups",
        help: "Lookups sent to the key's owner shard.",
        kind: "counter",
        get: |c| c.counters.cross_shard_lookups,
    },
    CacheFamily {
        name: CACHE_NEAR_HITS,
        json: "near_hits",
        help: "Lookups answered by the near cache.",
        kind: "counter",
        get: |c| c.counters.near_hits,
    },
    CacheFamily {
        name: CACHE_SHED,
        json: "shed",
        help: "Cross-shard lookups shed (queue full).",
        kind: "counter",
        get: |c| c.counters.shed,
    },
    CacheFamily {
        name: CACHE_EVICTIONS,
        json: "evictions",
        help: "Entries evicted.",
        kind: "counter",
        get: |c| c.store.evictions,
    },
    CacheFamily {
        name: CACHE_BYTES,
        json: "stored_bytes",
        help: "Bytes of stored responses.",
        kind: "gauge",
        get: |c| c.store.bytes as u64,
    },
    CacheFamily {
        name: CACHE_ENTRIES,
        json: "stored_entries",
        help: "Stored responses.",
        kind: "gauge",
        get: |c| c.store.entries as u64,
    },
];

fn cache(page: &mut Page, shards: &[ShardSnapshot]) {
    let cached: Vec<_> = shards
        .iter()
        .filter_map(|s| s.cache.as_ref().map(|c| (s.shard.to_string(), c)))
        .collect();
    if cached.is_empty() {
        return;
    }
    for family in &CACHE_FAMILIES {
        page.family(family.name, family.help, family.kind);
        for (shard, c) in &cached {
            page.sample(family.name, &[("shard", shard)], (family.get)(c) as f64);
        }
    }
    page.family(
        CACHE_CROSS_SHARD_LATENCY,
        "Round trip of a cross-shard cache lookup.",
        "histogram",
    );
    for (shard, c) in &cached {
        let sum = c.lookup_latency.mean() * c.lookup_latency.len() as f64 / 1e6;
        page.histogram(
            CACHE_CROSS_SHARD_LATENCY,
            &[("shard", shard)],
            &c.lookup_latency,
            &LOOKUP_BUCKETS,
            sum,
        );
    }
}

/// The cluster's numbers per shard. A hit answered by the owner node is a
/// peer answer; a hit on this node's own cache is in the cache's hits.
fn cluster(page: &mut Page, shards: &[ShardSnapshot]) {
    type Get = fn(&ClusterSnapshot) -> u64;
    let families: [(&str, &str, &str, Get); 8] = [
        (
            CLUSTER_PEER_REQUESTS_SENT,
            "Fetches sent to the key's owner node.",
            "counter",
            |c| c.counters.peer_requests_sent,
        ),
        (
            CLUSTER_PEER_ANSWERS,
            "Verified answers from owner nodes (remote hits or fills).",
            "counter",
            |c| c.counters.peer_answers,
        ),
        (
            CLUSTER_PEER_REQUESTS_RECEIVED,
            "Signed requests from other nodes admitted.",
            "counter",
            |c| c.counters.peer_requests_received,
        ),
        (
            CLUSTER_SIGNATURE_REJECTIONS,
            "Peer requests refused with 403 (signature).",
            "counter",
            |c| c.counters.signature_rejections,
        ),
        (
            CLUSTER_DIGEST_MISMATCHES,
            "Peer answers whose Content-Digest was missing or wrong.",
            "counter",
            |c| c.counters.digest_mismatches,
        ),
        (
            CLUSTER_PEERS_MARKED_DOWN,
            "Times a peer node was marked down.",
            "counter",
            |c| c.counters.peers_marked_down,
        ),
        (
            CLUSTER_MEMBERS,
            "Cluster members this shard knows (itself included).",
            "gauge",
            |c| c.members as u64,
        ),
        (
            CLUSTER_MEMBERS_UP,
            "Members this shard does not hold down.",
            "gauge",
            |c| c.members_up as u64,
        ),
    ];
    let clustered: Vec<_> = shards
        .iter()
        .filter_map(|s| s.cluster.as_ref().map(|c| (s.shard.to_string(), c)))
        .collect();
    if clustered.is_empty() {
        return;
    }
    for (name, help, kind, get) in families {
        page.family(name, help, kind);
        for (shard, c) in &clustered {
            page.sample(name, &[("shard", shard)], get(c) as f64);
        }
    }
}

fn process_metrics(page: &mut Page, p: &ProcessStats) {
    let values: [(&str, &str, &str, Option<f64>); 6] = [
        (
            PROCESS_CPU,
            "Total user and system CPU time spent in seconds.",
            "counter",
            p.cpu_seconds,
        ),
        (
            PROCESS_RSS,
            "Resident memory size in bytes.",
            "gauge",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            PROCESS_VIRTUAL,
            "Virtual memory size in bytes.",
            "gauge",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            PROCESS_OPEN_FDS,
            "Number of open file descriptors.",
            "gauge",
            p.open_fds.map(|v| v as f64),
        ),
        (
            PROCESS_MAX_FDS,
            "Maximum number of open file descriptors.",
            "gauge",
            p.max_fds.map(|v| v as f64),
        ),
        (
            PROCESS_START_TIME,
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            p.start_time_seconds,
        ),
    ];
    for (name, help, kind, value) in values {
        if let Some(value) = value {
            page.family(name, help, kind);
            page.sample(name, &[], value);
        }
    }
}

/// The page under construction.
#[derive(Default)]
pub(super) struct Page {
    text: String,
}

impl Page {
    pub(super) fn family(&mut self, name: &str, help: &str, kind: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// Cumulative buckets from an hdrhistogram of microseconds (counts at each
    /// bound are exact to the histogram's 1% resolution), `+Inf`, sum, count.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        micros: &Histogram<u64>,
        bounds: &[f64],
        sum_seconds: f64,
    ) {
        for bound in bounds {
            let below = micros.count_between(0, (bound * 1e6) as u64);
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&bound.to_string()));
            let _ = writeln!(self.text, " {below}");
        }
        let _ = write!(self.text, "{name}_bucket");
        write_labels(&mut self.text, labels, Some("+Inf"));
        let _ = writeln!(self.text, " {}", micros.len());
        self.sample(&format!("{name}_sum"), labels, sum_seconds);
        self.sample(&format!("{name}_count"), labels, micros.len() as f64);
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let le = le.map(|v| ("le", v));
    for (i, (key, value)) in labels.iter().copied().chain(le).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        write_labels(&mut out, &[("route", "a\"b\\c\nd")], Some("+Inf"));
        assert_eq!(out, r#"{route="a\"b\\c\nd",le="+Inf"}"#);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        for us in [300, 800, 4_000, 2_000_000] {
            h.record(us).unwrap();
        }
        let mut page = Page::default();
        page.histogram("x", &[], &h, &LATENCY_BUCKETS, 2.0051);
        let counts: Vec<u64> = page
            .text
            .lines()
            .filter(|l| l.starts_with("x_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(&counts[..4], &[1, 2, 2, 3]);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*counts.last().unwrap(), 4);
        assert!(page.text.contains("x_count 4\n"));
    }
}
