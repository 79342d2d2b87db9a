//! Shards: one compio runtime per core, each with its own io_uring ring (or
//! epoll driver), listening sockets, buffer pools, upstream pool and
//! connection registry.
//!
//! The main thread builds each shard's thread and hands it its sockets, its
//! end of the cache mesh and a crossbeam control channel; after that the only
//! things a shard hears from outside are [`Control`] messages, which it polls
//! without ever blocking, and cache messages from other shards.

pub mod clock;
pub mod context;
pub mod mesh;
pub mod oneshot;
pub mod registry;
pub mod ring;

use std::{net::SocketAddr, os::fd::AsRawFd, rc::Rc, sync::Arc, time::Duration};

use compio::{
    net::TcpListener,
    runtime::{spawn, JoinHandle},
    time::{sleep, timeout},
};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use futures_lite::StreamExt;

use crate::{
    access_log::{LogLink, ShardLog, FLUSH_EVERY},
    cache::ownership::{CacheShard, Mesh},
    config::{Config, IoBackend},
    metrics::shard::{CacheSnapshot, ClusterSnapshot, ServerHealth, ShardMetrics, ShardSnapshot},
    proxy::client::serve,
    upstream::health::{spawn_probers, HealthTable},
};
use context::ShardContext;
use ring::Engine;

/// Messages from the control thread (and the admin thread) to a shard.
#[derive(Debug)]
pub enum Control {
    /// Stop accepting, finish in-flight requests within `shutdown_timeout`, exit.
    Shutdown,
    /// Answer with a copy of the shard's counters (see `metrics`).
    Snapshot(Sender<ShardSnapshot>),
    /// Serve new requests with this config (already validated); requests in
    /// flight finish on the one they started with. The health table is the
    /// new config's, one for all shards (`upstream/health.rs`).
    Reload(Arc<Config>, Arc<HealthTable>),
    /// A listen address added by a reload: accept on this shard's socket for
    /// it (the configured address, then the bound socket).
    Listen(SocketAddr, std::net::TcpListener),
    /// A listen address removed by a reload: stop accepting on it (its
    /// connections carry on).
    Unlisten(SocketAddr),
}

/// Everything a shard thread is started with. `Send`: it crosses to the new thread once.
pub struct ShardPlan {
    pub id: usize,
    pub cpu: usize,
    pub config: Arc<Config>,
    /// This shard's socket for each configured listen address.
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    pub control: Receiver<Control>,
    /// This shard's end of the cache mesh, when the cache is on and there are several shards.
    pub mesh: Option<Mesh>,
    pub shards: usize,
    /// The backend after the process-wide io_uring check (`Auto` resolved).
    pub io: IoBackend,
    /// Up/down of every upstream server, shared by all shards (`upstream/health.rs`).
    pub health: Arc<HealthTable>,
    /// The access log writer, when `[log] access` is on.
    pub access_log: Option<LogLink>,
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
            ring::run_main(&runtime, run(plan, engine));
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
        health,
        access_log,
    } = plan;
    let cache = config
        .cache
        .enabled
        .then(|| CacheShard::new(id, shards, &config.cache, mesh));
    let metrics = Rc::new(ShardMetrics::new(engine.to_string()));
    let provided_buffers = engine.has_provided_buffers();
    let mut first = ShardContext::new(id, config, cache, provided_buffers, health, metrics, shards);
    first.start_forward_proxy();
    first.access_log = access_log.map(|link| Rc::new(ShardLog::new(first.config.log.format, link)));
    let ctx = first.install();
    // Lines go to the writer from this task, never from a request's.
    let log_flusher = ctx.access_log.clone().map(|log| {
        spawn(async move {
            loop {
                sleep(FLUSH_EVERY).await;
                log.flush();
            }
        })
    });
    let mesh_task = spawn({
        let ctx = ctx.clone();
        async move {
            if let Some(cache) = &ctx.cache {
                cache.serve_mesh().await;
            }
        }
    });

    let mut listening = Listening::default();
    let mut addresses = Vec::new();
    for (configured, std_listener) in listeners {
        addresses.extend(listening.start(&ctx, configured, std_listener));
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
                ctx.client_buffers.trim();
                ctx.upstream_buffers.trim();
                let rate = ctx.latest().config.limits.rate_per_ip;
                ctx.client_limits.sweep(rate, std::time::Instant::now());
            }
        }
    });

    let probers = spawn_probers(&ctx, shards);
    let ctx = obey_control(ctx, &control, &mut listening, probers, shards).await;

    drain(&ctx, listening).await;
    drop(sweeper);
    drop(mesh_task);
    drop(log_flusher);
    if let Some(log) = &ctx.access_log {
        log.flush_at_exit();
    }
    ctx.pool.clear();
    log_cache_counters(&ctx);
    if let Some(cluster) = &ctx.cluster {
        cluster.log_counters(id);
    }
    if let Some(forward) = &ctx.forward_proxy {
        forward.log_counters(id);
    }
}

