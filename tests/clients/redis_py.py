"""What redis-py does with a server, run against redis-server and Monotable:
pipelines, transactions with WATCH, scan_iter, Lock (its Lua scripts),
registered scripts after SCRIPT FLUSH, pub/sub, and an rq-style worker
loop on BRPOP fed by another client. Prints each server's observations as
one line; exits non-zero when they differ or a step fails.

Usage: python3 redis_py.py REDIS_PORT MONOTABLE_PORT
"""
import sys
import threading
import time

import redis


def observe(port):
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    seen = []
    r.flushall()

    # Pipelines, without and with a transaction.
    p = r.pipeline(transaction=False)
    for i in range(200):
        p.set(f"k{i}", i)
        p.incr("n")
    seen.append(p.execute()[-3:])
    with r.pipeline() as p:
        p.incr("n").lpush("l", b"a\x00b").lrange("l", 0, -1)
        seen.append(p.execute())

    # Optimistic locking: WATCH, then MULTI/EXEC, retried on WatchError.
    def bump(pipe):
        v = int(pipe.get("n"))
        pipe.multi()
        pipe.set("n", v + 10)

    r.transaction(bump, "n")
    seen.append(r.get("n"))

    # scan_iter visits every key once.
    seen.append(sorted(r.scan_iter(match="k1*", count=7)))
    seen.append(sorted(r.hscan_iter("nohash")))

    # Lock: acquire, refuse a second holder, extend, release (Lua scripts).
    lock = r.lock("resource", timeout=5)
    seen.append(lock.acquire(blocking=False))
    seen.append(r.lock("resource").acquire(blocking=False))
    seen.append(lock.extend(5))
    seen.append(lock.locked())
    lock.release()
    seen.append(r.exists("resource"))
    try:
        lock.release()
        seen.append("released twice")
    except redis.exceptions.LockError as e:
        seen.append(type(e).__name__)

    # A registered script runs by EVALSHA, and again after SCRIPT FLUSH.
    incr_by = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    seen.append(incr_by(keys=["c"], args=[5]))
    r.script_flush()
    seen.append(incr_by(keys=["c"], args=[7]))

    # Pub/sub.
    ps = r.pubsub()
    ps.subscribe("news")
    first = ps.get_message(timeout=5)
    seen.append((first["type"], first["channel"]))
    seen.append(r.publish("news", b"hello\x00world"))
    msg = None
    deadline = time.time() + 10
    while msg is None and time.time() < deadline:
        msg = ps.get_message(ignore_subscribe_messages=True, timeout=1)
    seen.append((msg["channel"], msg["data"]) if msg else None)
    ps.close()

    # An rq-style worker: BRPOP in a loop, jobs pushed by another client
    # while it waits.
    jobs = 40

    def produce():
        pr = redis.Redis(host="127.0.0.1", port=port)
        for i in range(jobs):
            pr.lpush("queue", f"job{i}")
            if i % 10 == 0:
                time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    done = []
    while len(done) < jobs:
        item = r.brpop(["other", "queue"], timeout=10)
        if item is None:
            break
        done.append(item)
    producer.join()
    seen.append(done)
    seen.append(r.brpop("queue", timeout=0.2))
    return seen


def main():
    redis_port, mono_port = int(sys.argv[1]), int(sys.argv[2])
    want = observe(redis_port)
    got = observe(mono_port)
    print("redis-server:", want)
    print("monotable:   ", got)
    for i, (w, g) in enumerate(zip(want, got)):
        if w != g:
            print(f"step {i} differs: redis-server {w!r}, monotable {g!r}")
            sys.exit(1)
    if len(want) != len(got):
        sys.exit(1)


if __name__ == "__main__":
    main()
