#!/usr/bin/env bash
# Runs a cluster of N Monotable nodes on this machine, on loopback ports,
# each with its own data directory, for trying the cluster out and for
# tests.
#
#   deploy/local-cluster.sh N            start N nodes (default 3)
#   deploy/local-cluster.sh stop         stop them (SIGTERM, then wait)
#   deploy/local-cluster.sh status       `monotable cluster status` of node 1
#
# Node i listens on native port BASE+i and Redis port RESP_BASE+i (BASE
# 7070 and RESP_BASE 7379 by default, so node 1 is on 7071 and 7380); its
# data is in DIR/node-i (DIR: ./monotable-cluster), its log in
# DIR/node-i.log. Node 1 founds the cluster; the others join it. Running
# the script again on the same DIR restarts the nodes on their data: they
# rejoin by themselves.
#
# Environment: MONOTABLE (the binary; default: target/release/monotable,
# built if missing), DIR, BASE, RESP_BASE, and EXTRA (more `serve` flags,
# e.g. "--raft-heartbeat-ms 100 --raft-election-timeout-ms 500").
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${DIR:-./monotable-cluster}"
BASE="${BASE:-7070}"
RESP_BASE="${RESP_BASE:-7379}"
EXTRA="${EXTRA:-}"
MT="${MONOTABLE:-target/release/monotable}"

stop() {
    local pids=()
    for f in "$DIR"/node-*.pid; do
        [ -e "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if kill -TERM "$pid" 2>/dev/null; then
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    echo "stopped ${#pids[@]} node(s)"
}

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 30 s; see its log in $DIR" >&2
    return 1
}

case "${1:-3}" in
    stop)
        stop
        exit 0
        ;;
    status)
        exec "$MT" cluster status --addr "127.0.0.1:$((BASE + 1))"
        ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

N="$1"
if ! [[ "$N" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 N | stop | status   (N: how many nodes, at least 1)" >&2
    exit 2
fi
if [ ! -x "$MT" ]; then
    echo "building $MT ..." >&2
    cargo build --release --bin monotable >&2
fi
mkdir -p "$DIR"
for i in $(seq 1 "$N"); do
    if [ -e "$DIR/node-$i.pid" ] && kill -0 "$(cat "$DIR/node-$i.pid")" 2>/dev/null; then
        echo "node $i already runs (pid $(cat "$DIR/node-$i.pid")); '$0 stop' first" >&2
        exit 1
    fi
done
seed="127.0.0.1:$((BASE + 1))"
for i in $(seq 1 "$N"); do
    port=$((BASE + i))
    join=()
    if [ "$i" -gt 1 ]; then
        join=(--join "$seed")
    fi
    # shellcheck disable=SC2086
    "$MT" serve --data-dir "$DIR/node-$i" --listen "127.0.0.1:$port" \
        --resp-listen "127.0.0.1:$((RESP_BASE + i))" "${join[@]}" $EXTRA \
        >>"$DIR/node-$i.log" 2>&1 &
    echo $! >"$DIR/node-$i.pid"
    wait_port "$port"
done
# Joins finish in the background: wait until every node is a live member.
for _ in $(seq 1 600); do
    if "$MT" cluster status --json --addr "$seed" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if len(s["nodes"]) >= int(sys.argv[1]) and all(n["live"] for n in s["nodes"]) else 1)' "$N"; then
        break
    fi
    sleep 0.1
done
echo "started $N node(s):"
for i in $(seq 1 "$N"); do
    echo "  node $i: native 127.0.0.1:$((BASE + i)), Redis 127.0.0.1:$((RESP_BASE + i)), data $DIR/node-$i, log $DIR/node-$i.log"
done
echo "reach any of them, e.g.:"
echo "  $MT cluster status --addr $seed"
echo "  redis-cli -p $((RESP_BASE + 1))"
echo "stop them with: $0 stop"
