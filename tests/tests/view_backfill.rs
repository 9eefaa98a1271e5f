//! A new mapper's backfill in bulk (map the source at the mapper's first
//! checkpoint, sort through spilled runs, load the target's chunks in key
//! order, swap them in for its empty chunk): its rows equal those of the
//! backfill a batch at a time (forced by a target that once held a row)
//! and a from-scratch mapping, with writes under way, a reducer created
//! during it, hostile records and many spilled runs; and a kill -9 or a
//! drop in its middle leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use monotable_client::{row, tuple, Batch, Client, Element, MapFunction, RangeOptions};
use monotable_tests::{all_records, cli, ok, runtime, views_caught_up, Node};
use rand::{Rng, SeedableRng};

/// Small enough that tens of thousands of records spill dozens of runs.
const SERVE: &[&str] = &["--backfill-memory-max-bytes", "1MiB"];

/// Emits `{g}` -> n for records with a `g`, `{"tag", t}` -> 1 per tag;
/// fails on records marked bad; ignores values that are not maps.
const LUA_MAP: &str = r#"function map(k, v)
  if type(v) ~= "table" then return end
  if v.bad then error("bad record") end
  if v.g ~= nil then emit({v.g}, v.n) end
  if v.tags then for _, t in ipairs(v.tags) do emit({"tag", t}, 1) end end
end"#;

/// A JSON document as MessagePack, as a client would store it.
fn doc(j: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(j).expect("a document encodes")
}

/// Row keys of a field mapper on integer field `g`, from scratch.
fn g_rows(source: &BTreeMap<Vec<u8>, Vec<u8>>) -> BTreeSet<Vec<u8>> {
    source
        .iter()
        .filter_map(|(k, v)| {
            let doc: serde_json::Value = rmp_serde::from_slice(v).ok()?;
            let g = doc.get("g")?.as_i64()?;
            Some(row::encode_row(&[Element::Int(i128::from(g))], k, 0).expect("row"))
        })
        .collect()
}

/// A hostile source key: NULs, 0xFF, unicode, long keys, tuples.
fn hostile_key(rng: &mut rand::rngs::StdRng, i: u64) -> Vec<u8> {
    match i % 5 {
        0 => tuple::encode(&[Element::Int(i128::from(i))]).expect("key"),
        1 => format!("k\0{i}\0").into_bytes(),
        2 => format!("ключ-{i}-✓").into_bytes(),
        3 => {
            let mut k = vec![0xFF; rng.gen_range(1..600)];
            k.extend_from_slice(&i.to_be_bytes());
            k
        }
        _ => tuple::encode(&[Element::String(format!("s{i}")), Element::Int(-(i as i128))])
            .expect("key"),
    }
}

/// A hostile record: ints at the extremes, text where numbers go, bad
/// records, records that are not MessagePack, big values, no `g` at all.
fn hostile_value(rng: &mut rand::rngs::StdRng, i: u64) -> Vec<u8> {
    let g = match rng.gen_range(0..10) {
        0 => serde_json::json!(i64::MAX),
        1 => serde_json::json!(i64::MIN),
        _ => serde_json::json!(rng.gen_range(-50..50)),
    };
    match i % 97 {
        0 => b"\xc1 not messagepack".to_vec(),
        1 => doc(&serde_json::json!({"bad": true, "g": 1})),
        2 => doc(&serde_json::json!({"g": g, "pad": "p".repeat(40_000)})),
        3 => doc(&serde_json::json!({"other": i})),
        4 => doc(&serde_json::json!("a bare string")),
        _ => doc(&serde_json::json!({
            "g": g, "n": i, "tags": [format!("t{}", i % 13), "all"],
        })),
    }
}

async fn load(c: &Client, range: &str, records: &[(Vec<u8>, Vec<u8>)]) -> u64 {
    let mut seq = 0;
    for part in records.chunks(500) {
        let mut batch = Batch::new();
        for (k, v) in part {
            batch = batch.put(k.clone(), v.clone());
        }
        let tokens = c.write(range, batch).await.expect("load");
        seq = seq.max(tokens.iter().map(|t| t.seq).max().unwrap_or(0));
    }
    seq
}

/// A range that once held a row and holds none: a mapper into it
/// backfills a batch at a time (the bulk load needs a chunk that never
/// held anything).
async fn used_empty_range(c: &Client, name: &str) {
    c.create_range(name, RangeOptions { chunk_size_max_bytes: 64 * 1024 }).await.expect("range");
    c.put(name, b"gone", b"x").await.expect("put");
    c.delete(name, b"gone").await.expect("delete");
}

