//! The ExtendedHashtable against a BTreeMap folding the same inserts, with
//! a monoid that is not commutative (concatenation), so a merge that
//! combined a key's partials out of insertion order would show.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::shuffle::runs::remove_leftovers;

/// Concatenation of byte strings: associative, not commutative.
struct Concat;

impl Combiner for Concat {
    type P = Vec<u8>;

    fn combine(&self, older: &Vec<u8>, newer: &Vec<u8>) -> Vec<u8> {
        let mut out = older.clone();
        out.extend_from_slice(newer);
        out
    }

    fn encode(&self, p: &Vec<u8>) -> Vec<u8> {
        p.clone()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }

    fn heap_bytes(&self, p: &Vec<u8>) -> usize {
        p.capacity()
    }
}

fn table(dir: &Path, budget: usize) -> ExtendedHashtable<Concat> {
    ExtendedHashtable::new(
        Arc::new(Concat),
        budget,
        RunStore::disk(dir.to_path_buf()).expect("dir"),
    )
}

fn drain(mut m: Merged<Concat>) -> Result<Vec<Entry<Vec<u8>>>, RunError> {
    let mut out = Vec::new();
    while let Some(e) = m.next_entry()? {
        out.push(e);
    }
    Ok(out)
}

fn model(inserts: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut m: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in inserts {
        m.entry(k.clone()).or_default().extend_from_slice(v);
    }
    m.into_iter().collect()
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// Keys from a small pool of hostile shapes (empty, NUL bytes, 0xFF, long
/// keys, keys that are prefixes of others), so keys repeat and combine.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(vec![0]),
        Just(vec![0, 0]),
        Just(vec![0xff; 3]),
        (0u8..40).prop_map(|b| vec![b'k', b]),
        (0u8..4).prop_map(|b| vec![b'k', b, 0]),
        (0usize..3).prop_map(|n| vec![b'x'; 1000 + n]),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

#[derive(Debug, Clone)]
enum End {
    /// `finish` and read everything.
    Finish,
    /// Dropped before `finish` (a failed job).
    Drop,
    /// The process dies: nothing runs, the next start removes the files.
    Kill,
    /// Dropped halfway through reading the merge.
    DropMerge,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_a_btreemap_fold_across_spills_and_crashes(
        inserts in prop::collection::vec((key(), prop::collection::vec(any::<u8>(), 0..6)), 0..400),
        budget in prop_oneof![Just(200usize), 300usize..3000, Just(1 << 20)],
        end in prop_oneof![Just(End::Finish), Just(End::Drop), Just(End::Kill), Just(End::DropMerge)],
        crash_at in any::<prop::sample::Index>(),
    ) {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("job-t");
        let want = model(&inserts);
        let mut t = table(&dir, budget);
        let cut = if matches!(end, End::Finish | End::DropMerge) || inserts.is_empty() {
            inserts.len()
        } else {
            crash_at.index(inserts.len())
        };
        for (k, v) in &inserts[..cut] {
            t.insert(k, v.clone()).expect("insert");
            prop_assert!(t.bytes() <= budget);
        }
        match end {
            End::Finish => {
                let got = drain(t.finish().expect("finish")).expect("merge");
                prop_assert_eq!(got, want);
                prop_assert!(is_empty_dir(&dir), "runs left after the merge");
            }
            End::DropMerge => {
                let mut m = t.finish().expect("finish");
                for _ in 0..crash_at.index(want.len() + 1) {
                    m.next_entry().expect("merge");
                }
                drop(m);
                prop_assert!(is_empty_dir(&dir), "runs left after a merge was dropped");
            }
            End::Drop => {
                drop(t);
                prop_assert!(is_empty_dir(&dir), "runs left after a table was dropped");
            }
            End::Kill => {
                std::mem::forget(t);
                remove_leftovers(base.path()).expect("cleanup");
                prop_assert!(is_empty_dir(base.path()), "the next start left files");
                // The job runs again from the start and gets the answer.
                let mut again = table(&dir, budget);
                for (k, v) in &inserts {
                    again.insert(k, v.clone()).expect("insert");
                }
                prop_assert_eq!(drain(again.finish().expect("finish")).expect("merge"), want);
            }
        }
    }
}

#[test]
fn few_distinct_keys_never_spill() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut t = table(&base.path().join("t"), 1 << 20);
    for i in 0..100_000u32 {
        t.insert(&[(i % 7) as u8], vec![1]).expect("insert");
    }
    assert_eq!(t.stats().spills, 0);
    let got = drain(t.finish().expect("finish")).expect("merge");
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|(_, v)| v.len() >= 14_285));
}

