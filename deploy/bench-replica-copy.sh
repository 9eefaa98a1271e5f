#!/usr/bin/env bash
# A new replica of a large data set, on loopback: Monotable's (a node that
# joins, and copies every chunk's log segments from their leader by segment
# reads, then replays the log after them) against Redis 7's replica full
# sync (diskless, repl-diskless-sync-delay 0), over the same data:
# RECORDS values of VALUE bytes (1,000,000 x 1 KiB: about 1 GB).
#
# For 1, 2 and 3 replicas joining at once it prints (Markdown) the time
# from their start until every one serves (Monotable: a voter of every
# chunk; Redis: master_link_status up and no sync in progress), and the
# CPU time the leader (Redis: the master) spent meanwhile, per GB copied.
#
#   deploy/bench-replica-copy.sh [RECORDS] [VALUE]     (defaults 1000000 and 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-1000000}"
VALUE="${2:-1024}"

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

# CPU seconds (user + system) process $1 has used.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
now() { date +%s.%N; }
gb() { python3 -c "print($RECORDS * $VALUE / 1e9)"; }

monotable_round() { # replicas
    local n=$1 base dir
    base=$(( $(free_port) % 20000 + 30000 ))
    dir="$work/mt$n"
    export MONOTABLE="$MT" DIR="$dir" BASE="$base" RESP_BASE=$((base + 100)) EXTRA="--log warn"
    deploy/local-cluster.sh 1 >/dev/null
    local a1="127.0.0.1:$((base + 1))" leader
    leader=$(cat "$dir/node-1.pid")
    pids+=("$leader")
    "$MT" range create big --replicas $((n + 1)) --addr "$a1" >/dev/null 2>&1
    "$MT" bench --addr "$a1" --range big --sequential -t put -n "$RECORDS" -r "$RECORDS" \
        -d "$VALUE" -c 16 -P 16 >/dev/null
    local cpu0 t0 t1 cpu1
    cpu0=$(cpu_secs "$leader")
    t0=$(now)
    deploy/local-cluster.sh $((n + 1)) >/dev/null 2>&1
    pids+=($(cat "$dir"/node-*.pid))
    # Every chunk of `big` has all n + 1 replicas as voters.
    until "$MT" range describe big --addr "$a1" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
want = int(sys.argv[1])
sys.exit(0 if all(len(c.get("voters") or []) == want and sorted(c["voters"]) == sorted(c["replicas"]) for c in d["chunks"]) else 1)
' $((n + 1)); do
        sleep 0.05
    done
    t1=$(now)
    cpu1=$(cpu_secs "$leader")
    local chunks
    chunks=$("$MT" range describe big --addr "$a1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["chunks"]))')
    deploy/local-cluster.sh stop >/dev/null
    python3 -c "print('$n', f'{$t1 - $t0:.2f}', f'{($cpu1 - $cpu0) / ($n * $(gb)):.3f}', '$chunks')"
}

redis_round() { # replicas
    local n=$1 mp
    mp=$(free_port)
    start_redis "rm$n" "$mp" --appendonly no --enable-debug-command yes --repl-diskless-sync yes \
        --repl-diskless-sync-delay 0 \
        --repl-diskless-sync-max-replicas 0
    local master=${pids[-1]}
    redis-cli -p "$mp" DEBUG POPULATE "$RECORDS" key "$VALUE" >/dev/null
    local size
    size=$(redis-cli -p "$mp" DBSIZE)
    [ "$size" = "$RECORDS" ] || { echo "Redis holds $size keys, not $RECORDS" >&2; exit 1; }
    local cpu0 t0 t1 cpu1 ports=()
    cpu0=$(cpu_secs "$master")
    t0=$(now)
    for i in $(seq 1 "$n"); do
        local rp
        rp=$(free_port)
        start_redis "rr$n-$i" "$rp" --appendonly no --replicaof 127.0.0.1 "$mp"
        ports+=("$rp")
    done
    for rp in "${ports[@]}"; do
        until redis-cli -p "$rp" INFO replication | tr -d '\r' |
            grep -q '^master_link_status:up' &&
            redis-cli -p "$rp" INFO replication | tr -d '\r' | grep -q '^master_sync_in_progress:0'; do
            sleep 0.05
        done
    done
    t1=$(now)
    cpu1=$(cpu_secs "$master")
    redis-cli -p "$mp" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for rp in "${ports[@]}"; do redis-cli -p "$rp" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
    python3 -c "print('$n', f'{$t1 - $t0:.2f}', f'{($cpu1 - $cpu0) / ($n * $(gb)):.3f}')"
}

echo "New replicas of $RECORDS values of $VALUE bytes ($(gb) GB), on loopback"
echo
echo "| replicas joining | Monotable: s until voters | Monotable leader CPU s per GB copied | chunks | Redis: s until synced | Redis master CPU s per GB copied | Redis / Monotable time |"
echo "|---|---|---|---|---|---|---|"
for n in 1 2 3; do
    read -r _ mt_s mt_cpu chunks < <(monotable_round "$n")
    read -r _ r_s r_cpu < <(redis_round "$n")
    ratio=$(python3 -c "print(f'{$r_s / $mt_s:.2f}x')")
    echo "| $n | $mt_s | $mt_cpu | $chunks | $r_s | $r_cpu | $ratio |"
done
