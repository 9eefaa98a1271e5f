//! Reducers over a mapper's index against an oracle that recomputes every
//! aggregate from the source records: random sub-ranges, group levels,
//! every built-in, fresh queries after random changes, and kill -9.

use std::collections::BTreeMap;
use std::time::Duration;

use monotable_client::{
    tuple, AggregateReply, AggregateRequest, Client, Element, MapFunction, RangeOptions,
};
use monotable_tests::{msgpack, runtime, Node};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

const SOURCE: &str = "orders";
const INDEX: &str = "orders_by_city";
const CITIES: [&str; 6] = ["brest", "lille", "lyon", "nice", "paris", "rouen"];

type Model = BTreeMap<u64, (String, u64)>;

fn source_key(i: u64) -> Vec<u8> {
    tuple::encode(&[Element::Int(i128::from(i))]).expect("int")
}

/// The index rows the mapper must produce, as (emitted key (city,)
/// encoded, amount), in row order. Bounds and groups of a reducer on an
/// index range are emitted keys, so the oracle needs nothing of the source
/// key but the order it gives rows of one city.
fn index_rows(model: &Model) -> Vec<(Vec<u8>, u64)> {
    let mut rows: Vec<(Vec<u8>, Vec<u8>, u64)> = model
        .iter()
        .map(|(id, (city, amount))| {
            let k = tuple::encode(&[Element::String(city.clone())]).expect("city");
            (k, source_key(*id), *amount)
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(k, _, a)| (k, a)).collect()
}

fn reduce(reducer: &str, amounts: &[u64]) -> Json {
    let n = amounts.len() as u64;
    let sum: u64 = amounts.iter().sum();
    let (min, max) = (amounts.iter().min().copied(), amounts.iter().max().copied());
    match reducer {
        "count" => json!(n),
        "sum" => json!(sum),
        "min" => min.map_or(Json::Null, |m| json!(m)),
        "max" => max.map_or(Json::Null, |m| json!(m)),
        "stats" => match (min, max) {
            (Some(min), Some(max)) => json!({
                "count": n, "sum": sum, "min": min, "max": max,
                "sumsqr": amounts.iter().map(|a| a * a).sum::<u64>(),
                // Exact in f64 (small sums), so one correctly rounded division.
                "mean": sum as f64 / n as f64,
            }),
            _ => Json::Null,
        },
        "count_distinct" => {
            let mut d = amounts.to_vec();
            d.sort_unstable();
            d.dedup();
            json!(d.len())
        }
        other => panic!("no oracle for {other}"),
    }
}

/// What `agg` must answer, computed from the model alone.
fn oracle(
    model: &Model,
    reducer: &str,
    start: &Option<Vec<u8>>,
    end: &Option<Vec<u8>>,
    group: Option<usize>,
) -> Json {
    let rows: Vec<(Vec<u8>, u64)> = index_rows(model)
        .into_iter()
        .filter(|(k, _)| {
            start.as_ref().is_none_or(|s| k >= s) && end.as_ref().is_none_or(|e| k < e)
        })
        .collect();
    let Some(level) = group else {
        let amounts: Vec<u64> = rows.iter().map(|(_, a)| *a).collect();
        return reduce(reducer, &amounts);
    };
    // Group by the first `level` elements of the emitted key.
    let mut groups: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (k, a) in rows {
        let elements = tuple::decode(&k).expect("tuple");
        let prefix = tuple::encode(&elements[..level.min(elements.len())]).expect("prefix");
        groups.entry(prefix).or_default().push(a);
    }
    Json::Array(groups.into_iter().map(|(k, a)| json!([k, reduce(reducer, &a)])).collect())
}

fn decode(bytes: &[u8]) -> Json {
    rmp_serde::from_slice(bytes).expect("a MessagePack reduction")
}

async fn agg(
    c: &Client,
    reducer: &str,
    start: &Option<Vec<u8>>,
    end: &Option<Vec<u8>>,
    group: Option<usize>,
) -> Json {
    let reply = c
        .aggregate(AggregateRequest {
            reducer: reducer.into(),
            start: start.clone().map(Into::into),
            end: end.clone().map(Into::into),
            group_level: group.map(|l| l as u32),
            fresh: true,
            timeout_ms: 30_000,
            ..AggregateRequest::default()
        })
        .await
        .expect("aggregate");
    match reply {
        AggregateReply::Total(v) => decode(&v),
        AggregateReply::Groups { groups: g, .. } => {
            Json::Array(g.into_iter().map(|(k, v)| json!([k.to_vec(), decode(&v)])).collect())
        }
    }
}

/// count_distinct is a HyperLogLog estimate: documented standard error
/// 1.6%; allow 4 of them, and on small sets (linear counting, which loses
/// one value per pair that shares one of the 4,096 registers) up to 4.
fn close_estimates(got: &Json, want: &Json) -> bool {
    match (got, want) {
        (Json::Number(g), Json::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap_or(-1.0), w.as_f64().unwrap_or(-1.0));
            (g - w).abs() <= (w * 0.065).max(4.0)
        }
        (Json::Array(g), Json::Array(w)) => {
            g.len() == w.len()
                && g.iter().zip(w).all(|(g, w)| g[0] == w[0] && close_estimates(&g[1], &w[1]))
        }
        _ => got == want,
    }
}

