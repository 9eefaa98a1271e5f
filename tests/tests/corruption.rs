//! Corruption test: bytes flipped inside a sealed segment make the node
//! report that chunk clearly and keep serving the others; a torn tail is
//! truncated and logged.

use std::fs;
use std::path::{Path, PathBuf};

use monotable_client::{Client, ErrorCode, RangeOptions};
use monotable_tests::{cli, runtime, Node};

fn segments(chunk_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(chunk_dir)
        .expect("chunk dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn chunk_dir(data: &Path, id: u64) -> PathBuf {
    data.join("chunks").join(format!("{id:016x}"))
}

#[test]
fn corrupt_chunk_is_reported_and_others_keep_serving() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let rt = runtime();

    // Phase 1: two ranges; "bad" gets several segments in its one chunk.
    let (bad_chunk, good_chunk) = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let options = RangeOptions { chunk_size_max_bytes: 256 * 1024 };
        c.create_range("bad", options).await.expect("create");
        c.create_range("good", options).await.expect("create");
        for i in 0..200u32 {
            c.put("bad", format!("k{i:04}"), vec![b'b'; 500]).await.expect("put");
            c.put("good", format!("k{i:04}"), vec![b'g'; 100]).await.expect("put");
        }
        let bad = c.describe_range("bad").await.expect("describe");
        let good = c.describe_range("good").await.expect("describe");
        assert_eq!((bad.chunks.len(), good.chunks.len()), (1, 1));
        (bad.chunks[0].id, good.chunks[0].id)
    });
    assert!(node.stop());

    // Phase 2: flip a byte in the middle of the first, sealed segment.
    let bad_segments = segments(&chunk_dir(dir.path(), bad_chunk));
    assert!(bad_segments.len() >= 2, "need a sealed segment, got {bad_segments:?}");
    let mut bytes = fs::read(&bad_segments[0]).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&bad_segments[0], &bytes).expect("write");

    // Phase 3: append half an entry to the good chunk's log: a torn write.
    let good_segments = segments(&chunk_dir(dir.path(), good_chunk));
    let last = good_segments.last().expect("segment");
    let mut tail = fs::read(last).expect("read");
    let torn: Vec<u8> = tail[32..32 + 20].to_vec();
    tail.extend_from_slice(&torn);
    fs::write(last, &tail).expect("write");

    // Phase 4: restart; the bad chunk is unavailable with a clear reason,
    // the good range serves everything, the torn tail was cut and logged.
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let err = c.get("bad", "k0001").await.expect_err("corrupt chunk must not serve");
        assert_eq!(err.code(), Some(ErrorCode::ChunkUnavailable), "{err}");
        assert!(err.to_string().contains("corrupt segment"), "{err}");
        let err = c.put("bad", "k0001", "x").await.expect_err("no writes either");
        assert_eq!(err.code(), Some(ErrorCode::ChunkUnavailable));
        for i in 0..200u32 {
            assert_eq!(
                c.get("good", format!("k{i:04}")).await.expect("get"),
                Some(vec![b'g'; 100])
            );
        }
        c.put("good", "after", "restart").await.expect("good range takes writes");
        let info = c.describe_range("bad").await.expect("describe still works");
        let reason = info.chunks[0].unavailable.clone().expect("reported unavailable");
        assert!(reason.contains(&bad_segments[0].display().to_string()), "{reason}");
    });
    assert!(node.log_contains("chunk is unavailable"), "{:#?}", node.log());
    assert!(node.log_contains("truncated a torn write"), "{:#?}", node.log());
    let listing = cli(node.addr, &["range", "list"]);
    let stdout = String::from_utf8_lossy(&listing.stdout);
    assert!(stdout.contains("UNAVAILABLE"), "{stdout}");
    // The damaged file is left as it was, for an operator to inspect.
    assert_eq!(fs::read(&bad_segments[0]).expect("read"), bytes);
    assert!(node.stop());
}

