#!/usr/bin/env bash
# What the per-request figures (/metrics, INFO, the slow-request log) cost:
# the release binary of this checkout against that of BASE (a commit from
# before them), in the same run, rounds alternating between the two.
#
#   deploy/bench-metrics-cost.sh BASE [REQUESTS] [ROUNDS]
#
# Each round starts each binary on a fresh data directory (fsync never, so
# the request path's CPU is what is measured, not the disk) and runs, on
# 50 connections, `monotable bench` put and get with pipelines of 1 and 16,
# and redis-benchmark SET and GET (pipeline 16) on its Redis endpoint.
# Prints each round's ops/s and the medians with their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:?usage: deploy/bench-metrics-cost.sh BASE [REQUESTS] [ROUNDS]}"
REQUESTS="${2:-200000}"
ROUNDS="${3:-3}"

# Both binaries built with the same target directory (shared dependencies).
tree="$(mktemp -d)"
git worktree add --detach "$tree" "$BASE" >/dev/null
cleanup_tree() { git worktree remove --force "$tree" >/dev/null 2>&1 || true; }
trap cleanup_tree EXIT
CARGO_TARGET_DIR="$(pwd)/target" cargo build -j2 --release -p monotable-node \
    --manifest-path "$tree/Cargo.toml" >/dev/null
cp target/release/monotable "$tree/monotable-base"
cargo build -j2 --release -p monotable-node >/dev/null
cp target/release/monotable "$tree/monotable-new"
MT="$tree/monotable-new"
# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh
trap 'cleanup; cleanup_tree' EXIT

run_one() { # binary label round
    local bin=$1 label=$2 round=$3 port resp pid
    port=$(free_port); resp=$(free_port)
    rm -rf "$work/data"
    "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" --resp-listen "127.0.0.1:$resp" \
        --fsync never --log warn >"$work/$label.log" 2>&1 &
    pid=$!
    wait_port "$port"
    for p in 1 16; do
        "$bin" bench --addr "127.0.0.1:$port" -c 50 -P $p -n "$REQUESTS" -r 100000 -t put,get --csv |
            tr -d '"' | awk -F, -v l="$label" -v r="$round" -v p="$p" '$1=="PUT"||$1=="GET" {print l, r, "native-" tolower($1) "-P" p, $2}'
    done
    redis-benchmark -p "$resp" -c 50 -P 16 -n "$REQUESTS" -r 100000 -t set,get --csv 2>/dev/null |
        tr -d '"' | awk -F, -v l="$label" -v r="$round" '$1=="SET"||$1=="GET" {print l, r, "resp-" tolower($1) "-P16", $2}'
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

results="$work/results"
for round in $(seq 1 "$ROUNDS"); do
    run_one "$tree/monotable-base" base "$round" >>"$results"
    run_one "$tree/monotable-new" new "$round" >>"$results"
done
cat "$results"
echo
echo "| test | $BASE ops/s (median) | $(git rev-parse --short HEAD) ops/s (median) | new / base |"
echo "|---|---|---|---|"
python3 - "$results" <<'EOF'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, _, test, rps = line.split()
    runs[(test, label)].append(float(rps))
for test in sorted({t for t, _ in runs}):
    b, n = statistics.median(runs[(test, "base")]), statistics.median(runs[(test, "new")])
    print(f"| {test} | {b:,.0f} | {n:,.0f} | {n / b:.3f} |")
EOF
