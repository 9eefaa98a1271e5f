//! The ExtendedHashtable: the shuffle of a batch job and of a mapper's bulk backfill.
//!
//! An in-memory table of `key -> partial reduction` under a byte budget:
//! a hash index (xxh3 with a per-table seed) over a key arena. Inserting a
//! key already present combines the two partials (a combiner: a job with
//! few distinct keys never spills). When the table would pass its budget
//! it sorts its keys (by their first eight bytes, then whole), writes
//! itself as one sorted run ([`super::runs`]) and empties, keeping its
//! arrays' memory for the next round; once [`RUN_FAN_IN`] runs exist the
//! oldest are merged into one, so a merge never opens more. At the end,
//! [`ExtendedHashtable::finish`] streams every key once, in key order: a
//! k-way merge of the runs and what is still in memory, equal keys
//! combined (rereduce), older partials on the left, so a key's partials
//! combine in the order they were inserted.
//!
//! The design follows the ExtendedHashtable notes (a table that spills
//! sorted, merged runs and merges memory with them at the end) with the
//! merges of external sorting (Knuth, TAOCP vol. 3, 5.4.1): runs are
//! merged k at a time rather than into one file at every spill.
//!
//! Memory: the arrays' capacities (key arena, slots, sort order, hash
//! index) and the partials' heap bytes stay under the budget; an entry
//! larger than the budget is spilled alone and the arrays given back. A
//! merge holds one block per run, about `budget / (RUN_FAN_IN + 1)`
//! (4 KiB to 64 KiB), and a 4 KiB read buffer. The runs are removed when
//! the merge is dropped, whether it finished or not, and a table dropped
//! before `finish` removes its own.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashTable;

use super::runs::{RunError, RunId, RunReader, RunStore};

/// Runs merged at once: a table never holds more, and a merge never
/// reads more.
pub const RUN_FAN_IN: usize = 64;

/// The monoid a table combines partial reductions with, and their bytes.
pub trait Combiner: Send + Sync {
    type P: Send;
    /// `older` combined with `newer` (rereduce); must be associative.
    fn combine(&self, older: &Self::P, newer: &Self::P) -> Self::P;
    fn encode(&self, p: &Self::P) -> Vec<u8>;
    fn decode(&self, bytes: &[u8]) -> Result<Self::P, String>;
    /// Heap bytes `p` holds beyond its inline size.
    fn heap_bytes(&self, p: &Self::P) -> usize;
}

/// A key and its partial reduction.
pub type Entry<P> = (Vec<u8>, P);

/// What a table did, for progress and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Partials inserted.
    pub inserts: u64,
    /// Runs written by spills (merges not counted).
    pub spills: u64,
    /// Bytes written to runs, spills and merges.
    pub spilled_bytes: u64,
    /// Runs merged into fewer before the end.
    pub merged_runs: u64,
    /// Most bytes the table held at once.
    pub peak_bytes: usize,
}

/// One distinct key in memory: where its bytes are in the key arena,
/// its hash and its partial.
struct Slot<P> {
    hash: u64,
    at: usize,
    len: usize,
    p: P,
    heap: usize,
}

/// A slot's place in a spill's sort: its key's first eight bytes (big
/// endian, zero-padded, so their order is the keys' order up to ties)
/// and its index.
type SortKey = (u64, u32);

