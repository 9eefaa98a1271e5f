#!/usr/bin/env bash
# Loads KEYS distinct keys of VALUE_BYTES each into a node (default 1,000,000
# keys of 1,000 bytes: 1 GB), restarts it, and reports the time from start to
# serving and the resident memory per key.
#
#   deploy/bench-startup.sh [KEYS] [VALUE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-1000000}"
VALUE="${2:-1000}"
# shellcheck source=deploy/bench-node.sh
. deploy/bench-node.sh

# Starts the node; sets $pid and $elapsed (seconds until it answered).
timed_start() {
    local t0 t1
    t0=$(date +%s.%N)
    start
    t1=$(date +%s.%N)
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

start
"$MT" bench --addr "$addr" -t put -c 16 -P 16 -n "$KEYS" -r "$KEYS" -d "$VALUE" --sequential
kill -TERM "$pid"; wait "$pid" || true
disk=$(du -sb "$work/data" | cut -f1)
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && cold="cold page cache" || cold="warm page cache (cannot drop caches)"
timed_start
secs=$elapsed
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
records=$("$MT" range list --addr "$addr" --json | python3 -c 'import sys,json; print(sum(c["records"] for r in map(json.loads, sys.stdin) for c in r["chunks"]))')
kill -TERM "$pid"; wait "$pid" || true
timed_start
secs_warm=$elapsed
rss_warm_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
sleep 5
rss_settled_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
echo "records: $records, data on disk: $((disk / 1000000)) MB"
echo "start to serving ($cold): ${secs} s; resident: $((rss_kb / 1024)) MiB = $((rss_kb * 1024 / records)) bytes per key"
echo "start to serving (warm page cache): ${secs_warm} s; resident: $((rss_warm_kb / 1024)) MiB = $((rss_warm_kb * 1024 / records)) bytes per key"
echo "resident 5 s later: $((rss_settled_kb / 1024)) MiB = $((rss_settled_kb * 1024 / records)) bytes per key"
