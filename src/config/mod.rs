//! Configuration: the TOML file is parsed into raw serde structs (`raw`), then
//! validated into the typed [`Config`] every shard reads. Nothing raw leaves
//! this module; every error names the offending key and its line.
//!
//! [`Config`] is immutable once built and shared read-only with every shard
//! through an `Arc` — the one deliberate cross-shard object on the setup path.

mod net;
mod raw;
mod units;

pub use net::IpNet;

use std::{
    collections::HashMap,
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    ops::Range,
    path::Path,
    time::Duration,
};

use raw::{RawConfig, RawServerEntry, Size, Text};
use toml::Spanned;
use units::{parse_duration, parse_size};

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
}

/// `[cache]`: the sharded response cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Total bytes over all shards; each shard owns `capacity / shards`.
    pub capacity: u64,
    pub max_object_size: u64,
    /// How long a request waits for another request's fetch of the same key.
    pub coalesce_wait: Duration,
    /// Per-shard bytes of near-cache copies of objects owned elsewhere; 0 = off.
    pub near_cache_size: u64,
    pub near_cache_ttl: Duration,
    /// Clients allowed to send PURGE.
    pub purge_allow: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// 0: one shard per online CPU. Ignored when `cpus` is set.
    pub shards: usize,
    /// Explicit cores, one shard each.
    pub cpus: Vec<usize>,
    /// Pin each shard's thread to its core (the default). Unpinned shards let
    /// the kernel move them, which wins when other busy processes share the cores.
    pub pin: bool,
    pub shutdown_timeout: Duration,
}

/// Per-shard knobs, mapped onto glommio's executor builder and socket options.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub io_memory: usize,
    pub ring_depth: usize,
    pub spin_before_park: Duration,
    pub preempt_timer: Duration,
    pub max_connections: usize,
    pub backlog: i32,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_length: usize,
    /// `None`: no limit.
    pub max_body_size: Option<u64>,
    pub buffer_size: usize,
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_forwarded_host: bool,
    pub via: bool,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub client_header: Duration,
    pub client_keepalive: Duration,
    pub upstream_connect: Duration,
    pub upstream_first_byte: Duration,
    pub body_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerEntry>,
    /// Idle connections kept per server per shard.
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerEntry {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host name without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Use the cache for this route (when `[cache]` is enabled).
    pub cache: bool,
    /// Freshness for responses that carry none.
    pub cache_default_ttl: Option<Duration>,
    /// Store responses that set cookies.
    pub cache_set_cookie: bool,
}

/// A config that could not be read or is invalid.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} line {}: {}", self.origin, line, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

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
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| resolver.error(e.span(), e.message().trim_end().to_string()))?;
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

