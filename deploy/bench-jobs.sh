#!/usr/bin/env bash
# Batch jobs (`monotable job run`), each against a peer in the same run on
# this machine. Prints Markdown tables.
#
# 1. A shuffle ten times the memory budget: RECORDS records with distinct
#    64-byte keys in random order, counted per key (--map-field k
#    --reduce-builtin count --memory-budget BUDGET): every record is one
#    intermediate record, spilled in sorted runs and merged. Peer: GNU sort
#    with -S BUDGET sorting the same intermediate records as text lines
#    ("KEY<TAB>1") from a file into a file.
#    The shuffle alone (`cargo bench --bench shuffle`: the same text file
#    counted per key through the job's ExtendedHashtable under BUDGET, two
#    tasks, written as text in key order) against the same sort.
#    Then a new mapper's backfill over the same records (`mapper create
#    --field k`: one index row per record) in bulk (a new target: map the
#    snapshot, sort under `--backfill-memory-max-bytes BUDGET`, load the
#    chunks in key order) and a batch at a time (a target that once held a
#    row: rounds of ordinary writes), against the job.
# 2. Word count over WC_RECORDS documents of 10 words (a Lua map emitting
#    each word, the built-in sum), from a range and from Redis into a Redis
#    hash. Peer: the same computation as a Python script over redis-py
#    (SCAN, pipelined GETs, collections.Counter, pipelined HSETs).
#
#   deploy/bench-jobs.sh [RECORDS] [BUDGET] [WC_RECORDS]
#       (default 10000000 100MiB 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${1:-10000000}"
BUDGET="${2:-100MiB}"
WC_RECORDS="${3:-1000000}"
PY="${PY:-/usr/bin/python3}"

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh
"$PY" -c 'import redis' 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-redis >/dev/null
}

