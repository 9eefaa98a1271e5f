//! Batches that span chunks and databases, applied whole: MULTI/EXEC over
//! keys in many chunks and in two databases against a real `redis-server`
//! 7.0; transactions cut by kill -9 that come back all or nothing; and a
//! batch the intent log holds at start completed before the node serves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monotable_proto::WriteOp;
use monotable_tests::show;
use monotable_tests::{cli, ok, Node, RawResp, Redis};

/// Postmortem: EXEC answered EXECABORT when its writes fell in more than
/// one chunk or database; they are now one batch recorded in the intent
/// log and applied under one seq in every chunk.
#[test]
fn exec_spanning_chunks_and_databases_applies_whole() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = monotable_tests::small_chunked_redis_node(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 30);
    let mut mono = RawResp::connect(node.resp_addr, 30);
    let mut same = |line: &str| {
        let want = redis.call_str(line);
        let got = mono.call_str(line);
        assert_eq!(show(&got), show(&want), "{line}");
    };
    for i in 0..1500 {
        same(&format!("SET key:{i:05} {}", "v".repeat(20)));
    }
    let described: serde_json::Value =
        serde_json::from_str(&ok(cli(node.addr, &["range", "describe", "redis.0"]))).expect("json");
    let chunks = described["chunks"].as_array().map_or(0, Vec::len);
    assert!(chunks > 5, "few chunks: {described}");
    same("MULTI");
    for i in (0..1500).step_by(97) {
        same(&format!("SET key:{i:05} changed"));
    }
    same("DEL key:00001 key:01499");
    same("SELECT 1");
    same("SADD other-db a b c");
    same("SELECT 0");
    same("INCR counter");
    same("EXEC");
    for line in
        ["GET key:00000", "GET key:01455", "EXISTS key:00001 key:01499", "DBSIZE", "GET counter"]
    {
        same(line);
    }
    same("SELECT 1");
    same("SCARD other-db");
    same("SMISMEMBER other-db a b c d");
}

/// Transactions that each set 40 keys spread over many chunks to one
/// generation, cut by kill -9 at a random moment: after the restart every
/// key holds the same generation, at least the last one acknowledged.
#[test]
fn kill_9_leaves_each_transaction_whole() {
    kill_9_rounds(true);
}

/// The same with MSET: a multi-key command is one batch too.
///
/// Postmortem: a command's rows in several chunks were written chunk by
/// chunk, so a crash in between left part of an MSET applied.
#[test]
fn kill_9_leaves_each_mset_whole() {
    kill_9_rounds(false);
}

