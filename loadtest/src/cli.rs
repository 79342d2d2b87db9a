//! Command-line interface (clap derive): the `run`, `origin` and `compare`
//! subcommands and their flags. Parsing of values lives in `util`/`dist` so
//! that bad input produces a clap error message rather than a panic.

use crate::dist::{parse_dist, DistSpec};
use crate::util::{parse_cpu_list, parse_duration, parse_size, CpuList};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Thread-per-core HTTP/1.1 load generator, test origin and proxy comparison"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate load against one or more http:// URLs.
    Run(RunArgs),
    /// Serve a fast test origin (see `loadtest origin --help` for endpoints).
    Origin(OriginArgs),
    /// Benchmark the origin directly, shardproxy, nginx and HAProxy, interleaved.
    Compare(CompareArgs),
    /// A minimal keep-alive forwarding proxy: the runtime's and the kernel's
    /// cost per request, as a reference beside the proxies in `compare`.
    Floor(FloorArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Target URLs (http:// only). Connections are spread round-robin over them.
    #[arg(required = true)]
    pub urls: Vec<String>,

    /// Total concurrent connections (split across threads).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,

    /// Worker threads, each pinned to a core (default: number of CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,

    /// Pin worker i to the i-th CPU of this list (e.g. "1" or "0-3"),
    /// instead of CPU i.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// How long to measure (after warmup). Default 10s unless --requests is given.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many requests (attempts, including failed ones).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,

    /// Traffic that is sent but not recorded before measurement starts.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,

    /// Open a new connection for every request (sends `Connection: close`).
    #[arg(long)]
    pub new_connection_per_request: bool,

    /// Requests in flight per connection (closed loop only).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,

    /// Request method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,

    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,

    /// Request body size in bytes (sent with Content-Length).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub body_size: u64,

    /// Open loop: constant total rate in requests/s; latency is measured from
    /// each request's intended send time (coordinated-omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Per-request timeout (connect, and each wait for response bytes).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Append "/{i}" to each URL path, i in 0..N, drawn from --dist.
    #[arg(long)]
    pub paths: Option<u64>,

    /// Key distribution for --paths: uniform or zipf:S (rank 0 most popular).
    #[arg(long, value_parser = parse_dist, default_value = "uniform")]
    pub dist: DistSpec,

    /// Send absolute-form requests through this forward proxy (host:port).
    #[arg(long)]
    pub proxy: Option<String>,

    /// Check every body against its X-Checksum (FNV-1a 64); mismatches are errors.
    #[arg(long)]
    pub verify: bool,

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,

    /// Also print the full latency percentile curve in the text report.
    #[arg(long)]
    pub latency: bool,
}

#[derive(Args, Debug, Clone)]
pub struct OriginArgs {
    /// Address to listen on (repeatable). Port 0 picks a free port shared by all shards.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1:9000")]
    pub listen: Vec<SocketAddr>,

    /// Shards (pinned executor threads); default: number of CPUs.
    #[arg(short = 's', long)]
    pub shards: Option<usize>,

    /// Pin shard i to the i-th CPU of this list (e.g. "0" or "0-1").
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,

    /// Size of the default body served for `/` and unknown paths.
    #[arg(long, value_parser = parse_size, default_value = "1024")]
    pub default_size: u64,

    /// Wait this long before every response, as if every path began with
    /// `/delay/DUR/`: one slow origin among healthy ones, for fault runs.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub delay: std::time::Duration,
}

#[derive(Args, Debug, Clone)]
pub struct FloorArgs {
    /// Address to listen on; port 0 picks a free port shared by all shards.
    #[arg(short = 'l', long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The origin every client connection is forwarded to.
    #[arg(short = 'u', long)]
    pub upstream: SocketAddr,

    /// Shards (executor threads); default: number of CPUs.
    #[arg(short = 's', long)]
    pub shards: Option<usize>,

    /// Pin shard i to the i-th CPU of this list; unpinned without it.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Repeats of each scenario per system (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,

    /// Length of each measured run.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Warmup before each measured run.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,

    /// Smoke test: 1 repeat, 2 s runs, short warmup.
    #[arg(long)]
    pub quick: bool,

    /// Shards / worker processes / threads for every proxy.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,

    /// CPUs for the servers under test (proxies, and the directly-hit origin).
    #[arg(long, value_parser = parse_cpu_list, default_value = "0")]
    pub server_cpus: CpuList,

    /// Pin every proxy's workers/threads/shards one per server CPU, each with
    /// its own setting (shardproxy `cpus`, nginx `worker_cpu_affinity`,
    /// HAProxy `cpu-map`); without it the kernel places them all.
    #[arg(long)]
    pub pin: bool,

    /// Run every server in compare's own session (the layout until
    /// 2026-12-02) instead of each in a session of its own as a daemon runs.
    /// With the kernel's autogroup scheduling the choice moves the ratios:
    /// see docs/PERFORMANCE.md, "Twelfth pass".
    #[arg(long)]
    pub shared_session: bool,

    /// CPUs for the load generator and the upstream origin behind the proxies.
    #[arg(long, value_parser = parse_cpu_list, default_value = "1")]
    pub client_cpus: CpuList,

    /// Client threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Systems to run, comma-separated: origin,shardproxy,nginx,haproxy.
    #[arg(long, default_value = "origin,shardproxy,nginx,haproxy")]
    pub systems: String,

    /// Scenarios to run, comma-separated (default all):
    /// ka1k,ka64k,newconn,c1000,zipf,rate.
    #[arg(long, default_value = "ka1k,ka64k,newconn,c1000,zipf,rate")]
    pub scenarios: String,

    /// Total rate for the constant-rate scenario (requests/s).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,

    /// Also measure loadtest vs wrk self-overhead against the origin.
    #[arg(long)]
    pub self_overhead: bool,

    /// Path to the shardproxy binary.
    #[arg(long, default_value = "target/release/shardproxy")]
    pub shardproxy: PathBuf,

    /// Don't apt-get install missing nginx/haproxy/wrk.
    #[arg(long)]
    pub no_install: bool,

    /// Directory for results (Markdown table, SVG chart, JSON, configs, logs).
    #[arg(long, default_value = "target/compare")]
    pub out: PathBuf,

    /// Also write BENCHMARKS.md (current directory = repo root) and the
    /// charts under loadtest/benchmarks/.
    #[arg(long)]
    pub publish: bool,

    /// Don't run anything: redraw the report and charts from the
    /// results.json a previous run left in --out.
    #[arg(long)]
    pub render_only: bool,
}