/// A key's first eight bytes, big endian, zero-padded: two keys' prefixes
/// order as the keys do, or are equal.
fn key_prefix(k: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = k.len().min(8);
    head[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(head)
}

/// Bytes a hash index of `capacity` slot numbers holds: a bucket per
/// 7/8 of capacity, four bytes and a control byte each.
fn index_bytes(capacity: usize) -> usize {
    capacity * 8 / 7 * (std::mem::size_of::<u32>() + 1)
}

/// A hash table of partial reductions that spills sorted runs past its
/// budget (see the module doc).
pub struct ExtendedHashtable<C: Combiner> {
    combiner: Arc<C>,
    /// Every key in memory, end to end.
    keys: Vec<u8>,
    slots: Vec<Slot<C::P>>,
    /// Slot numbers by key hash.
    index: HashTable<u32>,
    /// A spill's sort order; its capacity follows `slots`'.
    order: Vec<SortKey>,
    /// Heap bytes of the partials in memory.
    heap: usize,
    seed: u64,
    budget: usize,
    buffer: usize,
    store: Option<RunStore>,
    /// Oldest first.
    runs: VecDeque<RunId>,
    next_run: u64,
    stats: TableStats,
}

impl<C: Combiner> ExtendedHashtable<C> {
    /// A table of at most `budget` bytes spilling into `store`.
    pub fn new(combiner: Arc<C>, budget: usize, store: RunStore) -> Self {
        let buffer = (budget / (RUN_FAN_IN + 1)).clamp(4096, 1024 * 1024);
        ExtendedHashtable {
            combiner,
            keys: Vec::new(),
            slots: Vec::new(),
            index: HashTable::new(),
            order: Vec::new(),
            heap: 0,
            seed: rand::random(),
            budget,
            buffer,
            store: Some(store),
            runs: VecDeque::new(),
            next_run: 0,
            stats: TableStats::default(),
        }
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Bytes the table holds now: its arrays' capacities (kept warm
    /// between spills) and the partials' heap bytes.
    pub fn bytes(&self) -> usize {
        self.footprint(self.keys.capacity(), self.slots.capacity(), self.index.capacity())
    }

    fn footprint(&self, keys: usize, slots: usize, index: usize) -> usize {
        keys + slots * (std::mem::size_of::<Slot<C::P>>() + std::mem::size_of::<SortKey>())
            + index_bytes(index)
            + self.heap
    }

    fn store(&self) -> &RunStore {
        self.store.as_ref().expect("a table keeps its store until finished")
    }

    fn key_of<'a>(keys: &'a [u8], s: &Slot<C::P>) -> &'a [u8] {
        &keys[s.at..s.at + s.len]
    }

    /// Combines `p` into `key`'s partial (or adds it); spills when the
    /// table would pass its budget.
    pub fn insert(&mut self, key: &[u8], p: C::P) -> Result<(), RunError> {
        self.stats.inserts += 1;
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        let (keys, slots) = (&self.keys, &self.slots);
        let found = self
            .index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && Self::key_of(keys, s) == key
            })
            .copied();
        if let Some(i) = found {
            let slot = &mut self.slots[i as usize];
            let c = self.combiner.combine(&slot.p, &p);
            let heap = self.combiner.heap_bytes(&c);
            self.heap = self.heap - slot.heap + heap;
            slot.p = c;
            slot.heap = heap;
        } else {
            self.make_room(key.len())?;
            let heap = self.combiner.heap_bytes(&p);
            let at = self.keys.len();
            self.keys.extend_from_slice(key);
            let n = self.slots.len() as u32;
            self.slots.push(Slot { hash, at, len: key.len(), p, heap });
            self.heap += heap;
            let slots = &self.slots;
            self.index.insert_unique(hash, n, |&i| slots[i as usize].hash);
        }
        let bytes = self.bytes();
        self.stats.peak_bytes = self.stats.peak_bytes.max(bytes);
        if bytes > self.budget {
            self.spill()?;
            if self.bytes() > self.budget {
                self.release();
            }
        }
        Ok(())
    }

    /// Grows the arrays for one more key of `len` bytes, spilling first
    /// when the grown arrays would pass the budget (a table that is empty
    /// grows regardless: one entry always fits).
    fn make_room(&mut self, len: usize) -> Result<(), RunError> {
        loop {
            let need = self.keys.len() + len;
            let keys = if need > self.keys.capacity() {
                need.max(self.keys.capacity() * 2).max(256)
            } else {
                self.keys.capacity()
            };
            let grow = |cap: usize, len: usize| if len == cap { (cap * 2).max(8) } else { cap };
            let slots = grow(self.slots.capacity(), self.slots.len());
            let index = grow(self.index.capacity(), self.index.len());
            let grows = keys != self.keys.capacity()
                || slots != self.slots.capacity()
                || index != self.index.capacity();
            if !grows {
                return Ok(());
            }
            if !self.slots.is_empty() && self.footprint(keys, slots, index) > self.budget {
                self.spill()?;
                continue;
            }
            self.keys.reserve_exact(keys - self.keys.len());
            self.slots.reserve_exact(slots - self.slots.len());
            self.order.reserve_exact(slots.saturating_sub(self.order.len()));
            let all = &self.slots;
            self.index.reserve(index - self.index.len(), |&i| all[i as usize].hash);
            return Ok(());
        }
    }

    /// Gives the arrays' memory back (after an entry larger than the
    /// budget).
    fn release(&mut self) {
        self.keys = Vec::new();
        self.slots = Vec::new();
        self.order = Vec::new();
        self.index = HashTable::new();
    }

    /// The slots in key order.
    fn sort(&mut self) {
        let (keys, slots) = (&self.keys, &self.slots);
        self.order.clear();
        self.order.extend(
            slots.iter().enumerate().map(|(i, s)| (key_prefix(Self::key_of(keys, s)), i as u32)),
        );
        self.order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                Self::key_of(keys, &slots[a.1 as usize])
                    .cmp(Self::key_of(keys, &slots[b.1 as usize]))
            })
        });
    }

    /// Empties the table, keeping its arrays' memory.
    fn clear(&mut self) {
        self.keys.clear();
        self.slots.clear();
        self.order.clear();
        self.index.clear();
        self.heap = 0;
    }

    /// Writes the entries in memory as one run and empties the table.
    fn spill(&mut self) -> Result<(), RunError> {
        if self.slots.is_empty() {
            return Ok(());
        }
        self.sort();
        let id = self.new_run();
        let mut w = self.store().create(id, self.buffer)?;
        for &(_, i) in &self.order {
            let s = &self.slots[i as usize];
            w.push(Self::key_of(&self.keys, s), &self.combiner.encode(&s.p))?;
        }
        self.stats.spilled_bytes += w.finish()?;
        self.stats.spills += 1;
        self.clear();
        self.runs.push_back(id);
        if self.runs.len() >= RUN_FAN_IN {
            self.merge_oldest()?;
        }
        Ok(())
    }

    fn new_run(&mut self) -> RunId {
        let id = RunId(self.next_run);
        self.next_run += 1;
        id
    }

    /// Merges the oldest [`RUN_FAN_IN`] runs into one, which stays the
    /// oldest.
    fn merge_oldest(&mut self) -> Result<(), RunError> {
        let n = self.runs.len().min(RUN_FAN_IN);
        let merged: Vec<RunId> = self.runs.drain(..n).collect();
        let id = self.new_run();
        let mut readers = Vec::with_capacity(n);
        for &r in &merged {
            readers.push(self.store().open(r, self.buffer)?);
        }
        let mut merge = Merger::new(self.combiner.clone(), readers, Vec::new())?;
        let mut w = self.store().create(id, self.buffer)?;
        while let Some((k, p)) = merge.next_entry()? {
            w.push(&k, &self.combiner.encode(&p))?;
        }
        self.stats.spilled_bytes += w.finish()?;
        self.stats.merged_runs += n as u64;
        for r in merged {
            self.store().remove(r)?;
        }
        self.runs.push_front(id);
        Ok(())
    }

    /// Every key once, in key order, with the combination of all its
    /// partials. What is in memory is spilled first when runs exist, so
    /// the merge holds only its read buffers.
    pub fn finish(mut self) -> Result<Merged<C>, RunError> {
        if !self.runs.is_empty() {
            self.spill()?;
        }
        self.sort();
        let order = std::mem::take(&mut self.order);
        let keys = std::mem::take(&mut self.keys);
        let mut slots: Vec<Option<Slot<C::P>>> =
            std::mem::take(&mut self.slots).into_iter().map(Some).collect();
        self.release();
        let memory: Vec<(Vec<u8>, C::P)> = order
            .iter()
            .map(|&(_, i)| {
                let s = slots[i as usize].take().expect("each slot once");
                (Self::key_of(&keys, &s).to_vec(), s.p)
            })
            .collect();
        let mut readers = Vec::with_capacity(self.runs.len());
        for &r in &self.runs {
            readers.push(self.store().open(r, self.buffer)?);
        }
        let merger = Merger::new(self.combiner.clone(), readers, memory)?;
        let stores = self.store.take().into_iter().collect();
        Ok(Merged { merger, stores, stats: self.stats })
    }
}

