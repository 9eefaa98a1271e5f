#!/usr/bin/env bash
# Replication, measured on loopback: durable puts and linearizable gets on a
# range with 3 replicas on 3 local nodes against the same load on one node
# (monotable bench, native protocol, 50 connections, 100-byte values), and
# against Redis with one replica and `WAIT 1 0` after every SET (the
# nearest Redis has to a majority acknowledgement; a Python asyncio client,
# 50 connections); then failover: kill -9 of the chunk's leader, and the
# time until a put to the chunk through another node succeeds, over KILLS
# kills with the default Raft timers (p50 and p99). Prints Markdown.
#
#   deploy/bench-cluster.sh [REQUESTS] [KILLS]     (defaults 50000 and 20; KILLS 0: no failover)
#
# Environment: LOG, the nodes' log filter (default warn; e.g.
# "info,openraft=info" to see every election), and KEEP_LOGS, a directory
# the nodes' logs are copied to at the end (the scratch directory is
# removed). Each kill's time goes to stderr as it is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-50000}"
KILLS="${2:-20}"
LOG="${LOG:-warn}"
KEEP_LOGS="${KEEP_LOGS:-}"

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

row() { grep "^\"$1\"" | head -1 | tr -d '"' | awk -F, '{printf "%.0f %.3f %.3f\n", $2, $5, $7}'; }
bench() { # addr pipeline
    "$MT" bench --addr "$1" -c 50 -P "$2" -n "$REQUESTS" -d 100 -r 100000 -t put,get --csv
}

# One node.
P1=$(free_port)
"$MT" serve --http-listen off --data-dir "$work/single" --listen "127.0.0.1:$P1" --resp-listen off --log warn \
    >"$work/single.log" 2>&1 &
pids+=($!)
wait_port "$P1"
single1=$(bench "127.0.0.1:$P1" 1)
single16=$(bench "127.0.0.1:$P1" 16)

# Three nodes, the bench range on all three.
base=$(( $(free_port) % 20000 + 30000 ))
export MONOTABLE="$MT" DIR="$work/cluster" BASE="$base" RESP_BASE=$((base + 100)) EXTRA="--log $LOG"
deploy/local-cluster.sh 3 >/dev/null
pids+=($(cat "$work"/cluster/node-*.pid))
A1="127.0.0.1:$((base + 1))"
for _ in $(seq 1 100); do
    "$MT" cluster status --json --addr "$A1" 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if len(s["nodes"])==3 and all(n["live"] for n in s["nodes"]) else 1)' &&
        break
    sleep 0.2
done
"$MT" range create bench --replicas 3 --addr "$A1" >/dev/null
cluster1=$(bench "$A1" 1)
cluster16=$(bench "$A1" 16)

# Redis with one replica, SET then WAIT 1 0.
RM=$(free_port); RR=$(free_port)
start_redis redis-master "$RM" --appendonly no
start_redis redis-replica "$RR" --appendonly no --replicaof 127.0.0.1 "$RM"
redis_wait=$(python3 - "$RM" "$REQUESTS" <<'EOF'
import asyncio, sys, time, random
import redis.asyncio as redis
port, n = int(sys.argv[1]), int(sys.argv[2])
async def main():
    r = redis.Redis(port=port, max_connections=50)
    while (await r.info("replication"))["connected_slaves"] < 1:
        await asyncio.sleep(0.1)
    value = b"x" * 100
    per = n // 50
    async def worker():
        async with r.client() as c:
            for _ in range(per):
                await c.set(f"key:{random.randrange(100000)}", value)
                await c.execute_command("WAIT", 1, 0)
    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(50)))
    print(f"{per * 50 / (time.perf_counter() - t):.0f}")
