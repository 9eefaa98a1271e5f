//! Rows over the key and value limits, sent through every path that writes
//! (RESP write commands, the native client and CLI, Redis import): each gets
//! a clear error, nothing of the refused command is written, and after a
//! kill -9 the node starts and every other key reads back as it was.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use monotable_proto::limits::{KEY_SIZE_MAX_BYTES, VALUE_SIZE_MAX_BYTES};
use monotable_tests::{cli, cli_with_stdin, ok, Node, Redis};

fn con(addr: SocketAddr) -> redis::Connection {
    con_db(addr, 0)
}

fn con_db(addr: SocketAddr, db: u32) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/{db}").as_str())
        .expect("url")
        .get_connection()
        .expect("connect")
}

fn run(c: &mut redis::Connection, args: &[&[u8]]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("name"));
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// What every key of database 0 holds, read with plain Redis commands.
fn dump(c: &mut redis::Connection) -> BTreeMap<Vec<u8>, String> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).expect("keys");
    keys.into_iter()
        .map(|k| {
            let kind: String = redis::cmd("TYPE").arg(&k).query(c).expect("type");
            let read: &[&[u8]] = match kind.as_str() {
                "string" => &[b"GET"],
                "hash" => &[b"HGETALL"],
                "list" => &[b"LRANGE", b"0", b"-1"],
                "set" => &[b"SMEMBERS"],
                "zset" => &[b"ZRANGE", b"0", b"-1", b"WITHSCORES"],
                other => panic!("unexpected type {other}"),
            };
            let mut args = vec![read[0], &k];
            args.extend_from_slice(&read[1..]);
            let v = run(c, &args).expect("read");
            (k, format!("{kind} {v:?}"))
        })
        .collect()
}

