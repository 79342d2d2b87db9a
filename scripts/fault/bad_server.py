#!/usr/bin/env python3
"""One bad server among four (issue 8's benchmark row): four loadtest origins,
one answering every request 500 ms late, behind shardproxy (2 shards) with
outlier detection on and off, and behind HAProxy (2 threads) with the
equivalent: health checks, `observe layer7` marking a server down after
consecutive errors, a 250 ms server timeout and one retry on another server.
`loadtest run --verify` drives each in turn (interleaved over --rounds);
reported: requests, errors, p99 and p99.9 of the clients' latency.

    scripts/fault/bad_server.py [--rounds 2] [--seconds 10]

Needs haproxy and a release build (cargo build --release --workspace).
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
from loopback import free_port  # noqa: E402
from perf import Server  # noqa: E402

BIN = os.path.join(ROOT, "target", "release")


def origins():
    servers = []
    for i in range(4):
        port = free_port()
        extra = ["--delay", "500ms"] if i == 3 else []
        servers.append(Server(f"origin{i}", [os.path.join(BIN, "loadtest"), "origin", "--listen",
                                             f"127.0.0.1:{port}", "--shards", "1"] + extra, port))
    return servers


def shardproxy(work, ports, outlier):
    port = free_port()
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    outlier_line = ('outlier = { consecutive = 3, on = ["connect", "reset", "timeout", "5xx"], '
                    'base_ejection = "2s", max_ejection = "30s" }') if outlier else ""
    conf = os.path.join(work, f"shardproxy-{port}.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = 2
[timeouts]
upstream_connect = "500ms"
upstream_first_byte = "250ms"
[[upstream]]
name = "fleet"
servers = [{servers}]
balance = "least_conn"
keepalive = 64
health_check = {{ path = "/bytes/1", interval = "1s", timeout = "500ms", rise = 2, fall = 2 }}
retry = {{ attempts = 2, on = ["connect", "reset", "timeout", "502", "503", "504"], backoff_base = "10ms", backoff_max = "100ms" }}
{outlier_line}
[[route]]
upstream = "fleet"
""")
    return Server(f"shardproxy-outlier-{'on' if outlier else 'off'}",
                  [os.path.join(BIN, "shardproxy"), "--config", conf], port)


def haproxy(work, ports):
    port = free_port()
    servers = "\n".join(f"  server o{i} 127.0.0.1:{p} check" for i, p in enumerate(ports))
    conf = os.path.join(work, f"haproxy-{port}.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
  nbthread 2
defaults
  mode http
  timeout connect 500ms
  timeout client 30s
  timeout server 250ms
  retries 1
  option redispatch 1
  retry-on conn-failure empty-response response-timeout 502 503 504
listen fleet
  bind 127.0.0.1:{port}
  balance leastconn
  http-reuse always
  option httpchk GET /bytes/1
  default-server inter 1s rise 2 fall 2 observe layer7 error-limit 3 on-error mark-down
{servers}
""")
    return Server("haproxy", ["haproxy", "-f", conf], port)


def load(port, a):
    out = subprocess.run([os.path.join(BIN, "loadtest"), "run", "--verify", "--json", "-c", str(a.connections),
                          "-d", f"{a.seconds}s", "--warmup", "1s", f"http://127.0.0.1:{port}/bytes/1024"],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    return {"requests": r["requests"], "errors": r["errors"]["total"],
            "p99_ms": r["latency_ms"]["p99"], "p999_ms": r["latency_ms"]["p999"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    systems = [("shardproxy, outlier detection on", lambda ps: shardproxy(work, ps, True)),
               ("shardproxy, outlier detection off", lambda ps: shardproxy(work, ps, False)),
               ("HAProxy, observe layer7", lambda ps: haproxy(work, ps))]
    results = {name: [] for name, _ in systems}
    for r in range(a.rounds):
        for name, start in systems:
            fleet = origins()
            proxy = start([o.port for o in fleet])
            try:
                res = load(proxy.port, a)
            finally:
                proxy.stop()
                for o in fleet:
                    o.stop()
            results[name].append(res)
            print(f"round {r} {name:34s} {res}", flush=True)
    print(f"\nmedians: 4 origins, one 500 ms late; {a.connections} connections, {a.rounds} x {a.seconds} s")
    print("| system | requests | errors | p99 ms | p99.9 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        med = lambda k: statistics.median(x[k] for x in rows)
        print(f"| {name} | {med('requests'):.0f} | {med('errors'):.0f} | {med('p99_ms'):.2f} | {med('p999_ms'):.2f} |")


if __name__ == "__main__":
    main()
