#!/usr/bin/env python3
"""Checks a running shardproxy's /metrics with the official Prometheus
Python client's text parser (prometheus_client.parser), which it installs
itself into a private virtualenv (~/.cache/shardproxy-metrics-venv).

    scripts/ops/check_metrics.py http://127.0.0.1:9901/metrics

Exit 0 and a summary if the page parses; exit 1 with the parser's error if
it does not. The integration tests check the same page with a strict Rust
reader (tests/support/prometheus.rs); this is the cross-check against the
reference implementation.
"""

import os
import subprocess
import sys
import urllib.request

VENV = os.path.join(os.path.expanduser("~"), ".cache", "shardproxy-metrics-venv")


def ensure_client():
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    probe = subprocess.run([python, "-c", "import prometheus_client"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "prometheus_client"], check=True
        )
    return python


def check(text):
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    samples = sum(len(f.samples) for f in families)
    names = {f.name for f in families}
    # The parser drops counters' `_total`; families with no sample yet
    # (no route, no upstream) are still declared with HELP and TYPE.
    required_families = (
        "shardproxy_requests",
        "shardproxy_request_duration_seconds",
        "shardproxy_shard_info",
        "shardproxy_upstream_requests",
        "shardproxy_upstream_connects",
        "shardproxy_upstream_connect_errors",
        "shardproxy_upstream_pooled_requests",
        "shardproxy_upstream_retries",
        "shardproxy_upstream_ejections",
        "shardproxy_upstream_up",
    )
    for required in required_families:
        if required not in names:
            raise ValueError(f"family {required} missing")
    for family in families:
        if family.name == "shardproxy_upstream_up":
            for sample in family.samples:
                if sample.value not in (0.0, 1.0):
                    raise ValueError(f"shardproxy_upstream_up is {sample.value}, not 0 or 1")
        if family.name == "shardproxy_shard_info":
            for sample in family.samples:
                if sample.labels.get("engine") not in ("io_uring", "poll"):
                    raise ValueError(f"shardproxy_shard_info without engine: {sample.labels}")
    print(f"OK: {len(families)} families, {samples} samples")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if os.environ.get("SHARDPROXY_METRICS_VENV") != "1":
        python = ensure_client()
        env = dict(os.environ, SHARDPROXY_METRICS_VENV="1")
        sys.exit(subprocess.run([python, __file__, sys.argv[1]], env=env).returncode)
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        text = response.read().decode("utf-8")
    try:
        check(text)
    except Exception as error:  # the parser raises ValueError and friends
        print(f"/metrics does not parse: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
