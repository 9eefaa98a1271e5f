use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError};
use proptest::prelude::*;

use super::*;
use crate::consensus::machine_store::MachineStore;
use crate::consensus::{Command, Machine, NodeId, SyncEach, SyncPoint, TypeConfig};

/// A machine that counts what it applied and remembers the last command.
#[derive(Default)]
struct Counter {
    applied: u64,
    last: Vec<u8>,
}

impl Machine for Counter {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        self.applied += 1;
        self.last = command.to_vec();
        self.applied.to_le_bytes().to_vec()
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut out = self.applied.to_le_bytes().to_vec();
        out.extend_from_slice(&self.last);
        out
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let n = snapshot.get(..8).ok_or("short counter snapshot")?;
        self.applied = u64::from_le_bytes(n.try_into().expect("8 bytes"));
        self.last = snapshot[8..].to_vec();
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, MachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, MachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        // Tiny segments, so the suite's logs span several.
        let log =
            LogStore::open_with_segment_bytes(&dir.path().join("log"), Arc::new(SyncEach), 100)?;
        let machine =
            MachineStore::open(&dir.path().join("machine"), Box::new(Counter::default()))?;
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite passes");
}

/// Syncs in the calling thread, for fast tests (durability against a crash
/// is not what they check).
struct SyncNow;

impl SyncPoint for SyncNow {
    fn sync(&self, _file: Arc<std::fs::File>, done: Box<dyn FnOnce(io::Result<()>) + Send>) {
        done(Ok(()));
    }
}

type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Holds every sync until the test completes it.
#[derive(Default)]
struct HeldSync {
    held: Mutex<Vec<Done>>,
}

impl HeldSync {
    fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *self.held.lock().expect("unpoisoned"))
    }
}

impl SyncPoint for HeldSync {
    fn sync(&self, _file: Arc<std::fs::File>, done: Box<dyn FnOnce(io::Result<()>) + Send>) {
        self.held.lock().expect("unpoisoned").push(done);
    }
}

/// Fails every sync.
struct FailingSync;

impl SyncPoint for FailingSync {
    fn sync(&self, _file: Arc<std::fs::File>, done: Box<dyn FnOnce(io::Result<()>) + Send>) {
        std::thread::spawn(move || done(Err(io::Error::from_raw_os_error(libc::EIO))));
    }
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn ent(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command(
            format!("command {index} of term {term}").into_bytes(),
        )),
    }
}

fn ents(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry<TypeConfig>> {
    indexes.map(|i| ent(term, i)).collect()
}

fn open(dir: &Path, segment_bytes: u64) -> LogStore {
    LogStore::open_with_segment_bytes(dir, Arc::new(SyncNow), segment_bytes).expect("opens")
}

fn open_err(dir: &Path) -> String {
    match LogStore::open_with_segment_bytes(dir, Arc::new(SyncNow), 1 << 20) {
        Ok(_) => panic!("the damaged log opened"),
        Err(e) => e.to_string(),
    }
}

async fn ids(log: &mut LogStore) -> Vec<LogId<NodeId>> {
    log.try_get_log_entries(..).await.expect("reads").into_iter().map(|e| e.log_id).collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("dir listing")
        .map(|d| d.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rlog"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn reopen_gives_the_same_state_after_append_truncate_and_purge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 150);
    log.blocking_append(ents(1, 0..=9)).await.expect("append");
    for i in 10..=19 {
        log.blocking_append([ent(2, i)]).await.expect("append");
    }
    log.save_vote(&openraft::Vote::new(2, 1)).await.expect("log call");
    log.save_committed(Some(log_id(2, 12))).await.expect("log call");
    log.truncate(log_id(2, 15)).await.expect("log call");
    log.blocking_append(ents(3, 15..=17)).await.expect("append");
    log.purge(log_id(1, 4)).await.expect("log call");
    assert!(log.segment_count() > 2, "tiny segments roll");
    let before = ids(&mut log).await;
    let state = log.get_log_state().await.expect("log call");
    drop(log);

    let mut log = open(dir.path(), 150);
    assert_eq!(log.recovered().cut_bytes, 0);
    assert_eq!(ids(&mut log).await, before);
    assert_eq!(before.first().expect("entries").index, 5);
    assert_eq!(before.last(), Some(&log_id(3, 17)));
    assert_eq!(log.get_log_state().await.expect("log call"), state);
    assert_eq!(log.read_vote().await.expect("log call"), Some(openraft::Vote::new(2, 1)));
    assert_eq!(log.read_committed().await.expect("log call"), Some(log_id(2, 12)));
    let entries = log.try_get_log_entries(16..17).await.expect("log call");
    assert_eq!(entries[0].payload, ent(3, 16).payload);
    // Appends go on where the log ends.
    log.blocking_append([ent(3, 18)]).await.expect("append");
    assert!(log.blocking_append([ent(3, 20)]).await.is_err(), "a hole is refused");
}

#[tokio::test]
async fn a_purge_of_everything_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    log.blocking_append(ents(1, 1..=10)).await.expect("append");
    log.purge(log_id(1, 20)).await.expect("log call");
    assert!(segments(dir.path()).is_empty());
    drop(log);
    let mut log = open(dir.path(), 100);
    let state = log.get_log_state().await.expect("log call");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 20)));
    assert_eq!(state.last_log_id, Some(log_id(1, 20)));
    assert!(ids(&mut log).await.is_empty());
    log.blocking_append([ent(2, 21)]).await.expect("append");
    drop(log);
    let mut log = open(dir.path(), 100);
    assert_eq!(ids(&mut log).await, vec![log_id(2, 21)]);
}

