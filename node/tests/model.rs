//! Model-based test: random operations against a node (through the client
//! library) and against a `BTreeMap`, comparing every read. Chunks are tiny,
//! so splits happen constantly; compaction, explicit splits, snapshots and
//! restarts are operations of their own.

use std::collections::BTreeMap;
use std::ops::Bound;

use monotable_client::{tuple, Batch, Client, Element, ErrorCode, RangeOptions, Scan};
use monotable_node::config::NodeConfig;
use monotable_node::server::ServerHandle;
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const RANGE: &str = "model";

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u16),
    Delete(u8),
    Batch(Vec<(u8, Option<u16>)>),
    AtomicBatch(Vec<(u8, Option<u16>)>),
    Get(u8),
    MultiGet(Vec<u8>),
    Scan { start: Option<u8>, end: Option<u8>, reverse: bool, page: u32 },
    PrefixScan(u8, bool),
    Stream(u32),
    TakeSnapshot,
    ReadSnapshot(usize, Option<u8>),
    ReleaseSnapshot(usize),
    Compact,
    Split(u8),
    Restart,
}

/// Keys are tuples `(group, n)` so prefix scans have something to find.
fn key(k: u8) -> Vec<u8> {
    tuple::encode(&[Element::Int(i128::from(k % 4)), Element::Int(i128::from(k))])
        .expect("small ints")
}

/// Values of varied size, so chunks of 1 KiB fill at different rates.
fn value(v: u16) -> Vec<u8> {
    let len = usize::from(v % 300);
    let mut out = v.to_le_bytes().to_vec();
    out.resize(len.max(2), (v % 251) as u8);
    out
}

fn batch_of(items: &[(u8, Option<u16>)]) -> Batch {
    items.iter().fold(Batch::new(), |b, (k, v)| match v {
        Some(v) => b.put(key(*k), value(*v)),
        None => b.delete(key(*k)),
    })
}

fn apply_to_model(model: &mut Model, items: &[(u8, Option<u16>)]) {
    for (k, v) in items {
        match v {
            Some(v) => model.insert(key(*k), value(*v)),
            None => model.remove(&key(*k)),
        };
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let k = 0u8..48;
    let kv =
        proptest::collection::vec((0u8..48, proptest::option::weighted(0.8, any::<u16>())), 1..12);
    prop_oneof![
        10 => (k.clone(), any::<u16>()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => k.clone().prop_map(Op::Delete),
        3 => kv.clone().prop_map(Op::Batch),
        2 => kv.prop_map(Op::AtomicBatch),
        4 => k.clone().prop_map(Op::Get),
        2 => proptest::collection::vec(0u8..48, 0..10).prop_map(Op::MultiGet),
        4 => (proptest::option::of(0u8..48), proptest::option::of(0u8..48), any::<bool>(), 1u32..7)
            .prop_map(|(start, end, reverse, page)| Op::Scan { start, end, reverse, page }),
        1 => (0u8..4, any::<bool>()).prop_map(|(p, r)| Op::PrefixScan(p, r)),
        1 => (1u32..5).prop_map(Op::Stream),
        1 => Just(Op::TakeSnapshot),
        2 => (0usize..4, proptest::option::of(0u8..48)).prop_map(|(i, k)| Op::ReadSnapshot(i, k)),
        1 => (0usize..4).prop_map(Op::ReleaseSnapshot),
        1 => Just(Op::Compact),
        1 => k.prop_map(Op::Split),
        1 => Just(Op::Restart),
    ]
}

fn expected_scan(
    model: &Model,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let lo = start.map_or(Bound::Unbounded, Bound::Included);
    let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
    if matches!((start, end), (Some(s), Some(e)) if s >= e) {
        return Vec::new();
    }
    let it = model.range::<[u8], _>((lo, hi)).map(|(k, v)| (k.clone(), v.clone()));
    if reverse {
        it.rev().collect()
    } else {
        it.collect()
    }
}

/// Runs a paged scan to the end, checking each page's size.
async fn paged(client: &Client, scan: Scan, page: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = Some(scan.limit(page));
    while let Some(s) = next {
        let p = client.scan(RANGE, &s).await.expect("scan");
        assert!(p.records.len() <= page as usize);
        out.extend(p.records.into_iter().map(|r| (r.key, r.value)));
        next = p.next;
    }
    out
}

struct Harness {
    dir: tempfile::TempDir,
    server: Option<ServerHandle>,
    client: Client,
}

impl Harness {
    async fn start(dir: tempfile::TempDir) -> Harness {
        let server = ServerHandle::start(NodeConfig::for_tests(dir.path())).expect("server starts");
        let client = Client::connect(server.addr).await.expect("connect");
        Harness { dir, server: Some(server), client }
    }

    async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            tokio::task::block_in_place(|| s.stop()).expect("clean stop");
        }
        let server =
            ServerHandle::start(NodeConfig::for_tests(self.dir.path())).expect("server restarts");
        self.client = Client::connect(server.addr).await.expect("reconnect");
        self.server = Some(server);
    }
}

