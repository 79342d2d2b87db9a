#!/usr/bin/env python3
"""How far per-shard `least_conn` / `p2c` drift from a global view (issue 8).

Each shard balances by the requests *it* has in flight to each server; no
shard sees the others'. This measures what that costs at the servers: three
origins in this process (threads, on ports the kernel picks) with different
latencies (`--latencies`, ms: a fixed value, or `exp:M` for exponentially
distributed with mean M) count the requests they are serving at every moment.
All three share one clock and one lock, so each change of any server's count
closes an interval of the global state (the vector of per-server counts), and
the script integrates over time:

- the spread: most loaded minus least loaded server (requests in flight),
- the standard deviation of the per-server counts,
- the share of time the spread was 3 or more,
- the spread of the counts around each server's own mean: the fluctuation
  left once a steady offset between servers is taken out (the origins count
  from request head to response, the proxy from pick to response end, so a
  server with more requests per second shows a little less in flight here
  than in the proxy's view),
- each server's mean concurrency and request count.

For each balance (`least_conn`, `p2c`, `round_robin` by default) it runs a
2-shard proxy and, as the "global view" baseline, a 1-shard proxy (one
balancer that sees every request), with the same bounded closed-loop load
(`loadtest run -c N -d S`, or wrk when loadtest is not built). The
latencies are tens of milliseconds so that the proxy's and this script's own
time per request is small beside the servers': the 24 connections' requests
are then nearly all in flight at the origins with 1 or 2 shards alike. Runs are
interleaved over `--rounds` and the medians reported. These are counts, not
timings: a busy machine shifts them little (it lowers the throughput, not the
shape).

    scripts/bench/balance_drift.py [--rounds 1] [--seconds 4] [--connections 24]
        [--latencies 10,30,exp:20] [--bin target/release]

Needs a build of shardproxy and loadtest in --bin (default target/release;
target/debug works for these counts).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from loopback import free_port, wait_port  # noqa: E402
from tiny_origin import accept_forever, listen, proxy_toml  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 256\r\n\r\n" + b"x" * 256


class Recorder:
    """Per-server concurrency over time: every interval of constant counts
    (its length and the counts) while recording."""

    def __init__(self, servers):
        self.lock = threading.Lock()
        self.counts = [0] * servers
        self.recording = False
        self.reset()

    def reset(self):
        with self.lock:
            self.last = time.monotonic()
            self.intervals = []
            self.served = [0] * len(self.counts)

    def _close_interval(self):
        now = time.monotonic()
        dt, self.last = now - self.last, now
        if self.recording:
            self.intervals.append((dt, tuple(self.counts)))

    def change(self, server, delta):
        with self.lock:
            self._close_interval()
            self.counts[server] += delta
            if delta < 0 and self.recording:
                self.served[server] += 1

    def record(self, on):
        with self.lock:
            self._close_interval()
            self.recording = on

    def summary(self):
        with self.lock:
            intervals, served = list(self.intervals), list(self.served)
        total = sum(dt for dt, _ in intervals) or 1.0

        def mean(f):
            return sum(dt * f(counts) for dt, counts in intervals) / total

        servers = range(len(served))
        means = [mean(lambda c, i=i: c[i]) for i in servers]

        def spread(c):
            return max(c) - min(c)

        def around_means(c):
            return spread([c[i] - means[i] for i in servers])

        return {
            "spread": mean(spread),
            "stddev": mean(statistics.pstdev),
            "wide": mean(lambda c: 1.0 if spread(c) >= 3 else 0.0),
            "fluctuation": mean(around_means),
            "mean_in_flight": [round(m, 2) for m in means],
            "served": served,
        }


def latency_of(spec):
    """`5` → always 5 ms; `exp:5` → exponential with mean 5 ms."""
    if spec.startswith("exp:"):
        mean = float(spec[4:]) / 1000
        return lambda: random.expovariate(1 / mean)
    fixed = float(spec) / 1000
    return lambda: fixed


def start_origin(index, latency, recorder):
    """Origin `index`: each request counted in flight from its head until its
    answer is sent, which comes `latency()` late."""

    def handle(_target, send):
        recorder.change(index, +1)
        try:
            time.sleep(latency())
            send(RESPONSE)
        finally:
            recorder.change(index, -1)

    listener = listen()
    threading.Thread(target=accept_forever, args=(listener, handle), daemon=True).start()
    return listener.getsockname()[1]


def proxy_config(work, port, admin, shards, balance, origin_ports):
    path = os.path.join(work, f"proxy-{shards}-{balance}.toml")
    with open(path, "w") as f:
        f.write(proxy_toml(port, shards, origin_ports, f'balance = "{balance}"',
                           f'[admin]\nlisten = "127.0.0.1:{admin}"'))
    return path


def load_command(bin_dir, url, connections, seconds):
    loadtest = os.path.join(bin_dir, "loadtest")
    if os.path.exists(loadtest):
        return [loadtest, "run", url, "-c", str(connections), "-t", "1",
                "-d", f"{seconds}s", "--warmup", "0s", "--json"]
    if shutil.which("wrk"):
        return ["wrk", "-c", str(connections), "-t", "1", "-d", f"{seconds}s", url]
    raise SystemExit(f"neither {loadtest} nor wrk found")


def requests_per_shard(admin):
    """Each shard's requests, from the admin endpoint's /status: how
    SO_REUSEPORT split the client connections this run."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as response:
        status = json.load(response)
    return [shard["requests"] for shard in sorted(status["shards"], key=lambda s: s["id"])]


