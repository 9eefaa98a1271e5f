#!/usr/bin/env bash
# Stream commands with redis-benchmark against Monotable's Redis endpoint
# and against redis-server, in one run on this machine: Monotable durable
# (fsync before every acknowledgement) vs Redis with appendfsync always,
# and Monotable with --fsync never vs Redis without persistence. 50
# clients, pipelines of 1 and 16, one stream: XADD, XADD with MAXLEN ~,
# XLEN, XRANGE of 10, XREVRANGE of 10, XREADGROUP of 1 (NOACK), and
# XREADGROUP with a PEL then XACK-free (the PEL grows). Prints a Markdown
# table with ratios.
#
#   deploy/bench-streams.sh [REQUESTS]      (default 100000 per test)
set -euo pipefail
# The commands hold `*`: no file name expansion.
set -f
cd "$(dirname "$0")/.."
REQUESTS="${1:-100000}"
CLIENTS=50

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

RA=$(free_port); start_redis redis-aof "$RA" --appendonly yes --appendfsync always
RN=$(free_port); start_redis redis-mem "$RN" --appendonly no
MD=$(free_port); resp_monotable mt-durable "$MD"
MN=$(free_port); resp_monotable mt-nofsync "$MN" --fsync never

TESTS=(
    "XADD s * f v"
    "XADD t MAXLEN ~ 10000 * f v"
    "XLEN s"
    "XRANGE s - + COUNT 10"
    "XREVRANGE s + - COUNT 10"
    "XREADGROUP GROUP g c NOACK COUNT 1 STREAMS s >"
    "XREADGROUP GROUP h c COUNT 1 STREAMS s >"
)

# One test on `port` with pipeline `p`: requests per second.
one() {
    local port=$1 p=$2 t=$3
    # shellcheck disable=SC2086
    redis-benchmark -p "$port" -c $CLIENTS -P "$p" -n "$REQUESTS" --csv $t 2>/dev/null |
        tail -n +2 | head -1 | awk -F'","' '{gsub(/"/, "", $2); printf "%.0f", $2}'
}

setup() { # port
    redis-cli -p "$1" FLUSHALL >/dev/null
    redis-cli -p "$1" XGROUP CREATE s g '$' MKSTREAM >/dev/null
    redis-cli -p "$1" XGROUP CREATE s h 0 >/dev/null
}

echo "| pipeline | command | monotable durable | redis appendfsync always | ratio | monotable --fsync never | redis no persistence | ratio |"
echo "|---|---|---|---|---|---|---|---|"
for pipeline in 1 16; do
    for port in "$MD" "$RA" "$MN" "$RN"; do setup "$port"; done
    for t in "${TESTS[@]}"; do
        a=$(one "$MD" $pipeline "$t"); b=$(one "$RA" $pipeline "$t")
        c=$(one "$MN" $pipeline "$t"); d=$(one "$RN" $pipeline "$t")
        awk -v p=$pipeline -v t="$t" -v a="$a" -v b="$b" -v c="$c" -v d="$d" 'BEGIN {
            printf "| %d | %s | %d | %d | %.2fx | %d | %d | %.2fx |\n", p, t, a, b, a/b, c, d, c/d }'
    done
done
