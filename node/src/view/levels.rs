//! A reducer's reduce tree across chunks: level by level.
//!
//! Level 0 is the reducer's range. Its rows are split into *parts*, one per
//! chunk of the range, and each part keeps an in-memory [`ReduceTree`] of its
//! rows, so the reduction of any key interval inside one part costs
//! O(log n). Each part's total reduction is a row one level up, keyed by the
//! part's start key; level 1 is a meta-range of such rows, split into parts
//! by its own chunks, whose totals are rows of level 2, and so on until a
//! level fits in one part. An aggregate over `[a, b)` reduces the two edge
//! parts of level 0 within their trees and asks level 1 for the parts fully
//! inside the interval, which does the same one level up: O(log n) combines
//! per level, and no edge part is ever scanned.
//!
//! Parts of level 0 may be *unloaded*: only their total is known (read back
//! from level 1 after a restart), and their tree is built from the chunk the
//! first time a change or a query edge lands in them. Parts of the meta
//! levels are always loaded (they hold one row per chunk below).
//!
//! Changed parts are marked dirty and their new totals written one level up
//! by [`Levels::propagate`]: several dirty parts under one parent cost one
//! update of that parent. Meta rows to persist accumulate in `unsaved`, so
//! the caller writes them to the meta-ranges in one batch per level.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde_json::Value as Json;

use super::reduce_tree::{join, Monoid, ReduceTree};

/// A reducer function, with the stored form of its reductions.
pub trait ReduceFn: Monoid {
    /// The reduction of one row of the range.
    fn leaf(&self, key: &[u8], value: &[u8]) -> Result<Self::R, String>;
    /// The bytes of a reduction in a meta-range row.
    fn encode(&self, r: &Self::R) -> Vec<u8>;
    fn decode(&self, bytes: &[u8]) -> Result<Self::R, String>;
    /// The JSON a query answers; `None` is the reduction of no rows.
    fn answer(&self, r: Option<&Self::R>) -> Result<Json, String>;
    /// Why a reduction is a failure (a combine that failed or overflowed),
    /// for functions whose reductions can be.
    fn failure(&self, _r: &Self::R) -> Option<String> {
        None
    }
}

/// Rows of a range: (key, value) in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads the rows of level 0 in `[start, end)` at the reducer's checkpoint.
pub type Loader<'a> = dyn FnMut(&[u8], Option<&[u8]>) -> Result<Rows, String> + 'a;

/// A part's bounds: its start key and exclusive end (`None`: the end of the range).
pub type PartBounds = (Vec<u8>, Option<Vec<u8>>);

/// A meta row: a part of the level below, its end, how many rows of the
/// range it holds (level 0 only) and its reduction (`None`: no rows).
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRow {
    pub end: Option<Vec<u8>>,
    pub rows: u64,
    pub total: Option<Vec<u8>>,
}

impl MetaRow {
    /// `flags u8 | rows u64 | [end_len u32 | end] | [total]`
    pub fn encode(&self) -> Vec<u8> {
        let end_len = self.end.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(13 + end_len + self.total.as_ref().map_or(0, Vec::len));
        out.push(u8::from(self.end.is_some()) | (u8::from(self.total.is_some()) << 1));
        out.extend_from_slice(&self.rows.to_be_bytes());
        if let Some(end) = &self.end {
            out.extend_from_slice(&(end.len() as u32).to_be_bytes());
            out.extend_from_slice(end);
        }
        if let Some(total) = &self.total {
            out.extend_from_slice(total);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MetaRow, String> {
        let bad = || "meta row is damaged".to_string();
        let (&flags, rest) = bytes.split_first().ok_or_else(bad)?;
        if flags > 3 || rest.len() < 8 {
            return Err(bad());
        }
        let (rows, mut rest) = rest.split_at(8);
        let rows = u64::from_be_bytes(rows.try_into().map_err(|_| bad())?);
        let end = if flags & 1 != 0 {
            if rest.len() < 4 {
                return Err(bad());
            }
            let (len, tail) = rest.split_at(4);
            let len = u32::from_be_bytes(len.try_into().map_err(|_| bad())?) as usize;
            if tail.len() < len {
                return Err(bad());
            }
            let (end, tail) = tail.split_at(len);
            rest = tail;
            Some(end.to_vec())
        } else {
            None
        };
        let total = if flags & 2 != 0 { Some(rest.to_vec()) } else { None };
        if flags & 2 == 0 && !rest.is_empty() {
            return Err(bad());
        }
        Ok(MetaRow { end, rows, total })
    }
}

struct Part<R> {
    end: Option<Vec<u8>>,
    /// `None` while unloaded (level 0 only).
    tree: Option<ReduceTree<R>>,
    total: Option<R>,
    /// Rows of the range in this part (level 0).
    rows: u64,
}

impl<R: Clone> Part<R> {
    fn loaded(end: Option<Vec<u8>>, tree: ReduceTree<R>) -> Self {
        Part { end, total: tree.total(), rows: tree.len() as u64, tree: Some(tree) }
    }
}

/// The start of the part of `parts` holding `key`.
fn part_of<'a, R>(parts: &'a BTreeMap<Vec<u8>, Part<R>>, key: &[u8]) -> Option<&'a Vec<u8>> {
    parts.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back().map(|(k, _)| k)
}

