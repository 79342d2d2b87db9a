#!/usr/bin/env python3
"""Cluster mode vs independent caches (issue 11): three shardproxy nodes on
loopback in front of one nginx origin, clients spread over the nodes, keys
drawn zipf over 100k. Run once with `[cluster]` (one owner node per key) and
once as three independent caches of the same size each, and report for each:
origin requests (nginx's access log lines), the hit ratio they imply
(1 - origin requests / requests), p99, req/s and the nodes' CPU per request
(schedstat of all three). Interleaved over --rounds.

    scripts/bench/cluster.py [--rounds 2] [--seconds 10 | --requests 300000] [--keys 100000] [--capacity 16MiB]

Needs nginx and a release build (cargo build --release --workspace).
Everything listens on 127.0.0.1 on ports the kernel picks.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))
from loopback import free_port, wait_port  # noqa: E402
from perf import Server, cpu_ns  # noqa: E402

BIN = os.path.join(ROOT, "target", "release")
SECRET = "cluster-bench-secret-0123456789"


def start_origin(work):
    """nginx answering every /obj/... with 1 KiB, cacheable for 10 minutes;
    its access log counts the requests that reached it."""
    port = free_port()
    body = "x" * 1024
    conf = os.path.join(work, "origin.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off; master_process off;
pid {work}/origin.pid; error_log {work}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log {work}/origin-access.log; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port} reuseport;
    location /obj/ {{ add_header Cache-Control "max-age=600"; return 200 "{body}"; }} }} }}
""")
    return Server("origin", ["nginx", "-p", work, "-c", conf], port), os.path.join(work, "origin-access.log")


def start_nodes(work, origin_port, clustered, capacity):
    ports = [free_port() for _ in range(3)]
    peers = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    nodes = []
    for i, port in enumerate(ports):
        cluster = (f'[cluster]\nself = "127.0.0.1:{port}"\npeers = [{peers}]\nsecret = "{SECRET}"\n'
                   if clustered else "")
        conf = os.path.join(work, f"node{i}-{port}.toml")
        with open(conf, "w") as f:
            f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = 1
pin = false
[cache]
enabled = true
capacity = "{capacity}"
{cluster}
[[upstream]]
name = "origin"
servers = ["127.0.0.1:{origin_port}"]
keepalive = 64
[[route]]
upstream = "origin"
""")
        nodes.append(Server(f"node{i}", [os.path.join(BIN, "shardproxy"), "--config", conf], port))
    return nodes


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_once(work, clustered, a):
    origin, log = start_origin(work)
    nodes = start_nodes(work, origin.port, clustered, a.capacity)
    try:
        before_log = lines(log)
        before_cpu = sum(cpu_ns(n.proc.pid) for n in nodes)
        urls = [f"http://127.0.0.1:{n.port}/obj" for n in nodes]
        amount = ["-n", str(a.requests)] if a.requests else ["-d", f"{a.seconds}s"]
        out = subprocess.run([os.path.join(BIN, "loadtest"), "run", "--json", "-c", str(a.connections),
                              # One Host for every node, as behind an L4 balancer: the
                              # host is part of the cache key (and so of the owner).
                              "-H", "Host: cache.bench",
                              "--warmup", "0s", "--paths", str(a.keys)] + amount + [
                              "--dist", f"zipf:{a.zipf}"] + urls,
                             capture_output=True, text=True, check=True).stdout
        report = json.loads(out)
        cpu = sum(cpu_ns(n.proc.pid) for n in nodes) - before_cpu
        origin_requests = lines(log) - before_log
        requests = report["requests"]
        return {
            "requests": requests,
            "req_per_s": report["requests_per_sec"],
            "errors": report["errors"]["total"],
            "origin_requests": origin_requests,
            "hit_ratio": 1 - origin_requests / max(1, requests),
            "p99_ms": report["latency_ms"]["p99"],
            "cpu_us_per_req": cpu / 1000 / max(1, requests),
        }
    finally:
        for n in nodes:
            n.stop()
        origin.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=0,
                    help="a fixed number of requests per run instead of --seconds, so both modes "
                         "see the same key sequence length (origin requests then compare directly)")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--zipf", default="1.0")
    ap.add_argument("--connections", type=int, default=48)
    ap.add_argument("--capacity", default="16MiB")
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    results = {"cluster": [], "independent": []}
    for r in range(a.rounds):
        for mode in ("cluster", "independent"):
            res = run_once(work, mode == "cluster", a)
            results[mode].append(res)
            print(f"round {r} {mode:12s} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in res.items()), flush=True)
    amount = f"{a.requests} requests" if a.requests else f"{a.seconds} s"
    print(f"\nmedians: 3 nodes x 1 shard, {a.keys} keys zipf:{a.zipf}, {a.connections} connections, "
          f"cache {a.capacity} per node, {a.rounds} x {amount}")
    print("| mode | req/s | origin requests | hit ratio | p99 ms | CPU µs/req (3 nodes) | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, rows in results.items():
        med = lambda k: statistics.median(x[k] for x in rows)
        print(f"| {mode} | {med('req_per_s'):.0f} | {med('origin_requests'):.0f} | {med('hit_ratio'):.3f} | "
              f"{med('p99_ms'):.2f} | {med('cpu_us_per_req'):.1f} | {med('errors'):.0f} |")


if __name__ == "__main__":
    main()
