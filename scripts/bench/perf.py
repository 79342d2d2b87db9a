#!/usr/bin/env python3
"""CPU time per proxied request, side by side: shardproxy vs nginx vs HAProxy.

The method of docs/PERFORMANCE.md: nginx serves static files as the origin;
each proxy runs with the same number of shards / workers / threads; wrk drives
each in turn (A B C A B C ...), and for every run we record the proxy's CPU
time (first field of /proc/PID/task/*/schedstat, summed over all its
processes and threads, before and after), the requests wrk completed, its
p99, and the reschedule IPIs (the RES line of /proc/interrupts) per request.
Medians over the rounds, and ratios against the better of nginx and HAProxy.

    scripts/bench/perf.py                       # 1 KiB keep-alive, 2 workers, 3 rounds of 5 s
    scripts/bench/perf.py --size 65536
    scripts/bench/perf.py --new-connections     # wrk with Connection: close
    scripts/bench/perf.py --shardproxy-config ring_mode=coop --only shardproxy
    scripts/bench/perf.py --new-connections --only shardproxy,nginx,nginx-deferred,haproxy
    scripts/bench/perf.py --pin                 # every proxy pins worker i to CPU i
    scripts/bench/perf.py --only shardproxy,nginx,haproxy,floor   # with loadtest's minimal forwarder

Layout: every system gets the same one. Without --pin all run unpinned
(shardproxy `pin = false`), the kernel placing them; with --pin each pins
worker i to CPU i with its own setting (shardproxy `pin = true` + `cpus`,
nginx `worker_cpu_affinity`, HAProxy `cpu-map`), as `loadtest compare --pin`.
Until 2026-12-02 shardproxy ran pinned (its default) beside unpinned anchors.

Needs nginx, haproxy and wrk (installed with apt-get when missing, as root) and a
release build (cargo build --release). Everything listens on 127.0.0.1 on
ports the kernel picks; the work directory is removed at the end.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from loopback import free_port, wait_port  # noqa: E402


def pids_of(root_pid):
    """The process and all its descendants."""
    pids = [root_pid]
    out = subprocess.run(["pgrep", "-P", str(root_pid)], capture_output=True, text=True).stdout
    for line in out.split():
        pids += pids_of(int(line))
    return pids


def cpu_ns(root_pid):
    total = 0
    for pid in pids_of(root_pid):
        task_dir = f"/proc/{pid}/task"
        try:
            tasks = os.listdir(task_dir)
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"{task_dir}/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


def reschedule_ipis():
    with open("/proc/interrupts") as f:
        for line in f:
            if line.strip().startswith("RES:"):
                return sum(int(x) for x in line.split()[1:] if x.isdigit())
    return 0


def perf_stat(pids, events, out):
    """Starts `perf stat` counting `events` in the processes `pids` (all their
    threads); returns a function that stops it and returns {event: count}.
    perf attaches while the load starts, so a few ms of a run may go uncounted."""
    proc = subprocess.Popen(["perf", "stat", "-x,", "-e", ",".join(events),
                             "-p", ",".join(map(str, pids)), "-o", out])

    def stop():
        proc.send_signal(signal.SIGINT)
        proc.wait()
        counts = {}
        with open(out) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[0].isdigit():
                    counts[fields[2]] = int(fields[0])
        return counts

    return stop


# What --syscalls counts per request: every syscall, the ring operations
# submitted (io_uring's own tracepoint), and context switches.
SYSCALL_EVENTS = ["raw_syscalls:sys_enter", "io_uring:io_uring_submit_req", "context-switches"]


def wrk(url, duration, connections, new_connections):
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if new_connections:
        cmd[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "p99_ms": float(p99.group(1)) * scale,
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


class Server:
    def __init__(self, name, cmd, port, cwd=None, env=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tempfile.gettempdir(), f"perf-{name}.log"), "w"),
            start_new_session=True,
        )
        wait_port(port)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def start_origin(work):
    port = free_port()
    root = os.path.join(work, "www", "bytes")
    os.makedirs(root)
    for size in (1024, 16384, 65536, 262144):
        with open(os.path.join(root, str(size)), "wb") as f:
            f.write(b"x" * size)
    conf = os.path.join(work, "origin.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off; master_process off;
pid {work}/origin.pid; error_log {work}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port} reuseport; root {work}/www; }} }}
""")
    return Server("origin", ["nginx", "-p", work, "-c", conf], port)


def pinned_cpus(workers):
    """CPU of worker i under --pin: i, wrapping over the CPUs we have."""
    return [i % os.cpu_count() for i in range(workers)]


