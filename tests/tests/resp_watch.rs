//! WATCH against a real `redis-server` 7.0 (started here on a free
//! loopback port): for each case, one client sets keys up and WATCHes a
//! key, another runs a command, and whether the first client's EXEC runs
//! or aborts must be what Redis decides. Redis aborts EXEC only when a
//! command really modified the watched key (`signalModifiedKey`): no-op
//! writes, refused writes (WRONGTYPE) and writes of other keys leave it.

use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};

/// (setup, watched key, the other client's commands). Every setup starts
/// from two empty databases 0 and 1.
const CASES: &[(&str, &str, &str)] = &[
    // No-op writes.
    ("", "k", "DEL k"),
    ("", "k", "UNLINK k"),
    ("", "k", "GETDEL k"),
    ("SADD k a", "k", "SREM k zz"),
    ("SADD k a", "k", "SADD k a"),
    ("SET k v", "k", "SETNX k w"),
    ("SET k v", "k", "SET k w NX"),
    ("", "k", "SET k w XX"),
    ("SET k v", "k", "MSETNX other 1 k 2"),
    ("ZADD k 1 a", "k", "ZADD k 1 a"),
    ("ZADD k 1 a", "k", "ZADD k NX 5 a"),
    ("", "k", "ZADD k XX 1 a"),
    ("ZADD k 1 a", "k", "ZINCRBY k 0 a"),
    ("ZADD k 1 a", "k", "ZREM k zz"),
    ("ZADD k 1 a", "k", "ZREMRANGEBYSCORE k 5 9"),
    ("ZADD k 1 a", "k", "ZREMRANGEBYRANK k 5 9"),
    ("ZADD k 1 a", "k", "ZREMRANGEBYLEX k [x [z"),
    ("HSET k f v", "k", "HDEL k zz"),
    ("HSET k f v", "k", "HSETNX k f w"),
    ("RPUSH k a", "k", "LREM k 0 zz"),
    ("", "k", "LPUSHX k a"),
    ("", "k", "RPUSHX k a"),
    ("", "k", "LPOP k"),
    ("RPUSH k a b", "k", "LPOP k 0"),
    ("RPUSH k a b", "k", "RPOP k 0"),
    ("", "k", "SPOP k"),
    ("", "k", "ZPOPMIN k"),
    ("", "k", "RPOPLPUSH k k"),
    ("", "k", "LMOVE src k LEFT RIGHT"),
    ("", "k", "SMOVE src k a"),
    ("", "k", "EXPIRE k 100"),
    ("SET k v", "k", "PERSIST k"),
    ("SET k v EX 100", "k", "EXPIRE k 200 NX"),
    ("SET k v", "k", "GETEX k"),
    ("SET k v", "k", "GETEX k PERSIST"),
    // An empty value (words are split at single spaces).
    ("", "k", "SETRANGE k 0 "),
    ("", "k", "APPEND other x"),
    ("", "k", "SINTERSTORE k missing1 missing2"),
    ("", "k", "SUNIONSTORE k missing"),
    ("", "k", "ZUNIONSTORE k 1 missing"),
    ("", "k", "COPY missing k"),
    ("SET k v", "k", "COPY other k"),
    ("SET k v", "k", "RENAMENX other k"),
    ("SET k v\nSET other x", "k", "RENAMENX other k"),
    ("SELECT 1\nSET k v\nSELECT 0\nSET k v", "k", "MOVE k 1"),
    ("", "k", "FLUSHDB ASYNC"),
    ("", "k", "SELECT 1\nFLUSHDB"),
    ("SET k v", "k", "SELECT 1\nFLUSHDB"),
    ("SET k v", "k", "SELECT 1\nSET k w\nDEL k"),
    // FLUSHDB inside another client's MULTI, its held writes gone too.
    ("SET k v", "k", "MULTI\nSET k w\nFLUSHDB\nEXEC"),
    // Refused writes.
    ("SET k v", "k", "LPUSH k a"),
    ("SET k v", "k", "SADD k a"),
    ("SET k v", "k", "HSET k f v"),
    ("SET k v", "k", "ZADD k 1 a"),
    ("SET k v", "k", "INCR k"),
    ("SADD k a", "k", "INCR k"),
    ("SADD k a", "k", "APPEND k x"),
    ("SET k 1", "k", "INCRBY k notanumber"),
    ("", "k", "RENAME missing k"),
    ("RPUSH k a", "k", "LSET k 5 x"),
    // Writes of other keys.
    ("SET k v", "k", "SET other w"),
    ("SADD k a", "k", "SADD k2 a"),
    ("SET k v", "k", "DEL other"),
    // Real modifications: EXEC aborts.
    ("SET k v", "k", "SET k v"),
    ("HSET k f v", "k", "HSET k f v"),
    ("", "k", "SET k v"),
    ("SET k v", "k", "DEL k"),
    ("SADD k a", "k", "SREM k a"),
    ("SADD k a", "k", "SADD k b"),
    ("ZADD k 1 a", "k", "ZADD k 2 a"),
    ("ZADD k 1 a", "k", "ZINCRBY k 1 a"),
    ("RPUSH k a", "k", "LPOP k"),
    ("RPUSH k a b", "k", "LTRIM k 0 -1"),
    ("SET k v", "k", "EXPIRE k 100"),
    ("SET k v EX 100", "k", "PERSIST k"),
    ("SET k v", "k", "APPEND k x"),
    ("SET k 1", "k", "INCR k"),
    ("SET other x", "k", "RENAME other k"),
    ("SET k x", "k", "RENAME k other"),
    ("SET other x", "k", "COPY other k"),
    ("SADD src a", "k", "SMOVE src k a"),
    ("SADD src a", "k", "SUNIONSTORE k src"),
    ("SET k v", "k", "SUNIONSTORE k missing"),
    ("SET k v", "k", "MOVE k 1"),
    ("SET k v", "k", "FLUSHDB"),
    ("SET k v", "k", "FLUSHALL"),
    ("SET k v", "k", "SETRANGE k 0 v"),
    ("SET k 1", "k", "SETBIT k 0 0"),
    ("SET k v", "k", "GETEX k EX 100"),
    // Consumer-group commands change a stream's groups, not the key
    // (Redis signals only XGROUP CREATE ... MKSTREAM that creates it).
    (G, "k", "XREADGROUP GROUP g c STREAMS k >"),
    (G, "k", "XREADGROUP GROUP g c STREAMS k >\nXACK k g 1-1"),
    (G, "k", "XREADGROUP GROUP g c STREAMS k >\nXCLAIM k g c2 0 1-1"),
    (G, "k", "XREADGROUP GROUP g c STREAMS k >\nXAUTOCLAIM k g c2 0 0"),
    (G, "k", "XGROUP CREATECONSUMER k g c3"),
    (G, "k", "XGROUP CREATECONSUMER k g c3\nXGROUP DELCONSUMER k g c3"),
    (G, "k", "XGROUP SETID k g 0"),
    (G, "k", "XGROUP DESTROY k g"),
    (G, "k", "XGROUP CREATE k g2 $"),
    (G, "k", "XSETID k 5-0"),
    ("", "k", "XGROUP CREATE k g $ MKSTREAM"),
    (G, "k", "XGROUP CREATE k g2 $ MKSTREAM"),
    (G, "k", "XADD k 2-1 f v"),
];