/// Postmortem: openraft purged a new replica's log up to a snapshot as it
/// handed the snapshot to the state machine; the install failed, and the
/// restarted group panicked on a log purged past its snapshot. Before a
/// group starts, such a log goes back to the state machine's snapshot.
#[tokio::test]
async fn a_log_purged_past_the_snapshot_goes_back_to_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    log.blocking_append(ents(1, 1..=10)).await.expect("append");
    log.save_committed(Some(log_id(1, 20))).await.expect("committed");
    log.purge(log_id(1, 20)).await.expect("log call");
    assert!(log.unpurge_to_snapshot(Some(log_id(1, 5))).expect("repaired"));
    drop(log);
    let mut log = open(dir.path(), 100);
    let state = log.get_log_state().await.expect("log call");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    assert!(log.read_committed().await.expect("committed") <= Some(log_id(1, 5)));
    log.blocking_append([ent(2, 6)]).await.expect("the entry after the snapshot");
    assert_eq!(ids(&mut log).await, vec![log_id(2, 6)]);
    // Entries after the purge point were acknowledged: nothing changes.
    assert!(!log.unpurge_to_snapshot(Some(log_id(1, 2))).expect("checked"));
    // A replica with no snapshot yet goes back to an empty log.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    log.blocking_append(ents(1, 1..=3)).await.expect("append");
    log.purge(log_id(1, 9)).await.expect("log call");
    assert!(log.unpurge_to_snapshot(None).expect("repaired"));
    drop(log);
    let mut log = open(dir.path(), 100);
    let state = log.get_log_state().await.expect("log call");
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    log.blocking_append([ent(1, 1)]).await.expect("a first entry");
    // A log purged no further than its snapshot is left alone.
    assert!(!log.unpurge_to_snapshot(Some(log_id(1, 1))).expect("checked"));
}

#[tokio::test]
async fn purged_segments_that_come_back_are_deleted_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    for i in 1..=10 {
        log.blocking_append([ent(1, i)]).await.expect("append");
    }
    let saved: Vec<_> = segments(dir.path())
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).expect("file access")))
        .collect();
    log.purge(log_id(1, 10)).await.expect("log call");
    log.blocking_append(ents(1, 11..=12)).await.expect("append");
    drop(log);
    // A crash undid the deletes (they are not synced).
    for (p, b) in &saved {
        std::fs::write(p, b).expect("file access");
    }
    let mut log = open(dir.path(), 100);
    assert!(saved.len() >= 3);
    assert_eq!(log.recovered().removed_segments, saved.len());
    assert_eq!(ids(&mut log).await, vec![log_id(1, 11), log_id(1, 12)]);
}

