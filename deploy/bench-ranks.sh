#!/usr/bin/env bash
# Counts, positions and random picks over RESP (ZPOPMIN, SPOP, ZRANK,
# ZRANGE by index, ZCOUNT, SRANDMEMBER, DBSIZE): redis-benchmark against a
# server already listening on loopback port PORT (Monotable's RESP port or
# a redis-server). The server's data is flushed first.
#
#   deploy/bench-ranks.sh PORT
set -u
P=$1
rb() { redis-benchmark -p $P -q "$@" 2>&1 | tr '\r' '\n' | grep "per second" | tail -1; }
redis-cli -p $P flushall >/dev/null
redis-benchmark -p $P -q -n 20000 -r 100000 -c 50 -t zadd,zpopmin,sadd,spop 2>&1 | tr "\r" "\n" | grep "per second"
redis-cli -p $P flushall >/dev/null
# a sorted set and a set of 100,000 members
python3 - "$P" <<'PY'
import socket,sys
s=socket.create_connection(("127.0.0.1",int(sys.argv[1])))
def cmd(*a):
    out=b"*%d\r\n"%len(a)
    for x in a:
        x=x if isinstance(x,bytes) else str(x).encode()
        out+=b"$%d\r\n%s\r\n"%(len(x),x)
    return out
buf=b"".join(cmd("ZADD","big",i,"element:%012d"%i) for i in range(100000))
buf+=b"".join(cmd("SADD","bigset","element:%012d"%i) for i in range(100000))
s.sendall(buf)
n=0;data=b""
while n<200000:
    data+=s.recv(1<<20); n=data.count(b"\r\n")
PY
redis-cli -p $P zcard big; redis-cli -p $P scard bigset
echo "ZRANK"; rb -n 20000 -r 100000 -c 50 zrank big element:__rand_int__
echo "ZRANGE 50000 50009"; rb -n 20000 -c 50 zrange big 50000 50009
echo "ZCOUNT"; rb -n 20000 -c 50 zcount big 1000 90000
echo "SRANDMEMBER"; rb -n 20000 -c 50 srandmember bigset
echo "DBSIZE"; rb -n 20000 -c 50 dbsize
echo "SPOP on 100k"; rb -n 5000 -c 50 spop bigset
