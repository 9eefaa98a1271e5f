//! Recovery of chunks on real files: missing segments, damaged tails, and
//! writes refused by a full disk.

use std::fs::{self, OpenOptions};
use std::ops::Bound::Unbounded;
use std::os::unix::fs::FileExt;
use std::path::Path;

use monotable_proto::WriteOp;

use super::chunk::{Chunk, ChunkError, ChunkMeta, ReadAt};
use super::chunk_log::LogError;
use super::tests::{commit, desc, segments};

const SEGMENT_MAX: u64 = 4096;

fn meta() -> ChunkMeta {
    ChunkMeta { id: 1, range_id: 1, start: vec![], end: None }
}

fn put(k: &str) -> WriteOp {
    WriteOp::Put { key: k.as_bytes().to_vec().into(), value: vec![b'v'; 200].into() }
}

fn keys(c: &Chunk) -> usize {
    c.scan((Unbounded, Unbounded), ReadAt::Latest, false, usize::MAX, usize::MAX)
        .expect("scan")
        .records
        .len()
}

/// A chunk of 60 keys spread over several segments.
fn filled(dir: &Path) {
    let mut c = Chunk::create(&desc(meta()), dir, SEGMENT_MAX).expect("create");
    for seq in 1..=60u64 {
        commit(&mut c, seq, &[put(&format!("k{seq:03}"))]);
    }
    assert!(segments(dir).len() >= 4, "the test needs several segments");
}

fn open(dir: &Path) -> Result<Chunk, ChunkError> {
    Chunk::open(&desc(meta()), dir, SEGMENT_MAX).map(|(c, _)| c)
}

fn expect_corrupt(dir: &Path, file: &Path, what: &str) {
    match open(dir) {
        Err(ChunkError::Log(LogError::Corrupt { path, reason, .. })) => {
            assert_eq!(path, file, "{reason}");
            assert!(reason.contains(what), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("damage went unnoticed"),
    }
}

// Regression: deleting a segment file lost its records silently (20 of 20).
#[test]
fn a_deleted_segment_is_reported_by_name_first_middle_or_newest() {
    for which in ["first", "middle", "newest"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("c");
        filled(&dir);
        let segs = segments(&dir);
        let victim = match which {
            "first" => segs[0].clone(),
            "middle" => segs[segs.len() / 2].clone(),
            _ => segs[segs.len() - 1].clone(),
        };
        fs::remove_file(&victim).expect("remove");
        expect_corrupt(&dir, &victim, "missing");
        // Nothing else was touched.
        assert_eq!(segments(&dir).len(), segs.len() - 1, "{which}");
    }
}

#[test]
fn a_deleted_manifest_is_reported() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    filled(&dir);
    fs::remove_file(dir.join("MANIFEST")).expect("remove");
    expect_corrupt(&dir, &dir.join("MANIFEST"), "manifest is missing");
}

// Regression: a complete entry whose CRC fails at the end of the newest
// segment was cut off as if it were a torn write.
#[test]
fn a_complete_corrupt_entry_at_the_tail_is_reported_and_kept() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    filled(&dir);
    let newest = segments(&dir).pop().expect("segment");
    let mut bytes = fs::read(&newest).expect("read");
    let last = bytes.len() - 10;
    bytes[last] ^= 0x08;
    fs::write(&newest, &bytes).expect("write");
    expect_corrupt(&dir, &newest, "checksum");
    assert_eq!(fs::read(&newest).expect("read"), bytes, "the evidence is kept");
}

#[test]
fn a_zero_filled_tail_is_cut_as_a_torn_write() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    filled(&dir);
    let newest = segments(&dir).pop().expect("segment");
    let len = fs::metadata(&newest).expect("meta").len();
    let f = OpenOptions::new().write(true).open(&newest).expect("open");
    f.write_all_at(&[0u8; 300], len).expect("zeros");
    drop(f);
    let (c, rec) = Chunk::open(&desc(meta()), &dir, SEGMENT_MAX).expect("torn tail");
    assert_eq!(rec.truncated_bytes, 300);
    assert_eq!(keys(&c), 60);
    assert_eq!(fs::metadata(&newest).expect("meta").len(), len);
}

#[test]
fn a_descriptor_naming_another_chunk_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    filled(&dir);
    let other = ChunkMeta { id: 9, ..meta() };
    assert!(matches!(
        Chunk::open(&desc(other), &dir, SEGMENT_MAX),
        Err(ChunkError::DescriptorMismatch { .. })
    ));
}

#[test]
fn a_chunk_from_before_descriptors_gets_a_descriptor_and_a_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    filled(&dir);
    fs::remove_file(dir.join("DESCRIPTOR")).expect("remove");
    fs::remove_file(dir.join("MANIFEST")).expect("remove");
    let (c, rec) = Chunk::open(&desc(meta()), &dir, SEGMENT_MAX).expect("legacy open");
    assert!(rec.manifest_created);
    assert_eq!(keys(&c), 60);
    drop(c);
    assert!(dir.join("DESCRIPTOR").exists() && dir.join("MANIFEST").exists());
    assert_eq!(keys(&open(&dir).expect("reopen")), 60);
}