/// Every path under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn chunk_dirs(data: &Path) -> usize {
    std::fs::read_dir(data.join("chunks")).expect("chunks dir").count()
}

/// A count reducer's fresh total, through the CLI.
fn reducer_count(node: &Node, reducer: &str) -> u64 {
    let out = ok(cli(node.addr, &["agg", reducer, "--fresh", "--timeout-ms", "60000"]));
    out.trim().parse().expect("a count")
}

#[test]
fn bulk_backfills_equal_batch_backfills_and_a_from_scratch_mapping() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), SERVE);
    let rt = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let records: Vec<(Vec<u8>, Vec<u8>)> =
        (0..30_000).map(|i| (hostile_key(&mut rng, i), hostile_value(&mut rng, i))).collect();
    let bad = records
        .iter()
        .filter(|(_, v)| {
            v.starts_with(b"\xc1")
                || rmp_serde::from_slice::<serde_json::Value>(v)
                    .is_ok_and(|d| d.get("bad").is_some())
        })
        .count() as u64;
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("src", RangeOptions { chunk_size_max_bytes: 256 * 1024 })
            .await
            .expect("range");
        load(&c, "src", &records).await;
        used_empty_range(&c, "b_field").await;
        used_empty_range(&c, "b_lua").await;
        let field = || MapFunction::Field { key_path: "g".into(), value_path: Some("n".into()) };
        let lua = || MapFunction::Lua { source: LUA_MAP.into() };
        // Writes go on while the mappers backfill, on keys of their own.
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(3);
                let mut seq = 0;
                for _ in 0..40 {
                    let mut batch = Batch::new();
                    for _ in 0..50 {
                        let k = format!("w{:05}", rng.gen_range(0..800)).into_bytes();
                        batch = if rng.gen_bool(0.2) {
                            batch.delete(k)
                        } else {
                            let g = rng.gen_range(0..5);
                            batch.put(k, doc(&serde_json::json!({"g": g, "n": 1, "tags": ["w"]})))
                        };
                    }
                    let tokens = c.write("src", batch).await.expect("write");
                    seq = seq.max(tokens.iter().map(|t| t.seq).max().unwrap_or(0));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seq
            })
        };
        c.create_mapper("a_field", "src", "a_field", field()).await.expect("mapper");
        // Created while the rows are being loaded: it must find them all.
        c.create_reducer("a_field_n", "a_field", "count").await.expect("reducer");
        c.create_mapper("a_lua", "src", "a_lua", lua()).await.expect("mapper");
        c.create_reducer("a_lua_n", "a_lua", "count").await.expect("reducer");
        c.create_mapper("b_field", "src", "b_field", field()).await.expect("mapper");
        c.create_mapper("b_lua", "src", "b_lua", lua()).await.expect("mapper");
        let seq = writer.await.expect("writer");
        let views = ["a_field", "a_field_n", "a_lua", "a_lua_n", "b_field", "b_lua"];
        views_caught_up(&c, &views, seq, 300).await;
        let source = all_records(&c, "src").await;
        let a_field = all_records(&c, "a_field").await;
        assert_eq!(
            a_field.keys().cloned().collect::<BTreeSet<_>>(),
            g_rows(&source),
            "bulk rows = a from-scratch mapping"
        );
        assert!(a_field == all_records(&c, "b_field").await, "bulk rows = batch rows (field)");
        let a_lua = all_records(&c, "a_lua").await;
        assert!(a_lua == all_records(&c, "b_lua").await, "bulk rows = batch rows (Lua)");
        assert!(a_lua.len() > 50_000, "{} Lua rows", a_lua.len());
        assert_eq!(reducer_count(&node, "a_field_n"), a_field.len() as u64);
        assert_eq!(reducer_count(&node, "a_lua_n"), a_lua.len() as u64);
        let status = c.list_views().await.expect("views");
        let errors = |n: &str| status.iter().find(|v| v.name == n).expect("view").errors;
        assert_eq!(errors("a_lua"), bad, "each bad record counted once");
        assert_eq!(errors("a_lua"), errors("b_lua"));
        assert!(
            c.describe_range("a_lua").await.expect("range").chunks.len() > 4,
            "loaded into many chunks"
        );
    });
    for name in ["a_field", "a_lua"] {
        assert!(
            node.log_contains(&format!("backfill done in bulk mapper={name}")),
            "{name} not in bulk"
        );
    }
    for name in ["b_field", "b_lua"] {
        assert!(
            !node.log_contains(&format!("backfill done in bulk mapper={name}")),
            "{name} in bulk"
        );
    }
    assert!(node.log_contains("spills="), "runs were spilled");
    let left = walk(&dir.path().join("backfill"));
    assert!(left.is_empty(), "spilled runs left behind: {left:?}");
    // Durable, and followed after a restart.
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let before = all_records(&c, "b_lua").await;
        assert!(all_records(&c, "a_lua").await == before, "after a restart");
        let t = c
            .put("src", b"late", &doc(&serde_json::json!({"g": 7, "tags": ["late"]})))
            .await
            .expect("put");
        views_caught_up(&c, &["a_field", "a_lua", "b_lua"], t.seq, 60).await;
        let source = all_records(&c, "src").await;
        let a_field = all_records(&c, "a_field").await;
        assert_eq!(a_field.keys().cloned().collect::<BTreeSet<_>>(), g_rows(&source));
        assert!(all_records(&c, "a_lua").await == all_records(&c, "b_lua").await);
    });
}