async fn run(ops: Vec<Op>) {
    let mut h = Harness::start(tempfile::tempdir().expect("tmp")).await;
    h.client
        .create_range(RANGE, RangeOptions { chunk_size_max_bytes: 1024 })
        .await
        .expect("create");
    let mut model = Model::new();
    let mut snapshots: Vec<(u64, Model)> = Vec::new();
    for op in ops {
        let c = h.client.clone();
        match op {
            Op::Put(k, v) => {
                c.put(RANGE, key(k), value(v)).await.expect("put");
                model.insert(key(k), value(v));
            }
            Op::Delete(k) => {
                c.delete(RANGE, key(k)).await.expect("delete");
                model.remove(&key(k));
            }
            Op::Batch(items) | Op::AtomicBatch(items) if items.is_empty() => {}
            Op::Batch(items) => {
                c.write(RANGE, batch_of(&items)).await.expect("batch");
                apply_to_model(&mut model, &items);
            }
            Op::AtomicBatch(items) => {
                match c.write_atomic(RANGE, batch_of(&items)).await {
                    Ok(_) => apply_to_model(&mut model, &items),
                    // Refused whole: the model stays as it is, and the reads
                    // that follow check that nothing was applied.
                    Err(e) => assert_eq!(e.code(), Some(ErrorCode::CrossChunkBatch), "{e}"),
                }
            }
            Op::Get(k) => {
                assert_eq!(c.get(RANGE, key(k)).await.expect("get"), model.get(&key(k)).cloned());
            }
            Op::MultiGet(ks) => {
                let keys: Vec<Vec<u8>> = ks.iter().map(|k| key(*k)).collect();
                let got = c.multi_get(RANGE, &keys).await.expect("multi_get");
                let want: Vec<_> = keys.iter().map(|k| model.get(k).cloned()).collect();
                assert_eq!(got, want);
            }
            Op::Scan { start, end, reverse, page } => {
                let (s, e) = (start.map(key), end.map(key));
                let mut scan = Scan::all();
                if let Some(s) = &s {
                    scan = scan.start(s);
                }
                if let Some(e) = &e {
                    scan = scan.end(e);
                }
                if reverse {
                    scan = scan.reverse();
                }
                let got = paged(&c, scan, page).await;
                assert_eq!(got, expected_scan(&model, s.as_deref(), e.as_deref(), reverse));
            }
            Op::PrefixScan(p, reverse) => {
                let prefix = tuple::encode(&[Element::Int(i128::from(p))]).expect("int");
                let mut scan = Scan::all().prefix(&prefix);
                if reverse {
                    scan = scan.reverse();
                }
                let got = paged(&c, scan, 3).await;
                let mut want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want);
            }
            Op::Stream(page) => {
                let mut stream = c.scan_stream(RANGE, Scan::all().limit(page));
                let mut got = Vec::new();
                while let Some(r) = stream.next().await {
                    let r = r.expect("stream");
                    got.push((r.key, r.value));
                }
                assert_eq!(got, expected_scan(&model, None, None, false));
            }
            Op::TakeSnapshot => {
                let seq = c.snapshot().await.expect("snapshot");
                snapshots.push((seq, model.clone()));
            }
            Op::ReadSnapshot(i, k) => {
                if let Some((seq, snap)) = snapshots.get(i % snapshots.len().max(1)) {
                    match k {
                        Some(k) => {
                            let got = c.get_at(RANGE, key(k), *seq).await.expect("get at snapshot");
                            assert_eq!(got, snap.get(&key(k)).cloned());
                        }
                        None => {
                            let got = paged(&c, Scan::all().at(*seq), 5).await;
                            assert_eq!(got, expected_scan(snap, None, None, false));
                        }
                    }
                }
            }
            Op::ReleaseSnapshot(i) => {
                if !snapshots.is_empty() {
                    let (seq, _) = snapshots.remove(i % snapshots.len());
                    c.release_snapshot(seq).await.expect("release");
                }
            }
            Op::Compact => c.compact_range(RANGE).await.expect("compact"),
            Op::Split(k) => c.split_chunk(RANGE, key(k)).await.expect("split"),
            Op::Restart => {
                h.restart().await;
                // Pins belong to connections; a restart releases them.
                snapshots.clear();
            }
        }
    }
    // A last restart and full comparison: everything acknowledged survived.
    h.restart().await;
    let got = paged(&h.client, Scan::all(), 50).await;
    assert_eq!(got, expected_scan(&model, None, None, false));
    let info = h.client.describe_range(RANGE).await.expect("describe");
    assert_eq!(info.chunks.iter().map(|c| c.records).sum::<u64>(), model.len() as u64);
    // Chunks tile the key space: each starts where the previous one ends.
    for pair in info.chunks.windows(2) {
        assert_eq!(pair[0].end.as_ref().map(|e| e.to_vec()), Some(pair[1].start.to_vec()));
    }
    if let Some(s) = h.server.take() {
        tokio::task::block_in_place(|| s.stop()).expect("clean stop");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]
    #[test]
    fn node_matches_btreemap(ops in proptest::collection::vec(op_strategy(), 1..120)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run(ops));
    }
}

/// Regression: a reverse scan whose end falls exactly on a chunk boundary.
#[test]
fn reverse_scan_ending_at_chunk_boundary() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(vec![
        Op::Put(1, 10),
        Op::Put(5, 11),
        Op::Put(9, 12),
        Op::Split(5),
        Op::Scan { start: None, end: Some(5), reverse: true, page: 1 },
        Op::Scan { start: Some(5), end: None, reverse: true, page: 2 },
    ]));
}
