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
    /// Which kernel interface the shards do I/O through.
    pub io: IoBackend,
    /// 0: one shard per online CPU. Ignored when `cpus` is set.
    pub shards: usize,
    /// Explicit cores, one shard each.
    pub cpus: Vec<usize>,
    /// Pin each shard's thread to its core (the default). Unpinned shards let
    /// the kernel move them, which wins when other busy processes share the cores.
    pub pin: bool,
    pub shutdown_timeout: Duration,
}

/// Per-shard knobs, mapped onto each shard's compio runtime (its driver
/// builder) and socket options.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// io_uring submission queue entries per shard (the driver's capacity).
    pub ring_depth: usize,
    /// How the io_uring ring delivers completions; ignored by the poll driver.
    pub ring_mode: RingMode,
    /// Most streaming buffers (each `http.buffer_size` bytes) one shard has in
    /// use at once per direction (client side, upstream side). Past it a
    /// connection waits for a buffer rather than allocating: this bounds a
    /// shard's streaming memory at `2 × buffers × buffer_size`.
    pub buffers: usize,
    pub max_connections: usize,
    pub backlog: i32,
}

/// `[server] io`: the I/O driver each shard runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBackend {
    /// io_uring when the kernel lets this process use it, else `Poll` with a
    /// warning: the proxy still starts on hosts that block io_uring.
    Auto,
    /// io_uring only; startup fails if it is unavailable.
    IoUring,
    /// The readiness (epoll) driver, even where io_uring works.
    Poll,
}

/// `[server.tuning] ring_mode`: the io_uring setup flags that decide how
/// completions are delivered to a shard's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// `Defer` where the kernel accepts it, else `Coop`, else `Plain`.
    Auto,
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: completion
    /// work runs only when the shard enters the ring, so no interrupts of the
    /// shard's thread (Linux 6.1+).
    Defer,
    /// IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG: no forced
    /// reschedule for completion work (Linux 5.19+).
    Coop,
    /// No setup flags: the kernel interrupts the thread to run completion work.
    Plain,
}

/// A setting chosen by name from a fixed set; lets one resolver method parse
/// every such key and list the allowed names in its error.
trait Keyword: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

impl Keyword for IoBackend {
    const ALL: &'static [Self] = &[IoBackend::Auto, IoBackend::IoUring, IoBackend::Poll];
    fn name(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::IoUring => "io_uring",
            IoBackend::Poll => "poll",
        }
    }
}

impl Keyword for RingMode {
    const ALL: &'static [Self] = &[
        RingMode::Auto,
        RingMode::Defer,
        RingMode::Coop,
        RingMode::Plain,
    ];
    fn name(self) -> &'static str {
        match self {
            RingMode::Auto => "auto",
            RingMode::Defer => "defer",
            RingMode::Coop => "coop",
            RingMode::Plain => "plain",
        }
    }
}

/// Shows the value as the config file spells it (`io_uring`, `defer`), for logs.
impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Shows the value as the config file spells it, for logs.
impl fmt::Display for RingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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

/// The dotted key of a serde path, with array indices: `upstream[0].servers`.
/// Empty for errors outside any key (TOML syntax errors).
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    // `toml::Spanned` deserializes as a struct with private field names; they
    // are plumbing, not keys the user wrote.
    const SPANNED_FIELD: &str = "$__serde_spanned_private_";
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with(SPANNED_FIELD) {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
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

    fn keyword<K: Keyword>(
        &self,
        key: &str,
        value: Option<Text>,
        default: K,
    ) -> Result<K, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        if let Some(k) = K::ALL.iter().find(|k| k.name() == v.get_ref()) {
            return Ok(*k);
        }
        let allowed: Vec<String> = K::ALL.iter().map(|k| format!("\"{}\"", k.name())).collect();
        let why = format!("`{}` is not one of {}", v.get_ref(), allowed.join(", "));
        Err(self.invalid(key, v.span(), why))
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
        // Glommio-only keys: an old config fails with what replaced each one
        // rather than a bare "unknown field", so the fix is in the error.
        let removed = [
            (
                "io_memory",
                t.io_memory.as_ref().map(Spanned::span),
                "compio registers no buffer memory: remove it (streaming memory is \
                 `buffers` × `http.buffer_size`, the ring size is `ring_depth`)",
            ),
            (
                "spin_before_park",
                t.spin_before_park.as_ref().map(Spanned::span),
                "compio does not busy-poll: remove it; \
                 `ring_mode` selects how the ring delivers completions",
            ),
            (
                "preempt_timer",
                t.preempt_timer.as_ref().map(Spanned::span),
                "compio has no preemption timer (tasks run until they wait): remove it",
            ),
        ];
        for (name, span, why) in removed {
            if let Some(span) = span {
                let message = format!("`server.tuning.{name}` was a glommio setting; {why}");
                return Err(self.error(Some(span), message));
            }
        }
        let tuning = Tuning {
            ring_depth: self.count("server.tuning.ring_depth", t.ring_depth, 128, 1..32_769)?,
            ring_mode: self.keyword("server.tuning.ring_mode", t.ring_mode, RingMode::Auto)?,
            buffers: self.count("server.tuning.buffers", t.buffers, 1024, 1..1_000_001)?,
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
            io: self.keyword("server.io", raw.io, IoBackend::Auto)?,
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
