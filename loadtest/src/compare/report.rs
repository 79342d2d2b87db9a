//! Turns the runs of `compare` into results: raw JSON, a Markdown report
//! (machine, exact command, setup, one table per scenario with medians and
//! ratios against nginx, the loadtest/wrk self-overhead) and one SVG chart
//! per scenario. With `--publish` the report becomes BENCHMARKS.md at the
//! repository root, charts under loadtest/benchmarks/.

use super::chart::{self, Series};
use super::{median, Overhead, Run, Scenario};
use crate::cli::CompareArgs;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Everything `results.json` keeps, enough to redraw the report later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub command: String,
    pub repeat: usize,
    pub duration_ms: u64,
    pub warmup_ms: u64,
    pub systems: Vec<String>,
    pub scenarios: Vec<String>,
    pub notes: Vec<String>,
    pub runs: Vec<Run>,
    pub self_overhead: Option<Overhead>,
}

pub fn load(out: &Path) -> Result<Saved, String> {
    let p = out.join("results.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
}

pub struct Context<'a> {
    pub args: &'a CompareArgs,
    /// The command line that produced the runs.
    pub command: String,
    pub repeat: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub systems: &'a [&'a str],
    pub scenarios: &'a [Scenario],
    pub runs: &'a [Run],
    pub overhead: Option<&'a Overhead>,
    pub notes: &'a [String],
}

/// Medians of one system in one scenario.
struct Summary {
    rps: f64,
    p50: f64,
    p99: f64,
    cpu: f64,
    errors: u64,
    /// Curve of the run with the median p99 (the typical tail).
    curve: Vec<(f64, f64)>,
}

fn summarize(runs: &[&Run]) -> Option<Summary> {
    if runs.is_empty() {
        return None;
    }
    let rps: Vec<f64> = runs.iter().map(|r| r.result.requests_per_sec).collect();
    let m = median(&rps);
    let mut by_p99: Vec<&&Run> = runs.iter().collect();
    by_p99.sort_by(|a, b| a.result.latency_ms.p99.total_cmp(&b.result.latency_ms.p99));
    let mid = by_p99
        .get(by_p99.len() / 2)
        .map(|r| r.result.latency_curve.clone())
        .unwrap_or_default();
    Some(Summary {
        rps: m,
        p50: median(
            &runs
                .iter()
                .map(|r| r.result.latency_ms.p50)
                .collect::<Vec<_>>(),
        ),
        p99: median(
            &runs
                .iter()
                .map(|r| r.result.latency_ms.p99)
                .collect::<Vec<_>>(),
        ),
        cpu: median(
            &runs
                .iter()
                .map(|r| r.cpu_us_per_request)
                .collect::<Vec<_>>(),
        ),
        errors: runs.iter().map(|r| r.result.errors.total).sum(),
        curve: mid,
    })
}

fn label(system: &str, scenario: &str) -> String {
    match (system, scenario) {
        ("shardproxy", "zipf") => "shardproxy (cache)".into(),
        ("haproxy", "zipf") => "haproxy (no cache)".into(),
        ("nginx", "zipf") => "nginx (proxy_cache, tmpfs)".into(),
        ("floor", "zipf") => "floor (no cache)".into(),
        ("floor", _) => "floor (minimal forwarder)".into(),
        ("origin", _) => "origin (direct)".into(),
        (s, _) => s.into(),
    }
}

fn ratio(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

/// shardproxy's CPU per request against the better anchor (nginx or
/// HAProxy) round by round, each ratio from runs minutes apart rather than
/// from medians taken over the whole session: on a shared machine the
/// load of the neighbours drifts between rounds and moves every system of a
/// round together, which the pairing cancels and the ratio of medians does
/// not. Shown beside the table's ratio (not instead of it), with its spread.
fn paired(runs: &[Run], scenario: &str) -> Option<String> {
    let points: Vec<(&str, usize, f64)> = runs
        .iter()
        .filter(|r| r.scenario == scenario)
        .map(|r| (r.system.as_str(), r.repeat, r.cpu_us_per_request))
        .collect();
    let ratios = paired_ratios(&points);
    if ratios.is_empty() {
        return None;
    }
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    Some(format!(
        "Round by round, shardproxy's CPU per request against the better of nginx and HAProxy \
         in the same round: {} (median **{:.2}×**).",
        each.join(", "),
        median(&ratios)
    ))
}

/// For each round (repeat) that has shardproxy and at least one anchor:
/// shardproxy's CPU per request over the lower of the anchors'.
fn paired_ratios(points: &[(&str, usize, f64)]) -> Vec<f64> {
    let cpu_of = |system: &str, repeat: usize| {
        points
            .iter()
            .find(|(s, r, _)| *s == system && *r == repeat)
            .map(|(_, _, cpu)| *cpu)
    };
    let rounds = points.iter().map(|(_, r, _)| r + 1).max().unwrap_or(0);
    (0..rounds)
        .filter_map(|rep| {
            let ours = cpu_of("shardproxy", rep)?;
            let best = [cpu_of("nginx", rep), cpu_of("haproxy", rep)]
                .into_iter()
                .flatten()
                .reduce(f64::min)?;
            (best > 0.0).then(|| ours / best)
        })
        .collect()
}

fn machine() -> String {
    let nproc = crate::util::cpu_count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{nproc} CPUs (nproc), kernel {kernel}, CPU model \"{cpu}\"")
}