impl<C: Combiner> Drop for ExtendedHashtable<C> {
    fn drop(&mut self) {
        if let Some(mut store) = self.store.take() {
            if let Err(e) = store.clear() {
                tracing::warn!(error = %e, "removing a job table's spilled runs failed");
            }
        }
    }
}

/// The end of a table: its entries in key order ([`Merged::next_entry`]);
/// its runs are removed when it is dropped.
pub struct Merged<C: Combiner> {
    merger: Merger<C>,
    /// The stores of the runs it reads.
    stores: Vec<RunStore>,
    stats: TableStats,
}

impl<C: Combiner> Merged<C> {
    /// The next key and its combined partial, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry<C::P>>, RunError> {
        self.merger.next_entry()
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// One stream of the entries of several tables (oldest first), equal
    /// keys combined with `combiner`: one merge of all their sources, which
    /// removes every part's runs when it is dropped.
    pub fn merge_all(combiner: Arc<C>, parts: Vec<Merged<C>>) -> Result<Merged<C>, RunError> {
        let mut stats = TableStats::default();
        let (mut sources, mut heads, mut stores) = (Vec::new(), Vec::new(), Vec::new());
        for mut p in parts {
            let s = p.stats();
            stats.inserts += s.inserts;
            stats.spills += s.spills;
            stats.spilled_bytes += s.spilled_bytes;
            stats.merged_runs += s.merged_runs;
            stats.peak_bytes += s.peak_bytes;
            // Nothing was read from a part yet: each source's head is its
            // first entry, and a source has a head exactly when it is in
            // its part's heap.
            sources.append(&mut p.merger.sources);
            heads.append(&mut p.merger.heads);
            stores.append(&mut p.stores);
        }
        let mut merger = Merger { combiner, sources, heads, heap: Vec::new() };
        merger.build_heap();
        Ok(Merged { merger, stores, stats })
    }
}

