//! The reduce tree, model-based: random inserts, updates and deletes on a
//! range of tiny chunks (so the tree is several levels deep and chunks of
//! every level split all the time), random aggregates over random sub-ranges
//! and group levels, fresh and stale, compared with an oracle that reduces
//! the model from scratch. Restarts resume from the meta-ranges without
//! loading every chunk, and a kill -9 under a write load ends in an exact
//! comparison with the range as it then is.

use std::collections::BTreeMap;
use std::time::Duration;

use monotable_client::{
    tuple, AggregateReply, AggregateRequest, Batch, Client, Element, RangeOptions, ReduceFunction,
    Scan, ViewStatus,
};
use monotable_tests::{runtime, Node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

const RANGE: &str = "events";
const GROUPS: [&str; 5] = ["alpha", "bravo", "delta", "echo", "kilo"];
const IDS: i64 = 600;
const REDUCERS: [&str; 4] = ["n", "total", "spread", "lua_total"];
const LUA_SUM: &str = "function reduce(keys, values, rereduce)
  local s = 0
  for _, v in ipairs(values) do s = s + v end
  return s
end";

/// key -> amount
type Model = BTreeMap<Vec<u8>, u64>;

fn key(group: &str, id: i64) -> Vec<u8> {
    tuple::encode(&[Element::String(group.into()), Element::Int(i128::from(id))]).expect("key")
}

fn amount_bytes(a: u64) -> Vec<u8> {
    rmp_serde::to_vec(&a).expect("int")
}

fn reduce(reducer: &str, amounts: &[u64]) -> Json {
    let sum: u64 = amounts.iter().sum();
    match reducer {
        "n" => json!(amounts.len()),
        "total" => json!(sum),
        "lua_total" if amounts.is_empty() => Json::Null,
        "lua_total" => json!(sum),
        "spread" => match (amounts.iter().min(), amounts.iter().max()) {
            (Some(min), Some(max)) => json!({
                "count": amounts.len(), "sum": sum, "min": min, "max": max,
                "sumsqr": amounts.iter().map(|a| a * a).sum::<u64>(),
                // Exact in f64 (small sums), so one correctly rounded division.
                "mean": sum as f64 / amounts.len() as f64,
            }),
            _ => Json::Null,
        },
        other => panic!("no oracle for {other}"),
    }
}

#[derive(Debug, Clone)]
struct Query {
    reducer: &'static str,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    group: Option<u32>,
}

fn oracle(model: &Model, q: &Query) -> Json {
    let rows = model.iter().filter(|(k, _)| {
        q.start.as_ref().is_none_or(|s| *k >= s) && q.end.as_ref().is_none_or(|e| *k < e)
    });
    let Some(level) = q.group else {
        let amounts: Vec<u64> = rows.map(|(_, a)| *a).collect();
        return reduce(q.reducer, &amounts);
    };
    let mut groups: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (k, a) in rows {
        let elements = tuple::decode(k).expect("tuple");
        let prefix = tuple::encode(&elements[..(level as usize).min(elements.len())]).expect("p");
        groups.entry(prefix).or_default().push(*a);
    }
    Json::Array(groups.into_iter().map(|(k, a)| json!([k, reduce(q.reducer, &a)])).collect())
}

fn random_key(rng: &mut StdRng) -> Vec<u8> {
    key(GROUPS[rng.gen_range(0..GROUPS.len())], rng.gen_range(0..IDS))
}

fn random_query(rng: &mut StdRng) -> Query {
    let bound = |rng: &mut StdRng| {
        rng.gen_bool(0.75).then(|| {
            let g = GROUPS[rng.gen_range(0..GROUPS.len())];
            if rng.gen_bool(0.3) {
                tuple::encode(&[Element::String(g.into())]).expect("group")
            } else {
                key(g, rng.gen_range(-5..IDS + 5))
            }
        })
    };
    let (start, end) = (bound(rng), bound(rng));
    Query {
        reducer: REDUCERS[rng.gen_range(0..REDUCERS.len())],
        start,
        end,
        group: rng.gen_bool(0.25).then(|| rng.gen_range(1..=2)),
    }
}

async fn agg(c: &Client, q: &Query, fresh: bool) -> Json {
    let reply = c
        .aggregate(AggregateRequest {
            reducer: q.reducer.into(),
            start: q.start.clone().map(Into::into),
            end: q.end.clone().map(Into::into),
            group_level: q.group,
            fresh,
            timeout_ms: 30_000,
            ..AggregateRequest::default()
        })
        .await
        .unwrap_or_else(|e| panic!("aggregate {q:?}: {e}"));
    let decode = |v: &[u8]| -> Json { rmp_serde::from_slice(v).expect("reduction") };
    match reply {
        AggregateReply::Total(v) => decode(&v),
        AggregateReply::Groups { groups: g, .. } => {
            Json::Array(g.into_iter().map(|(k, v)| json!([k.to_vec(), decode(&v)])).collect())
        }
    }
}

/// Random puts and deletes, one key per write (a batch over several chunks
/// is atomic per chunk only, so a view may show part of one); every state
/// the model passes through is kept, for checking stale answers.
async fn random_writes(
    c: &Client,
    model: &mut Model,
    history: &mut History,
    rng: &mut StdRng,
    writes: usize,
) {
    for _ in 0..writes {
        let k = random_key(rng);
        if rng.gen_bool(0.25) {
            c.delete(RANGE, &k).await.expect("delete");
            model.remove(&k);
        } else {
            let a = rng.gen_range(0..1000u64);
            c.put(RANGE, &k, amount_bytes(a)).await.expect("put");
            model.insert(k, a);
        }
        history.push(model);
    }
}

/// The states the model went through, and for each reducer the first one
/// its answers may still show: the state of its last fresh answer (views
/// never go back).
struct History {
    states: Vec<Model>,
    since: BTreeMap<&'static str, usize>,
}

impl History {
    fn new(model: &Model) -> Self {
        History { states: vec![model.clone()], since: BTreeMap::new() }
    }

    fn push(&mut self, model: &Model) {
        self.states.push(model.clone());
    }

    /// Fresh answers from every reducer: from here on, no answer may show
    /// an older state.
    async fn sync(&mut self, c: &Client, model: &Model) {
        for reducer in REDUCERS {
            let q = Query { reducer, start: None, end: None, group: None };
            assert_eq!(agg(c, &q, true).await, oracle(model, &q), "{reducer}");
            self.since.insert(reducer, self.states.len() - 1);
        }
    }
}

/// Fresh answers equal the oracle now; a stale one equals the oracle at
/// some state since that reducer's last fresh answer.
async fn check_queries(
    phase: &str,
    c: &Client,
    model: &Model,
    history: &mut History,
    rng: &mut StdRng,
) {
    for _ in 0..40 {
        let q = random_query(rng);
        let since = history.since.get(q.reducer).copied().unwrap_or(0);
        if rng.gen_bool(0.3) {
            let got = agg(c, &q, false).await;
            let states = &history.states[since..];
            if !states.iter().any(|m| oracle(m, &q) == got) {
                let mut got = got.to_string();
                got.truncate(300);
                panic!(
                    "{phase}: stale {q:?} = {got} matches none of the {} states since its last fresh answer",
                    states.len()
                );
            }
        } else {
            let got = agg(c, &q, true).await;
            let want = oracle(model, &q);
            if got != want {
                let again = agg(c, &q, true).await;
                let (mut got, mut want, mut again) =
                    (got.to_string(), want.to_string(), again.to_string());
                for s in [&mut got, &mut want, &mut again] {
                    s.truncate(300);
                }
                panic!("{phase}: fresh {q:?} = {got}, want {want} (asked again: {again})");
            }
            history.since.insert(q.reducer, history.states.len() - 1);
        }
    }
}

async fn trees(c: &Client) -> Vec<ViewStatus> {
    let views = c.list_views().await.expect("views");
    views.into_iter().filter(|v| v.tree.is_some()).collect()
}

/// Waits until every reducer has saved the state it reflects.
async fn wait_saved(c: &Client) {
    for _ in 0..1000 {
        let views = trees(c).await;
        if views.len() == REDUCERS.len()
            && views.iter().all(|v| v.tree.as_ref().and_then(|t| t.saved) == Some(v.watermark))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("reducers did not save their trees: {:?}", trees(c).await);
}

async fn scan_model(c: &Client) -> Model {
    let mut model = Model::new();
    let mut stream = c.scan_stream(RANGE, Scan::all());
    while let Some(r) = stream.next().await {
        let r = r.expect("scan");
        model.insert(r.key.to_vec(), rmp_serde::from_slice(&r.value).expect("amount"));
    }
    model
}

#[test]
fn reduce_tree_matches_an_oracle_through_splits_restarts_and_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let rt = runtime();
    let mut rng = StdRng::seed_from_u64(3);
    let mut model = Model::new();
    let mut history = History::new(&model);
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range(RANGE, RangeOptions { chunk_size_max_bytes: 1024 }).await.expect("range");
        random_writes(&c, &mut model, &mut history, &mut rng, 1200).await;
        // Built from what is there, while writes go on.
        c.create_reducer("n", RANGE, "count").await.expect("count");
        c.create_reducer("total", RANGE, "sum").await.expect("sum");
        random_writes(&c, &mut model, &mut history, &mut rng, 200).await;
        c.create_reducer("spread", RANGE, "stats").await.expect("stats");
        let lua = ReduceFunction::Lua { source: LUA_SUM.into() };
        c.create_reducer_with("lua_total", RANGE, lua).await.expect("lua");
        history.sync(&c, &model).await;
        check_queries("step 1", &c, &model, &mut history, &mut rng).await;
        for _ in 0..4 {
            random_writes(&c, &mut model, &mut history, &mut rng, 160).await;
            check_queries("step 2", &c, &model, &mut history, &mut rng).await;
        }
        for v in trees(&c).await {
            let t = v.tree.expect("tree");
            assert!(
                t.levels >= 3,
                "{}: a tree of {} levels over {} chunks",
                v.name,
                t.levels,
                t.chunks
            );
        }
        wait_saved(&c).await;
    });

    // A restart resumes from the meta-ranges: no chunk is reloaded that no
    // change or query needs.
    node.kill();
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("reconnect");
        // Full-range answers touch no chunk's tree.
        history = History::new(&model);
        history.sync(&c, &model).await;
        wait_saved(&c).await;
        for v in trees(&c).await {
            let t = v.tree.expect("tree");

            assert!(t.levels >= 3, "{}: {} levels after restart", v.name, t.levels);
            assert!(
                t.chunks_in_memory * 4 <= t.chunks,
                "{}: {} of {} chunk trees rebuilt at restart",
                v.name,
                t.chunks_in_memory,
                t.chunks
            );
        }
        check_queries("step 3", &c, &model, &mut history, &mut rng).await;
        random_writes(&c, &mut model, &mut history, &mut rng, 240).await;
        check_queries("step 4", &c, &model, &mut history, &mut rng).await;
    });

    // kill -9 under a write load: afterwards the views converge to exactly
    // what the range then holds.
    let addr = node.addr;
    let writer = std::thread::spawn(move || {
        let rt = runtime();
        rt.block_on(async {
            let c = Client::connect(addr).await.expect("connect");
            let mut rng = StdRng::seed_from_u64(99);
            loop {
                let mut batch = Batch::new();
                for _ in 0..4 {
                    batch = batch.put(random_key(&mut rng), amount_bytes(rng.gen_range(0..1000)));
                }
                batch = batch.delete(random_key(&mut rng));
                if c.write(RANGE, batch).await.is_err() {
                    break;
                }
            }
        });
    });
    std::thread::sleep(Duration::from_millis(700));
    node.kill();
    writer.join().expect("writer");
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("reconnect");
        let mut model = scan_model(&c).await;
        let mut history = History::new(&model);
        history.sync(&c, &model).await;
        for reducer in REDUCERS {
            let q = Query { reducer, start: None, end: None, group: None };
            assert_eq!(agg(&c, &q, true).await, oracle(&model, &q), "{reducer} after kill -9");
            let q = Query { group: Some(1), ..q };
            assert_eq!(agg(&c, &q, true).await, oracle(&model, &q), "{reducer} groups");
        }
        check_queries("step 5", &c, &model, &mut history, &mut rng).await;
        random_writes(&c, &mut model, &mut history, &mut rng, 160).await;
        check_queries("step 6", &c, &model, &mut history, &mut rng).await;
        // Dropping a reducer drops its meta-ranges.
        c.drop_reducer("n").await.expect("drop");
        let ranges = c.list_ranges().await.expect("ranges");
        assert!(ranges.iter().all(|r| !r.name.starts_with("n#")), "{ranges:?}");
    });
    assert!(node.stop());
}
