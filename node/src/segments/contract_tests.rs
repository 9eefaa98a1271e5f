//! The [`SegmentReader`] contract, checked against a transport, and the
//! copy's verification against damaged, cut and failed reads.
//!
//! [`check_contract`] runs against any reader of an owner's [`Regions`]:
//! the local one here, the TCP transport in `cluster::transport`'s tests
//! (over a real native-protocol connection), and RDMA where a device
//! exists.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::storage::chunk_log::{create_chunk_dir, ChunkLog};
use crate::storage::entry::EntryRef;

/// A log of `batches` random batches (puts, deletes, repeated keys, empty
/// and large values, NUL bytes) in segments of `segment_bytes`, written
/// out; returns it and what it holds (the oracle).
pub(crate) fn sample_log(
    dir: &Path,
    seed: u64,
    batches: usize,
    segment_bytes: u64,
) -> (ChunkLog, BTreeMap<Vec<u8>, Vec<u8>>) {
    create_chunk_dir(dir).expect("a chunk directory");
    let mut log = ChunkLog::create(dir, segment_bytes).expect("a log");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oracle = BTreeMap::new();
    for batch in 0..batches {
        let seq = batch as u64 + 1;
        let n = rng.gen_range(1..5);
        let mut owned: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for _ in 0..n {
            let key = vec![0u8, rng.gen_range(0..40u8), b'k'];
            let value = match rng.gen_range(0..10) {
                0 => None,
                1 => Some(vec![0u8; rng.gen_range(0..70_000)]),
                _ => Some((0..rng.gen_range(0..64)).map(|_| rng.gen()).collect()),
            };
            owned.push((key, value));
        }
        let mut entries: Vec<EntryRef<'_>> = owned
            .iter()
            .enumerate()
            .map(|(i, (k, v))| EntryRef {
                seq,
                key: k,
                value: v.as_deref(),
                expiry_ms: 0,
                batch_end: i + 1 == owned.len(),
            })
            .collect();
        log.append_batch(&mut entries).expect("appended");
        log.write_out().expect("written");
        for (k, v) in owned {
            match v {
                Some(v) => oracle.insert(k, v),
                None => oracle.remove(&k),
            };
        }
    }
    (log, oracle)
}

fn as_map(records: Vec<monotable_proto::Record>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    records.into_iter().map(|r| (r.key.into_vec(), r.value.into_vec())).collect()
}

/// Asserts that the records folded from a copy are the oracle's, naming
/// the first key that differs (not the whole maps: values are large).
fn assert_holds(
    records: Vec<monotable_proto::Record>,
    oracle: &BTreeMap<Vec<u8>, Vec<u8>>,
    what: &str,
) {
    let got = as_map(records);
    let keys: std::collections::BTreeSet<&Vec<u8>> = got.keys().chain(oracle.keys()).collect();
    for key in keys {
        let (g, w) = (got.get(key), oracle.get(key));
        assert!(
            g == w,
            "{what}: key {key:?}: copied {:?} bytes, the log holds {:?} bytes ({} keys copied, {} held)",
            g.map(Vec::len),
            w.map(Vec::len),
            got.len(),
            oracle.len()
        );
    }
}

