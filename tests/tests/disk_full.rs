//! A full disk: writes fail with a clear error, the node stays up (describe
//! and list included, after a split that failed for lack of space), and
//! once space is free the same chunks take writes again without a restart.
//! Runs on a small tmpfs the test mounts; skipped, saying so, where
//! mounting is not permitted.

use std::fs;
use std::time::{Duration, Instant};

use monotable_client::{Client, ErrorCode, RangeOptions};
use monotable_tests::{cli, fill, runtime, Node, SmallFs};

/// Size of the file system the node runs on.
const FS_SIZE_MIB: u64 = 24;

#[test]
fn full_disk_refuses_writes_and_recovers_without_restart() {
    let Some(small) = SmallFs::mount(FS_SIZE_MIB) else { return };
    let data = small.mount.join("data");
    let mut node = Node::start(&data);
    let rt = runtime();

    // Phase 1: two ranges with small chunks (so splits happen), some data.
    let options = RangeOptions { chunk_size_max_bytes: 256 * 1024 };
    let mut acked: Vec<(String, String)> = Vec::new();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        for range in ["a", "b"] {
            c.create_range(range, options).await.expect("create");
            for i in 0..100u32 {
                let key = format!("k{i:06}");
                c.put(range, &key, vec![b'v'; 1000]).await.expect("put");
                acked.push((range.to_owned(), key));
            }
        }
    });

    // Phase 2: fill the disk, then write until writes fail.
    let filler = fill(&small.mount, 2 << 20);
    let mut refused: Vec<(String, String)> = Vec::new();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        for i in 100..20_000u32 {
            let range = if i % 2 == 0 { "a" } else { "b" };
            let key = format!("k{i:06}");
            match c.put(range, &key, vec![b'v'; 1000]).await {
                Ok(_) => acked.push((range.to_owned(), key)),
                Err(e) => {
                    assert_eq!(e.code(), Some(ErrorCode::ChunkUnavailable), "{e}");
                    assert!(e.to_string().contains("No space left"), "a clear error: {e}");
                    refused.push((range.to_owned(), key));
                    if refused.len() >= 20 {
                        break;
                    }
                }
            }
        }
        assert!(refused.len() >= 20, "the disk never filled");
        // The node is up and answers; a split of a chunk that refused a
        // write cannot be made without space.
        c.ping().await.expect("node alive");
        for (range, key) in &refused[..2] {
            let _ = c.split_chunk(range, key).await;
        }
        // Regression: describe after a failed split overflowed the stack
        // (an unbounded retry recursion), and list with it.
        let info = c.describe_range("a").await.expect("describe after failed split");
        assert!(!info.chunks.is_empty());
        c.list_ranges().await.expect("list after failed split");
    });
    let listing = cli(node.addr, &["range", "list"]);
    assert!(listing.status.success(), "{listing:?}");

    // Phase 3: free space; the keys refused before (so the same chunks)
    // take writes again, without a restart.
    fs::remove_file(&filler).expect("free space");
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        for (range, key) in &refused {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match c.put(range, key, "yes").await {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("still refused: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{range}/{key} refused after space was freed: {e}"),
                }
            }
            acked.push((range.clone(), key.clone()));
        }
        for (range, key) in &acked {
            assert!(c.get(range, key).await.expect("get").is_some(), "{range}/{key} lost");
        }
    });
    assert!(!node.log_contains("panicked"), "{:#?}", node.log());

    // Phase 4: every acknowledged write survives a restart.
    node.restart();
    rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        for (range, key) in &acked {
            assert!(c.get(range, key).await.expect("get").is_some(), "{range}/{key} lost");
        }
        let info = c.describe_range("a").await.expect("describe");
        assert!(info.chunks.iter().all(|ch| ch.unavailable.is_none()), "{info:?}");
    });
    assert!(node.stop());
    drop(node);
    drop(small);
}
