#!/usr/bin/env bash
# The node-level group commit, measured: durable puts (monotable bench,
# native protocol) into one chunk and into about 16 chunks, against Redis
# with appendfsync always, 50 connections, pipelines of 1 and 16, 100-byte
# and 1 KiB values, random keys from a keyspace of 100,000; then the p99 of
# durable puts while chunks compact and split, against the same load with
# no maintenance. Prints Markdown tables.
#
#   deploy/bench-durability.sh [REQUESTS]      (default 200000 per test)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-200000}"
CLIENTS=50
KEYSPACE=100000

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

MP=$(free_port)
"$MT" serve --http-listen off --data-dir "$work/monotable" --listen "127.0.0.1:$MP" --resp-listen off --log warn \
    >"$work/monotable.log" 2>&1 &
pids+=($!)
wait_port "$MP"
RA=$(free_port); start_redis redis-aof "$RA" --appendonly yes --appendfsync always

mt() { "$MT" "$@" --addr "127.0.0.1:$MP"; }
row() { grep "^\"$1\"" | head -1 | tr -d '"' | awk -F, '{printf "%.0f %.3f %.3f\n", $2, $5, $7}'; }
chunks() { mt range describe "$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["chunks"]))'; }

echo "### Durable puts: one chunk and about 16 chunks"
echo
echo "| value | pipeline | one chunk ops/s (p50/p99 ms) | 16 chunks ops/s (p50/p99 ms) | chunks | Redis appendfsync always | one chunk vs Redis | 16 chunks vs Redis | 16 vs one |"
echo "|---|---|---|---|---|---|---|---|---|"
for size in 100 1024; do
    # About 16 chunks once the keyspace is loaded: a chunk size of a
    # twelfth of the live data (splits halve a chunk once it passes it).
    live=$(( KEYSPACE * (size + 40) ))
    mt range create "one-$size" --chunk-size 4GiB >/dev/null
    mt range create "many-$size" --chunk-size $(( live / 12 )) >/dev/null
    for r in "one-$size" "many-$size"; do
        mt bench --range "$r" -c $CLIENTS -n $KEYSPACE -r $KEYSPACE -d "$size" -t put --sequential >/dev/null
    done
    n=$(chunks "many-$size")
    for pipeline in 1 16; do
        read -r o o50 o99 <<<"$(mt bench --range "one-$size" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d "$size" -t put --csv | row PUT)"
        read -r m m50 m99 <<<"$(mt bench --range "many-$size" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d "$size" -t put --csv | row PUT)"
        read -r a _ _ <<<"$(redis-benchmark -p "$RA" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d "$size" -t set --csv | row SET)"
        awk -v s="$size" -v p=$pipeline -v o="$o" -v op="$o50/$o99" -v m="$m" -v mp="$m50/$m99" -v n="$n" -v a="$a" 'BEGIN {
            printf "| %d B | %d | %d (%s) | %d (%s) | %d | %d | %.2fx | %.2fx | %.2fx |\n", s, p, o, op, m, mp, n, a, o/a, m/a, m/o }'
    done
done

echo
echo "### p99 of durable puts while chunks compact and split"
echo
echo "| load | no maintenance ops/s (p50/p99 ms) | with maintenance ops/s (p50/p99 ms) | p99 ratio |"
echo "|---|---|---|---|"
# Compaction: the same load on a loaded one-chunk range, once alone and
# once with `range compact` back to back beside it (a compaction every
# half second at most), for the 13 MB chunk of 100-byte values and the
# 100 MB chunk of 1 KiB values.
for size in 100 1024; do
    read -r q q50 q99 <<<"$(mt bench --range "one-$size" -c $CLIENTS -n "$REQUESTS" -r $KEYSPACE -d $size -t put --csv | row PUT)"
    ( while :; do mt range compact "one-$size" >/dev/null 2>&1 || true; sleep 0.5; done ) &
    compactor=$!
    read -r c c50 c99 <<<"$(mt bench --range "one-$size" -c $CLIENTS -n "$REQUESTS" -r $KEYSPACE -d $size -t put --csv | row PUT)"
    kill "$compactor"; wait "$compactor" 2>/dev/null || true
    awk -v s=$size -v q="$q" -v qp="$q50/$q99" -v c="$c" -v cp="$c50/$c99" -v a="$q99" -v b="$c99" 'BEGIN {
        printf "| %d B puts, the chunk compacting back to back | %d (%s) | %d (%s) | %.2fx |\n", s, q, qp, c, cp, b/a }'
done
# Splits: 1 KiB puts into a fresh range with 4 MiB chunks, which splits
# about 25 times under the load, against a range that does not split.
mt range create split-none --chunk-size 4GiB >/dev/null
mt range create split-4m --chunk-size 4MiB >/dev/null
read -r q q50 q99 <<<"$(mt bench --range split-none -c $CLIENTS -n $KEYSPACE -r $KEYSPACE -d 1024 -t put --sequential --csv | row PUT)"
read -r c c50 c99 <<<"$(mt bench --range split-4m -c $CLIENTS -n $KEYSPACE -r $KEYSPACE -d 1024 -t put --sequential --csv | row PUT)"
awk -v q="$q" -v qp="$q50/$q99" -v c="$c" -v cp="$c50/$c99" -v a="$q99" -v b="$c99" -v n="$(chunks split-4m)" 'BEGIN {
    printf "| 100,000 1 KiB puts into a new range: no split vs splits into %d chunks | %d (%s) | %d (%s) | %.2fx |\n", n, q, qp, c, cp, b/a }'
