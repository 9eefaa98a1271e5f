//! Compaction and splits running in steps while the chunk takes writes,
//! checked against a model: every key at the newest state, at pinned
//! snapshots and at the stable seq, before and after a reopen, with
//! writes written out or not, synced or not, refused (cut back), and the
//! log rotating, between the steps.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use monotable_proto::WriteOp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::chunk::{Chunk, ChunkError, ChunkMeta, ReadAt};
use super::chunk_log::LogError;
use super::tests::desc;

fn meta(id: u64, start: &[u8], end: Option<&[u8]>) -> ChunkMeta {
    ChunkMeta { id, range_id: 1, start: start.to_vec(), end: end.map(<[u8]>::to_vec) }
}

/// A key's versions, oldest first: (seq, value or `None` for a delete).
type History = Vec<(u64, Option<Vec<u8>>)>;

/// What the chunk should hold: every batch still in it, by seq, and how
/// far it got (written to the kernel, durable).
#[derive(Default, Clone)]
struct Model {
    history: BTreeMap<Vec<u8>, History>,
    last: u64,
    written: u64,
    durable: u64,
}

impl Model {
    fn apply(&mut self, seq: u64, ops: &[WriteOp]) {
        for op in ops {
            let (key, value) = match op {
                WriteOp::Put { key, value } => (key.to_vec(), Some(value.to_vec())),
                WriteOp::Delete { key } => (key.to_vec(), None),
            };
            let h = self.history.entry(key).or_default();
            if h.last().is_some_and(|(s, _)| *s == seq) {
                h.pop();
            }
            h.push((seq, value));
        }
        self.last = seq;
    }

    /// A refused write out: the batches not written are gone.
    fn discard_unwritten(&mut self) {
        let upto = self.written;
        for h in self.history.values_mut() {
            h.retain(|(s, _)| *s <= upto);
        }
        self.history.retain(|_, h| !h.is_empty());
        self.last = upto;
    }

    fn at(&self, key: &[u8], seq: u64) -> Option<Vec<u8>> {
        let h = self.history.get(key)?;
        h.iter().rev().find(|(s, _)| *s <= seq).and_then(|(_, v)| v.clone())
    }

    fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.history.keys()
    }
}

/// A chunk with its model and the node's seq clock, written the way the
/// write path does: apply, then (maybe later) write out, sync, mark.
struct Harness {
    rng: StdRng,
    chunk: Chunk,
    model: Model,
    next_seq: u64,
    keys: Vec<Vec<u8>>,
    /// The highest stable seq a compaction was given: the clock pins
    /// nothing below it, and hands out no lower stable seq.
    horizon: u64,
    /// Refused write outs that had something to refuse.
    refused: u64,
}

/// How often the runs hit the cases that matter, summed over seeds.
#[derive(Default, Debug)]
struct Coverage {
    finished: u64,
    aborted: u64,
    /// The log rotated while a job ran.
    rotated: u64,
    /// ... past the compaction's reserved id (the active segment grew).
    rotations_capped: u64,
    /// Batches not yet written when a job finished.
    unwritten_at_finish: u64,
    /// Written but not durable.
    undurable_at_finish: u64,
    refused: u64,
}

fn newest_segment(dir: &Path) -> u32 {
    super::tests::segments(dir)
        .iter()
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .max()
        .unwrap_or(0)
}

impl Harness {
    fn new(seed: u64, dir: &Path, segment_max: u64) -> Self {
        let chunk = Chunk::create(&desc(meta(1, b"", None)), dir, segment_max).expect("create");
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.gen_range(3..40);
        let keys = (0..n)
            .map(|i| match i % 5 {
                0 => format!("k{i:03}").into_bytes(),
                4 => tuple_child(i),
                1 => vec![b'k', 0, i as u8],
                2 => vec![b'k', i as u8, 0, 0],
                _ => format!("k{i:03}-{}", "x".repeat(i % 50)).into_bytes(),
            })
            .collect();
        Harness { rng, chunk, model: Model::default(), next_seq: 1, keys, horizon: 0, refused: 0 }
    }

    /// A stable seq and pins as the clock hands them out: the stable seq at
    /// most what is durable and not below the last one, pins between.
    fn retention(&mut self) -> (Vec<u64>, u64) {
        let stable = self.rng.gen_range(self.horizon..=self.model.durable);
        self.horizon = stable;
        let n = self.rng.gen_range(0..3);
        let pins = (0..n).map(|_| self.rng.gen_range(self.horizon..=stable)).collect();
        (pins, stable)
    }

    fn random_batch(&mut self) -> Vec<WriteOp> {
        let n = self.rng.gen_range(1..4);
        (0..n)
            .map(|_| {
                let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
                if self.rng.gen_bool(0.2) {
                    WriteOp::Delete { key: key.into() }
                } else {
                    let len = match self.rng.gen_range(0..10) {
                        0 => 0,
                        1 => self.rng.gen_range(1000..4000),
                        _ => self.rng.gen_range(1..200),
                    };
                    let value: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
                    WriteOp::Put { key: key.into(), value: value.into() }
                }
            })
            .collect()
    }

    fn apply(&mut self) {
        let ops = self.random_batch();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.chunk.apply_batch(seq, &ops).expect("apply");
        self.model.apply(seq, &ops);
    }

