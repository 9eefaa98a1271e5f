//! One chunk: its versioned index over its log. The chunk actor is a thin
//! shell around this struct, which has no actor or threading code in it.
//!
//! Compaction and splits run beside the writes, in steps, so that no lock
//! on the chunk is held for long: `begin_*` (under the write lock, brief)
//! records where the written log ends; `*_step` (under the read lock,
//! released between steps) copies the retained versions of what the log
//! held then, key by key, and then what was written since, in log order;
//! `sync_bulk` (no lock) fsyncs the output so far; `finish_*` (under the
//! write lock) copies what was logged since the last step, written or not,
//! fsyncs and puts the result in charge. One job per chunk at a time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use monotable_proto::{ChunkInfo, Record, WriteOp};

use super::chunk_index::{ChunkIndex, IndexKey, KeyBounds, Version};
pub use super::chunk_log::SegmentImage;
pub use super::chunk_log::BASE_ID_HEADROOM;
use super::chunk_log::{
    create_chunk_dir, remove_superseded, ChunkLog, LogError, LogPos, Recovery, SegmentWriter,
    SyncJob,
};
use super::descriptor::ChunkDescriptor;
use super::entry::EntryRef;
use super::journal::ChangeJournal;

/// Deleted keys (tombstones in the index) past which a chunk compacts,
/// also when they are more than an eighth of its live keys. Tombstones are
/// small, so the garbage-bytes rule alone let them pile up, and a scan from
/// the front walked past every one: popping a queue from its front
/// (ZPOPMIN, the expirer's rows) cost more per pop the more had been
/// popped (20,000 ZPOPMINs ran at 80 a second at the end).
pub const DEAD_KEYS_COMPACTION_MIN: u64 = 4096;

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
    /// A compaction or split of this chunk is running; one at a time.
    #[error("a compaction or split of this chunk is already running")]
    Busy,
    /// A rewrite that would not hold what the chunk holds was not put in
    /// charge (a bug, caught before it could lose anything); the chunk is
    /// unharmed.
    #[error("rewrite refused: {0}")]
    RewriteRefused(String),
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

/// One write of a batch ([`Chunk::apply_batch`]): a put of `value`, or a
/// delete when it has none. [`WriteOp`] is one; an install applies rows
/// that are slices of the files it copied, without a copy of each.
pub trait BatchOp {
    fn key(&self) -> &[u8];
    fn value(&self) -> Option<&[u8]>;
}

impl BatchOp for WriteOp {
    fn key(&self) -> &[u8] {
        WriteOp::key(self)
    }
    fn value(&self) -> Option<&[u8]> {
        WriteOp::value(self)
    }
}

/// The default `budget_bytes` of a compaction or split step: about a
/// millisecond or two of copying.
pub const STEP_BUDGET_BYTES: usize = 1 << 20;
/// What walking one key costs a step's budget beyond its key's bytes, so
/// that a step over keys with nothing to copy ends too.
const KEY_WALK_BYTES: u64 = 32;
/// Rounds of catching up with the writes made during a rewrite before the
/// rest is left to its finish.
const CATCH_UP_ROUNDS_MAX: u32 = 4;

/// Where a compaction or split is: what it keeps, and how far it got.
struct RewriteCursor {
    /// The chunk the job belongs to.
    chunk_id: u64,
    pins: Vec<u64>,
    stable: u64,
    /// The log's written end when the job began. The versions before it
    /// are copied key by key (those retained); everything after it is
    /// copied whole, in log order.
    prefix_end: LogPos,
    /// The last key the key-by-key copy did (`None`: none yet).
    key_cursor: Option<Vec<u8>>,
    keys_done: bool,
    /// Where the copy in log order goes on.
    tail_from: LogPos,
    /// Where the current round of catching up ends.
    catch_up_to: Option<LogPos>,
    rounds: u32,
    done: bool,
    /// While this lives, the chunk refuses another job (and for a
    /// compaction, the log does not rotate onto its output's id).
    _token: Arc<()>,
}

/// A compaction under way (see [`Chunk::begin_compaction`]). Dropping it
/// removes its output; the chunk is unaffected.
pub struct Compaction {
    copy: RewriteCursor,
    out: SegmentWriter,
    index: ChunkIndex,
    horizon: u64,
}

impl Compaction {
    /// Fdatasyncs the output written so far. Touches no chunk: call it
    /// outside any lock, after the last step, so that finishing (under the
    /// write lock) fsyncs only what it copies itself.
    pub fn sync_bulk(&mut self) -> Result<(), ChunkError> {
        Ok(self.out.sync_bulk()?)
    }

    /// Bytes of output so far.
    pub fn output_bytes(&self) -> u64 {
        self.out.bytes_written()
    }
}

/// One new chunk a split is writing.
struct Half {
    meta: ChunkMeta,
    descriptor: ChunkDescriptor,
    dir: PathBuf,
    /// `None` once finished.
    out: Option<SegmentWriter>,
    index: ChunkIndex,
}

/// A split under way (see [`Chunk::begin_split`]). Dropping it before it
/// finished removes both new directories, which no catalog names yet.
pub struct Split {
    copy: RewriteCursor,
    split_key: Vec<u8>,
    /// Lower, then upper.
    halves: Vec<Half>,
    segment_size_max_bytes: u64,
    horizon: u64,
    /// Directories this job created and still owns.
    created: Vec<PathBuf>,
    /// Whether the halves' descriptors and manifests are written (durably).
    /// Until the catalog names them (after the finish), the directories
    /// hold no chunk: a crash leaves directories that start-up moves aside.
    descriptors_written: bool,
}

