//! One chunk: its versioned index over its log. The chunk actor is a thin
//! shell around this struct, which has no actor or threading code in it.

use std::ops::Bound;
use std::path::Path;

use monotable_proto::{ChunkInfo, Record, WriteOp};

use super::chunk_index::{ChunkIndex, KeyBounds};
use super::chunk_log::{create_chunk_dir, ChunkLog, LogError, Recovery, SegmentWriter, SyncJob};
use super::descriptor::ChunkDescriptor;
use super::entry::EntryRef;
use super::journal::ChangeJournal;

/// The identity and key interval of a chunk, as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkMeta {
    pub id: u64,
    pub range_id: u64,
    /// Inclusive.
    pub start: Vec<u8>,
    /// Exclusive; `None` is the end of the range.
    pub end: Option<Vec<u8>>,
}

impl ChunkMeta {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "snapshot {snapshot} is older than {horizon}, what this chunk kept, and is not pinned"
    )]
    SnapshotTooOld { snapshot: u64, horizon: u64 },
    /// A write the chunk will not log (a key or value over the limits);
    /// nothing of its batch was written and the chunk is unharmed.
    #[error("{}", .0.message)]
    Refused(monotable_proto::ErrorInfo),
    #[error("chunk directory {dir} describes {found:?}, the catalog {expected:?}")]
    DescriptorMismatch {
        dir: std::path::PathBuf,
        found: Box<ChunkDescriptor>,
        expected: Box<ChunkDescriptor>,
    },
}

/// The snapshot a read is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest durable state of the chunk.
    Latest,
    /// Everything applied, durable or not yet: for a caller that answers
    /// only once what it read is durable (the Redis endpoint waits for the
    /// stable seq to pass it).
    Applied,
    /// A snapshot; `pinned` says whether someone holds a pin on it.
    Snapshot { seq: u64, pinned: bool },
}

/// Outcome of a scan inside one chunk.
#[derive(Debug, Default)]
pub struct ChunkScan {
    pub records: Vec<Record>,
    /// The scan stopped at its limit or byte budget; the next record's key.
    pub stopped_at: Option<Vec<u8>>,
}

/// A compaction written to disk but not yet in charge.
pub struct Compaction {
    segment: u32,
    index: ChunkIndex,
    last_seq: u64,
    horizon: u64,
}

pub struct Chunk {
    pub meta: ChunkMeta,
    /// The range's name and options, as the chunk's descriptor records
    /// them (the halves of a split inherit them).
    range_name: String,
    options: monotable_proto::RangeOptions,
    index: ChunkIndex,
    log: ChunkLog,
    /// Highest seq whose batch is durable (under the node's fsync setting).
    durable_seq: u64,
    /// Highest seq whose batch was handed to the kernel: what a failed
    /// write out rolls the index back to.
    written_seq: u64,
    /// Unpinned snapshots below this may have lost versions to compaction.
    gc_horizon: u64,
    /// Keys changed since the oldest checkpoint of the views reading this
    /// chunk's range; `None` when no view reads it.
    journal: Option<ChangeJournal>,
}

/// One key's change between two snapshots, as a view sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The value at the earlier snapshot (`None`: absent).
    pub old: Option<Vec<u8>>,
    /// The value at the later snapshot (`None`: absent).
    pub new: Option<Vec<u8>>,
}

impl Chunk {
    /// Creates an empty chunk in a new directory, with its descriptor.
    pub fn create(
        descriptor: &ChunkDescriptor,
        dir: &Path,
        segment_size_max_bytes: u64,
    ) -> Result<Self, ChunkError> {
        create_chunk_dir(dir)?;
        let log =
            descriptor.write(dir).and_then(|()| ChunkLog::create(dir, segment_size_max_bytes));
        let log = match log {
            Ok(log) => log,
            Err(e) => {
                // The directory was made by this call; no catalog names it.
                let _ = std::fs::remove_dir_all(dir);
                return Err(e.into());
            }
        };
        Ok(Chunk {
            meta: descriptor.chunk.clone(),
            range_name: descriptor.range_name.clone(),
            options: descriptor.options,
            index: ChunkIndex::new(),
            log,
            durable_seq: 0,
            written_seq: 0,
            gc_horizon: 0,
            journal: None,
        })
    }