    fn write_out(&mut self, fail: bool) {
        if fail {
            self.chunk.fail_next_write_out_for_tests();
        }
        match self.chunk.write_out() {
            Ok(()) => self.model.written = self.model.last,
            Err(ChunkError::Log(LogError::WriteRefused { .. })) if fail => {
                self.refused += u64::from(self.model.last > self.model.written);
                self.model.discard_unwritten();
            }
            Err(e) => panic!("write out: {e}"),
        }
    }

    /// What the syncer does: write out and take the job under the lock,
    /// fsync outside it, then mark.
    fn sync(&mut self) {
        self.write_out(false);
        let upto = self.model.written;
        self.chunk.take_sync_job().expect("job").run().expect("fsync");
        self.chunk.mark_durable(upto);
        self.model.durable = self.model.durable.max(upto);
    }

    /// Some writes, written out, synced and refused at random.
    fn churn(&mut self, n: usize) {
        for _ in 0..n {
            match self.rng.gen_range(0..20) {
                0..=11 => self.apply(),
                12..=14 => self.write_out(false),
                15..=16 => self.sync(),
                17 => {
                    // A refused write out only matters with something unwritten.
                    self.apply();
                    self.write_out(true);
                }
                _ => {}
            }
        }
    }
}

/// The tuple `("t")`: the parent of some of the harness's keys.
fn tuple_parent() -> Vec<u8> {
    monotable_proto::tuple::encode(&[monotable_proto::tuple::Element::String("t".into())])
        .expect("encodes")
}

fn tuple_child(i: usize) -> Vec<u8> {
    let mut key = tuple_parent();
    key.extend(
        monotable_proto::tuple::encode(&[monotable_proto::tuple::Element::Bytes(vec![0, i as u8])])
            .expect("encodes"),
    );
    key
}

/// Compares every key the model knows (and a few it never saw) at `seqs`,
/// and the hashed order with the keys live now.
fn check(chunk: &Chunk, model: &Model, seqs: &[u64], what: &str) {
    let hashed: std::collections::BTreeSet<Vec<u8>> =
        chunk.hashed_applied(&tuple_parent(), 0, 1000).keys.into_iter().map(|k| k.1).collect();
    let live: std::collections::BTreeSet<Vec<u8>> = model
        .keys()
        .filter(|k| k.starts_with(&tuple_parent()) && model.at(k, model.last).is_some())
        .cloned()
        .collect();
    assert_eq!(hashed, live, "{what}: hashed order");
    let mut keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    keys.push(b"absent".to_vec());
    for key in &keys {
        let latest = chunk.get(key, ReadAt::Latest).expect("get latest");
        assert_eq!(latest, model.at(key, chunk.durable_seq()), "{what}: latest {key:?}");
        let applied = chunk.get(key, ReadAt::Applied).expect("get applied");
        assert_eq!(applied, model.at(key, model.last), "{what}: applied {key:?}");
        for &s in seqs {
            let got = chunk.get(key, ReadAt::Snapshot { seq: s, pinned: true }).expect("get at");
            let want = model.at(key, s.min(chunk.durable_seq()));
            assert_eq!(got, want, "{what}: {key:?} at {s}");
        }
    }
    assert_eq!(chunk.last_seq(), model.last, "{what}: last seq");
}

fn reopen(dir: &Path, m: ChunkMeta, segment_max: u64) -> Chunk {
    Chunk::open(&desc(m), dir, segment_max).expect("reopen").0
}

