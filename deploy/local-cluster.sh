#!/usr/bin/env bash
# Runs a cluster of N Monotable nodes on this machine, on loopback ports,
# each with its own data directory, for trying the cluster out and for
# tests.
#
#   deploy/local-cluster.sh N            start those of nodes 1..N not running
#                                        (default N: 3)
#   deploy/local-cluster.sh start-node K start node K alone (e.g. one that was
#                                        killed), the others left as they are
#   deploy/local-cluster.sh stop         stop every node (SIGTERM, then wait)
#   deploy/local-cluster.sh status       `monotable cluster status` of a node
#                                        that runs
#
# Node i listens on native port BASE+i, Redis port RESP_BASE+i and HTTP
# port HTTP_BASE+i (/metrics; BASE 7070, RESP_BASE 7379 and HTTP_BASE 7180
# by default, so node 1 is on 7071, 7380 and 7181); its
# data is in DIR/node-i (DIR: ./monotable-cluster), its log in
# DIR/node-i.log, its pid in DIR/node-i.pid. Node 1 founds the cluster; the
# others join it. A node started again on its data rejoins by itself, so
# after a crash or a kill of some nodes, `deploy/local-cluster.sh N` (or
# `start-node K`) starts just those again, and waits until every node it
# started is a live member.
#
# Environment: MONOTABLE (the binary; default: target/release/monotable,
# built if missing), DIR, BASE, RESP_BASE, HTTP_BASE, and EXTRA (more `serve` flags,
# e.g. "--raft-heartbeat-ms 100 --raft-election-timeout-ms 500").
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${DIR:-./monotable-cluster}"
BASE="${BASE:-7070}"
RESP_BASE="${RESP_BASE:-7379}"
HTTP_BASE="${HTTP_BASE:-7180}"
EXTRA="${EXTRA:-}"
MT="${MONOTABLE:-target/release/monotable}"

# Whether process $1 runs. A process that exited but was not yet reaped (a
# zombie: the nodes' parent, this script, is gone, and a container's init
# may be slow to reap) counts as gone, or a killed node would seem to run.
alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z* ]]
}

stop() {
    local pids=()
    for f in "$DIR"/node-*.pid; do
        [ -e "$f" ] || continue
        local pid
        pid=$(cat "$f")
        if alive "$pid" && kill -TERM "$pid" 2>/dev/null; then
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    for pid in "${pids[@]}"; do
        while alive "$pid"; do sleep 0.1; done
    done
    echo "stopped ${#pids[@]} node(s)"
}

# Waits until something listens on port $1, for the node of pid $2 (which
# must not exit meanwhile: a node that failed to start is said at once,
# with the end of its log $3).
wait_port() {
    for _ in $(seq 1 300); do
        if ! alive "$2"; then
            echo "the node meant to listen on 127.0.0.1:$1 exited; the end of $3:" >&2
            tail -n 5 "$3" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 30 s; see its log in $DIR" >&2
    return 1
}

# Whether node $1 runs (its pid file names a live process).
running() {
    [ -e "$DIR/node-$1.pid" ] && alive "$(cat "$DIR/node-$1.pid")"
}

# The native address of a node that runs (node 1 if none does).
live_addr() {
    for f in "$DIR"/node-*.pid; do
        [ -e "$f" ] || continue
        local i="${f##*/node-}"
        i="${i%.pid}"
        if running "$i"; then
            echo "127.0.0.1:$((BASE + i))"
            return
        fi
    done
    echo "127.0.0.1:$((BASE + 1))"
}