#[tokio::test]
async fn torn_tails_are_cut() {
    for tear in ["half", "zeros", "zero-filled-entry", "header-only"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), 1 << 20);
        log.blocking_append(ents(1, 1..=5)).await.expect("append");
        drop(log);
        let seg = segments(dir.path()).pop().expect("a segment");
        let good = std::fs::read(&seg).expect("file access");
        // The last entry's frame starts here.
        let last_at = {
            let mut pos = HEADER_BYTES as usize;
            let mut last = pos;
            while pos < good.len() {
                last = pos;
                pos += decode_frame(&good[pos..]).expect("sound frame").1;
            }
            last
        };
        let mut bad = good.clone();
        let (expect_entries, expect_len) = match tear {
            // The process died halfway through writing entry 5.
            "half" => {
                bad.truncate(last_at + (good.len() - last_at) / 2);
                (4, last_at)
            }
            // The file was extended but the data never landed.
            "zeros" => {
                bad.extend_from_slice(&[0u8; 300]);
                (5, good.len())
            }
            "zero-filled-entry" => {
                bad[last_at + 20..].fill(0);
                (4, last_at)
            }
            _ => {
                bad.truncate(last_at);
                bad.extend_from_slice(&good[last_at..last_at + 6]);
                (4, last_at)
            }
        };
        std::fs::write(&seg, &bad).expect("file access");
        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(ids(&mut log).await.len(), expect_entries, "{tear}");
        assert_eq!(log.recovered().cut_bytes, (bad.len() - expect_len) as u64, "{tear}");
        assert_eq!(
            std::fs::metadata(&seg).expect("file access").len(),
            expect_len as u64,
            "{tear}"
        );
        log.blocking_append([ent(1, expect_entries as u64 + 1)]).await.expect("append");
        drop(log);
        let mut log = open(dir.path(), 1 << 20);
        assert_eq!(ids(&mut log).await.len(), expect_entries + 1, "{tear}");
    }
}

#[tokio::test]
async fn a_new_segment_with_a_torn_header_is_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.blocking_append(ents(1, 1..=3)).await.expect("append");
    drop(log);
    let next = segment_path(dir.path(), 2);
    for torn in [vec![], encode_header(4)[..10].to_vec(), vec![0u8; 32], {
        let mut h = encode_header(4).to_vec();
        h[20..].fill(0);
        h
    }] {
        std::fs::write(&next, &torn).expect("file access");
        let mut log = open(dir.path(), 1 << 20);
        assert!(!next.exists());
        assert_eq!(ids(&mut log).await.len(), 3);
    }
}

#[tokio::test]
async fn a_flipped_byte_in_a_complete_entry_is_reported_not_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.blocking_append(ents(1, 1..=5)).await.expect("append");
    drop(log);
    let seg = segments(dir.path()).pop().expect("a segment");
    let good = std::fs::read(&seg).expect("file access");
    let (_, first_len) = decode_frame(&good[HEADER_BYTES as usize..]).expect("sound frame");
    let second = HEADER_BYTES as usize + first_len;
    // In the middle, and in the last entry (where a cut would be tempting).
    for at in [second + FRAME_BYTES + 3, good.len() - 2, second + 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&seg, &bad).expect("file access");
        let err = open_err(dir.path());
        assert!(err.contains(&seg.display().to_string()), "{err}");
        assert!(err.contains("at byte"), "{err}");
        assert_eq!(std::fs::read(&seg).expect("file access"), bad, "damage is left as it is");
    }
    std::fs::write(&seg, &good).expect("file access");
    let last_at = {
        let mut pos = HEADER_BYTES as usize;
        let mut last = pos;
        while pos < good.len() {
            last = pos;
            pos += decode_frame(&good[pos..]).expect("sound frame").1;
        }
        last
    };
    let mut bad = good.clone();
    bad[good.len() - 2] ^= 1;
    std::fs::write(&seg, &bad).expect("file access");
    let err = open_err(dir.path());
    assert!(err.contains(&format!("at byte {last_at}")), "{err}");
}

#[tokio::test]
async fn a_missing_segment_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    for i in 1..=10 {
        log.blocking_append([ent(1, i)]).await.expect("append");
    }
    drop(log);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).expect("file access");
    let err = open_err(dir.path());
    assert!(err.contains(&segs[2].display().to_string()), "{err}");
    // A non-newest segment with a torn tail is damage too.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    for i in 1..=10 {
        log.blocking_append([ent(1, i)]).await.expect("append");
    }
    drop(log);
    let segs = segments(dir.path());
    let b = std::fs::read(&segs[0]).expect("file access");
    std::fs::write(&segs[0], &b[..b.len() - 3]).expect("file access");
    let err = open_err(dir.path());
    assert!(err.contains(&segs[0].display().to_string()), "{err}");
}

