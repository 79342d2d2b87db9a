#!/usr/bin/env python3
"""Memory of a proxy: idle keep-alive connections, and streaming a large body.

    scripts/bench/memory.py idle [--connections 9000]   # shardproxy vs nginx, RSS growth per idle connection
    scripts/bench/memory.py stream [--gib 1]            # shardproxy peak RSS echoing N GiB each way

idle: each proxy (2 shards / 2 workers) sits in front of the loadtest origin.
N clients connect, each sends one keep-alive GET and reads its response, then
stays connected and silent. The proxy's RSS (summed over its processes) is
read before the first connection and once all N are idle; the growth divided
by N is the cost of one idle connection. The two systems run one after the
other, interleaved over --rounds.

stream: curl uploads N GiB to the origin's /echo through shardproxy, which
streams it back; the proxy's peak RSS (VmHWM) is reported with the bytes
that came back.

Needs a release build (cargo build --release --workspace) and nginx.
Everything listens on 127.0.0.1 on ports the kernel picks.
"""

import argparse
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf import ROOT, Server, free_port, pids_of, start_nginx, start_shardproxy  # noqa: E402


def rss_kib(root_pid):
    total = 0
    for pid in pids_of(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def start_origin(work):
    port = free_port()
    binary = os.path.join(ROOT, "target", "release", "loadtest")
    return Server("origin", [binary, "origin", "--listen", f"127.0.0.1:{port}"], port)


def open_idle(port, count):
    """Connects `count` clients, one request each; returns the open sockets."""
    request = b"GET /bytes/16 HTTP/1.1\r\nHost: bench\r\n\r\n"
    sel = selectors.DefaultSelector()
    socks = []
    pending = 0
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
        pending += 1
        # Keep the number of outstanding requests bounded.
        while pending > 256 or (i == count - 1 and pending > 0):
            for key, _ in sel.select(timeout=10):
                data = key.fileobj.recv(65536)
                key.data.extend(data)
                if not data:
                    raise SystemExit("a proxy closed an idle connection")
                head_end = key.data.find(b"\r\n\r\n")
                if head_end >= 0 and len(key.data) >= head_end + 4 + 16:
                    sel.unregister(key.fileobj)
                    pending -= 1
    return socks


def idle(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="shardproxy-mem-")
    servers = []
    try:
        origin = start_origin(work)
        servers.append(origin)
        results = {"shardproxy": [], "nginx": []}
        for _ in range(a.rounds):
            for name in results:
                if name == "shardproxy":
                    proxy = start_shardproxy(work, origin.port, a.workers, [])
                else:
                    proxy = start_nginx(work, origin.port, a.workers, connections=a.connections + 1024)
                try:
                    open_idle(proxy.port, 1024)  # warm: fill buffer free lists and rings to steady state
                    time.sleep(0.5)
                    before = rss_kib(proxy.proc.pid)
                    socks = open_idle(proxy.port, a.connections)
                    time.sleep(1.0)
                    after = rss_kib(proxy.proc.pid)
                    per = (after - before) / a.connections
                    results[name].append(per)
                    print(f"{name:10} RSS {before} KiB -> {after} KiB with {a.connections} idle connections: "
                          f"{per:.2f} KiB each", flush=True)
                    for s in socks:
                        s.close()
                finally:
                    proxy.stop()
        print(f"\nmedian RSS growth per idle keep-alive connection ({a.connections} connections, "
              f"{a.workers} workers, {a.rounds} rounds):")
        for name, values in results.items():
            print(f"| {name} | {statistics.median(values):.2f} KiB |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def stream(a):
    work = tempfile.mkdtemp(prefix="shardproxy-mem-")
    servers = []
    try:
        origin = start_origin(work)
        servers.append(origin)
        proxy = start_shardproxy(work, origin.port, a.workers, [])
        servers.append(proxy)
        size = a.gib << 30
        start = time.time()
        feed = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        out = subprocess.run(
            ["curl", "-sS", "-T", "-", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
             f"http://127.0.0.1:{proxy.port}/echo"],
            stdin=feed.stdout, capture_output=True, text=True, check=True,
        ).stdout
        feed.wait()
        took = time.time() - start
        status, down = out.split()
        print(f"echoed {a.gib} GiB up and {int(down) / (1 << 30):.2f} GiB down (status {status}) in {took:.1f} s; "
              f"shardproxy peak RSS {peak_kib(proxy.proc.pid) / 1024:.1f} MiB")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["idle", "stream"])
    ap.add_argument("--connections", type=int, default=9000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gib", type=int, default=1)
    a = ap.parse_args()
    idle(a) if a.what == "idle" else stream(a)


if __name__ == "__main__":
    main()