fn random_bound(rng: &mut rand::rngs::StdRng) -> Option<Vec<u8>> {
    rng.gen_bool(0.7).then(|| {
        let city = CITIES[rng.gen_range(0..CITIES.len())];
        let mut parts = vec![Element::String(city.into())];
        if rng.gen_bool(0.5) {
            parts.push(Element::Int(rng.gen_range(0..500)));
        }
        tuple::encode(&parts).expect("bound")
    })
}

async fn check_queries(c: &Client, model: &Model, rng: &mut rand::rngs::StdRng, n: usize) {
    for _ in 0..n {
        let reducer =
            ["count", "sum", "min", "max", "stats", "count_distinct"][rng.gen_range(0..6)];
        let (start, end) = (random_bound(rng), random_bound(rng));
        let group = rng.gen_bool(0.3).then(|| rng.gen_range(1..=2));
        let got = agg(c, reducer, &start, &end, group).await;
        let want = oracle(model, reducer, &start, &end, group);
        let what = format!("{reducer} group={group:?} {start:?}..{end:?}: got {got}, want {want}");
        if reducer == "count_distinct" {
            assert!(close_estimates(&got, &want), "{what}");
        } else {
            assert_eq!(got, want, "{what}");
        }
    }
}

async fn random_writes(c: &Client, model: &mut Model, rng: &mut rand::rngs::StdRng, n: usize) {
    for _ in 0..n {
        let id = rng.gen_range(0..500u64);
        if rng.gen_bool(0.2) {
            c.delete(SOURCE, source_key(id)).await.expect("delete");
            model.remove(&id);
        } else {
            let city = CITIES[rng.gen_range(0..CITIES.len())].to_owned();
            let amount = rng.gen_range(0..1000u64);
            c.put(SOURCE, source_key(id), msgpack(&json!({"city": city, "amount": amount})))
                .await
                .expect("put");
            model.insert(id, (city, amount));
        }
    }
}

#[test]
fn aggregates_match_a_from_scratch_oracle() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let rt = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut model = Model::new();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range(SOURCE, RangeOptions { chunk_size_max_bytes: 2048 }).await.expect("range");
        random_writes(&c, &mut model, &mut rng, 400).await;
        let f = MapFunction::Field { key_path: "city".into(), value_path: Some("amount".into()) };
        c.create_mapper("by_city", SOURCE, INDEX, f).await.expect("mapper");
        for r in ["count", "sum", "min", "max", "stats", "count_distinct"] {
            c.create_reducer(r, INDEX, r).await.expect("reducer");
        }
        // A chain: a Lua mapper reads the index and writes a second one.
        let lua = "function map(key, value) emit({key[1]}, value) end".to_owned();
        c.create_mapper("chained", INDEX, "chained_idx", MapFunction::Lua { source: lua })
            .await
            .expect("chain");
        c.create_reducer("chained_sum", "chained_idx", "sum").await.expect("reducer");
        check_queries(&c, &model, &mut rng, 60).await;
        random_writes(&c, &mut model, &mut rng, 300).await;
        check_queries(&c, &model, &mut rng, 60).await;
        // A fresh answer waits for both mappers of the chain.
        random_writes(&c, &mut model, &mut rng, 50).await;
        let got = agg(&c, "chained_sum", &None, &None, None).await;
        assert_eq!(got, oracle(&model, "sum", &None, &None, None), "through the chain");
        let err = c
            .aggregate(AggregateRequest { reducer: "nope".into(), ..AggregateRequest::default() })
            .await
            .expect_err("unknown reducer");
        assert!(err.to_string().contains("does not exist"), "{err}");
    });
    node.kill();
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("reconnect");
        check_queries(&c, &model, &mut rng, 30).await;
        random_writes(&c, &mut model, &mut rng, 100).await;
        check_queries(&c, &model, &mut rng, 30).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
    assert!(node.stop());
}

/// A fresh aggregate asked right after a mapper is created, with no write
/// since, waits for the mapper's backfill (its checkpoint is the creation
/// snapshot all along, which must not count as reached).
#[test]
fn fresh_answers_wait_for_a_backfill_in_progress() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let rt = runtime();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("many", RangeOptions::default()).await.expect("range");
        let n = 30_000u64;
        for start in (0..n).step_by(1000) {
            let batch = (start..start + 1000).fold(monotable_client::Batch::new(), |b, i| {
                b.put(
                    source_key(i),
                    msgpack(&json!({"city": CITIES[(i % 6) as usize], "amount": i})),
                )
            });
            c.write("many", batch).await.expect("write");
        }
        let f = MapFunction::Field { key_path: "city".into(), value_path: Some("amount".into()) };
        c.create_mapper("many_by_city", "many", "many_idx", f).await.expect("mapper");
        c.create_reducer("many_count", "many_idx", "count").await.expect("reducer");
        let got = agg(&c, "many_count", &None, &None, None).await;
        assert_eq!(got, json!(n), "a fresh count during the backfill");
    });
    assert!(node.stop());
}
