//! The config file exactly as written: serde structs mirroring the TOML, with
//! spans kept on every value that later validation may reject, so an error can
//! name its line. Nothing here leaves the `config` module.

use serde::{de::IgnoredAny, Deserialize};
use toml::Spanned;

use super::units::RawSize;

pub type Text = Spanned<String>;
pub type Size = Spanned<RawSize>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub forward_proxy: RawForward,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<Vec<Text>>>,
    pub io: Option<Text>,
    pub shards: Option<Spanned<i64>>,
    pub cpus: Option<Spanned<Vec<Spanned<i64>>>>,
    pub shutdown_timeout: Option<Text>,
    pub pin: Option<bool>,
    #[serde(default)]
    pub tuning: RawTuning,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTuning {
    pub ring_depth: Option<Spanned<i64>>,
    pub ring_mode: Option<Text>,
    pub buffers: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub backlog: Option<Spanned<i64>>,
    pub max_inflight: Option<Spanned<i64>>,
    pub defer_accept: Option<bool>,
    /// Glommio-only keys, kept here (any value, never read) only so that an old
    /// config gets an error saying what replaced them rather than "unknown field".
    pub io_memory: Option<Spanned<IgnoredAny>>,
    pub spin_before_park: Option<Spanned<IgnoredAny>>,
    pub preempt_timer: Option<Spanned<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub max_header_bytes: Option<Size>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_uri_length: Option<Size>,
    pub max_body_size: Option<Size>,
    pub buffer_size: Option<Size>,
    pub splice_above: Option<Size>,
    pub x_forwarded_for: Option<bool>,
    pub x_forwarded_proto: Option<bool>,
    pub x_forwarded_host: Option<bool>,
    pub via: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub client_header: Option<Text>,
    pub client_keepalive: Option<Text>,
    pub upstream_connect: Option<Text>,
    pub upstream_first_byte: Option<Text>,
    pub body_idle: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Text,
    pub servers: Spanned<Vec<RawServerEntry>>,
    pub keepalive: Option<Spanned<i64>>,
    pub keepalive_timeout: Option<Text>,
    pub balance: Option<Text>,
    pub hash_key: Option<Text>,
    pub hash_epsilon: Option<Spanned<f64>>,
    pub max_conns: Option<Spanned<i64>>,
    pub queue_size: Option<Spanned<i64>>,
    pub queue_timeout: Option<Text>,
    pub health_check: Option<Spanned<RawHealthCheck>>,
    pub outlier: Option<Spanned<RawOutlier>>,
    pub retry: Option<Spanned<RawRetry>>,
    pub retry_non_idempotent: Option<bool>,
}

/// `health_check = { path, interval, timeout, rise, fall, expect_status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<Text>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub expect_status: Option<Spanned<i64>>,
}

/// `outlier = { consecutive, on, base_ejection, max_ejection, max_ejected_percent }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive: Option<Spanned<i64>>,
    pub on: Option<Spanned<Vec<Text>>>,
    pub base_ejection: Option<Text>,
    pub max_ejection: Option<Text>,
    pub max_ejected_percent: Option<Spanned<i64>>,
}

/// `retry = { attempts, on, backoff_base, backoff_max, budget_percent, budget_min }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<Spanned<i64>>,
    pub on: Option<Spanned<Vec<Text>>>,
    pub backoff_base: Option<Text>,
    pub backoff_max: Option<Text>,
    pub budget_percent: Option<Spanned<i64>>,
    pub budget_min: Option<Spanned<i64>>,
}

/// `"host:port"` or `{ addr = "host:port", weight = 3 }`. No spans inside:
/// toml cannot give spans through an untagged enum, so errors point at the list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawServerEntry {
    Plain(String),
    Weighted(RawWeightedServer),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedServer {
    pub addr: String,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Text>,
    pub path_prefix: Option<Text>,
    pub upstream: Text,
    pub cache: Option<bool>,
    pub cache_default_ttl: Option<Text>,
    pub cache_set_cookie: Option<bool>,
    pub priority: Option<Spanned<i64>>,
    pub priority_header: Option<Text>,
    pub rate_limit: Option<Spanned<i64>>,
    pub rate_burst: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub capacity: Option<Size>,
    pub max_object_size: Option<Size>,
    pub coalesce_wait: Option<Text>,
    pub near_cache_size: Option<Size>,
    pub near_cache_ttl: Option<Text>,
    pub purge_allow: Option<Vec<Text>>,
    pub targeted_cache_control: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(rename = "self")]
    pub self_addr: Option<Text>,
    pub peers: Option<Spanned<Vec<Text>>>,
    pub peers_dns: Option<Text>,
    pub dns_refresh: Option<Text>,
    pub secret: Option<Text>,
    pub secret_file: Option<Text>,
    pub signature_max_age: Option<Text>,
    pub peer_timeout: Option<Text>,
    pub peer_backoff: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<Text>,
    pub format: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub connections_per_ip: Option<Spanned<i64>>,
    pub rate: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub enabled: Option<bool>,
    pub allowed_ports: Option<Spanned<Vec<RawPorts>>>,
    pub allowed_connect_ports: Option<Spanned<Vec<RawPorts>>>,
    pub client_allow: Option<Vec<Text>>,
    pub allow: Option<Vec<Text>>,
    pub deny: Option<Vec<Text>>,
    pub realm: Option<Text>,
    pub auth_cache_ttl: Option<Text>,
    pub tunnel_idle: Option<Text>,
    pub keepalive: Option<Spanned<i64>>,
    pub keepalive_timeout: Option<Text>,
    pub dns_threads: Option<Spanned<i64>>,
    pub dns_cache_size: Option<Spanned<i64>>,
    pub dns_ttl: Option<Text>,
    pub dns_negative_ttl: Option<Text>,
    #[serde(default)]
    pub user: Vec<RawUser>,
    #[serde(default)]
    pub parent: Vec<RawParent>,
    pub parent_fallback: Option<Text>,
    pub cache: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParent {
    pub addr: Text,
    pub username: Option<Text>,
    pub password: Option<Text>,
}

/// A port (`443`) or an inclusive range (`"1025-65535"`). No spans inside
/// (untagged enum): errors point at the list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPorts {
    One(i64),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Text,
    pub password_hash: Text,
    pub max_connections: Option<Spanned<i64>>,
    pub requests_per_second: Option<Spanned<i64>>,
}
