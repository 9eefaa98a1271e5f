#!/usr/bin/env bash
# SCAN-family cursors over RESP against a server already listening on
# loopback port PORT (Monotable's RESP port or a redis-server), whose data
# is flushed first: 1,000,000 string keys and a hash of 100,000 fields are
# loaded, then a whole SCAN iteration (COUNT 1000) and a whole HSCAN
# (COUNT 100) are timed, resident memory (INFO's used_memory_rss) is read
# before and after the first iteration, and redis-benchmark runs single
# pages from random cursors.
#
#   deploy/bench-scan.sh PORT
set -eu
P=$1
D=$(dirname "$0")
rss_mib() { echo $(($(redis-cli -p "$P" info memory | tr -d '\r' | awk -F: '/^used_memory_rss:/{print $2}') / 1048576)); }
now() { date +%s.%N; }
redis-cli -p "$P" flushall >/dev/null
python3 "$D/resp-load.py" "$P" 1000000 'SET key:{i:010d} v{i}'
python3 "$D/resp-load.py" "$P" 100000 'HSET bighash field:{i:010d} {i}'
echo "keys: $(redis-cli -p "$P" dbsize), RSS after load: $(rss_mib) MiB"
# A whole iteration: prints the items returned (fields for HSCAN).
iterate() {
    python3 - "$P" "$@" <<'PY'
import socket, sys
port, count, head = int(sys.argv[1]), sys.argv[2].encode(), [a.encode() for a in sys.argv[3:]]
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def reply():
    line = f.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        return None if n < 0 else f.read(n + 2)[:-2]
    if line[:1] == b"*":
        return [reply() for _ in range(int(line[1:]))]
    sys.exit(line.decode())
def cmd(words):
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
cursor, total = b"0", 0
while True:
    s.sendall(cmd(head + [cursor, b"COUNT", count]))
    cursor, items = reply()
    total += len(items) // (2 if head[0] == b"HSCAN" else 1)
    if cursor == b"0":
        break
print(total)
PY
}
for round in first again; do
    t0=$(now)
    n=$(iterate 1000 SCAN)
    t1=$(now)
    echo "whole SCAN COUNT 1000, $round: $n keys in $(echo "$t1 - $t0" | bc) s; RSS after: $(rss_mib) MiB"
done
t0=$(now)
n=$(iterate 100 HSCAN bighash)
t1=$(now)
echo "whole HSCAN COUNT 100: $n fields in $(echo "$t1 - $t0" | bc) s"
for c in "scan __rand_int__ count 10" "hscan bighash __rand_int__ count 10"; do
    echo "$c: $(redis-benchmark -p "$P" -q -n 50000 -c 50 -r 1000000000000 $c 2>&1 | tr '\r' '\n' | grep 'per second' | tail -1)"
done