impl Split {
    /// Appends one entry to the half its key belongs to.
    fn take(halves: &mut [Half], split_key: &[u8], e: &EntryRef<'_>) -> Result<(), LogError> {
        let half = &mut halves[usize::from(e.key >= split_key)];
        let out = half.out.as_mut().expect("a split half is written until it is finished");
        half.index.apply(e.key, out.append(e)?);
        Ok(())
    }

    /// Writes the halves' descriptors and manifests, durably (a few
    /// fsyncs), once.
    fn write_descriptors(&mut self) -> Result<(), ChunkError> {
        if !self.descriptors_written {
            for half in &self.halves {
                half.descriptor.write(&half.dir)?;
                ChunkLog::write_first_manifest(&half.dir)?;
            }
            self.descriptors_written = true;
        }
        Ok(())
    }

    /// Fdatasyncs both halves written so far, and writes their descriptors
    /// and manifests the first time; see [`Compaction::sync_bulk`]. Without
    /// it, finishing does all that under the write lock.
    pub fn sync_bulk(&mut self) -> Result<(), ChunkError> {
        self.write_descriptors()?;
        for half in &mut self.halves {
            if let Some(out) = &mut half.out {
                out.sync_bulk()?;
            }
        }
        Ok(())
    }

    /// Bytes of output so far, both halves.
    pub fn output_bytes(&self) -> u64 {
        self.halves.iter().filter_map(|h| h.out.as_ref()).map(SegmentWriter::bytes_written).sum()
    }
}

/// A merge under way (see [`Chunk::begin_merge`]): a chunk and its
/// neighbour above copied into one new chunk, the lower's part first.
/// Dropping it before it finished removes the new directory, which no
/// catalog names yet; both chunks are unaffected.
pub struct Merge {
    /// The output (one "half") and the lower chunk's copy.
    into: Split,
    /// The upper chunk's copy.
    upper_copy: RewriteCursor,
}

impl Merge {
    /// Appends one entry of either chunk to the merged one.
    fn take(halves: &mut [Half], e: &EntryRef<'_>) -> Result<(), LogError> {
        let merged = &mut halves[0];
        let out = merged.out.as_mut().expect("a merge is written until it is finished");
        merged.index.apply(e.key, out.append(e)?);
        Ok(())
    }

    /// See [`Split::sync_bulk`].
    pub fn sync_bulk(&mut self) -> Result<(), ChunkError> {
        self.into.sync_bulk()
    }

