//! `loadtest compare`: benchmarks the origin directly, shardproxy, nginx and
//! HAProxy under the same scenarios, interleaved (A B C D A B C D …) so slow
//! drifts of a shared machine hit every system alike, and reports medians.
//!
//! Layout on the machine: the systems under test (and the directly-hit
//! origin) run on `--server-cpus`; the load generator and the upstream origin
//! behind the proxies share `--client-cpus`. Each measured run is preceded by
//! an unrecorded warmup run; the server's CPU time (all its processes) is
//! sampled from /proc right before and after the measured run. All traffic
//! goes to 127.0.0.1, and every run is bounded by its duration.

mod chart;
mod fleet;
mod procstat;
mod report;
mod systems;

use crate::cli::CompareArgs;
use crate::report::RunResult;
use fleet::{Fleet, FleetConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use systems::{Kind, Server};

/// One load shape.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub key: &'static str,
    pub title: String,
    pub path: &'static str,
    pub connections: usize,
    pub args: Vec<String>,
}

fn scenarios(a: &CompareArgs) -> Vec<Scenario> {
    let s = |key, title: &str, path, connections, args: &[&str]| Scenario {
        key,
        title: title.to_string(),
        path,
        connections,
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let rate = format!("{}", a.rate);
    vec![
        s("ka1k", "1 KiB keep-alive (64 connections)", "/bytes/1024", 64, &[]),
        s("ka64k", "64 KiB keep-alive (64 connections)", "/bytes/65536", 64, &[]),
        s(
            "newconn",
            "1 KiB, new connection per request (64 concurrent)",
            "/bytes/1024",
            64,
            &["--new-connection-per-request"],
        ),
        s("c1000", "1 KiB keep-alive, 1,000 connections", "/bytes/1024", 1000, &[]),
        s(
            "zipf",
            "cacheable zipf:1.0 over 10,000 keys, 1 KiB, max-age=60 (64 connections)",
            "/cache/max-age=60/bytes/1024",
            64,
            &["--paths", "10000", "--dist", "zipf:1.0"],
        ),
        Scenario {
            key: "rate",
            title: format!("constant {rate} req/s, 1 KiB (64 connections, latency corrected for coordinated omission)"),
            path: "/bytes/1024",
            connections: 64,
            args: vec!["--rate".into(), rate],
        },
    ]
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub scenario: String,
    pub system: String,
    pub repeat: usize,
    pub result: RunResult,
    /// Server CPU time during the run, µs (all its processes and threads).
    pub server_cpu_us: f64,
    pub cpu_us_per_request: f64,
}

/// Effective settings after `--quick`.
struct Settings {
    repeat: usize,
    duration: Duration,
    warmup: Duration,
}

pub fn main(a: &CompareArgs) -> Result<(), String> {
    if a.render_only {
        return render_only(a);
    }
    let st = if a.quick {
        Settings {
            repeat: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
        }
    } else {
        Settings {
            repeat: a.repeat.max(1),
            duration: a.duration,
            warmup: a.warmup,
        }
    };
    if a.shards == 0 || a.threads == 0 {
        return Err("--shards and --threads must be at least 1".into());
    }
    let mut kinds = a
        .systems
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Kind::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let wanted: Vec<&str> = a.scenarios.split(',').map(str::trim).collect();
    let all = scenarios(a);
    for w in &wanted {
        if !w.is_empty() && !all.iter().any(|s| s.key == *w) {
            return Err(format!("unknown scenario {w:?}"));
        }
    }
    let scens: Vec<Scenario> = all
        .into_iter()
        .filter(|s| wanted.contains(&s.key))
        .collect();

    let mut notes = Vec::new();
    if kinds.contains(&Kind::Shardproxy) && !a.shardproxy.is_file() {
        let msg = format!(
            "shardproxy binary {} not found (cargo build --release -p shardproxy); skipped",
            a.shardproxy.display()
        );
        eprintln!("compare: {msg}");
        notes.push(msg);
        kinds.retain(|k| *k != Kind::Shardproxy);
    }
    let mut tools = Vec::new();
    if kinds.contains(&Kind::Nginx) {
        tools.push("nginx");
    }
    if kinds.contains(&Kind::Haproxy) {
        tools.push("haproxy");
    }
    if a.self_overhead {
        tools.push("wrk");
    }
    systems::ensure_tools(!a.no_install, &tools)?;
    crate::util::raise_limits();

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let work = a.out.join("work");
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    // nginx resolves relative paths against its prefix: hand out absolute ones.
    let work = std::fs::canonicalize(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let cache_dir = PathBuf::from(format!("/dev/shm/loadtest-compare-{}", std::process::id()));
    let _cache_guard = RemoveDir(cache_dir.clone());

    eprintln!("compare: starting origins and proxies");
    let mut fleet = Fleet::start(
        FleetConfig {
            exe: exe.clone(),
            work: work.clone(),
            shardproxy: a.shardproxy.clone(),
            layout: systems::Layout {
                shards: a.shards,
                cpus: a.server_cpus.clone(),
                pin: a.pin,
                sessions: if a.shared_session {
                    systems::Sessions::Shared
                } else {
                    systems::Sessions::OwnEach
                },
            },
            client_cpus: a.client_cpus.clone(),
            cache_dir: cache_dir.clone(),
        },
        &kinds,
    )?;

    let client = Client {
        exe: exe.clone(),
        cpus: a
            .client_cpus
            .0
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        threads: a.threads,
    };
    let mut runs = Vec::new();
    for sc in &scens {
        for rep in 0..st.repeat {
            for i in 0..fleet.servers.len() {
                let when = format!("before {} #{}", sc.key, rep + 1);
                let mut attempt = 0;
                let run = loop {
                    fleet.ensure(i, &when)?;
                    let run = measure(&client, &fleet.servers[i], sc, rep, &st)?;
                    if fleet.healthy(i) {
                        break run;
                    }
                    // Something died under load: that run is void.
                    attempt += 1;
                    if attempt >= 3 {
                        return Err(format!("{} keeps dying during {}", run.system, sc.key));
                    }
                };
                runs.push(run);
            }
        }
    }

    let overhead = if a.self_overhead {
        let idx = fleet.servers.iter().position(|s| s.kind == Kind::Origin);
        let Some(idx) = idx else {
            return Err("--self-overhead needs the origin in --systems".into());
        };
        fleet.ensure(idx, "before the self-overhead runs")?;
        let origin = match fleet.servers.get(idx) {
            Some(o) => o,
            None => return Err("--self-overhead needs the origin in --systems".into()),
        };
        Some(self_overhead(&client, origin, &st)?)
    } else {
        None
    };
    notes.extend(fleet.notes.iter().cloned());
    drop(fleet);

    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let ctx = report::Context {
        args: a,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        repeat: st.repeat,
        duration: st.duration,
        warmup: st.warmup,
        systems: &names,
        scenarios: &scens,
        runs: &runs,
        overhead: overhead.as_ref(),
        notes: &notes,
    };
    report::write_all(&ctx, &a.out)?;
    eprintln!("compare: results in {}", a.out.display());
    Ok(())
}

/// Redraws report and charts from a previous results.json.
fn render_only(a: &CompareArgs) -> Result<(), String> {
    let saved = report::load(&a.out)?;
    let all = scenarios(a);
    let scens: Vec<Scenario> = all
        .into_iter()
        .filter(|s| saved.scenarios.iter().any(|k| k == s.key))
        .collect();
    let names: Vec<&str> = saved.systems.iter().map(String::as_str).collect();
    let ctx = report::Context {
        args: a,
        command: saved.command.clone(),
        repeat: saved.repeat,
        duration: Duration::from_millis(saved.duration_ms),
        warmup: Duration::from_millis(saved.warmup_ms),
        systems: &names,
        scenarios: &scens,
        runs: &saved.runs,
        overhead: saved.self_overhead.as_ref(),
        notes: &saved.notes,
    };
    report::write_all(&ctx, &a.out)
}

/// One warmup run (not recorded) and one measured run against `s`, with the
/// server's CPU time sampled around the measured one.
fn measure(
    client: &Client,
    s: &Server,
    sc: &Scenario,
    rep: usize,
    st: &Settings,
) -> Result<Run, String> {
    let url = s.url(sc.path);
    if !st.warmup.is_zero() {
        client.run(&url, sc, st.warmup)?;
    }
    let before = procstat::tree_cpu(s.pid());
    let result = client.run(&url, sc, st.duration)?;
    let cpu = procstat::tree_cpu(s.pid()).saturating_sub(before);
    let cpu_us = cpu.as_secs_f64() * 1e6;
    let per = cpu_us / (result.requests.max(1) as f64);
    eprintln!(
        "compare: {:<8} #{} {:<10} {:>10.0} req/s  p50 {:.3} ms  p99 {:.3} ms  {:.1} µs CPU/req  {} errors",
        sc.key,
        rep + 1,
        s.kind.name(),
        result.requests_per_sec,
        result.latency_ms.p50,
        result.latency_ms.p99,
        per,
        result.errors.total
    );
    Ok(Run {
        scenario: sc.key.to_string(),
        system: s.kind.name().to_string(),
        repeat: rep,
        result,
        server_cpu_us: cpu_us,
        cpu_us_per_request: per,
    })
}

/// Runs `loadtest run` as a child process and parses its JSON.
struct Client {
    exe: PathBuf,
    cpus: String,
    threads: usize,
}

impl Client {
    fn run(&self, url: &str, sc: &Scenario, d: Duration) -> Result<RunResult, String> {
        let threads = self.threads.min(sc.connections);
        let out = Command::new(&self.exe)
            .args(["run", url, "--json", "--warmup", "0s", "--timeout", "5s"])
            .args(["-c", &sc.connections.to_string()])
            .args(["-t", &threads.to_string()])
            .args(["--cpus", &self.cpus])
            .args(["-d", &format!("{}ms", d.as_millis())])
            .args(&sc.args)
            .output()
            .map_err(|e| format!("cannot run client: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "client failed on {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("client output on {url}: {e}"))
    }
}

/// loadtest vs wrk against the origin directly: same connections and threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    pub connections: usize,
    pub threads: usize,
    pub loadtest_rps: Vec<f64>,
    pub wrk_rps: Vec<f64>,
    pub loadtest_cpu_us_per_req: Vec<f64>,
    pub wrk_cpu_us_per_req: Vec<f64>,
}

fn self_overhead(client: &Client, origin: &Server, st: &Settings) -> Result<Overhead, String> {
    let sc = Scenario {
        key: "overhead",
        title: String::new(),
        path: "/bytes/1024",
        connections: 64,
        args: Vec::new(),
    };
    let url = origin.url(sc.path);
    let secs = st.duration.as_secs().max(1).to_string();
    let mut o = Overhead {
        connections: sc.connections,
        threads: client.threads,
        loadtest_rps: Vec::new(),
        wrk_rps: Vec::new(),
        loadtest_cpu_us_per_req: Vec::new(),
        wrk_cpu_us_per_req: Vec::new(),
    };
    let d = Duration::from_secs(secs.parse().unwrap_or(1));
    for rep in 0..st.repeat.max(3) {
        let c0 = procstat::children_cpu();
        let r = client.run(&url, &sc, d)?;
        let c1 = procstat::children_cpu();
        o.loadtest_rps.push(r.requests_per_sec);
        o.loadtest_cpu_us_per_req
            .push((c1 - c0).as_secs_f64() * 1e6 / r.requests.max(1) as f64);

        let out = Command::new("taskset")
            .args(["-c", &client.cpus, "wrk"])
            .args(["-c", &sc.connections.to_string()])
            .args(["-t", &client.threads.to_string()])
            .args(["-d", &format!("{secs}s"), &url])
            .output()
            .map_err(|e| format!("cannot run wrk: {e}"))?;
        let c2 = procstat::children_cpu();
        let text = String::from_utf8_lossy(&out.stdout);
        let rps = parse_wrk_rps(&text).ok_or_else(|| format!("unexpected wrk output: {text}"))?;
        o.wrk_rps.push(rps);
        o.wrk_cpu_us_per_req
            .push((c2 - c1).as_secs_f64() * 1e6 / (rps * d.as_secs_f64()).max(1.0));
        eprintln!(
            "compare: overhead #{} loadtest {:.0} req/s, wrk {:.0} req/s",
            rep + 1,
            r.requests_per_sec,
            rps
        );
    }
    Ok(o)
}

fn parse_wrk_rps(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Removes a scratch directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if self.0.starts_with(Path::new("/dev/shm")) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn wrk_output() {
        let t = "Running 3s test\n  1 threads and 64 connections\nRequests/sec:  63887.09\nTransfer/sec: 1MB\n";
        assert_eq!(parse_wrk_rps(t), Some(63887.09));
        assert_eq!(parse_wrk_rps("nothing"), None);
    }
}
