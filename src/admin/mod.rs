//! The admin endpoint: `/metrics` (Prometheus text), `/status` (JSON),
//! `/healthz`, `/` (a live status page) and `POST /reload`, served by one
//! side thread with blocking std I/O — off the data path, not a shard.
//!
//! It never reads shard memory. For each scrape it asks every shard for a
//! snapshot over the shard's crossbeam control channel and waits (bounded)
//! for the answers, which the shards send when they next poll control (see
//! `metrics`). Connections are served one at a time with short timeouts:
//! this endpoint is for a scraper and an operator, not for traffic.
//!
//! Touches: the shards' control senders (cloned), the control thread's
//! reload requests, the process's `/proc/self`.

mod http;
mod status;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{bounded, Sender};

use crate::{
    metrics::{
        exposition::{self, ReloadCounts},
        process::ProcessStats,
        shard::ShardSnapshot,
    },
    shard::Control,
};
use http::{read_request, respond, Request};

/// How long a scrape waits for the shards' snapshots (they answer within one
/// control poll, 50 ms, unless the shard is stuck — then it is left out).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);
/// How long `POST /reload` waits for the control thread to apply the file.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// The status page: HTML and a little JS polling `/status`; no external assets.
const PAGE: &str = include_str!("page.html");

/// What the control thread tells the admin endpoint about reloads.
#[derive(Debug, Default, Clone)]
pub struct ReloadState {
    pub counts: ReloadCounts,
    /// Why the last refused reload was refused (key and line), if it was.
    pub last_error: Option<String>,
}

/// A reload asked for over HTTP; the control thread answers on the sender.
pub type ReloadRequest = Sender<Result<(), String>>;

/// Everything the admin thread needs.
pub struct Admin {
    pub listener: TcpListener,
    pub controls: Vec<Sender<Control>>,
    pub reloads: Arc<Mutex<ReloadState>>,
    pub reload_requests: Sender<ReloadRequest>,
    pub started: Instant,
}

/// Binds the admin socket (on the main thread, so a bad address is a startup error).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on admin address {addr}: {e}"))?;
    if let Ok(local) = listener.local_addr() {
        log::info!("admin endpoint on http://{local}/ (/metrics, /status, /healthz)");
    }
    Ok(listener)
}

/// `shardproxy --reload`: asks the proxy whose admin endpoint listens on
/// `addr` to reload (over loopback when it listens on every address).
/// `Ok`: its answer; `Err`: refused (with the key and line) or unreachable.
pub fn request_reload(addr: SocketAddr) -> Result<String, String> {
    let mut target = addr;
    if addr.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let (status, body) = http::post(target, "/reload", RELOAD_WAIT + Duration::from_secs(2))
        .map_err(|e| format!("admin endpoint {target}: {e}"))?;
    let body = body.trim_end().to_string();
    if status == 200 {
        Ok(body)
    } else {
        Err(body)
    }
}

/// Starts the admin thread; it runs until the process exits.
pub fn spawn(admin: Admin) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in admin.listener.incoming() {
                match stream {
                    Ok(stream) => admin.serve(stream),
                    Err(e) => {
                        log::warn!("admin: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
}

impl Admin {
    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = match read_request(&mut stream) {
            Ok(request) => request,
            Err(why) => {
                respond(&mut stream, 400, "text/plain", why.as_bytes(), false);
                return;
            }
        };
        let (status, kind, body) = self.route(&request, &stream);
        respond(&mut stream, status, kind, &body, request.method == "HEAD");
    }

    fn route(&self, request: &Request, stream: &TcpStream) -> (u16, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let read = matches!(request.method.as_str(), "GET" | "HEAD");
        match (request.path.as_str(), read) {
            ("/healthz", true) => (200, TEXT, b"ok\n".to_vec()),
            ("/metrics", true) => {
                let shards = self.snapshots();
                let reloads = self.reload_state().counts;
                let text = exposition::render(&shards, &ProcessStats::read(), reloads);
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text.into_bytes(),
                )
            }
            ("/status", true) => {
                let shards = self.snapshots();
                let json = status::render(
                    &shards,
                    self.controls.len(),
                    &self.reload_state(),
                    self.started,
                );
                (200, "application/json", json.into_bytes())
            }
            ("/", true) => (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
            ("/reload", false) if request.method == "POST" => self.reload(stream),
            ("/healthz" | "/metrics" | "/status" | "/", false) | ("/reload", true) => {
                (405, TEXT, b"method not allowed\n".to_vec())
            }
            _ => (404, TEXT, b"not found\n".to_vec()),
        }
    }

    /// Asks the control thread to reload the config file; only from loopback.
    fn reload(&self, stream: &TcpStream) -> (u16, &'static str, Vec<u8>) {
        const TEXT: &str = "text/plain; charset=utf-8";
        if !stream.peer_addr().is_ok_and(|a| a.ip().is_loopback()) {
            return (
                403,
                TEXT,
                b"reload is allowed from loopback only\n".to_vec(),
            );
        }
        let (reply, answer) = bounded(1);
        if self.reload_requests.send(reply).is_err() {
            return (503, TEXT, b"shutting down\n".to_vec());
        }
        match answer.recv_timeout(RELOAD_WAIT) {
            Ok(Ok(())) => (200, TEXT, b"reloaded\n".to_vec()),
            Ok(Err(why)) => (422, TEXT, format!("config refused: {why}\n").into_bytes()),
            Err(_) => (503, TEXT, b"no answer from the control thread\n".to_vec()),
        }
    }

    fn reload_state(&self) -> ReloadState {
        // A poisoned lock only means a panic elsewhere; the numbers are still fine.
        self.reloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every shard's snapshot that arrives within [`SNAPSHOT_WAIT`], by shard id.
    fn snapshots(&self) -> Vec<ShardSnapshot> {
        let (reply, answers) = bounded(self.controls.len().max(1));
        let mut asked = 0;
        for control in &self.controls {
            let message = Control::Snapshot(reply.clone());
            if control.send_timeout(message, SNAPSHOT_WAIT).is_ok() {
                asked += 1;
            }
        }
        drop(reply);
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        let mut shards = Vec::with_capacity(asked);
        while shards.len() < asked {
            match answers.recv_deadline(deadline) {
                Ok(snapshot) => shards.push(snapshot),
                Err(_) => break,
            }
        }
        shards.sort_by_key(|s| s.shard);
        shards
    }
}
