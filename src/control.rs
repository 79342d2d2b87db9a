//! The control thread (the process's main thread once shards run): starts the
//! shards, then waits for SIGINT/SIGTERM and relays them to every shard over
//! crossbeam channels. Shards poll their channel; nothing here ever blocks a shard.
//!
//! Signals are blocked in every thread (the mask is inherited by the shards)
//! and taken synchronously here with `sigtimedwait`, so no async-signal-safety
//! concerns reach the rest of the program.

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use crossbeam_channel::{bounded, Sender};

use crate::{
    config::{Config, IoBackend},
    listener::bind_shared,
    preflight,
    shard::{self, mesh, Control, ShardPlan},
    upstream::health::HealthTable,
};

/// Messages queued between two shards before senders shed (go to the origin).
const MESH_QUEUE: usize = 1024;

/// How long shard startup may take before the process gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the proxy until a shutdown signal has been handled. `Err`: a startup
/// failure, with a message naming the cause and the fix.
pub fn run(config: Config) -> Result<(), String> {
    let io = choose_backend(config.server.io)?;
    let online: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| vec![0]);
    let cpus = config.shard_cpus(&online);
    let config = Arc::new(config);

    // Every listen address gets one socket per shard, all on the same port.
    let mut per_shard: Vec<Vec<std::net::TcpListener>> =
        (0..cpus.len()).map(|_| Vec::new()).collect();
    for addr in &config.server.listen {
        let sockets = bind_shared(*addr, cpus.len(), config.tuning.backlog)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        for (shard, socket) in sockets.into_iter().enumerate() {
            per_shard[shard].push(socket);
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
    let (ready_tx, ready_rx) = bounded(cpus.len());
    let mut controls: Vec<Sender<Control>> = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let health = Arc::new(HealthTable::new(&config));
    for (id, (cpu, listeners)) in cpus.iter().copied().zip(per_shard).enumerate() {
        let (control_tx, control_rx) = bounded(4);
        controls.push(control_tx);
        let plan = ShardPlan {
            id,
            cpu,
            config: config.clone(),
            listeners,
            control: control_rx,
            mesh: mesh_ends[id].take(),
            shards: cpus.len(),
            io,
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
        broadcast(&controls, Control::Shutdown);
        return Err(failure);
    }

    let mut shutting_down = false;
    loop {
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        match wait_signal(&signals, Duration::from_millis(200)) {
            Some(sig) if !shutting_down => {
                log::info!("received signal {sig}: shutting down gracefully");
                shutting_down = true;
                broadcast(&controls, Control::Shutdown);
            }
            Some(sig) => {
                log::warn!("received signal {sig} again: exiting now");
                std::process::exit(1);
            }
            None => {}
        }
    }
    for thread in threads {
        if thread.join().is_err() {
            return Err("a shard panicked".to_string());
        }
    }
    if !shutting_down {
        return Err("all shards stopped unexpectedly".to_string());
    }
    Ok(())
}

fn broadcast(controls: &[Sender<Control>], message: Control) {
    for control in controls {
        // A full or closed channel means the shard is already stopping.
        let _ = control.try_send(message);
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

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
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