/// Turns raw values into typed ones, remembering the text to compute line numbers.
struct Resolver<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Resolver<'_> {
    fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let line = span.map(|s| {
            self.text[..s.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        });
        ConfigError {
            origin: self.origin.to_string(),
            line,
            message,
        }
    }

    fn invalid(&self, key: &str, span: Range<usize>, why: impl fmt::Display) -> ConfigError {
        self.error(Some(span), format!("invalid `{key}`: {why}"))
    }

    fn duration(
        &self,
        key: &str,
        value: Option<Text>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|why| self.invalid(key, v.span(), why)),
        }
    }

    fn size(
        &self,
        key: &str,
        value: Option<Size>,
        default: u64,
        min: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let size = parse_size(v.get_ref()).map_err(|why| self.invalid(key, v.span(), why))?;
        if size < min {
            return Err(self.invalid(key, v.span(), format!("must be at least {min} bytes")));
        }
        Ok(size)
    }

    fn count(
        &self,
        key: &str,
        value: Option<Spanned<i64>>,
        default: usize,
        range: Range<i64>,
    ) -> Result<usize, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let n = *v.get_ref();
        if !range.contains(&n) {
            let why = format!("{n} is out of range {}..{}", range.start, range.end);
            return Err(self.invalid(key, v.span(), why));
        }
        Ok(n as usize)
    }

    fn address(
        &self,
        key: &str,
        text: &str,
        span: Range<usize>,
    ) -> Result<SocketAddr, ConfigError> {
        // Resolution happens here, once, on the main thread: shards never do DNS.
        let mut addrs = text
            .to_socket_addrs()
            .map_err(|e| self.invalid(key, span.clone(), format!("`{text}`: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| self.invalid(key, span, format!("`{text}` resolves to no address")))
    }

    fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let (server, tuning) = self.server(raw.server)?;
        let http = self.http(raw.http)?;
        let timeouts = self.timeouts(raw.timeouts)?;

        if raw.upstream.is_empty() {
            return Err(self.error(None, "no [[upstream]] is defined".into()));
        }
        let mut upstreams = Vec::with_capacity(raw.upstream.len());
        let mut by_name = HashMap::new();
        for up in raw.upstream {
            let name = up.name.get_ref().clone();
            if by_name.insert(name.clone(), upstreams.len()).is_some() {
                return Err(self.invalid(
                    "upstream.name",
                    up.name.span(),
                    format!("`{name}` is defined twice"),
                ));
            }
            let mut servers = Vec::new();
            let span = up.servers.span();
            for entry in up.servers.get_ref() {
                let (addr, weight) = match entry {
                    RawServerEntry::Plain(addr) => (addr, 1),
                    RawServerEntry::Weighted(w) => (&w.addr, w.weight.unwrap_or(1)),
                };
                if !(1..=1_000_000).contains(&weight) {
                    return Err(self.invalid(
                        "upstream.servers.weight",
                        span,
                        format!("{weight} is out of range 1..=1000000"),
                    ));
                }
                let addr = self.address("upstream.servers", addr, span.clone())?;
                servers.push(ServerEntry {
                    addr,
                    weight: weight as u32,
                });
            }
            if servers.is_empty() {
                return Err(self.invalid(
                    "upstream.servers",
                    up.servers.span(),
                    "needs at least one server",
                ));
            }
            upstreams.push(UpstreamConfig {
                name,
                servers,
                keepalive: self.count("upstream.keepalive", up.keepalive, 32, 0..100_001)?,
                keepalive_timeout: self.duration(
                    "upstream.keepalive_timeout",
                    up.keepalive_timeout,
                    Duration::from_secs(60),
                )?,
            });
        }

        if raw.route.is_empty() {
            return Err(self.error(None, "no [[route]] is defined".into()));
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        for route in raw.route {
            let upstream = *by_name.get(route.upstream.get_ref()).ok_or_else(|| {
                let name = route.upstream.get_ref();
                self.invalid(
                    "route.upstream",
                    route.upstream.span(),
                    format!("no [[upstream]] is named `{name}`"),
                )
            })?;
            let path_prefix = match route.path_prefix {
                None => "/".to_string(),
                Some(p) if p.get_ref().starts_with('/') => p.into_inner(),
                Some(p) => {
                    return Err(self.invalid("route.path_prefix", p.span(), "must start with `/`"))
                }
            };
            let host = match route.host {
                None => None,
                Some(h) if !h.get_ref().is_empty() && !h.get_ref().contains(['/', ' ']) => {
                    Some(h.into_inner().to_ascii_lowercase())
                }
                Some(h) => {
                    return Err(self.invalid(
                        "route.host",
                        h.span(),
                        "must be a host name without scheme or path",
                    ))
                }
            };
            let cache_default_ttl = match route.cache_default_ttl {
                None => None,
                Some(ttl) => {
                    Some(self.duration("route.cache_default_ttl", Some(ttl), Duration::ZERO)?)
                }
            };
            routes.push(RouteConfig {
                host,
                path_prefix,
                upstream,
                cache: route.cache.unwrap_or(true),
                cache_default_ttl,
                cache_set_cookie: route.cache_set_cookie.unwrap_or(false),
            });
        }

        let cache = self.cache(raw.cache)?;
        Ok(Config {
            server,
            tuning,
            http,
            timeouts,
            cache,
            upstreams,
            routes,
        })
    }

    fn server(&self, raw: raw::RawServer) -> Result<(ServerConfig, Tuning), ConfigError> {
        let listen = match raw.listen {
            None => vec!["127.0.0.1:8080".parse().expect("constant address")],
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.invalid(
                        "server.listen",
                        list.span(),
                        "needs at least one address",
                    ));
                }
                let mut addrs = Vec::new();
                for entry in list.get_ref() {
                    let addr: SocketAddr = entry.get_ref().parse().map_err(|_| {
                        self.invalid(
                            "server.listen",
                            entry.span(),
                            format!("`{}` is not an ip:port address", entry.get_ref()),
                        )
                    })?;
                    addrs.push(addr);
                }
                addrs
            }
        };
        let online = core_affinity::get_core_ids()
            .map(|c| c.len())
            .unwrap_or(1)
            .max(1);
        let shards = self.count("server.shards", raw.shards, 0, 0..1025)?;
        let mut cpus = Vec::new();
        if let Some(list) = raw.cpus {
            for cpu in list.get_ref() {
                let id = *cpu.get_ref();
                if id < 0 || id as usize >= online.max(1024) {
                    return Err(self.invalid(
                        "server.cpus",
                        cpu.span(),
                        format!("{id} is not a CPU id"),
                    ));
                }
                cpus.push(id as usize);
            }
            if cpus.is_empty() {
                return Err(self.invalid(
                    "server.cpus",
                    list.span(),
                    "is empty (remove it to use `shards`)",
                ));
            }
        }
        let t = raw.tuning;
        let tuning = Tuning {
            io_memory: self.size("server.tuning.io_memory", t.io_memory, 2 << 20, 64 << 10)?
                as usize,
            ring_depth: self.count("server.tuning.ring_depth", t.ring_depth, 128, 1..32_769)?,
            spin_before_park: self.duration(
                "server.tuning.spin_before_park",
                t.spin_before_park,
                Duration::ZERO,
            )?,
            preempt_timer: self.duration(
                "server.tuning.preempt_timer",
                t.preempt_timer,
                Duration::from_millis(100),
            )?,
            max_connections: self.count(
                "server.tuning.max_connections",
                t.max_connections,
                10_000,
                1..10_000_001,
            )?,
            backlog: self.count("server.tuning.backlog", t.backlog, 1024, 1..65_536)? as i32,
        };
        let server = ServerConfig {
            listen,
            shards,
            cpus,
            pin: raw.pin.unwrap_or(true),
            shutdown_timeout: self.duration(
                "server.shutdown_timeout",
                raw.shutdown_timeout,
                Duration::from_secs(10),
            )?,
        };
        Ok((server, tuning))
    }

    fn http(&self, raw: raw::RawHttp) -> Result<HttpConfig, ConfigError> {
        let max_body = self.size("http.max_body_size", raw.max_body_size, 1 << 30, 0)?;
        Ok(HttpConfig {
            max_header_bytes: self.size(
                "http.max_header_bytes",
                raw.max_header_bytes,
                16 << 10,
                256,
            )? as usize,
            max_headers: self.count(
                "http.max_headers",
                raw.max_headers,
                100,
                1..(MAX_HEADERS_CAP as i64 + 1),
            )?,
            max_uri_length: self.size("http.max_uri_length", raw.max_uri_length, 8 << 10, 16)?
                as usize,
            max_body_size: (max_body != 0).then_some(max_body),
            buffer_size: self.size("http.buffer_size", raw.buffer_size, 64 << 10, 1024)? as usize,
            x_forwarded_for: raw.x_forwarded_for.unwrap_or(true),
            x_forwarded_proto: raw.x_forwarded_proto.unwrap_or(true),
            x_forwarded_host: raw.x_forwarded_host.unwrap_or(true),
            via: raw.via.unwrap_or(true),
        })
    }

    fn cache(&self, raw: raw::RawCache) -> Result<CacheConfig, ConfigError> {
        let mut purge_allow = Vec::new();
        match raw.purge_allow {
            None => purge_allow.extend(
                ["127.0.0.1/32", "::1/128"]
                    .iter()
                    .filter_map(|n| IpNet::parse(n)),
            ),
            Some(list) => {
                for entry in list {
                    let net = IpNet::parse(entry.get_ref()).ok_or_else(|| {
                        self.invalid(
                            "cache.purge_allow",
                            entry.span(),
                            format!("`{}` is not an address or address/prefix", entry.get_ref()),
                        )
                    })?;
                    purge_allow.push(net);
                }
            }
        }
        Ok(CacheConfig {
            enabled: raw.enabled.unwrap_or(false),
            capacity: self.size("cache.capacity", raw.capacity, 256 << 20, 64 << 10)?,
            max_object_size: self.size("cache.max_object_size", raw.max_object_size, 8 << 20, 1)?,
            coalesce_wait: self.duration(
                "cache.coalesce_wait",
                raw.coalesce_wait,
                Duration::from_secs(5),
            )?,
            near_cache_size: self.size("cache.near_cache_size", raw.near_cache_size, 4 << 20, 0)?,
            near_cache_ttl: self.duration(
                "cache.near_cache_ttl",
                raw.near_cache_ttl,
                Duration::from_secs(1),
            )?,
            purge_allow,
        })
    }

    fn timeouts(&self, raw: raw::RawTimeouts) -> Result<Timeouts, ConfigError> {
        let nonzero =
            |key: &str, value: Option<Text>, default: Duration| -> Result<Duration, ConfigError> {
                let span = value.as_ref().map(|v| v.span());
                let d = self.duration(key, value, default)?;
                match (d.is_zero(), span) {
                    (true, Some(span)) => Err(self.invalid(key, span, "must be greater than zero")),
                    _ => Ok(d),
                }
            };
        Ok(Timeouts {
            client_header: nonzero(
                "timeouts.client_header",
                raw.client_header,
                Duration::from_secs(10),
            )?,
            client_keepalive: nonzero(
                "timeouts.client_keepalive",
                raw.client_keepalive,
                Duration::from_secs(60),
            )?,
            upstream_connect: nonzero(
                "timeouts.upstream_connect",
                raw.upstream_connect,
                Duration::from_secs(3),
            )?,
            upstream_first_byte: nonzero(
                "timeouts.upstream_first_byte",
                raw.upstream_first_byte,
                Duration::from_secs(30),
            )?,
            body_idle: nonzero("timeouts.body_idle", raw.body_idle, Duration::from_secs(30))?,
        })
    }
}

#[cfg(test)]
mod tests;