fn in_part(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|e| key < e)
}

pub struct Levels<M: ReduceFn> {
    f: M,
    levels: Vec<BTreeMap<Vec<u8>, Part<M::R>>>,
    dirty: Vec<BTreeSet<Vec<u8>>>,
    /// Meta rows to write: (level, key) -> row, or `None` to delete it.
    unsaved: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
    /// Parts whose total became a failure since the caller last took them:
    /// (part start, why), one per distinct reason.
    failures: BTreeMap<String, Vec<u8>>,
}

impl<M: ReduceFn> Levels<M> {
    /// A reducer over an empty range: one level, one part.
    pub fn new(f: M) -> Self {
        let mut parts = BTreeMap::new();
        parts.insert(Vec::new(), Part::loaded(None, ReduceTree::new()));
        Levels {
            f,
            levels: vec![parts],
            dirty: vec![BTreeSet::new()],
            unsaved: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }

    /// Rebuilds the levels after a restart: `partitions[l]` are the parts of
    /// level `l` (its range's chunks), `meta_rows[l - 1]` every row of level
    /// `l >= 1` as stored. A part of level 0 whose row one level up has its
    /// bounds keeps that total and stays unloaded; any other is loaded.
    /// Every meta level is then recomputed from its rows, so rows that a
    /// crash left half-written are rewritten.
    pub fn restore(
        f: M,
        partitions: Vec<Vec<PartBounds>>,
        meta_rows: Vec<Rows>,
        load: &mut Loader<'_>,
    ) -> Result<Self, String> {
        if partitions.len() != meta_rows.len() + 1 {
            return Err("one row set per meta level is needed".into());
        }
        let mut me = Levels {
            f,
            levels: Vec::with_capacity(partitions.len()),
            dirty: vec![BTreeSet::new(); partitions.len()],
            unsaved: BTreeMap::new(),
            failures: BTreeMap::new(),
        };
        let decoded: Vec<BTreeMap<Vec<u8>, MetaRow>> = meta_rows
            .into_iter()
            .map(|rows| {
                rows.into_iter()
                    .map(|(k, v)| Ok((k, MetaRow::decode(&v)?)))
                    .collect::<Result<_, String>>()
            })
            .collect::<Result<_, String>>()?;
        for (level, bounds) in partitions.into_iter().enumerate() {
            let mut parts = BTreeMap::new();
            for (start, end) in bounds {
                let part = if level == 0 {
                    let kept = decoded.first().and_then(|rows| rows.get(&start)).and_then(|row| {
                        if row.end != end {
                            return None;
                        }
                        // A total that does not decode (damaged, or of an
                        // older format) is rebuilt from the part's rows.
                        match row.total.as_deref().map(|t| me.f.decode(t)).transpose() {
                            Ok(total) => Some((total, row.rows)),
                            Err(e) => {
                                tracing::warn!(error = %e, "a stored reduction is rebuilt from its rows");
                                None
                            }
                        }
                    });
                    match kept {
                        Some((total, rows)) => Part { end, tree: None, total, rows },
                        None => {
                            me.dirty[0].insert(start.clone());
                            Part::loaded(end.clone(), me.load_tree(&start, end.as_deref(), load)?)
                        }
                    }
                } else {
                    let mut tree = ReduceTree::new();
                    let rows = decoded[level - 1].range::<[u8], _>((
                        Bound::Included(&start[..]),
                        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                    ));
                    for (k, row) in rows {
                        // A total that does not decode is left out: every
                        // part of the level below sends its total up again
                        // (below a meta level, all of them are recomputed;
                        // on level 0, such a part is rebuilt above).
                        if let Some(Ok(t)) = row.total.as_deref().map(|t| me.f.decode(t)) {
                            tree.insert(&me.f, k, t);
                        }
                    }
                    me.dirty[level].insert(start.clone());
                    Part::loaded(end, tree)
                };
                parts.insert(start, part);
            }
            me.levels.push(parts);
        }
        // Rows one level up for parts that no longer exist go.
        for (level, rows) in decoded.iter().enumerate() {
            let stale: Vec<Vec<u8>> =
                rows.keys().filter(|k| !me.levels[level].contains_key(*k)).cloned().collect();
            for k in stale {
                me.delete_row(level + 1, &k);
            }
        }
        me.propagate();
        // Failed reductions restored as they were stored are reported
        // again, so the reducer's status says why queries over them fail.
        for parts in &me.levels {
            for (start, part) in parts {
                if let Some(why) = part.total.as_ref().and_then(|t| me.f.failure(t)) {
                    me.failures.entry(why).or_insert_with(|| start.clone());
                }
            }
        }
        Ok(me)
    }

    pub fn function(&self) -> &M {
        &self.f
    }

    /// The number of levels (1 + meta levels).
    pub fn depth(&self) -> usize {
        self.levels.len()
    }

    /// Parts of each level, level 0 (the range's chunks) first.
    pub fn parts_per_level(&self) -> Vec<u64> {
        self.levels.iter().map(|l| l.len() as u64).collect()
    }

    /// Rows of the range.
    pub fn rows(&self) -> u64 {
        self.levels[0].values().map(|p| p.rows).sum()
    }

    /// Parts of level 0 whose tree is in memory, of all parts.
    pub fn loaded_parts(&self) -> (usize, usize) {
        let parts = &self.levels[0];
        (parts.values().filter(|p| p.tree.is_some()).count(), parts.len())
    }

    fn load_tree(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<ReduceTree<M::R>, String> {
        let mut tree = ReduceTree::new();
        for (k, v) in load(start, end)? {
            // A row the function refuses was reported when it was written;
            // it stays out of the reduction, as it did then.
            if let Ok(leaf) = self.f.leaf(&k, &v) {
                tree.insert(&self.f, &k, leaf);
            }
        }
        Ok(tree)
    }

    fn ensure_loaded(
        &mut self,
        level: usize,
        start: &[u8],
        load: &mut Loader<'_>,
    ) -> Result<(), String> {
        let Some(part) = self.levels[level].get(start) else {
            return Err(format!("no part starts at {start:?} on level {level}"));
        };
        if part.tree.is_some() {
            return Ok(());
        }
        if level > 0 {
            return Err(format!("meta level {level} has an unloaded part"));
        }
        let end = part.end.clone();
        let tree = self.load_tree(start, end.as_deref(), load)?;
        self.levels[0].insert(start.to_vec(), Part::loaded(end, tree));
        // Its total is recomputed from the rows (a Lua reduction may differ
        // with the order of its combines): one parent update.
        self.dirty[0].insert(start.to_vec());
        Ok(())
    }

    /// Sets the row `key` of the range from its value, or removes it.
    /// `Ok(Some(reason))`: the function refused the value, and the row is
    /// left out; `Err`: the part could not be loaded, nothing changed.
    pub fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<String>, String> {
        let start = part_of(&self.levels[0], key).cloned().ok_or("the range has no parts")?;
        self.ensure_loaded(0, &start, load)?;
        let leaf = value.map(|v| self.f.leaf(key, v));
        let part = self.levels[0].get_mut(&start).ok_or("part vanished")?;
        let tree = part.tree.as_mut().ok_or("part is not loaded")?;
        tree.remove(&self.f, key);
        let refused = match leaf {
            Some(Ok(leaf)) => {
                tree.insert(&self.f, key, leaf);
                None
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        part.rows = tree.len() as u64;
        self.dirty[0].insert(start);
        Ok(refused)
    }

    /// Sets a meta row of `level` (>= 1).
    fn set_row(&mut self, level: usize, key: &[u8], row: MetaRow) -> Result<(), String> {
        let total = row.total.as_deref().map(|t| self.f.decode(t)).transpose()?;
        let start = part_of(&self.levels[level], key).cloned().ok_or("meta level has no parts")?;
        let part = self.levels[level].get_mut(&start).ok_or("part vanished")?;
        let tree = part.tree.as_mut().ok_or("meta part is not loaded")?;
        tree.remove(&self.f, key);
        if let Some(t) = total {
            tree.insert(&self.f, key, t);
        }
        self.dirty[level].insert(start);
        self.unsaved.insert((level, key.to_vec()), Some(row.encode()));
        Ok(())
    }

    fn delete_row(&mut self, level: usize, key: &[u8]) {
        if let Some(start) = part_of(&self.levels[level], key).cloned() {
            if let Some(tree) = self.levels[level].get_mut(&start).and_then(|p| p.tree.as_mut()) {
                tree.remove(&self.f, key);
            }
            self.dirty[level].insert(start);
        }
        self.unsaved.insert((level, key.to_vec()), None);
    }

    /// Writes the totals of dirty parts one level up, level by level.
    pub fn propagate(&mut self) {
        let depth = self.levels.len();
        for level in 0..depth {
            let dirty = std::mem::take(&mut self.dirty[level]);
            for start in dirty {
                let Some(part) = self.levels[level].get_mut(&start) else { continue };
                if let Some(tree) = &part.tree {
                    let was = part.total.as_ref().and_then(|t| self.f.failure(t));
                    part.total = tree.total();
                    part.rows = tree.len() as u64;
                    let now = part.total.as_ref().and_then(|t| self.f.failure(t));
                    if let Some(why) = now.filter(|n| Some(n) != was.as_ref()) {
                        self.failures.entry(why).or_insert_with(|| start.clone());
                    }
                }
                if level + 1 == depth {
                    continue;
                }
                let row = MetaRow {
                    end: part.end.clone(),
                    rows: if level == 0 { part.rows } else { 0 },
                    total: part.total.as_ref().map(|t| self.f.encode(t)),
                };
                if let Err(e) = self.set_row(level + 1, &start, row) {
                    tracing::error!(level, error = %e, "meta row not set");
                }
            }
        }
    }

    /// Makes the parts of `level` the given ones (its chunks now). A new
    /// part takes its rows from the old parts it overlaps when they are all
    /// loaded, or is loaded. Rows one level up follow.
    pub fn repartition(
        &mut self,
        level: usize,
        bounds: &[PartBounds],
        load: &mut Loader<'_>,
    ) -> Result<(), String> {
        let same = bounds.len() == self.levels[level].len()
            && bounds.iter().all(|(s, e)| self.levels[level].get(s).is_some_and(|p| &p.end == e));
        if same || bounds.is_empty() {
            return Ok(());
        }
        let mut new = BTreeMap::new();
        for (start, end) in bounds {
            if self.levels[level].get(start).is_some_and(|p| &p.end == end) {
                continue;
            }
            let old: Vec<&Part<M::R>> = self.levels[level]
                .iter()
                .filter(|(s, p)| {
                    end.as_ref().is_none_or(|e| *s < e)
                        && p.end.as_ref().is_none_or(|pe| pe > start)
                })
                .map(|(_, p)| p)
                .collect();
            let tree = if old.iter().all(|p| p.tree.is_some()) {
                let mut tree = ReduceTree::new();
                for p in old {
                    for (k, leaf) in p.tree.as_ref().map(ReduceTree::rows).unwrap_or_default() {
                        if in_part(k, start, end.as_deref()) {
                            tree.insert(&self.f, k, leaf.clone());
                        }
                    }
                }
                tree
            } else {
                self.load_tree(start, end.as_deref(), load)?
            };
            new.insert(start.clone(), Part::loaded(end.clone(), tree));
        }
        let fresh: Vec<Vec<u8>> = new.keys().cloned().collect();
        let wanted: BTreeSet<&Vec<u8>> = bounds.iter().map(|(s, _)| s).collect();
        let mut gone = Vec::new();
        for (start, part) in std::mem::take(&mut self.levels[level]) {
            if !wanted.contains(&start) {
                gone.push(start);
            } else {
                // Kept as it was, unless rebuilt with new bounds.
                new.entry(start).or_insert(part);
            }
        }
        self.levels[level] = new;
        for start in gone {
            self.dirty[level].remove(&start);
            if level + 1 < self.levels.len() {
                self.delete_row(level + 1, &start);
            }
        }
        self.dirty[level].extend(fresh);
        Ok(())
    }

    /// Whether the top level has more than one part and is at most three
    /// quarters of the level below it, so the tree stays O(log n) deep
    /// (rows large against the meta-range's chunks, one or two rows per
    /// chunk, would otherwise add a level per part: a stats reducer over
    /// 1 KiB chunks grew 62 levels, each one part smaller). The top level
    /// is then folded part by part.
    pub fn needs_level(&self) -> bool {
        let n = self.levels.len();
        let top = self.levels[n - 1].len();
        top > 1 && (n == 1 || top * 4 <= self.levels[n - 2].len() * 3)
    }

    /// Adds a level above the top one, holding one row per top part.
    pub fn add_level(&mut self) {
        let top = self.levels.len() - 1;
        let mut parts = BTreeMap::new();
        parts.insert(Vec::new(), Part::loaded(None, ReduceTree::new()));
        self.levels.push(parts);
        self.dirty.push(BTreeSet::new());
        let starts: Vec<Vec<u8>> = self.levels[top].keys().cloned().collect();
        self.dirty[top].extend(starts);
        self.propagate();
    }

    /// Meta rows not yet written, by level: taken by the writer.
    pub fn take_unsaved(&mut self) -> Vec<(usize, Vec<u8>, Option<Vec<u8>>)> {
        std::mem::take(&mut self.unsaved).into_iter().map(|((l, k), v)| (l, k, v)).collect()
    }

    /// Gives back rows whose write failed, unless newer ones replaced them.
    pub fn return_unsaved(&mut self, rows: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>) {
        for (l, k, v) in rows {
            self.unsaved.entry((l, k)).or_insert(v);
        }
    }

    pub fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Reductions that failed since the last call: (part start, why).
    pub fn take_failures(&mut self) -> Vec<(Vec<u8>, String)> {
        std::mem::take(&mut self.failures).into_iter().map(|(why, key)| (key, why)).collect()
    }

    /// The reduction of the rows of `level` within the bounds.
    fn reduce_level(
        &mut self,
        level: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<M::R>, String> {
        let parts = &self.levels[level];
        let first = match lo {
            Bound::Unbounded => parts.keys().next(),
            Bound::Included(k) | Bound::Excluded(k) => part_of(parts, k),
        };
        let last = match hi {
            Bound::Unbounded => parts.keys().next_back(),
            Bound::Excluded(k) => parts
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(k)))
                .next_back()
                .map(|(s, _)| s),
            Bound::Included(k) => part_of(parts, k),
        };
        let (Some(first), Some(last)) = (first.cloned(), last.cloned()) else { return Ok(None) };
        if first > last {
            return Ok(None);
        }
        if first == last {
            self.ensure_loaded(level, &first, load)?;
            let tree = self.levels[level][&first].tree.as_ref().ok_or("part is not loaded")?;
            return Ok(tree.reduce(&self.f, (lo, hi)));
        }
        let last_end = self.levels[level][&last].end.clone();
        let left_full = match lo {
            Bound::Unbounded => true,
            Bound::Included(k) => k == first.as_slice(),
            Bound::Excluded(_) => false,
        };
        let right_full = match hi {
            Bound::Unbounded => last_end.is_none(),
            Bound::Excluded(k) => last_end.as_deref() == Some(k),
            Bound::Included(_) => false,
        };
        let mut acc = None;
        let full_from = if left_full {
            first.clone()
        } else {
            self.ensure_loaded(level, &first, load)?;
            let tree = self.levels[level][&first].tree.as_ref().ok_or("part is not loaded")?;
            acc = tree.reduce(&self.f, (lo, Bound::Unbounded));
            let next = self.levels[level]
                .range::<[u8], _>((Bound::Excluded(first.as_slice()), Bound::Unbounded))
                .next()
                .map(|(s, _)| s.clone());
            next.ok_or("a part after the first is missing")?
        };
        let full_to: Option<Vec<u8>> = if right_full { last_end } else { Some(last.clone()) };
        if full_to.as_ref().is_none_or(|t| &full_from < t) {
            let upper = full_to.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let middle = if level + 1 < self.levels.len() {
                self.reduce_level(level + 1, Bound::Included(&full_from), upper, load)?
            } else {
                let parts =
                    self.levels[level].range::<[u8], _>((Bound::Included(&full_from[..]), upper));
                parts.fold(None, |acc, (_, p)| join(&self.f, acc, p.total.clone()))
            };
            acc = join(&self.f, acc, middle);
        }
        if !right_full {
            self.ensure_loaded(level, &last, load)?;
            let tree = self.levels[level][&last].tree.as_ref().ok_or("part is not loaded")?;
            acc = join(&self.f, acc, tree.reduce(&self.f, (Bound::Unbounded, hi)));
        }
        Ok(acc)
    }

    /// The reduction of the range's rows within the bounds.
    pub fn reduce(
        &mut self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        load: &mut Loader<'_>,
    ) -> Result<Option<M::R>, String> {
        let r = self.reduce_level(0, bounds.0, bounds.1, load);
        // Parts loaded on the way send their recomputed totals up.
        self.propagate();
        r
    }

    /// The smallest key of the range within `lower`.
    pub fn first_key_from(
        &mut self,
        lower: Bound<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        let mut start = match lower {
            Bound::Unbounded => self.levels[0].keys().next().cloned(),
            Bound::Included(k) | Bound::Excluded(k) => part_of(&self.levels[0], k).cloned(),
        };
        let mut bound = lower.map(<[u8]>::to_vec);
        while let Some(s) = start {
            self.ensure_loaded(0, &s, load)?;
            let tree = self.levels[0][&s].tree.as_ref().ok_or("part is not loaded")?;
            if let Some(k) = tree.first_key_from(bound.as_ref().map(Vec::as_slice)) {
                let k = k.to_vec();
                self.propagate();
                return Ok(Some(k));
            }
            bound = Bound::Unbounded;
            start = self.levels[0]
                .range::<[u8], _>((Bound::Excluded(s.as_slice()), Bound::Unbounded))
                .next()
                .map(|(k, _)| k.clone());
        }
        self.propagate();
        Ok(None)
    }
}

#[cfg(test)]
impl<M: ReduceFn> Levels<M> {
    /// The keys of the rows of a meta level, for tests that partition it.
    fn meta_keys(&self, level: usize) -> Vec<Vec<u8>> {
        self.levels[level]
            .values()
            .flat_map(|p| p.tree.as_ref().map(ReduceTree::rows).unwrap_or_default())
            .map(|(k, _)| k.to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::reduce_tree::test_monoids::{Concat, Counting};
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    impl ReduceFn for Concat {
        fn leaf(&self, _key: &[u8], value: &[u8]) -> Result<String, String> {
            if value == b"!" {
                return Err("refused".into());
            }
            Ok(String::from_utf8_lossy(value).into_owned())
        }
        fn encode(&self, r: &String) -> Vec<u8> {
            r.as_bytes().to_vec()
        }
        fn decode(&self, bytes: &[u8]) -> Result<String, String> {
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        }
        fn answer(&self, r: Option<&String>) -> Result<Json, String> {
            Ok(r.map_or(Json::Null, |s| Json::from(s.as_str())))
        }
    }

    type Model = BTreeMap<Vec<u8>, String>;

    fn loader(model: &Model) -> impl FnMut(&[u8], Option<&[u8]>) -> Result<Rows, String> + '_ {
        move |start, end| {
            Ok(model
                .range::<[u8], _>((
                    Bound::Included(start),
                    end.map_or(Bound::Unbounded, Bound::Excluded),
                ))
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect())
        }
    }

    fn bounds_from(splits: &BTreeSet<Vec<u8>>) -> Vec<PartBounds> {
        let starts: Vec<Vec<u8>> =
            std::iter::once(Vec::new()).chain(splits.iter().cloned()).collect();
        starts.iter().enumerate().map(|(i, s)| (s.clone(), starts.get(i + 1).cloned())).collect()
    }

    /// Meta levels split every `per` rows, as small chunks would.
    fn meta_bounds(levels: &Levels<Concat>, level: usize, per: usize) -> Vec<PartBounds> {
        let keys = levels.meta_keys(level);
        let splits: BTreeSet<Vec<u8>> =
            keys.iter().skip(1).step_by(per.max(1)).filter(|k| !k.is_empty()).cloned().collect();
        bounds_from(&splits)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, char),
        Refused(u8),
        Delete(u8),
        Split(u8),
        Round(usize),
        Query(Option<u8>, Option<u8>, bool),
        First(Option<u8>),
        Save,
        Crash(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u8..96, proptest::char::range('a', 'z')).prop_map(|(k, c)| Op::Put(k, c)),
            1 => (0u8..96).prop_map(Op::Refused),
            3 => (0u8..96).prop_map(Op::Delete),
            2 => (1u8..96).prop_map(Op::Split),
            2 => (1usize..4).prop_map(Op::Round),
            6 => (proptest::option::of(0u8..100), proptest::option::of(0u8..100), any::<bool>())
                .prop_map(|(a, b, inc)| Op::Query(a, b, inc)),
            1 => proptest::option::of(0u8..100).prop_map(Op::First),
            1 => Just(Op::Save),
            1 => (0usize..50).prop_map(Op::Crash),
        ]
    }

    /// What a crash leaves: the meta rows written, and the model as of the
    /// last complete save (the checkpoint a restart replays from).
    struct Disk {
        rows: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
        saved_model: Model,
        changed: BTreeSet<Vec<u8>>,
    }

    impl Disk {
        /// What a restart restores from: the range's parts (split at
        /// `splits`), each meta-range's parts (a chunk per `per` rows) and
        /// its rows as written.
        fn restore_inputs(
            &self,
            splits: &BTreeSet<Vec<u8>>,
            per: usize,
        ) -> (Vec<Vec<PartBounds>>, Vec<Rows>) {
            let meta_rows: Vec<Rows> = self
                .rows
                .iter()
                .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .collect();
            let mut partitions = vec![bounds_from(splits)];
            for rows in &self.rows {
                let splits: BTreeSet<Vec<u8>> =
                    rows.keys().skip(1).step_by(per).filter(|k| !k.is_empty()).cloned().collect();
                partitions.push(bounds_from(&splits));
            }
            (partitions, meta_rows)
        }

        fn write(&mut self, rows: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>) {
            for (level, k, v) in rows {
                while self.rows.len() < level {
                    self.rows.push(BTreeMap::new());
                }
                match v {
                    Some(v) => self.rows[level - 1].insert(k, v),
                    None => self.rows[level - 1].remove(&k),
                };
            }
        }
    }

    fn round(levels: &mut Levels<Concat>, model: &Model, splits: &BTreeSet<Vec<u8>>, per: usize) {
        let mut load = loader(model);
        levels.repartition(0, &bounds_from(splits), &mut load).expect("repartition");
        for level in 1..levels.depth() {
            let b = meta_bounds(levels, level, per);
            levels.repartition(level, &b, &mut load).expect("repartition");
        }
        levels.propagate();
        while levels.needs_level() {
            levels.add_level();
        }
    }

    /// Postmortem: a level was added whenever the top had fewer parts than
    /// the one below, so meta chunks holding one or two rows (a stats
    /// partial is hundreds of bytes against 1 KiB chunks) grew a level per
    /// part: 62 levels. A level must shrink the top by a quarter.
    #[test]
    fn meta_levels_with_few_rows_per_chunk_stay_shallow() {
        let mut model: Model = BTreeMap::new();
        let mut splits: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut levels = Levels::new(Concat);
        for k in 0..200u8 {
            model.insert(vec![k], k.to_string());
            levels.apply(&[k], Some(k.to_string().as_bytes()), &mut loader(&model)).expect("apply");
            splits.insert(vec![k]);
        }
        levels.propagate();
        // Every meta chunk holds one row but the first, which holds two:
        // each level one part smaller than the one below.
        let mut load = loader(&model);
        levels.repartition(0, &bounds_from(&splits), &mut load).expect("repartition");
        for _ in 0..300 {
            for level in 1..levels.depth() {
                let keys = levels.meta_keys(level);
                let b = bounds_from(&keys.iter().skip(2).cloned().collect());
                levels.repartition(level, &b, &mut load).expect("repartition");
            }
            levels.propagate();
            if !levels.needs_level() {
                break;
            }
            levels.add_level();
        }
        assert!(levels.depth() <= 3, "{} levels over 200 parts", levels.depth());
        // Wide meta chunks still make a deep tree of small parts.
        round(&mut levels, &model, &splits, 4);
        assert!(levels.depth() >= 3, "{} levels", levels.depth());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn levels_match_a_fold_through_splits_and_crashes(ops in proptest::collection::vec(op(), 1..150)) {
            let mut model: Model = BTreeMap::new();
            let mut splits: BTreeSet<Vec<u8>> = BTreeSet::new();
            let mut levels = Levels::new(Concat);
            let mut per = 2;
            let mut disk = Disk { rows: Vec::new(), saved_model: Model::new(), changed: BTreeSet::new() };
            for op in ops {
                match op {
                    Op::Put(k, c) => {
                        let r = levels.apply(&[k], Some(c.to_string().as_bytes()), &mut loader(&model));
                        model.insert(vec![k], c.to_string());
                        prop_assert_eq!(r, Ok(None));
                        levels.propagate();
                        disk.changed.insert(vec![k]);
                    }
                    Op::Refused(k) => {
                        let r = levels.apply(&[k], Some(b"!"), &mut loader(&model));
                        model.remove(&vec![k]);
                        prop_assert_eq!(r, Ok(Some("refused".to_string())));
                        levels.propagate();
                        disk.changed.insert(vec![k]);
                    }
                    Op::Delete(k) => {
                        let r = levels.apply(&[k], None, &mut loader(&model));
                        model.remove(&vec![k]);
                        prop_assert_eq!(r, Ok(None));
                        levels.propagate();
                        disk.changed.insert(vec![k]);
                    }
                    Op::Split(k) => {
                        splits.insert(vec![k]);
                    }
                    Op::Round(p) => {
                        per = p;
                        round(&mut levels, &model, &splits, per);
                    }
                    Op::Query(a, b, inclusive) => {
                        let (a, b) = (a.map(|k| vec![k]), b.map(|k| vec![k]));
                        let lo = a.as_deref().map_or(Bound::Unbounded, Bound::Included);
                        let hi = match &b {
                            None => Bound::Unbounded,
                            Some(b) if inclusive => Bound::Included(b.as_slice()),
                            Some(b) => Bound::Excluded(b.as_slice()),
                        };
                        let empty = match (lo, hi) {
                            (Bound::Included(l), Bound::Included(h)) => l > h,
                            (Bound::Included(l), Bound::Excluded(h)) => l >= h,
                            _ => false,
                        };
                        let want: String = if empty {
                            String::new()
                        } else {
                            model.range::<[u8], _>((lo, hi)).map(|(_, v)| v.as_str()).collect()
                        };
                        let got = levels.reduce((lo, hi), &mut loader(&model)).expect("reduce");
                        prop_assert_eq!(got.unwrap_or_default(), want);
                    }
                    Op::First(a) => {
                        let a = a.map(|k| vec![k]);
                        let lo = a.as_deref().map_or(Bound::Unbounded, Bound::Included);
                        let want = model.range::<[u8], _>((lo, Bound::Unbounded)).next().map(|(k, _)| k.clone());
                        prop_assert_eq!(levels.first_key_from(lo, &mut loader(&model)).expect("first"), want);
                    }
                    Op::Save => {
                        round(&mut levels, &model, &splits, per);
                        disk.write(levels.take_unsaved());
                        disk.saved_model = model.clone();
                        disk.changed.clear();
                    }
                    Op::Crash(written) => {
                        // Some of the unsaved rows reach the disk, the rest are lost.
                        let unsaved = levels.take_unsaved();
                        let n = written.min(unsaved.len());
                        disk.write(unsaved.into_iter().take(n).collect());
                        // Restart: the meta-ranges as written, partitioned
                        // as their chunks are now, the range as of the save.
                        let depth = disk.rows.len() + 1;
                        let (partitions, meta_rows) = disk.restore_inputs(&splits, per);
                        prop_assert_eq!(partitions.len(), depth);
                        let saved = disk.saved_model.clone();
                        levels = Levels::restore(Concat, partitions, meta_rows, &mut loader(&saved)).expect("restore");
                        // Replay the journal since the save.
                        for k in std::mem::take(&mut disk.changed) {
                            let v = model.get(&k).map(|v| v.as_bytes().to_vec());
                            levels.apply(&k, v.as_deref(), &mut loader(&saved)).expect("replay");
                        }
                        levels.propagate();
                        round(&mut levels, &model, &splits, per);
                        disk.write(levels.take_unsaved());
                        disk.saved_model = model.clone();
                    }
                }
                prop_assert_eq!(levels.rows(), model.len() as u64);
            }
        }
    }

    /// Postmortem: a stored total that no longer decoded (damaged, or a
    /// partial of an older format) failed the whole restore; the part it
    /// summed is now rebuilt from its rows and its row rewritten.
    #[test]
    fn undecodable_totals_are_rebuilt_from_rows() {
        let mut model: Model = BTreeMap::new();
        let mut levels = Levels::new(Concat);
        for k in 0u8..40 {
            let v = ((b'a' + k % 26) as char).to_string();
            levels.apply(&[k], Some(v.as_bytes()), &mut loader(&model)).expect("apply");
            model.insert(vec![k], v);
        }
        let splits: BTreeSet<Vec<u8>> = (1u8..8).map(|i| vec![i * 5]).collect();
        for _ in 0..3 {
            round(&mut levels, &model, &splits, 2);
        }
        let mut disk =
            Disk { rows: Vec::new(), saved_model: model.clone(), changed: BTreeSet::new() };
        disk.write(levels.take_unsaved());
        assert!(disk.rows.len() >= 2, "{} meta levels", disk.rows.len());
        // Every total of level 1 and one of level 2 made undecodable.
        for rows in disk.rows.iter_mut().take(2) {
            for v in rows.values_mut() {
                let mut row = MetaRow::decode(v).expect("row");
                row.total = Some(vec![0xff]);
                *v = row.encode();
            }
        }
        let (partitions, meta_rows) = disk.restore_inputs(&splits, 2);
        let mut restored =
            Levels::restore(Concat, partitions, meta_rows, &mut loader(&model)).expect("restore");
        let want: String = model.values().map(String::as_str).collect();
        let got = restored.reduce((Bound::Unbounded, Bound::Unbounded), &mut loader(&model));
        assert_eq!(got, Ok(Some(want)));
        disk.write(restored.take_unsaved());
        for rows in &disk.rows {
            for v in rows.values() {
                let total = MetaRow::decode(v).expect("row").total.expect("total");
                assert!(String::from_utf8(total).is_ok(), "a damaged total stayed");
            }
        }
    }

    #[test]
    fn meta_rows_round_trip_and_refuse_damage() {
        for row in [
            MetaRow { end: None, rows: 0, total: None },
            MetaRow { end: Some(b"k".to_vec()), rows: 7, total: Some(b"\x00\x01".to_vec()) },
            MetaRow { end: Some(Vec::new()), rows: u64::MAX, total: Some(Vec::new()) },
        ] {
            assert_eq!(MetaRow::decode(&row.encode()), Ok(row));
        }
        assert!(MetaRow::decode(&[]).is_err());
        assert!(MetaRow::decode(&[4, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(MetaRow::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]).is_err());
        assert!(MetaRow::decode(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    /// Counting combines checks that an aggregate over many parts costs
    /// O(log n) of them, not one per part or row.
    impl ReduceFn for Counting {
        fn leaf(&self, _: &[u8], _: &[u8]) -> Result<u64, String> {
            Ok(1)
        }
        fn encode(&self, r: &u64) -> Vec<u8> {
            r.to_be_bytes().to_vec()
        }
        fn decode(&self, b: &[u8]) -> Result<u64, String> {
            Ok(u64::from_be_bytes(b.try_into().map_err(|_| "len")?))
        }
        fn answer(&self, r: Option<&u64>) -> Result<Json, String> {
            Ok(Json::from(r.copied().unwrap_or(0)))
        }
    }

    #[test]
    fn aggregates_over_many_parts_cost_logarithmic_combines() {
        let n = 1u32 << 16;
        let per_part = 64u32;
        let mut model_rows: Rows = Vec::new();
        for i in 0..n {
            model_rows.push((i.to_be_bytes().to_vec(), b"x".to_vec()));
        }
        let mut levels = Levels::new(Counting(std::cell::Cell::new(0)));
        let mut none = |_: &[u8], _: Option<&[u8]>| -> Result<Rows, String> {
            Err("everything is loaded".into())
        };
        for (k, v) in &model_rows {
            levels.apply(k, Some(v), &mut none).expect("apply");
        }
        // 1024 parts of 64 rows, meta levels of 8 rows per part.
        let splits: BTreeSet<Vec<u8>> =
            (1..n / per_part).map(|p| (p * per_part).to_be_bytes().to_vec()).collect();
        levels.repartition(0, &bounds_from(&splits), &mut none).expect("repartition");
        levels.propagate();
        while levels.needs_level() {
            levels.add_level();
            let top = levels.depth() - 1;
            let keys = levels.meta_keys(top);
            let splits: BTreeSet<Vec<u8>> =
                keys.iter().skip(1).step_by(8).filter(|k| !k.is_empty()).cloned().collect();
            levels.repartition(top, &bounds_from(&splits), &mut none).expect("repartition");
            levels.propagate();
        }
        assert!(levels.depth() >= 4, "{} levels", levels.depth());
        let mut worst = 0;
        for (lo, hi) in [(1u32, n - 2), (n / 3, n / 2), (17, 40_000), (12_345, 54_321)] {
            levels.function().0.set(0);
            let (l, h) = (lo.to_be_bytes(), hi.to_be_bytes());
            let got = levels.reduce((Bound::Included(&l[..]), Bound::Excluded(&h[..])), &mut none);
            assert_eq!(got, Ok(Some(u64::from(hi - lo))));
            worst = worst.max(levels.function().0.get());
        }
        assert!(worst < 200, "{worst} combines for one range query");
    }
}