now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }
budget_bytes=$("$PY" -c "
import re,sys
m=re.fullmatch(r'(\d+)(KiB|MiB|GiB)?', sys.argv[1]); n=int(m[1])
print(n*{None:1,'KiB':1<<10,'MiB':1<<20,'GiB':1<<30}[m[2]])" "$BUDGET")

node=$(free_port)
"$MT" serve --http-listen off --data-dir "$work/node" --listen "127.0.0.1:$node" --resp-listen off --log warn \
    --backfill-memory-max-bytes "$BUDGET" \
    >"$work/node.log" 2>&1 &
pids+=($!)
wait_port "$node"
export MONOTABLE_ADDR="127.0.0.1:$node"

# --- 1. shuffle ten times the budget, against GNU sort -S ---------------
"$PY" - "$RECORDS" "$work/keys.jsonl" "$work/keys.txt" <<'EOF'
import sys
n = int(sys.argv[1])
with open(sys.argv[2], "w") as j, open(sys.argv[3], "w") as t:
    for i in range(n):
        h = (i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        k = ("%016x" % h) * 4
        j.write('{"key":%d,"value":{"k":"%s"}}\n' % (i, k))
        t.write("%s\t1\n" % k)
EOF
"$MT" range create events >/dev/null
"$MT" load events "$work/keys.jsonl" >/dev/null
"$MT" range compact events >/dev/null
sync

mkdir -p "$work/sort-tmp"
# sort reads a bare -S number as KiB: the `b` suffix makes it bytes, so
# sort gets the job's budget and spills as the job does.
sort_time=$( { /usr/bin/time -f "%e %M" env LC_ALL=C sort -S "${budget_bytes}b" -T "$work/sort-tmp" \
    -o "$work/sorted.txt" "$work/keys.txt"; } 2>&1 | tail -1)
sort_secs=${sort_time% *}
sort_rss_mib=$(( ${sort_time#* } / 1024 ))
sort_mb=$(du -m "$work/keys.txt" | cut -f1)
rm -f "$work/sorted.txt"

start=$(now)
summary=$("$MT" job run shuffle --input range:events --output range:counts --map-field k \
    --reduce-builtin count --memory-budget "$BUDGET")
job_secs=$(calc "$(now) - $start")
echo "$summary" >&2
spilled=$(echo "$summary" | sed -nE 's/.*runs spilled \(([^)]*)\).*/\1/p')
peak=$(echo "$summary" | sed -nE 's/.*peak (.*) in memory.*/\1/p')

echo "| shuffle: $RECORDS records, budget $BUDGET | seconds | records/s | notes |"
echo "|---|---|---|---|"
printf "| monotable job run (range -> range, count per key) | %.1f | %.0f | spilled %s, peak %s in tables |\n" \
    "$job_secs" "$(calc "$RECORDS / $job_secs")" "$spilled" "$peak"
printf "| GNU sort -S %s (the same records as %s MB of text) | %.1f | %.0f | LC_ALL=C, file to file, peak RSS %s MiB |\n" \
    "$BUDGET" "$sort_mb" "$sort_secs" "$(calc "$RECORDS / $sort_secs")" "$sort_rss_mib"
printf "| ratio (monotable / sort, throughput) | | %.2fx | |\n" "$(calc "$sort_secs / $job_secs")"

# The shuffle alone, file to file, against the same sort.
shuffle_bin=$(cargo bench -p monotable-node --bench shuffle --no-run 2>&1 |
    sed -nE 's/.*Executable .*\((.*)\)/\1/p' | tail -1)
shuffle_time=$( { /usr/bin/time -f "%e %M" "$shuffle_bin" "$work/keys.txt" "$work/shuffled.txt" \
    "$budget_bytes" 2 "$work/sort-tmp"; } 2>&1)
echo "$shuffle_time" | head -1 >&2
shuffle_secs=$(echo "$shuffle_time" | tail -1 | cut -d' ' -f1)
shuffle_rss_mib=$(( $(echo "$shuffle_time" | tail -1 | cut -d' ' -f2) / 1024 ))
cmp -s <(cut -f1 "$work/shuffled.txt") <(LC_ALL=C sort -S "${budget_bytes}b" -T "$work/sort-tmp" "$work/keys.txt" | cut -f1) ||
    echo "the shuffle's keys differ from sort's" >&2
rm -f "$work/shuffled.txt"
printf "| the shuffle alone (ExtendedHashtable, 2 tasks, text file to text file) | %.1f | %.0f | peak RSS %s MiB |\n" \
    "$shuffle_secs" "$(calc "$RECORDS / $shuffle_secs")" "$shuffle_rss_mib"
printf "| ratio (shuffle alone / sort, throughput) | | %.2fx | |\n" "$(calc "$sort_secs / $shuffle_secs")"

# A mapper's backfill, timed until its status says done.
backfill() { # NAME TARGET
    local start
    start=$(now)
    "$MT" mapper create "$1" --source events --target "$2" --field k >/dev/null
    until "$MT" views --json | "$PY" -c "
import json, sys
v = [json.loads(l) for l in sys.stdin if json.loads(l)['name'] == '$1'][0]
sys.exit(0 if v['backfill'] is None and v['rows_written'] >= $RECORDS else 1)"; do sleep 0.2; done
    calc "$(now) - $start"
}
bulk_secs=$(backfill idx events_by_k)
"$MT" mapper drop idx >/dev/null
"$MT" range drop events_by_k >/dev/null
# A target that once held a row takes the batch path.
"$MT" range create used >/dev/null
"$MT" put used '"gone"' 1 >/dev/null
"$MT" del used '"gone"' >/dev/null
batch_secs=$(backfill idx2 used)
printf "| mapper create --field k: bulk backfill of %s index rows | %.1f | %.0f | map, sort, load chunks in order |\n" \
    "$RECORDS" "$bulk_secs" "$(calc "$RECORDS / $bulk_secs")"
printf "| mapper create --field k: batch backfill (target once written) | %.1f | %.0f | rounds of ordinary writes |\n" \
    "$batch_secs" "$(calc "$RECORDS / $batch_secs")"
printf "| ratio (bulk / batch backfill, throughput) | | %.2fx | |\n" "$(calc "$batch_secs / $bulk_secs")"
echo
"$MT" mapper drop idx2 >/dev/null
"$MT" range drop used >/dev/null
"$MT" range drop events >/dev/null
"$MT" range drop counts >/dev/null
rm -f "$work/keys.jsonl" "$work/keys.txt"

# --- 2. word count, against Python over redis-py -------------------------
redis_port=$(free_port)
start_redis wc "$redis_port" --databases 4
"$PY" - "$WC_RECORDS" "$work/docs.jsonl" "$redis_port" <<'EOF'
import json, random, sys, redis
n, path, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = random.Random(7)
words = ["w%d" % i for i in range(10000)]
weights = [1.0 / (i + 1) for i in range(len(words))]
r = redis.Redis(port=port)
pipe = r.pipeline(transaction=False)
with open(path, "w") as f:
    for i in range(n):
        text = " ".join(rng.choices(words, weights, k=10))
        doc = json.dumps({"text": text})
        f.write('{"key":%d,"value":%s}\n' % (i, doc))
        pipe.set("doc:%d" % i, doc)
        if i % 1000 == 999:
            pipe.execute()
pipe.execute()
EOF
"$MT" range create docs >/dev/null
"$MT" load docs "$work/docs.jsonl" >/dev/null
cat >"$work/words.lua" <<'EOF'
function map(key, doc)
  for w in string.gmatch(doc.text, "%S+") do emit(w, 1) end
end
EOF

wc_job() { # label input
    local start secs
    redis-cli -p "$redis_port" -n 1 del counts >/dev/null
    start=$(now)
    "$MT" job run "wc$RANDOM" --input "$2" --output "redis://127.0.0.1:$redis_port/1?hash=counts" \
        --map-lua "$work/words.lua" --reduce-builtin sum >"$work/wc.out"
    secs=$(calc "$(now) - $start")
    printf "| %s | %.1f | %.0f | %s words |\n" "$1" "$secs" "$(calc "$WC_RECORDS / $secs")" \
        "$(redis-cli -p "$redis_port" -n 1 hlen counts)"
}

echo "| word count: $WC_RECORDS documents of 10 words -> a Redis hash | seconds | records/s | result |"
echo "|---|---|---|---|"
wc_job "monotable job run, input range:docs" "range:docs"
wc_job "monotable job run, input redis://.../0?match=doc:*" "redis://127.0.0.1:$redis_port/0?match=doc:*"
redis-cli -p "$redis_port" -n 1 del counts >/dev/null
start=$(now)
"$PY" - "$redis_port" <<'EOF'
import collections, json, sys, redis
r = redis.Redis(port=int(sys.argv[1]))
counts = collections.Counter()
cursor = 0
while True:
    cursor, keys = r.scan(cursor, match="doc:*", count=1000)
    if keys:
        for v in r.mget(keys):
            if v is not None:
                counts.update(json.loads(v)["text"].split())
    if cursor == 0:
        break
out = redis.Redis(port=int(sys.argv[1]), db=1).pipeline(transaction=False)
for i, (w, n) in enumerate(counts.items()):
    out.hset("counts", w, n)
    if i % 1000 == 999:
        out.execute()
out.execute()
EOF
secs=$(calc "$(now) - $start")
printf "| Python 3 + redis-py (SCAN, MGET, Counter, HSET) | %.1f | %.0f | %s words |\n" "$secs" \
    "$(calc "$WC_RECORDS / $secs")" "$(redis-cli -p "$redis_port" -n 1 hlen counts)"
