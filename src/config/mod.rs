//! Configuration: the TOML file is parsed into raw serde structs (`raw`), then
//! validated into the typed [`Config`] every shard reads. Nothing raw leaves
//! this module; every error names the offending key and its line.
//!
//! [`Config`] is immutable once built and shared read-only with every shard
//! through an `Arc` — the one deliberate cross-shard object on the setup path.

mod admin;
mod cache;
mod cluster;
mod error;
mod forward;
mod limits;
mod log;
mod net;
mod raw;
mod resilience;
mod resolver;
mod route;
mod server;
mod source;
mod units;
mod upstream;

pub use admin::AdminConfig;
pub use cache::CacheConfig;
pub use cluster::ClusterConfig;
pub use error::ConfigError;
pub use forward::{DestinationRule, ForwardConfig, ForwardUser, ParentFallback, ParentProxy};
pub use limits::{LimitsConfig, Rate};
pub use log::{AccessFormat, AccessTarget, LogConfig};
pub use net::IpNet;
pub use resilience::{Failure, Failures, HealthCheck, OutlierPolicy, RetryPolicy};
pub use route::RouteConfig;
pub use server::{HttpConfig, IoBackend, RingMode, ServerConfig, Timeouts, Tuning};
pub use source::ConfigSource;
pub use upstream::{Balance, HashKey, ServerEntry, UpstreamConfig};

use std::path::Path;

use error::key_path;
use raw::RawConfig;
use resolver::Resolver;

/// Upper bound on `http.max_headers`: the parser keeps header slots on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub tuning: Tuning,
    pub http: HttpConfig,
    pub timeouts: Timeouts,
    pub cache: CacheConfig,
    /// `[cluster]`, when this node shares its cache with others.
    pub cluster: Option<ClusterConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub forward: ForwardConfig,
}

/// The config file `config.toml` documents; used when no file is given or found.
pub const DEFAULT_CONFIG: &str = "
[[upstream]]
name = \"default\"
servers = [\"127.0.0.1:9000\"]
[[route]]
path_prefix = \"/\"
upstream = \"default\"
";

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &origin)
    }

    /// Validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let resolver = Resolver { text, origin };
        // serde_path_to_error records the key path as serde walks the document,
        // so a type error names the key (`upstream[1].keepalive`) as well as
        // the line toml's span gives.
        let de = toml::de::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = key_path(e.path());
            let inner = e.into_inner();
            let message = inner.message().trim_end();
            let message = if key.is_empty() {
                message.to_string()
            } else {
                format!("{key}: {message}")
            };
            resolver.error(inner.span(), message)
        })?;
        resolver.resolve(raw)
    }

    /// `self` as it can be applied to running shards: the settings fixed at
    /// startup (shards, I/O and ring tuning, buffer sizes, the cache, the
    /// admin endpoint, the log) are taken from `running`; listen addresses
    /// are the new ones (the control thread opens and closes sockets).
    /// Returns the restart-only sections that differ, for a warning.
    pub fn for_reload(mut self, running: &Config) -> (Config, Vec<&'static str>) {
        let mut ignored = Vec::new();
        // Compared by their Debug text: only to word a warning, and it keeps
        // every section (and every type inside it) free of a PartialEq bound.
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let listen = std::mem::take(&mut self.server.listen);
        let running_server = ServerConfig {
            listen: Vec::new(),
            ..running.server.clone()
        };
        if differs(&self.server, &running_server) {
            ignored.push("[server]");
        }
        if differs(&self.tuning, &running.tuning) {
            ignored.push("[server.tuning]");
        }
        if differs(&self.cache, &running.cache) {
            ignored.push("[cache]");
        }
        if differs(&self.admin, &running.admin) {
            ignored.push("[admin]");
        }
        if differs(&self.log, &running.log) {
            ignored.push("[log]");
        }
        // Both are shared by every context generation of a shard (its peer
        // view; its resolver and hashing threads and user table).
        if differs(&self.cluster, &running.cluster) {
            ignored.push("[cluster]");
        }
        if differs(&self.forward, &running.forward) {
            ignored.push("[forward_proxy]");
        }
        let http = &running.http;
        if self.http.buffer_size != http.buffer_size
            || self.http.max_header_bytes != http.max_header_bytes
        {
            ignored.push("http.buffer_size, http.max_header_bytes");
        }
        self.server = ServerConfig {
            listen,
            ..running.server.clone()
        };
        self.tuning = running.tuning.clone();
        self.cache = running.cache.clone();
        self.admin = running.admin.clone();
        self.log = running.log.clone();
        self.cluster = running.cluster.clone();
        self.forward = running.forward.clone();
        self.http.buffer_size = http.buffer_size;
        self.http.max_header_bytes = http.max_header_bytes;
        (self, ignored)
    }

    /// The CPUs the shards run on, one entry per shard.
    pub fn shard_cpus(&self, online: &[usize]) -> Vec<usize> {
        if !self.server.cpus.is_empty() {
            return self.server.cpus.clone();
        }
        let count = if self.server.shards == 0 {
            online.len().max(1)
        } else {
            self.server.shards
        };
        (0..count)
            .map(|i| online.get(i % online.len().max(1)).copied().unwrap_or(0))
            .collect()
    }
}

#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod tests;
