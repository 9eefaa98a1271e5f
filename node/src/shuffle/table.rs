//! The ExtendedHashtable: the shuffle of a batch job and of a mapper's bulk backfill.
//!
//! An ordered in-memory table of `key -> partial reduction` under a byte
//! budget. Inserting a key already present combines the two partials
//! (a combiner: a job with few distinct keys never spills). When the
//! table passes its budget it writes itself as one sorted run
//! ([`super::runs`]) and empties; once [`RUN_FAN_IN`] runs exist the
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
//! Memory: the entries' bytes (key, partial and the map's per-entry
//! overhead) stay under the budget; a merge's read buffers share the same
//! budget (each run gets `budget / (RUN_FAN_IN + 1)`, between 4 KiB and
//! 1 MiB). The runs are removed when the merge is dropped, whether it
//! finished or not, and a table dropped before `finish` removes its own.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

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
    /// Most bytes the entries held at once.
    pub peak_bytes: usize,
}

struct Slot<P> {
    p: P,
    heap: usize,
}

/// An ordered table of partial reductions that spills sorted runs past
/// its budget (see the module doc).
pub struct ExtendedHashtable<C: Combiner> {
    combiner: Arc<C>,
    map: BTreeMap<Box<[u8]>, Slot<C::P>>,
    bytes: usize,
    budget: usize,
    buffer: usize,
    store: Option<RunStore>,
    /// Oldest first.
    runs: VecDeque<RunId>,
    next_run: u64,
    stats: TableStats,
}

/// Bytes an entry costs beyond its key and its partial's heap: the map's
/// slot for the boxed key and the slot, with the B-tree's spare room.
fn entry_overhead<P>() -> usize {
    std::mem::size_of::<(Box<[u8]>, Slot<P>)>() * 3 / 2 + 16
}

impl<C: Combiner> ExtendedHashtable<C> {
    /// A table of at most `budget` bytes spilling into `store`.
    pub fn new(combiner: Arc<C>, budget: usize, store: RunStore) -> Self {
        let buffer = (budget / (RUN_FAN_IN + 1)).clamp(4096, 1024 * 1024);
        ExtendedHashtable {
            combiner,
            map: BTreeMap::new(),
            bytes: 0,
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

    /// Bytes the entries in memory hold now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn store(&self) -> &RunStore {
        self.store.as_ref().expect("a table keeps its store until finished")
    }

    /// Combines `p` into `key`'s partial (or adds it); spills when the
    /// table passes its budget.
    pub fn insert(&mut self, key: &[u8], p: C::P) -> Result<(), RunError> {
        self.stats.inserts += 1;
        match self.map.get_mut(key) {
            Some(slot) => {
                let c = self.combiner.combine(&slot.p, &p);
                let heap = self.combiner.heap_bytes(&c);
                self.bytes = self.bytes - slot.heap + heap;
                *slot = Slot { p: c, heap };
            }
            None => {
                let heap = self.combiner.heap_bytes(&p);
                self.bytes += key.len() + heap + entry_overhead::<C::P>();
                self.map.insert(key.into(), Slot { p, heap });
            }
        }
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.bytes);
        if self.bytes > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the entries in memory as one run and empties the table.
    fn spill(&mut self) -> Result<(), RunError> {
        if self.map.is_empty() {
            return Ok(());
        }
        let id = self.new_run();
        let mut w = self.store().create(id, self.buffer)?;
        // Consumed in order: each entry is freed once written.
        for (k, slot) in std::mem::take(&mut self.map) {
            w.push(&k, &self.combiner.encode(&slot.p))?;
        }
        self.stats.spilled_bytes += w.finish()?;
        self.stats.spills += 1;
        self.bytes = 0;
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
        let memory: Vec<(Vec<u8>, C::P)> = std::mem::take(&mut self.map)
            .into_iter()
            .map(|(k, slot)| (k.into_vec(), slot.p))
            .collect();
        let mut readers = Vec::with_capacity(self.runs.len());
        for &r in &self.runs {
            readers.push(self.store().open(r, self.buffer)?);
        }
        let merger = Merger::new(self.combiner.clone(), readers, memory)?;
        let store = self.store.take();
        Ok(Merged { merger, store, stats: self.stats })
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
    store: Option<RunStore>,
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
    /// keys combined with `combiner`; each part removes its own runs.
    pub fn merge_all(combiner: Arc<C>, parts: Vec<Merged<C>>) -> Result<Merged<C>, RunError> {
        let mut stats = TableStats::default();
        for p in &parts {
            let s = p.stats();
            stats.inserts += s.inserts;
            stats.spills += s.spills;
            stats.spilled_bytes += s.spilled_bytes;
            stats.merged_runs += s.merged_runs;
            stats.peak_bytes += s.peak_bytes;
        }
        let sources = parts.into_iter().map(|p| Source::Table(Box::new(p))).collect();
        Ok(Merged { merger: Merger::from_sources(combiner, sources)?, store: None, stats })
    }
}

impl<C: Combiner> Drop for Merged<C> {
    fn drop(&mut self) {
        // The readers go first: a Redis run's reader shares the connection.
        self.merger.sources.clear();
        if let Some(mut store) = self.store.take() {
            if let Err(e) = store.clear() {
                tracing::warn!(error = %e, "removing a job table's spilled runs failed");
            }
        }
    }
}

enum Source<C: Combiner> {
    Run(RunReader),
    Memory(std::vec::IntoIter<(Vec<u8>, C::P)>),
    Table(Box<Merged<C>>),
}

/// A k-way merge: sources oldest first, the memory last (newest).
struct Merger<C: Combiner> {
    combiner: Arc<C>,
    sources: Vec<Source<C>>,
    /// The head of each source that has one: (key, source index).
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    /// The partial of each source's head.
    heads: Vec<Option<C::P>>,
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
            heap: BinaryHeap::with_capacity(n),
            heads: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            m.advance(i)?;
        }
        Ok(m)
    }

    /// Reads source `i`'s next entry into the heap.
    fn advance(&mut self, i: usize) -> Result<(), RunError> {
        let next = match &mut self.sources[i] {
            Source::Memory(it) => it.next(),
            Source::Table(t) => t.next_entry()?,
            Source::Run(r) => match r.next_entry()? {
                None => None,
                Some((k, bytes)) => {
                    let p = self.combiner.decode(&bytes).map_err(|what| RunError::Damaged {
                        run: format!("run {i} of a merge"),
                        what: format!("a partial reduction does not decode: {what}"),
                    })?;
                    Some((k, p))
                }
            },
        };
        if let Some((k, p)) = next {
            self.heads[i] = Some(p);
            self.heap.push(Reverse((k, i)));
        }
        Ok(())
    }

    fn next_entry(&mut self) -> Result<Option<Entry<C::P>>, RunError> {
        let Some(Reverse((key, i))) = self.heap.pop() else { return Ok(None) };
        let mut acc = self.heads[i].take().expect("a source in the heap has a head");
        self.advance(i)?;
        // Equal keys pop in source order: older partials stay on the left.
        while self.heap.peek().is_some_and(|Reverse((k, _))| *k == key) {
            let Reverse((_, j)) = self.heap.pop().expect("peeked");
            let p = self.heads[j].take().expect("a source in the heap has a head");
            acc = self.combiner.combine(&acc, &p);
            self.advance(j)?;
        }
        Ok(Some((key, acc)))
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
