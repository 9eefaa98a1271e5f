//! The ExtendedHashtable's heap, measured by counting every allocation of
//! this process: inserting ten times its budget and merging it back, the
//! bytes live at once stay within the budget (one test per process, so
//! nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use monotable_node::shuffle::runs::RunStore;
use monotable_node::shuffle::table::{Combiner, ExtendedHashtable};
use monotable_node::view::reduction::Builtin;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn key(i: u64) -> Vec<u8> {
    // 24 to 87 bytes, in no order.
    let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut k = format!("user:{h:016x}:").into_bytes();
    k.resize(24 + (h % 64) as usize, b'x');
    k
}

fn measure<C: Combiner>(
    f: C,
    leaf: impl Fn(u64) -> C::P,
    budget: usize,
    inserts: u64,
) -> (usize, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RunStore::disk(dir.path().join("t")).expect("store");
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut t = ExtendedHashtable::new(Arc::new(f), budget, store);
    for i in 0..inserts {
        // Every key twice, far apart: half the inserts combine.
        t.insert(&key(i % (inserts / 2)), leaf(i)).expect("insert");
    }
    let spills = t.stats().spills;
    let mut m = t.finish().expect("finish");
    let mut n = 0u64;
    while m.next_entry().expect("merge").is_some() {
        n += 1;
    }
    assert_eq!(n, inserts / 2);
    drop(m);
    (PEAK.load(Ordering::Relaxed) - base, spills)
}

#[test]
fn a_table_stays_within_its_budget_while_ten_times_that_passes_through() {
    let budget = 8 << 20;
    for (name, b, inserts) in
        [("count", Builtin::Count, 400_000u64), ("stats", Builtin::Stats, 200_000)]
    {
        let value = rmp_serde::to_vec(&42i64).expect("msgpack");
        let (peak, spills) = measure(b, |_| b.leaf(&value).expect("leaf"), budget, inserts);
        eprintln!("{name}: peak {peak} bytes for a budget of {budget}, {spills} spills");
        assert!(spills >= 5, "{name}: only {spills} spills: the data must pass the budget");
        assert!(peak <= budget, "{name}: peak {peak} bytes, budget {budget}");
    }
}