#[test]
fn oversized_rows_are_refused_on_every_path_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let mut c = con(node.resp_addr);

    // Phase 1: ordinary data of every type.
    for i in 0..20 {
        run(&mut c, &[b"SET", format!("s{i}").as_bytes(), format!("v{i}").as_bytes()])
            .expect("set");
    }
    run(&mut c, &[b"HSET", b"h", b"f", b"v"]).expect("hset");
    run(&mut c, &[b"RPUSH", b"l", b"a", b"b"]).expect("rpush");
    run(&mut c, &[b"SADD", b"set", b"m"]).expect("sadd");
    run(&mut c, &[b"ZADD", b"z", b"1", b"m"]).expect("zadd");
    let before = dump(&mut c);

    // Phase 2: every RESP write command with a key or value over the limits.
    let key = vec![b'k'; KEY_SIZE_MAX_BYTES + 1];
    let value = vec![b'v'; VALUE_SIZE_MAX_BYTES + 1];
    let tail = (VALUE_SIZE_MAX_BYTES - 4).to_string();
    let huge: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", b"new", &value],
        vec![b"SET", &key, b"v"],
        vec![b"SETNX", &key, b"v"],
        vec![b"SETEX", b"new", b"100", &value],
        vec![b"PSETEX", &key, b"100000", b"v"],
        vec![b"GETSET", b"s0", &value],
        vec![b"MSET", b"new", b"v", &key, b"v"],
        vec![b"MSET", b"new", b"v", b"new2", &value],
        vec![b"MSETNX", b"new", b"v", &key, b"v"],
        vec![b"APPEND", b"s1", &value],
        vec![b"SETRANGE", b"s2", tail.as_bytes(), b"0123456789"],
        vec![b"SETRANGE", b"s2", b"9223372036854775807", b"A"],
        vec![b"INCR", &key],
        vec![b"HSET", b"h", &key, b"v"],
        vec![b"HSET", b"h", b"g", b"v", b"f2", &value],
        vec![b"HSETNX", b"h", b"g", &value],
        vec![b"HINCRBY", &key, b"f", b"1"],
        vec![b"RPUSH", b"l", b"c", &value],
        vec![b"LPUSH", &key, b"c"],
        vec![b"RPUSHX", b"l", &value],
        vec![b"LSET", b"l", b"0", &value],
        vec![b"LINSERT", b"l", b"BEFORE", b"a", &value],
        vec![b"SADD", b"set", b"n", &key],
        vec![b"SADD", &key, b"n"],
        vec![b"ZADD", b"z", b"2", b"n", b"3", &key],
        vec![b"ZINCRBY", b"z", b"1", &key],
        vec![b"RENAME", b"s3", &key],
        vec![b"RENAMENX", b"s4", &key],
    ];
    for args in &huge {
        let name = String::from_utf8_lossy(args[0]);
        let reply = run(&mut c, args);
        assert!(reply.is_err(), "{name} over the limits was accepted: {reply:?}");
    }
    // The connection is still usable and nothing of the refused commands
    // was written, not even the part of MSET/HSET within the limits.
    assert_eq!(dump(&mut c), before, "refused commands changed the data");

    // Phase 3: the native client (CLI load) refuses a huge record with a
    // clear error.
    ok(cli(node.addr, &["range", "create", "docs"]));
    ok(cli_with_stdin(node.addr, &["load", "docs", "-"], Some(b"{\"key\":\"a\",\"value\":1}\n")));
    let line =
        format!("{{\"key\":\"b\",\"value\":\"{}\"}}\n", "x".repeat(VALUE_SIZE_MAX_BYTES + 1));
    let out = cli_with_stdin(node.addr, &["load", "docs", "-"], Some(line.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exceeds the limit"), "{stderr}");

    // Phase 4: an import skips keys over the limits, names them, and brings
    // the rest.
    let source = Redis::start();
    let mut src = con(source.addr);
    run(&mut src, &[b"SET", b"big", &value]).expect("set");
    run(&mut src, &[b"SET", &key, b"v"]).expect("set");
    run(&mut src, &[b"HSET", b"bighash", b"f", &value]).expect("hset");
    run(&mut src, &[b"SET", b"small", b"fits"]).expect("set");
    let out =
        ok(cli(node.addr, &["redis", "import", "--url", &source.url(0), "--range", "redis.1"]));
    assert!(out.contains("skipped 3 keys over the size limits"), "{out}");
    assert!(out.contains("imported 1 keys"), "{out}");

    // Phase 5: kill -9 and restart: the node starts and everything is back.
    node.kill();
    node.restart();
    let mut c = con(node.resp_addr);
    assert_eq!(dump(&mut c), before, "data changed across the restart");
    assert_eq!(ok(cli(node.addr, &["get", "docs", "a"])).trim(), "1");
    let imported = dump(&mut con_db(node.resp_addr, 1));
    assert_eq!(imported.keys().collect::<Vec<_>>(), [b"small"], "{imported:?}");
    for range in ["redis.0", "redis.1", "docs"] {
        let describe = ok(cli(node.addr, &["range", "describe", range]));
        let doc: serde_json::Value = serde_json::from_str(&describe).expect("JSON");
        let chunks = doc["chunks"].as_array().expect("chunks");
        assert!(chunks.iter().all(|c| c["unavailable"].is_null()), "{describe}");
    }
}

/// `load` of records that are each within the limits but whose batch would
/// not fit one frame loads them all.
///
/// Postmortem: the client sent a batch as one frame whatever its size, so
/// five 7 MiB values failed with FrameTooLarge and nothing was loaded.
#[test]
fn a_batch_larger_than_a_frame_is_written_in_parts() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    ok(cli(node.addr, &["range", "create", "big"]));
    let value = "v".repeat(7 << 20);
    let mut input = String::new();
    for i in 0..5 {
        input.push_str(&format!("{{\"key\":\"k{i}\",\"value\":\"{value}\"}}\n"));
    }
    ok(cli_with_stdin(node.addr, &["load", "big", "-"], Some(input.as_bytes())));
    let d: serde_json::Value =
        serde_json::from_str(&ok(cli(node.addr, &["range", "describe", "big"]))).expect("json");
    let records: u64 = d["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["records"].as_u64().expect("n"))
        .sum();
    assert_eq!(records, 5);
    assert!(node.stop());
}