/// Shutdown: dropping the accept tasks cancels them and closes the listening
/// sockets; idle connections are closed at once, busy ones get
/// `shutdown_timeout` to finish the request in hand.
async fn drain(ctx: &ShardContext, listening: Listening) {
    ctx.draining.set(true);
    drop(listening);
    let idle = ctx.connections.close_idle();
    let busy = ctx.connections.active().saturating_sub(idle);
    log::info!(
        "shard {}: shutting down; {busy} connection(s) busy, {idle} idle closed",
        ctx.id
    );
    let grace = ctx.config.server.shutdown_timeout;
    match timeout(grace, ctx.connections.drained()).await {
        Ok(()) => log::info!("shard {}: drained", ctx.id),
        Err(_) => log::warn!(
            "shard {}: {} connection(s) cut off after {grace:?}",
            ctx.id,
            ctx.connections.active()
        ),
    }
}

/// Polls the control channel every [`CONTROL_POLL`] without blocking and
/// does what it says, until `Shutdown` (or the control thread is gone).
/// Returns the shard's newest context generation. `probers`: the health
/// probers this shard runs for the current generation's config; a reload
/// replaces them with the new config's.
async fn obey_control(
    mut ctx: Rc<ShardContext>,
    control: &Receiver<Control>,
    listening: &mut Listening,
    mut probers: Vec<JoinHandle<()>>,
    shards: usize,
) -> Rc<ShardContext> {
    loop {
        sleep(CONTROL_POLL).await;
        loop {
            match control.try_recv() {
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => return ctx,
                Ok(Control::Snapshot(reply)) => {
                    // The admin thread may have given up waiting: nothing to do then.
                    let _ = reply.try_send(snapshot(&ctx));
                }
                Ok(Control::Reload(config, health)) => {
                    ctx = ctx.next_generation(config, health).install();
                    // Dropping the old probers cancels them.
                    drop(std::mem::replace(&mut probers, spawn_probers(&ctx, shards)));
                    log::info!("shard {}: new config in use for new requests", ctx.id);
                }
                Ok(Control::Listen(configured, socket)) => {
                    if let Some(addr) = listening.start(&ctx, configured, socket) {
                        log::info!("shard {}: now accepting on {addr}", ctx.id);
                    }
                }
                Ok(Control::Unlisten(configured)) => {
                    listening.stop(configured);
                    log::info!("shard {}: stopped accepting on {configured}", ctx.id);
                }
                Err(TryRecvError::Empty) => break,
            }
        }
    }
}

/// The shard's accept loops, by the configured listen address each serves.
/// Dropping a loop cancels it and closes its listening socket.
#[derive(Default)]
struct Listening {
    loops: Vec<(SocketAddr, JoinHandle<()>)>,
}

impl Listening {
    /// Starts accepting on `socket`; returns the address it is bound to.
    fn start(
        &mut self,
        ctx: &Rc<ShardContext>,
        configured: SocketAddr,
        socket: std::net::TcpListener,
    ) -> Option<String> {
        let local = socket.local_addr().ok().map(|a| a.to_string());
        match TcpListener::from_std(socket) {
            Ok(listener) => {
                let accepting = spawn(accept_loop(ctx.clone(), listener));
                self.loops.push((configured, accepting));
                local
            }
            Err(e) => {
                log::error!("shard {}: cannot use a listening socket: {e}", ctx.id);
                None
            }
        }
    }

    fn stop(&mut self, configured: SocketAddr) {
        self.loops.retain(|(addr, _)| *addr != configured);
    }
}

/// A copy of the shard's counters for the admin thread.
fn snapshot(ctx: &ShardContext) -> ShardSnapshot {
    let (routes, servers) = ctx.metrics.snapshot_parts();
    ShardSnapshot {
        shard: ctx.id,
        engine: ctx.metrics.engine.clone(),
        connections_open: ctx.connections.active(),
        connections_busy: ctx.connections.busy(),
        connections_accepted: ctx.metrics.accepted.get(),
        client_buffers_in_use: ctx.client_buffers.leased(),
        upstream_buffers_in_use: ctx.upstream_buffers.leased(),
        upstream_idle: ctx.pool.idle_count(),
        access_log_dropped: ctx.access_log.as_ref().map_or(0, |log| log.dropped.get()),
        routes,
        servers,
        health: server_health(ctx),
        connect_failures: ctx.metrics.connect_failures(),
        users: ctx.metrics.user_snapshots(),
        cache: ctx.cache.as_ref().map(|cache| CacheSnapshot {
            counters: *cache.counters.borrow(),
            store: cache.store_stats(),
            lookup_latency: cache.lookup_latency.borrow().clone(),
        }),
        cluster: ctx.cluster.as_ref().map(|cluster| {
            let (members, members_up) = cluster.membership();
            ClusterSnapshot {
                counters: cluster.counters.get(),
                members,
                members_up,
            }
        }),
    }
}

/// The running config's servers as the shared health table shows them.
fn server_health(ctx: &ShardContext) -> Vec<ServerHealth> {
    let upstreams = ctx.config.upstreams.iter().zip(ctx.upstreams.iter());
    upstreams
        .flat_map(|(config, state)| {
            state
                .servers
                .iter()
                .enumerate()
                .map(|(i, server)| ServerHealth {
                    upstream: config.name.clone(),
                    addr: server.addr,
                    up: state.is_healthy(i),
                })
        })
        .collect()
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
                    ctx.metrics.count_accept();
                    let registration = ctx.connections.register(stream.as_raw_fd());
                    spawn(serve(ctx.latest(), stream, None, registration)).detach();
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
