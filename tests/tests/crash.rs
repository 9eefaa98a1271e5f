//! Crash test: a real node under a write load is killed with SIGKILL at
//! random moments and restarted. After each restart every acknowledged write
//! is present, and every batch is there whole or not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monotable_client::{tuple, Batch, Client, Element, ErrorCode, RangeOptions, Scan};
use monotable_tests::{runtime, Node};
use rand::{Rng, SeedableRng};

const RANGE: &str = "crash";
const WRITERS: u64 = 8;
const ROUNDS: usize = 5;
/// Operations in each batch; all must land together.
const PARTS: u64 = 3;

fn key(writer: u64, n: u64, part: u64) -> Vec<u8> {
    tuple::encode(&[
        Element::Int(i128::from(writer)),
        Element::Int(i128::from(n)),
        Element::Int(i128::from(part)),
    ])
    .expect("small ints")
}

fn value(writer: u64, n: u64) -> Vec<u8> {
    format!("w{writer}-n{n}-{}", "v".repeat(40)).into_bytes()
}

/// Writes batches until the connection dies; records each acknowledged one.
async fn write_until_killed(
    client: Client,
    writer: u64,
    first: u64,
    acked: Arc<Mutex<BTreeSet<(u64, u64)>>>,
) {
    for n in first.. {
        let mut batch = Batch::new();
        for part in 0..PARTS {
            batch = batch.put(key(writer, n, part), value(writer, n));
        }
        match client.write_atomic(RANGE, batch).await {
            Ok(_) => {
                acked.lock().expect("lock").insert((writer, n));
            }
            // The parts straddle a chunk boundary: refused whole, nothing
            // written, which the checks below also verify.
            Err(e) if e.code() == Some(ErrorCode::CrossChunkBatch) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash_rounds(&[]);
}

/// The README promises that a process crash loses nothing acknowledged in
/// any fsync mode (the kernel has the bytes); only a power failure can.
#[test]
fn acknowledged_writes_survive_sigkill_without_fsync() {
    crash_rounds(&["--fsync", "never"]);
    crash_rounds(&["--fsync", "interval", "--fsync-interval-ms", "50"]);
}

fn crash_rounds(serve_args: &[&str]) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), serve_args);
    let rt = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        // Small chunks: the load splits them while the kills happen.
        c.create_range(RANGE, RangeOptions { chunk_size_max_bytes: 16 * 1024 })
            .await
            .expect("create");
    });
    let mut next_n = 0u64;
    for round in 0..ROUNDS {
        let run_ms = rng.gen_range(150..900);
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let client = Client::connect(node.addr).await.expect("connect");
                tasks.push(tokio::spawn(write_until_killed(client, w, next_n, acked.clone())));
            }
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            node.kill();
            for t in tasks {
                let _ = t.await;
            }
        });
        // Batch numbers of the next round never reuse this round's.
        next_n += 1_000_000;
        node.restart();
        let found = rt.block_on(async {
            let c = Client::connect(node.addr).await.expect("reconnect");
            let mut stream = c.scan_stream(RANGE, Scan::all());
            let mut found: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
            while let Some(r) = stream.next().await {
                let r = r.expect("scan after restart");
                let t = tuple::decode(&r.key).expect("tuple key");
                let [Element::Int(w), Element::Int(n), Element::Int(p)] = t.as_slice() else {
                    panic!("unexpected key {t:?}")
                };
                let (w, n, p) = (*w as u64, *n as u64, *p as u64);
                assert_eq!(r.value, value(w, n), "value of batch ({w}, {n})");
                found.entry((w, n)).or_default().push(p);
            }
            found
        });
        let acked = acked.lock().expect("lock").clone();
        let missing: Vec<_> = acked.iter().filter(|b| !found.contains_key(b)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged batches lost: {:?}",
            &missing[..missing.len().min(10)]
        );
        for (batch, parts) in &found {
            assert_eq!(
                parts,
                &(0..PARTS).collect::<Vec<_>>(),
                "round {round}: batch {batch:?} is half applied"
            );
        }
        assert!(acked.len() > round, "the load made no progress");
    }
    eprintln!("{} batches acknowledged across {ROUNDS} kills", acked.lock().expect("lock").len());
    assert!(node.stop(), "clean shutdown after the crash rounds");
}
