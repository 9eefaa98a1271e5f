#!/usr/bin/env bash
# Sets 1,000,000 keys over RESP on a fresh node, then prints its resident
# memory, the time a restart takes to answer PING, and the resident memory
# after the restart.
#
#   deploy/bench-keys-memory.sh BINARY
#
# Needs redis-cli and python3; the node listens on loopback ports 17521
# (native) and 17522 (RESP) with a scratch data directory.
set -euo pipefail
B=$1
D=$(mktemp -d)
trap 'kill $(cat "$D/pid") 2>/dev/null || true; rm -rf "$D"' EXIT
start() {
    "$B" serve --http-listen off --data-dir "$D/data" --listen 127.0.0.1:17521 --resp-listen 127.0.0.1:17522 \
        >"$D/log" 2>&1 &
    echo $! >"$D/pid"
}
rss_mib() { echo $(($(awk '/VmRSS/{print $2}' "/proc/$(cat "$D/pid")/status") / 1024)); }
start
until redis-cli -p 17522 ping >/dev/null 2>&1; do sleep 0.05; done
python3 "$(dirname "$0")/resp-load.py" 17522 1000000 'SET key:{i:010d} v{i}'
echo "keys: $(redis-cli -p 17522 dbsize)"
echo "RSS after load: $(rss_mib) MiB"
kill "$(cat "$D/pid")"
while kill -0 "$(cat "$D/pid")" 2>/dev/null; do sleep 0.05; done
t0=$(date +%s.%N)
start
until redis-cli -p 17522 ping >/dev/null 2>&1; do sleep 0.05; done
t1=$(date +%s.%N)
echo "restart to PING: $(echo "$t1 - $t0" | bc) s"
echo "RSS after restart: $(rss_mib) MiB"