#[test]
fn more_spills_than_the_fan_in_merge_early() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("t");
    let mut t = table(&dir, 1000);
    let mut inserts = Vec::new();
    for i in 0..5000u32 {
        let k = (i.wrapping_mul(2_654_435_761) % 900).to_be_bytes().to_vec();
        inserts.push((k.clone(), vec![(i % 251) as u8]));
        t.insert(&k, vec![(i % 251) as u8]).expect("insert");
        let files = std::fs::read_dir(&dir).expect("dir").count();
        assert!(files <= RUN_FAN_IN, "{files} runs on disk");
    }
    let stats = t.stats();
    assert!(stats.spills > 2 * RUN_FAN_IN as u64, "{stats:?}");
    assert!(stats.merged_runs > 0);
    assert_eq!(drain(t.finish().expect("finish")).expect("merge"), model(&inserts));
}

/// Regression guard: a damaged or cut run must fail the merge, never give
/// a shorter or different answer.
#[test]
fn a_damaged_or_cut_run_fails_the_merge() {
    for damage in ["flip", "cut", "footer"] {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("t");
        let mut t = table(&dir, 400);
        for i in 0..200u32 {
            t.insert(&i.to_be_bytes(), vec![1, 2, 3]).expect("insert");
        }
        assert!(t.stats().spills > 2);
        let run =
            std::fs::read_dir(&dir).expect("dir").next().expect("a run").expect("entry").path();
        let mut bytes = std::fs::read(&run).expect("read");
        match damage {
            "flip" => bytes[20] ^= 0x40,
            "cut" => bytes.truncate(bytes.len() / 2),
            _ => bytes.truncate(bytes.len() - 17),
        }
        std::fs::write(&run, bytes).expect("write");
        let result = t.finish().and_then(drain);
        let err = result.expect_err(damage).to_string();
        assert!(err.contains("damaged"), "{damage}: {err}");
    }
}

/// `merge_all` merges every part's runs and memory in one heap: a key's
/// partials combine part by part, oldest first within each part, and every
/// part's runs are removed when the merge is dropped.
#[test]
fn merge_all_combines_parts_in_order_and_removes_their_runs() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut parts = Vec::new();
    let mut inserts: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    for part in 0..3u32 {
        let mut t =
            table(&base.path().join(format!("p{part}")), if part == 1 { 1 << 20 } else { 700 });
        let mut mine = Vec::new();
        for i in 0..900u32 {
            let k = (i.wrapping_mul(2_654_435_761) % (97 + part)).to_be_bytes().to_vec();
            let v = vec![part as u8, (i % 251) as u8];
            t.insert(&k, v.clone()).expect("insert");
            mine.push((k, v));
        }
        inserts.push(mine);
        parts.push(t.finish().expect("finish"));
    }
    assert!(parts[0].stats().spills > 3 && parts[1].stats().spills == 0);
    let all = Merged::merge_all(Arc::new(Concat), parts).expect("merge");
    let want = model(&inserts.concat());
    assert_eq!(drain(all).expect("merge"), want);
    assert!(is_empty_dir(base.path()), "runs left after the merge");
}
