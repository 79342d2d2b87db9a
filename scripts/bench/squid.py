#!/usr/bin/env python3
"""shardproxy's forward proxy side by side with Squid (issue 10).

Both run in forward mode with the same number of workers (shardproxy shards,
Squid SMP `workers`), caching off in both (shardproxy's forward cache is off
by default; Squid gets `cache deny all`), keep-alive on both sides, no Via on
either. For each round, each system in turn (A B A B ...):

  get       forward GET of 1 KiB from `loadtest origin` through a keep-alive
            client (`loadtest run --proxy`, absolute-form): req/s, p99, and
            CPU us/request (first field of /proc/PID/task/*/schedstat summed
            over every thread of every process of the proxy, before and after);
  tunnel1   1 GiB through one CONNECT tunnel to a sink that counts the bytes
            (announced first: Squid does not pass a half-close on, so the
            end cannot be the client's EOF) and answers when all came:
            GiB/s and proxy CPU seconds per GiB;
  tunnel64  64 concurrent tunnels carrying 1 GiB between them: the same.
  down1     1 GiB the other way (the far end sends, the client counts):
            a download through one tunnel, the bulk of HTTPS through a
            forward proxy, and the direction shardproxy splices;
  down64    64 concurrent downloads of 1 GiB between them.

Medians over the rounds, and the ratio shardproxy / Squid. With
`--instructions`, `perf stat -e instructions:u,instructions:k` counts the
proxy's instructions during each run too (counts barely move with machine
load, unlike CPU time).

    scripts/bench/squid.py                      # 2 workers, 3 rounds
    scripts/bench/squid.py --quick              # a check that it runs: 1 round, small sizes
    scripts/bench/squid.py --rounds 5 --workers 2 --secs 10 --instructions
    scripts/bench/squid.py --copy-too           # also shardproxy with splicing off

`--copy-too` adds `shardproxy-copy` (`http.splice_above = "0"`: tunnels
copied through buffers, as before splicing) to the systems, for an A/B of
splicing beside Squid in the same run.

Squid comes from Debian (installed here with apt-get when missing, as root).
Uses target/release binaries (cargo build --release --workspace), or
target/debug ones with a warning. Everything listens on 127.0.0.1 on ports
the kernel picks; every loop is bounded; the work directory is removed.
"""

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perf as P  # noqa: E402

ROOT = P.ROOT
GIB = 1 << 30
CHUNK = 1 << 20
# (scenario, tunnels, download): the far end receives (upload) or sends.
TUNNEL_RUNS = [("tunnel1", 1, False), ("tunnel64", 64, False), ("down1", 1, True), ("down64", 64, True)]
SCENARIOS = ["get"] + [s for s, _, _ in TUNNEL_RUNS]


@functools.cache
def binary(name):
    for build in ("release", "debug"):
        path = os.path.join(ROOT, "target", build, name)
        if os.path.exists(path):
            if build == "debug":
                warn_once(f"using the debug build of {name}: figures mean nothing")
            return path
    raise SystemExit(f"no {name} binary: cargo build --release --workspace")


def squid_binary():
    P.ensure_tools({"squid": "squid"})
    return shutil.which("squid")


# ---- the systems ----------------------------------------------------------

