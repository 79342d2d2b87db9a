//! Shards: one glommio executor per core, each with its own io_uring rings,
//! listening sockets, upstream pool and connection registry.
//!
//! The main thread builds each shard's thread and hands it its sockets and a
//! crossbeam control channel; after that the only thing a shard hears from
//! outside is [`Control`] messages, which it polls without ever blocking.

pub mod context;
pub mod oneshot;
pub mod registry;

use std::{
    os::fd::{FromRawFd, IntoRawFd},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use glommio::{
    net::TcpListener,
    sync::{Gate, Semaphore},
    timer::{sleep, timeout},
    LocalExecutorBuilder, Placement,
};

use crate::{
    cache::ownership::{CacheShard, Mesh, Message},
    config::Config,
    proxy::client::serve,
};
use context::ShardContext;
use glommio::channels::shared_channel::ConnectedReceiver;

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
    /// The cache's channel mesh, when the cache is on and there are several shards.
    pub mesh: Option<Mesh>,
    pub shards: usize,
}

/// How often a shard looks at its control channel. Shutdown waits at most this long to begin.
const CONTROL_POLL: Duration = Duration::from_millis(50);
/// How often expired idle upstream connections are closed.
const POOL_SWEEP: Duration = Duration::from_secs(1);

/// Starts a shard on its own thread. `ready` receives `Ok(id)` once the
/// executor (and its rings) exist, or the reason it could not be built.
pub fn spawn(
    plan: ShardPlan,
    ready: Sender<Result<usize, String>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", plan.id))
        .spawn(move || {
            let tuning = &plan.config.tuning;
            let mut builder = LocalExecutorBuilder::new(if plan.config.server.pin {
                Placement::Fixed(plan.cpu)
            } else {
                Placement::Unbound
            })
            .name(&format!("shard-{}", plan.id))
            .io_memory(tuning.io_memory)
            .ring_depth(tuning.ring_depth)
            .preempt_timer(tuning.preempt_timer);
            if !tuning.spin_before_park.is_zero() {
                builder = builder.spin_before_park(tuning.spin_before_park);
            }
            let executor = match builder.make() {
                Ok(executor) => executor,
                Err(e) => {
                    let _ = ready.send(Err(format!("shard {} on core {}: {e}", plan.id, plan.cpu)));
                    return;
                }
            };
            let _ = ready.send(Ok(plan.id));
            executor.run(run(plan));
        })
}

/// The shard's main task: accept loops, pool sweeper, and the control poll.
async fn run(plan: ShardPlan) {
    let ShardPlan {
        id,
        cpu,
        config,
        listeners,
        control,
        mesh,
        shards,
    } = plan;
    let ctx = match join_cache(id, shards, &config, mesh).await {
        Some((cache, receivers)) => {
            let ctx = Rc::new(ShardContext::new(id, config, Some(cache)));
            for (peer, receiver) in receivers {
                let ctx = ctx.clone();
                glommio::spawn_local(async move {
                    while let Some(message) = receiver.recv().await {
                        if let Some(cache) = &ctx.cache {
                            cache.handle(message);
                        }
                    }
                    log::debug!("shard {id}: cache channel from shard {peer} closed");
                })
                .detach();
            }
            ctx
        }
        None => Rc::new(ShardContext::new(id, config, None)),
    };
    let gate = Rc::new(Gate::new());
    let permits = Rc::new(Semaphore::new(ctx.config.tuning.max_connections as u64));

    let mut addresses = Vec::new();
    let mut accept_tasks = Vec::new();
    for std_listener in listeners {
        if let Ok(addr) = std_listener.local_addr() {
            addresses.push(addr.to_string());
        }
        // SAFETY: the fd comes from a listening socket we own and give up here.
        let listener = unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) };
        accept_tasks.push(glommio::spawn_local(accept_loop(
            ctx.clone(),
            gate.clone(),
            permits.clone(),
            listener,
        )));
    }
    log::info!(
        "shard {id} on core {cpu} listening on {}",
        addresses.join(", ")
    );

    let sweeper = glommio::spawn_local({
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
    match timeout(grace, gate.close()).await {
        Ok(()) => log::info!("shard {id}: drained"),
        Err(_) => log::warn!(
            "shard {id}: {} connection(s) cut off after {grace:?}",
            ctx.connections.active()
        ),
    }
    drop(sweeper);
    ctx.pool.clear();
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

/// Builds this shard's part of the cache, joining the mesh with the other
/// shards first (every shard must join before any can send). `None`: the
/// cache is off.
async fn join_cache(
    id: usize,
    shards: usize,
    config: &Config,
    mesh: Option<Mesh>,
) -> Option<(CacheShard, Vec<(usize, ConnectedReceiver<Message>)>)> {
    if !config.cache.enabled {
        return None;
    }
    let Some(mesh) = mesh else {
        return Some((CacheShard::new(id, shards, &config.cache, None), Vec::new()));
    };
    match mesh.join().await {
        Ok((senders, mut receivers)) => {
            let streams = receivers.streams();
            // The mesh numbers its peers in the order they joined, which need
            // not be shard order: key ownership and replies use mesh numbers.
            let peer = senders.peer_id();
            Some((
                CacheShard::new(peer, shards, &config.cache, Some(senders)),
                streams,
            ))
        }
        Err(_) => {
            log::error!("shard {id}: could not join the cache mesh; cross-shard lookups will go to the origin");
            Some((CacheShard::new(id, shards, &config.cache, None), Vec::new()))
        }
    }
}

/// Accepts connections while the shard has room for them (`max_connections`):
/// at the limit the shard stops accepting and new connections wait in the
/// kernel's backlog (or go to another shard) instead of being refused.
async fn accept_loop(
    ctx: Rc<ShardContext>,
    gate: Rc<Gate>,
    permits: Rc<Semaphore>,
    listener: TcpListener,
) {
    loop {
        let Ok(permit) = permits.acquire_static_permit(1).await else {
            return;
        };
        match listener.accept().await {
            Ok(stream) => {
                let ctx = ctx.clone();
                let task = gate.spawn(async move {
                    serve(ctx, stream).await;
                    drop(permit);
                });
                match task {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(_) => return, // the gate closed: shutting down
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                log::warn!("shard {}: accept failed: {e}", ctx.id);
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