fn tmp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn seeds() -> u64 {
    std::env::var("MONOTABLE_MAINTENANCE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60)
}

/// What a job's run looks like: how it is driven and where it may stop.
struct Plan {
    budget: usize,
    /// Stop after this many steps without finishing (a crash or an abort).
    abort_after: Option<usize>,
    bulk_sync: bool,
}

fn plan(rng: &mut StdRng) -> Plan {
    Plan {
        budget: [1, 64, 700, 5000, 1 << 20][rng.gen_range(0..5)],
        abort_after: rng.gen_bool(0.25).then(|| rng.gen_range(0..6)),
        bulk_sync: rng.gen_bool(0.5),
    }
}

fn run_compaction(seed: u64, cov: &mut Coverage) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let segment_max = [600, 3000, 1 << 20][seed as usize % 3];
    let mut h = Harness::new(seed, &dir, segment_max);
    let rounds = h.rng.gen_range(1..4);
    for round in 0..rounds {
        let warm = h.rng.gen_range(0..80);
        h.churn(warm);
        let what = format!("seed {seed} round {round}");
        // Pins and the stable seq at or below what is durable now, as the
        // clock hands them out.
        let (mut pins, stable) = h.retention();
        let plan = plan(&mut h.rng);
        let newest_before = newest_segment(&dir);
        let mut job = h.chunk.begin_compaction(&pins, stable).expect("begin");
        assert!(matches!(h.chunk.begin_compaction(&pins, stable), Err(ChunkError::Busy)));
        let mut steps = 0;
        let mut done = false;
        while !done {
            if plan.abort_after == Some(steps) {
                break;
            }
            done = h.chunk.compaction_step(&mut job, plan.budget).expect("step");
            steps += 1;
            let n = h.rng.gen_range(0..6);
            h.churn(n);
            // A pin taken meanwhile is at or above the stable seq.
            if h.rng.gen_bool(0.1) && h.model.durable >= stable {
                pins.push(h.rng.gen_range(stable..=h.model.durable));
            }
            if plan.bulk_sync && h.rng.gen_bool(0.3) {
                job.sync_bulk().expect("bulk sync");
            }
        }
        let mut seqs = pins.clone();
        seqs.push(stable);
        let newest = newest_segment(&dir);
        cov.rotated += u64::from(newest > newest_before);
        cov.rotations_capped +=
            u64::from(newest + 1 >= newest_before + super::chunk::BASE_ID_HEADROOM);
        if !done {
            cov.aborted += 1;
            drop(job);
            assert!(tmp_files(&dir).is_empty(), "{what}: an aborted job leaves no file");
            check(&h.chunk, &h.model, &seqs, &format!("{what} aborted"));
            continue;
        }
        if plan.bulk_sync {
            job.sync_bulk().expect("bulk sync");
        }
        cov.finished += 1;
        cov.unwritten_at_finish += u64::from(h.model.last > h.model.written);
        cov.undurable_at_finish += u64::from(h.model.written > h.chunk.durable_seq());
        let before = h.chunk.durable_seq();
        if h.rng.gen_bool(0.5) {
            // Built before the finish: the rewritten index takes it over.
            drop(h.chunk.hashed_applied(&tuple_parent(), 0, 1));
        }
        h.chunk.finish_compaction(job).expect("finish");
        // Removed outside the lock, or left to the next job or start.
        let superseded = h.chunk.take_superseded();
        if h.rng.gen_bool(0.5) {
            superseded.remove();
        } else {
            drop(superseded);
        }
        assert!(h.chunk.durable_seq() >= before);
        assert_eq!(h.chunk.durable_seq(), h.chunk.last_seq(), "{what}: all durable");
        h.model.written = h.model.last;
        h.model.durable = h.model.last;
        assert!(tmp_files(&dir).is_empty(), "{what}");
        check(&h.chunk, &h.model, &seqs, &what);
        // The job is gone: another may begin.
        drop(h.chunk.begin_compaction(&[], stable).expect("begin again"));
    }
    h.churn(20);
    cov.refused += h.refused;
    let model = {
        // Unwritten batches do not survive a crash.
        let mut m = h.model.clone();
        m.discard_unwritten();
        m.durable = m.written;
        m
    };
    drop(h.chunk);
    let c = reopen(&dir, meta(1, b"", None), segment_max);
    check(&c, &model, &[], &format!("seed {seed} reopened"));
}

#[test]
fn compaction_in_steps_beside_writes_matches_the_model() {
    let mut cov = Coverage::default();
    for seed in 0..seeds() {
        run_compaction(seed, &mut cov);
    }
    eprintln!("{cov:?}");
    assert!(
        cov.finished > 0
            && cov.aborted > 0
            && cov.rotated > 0
            && cov.rotations_capped > 0
            && cov.unwritten_at_finish > 0
            && cov.undurable_at_finish > 0
            && cov.refused > 0,
        "the runs miss a case: {cov:?}"
    );
}