#[tokio::test]
async fn a_damaged_vote_or_purge_record_is_reported() {
    for name in [VOTE_FILE, PURGED_FILE] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = open(dir.path(), 1 << 20);
        log.blocking_append(ents(1, 1..=3)).await.expect("append");
        log.save_vote(&openraft::Vote::new(1, 1)).await.expect("log call");
        log.purge(log_id(1, 1)).await.expect("log call");
        drop(log);
        let path = dir.path().join(name);
        let mut b = std::fs::read(&path).expect("file access");
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&path, &b).expect("file access");
        let err = open_err(dir.path());
        assert!(err.contains(name), "{err}");
    }
}

#[tokio::test]
async fn a_committed_id_the_log_does_not_hold_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.blocking_append(ents(1, 1..=3)).await.expect("append");
    // Ahead of the log (the entries it names were never synced here).
    log.save_committed(Some(log_id(1, 5))).await.expect("log call");
    drop(log);
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.read_committed().await.expect("log call"), None);
    // Another term's entry at that index.
    log.save_committed(Some(log_id(2, 3))).await.expect("log call");
    drop(log);
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.read_committed().await.expect("log call"), None);
    log.save_committed(Some(log_id(1, 3))).await.expect("log call");
    drop(log);
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.read_committed().await.expect("log call"), Some(log_id(1, 3)));
}

#[tokio::test]
async fn a_failed_sync_fails_the_append_and_poisons_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = LogStore::open_with_segment_bytes(dir.path(), Arc::new(FailingSync), 1 << 20)
        .expect("opens");
    assert!(log.blocking_append(ents(1, 1..=2)).await.is_err());
    assert!(log.poisoned().is_some());
    assert!(log.blocking_append([ent(1, 3)]).await.is_err(), "appends are refused");
    assert!(log.truncate(log_id(1, 2)).await.is_err());
    assert!(log.purge(log_id(1, 1)).await.is_err());
    assert!(log.save_vote(&openraft::Vote::new(1, 1)).await.is_err());
}

#[tokio::test]
async fn a_failed_write_poisons_the_store_and_its_tail_is_cut_at_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.blocking_append(ents(1, 1..=2)).await.expect("append");
    log.shared.fail_next_write.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(log.blocking_append(ents(1, 3..=4)).await.is_err());
    assert!(log.blocking_append(ents(1, 3..=4)).await.is_err(), "poisoned");
    assert_eq!(ids(&mut log).await.len(), 2, "the failed entries are not readable");
    drop(log);
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(ids(&mut log).await, vec![log_id(1, 1), log_id(1, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_acknowledged_in_order_and_none_after_a_failure() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = Arc::new(HeldSync::default());
    let log = LogStore::open_with_segment_bytes(dir.path(), held.clone(), 1 << 20).expect("opens");
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));

    // Second sync done first: neither is acknowledged until the first is.
    let mut a = log.clone();
    let first = tokio::spawn(async move { a.blocking_append([ent(1, 1)]).await });
    settle().await;
    let mut b = log.clone();
    let second = tokio::spawn(async move { b.blocking_append([ent(1, 2)]).await });
    settle().await;
    let mut dones = held.take();
    assert_eq!(dones.len(), 2);
    let done_first = dones.remove(0);
    (dones.remove(0))(Ok(()));
    settle().await;
    assert!(!second.is_finished() && !first.is_finished());
    done_first(Ok(()));
    first.await.expect("task").expect("append");
    second.await.expect("task").expect("append");

    // The earlier sync fails after the later one succeeded: both fail.
    let mut a = log.clone();
    let third = tokio::spawn(async move { a.blocking_append([ent(1, 3)]).await });
    settle().await;
    let mut b = log.clone();
    let fourth = tokio::spawn(async move { b.blocking_append([ent(1, 4)]).await });
    settle().await;
    let mut dones = held.take();
    let done_third = dones.remove(0);
    (dones.remove(0))(Ok(()));
    settle().await;
    assert!(!fourth.is_finished());
    done_third(Err(io::Error::from_raw_os_error(libc::EIO)));
    assert!(third.await.expect("task").is_err());
    assert!(fourth.await.expect("task").is_err(), "nothing after a failed sync is acknowledged");
    assert!(log.poisoned().is_some());
}