/// The contract of [`SegmentReader`] (see its docs), for `reader`, which
/// reads the regions of `owner`: registered images read back exactly, at
/// any offset and length; bad reads refused with the right error; a copy
/// through it folds to what the log holds.
pub(crate) async fn check_contract(reader: Arc<dyn SegmentReader>, owner: &Regions, dir: &Path) {
    let (log, oracle) = sample_log(&dir.join("log"), 7, 400, 64 * 1024);
    let images = log.images();
    assert!(images.len() > 2, "several segments: {}", images.len());
    let regions: Vec<RegionRef> =
        images.iter().map(|i| owner.register(i).expect("registered")).collect();
    let mut rng = StdRng::seed_from_u64(11);
    for (image, region) in images.iter().zip(&regions) {
        let whole = std::fs::read(&image.path).expect("the segment file");
        assert_eq!(whole.len() as u64, region.len, "the region is the whole written segment");
        for _ in 0..20 {
            let offset = rng.gen_range(0..region.len);
            let len = rng
                .gen_range(1..=(region.len - offset).min(u64::from(SEGMENT_READ_MAX_BYTES)))
                as u32;
            let got = reader.read(region, offset, len).await.expect("a read inside the region");
            assert_eq!(got, whole[offset as usize..][..len as usize], "bytes at {offset}+{len}");
        }
    }
    let r = &regions[0];
    let out = |res: Result<Vec<u8>, ReadError>| matches!(res, Err(ReadError::OutOfBounds { .. }));
    assert!(out(reader.read(r, 0, 0).await), "an empty read");
    assert!(out(reader.read(r, r.len - 1, 2).await), "past the end");
    assert!(out(reader.read(r, u64::MAX, 1).await), "an offset that overflows");
    if r.len > u64::from(SEGMENT_READ_MAX_BYTES) {
        assert!(out(reader.read(r, 0, SEGMENT_READ_MAX_BYTES + 1).await), "over the limit");
    }
    let unknown = RegionRef { region: u64::MAX, ..r.clone() };
    assert!(matches!(reader.read(&unknown, 0, 1).await, Err(ReadError::Gone { .. })));
    let other_process = RegionRef { incarnation: r.incarnation.wrapping_add(1), ..r.clone() };
    assert!(matches!(reader.read(&other_process, 0, 1).await, Err(ReadError::Gone { .. })));

    let staging_dir = dir.join("staging");
    let mut staging = Staging::open(&staging_dir).expect("staging");
    let progress = CopyProgress::new(r.owner);
    staging.copy(&reader, &regions, &progress).await.expect("copied");
    assert_eq!(progress.copied_bytes(), progress.total_bytes());
    let folded = staging.fold(&regions, b"", None).expect("folded");
    assert_holds(folded.to_records(), &oracle, "the copy");
}

#[tokio::test]
async fn the_local_reader_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("a directory");
    let owner = Arc::new(Regions::new(1, "local".into()));
    check_contract(owner.clone(), &owner, dir.path()).await;
}

/// What a faulty path does to reads.
#[derive(Default)]
struct Faults {
    flipped: AtomicU64,
    cut: AtomicU64,
    failed: AtomicU64,
}

/// A reader over `inner` that damages, cuts or fails about one read in
/// `one_in`, with a fault of `kinds` (0: a flipped bit, 1: cut short,
/// 2: failed).
struct Faulty {
    inner: Arc<dyn SegmentReader>,
    rng: Mutex<StdRng>,
    one_in: u32,
    kinds: std::ops::Range<u32>,
    faults: Arc<Faults>,
}

impl SegmentReader for Faulty {
    fn read(
        &self,
        region: &RegionRef,
        offset: u64,
        len: u32,
    ) -> crate::consensus::futures_lite::BoxedFuture<Result<Vec<u8>, ReadError>> {
        let (inner, region) = (self.inner.clone(), region.clone());
        let (fault, at) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let fault =
                if rng.gen_ratio(1, self.one_in) { rng.gen_range(self.kinds.clone()) } else { 3 };
            (fault, rng.gen::<usize>())
        };
        let faults = self.faults.clone();
        Box::pin(async move {
            let mut bytes = inner.read(&region, offset, len).await?;
            match fault {
                0 if !bytes.is_empty() => {
                    let i = at % bytes.len();
                    bytes[i] ^= 1 << (at % 8);
                    faults.flipped.fetch_add(1, Ordering::Relaxed);
                }
                1 => {
                    bytes.truncate(at % (bytes.len() + 1));
                    faults.cut.fetch_add(1, Ordering::Relaxed);
                }
                2 => {
                    faults.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(ReadError::Failed {
                        owner: region.owner,
                        reason: "injected".into(),
                    });
                }
                _ => {}
            }
            Ok(bytes)
        })
    }
}