def start_shardproxy(work, workers, name="shardproxy", http=""):
    port = P.free_port()
    conf = os.path.join(work, f"{name}.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {workers}
[http]
via = false
{http}
[forward_proxy]
enabled = true
allow = ["127.0.0.0/8"]
allowed_connect_ports = ["1024-65535"]
# Squid keeps idle server connections without a per-destination cap.
keepalive = 64
""")
    server = P.Server(name, [binary("shardproxy"), "--config", conf], port)
    server.pid = server.proc.pid
    return server


class Squid:
    """Squid in forward mode. One worker runs in the foreground (-N); SMP
    workers need the daemon, found through its pid file."""

    def __init__(self, work, workers):
        self.name, self.port = "squid", P.free_port()
        self.dir = os.path.join(work, "squid")
        os.makedirs(self.dir)
        # Squid drops root for its effective user (Debian: proxy).
        os.chmod(work, 0o755)
        os.chmod(self.dir, 0o777)
        self.conf = os.path.join(self.dir, "squid.conf")
        with open(self.conf, "w") as f:
            f.write(f"""http_port 127.0.0.1:{self.port}
workers {workers}
pid_filename {self.dir}/squid.pid
cache_log {self.dir}/cache.log
access_log none
cache_store_log none
logfile_rotate 0
coredump_dir {self.dir}
# No caching: compare forwarding, not hit rates.
cache deny all
cache_mem 0 MB
# Loopback only, and CONNECT to any port (the sink's is the kernel's pick).
http_access allow localhost
http_access deny all
via off
client_persistent_connections on
server_persistent_connections on
shutdown_lifetime 1 second
dns_v4_first on
""")
        self.foreground = workers == 1
        cmd = [squid_binary(), "-f", self.conf] + (["-N"] if self.foreground else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr.log"), "w"),
                                     start_new_session=True)
        P.wait_port(self.port, limit=30)
        self.pid = self.proc.pid if self.foreground else self.daemon_pid()

    def daemon_pid(self):
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with open(os.path.join(self.dir, "squid.pid")) as f:
                    return int(f.read().strip())
            except (FileNotFoundError, ValueError):
                time.sleep(0.1)
        raise SystemExit("squid wrote no pid file")

    def stop(self):
        """SIGTERM (a shutdown within `shutdown_lifetime`, the master reaping
        its workers), then SIGKILL for whatever is left after 10 s."""
        pids = P.pids_of(self.pid)
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + 10
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            if self.foreground and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()


# ---- the loads ------------------------------------------------------------

@functools.cache
def warn_once(text):
    print(f"warning: {text}", file=sys.stderr)


class Counter:
    """CPU nanoseconds and (with perf) instructions of a proxy during a run."""

    def __init__(self, server, instructions):
        self.server, self.perf = server, None
        self.cpu0 = P.cpu_ns(server.pid)
        if instructions:
            pids = ",".join(str(p) for p in P.pids_of(server.pid))
            fd, self.out = tempfile.mkstemp(suffix=".perf")
            os.close(fd)
            self.perf = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-o", self.out, "-e", "instructions:u,instructions:k",
                 "-p", pids], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.2)

    def stop(self):
        cpu = P.cpu_ns(self.server.pid) - self.cpu0
        instructions = None
        if self.perf:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(timeout=10)
            counts = []
            with open(self.out) as f:
                for line in f:
                    fields = line.split(",")
                    if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
                        counts.append(int(fields[0]))
            os.unlink(self.out)
            if len(counts) == 2:
                instructions = sum(counts)
            else:
                warn_once("perf stat counted no instructions here (no PMU in this VM?): left out")
        return cpu, instructions


def run_get(server, origin_port, a):
    counter = Counter(server, a.instructions)
    out = subprocess.run(
        [binary("loadtest"), "run", "--proxy", f"127.0.0.1:{server.port}", "-c", str(a.connections),
         "-t", "1", "-d", f"{a.secs}s", "--warmup", "0s", "--json",
         f"http://127.0.0.1:{origin_port}/"],
        capture_output=True, text=True, timeout=a.secs + 60)
    cpu, instructions = counter.stop()
    if out.returncode != 0:
        raise SystemExit(f"loadtest through {server.name} failed: {out.stderr[-500:]}")
    r = json.loads(out.stdout)
    requests = max(r["requests"], 1)
    bad = r["errors"]["total"] + r["status"]["4xx"] + r["status"]["5xx"]
    if bad:
        print(f"  warning: {server.name}: {bad} failed requests", file=sys.stderr)
    result = {"rps": r["requests_per_sec"], "p99_ms": r["latency_ms"]["p99"],
              "cpu_us_per_req": cpu / 1000 / requests}
    if instructions is not None:
        result["instr_per_req"] = instructions / requests
    return result


def sink_main(port_file):
    """The tunnels' far end (its own process, so the client's threads do not
    share a GIL with it). Each connection starts with `U` or `D` and an
    8-byte length n: `U` (upload) counts n bytes, answers `OK <n>` and
    closes; `D` (download) sends n bytes and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    with open(port_file, "w") as f:
        f.write(str(listener.getsockname()[1]))

    def drain(conn):
        buf, total = bytearray(CHUNK), 0
        with conn:
            announced = b""
            while len(announced) < 9:
                piece = conn.recv(9 - len(announced))
                if not piece:
                    return
                announced += piece
            expected = int.from_bytes(announced[1:], "big")
            if announced[:1] == b"D":
                chunk = memoryview(bytes(CHUNK))
                while total < expected:
                    n = min(CHUNK, expected - total)
                    conn.sendall(chunk[:n])
                    total += n
                return
            while total < expected:
                n = conn.recv_into(buf, min(CHUNK, expected - total))
                if n == 0:
                    break
                total += n
            conn.sendall(f"OK {total}\n".encode())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


def start_sink(work):
    port_file = os.path.join(work, "sink.port")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sink", port_file],
                            start_new_session=True)
    deadline = time.time() + 10
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if time.time() > deadline:
            raise SystemExit("the sink did not start")
        time.sleep(0.05)
    return proc, int(open(port_file).read())


