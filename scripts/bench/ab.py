#!/usr/bin/env python3
"""Interleaved CPU-per-request A/B of shardproxy builds (or configs), the way
the numbers in docs/PERFORMANCE.md were taken: each variant is a binary and
optional extra TOML appended to a 2-shard config in front of perf.py's nginx
origin (the extra text lands in the `[[route]]` table first, so a bare
`cache_default_ttl = "60s"` line applies to the route); wrk drives each in
turn, A B A B ..., and medians are reported with the ratio to the first.

    scripts/bench/ab.py before=/tmp/shardproxy.old after=target/release/shardproxy [--rounds 5]
    scripts/bench/ab.py off=target/release/shardproxy json=target/release/shardproxy:/tmp/jsonlog.toml
    options: --rounds N (5), --secs S (3), --size 1024|65536, --new (a connection per request)

Needs nginx and wrk, like perf.py.
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf as P  # noqa: E402


def start(work, origin_port, binary, extra):
    port = P.free_port()
    conf = os.path.join(work, f"ab{port}.toml")
    text = f"""[server]
listen = ["127.0.0.1:{port}"]
shards = 2
[http]
via = false
[[upstream]]
name = "o"
servers = ["127.0.0.1:{origin_port}"]
keepalive = 64
[[route]]
upstream = "o"
"""
    if extra:
        with open(extra) as f:
            text += "\n" + f.read()
    with open(conf, "w") as f:
        f.write(text)
    return P.Server("ab", [binary, "--config", conf], port)


def main():
    args = sys.argv[1:]
    opt = lambda key, default: type(default)(args[args.index(key) + 1]) if key in args else default
    rounds, secs, size = opt("--rounds", 5), opt("--secs", 3), opt("--size", 1024)
    new_connections = "--new" in args
    variants = [a.split("=", 1) for a in args if "=" in a and not a.startswith("--")]
    if not variants:
        raise SystemExit(__doc__)
    work = tempfile.mkdtemp()
    origin = P.start_origin(work)
    cpu = {name: [] for name, _ in variants}
    p99 = {name: [] for name, _ in variants}
    try:
        for r in range(rounds):
            for name, spec in variants:
                binary, _, extra = spec.partition(":")
                server = start(work, origin.port, binary, extra)
                url = f"http://127.0.0.1:{server.port}/bytes/{size}"
                P.wrk(url, 1, 64, new_connections)
                before = P.cpu_ns(server.proc.pid)
                run = P.wrk(url, secs, 64, new_connections)
                us = (P.cpu_ns(server.proc.pid) - before) / 1000 / run["requests"]
                server.stop()
                cpu[name].append(us)
                p99[name].append(run["p99_ms"])
                print(f"round {r} {name:16s} {us:6.2f} µs/req {run['requests'] / secs:8.0f} req/s "
                      f"p99 {run['p99_ms']} ms", flush=True)
    finally:
        origin.stop()
    base = statistics.median(cpu[variants[0][0]])
    for name, _ in variants:
        median = statistics.median(cpu[name])
        print(f"median {name:16s} {median:6.2f} µs/req  p99 {statistics.median(p99[name]):6.2f} ms  "
              f"ratio {median / base:.3f}")


if __name__ == "__main__":
    main()
