//! Crash tests: a real node under a write load is killed with SIGKILL at
//! random moments and restarted. After each restart every acknowledged write
//! is present, and every atomic batch is there whole or not at all. One
//! test writes to a few chunks; the other to at least 16 chunks at once
//! (splitting under the load), with batches that span chunks, in every
//! `--fsync` mode (`CRASH_SEED=N` replays its random choices).

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

// ---------------------------------------------------------------------------
// Many chunks at once: every fsync mode, writes spread over >= 16 chunks.

const MANY: &str = "many";
/// Chunks the range is split into before the load; one single-chunk writer
/// each.
const REGIONS: u64 = 16;
/// Writers whose every batch spans several regions (non-atomic `write`).
const SPANNING_WRITERS: u64 = 4;
const MANY_ROUNDS: usize = 5;
/// Small chunks, so that the load keeps splitting them while it runs.
const MANY_CHUNK_SIZE_MAX_BYTES: u64 = 16 * 1024;

/// A key of the many-chunks test: `(region, writer, n, part)`. Region `r`
/// starts with the key `(r)`, where the range is split before the load.
fn many_key(region: u64, writer: u64, n: u64, part: u64) -> Vec<u8> {
    tuple::encode(&[region, writer, n, part].map(|x| Element::Int(i128::from(x))))
        .expect("small ints")
}

fn many_value(writer: u64, n: u64, part: u64) -> Vec<u8> {
    format!("w{writer}-n{n}-p{part}-{}", "v".repeat(60)).into_bytes()
}

/// What a batch wrote: its keys as `(region, part)`, and how it was sent.
#[derive(Debug, Clone)]
struct Sent {
    keys: Vec<(u64, u64)>,
    atomic: bool,
}

/// Every batch sent, keyed by `(writer, n)`, and what became of it.
#[derive(Default)]
struct Ledger {
    sent: BTreeMap<(u64, u64), Sent>,
    /// Acknowledged: every key must be there after any later crash.
    acked: BTreeSet<(u64, u64)>,
    /// Refused with `CrossChunkBatch`: nothing of it may be there.
    refused: BTreeSet<(u64, u64)>,
}

/// The batch `n` of a writer. Writers below `REGIONS` stay in their own
/// region: three parts with `write_atomic` (all or nothing), or every
/// fourth batch a single `put`. The others spread 2 to 6 parts over as
/// many random regions with `write` (each part its own chunk, so
/// acknowledged means every part is durable; no promise otherwise).
fn many_batch(writer: u64, n: u64, rng: &mut rand::rngs::StdRng) -> Sent {
    if writer < REGIONS {
        if n % 4 == 3 {
            return Sent { keys: vec![(writer, 0)], atomic: false };
        }
        return Sent { keys: (0..PARTS).map(|p| (writer, p)).collect(), atomic: true };
    }
    let k = rng.gen_range(2..=6);
    let regions = rand::seq::index::sample(rng, REGIONS as usize, k);
    Sent { keys: regions.into_iter().map(|r| (r as u64, r as u64)).collect(), atomic: false }
}

async fn many_writer(
    client: Client,
    writer: u64,
    first: u64,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for n in first.. {
        let sent = many_batch(writer, n, &mut rng);
        let mut batch = Batch::new();
        for &(region, part) in &sent.keys {
            batch = batch.put(many_key(region, writer, n, part), many_value(writer, n, part));
        }
        let atomic = sent.atomic;
        let regions: BTreeSet<u64> = sent.keys.iter().map(|&(r, _)| r).collect();
        ledger.lock().expect("lock").sent.insert((writer, n), sent);
        let result = if atomic {
            client.write_atomic(MANY, batch).await.map(|t| vec![t])
        } else {
            client.write(MANY, batch).await
        };
        match result {
            Ok(tokens) => {
                // One commit token per chunk written; a region's keys are
                // adjacent, and regions never share a chunk.
                let chunks = if atomic { 1 } else { regions.len() };
                assert_eq!(tokens.len(), chunks, "tokens of batch ({writer}, {n})");
                ledger.lock().expect("lock").acked.insert((writer, n));
            }
            Err(e) if e.code() == Some(ErrorCode::CrossChunkBatch) => {
                ledger.lock().expect("lock").refused.insert((writer, n));
            }
            // Busy: this batch may or may not be applied (the checks allow
            // both); go on with the next.
            Err(e) if e.is_retryable() && e.code().is_some() => {}
            // Any other refusal under this load is a bug, not the kill.
            Err(e @ (monotable_client::Error::Server(_) | monotable_client::Error::Invalid(_))) => {
                panic!("batch ({writer}, {n}) failed: {e}")
            }
            // The node is gone: the batch may or may not be applied.
            Err(_) => return,
        }
    }
}