def one_run(args, work, recorder, origin_ports, shards, balance):
    port, admin = free_port(), free_port()
    config = proxy_config(work, port, admin, shards, balance, origin_ports)
    log = open(os.path.join(work, f"proxy-{shards}-{balance}.log"), "w")
    proxy = subprocess.Popen([os.path.join(args.bin, "shardproxy"), "--config", config],
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        # A short unrecorded start, so pools and connections are warm.
        load = subprocess.Popen(load_command(args.bin, f"http://127.0.0.1:{port}/",
                                             args.connections, args.seconds + 1),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(1)
        recorder.reset()
        recorder.record(True)
        out, _ = load.communicate()
        recorder.record(False)
        split = requests_per_shard(admin)
    finally:
        proxy.terminate()
        proxy.wait()
    summary = recorder.summary()
    summary["per_shard"] = split
    try:
        report = json.loads(out)
        summary["errors"] = report["errors"]["total"]
    except (ValueError, KeyError):
        summary["errors"] = None
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=24)
    parser.add_argument("--latencies", default="10,30,exp:20")
    parser.add_argument("--balances", default="least_conn,p2c,round_robin")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    args = parser.parse_args()

    latencies = args.latencies.split(",")
    recorder = Recorder(len(latencies))
    origin_ports = [start_origin(i, latency_of(spec), recorder) for i, spec in enumerate(latencies)]
    balances = args.balances.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.rounds):
            for balance in balances:
                for shards in (2, 1):
                    got = one_run(args, work, recorder, origin_ports, shards, balance)
                    print(f"round {round_ + 1}: {balance}, {shards} shard(s): {got}", file=sys.stderr)
                    results.setdefault((balance, shards), []).append(got)
    report(results, balances, latencies, args)


def splits(runs):
    """How each run's requests divided over the shards (shard 0's share)."""
    if len(runs[0]["per_shard"]) < 2:
        return "—"
    return ", ".join(f"{100 * r['per_shard'][0] / max(1, sum(r['per_shard'])):.0f} %" for r in runs)


def report(results, balances, latencies, args):
    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    print(f"origins: {', '.join(l + ' ms' for l in latencies)}; {args.connections} connections, "
          f"{args.seconds} s, median of {args.rounds} round(s)")
    print("| balance | shards | requests | mean spread (max−min in flight) | mean std dev | time spread ≥ 3 "
          "| spread around each server's mean | mean in flight per server | shard 0's share of requests, per round |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for balance in balances:
        for shards in (1, 2):
            runs = results[(balance, shards)]
            last = runs[-1]
            view = "1 (global view)" if shards == 1 else str(shards)
            print(f"| {balance} | {view} | {sum(last['served']):,} | {median(runs, 'spread'):.2f} | "
                  f"{median(runs, 'stddev'):.2f} | {100 * median(runs, 'wide'):.1f} % | "
                  f"{median(runs, 'fluctuation'):.2f} | "
                  f"{' / '.join(str(x) for x in last['mean_in_flight'])} | {splits(runs)} |")


if __name__ == "__main__":
    main()