/// A stream `k` with one entry and a group `g` reading from the start.
const G: &str = "XADD k 1-1 f v\nXGROUP CREATE k g 0";

/// Whether EXEC ran (true) or aborted, on the server at `addr`, for one
/// case.
fn exec_runs(addr: std::net::SocketAddr, (setup, watched, command): (&str, &str, &str)) -> bool {
    let mut a = RawResp::connect(addr, 10);
    let mut b = RawResp::connect(addr, 10);
    a.call_str("FLUSHALL");
    for line in setup.lines() {
        let reply = a.call_str(line);
        assert!(!reply.starts_with(b"-"), "setup {line}: {}", show(&reply));
    }
    a.call_str("SELECT 0");
    assert_eq!(a.call_str(&format!("WATCH {watched}")), b"+OK\r\n");
    for line in command.lines() {
        b.call_str(line);
    }
    assert_eq!(a.call_str("MULTI"), b"+OK\r\n");
    assert_eq!(a.call_str("PING"), b"+QUEUED\r\n");
    let reply = a.call_str("EXEC");
    match &reply[..] {
        b"*1\r\n+PONG\r\n" => true,
        b"*-1\r\n" => false,
        other => panic!("EXEC answered {}", show(other)),
    }
}

/// Postmortem: versions were kept per hash slot and moved when a command
/// locked a key to write it, so no-op writes (DEL of a missing key, SREM
/// of absent members, ZADD of an unchanged score), refused ones and
/// writes of other keys in the slot aborted EXEC; Redis aborts only when
/// the key was modified. Versions now move when a key's rows are written.
/// Postmortem: consumer-group commands wrote rows under the stream's key,
/// so XREADGROUP, XACK, XCLAIM, XGROUP and XSETID aborted EXEC; they now
/// write quietly (`Seen::Quiet`) unless XGROUP CREATE MKSTREAM creates it.
#[test]
fn exec_aborts_exactly_when_redis_does() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut wrong = Vec::new();
    for case in CASES {
        let want = exec_runs(redis.addr, *case);
        let got = exec_runs(node.resp_addr, *case);
        if want != got {
            wrong.push(format!("{case:?}: redis runs={want}, monotable runs={got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
}

/// A client's own write of a key it watches aborts its EXEC too, and a
/// connection closed while watching leaves nothing behind that could
/// abort another's.
#[test]
fn own_writes_abort_and_closed_watchers_are_forgotten() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for (addr, who) in [(redis.addr, "redis"), (node.resp_addr, "monotable")] {
        let mut a = RawResp::connect(addr, 10);
        a.call_str("FLUSHALL");
        assert_eq!(a.call_str("WATCH k"), b"+OK\r\n");
        assert_eq!(a.call_str("SET k 1"), b"+OK\r\n");
        assert_eq!(a.call_str("MULTI"), b"+OK\r\n");
        assert_eq!(a.call_str("PING"), b"+QUEUED\r\n");
        assert_eq!(a.call_str("EXEC"), b"*-1\r\n", "{who}: own write");
        for _ in 0..50 {
            let mut gone = RawResp::connect(addr, 10);
            assert_eq!(gone.call_str("WATCH k other"), b"+OK\r\n");
        }
        assert_eq!(a.call_str("WATCH k"), b"+OK\r\n");
        assert_eq!(a.call_str("MULTI"), b"+OK\r\n");
        assert_eq!(a.call_str("PING"), b"+QUEUED\r\n");
        assert_eq!(a.call_str("EXEC"), b"*1\r\n+PONG\r\n", "{who}");
    }
}