#[test]
fn kill_9_or_a_drop_in_a_bulk_backfill_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_pinned(dir.path(), SERVE);
    let rt = runtime();
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..200_000u64)
        .map(|i| {
            let v = doc(&serde_json::json!({"g": i % 1000, "pad": "x".repeat(40)}));
            (format!("k{i:07}").into_bytes(), v)
        })
        .collect();
    // Waits until the backfill is past `share` of its progress (mapping
    // is the first half, loading the second); false if it ended first.
    let in_progress = |c: Client, name: &'static str, share: f64| async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let views = c.list_views().await.expect("views");
            let v = views.iter().find(|v| v.name == name).expect("the mapper");
            match v.backfill {
                Some((done, total)) if done > 0 && done as f64 > share * total as f64 => {
                    return true
                }
                None => return false,
                _ => {}
            }
            assert!(Instant::now() < deadline, "no progress: {v:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let field = || MapFunction::Field { key_path: "g".into(), value_path: None };
    let killed_mid_way = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("src", RangeOptions { chunk_size_max_bytes: 256 * 1024 })
            .await
            .expect("range");
        load(&c, "src", &records).await;
        c.create_mapper("m", "src", "idx", field()).await.expect("mapper");
        // Loading: the chunks it builds are on disk, not yet in the catalog.
        in_progress(c, "m", 0.6).await
    });
    node.kill();
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        views_caught_up(&c, &["m"], 0, 300).await;
        let source = all_records(&c, "src").await;
        let rows: BTreeSet<Vec<u8>> = all_records(&c, "idx").await.into_keys().collect();
        assert_eq!(rows.len(), 200_000);
        assert!(rows == g_rows(&source), "after kill -9 mid-backfill");
        // A drop in the middle stops it, and its target stays empty.
        c.create_mapper("m2", "src", "idx2", field()).await.expect("mapper");
        let dropped_mid_way = in_progress(c.clone(), "m2", 0.0).await;
        c.drop_mapper("m2").await.expect("drop");
        assert!(all_records(&c, "idx2").await.is_empty(), "rows of a dropped backfill");
        let chunks: usize =
            c.list_ranges().await.expect("ranges").iter().map(|r| r.chunks.len()).sum();
        // The node may be merging or removing a chunk just now: settle.
        let deadline = Instant::now() + Duration::from_secs(30);
        while chunk_dirs(dir.path()) != chunks {
            assert!(
                Instant::now() < deadline,
                "{} chunk dirs for {chunks} chunks",
                chunk_dirs(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<_> = walk(&dir.path().join("backfill"));
        assert!(left.is_empty(), "spilled runs left behind: {left:?}");
        // Postmortem: the chunks a kill -9 cut short were moved aside into
        // `orphaned/` at the restart, never removed.
        let aside = walk(&dir.path().join("orphaned"));
        let why: Vec<String> = node.log().into_iter().filter(|l| l.contains("aside")).collect();
        assert!(aside.is_empty(), "unfinished chunks kept: {aside:?}: {why:?}");
        eprintln!("killed mid-way: {killed_mid_way}; dropped mid-way: {dropped_mid_way}");
    });
    assert!(killed_mid_way, "the backfill ended before the kill: make it longer");
}

