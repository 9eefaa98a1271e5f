#!/usr/bin/env bash
# Benchmarks Monotable against Redis on this machine, in one run:
#   monotable (fsync always, its default) vs redis-server with appendonly yes +
#   appendfsync always, and vs redis-server without persistence.
# 50 clients; pipeline 1 and 16; 100-byte and 1 KiB values; random keys from a
# keyspace of 100,000. Prints a Markdown table with ratios.
#
#   deploy/bench.sh [REQUESTS]      (default 200000 per test)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-200000}"
CLIENTS=50
KEYSPACE=100000

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

start_monotable() { # port
    "$MT" serve --http-listen off --data-dir "$work/monotable" --listen "127.0.0.1:$1" --resp-listen off --log warn >"$work/monotable.log" 2>&1 &
    pids+=($!)
    wait_port "$1"
}

RA=$(free_port); start_redis redis-aof "$RA" --appendonly yes --appendfsync always
RN=$(free_port); start_redis redis-mem "$RN" --appendonly no
MP=$(free_port); start_monotable "$MP"

# rps and latency columns of one CSV row: "TEST","rps","avg","min","p50","p95","p99","max"
row() { grep "^\"$1\"" | head -1 | tr -d '"' | awk -F, '{printf "%.0f %.3f %.3f\n", $2, $5, $7}'; }

echo "| value | pipeline | op | monotable ops/s (p50/p99 ms) | redis appendfsync always | redis no persistence | vs always | vs no persistence |"
echo "|---|---|---|---|---|---|---|---|"
for size in 100 1024; do
    for pipeline in 1 16; do
        mt=$("$MT" bench --addr "127.0.0.1:$MP" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d $size -t put,get,scan --csv)
        ra=$(redis-benchmark -p "$RA" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d $size -t set,get --csv)
        rn=$(redis-benchmark -p "$RN" -c $CLIENTS -P $pipeline -n "$REQUESTS" -r $KEYSPACE -d $size -t set,get --csv)
        for op in PUT:SET GET:GET; do
            m=${op%%:*}; r=${op##*:}
            read -r m_rps m_p50 m_p99 <<<"$(row "$m" <<<"$mt")"
            read -r a_rps a_p50 a_p99 <<<"$(row "$r" <<<"$ra")"
            read -r n_rps n_p50 n_p99 <<<"$(row "$r" <<<"$rn")"
            awk -v s=$size -v p=$pipeline -v op="$m/$r" -v m=$m_rps -v mp="$m_p50/$m_p99" \
                -v a=$a_rps -v ap="$a_p50/$a_p99" -v n=$n_rps -v np="$n_p50/$n_p99" 'BEGIN {
                printf "| %d B | %d | %s | %d (%s) | %d (%s) | %d (%s) | %.2fx | %.2fx |\n", s, p, op, m, mp, a, ap, n, np, m/a, m/n }'
        done
        read -r s_rps s_p50 s_p99 <<<"$(row SCAN_RECORDS <<<"$mt")"
        read -r q_rps _ _ <<<"$(row SCAN <<<"$mt")"
        echo "| $size B | $pipeline | scan (100 records) | $q_rps scans/s = $s_rps records/s ($s_p50/$s_p99) | | | | |"
    done
done
