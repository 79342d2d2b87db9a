//! The control thread (the process's main thread once shards run): starts the
//! shards and the admin thread, then waits for signals and relays them to
//! every shard over crossbeam channels: SIGINT/SIGTERM shut down, SIGHUP (or
//! the admin's `POST /reload`) reloads the config file. Shards poll their
//! channel; nothing here ever blocks a shard.
//!
//! Signals are blocked in every thread (the mask is inherited by the shards)
//! and taken synchronously here with `sigtimedwait`, so no async-signal-safety
//! concerns reach the rest of the program.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, unbounded, Receiver, SendTimeoutError, Sender};

use crate::{
    access_log::{self, LogLink, LogMessage},
    admin::{self, Admin, ReloadRequest, ReloadState},
    config::{Config, ConfigSource, IoBackend},
    listener::{bind_shared, ListenOptions},
    notify::Notifier,
    preflight,
    shard::{self, mesh, Control, ShardPlan},
    upstream::health::HealthTable,
};

/// Messages queued between two shards before senders shed (go to the origin).
const MESH_QUEUE: usize = 1024;

/// Control messages queued per shard; shards drain their queue every 50 ms,
/// and the admin thread has at most one snapshot request in each.
const CONTROL_QUEUE: usize = 64;

/// How long shard startup may take before the process gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the proxy until a shutdown signal has been handled. `Err`: a startup
/// failure, with a message naming the cause and the fix.
pub fn run(config: Config, source: ConfigSource) -> Result<(), String> {
    let started = Instant::now();
    let io = choose_backend(config.server.io)?;
    // Bound before the shards start, so its log line comes before theirs.
    let admin_listener = config.admin.listen.map(admin::bind).transpose()?;
    let online: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    let cpus = config.shard_cpus(&online);
    let config = Arc::new(config);

    // Every listen address gets one socket per shard, all on the same port.
    let mut per_shard: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
        (0..cpus.len()).map(|_| Vec::new()).collect();
    for addr in &config.server.listen {
        let sockets = bind_shared(*addr, cpus.len(), ListenOptions::of(&config))
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        for (shard, socket) in sockets.into_iter().enumerate() {
            per_shard[shard].push((*addr, socket));
        }
    }

    // One mesh for the cache's cross-shard lookups; each shard gets its end.
    let mut mesh_ends: Vec<Option<_>> = if config.cache.enabled && cpus.len() > 1 {
        mesh::full(cpus.len(), MESH_QUEUE)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        (0..cpus.len()).map(|_| None).collect()
    };

    let signals = block_signals();
    // Started after the signals are blocked: SIGUSR1 must reach only this thread.
    let log_writer = access_log::start(&config.log.access)?;
    let shared = Shared {
        config: config.clone(),
        io,
        shards: cpus.len(),
        access_log: log_writer.as_ref().map(|w| w.link()),
    };
    let (controls, threads) = start_shards(&cpus, per_shard, &mut mesh_ends, shared)?;

    let (log_sender, log_thread) = match log_writer {
        Some(w) => (Some(w.sender), Some(w.thread)),
        None => (None, None),
    };
    let mut supervisor = Supervisor {
        source,
        running: config,
        controls,
        reloads: Arc::new(Mutex::new(ReloadState::default())),
        log: log_sender,
        notify: Notifier::from_env(),
    };
    let (reload_tx, reload_rx) = unbounded();
    if let Some(listener) = admin_listener {
        let admin = Admin {
            listener,
            controls: supervisor.controls.clone(),
            reloads: supervisor.reloads.clone(),
            reload_requests: reload_tx,
            started,
        };
        admin::spawn(admin).map_err(|e| format!("cannot start the admin thread: {e}"))?;
    }
    let shutting_down = supervisor.watch(&signals, &threads, &reload_rx);
    finish(threads, supervisor, log_thread)?;
    if !shutting_down {
        return Err("all shards stopped unexpectedly".to_string());
    }
    Ok(())
}

/// The running shards: their control senders and threads.
type Started = (Vec<Sender<Control>>, Vec<JoinHandle<()>>);

/// What every shard's plan has in common.
struct Shared {
    config: Arc<Config>,
    io: IoBackend,
    shards: usize,
    access_log: Option<LogLink>,
}