#[tokio::test]
async fn truncate_and_purge_across_segment_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 64);
    // One entry per append: with 64-byte segments, one or two entries each.
    for i in 1..=30 {
        log.blocking_append([ent(1, i)]).await.expect("append");
    }
    let before = segments(dir.path()).len();
    assert!(before >= 10, "{before} segments");
    // Truncate at a segment's first entry, and in the middle of one.
    for at in [25, 18, 17] {
        log.truncate(log_id(1, at)).await.expect("log call");
        let got = ids(&mut log).await;
        assert_eq!(got.last().expect("entries").index, at - 1);
        assert_eq!(got.len() as u64, at - 1);
    }
    assert!(segments(dir.path()).len() < before);
    log.blocking_append(ents(2, 17..=20)).await.expect("append");
    for at in [3, 8, 9] {
        log.purge(log_id(1, at)).await.expect("log call");
        let got = ids(&mut log).await;
        assert_eq!(got.first().expect("entries").index, at + 1);
    }
    let got = ids(&mut log).await;
    drop(log);
    let mut log = open(dir.path(), 64);
    assert_eq!(ids(&mut log).await, got);
    assert_eq!(log.get_log_state().await.expect("log call").last_purged_log_id, Some(log_id(1, 9)));
    // Truncate everything after the purge point.
    log.truncate(log_id(1, 10)).await.expect("log call");
    assert!(segments(dir.path()).is_empty());
    assert_eq!(log.get_log_state().await.expect("log call").last_log_id, Some(log_id(1, 9)));
    log.blocking_append(ents(3, 10..=12)).await.expect("append");
    drop(log);
    let mut log = open(dir.path(), 64);
    assert_eq!(ids(&mut log).await, vec![log_id(3, 10), log_id(3, 11), log_id(3, 12)]);
}

#[tokio::test]
async fn limited_reads_return_at_least_one_entry_and_stop_at_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 30);
    let big = |i| Entry::<TypeConfig> {
        log_id: log_id(1, i),
        payload: EntryPayload::Normal(Command(vec![7u8; 3 << 20])),
    };
    log.blocking_append((1..=3).map(big)).await.expect("append");
    let got = log.limited_get_log_entries(1, 4).await.expect("log call");
    assert_eq!(got.len(), 2, "4 MiB budget: the second entry passes it");
    let got = log.limited_get_log_entries(3, 4).await.expect("log call");
    assert_eq!(got.len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Append { count: u64, term_step: u64 },
    Truncate { back: u64 },
    Purge { ahead: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..6, 0u64..2).prop_map(|(count, term_step)| Op::Append { count, term_step }),
        1 => (0u64..8).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..8).prop_map(|ahead| Op::Purge { ahead }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // The log against a model: a BTreeMap of index -> log id and the purge point.
    #[test]
    fn matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut log = open(dir.path(), 90);
            let mut model: BTreeMap<u64, LogId<NodeId>> = BTreeMap::new();
            let mut purged: Option<LogId<NodeId>> = None;
            let mut term = 1;
            for op in ops {
                let next = model.keys().next_back().map(|i| i + 1)
                    .or(purged.map(|p| p.index + 1)).unwrap_or(1);
                match op {
                    Op::Append { count, term_step } => {
                        term += term_step;
                        let batch = ents(term, next..=next + count - 1);
                        for e in &batch {
                            model.insert(e.log_id.index, e.log_id);
                        }
                        log.blocking_append(batch).await.expect("append");
                    }
                    Op::Truncate { back } => {
                        let Some(&last) = model.keys().next_back() else { continue };
                        let first = *model.keys().next().expect("not empty");
                        let at = last.saturating_sub(back).max(first);
                        model.retain(|&i, _| i < at);
                        log.truncate(log_id(term, at)).await.expect("log call");
                    }
                    Op::Purge { ahead } => {
                        let Some(&first) = model.keys().next() else { continue };
                        let at = first + ahead;
                        let id = model.get(&at).copied().unwrap_or(log_id(term, at));
                        model.retain(|&i, _| i > at);
                        purged = Some(id);
                        log.purge(id).await.expect("log call");
                    }
                    Op::Reopen => {
                        drop(log);
                        log = open(dir.path(), 90);
                        prop_assert_eq!(log.recovered().cut_bytes, 0);
                    }
                }
                let want: Vec<_> = model.values().copied().collect();
                prop_assert_eq!(ids(&mut log).await, want.clone());
                let state = log.get_log_state().await.expect("log call");
                prop_assert_eq!(state.last_purged_log_id, purged);
                prop_assert_eq!(state.last_log_id, want.last().copied().or(purged));
                // A range in the middle reads what the model holds there.
                if want.len() > 2 {
                    let (a, b) = (want[1].index, want[want.len() - 1].index);
                    let got: Vec<_> = log.try_get_log_entries(a..b).await.expect("log call")
                        .into_iter().map(|e| e.log_id).collect();
                    prop_assert_eq!(got, want[1..want.len() - 1].to_vec());
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

// Postmortem: openraft's suite appends entries at or below the purge point
// (after get_initial_state purged up to the state machine), which the hole
// check refused; they are covered by the snapshot and are now skipped.
#[tokio::test]
async fn entries_at_or_below_the_purge_point_are_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.purge(log_id(1, 2)).await.expect("log call");
    log.blocking_append(ents(1, 1..=3)).await.expect("append");
    assert_eq!(ids(&mut log).await, vec![log_id(1, 3)]);
    assert!(log.blocking_append([ent(1, 5)]).await.is_err(), "a hole above it is refused");
    drop(log);
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(ids(&mut log).await, vec![log_id(1, 3)]);
}

#[tokio::test]
async fn a_damaged_log_is_left_as_it_is_even_its_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 100);
    for i in 1..=6 {
        log.blocking_append([ent(1, i)]).await.expect("append");
    }
    drop(log);
    let segs = segments(dir.path());
    let newest = segs.last().expect("segments").clone();
    let torn = {
        let b = std::fs::read(&newest).expect("file access");
        b[..b.len() - 5].to_vec()
    };
    std::fs::write(&newest, &torn).expect("file access");
    let mut first = std::fs::read(&segs[0]).expect("file access");
    let n = first.len();
    first[n - 3] ^= 0x10;
    std::fs::write(&segs[0], &first).expect("file access");
    let err = open_err(dir.path());
    assert!(err.contains(&segs[0].display().to_string()), "{err}");
    assert_eq!(std::fs::read(&newest).expect("file access"), torn, "the torn tail is not cut");
    assert_eq!(segments(dir.path()), segs, "nothing is deleted");
}

