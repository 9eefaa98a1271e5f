//! A second order of a chunk's live keys, by hash: the keys that share a
//! parent (a tuple key's elements but the last) in the order of a 64-bit
//! hash of their last element. A position in it is one number, so a scan
//! of a parent's children can be resumed from a cursor that holds nothing
//! but that number, however the keys around it changed meanwhile: Redis's
//! SCAN guarantees (every key present from the first call to the last is
//! returned) with stateless cursors, as Redis's own hash-table cursors
//! give them.
//!
//! The hash is XXH3-64 (Collet, xxHash specification) of the last
//! element's encoded bytes, seed 0: stable across versions and machines,
//! so a cursor stays good across restarts and on another replica.
//!
//! The order is built on a chunk's first hashed read (O(n log n)) and kept
//! up to date by every write from then on; a chunk never read that way
//! pays nothing. It holds each live key once more in memory.

use std::collections::BTreeSet;

use super::chunk_index::IndexKey;

/// The hash position of a tuple key: where its parent ends (its last
/// element starts) and the hash of its last element; `None` for a key
/// that is not a tuple.
pub fn position(key: &[u8]) -> Option<(usize, u64)> {
    let start = monotable_proto::tuple::last_element_start(key).ok()?;
    Some((start, xxhash_rust::xxh3::xxh3_64(&key[start..])))
}

fn parent_hash(parent: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(parent)
}

/// One key in hashed order: parent hash, hash of the last element, where
/// the last element starts, the key.
type Entry = (u64, u64, u32, IndexKey);

fn entry(key: &[u8]) -> Option<Entry> {
    let (start, hash) = position(key)?;
    let start32 = u32::try_from(start).ok()?;
    Some((parent_hash(&key[..start]), hash, start32, IndexKey::from_slice(key)))
}

/// Children of one parent in hashed order, from some hash on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HashedPage {
    /// `(hash, key)` in (hash, key) order.
    pub keys: Vec<(u64, Vec<u8>)>,
    /// More children follow the last one returned; every child up to the
    /// last returned hash was returned.
    pub truncated: bool,
}

/// The keys of a chunk in hashed order (see the module doc).
#[derive(Debug, Default)]
pub struct HashOrder {
    keys: BTreeSet<Entry>,
}