    /// Opens a chunk by replaying its log. The directory's descriptor must
    /// say what `descriptor` (from the catalog) says; a directory from
    /// before descriptors existed gets one (and its log a manifest).
    pub fn open(
        descriptor: &ChunkDescriptor,
        dir: &Path,
        segment_size_max_bytes: u64,
    ) -> Result<(Self, Recovery), ChunkError> {
        let stored = ChunkDescriptor::read(dir)?;
        if let Some(found) = &stored {
            if found != descriptor {
                return Err(ChunkError::DescriptorMismatch {
                    dir: dir.to_owned(),
                    found: Box::new(found.clone()),
                    expected: Box::new(descriptor.clone()),
                });
            }
        }
        let mut index = ChunkIndex::new();
        let (log, recovery) =
            ChunkLog::open(dir, segment_size_max_bytes, stored.is_some(), |e, v| {
                index.apply(e.key, v)
            })?;
        if stored.is_none() {
            descriptor.write(dir)?;
        }
        index.bump_last_seq(recovery.base_last_seq);
        let last = index.last_seq();
        // Pins do not survive a restart, so no older snapshot is readable.
        let chunk = Chunk {
            meta: descriptor.chunk.clone(),
            range_name: descriptor.range_name.clone(),
            options: descriptor.options,
            index,
            log,
            durable_seq: last,
            written_seq: last,
            gc_horizon: last,
            journal: None,
        };
        Ok((chunk, recovery))
    }

