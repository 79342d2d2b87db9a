#!/usr/bin/env bash
# Builds loadtest and shardproxy in release mode, then runs the interleaved
# comparison against the origin directly, shardproxy, nginx and HAProxy.
# nginx, haproxy and wrk are installed with apt-get when missing.
#
#   scripts/compare/compare.sh --quick                         # smoke: 1 repeat, 2 s runs
#   scripts/compare/compare.sh --self-overhead --publish       # full run, rewrites BENCHMARKS.md
#
# All flags go to `loadtest compare` (see `target/release/loadtest compare --help`).
# Results: target/compare/{report.md,results.json,chart-*.svg,work/}.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
cargo build --release -p loadtest -p shardproxy
exec target/release/loadtest compare "$@"