impl<C: Combiner> Drop for Merged<C> {
    fn drop(&mut self) {
        // The readers go first: a Redis run's reader shares the connection.
        self.merger.sources.clear();
        for mut store in self.stores.drain(..) {
            if let Err(e) = store.clear() {
                tracing::warn!(error = %e, "removing a job table's spilled runs failed");
            }
        }
    }
}

enum Source<C: Combiner> {
    Run(RunReader),
    Memory(std::vec::IntoIter<(Vec<u8>, C::P)>),
}

/// A source's next entry, waiting its turn in the merge.
struct Head<P> {
    /// A memory source's head key (a run's is read in its reader).
    key: Vec<u8>,
    /// The head key's [`key_prefix`], compared first.
    prefix: u64,
    p: Option<P>,
}

/// A k-way merge: sources oldest first, the memory last (newest). The
/// sources with a head form a binary min-heap ordered by (head key,
/// source number), so equal keys come out oldest first.
struct Merger<C: Combiner> {
    combiner: Arc<C>,
    sources: Vec<Source<C>>,
    heads: Vec<Head<C::P>>,
    /// Source numbers, a min-heap.
    heap: Vec<usize>,
}

impl<C: Combiner> Merger<C> {
    fn new(
        combiner: Arc<C>,
        runs: Vec<RunReader>,
        memory: Vec<(Vec<u8>, C::P)>,
    ) -> Result<Self, RunError> {
        let mut sources: Vec<Source<C>> = runs.into_iter().map(Source::Run).collect();
        sources.push(Source::Memory(memory.into_iter()));
        Self::from_sources(combiner, sources)
    }