/// Starts one shard per CPU and waits until each has built its runtime.
/// Returns their control senders and threads; on a failure the shards
/// already started are told to shut down.
fn start_shards(
    cpus: &[usize],
    per_shard: Vec<Vec<(SocketAddr, std::net::TcpListener)>>,
    mesh_ends: &mut [Option<crate::cache::ownership::Mesh>],
    shared: Shared,
) -> Result<Started, String> {
    let (ready_tx, ready_rx) = bounded(cpus.len());
    let mut controls: Vec<Sender<Control>> = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let health = Arc::new(HealthTable::new(&shared.config));
    for (id, (cpu, listeners)) in cpus.iter().copied().zip(per_shard).enumerate() {
        let (control_tx, control_rx) = bounded(CONTROL_QUEUE);
        controls.push(control_tx);
        let plan = ShardPlan {
            id,
            cpu,
            config: shared.config.clone(),
            listeners,
            control: control_rx,
            mesh: mesh_ends[id].take(),
            shards: shared.shards,
            io: shared.io,
            access_log: shared.access_log.clone(),
            health: health.clone(),
        };
        let thread = shard::spawn_shard(plan, ready_tx.clone())
            .map_err(|e| format!("cannot start shard {id}: {e}"))?;
        threads.push(thread);
    }
    for _ in 0..threads.len() {
        let failure = match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e,
            Err(_) => "a shard did not start in time".to_string(),
        };
        broadcast(&controls, || Control::Shutdown);
        return Err(failure);
    }

    Ok((controls, threads))
}

/// Joins the shards, then the access log writer once the last sender is
/// gone (the shards' went with them; the supervisor holds the other), so
/// every queued line is written before the process exits.
fn finish(
    threads: Vec<JoinHandle<()>>,
    supervisor: Supervisor,
    log_thread: Option<JoinHandle<()>>,
) -> Result<(), String> {
    let mut panicked = false;
    for thread in threads {
        panicked |= thread.join().is_err();
    }
    drop(supervisor);
    if let Some(thread) = log_thread {
        let _ = thread.join();
    }
    if panicked {
        return Err("a shard panicked".to_string());
    }
    Ok(())
}

/// A listen address and its sockets, one per shard.
type Bound = (SocketAddr, Vec<std::net::TcpListener>);

/// How long a control message to one shard may wait for room in its channel.
const SEND_WAIT: Duration = Duration::from_secs(2);

/// What the control thread keeps while the shards run.
struct Supervisor {
    source: ConfigSource,
    running: Arc<Config>,
    controls: Vec<Sender<Control>>,
    reloads: Arc<Mutex<ReloadState>>,
    /// The access log writer, for SIGUSR1.
    log: Option<Sender<LogMessage>>,
    /// systemd, when it started the process with `Type=notify`.
    notify: Notifier,
}

impl Supervisor {
    /// Handles signals and reload requests until every shard has stopped.
    /// Returns whether a shutdown was asked for.
    fn watch(
        &mut self,
        signals: &libc::sigset_t,
        threads: &[JoinHandle<()>],
        reload_requests: &Receiver<ReloadRequest>,
    ) -> bool {
        let mut shutting_down = false;
        self.report_ready();
        while !threads.iter().all(|t| t.is_finished()) {
            while let Ok(reply) = reload_requests.try_recv() {
                let _ = reply.send(self.reload());
            }
            match wait_signal(signals, Duration::from_millis(200)) {
                Some(libc::SIGHUP) => {
                    log::info!("received SIGHUP: reloading the config");
                    let _ = self.reload();
                }
                Some(libc::SIGUSR1) => self.reopen_log(),
                Some(sig) if !shutting_down => {
                    log::info!("received signal {sig}: shutting down gracefully");
                    self.notify.stopping();
                    shutting_down = true;
                    broadcast(&self.controls, || Control::Shutdown);
                }
                Some(sig) => {
                    log::warn!("received signal {sig} again: exiting now");
                    std::process::exit(1);
                }
                None => {}
            }
        }
        shutting_down
    }

    /// Tells systemd the proxy serves (its sockets already listen, so
    /// connections queue even before every accept loop runs).
    fn report_ready(&self) {
        let status = format!("{} shard(s) serving", self.controls.len());
        self.notify.ready(&status);
    }