fn run_split(seed: u64, cov: &mut Coverage) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let segment_max = [600, 3000, 1 << 20][seed as usize % 3];
    let mut h = Harness::new(seed, &dir, segment_max);
    let warm = h.rng.gen_range(2..120);
    h.churn(warm);
    h.sync();
    if h.rng.gen_bool(0.5) {
        let stable = h.model.durable;
        h.horizon = stable;
        h.chunk.compact(&[], stable).expect("compact");
        h.model.written = h.model.last;
        h.model.durable = h.model.last;
    }
    let what = format!("split seed {seed}");
    let split_key = h.keys[h.rng.gen_range(1..h.keys.len())].clone();
    let split_key = if split_key.is_empty() { b"k".to_vec() } else { split_key };
    let (pins, stable) = h.retention();
    let lower_dir = tmp.path().join("l");
    let upper_dir = tmp.path().join("u");
    let lower_meta = meta(2, b"", Some(&split_key));
    let upper_meta = meta(3, &split_key, None);
    let plan = plan(&mut h.rng);
    let newest_before = newest_segment(&dir);
    let mut job = h
        .chunk
        .begin_split(
            &split_key,
            &pins,
            stable,
            (lower_meta.clone(), &lower_dir),
            (upper_meta.clone(), &upper_dir),
            segment_max,
        )
        .expect("begin split");
    assert!(matches!(h.chunk.begin_compaction(&pins, stable), Err(ChunkError::Busy)));
    let mut steps = 0;
    let mut done = false;
    while !done {
        if plan.abort_after == Some(steps) {
            break;
        }
        done = h.chunk.split_step(&mut job, plan.budget).expect("step");
        steps += 1;
        let n = h.rng.gen_range(0..6);
        h.churn(n);
        if plan.bulk_sync && h.rng.gen_bool(0.3) {
            job.sync_bulk().expect("bulk sync");
        }
    }
    let mut seqs = pins.clone();
    seqs.push(stable);
    cov.rotated += u64::from(newest_segment(&dir) > newest_before);
    cov.refused += h.refused;
    if !done {
        cov.aborted += 1;
        drop(job);
        assert!(!lower_dir.exists() && !upper_dir.exists(), "{what}: an aborted split is gone");
        check(&h.chunk, &h.model, &seqs, &format!("{what} aborted"));
        let mut m = h.model.clone();
        m.discard_unwritten();
        m.durable = m.written;
        drop(h.chunk);
        let c = reopen(&dir, meta(1, b"", None), segment_max);
        check(&c, &m, &[], &format!("{what} aborted, reopened"));
        return;
    }
    cov.finished += 1;
    cov.unwritten_at_finish += u64::from(h.model.last > h.model.written);
    cov.undurable_at_finish += u64::from(h.model.written > h.chunk.durable_seq());
    let (lower, upper) = h.chunk.finish_split(job).expect("finish split");
    // Everything the old chunk logged is durable in the halves.
    let mut model = h.model.clone();
    model.written = model.last;
    model.durable = model.last;
    let halves = |lower: &Chunk, upper: &Chunk, seqs: &[u64], what: &str| {
        for c in [lower, upper] {
            assert_eq!(c.durable_seq(), c.last_seq(), "{what}: halves are durable");
            assert_eq!(c.last_seq(), model.last, "{what}");
        }
        let (lo, hi): (Model, Model) = {
            let mut lo = model.clone();
            let mut hi = model.clone();
            lo.history.retain(|k, _| k.as_slice() < split_key.as_slice());
            hi.history.retain(|k, _| k.as_slice() >= split_key.as_slice());
            (lo, hi)
        };
        check(lower, &lo, seqs, &format!("{what} lower"));
        check(upper, &hi, seqs, &format!("{what} upper"));
        // Each half holds its own keys only, at any snapshot it has.
        let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        for (c, is_lower) in [(lower, true), (upper, false)] {
            let scan = c.scan(all, ReadAt::Applied, false, usize::MAX, usize::MAX).expect("scan");
            for r in scan.records {
                assert_eq!(r.key.as_ref() < split_key.as_slice(), is_lower, "{what}: {:?}", r.key);
            }
        }
    };
    halves(&lower, &upper, &seqs, &what);
    drop((lower, upper));
    let lower = reopen(&lower_dir, lower_meta, segment_max);
    let upper = reopen(&upper_dir, upper_meta, segment_max);
    halves(&lower, &upper, &[], &format!("{what} reopened"));
}

#[test]
fn split_in_steps_beside_writes_matches_the_model() {
    let mut cov = Coverage::default();
    for seed in 0..seeds() {
        run_split(seed, &mut cov);
    }
    eprintln!("{cov:?}");
    assert!(
        cov.finished > 0
            && cov.aborted > 0
            && cov.rotated > 0
            && cov.unwritten_at_finish > 0
            && cov.undurable_at_finish > 0
            && cov.refused > 0,
        "the runs miss a case: {cov:?}"
    );
}

fn put(k: &str, v: &str) -> WriteOp {
    WriteOp::Put { key: k.as_bytes().to_vec().into(), value: v.as_bytes().to_vec().into() }
}

fn value(c: &Chunk, k: &str, at: ReadAt) -> Option<String> {
    c.get(k.as_bytes(), at).expect("get").map(|v| String::from_utf8(v).expect("utf8"))
}

fn durable(c: &mut Chunk, seq: u64) {
    c.write_out().expect("write");
    c.take_sync_job().expect("job").run().expect("sync");
    c.mark_durable(seq);
}

// A write refused (cut back) between steps frees its bytes, and the next
// batch is logged at the same offsets. Had the job recorded the log's end
// with the unwritten bytes counted, that batch, lying "before" the end,
// would be copied by neither the key-by-key pass (its key already passed)
// nor the finish: the job records only what was written.
#[test]
fn a_write_refused_between_steps_loses_nothing_logged_after_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, 1 << 20).expect("create");
    c.apply_batch(1, &[put("a", "1"), put("b", "1")]).expect("apply");
    durable(&mut c, 1);
    c.apply_batch(2, &[put("z", "doomed")]).expect("apply");
    let mut job = c.begin_compaction(&[], 1).expect("begin");
    // Budget 1: one key per step, so "a" is behind the cursor.
    assert!(!c.compaction_step(&mut job, 1).expect("step"));
    c.fail_next_write_out_for_tests();
    assert!(c.write_out().is_err());
    c.apply_batch(3, &[put("a", "2")]).expect("apply");
    c.write_out().expect("write");
    while !c.compaction_step(&mut job, 1).expect("step") {}
    c.finish_compaction(job).expect("finish");
    assert_eq!(value(&c, "a", ReadAt::Latest).as_deref(), Some("2"));
    assert_eq!(value(&c, "z", ReadAt::Applied), None);
    drop(c);
    let c = reopen(&dir, meta(1, b"", None), 1 << 20);
    assert_eq!(value(&c, "a", ReadAt::Latest).as_deref(), Some("2"));
    assert_eq!(value(&c, "b", ReadAt::Latest).as_deref(), Some("1"));
    assert_eq!(value(&c, "z", ReadAt::Latest), None);
    assert_eq!(c.last_seq(), 3);
}

