#!/usr/bin/env bash
# Import from Redis: `monotable redis import` of KEYS strings of VALUE
# bytes (DEBUG POPULATE), then of KEYS/10 hashes of 10 fields, into a
# durable Monotable node; the peer is Redis copying the same database to a
# fresh replica (full sync: RDB over the network, loaded into memory), in
# the same run on this machine. Prints a Markdown table.
#
#   deploy/bench-import.sh [KEYS] [VALUE_BYTES]     (default 1000000 100)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-1000000}"
VALUE_BYTES="${2:-100}"

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }

# Seconds for a fresh replica of redis on port $1 to finish its full sync.
replica_sync() {
    local src=$1 port name
    port=$(free_port)
    name="replica-$port"
    local start; start=$(now)
    start_redis "$name" "$port" --replicaof 127.0.0.1 "$src"
    until redis-cli -p "$port" info replication | grep -q "master_link_status:up"; do sleep 0.01; done
    calc "$(now) - $start"
}

run() { # label populate-command...
    local label=$1; shift
    local src node
    src=$(free_port); start_redis "src-$src" "$src" --enable-debug-command local --repl-diskless-sync-delay 0
    "$@" "$src"
    local keys bytes
    keys=$(redis-cli -p "$src" dbsize)
    bytes=$(redis-cli -p "$src" info memory | awk -F: '/^used_memory_dataset:/{print $2}' | tr -d '\r')
    node=$(free_port)
    "$MT" serve --http-listen off --data-dir "$work/mt-$src" --listen "127.0.0.1:$node" --resp-listen off --log warn \
        >"$work/mt-$src.log" 2>&1 &
    pids+=($!)
    wait_port "$node"
    local summary
    summary=$("$MT" redis import --addr "127.0.0.1:$node" --url "redis://127.0.0.1:$src/0")
    local secs mt_kps mt_mbps
    secs=$(echo "$summary" | head -1 | sed -E 's/.* in ([0-9.]+) s:.*/\1/')
    mt_kps=$(echo "$summary" | head -1 | sed -E 's/.*: ([0-9]+) keys\/s.*/\1/')
    mt_mbps=$(echo "$summary" | head -1 | sed -E 's/.* ([0-9.]+) MB\/s.*/\1/')
    local rs
    rs=$(replica_sync "$src")
    printf "| %s | %s | %.1f s | %s | %s | %.1f s | %.0f | %.2fx |\n" "$label" "$keys" "$secs" "$mt_kps" "$mt_mbps" \
        "$rs" "$(calc "$keys / $rs")" "$(calc "$rs / $secs")"
    echo "  (Redis dataset memory: $bytes bytes; monotable: $(echo "$summary" | head -1))" >&2
}

populate_strings() { redis-cli -p "$1" debug populate "$KEYS" key "$VALUE_BYTES" >/dev/null; }
populate_hashes() {
    python3 - "$KEYS" "$VALUE_BYTES" <<'EOF' | redis-cli -p "$1" --pipe >/dev/null
import sys
keys, size = int(sys.argv[1]) // 10, int(sys.argv[2])
out = sys.stdout
def cmd(*args):
    out.write("*%d\r\n" % len(args))
    for a in args:
        out.write("$%d\r\n%s\r\n" % (len(a), a))
for i in range(keys):
    args = ["HSET", "hash:%d" % i]
    for f in range(10):
        args += ["field%d" % f, ("v%d" % i).ljust(size // 10, "x")]
    cmd(*args)
EOF
}

echo "| data | keys | monotable import | keys/s | MB/s | redis replica full sync | keys/s | ratio (time) |"
echo "|---|---|---|---|---|---|---|---|"
run "strings of ${VALUE_BYTES} B" populate_strings
run "hashes of 10 fields" populate_hashes
