//! What a view answers while it is not quite fresh: stale answers are the
//! view at some cut (never half of a write), fresh ones are exact, a view
//! that is still backfilling says so, a restarted view answers at once, and
//! grouped answers page through every group.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use monotable_client::{
    tuple, AggregateReply, AggregateRequest, Batch, Client, Element, ErrorCode, MapFunction,
    RangeOptions,
};
use monotable_tests::{cli, msgpack, ok, runtime, Node};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

fn key(i: u64) -> Vec<u8> {
    tuple::encode(&[Element::Int(i128::from(i))]).expect("int key")
}

fn decode(bytes: &[u8]) -> Json {
    rmp_serde::from_slice(bytes).expect("a MessagePack reduction")
}

fn request(reducer: &str, group_level: Option<u32>, fresh: bool) -> AggregateRequest {
    AggregateRequest {
        reducer: reducer.into(),
        group_level,
        fresh,
        timeout_ms: 30_000,
        ..AggregateRequest::default()
    }
}

/// A total, or the sum of every group's value: the number a count or sum
/// over the whole view must have.
fn total(reply: &AggregateReply) -> i64 {
    match reply {
        AggregateReply::Total(v) => decode(v).as_i64().unwrap_or(0),
        AggregateReply::Groups { groups, .. } => {
            groups.iter().map(|(_, v)| decode(v).as_i64().expect("a number")).sum()
        }
    }
}

/// Waits until `reducer` answers without `--fresh` (its mapper backfilled,
/// its tree built).
async fn answering(c: &Client, reducer: &str) {
    for _ in 0..3_000 {
        match c.aggregate(request(reducer, None, false)).await {
            Ok(_) => return,
            Err(e) if e.code() == Some(ErrorCode::ViewLagging) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("aggregate failed: {e}"),
        }
    }
    panic!("{reducer} never answered");
}

const MOVERS: u64 = 500;
const GROUPS: u64 = 40;
const ACCOUNTS: u64 = 20;

/// Stale aggregates under concurrent writes always read a consistent cut:
/// 500 records that only move between groups always count 500 (in total
/// and over the groups of `group_level 1`), and transfers between accounts
/// that always hold 1000 in all always sum to 1000; fresh reads are exact.
///
/// Postmortem: a reducer over a mapper's target followed the node's stable
/// seq, which can fall inside a mapper round (a moved record's old row
/// deleted in one target chunk, its new row not yet written in another), so
/// stale reads saw 499 or 501; readers of a target now stop at the cut its
/// mapper publishes at the end of each complete round. And a chained
/// mapper's reducer answered (0) before the chain had caught up with the
/// first mapper's backfill: it now answers ViewLagging until then.
#[test]
fn stale_answers_are_consistent_cuts_under_concurrent_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let addr = node.addr;
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        // Small target chunks: a round's rows land in several chunks.
        let small = RangeOptions { chunk_size_max_bytes: 1024 };
        c.create_range("movers", RangeOptions::default()).await.expect("range");
        c.create_range("by_group", small).await.expect("target");
        c.create_range("accounts", RangeOptions::default()).await.expect("range");
        c.create_range("by_owner", small).await.expect("target");
        let mut batch = Batch::new();
        for i in 0..MOVERS {
            batch = batch.put(key(i), msgpack(&json!({"g": format!("g{:02}", i % GROUPS)})));
        }
        c.write("movers", batch).await.expect("load movers");
        let mut batch = Batch::new();
        for i in 0..ACCOUNTS {
            let doc = json!({"owner": format!("o{i:02}"), "amount": 1000 / ACCOUNTS});
            batch = batch.put(key(i), msgpack(&doc));
        }
        c.write_atomic("accounts", batch).await.expect("load accounts");
        let field = |k: &str, v: Option<&str>| MapFunction::Field {
            key_path: k.into(),
            value_path: v.map(Into::into),
        };
        c.create_mapper("group_of", "movers", "by_group", field("g", None)).await.expect("mapper");
        c.create_mapper("owner_of", "accounts", "by_owner", field("owner", Some("amount")))
            .await
            .expect("mapper");
        c.create_reducer("movers_count", "by_group", "count").await.expect("reducer");
        // A chain: a second mapper reads the first one's target.
        let chain = "function map(key, value) emit(key[1], 1) end";
        c.create_mapper(
            "regroup",
            "by_group",
            "by_group2",
            MapFunction::Lua { source: chain.into() },
        )
        .await
        .expect("chained mapper");
        c.create_reducer("chain_count", "by_group2", "count").await.expect("reducer");
        c.create_reducer("money", "by_owner", "sum").await.expect("reducer");
        answering(&c, "movers_count").await;
        answering(&c, "money").await;
        answering(&c, "chain_count").await;

        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(moves_and_transfers(addr, stop.clone(), 7));
        let bad = polls(&c, 400, false).await;
        stop.store(true, Ordering::Relaxed);
        writer.await.expect("writer");
        assert!(
            bad.is_empty(),
            "{} inconsistent answers: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        // kill -9 in the middle of the writes: after the restart, stale
        // answers are still cuts (or "lagging" while the views restore).
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(moves_and_transfers(addr, stop.clone(), 8));
        tokio::time::sleep(Duration::from_millis(300)).await;
        node.kill();
        stop.store(true, Ordering::Relaxed);
        writer.await.expect("writer");
        node.restart();
        let addr = node.addr;
        let c = Client::connect(addr).await.expect("connect");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(moves_and_transfers(addr, stop.clone(), 9));
        let bad = polls(&c, 200, true).await;
        stop.store(true, Ordering::Relaxed);
        writer.await.expect("writer");
        assert!(
            bad.is_empty(),
            "after kill -9: {} inconsistent: {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
        // Through the CLI too, once writes stopped: exact.
        let out = ok(cli(addr, &["agg", "money", "--fresh"]));
        assert_eq!(out.trim(), "1000");
    });
}