/// The log rotates while a compaction runs, past the ids the compaction
/// reserved (after which the active segment grows): the output still takes
/// every segment's entries and supersedes them all.
#[test]
fn a_compaction_outlives_many_rotations() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let segment_max = 200;
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, segment_max).expect("create");
    for seq in 1..=10 {
        c.apply_batch(seq, &[put(&format!("k{seq:02}"), &"v".repeat(150))]).expect("apply");
        durable(&mut c, seq);
    }
    let mut job = c.begin_compaction(&[], 10).expect("begin");
    let newest = newest_segment(&dir);
    for seq in 11..=60 {
        let v = format!("{seq}{}", "x".repeat(150));
        c.apply_batch(seq, &[put(&format!("k{:02}", seq % 13), &v)]).expect("apply");
        c.write_out().expect("write");
        let _ = c.compaction_step(&mut job, 100).expect("step");
    }
    // The reserved id is never taken by a rotation.
    let rotated = newest_segment(&dir);
    assert_eq!(rotated, newest + super::chunk::BASE_ID_HEADROOM - 1);
    c.apply_batch(61, &[put("last", "unwritten")]).expect("apply");
    while !c.compaction_step(&mut job, 100).expect("step") {}
    c.finish_compaction(job).expect("finish");
    c.take_superseded().remove();
    assert_eq!(super::tests::segments(&dir).len(), 1);
    assert_eq!(c.durable_seq(), 61);
    let check = |c: &Chunk| {
        for seq in 48..=60u64 {
            let k = format!("k{:02}", seq % 13);
            let v = format!("{seq}{}", "x".repeat(150));
            assert_eq!(value(c, &k, ReadAt::Latest), Some(v), "{k}");
        }
        assert_eq!(value(c, "last", ReadAt::Latest).as_deref(), Some("unwritten"));
    };
    check(&c);
    // Rotation goes on above the new base.
    for seq in 62..=70 {
        c.apply_batch(seq, &[put("after", &"w".repeat(150))]).expect("apply");
        durable(&mut c, seq);
    }
    assert!(super::tests::segments(&dir).len() > 1);
    drop(c);
    let c = reopen(&dir, meta(1, b"", None), segment_max);
    check(&c);
    assert_eq!(c.last_seq(), 70);
}

/// A process that dies in the middle of a job (nothing dropped, nothing
/// removed) leaves the chunk reopenable with everything written, and the
/// job's files are removed (compaction) or ignored (split directories,
/// which no catalog names).
#[test]
fn a_crash_in_the_middle_of_a_job_leaves_the_chunk_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, 300).expect("create");
    for seq in 1..=30 {
        c.apply_batch(seq, &[put(&format!("k{:02}", seq % 7), &format!("{seq}"))]).expect("apply");
        durable(&mut c, seq);
    }
    let mut job = c.begin_compaction(&[], 30).expect("begin");
    assert!(!c.compaction_step(&mut job, 1).expect("step"));
    job.sync_bulk().expect("bulk");
    c.apply_batch(31, &[put("k00", "31")]).expect("apply");
    c.write_out().expect("write");
    assert!(!tmp_files(&dir).is_empty(), "the output is staged");
    // The process dies: no destructor runs.
    std::mem::forget(job);
    let lower = tmp.path().join("l");
    let upper = tmp.path().join("u");
    let split = c.begin_split(
        b"k03",
        &[],
        30,
        (meta(2, b"", Some(b"k03")), &lower),
        (meta(3, b"k03", None), &upper),
        300,
    );
    assert!(matches!(split, Err(ChunkError::Busy)), "the leaked job still counts");
    drop(c);
    let mut c = reopen(&dir, meta(1, b"", None), 300);
    assert!(tmp_files(&dir).is_empty());
    assert_eq!(value(&c, "k00", ReadAt::Latest).as_deref(), Some("31"));
    assert_eq!(value(&c, "k06", ReadAt::Latest).as_deref(), Some("27"));
    let mut job = c
        .begin_split(
            b"k03",
            &[],
            31,
            (meta(2, b"", Some(b"k03")), &lower),
            (meta(3, b"k03", None), &upper),
            300,
        )
        .expect("begin split");
    assert!(!c.split_step(&mut job, 1).expect("step"));
    std::mem::forget(job);
    drop(c);
    let c = reopen(&dir, meta(1, b"", None), 300);
    assert_eq!(value(&c, "k00", ReadAt::Latest).as_deref(), Some("31"));
    // The halves' directories hold only a staged segment: not chunks.
    assert!(Chunk::open(&desc(meta(2, b"", Some(b"k03"))), &lower, 300).is_err());
}