/// Every way a crash can leave the newest segment (cut at any byte, or
/// zero-filled from any byte to its end, or both) opens to the entries
/// that lie wholly before the damage.
#[tokio::test]
async fn every_torn_tail_of_the_newest_segment_opens_to_a_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = open(dir.path(), 1 << 20);
    log.blocking_append(ents(1, 1..=2)).await.expect("append");
    log.blocking_append(ents(1, 3..=4)).await.expect("append");
    drop(log);
    let seg = segments(dir.path()).pop().expect("a segment");
    let good = std::fs::read(&seg).expect("file access");
    let mut ends = Vec::new();
    let mut pos = HEADER_BYTES as usize;
    while pos < good.len() {
        pos += decode_frame(&good[pos..]).expect("sound frame").1;
        ends.push(pos);
    }
    let whole_before = |at: usize| ends.iter().filter(|&&e| e <= at).count();
    for at in HEADER_BYTES as usize..good.len() {
        for shape in ["cut", "zeros", "zeros past the end"] {
            let mut bad = good.clone();
            match shape {
                "cut" => bad.truncate(at),
                "zeros" => bad[at..].fill(0),
                _ => {
                    bad[at..].fill(0);
                    bad.extend_from_slice(&[0; 100]);
                }
            }
            std::fs::write(&seg, &bad).expect("file access");
            let mut log = LogStore::open_with_segment_bytes(dir.path(), Arc::new(SyncNow), 1 << 20)
                .unwrap_or_else(|e| panic!("{shape} at {at}: {e}"));
            let got = ids(&mut log).await;
            let want: Vec<_> = (1..=whole_before(at) as u64).map(|i| log_id(1, i)).collect();
            assert_eq!(got, want, "{shape} at {at}");
            drop(log);
            std::fs::write(&seg, &good).expect("file access");
        }
    }
}