    /// Bytes of output so far.
    pub fn output_bytes(&self) -> u64 {
        self.into.output_bytes()
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        for half in &mut self.halves {
            half.out.take();
        }
        for dir in &self.created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
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
    /// The running compaction or split, if any (see [`Chunk::begin_compaction`]).
    job: Weak<()>,
    /// What the last compaction superseded, not yet taken (see
    /// [`Chunk::take_superseded`]).
    superseded: Superseded,
    /// Rows of a bulk load logged but not yet indexed, in key order (see
    /// [`Chunk::load_batch`]); empty otherwise.
    loading: Vec<(IndexKey, Version)>,
    /// Bytes of the entries in `loading`.
    loading_bytes: u64,
}

/// What a finished compaction superseded: the old segment files and the old
/// index, which nothing reads any more. Remove and drop them outside the
/// chunk's lock: unlinking large files and freeing a large index take
/// milliseconds (about 40 ms and 4 ms for a 64 MiB chunk). Dropped
/// without [`Superseded::remove`], the files stay on disk until the next
/// compaction or start.
#[must_use = "superseded segments stay on disk until removed"]
#[derive(Default)]
pub struct Superseded {
    files: Vec<PathBuf>,
    index: Option<ChunkIndex>,
}

impl Superseded {
    /// Unlinks the files and frees the index; failures are logged (the next
    /// start removes what is left).
    pub fn remove(self) {
        remove_superseded(self.files)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.index.is_none()
    }
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
        // Marked first: until the caller's catalog names the chunk and
        // unmarks it, a start takes it for a creation that did not commit.
        let log = super::descriptor::mark_creating(dir)
            .and_then(|()| descriptor.write(dir))
            .and_then(|()| ChunkLog::create(dir, segment_size_max_bytes));
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
            job: Weak::new(),
            superseded: Superseded::default(),
            loading: Vec::new(),
            loading_bytes: 0,
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
            job: Weak::new(),
            superseded: Superseded::default(),
            loading: Vec::new(),
            loading_bytes: 0,
        };
        Ok((chunk, recovery))
    }

    /// Opens as the chunk `descriptor` describes the log segments
    /// `first..=last` placed (durably, under their segment file names) in
    /// the directory `dir`, which holds nothing else: another replica's
    /// log of the chunk, copied and verified entry by entry
    /// ([`crate::segments`]). Writes the directory's descriptor and
    /// manifest, durably, and replays the segments. The entries keep the
    /// seqs they were logged under there; see [`Chunk::settle_adopted`].
    ///
    /// Errors: the segments fail recovery's checks (a gap, damage); `dir`
    /// is left for the caller to remove. Keys outside the chunk's bounds
    /// are not checked here: see [`Chunk::keys_within_bounds`].
    pub fn open_placed(
        descriptor: &ChunkDescriptor,
        dir: &Path,
        first: u32,
        last: u32,
        segment_size_max_bytes: u64,
    ) -> Result<(Self, Recovery), ChunkError> {
        descriptor.write(dir)?;
        super::manifest::Manifest { first, last }.write(dir)?;
        Self::open(descriptor, dir, segment_size_max_bytes)
    }

    /// Whether every key the chunk indexes (tombstones included) lies
    /// within its bounds: a log made elsewhere may hold others
    /// ([`Chunk::open_placed`]).
    pub fn keys_within_bounds(&self) -> bool {
        self.index
            .key_span()
            .is_none_or(|(low, high)| self.meta.contains(low) && self.meta.contains(high))
    }

    /// Makes a chunk from [`Chunk::open_placed`] this node's, in the
    /// directory `dir` it was renamed to, as of the node's seq `seq`: its
    /// entries (logged under another node's seqs, all at or below `seq`:
    /// the caller's clock observed [`Chunk::last_seq`] first) read as
    /// applied and durable at `seq`, and no unpinned snapshot before
    /// `seq` can be read from it.
    ///
    /// # Panics
    /// When `seq` is below the chunk's last seq.
    pub fn settle_adopted(&mut self, dir: &Path, seq: u64) {
        assert!(seq >= self.index.last_seq(), "adopted at {seq}, below its own entries");
        self.log.relocate(dir);
        self.index.bump_last_seq(seq);
        self.durable_seq = seq;
        self.written_seq = seq;
        self.gc_horizon = seq;
    }

    /// Whether the chunk can be replaced whole by an adopted one
    /// ([`Chunk::open_placed`]) with nothing observable lost: it holds no
    /// record, no view follows its changes, and no compaction or split
    /// of it runs.
    pub fn replaceable(&self) -> bool {
        self.index.live_records() == 0 && self.journal.is_none() && self.job.strong_count() == 0
    }

    /// Whether the chunk has never held anything a reader or a view could
    /// have seen: no key in its index (live or tombstone), and no
    /// compaction or split of it runs. Such a chunk can give way to chunks
    /// loaded elsewhere ([`crate::sorted_load::SortedLoad::replace_empty`]).
    pub fn holds_nothing(&self) -> bool {
        self.index.live_records() == 0
            && self.index.dead_keys() == 0
            && self.job.strong_count() == 0
    }

    /// What the chunk's directory says about it.
    pub fn descriptor(&self) -> ChunkDescriptor {
        ChunkDescriptor {
            range_name: self.range_name.clone(),
            options: self.options,
            chunk: self.meta.clone(),
        }
    }

    /// Names the chunk's range `name` (the range was renamed), in memory
    /// and, durably, in its descriptor. On error the descriptor may hold
    /// either name (start-up accepts the former one while the catalog
    /// records the rename).
    pub fn rename_range(&mut self, name: &str) -> Result<(), ChunkError> {
        let renamed = ChunkDescriptor { range_name: name.to_owned(), ..self.descriptor() };
        renamed.write(self.log.dir())?;
        self.range_name = renamed.range_name;
        Ok(())
    }

    /// Sets where the chunk ends, in memory and durably in its descriptor:
    /// a chunk built in key order by a sorted load learns its end when the
    /// next one begins. Only for a chunk no catalog names yet.
    pub fn set_end(&mut self, end: Vec<u8>) -> Result<(), ChunkError> {
        let mut meta = self.meta.clone();
        meta.end = Some(end);
        ChunkDescriptor { chunk: meta.clone(), ..self.descriptor() }.write(self.log.dir())?;
        self.meta = meta;
        Ok(())
    }

    /// The chunk's directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
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

    /// The segments of the chunk's log as they are now (see
    /// [`SegmentImage`]): the chunk's whole state, for a new replica to
    /// copy.
    pub fn segment_images(&self) -> Vec<SegmentImage> {
        self.log.images()
    }

    /// Keys with a live value.
    pub fn live_records(&self) -> u64 {
        self.index.live_records()
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
            replicas: Vec::new(),
            leader: None,
            voters: Vec::new(),
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
    pub fn apply_batch<O: BatchOp>(&mut self, seq: u64, ops: &[O]) -> Result<(), ChunkError> {
        assert!(seq > self.index.last_seq(), "seq {seq} not above {}", self.index.last_seq());
        for op in ops {
            monotable_proto::limits::check_row_size(op.key(), op.value())
                .map_err(ChunkError::Refused)?;
        }
        let mut entries: Vec<EntryRef<'_>> = ops
            .iter()
            .map(|op| EntryRef {
                seq,
                key: op.key(),
                value: op.value(),
                expiry_ms: 0,
                batch_end: false,
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

    /// Logs a batch of a bulk load into a new chunk that nothing reads yet:
    /// puts whose keys increase strictly, above every key loaded before.
    /// The index is built once, from the sorted rows, by
    /// [`Chunk::finish_load`] (a bulk build: no key comparisons, no
    /// rebalancing), which must come before anything reads the chunk or
    /// marks it durable. Errors as [`Chunk::apply_batch`].
    pub fn load_batch(&mut self, seq: u64, rows: &[(Vec<u8>, Vec<u8>)]) -> Result<(), ChunkError> {
        let last_seq = self.loading.last().map_or(self.index.last_seq(), |(_, v)| v.seq);
        assert!(seq > last_seq, "seq {seq} not above {last_seq}");
        assert!(self.index.is_empty(), "a bulk load goes into a new chunk");
        for (k, v) in rows {
            monotable_proto::limits::check_row_size(k, Some(v)).map_err(ChunkError::Refused)?;
        }
        let mut previous = self.loading.last().map(|(k, _)| k.as_slice());
        for (k, _) in rows {
            assert!(previous.is_none_or(|p| p < k.as_slice()), "a bulk load's keys increase");
            previous = Some(k);
        }
        let mut entries: Vec<EntryRef<'_>> = rows
            .iter()
            .map(|(key, value)| EntryRef {
                seq,
                key,
                value: Some(value),
                expiry_ms: 0,
                batch_end: false,
            })
            .collect();
        let versions = self.log.append_batch(&mut entries)?;
        self.loading.reserve(rows.len());
        for ((k, _), v) in rows.iter().zip(versions) {
            self.loading_bytes += v.entry_len() as u64;
            self.loading.push((IndexKey::from_slice(k), v));
        }
        Ok(())
    }

    /// Bytes a bulk load has logged into the chunk so far, as the chunk's
    /// live size will count them.
    pub fn loaded_bytes(&self) -> u64 {
        self.index.live_bytes() + self.loading_bytes
    }

    /// Builds the index of the rows [`Chunk::load_batch`] logged.
    pub fn finish_load(&mut self) {
        if !self.loading.is_empty() {
            self.index = ChunkIndex::from_sorted(std::mem::take(&mut self.loading));
            self.loading_bytes = 0;
        }
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

    /// Journaled changes in `(after, upto]`.
    pub fn changes_between(&self, after: u64, upto: u64) -> u64 {
        self.journal
            .as_ref()
            .map_or(0, |j| j.count_after(after).saturating_sub(j.count_after(upto)) as u64)
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

    /// Keys within `bounds` as reads of everything applied see them
    /// ([`ReadAt::Applied`]), counted in O(log n).
    pub fn count_applied(&self, bounds: KeyBounds<'_>) -> u64 {
        self.index.count_live(bounds)
    }

    /// The key at position `n` (0: the lowest) within `bounds`, as reads of
    /// everything applied see them, in O(log n); `Err(count)` when only
    /// `count` keys lie there.
    pub fn select_applied(&self, bounds: KeyBounds<'_>, n: u64) -> Result<Vec<u8>, u64> {
        self.index.select_live(bounds, n).map(<[u8]>::to_vec)
    }

    /// The children of the tuple `parent` in hashed order from hash `from`
    /// on, about `limit` of them, as reads of everything applied see them
    /// ([`super::hash_order`]).
    pub fn hashed_applied(
        &self,
        parent: &[u8],
        from: u64,
        limit: usize,
    ) -> super::hash_order::HashedPage {
        self.index.hashed_page(parent, from, limit)
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
        // Entry bytes: a little more than key and value, so a page ends
        // no later than `bytes_max` would end it.
        let mut bytes = 0usize;
        let mut wanted = Vec::new();
        for (key, v) in self.index.scan(bounds, seq, reverse) {
            if wanted.len() >= limit || (bytes >= bytes_max && !wanted.is_empty()) {
                out.stopped_at = Some(key.to_vec());
                break;
            }
            bytes += v.entry_len();
            wanted.push((key, v));
        }
        let values = self.log.read_many(&wanted)?;
        out.records = wanted
            .into_iter()
            .zip(values)
            .map(|((key, _), value)| Record { key: key.to_vec().into(), value: value.into() })
            .collect();
        Ok(out)
    }

    /// Whether enough of the log is garbage that compacting is worth it,
    /// or enough deleted keys sit in the index (see
    /// [`DEAD_KEYS_COMPACTION_MIN`]).
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        let log = self.log.total_bytes();
        let garbage = log >= min_bytes && log > 2 * self.index.live_bytes() + min_bytes / 2;
        let dead = self.index.dead_keys();
        garbage || dead > DEAD_KEYS_COMPACTION_MIN.max(self.index.live_records() / 8)
    }

    /// Registers a new job, refusing a second one while one runs.
    fn register_job(&mut self) -> Result<Arc<()>, ChunkError> {
        if self.job.strong_count() > 0 {
            return Err(ChunkError::Busy);
        }
        let token = Arc::new(());
        self.job = Arc::downgrade(&token);
        Ok(token)
    }

    fn rewrite_cursor(&self, pins: &[u64], stable: u64, token: Arc<()>) -> RewriteCursor {
        let end = self.log.written_end();
        RewriteCursor {
            chunk_id: self.meta.id,
            pins: pins.to_vec(),
            stable,
            prefix_end: end,
            key_cursor: None,
            keys_done: false,
            tail_from: end,
            catch_up_to: None,
            rounds: 0,
            done: false,
            _token: token,
        }
    }

    /// One step of a rewrite: copies into `sink`, from where `cur` is,
    /// about `budget` bytes: first, key by key, the retained versions of
    /// what the log held when the job began; then, in log order, every
    /// entry written since. Returns whether the job may finish.
    fn rewrite_step(
        &self,
        cur: &mut RewriteCursor,
        budget: usize,
        sink: &mut dyn FnMut(&EntryRef<'_>) -> Result<(), LogError>,
    ) -> Result<bool, ChunkError> {
        assert_eq!(cur.chunk_id, self.meta.id, "a job of another chunk");
        if cur.done {
            return Ok(true);
        }
        let budget = budget.max(1) as u64;
        let mut spent = 0u64;
        if !cur.keys_done {
            // Retention is decided per key when its key is visited, over the
            // versions before `prefix_end` only, with the pins and stable
            // seq of the job's start. That never drops what a reader needs
            // later: those versions do not change while the job runs (a
            // refused write out only cuts back bytes after the written end);
            // a version not kept is one that no pin of the start and no
            // snapshot at or above `stable` sees; pins taken later are at or
            // above the clock's compaction horizon, which is at least
            // `stable` (the clock hands out no pin below what compaction was
            // told), and `stable` only grows, so no later reader sees it
            // either. Versions after `prefix_end` are all copied below. What
            // is kept may become garbage meanwhile: the next compaction
            // drops it.
            let end = cur.prefix_end;
            let mut copier = self.log.copier();
            let mut last: Option<&[u8]> = None;
            let mut finished = true;
            for (key, kept) in self.index.retained_from(
                &cur.pins,
                cur.stable,
                cur.key_cursor.as_deref(),
                move |v| end.is_after(v),
            ) {
                if spent >= budget {
                    finished = false;
                    break;
                }
                for v in &kept {
                    let e = copier.entry(key, v)?;
                    sink(&e)?;
                    spent += v.entry_len() as u64;
                }
                // Walking a key costs something even when nothing of it is
                // kept, so steps over garbage end too.
                spent += key.len() as u64 + KEY_WALK_BYTES;
                last = Some(key);
            }
            if let Some(key) = last {
                cur.key_cursor = Some(key.to_vec());
            }
            if !finished {
                return Ok(false);
            }
            cur.keys_done = true;
            cur.key_cursor = None;
        }
        // Catch up with what was written meanwhile, so that what finishing
        // copies under the write lock is only what came after the last step.
        // The target is fixed per round, so a writer faster than the copy
        // cannot keep the job from ending: after a few rounds finishing
        // takes the rest.
        let target = *cur.catch_up_to.get_or_insert_with(|| self.log.written_end());
        let left = budget.saturating_sub(spent).max(1);
        cur.tail_from = self.log.visit_from(cur.tail_from, target, left, &mut *sink)?;
        if cur.tail_from != target {
            return Ok(false);
        }
        cur.catch_up_to = None;
        cur.rounds += 1;
        if self.log.bytes_after(cur.tail_from) <= budget || cur.rounds >= CATCH_UP_ROUNDS_MAX {
            cur.done = true;
        }
        Ok(cur.done)
    }

    /// Copies into `sink` every entry after `cur`'s place in the log,
    /// written or not, in log order: the part of a rewrite that needs the
    /// write lock.
    fn rewrite_tail(
        &self,
        cur: &RewriteCursor,
        sink: &mut dyn FnMut(&EntryRef<'_>) -> Result<(), LogError>,
    ) -> Result<(), ChunkError> {
        assert_eq!(cur.chunk_id, self.meta.id, "a job of another chunk");
        assert!(cur.done, "a rewrite finished before its steps were done");
        let end = self.log.written_end();
        self.log.visit_from(cur.tail_from, end, u64::MAX, &mut *sink)?;
        self.log.visit_unwritten(sink)?;
        Ok(())
    }

    /// Rewrites the log keeping only what `pins` and future snapshots at or
    /// above `stable` can see, in one go (begin, steps, finish): for tests
    /// and callers that hold the chunk exclusively anyway.
    pub fn compact(&mut self, pins: &[u64], stable: u64) -> Result<(), ChunkError> {
        let mut job = self.begin_compaction(pins, stable)?;
        while !self.compaction_step(&mut job, STEP_BUDGET_BYTES)? {}
        job.sync_bulk()?;
        self.finish_compaction(job)?;
        self.take_superseded().remove();
        Ok(())
    }

    /// What the last finished compaction superseded (old segment files and
    /// index), to be removed outside the lock ([`Superseded::remove`]).
    /// Brief; take it under the same write lock as the finish.
    pub fn take_superseded(&mut self) -> Superseded {
        std::mem::take(&mut self.superseded)
    }

    /// Starts a compaction that keeps what `pins` and future snapshots at or
    /// above `stable` can see. Brief (no fsync, no copy): call it under the
    /// cell's write lock. Records the log's written end; what lies before
    /// it is copied key by key by [`Chunk::compaction_step`], what comes
    /// after it in log order. Reserves the output's segment id above the
    /// active one (see [`BASE_ID_HEADROOM`]) and creates the output under
    /// its temporary name; dropping the job removes it.
    ///
    /// # Errors
    /// [`ChunkError::Busy`] while another compaction or split of this chunk
    /// runs; [`ChunkError::Log`] if the output cannot be created.
    pub fn begin_compaction(
        &mut self,
        pins: &[u64],
        stable: u64,
    ) -> Result<Compaction, ChunkError> {
        let token = self.register_job()?;
        // Left by a caller that did not take them: removed now, late.
        self.take_superseded().remove();
        let out = self.log.reserve_base(&token, self.index.last_seq())?;
        let copy = self.rewrite_cursor(pins, stable, token);
        Ok(Compaction { copy, out, index: ChunkIndex::new(), horizon: stable })
    }

    /// Copies about `budget_bytes` more of the compaction (at least one key)
    /// into its output. Call under the cell's read lock, released between
    /// calls so writers get in; [`STEP_BUDGET_BYTES`] keeps a step to a few
    /// milliseconds. Returns `true` once the job may finish; later calls
    /// do nothing.
    ///
    /// # Errors
    /// [`ChunkError::Log`] when reading the log or writing the output fails;
    /// the chunk is unharmed, drop the job.
    pub fn compaction_step(
        &self,
        job: &mut Compaction,
        budget_bytes: usize,
    ) -> Result<bool, ChunkError> {
        let Compaction { copy, out, index, .. } = job;
        self.rewrite_step(copy, budget_bytes, &mut |e| {
            index.apply(e.key, out.append(e)?);
            Ok(())
        })
    }

    /// Puts a compaction whose steps are done in charge. Call under the
    /// cell's write lock; its time is bounded by what was logged since the
    /// last step (copied here, in log order, written or not), an fsync of
    /// the output (small after [`Compaction::sync_bulk`]), a rename and
    /// the manifest (three fsyncs in all). The old segments and index are
    /// left for the caller to remove outside the lock:
    /// [`Chunk::take_superseded`].
    ///
    /// Afterwards everything the chunk logged is durable: the entries not
    /// yet written or synced went into the fsynced output, so `durable_seq`
    /// is raised to `last_seq` (it never goes backwards) and a pending sync
    /// job has nothing left to do. The unsynced segments a sync job took
    /// before stay valid to fsync (they are unlinked only).
    ///
    /// # Errors
    /// [`ChunkError::Log`] before the output is renamed into place: the job
    /// is gone (its file removed) and the chunk is as it was. Once renamed
    /// the output is in charge; a failure after that (the manifest) is
    /// logged and left to recovery.
    pub fn finish_compaction(&mut self, job: Compaction) -> Result<(), ChunkError> {
        let Compaction { copy, mut out, mut index, horizon } = job;
        self.rewrite_tail(&copy, &mut |e| {
            index.apply(e.key, out.append(e)?);
            Ok(())
        })?;
        let last_seq = self.index.last_seq();
        index.bump_last_seq(last_seq);
        self.check_rewrite(&[&index])?;
        let id = out.id;
        if id <= self.log.active_segment() {
            return Err(self.rewrite_refused(format!(
                "the log rotated to segment {} past the compaction's {id}",
                self.log.active_segment()
            )));
        }
        out.finish_at(last_seq)?;
        let files = self.log.install_compacted(id)?;
        index.take_hash_order(&mut self.index);
        let old = std::mem::replace(&mut self.index, index);
        self.superseded = Superseded { files, index: Some(old) };
        self.written_seq = last_seq;
        self.durable_seq = self.durable_seq.max(last_seq);
        self.gc_horizon = self.gc_horizon.max(horizon);
        drop(copy);
        Ok(())
    }

    /// Every version the rewritten indexes hold must add up to what this
    /// chunk holds live: the newest version of every key is always copied
    /// (or is a tombstone with nothing kept below it). Cheap, and it keeps a
    /// rewrite that lost something from ever taking over.
    fn check_rewrite(&self, outputs: &[&ChunkIndex]) -> Result<(), ChunkError> {
        let records: u64 = outputs.iter().map(|i| i.live_records()).sum();
        let bytes: u64 = outputs.iter().map(|i| i.live_bytes()).sum();
        if (records, bytes) != (self.index.live_records(), self.index.live_bytes()) {
            return Err(self.rewrite_refused(format!(
                "the rewrite holds {records} live records of {bytes} bytes, the chunk {} of {}",
                self.index.live_records(),
                self.index.live_bytes()
            )));
        }
        Ok(())
    }

    fn rewrite_refused(&self, reason: String) -> ChunkError {
        tracing::error!(chunk = self.meta.id, %reason, "rewrite refused");
        ChunkError::RewriteRefused(reason)
    }

    /// The slow half of a compaction for a chunk that takes no writes until
    /// [`Chunk::install_compaction`]: all steps and the bulk fsync, under
    /// the read lock: the one-pass rewrite that the steps replaced, kept as
    /// the baseline the lock-time measurement compares them with.
    pub fn prepare_compaction(&self, pins: &[u64], stable: u64) -> Result<Compaction, ChunkError> {
        assert_eq!(self.durable_seq, self.index.last_seq(), "compaction with undurable writes");
        if self.job.strong_count() > 0 {
            return Err(ChunkError::Busy);
        }
        let id = self
            .log
            .active_segment()
            .checked_add(BASE_ID_HEADROOM)
            .ok_or_else(|| self.rewrite_refused("segment ids are exhausted".into()))?;
        let out = self.log.base_writer(id, self.index.last_seq())?;
        let copy = self.rewrite_cursor(pins, stable, Arc::new(()));
        let mut job = Compaction { copy, out, index: ChunkIndex::new(), horizon: stable };
        while !self.compaction_step(&mut job, STEP_BUDGET_BYTES)? {}
        job.sync_bulk()?;
        Ok(job)
    }

    /// The quick half of [`Chunk::prepare_compaction`]:
    /// [`Chunk::finish_compaction`], and the superseded segments removed.
    pub fn install_compaction(&mut self, c: Compaction) -> Result<(), ChunkError> {
        self.finish_compaction(c)?;
        self.take_superseded().remove();
        Ok(())
    }

    /// Writes two new chunks holding this chunk's retained versions below and
    /// from `split_key`, in one go (begin, steps, finish). This chunk is left
    /// untouched; the caller swaps the catalog over and then destroys it.
    /// Takes `&self` for a caller that holds the chunk exclusively or takes
    /// no writes meanwhile (tests).
    pub fn split(
        &self,
        split_key: &[u8],
        pins: &[u64],
        stable: u64,
        lower: (ChunkMeta, &Path),
        upper: (ChunkMeta, &Path),
        segment_size_max_bytes: u64,
    ) -> Result<(Chunk, Chunk), ChunkError> {
        let mut job = self.new_split(
            split_key,
            pins,
            stable,
            lower,
            upper,
            segment_size_max_bytes,
            Arc::new(()),
        )?;
        while !self.split_step(&mut job, STEP_BUDGET_BYTES)? {}
        job.sync_bulk()?;
        self.complete_split(job)
    }

    /// Starts splitting this chunk into two new ones, `lower` holding the
    /// keys below `split_key` and `upper` the rest, each in a new directory
    /// (with its descriptor) and a first segment under a temporary name.
    /// Call under the cell's write lock; it creates two directories and a
    /// file in each, with no fsync (their descriptors are written by
    /// [`Split::sync_bulk`] or the finish), and copies nothing. Like a
    /// compaction, what the log holds now is copied key by key by
    /// [`Chunk::split_step`], and what comes after it in log order.
    /// Dropping the job removes both directories.
    ///
    /// # Errors
    /// [`ChunkError::Busy`] while another compaction or split of this chunk
    /// runs; [`ChunkError::Log`] if a directory or file cannot be made
    /// (what this call made is removed).
    #[allow(clippy::too_many_arguments)]
    pub fn begin_split(
        &mut self,
        split_key: &[u8],
        pins: &[u64],
        stable: u64,
        lower: (ChunkMeta, &Path),
        upper: (ChunkMeta, &Path),
        segment_size_max_bytes: u64,
    ) -> Result<Split, ChunkError> {
        let token = self.register_job()?;
        self.new_split(split_key, pins, stable, lower, upper, segment_size_max_bytes, token)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_split(
        &self,
        split_key: &[u8],
        pins: &[u64],
        stable: u64,
        lower: (ChunkMeta, &Path),
        upper: (ChunkMeta, &Path),
        segment_size_max_bytes: u64,
        token: Arc<()>,
    ) -> Result<Split, ChunkError> {
        assert!(self.meta.contains(split_key) && split_key != self.meta.start.as_slice());
        let mut job = Split {
            copy: self.rewrite_cursor(pins, stable, token),
            split_key: split_key.to_vec(),
            halves: Vec::with_capacity(2),
            segment_size_max_bytes,
            horizon: self.gc_horizon.max(stable),
            created: Vec::with_capacity(2),
            descriptors_written: false,
        };
        for (meta, dir) in [lower, upper] {
            // No fsync here: the directories and descriptors are made
            // durable by `sync_bulk` (no lock) or else by the finish.
            create_chunk_dir(dir)?;
            job.created.push(dir.to_owned());
            let descriptor = ChunkDescriptor { chunk: meta.clone(), ..self.descriptor() };
            let out = ChunkLog::first_segment_writer(dir, self.index.last_seq())?;
            job.halves.push(Half {
                meta,
                descriptor,
                dir: dir.to_owned(),
                out: Some(out),
                index: ChunkIndex::new(),
            });
        }
        Ok(job)
    }

    /// Copies about `budget_bytes` more of the split (at least one key) into
    /// the halves. Same rules as [`Chunk::compaction_step`]: under the read
    /// lock, `true` once the job may finish.
    pub fn split_step(&self, job: &mut Split, budget_bytes: usize) -> Result<bool, ChunkError> {
        let Split { copy, split_key, halves, .. } = job;
        self.rewrite_step(copy, budget_bytes, &mut |e| Split::take(halves, split_key, e))
    }

    /// Finishes a split whose steps are done: copies what was logged since
    /// the last step (written or not) into the halves by key, fsyncs both
    /// (segment, manifest, directory and its parent) and returns them, each
    /// with everything durable (`durable_seq == last_seq`) and its part of
    /// the change journal. Call under the cell's write lock, and keep it
    /// until the catalog names the halves and this chunk takes no more
    /// writes: a write applied here afterwards is in neither half. This
    /// chunk is left untouched (its own pending sync job stays valid); the
    /// caller swaps the catalog over, then destroys it.
    ///
    /// # Errors
    /// [`ChunkError::Log`]: both directories are removed, this chunk is
    /// unharmed.
    pub fn finish_split(&mut self, job: Split) -> Result<(Chunk, Chunk), ChunkError> {
        self.complete_split(job)
    }

    fn complete_split(&self, mut job: Split) -> Result<(Chunk, Chunk), ChunkError> {
        {
            let Split { copy, split_key, halves, .. } = &mut job;
            self.rewrite_tail(copy, &mut |e| Split::take(halves, split_key, e))?;
        }
        let last_seq = self.index.last_seq();
        for half in &mut job.halves {
            half.index.bump_last_seq(last_seq);
        }
        self.check_rewrite(&[&job.halves[0].index, &job.halves[1].index])?;
        job.write_descriptors()?;
        let mut journals = match &self.journal {
            Some(j) => {
                let (lower, upper) = j.split(&job.split_key);
                [Some(lower), Some(upper)]
            }
            None => [None, None],
        }
        .into_iter();
        let mut made = Vec::with_capacity(2);
        for half in &mut job.halves {
            half.out.take().expect("finished once").finish_at(last_seq)?;
            let log = ChunkLog::publish_first(&half.dir, job.segment_size_max_bytes)?;
            made.push(Chunk {
                meta: half.meta.clone(),
                range_name: self.range_name.clone(),
                options: self.options,
                index: std::mem::take(&mut half.index),
                log,
                durable_seq: last_seq,
                written_seq: last_seq,
                gc_horizon: job.horizon,
                journal: journals.next().expect("two halves"),
                job: Weak::new(),
                superseded: Superseded::default(),
                loading: Vec::new(),
                loading_bytes: 0,
            });
        }
        // Both halves are complete: their directories are theirs now.
        job.created.clear();
        let upper = made.pop().expect("two halves");
        let lower = made.pop().expect("two halves");
        Ok((lower, upper))
    }

    /// Begins merging this chunk with `upper`, the chunk of its range
    /// right above it, into a new chunk `merged` (spanning both) in its
    /// directory: keeps what `pins` and snapshots at or above `stable` can
    /// see, as a compaction does. Brief: call it under both cells' write
    /// locks (this chunk's first: merges lock in key order). The copy is
    /// done by [`Chunk::merge_step`], the rest by [`Chunk::finish_merge`].
    ///
    /// # Errors
    /// [`ChunkError::Busy`] while either chunk runs another job;
    /// [`ChunkError::Log`] if the new directory cannot be made.
    pub fn begin_merge(
        &mut self,
        upper: &mut Chunk,
        pins: &[u64],
        stable: u64,
        merged: (ChunkMeta, &Path),
        segment_size_max_bytes: u64,
    ) -> Result<Merge, ChunkError> {
        assert_eq!(self.meta.range_id, upper.meta.range_id, "a merge within one range");
        assert_eq!(self.meta.end.as_deref(), Some(upper.meta.start.as_slice()), "neighbours");
        let token = self.register_job()?;
        let upper_token = upper.register_job()?;
        let (meta, dir) = merged;
        let mut into = Split {
            copy: self.rewrite_cursor(pins, stable, token),
            split_key: Vec::new(),
            halves: Vec::with_capacity(1),
            segment_size_max_bytes,
            horizon: self.gc_horizon.max(upper.gc_horizon).max(stable),
            created: Vec::with_capacity(1),
            descriptors_written: false,
        };
        create_chunk_dir(dir)?;
        into.created.push(dir.to_owned());
        let last_seq = self.index.last_seq().max(upper.index.last_seq());
        let out = ChunkLog::first_segment_writer(dir, last_seq)?;
        let descriptor = ChunkDescriptor { chunk: meta.clone(), ..self.descriptor() };
        into.halves.push(Half {
            meta,
            descriptor,
            dir: dir.to_owned(),
            out: Some(out),
            index: ChunkIndex::new(),
        });
        Ok(Merge { into, upper_copy: upper.rewrite_cursor(pins, stable, upper_token) })
    }

    /// Copies about `budget_bytes` more of a merge (this chunk's part, then
    /// `upper`'s). Under both cells' read locks; `true` once the job may
    /// finish.
    pub fn merge_step(
        &self,
        upper: &Chunk,
        job: &mut Merge,
        budget_bytes: usize,
    ) -> Result<bool, ChunkError> {
        let Merge { into, upper_copy } = job;
        let Split { copy, halves, .. } = into;
        if !self.rewrite_step(copy, budget_bytes, &mut |e| Merge::take(halves, e))? {
            return Ok(false);
        }
        upper.rewrite_step(upper_copy, budget_bytes, &mut |e| Merge::take(halves, e))
    }

    /// Finishes a merge whose steps are done: copies what both chunks
    /// logged since (written or not), fsyncs the merged chunk and returns
    /// it with everything durable and both change journals. Call under both
    /// cells' write locks, kept until the catalog names the merged chunk
    /// and neither chunk takes more writes. Both chunks are left untouched;
    /// the caller swaps the catalog over, then destroys them.
    ///
    /// # Errors
    /// [`ChunkError::Log`], or [`ChunkError::RewriteRefused`] when the copy
    /// does not hold what both chunks hold: the new directory is removed,
    /// both chunks are unharmed.
    pub fn finish_merge(&self, upper: &Chunk, mut job: Merge) -> Result<Chunk, ChunkError> {
        {
            let Merge { into, upper_copy } = &mut job;
            let Split { copy, halves, .. } = into;
            self.rewrite_tail(copy, &mut |e| Merge::take(halves, e))?;
            upper.rewrite_tail(upper_copy, &mut |e| Merge::take(halves, e))?;
        }
        let last_seq = self.index.last_seq().max(upper.index.last_seq());
        let into = &mut job.into;
        let merged = &mut into.halves[0];
        merged.index.bump_last_seq(last_seq);
        let want = (
            self.index.live_records() + upper.index.live_records(),
            self.index.live_bytes() + upper.index.live_bytes(),
        );
        let got = (merged.index.live_records(), merged.index.live_bytes());
        if got != want {
            return Err(self.rewrite_refused(format!(
                "the merge holds {} live records of {} bytes, the two chunks {} of {}",
                got.0, got.1, want.0, want.1
            )));
        }
        into.write_descriptors()?;
        let journal = match (&self.journal, &upper.journal) {
            (Some(lower), Some(upper)) => Some(ChangeJournal::merged(lower, upper)),
            // One keeps none (a watch request it missed): the merged chunk
            // keeps none either, and a view that asks has it watch again.
            _ => None,
        };
        let merged = &mut into.halves[0];
        merged.out.take().expect("finished once").finish_at(last_seq)?;
        let log = ChunkLog::publish_first(&merged.dir, into.segment_size_max_bytes)?;
        let chunk = Chunk {
            meta: merged.meta.clone(),
            range_name: self.range_name.clone(),
            options: self.options,
            index: std::mem::take(&mut merged.index),
            log,
            durable_seq: last_seq,
            written_seq: last_seq,
            gc_horizon: into.horizon,
            journal,
            job: Weak::new(),
            superseded: Superseded::default(),
            loading: Vec::new(),
            loading_bytes: 0,
        };
        // Complete: the directory is the merged chunk's now.
        into.created.clear();
        Ok(chunk)
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