/// The writer of the probe batches (`n` = the round).
const PROBE_WRITER: u64 = 1000;
/// The writer of the records each region holds before the load (`n` = the
/// region), and how many it writes to each: about four fifths of a chunk.
const PREFILL_WRITER: u64 = 2000;
const PREFILL_RECORDS: u64 = 120;

fn spanning(writer: u64) -> bool {
    (REGIONS..REGIONS + SPANNING_WRITERS).contains(&writer)
}

/// One more write just before the kill, which must be acknowledged (it is
/// checked like the others after the restart): the node still commits
/// under the load, so a commit that stalls fails the test instead of
/// passing unseen behind the kill.
async fn probe_write(c: &Client, round: u64, ledger: &Mutex<Ledger>) {
    let (key, value) = (many_key(0, PROBE_WRITER, round, 0), many_value(PROBE_WRITER, round, 0));
    let sent = Sent { keys: vec![(0, 0)], atomic: false };
    ledger.lock().expect("lock").sent.insert((PROBE_WRITER, round), sent);
    tokio::time::timeout(Duration::from_secs(30), c.put(MANY, key, value))
        .await
        .expect("a write under the load was not acknowledged within 30 s")
        .expect("a write under the load failed");
    ledger.lock().expect("lock").acked.insert((PROBE_WRITER, round));
}

/// Every record of `MANY` by `(writer, n)`: its `(region, part)`s, each
/// checked to be a key that batch sent, with the value it sent.
async fn many_found(c: &Client, ledger: &Ledger) -> BTreeMap<(u64, u64), BTreeSet<(u64, u64)>> {
    let mut stream = c.scan_stream(MANY, Scan::all());
    let mut found: BTreeMap<(u64, u64), BTreeSet<(u64, u64)>> = BTreeMap::new();
    while let Some(r) = stream.next().await {
        let r = r.expect("scan after restart");
        let t = tuple::decode(&r.key).expect("tuple key");
        let [Element::Int(region), Element::Int(w), Element::Int(n), Element::Int(p)] =
            t.as_slice()
        else {
            panic!("unexpected key {t:?}")
        };
        let (region, w, n, p) = (*region as u64, *w as u64, *n as u64, *p as u64);
        let sent = ledger.sent.get(&(w, n)).unwrap_or_else(|| panic!("({w}, {n}) never sent"));
        assert!(sent.keys.contains(&(region, p)), "({w}, {n}) never wrote region {region}");
        assert_eq!(r.value, many_value(w, n, p), "value of ({region}, {w}, {n}, {p})");
        found.entry((w, n)).or_default().insert((region, p));
    }
    found
}

/// Reads every key of every acknowledged batch by key (routed through the
/// chunks as split since), not by a scan.
async fn many_point_reads(c: &Client, ledger: &Ledger, round: usize) {
    let keys: Vec<(Vec<u8>, Vec<u8>)> = ledger
        .acked
        .iter()
        .flat_map(|&(w, n)| {
            ledger.sent[&(w, n)]
                .keys
                .iter()
                .map(move |&(r, p)| (many_key(r, w, n, p), many_value(w, n, p)))
        })
        .collect();
    for group in keys.chunks(1000) {
        let asked: Vec<&[u8]> = group.iter().map(|(k, _)| k.as_slice()).collect();
        let values = c.multi_get(MANY, &asked).await.expect("multi-get after restart");
        for ((key, want), got) in group.iter().zip(values) {
            assert_eq!(
                got.as_ref(),
                Some(want),
                "round {round}: acknowledged key {:?} reads back wrong",
                tuple::decode(key)
            );
        }
    }
}

/// Chunk count of `MANY`, checking that its chunks tile the key space and
/// all serve.
async fn many_chunks(c: &Client) -> usize {
    let info = c.describe_range(MANY).await.expect("describe");
    let mut expected_start: Vec<u8> = Vec::new();
    for chunk in &info.chunks {
        assert_eq!(chunk.unavailable, None, "chunk {} is unavailable", chunk.id);
        assert_eq!(chunk.start.to_vec(), expected_start, "chunks leave a gap or overlap");
        expected_start = chunk.end.as_ref().map(|e| e.to_vec()).unwrap_or_default();
    }
    assert!(info.chunks.last().is_some_and(|c| c.end.is_none()), "the last chunk is unbounded");
    info.chunks.len()
}