fn version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let t = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            // First line, without HAProxy's trailing " - <website>".
            String::from_utf8_lossy(&t)
                .lines()
                .next()
                .unwrap_or("")
                .split(" - ")
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The Markdown report; charts are linked under `chart_prefix`.
fn markdown(c: &Context, chart_prefix: &str) -> String {
    let a = c.args;
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `loadtest compare` (see `loadtest/README.md`).\n"
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(md, "- Command: `{}`", c.command);
    let _ = writeln!(
        md,
        "- Versions: {}; {}",
        version("nginx", "-v"),
        version("haproxy", "-v")
    );
    let cpus = |l: &crate::util::CpuList| {
        l.0.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let placement = if a.pin {
        "confined there by taskset, each pinning one shard/worker/thread per CPU with its own setting \
         (shardproxy `cpus`, nginx `worker_cpu_affinity`, HAProxy `cpu-map`; `--pin`)"
    } else {
        "confined there by taskset and placed by the kernel (no per-thread affinity for any of them: \
         shardproxy runs with `pin = false`)"
    };
    let sessions = if a.shared_session {
        "every server in compare's own session (`--shared-session`)"
    } else {
        "each server (and origin) in a session of its own, as a daemon runs, so the kernel's autogroup \
         scheduling weighs its threads as one group"
    };
    let _ = writeln!(
        md,
        "- Setup: systems under test (and the directly-hit origin) on CPU {}, {} shard/worker/thread each, \
         {placement}; {sessions}; \
         the load generator ({} thread) and the upstream origin behind the proxies share CPU {}. \
         Each run: {:?} warmup (not recorded), then {:?} measured; {} repeat(s), systems interleaved \
         (A B C D A B C D …); medians reported. CPU µs/request = the server's time on the CPU over all its \
         processes and threads during the measured run (`/proc/PID/task/*/schedstat`), divided by the requests completed.",
        cpus(&a.server_cpus),
        a.shards,
        a.threads,
        cpus(&a.client_cpus),
        c.warmup,
        c.duration,
        c.repeat
    );
    let _ = writeln!(
        md,
        "- Everything shares one small machine with other work, so absolute numbers are noisy; \
         compare systems within a table, not across runs.\n"
    );
    for n in c.notes {
        let _ = writeln!(md, "- Note: {n}");
    }
    for sc in c.scenarios {
        let _ = writeln!(md, "## {}\n", sc.title);
        let _ = writeln!(md, "`GET {}` {}\n", sc.path, sc.args.join(" "));
        let _ = writeln!(
            md,
            "| system | req/s | p50 ms | p99 ms | CPU µs/req | req/s vs nginx | CPU/req vs nginx | errors |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let sums: Vec<(&str, Option<Summary>)> = c
            .systems
            .iter()
            .map(|s| {
                let rs: Vec<&Run> = c
                    .runs
                    .iter()
                    .filter(|r| r.scenario == sc.key && r.system == *s)
                    .collect();
                (*s, summarize(&rs))
            })
            .collect();
        let of = |name: &str| {
            sums.iter()
                .find(|(s, _)| *s == name)
                .and_then(|(_, v)| v.as_ref())
        };
        let nginx = of("nginx");
        for (s, v) in &sums {
            let Some(v) = v else { continue };
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.3} | {:.3} | {:.1} | {} | {} | {} |",
                label(s, sc.key),
                v.rps,
                v.p50,
                v.p99,
                v.cpu,
                ratio(v.rps, nginx.map(|n| n.rps)),
                ratio(v.cpu, nginx.map(|n| n.cpu)),
                v.errors
            );
        }
        // The floor is a floor only where a connection of its own to the
        // origin per client connection costs what a pool does: keep-alive.
        // Larger bodies it copies where shardproxy splices.
        let keep_alive_small = sc.args.is_empty() && sc.path == "/bytes/1024";
        if let (true, Some(ours), Some(floor)) = (keep_alive_small, of("shardproxy"), of("floor")) {
            let _ = writeln!(
                md,
                "\nshardproxy spends **{}** the floor's CPU per request (`loadtest floor`: \
                 the runtime's and the kernel's share, no proxy work).",
                ratio(ours.cpu, Some(floor.cpu))
            );
        }
        if let Some(line) = paired(c.runs, sc.key) {
            let _ = writeln!(md, "\n{line}");
        }
        let _ = writeln!(
            md,
            "\n![{}]({chart_prefix}chart-{}.svg)\n",
            sc.title, sc.key
        );
    }
    if let Some(o) = c.overhead {
        let (l, w) = (median(&o.loadtest_rps), median(&o.wrk_rps));
        let _ = writeln!(md, "## Load generator self-overhead: loadtest vs wrk\n");
        let _ = writeln!(
            md,
            "Both against `loadtest origin` directly (`GET /bytes/1024`), {} connections, {} thread(s), \
             interleaved, {} repeats; the client CPU is the generator's own utime+stime.\n",
            o.connections,
            o.threads,
            o.loadtest_rps.len()
        );
        let _ = writeln!(
            md,
            "| client | median req/s | runs (req/s) | median client CPU µs/req |"
        );
        let _ = writeln!(md, "|---|---:|---|---:|");
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            md,
            "| loadtest run | {l:.0} | {} | {:.2} |",
            fmt(&o.loadtest_rps),
            median(&o.loadtest_cpu_us_per_req)
        );
        let _ = writeln!(
            md,
            "| wrk | {w:.0} | {} | {:.2} |",
            fmt(&o.wrk_rps),
            median(&o.wrk_cpu_us_per_req)
        );
        let _ = writeln!(
            md,
            "\nRatio loadtest / wrk (median req/s): **{:.3}**; client CPU per request ratio: **{:.3}**.\n",
            if w > 0.0 { l / w } else { 0.0 },
            {
                let wc = median(&o.wrk_cpu_us_per_req);
                if wc > 0.0 {
                    median(&o.loadtest_cpu_us_per_req) / wc
                } else {
                    0.0
                }
            }
        );
    }
    md
}

