//! Shards: one compio runtime per core, each with its own io_uring ring (or
//! epoll driver), listening sockets, buffer pools, upstream pool and
//! connection registry.
//!
//! The main thread builds each shard's thread and hands it its sockets, its
//! end of the cache mesh and a crossbeam control channel; after that the only
//! things a shard hears from outside are [`Control`] messages, which it polls
//! without ever blocking, and cache messages from other shards.

pub mod context;
pub mod mesh;
pub mod oneshot;
pub mod registry;
pub mod ring;

use std::{os::fd::AsRawFd, rc::Rc, sync::Arc, time::Duration};

use compio::{
    net::TcpListener,
    runtime::spawn,
    time::{sleep, timeout},
};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use futures_lite::StreamExt;

use crate::{
    cache::ownership::{CacheShard, Mesh},
    config::{Config, IoBackend},
    proxy::client::serve,
};
use context::ShardContext;
use ring::Engine;

/// Messages from the control thread to a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop accepting, finish in-flight requests within `shutdown_timeout`, exit.
    Shutdown,
}

/// Everything a shard thread is started with. `Send`: it crosses to the new thread once.
pub struct ShardPlan {
    pub id: usize,
    pub cpu: usize,
    pub config: Arc<Config>,
    pub listeners: Vec<std::net::TcpListener>,
    pub control: Receiver<Control>,
    /// This shard's end of the cache mesh, when the cache is on and there are several shards.
    pub mesh: Option<Mesh>,
    pub shards: usize,
    /// The backend after the process-wide io_uring check (`Auto` resolved).
    pub io: IoBackend,
}

/// How often a shard looks at its control channel. Shutdown waits at most this long to begin.
const CONTROL_POLL: Duration = Duration::from_millis(50);
/// How often expired idle upstream connections are closed.
const POOL_SWEEP: Duration = Duration::from_secs(1);

/// Starts a shard on its own thread. `ready` receives `Ok(id)` once the
/// runtime (and its ring) exist, or the reason it could not be built.
pub fn spawn_shard(
    plan: ShardPlan,
    ready: Sender<Result<usize, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", plan.id))
        .spawn(move || {
            // Pin before the ring exists, so its memory is allocated on this core's node.
            if plan.config.server.pin
                && !core_affinity::set_for_current(core_affinity::CoreId { id: plan.cpu })
            {
                log::warn!("shard {}: could not pin to core {}", plan.id, plan.cpu);
            }
            let tuning = &plan.config.tuning;
            let (runtime, engine) =
                match ring::build(plan.io, tuning.ring_mode, tuning.ring_depth as u32) {
                    Ok(built) => built,
                    Err(e) => {
                        let _ =
                            ready.send(Err(format!("shard {} on core {}: {e}", plan.id, plan.cpu)));
                        return;
                    }
                };
            let _ = ready.send(Ok(plan.id));
            runtime.block_on(run(plan, engine));
        })
}

/// The shard's main task: accept loops, pool sweeper, cache mesh, and the control poll.
async fn run(plan: ShardPlan, engine: Engine) {
    let ShardPlan {
        id,
        cpu,
        config,
        listeners,
        control,
        mesh,
        shards,
        io: _,
    } = plan;
    let cache = config
        .cache
        .enabled
        .then(|| CacheShard::new(id, shards, &config.cache, mesh));
    let ctx = Rc::new(ShardContext::new(
        id,
        config,
        cache,
        engine.has_provided_buffers(),
    ));
    let mesh_task = spawn({
        let ctx = ctx.clone();
        async move {
            if let Some(cache) = &ctx.cache {
                cache.serve_mesh().await;
            }
        }
    });

    let mut addresses = Vec::new();
    let mut accept_tasks = Vec::new();
    for std_listener in listeners {
        if let Ok(addr) = std_listener.local_addr() {
            addresses.push(addr.to_string());
        }
        match TcpListener::from_std(std_listener) {
            Ok(listener) => accept_tasks.push(spawn(accept_loop(ctx.clone(), listener))),
            Err(e) => log::error!("shard {id}: cannot use a listening socket: {e}"),
        }
    }
    log::info!(
        "shard {id} on core {cpu} ({engine}) listening on {}",
        addresses.join(", ")
    );

    let sweeper = spawn({
        let ctx = ctx.clone();
        async move {
            loop {
                sleep(POOL_SWEEP).await;
                ctx.pool.sweep();
            }
        }
    });

    loop {
        sleep(CONTROL_POLL).await;
        match control.try_recv() {
            Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
    }

    // Drain: dropping the accept tasks cancels them and closes the listening sockets.
    ctx.draining.set(true);
    drop(accept_tasks);
    let idle = ctx.connections.close_idle();
    let busy = ctx.connections.active().saturating_sub(idle);
    log::info!("shard {id}: shutting down; {busy} connection(s) busy, {idle} idle closed");
    let grace = ctx.config.server.shutdown_timeout;
    match timeout(grace, ctx.connections.drained()).await {
        Ok(()) => log::info!("shard {id}: drained"),
        Err(_) => log::warn!(
            "shard {id}: {} connection(s) cut off after {grace:?}",
            ctx.connections.active()
        ),
    }
    drop(sweeper);
    drop(mesh_task);
    ctx.pool.clear();
    log_cache_counters(&ctx);
    if let Some(forward) = &ctx.forward_proxy {
        forward.log_counters(id);
    }
}

fn log_cache_counters(ctx: &ShardContext) {
    let id = ctx.id;
    if let Some(cache) = &ctx.cache {
        let c = *cache.counters.borrow();
        let store = cache.store_stats();
        let latency = cache.lookup_latency.borrow();
        log::info!(
            "shard {id} cache: hits {} misses {} stale {} revalidated {} coalesced {} cross-shard {} (p50 {} us, p99 {} us) near-hits {} shed {} | stored {} entries, {} bytes, {} evictions",
            c.hits, c.misses, c.stale_served, c.revalidated, c.coalesced_waits, c.cross_shard_lookups,
            latency.value_at_quantile(0.5), latency.value_at_quantile(0.99), c.near_hits, c.shed,
            store.entries, store.bytes, store.evictions
        );
    }
}

/// Accepts connections while the shard has room for them (`max_connections`):
/// at the limit the shard stops accepting and new connections wait in the
/// kernel's backlog (or go to another shard) instead of being refused. Uses
/// one multishot accept while there is room (one submission for many
/// connections); at the limit the multishot is cancelled and re-armed later.
async fn accept_loop(ctx: Rc<ShardContext>, listener: TcpListener) {
    loop {
        ctx.connections.room().await;
        let mut incoming = listener.incoming();
        while let Some(accepted) = incoming.next().await {
            match accepted {
                Ok(stream) => {
                    let registration = ctx.connections.register(stream.as_raw_fd());
                    spawn(serve(ctx.clone(), stream, None, registration)).detach();
                    if !ctx.connections.has_room() {
                        break;
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    log::warn!("shard {}: accept failed: {e}", ctx.id);
                    sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}
