#!/usr/bin/env python3
"""Interleaved CPU-per-request A/B of shardproxy builds (or configs), the way
the numbers in docs/PERFORMANCE.md were taken: each variant is a binary and
optional extra TOML appended to a 2-shard config in front of perf.py's nginx
origin (the extra text lands in the `[[route]]` table first, so a bare
`cache_default_ttl = "60s"` line applies to the route); wrk drives each in
turn, A B A B ..., and medians are reported with the ratio to the first.

    scripts/bench/ab.py before=/tmp/shardproxy.old after=target/release/shardproxy [--rounds 5]
    scripts/bench/ab.py off=target/release/shardproxy json=target/release/shardproxy:/tmp/jsonlog.toml
    options: --rounds N (5), --secs S (3), --size 1024|65536, --new (a connection per request),
             --instructions (count instructions per request, user and kernel, with
             `perf stat -p` around each run, instead of CPU time: counts barely move
             with machine load, so this works on a busy machine where times do not)

Needs nginx and wrk, like perf.py (and perf for --instructions).
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf as P  # noqa: E402


def write_config(work, port, origin_port, extra, server="shards = 2\n"):
    """A config in front of the origin (route `/` to upstream `o`), with
    `server` keys in `[server]` and the file `extra` appended; its path."""
    conf = os.path.join(work, f"ab{port}.toml")
    text = f"""[server]
listen = ["127.0.0.1:{port}"]
{server}[http]
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
    return conf


def start(work, origin_port, binary, extra):
    port = P.free_port()
    conf = write_config(work, port, origin_port, extra)
    return P.Server("ab", [binary, "--config", conf], port)


def count_instructions(pid, work):
    """Starts counting the process's instructions (all its threads), user
    and kernel; returns a function that stops and returns (user, kernel)."""
    stop_perf = P.perf_stat([pid], ["instructions:u", "instructions:k"], os.path.join(work, f"perf{pid}.csv"))

    def stop():
        counts = stop_perf()
        if not counts.get("instructions:u"):
            raise SystemExit("perf cannot count instructions here (no hardware counters, as in "
                             "most VMs): use scripts/bench/instructions.py (valgrind) instead")
        return counts["instructions:u"], counts.get("instructions:k", 0)

    return stop


def measure(server, url, secs, new_connections, count, work):
    """One measured wrk run: (cost per request, its text, wrk's numbers);
    CPU µs from schedstat, or with `count` instructions from perf stat."""
    if count:
        stop = count_instructions(server.proc.pid, work)
        run = P.wrk(url, secs, 64, new_connections)
        user, kernel = stop()
        per = (user / run["requests"], kernel / run["requests"])
        cost = per[0] + per[1]
        return cost, f"{cost:8.0f} instr/req (user {per[0]:.0f}, kernel {per[1]:.0f})", run
    before = P.cpu_ns(server.proc.pid)
    run = P.wrk(url, secs, 64, new_connections)
    cost = (P.cpu_ns(server.proc.pid) - before) / 1000 / run["requests"]
    return cost, f"{cost:6.2f} µs/req", run


def variants_of(args, usage):
    """The `name=binary[:extra.toml]` arguments as (name, spec) pairs."""
    variants = [a.split("=", 1) for a in args if "=" in a and not a.startswith("--")]
    if not variants:
        raise SystemExit(usage)
    return variants


def main():
    args = sys.argv[1:]
    opt = lambda key, default: type(default)(args[args.index(key) + 1]) if key in args else default
    rounds, secs, size = opt("--rounds", 5), opt("--secs", 3), opt("--size", 1024)
    new_connections = "--new" in args
    count = "--instructions" in args
    variants = variants_of(args, __doc__)
    work = tempfile.mkdtemp()
    origin = P.start_origin(work)
    cpu = {name: [] for name, _ in variants}
    p99 = {name: [] for name, _ in variants}
    try:
        for r in range(rounds):
            for name, spec in variants:
                binary, _, extra = spec.partition(":")
                server = start(work, origin.port, binary, extra)
                try:
                    url = f"http://127.0.0.1:{server.port}/bytes/{size}"
                    P.wrk(url, 1, 64, new_connections)
                    us, shown, run = measure(server, url, secs, new_connections, count, work)
                finally:
                    server.stop()
                cpu[name].append(us)
                p99[name].append(run["p99_ms"])
                print(f"round {r} {name:16s} {shown} {run['requests'] / secs:8.0f} req/s "
                      f"p99 {run['p99_ms']} ms", flush=True)
    finally:
        origin.stop()
    base = statistics.median(cpu[variants[0][0]])
    for name, _ in variants:
        median = statistics.median(cpu[name])
        unit = "instr/req" if count else "µs/req"
        print(f"median {name:16s} {median:6.2f} {unit}  p99 {statistics.median(p99[name]):6.2f} ms  "
              f"ratio {median / base:.3f}")


if __name__ == "__main__":
    main()