/// After a split finished, the old chunk is as it was: readable, and
/// destroyable by the caller once the catalog names the halves.
#[test]
fn a_finished_split_leaves_the_old_chunk_untouched() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, 1 << 20).expect("create");
    c.apply_batch(1, &[put("a", "1"), put("m", "1"), put("z", "1")]).expect("apply");
    durable(&mut c, 1);
    let mut job = c
        .begin_split(
            b"m",
            &[],
            1,
            (meta(2, b"", Some(b"m")), &tmp.path().join("l")),
            (meta(3, b"m", None), &tmp.path().join("u")),
            1 << 20,
        )
        .expect("begin");
    while !c.split_step(&mut job, 1).expect("step") {}
    // Written during the split, not yet written out: in the upper half.
    c.apply_batch(2, &[put("q", "2")]).expect("apply");
    let (lower, upper) = c.finish_split(job).expect("finish");
    assert_eq!(value(&upper, "q", ReadAt::Latest).as_deref(), Some("2"));
    assert_eq!(value(&lower, "q", ReadAt::Applied), None);
    assert_eq!(value(&c, "m", ReadAt::Latest).as_deref(), Some("1"));
    assert_eq!(value(&c, "q", ReadAt::Applied).as_deref(), Some("2"));
    assert_eq!(c.durable_seq(), 1, "the old chunk's own durability is its syncer's");
    c.destroy().expect("destroy");
    assert!(!dir.exists());
    assert_eq!(value(&upper, "m", ReadAt::Latest).as_deref(), Some("1"));
}