# Starts node $1 on its data directory: node 1 founds the cluster (or, on
# its data, rejoins it), any other joins node 1 the first time and rejoins
# by itself after that (its --join then ignored).
start_node() {
    local i="$1" port=$((BASE + $1)) join=()
    if [ "$i" -gt 1 ]; then
        join=(--join "127.0.0.1:$((BASE + 1))")
    fi
    # shellcheck disable=SC2086
    "$MT" serve --data-dir "$DIR/node-$i" --listen "127.0.0.1:$port" \
        --resp-listen "127.0.0.1:$((RESP_BASE + i))" --http-listen "127.0.0.1:$((HTTP_BASE + i))" \
        "${join[@]}" $EXTRA \
        >>"$DIR/node-$i.log" 2>&1 &
    echo $! >"$DIR/node-$i.pid"
    wait_port "$port" "$!" "$DIR/node-$i.log"
}

# Waits until each node listed (by number) is a live member, as a node
# that runs sees it; gives up after a minute.
wait_live() {
    local ports=()
    for i in "$@"; do ports+=("$((BASE + i))"); done
    for _ in $(seq 1 600); do
        if "$MT" cluster status --json --addr "$(live_addr)" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
live = {int(n["addr"].rsplit(":", 1)[1]) for n in s["nodes"] if n["live"]}
sys.exit(0 if all(int(p) in live for p in sys.argv[1:]) else 1)' "${ports[@]}"; then
            return 0
        fi
        sleep 0.1
    done
    echo "not every node started is a live member after 60 s; see the logs in $DIR" >&2
    return 1
}

ensure_binary() {
    if [ ! -x "$MT" ]; then
        echo "building $MT ..." >&2
        cargo build --release --bin monotable >&2
    fi
    mkdir -p "$DIR"
}

# The cluster id of node $1 (ids follow the order in which nodes joined,
# not these numbers: `cluster remove` takes the id), or "?" if unknown.
cluster_id() {
    "$MT" cluster status --json --addr "$(live_addr)" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
ids = [n["id"] for n in s["nodes"] if n["addr"] == sys.argv[1]]
print(ids[0] if ids else "?")' "127.0.0.1:$((BASE + $1))" || echo "?"
}

describe() {
    echo "  node $1 (cluster id $(cluster_id "$1")): native 127.0.0.1:$((BASE + $1)), Redis 127.0.0.1:$((RESP_BASE + $1)), metrics http://127.0.0.1:$((HTTP_BASE + $1))/metrics, data $DIR/node-$1, log $DIR/node-$1.log"
}

usage() {
    echo "usage: $0 N | start-node K | stop | status   (N: how many nodes, K: which, from 1)" >&2
    exit 2
}

case "${1:-3}" in
    stop)
        stop
        exit 0
        ;;
    status)
        exec "$MT" cluster status --addr "$(live_addr)"
        ;;
    -h | --help)
        awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
        exit 0
        ;;
    start-node)
        K="${2:-}"
        [[ "$K" =~ ^[1-9][0-9]*$ ]] || usage
        ensure_binary
        if running "$K"; then
            echo "node $K already runs (pid $(cat "$DIR/node-$K.pid"))" >&2
            exit 1
        fi
        start_node "$K"
        wait_live "$K"
        echo "started node $K:"
        describe "$K"
        exit 0
        ;;
esac

N="${1:-3}"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || usage
ensure_binary
started=()
for i in $(seq 1 "$N"); do
    if running "$i"; then
        echo "node $i already runs (pid $(cat "$DIR/node-$i.pid")); left as it is" >&2
        continue
    fi
    start_node "$i"
    started+=("$i")
done
if [ "${#started[@]}" -eq 0 ]; then
    echo "all $N node(s) already run; '$0 stop' stops them"
    exit 0
fi
# Joins finish in the background: wait until every node is a live member.
wait_live $(seq 1 "$N")
echo "started ${#started[@]} node(s) (${started[*]}) of $N:"
for i in $(seq 1 "$N"); do
    describe "$i"
done
seed="127.0.0.1:$((BASE + 1))"
echo "reach any of them, e.g.:"
echo "  $MT cluster status --addr $seed"
echo "  redis-cli -p $((RESP_BASE + 1))"
echo "restart one that stopped with: $0 start-node K"
echo "stop them with: $0 stop"
