#!/usr/bin/env python3
"""The forward proxy in a real browser (issue 10): headless Chromium (Debian's
package, installed here with apt-get when missing) with `--proxy-server`
pointing at a 2-shard shardproxy with `[forward_proxy]` on (loopback allowed,
the forward cache on), loads a local HTTPS page (through CONNECT, self-signed
certificate made with openssl) and a local HTTP page (absolute-form), and
checks the rendered text of both. `--proxy-bypass-list=<-loopback>` makes
Chromium send loopback URLs through the proxy (it bypasses them by default);
the proxy's access log must show the CONNECT and the absolute-form GET, and
the HTTP origin must see the proxy's Via. The HTTP page is then loaded by a
second browser profile (its own cache empty): it must come from the proxy's
cache, the origin seeing one request for it in all.

    scripts/ops/forward_browser_check.py [--shards 2] [--bin target/release/shardproxy]

Uses target/release/shardproxy, else target/debug/shardproxy (cargo build).
Everything listens on 127.0.0.1 on ports the kernel picks. Exits non-zero on
a failed check.
"""

import argparse
import http.server
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from loopback import free_port, wait_port  # noqa: E402
from browser import chromium  # noqa: E402




def proxy_binary(given):
    if given:
        return given
    for build in ("release", "debug"):
        path = os.path.join(ROOT, "target", build, "shardproxy")
        if os.path.exists(path):
            return path
    raise SystemExit("no shardproxy binary: run cargo build (or pass --bin)")


def self_signed(work):
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


class Page(http.server.BaseHTTPRequestHandler):
    """Serves one HTML page whose text names the scheme, a nonce and the Via
    it was asked with; counts requests per path."""

    protocol_version = "HTTP/1.1"
    text = ""
    counts = None
    lock = threading.Lock()

    def do_GET(self):
        with self.lock:
            self.counts[self.path] = self.counts.get(self.path, 0) + 1
        if self.path != "/":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        via = self.headers.get("Via", "none")
        body = (f"<html><head><title>t</title></head><body><p id=\"t\">{self.text}</p>"
                f"<p id=\"via\">via={via}</p></body></html>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=300")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(text, tls=None):
    """Starts an origin on a kernel-picked port; returns (port, counts, server)."""
    handler = type("Handler", (Page,), {"text": text, "counts": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1], handler.counts, server


def dump_dom(browser, proxy_port, profile, url):
    args = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}", f"--proxy-server=http://127.0.0.1:{proxy_port}",
            "--proxy-bypass-list=<-loopback>", "--ignore-certificate-errors",
            "--virtual-time-budget=3000", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--dump-dom", url]
    return subprocess.run(args, capture_output=True, text=True, timeout=90).stdout


def log_lines(path, want, limit=5.0):
    """The access log's JSON lines once `want(lines)` holds (the writer
    flushes every 100 ms), or what is there after `limit` seconds."""
    deadline = time.time() + limit
    while True:
        lines = []
        if os.path.exists(path):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        if want(lines) or time.time() > deadline:
            return lines
        time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    browser = chromium()
    binary = proxy_binary(a.bin)
    work = tempfile.mkdtemp()
    nonce = secrets.token_hex(4)
    https_text, http_text = f"hello over https {nonce}", f"hello over http {nonce}"
    https_port, https_counts, https_server = serve(https_text, self_signed(work))
    http_port, http_counts, http_server = serve(http_text)
    port = free_port()
    access = os.path.join(work, "access.log")
    conf = os.path.join(work, "shardproxy.toml")
    with open(conf, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {a.shards}
[log]
access = "{access}"
format = "json"
[cache]
enabled = true
[forward_proxy]
enabled = true
allow = ["127.0.0.0/8"]
allowed_connect_ports = ["1024-65535"]
cache = true
""")
    proxy = subprocess.Popen([binary, "--config", conf],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    failures = []
    https_url = f"https://127.0.0.1:{https_port}/"
    http_url = f"http://127.0.0.1:{http_port}/"
    try:
        wait_port(port)
        https_dom = dump_dom(browser, port, os.path.join(work, "p1"), https_url)
        http_dom = dump_dom(browser, port, os.path.join(work, "p1"), http_url)
        again_dom = dump_dom(browser, port, os.path.join(work, "p2"), http_url)
        if https_text not in https_dom:
            failures.append(f"the HTTPS page did not render through CONNECT: {https_dom[:300]!r}")
        if http_text not in http_dom:
            failures.append(f"the HTTP page did not render: {http_dom[:300]!r}")
        if "via=1.1 shardproxy" not in http_dom:
            failures.append("the HTTP origin saw no Via from the proxy")
        if http_text not in again_dom:
            failures.append(f"the second profile's HTTP page did not render: {again_dom[:300]!r}")
        if http_counts.get("/", 0) != 1:
            failures.append(f"the HTTP origin served / {http_counts.get('/', 0)} times; "
                            "the second load should have been a cache hit")

        def seen(lines):
            connect = any(l.get("method") == "CONNECT" and f":{https_port}" in l.get("target", "")
                          for l in lines)
            get = any(l.get("method") == "GET" and l.get("target") == http_url for l in lines)
            return connect and get
        lines = log_lines(access, seen)
        if not seen(lines):
            failures.append("the access log lacks the CONNECT or the absolute-form GET: "
                            + "; ".join(f"{l.get('method')} {l.get('target')}" for l in lines))
        print(f"chromium: {subprocess.run([browser, '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"proxy: {binary}, {a.shards} shards; origins https:{https_port} http:{http_port}")
        # Chromium's own background requests (if any get past the flags) are refused or fail.
        for l in (l for l in lines if "127.0.0.1" in l.get("target", "")):
            print(f"  access: {l.get('method')} {l.get('target')} -> {l.get('status')} "
                  f"cache={l.get('cache')} shard={l.get('shard')}")
    finally:
        proxy.terminate()
        try:
            _, err = proxy.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proxy.kill()
            _, err = proxy.communicate()
        https_server.shutdown()
        http_server.shutdown()
    if failures:
        print("proxy stderr (tail):\n" + "\n".join(err.splitlines()[-20:]))
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("forward proxy in chromium OK (HTTPS through CONNECT, HTTP absolute-form, cache hit)")


if __name__ == "__main__":
    main()