fn charts(c: &Context, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for sc in c.scenarios {
        let series: Vec<Series> = c
            .systems
            .iter()
            .filter_map(|s| {
                let rs: Vec<&Run> = c
                    .runs
                    .iter()
                    .filter(|r| r.scenario == sc.key && r.system == *s)
                    .collect();
                summarize(&rs).map(|v| Series {
                    name: label(s, sc.key),
                    curve: v.curve,
                    cpu_us: v.cpu,
                })
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        chart::draw(
            &dir.join(format!("chart-{}.svg", sc.key)),
            &sc.title,
            &series,
        )?;
    }
    Ok(())
}

pub fn write_all(c: &Context, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let keys: Vec<&str> = c.scenarios.iter().map(|s| s.key).collect();
    let raw = Saved {
        command: c.command.clone(),
        repeat: c.repeat,
        duration_ms: c.duration.as_millis() as u64,
        warmup_ms: c.warmup.as_millis() as u64,
        systems: c.systems.iter().map(|s| s.to_string()).collect(),
        scenarios: keys.iter().map(|s| s.to_string()).collect(),
        notes: c.notes.to_vec(),
        runs: c.runs.to_vec(),
        self_overhead: c.overhead.cloned(),
    };
    let p = out.join("results.json");
    std::fs::write(&p, serde_json::to_string_pretty(&raw).unwrap_or_default())
        .map_err(|e| format!("{}: {e}", p.display()))?;
    charts(c, out)?;
    let p = out.join("report.md");
    std::fs::write(&p, markdown(c, "")).map_err(|e| format!("{}: {e}", p.display()))?;
    if c.args.publish {
        let dir = Path::new("loadtest/benchmarks");
        charts(c, dir)?;
        std::fs::write("BENCHMARKS.md", markdown(c, "loadtest/benchmarks/"))
            .map_err(|e| format!("BENCHMARKS.md: {e}"))?;
        eprintln!("compare: wrote BENCHMARKS.md and loadtest/benchmarks/*.svg");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_take_the_better_anchor_of_each_round() {
        let points = [
            ("shardproxy", 0, 8.0),
            ("nginx", 0, 10.0),
            ("haproxy", 0, 16.0),
            // A slower round: every system drifts together.
            ("shardproxy", 1, 18.0),
            ("nginx", 1, 22.0),
            ("haproxy", 1, 20.0),
            // No anchor ran in round 2: no ratio for it.
            ("shardproxy", 2, 9.0),
            ("floor", 2, 7.0),
        ];
        assert_eq!(paired_ratios(&points), vec![0.8, 0.9]);
        assert!(paired_ratios(&[("nginx", 0, 10.0)]).is_empty());
    }
}
