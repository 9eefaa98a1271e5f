#!/usr/bin/env bash
# Runs `monotable bench-views` against a fresh release node, then kills the
# node with SIGKILL, starts it again and reports how long its reducer takes
# to answer a fresh aggregate (restored from its meta-ranges, not rebuilt),
# with the shape of its reduce tree.
#
#   deploy/bench-views.sh [RECORDS] [CHUNK_SIZE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-100000}"
CHUNK="${2:-67108864}"
# shellcheck source=deploy/bench-node.sh
. deploy/bench-node.sh
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

start
"$MT" bench-views --addr "$addr" --records "$RECORDS" --chunk-size "$CHUNK" --keep
reducer="bv${RECORDS}_sum"
tree() {
    "$MT" views --addr "$addr" --json | python3 -c "
import sys, json
for v in map(json.loads, sys.stdin):
    if v['name'] == '$reducer':
        t = v['tree']
        print(f\"{t['levels']} levels, {t['chunks_in_memory']} of {t['chunks']} chunk trees in memory, saved at {t['saved']}\")"
}
echo "reduce tree before the kill: $(tree)"
sleep 1
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
t0=$(now)
start
serving=$(since "$t0")
"$MT" agg "$reducer" --fresh --timeout-ms 600000 --addr "$addr" >/dev/null
answered=$(since "$t0")
echo "after kill -9: serving in ${serving} s, fresh total answered in ${answered} s"
echo "reduce tree after the restart: $(tree)"