/// Lock hold times of a compaction and of a split in steps while a writer
/// thread applies, writes out and syncs batches under the write lock, and
/// of the same rewrites in one go under the read lock (as before steps).
/// Not a test; run in release, e.g.:
///
/// ```text
/// MONOTABLE_MEASURE_LIVE_MB=13 cargo test --release -j1 -p monotable-node \
///     measure_rewrite_lock_times -- --ignored --nocapture
/// ```
#[test]
#[ignore]
fn measure_rewrite_lock_times() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, Instant};

    let env = |name: &str, default: u64| {
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let live_mb = env("MONOTABLE_MEASURE_LIVE_MB", 13);
    let budget = env("MONOTABLE_MEASURE_BUDGET", super::chunk::STEP_BUDGET_BYTES as u64) as usize;
    let pace_us = env("MONOTABLE_MEASURE_WRITER_PACE_US", 100);
    // A pause between steps, as a caller that yields between them has.
    let gap_us = env("MONOTABLE_MEASURE_STEP_GAP_US", 0);
    let value_len = 1000usize;
    let keys = live_mb * 1_000_000 / (value_len as u64 + 40);
    let segment_max = 16 << 20;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let key = move |i: u64| format!("key{i:010}");
    let val = move |seq: u64| {
        let mut v = format!("{seq:020}").into_bytes();
        v.resize(value_len, b'v');
        v
    };
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, segment_max).expect("create");
    // Every key twice: half the log is garbage.
    let mut seq = 0u64;
    let fill = Instant::now();
    for _ in 0..2 {
        for start in (0..keys).step_by(64) {
            seq += 1;
            let ops: Vec<WriteOp> = (start..(start + 64).min(keys))
                .map(|i| WriteOp::Put { key: key(i).into_bytes().into(), value: val(seq).into() })
                .collect();
            c.apply_batch(seq, &ops).expect("apply");
            c.write_out().expect("write");
            if seq.is_multiple_of(64) {
                durable(&mut c, seq);
            }
        }
    }
    durable(&mut c, seq);
    eprintln!(
        "filled {keys} keys: live {:.1} MB, log {:.1} MB in {:.1?}",
        c.live_bytes() as f64 / 1e6,
        c.log_bytes() as f64 / 1e6,
        fill.elapsed()
    );

    let cell = Arc::new(RwLock::new(c));
    let next_seq = Arc::new(AtomicU64::new(seq + 1));
    let applied = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Every wait of the writer for the lock, in µs.
    let waits = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    // The writer's fsyncs, in µs: a rewrite's output in the page cache may
    // slow them down.
    let fsyncs = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let wait_summary = {
        let waits = waits.clone();
        let fsyncs = fsyncs.clone();
        move || {
            let f = std::mem::take(&mut *fsyncs.lock().expect("fsyncs"));
            let f_max = f.iter().max().map_or(0.0, |&v| v as f64 / 1e3);
            let f_mean = f.iter().sum::<u64>() as f64 / f.len().max(1) as f64 / 1e3;
            let mut w = std::mem::take(&mut *waits.lock().expect("waits"));
            w.sort_unstable();
            let at = |q: f64| w.get(((w.len() as f64 * q) as usize).min(w.len().saturating_sub(1)));
            let ms = |v: Option<&u64>| v.map_or(0.0, |&v| v as f64 / 1e3);
            format!(
                "writer's waits for the lock: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} \
                 batches; its fsyncs: mean {f_mean:.1} ms, max {f_max:.1} ms",
                ms(at(0.5)),
                ms(at(0.99)),
                ms(w.last()),
                w.len()
            )
        }
    };
    // The writer: one 1 KB put per batch, written out at once (as with
    // `--fsync never|interval`), synced every 16 batches as the syncer
    // would: write out and take the job under the lock, fsync outside it.
    let writer = {
        let (cell, next_seq, applied, stop, waits, fsyncs) = (
            cell.clone(),
            next_seq.clone(),
            applied.clone(),
            stop.clone(),
            waits.clone(),
            fsyncs.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut c = cell.write().expect("lock");
                waits.lock().expect("waits").push(t.elapsed().as_micros() as u64);
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let k = key((seq * 7919) % keys);
                c.apply_batch(
                    seq,
                    &[WriteOp::Put { key: k.into_bytes().into(), value: val(seq).into() }],
                )
                .expect("apply");
                c.write_out().expect("write");
                applied.fetch_add(1, Ordering::Relaxed);
                n += 1;
                if n.is_multiple_of(16) {
                    let job = c.take_sync_job().expect("job");
                    drop(c);
                    let t = Instant::now();
                    job.run().expect("fsync");
                    fsyncs.lock().expect("fsyncs").push(t.elapsed().as_micros() as u64);
                    cell.write().expect("lock").mark_durable(seq);
                } else {
                    drop(c);
                }
                std::thread::sleep(Duration::from_micros(pace_us));
            }
        })
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let retention = |c: &Chunk| (vec![], c.durable_seq());

    // The writer alone: how long it waits for the lock with no job (the
    // machine's scheduling noise).
    std::thread::sleep(Duration::from_millis(100));
    let _ = wait_summary();
    std::thread::sleep(Duration::from_millis(500));
    eprintln!("writer alone for 500 ms: {}", wait_summary());

    // Compaction in steps.
    let _ = wait_summary();
    let total = Instant::now();
    let (mut job, begin) = {
        let mut c = cell.write().expect("lock");
        let t = Instant::now();
        let (pins, stable) = retention(&c);
        (c.begin_compaction(&pins, stable).expect("begin"), t.elapsed())
    };
    let (mut steps, mut step_max, mut step_sum) = (0u32, Duration::ZERO, Duration::ZERO);
    let mut applied_at_step;
    loop {
        let c = cell.read().expect("lock");
        let t = Instant::now();
        let done = c.compaction_step(&mut job, budget).expect("step");
        let d = t.elapsed();
        applied_at_step = applied.load(Ordering::Relaxed);
        drop(c);
        std::thread::sleep(Duration::from_micros(gap_us));
        steps += 1;
        step_max = step_max.max(d);
        step_sum += d;
        if done {
            break;
        }
    }
    let t = Instant::now();
    job.sync_bulk().expect("bulk");
    let bulk = t.elapsed();
    let tail_before = applied_at_step;
    let (finish, tail) = {
        let mut c = cell.write().expect("lock");
        let tail = applied.load(Ordering::Relaxed);
        let t = Instant::now();
        c.finish_compaction(job).expect("finish");
        let superseded = c.take_superseded();
        let finish = t.elapsed();
        drop(c);
        let t = Instant::now();
        superseded.remove();
        eprintln!("removing the superseded segments: {:.1} ms (no lock)", ms(t.elapsed()));
        (finish, tail)
    };
    let total = total.elapsed();
    eprintln!(
        "compaction in steps (budget {budget} B): begin {:.3} ms (write lock), {steps} steps \
         max {:.3} ms sum {:.1} ms (read lock), bulk fsync {:.1} ms (no lock), finish {:.3} ms \
         (write lock, tail of {} batches logged since the last step), total {:.1} ms; {}",
        ms(begin),
        ms(step_max),
        ms(step_sum),
        ms(bulk),
        ms(finish),
        tail - tail_before,
        ms(total),
        wait_summary(),
    );
    {
        let c = cell.read().expect("lock");
        eprintln!(
            "after: live {:.1} MB, log {:.1} MB",
            c.live_bytes() as f64 / 1e6,
            c.log_bytes() as f64 / 1e6
        );
    }

    // Split in steps.
    std::thread::sleep(Duration::from_millis(200));
    let _ = wait_summary();
    let lower_dir = tmp.path().join("l");
    let upper_dir = tmp.path().join("u");
    // The caller finds the split key first (a walk of the index).
    let k = cell.read().expect("lock").split_key().expect("splittable");
    let total = Instant::now();
    let (mut job, begin) = {
        let mut c = cell.write().expect("lock");
        let t = Instant::now();
        let (pins, stable) = retention(&c);
        let job = c
            .begin_split(
                &k,
                &pins,
                stable,
                (meta(2, b"", Some(&k)), &lower_dir),
                (meta(3, &k, None), &upper_dir),
                segment_max,
            )
            .expect("begin split");
        (job, t.elapsed())
    };
    let (mut steps, mut step_max, mut step_sum) = (0u32, Duration::ZERO, Duration::ZERO);
    let mut applied_at_step;
    loop {
        let c = cell.read().expect("lock");
        let t = Instant::now();
        let done = c.split_step(&mut job, budget).expect("step");
        let d = t.elapsed();
        applied_at_step = applied.load(Ordering::Relaxed);
        drop(c);
        std::thread::sleep(Duration::from_micros(gap_us));
        steps += 1;
        step_max = step_max.max(d);
        step_sum += d;
        if done {
            break;
        }
    }
    let t = Instant::now();
    job.sync_bulk().expect("bulk");
    let bulk = t.elapsed();
    let tail_before = applied_at_step;
    let (finish, tail, halves) = {
        let mut c = cell.write().expect("lock");
        let tail = applied.load(Ordering::Relaxed);
        let t = Instant::now();
        let halves = c.finish_split(job).expect("finish split");
        (t.elapsed(), tail, halves)
    };
    let total = total.elapsed();
    eprintln!(
        "split in steps (budget {budget} B): begin {:.3} ms (write lock), {steps} steps \
         max {:.3} ms sum {:.1} ms (read lock), bulk fsync {:.1} ms (no lock), finish {:.3} ms \
         (write lock, tail of {} batches logged since the last step), total {:.1} ms; {}",
        ms(begin),
        ms(step_max),
        ms(step_sum),
        ms(bulk),
        ms(finish),
        tail - tail_before,
        ms(total),
        wait_summary(),
    );
    drop(halves);
    fs::remove_dir_all(&lower_dir).expect("rm");
    fs::remove_dir_all(&upper_dir).expect("rm");

    // The same rewrites in one go under the read lock, as before steps
    // (the writer stopped: that path needs everything durable).
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let mut c = Arc::try_unwrap(cell).ok().expect("sole owner").into_inner().expect("lock");
    let last = c.last_seq();
    durable(&mut c, last);
    // Make garbage again, as much as before.
    for start in (0..keys).step_by(64) {
        let seq = next_seq.fetch_add(1, Ordering::Relaxed);
        let ops: Vec<WriteOp> = (start..(start + 64).min(keys))
            .map(|i| WriteOp::Put { key: key(i).into_bytes().into(), value: val(seq).into() })
            .collect();
        c.apply_batch(seq, &ops).expect("apply");
        c.write_out().expect("write");
        if seq.is_multiple_of(64) {
            durable(&mut c, seq);
        }
    }
    let last = c.last_seq();
    durable(&mut c, last);
    let t = Instant::now();
    let prepared = c.prepare_compaction(&[], last).expect("prepare");
    let prepare = t.elapsed();
    let t = Instant::now();
    c.install_compaction(prepared).expect("install");
    let install = t.elapsed();
    eprintln!(
        "compaction in one go: prepare_compaction {:.1} ms (read lock), install {:.3} ms \
         (write lock), live {:.1} MB",
        ms(prepare),
        ms(install),
        c.live_bytes() as f64 / 1e6
    );
    let k = c.split_key().expect("splittable");
    let t = Instant::now();
    let halves = c
        .split(
            &k,
            &[],
            last,
            (meta(2, b"", Some(&k)), &lower_dir),
            (meta(3, &k, None), &upper_dir),
            segment_max,
        )
        .expect("split");
    eprintln!("split in one go: {:.1} ms (read lock)", ms(t.elapsed()));
    drop(halves);
}

