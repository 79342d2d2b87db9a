//! Several named origins behind one upstream, for the balancing, health,
//! outlier, retry and priority tests: each answers `200` with its own name,
//! or the status the test sets (`fail_with`), and `/health` with 200 or 503
//! as the test sets (`set_healthy`), optionally after a delay (`set_delay`:
//! a slow server). Each records when every request arrived,
//! so a test can count what a server got (health checks apart) and measure
//! the gaps between retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::origin::{self, After, Origin};
use super::{Client, ProxyConfig};

/// The path the fleet's origins answer health checks on.
pub const HEALTH_PATH: &str = "/health";

struct State {
    name: String,
    healthy: AtomicBool,
    /// 200: answer with the name; anything else: answer with that status.
    status: AtomicU16,
    /// Milliseconds each ordinary request waits before its answer.
    delay_ms: AtomicU64,
    /// When each non-health request arrived, with its method.
    arrivals: Mutex<Vec<(Instant, String)>>,
}

pub struct Member {
    pub origin: Origin,
    state: Arc<State>,
}

impl Member {
    pub fn start(name: &str) -> Member {
        let state = Arc::new(State {
            name: name.to_owned(),
            healthy: AtomicBool::new(true),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            arrivals: Mutex::default(),
        });
        let serving = Arc::clone(&state);
        let origin = Origin::start(move |request, stream| {
            if request.target == HEALTH_PATH {
                let ok = serving.healthy.load(Ordering::SeqCst);
                let status = if ok {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                origin::send(stream, response.as_bytes());
                return After::KeepAlive;
            }
            serving
                .arrivals
                .lock()
                .unwrap()
                .push((Instant::now(), request.method.clone()));
            let delay = serving.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                // Each connection has its own thread: only this request waits.
                std::thread::sleep(Duration::from_millis(delay));
            }
            match serving.status.load(Ordering::SeqCst) {
                200 => origin::send_ok(stream, serving.name.as_bytes()),
                status => {
                    let response =
                        format!("HTTP/1.1 {status} Failing\r\nContent-Length: 0\r\n\r\n");
                    origin::send(stream, response.as_bytes());
                }
            }
            After::KeepAlive
        });
        Member { origin, state }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Health checks pass (200) or fail (503) from now on.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Ordinary requests get `status` from now on (200: the name again).
    pub fn fail_with(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Ordinary requests are answered `delay` late from now on.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests other than health checks received so far.
    pub fn served(&self) -> usize {
        self.state.arrivals.lock().unwrap().len()
    }

    /// Arrival times of the requests other than health checks.
    pub fn arrivals(&self) -> Vec<Instant> {
        let arrivals = self.state.arrivals.lock().unwrap();
        arrivals.iter().map(|(at, _)| *at).collect()
    }

    /// Methods of the requests other than health checks, in order.
    pub fn methods(&self) -> Vec<String> {
        let arrivals = self.state.arrivals.lock().unwrap();
        arrivals.iter().map(|(_, method)| method.clone()).collect()
    }
}

/// `n` members named `s0`, `s1`, ...
pub fn fleet(n: usize) -> Vec<Member> {
    (0..n).map(|i| Member::start(&format!("s{i}"))).collect()
}

/// A proxy config whose route `/` goes to upstream `u` made of `members`
/// with `weights` (1 each when empty) and the extra raw TOML `keys`.
pub fn fleet_config(
    shards: usize,
    members: &[Member],
    weights: &[u32],
    keys: &[(&str, &str)],
) -> ProxyConfig {
    let servers: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let weight = weights.get(i).copied().unwrap_or(1);
            format!("{{ addr = \"{}\", weight = {weight} }}", m.origin.addr())
        })
        .collect();
    let mut table = format!(
        "[[upstream]]\nname = \"u\"\nservers = [{}]\n",
        servers.join(", ")
    );
    for (key, value) in keys {
        table.push_str(&format!("{key} = {value}\n"));
    }
    ProxyConfig::new(shards)
        .raw_upstream(table)
        .route(None, "/", "u")
}

/// `requests` GETs of `path` spread over `connections` keep-alive
/// connections (so both shards serve some), each with `headers`; counts
/// responses by body (the answering member's name). Panics on a non-200.
pub fn tally(
    proxy: &super::Proxy,
    requests: usize,
    connections: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let mut clients: Vec<Client> = (0..connections).map(|_| proxy.client()).collect();
    let mut counts = HashMap::new();
    for i in 0..requests {
        let response = clients[i % connections].request_with("GET", "/", headers);
        super::assert_status(&response, 200);
        *counts.entry(response.body_text()).or_insert(0) += 1;
    }
    counts
}
