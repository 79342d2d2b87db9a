//! The servers `compare` runs: the loadtest origin, shardproxy, nginx,
//! HAProxy and, when asked for, `loadtest floor` (the minimal forwarder).
//! Each gets an equivalent configuration written to the work directory
//! (keep-alive to the origin, one worker/thread/shard per `--shards`, no
//! access logs), is started confined to the server CPUs (taskset), and is
//! stopped when dropped. By default the kernel places
//! every server's threads; with `--pin` each proxy pins one
//! worker/thread/shard per server CPU with its own setting, so the layouts
//! stay alike. Every server runs in a session of its own, as a daemon does
//! (see [`Sessions`]). Readiness is polled with real HTTP requests, bounded
//! in time.

use crate::util::CpuList;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How many workers/threads/shards every proxy runs, on which CPUs, and
/// whether each proxy pins them one per CPU.
#[derive(Debug, Clone)]
pub struct Layout {
    pub shards: usize,
    pub cpus: CpuList,
    pub pin: bool,
    pub sessions: Sessions,
}

/// Which session the servers (proxies, the floor, the origins) run in.
///
/// Why it matters: with the kernel's autogroup scheduling
/// (`kernel.sched_autogroup_enabled`, on in Debian's kernels) the scheduler
/// shares the CPU fairly between sessions first and between a session's
/// threads second. A daemon runs in a session of its own (nginx's `daemon
/// on` calls setsid; systemd starts each service in one), so a proxy's
/// threads are weighed as one group against its clients'. Started as
/// plain children of `compare`, as until 2026-12-02, every thread of every
/// server, the origin and the load generator were weighed one by one, and
/// the proxies on io_uring paid for it in CPU per request where nginx did
/// not (docs/PERFORMANCE.md, "Twelfth pass").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    /// Each server in a session of its own (the default).
    OwnEach,
    /// Every server in `compare`'s session (`--shared-session`).
    Shared,
}

impl Sessions {
    /// Prepares `cmd` to start in its own session, for [`Sessions::OwnEach`].
    /// The server is also asked to stop (SIGTERM) if `compare` dies: out of
    /// the terminal's session, a Ctrl-C no longer reaches it.
    fn apply(self, cmd: &mut Command) {
        if self == Sessions::Shared {
            return;
        }
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: setsid, prctl and getppid are async-signal-safe, and the
        // closure touches nothing else between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1
                {
                    return Err(io::Error::last_os_error());
                }
                // `compare` died before the prctl: nothing would signal us.
                if libc::getppid() != parent {
                    return Err(io::Error::other("compare exited"));
                }
                Ok(())
            });
        }
    }
}