/// A chunk in `dir` holding one durable key; its newest segment and that
/// segment's length.
fn one_key_chunk(dir: &Path, segment_max: u64) -> (Chunk, std::path::PathBuf, u64) {
    let mut c = Chunk::create(&desc(meta()), dir, segment_max).expect("create");
    commit(&mut c, 1, &[put("a")]);
    let newest = segments(dir).pop().expect("segment");
    let len = fs::metadata(&newest).expect("meta").len();
    (c, newest, len)
}

/// A write that fails half-way (the log's test hook writes half the bytes,
/// then fails as a full disk would); the disk-full integration test does
/// the same with a real small file system.
#[test]
fn a_refused_write_rolls_the_chunk_back_and_it_takes_the_next_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let (mut c, newest, len_before) = one_key_chunk(&dir, 1 << 20);
    c.apply_batch(2, &[put("b")]).expect("apply");
    c.fail_next_write_out_for_tests();
    match c.write_out() {
        Err(ChunkError::Log(LogError::WriteRefused { .. })) => {}
        other => panic!("expected a refused write, got {other:?}"),
    }
    assert_eq!(fs::metadata(&newest).expect("meta").len(), len_before);
    assert_eq!(c.last_seq(), 1, "the refused batch is out of the index");
    assert_eq!(keys(&c), 1);
    commit(&mut c, 3, &[put("c")]);
    assert_eq!(keys(&c), 2);
    drop(c);
    let c = open(&dir).expect("reopen");
    assert_eq!(keys(&c), 2);
}

// Regression: a node killed while removing a split chunk's directory left
// segments without their descriptor (remove_dir_all took the descriptor
// first), which start-up read as a data directory of an older format and
// refused to serve (found by the crash test over many chunks).
#[test]
fn a_chunk_removal_cut_short_keeps_its_descriptor() {
    let data = tempfile::tempdir().expect("tempdir");
    let chunks = data.path().join("chunks");
    let dir = chunks.join(format!("{:016x}", 1));
    filled(&dir);
    // The first step of `destroy`, where a kill can cut it short.
    super::chunk_log::remove_log_files(&dir).expect("remove segments");
    assert!(segments(&dir).is_empty());
    assert!(dir.join(super::descriptor::DESCRIPTOR_FILE).exists(), "descriptor goes last");
    crate::startup::refuse_old_format(data.path(), &chunks)
        .expect("a half-removed chunk is not a data directory of an older format");
}

fn big_batch(n: usize) -> Vec<WriteOp> {
    (0..n)
        .map(|i| WriteOp::Put {
            key: format!("big{i:06}").into_bytes().into(),
            value: vec![b'x'; 1024].into(),
        })
        .collect()
}

/// A batch larger than the log's write pieces (a snapshot's install) goes
/// to the file as it is encoded, without a buffer of its size: whole once
/// written out, and cut whole when the process dies before its last piece.
#[test]
fn a_large_batch_is_written_in_pieces_and_recovered_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let (mut c, newest, len_before) = one_key_chunk(&dir, 64 << 20);
    c.apply_batch(2, &big_batch(3000)).expect("apply");
    let len_applied = fs::metadata(&newest).expect("meta").len();
    assert!(len_applied > len_before + (1 << 20), "pieces reach the file as they are encoded");
    c.write_out().expect("write out");
    c.take_sync_job().expect("job").run().expect("sync");
    c.mark_durable(2);
    assert_eq!(keys(&c), 3001);
    drop(c);
    assert_eq!(keys(&open(&dir).expect("reopen")), 3001);
    // A crash after some pieces: the batch has no end mark and is cut whole.
    let file = OpenOptions::new().write(true).open(&newest).expect("open");
    file.set_len(len_applied).expect("cut");
    drop(file);
    let c = open(&dir).expect("reopen after the cut");
    assert_eq!(keys(&c), 1);
    assert_eq!(fs::metadata(&newest).expect("meta").len(), len_before, "the torn batch is cut");
}

/// A piece of a large batch that cannot be written (a full disk) leaves the
/// log as it was before the batch.
#[test]
fn a_refused_piece_of_a_large_batch_rolls_the_whole_batch_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c");
    let (mut c, newest, len_before) = one_key_chunk(&dir, 64 << 20);
    c.fail_next_write_out_for_tests();
    match c.apply_batch(2, &big_batch(3000)) {
        Err(ChunkError::Log(LogError::WriteRefused { .. })) => {}
        other => panic!("expected a refused write, got {other:?}"),
    }
    assert_eq!(fs::metadata(&newest).expect("meta").len(), len_before);
    assert_eq!(keys(&c), 1, "nothing of the refused batch is in the index");
    commit(&mut c, 3, &[put("c")]);
    drop(c);
    assert_eq!(keys(&open(&dir).expect("reopen")), 2);
}