    /// What the chunk's directory says about it.
    pub fn descriptor(&self) -> ChunkDescriptor {
        ChunkDescriptor {
            range_name: self.range_name.clone(),
            options: self.options,
            chunk: self.meta.clone(),
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.index.last_seq()
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    pub fn live_bytes(&self) -> u64 {
        self.index.live_bytes()
    }

    pub fn log_bytes(&self) -> u64 {
        self.log.total_bytes()
    }

    pub fn info(&self) -> ChunkInfo {
        ChunkInfo {
            id: self.meta.id,
            start: self.meta.start.clone().into(),
            end: self.meta.end.clone().map(Into::into),
            records: self.index.live_records(),
            live_bytes: self.index.live_bytes(),
            log_bytes: self.log.total_bytes(),
            last_seq: self.index.last_seq(),
            unavailable: None,
        }
    }

    /// Logs and indexes a batch under `seq`. The batch is not durable until
    /// it has been written out and synced; reads do not see it before
    /// [`Chunk::mark_durable`].
    ///
    /// Every write of every path (native clients, the Redis endpoint, views,
    /// sinks, imports) passes here, so this is where the row limits are
    /// enforced for all of them.
    ///
    /// # Errors
    /// [`ChunkError::Refused`] when a row is over the key or value limits
    /// ([`WriteOp::check_size`]): nothing of the batch is logged, and the
    /// chunk goes on. [`ChunkError::Log`] when the log failed.
    pub fn apply_batch(&mut self, seq: u64, ops: &[WriteOp]) -> Result<(), ChunkError> {
        assert!(seq > self.index.last_seq(), "seq {seq} not above {}", self.index.last_seq());
        for op in ops {
            op.check_size().map_err(ChunkError::Refused)?;
        }
        let mut entries: Vec<EntryRef<'_>> = ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value } => {
                    EntryRef { seq, key, value: Some(value), expiry_ms: 0, batch_end: false }
                }
                WriteOp::Delete { key } => {
                    EntryRef { seq, key, value: None, expiry_ms: 0, batch_end: false }
                }
            })
            .collect();
        let versions = self.log.append_batch(&mut entries)?;
        for (op, v) in ops.iter().zip(versions) {
            self.index.apply(op.key(), v);
            if let Some(journal) = &mut self.journal {
                journal.record(seq, op.key());
            }
        }
        Ok(())
    }

    /// Starts keeping the journal of changes above `after` (or lowers where
    /// it starts), for a view whose checkpoint is `after`.
    pub fn watch_changes(&mut self, after: u64) {
        // Rebuilding from the index covers both cases: it holds every
        // version a pinned checkpoint can still need.
        self.journal = Some(ChangeJournal::from_changes(self.index.versions_after(after)));
    }

    /// Whether the chunk keeps a journal of changes.
    pub fn journal_watched(&self) -> bool {
        self.journal.is_some()
    }

    /// Stops keeping the journal: no view reads this chunk any more.
    pub fn unwatch_changes(&mut self) {
        self.journal = None;
    }

    /// Forgets journaled changes at or below `upto`.
    pub fn trim_journal(&mut self, upto: u64) {
        if let Some(journal) = &mut self.journal {
            journal.trim(upto);
        }
    }

    /// Journaled changes above `after`.
    pub fn pending_changes(&self, after: u64) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.count_after(after) as u64)
    }

    pub fn journal_len(&self) -> usize {
        self.journal.as_ref().map_or(0, ChangeJournal::len)
    }

    /// Every key changed in `(after, upto]` with its values at both ends,
    /// also when they are equal (a put undone by a delete): a view's state
    /// saved after `after` (a reducer's meta rows, written before its
    /// checkpoint was) may hold the value in between, and the key must
    /// reach it again to be recomputed. The caller holds a pin on `after`;
    /// `upto` must be durable here. `None` when this chunk keeps no journal.
    pub fn changes(&self, after: u64, upto: u64) -> Result<Option<Vec<Change>>, ChunkError> {
        let Some(journal) = &self.journal else { return Ok(None) };
        let upto = upto.min(self.durable_seq);
        let mut out = Vec::new();
        for key in journal.keys_changed(after, upto) {
            let old = self.value_at(&key, after)?;
            let new = self.value_at(&key, upto)?;
            out.push(Change { key, old, new });
        }
        Ok(Some(out))
    }

    fn value_at(&self, key: &[u8], seq: u64) -> Result<Option<Vec<u8>>, ChunkError> {
        match self.index.get(key, seq) {
            Some(v) => Ok(Some(self.log.read(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Hands everything logged so far to the kernel. If that fails before
    /// anything reached an fsync ([`LogError::WriteRefused`]), the batches
    /// not written are taken out of the index again: the chunk is as it
    /// was before them and takes the next batch.
    pub fn write_out(&mut self) -> Result<(), ChunkError> {
        match self.log.write_out() {
            Ok(()) => {
                self.written_seq = self.index.last_seq();
                Ok(())
            }
            Err(e @ LogError::WriteRefused { .. }) => {
                self.index.discard_above(self.written_seq);
                if let Some(journal) = &mut self.journal {
                    journal.discard_above(self.written_seq);
                }
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn take_sync_job(&mut self) -> Result<SyncJob, ChunkError> {
        Ok(self.log.take_sync_job()?)
    }

    /// Test hook: the next write out fails half-way, as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_next_write_out_for_tests(&mut self) {
        self.log.fail_next_write = true;
    }

    /// Everything up to `seq` is durable: reads may see it.
    pub fn mark_durable(&mut self, seq: u64) {
        assert!(seq <= self.index.last_seq(), "durable beyond what was logged");
        self.durable_seq = self.durable_seq.max(seq);
    }

    fn snapshot_seq(&self, at: ReadAt) -> Result<u64, ChunkError> {
        match at {
            ReadAt::Latest => Ok(self.durable_seq),
            ReadAt::Applied => Ok(self.index.last_seq()),
            ReadAt::Snapshot { seq, pinned } => {
                if !pinned && seq < self.gc_horizon {
                    return Err(ChunkError::SnapshotTooOld {
                        snapshot: seq,
                        horizon: self.gc_horizon,
                    });
                }
                // Never show what is not durable, even to a snapshot above it
                // (possible only on a chunk whose fsync failed).
                Ok(seq.min(self.durable_seq))
            }
        }
    }

    pub fn get(&self, key: &[u8], at: ReadAt) -> Result<Option<Vec<u8>>, ChunkError> {
        let seq = self.snapshot_seq(at)?;
        match self.index.get(key, seq) {
            Some(v) => Ok(Some(self.log.read(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Records within `bounds` (already clipped to this chunk by the caller,
    /// or not: keys outside the chunk do not exist here anyway).
    pub fn scan(
        &self,
        bounds: KeyBounds<'_>,
        at: ReadAt,
        reverse: bool,
        limit: usize,
        bytes_max: usize,
    ) -> Result<ChunkScan, ChunkError> {
        let seq = self.snapshot_seq(at)?;
        let mut out = ChunkScan::default();
        let mut bytes = 0usize;
        for (key, v) in self.index.scan(bounds, seq, reverse) {
            if out.records.len() >= limit || (bytes >= bytes_max && !out.records.is_empty()) {
                out.stopped_at = Some(key.to_vec());
                break;
            }
            let value = self.log.read(key, &v)?;
            bytes += key.len() + value.len();
            out.records.push(Record { key: key.to_vec().into(), value: value.into() });
        }
        Ok(out)
    }

    /// Whether enough of the log is garbage that compacting is worth it.
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        let log = self.log.total_bytes();
        log >= min_bytes && log > 2 * self.index.live_bytes() + min_bytes / 2
    }

    /// Writes the retained versions within `bounds` into `out` and returns
    /// the index that describes them.
    fn rewrite(
        &self,
        pins: &[u64],
        upto: u64,
        bounds: KeyBounds<'_>,
        out: &mut SegmentWriter,
    ) -> Result<ChunkIndex, ChunkError> {
        let mut index = ChunkIndex::new();
        let mut copier = self.log.copier();
        for (key, versions) in self.index.retained(pins, upto, bounds) {
            for v in versions {
                let entry = copier.entry(key, &v)?;
                index.apply(key, out.append(&entry)?);
            }
        }
        index.bump_last_seq(self.index.last_seq());
        Ok(index)
    }

    /// Rewrites the log keeping only what `pins` and future snapshots at or
    /// above `stable` can see. Everything logged must be durable first.
    pub fn compact(&mut self, pins: &[u64], stable: u64) -> Result<(), ChunkError> {
        let prepared = self.prepare_compaction(pins, stable)?;
        self.install_compaction(prepared)
    }

    /// The slow half of compaction, which only reads the chunk: writes the
    /// compacted segment and builds its index.
    pub fn prepare_compaction(&self, pins: &[u64], stable: u64) -> Result<Compaction, ChunkError> {
        assert_eq!(self.durable_seq, self.index.last_seq(), "compaction with undurable writes");
        let all = (Bound::Unbounded, Bound::Unbounded);
        let last_seq = self.index.last_seq();
        let mut out = self.log.compaction_writer(last_seq)?;
        let segment = out.id;
        let index = self.rewrite(pins, stable, all, &mut out)?;
        out.finish()?;
        Ok(Compaction { segment, index, last_seq, horizon: stable })
    }

    /// The quick half: puts the compacted segment and index in charge.
    pub fn install_compaction(&mut self, c: Compaction) -> Result<(), ChunkError> {
        assert_eq!(c.last_seq, self.index.last_seq(), "the chunk changed during compaction");
        self.log.install_compacted(c.segment)?;
        self.index = c.index;
        self.gc_horizon = self.gc_horizon.max(c.horizon);
        Ok(())
    }

    /// Writes two new chunks holding this chunk's retained versions below and
    /// from `split_key`. This chunk is left untouched; the caller swaps the
    /// catalog over and then destroys it.
    pub fn split(
        &self,
        split_key: &[u8],
        pins: &[u64],
        stable: u64,
        lower: (ChunkMeta, &Path),
        upper: (ChunkMeta, &Path),
        segment_size_max_bytes: u64,
    ) -> Result<(Chunk, Chunk), ChunkError> {
        assert_eq!(self.durable_seq, self.index.last_seq(), "split with undurable writes");
        assert!(self.meta.contains(split_key) && split_key != self.meta.start.as_slice());
        let halves = [
            (lower, (Bound::Unbounded, Bound::Excluded(split_key))),
            (upper, (Bound::Included(split_key), Bound::Unbounded)),
        ];
        let mut journals = match &self.journal {
            Some(j) => {
                let (lower, upper) = j.split(split_key);
                vec![Some(lower), Some(upper)]
            }
            None => vec![None, None],
        }
        .into_iter();
        let mut made = Vec::with_capacity(2);
        let mut created: Vec<&Path> = Vec::with_capacity(2);
        for ((meta, dir), bounds) in halves {
            // The last seq must not go backwards for either half, even if
            // its newest entries were tombstones that the rewrite dropped.
            let last_seq = self.index.last_seq();
            let descriptor = ChunkDescriptor { chunk: meta.clone(), ..self.descriptor() };
            let half = (|| {
                create_chunk_dir(dir)?;
                created.push(dir);
                descriptor.write(dir)?;
                let mut out = ChunkLog::first_segment_writer(dir, last_seq)?;
                let index = self.rewrite(pins, stable, bounds, &mut out)?;
                out.finish()?;
                let log = ChunkLog::publish_new(dir, segment_size_max_bytes)?;
                Ok::<_, ChunkError>((index, log))
            })();
            let (index, log) = match half {
                Ok(half) => half,
                Err(e) => {
                    // Only directories this call created, which no catalog
                    // names yet, are removed.
                    drop(made);
                    for dir in created {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    return Err(e);
                }
            };
            let horizon = self.gc_horizon.max(stable);
            let journal = journals.next().expect("two halves");
            made.push(Chunk {
                meta,
                range_name: self.range_name.clone(),
                options: self.options,
                index,
                log,
                durable_seq: last_seq,
                written_seq: last_seq,
                gc_horizon: horizon,
                journal,
            });
        }
        let upper = made.pop().expect("two halves");
        let lower = made.pop().expect("two halves");
        Ok((lower, upper))
    }

    /// Whether the chunk has at least two live keys to split between.
    pub fn can_split(&self) -> bool {
        self.index.live_records() >= 2
    }

    /// Where to split this chunk in two, if it can be split.
    pub fn split_key(&self) -> Option<Vec<u8>> {
        self.index.split_key()
    }

    /// Deletes the chunk's files.
    pub fn destroy(self) -> std::io::Result<()> {
        self.log.destroy()
    }
}