impl Layout {
    /// The CPU worker `i` is pinned to: the server CPUs in turn.
    fn cpu_of(&self, i: usize) -> usize {
        self.cpus.0[i % self.cpus.0.len()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Origin,
    Shardproxy,
    Nginx,
    Haproxy,
    Floor,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s.trim() {
            "origin" => Ok(Kind::Origin),
            "shardproxy" => Ok(Kind::Shardproxy),
            "nginx" => Ok(Kind::Nginx),
            "haproxy" => Ok(Kind::Haproxy),
            "floor" => Ok(Kind::Floor),
            other => Err(format!(
                "unknown system {other:?}: expected origin, shardproxy, nginx, haproxy or floor"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Origin => "origin",
            Kind::Shardproxy => "shardproxy",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Floor => "floor",
        }
    }
}

/// A started server; killed (TERM, then KILL) on drop.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a log for appending, so a restarted server keeps the old log.
fn append(p: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// A currently free loopback port (bound, read, released).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn cpus_arg(c: &CpuList) -> String {
    c.0.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `loadtest origin` on a free port and reads the port it prints.
/// `port` 0 picks a free one; a restart passes the old port.
pub fn start_origin(
    exe: &Path,
    port: u16,
    shards: usize,
    cpus: &CpuList,
    sessions: Sessions,
    log: &Path,
) -> Result<Server, String> {
    let mut cmd = Command::new(exe);
    sessions.apply(&mut cmd);
    cmd.args([
        "origin",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--shards",
    ])
    .arg(shards.to_string())
    .args(["--cpus", &cpus_arg(cpus)]);
    start_reporting_port(Kind::Origin, cmd, log)
}

/// Starts `loadtest floor` in front of the origin on `upstream`, in the
/// proxies' layout: on the server CPUs, one shard per `--shards`, pinned one
/// per CPU only with `--pin`.
pub fn start_floor(
    exe: &Path,
    upstream: u16,
    layout: &Layout,
    log: &Path,
) -> Result<Server, String> {
    let mut cmd = Command::new("taskset");
    layout.sessions.apply(&mut cmd);
    cmd.args(["-c", &cpus_arg(&layout.cpus)])
        .arg(exe)
        .args([
            "floor",
            "--upstream",
            &format!("127.0.0.1:{upstream}"),
            "--shards",
        ])
        .arg(layout.shards.to_string());
    if layout.pin {
        cmd.args(["--cpus", &cpus_arg(&layout.cpus)]);
    }
    start_reporting_port(Kind::Floor, cmd, log)
}

/// Spawns `cmd` (a loadtest subcommand that prints `... listening on
/// ADDR` once bound), reads the port from that line, and waits until it
/// answers.
fn start_reporting_port(kind: Kind, mut cmd: Command, log: &Path) -> Result<Server, String> {
    let name = kind.name();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(append(log)?)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let mut server = Server {
        kind,
        port: port.unwrap_or(0),
        child,
    };
    if port.is_none() {
        return Err(format!("{name} did not report its port (got {line:?})"));
    }
    wait_ready(&mut server).map_err(|e| format!("{e} (see {})", log.display()))?;
    Ok(server)
}

/// Writes the config for `kind` and starts it on a free port.
pub fn start_proxy(
    kind: Kind,
    dir: &Path,
    shardproxy: &Path,
    upstream: u16,
    layout: &Layout,
    cache_dir: &Path,
) -> Result<Server, String> {
    let port = free_port()?;
    let name = kind.name();
    let log = dir.join(format!("{name}.log"));
    let write = |file: &str, text: String| -> Result<PathBuf, String> {
        let p = dir.join(file);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    let mut cmd = Command::new("taskset");
    layout.sessions.apply(&mut cmd);
    cmd.args(["-c", &cpus_arg(&layout.cpus)]);
    match kind {
        Kind::Shardproxy => {
            let cfg = write("shardproxy.toml", shardproxy_config(port, upstream, layout))?;
            cmd.arg(shardproxy).arg("--config").arg(cfg);
            cmd.env("RUST_LOG", "warn");
        }
        Kind::Nginx => {
            std::fs::create_dir_all(cache_dir)
                .map_err(|e| format!("{}: {e}", cache_dir.display()))?;
            let cfg = write(
                "nginx.conf",
                nginx_config(port, upstream, layout, dir, cache_dir),
            )?;
            cmd.arg("nginx").arg("-p").arg(dir).arg("-c").arg(cfg);
        }
        Kind::Haproxy => {
            let cfg = write("haproxy.cfg", haproxy_config(port, upstream, layout))?;
            cmd.arg("haproxy").arg("-db").arg("-f").arg(cfg);
        }
        Kind::Origin | Kind::Floor => {
            return Err(format!("{name} is started with its own start function"))
        }
    }
    let out = append(&log)?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let mut server = Server { kind, port, child };
    wait_ready(&mut server).map_err(|e| format!("{e} (see {})", log.display()))?;
    Ok(server)
}

/// Polls with a real request until the server answers 200, bounded in time.
fn wait_ready(s: &mut Server) -> Result<(), String> {
    let end = Instant::now() + READY_TIMEOUT;
    let name = s.kind.name();
    while Instant::now() < end {
        if !s.alive() {
            return Err(format!("{name} exited during startup"));
        }
        if probe(s.port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{name} not ready on port {} within {READY_TIMEOUT:?}",
        s.port
    ))
}

fn probe(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let req = b"GET /bytes/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if c.write_all(req).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(c.read(&mut buf), Ok(n) if n >= 12 && &buf[..12] == b"HTTP/1.1 200")
}

fn shardproxy_config(port: u16, upstream: u16, layout: &Layout) -> String {
    // Unpinned unless `--pin`, as nginx's workers and HAProxy's threads run
    // then: taskset keeps every server on the server CPUs and the kernel
    // places the threads.
    let shards = layout.shards;
    let pin = if layout.pin {
        let cpus: Vec<String> = (0..shards).map(|i| layout.cpu_of(i).to_string()).collect();
        format!("pin = true\ncpus = [{}]", cpus.join(", "))
    } else {
        "pin = false".to_string()
    };
    format!(
        "# Written by loadtest compare.\n\
         [server]\nlisten = [\"127.0.0.1:{port}\"]\nshards = {shards}\n{pin}\n\n\
         [[upstream]]\nname = \"default\"\nservers = [\"127.0.0.1:{upstream}\"]\nkeepalive = 64\n\n\
         # The cache is on for /cache/ only, as nginx's proxy_cache: nginx does not\n\
         # cache on Last-Modified heuristics, so the other scenarios stay uncached.\n\
         [cache]\nenabled = true\n\n\
         [[route]]\npath_prefix = \"/cache/\"\nupstream = \"default\"\n\n\
         [[route]]\npath_prefix = \"/\"\nupstream = \"default\"\ncache = false\n"
    )
}

fn nginx_config(port: u16, upstream: u16, layout: &Layout, dir: &Path, cache: &Path) -> String {
    let d = dir.display();
    let c = cache.display();
    let shards = layout.shards;
    let affinity = if layout.pin {
        // One bit mask per worker, CPU 0 rightmost.
        let width = layout.cpus.0.iter().max().map_or(1, |m| m + 1);
        let masks: Vec<String> = (0..shards)
            .map(|i| {
                let cpu = layout.cpu_of(i);
                (0..width)
                    .rev()
                    .map(|bit| if bit == cpu { '1' } else { '0' })
                    .collect()
            })
            .collect();
        format!("worker_cpu_affinity {};", masks.join(" "))
    } else {
        String::new()
    };
    format!(
        r#"# Written by loadtest compare.
daemon off;
master_process on;
user root;
worker_processes {shards};
{affinity}
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;
    keepalive_requests 1000000;
    # Big enough that a 64 KiB body never spills to a temp file.
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    # In tmpfs (memory), for the cacheable zipf scenario.
    proxy_cache_path {c} levels=1:2 keys_zone=zc:32m max_size=512m inactive=10m use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /cache/ {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache zc;
        }}
    }}
}}
"#
    )
}