/// Moves random records between groups and transfers random amounts
/// between accounts (read, then written back in one atomic batch, so the
/// accounts always hold 1000 in all) until `stop`; errors (the node was
/// killed) end it.
async fn moves_and_transfers(addr: std::net::SocketAddr, stop: Arc<AtomicBool>, seed: u64) {
    let Ok(c) = Client::connect(addr).await else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let amount_of = |doc: Option<Vec<u8>>| -> i64 {
        let doc: Json = rmp_serde::from_slice(&doc.expect("an account")).expect("msgpack");
        doc["amount"].as_i64().expect("an amount")
    };
    while !stop.load(Ordering::Relaxed) {
        let i = rng.gen_range(0..MOVERS);
        let doc = msgpack(&json!({"g": format!("g{:02}", rng.gen_range(0..GROUPS))}));
        if c.put("movers", key(i), doc).await.is_err() {
            return;
        }
        let (a, b) = (rng.gen_range(0..ACCOUNTS), rng.gen_range(0..ACCOUNTS));
        if a == b {
            continue;
        }
        let (Ok(from), Ok(to)) = (c.get("accounts", key(a)).await, c.get("accounts", key(b)).await)
        else {
            return;
        };
        let (from, to) = (amount_of(from), amount_of(to));
        let amount = rng.gen_range(0..=from);
        let account =
            |i: u64, amount: i64| msgpack(&json!({"owner": format!("o{i:02}"), "amount": amount}));
        let batch = Batch::new()
            .put(key(a), account(a, from - amount))
            .put(key(b), account(b, to + amount));
        if c.write_atomic("accounts", batch).await.is_err() {
            return;
        }
    }
}

/// Polls every reducer of the consistency test, stale (alternately total
/// and grouped) with a fresh read now and then; returns what was wrong.
/// With `lagging_ok`, "view lagging" is an acceptable answer.
async fn polls(c: &Client, n: usize, lagging_ok: bool) -> Vec<String> {
    let mut bad = Vec::new();
    for poll in 0..n {
        let level = (poll % 2 == 1).then_some(1);
        for (reducer, want) in
            [("movers_count", MOVERS as i64), ("chain_count", MOVERS as i64), ("money", 1000)]
        {
            let fresh = poll % 5 == 0;
            match c.aggregate(request(reducer, level, fresh)).await {
                Ok(reply) if total(&reply) == want => {}
                Ok(reply) => bad.push(format!("poll {poll}: {reducer} read {}", total(&reply))),
                Err(e) if lagging_ok && e.code() == Some(ErrorCode::ViewLagging) => {}
                Err(e) => bad.push(format!("poll {poll}: {reducer} failed: {e}")),
            }
        }
    }
    bad
}

