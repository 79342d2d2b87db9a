//! `loadtest origin`: a thread-per-core HTTP/1.1 keep-alive test origin.
//!
//! Every shard is a compio runtime on its own pinned thread with its own
//! SO_REUSEPORT listening socket per `--listen` address (built here with
//! socket2 and handed to compio as a std listener), so the kernel spreads
//! connections over shards and shards share nothing but the static content
//! and their stats counters. With port 0 the first socket picks the port and
//! the others bind to the same one. `origin listening on ADDR` is printed per
//! address once all sockets are bound, so scripts can read the port.
//! Endpoints are listed in `routes`.

mod conn;
mod content;
mod idle;
mod routes;

use crate::cli::OriginArgs;
use crate::util;
use compio::net::TcpListener;
use compio::runtime::{Runtime, RuntimeBuilder};
use compio_driver::{DriverType, ProactorBuilder};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One shard's counters, on its own cache line; only that shard writes them,
/// `/__stats` on any shard sums them all.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    requests: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
}

/// Everything a shard's connections share.
pub struct ShardCtx {
    index: usize,
    counters: Arc<[ShardCounters]>,
    default_size: u64,
    /// Added to every response's delay (`--delay`).
    delay: Duration,
    date: conn::DateCache,
    idle: idle::IdleWatch,
}

impl ShardCtx {
    fn mine(&self) -> &ShardCounters {
        &self.counters[self.index]
    }

    fn count_request(&self) {
        self.mine().requests.fetch_add(1, Ordering::Relaxed);
    }

    fn date(&self) -> [u8; 29] {
        self.date.get()
    }

    /// `{"requests":N,"connections":M,"open_connections":K,"shards":S}`:
    /// requests served (this one included) and connections accepted since start.
    fn stats_json(&self) -> String {
        let sum = |f: fn(&ShardCounters) -> &AtomicU64| -> u64 {
            self.counters
                .iter()
                .map(|c| f(c).load(Ordering::Relaxed))
                .sum()
        };
        format!(
            "{{\"requests\":{},\"connections\":{},\"open_connections\":{},\"shards\":{}}}\n",
            sum(|c| &c.requests),
            sum(|c| &c.connections),
            sum(|c| &c.open),
            self.counters.len()
        )
    }
}

fn listen_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s)
}

/// Binds `shards` sockets per address. Returns the sockets per shard and the
/// actual addresses (with the chosen port when port 0 was asked for).
pub(crate) fn bind_all(
    addrs: &[SocketAddr],
    shards: usize,
) -> Result<(Vec<Vec<Socket>>, Vec<SocketAddr>), String> {
    let mut per_shard: Vec<Vec<Socket>> = (0..shards).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for &addr in addrs {
        let first = listen_socket(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let actual = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| format!("cannot read bound address of {addr}"))?;
        per_shard[0].push(first);
        for socks in per_shard.iter_mut().skip(1) {
            let s = listen_socket(actual)
                .map_err(|e| format!("cannot listen on {actual} (extra shard): {e}"))?;
            socks.push(s);
        }
        bound.push(actual);
    }
    Ok((per_shard, bound))
}

pub fn main(a: &OriginArgs) -> Result<(), String> {
    let shards = a.shards.unwrap_or_else(util::cpu_count);
    if shards == 0 {
        return Err("--shards must be at least 1".into());
    }
    if a.listen.is_empty() {
        return Err("at least one --listen address is needed".into());
    }
    if a.default_size > content::MAX_BODY {
        return Err("--default-size must be at most 1 GiB".into());
    }
    util::raise_limits();
    // Build the content (and its checksum table) before accepting traffic.
    let _ = content::content();
    let (sockets, bound) = bind_all(&a.listen, shards)?;
    let counters: Arc<[ShardCounters]> = (0..shards).map(|_| ShardCounters::default()).collect();

    let mut handles = Vec::new();
    for (index, socks) in sockets.into_iter().enumerate() {
        let cpu = util::cpu_for(index, a.cpus.as_ref());
        let counters = counters.clone();
        let (default_size, delay) = (a.default_size, a.delay);
        let h = std::thread::Builder::new()
            .name(format!("origin-{index}"))
            .spawn(move || shard(index, cpu, socks, counters, (default_size, delay)))
            .map_err(|e| format!("cannot start shard thread: {e}"))?;
        handles.push(h);
    }
    util::announce_and_join("origin", &bound, handles)
}

fn shard(
    index: usize,
    cpu: usize,
    sockets: Vec<Socket>,
    counters: Arc<[ShardCounters]>,
    (default_size, delay): (u64, Duration),
) -> Result<(), String> {
    util::pin_current_thread(cpu);
    let rt = runtime().map_err(|e| format!("cannot start the compio runtime: {e}"))?;
    rt.block_on(async move {
        let ctx = Rc::new(ShardCtx {
            index,
            counters,
            default_size,
            delay,
            date: conn::DateCache::default(),
            idle: idle::IdleWatch::default(),
        });
        let sweeper = ctx.clone();
        compio::runtime::spawn(async move { sweeper.idle.run(conn::IDLE_TIMEOUT).await }).detach();
        let mut accepts = Vec::with_capacity(sockets.len());
        for s in sockets {
            let listener = TcpListener::from_std(s.into())
                .map_err(|e| format!("cannot register listening socket: {e}"))?;
            accepts.push(compio::runtime::spawn(accept_loop(listener, ctx.clone())));
        }
        for t in accepts {
            let _ = t.await;
        }
        Ok(())
    })
}

/// The shard's runtime: io_uring with SINGLE_ISSUER|DEFER_TASKRUN (completions
/// are processed only when the shard asks for them, no task_work interrupts),
/// else COOP_TASKRUN|TASKRUN_FLAG (Linux 5.19+), else a plain ring, else
/// whatever compio picks (its epoll driver where io_uring is unavailable).
pub(crate) fn runtime() -> std::io::Result<Runtime> {
    for mode in 0..3 {
        let mut proactor = ProactorBuilder::new();
        proactor.driver_type(DriverType::IoUring);
        match mode {
            0 => proactor.single_issuer(true).defer_taskrun(true),
            1 => proactor.coop_taskrun(true).taskrun_flag(true),
            _ => &mut proactor,
        };
        if let Ok(rt) = RuntimeBuilder::new().with_proactor(proactor).build() {
            return Ok(rt);
        }
    }
    Runtime::new()
}

async fn accept_loop(listener: TcpListener, ctx: Rc<ShardCtx>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let c = ctx.mine();
                c.connections.fetch_add(1, Ordering::Relaxed);
                c.open.fetch_add(1, Ordering::Relaxed);
                let ctx = ctx.clone();
                compio::runtime::spawn(async move {
                    conn::OriginConn::new(stream, ctx.clone()).serve().await;
                    ctx.mine().open.fetch_sub(1, Ordering::Relaxed);
                })
                .detach();
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                log::warn!("accept failed: {e}");
                compio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