    /// One SO_REUSEPORT socket per shard for each added listen address.
    fn bind(&self, added: &[SocketAddr]) -> Result<Vec<Bound>, String> {
        let options = ListenOptions::of(&self.running);
        added
            .iter()
            .map(|addr| {
                bind_shared(*addr, self.controls.len(), options)
                    .map(|sockets| (*addr, sockets))
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))
            })
            .collect()
    }

    /// Gives each shard its socket of every added address.
    fn hand_out(&self, bound: Vec<Bound>) {
        for (addr, sockets) in bound {
            for (control, socket) in self.controls.iter().zip(sockets) {
                // Waits for room (shards drain their channel every 50 ms); a
                // shard that is stopping drops the socket, which closes it.
                let _ = control.send_timeout(Control::Listen(addr, socket), SEND_WAIT);
            }
        }
    }

    /// SIGUSR1: the access log file is reopened (after logrotate moved it).
    fn reopen_log(&self) {
        match &self.log {
            Some(log) => {
                log::info!("received SIGUSR1: reopening the access log");
                let _ = log.send(LogMessage::Reopen);
            }
            None => log::info!("received SIGUSR1: no access log to reopen"),
        }
    }

    /// Reads and validates the config again; if it is good, every shard
    /// switches to it for new requests. If not, the running config stays
    /// and the error (key and line) is logged, counted and returned.
    fn reload(&mut self) -> Result<(), String> {
        self.notify.reloading();
        let applied = self.apply();
        let mut state = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        match &applied {
            Ok(()) => {
                state.counts.succeeded += 1;
                state.last_error = None;
            }
            Err(why) => {
                log::error!("config reload refused, keeping the running config: {why}");
                state.counts.failed += 1;
                state.last_error = Some(why.clone());
            }
        }
        self.report_ready();
        applied
    }

    fn apply(&mut self) -> Result<(), String> {
        let config = self.source.load().map_err(|e| e.to_string())?;
        let (config, ignored) = config.for_reload(&self.running);
        let (new, old) = (&config.server.listen, &self.running.server.listen);
        let added = missing_from(new, old);
        let removed = missing_from(old, new);
        // New addresses are bound first: one that cannot be refuses the reload.
        let bound = self.bind(&added)?;
        if !ignored.is_empty() {
            log::warn!(
                "config reload: changes to {} take effect only after a restart",
                ignored.join(", ")
            );
        }
        self.running = Arc::new(config);
        // The new config's servers get a new table, all up until their probes say otherwise.
        let health = Arc::new(HealthTable::new(&self.running));
        broadcast(&self.controls, || {
            Control::Reload(self.running.clone(), health.clone())
        });
        self.hand_out(bound);
        for addr in removed {
            broadcast(&self.controls, || Control::Unlisten(addr));
        }
        log::info!(
            "config reloaded: {} upstream(s), {} route(s)",
            self.running.upstreams.len(),
            self.running.routes.len()
        );
        Ok(())
    }
}

/// The addresses in `these` that are not in `those`.
fn missing_from(these: &[SocketAddr], those: &[SocketAddr]) -> Vec<SocketAddr> {
    these
        .iter()
        .filter(|a| !those.contains(a))
        .copied()
        .collect()
}

/// Sends every shard a message. Waits (bounded) for room rather than
/// dropping it: a lost `Reload` would leave a shard on the old config. A
/// closed channel means the shard has stopped.
fn broadcast(controls: &[Sender<Control>], message: impl Fn() -> Control) {
    for control in controls {
        if let Err(SendTimeoutError::Timeout(lost)) = control.send_timeout(message(), SEND_WAIT) {
            log::warn!("a shard did not take a control message in {SEND_WAIT:?}: {lost:?}");
        }
    }
}

/// Resolves `server.io` for every shard at once, so an unusable io_uring is
/// reported once: `auto` falls back to epoll with one warning naming the
/// cause; `io_uring` fails with that cause and its fix.
fn choose_backend(wanted: IoBackend) -> Result<IoBackend, String> {
    match (wanted, preflight::check_io_uring()) {
        (IoBackend::Poll, _) => Ok(IoBackend::Poll),
        (_, Ok(())) => Ok(IoBackend::IoUring),
        (IoBackend::IoUring, Err(why)) => Err(why),
        (IoBackend::Auto, Err(why)) => {
            log::warn!("{why}; using epoll instead (server.io = \"auto\")");
            Ok(IoBackend::Poll)
        }
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 in this thread and every thread it starts.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits up to `timeout` for one of the blocked signals.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    // SAFETY: set and ts are valid for the call; no siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}