fn haproxy_config(port: u16, upstream: u16, layout: &Layout) -> String {
    let shards = layout.shards;
    let affinity: String = if layout.pin {
        // Thread i (from 1) of process 1 on one CPU.
        (0..shards)
            .map(|i| format!("    cpu-map 1/{} {}\n", i + 1, layout.cpu_of(i)))
            .collect()
    } else {
        String::new()
    };
    format!(
        r#"# Written by loadtest compare.
global
    nbthread {shards}
    maxconn 8000
{affinity}defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server origin 127.0.0.1:{upstream}
"#
    )
}

/// Installs nginx, haproxy and wrk with apt-get when any is missing.
pub fn ensure_tools(install: bool, needed: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = needed.iter().copied().filter(|t| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        return Err(format!(
            "missing tools: {} (install them or drop --no-install)",
            missing.join(", ")
        ));
    }
    let pkgs: Vec<&str> = missing
        .iter()
        .map(|t| if *t == "nginx" { "nginx-light" } else { t })
        .collect();
    eprintln!("installing {} with apt-get", pkgs.join(" "));
    let ok =
        |st: std::io::Result<std::process::ExitStatus>| st.map(|s| s.success()).unwrap_or(false);
    if !ok(Command::new("apt-get").args(["update", "-qq"]).status()) {
        return Err("apt-get update failed".into());
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !ok(install) {
        return Err(format!("apt-get install {} failed", pkgs.join(" ")));
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_mention_the_essentials() {
        let layout = |shards| Layout {
            shards,
            cpus: CpuList(vec![0, 1]),
            pin: false,
            sessions: Sessions::OwnEach,
        };
        let s = shardproxy_config(1, 2, &layout(2));
        for want in ["listen = [\"127.0.0.1:1\"]", "shards = 2", "pin = false"] {
            assert!(s.contains(want), "{want} missing from {s}");
        }
        let n = nginx_config(1, 2, &layout(3), Path::new("/d"), Path::new("/c"));
        for want in [
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "worker_processes 3;",
            "access_log off;",
            "proxy_cache zc;",
        ] {
            assert!(n.contains(want), "{want}");
        }
        assert!(!n.contains("worker_cpu_affinity"));
        let h = haproxy_config(1, 2, &layout(4));
        for want in ["nbthread 4", "http-reuse always", "option http-keep-alive"] {
            assert!(h.contains(want), "{want}");
        }
        assert!(!h.contains("cpu-map"));
    }

    /// The session a child of ours started in with `sessions`.
    fn session_of_child(sessions: Sessions) -> (libc::pid_t, libc::pid_t) {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        sessions.apply(&mut cmd);
        let mut child = cmd.spawn().expect("sleep starts");
        let pid = child.id() as libc::pid_t;
        // SAFETY: getsid only reads the session of our own child.
        let sid = unsafe { libc::getsid(pid) };
        let _ = child.kill();
        let _ = child.wait();
        (pid, sid)
    }

    #[test]
    fn servers_run_in_a_session_of_their_own_unless_shared() {
        let (pid, sid) = session_of_child(Sessions::OwnEach);
        assert_eq!(sid, pid, "a server leads its own session");
        let (pid, sid) = session_of_child(Sessions::Shared);
        // SAFETY: getsid(0) reads our own session.
        let ours = unsafe { libc::getsid(0) };
        assert_ne!(sid, pid);
        assert_eq!(sid, ours, "--shared-session keeps compare's session");
    }

    #[test]
    fn pinned_layouts_put_one_worker_on_each_server_cpu() {
        let layout = Layout {
            shards: 3,
            cpus: CpuList(vec![0, 2]),
            pin: true,
            sessions: Sessions::OwnEach,
        };
        let s = shardproxy_config(1, 2, &layout);
        assert!(s.contains("pin = true\ncpus = [0, 2, 0]"), "{s}");
        let n = nginx_config(1, 2, &layout, Path::new("/d"), Path::new("/c"));
        assert!(n.contains("worker_cpu_affinity 001 100 001;"), "{n}");
        let h = haproxy_config(1, 2, &layout);
        for want in ["cpu-map 1/1 0\n", "cpu-map 1/2 2\n", "cpu-map 1/3 0\n"] {
            assert!(h.contains(want), "{want} missing from {h}");
        }
    }
}