fn kill_9_rounds(multi: bool) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = monotable_tests::small_chunked_redis_node(dir.path());
    let keys: Vec<String> = (0..40).map(|i| format!("g:{:05}", i * 53)).collect();
    {
        let mut c = RawResp::connect(node.resp_addr, 30);
        for i in 0..2200 {
            c.call_str(&format!("SET g:{i:05} 0"));
        }
    }
    for round in 0..3u64 {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop, keys, addr) =
                (acked.clone(), stop.clone(), keys.clone(), node.resp_addr);
            std::thread::spawn(move || {
                let mut c = RawResp::connect(addr, 5);
                let mut generation = 0u64;
                while !stop.load(Ordering::Acquire) {
                    generation += 1;
                    let value = generation.to_string();
                    if multi {
                        if !c.try_send(&[b"MULTI"]) {
                            return;
                        }
                        for k in &keys {
                            c.send(&[b"SET", k.as_bytes(), value.as_bytes()]);
                        }
                        c.send(&[b"EXEC"]);
                        // MULTI's +OK, one +QUEUED per SET, then EXEC's array.
                        for _ in 0..keys.len() + 1 {
                            if c.reply().is_none() {
                                return;
                            }
                        }
                    } else {
                        let mut args: Vec<&[u8]> = vec![b"MSET"];
                        for k in &keys {
                            args.extend([k.as_bytes(), value.as_bytes()]);
                        }
                        if !c.try_send(&args) {
                            return;
                        }
                    }
                    match c.reply() {
                        Some(r) if r.starts_with(b"*") || r.starts_with(b"+OK") => {
                            acked.store(generation, Ordering::Release)
                        }
                        _ => return,
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        node.kill();
        stop.store(true, Ordering::Release);
        let _ = writer.join();
        let acked = acked.load(Ordering::Acquire);
        assert!(acked > 0, "round {round}: no transaction was acknowledged");
        node.restart();
        let mut c = RawResp::connect(node.resp_addr, 30);
        let values: Vec<u64> = keys
            .iter()
            .map(|k| {
                let r = c.call(&[b"GET", k.as_bytes()]);
                let text = String::from_utf8_lossy(&r).to_string();
                text.split("\r\n").nth(1).expect("a value").parse().expect("a number")
            })
            .collect();
        assert!(
            values.iter().all(|v| *v == values[0]),
            "round {round}: torn transaction: {values:?}"
        );
        assert!(values[0] >= acked, "round {round}: acknowledged {acked}, found {}", values[0]);
    }
}

/// A batch the intent log holds when the node starts (its parts cut short
/// by a stop) is applied before the node serves, and only once.
#[test]
fn an_intent_found_at_start_is_completed() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    ok(cli(node.addr, &["range", "create", "r", "--chunk-size", "4KiB"]));
    for i in 0..300 {
        ok(cli(node.addr, &["put", "r", &format!("k{i:04}"), &format!("\"{}\"", "x".repeat(30))]));
    }
    assert!(node.stop());
    // One record as the node writes it: len u32 | crc32c u32 | body.
    let put = |k: &str, v: &str| WriteOp::Put {
        key: monotable_proto::tuple::encode(&[monotable_proto::tuple::Element::String(k.into())])
            .expect("key")
            .into(),
        value: rmp_serde::to_vec(&v).expect("value").into(),
    };
    let parts: Vec<(String, Vec<WriteOp>)> = vec![(
        "r".into(),
        vec![put("a-first", "from the intent"), put("z-last", "from the intent")],
    )];
    let body = rmp_serde::to_vec(&(1_000_000_000u64, parts)).expect("intent");
    let mut record = (body.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    record.extend_from_slice(&body);
    std::fs::write(dir.path().join("intents.log"), &record).expect("write the intent");
    node.restart();
    let out = ok(cli(node.addr, &["scan", "r"]));
    let found = out.lines().filter(|l| l.contains("from the intent")).count();
    assert_eq!(found, 2, "{out}");
    assert_eq!(std::fs::metadata(dir.path().join("intents.log")).expect("meta").len(), 0);
    // Writes after it get higher seqs; a second restart changes nothing.
    ok(cli(node.addr, &["put", "r", "a-first", "\"later\""]));
    node.restart();
    let out = ok(cli(node.addr, &["get", "r", "a-first"]));
    assert!(out.contains("later"), "{out}");
}

/// Postmortem: FLUSHDB and FLUSHALL inside MULTI or a script dropped the
/// stored keys but not the writes the transaction held back, which EXEC
/// then applied: keys survived the flush, and collections kept counts
/// without their members. And a flushed database came back with the
/// default chunk size instead of the one it was created with.
#[test]
fn a_flush_inside_a_transaction_takes_its_held_writes_too() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    // Scripts stopped at 10M instructions (seconds, not minutes): the
    // stopped script below has written, so SCRIPT KILL cannot stop it.
    let node = Node::start_with(dir.path(), &["--script-instructions-max", "10000000"]);
    ok(cli(node.addr, &["range", "create", "redis.0", "--chunk-size", "4KiB"]));
    let mut redis = RawResp::connect(redis_server.addr, 30);
    let mut mono = RawResp::connect(node.resp_addr, 30);
    let mut same = |args: &[&[u8]]| {
        let want = redis.call(args);
        let got = mono.call(args);
        assert_eq!(
            show(&got),
            show(&want),
            "{:?}",
            args.iter().map(|a| show(a)).collect::<Vec<_>>()
        );
    };
    let lines = [
        "MULTI",
        "SET c 3",
        "FLUSHDB",
        "GET c",
        "EXEC",
        "EXISTS c",
        "SADD s a b c",
        "MULTI",
        "SADD s d",
        "FLUSHDB",
        "EXEC",
        "SCARD s",
        "SADD s x",
        "SCARD s",
        "SPOP s",
        "EXISTS s",
        "RPUSH l x y",
        "MULTI",
        "RPUSH l z",
        "FLUSHALL",
        "RPUSH l q",
        "EXEC",
        "LRANGE l 0 -1",
        "LLEN l",
        "MULTI",
        "SELECT 1",
        "SET other 1",
        "SELECT 0",
        "FLUSHALL",
        "SET after 1",
        "EXEC",
        "DBSIZE",
        "SELECT 1",
        "DBSIZE",
        "SELECT 0",
    ];
    for line in lines {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        same(&words);
    }
    same(&[
        b"EVAL",
        b"redis.call('set', 'e', '1') redis.call('flushdb') return redis.call('get', 'e')",
        b"0",
    ]);
    same(&[b"EXISTS", b"e"]);
    // A script stopped by its budget applies nothing: its FLUSHDB neither.
    // Postmortem: the flush dropped the range at once, ahead of the
    // script's batch, so the stopped script had emptied the database.
    assert_eq!(mono.call_str("MSET keep1 1 keep2 2"), b"+OK\r\n");
    let stopped = mono.call(&[
        b"EVAL",
        b"redis.call('set', 'c', '3') redis.call('flushdb') redis.call('set', 'd', '4') while true do end",
        b"0",
    ]);
    assert!(show(&stopped).contains("none of its writes were applied"), "{}", show(&stopped));
    assert_eq!(
        mono.call_str("MGET keep1 keep2 c d"),
        b"*4\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n$-1\r\n"
    );
    let described: serde_json::Value =
        serde_json::from_str(&ok(cli(node.addr, &["range", "describe", "redis.0"]))).expect("json");
    assert_eq!(described["chunk_size"], 4096, "{described}");
}