/// Damaged, cut and failed reads are detected by the entries' checksums
/// (or seen as bytes not yet there) and read again: every copy ends equal
/// to what the log holds.
#[tokio::test]
async fn damaged_cut_and_failed_reads_are_detected_and_read_again() {
    let dir = tempfile::tempdir().expect("a directory");
    let owner = Arc::new(Regions::new(1, "local".into()));
    let (log, oracle) = sample_log(&dir.path().join("log"), 3, 300, 32 * 1024);
    let regions: Vec<RegionRef> =
        log.images().iter().map(|i| owner.register(i).expect("registered")).collect();
    let faults = Arc::new(Faults::default());
    for seed in 0..8 {
        let reader: Arc<dyn SegmentReader> = Arc::new(Faulty {
            inner: owner.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            one_in: 4,
            kinds: 0..3,
            faults: faults.clone(),
        });
        let mut staging = Staging::open(&dir.path().join("staging")).expect("staging");
        let progress = CopyProgress::new(1);
        staging.copy(&reader, &regions, &progress).await.expect("copied despite the faults");
        let folded = staging.fold(&regions, b"", None).expect("folded");
        assert_holds(folded.to_records(), &oracle, &format!("seed {seed}"));
    }
    for (what, n) in
        [("flipped", &faults.flipped), ("cut", &faults.cut), ("failed", &faults.failed)]
    {
        assert!(n.load(Ordering::Relaxed) > 0, "some reads were {what}");
    }
}

/// A path that damages every read ends the copy with an error naming the
/// place, after a bounded number of reads.
#[tokio::test]
async fn a_path_that_always_damages_fails_the_copy() {
    let dir = tempfile::tempdir().expect("a directory");
    let owner = Arc::new(Regions::new(1, "local".into()));
    let (log, _) = sample_log(&dir.path().join("log"), 5, 50, 1 << 20);
    let regions: Vec<RegionRef> =
        log.images().iter().map(|i| owner.register(i).expect("registered")).collect();
    let reader: Arc<dyn SegmentReader> = Arc::new(Faulty {
        inner: owner.clone(),
        rng: Mutex::new(StdRng::seed_from_u64(1)),
        one_in: 1,
        kinds: 0..1,
        faults: Arc::default(),
    });
    let mut staging = Staging::open(&dir.path().join("staging")).expect("staging");
    let err = staging
        .copy(&reader, &regions, &CopyProgress::new(1))
        .await
        .expect_err("every read is damaged");
    assert!(matches!(err, CopyError::Corrupt { .. }), "{err}");
}

/// Bytes listed while still in the log's buffer are waited for; a region
/// stays readable after its file is unlinked (a compaction superseded it);
/// its lease ends when nobody lists or reads it.
#[tokio::test]
async fn unwritten_bytes_are_waited_for_and_unlinked_files_stay_readable() {
    let dir = tempfile::tempdir().expect("a directory");
    let owner = Arc::new(Regions::with_lease(1, "local".into(), Duration::from_millis(300)));
    let (mut log, mut oracle) = sample_log(&dir.path().join("log"), 9, 20, 1 << 20);
    let mut entries =
        [EntryRef { seq: 1_000, key: b"\0late", value: Some(b"v"), expiry_ms: 0, batch_end: true }];
    log.append_batch(&mut entries).expect("appended, not written");
    oracle.insert(b"\0late".to_vec(), b"v".to_vec());
    let regions: Vec<RegionRef> =
        log.images().iter().map(|i| owner.register(i).expect("registered")).collect();
    let last = regions.last().expect("a region");
    let short =
        Regions::read(&owner, last.incarnation, last.region, 0, last.len as u32).expect("a read");
    assert!((short.len() as u64) < last.len, "the buffered entry is not in the file yet");
    let reader: Arc<dyn SegmentReader> = owner.clone();
    let copy = {
        let (reader, regions) = (reader.clone(), regions.clone());
        let staging_dir = dir.path().join("staging");
        tokio::spawn(async move {
            let mut staging = Staging::open(&staging_dir).expect("staging");
            staging.copy(&reader, &regions, &CopyProgress::new(1)).await?;
            staging.fold(&regions, b"", None)
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.write_out().expect("written out");
    let folded = copy.await.expect("the copy task").expect("copied once written");
    assert_holds(folded.to_records(), &oracle, "the copy");

    for image in log.images() {
        std::fs::remove_file(&image.path).expect("unlinked");
    }
    let r = &regions[0];
    assert_eq!(
        Regions::read(&owner, r.incarnation, r.region, 0, 8).expect("still readable"),
        b"MTSEGMNT"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        Regions::read(&owner, r.incarnation, r.region, 0, 8),
        Err(ReadError::Gone { .. })
    ));
    assert!(owner.is_empty(), "every lease ended");
}