/// Postmortem: two `mapper create` at once both passed the target and
/// cycle checks before either was registered: two mappers shared a target
/// (dropping one cleared the other's rows) or fed each other (a mapper
/// stalled, showing `done`). And `range drop` right after `mapper drop`
/// failed with an i/o error on `DROPPED.tmp` while the emptied target's
/// chunks merged.
#[test]
fn concurrent_creates_cannot_share_a_target_or_make_a_cycle_and_drops_race_no_merge() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start_with(dir.path(), SERVE);
    let rt = runtime();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("src", RangeOptions { chunk_size_max_bytes: 16 * 1024 })
            .await
            .expect("range");
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u64)
            .map(|i| (format!("k{i:05}").into_bytes(), doc(&serde_json::json!({"g": i % 7}))))
            .collect();
        load(&c, "src", &records).await;
        let field = || MapFunction::Field { key_path: "g".into(), value_path: None };
        for i in 0..8 {
            let (target, na, nb) = (format!("t{i}"), format!("a{i}"), format!("b{i}"));
            let (a, b) = tokio::join!(
                c.create_mapper(&na, "src", &target, field()),
                c.create_mapper(&nb, "src", &target, field()),
            );
            assert!(a.is_ok() != b.is_ok(), "one mapper per target: {a:?} {b:?}");
            let err = a.err().or(b.err()).expect("one refused").to_string();
            assert!(
                err.contains("target of mapper") || err.contains("already holds rows"),
                "{err}"
            );
            let (x, y) = (format!("x{i}"), format!("y{i}"));
            c.create_range(&x, RangeOptions::default()).await.expect("range");
            c.create_range(&y, RangeOptions::default()).await.expect("range");
            let (nxy, nyx) = (format!("xy{i}"), format!("yx{i}"));
            let (a, b) = tokio::join!(
                c.create_mapper(&nxy, &x, &y, field()),
                c.create_mapper(&nyx, &y, &x, field()),
            );
            assert!(a.is_ok() != b.is_ok(), "no cycle: {a:?} {b:?}");
        }
        let names: Vec<String> = c
            .list_views()
            .await
            .expect("views")
            .into_iter()
            .filter(|v| v.target.starts_with('t'))
            .map(|v| v.name)
            .collect();
        assert_eq!(names.len(), 8, "{names:?}");
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        views_caught_up(&c, &refs, 0, 120).await;
        for name in &names {
            let target = c
                .list_views()
                .await
                .expect("views")
                .into_iter()
                .find(|v| &v.name == name)
                .expect("view")
                .target;
            assert!(c.describe_range(&target).await.expect("range").chunks.len() > 1);
            c.drop_mapper(name).await.expect("drop mapper");
            c.drop_range(&target).await.expect("range drop right after mapper drop");
        }
    });
}

/// Postmortem: a bulk backfill that failed (out of file descriptors, or
/// disk) was retried from scratch for ever, visible only in the status.
/// It now falls back to the batch backfill, with a warning in the log.
#[test]
fn a_failed_bulk_backfill_falls_back_to_batches_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    for bad in ["1KiB", "0", "18446744073709551615"] {
        let data = dir.path().join("refused");
        let err = monotable_tests::serve_exits(&data, &["--backfill-memory-max-bytes", bad])
            .expect("refused");
        assert!(err.contains("backfill-memory-max-bytes"), "{bad}: {err}");
    }
    let data = dir.path().join("node");
    let node = Node::start_with(&data, SERVE);
    // Runs cannot be spilled where a file stands in the way.
    std::fs::write(data.join("backfill"), b"in the way").expect("file");
    let rt = runtime();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("src", RangeOptions::default()).await.expect("range");
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u64)
            .map(|i| (format!("k{i:05}").into_bytes(), doc(&serde_json::json!({"g": i % 7}))))
            .collect();
        load(&c, "src", &records).await;
        let f = MapFunction::Field { key_path: "g".into(), value_path: None };
        c.create_mapper("m", "src", "idx", f).await.expect("mapper");
        views_caught_up(&c, &["m"], 0, 60).await;
        let source = all_records(&c, "src").await;
        let rows: BTreeSet<Vec<u8>> = all_records(&c, "idx").await.into_keys().collect();
        assert!(rows == g_rows(&source), "the batch backfill's rows");
    });
    assert!(node.log_contains("bulk backfill failed; backfilling a batch at a time"));
    assert!(!node.log_contains("backfill done in bulk"));
}
