//! `[server]`, `[server.tuning]`, `[http]` and `[timeouts]`: where the shards
//! listen, how their rings and buffers are set up, the HTTP parser's limits and
//! the client and upstream timeouts.

use std::{fmt, net::SocketAddr, time::Duration};

use toml::Spanned;

use super::{
    raw::{self, Text},
    resolver::{Keyword, Resolver},
    ConfigError, MAX_HEADERS_CAP,
};

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
    /// Requests one shard handles at once; 0 = no limit. Near it the lowest
    /// priority classes are shed first (`proxy/admission.rs`).
    pub max_inflight: usize,
    /// TCP_DEFER_ACCEPT on the listening sockets (`listener.rs`).
    pub defer_accept: bool,
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
    /// Response bodies longer than this go from the upstream to the client
    /// with splice(2), not through the shard's buffer. 0: never.
    pub splice_above: u64,
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

impl Resolver<'_> {
    pub(super) fn server(
        &self,
        raw: raw::RawServer,
    ) -> Result<(ServerConfig, Tuning), ConfigError> {
        let listen = self.listen_addresses(raw.listen)?;
        let shards = self.count("server.shards", raw.shards, 0, 0..1025)?;
        let cpus = self.cpu_list(raw.cpus)?;
        let tuning = self.tuning(raw.tuning)?;
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

    /// `server.listen`: at least one ip:port (127.0.0.1:8080 when absent).
    fn listen_addresses(
        &self,
        raw: Option<Spanned<Vec<Text>>>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let Some(list) = raw else {
            return Ok(vec!["127.0.0.1:8080".parse().expect("constant address")]);
        };
        if list.get_ref().is_empty() {
            return Err(self.invalid("server.listen", list.span(), "needs at least one address"));
        }
        list.get_ref()
            .iter()
            .map(|entry| {
                entry.get_ref().parse().map_err(|_| {
                    self.invalid(
                        "server.listen",
                        entry.span(),
                        format!("`{}` is not an ip:port address", entry.get_ref()),
                    )
                })
            })
            .collect()
    }

    /// `server.cpus`: CPU ids the shards are pinned to, one each.
    fn cpu_list(&self, raw: Option<Spanned<Vec<Spanned<i64>>>>) -> Result<Vec<usize>, ConfigError> {
        let Some(list) = raw else {
            return Ok(Vec::new());
        };
        let online = core_affinity::get_core_ids()
            .map(|c| c.len())
            .unwrap_or(1)
            .max(1);
        let mut cpus = Vec::new();
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
        Ok(cpus)
    }

    /// `[server.tuning]`, refusing the glommio-only keys with what replaced each.
    fn tuning(&self, t: raw::RawTuning) -> Result<Tuning, ConfigError> {
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
        Ok(Tuning {
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
            max_inflight: self.count(
                "server.tuning.max_inflight",
                t.max_inflight,
                0,
                0..10_000_001,
            )?,
            defer_accept: t.defer_accept.unwrap_or(true),
        })
    }

    pub(super) fn http(&self, raw: raw::RawHttp) -> Result<HttpConfig, ConfigError> {
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
            splice_above: self.size("http.splice_above", raw.splice_above, 32 << 10, 0)?,
            x_forwarded_for: raw.x_forwarded_for.unwrap_or(true),
            x_forwarded_proto: raw.x_forwarded_proto.unwrap_or(true),
            x_forwarded_host: raw.x_forwarded_host.unwrap_or(true),
            via: raw.via.unwrap_or(true),
        })
    }

    pub(super) fn timeouts(&self, raw: raw::RawTimeouts) -> Result<Timeouts, ConfigError> {
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