/// The segments a compaction superseded are the caller's to remove (outside
/// the lock); left behind, the next compaction or the next start removes
/// them, and nothing reads them meanwhile.
#[test]
fn superseded_segments_left_behind_are_removed_later() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, 300).expect("create");
    let fill = |c: &mut Chunk, seqs: std::ops::RangeInclusive<u64>| {
        for seq in seqs {
            c.apply_batch(seq, &[put(&format!("k{:02}", seq % 5), &"v".repeat(100))])
                .expect("apply");
            durable(c, seq);
        }
    };
    fill(&mut c, 1..=20);
    let before = super::tests::segments(&dir).len();
    assert!(before > 2);
    let job = c.begin_compaction(&[], 20).expect("begin");
    let mut job = job;
    while !c.compaction_step(&mut job, 1 << 20).expect("step") {}
    c.finish_compaction(job).expect("finish");
    assert_eq!(super::tests::segments(&dir).len(), before + 1, "left for the caller");
    fill(&mut c, 21..=30);
    let mut job = c.begin_compaction(&[], 30).expect("begin");
    let newest = newest_segment(&dir);
    assert!(super::tests::segments(&dir).iter().all(|p| {
        p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0)
            > newest - super::chunk::BASE_ID_HEADROOM
    }));
    while !c.compaction_step(&mut job, 1 << 20).expect("step") {}
    c.finish_compaction(job).expect("finish");
    drop(c.take_superseded());
    drop(c);
    let c = reopen(&dir, meta(1, b"", None), 300);
    assert_eq!(super::tests::segments(&dir).len(), 1);
    assert_eq!(value(&c, "k00", ReadAt::Latest).as_deref(), Some(&*"v".repeat(100)));
}

// Postmortem: the one-go compaction (kept for the single-writer actor) took
// no part in the one-job rule, and reserved the same segment id as a
// running step-wise job: it truncated that job's staged output, which then
// went in charge holding garbage. It is refused now, and a staged segment
// is never opened twice.
#[test]
fn a_one_go_compaction_beside_a_running_job_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let mut c = Chunk::create(&desc(meta(1, b"", None)), &dir, 1 << 20).expect("create");
    for seq in 1..=20 {
        c.apply_batch(seq, &[put(&format!("k{:02}", seq % 6), &format!("{seq}"))]).expect("apply");
        durable(&mut c, seq);
    }
    let mut job = c.begin_compaction(&[], 20).expect("begin");
    assert!(!c.compaction_step(&mut job, 1).expect("step"));
    assert!(matches!(c.prepare_compaction(&[], 20), Err(ChunkError::Busy)));
    while !c.compaction_step(&mut job, 1).expect("step") {}
    c.finish_compaction(job).expect("finish");
    c.take_superseded().remove();
    drop(c);
    let c = reopen(&dir, meta(1, b"", None), 1 << 20);
    assert_eq!(value(&c, "k02", ReadAt::Latest).as_deref(), Some("20"));
    assert_eq!(value(&c, "k01", ReadAt::Latest).as_deref(), Some("19"));
}
