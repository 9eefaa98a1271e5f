#!/usr/bin/env bash
# redis-benchmark against Monotable's Redis endpoint and against
# redis-server, in one run on this machine: Monotable durable (its default,
# fsync before every acknowledgement) vs Redis with appendfsync always, and
# Monotable with --fsync never vs Redis without persistence. 50 clients,
# pipelines of 1 and 16, random keys from a keyspace of 100,000 (-r), the
# commands named below, or with --all redis-benchmark's whole default test
# list. Prints a Markdown table with ratios.
#
#   deploy/bench-resp.sh [--all] [REQUESTS]      (default 100000 per test)
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=no
if [ "${1:-}" = --all ]; then ALL=yes; shift; fi
REQUESTS="${1:-100000}"
CLIENTS=50
KEYSPACE=100000
TESTS=set,get,incr,hset,lpush,sadd,zadd

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

RA=$(free_port); start_redis redis-aof "$RA" --appendonly yes --appendfsync always
RN=$(free_port); start_redis redis-mem "$RN" --appendonly no
MD=$(free_port); resp_monotable mt-durable "$MD"
MN=$(free_port); resp_monotable mt-nofsync "$MN" --fsync never

bench() {
    if [ "$ALL" = yes ]; then
        redis-benchmark -p "$1" -c $CLIENTS -P "$2" -n "$REQUESTS" -r $KEYSPACE --csv 2>/dev/null
    else
        redis-benchmark -p "$1" -c $CLIENTS -P "$2" -n "$REQUESTS" -r $KEYSPACE -t $TESTS --csv 2>/dev/null
    fi
}
rps() { grep -F "\"$1\"," | head -1 | awk -F'","' '{gsub(/"/, "", $2); printf "%.0f", $2}'; }

echo "| pipeline | command | monotable durable | redis appendfsync always | ratio | monotable --fsync never | redis no persistence | ratio |"
echo "|---|---|---|---|---|---|---|---|"
for pipeline in 1 16; do
    md=$(bench "$MD" $pipeline); ra=$(bench "$RA" $pipeline)
    mn=$(bench "$MN" $pipeline); rn=$(bench "$RN" $pipeline)
    # The tests, as the first run names them.
    mapfile -t names < <(tail -n +2 <<<"$md" | cut -d'"' -f2)
    for t in "${names[@]}"; do
        a=$(rps "$t" <<<"$md"); b=$(rps "$t" <<<"$ra"); c=$(rps "$t" <<<"$mn"); d=$(rps "$t" <<<"$rn")
        awk -v p=$pipeline -v t="$t" -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN {
            printf "| %d | %s | %d | %d | %.2fx | %d | %d | %.2fx |\n", p, t, a, b, a/b, c, d, c/d }'
    done
done