/// Starts node `n`'s replica of group 7 on a log seeded with `voters`
/// (after granting node 1 its vote in term 1 when `voted`), reachable on
/// `net` only when `reachable`.
async fn seeded_replica(
    dir: &Path,
    net: &Arc<crate::consensus::local_net::LocalNet>,
    n: NodeId,
    voters: &BTreeMap<NodeId, String>,
    voted: bool,
    reachable: bool,
) -> crate::consensus::Group {
    use crate::consensus::{Group, GroupConfig, Timing};
    let mut log = LogStore::open(&dir.join(format!("{n}/log")), Arc::new(SyncNow)).expect("a log");
    if voted {
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    }
    assert!(log.seed_membership(voters.clone()).await.expect("seeded"));
    assert!(!log.seed_membership(voters.clone()).await.expect("no-op"), "seeded once");
    let machine = MachineStore::open(&dir.join(format!("{n}/state")), Box::new(Counter::default()))
        .expect("a machine");
    let config = GroupConfig {
        group: 7,
        node: n,
        timing: Timing::FAST,
        snapshot_every_entries: 100,
        snapshot_gate: None,
    };
    let g = Group::start(&config, log, machine, net.transport(n)).await.expect("started");
    if reachable {
        net.add_group(n, g.clone());
    }
    g
}

async fn wait_for_leader(groups: &[crate::consensus::Group]) -> crate::consensus::Group {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(g) = groups.iter().find(|g| g.status().state == "leader") {
            return g.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Postmortem: a replica that voted for a new group's first candidate,
/// which died before sending it the group's first entry, could not start
/// the group (openraft refuses `initialize` after a vote), so a split's
/// upper half stayed without a leader until the splitting node came back.
/// Replicas whose logs are seeded with the membership elect without it,
/// also when they hold their elections for a leader that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_replicas_elect_without_the_candidate_they_voted_for() {
    use crate::consensus::local_net::LocalNet;
    let dir = tempfile::tempdir().expect("temp dir");
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|n| (n, format!("node-{n}"))).collect();
    let net = LocalNet::new();
    let mut groups = Vec::new();
    // Node 1, the candidate, never starts: it died.
    for n in [2u64, 3] {
        let g = seeded_replica(dir.path(), &net, n, &voters, true, true).await;
        g.hold_elections(std::time::Duration::from_millis(500));
        groups.push(g);
    }
    let leader = wait_for_leader(&groups).await;
    leader.propose(b"x".to_vec()).await.expect("a majority of two commits");
    for g in &groups {
        g.shutdown().await;
    }
}

