//! Live mappers against an oracle that recomputes the index from scratch:
//! backfill of existing data, random updates and deletes, a function error,
//! and kill -9 in the middle of a write load followed by a restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use monotable_client::{row, tuple, Client, Element, MapFunction, RangeOptions, Scan};
use monotable_tests::{msgpack, runtime, Node};
use rand::{Rng, SeedableRng};

const SOURCE: &str = "people";
const TARGET: &str = "people_by_city";

fn key(i: u64) -> Vec<u8> {
    tuple::encode(&[Element::Int(i128::from(i))]).expect("int key")
}

fn record(city: Option<&str>, age: u64) -> Vec<u8> {
    let doc = match city {
        Some(c) => serde_json::json!({"city": c, "age": age}),
        None => serde_json::json!({"name": "no city", "age": age}),
    };
    msgpack(&doc)
}

/// The index the mapper must hold for `source`: recomputed from scratch.
fn oracle(source: &BTreeMap<u64, (Option<String>, u64)>) -> BTreeMap<Vec<u8>, u64> {
    source
        .iter()
        .filter_map(|(k, (city, age))| {
            let city = city.as_ref()?;
            let row = row::encode_row(&[Element::String(city.clone())], &key(*k), 0).expect("row");
            Some((row, *age))
        })
        .collect()
}

fn decode_age(value: &[u8]) -> u64 {
    let mut rest = value;
    rmp::decode::read_int(&mut rest).expect("an integer value")
}

async fn target_rows(c: &Client) -> BTreeMap<Vec<u8>, u64> {
    let mut stream = c.scan_stream(TARGET, Scan::all());
    let mut out = BTreeMap::new();
    while let Some(r) = stream.next().await {
        let r = r.expect("scan target");
        out.insert(r.key, decode_age(&r.value));
    }
    out
}

/// Waits until the mapper has reflected every source write up to `seq`.
async fn caught_up(c: &Client, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views = c.list_views().await.expect("views");
        let v = views.iter().find(|v| v.name == "by_city").expect("mapper listed");
        if v.backfill.is_none() && v.watermark >= seq {
            return;
        }
        assert!(Instant::now() < deadline, "mapper stuck: {v:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CITIES: [&str; 5] = ["lyon", "paris", "nice", "lille", "brest"];

async fn random_writes(
    c: &Client,
    rng: &mut rand::rngs::StdRng,
    model: &mut BTreeMap<u64, (Option<String>, u64)>,
    n: usize,
) -> u64 {
    let mut last_seq = 0;
    for _ in 0..n {
        let k = rng.gen_range(0..600u64);
        let token = if rng.gen_bool(0.2) {
            model.remove(&k);
            c.delete(SOURCE, key(k)).await.expect("delete")
        } else {
            let city =
                (!rng.gen_bool(0.1)).then(|| CITIES[rng.gen_range(0..CITIES.len())].to_owned());
            let age = rng.gen_range(0..100);
            model.insert(k, (city.clone(), age));
            c.put(SOURCE, key(k), record(city.as_deref(), age)).await.expect("put")
        };
        last_seq = last_seq.max(token.seq);
    }
    last_seq
}

#[test]
fn mapper_matches_a_from_scratch_oracle_through_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let rt = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model = BTreeMap::new();

    // Phase 1: data first, then the mapper, which backfills it.
    let (rows_written, bad) = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range(SOURCE, RangeOptions { chunk_size_max_bytes: 2048 }).await.expect("create");
        random_writes(&c, &mut rng, &mut model, 300).await;
        let f = MapFunction::Field { key_path: "city".into(), value_path: Some("age".into()) };
        c.create_mapper("by_city", SOURCE, TARGET, f).await.expect("mapper");
        caught_up(&c, 0).await;
        assert_eq!(target_rows(&c).await, oracle(&model), "after backfill");

        // Phase 2: updates and deletes, some without the field.
        let seq = random_writes(&c, &mut rng, &mut model, 300).await;
        caught_up(&c, seq).await;
        assert_eq!(target_rows(&c).await, oracle(&model), "after incremental changes");

        // A value the function cannot map is recorded, and the view goes on.
        let bad = tuple::encode(&[Element::Int(9999)]).expect("key");
        let doc = msgpack(&serde_json::json!({"city": {"nested": "map"}}));
        let t = c.put(SOURCE, &bad, doc).await.expect("put");
        caught_up(&c, t.seq).await;
        let views = c.list_views().await.expect("views");
        assert_eq!(views[0].errors, 1);
        assert_eq!(views[0].last_error_key.as_ref().map(|k| k.to_vec()), Some(bad.clone()));
        c.delete(SOURCE, &bad).await.expect("delete");
        (views[0].rows_written, bad)
    });

    // Phase 3: kill -9 under a write load, restart, converge.
    let acked = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let mut acked = model.clone();
        let writer = async {
            loop {
                let k = rng.gen_range(0..600u64);
                let age = rng.gen_range(0..100);
                let city = CITIES[rng.gen_range(0..CITIES.len())].to_owned();
                match c.put(SOURCE, key(k), record(Some(&city), age)).await {
                    Ok(_) => {
                        acked.insert(k, (Some(city), age));
                    }
                    // The kill: this write may or may not have landed.
                    Err(_) => return Some((k, city, age)),
                }
            }
        };
        let killer = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            node.kill();
        };
        let (unsure, ()) = tokio::join!(writer, killer);
        (acked, unsure)
    });
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("reconnect");
        let (mut model, unsure) = acked;
        // Settle the one write whose fate the kill left open, then compare.
        if let Some((k, city, age)) = unsure {
            if c.get(SOURCE, key(k)).await.expect("get") == Some(record(Some(&city), age)) {
                model.insert(k, (Some(city), age));
            }
        }
        let t = c.put(SOURCE, key(0), record(Some("lyon"), 1)).await.expect("put after restart");
        model.insert(0, (Some("lyon".into()), 1));
        caught_up(&c, t.seq).await;
        assert_eq!(target_rows(&c).await, oracle(&model), "after kill -9 and restart");
        // Regression: a restart set the mapper's figures back to zero.
        let views = c.list_views().await.expect("views");
        assert_eq!(views[0].errors, 1, "{views:?}");
        assert_eq!(views[0].last_error_key.as_ref().map(|k| k.to_vec()), Some(bad), "{views:?}");
        assert!(views[0].rows_written > rows_written, "{views:?}");
        c.drop_mapper("by_city").await.expect("drop");
        assert!(c.list_views().await.expect("views").is_empty());
    });
    assert!(node.stop());
}
