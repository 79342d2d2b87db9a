//! Active health checks and the table that publishes their results.
//!
//! **Who probes what.** Every server of every upstream with a `health_check`
//! has a global slot number (upstreams in file order, servers in list order);
//! slot `s` is probed by shard `s % shards`, so probing is spread over the
//! shards and each server is probed once per `interval`, not once per shard.
//! A probe is a `GET path` on a fresh connection (`Connection: close`)
//! within `timeout`; it passes when the status is `expect_status` (default:
//! any 2xx or 3xx). `fall` consecutive failures mark the server down, `rise`
//! consecutive passes mark it up again. Servers start up.
//!
//! **How every shard learns the result.** [`HealthTable`] is one `AtomicBool`
//! per slot, shared by all shards through an `Arc` (created once on the main
//! thread): the deliberate cross-shard object of this module. Each slot is
//! written only by its prober, and only when the state changes (a relaxed
//! store); shards read it with a relaxed load on each pick. No lock, no
//! message, and the cache line stays shared-clean between changes, so the
//! request path pays no cross-core traffic in the steady state.

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::atomic::{AtomicBool, Ordering},
};

use compio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    runtime::{spawn, JoinHandle},
    time::{sleep, timeout},
};

use crate::{
    config::{Config, HealthCheck},
    shard::context::ShardContext,
};

/// Up/down per server slot. `Send + Sync`: shared by every shard, written
/// only by each slot's prober.
#[derive(Debug)]
pub struct HealthTable {
    up: Box<[AtomicBool]>,
    /// The first slot of each upstream.
    first: Vec<usize>,
}

impl HealthTable {
    /// Every server of `config`, all up.
    pub fn new(config: &Config) -> HealthTable {
        let mut first = Vec::with_capacity(config.upstreams.len());
        let mut slots = 0;
        for upstream in &config.upstreams {
            first.push(slots);
            slots += upstream.servers.len();
        }
        HealthTable {
            up: (0..slots).map(|_| AtomicBool::new(true)).collect(),
            first,
        }
    }

    /// The slot of `upstream`'s server `server`.
    pub fn slot(&self, upstream: usize, server: usize) -> usize {
        self.first[upstream] + server
    }

    pub fn is_up(&self, slot: usize) -> bool {
        // Relaxed: the flag carries no other data; a pick that sees a change
        // one request late is harmless.
        self.up[slot].load(Ordering::Relaxed)
    }

    fn set(&self, slot: usize, up: bool) {
        self.up[slot].store(up, Ordering::Relaxed);
    }
}

/// Starts this shard's probers: one task per server slot it owns.
pub fn spawn_probers(ctx: &Rc<ShardContext>, shards: usize) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (index, upstream) in ctx.config.upstreams.iter().enumerate() {
        let Some(check) = &upstream.health_check else {
            continue;
        };
        for (server, entry) in upstream.servers.iter().enumerate() {
            let slot = ctx.health.slot(index, server);
            if slot % shards.max(1) == ctx.id {
                let prober = Prober {
                    ctx: ctx.clone(),
                    slot,
                    addr: entry.addr,
                    check: check.clone(),
                };
                tasks.push(spawn(prober.run()));
            }
        }
    }
    tasks
}

struct Prober {
    ctx: Rc<ShardContext>,
    slot: usize,
    addr: SocketAddr,
    check: HealthCheck,
}

impl Prober {
    async fn run(self) {
        let (mut passes, mut failures) = (0u32, 0u32);
        loop {
            let started = std::time::Instant::now();
            let result = probe(self.addr, &self.check).await;
            let up = self.ctx.health.is_up(self.slot);
            match result {
                Ok(()) => {
                    (passes, failures) = (passes + 1, 0);
                    if !up && passes >= self.check.rise {
                        self.ctx.health.set(self.slot, true);
                        log::warn!(
                            "shard {}: upstream server {} is up again",
                            self.ctx.id,
                            self.addr
                        );
                    }
                }
                Err(why) => {
                    (passes, failures) = (0, failures + 1);
                    if up && failures >= self.check.fall {
                        self.ctx.health.set(self.slot, false);
                        log::warn!(
                            "shard {}: upstream server {} is down: {why} ({failures} checks failed)",
                            self.ctx.id,
                            self.addr
                        );
                    }
                }
            }
            sleep(self.check.interval.saturating_sub(started.elapsed())).await;
        }
    }
}

/// One check: connect, send the request, read the status line.
async fn probe(addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let status = timeout(check.timeout, status_of(addr, &check.path))
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))??;
    let passed = match check.expect_status {
        Some(expected) => status == expected,
        None => (200..400).contains(&status),
    };
    if passed {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// The status code of `GET path` on a new connection to `addr`.
async fn status_of(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shardproxy-health-check\r\nConnection: close\r\n\r\n"
    );
    let compio::BufResult(sent, _) = stream.write_all(request.into_bytes()).await;
    sent.map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(STATUS_LINE);
    while !head.contains(&b'\n') && head.len() < STATUS_LINE {
        let compio::BufResult(read, back) = stream.append(head).await;
        head = back;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        head.reserve(STATUS_LINE.saturating_sub(head.len()).max(1));
    }
    parse_status(&head).ok_or_else(|| "no valid status line".to_string())
}

/// Enough for any status line we accept.
const STATUS_LINE: usize = 256;

/// `HTTP/1.x NNN ...` → NNN.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2x0 OK\r\n"), None);
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[test]
    fn slots_number_servers_across_upstreams() {
        let config = Config::parse(
            "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[[upstream]]\nname = \"b\"\nservers = [\"127.0.0.1:3\"]\n[[route]]\nupstream = \"a\"\n",
            "t",
        )
        .unwrap();
        let table = HealthTable::new(&config);
        assert_eq!(table.slot(1, 0), 2);
        assert!(table.is_up(2));
        table.set(2, false);
        assert!(!table.is_up(2) && table.is_up(1));
    }
}
