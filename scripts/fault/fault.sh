#!/usr/bin/env bash
# Fault runs for upstream resilience (issue 8): three loadtest origins behind
# shardproxy with active health checks, outlier detection and retries, driven
# by `loadtest run --verify`.
#
#   scripts/fault/fault.sh kill   # origin 2 is killed (SIGKILL) after KILL_AT and restarted after RESTART_AT
#   scripts/fault/fault.sh slow   # origin 3 answers every request 500 ms late
#
# Environment: DURATION (default 20s), OUTLIER=on|off (default on),
# CONNECTIONS (default 32), KILL_AT / RESTART_AT in seconds (default 5 / 10), RISE (passing
# checks that bring a server back, default 2),
# BASE_PORT (default 19100: origins on BASE_PORT+1..3, the proxy on BASE_PORT+80).
# Prints the loadtest report (JSON) and the proxy's health/ejection log lines.
# Run it on an otherwise idle machine: the numbers mean nothing on a busy one.
# scripts/fault/recovery.py times the kill and the restart to the millisecond.
set -euo pipefail

mode=${1:-kill}
duration=${DURATION:-20s}
outlier=${OUTLIER:-on}
connections=${CONNECTIONS:-32}
kill_at=${KILL_AT:-5}
restart_at=${RESTART_AT:-10}
base=${BASE_PORT:-19100}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --workspace --quiet --manifest-path "$root/Cargo.toml"

# Starts origin $1 (1..3) with extra arguments; its pid goes to $work/origin$1.pid.
start_origin() {
    local n=$1
    shift
    "$bin/loadtest" origin --listen "127.0.0.1:$((base + n))" --shards 1 "$@" >"$work/origin$n.log" 2>&1 &
    echo $! >"$work/origin$n.pid"
    pids+=($!)
    until grep -sq "origin listening" "$work/origin$n.log"; do sleep 0.05; done
}

start_origin 1
start_origin 2
if [ "$mode" = slow ]; then start_origin 3 --delay 500ms; else start_origin 3; fi

outlier_line=""
if [ "$outlier" = on ]; then
    outlier_line='outlier = { consecutive = 3, on = ["connect", "reset", "timeout", "5xx"], base_ejection = "2s", max_ejection = "30s" }'
fi
cat >"$work/proxy.toml" <<TOML
[server]
listen = ["127.0.0.1:$((base + 80))"]
shards = 2
pin = false

[timeouts]
upstream_connect = "500ms"
# A 500 ms origin times out: outlier detection (on "timeout") can eject it and
# the retry policy sends the request to another server.
upstream_first_byte = "250ms"

[[upstream]]
name = "fleet"
servers = ["127.0.0.1:$((base + 1))", "127.0.0.1:$((base + 2))", "127.0.0.1:$((base + 3))"]
balance = "least_conn"
health_check = { path = "/bytes/1", interval = "1s", timeout = "500ms", rise = ${RISE:-2}, fall = 2 }
retry = { attempts = 2, on = ["connect", "reset", "timeout", "502", "503", "504"], backoff_base = "10ms", backoff_max = "100ms" }
$outlier_line

[[route]]
upstream = "fleet"
TOML

RUST_LOG=info "$bin/shardproxy" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)
listening() { grep -s -c 'listening on' "$work/proxy.log" || true; }
until [ "$(listening)" -ge 2 ] 2>/dev/null; do sleep 0.05; done

"$bin/loadtest" run "http://127.0.0.1:$((base + 80))/bytes/1024" \
    -c "$connections" -d "$duration" --warmup 0s --verify --json >"$work/report.json" &
run=$!

if [ "$mode" = kill ]; then
    sleep "$kill_at"
    kill -KILL "$(cat "$work/origin2.pid")"
    echo "$(date +%T.%N) killed origin 2" >&2
    sleep $((restart_at - kill_at))
    start_origin 2
    echo "$(date +%T.%N) restarted origin 2" >&2
fi
wait "$run"

cat "$work/report.json"
echo
grep -E "is down|is up again|ejected" "$work/proxy.log" >&2 || true
