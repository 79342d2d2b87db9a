//! Configuration: the TOML file is parsed into raw serde structs (`raw`), then
//! validated into the typed [`Config`] every shard reads. Nothing raw leaves
//! this module; every error names the offending key and its line.
//!
//! [`Config`] is immutable once built and shared read-only with every shard
//! through an `Arc` — the one deliberate cross-shard object on the setup path.

mod cache;
mod error;
mod forward;
mod net;
mod raw;
mod resolver;
mod route;
mod server;
mod units;
mod upstream;

pub use cache::CacheConfig;
pub use error::ConfigError;
pub use forward::{DestinationRule, ForwardConfig, ForwardUser, ParentFallback, ParentProxy};
pub use net::IpNet;
pub use route::RouteConfig;
pub use server::{HttpConfig, IoBackend, RingMode, ServerConfig, Timeouts, Tuning};
pub use upstream::{ServerEntry, UpstreamConfig};

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
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
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
mod tests;
