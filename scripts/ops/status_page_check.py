#!/usr/bin/env python3
"""The admin status page in a real headless browser (issue 9): starts the
loadtest origin and a 2-shard shardproxy with `[admin] listen`, sends some
requests, loads `/` in Debian's chromium (installed here with apt-get when
missing), lets its script poll `/status`, then checks the rendered DOM: a row
per shard in the shards table, every shard answered, the route's requests
counted. Saves a screenshot next to the printed path.

    scripts/ops/status_page_check.py [--shards 2] [--screenshot status.png]

Needs a release build (cargo build --release --workspace). Everything
listens on 127.0.0.1 on ports the kernel picks. Exits non-zero on a failed check.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from loopback import free_port, wait_port  # noqa: E402
from browser import chromium  # noqa: E402
BIN = os.path.join(ROOT, "target", "release")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--screenshot", default=os.path.join(tempfile.gettempdir(), "shardproxy-status.png"))
    a = ap.parse_args()
    browser = chromium()
    work = tempfile.mkdtemp()
    origin_port, port, admin = free_port(), free_port(), free_port()
    origin = subprocess.Popen([os.path.join(BIN, "loadtest"), "origin", "--listen",
                               f"127.0.0.1:{origin_port}", "--shards", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(work, "shardproxy.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {a.shards}
[admin]
listen = "127.0.0.1:{admin}"
[[upstream]]
name = "o"
servers = ["127.0.0.1:{origin_port}"]
[[route]]
path_prefix = "/"
upstream = "o"
""")
    proxy = subprocess.Popen([os.path.join(BIN, "shardproxy"), "--config", conf],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = []
    try:
        for p in (origin_port, port, admin):
            wait_port(p)
        for i in range(a.requests):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/page/{i}", timeout=5).read()
        profile = os.path.join(work, "profile")
        common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                  "--virtual-time-budget=4000", "--window-size=1280,1000"]
        url = f"http://127.0.0.1:{admin}/"
        dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True,
                             timeout=90).stdout
        subprocess.run(common + [f"--screenshot={a.screenshot}", url], capture_output=True,
                       timeout=90)
        table = re.search(r'<table id="shards">.*?<tbody>(.*?)</tbody>', dom, re.S)
        rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S) if table else []
        ids = sorted(int(re.search(r"<td>(\d+)</td>", r).group(1)) for r in rows
                     if re.search(r"<td>(\d+)</td>", r))
        if ids != list(range(a.shards)):
            failures.append(f"shard rows {ids}, expected {list(range(a.shards))}")
        if f"{a.shards}/{a.shards} shards answered" not in dom:
            failures.append("the summary does not say every shard answered")
        routes = re.search(r'<table id="routes">.*?<tbody>(.*?)</tbody>', dom, re.S)
        if not routes or not re.search(rf"<td>{a.requests}</td>", routes.group(1)):
            failures.append(f"no route row counting {a.requests} requests")
        print(f"chromium: {subprocess.run([browser, '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"shard rows: {ids}; screenshot: {a.screenshot} "
              f"({os.path.getsize(a.screenshot) if os.path.exists(a.screenshot) else 0} bytes)")
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
        origin.kill()
        origin.wait()
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("status page OK")


if __name__ == "__main__":
    main()