fn crash_seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s.parse().expect("CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

/// The shape the node's durability will take (one group commit shared by
/// every chunk) is stressed where it can go wrong: many chunks written at
/// once, batches spanning chunks, chunks splitting under the load, and
/// kill -9 at random moments. In every `--fsync` mode a process crash loses
/// nothing acknowledged (README, Durability).
#[test]
fn acknowledged_writes_over_many_chunks_survive_sigkill() {
    let seed = crash_seed();
    eprintln!("seed {seed} (CRASH_SEED={seed} replays its choices; timing still varies)");
    let modes: [&[&str]; 3] = [
        &["--fsync", "always"],
        &["--fsync", "interval", "--fsync-interval-ms", "50"],
        &["--fsync", "never"],
    ];
    for (i, args) in modes.iter().enumerate() {
        many_chunks_crash_rounds(args, seed.wrapping_add(i as u64));
    }
}

fn many_chunks_crash_rounds(serve_args: &[&str], seed: u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), serve_args);
    let rt = runtime();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let chunks_before = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range(MANY, RangeOptions { chunk_size_max_bytes: MANY_CHUNK_SIZE_MAX_BYTES })
            .await
            .expect("create");
        for region in 1..REGIONS {
            let start = tuple::encode(&[Element::Int(i128::from(region))]).expect("int");
            c.split_chunk(MANY, start).await.expect("split");
        }
        // Each region most of a chunk full, so that the load splits them
        // all soon, however slowly it runs.
        for region in 0..REGIONS {
            let sent =
                Sent { keys: (0..PREFILL_RECORDS).map(|p| (region, p)).collect(), atomic: true };
            let mut batch = Batch::new();
            for &(r, p) in &sent.keys {
                batch = batch.put(
                    many_key(r, PREFILL_WRITER, region, p),
                    many_value(PREFILL_WRITER, region, p),
                );
            }
            ledger.lock().expect("lock").sent.insert((PREFILL_WRITER, region), sent);
            c.write_atomic(MANY, batch).await.expect("prefill");
            ledger.lock().expect("lock").acked.insert((PREFILL_WRITER, region));
        }
        let chunks = many_chunks(&c).await;
        assert!(chunks >= REGIONS as usize, "{chunks} chunks before the load");
        chunks
    });
    let mut chunks_after = chunks_before;
    let mut next_n = 0u64;
    for round in 0..MANY_ROUNDS {
        let run_ms = rng.gen_range(20..1500);
        let writer_seed: u64 = rng.gen();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..REGIONS + SPANNING_WRITERS {
                let client = Client::connect(node.addr).await.expect("connect");
                let task = many_writer(client, w, next_n, writer_seed ^ w, ledger.clone());
                tasks.push(tokio::spawn(task));
            }
            let probe = Client::connect(node.addr).await.expect("connect");
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            probe_write(&probe, round as u64, &ledger).await;
            node.kill();
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("a writer went on after the kill")
                    .expect("a writer panicked");
            }
        });
        next_n += 1_000_000;
        node.restart();
        let ledger = ledger.lock().expect("lock");
        let (found, chunks) = rt.block_on(async {
            let c = Client::connect(node.addr).await.expect("reconnect");
            many_point_reads(&c, &ledger, round).await;
            (many_found(&c, &ledger).await, many_chunks(&c).await)
        });
        let lost: Vec<_> = ledger
            .acked
            .iter()
            .filter(|b| found.get(b).map_or(0, BTreeSet::len) != ledger.sent[b].keys.len())
            .map(|b| (b, found.get(b)))
            .collect();
        assert!(
            lost.is_empty(),
            "{serve_args:?} round {round}: acknowledged batches lost or cut ({} of them): {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        for (batch, keys) in &found {
            let sent = &ledger.sent[batch];
            assert!(
                !ledger.refused.contains(batch),
                "{serve_args:?} round {round}: refused batch {batch:?} was applied"
            );
            if sent.atomic {
                assert_eq!(
                    keys.len(),
                    sent.keys.len(),
                    "{serve_args:?} round {round}: atomic batch {batch:?} is half applied"
                );
            }
        }
        assert!(chunks >= chunks_after, "chunks merged? {chunks_after} -> {chunks}");
        chunks_after = chunks;
    }
    let ledger = ledger.lock().expect("lock");
    let spanned = ledger.acked.iter().filter(|(w, _)| spanning(*w)).count();
    eprintln!(
        "{serve_args:?}: {} batches acknowledged ({spanned} spanning chunks) across {MANY_ROUNDS} kills; \
         {chunks_before} chunks before the load, {chunks_after} after",
        ledger.acked.len(),
    );
    assert!(spanned > 0, "no batch spanning chunks was acknowledged");
    assert!(chunks_after > chunks_before, "no chunk split during the load");
    let log = node.log();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    eprintln!(
        "{serve_args:?}: the kills cut {} log tails and interrupted {} splits",
        count("truncated a torn write"),
        count("an interrupted split")
    );
    assert_eq!(count("panicked"), 0, "{log:#?}");
    assert!(node.stop(), "clean shutdown after the crash rounds");
}
