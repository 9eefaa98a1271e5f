//! Chunks that empty out merge with their neighbour: a queue-like Redis
//! workload (RPUSH at the tail, LPOP at the head; a stream trimmed by
//! MAXLEN) over 4 KiB chunks keeps its chunk count bounded, while the data
//! stays equal to a model (a VecDeque) through merges, a clean restart
//! and kill -9 in the middle of them; a view over a merged range stays
//! exact.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monotable_client::Client;
use monotable_tests::{cli, ok, runtime, show, Node, RawResp};

fn chunks(addr: SocketAddr, range: &str) -> Vec<(u64, u64)> {
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        let info = c.describe_range(range).await.expect("describe");
        info.chunks
            .iter()
            .map(|chunk| {
                assert_eq!(chunk.unavailable, None, "chunk {} is unavailable", chunk.id);
                (chunk.id, chunk.records)
            })
            .collect()
    })
}

/// Waits (up to 60 s) until `range` has at most `most` chunks.
fn wait_chunks_at_most(addr: SocketAddr, range: &str, most: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = chunks(addr, range).len();
        if n <= most || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn list(c: &mut RawResp, key: &str) -> Vec<String> {
    let reply = show(&c.call(&[b"LRANGE", key.as_bytes(), b"0", b"-1"]));
    reply
        .split("\\r\\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

/// Pushes and pops `n` elements, the list kept at about 40 (100-byte
/// elements: every 4 KiB chunk of list positions empties behind the head).
fn queue_round(c: &mut RawResp, model: &mut VecDeque<String>, next: &mut u64, n: u64) {
    for _ in 0..n {
        let v = format!("{:0>100}", *next);
        *next += 1;
        assert!(show(&c.call(&[b"RPUSH", b"q", v.as_bytes()])).starts_with(':'));
        model.push_back(v);
        if model.len() > 40 {
            let want = model.pop_front().expect("element");
            let got = show(&c.call(&[b"LPOP", b"q"]));
            assert_eq!(got, format!("$100\\r\\n{want}\\r\\n"));
        }
    }
}

#[test]
fn a_queue_leaves_no_trail_of_empty_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    ok(cli(node.addr, &["range", "create", "redis.0", "--chunk-size", "4KiB"]));
    let mut c = RawResp::connect(node.resp_addr, 10);
    let (mut model, mut next) = (VecDeque::new(), 0u64);
    queue_round(&mut c, &mut model, &mut next, 3000);
    // 3000 elements of 100 bytes went through about 75 chunks' worth of
    // positions; 40 are left, in two chunks or so.
    let n = wait_chunks_at_most(node.addr, "redis.0", 4);
    assert!(n <= 4, "{n} chunks left for 40 elements");
    assert_eq!(list(&mut c, "q"), Vec::from(model.clone()));
    assert!(node.log_contains("merged chunks"));
    // A clean restart finds the merged chunks; then more rounds with
    // kill -9 while merges run.
    assert!(node.stop());
    node.restart();
    let mut c = RawResp::connect(node.resp_addr, 10);
    assert_eq!(list(&mut c, "q"), Vec::from(model.clone()));
    for round in 0..4 {
        queue_round(&mut c, &mut model, &mut next, 400);
        // Right after the pops, while the trail merges (the timer runs
        // every 2 s; the kill falls somewhere in it).
        std::thread::sleep(Duration::from_millis(500 * round));
        node.kill();
        node.restart();
        c = RawResp::connect(node.resp_addr, 10);
        assert_eq!(list(&mut c, "q"), Vec::from(model.clone()), "after kill -9 round {round}");
        // Every chunk opened (none unavailable).
        chunks(node.addr, "redis.0");
    }
    let n = wait_chunks_at_most(node.addr, "redis.0", 4);
    assert!(n <= 4, "{n} chunks left after the kills");
    assert_eq!(list(&mut c, "q"), Vec::from(model));
    // No chunk error on the way (a refused merge, an unavailable chunk).
    let errors: Vec<String> =
        node.log().into_iter().filter(|l| l.contains("ERROR monotable_node")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// A stream trimmed by MAXLEN, and a mapper and reducer reading the range:
/// the view's rows and aggregate equal a recomputation after merges.
#[test]
fn merges_keep_views_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    ok(cli(node.addr, &["range", "create", "src", "--chunk-size", "4KiB"]));
    ok(cli(
        node.addr,
        &["mapper", "create", "by_g", "--source", "src", "--target", "ix", "--field", "g"],
    ));
    ok(cli(node.addr, &["reducer", "create", "n", "--range", "ix", "--builtin", "count"]));
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        // Keys move on: each round writes 50 new records and deletes the
        // 50 of two rounds before.
        for round in 0u64..60 {
            let mut batch = monotable_client::Batch::new();
            for i in 0..50u64 {
                let doc = serde_json::json!({ "g": (round * 50 + i) % 7, "pad": "x".repeat(60) });
                batch =
                    batch.put(format!("k{:08}", round * 50 + i), monotable_tests::msgpack(&doc));
                if round >= 2 {
                    batch = batch.delete(format!("k{:08}", (round - 2) * 50 + i));
                }
            }
            c.write("src", batch).await.expect("write");
        }
    });
    let n = wait_chunks_at_most(node.addr, "src", 8);
    assert!(n <= 8, "{n} chunks of src left for 100 records");
    monotable_tests::wait_views_idle(node.addr, 60);
    // 100 records left (rounds 58 and 59): the index holds one row each.
    let records: u64 = chunks(node.addr, "src").iter().map(|(_, r)| r).sum();
    assert_eq!(records, 100);
    let rows: u64 = chunks(node.addr, "ix").iter().map(|(_, r)| r).sum();
    assert_eq!(rows, 100);
    let out = ok(cli(node.addr, &["agg", "n", "--fresh"]));
    assert_eq!(out.trim(), "100");
}
