//! The proxy under test as a child process: a TOML config builder, startup
//! that waits for every shard's `listening on ADDR` log line (no sleeping),
//! background draining of the child's output (kept for failure messages,
//! printed when a test panics), signals, and kill-on-drop.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::client::Client;

pub const PROXY_BINARY: &str = env!("CARGO_BIN_EXE_shardproxy");
/// How long the proxy may take to print its `listening on` lines.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// A config file under construction. Values are raw TOML (`"300ms"` quoted,
/// numbers bare); `set` replaces a key already present.
#[derive(Clone)]
pub struct ProxyConfig {
    shards: usize,
    sections: Vec<(String, Vec<(String, String)>)>,
    upstreams: Vec<String>,
    routes: Vec<String>,
}

impl ProxyConfig {
    /// The brief's minimal config, without upstreams or routes. The I/O
    /// backend is `server.io` from `SHARDPROXY_TEST_IO` when set (CI runs
    /// the suite once with io_uring and once with `poll`), else the default.
    pub fn new(shards: usize) -> Self {
        let config = ProxyConfig {
            shards,
            sections: Vec::new(),
            upstreams: Vec::new(),
            routes: Vec::new(),
        }
        .set("server", "listen", r#"["127.0.0.1:0"]"#)
        .set("server", "shards", &shards.to_string())
        .set("server", "shutdown_timeout", r#""5s""#)
        .set("http", "max_body_size", r#""1GiB""#)
        .set("timeouts", "client_header", r#""2s""#);
        match std::env::var("SHARDPROXY_TEST_IO") {
            Ok(io) if !io.is_empty() => config.set("server", "io", &format!("{io:?}")),
            _ => config,
        }
    }

    /// Everything (`/`) goes to one upstream `o` made of `origin`.
    pub fn for_origin(shards: usize, origin: SocketAddr) -> Self {
        Self::new(shards)
            .upstream("o", &[origin])
            .route(None, "/", "o")
    }

    pub fn set(mut self, section: &str, key: &str, raw_value: &str) -> Self {
        let index = match self.sections.iter().position(|(name, _)| name == section) {
            Some(index) => index,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[index].1;
        entries.retain(|(existing, _)| existing != key);
        entries.push((key.to_owned(), raw_value.to_owned()));
        self
    }

    /// Sets a `[timeouts]` duration, e.g. `timeout("client_header", "300ms")`.
    pub fn timeout(self, key: &str, duration: &str) -> Self {
        self.set("timeouts", key, &format!("{duration:?}"))
    }

    /// Sets an `[http]` key to a raw TOML value.
    pub fn http(self, key: &str, raw_value: &str) -> Self {
        self.set("http", key, raw_value)
    }

    /// An upstream with `keepalive = 8`.
    pub fn upstream(self, name: &str, servers: &[SocketAddr]) -> Self {
        self.upstream_with(name, servers, &[("keepalive", "8")])
    }

    /// An upstream whose servers are `{ addr, weight }` tables.
    pub fn weighted_upstream(mut self, name: &str, servers: &[(SocketAddr, u32)]) -> Self {
        let servers: Vec<String> = servers
            .iter()
            .map(|(addr, weight)| format!("{{ addr = \"{addr}\", weight = {weight} }}"))
            .collect();
        self.upstreams.push(format!(
            "[[upstream]]\nname = {name:?}\nservers = [{}]\n",
            servers.join(", ")
        ));
        self
    }

    /// An upstream whose servers are given as raw TOML strings' contents,
    /// e.g. `localhost:8080`.
    pub fn named_upstream(mut self, name: &str, servers: &[String]) -> Self {
        let servers: Vec<String> = servers.iter().map(|server| format!("{server:?}")).collect();
        self.upstreams.push(format!(
            "[[upstream]]\nname = {name:?}\nservers = [{}]\n",
            servers.join(", ")
        ));
        self
    }

    /// An upstream with extra raw TOML keys, e.g. `("keepalive_timeout", "\"300ms\"")`.
    pub fn upstream_with(
        mut self,
        name: &str,
        servers: &[SocketAddr],
        keys: &[(&str, &str)],
    ) -> Self {
        let servers: Vec<String> = servers.iter().map(|addr| format!("\"{addr}\"")).collect();
        let mut table = format!(
            "[[upstream]]\nname = {name:?}\nservers = [{}]\n",
            servers.join(", ")
        );
        for (key, value) in keys {
            writeln!(table, "{key} = {value}").unwrap();
        }
        self.upstreams.push(table);
        self
    }

    /// An upstream written out in raw TOML, `[[upstream]]` line included.
    pub fn raw_upstream(mut self, table: String) -> Self {
        self.upstreams.push(table);
        self
    }

    pub fn route(self, host: Option<&str>, path_prefix: &str, upstream: &str) -> Self {
        self.route_with(host, path_prefix, upstream, &[])
    }

    /// A route with extra raw TOML keys, e.g. `("cache", "false")` or
    /// `("cache_default_ttl", "\"30s\"")`.
    pub fn route_with(
        mut self,
        host: Option<&str>,
        path_prefix: &str,
        upstream: &str,
        keys: &[(&str, &str)],
    ) -> Self {
        let mut route = String::from("[[route]]\n");
        if let Some(host) = host {
            writeln!(route, "host = {host:?}").unwrap();
        }
        writeln!(
            route,
            "path_prefix = {path_prefix:?}\nupstream = {upstream:?}"
        )
        .unwrap();
        for (key, value) in keys {
            writeln!(route, "{key} = {value}").unwrap();
        }
        self.routes.push(route);
        self
    }

    /// Sets a `[cache]` key to a raw TOML value, e.g. `cache("capacity", "\"1MiB\"")`.
    pub fn cache(self, key: &str, raw_value: &str) -> Self {
        self.set("cache", key, raw_value)
    }

    /// Turns the cache on (`[cache] enabled = true`).
    pub fn with_cache(self) -> Self {
        self.cache("enabled", "true")
    }

    /// Appends a raw TOML table after the sections, e.g.
    /// `"[[forward_proxy.user]]\nname = \"ann\"\n..."`.
    pub fn table(mut self, raw: &str) -> Self {
        self.upstreams.push(raw.to_owned());
        self
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for (section, entries) in &self.sections {
            writeln!(text, "[{section}]").unwrap();
            for (key, value) in entries {
                writeln!(text, "{key} = {value}").unwrap();
            }
            text.push('\n');
        }
        for table in self.upstreams.iter().chain(&self.routes) {
            writeln!(text, "{table}").unwrap();
        }
        text
    }
}

/// A uniquely named file in the temp dir, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn with_contents(contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "shardproxy-test-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, contents).expect("writing a temp config");
        TempFile { path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every line a child printed, from background threads that keep its pipes
/// drained.
#[derive(Clone, Default)]
pub struct OutputLog {
    lines: Arc<Mutex<Vec<String>>>,
}

impl OutputLog {
    /// Drains `pipe` line by line in a background thread; each line is kept
    /// and also sent to `lines_seen` (if still listened to).
    pub fn drain(&self, pipe: impl Read + Send + 'static, lines_seen: mpsc::Sender<String>) {
        let lines = Arc::clone(&self.lines);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push(line.clone());
                let _ = lines_seen.send(line);
            }
        });
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    output: OutputLog,
    _config_file: TempFile,
}

impl Proxy {
    /// Starts the proxy and waits until every shard is listening.
    pub fn start(config: &ProxyConfig) -> Proxy {
        let config_text = config.render();
        let config_file = TempFile::with_contents(&config_text);
        let mut child = Command::new(PROXY_BINARY)
            .arg("--config")
            .arg(&config_file.path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the proxy");
        let output = OutputLog::default();
        let (lines_seen, lines) = mpsc::channel();
        output.drain(child.stderr.take().unwrap(), lines_seen.clone());
        output.drain(child.stdout.take().unwrap(), lines_seen);
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            output,
            _config_file: config_file,
        };
        proxy.addr = proxy.wait_until_listening(config.shards, &lines, &config_text);
        proxy
    }

    fn wait_until_listening(
        &mut self,
        shards: usize,
        lines: &mpsc::Receiver<String>,
        config_text: &str,
    ) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_LIMIT;
        let mut addrs = Vec::new();
        while addrs.len() < shards {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => addrs.extend(listening_addr(&line)),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("the proxy exited ({status}) before listening; config:\n{config_text}");
                    }
                }
                Err(_) => panic!(
                    "the proxy did not print {shards} `listening on` lines within {STARTUP_LIMIT:?}; config:\n{config_text}"
                ),
            }
        }
        assert!(
            addrs.iter().all(|addr| *addr == addrs[0]),
            "all shards must share one listening address, got {addrs:?}"
        );
        addrs[0]
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The config file the proxy was started with (a test may rewrite it and
    /// send SIGHUP).
    pub fn config_path(&self) -> &std::path::Path {
        &self._config_file.path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send_sigterm(&self) {
        self.send_signal(libc::SIGTERM);
    }

    pub fn send_signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({signal}) failed");
    }

    /// Waits for the process to exit; panics after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        wait_with_limit(&mut self.child, limit)
            .unwrap_or_else(|| panic!("the proxy did not exit within {limit:?}"))
    }

    /// Everything the proxy printed so far.
    pub fn output(&self) -> String {
        self.output.text()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- proxy output ({}) ----\n{}\n----",
                self.addr,
                self.output()
            );
        }
    }
}

/// Polls `child` until it exits or `limit` passes (`None`).
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The peak resident set size (VmHWM) of process `pid`.
pub fn peak_memory_bytes(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// The address in a `... listening on 127.0.0.1:41234` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let token = rest.split_whitespace().next()?;
    token
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()
}
