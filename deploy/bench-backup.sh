#!/usr/bin/env bash
# `monotable backup` and `monotable restore` against Redis's own copy and
# load, in one run, on the same data: N string keys of VALUE bytes written
# through each server's Redis endpoint (redis-cli --pipe).
#
#   deploy/bench-backup.sh [N] [VALUE_BYTES]     (default 1000000 and 100)
#
# - backup:  `monotable backup DIR` against `redis-cli --rdb FILE` (an RDB
#            copy taken over the replication protocol).
# - restore: `monotable restore DIR` into a fresh node (fsync always, its
#            default) against a redis-server started on the RDB file
#            (timed until it answers with every key loaded).
# Prints a Markdown table: seconds, records/s and bytes on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
VALUE="${2:-100}"

# shellcheck source=deploy/bench-peers.sh
. deploy/bench-peers.sh

python3 - "$N" "$VALUE" >"$work/load.resp" <<'EOF'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
value = b"v" * size
out = sys.stdout.buffer
for i in range(n):
    key = b"key:%010d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
EOF

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
rate() { python3 -c "print(f'{$N / ($2 - $1):,.0f}')"; }

RP=$(free_port); start_redis redis "$RP" --appendonly no
MP=$(free_port); NP=127.0.0.1:$(free_port)
"$MT" serve --http-listen off --data-dir "$work/mono" --listen "$NP" --resp-listen "127.0.0.1:$MP" --log warn \
    >"$work/mono.log" 2>&1 &
pids+=($!)
wait_port "$MP"
redis-cli -p "$RP" --pipe <"$work/load.resp" >/dev/null
redis-cli -p "$MP" --pipe <"$work/load.resp" >/dev/null
[ "$(redis-cli -p "$RP" DBSIZE)" = "$N" ] && [ "$(redis-cli -p "$MP" DBSIZE)" = "$N" ] ||
    { echo "the loads did not write $N keys" >&2; exit 1; }

# Backups.
t0=$(now); redis-cli -p "$RP" --rdb "$work/dump.rdb" >/dev/null 2>&1; t1=$(now)
rdb_backup=("$(elapsed "$t0" "$t1")" "$(rate "$t0" "$t1")" "$(stat -c %s "$work/dump.rdb")")
t0=$(now); "$MT" backup "$work/backup" --addr "$NP" 2>/dev/null; t1=$(now)
mt_backup=("$(elapsed "$t0" "$t1")" "$(rate "$t0" "$t1")" "$(du -sb "$work/backup" | cut -f1)")

# Restores into fresh servers.
mkdir -p "$work/redis2"; cp "$work/dump.rdb" "$work/redis2/dump.rdb"
RP2=$(free_port)
t0=$(now)
redis-server --port "$RP2" --bind 127.0.0.1 --dir "$work/redis2" --dbfilename dump.rdb --save '' \
    --appendonly no --daemonize no >"$work/redis2.log" 2>&1 &
pids+=($!)
until [ "$(redis-cli -p "$RP2" DBSIZE 2>/dev/null)" = "$N" ]; do sleep 0.01; done
t1=$(now)
rdb_restore=("$(elapsed "$t0" "$t1")" "$(rate "$t0" "$t1")")
NP2=$(free_port)
"$MT" serve --http-listen off --data-dir "$work/mono2" --listen "127.0.0.1:$NP2" --resp-listen off --log warn \
    >"$work/mono2.log" 2>&1 &
pids+=($!)
wait_port "$NP2"
t0=$(now); "$MT" restore "$work/backup" --addr "127.0.0.1:$NP2" 2>/dev/null; t1=$(now)
mt_restore=("$(elapsed "$t0" "$t1")" "$(rate "$t0" "$t1")")
[ "$("$MT" range list --addr "127.0.0.1:$NP2" | grep -c redis.0)" -ge 1 ] || { echo "restore made no redis.0" >&2; exit 1; }

echo "| $N keys of $VALUE B | Redis | Monotable | Monotable / Redis (speed) |"
echo "|---|---|---|---|"
echo "| backup: seconds (keys/s) | ${rdb_backup[0]} (${rdb_backup[1]}) | ${mt_backup[0]} (${mt_backup[1]}) | $(python3 -c "print(f'{${rdb_backup[0]} / ${mt_backup[0]}:.2f}x')") |"
echo "| backup size, bytes | ${rdb_backup[2]} | ${mt_backup[2]} | |"
echo "| restore: seconds (keys/s) | ${rdb_restore[0]} (${rdb_restore[1]}) | ${mt_restore[0]} (${mt_restore[1]}) | $(python3 -c "print(f'{${rdb_restore[0]} / ${mt_restore[0]}:.2f}x')") |"