def start_shardproxy(work, origin, workers, extra, variant="", pin=False):
    """`variant`: `+`-separated settings; `@key=value` is a config key (as in
    --shardproxy-config), anything else an environment variable."""
    port = free_port()
    extra = list(extra) + [tuple(kv[1:].split("=", 1)) for kv in variant.split("+") if kv.startswith("@")]
    conf = os.path.join(work, f"shardproxy{port}.toml")
    tuning = "".join(f"{k} = {v}\n" for k, v in extra if k not in ("io", "pin") and "." not in k)
    server = "".join(f"{k} = {v}\n" for k, v in extra if k in ("io", "pin"))
    if "pin" not in dict(extra):
        server += f"pin = true\ncpus = {pinned_cpus(workers)}\n" if pin else "pin = false\n"
    http = "".join(f"{k[5:]} = {v}\n" for k, v in extra if k.startswith("http."))
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {workers}
{server}
[server.tuning]
{tuning}
[http]
via = false
{http}
[[upstream]]
name = "o"
servers = ["127.0.0.1:{origin}"]
# The same idle pool as nginx's `keepalive 64` below.
keepalive = 64

[[route]]
upstream = "o"
""")
    binary = os.path.join(ROOT, "target", "release", "shardproxy")
    env = dict(os.environ)
    for kv in filter(lambda kv: kv and not kv.startswith("@"), variant.split("+")):
        key, _, value = kv.partition("=")
        env[key] = value
    name = f"shardproxy[{variant}]" if variant else "shardproxy"
    return Server(name, [binary, "--config", conf], port, env=env)


def start_nginx(work, origin, workers, connections=4096, deferred=False, pin=False):
    """`deferred`: nginx's `listen ... deferred` (TCP_DEFER_ACCEPT), which
    shardproxy sets by default (`server.tuning.defer_accept`)."""
    port = free_port()
    conf = os.path.join(work, "nginx-deferred.conf" if deferred else "nginx.conf")
    width = os.cpu_count()
    masks = ["".join("1" if c == cpu else "0" for c in reversed(range(width))) for cpu in pinned_cpus(workers)]
    affinity = f"worker_cpu_affinity {' '.join(masks)};\n" if pin else ""
    with open(conf, "w") as f:
        f.write(f"""worker_processes {workers};
{affinity}worker_rlimit_nofile {2 * connections + 64};
daemon off;
pid {conf}.pid; error_log {conf}-error.log warn;
events {{ worker_connections {connections}; }}
http {{ access_log off; keepalive_requests 1000000;
  # As loadtest compare: big enough that a 64 KiB body never spills to a
  # temp file (with the default 8 x 4k buffers it did, and nginx paid file I/O).
  proxy_buffer_size 16k; proxy_buffers 8 16k;
  # keepalive_requests as loadtest compare: nginx's default (1000) closed each
  # upstream connection after 1000 requests (until 2026-12-02 here).
  upstream o {{ server 127.0.0.1:{origin}; keepalive 64; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port} reuseport{" deferred" if deferred else ""};
    location / {{ proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    return Server("nginx-deferred" if deferred else "nginx", ["nginx", "-p", work, "-c", conf], port)


def start_floor(origin, workers, pin=False):
    """`loadtest floor`: the minimal keep-alive forwarder on the same runtime,
    i.e. what the kernel and the runtime cost per request with no proxy work
    (docs/PERFORMANCE.md). Needs the release build of loadtest."""
    port = free_port()
    binary = os.path.join(ROOT, "target", "release", "loadtest")
    cmd = [binary, "floor", "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{origin}",
           "--shards", str(workers)]
    if pin:
        cmd += ["--cpus", ",".join(map(str, pinned_cpus(workers)))]
    return Server("floor", cmd, port)


def start_haproxy(work, origin, workers, pin=False):
    port = free_port()
    conf = os.path.join(work, "haproxy.cfg")
    cpu_map = "".join(f"    cpu-map 1/{i + 1} {cpu}\n" for i, cpu in enumerate(pinned_cpus(workers))) if pin else ""
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {workers}
    maxconn 4000
{cpu_map}defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server o 127.0.0.1:{origin}
""")
    return Server("haproxy", ["haproxy", "-db", "-f", conf], port)


# Each tool the benchmarks drive, and the Debian package that brings it.
TOOLS = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk"}


def ensure_tools(packages=TOOLS):
    """Installs with apt-get those of `packages` (tool -> Debian package) that
    are missing, when we may (root on Debian), as `loadtest compare` does."""
    missing = [pkg for tool, pkg in packages.items() if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False,
                       stdout=subprocess.DEVNULL)
    still = [tool for tool in packages if not shutil.which(tool)]
    if still:
        raise SystemExit(f"{', '.join(still)} missing and not installable here (needs root and "
                         f"apt-get): apt-get install {' '.join(missing)}")


def paired_ratios(results):
    """shardproxy's CPU per request over the better anchor's, per round: the
    neighbours' load drifts between rounds and moves a whole round together,
    which pairing cancels (see loadtest compare's report)."""
    anchors = [n for n in ("nginx", "nginx-deferred", "haproxy") if n in results]
    if "shardproxy" not in results or not anchors:
        return []
    return [ours["cpu_us"] / min(results[n][i]["cpu_us"] for n in anchors)
            for i, ours in enumerate(results["shardproxy"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, choices=[1024, 16384, 65536, 262144])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--new-connections", action="store_true")
    ap.add_argument("--syscalls", action="store_true",
                    help="also count syscalls, ring submissions and context switches per request "
                         "(perf stat tracepoints; tracing adds to the CPU figures of that run)")
    ap.add_argument("--pin", action="store_true",
                    help="pin worker i of every proxy to CPU i (default: every proxy unpinned)")
    ap.add_argument("--only", default="shardproxy,nginx,haproxy")
    ap.add_argument("--variants", default="",
                    help="extra shardproxy runs with environment settings, e.g. 'A=1,B=1+C=2' (A/B experiments)")
    ap.add_argument("--shardproxy-config", action="append", default=[],
                    help="KEY=VALUE under [server.tuning] (io and pin go under [server]), e.g. ring_mode='\"coop\"'")
    a = ap.parse_args()
    extra = [tuple(kv.split("=", 1)) for kv in a.shardproxy_config]
    ensure_tools()

    work = tempfile.mkdtemp(prefix="shardproxy-perf-")
    servers = []
    try:
        origin = start_origin(work)
        servers.append(origin)
        starters = {
            "shardproxy": lambda: start_shardproxy(work, origin.port, a.workers, extra, pin=a.pin),
            "nginx": lambda: start_nginx(work, origin.port, a.workers, pin=a.pin),
            "nginx-deferred": lambda: start_nginx(work, origin.port, a.workers, deferred=True, pin=a.pin),
            "haproxy": lambda: start_haproxy(work, origin.port, a.workers, pin=a.pin),
            "floor": lambda: start_floor(origin.port, a.workers, pin=a.pin),
        }
        systems = [starters[name]() for name in a.only.split(",")]
        systems += [start_shardproxy(work, origin.port, a.workers, extra, v, pin=a.pin)
                    for v in a.variants.split(",") if v]
        servers += systems
        results = {s.name: [] for s in systems}
        for s in systems:  # warm-up: pools, page cache
            wrk(f"http://127.0.0.1:{s.port}/bytes/{a.size}", 1, a.connections, a.new_connections)
        for round_ in range(a.rounds):
            for s in systems:
                url = f"http://127.0.0.1:{s.port}/bytes/{a.size}"
                if a.syscalls:
                    stop = perf_stat(pids_of(s.proc.pid), SYSCALL_EVENTS, os.path.join(work, "perf.csv"))
                cpu0, res0 = cpu_ns(s.proc.pid), reschedule_ipis()
                r = wrk(url, a.duration, a.connections, a.new_connections)
                cpu1, res1 = cpu_ns(s.proc.pid), reschedule_ipis()
                n = max(r["requests"], 1)
                counted = stop() if a.syscalls else {}
                row = {
                    "rps": r["requests"] / a.duration,
                    "cpu_us": (cpu1 - cpu0) / 1000 / n,
                    "p99_ms": r["p99_ms"],
                    "res": (res1 - res0) / n,
                    "errors": r["errors"],
                }
                if a.syscalls:
                    row["syscalls"] = counted.get("raw_syscalls:sys_enter", 0) / n
                    row["ring_ops"] = counted.get("io_uring:io_uring_submit_req", 0) / n
                    row["switches"] = counted.get("context-switches", 0) / n
                results[s.name].append(row)
                print(f"round {round_ + 1} {s.name:10} {row['rps']:9.0f} req/s  {row['cpu_us']:5.1f} us/req  "
                      f"p99 {row['p99_ms']:6.2f} ms  RES/req {row['res']:.3f}  non-2xx {row['errors']} "
                      f"{r['socket_errors']}", flush=True)
                if a.syscalls:
                    print(f"          syscalls/req {row['syscalls']:.2f}  ring ops/req {row['ring_ops']:.2f}  "
                          f"context switches/req {row['switches']:.3f}", flush=True)
        med = {name: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for name, rows in results.items()}
        anchors = [med[n]["cpu_us"] for n in ("nginx", "nginx-deferred", "haproxy") if n in med]
        best = min(anchors) if anchors else None
        mode = "new connection per request" if a.new_connections else "keep-alive"
        layout = f"pinned to CPUs {pinned_cpus(a.workers)}" if a.pin else "unpinned"
        print(f"\nmedians: {a.size} B {mode}, {a.connections} connections, {a.workers} workers {layout}, "
              f"{a.rounds} x {a.duration} s")
        print("| system | req/s | CPU µs/req | p99 ms | RES IPIs/req | CPU vs best anchor |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, m in med.items():
            ratio = f"{m['cpu_us'] / best:.2f}×" if best else "-"
            print(f"| {name} | {m['rps']:.0f} | {m['cpu_us']:.1f} | {m['p99_ms']:.2f} | {m['res']:.3f} | {ratio} |")
        paired = paired_ratios(results)
        if paired:
            print(f"\nround by round, shardproxy's CPU per request against the better anchor of the same round: "
                  f"{', '.join(f'{r:.2f}' for r in paired)} (median {statistics.median(paired):.2f}×)")
        if a.syscalls:
            print("\n| system | syscalls/req | ring ops/req | context switches/req |")
            print("|---|---:|---:|---:|")
            for name, m in med.items():
                print(f"| {name} | {m['syscalls']:.2f} | {m['ring_ops']:.2f} | {m['switches']:.3f} |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
