//! The in-memory versioned index of one chunk: key -> version chain.
//!
//! A version says where an entry lives in the chunk log (segment, offset,
//! length) and which seq wrote it. The index does no I/O: it decides what a
//! read at a snapshot sees, what compaction keeps, and where a chunk splits,
//! so all of that is unit-tested without files.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::hash_order::{HashOrder, HashedPage};
use super::ranked_keys::RankedKeys;

/// Where one entry lives in the chunk log, and what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub seq: u64,
    pub offset: u64,
    pub segment: u32,
    /// Bytes of the whole entry; the top bit marks a delete (a tombstone).
    len_and_kind: u32,
}

const TOMBSTONE_BIT: u32 = 1 << 31;

impl Version {
    pub fn new(seq: u64, segment: u32, offset: u64, entry_len: usize, tombstone: bool) -> Self {
        let len = u32::try_from(entry_len).expect("entries are far below 2 GiB");
        assert!(len & TOMBSTONE_BIT == 0, "entries are far below 2 GiB");
        let len_and_kind = if tombstone { len | TOMBSTONE_BIT } else { len };
        Version { seq, offset, segment, len_and_kind }
    }

    pub fn is_tombstone(&self) -> bool {
        self.len_and_kind & TOMBSTONE_BIT != 0
    }

    pub fn entry_len(&self) -> usize {
        (self.len_and_kind & !TOMBSTONE_BIT) as usize
    }

    /// Bytes this version counts toward the chunk's live size.
    fn live_bytes(&self) -> u64 {
        if self.is_tombstone() {
            0
        } else {
            self.entry_len() as u64
        }
    }
}

/// The versions of one key, oldest first. Nearly every key has exactly one
/// version, so that case is stored inline without a heap allocation.
#[derive(Debug, Clone)]
enum Chain {
    One(Version),
    Many(Vec<Version>),
}

impl Chain {
    fn as_slice(&self) -> &[Version] {
        match self {
            Chain::One(v) => std::slice::from_ref(v),
            Chain::Many(vs) => vs,
        }
    }

    fn newest(&self) -> &Version {
        self.as_slice().last().expect("a chain is never empty")
    }

    fn push(&mut self, v: Version) {
        match self {
            Chain::One(old) => *self = Chain::Many(vec![*old, v]),
            Chain::Many(vs) => vs.push(v),
        }
    }

    /// The newest version with `seq <= at`.
    fn at(&self, at: u64) -> Option<&Version> {
        self.as_slice().iter().rev().find(|v| v.seq <= at)
    }
}

/// A key as the index stores it: short keys (nearly all of them) live inside
/// the B-tree node, so a lookup compares bytes already in cache instead of
/// chasing a pointer per comparison.
pub(crate) type IndexKey = smallvec::SmallVec<[u8; 24]>;

/// Bounds of a scan over keys.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

#[derive(Debug, Default)]
pub struct ChunkIndex {
    keys: BTreeMap<IndexKey, Chain>,
    /// Keys whose newest version is not a tombstone, ranked: counts and
    /// positions in O(log n) (ZRANK, DBSIZE, a random member). It holds
    /// each live key a second time, the price of not walking the keys.
    live: RankedKeys,
    /// The live keys in hashed order (SCAN's stateless cursors), once a
    /// read asked for it: see [`super::hash_order`].
    hashed: std::sync::Mutex<Option<HashOrder>>,
    /// Keys whose newest version is not a tombstone.
    live_records: u64,
    /// Sum of the entry sizes of the newest, non-tombstone versions.
    live_bytes: u64,
    /// The highest seq applied.
    last_seq: u64,
}