/// Three ranges of one chunk each, several segments per chunk; returns the
/// chunk ids by range.
fn three_ranges(node: &Node) -> Vec<(String, u64)> {
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let mut out = Vec::new();
        for name in ["middle", "newest", "good"] {
            let options = RangeOptions { chunk_size_max_bytes: 256 * 1024 };
            c.create_range(name, options).await.expect("create");
            for i in 0..450u32 {
                c.put(name, format!("k{i:04}"), vec![b'x'; 500]).await.expect("put");
            }
            for i in (0..450u32).step_by(10) {
                c.delete(name, format!("k{i:04}")).await.expect("delete");
            }
            let info = c.describe_range(name).await.expect("describe");
            assert_eq!(info.chunks.len(), 1);
            out.push((name.to_owned(), info.chunks[0].id));
        }
        out
    })
}

// Regression: deleting a segment file lost its records silently (20 of 20
// deletions); now the chunk is unavailable, naming the missing file.
#[test]
fn deleted_segment_is_reported_and_other_chunks_serve() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let chunks = three_ranges(&node);
    assert!(node.stop());

    let mut removed = Vec::new();
    for (name, id) in &chunks[..2] {
        let segs = segments(&chunk_dir(dir.path(), *id));
        assert!(segs.len() >= 3, "need several segments, got {segs:?}");
        let victim = if name == "middle" {
            segs[segs.len() / 2].clone()
        } else {
            segs[segs.len() - 1].clone()
        };
        fs::remove_file(&victim).expect("remove");
        removed.push(victim);
    }

    node.restart();
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        for ((name, _), victim) in chunks[..2].iter().zip(&removed) {
            let err =
                c.get(name, "k0001").await.expect_err("a chunk missing a segment must not serve");
            assert_eq!(err.code(), Some(ErrorCode::ChunkUnavailable), "{err}");
            let info = c.describe_range(name).await.expect("describe");
            let reason = info.chunks[0].unavailable.clone().expect("reported unavailable");
            assert!(reason.contains("missing"), "{reason}");
            assert!(reason.contains(&victim.display().to_string()), "{reason}");
        }
        for i in 0..450u32 {
            let want = (i % 10 != 0).then(|| vec![b'x'; 500]);
            assert_eq!(c.get("good", format!("k{i:04}")).await.expect("get"), want);
        }
        c.put("good", "after", "restart").await.expect("good range takes writes");
    });
    let listing = cli(node.addr, &["range", "list"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("UNAVAILABLE"));
    assert!(node.stop());
}

// Regression: a complete entry whose checksum fails at the end of the newest
// segment was cut off as a torn write, losing an acknowledged write.
#[test]
fn complete_corrupt_entry_at_the_tail_is_reported_not_truncated() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let chunks = three_ranges(&node);
    assert!(node.stop());

    let (name, id) = &chunks[0];
    let newest = segments(&chunk_dir(dir.path(), *id)).pop().expect("segment");
    let mut bytes = fs::read(&newest).expect("read");
    let at = bytes.len() - 5;
    bytes[at] ^= 0x04;
    fs::write(&newest, &bytes).expect("write");

    node.restart();
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        let err = c.get(name, "k0001").await.expect_err("corrupt chunk must not serve");
        assert_eq!(err.code(), Some(ErrorCode::ChunkUnavailable), "{err}");
        let info = c.describe_range(name).await.expect("describe");
        let reason = info.chunks[0].unavailable.clone().expect("reported");
        assert!(reason.contains("checksum"), "{reason}");
        assert!(reason.contains(&newest.display().to_string()), "{reason}");
        assert_eq!(c.get("good", "k0001").await.expect("get"), Some(vec![b'x'; 500]));
    });
    assert!(!node.log_contains("truncated a torn write"), "{:#?}", node.log());
    assert_eq!(fs::read(&newest).expect("read"), bytes, "the damaged file is kept as it was");
    assert!(node.stop());
}
