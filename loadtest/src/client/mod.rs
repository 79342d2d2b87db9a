//! `loadtest run`: validates the options, starts one pinned worker thread per
//! `--threads` (each an epoll loop over its share of the connections, see
//! `worker`), shows progress, and merges the per-worker results.
//!
//! Run lifetime: warmup (traffic not recorded) → measurement (until
//! `--duration` passes or `--requests` attempts are used up) → at most one
//! `--timeout` of grace for in-flight responses, after which every
//! connection is closed. So every run ends on its own.

mod conn;
pub mod request;
pub mod response;
mod worker;

use crate::cli::RunArgs;
use crate::dist::KeyDist;
use crate::report::{RunResult, WorkerStats};
use crate::util;
use request::{
    check_method, parse_header, resolve, split_host_port, Template, TemplateOptions, Url,
};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One URL, ready to use.
#[derive(Debug)]
pub struct Target {
    pub label: String,
    /// Where to connect: the URL's host, or the forward proxy.
    pub connect_addr: SocketAddr,
    pub template: Template,
}

/// Read-only configuration shared by all workers.
#[derive(Debug)]
pub struct ClientConfig {
    pub targets: Vec<Target>,
    pub verify: bool,
    pub pipeline: usize,
    pub timeout: Duration,
    pub new_connection: bool,
    /// Open loop: time between two requests on one connection.
    pub rate_interval: Option<Duration>,
    pub dist: Option<KeyDist>,
}

/// Timing and the request budget, shared by all workers.
#[derive(Debug)]
pub struct Control {
    pub start: Instant,
    pub measure_start: Instant,
    /// No request is started at or after this instant.
    pub deadline: Option<Instant>,
    /// Remaining request attempts for `--requests`.
    budget: Option<AtomicU64>,
}

impl Control {
    pub fn past_deadline(&self, t: Instant) -> bool {
        self.deadline.is_some_and(|d| t >= d)
    }

    /// Claims up to `want` requests to start at `t`; `None` ends the loop.
    /// Warmup traffic does not use the budget.
    pub fn claim(&self, t: Instant, want: u64) -> Option<u64> {
        if self.past_deadline(t) {
            return None;
        }
        if t < self.measure_start {
            return Some(want);
        }
        let Some(budget) = &self.budget else {
            return Some(want);
        };
        let mut got = 0;
        let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            got = left.min(want);
            (got > 0).then(|| left - got)
        });
        (got > 0).then_some(got)
    }
}

/// Live counters for the progress line; one per worker, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    requests: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    fn add(&self, requests: u64, errors: u64) {
        if requests > 0 {
            self.requests.fetch_add(requests, Ordering::Relaxed);
        }
        if errors > 0 {
            self.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
}

/// Validates the arguments into a shared config; errors are user-facing.
fn build_config(a: &RunArgs) -> Result<ClientConfig, String> {
    check_method(&a.method)?;
    if a.pipeline == 0 {
        return Err("--pipeline must be at least 1".into());
    }
    if a.rate.is_some() && a.pipeline > 1 {
        return Err("--pipeline applies to closed-loop runs only; drop it or --rate".into());
    }
    let rate_interval = match a.rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            return Err(format!("--rate must be a positive number, got {r}"))
        }
        Some(r) => Some(Duration::from_secs_f64(a.connections as f64 / r)),
        None => None,
    };
    let headers = a
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let proxy = match &a.proxy {
        Some(p) => {
            let (h, port) = split_host_port(p, 3128).map_err(|e| format!("--proxy {p}: {e}"))?;
            Some(resolve(h, port)?)
        }
        None => None,
    };
    let mut targets = Vec::new();
    for raw in &a.urls {
        let url = Url::parse(raw)?;
        let connect_addr = match proxy {
            Some(p) => p,
            None => url.resolve()?,
        };
        let template = Template::new(
            &url,
            &TemplateOptions {
                method: &a.method,
                headers: &headers,
                body_size: a.body_size,
                absolute_form: proxy.is_some(),
                close: a.new_connection_per_request,
            },
        );
        targets.push(Target {
            label: raw.clone(),
            connect_addr,
            template,
        });
    }
    let dist = match a.paths {
        Some(n) => Some(KeyDist::new(n, &a.dist)?),
        None => None,
    };
    if a.timeout.is_zero() {
        return Err("--timeout must be greater than zero".into());
    }
    Ok(ClientConfig {
        targets,
        verify: a.verify,
        pipeline: a.pipeline,
        timeout: a.timeout,
        new_connection: a.new_connection_per_request,
        rate_interval,
        dist,
    })
}