/// Postmortem: a split's new group lost its first leader under load: a
/// replica whose election timer ran out before the leader's appends
/// reached it campaigned in a later term, and its answer to the next
/// append deposed the leader (a write proposed there failed with its
/// outcome unknown). A replica that holds its elections waits for the
/// leader instead. (Without `hold_elections` below, node 3 campaigns while
/// unreachable and the leader's term changes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_of_a_new_group_holding_elections_leaves_its_leader_alone() {
    use crate::consensus::local_net::LocalNet;
    let dir = tempfile::tempdir().expect("temp dir");
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|n| (n, format!("node-{n}"))).collect();
    let net = LocalNet::new();
    let one = seeded_replica(dir.path(), &net, 1, &voters, false, true).await;
    let two = seeded_replica(dir.path(), &net, 2, &voters, false, true).await;
    two.hold_elections(std::time::Duration::from_secs(5));
    one.campaign().await.expect("campaign");
    let leader = wait_for_leader(&[one.clone(), two.clone()]).await;
    assert_eq!(leader.status().node, 1, "the campaigning replica leads");
    let term = leader.status().term;
    // Node 3 starts its replica but the leader cannot reach it yet (as
    // before a replica applies the split): several election timeouts.
    let three = seeded_replica(dir.path(), &net, 3, &voters, false, false).await;
    three.hold_elections(std::time::Duration::from_secs(5));
    for i in 0..20u8 {
        leader.propose(vec![i]).await.expect("the first leader commits");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    net.add_group(3, three.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while three.status().leader != Some(1) {
        assert!(std::time::Instant::now() < deadline, "node 3 never follows node 1");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 0..20u8 {
        leader.propose(vec![i]).await.expect("the first leader still commits");
    }
    assert_eq!(leader.status().term, term, "the leader kept its term");
    assert_eq!(leader.status().state, "leader");
    for g in [&one, &two, &three] {
        g.shutdown().await;
    }
}

/// A replica's state kept as the commands it applied, after the state it
/// began with (for a split's upper group: the records it split off).
struct Journal(Mutex<Vec<Vec<u8>>>);

impl Journal {
    fn new(start: &[&[u8]]) -> Arc<Journal> {
        Arc::new(Journal(Mutex::new(start.iter().map(|c| c.to_vec()).collect())))
    }

    fn held(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl crate::consensus::replica_store::Replica for Journal {
    fn apply(&self, _: crate::consensus::LogPosition, command: &[u8]) -> Result<Vec<u8>, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(command.to_vec());
        Ok(Vec::new())
    }
    fn flush(&self) -> crate::consensus::futures_lite::BoxedFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec(&self.held()).map_err(|e| e.to_string())
    }
    fn restore(
        &self,
        snapshot: Vec<u8>,
    ) -> crate::consensus::futures_lite::BoxedFuture<Result<(), String>> {
        let held = rmp_serde::from_slice(&snapshot).map_err(|e| e.to_string());
        let replaced = held.map(|h| *self.0.lock().unwrap_or_else(|p| p.into_inner()) = h);
        Box::pin(async move { replaced })
    }
}

/// A split's upper group starts from state its replicas hold already,
/// not from its log. Seeded as a snapshot at index 0, it brings a replica
/// that joins later, with nothing, in by a snapshot. Postmortem: seeded
/// as a log entry 0, the leader sent a new replica its log from entry 0,
/// and the replica applied the group's writes to a chunk without the
/// records the group began with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_seeded_at_a_snapshot_sends_a_new_replica_a_snapshot() {
    use crate::consensus::local_net::LocalNet;
    use crate::consensus::replica_store::ReplicaStore;
    use crate::consensus::{Group, GroupConfig, Timing};
    let dir = tempfile::tempdir().expect("temp dir");
    let voters: BTreeMap<NodeId, String> = (1..=2).map(|n| (n, format!("node-{n}"))).collect();
    let net = LocalNet::new();
    let start = |n: NodeId, journal: Arc<Journal>, seeded: bool| {
        let (dir, net, voters) = (dir.path().to_owned(), net.clone(), voters.clone());
        async move {
            let log =
                LogStore::open(&dir.join(format!("{n}/log")), Arc::new(SyncNow)).expect("log");
            let store =
                ReplicaStore::open(&dir.join(format!("{n}/state")), journal).expect("store");
            if seeded {
                assert!(log.is_empty());
                assert!(store.seed_membership(voters.clone()).await.expect("seeded"));
                assert!(!store.seed_membership(voters).await.expect("no-op"), "seeded once");
            }
            let config = GroupConfig {
                group: 7,
                node: n,
                timing: Timing::FAST,
                snapshot_every_entries: 1000,
                snapshot_gate: None,
            };
            let g = Group::start(&config, log, store, net.transport(n)).await.expect("started");
            net.add_group(n, g.clone());
            g
        }
    };
    let split_off: &[&[u8]] = &[b"split off 1", b"split off 2"];
    let one = start(1, Journal::new(split_off), true).await;
    let two = start(2, Journal::new(split_off), true).await;
    one.campaign().await.expect("campaign");
    let leader = wait_for_leader(&[one.clone(), two.clone()]).await;
    leader.propose(b"after the split".to_vec()).await.expect("committed");
    let newcomer = Journal::new(&[]);
    let three = start(3, newcomer.clone(), false).await;
    leader.add_voter(3, "node-3".into()).await.expect("added");
    leader.propose(b"after the join".to_vec()).await.expect("committed");
    let want: Vec<Vec<u8>> =
        [&b"split off 1"[..], b"split off 2", b"after the split", b"after the join"]
            .iter()
            .map(|c| c.to_vec())
            .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while newcomer.held() != want {
        assert!(
            std::time::Instant::now() < deadline,
            "the new replica holds {:?}",
            newcomer
                .held()
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A restart of a seeded replica keeps its start (openraft purged its
    // log to index 0 when it started).
    two.shutdown().await;
    let reopened = LogStore::open(&dir.path().join("2/log"), Arc::new(SyncNow)).expect("log");
    assert!(!reopened.is_empty(), "purged to index 0");
    for g in [&one, &three] {
        g.shutdown().await;
    }
}
