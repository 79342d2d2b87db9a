#!/usr/bin/env python3
"""Instructions per request of shardproxy builds or configs, counted by
valgrind rather than timed: counts do not depend on the machine's load and
need no hardware performance counters (a VM's `perf stat -e instructions`
says "not supported"). User space only: kernel work (syscalls, the access
log's file writes) is not counted.

Each variant runs under valgrind with one shard and `io = "poll"` (valgrind
does not follow io_uring's shared rings) in front of perf.py's nginx origin;
a keep-alive client sends GETs for the 1 KiB body, pipelined in batches.

Two measures:

- default: the whole process. Each variant serves FEW then MANY requests;
  (total(MANY) - total(FEW)) / (MANY - FEW) cancels start-up and shutdown.
  Noisy: how requests batch in the event loop, and timer wake-ups, move a
  run by a few thousand instructions per request, so rounds are repeated
  and the median and range shown. Good for large differences.
- `--functions REGEX`: callgrind's inclusive count per request of every
  function whose name matches REGEX, e.g. `'ShardLog::record|capture|log_entry'`:
  exact and repeatable, for the cost of one part of the path.

    scripts/bench/instructions.py off=target/release/shardproxy json=target/release/shardproxy:/tmp/json.toml
    options: --few N (1000), --many N (5000), --batch N (16), --rounds N (3),
             --functions REGEX (then MANY requests, one round)

The TOML after `:` is appended to the config (start it with a table header,
e.g. `[log]`). Needs nginx and valgrind.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import statistics
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab  # noqa: E402
import perf as P  # noqa: E402


def send(port, requests, batch):
    """`requests` GETs on one keep-alive connection, `batch` at a time."""
    request = b"GET /bytes/1024 HTTP/1.1\r\nHost: bench\r\nUser-Agent: instructions.py\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        buf = b""
        left = requests
        while left:
            n = min(batch, left)
            conn.sendall(request * n)
            for _ in range(n):
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        head = buf[:end].decode("latin-1")
                        length = int(re.search(r"(?i)content-length:\s*(\d+)", head).group(1))
                        if len(buf) >= end + 4 + length:
                            assert head.startswith("HTTP/1.1 200"), head
                            buf = buf[end + 4 + length:]
                            break
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise RuntimeError("the proxy closed the connection")
                    buf += chunk
            left -= n


def run(work, binary, extra, origin_port, requests, batch, tool):
    """Runs one variant under valgrind's `tool` until it has served
    `requests` requests; returns the path of the tool's output."""
    port = P.free_port()
    # One shard, and poll: valgrind does not follow io_uring's shared rings.
    server = 'shards = 1\npin = false\nio = "poll"\n'
    conf = ab.write_config(work, port, origin_port, extra, server)
    out = os.path.join(work, f"{tool}{port}.out")
    options = ["--cache-sim=no"] if tool == "cachegrind" else []
    proc = subprocess.Popen(
        ["valgrind", f"--tool={tool}", *options, f"--{tool}-out-file={out}",
         binary, "--config", conf],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        P.wait_port(port, limit=120)
        send(port, requests, batch)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return out


def total(work, binary, extra, origin_port, requests, batch):
    """Total instructions of one run that serves `requests` requests."""
    out = run(work, binary, extra, origin_port, requests, batch, "cachegrind")
    with open(out) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def functions(work, binary, extra, origin_port, requests, batch, pattern):
    """Inclusive instructions per request of the functions matching `pattern`."""
    out = run(work, binary, extra, origin_port, requests, batch, "callgrind")
    text = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--inclusive=yes", "--threshold=100", out],
        capture_output=True, text=True, check=True,
    ).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+([^:\s]+):(.+?)( \[.*\])?$", line)
        if m and re.search(pattern, m.group(3)):
            name = m.group(3)
            found[name] = max(found.get(name, 0), int(m.group(1).replace(",", "")))
    return {name: count / requests for name, count in found.items()}


def main():
    args = sys.argv[1:]
    opt = lambda key, default: type(default)(args[args.index(key) + 1]) if key in args else default
    few, many, batch = opt("--few", 1000), opt("--many", 5000), opt("--batch", 16)
    rounds, pattern = opt("--rounds", 3), opt("--functions", "")
    variants = ab.variants_of(args, __doc__)
    work = tempfile.mkdtemp()
    origin = P.start_origin(work)
    results = {name: [] for name, _ in variants}
    try:
        for r in range(1 if pattern else rounds):
            for name, spec in variants:
                binary, _, extra = spec.partition(":")
                if pattern:
                    costs = functions(work, binary, extra, origin.port, many, batch, pattern)
                    for function, cost in sorted(costs.items(), key=lambda kv: -kv[1]):
                        print(f"{name:16s} {cost:9.0f}  {function}", flush=True)
                    continue
                low = total(work, binary, extra, origin.port, few, batch)
                high = total(work, binary, extra, origin.port, many, batch)
                results[name].append((high - low) / (many - few))
                print(f"round {r} {name:16s} {results[name][-1]:9.0f} instructions/request",
                      flush=True)
    finally:
        origin.stop()
    if pattern:
        return
    base = statistics.median(results[variants[0][0]])
    for name, _ in variants:
        runs = results[name]
        median = statistics.median(runs)
        print(f"median {name:16s} {median:9.0f} (range {min(runs):.0f}-{max(runs):.0f})  "
              f"ratio {median / base:.3f}")


if __name__ == "__main__":
    main()