/// A Lua mapper slow enough that its backfill of a few thousand records
/// takes a while on any machine.
const SLOW_MAP: &str = "function map(key, value)
    local x = 0
    for i = 1, 20000 do x = x + i end
    emit(value.g, 1)
end";

/// While the mapper feeding a reducer backfills, a stale aggregate fails
/// with ViewLagging (never a partial count), `views` shows the reducer
/// building, a fresh one with `--timeout-ms 0` fails at once, and a fresh
/// one that waits answers the full count.
///
/// Postmortem: a reducer over a mapper's target only checked its own tree,
/// which was built (from the part of the target written so far), so stale
/// aggregates answered partial counts with exit 0 and `views` said "done";
/// and a timeout of 0 meant the 10 s default.
#[test]
fn a_backfill_in_progress_is_view_lagging() {
    const RECORDS: u64 = 4_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let addr = node.addr;
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        c.create_range("src", RangeOptions::default()).await.expect("range");
        let mut batch = Batch::new();
        for i in 0..RECORDS {
            batch = batch.put(key(i), msgpack(&json!({"g": format!("g{}", i % 7)})));
        }
        c.write("src", batch).await.expect("load");
        c.create_range("idx", RangeOptions::default()).await.expect("target");
        c.create_reducer("n", "idx", "count").await.expect("reducer");
        answering(&c, "n").await;
        c.create_mapper("slow", "src", "idx", MapFunction::Lua { source: SLOW_MAP.into() })
            .await
            .expect("mapper");
        let mut lagging = 0;
        let mut progress_shown = false;
        loop {
            match c.aggregate(request("n", None, false)).await {
                Ok(reply) => {
                    assert_eq!(total(&reply), RECORDS as i64, "a stale answer during backfill");
                    break;
                }
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::ViewLagging), "{e}");
                    lagging += 1;
                }
            }
            if lagging == 1 {
                // Not waiting: fails at once while the backfill runs.
                let o = cli(addr, &["agg", "n", "--fresh", "--timeout-ms", "0"]);
                if !o.status.success() {
                    let err = String::from_utf8_lossy(&o.stderr);
                    assert!(err.to_lowercase().contains("lagging"), "{err}");
                }
                let views = c.list_views().await.expect("views");
                let n = views.iter().find(|v| v.name == "n").expect("reducer listed");
                let slow = views.iter().find(|v| v.name == "slow").expect("mapper listed");
                if slow.backfill.is_some() {
                    assert!(n.backfill.is_some(), "reducer shown done during backfill: {n:?}");
                    progress_shown = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(lagging > 0 && progress_shown, "the backfill was never seen in progress");
        let fresh = ok(cli(addr, &["agg", "n", "--fresh", "--timeout-ms", "30000"]));
        assert_eq!(fresh.trim(), RECORDS.to_string());
    });
}