def tunnel(proxy_port, sink_port, nbytes, errors, download=False):
    """Sends `nbytes` through one CONNECT tunnel, then EOF, and checks the
    count; with `download`, receives them instead."""
    try:
        s = socket.create_connection(("127.0.0.1", proxy_port), timeout=60)
        target = f"127.0.0.1:{sink_port}"
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 4096:
            piece = s.recv(4096)
            if not piece:
                break
            head += piece
        if not head.split(b" ", 2)[1:2] == [b"200"]:
            raise RuntimeError(f"CONNECT answered {head[:80]!r}")
        if download:
            s.sendall(b"D" + nbytes.to_bytes(8, "big"))
            buf, got = bytearray(CHUNK), 0
            while got < nbytes:
                n = s.recv_into(buf)
                if n == 0:
                    break
                got += n
            s.close()
            if got != nbytes:
                raise RuntimeError(f"downloaded {got} of {nbytes} bytes")
            return
        # The length first: Squid's tunnels do not pass a half-close on (an
        # EOF from one side closes both), so the end cannot be the client's EOF.
        s.sendall(b"U" + nbytes.to_bytes(8, "big"))
        chunk, left = memoryview(bytes(CHUNK)), nbytes
        while left > 0:
            n = min(left, CHUNK)
            s.sendall(chunk[:n])
            left -= n
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 100:
            piece = s.recv(100)
            if not piece:
                break
            reply += piece
        s.close()
        if reply.strip() != f"OK {nbytes}".encode():
            raise RuntimeError(f"the sink answered {reply!r} for {nbytes} bytes")
    except Exception as e:  # noqa: BLE001 (reported, and the run fails)
        errors.append(f"{e}")


def run_tunnels(server, sink_port, count, total, a, download=False):
    counter = Counter(server, a.instructions)
    errors, each = [], total // count
    start = time.monotonic()
    threads = [threading.Thread(target=tunnel, args=(server.port, sink_port, each, errors, download))
               for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    elapsed = time.monotonic() - start
    cpu, instructions = counter.stop()
    if errors or any(t.is_alive() for t in threads):
        raise SystemExit(f"{server.name}: tunnels failed: {errors[:3]}")
    gib = each * count / GIB
    result = {"gib_per_s": gib / elapsed, "cpu_s_per_gib": cpu / 1e9 / gib}
    if instructions is not None:
        result["instr_per_kib"] = instructions / (each * count / 1024)
    return result


# ---- the report -----------------------------------------------------------

def report(results, systems):
    """Medians per system and scenario, and each shardproxy / squid."""
    print()
    for scenario in SCENARIOS:
        # A metric some run lacks (perf failed once) is left out.
        metrics = [m for m in results[(systems[0], scenario)][0]
                   if all(m in r for s in systems for r in results[(s, scenario)])]
        print(f"{scenario}:")
        for metric in metrics:
            medians = {s: statistics.median(r[metric] for r in results[(s, scenario)]) for s in systems}
            cells = "  ".join(f"{s} {medians[s]:12.3f}" for s in systems)
            ratios = "  ".join(f"{s}/squid {medians[s] / medians['squid']:.3f}" if medians["squid"] else "nan"
                               for s in systems if s != "squid")
            print(f"  {metric:16} {cells}   {ratios}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--secs", type=int, default=5, help="length of each GET run")
    ap.add_argument("--connections", type=int, default=64, help="keep-alive connections of the GET client")
    ap.add_argument("--tunnel-bytes", type=int, default=GIB, help="bytes per tunnel scenario")
    ap.add_argument("--instructions", action="store_true", help="count instructions with perf stat")
    ap.add_argument("--quick", action="store_true", help="1 round, 1 s runs, 64 MiB tunnels")
    ap.add_argument("--copy-too", action="store_true",
                    help="also run shardproxy with splicing off (shardproxy-copy)")
    ap.add_argument("--sink", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sink:
        return sink_main(a.sink)
    if a.quick:
        a.rounds, a.secs, a.tunnel_bytes = 1, 1, 64 << 20
    a.rounds = max(1, min(a.rounds, 50))
    squid_binary()
    work = tempfile.mkdtemp()
    origin_port = P.free_port()
    origin = P.Server("origin", [binary("loadtest"), "origin", "--listen",
                                 f"127.0.0.1:{origin_port}", "--shards", "1"], origin_port)
    sink, sink_port = start_sink(work)
    systems = ["shardproxy"] + (["shardproxy-copy"] if a.copy_too else []) + ["squid"]
    results, servers = {}, {}
    try:
        servers["shardproxy"] = start_shardproxy(work, a.workers)
        if a.copy_too:
            servers["shardproxy-copy"] = start_shardproxy(work, a.workers, "shardproxy-copy",
                                                          'splice_above = "0"')
        servers["squid"] = Squid(work, a.workers)
        for round_ in range(a.rounds):
            for name in systems:
                server = servers[name]
                get = run_get(server, origin_port, a)
                runs = {"get": get}
                for scenario, count, download in TUNNEL_RUNS:
                    runs[scenario] = run_tunnels(server, sink_port, count, a.tunnel_bytes, a, download)
                for scenario, r in runs.items():
                    results.setdefault((name, scenario), []).append(r)
                tunnels = " | ".join(f"{s} {runs[s]['gib_per_s']:.2f} GiB/s {runs[s]['cpu_s_per_gib']:.3f} s/GiB"
                                     for s, _, _ in TUNNEL_RUNS)
                print(f"round {round_ + 1} {name:15} get {get['rps']:9.0f} req/s "
                      f"{get['cpu_us_per_req']:7.2f} us/req p99 {get['p99_ms']:.2f} ms | {tunnels}",
                      flush=True)
        report(results, systems)
    finally:
        for server in servers.values():
            server.stop()
        origin.stop()
        os.killpg(sink.pid, signal.SIGKILL)
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