    fn from_sources(combiner: Arc<C>, sources: Vec<Source<C>>) -> Result<Self, RunError> {
        let n = sources.len();
        let mut m = Merger {
            combiner,
            sources,
            heads: (0..n).map(|_| Head { key: Vec::new(), prefix: 0, p: None }).collect(),
            heap: Vec::with_capacity(n),
        };
        for i in 0..n {
            m.advance(i)?;
        }
        m.build_heap();
        Ok(m)
    }

    /// Puts every source with a head in the heap.
    fn build_heap(&mut self) {
        self.heap.clear();
        for i in 0..self.sources.len() {
            if self.heads[i].p.is_some() {
                self.heap.push(i);
                self.sift_up(self.heap.len() - 1);
            }
        }
    }

    /// Reads source `i`'s next entry into its head; false at its end.
    fn advance(&mut self, i: usize) -> Result<bool, RunError> {
        let head = &mut self.heads[i];
        match &mut self.sources[i] {
            Source::Memory(it) => match it.next() {
                None => Ok(false),
                Some((k, p)) => {
                    head.prefix = key_prefix(&k);
                    head.key = k;
                    head.p = Some(p);
                    Ok(true)
                }
            },
            Source::Run(r) => {
                if !r.advance()? {
                    return Ok(false);
                }
                let p = self.combiner.decode(r.partial()).map_err(|what| RunError::Damaged {
                    run: format!("spilled run {i} of a merge"),
                    what: format!("a partial reduction does not decode: {what}"),
                })?;
                head.prefix = key_prefix(r.key());
                head.p = Some(p);
                Ok(true)
            }
        }
    }

    /// Source `i`'s head key: a run's is read in place.
    fn key(&self, i: usize) -> &[u8] {
        match &self.sources[i] {
            Source::Run(r) => r.key(),
            Source::Memory(_) => &self.heads[i].key,
        }
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (self.heads[a].prefix, self.heads[b].prefix);
        if pa != pb {
            return pa < pb;
        }
        (self.key(a), a) < (self.key(b), b)
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if !self.less(self.heap[at], self.heap[parent]) {
                break;
            }
            self.heap.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if l < self.heap.len() && self.less(self.heap[l], self.heap[least]) {
                least = l;
            }
            if r < self.heap.len() && self.less(self.heap[r], self.heap[least]) {
                least = r;
            }
            if least == at {
                return;
            }
            self.heap.swap(at, least);
            at = least;
        }
    }

    /// Moves the top source on to its next entry, or out of the heap at
    /// its end.
    fn replace_top(&mut self) -> Result<(), RunError> {
        let top = self.heap[0];
        if !self.advance(top)? {
            let last = self.heap.pop().expect("the heap has a top");
            if self.heap.is_empty() {
                return Ok(());
            }
            self.heap[0] = last;
        }
        self.sift_down(0);
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<Entry<C::P>>, RunError> {
        let Some(&top) = self.heap.first() else { return Ok(None) };
        let key = match &self.sources[top] {
            Source::Run(r) => r.key().to_vec(),
            Source::Memory(_) => std::mem::take(&mut self.heads[top].key),
        };
        let prefix = self.heads[top].prefix;
        let mut acc = self.heads[top].p.take().expect("a source in the heap has a head");
        self.replace_top()?;
        // Equal keys come out in source order: older partials stay on the left.
        while let Some(&j) = self.heap.first() {
            if self.heads[j].prefix != prefix || self.key(j) != key {
                break;
            }
            let p = self.heads[j].p.take().expect("a source in the heap has a head");
            acc = self.combiner.combine(&acc, &p);
            self.replace_top()?;
        }
        Ok(Some((key, acc)))
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