/// `--timeout-ms 0` on an up-to-date view answers at once (CLI, client and
/// RESP), and the default still waits for writes just made.
///
/// Postmortem: 0 was read as "use the default", so a client could not ask
/// for an answer only if the view was already fresh.
#[test]
fn timeout_zero_answers_an_up_to_date_view_without_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let addr = node.addr;
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        c.create_range("src", RangeOptions::default()).await.expect("range");
        for i in 0..50 {
            c.put("src", key(i), msgpack(&json!({"g": "a"}))).await.expect("put");
        }
        let field = MapFunction::Field { key_path: "g".into(), value_path: None };
        c.create_mapper("m", "src", "idx", field).await.expect("mapper");
        c.create_reducer("n", "idx", "count").await.expect("reducer");
        c.create_reducer("direct", "src", "count").await.expect("reducer");
        let wait = ok(cli(addr, &["agg", "n", "--fresh"]));
        assert_eq!(wait.trim(), "50");
        // Writes elsewhere move the node's seqs on; the views stay fresh.
        c.create_range("other", RangeOptions::default()).await.expect("range");
        for i in 0..20 {
            c.put("other", key(i), b"x").await.expect("put");
        }
        for reducer in ["n", "direct"] {
            let mut req = request(reducer, None, true);
            req.timeout_ms = 0;
            let mut answered = false;
            // A round may still be settling the last write: a few tries.
            for _ in 0..100 {
                match c.aggregate(req.clone()).await {
                    Ok(reply) => {
                        assert_eq!(total(&reply), 50);
                        answered = true;
                        break;
                    }
                    Err(e) if e.code() == Some(ErrorCode::ViewLagging) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(answered, "{reducer} never answered fresh with timeout 0 while idle");
            let out = ok(cli(addr, &["agg", reducer, "--fresh", "--timeout-ms", "0"]));
            assert_eq!(out.trim(), "50");
        }
        let mut r = redis::Client::open(format!("redis://{}/0", node.resp_addr).as_str())
            .expect("url")
            .get_connection()
            .expect("connect");
        let total: String = redis::cmd("MT.AGG")
            .arg("n")
            .arg("FRESH")
            .arg("TIMEOUT")
            .arg("0")
            .query(&mut r)
            .expect("MT.AGG");
        assert_eq!(total, "50");
    });
}

/// After a restart, a fresh aggregate on an up-to-date view answers within
/// a short timeout while other reducers restore.
///
/// Postmortem: reducers restored one after another on their view worker
/// (and mappers waited behind them), so a fresh query on one view waited
/// for every other view's restore and timed out.
#[test]
fn fresh_answers_soon_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("src", RangeOptions { chunk_size_max_bytes: 64 * 1024 })
            .await
            .expect("range");
        for start in (0..20_000u64).step_by(5_000) {
            let mut batch = Batch::new();
            for i in start..start + 5_000 {
                batch = batch.put(key(i), msgpack(&json!({"g": format!("g{}", i % 100), "v": i})));
            }
            c.write("src", batch).await.expect("load");
        }
        let field = MapFunction::Field { key_path: "g".into(), value_path: Some("v".into()) };
        c.create_mapper("m", "src", "idx", field).await.expect("mapper");
        for (name, f) in
            [("n", "count"), ("s", "sum"), ("lo", "min"), ("hi", "max"), ("st", "stats")]
        {
            c.create_reducer(name, "idx", f).await.expect("reducer");
            c.create_reducer(&format!("{name}_src"), "src", f).await.expect("reducer");
        }
        for name in ["n", "s", "lo", "hi", "st", "n_src"] {
            c.aggregate(request(name, None, true)).await.expect("fresh before restart");
        }
    });
    assert!(node.stop(), "clean stop");
    node.restart();
    let out = ok(cli(node.addr, &["agg", "n", "--fresh", "--timeout-ms", "5000"]));
    assert_eq!(out.trim(), "20000");
    let out = ok(cli(node.addr, &["agg", "s", "--fresh", "--timeout-ms", "5000"]));
    assert_eq!(out.trim(), (0..20_000u64).sum::<u64>().to_string());
    let out = ok(cli(node.addr, &["agg", "n_src", "--fresh", "--timeout-ms", "5000"]));
    assert_eq!(out.trim(), "20000");
}

const MANY: u64 = 25_000;