impl ChunkIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of one version per key from `entries`, whose keys increase
    /// strictly (a bulk load): the map and the ranked keys are built in one
    /// pass each, with no search and no rebalancing.
    pub fn from_sorted(entries: Vec<(IndexKey, Version)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys increase");
        let mut index = ChunkIndex::new();
        for (_, v) in &entries {
            index.last_seq = index.last_seq.max(v.seq);
            index.live_bytes += v.live_bytes();
            index.live_records += u64::from(!v.is_tombstone());
        }
        index.live = RankedKeys::from_sorted(
            entries.iter().filter(|(_, v)| !v.is_tombstone()).map(|(k, _)| k.clone()),
        );
        index.keys = entries.into_iter().map(|(k, v)| (k, Chain::One(v))).collect();
        index
    }

    /// Whether no key was ever indexed (or all were compacted away).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn live_records(&self) -> u64 {
        self.live_records
    }

    /// Keys whose newest version is a tombstone: they stay in the index,
    /// and scans walk past them, until a compaction drops them.
    pub fn dead_keys(&self) -> u64 {
        (self.keys.len() as u64).saturating_sub(self.live_records)
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The lowest and the highest key indexed, tombstones included.
    pub fn key_span(&self) -> Option<(&[u8], &[u8])> {
        let first = self.keys.first_key_value()?.0;
        let last = self.keys.last_key_value()?.0;
        Some((first.as_slice(), last.as_slice()))
    }

    /// Raises the last seq without adding a version: a rewritten log may
    /// have dropped the entries that carried the highest seqs.
    pub fn bump_last_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Records a new version of `key`. Versions of one key arrive in seq
    /// order (a batch may write a key twice under one seq: the later wins);
    /// different keys may arrive in any order, as a compacted log holds them.
    pub fn apply(&mut self, key: &[u8], v: Version) {
        self.last_seq = self.last_seq.max(v.seq);
        let (old_live, old_bytes) = match self.keys.get_mut(key) {
            Some(chain) => {
                let old = *chain.newest();
                assert!(v.seq >= old.seq, "seq went backwards: {} after {}", v.seq, old.seq);
                if old.seq == v.seq {
                    // Same batch wrote the key twice: replace in place.
                    match chain {
                        Chain::One(only) => *only = v,
                        Chain::Many(vs) => *vs.last_mut().expect("never empty") = v,
                    }
                } else {
                    chain.push(v);
                }
                (!old.is_tombstone(), old.live_bytes())
            }
            None => {
                self.keys.insert(IndexKey::from_slice(key), Chain::One(v));
                (false, 0)
            }
        };
        self.live_records = self.live_records + u64::from(!v.is_tombstone()) - u64::from(old_live);
        self.live_bytes = self.live_bytes + v.live_bytes() - old_bytes;
        match (old_live, !v.is_tombstone()) {
            (false, true) => {
                self.live.insert(key);
                if let Some(h) = self.hashed_mut() {
                    h.insert(key);
                }
            }
            (true, false) => {
                self.live.remove(key);
                if let Some(h) = self.hashed_mut() {
                    h.remove(key);
                }
            }
            _ => {}
        }
    }

    fn hashed_mut(&mut self) -> Option<&mut HashOrder> {
        self.hashed.get_mut().unwrap_or_else(|p| p.into_inner()).as_mut()
    }

    /// Takes over `other`'s hashed order, if it has one: for a rewrite of
    /// the same live keys (a compaction), which so does not build it again.
    pub fn take_hash_order(&mut self, other: &mut ChunkIndex) {
        debug_assert_eq!(self.live_records, other.live_records);
        let theirs = other.hashed.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        *self.hashed.get_mut().unwrap_or_else(|p| p.into_inner()) = theirs;
    }

    /// The live children of `parent` in hashed order from hash `from` on,
    /// about `limit` of them ([`HashOrder::page`]); the first such read
    /// builds the order, in O(n log n).
    pub fn hashed_page(&self, parent: &[u8], from: u64, limit: usize) -> HashedPage {
        let mut hashed = self.hashed.lock().unwrap_or_else(|p| p.into_inner());
        let order = hashed.get_or_insert_with(|| {
            HashOrder::build(
                self.keys
                    .iter()
                    .filter(|(_, chain)| !chain.newest().is_tombstone())
                    .map(|(k, _)| k.as_slice()),
            )
        });
        order.page(parent, from, limit)
    }

    /// Takes out every version above `seq` (batches whose write failed
    /// before it reached the log) and lowers the last seq to `seq`. Walks
    /// every key: this is the rare failure path, not the write path.
    pub fn discard_above(&mut self, seq: u64) {
        // Built again by the next read that wants it.
        *self.hashed.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        let mut emptied = Vec::new();
        for (key, chain) in self.keys.iter_mut() {
            if chain.newest().seq <= seq {
                continue;
            }
            let old = *chain.newest();
            let kept: Vec<Version> =
                chain.as_slice().iter().copied().filter(|v| v.seq <= seq).collect();
            self.live_records -= u64::from(!old.is_tombstone());
            self.live_bytes -= old.live_bytes();
            let live_now = kept.last().is_some_and(|v| !v.is_tombstone());
            match (!old.is_tombstone(), live_now) {
                (false, true) => {
                    self.live.insert(key);
                }
                (true, false) => {
                    self.live.remove(key);
                }
                _ => {}
            }
            match kept.last() {
                None => emptied.push(key.clone()),
                Some(newest) => {
                    self.live_records += u64::from(!newest.is_tombstone());
                    self.live_bytes += newest.live_bytes();
                    *chain = match kept.as_slice() {
                        [only] => Chain::One(*only),
                        _ => Chain::Many(kept),
                    };
                }
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        self.last_seq = self.last_seq.min(seq);
    }

    /// What a read of `key` at snapshot `at` sees (`None`: absent or deleted).
    pub fn get(&self, key: &[u8], at: u64) -> Option<Version> {
        let v = self.keys.get(key)?.at(at)?;
        (!v.is_tombstone()).then_some(*v)
    }

    /// Live keys (newest versions) within `bounds`, in O(log n).
    pub fn count_live(&self, bounds: KeyBounds<'_>) -> u64 {
        let (below, end) = self.rank_span(bounds);
        end.saturating_sub(below)
    }

    /// The live key (newest versions) at position `n` within `bounds`
    /// (0: the lowest), in O(log n); `Err(count)` when there are only
    /// `count` (at most `n`).
    pub fn select_live(&self, bounds: KeyBounds<'_>, n: u64) -> Result<&[u8], u64> {
        let (below, end) = self.rank_span(bounds);
        let count = end.saturating_sub(below);
        if n >= count {
            return Err(count);
        }
        self.live.select(below + n).ok_or(count)
    }

    /// Ranks among the live keys of the first key within `bounds` and of
    /// the first key past them.
    fn rank_span(&self, (lower, upper): KeyBounds<'_>) -> (u64, u64) {
        let below = match lower {
            Bound::Included(k) => self.live.rank(k, false),
            Bound::Excluded(k) => self.live.rank(k, true),
            Bound::Unbounded => 0,
        };
        let end = match upper {
            Bound::Included(k) => self.live.rank(k, true),
            Bound::Excluded(k) => self.live.rank(k, false),
            Bound::Unbounded => self.live.len(),
        };
        (below, end)
    }

    /// Live records within `bounds` at snapshot `at`, in key order (or
    /// reversed).
    pub fn scan<'a>(
        &'a self,
        bounds: KeyBounds<'_>,
        at: u64,
        reverse: bool,
    ) -> Box<dyn Iterator<Item = (&'a [u8], Version)> + 'a> {
        let range = self.keys.range::<[u8], _>(bounds);
        let visible = move |(k, chain): (&'a IndexKey, &'a Chain)| {
            let v = chain.at(at)?;
            (!v.is_tombstone()).then_some((k.as_slice(), *v))
        };
        if reverse {
            Box::new(range.rev().filter_map(visible))
        } else {
            Box::new(range.filter_map(visible))
        }
    }

    /// Every version some reader can still see, per key, oldest first: the
    /// newest version of each key; for every pinned snapshot, the newest
    /// version at or before it; and, because snapshots taken later may sit
    /// anywhere at or above `upto` (the node's stable seq), the newest version
    /// at or before `upto` and every version above it. A tombstone
    /// with nothing older kept below it is dropped: absence says the same.
    pub fn retained<'a>(
        &'a self,
        pins: &'a [u64],
        upto: u64,
        bounds: KeyBounds<'_>,
    ) -> impl Iterator<Item = (&'a [u8], Vec<Version>)> + 'a {
        self.keys.range::<[u8], _>(bounds).filter_map(move |(key, chain)| {
            let kept = retain_chain(chain.as_slice(), pins, upto);
            (!kept.is_empty()).then_some((key.as_slice(), kept))
        })
    }

    /// Like [`ChunkIndex::retained`] for the keys after `after` (all keys
    /// when `None`), in key order, but over the versions `existed` accepts
    /// only: a prefix of each chain (the versions a rewrite found when it
    /// began; later ones are copied as they come). Yields every key,
    /// with an empty list when nothing of it is kept, so that the caller
    /// can count the keys it walked.
    ///
    /// What is kept of a prefix is a superset of what would be kept of the
    /// same versions in the whole chain: a later version only ever
    /// supersedes older ones.
    pub fn retained_from<'a>(
        &'a self,
        pins: &'a [u64],
        upto: u64,
        after: Option<&[u8]>,
        existed: impl Fn(&Version) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a [u8], Vec<Version>)> + 'a {
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.keys.range::<[u8], _>((lower, Bound::Unbounded)).map(move |(key, chain)| {
            let chain = chain.as_slice();
            let n = chain.iter().take_while(|v| existed(v)).count();
            let kept = if n == 0 { Vec::new() } else { retain_chain(&chain[..n], pins, upto) };
            (key.as_slice(), kept)
        })
    }

    /// Every (seq, key) of a version above `after`: what a view that last
    /// saw the chunk at `after` has yet to see.
    pub fn versions_after(&self, after: u64) -> Vec<(u64, Box<[u8]>)> {
        let mut out = Vec::new();
        for (key, chain) in &self.keys {
            for v in chain.as_slice().iter().filter(|v| v.seq > after) {
                out.push((v.seq, key.as_slice().into()));
            }
        }
        out
    }

    /// The key at which to split so both halves hold about half the live
    /// bytes. `None` when the chunk has fewer than two live keys.
    pub fn split_key(&self) -> Option<Vec<u8>> {
        if self.live_records < 2 {
            return None;
        }
        let half = self.live_bytes / 2;
        let mut acc = 0u64;
        let mut first_live: Option<&[u8]> = None;
        for (key, chain) in &self.keys {
            let v = chain.newest();
            if v.is_tombstone() {
                continue;
            }
            match first_live {
                None => first_live = Some(key),
                // The split key starts the upper half, so it must not be the
                // first live key or the lower half would be empty.
                Some(_) if acc >= half => return Some(key.to_vec()),
                Some(_) => {}
            }
            acc += v.live_bytes();
        }
        // All weight in the first key: split right after it.
        let mut live = self.keys.iter().filter(|(_, c)| !c.newest().is_tombstone());
        live.next();
        live.next().map(|(k, _)| k.to_vec())
    }
}

