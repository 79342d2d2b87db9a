#!/usr/bin/env python3
"""Hot reload under steady load (issue 9's "Done when"): `loadtest run
--verify` drives shardproxy while the config file is rewritten and SIGHUP
sent RELOADS times, alternating two valid configs (the second adds a route
and changes timeouts), with one invalid file in the middle. Reports the
requests, failures (errors and checksum mismatches) and latency of the run,
and whether the new route answered after the reloads.

    scripts/ops/reload_under_load.py [--reloads 10] [--seconds 12] [--shards 2]

Needs a release build (cargo build --release --workspace). Everything
listens on 127.0.0.1 on ports the kernel picks.
"""

import argparse
import json
import os
import sys
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from loopback import free_port, wait_port  # noqa: E402
BIN = os.path.join(ROOT, "target", "release")


def config(port, origin, shards, variant):
    extra_route = '\n[[route]]\npath_prefix = "/b"\nupstream = "o"\n' if variant == "b" else ""
    timeouts = '[timeouts]\nupstream_first_byte = "20s"\n' if variant == "b" else ""
    broken = '\n[[route]]\npath_prefix = "/x"\nupstream = "missing"\n' if variant == "bad" else ""
    return f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {shards}
{timeouts}
[[upstream]]
name = "o"
servers = ["127.0.0.1:{origin}"]
keepalive = 64
{extra_route}{broken}
[[route]]
path_prefix = "/load"
upstream = "o"
"""


def status_of(url):
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    work = tempfile.mkdtemp()
    origin_port, port = free_port(), free_port()
    origin = subprocess.Popen([os.path.join(BIN, "loadtest"), "origin", "--listen",
                               f"127.0.0.1:{origin_port}", "--shards", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(work, "shardproxy.toml")
    with open(path, "w") as f:
        f.write(config(port, origin_port, a.shards, "a"))
    log = open(os.path.join(work, "proxy.log"), "w")
    proxy = subprocess.Popen([os.path.join(BIN, "shardproxy"), "--config", path],
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(origin_port)
        wait_port(port)
        b_before = status_of(f"http://127.0.0.1:{port}/b/before")
        load = subprocess.Popen([os.path.join(BIN, "loadtest"), "run", "--verify", "--json",
                                 "-c", str(a.connections), "-d", f"{a.seconds}s",
                                 f"http://127.0.0.1:{port}/load"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # past loadtest's warm-up
        gap = (a.seconds - 2) / (a.reloads + 1)
        variants = []
        for i in range(a.reloads):
            # Alternating, ending on "b" (the one with the /b route).
            variant = "b" if (a.reloads - 1 - i) % 2 == 0 else "a"
            if i == a.reloads // 2:
                variants.append("bad")
                with open(path, "w") as f:
                    f.write(config(port, origin_port, a.shards, "bad"))
                proxy.send_signal(signal.SIGHUP)
                time.sleep(gap / 2)
            variants.append(variant)
            with open(path, "w") as f:
                f.write(config(port, origin_port, a.shards, variant))
            proxy.send_signal(signal.SIGHUP)
            time.sleep(gap)
        out, _ = load.communicate(timeout=a.seconds + 30)
        report = json.loads(out)
        last = variants[-1] if variants else "a"
        report.pop("latency_curve", None)
        b_status = status_of(f"http://127.0.0.1:{port}/b/after")
        print(json.dumps({"reloads_sent": variants, "final_config": last,
                          "GET /b/after": b_status, "GET /b before": b_before,
                          "loadtest": report}, indent=1))
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=20)
        origin.kill()
        origin.wait()
        log.close()
        with open(os.path.join(work, "proxy.log")) as f:
            lines = [l for l in f if "reload" in l or "new config" in l]
        print(f"proxy log: {len(lines)} reload lines; refused: "
              f"{sum('refused' in l for l in lines)}")


if __name__ == "__main__":
    main()