asyncio.run(main())
EOF
)

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
read -r s1 _ _ <<<"$(echo "$single1" | row PUT)"
read -r s16 _ _ <<<"$(echo "$single16" | row PUT)"
read -r c1 c1p50 c1p99 <<<"$(echo "$cluster1" | row PUT)"
read -r c16 _ _ <<<"$(echo "$cluster16" | row PUT)"
read -r g1 _ _ <<<"$(echo "$single1" | row GET)"
read -r cg1 cg1p50 cg1p99 <<<"$(echo "$cluster1" | row GET)"
echo "### Three replicas on three local nodes"
echo
echo "| load | one node ops/s | 3 nodes, 3 replicas ops/s (p50/p99 ms) | 3 replicas vs one node | Redis + 1 replica, SET + WAIT 1 | 3 replicas vs Redis |"
echo "|---|---|---|---|---|---|"
echo "| durable put, -P 1 | $s1 | $c1 ($c1p50/$c1p99) | $(ratio "$c1" "$s1") | $redis_wait | $(ratio "$c1" "$redis_wait") |"
echo "| durable put, -P 16 | $s16 | $c16 | $(ratio "$c16" "$s16") | | |"
echo "| linearizable get, -P 1 | $g1 | $cg1 ($cg1p50/$cg1p99) | $(ratio "$cg1" "$g1") | | |"
echo

# Failover: default Raft timers (elections after 3-6 s without a leader).
if [ "$KILLS" -eq 0 ]; then
    DIR="$work/cluster" deploy/local-cluster.sh stop >/dev/null
    exit 0
fi
echo "### Failover: kill -9 of the chunk's leader to the first put through another node"
echo
times=()
for k in $(seq 1 "$KILLS"); do
    # `leader` is the node's number in local-cluster.sh (its port less
    # BASE), not its cluster id: ids follow the order the joins finished in.
    # Postmortem: with node ids taken for those numbers, the "leader"
    # killed was sometimes a follower, or the put went to the dead node.
    read -r leader lid <<<"$("$MT" cluster status --json --addr "$A1" | python3 -c '
import json,sys
s=json.load(sys.stdin)
n=[n for n in s["nodes"] if n.get("chunk_leaders")==1][0]
print(int(n["addr"].rsplit(":",1)[1]) - int(sys.argv[1]), n["id"])' "$base")"
    other=$(( leader % 3 + 1 ))
    A1="127.0.0.1:$((base + other))"
    pid=$(cat "$work/cluster/node-$leader.pid")
    t0=$(date +%s.%N)
    kill -9 "$pid"
    until "$MT" put bench "k$k" 1 --addr "127.0.0.1:$((base + other))" >/dev/null 2>&1; do :; done
    t1=$(date +%s.%N)
    times+=("$(python3 -c "print(f'{($t1-$t0)*1000:.0f}')")")
    echo "kill $k: node $leader (id $lid) at $(date -u -d "@$t0" +%T.%N), put through node $other after ${times[-1]} ms" >&2
    # Restart it on its data and wait until all three are live again.
    "$MT" serve --http-listen off --data-dir "$work/cluster/node-$leader" --listen "127.0.0.1:$((base + leader))" \
        --resp-listen "127.0.0.1:$((base + 100 + leader))" --log "$LOG" >>"$work/cluster/node-$leader.log" 2>&1 &
    echo $! >"$work/cluster/node-$leader.pid"
    pids+=($!)
    wait_port $((base + leader))
    until "$MT" cluster status --json --addr "127.0.0.1:$((base + other))" 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if all(n["live"] for n in s["nodes"]) and any(n.get("chunk_leaders")==1 for n in s["nodes"]) else 1)'; do
        sleep 0.2
    done
done
printf '%s\n' "${times[@]}" | python3 -c '
import sys
t = sorted(int(x) for x in sys.stdin)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"| kills | p50 ms | p99 ms | min ms | max ms |\n|---|---|---|---|---|\n| {len(t)} | {p(0.5)} | {p(0.99)} | {t[0]} | {t[-1]} |")
print()
print("Every kill, ms, sorted: " + ", ".join(str(x) for x in t))'
DIR="$work/cluster" deploy/local-cluster.sh stop >/dev/null
if [ -n "$KEEP_LOGS" ]; then
    mkdir -p "$KEEP_LOGS"
    cp "$work"/cluster/node-*.log "$KEEP_LOGS"/
fi