impl HashOrder {
    /// The order of `keys` (live keys, any order).
    pub fn build<'a>(keys: impl Iterator<Item = &'a [u8]>) -> HashOrder {
        HashOrder { keys: keys.filter_map(entry).collect() }
    }

    pub fn insert(&mut self, key: &[u8]) {
        if let Some(e) = entry(key) {
            self.keys.insert(e);
        }
    }

    pub fn remove(&mut self, key: &[u8]) {
        if let Some(e) = entry(key) {
            self.keys.remove(&e);
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The children of `parent` (the encoding of a tuple) whose hash is at
    /// least `from`, in hashed order: the first `limit` (at least one),
    /// then any that share the last one's hash, so a page never ends
    /// inside a run of equal hashes and the next can start at a hash.
    pub fn page(&self, parent: &[u8], from: u64, limit: usize) -> HashedPage {
        let ph = parent_hash(parent);
        let lower = (ph, from, 0u32, IndexKey::new());
        let mut out = HashedPage::default();
        for (p, hash, start, key) in self.keys.range(lower..) {
            if *p != ph {
                break;
            }
            // Another parent with the same hash is not a child.
            if *start as usize != parent.len() || !key.starts_with(parent) {
                continue;
            }
            if out.keys.len() >= limit.max(1) && out.keys.last().is_some_and(|l| l.0 != *hash) {
                out.truncated = true;
                break;
            }
            out.keys.push((*hash, key.to_vec()));
        }
        out
    }
}

/// Pages of children from several sources (a chunk each, or a
/// transaction's held writes), merged: the keys below the hash every
/// source has returned all of, in hashed order.
#[derive(Debug, Default)]
pub struct MergedPages {
    keys: Vec<(u64, Vec<u8>)>,
    /// The lowest last hash of a truncated page: past it some source has
    /// keys not returned yet.
    complete_to: Option<u64>,
}

impl MergedPages {
    pub fn add(&mut self, page: HashedPage) {
        if page.truncated {
            let last = page.keys.last().map_or(0, |k| k.0);
            self.complete_to = Some(self.complete_to.map_or(last, |c| c.min(last)));
        }
        self.keys.extend(page.keys);
    }

    /// Adds or takes out one key (a held write of a transaction).
    pub fn overlay(&mut self, key: Vec<u8>, live: bool) {
        self.keys.retain(|(_, k)| *k != key);
        if live {
            if let Some((_, hash)) = position(&key) {
                self.keys.push((hash, key));
            }
        }
    }

    /// About `limit` keys from the lowest hash up (never splitting a run of
    /// equal hashes), and the cursor to read on from: the hash of the next
    /// key, or `0` when none is left.
    pub fn take(mut self, from: u64, limit: usize) -> (Vec<(u64, Vec<u8>)>, u64) {
        self.keys.retain(|(hash, _)| *hash >= from);
        if let Some(c) = self.complete_to {
            self.keys.retain(|(hash, _)| *hash <= c);
        }
        self.keys.sort_unstable();
        self.keys.dedup();
        let mut cut = self.keys.len().min(limit.max(1));
        while cut > 0 && cut < self.keys.len() && self.keys[cut].0 == self.keys[cut - 1].0 {
            cut += 1;
        }
        let next = match (self.keys.get(cut), self.complete_to) {
            (Some(k), _) => k.0,
            (None, Some(c)) => c.checked_add(1).unwrap_or(0),
            (None, None) => 0,
        };
        self.keys.truncate(cut);
        (self.keys, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monotable_proto::tuple::{encode, Element};
    use proptest::prelude::*;

    fn row(tag: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![Element::String(tag.into())];
        t.extend(parts.iter().map(|p| Element::Bytes(p.to_vec())));
        encode(&t).expect("encodes")
    }

    /// Reads every child of `parent` from `order` in pages of `limit`,
    /// the way SCAN does, through a merge of one source.
    fn read_all(order: &HashOrder, parent: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cursor = 0;
        loop {
            let mut merged = MergedPages::default();
            merged.add(order.page(parent, cursor, limit));
            let (keys, next) = merged.take(cursor, limit);
            out.extend(keys.into_iter().map(|k| k.1));
            if next == 0 {
                return out;
            }
            assert!(next > cursor, "a page moves on");
            cursor = next;
        }
    }

    #[test]
    fn children_only_and_every_one_once() {
        let parent =
            encode(&[Element::String("h".into()), Element::Bytes(b"a".to_vec())]).expect("encodes");
        let mut keys: Vec<Vec<u8>> =
            (0..100u32).map(|i| row("h", &[b"a", &i.to_be_bytes()])).collect();
        // Not children: a grandchild, another parent, the parent itself.
        keys.push(row("h", &[b"a", b"x", b"y"]));
        keys.push(row("h", &[b"a\0", b"x"]));
        keys.push(row("h", &[b"a"]));
        let order = HashOrder::build(keys.iter().map(Vec::as_slice));
        let mut got = read_all(&order, &parent, 7);
        got.sort();
        let mut want: Vec<Vec<u8>> = keys[..100].to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    proptest! {
        /// Keys present from the first page to the last are all returned,
        /// whatever is inserted and removed between pages.
        #[test]
        fn keys_present_throughout_are_returned(
            initial in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..4), 0..60),
            churn in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4)), 0..80),
            limit in 1usize..9,
        ) {
            let parent = encode(&[Element::String("k".into())]).expect("encodes");
            let key = |b: &[u8]| row("k", &[b]);
            let mut order = HashOrder::build(initial.iter().map(|b| key(b)).collect::<Vec<_>>().iter().map(Vec::as_slice));
            let mut live: std::collections::BTreeSet<Vec<u8>> = initial.iter().map(|b| key(b)).collect();
            let mut throughout = live.clone();
            let mut seen = std::collections::BTreeSet::new();
            let mut cursor = 0;
            let mut churn = churn.into_iter();
            loop {
                let mut merged = MergedPages::default();
                merged.add(order.page(&parent, cursor, limit));
                let (keys, next) = merged.take(cursor, limit);
                for (_, k) in keys {
                    prop_assert!(live.contains(&k), "a returned key is live");
                    seen.insert(k);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
                for (insert, b) in churn.by_ref().take(3) {
                    let k = key(&b);
                    if insert {
                        order.insert(&k);
                        live.insert(k);
                    } else {
                        order.remove(&k);
                        live.remove(&k);
                        throughout.remove(&k);
                    }
                }
            }
            prop_assert!(throughout.is_subset(&seen));
        }

        /// Several sources merged return what one source holding all of
        /// their keys returns.
        #[test]
        fn merged_sources_read_as_one(
            keys in proptest::collection::btree_set(proptest::collection::vec(any::<u8>(), 0..3), 0..80),
            parts in 1usize..5,
            limit in 1usize..9,
        ) {
            let parent = encode(&[Element::String("k".into())]).expect("encodes");
            let rows: Vec<Vec<u8>> = keys.iter().map(|b| row("k", &[b])).collect();
            let sources: Vec<HashOrder> = (0..parts)
                .map(|p| HashOrder::build(rows.iter().skip(p).step_by(parts).map(Vec::as_slice)))
                .collect();
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let mut merged = MergedPages::default();
                for s in &sources {
                    merged.add(s.page(&parent, cursor, limit));
                }
                let (got, next) = merged.take(cursor, limit);
                seen.extend(got.into_iter().map(|k| k.1));
                if next == 0 {
                    break;
                }
                prop_assert!(next > cursor);
                cursor = next;
            }
            let mut want = rows.clone();
            want.sort();
            seen.sort();
            prop_assert_eq!(seen, want);
        }
    }
}
