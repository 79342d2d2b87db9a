//! Every metric name `/metrics` exposes, in one place, so dashboards and
//! alerts have one list to read and a rename is one edit. Prometheus naming:
//! `shardproxy_` prefix, base units (seconds, bytes), `_total` on counters;
//! the process metrics use the names Prometheus' own client libraries use.

pub const REQUESTS: &str = "shardproxy_requests_total";
pub const REQUEST_DURATION: &str = "shardproxy_request_duration_seconds";
pub const USER_REQUESTS: &str = "shardproxy_user_requests_total";

pub const SHARD_INFO: &str = "shardproxy_shard_info";
pub const CONNECTIONS_OPEN: &str = "shardproxy_connections_open";
pub const CONNECTIONS_BUSY: &str = "shardproxy_connections_busy";
pub const CONNECTIONS_ACCEPTED: &str = "shardproxy_connections_accepted_total";
pub const BUFFERS_IN_USE: &str = "shardproxy_buffers_in_use";
pub const UPSTREAM_IDLE_CONNECTIONS: &str = "shardproxy_upstream_idle_connections";
pub const ACCESS_LOG_DROPPED: &str = "shardproxy_access_log_dropped_lines_total";

pub const UPSTREAM_REQUESTS: &str = "shardproxy_upstream_requests_total";
pub const UPSTREAM_FAILURES: &str = "shardproxy_upstream_failures_total";
pub const UPSTREAM_CONNECT_FAILURES: &str = "shardproxy_upstream_connect_failures_total";
pub const UPSTREAM_IN_FLIGHT: &str = "shardproxy_upstream_in_flight_requests";
pub const UPSTREAM_POOLED: &str = "shardproxy_upstream_pooled_requests_total";
pub const UPSTREAM_CONNECTS: &str = "shardproxy_upstream_connects_total";
pub const UPSTREAM_CONNECT_ERRORS: &str = "shardproxy_upstream_connect_errors_total";
pub const UPSTREAM_RETRIES: &str = "shardproxy_upstream_retries_total";
pub const UPSTREAM_EJECTIONS: &str = "shardproxy_upstream_ejections_total";
pub const UPSTREAM_UP: &str = "shardproxy_upstream_up";

pub const CACHE_HITS: &str = "shardproxy_cache_hits_total";
pub const CACHE_MISSES: &str = "shardproxy_cache_misses_total";
pub const CACHE_STALE_SERVED: &str = "shardproxy_cache_stale_served_total";
pub const CACHE_REVALIDATIONS: &str = "shardproxy_cache_revalidations_total";
pub const CACHE_COALESCED_WAITS: &str = "shardproxy_cache_coalesced_waits_total";
pub const CACHE_CROSS_SHARD_LOOKUPS: &str = "shardproxy_cache_cross_shard_lookups_total";
pub const CACHE_CROSS_SHARD_LATENCY: &str = "shardproxy_cache_cross_shard_lookup_seconds";
pub const CACHE_NEAR_HITS: &str = "shardproxy_cache_near_hits_total";
pub const CACHE_SHED: &str = "shardproxy_cache_shed_lookups_total";
pub const CACHE_EVICTIONS: &str = "shardproxy_cache_evictions_total";
pub const CACHE_BYTES: &str = "shardproxy_cache_stored_bytes";
pub const CACHE_ENTRIES: &str = "shardproxy_cache_stored_entries";

pub const CLUSTER_PEER_REQUESTS_SENT: &str = "shardproxy_cluster_peer_requests_sent_total";
pub const CLUSTER_PEER_ANSWERS: &str = "shardproxy_cluster_peer_answers_total";
pub const CLUSTER_PEER_REQUESTS_RECEIVED: &str = "shardproxy_cluster_peer_requests_received_total";
pub const CLUSTER_SIGNATURE_REJECTIONS: &str = "shardproxy_cluster_signature_rejections_total";
pub const CLUSTER_DIGEST_MISMATCHES: &str = "shardproxy_cluster_digest_mismatches_total";
pub const CLUSTER_PEERS_MARKED_DOWN: &str = "shardproxy_cluster_peers_marked_down_total";
pub const CLUSTER_MEMBERS: &str = "shardproxy_cluster_members";
pub const CLUSTER_MEMBERS_UP: &str = "shardproxy_cluster_members_up";

pub const CONFIG_RELOADS: &str = "shardproxy_config_reloads_total";
pub const CONFIG_RELOAD_FAILURES: &str = "shardproxy_config_reload_failures_total";

pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