/// Runs the load and returns the merged result (also used by `compare`).
pub fn execute(a: &RunArgs) -> Result<(RunResult, Vec<String>), String> {
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let threads = a.threads.unwrap_or_else(util::cpu_count);
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    let threads = threads.min(a.connections);
    if a.requests == Some(0) {
        return Err("--requests must be at least 1".into());
    }
    let cfg = Arc::new(build_config(a)?);
    util::raise_limits();

    let duration = match (a.duration, a.requests) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    // Workers take a moment to start; give them a common start just ahead.
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + a.warmup;
    let ctl = Arc::new(Control {
        start,
        measure_start,
        deadline: duration.map(|d| measure_start + d),
        budget: a.requests.map(AtomicU64::new),
    });
    let hard_end = ctl.deadline.map(|d| d + cfg.timeout);

    let progress: Vec<Arc<Progress>> = (0..threads).map(|_| Arc::default()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let show_progress = !a.json && std::io::stdout().is_terminal();
    let ticker = show_progress.then(|| {
        let progress = progress.clone();
        let done = done.clone();
        std::thread::spawn(move || progress_loop(&progress, &done, measure_start))
    });

    let mut handles = Vec::with_capacity(threads);
    for (w, prog) in progress.iter().enumerate() {
        // Connection c belongs to worker c % threads and targets URL c % urls.
        let conns: Vec<(usize, u64)> = (0..a.connections)
            .filter(|c| c % threads == w)
            .map(|c| (c % cfg.targets.len(), 0x5eed_0000 + c as u64))
            .collect();
        let cpu = util::cpu_for(w, a.cpus.as_ref());
        let (cfg, ctl, prog) = (cfg.clone(), ctl.clone(), prog.clone());
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{w}"))
            .spawn(move || worker(cpu, conns, cfg, ctl, prog, hard_end))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }
    let mut total = WorkerStats::default();
    let mut last: Option<Instant> = None;
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((stats, l))) => {
                total.merge(&stats);
                last = last.max(l);
            }
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some("a worker thread panicked".to_string())),
        }
    }
    done.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let end = last.unwrap_or_else(Instant::now).max(measure_start);
    let elapsed = match ctl.deadline {
        // Responses that were in flight at the deadline still count, so the
        // rate is over the time until the last of them arrived.
        Some(d) => end.max(d) - measure_start,
        None => end - measure_start,
    };
    let result = RunResult::from_stats(&total, elapsed, a.connections, threads, a.rate);
    Ok((result, total.mismatches))
}

type WorkerOut = Result<(WorkerStats, Option<Instant>), String>;

fn worker(
    cpu: usize,
    conns: Vec<(usize, u64)>,
    cfg: Arc<ClientConfig>,
    ctl: Arc<Control>,
    progress: Arc<Progress>,
    hard_end: Option<Instant>,
) -> WorkerOut {
    util::pin_current_thread(cpu);
    let start = ctl.start;
    let mut w = worker::Worker::new(&conns, cfg, ctl, progress)
        .map_err(|e| format!("cannot create epoll instance: {e}"))?;
    let now = Instant::now();
    if start > now {
        std::thread::sleep(start - now);
    }
    w.run(hard_end);
    Ok((std::mem::take(&mut w.stats), w.last_completion))
}

fn progress_loop(progress: &[Arc<Progress>], done: &AtomicBool, measure_start: Instant) {
    let mut last_req = 0u64;
    let mut next = Instant::now() + Duration::from_secs(1);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now < next {
            continue;
        }
        next += Duration::from_secs(1);
        let req: u64 = progress
            .iter()
            .map(|p| p.requests.load(Ordering::Relaxed))
            .sum();
        let err: u64 = progress
            .iter()
            .map(|p| p.errors.load(Ordering::Relaxed))
            .sum();
        if now < measure_start {
            println!("[warmup]");
        } else {
            println!(
                "[{:>5.1}s] {:>10} req/s  {:>12} requests  {:>8} errors",
                (now - measure_start).as_secs_f64(),
                req - last_req,
                req,
                err
            );
        }
        last_req = req;
    }
}

/// The `run` subcommand.
pub fn main(a: &RunArgs) -> Result<(), String> {
    let (result, samples) = execute(a)?;
    if a.json {
        let s = serde_json::to_string(&result).map_err(|e| e.to_string())?;
        println!("{s}");
    } else {
        result.print_text(a.latency);
    }
    // Identical messages are common (one bug, many requests): show each once.
    let mut shown: Vec<&String> = Vec::new();
    for s in &samples {
        if !shown.contains(&s) {
            eprintln!("error: {s}");
            shown.push(s);
        }
    }
    Ok(())
}
