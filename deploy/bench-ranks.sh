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
python3 "$(dirname "$0")/resp-load.py" "$P" 100000 'ZADD big {i} element:{i:012d}' 'SADD bigset element:{i:012d}'
redis-cli -p $P zcard big; redis-cli -p $P scard bigset
echo "ZRANK"; rb -n 20000 -r 100000 -c 50 zrank big element:__rand_int__
echo "ZRANGE 50000 50009"; rb -n 20000 -c 50 zrange big 50000 50009
echo "ZCOUNT"; rb -n 20000 -c 50 zcount big 1000 90000
echo "SRANDMEMBER"; rb -n 20000 -c 50 srandmember bigset
echo "DBSIZE"; rb -n 20000 -c 50 dbsize
echo "SPOP on 100k"; rb -n 5000 -c 50 spop bigset