/// Every one of 25,000 groups comes back: through the CLI (all by default,
/// `--limit` an error naming it when more follow), the client's stream and
/// RESP `MT.AGG` with a cursor; one client reply is a page with a cursor,
/// and RESP without a cursor refuses to truncate.
///
/// Postmortem: grouped aggregates stopped at 10,000 groups and answered
/// them as if they were all, with exit 0.
#[test]
fn group_paging_returns_every_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let addr = node.addr;
    let want: BTreeMap<Vec<u8>, i64> = (0..MANY).map(|i| (key(i), 1)).collect();
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        c.create_range("many", RangeOptions::default()).await.expect("range");
        for start in (0..MANY).step_by(5_000) {
            let batch =
                (start..start + 5_000).fold(Batch::new(), |b, i| b.put(key(i), b"v".as_slice()));
            c.write("many", batch).await.expect("load");
        }
        c.create_reducer("per_key", "many", "count").await.expect("reducer");
        // One reply: a full page and a cursor.
        let first = c.aggregate(request("per_key", Some(1), true)).await.expect("agg");
        match &first {
            AggregateReply::Groups { groups, cursor } => {
                assert_eq!(groups.len(), 10_000);
                assert!(cursor.is_some(), "a page that is not the last has a cursor");
            }
            other => panic!("{other:?}"),
        }
        // The stream: every group once, in order.
        let mut stream = c.aggregate_groups(AggregateRequest {
            limit: 7_000,
            ..request("per_key", Some(1), true)
        });
        let mut got = BTreeMap::new();
        let mut last: Option<Vec<u8>> = None;
        while let Some(g) = stream.next().await {
            let (k, v) = g.expect("page");
            assert!(last.as_ref().is_none_or(|l| *l < k), "groups out of order");
            last = Some(k.clone());
            got.insert(k, decode(&v).as_i64().expect("count"));
        }
        assert_eq!(got, want);
    });
    // The CLI prints every group by default.
    let out = ok(cli(addr, &["agg", "per_key", "--group-level", "1", "--fresh"]));
    let lines: Vec<Json> =
        out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), MANY as usize);
    // A one-element tuple key prints as its element.
    assert_eq!(lines[0], json!({"key": 0, "value": 1}));
    assert_eq!(lines[MANY as usize - 1], json!({"key": MANY - 1, "value": 1}));
    // --limit: that many, then an error naming it.
    let o = cli(addr, &["agg", "per_key", "--group-level", "1", "--limit", "100"]);
    assert!(!o.status.success(), "more groups than --limit is an error");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 100);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--limit"), "{o:?}");
    let o = cli(addr, &["agg", "per_key", "--group-level", "1", "--limit", "25000"]);
    assert_eq!(ok(o).lines().count(), MANY as usize);
    // RESP: no cursor and too many groups is an error; with CURSOR, pages.
    let mut r = redis::Client::open(format!("redis://{}/0", node.resp_addr).as_str())
        .expect("url")
        .get_connection()
        .expect("connect");
    let err = redis::cmd("MT.AGG")
        .arg("per_key")
        .arg("GROUPLEVEL")
        .arg("1")
        .query::<Vec<String>>(&mut r)
        .expect_err("too many groups for one reply");
    assert!(err.to_string().contains("CURSOR"), "{err}");
    let mut cursor = "0".to_owned();
    let mut got = BTreeMap::new();
    let mut pages = 0;
    loop {
        let (next, groups): (String, Vec<String>) = redis::cmd("MT.AGG")
            .arg("per_key")
            .arg("GROUPLEVEL")
            .arg("1")
            .arg("CURSOR")
            .arg(&cursor)
            .arg("COUNT")
            .arg("9000")
            .query(&mut r)
            .expect("MT.AGG page");
        pages += 1;
        assert!(groups.len() <= 9_000);
        for g in groups {
            let g: Json = serde_json::from_str(&g).expect("json");
            let k = g["key"].as_u64().expect("an int key");
            assert!(got.insert(k, g["value"].as_i64().expect("count")).is_none(), "twice: {k}");
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(pages, 3);
    for (args, want) in [
        (&["GROUPLEVEL", "1", "CURSOR", "xyz"][..], "invalid cursor"),
        (&["CURSOR", "0"][..], "GROUPLEVEL"),
        (&["GROUPLEVEL", "1", "COUNT", "5"][..], "COUNT 5"),
    ] {
        let err = redis::cmd("MT.AGG")
            .arg("per_key")
            .arg(args)
            .query::<redis::Value>(&mut r)
            .expect_err("refused");
        assert!(err.to_string().contains(want), "{args:?}: {err}");
    }
    assert_eq!(got.len(), MANY as usize);
    assert!(got.values().all(|&n| n == 1));
}