/// The versions of one chain that compaction keeps; see [`ChunkIndex::retained`].
fn retain_chain(chain: &[Version], pins: &[u64], upto: u64) -> Vec<Version> {
    let newest = chain.len() - 1;
    let mut keep: Vec<bool> = chain.iter().map(|v| v.seq > upto).collect();
    keep[newest] = true;
    if let Some(i) = chain.iter().rposition(|v| v.seq <= upto) {
        keep[i] = true;
    }
    for &pin in pins {
        if let Some(i) = chain.iter().rposition(|v| v.seq <= pin) {
            keep[i] = true;
        }
    }
    let mut kept: Vec<Version> =
        chain.iter().zip(keep).filter_map(|(v, k)| k.then_some(*v)).collect();
    while kept.first().is_some_and(Version::is_tombstone) {
        kept.remove(0);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound::Unbounded;

    fn put(seq: u64, len: usize) -> Version {
        Version::new(seq, 0, seq * 100, len, false)
    }
    fn del(seq: u64) -> Version {
        Version::new(seq, 0, seq * 100, 30, true)
    }

    proptest::proptest! {
        /// Counts and positions of live keys agree with a walk of the
        /// newest versions, through puts, deletes, the same key twice in a
        /// batch, and batches taken back by `discard_above`.
        #[test]
        fn counts_and_positions_match_a_scan(
            steps in proptest::collection::vec((0u8..24, 0u8..3), 1..300),
            discard_at in proptest::option::of(0usize..300),
            lo in 0u8..24,
            hi in 0u8..24,
        ) {
            let mut ix = ChunkIndex::new();
            for (i, (key, action)) in steps.iter().enumerate() {
                // Two steps share a seq now and then: one batch, one key twice.
                let seq = i as u64 / 2 + 1;
                let k = [b'k', *key];
                ix.apply(&k, if *action == 0 { del(seq) } else { put(seq, 10) });
                if discard_at == Some(i) {
                    ix.discard_above(seq / 2);
                }
            }
            let (lo, hi) = ([b'k', lo.min(hi)], [b'k', lo.max(hi)]);
            let bounds_list: [KeyBounds<'_>; 4] = [
                (Unbounded, Unbounded),
                (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
                (Bound::Excluded(&lo[..]), Bound::Included(&hi[..])),
                (Unbounded, Bound::Excluded(&hi[..])),
            ];
            for bounds in bounds_list {
                let want: Vec<&[u8]> = ix.scan(bounds, u64::MAX, false).map(|(k, _)| k).collect();
                proptest::prop_assert_eq!(ix.count_live(bounds), want.len() as u64);
                for (n, key) in want.iter().enumerate() {
                    proptest::prop_assert_eq!(ix.select_live(bounds, n as u64), Ok(*key));
                }
                proptest::prop_assert_eq!(
                    ix.select_live(bounds, want.len() as u64),
                    Err(want.len() as u64)
                );
            }
            proptest::prop_assert_eq!(ix.live.len(), ix.live_records());
        }
    }

    #[test]
    fn reads_see_the_newest_version_at_their_snapshot() {
        let mut ix = ChunkIndex::new();
        ix.apply(b"a", put(1, 40));
        ix.apply(b"a", put(3, 50));
        ix.apply(b"a", del(5));
        assert_eq!(ix.get(b"a", 0), None);
        assert_eq!(ix.get(b"a", 1).map(|v| v.seq), Some(1));
        assert_eq!(ix.get(b"a", 4).map(|v| v.seq), Some(3));
        assert_eq!(ix.get(b"a", 5), None);
        assert_eq!(ix.live_records(), 0);
        assert_eq!(ix.live_bytes(), 0);
    }

    #[test]
    fn live_accounting_follows_the_newest_version() {
        let mut ix = ChunkIndex::new();
        ix.apply(b"a", put(1, 40));
        ix.apply(b"b", put(2, 60));
        assert_eq!((ix.live_records(), ix.live_bytes()), (2, 100));
        ix.apply(b"a", put(3, 10));
        assert_eq!((ix.live_records(), ix.live_bytes()), (2, 70));
        ix.apply(b"b", del(4));
        assert_eq!((ix.live_records(), ix.live_bytes()), (1, 10));
        ix.apply(b"b", put(5, 5));
        assert_eq!((ix.live_records(), ix.live_bytes()), (2, 15));
    }

    #[test]
    fn same_seq_twice_replaces() {
        let mut ix = ChunkIndex::new();
        ix.apply(b"a", put(1, 40));
        ix.apply(b"a", put(1, 10));
        assert_eq!((ix.live_records(), ix.live_bytes()), (1, 10));
        assert_eq!(ix.retained(&[], 1, (Unbounded, Unbounded)).count(), 1);
    }

    #[test]
    #[should_panic(expected = "seq went backwards")]
    fn seq_must_not_go_backwards() {
        let mut ix = ChunkIndex::new();
        ix.apply(b"a", put(5, 1));
        ix.apply(b"a", put(4, 1));
    }

    #[test]
    fn compaction_keeps_exactly_what_pins_see() {
        let chain = [put(1, 1), put(2, 1), del(3), put(4, 1), put(6, 1)];
        let seqs = |pins: &[u64]| -> Vec<u64> {
            retain_chain(&chain, pins, 6).iter().map(|v| v.seq).collect()
        };
        assert_eq!(seqs(&[]), vec![6]);
        assert_eq!(seqs(&[1]), vec![1, 6]);
        assert_eq!(seqs(&[2, 5]), vec![2, 4, 6]);
        // A pin that sees the tombstone keeps it only above an older kept put.
        assert_eq!(seqs(&[3]), vec![6]);
        assert_eq!(seqs(&[1, 3]), vec![1, 3, 6]);
        assert_eq!(seqs(&[0]), vec![6]);
        assert_eq!(retain_chain(&[put(1, 1), del(2)], &[], 2), vec![]);
    }

    #[test]
    fn compaction_keeps_everything_a_future_snapshot_may_see() {
        // Seqs above `upto` may still become visible to snapshots taken
        // later, and so may the newest version at or below it.
        let chain = [put(1, 1), put(2, 1), put(4, 1), put(6, 1)];
        let kept: Vec<u64> = retain_chain(&chain, &[], 3).iter().map(|v| v.seq).collect();
        assert_eq!(kept, vec![2, 4, 6]);
    }

    /// What a rewrite keeps of the versions that existed when it began,
    /// followed by every version logged since, reads the same as the whole
    /// chain at every pin and at every snapshot from `upto` on.
    #[test]
    fn a_kept_prefix_and_the_versions_after_it_read_as_the_whole_chain() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.gen_range(1..8);
            let mut seq = 0;
            let chain: Vec<Version> = (0..n)
                .map(|_| {
                    seq += rng.gen_range(1..4);
                    if rng.gen_bool(0.3) {
                        del(seq)
                    } else {
                        put(seq, 10)
                    }
                })
                .collect();
            let upto = rng.gen_range(0..=seq + 1);
            let pins: Vec<u64> =
                (0..rng.gen_range(0..3)).map(|_| rng.gen_range(0..=upto)).collect();
            let cut = rng.gen_range(0..=n);
            let mut rewritten =
                if cut == 0 { vec![] } else { retain_chain(&chain[..cut], &pins, upto) };
            rewritten.extend_from_slice(&chain[cut..]);
            let read = |vs: &[Version], at: u64| {
                vs.iter().rev().find(|v| v.seq <= at).filter(|v| !v.is_tombstone()).map(|v| v.seq)
            };
            for at in pins.iter().copied().chain(upto..=seq + 1) {
                assert_eq!(read(&rewritten, at), read(&chain, at), "{chain:?} cut {cut} at {at}");
            }
        }
    }

    #[test]
    fn scan_respects_bounds_snapshot_and_direction() {
        let mut ix = ChunkIndex::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            ix.apply(*k, put(i as u64 + 1, 10));
        }
        ix.apply(b"b", del(9));
        let keys = |b: KeyBounds<'_>, at, rev| -> Vec<Vec<u8>> {
            ix.scan(b, at, rev).map(|(k, _)| k.to_vec()).collect()
        };
        use Bound::*;
        assert_eq!(keys((Included(b"b"), Excluded(b"d")), 9, false), vec![b"c".to_vec()]);
        assert_eq!(
            keys((Included(b"b"), Excluded(b"d")), 8, false),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys((Unbounded, Unbounded), 9, true),
            vec![b"d".to_vec(), b"c".to_vec(), b"a".to_vec()]
        );
        assert_eq!(keys((Unbounded, Unbounded), 2, false), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn split_key_halves_live_bytes() {
        let mut ix = ChunkIndex::new();
        assert_eq!(ix.split_key(), None);
        ix.apply(b"a", put(1, 1000));
        assert_eq!(ix.split_key(), None);
        ix.apply(b"b", put(2, 10));
        assert_eq!(ix.split_key(), Some(b"b".to_vec()));
        for (i, k) in [b"c", b"d", b"e", b"f"].iter().enumerate() {
            ix.apply(*k, put(3 + i as u64, 1000));
        }
        // a=1000 b=10 c..f=1000 each: 3010 bytes lie below e, 2000 from it.
        assert_eq!(ix.split_key(), Some(b"e".to_vec()));
        ix.apply(b"a", del(10));
        assert_eq!(ix.split_key(), Some(b"e".to_vec()));
    }
}
