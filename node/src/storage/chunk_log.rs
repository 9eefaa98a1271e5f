//! The segmented, append-only log of one chunk, on disk.
//!
//! A chunk directory holds segment files `NNNNNNNNNN.seg`, each a 32-byte
//! header followed by entries (see [`super::entry`]). Only the newest segment
//! is appended to; older ones are sealed and never change again. Compaction
//! and splits write a whole new segment under a temporary name, fsync it and
//! rename it into place with the *base* flag, which means "every segment
//! with a lower id is garbage": a crash at any point leaves either the old
//! segments or the new one in charge, never a mix.
//!
//! A `MANIFEST` file ([`super::manifest`]) names the base segment and the
//! newest one; recovery checks that every segment it names is there, so a
//! deleted segment file is reported instead of silently losing its records.
//!
//! Only the newest segment can end in a torn write. Recovery cuts a tail
//! only if it is what a process dying mid-append leaves: an entry that ends
//! past the end of the file, or bytes that are zero to the end of the file.
//! A complete entry whose checksum fails is damage, reported with its file
//! and offset, and the file is left as it is.
//!
//! A compaction may run while the log takes writes: it reserves its base
//! segment's id a little above the active one ([`ChunkLog::reserve_base`];
//! ids jump there, never into the range the manifest names), copies what
//! lies before [`ChunkLog::written_end`] as it was when it began, and then
//! the entries after it ([`ChunkLog::visit_from`], then
//! [`ChunkLog::visit_unwritten`]), in log order.
//!
//! Writes are two-phase so the chunk actor can group-commit: [`ChunkLog::append_batch`]
//! encodes entries into memory and returns their locations, [`ChunkLog::write_out`]
//! hands everything encoded so far to the kernel in one write per segment,
//! and [`SyncJob`] makes it durable on another thread.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use super::chunk_index::Version;
use super::entry::{decode_entry, encode_entry, entry_size, peek_entry_len, EntryError, EntryRef};
pub use super::manifest::write_file_durably;
use super::manifest::{plan_legacy, plan_segments, Manifest, MANIFEST_FILE};

const SEGMENT_MAGIC: [u8; 8] = *b"MTSEGMNT";
const SEGMENT_FORMAT: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Size of the pieces a large batch is written in, as it is encoded (see
/// [`ChunkLog::append_batch`]); the unwritten buffer gives back capacity
/// beyond twice this once written out, so a chunk holds no memory for the
/// largest batch it ever took.
const UNWRITTEN_KEEP_BYTES: usize = 1 << 20;
const FLAG_BASE: u32 = 1;
pub(super) const SEGMENT_SUFFIX: &str = ".seg";
pub(super) const TMP_SUFFIX: &str = ".tmp";
/// Data found on disk that the log cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A write of new entries failed before any fsync; the log was cut back
    /// to its last good offset, so nothing of them is in it and the log can
    /// take the next batch (e.g. once the disk has room again).
    #[error("write to {path} failed, nothing of it was kept: {source}")]
    WriteRefused { path: PathBuf, source: io::Error },
    #[error("corrupt segment {path} at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// An entry over the size limits, refused before anything of its batch
    /// was written.
    #[error("refused to log an entry: {0}")]
    OverLimits(#[from] EntryError),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// What recovery found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub entries: u64,
    /// Bytes cut from the end of the last segment: a write torn by a crash.
    pub truncated_bytes: u64,
    /// Segments removed because a compacted base segment superseded them.
    pub superseded_segments: usize,
    /// The highest seq the log had when its base segment was written.
    pub base_last_seq: u64,
    /// The log had no manifest (written before manifests existed); one was
    /// written from the segments found.
    pub manifest_created: bool,
}

struct Segment {
    /// Shared with sync jobs, which fsync it off the chunk's lock (an `Arc`
    /// rather than a dup'd descriptor: no system calls per round).
    file: std::sync::Arc<File>,
    path: PathBuf,
    /// Bytes handed to the kernel, header included.
    written_len: u64,
}

/// One segment of a log as it was at one moment: the first `len` bytes of
/// `file` (its header included). Those bytes never change while the file
/// is open: the log only appends, a refused write cuts back only bytes
/// written after them, and a compaction that supersedes the segment
/// unlinks the file, which stays readable through `file`. Bytes that were
/// still in the log's unwritten buffer reach the file when the group
/// commit writes them out (or never, if that write fails and the chunk
/// stops): a reader past the file's end waits for them.
#[derive(Debug, Clone)]
pub struct SegmentImage {
    pub id: u32,
    pub file: Arc<File>,
    pub len: u64,
    pub path: PathBuf,
}

pub struct ChunkLog {
    dir: PathBuf,
    segments: BTreeMap<u32, Segment>,
    /// Id of the segment appended to; always the highest.
    active: u32,
    /// Encoded entries not yet written, all for the active segment.
    unwritten: Vec<u8>,
    /// Segments that got bytes since the last sync.
    unsynced: Vec<u32>,
    /// A segment file was created or removed since the last sync, so the
    /// directory itself must be fsynced for it to survive a crash.
    dir_dirty: bool,
    segment_size_max_bytes: u64,
    /// The id a running compaction will publish its base segment under,
    /// while the job (the `Weak`'s target) is alive: rotation stops below
    /// it, so the base stays above every segment it supersedes.
    reserved_base: Option<(u32, Weak<()>)>,
    /// Test hook: the next write out writes half its bytes and fails.
    #[cfg(test)]
    pub(crate) fail_next_write: bool,
}

/// A place in the log: a segment and a byte offset in it (header
/// included). Entries are in log order by `(segment, offset)`, which is
/// also their seq order, per key and overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos {
    pub segment: u32,
    pub offset: u64,
}

impl LogPos {
    /// Whether `v` lies before this place.
    pub fn is_after(&self, v: &Version) -> bool {
        (v.segment, v.offset) < (self.segment, self.offset)
    }
}

/// How many segment ids a compaction reserves above the active one: the
/// log may rotate this many times less one while the compaction runs
/// (after that the active segment grows past its size until it ends).
/// Ids are u32 and a compaction spends at most this many, so a chunk can
/// be compacted some 2^28 times.
pub const BASE_ID_HEADROOM: u32 = 16;

/// Bytes this process wrote to chunk log files: new writes, and the
/// copies compactions, splits and merges make (`/metrics`). One node runs
/// per process, so it is the node's figure; process-wide because a log
/// has no handle on its node.
pub static WRITTEN_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A durable-making job that runs off the chunk's lock: fsync of the
/// segments written since the last job, and of the directory if needed.
pub struct SyncJob {
    files: Vec<std::sync::Arc<File>>,
    dir: Option<PathBuf>,
}

impl SyncJob {
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Files and directories the job syncs.
    pub fn handles(&self) -> usize {
        self.files.len() + usize::from(self.dir.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(segment_file_name(id))
}

/// The name of segment `id`'s file in a chunk directory.
pub fn segment_file_name(id: u32) -> String {
    format!("{id:010}{SEGMENT_SUFFIX}")
}

/// Segment header: magic, format, flags, id, and for a base segment the
/// highest seq the log had when it was rewritten, then a CRC of all that.
pub(super) fn encode_header(
    id: u32,
    base: bool,
    last_seq: u64,
) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&(if base { FLAG_BASE } else { 0 }).to_le_bytes());
    h[16..20].copy_from_slice(&id.to_le_bytes());
    h[20..28].copy_from_slice(&last_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Returns the base segment's last seq (`None` for a plain segment).
pub fn check_header(h: &[u8], id: u32) -> Result<Option<u64>, String> {
    if h.len() < SEGMENT_HEADER_BYTES as usize {
        return Err("segment shorter than its header".into());
    }
    let crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    if h[..8] != SEGMENT_MAGIC || crc32c::crc32c(&h[..28]) != crc {
        return Err("bad segment header".into());
    }
    let format = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if format != SEGMENT_FORMAT {
        return Err(format!("unknown segment format {format}"));
    }
    let stored_id = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    if stored_id != id {
        return Err(format!("header names segment {stored_id}"));
    }
    let base = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) & FLAG_BASE != 0;
    let mut last_seq = [0u8; 8];
    last_seq.copy_from_slice(&h[20..28]);
    Ok(base.then_some(u64::from_le_bytes(last_seq)))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Exchanges the paths `a` and `b` (two directories on one file system) in
/// one atomic rename (`renameat2` with `RENAME_EXCHANGE`, Linux 3.15+):
/// after a crash either both are as they were or both are exchanged.
/// Neither rename is made durable here: the caller syncs the parents.
///
/// Errors: the file system cannot exchange (`EINVAL`), the paths are on
/// different file systems (`EXDEV`), either is missing; nothing changed.
pub fn exchange_dirs(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Creates a new chunk's directory. An existing directory is an error,
/// never reused: it may hold another chunk's data.
pub fn create_chunk_dir(dir: &Path) -> Result<(), LogError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::create_dir(dir).map_err(io_err(dir))
}

fn staged_path(dir: &Path, id: u32) -> PathBuf {
    segment_path(dir, id).with_extension(&TMP_SUFFIX[1..])
}

/// A base segment (a compaction's or a split's output) being written, in
/// one pass, under its temporary name. Until it is published (renamed),
/// recovery ignores (and removes) it.
pub struct SegmentWriter {
    path: PathBuf,
    file: std::io::BufWriter<File>,
    /// The segment's id, which versions pointing into it carry.
    pub id: u32,
    /// Bytes written so far, header included: the next entry's offset.
    offset: u64,
    scratch: Vec<u8>,
    /// Set by [`SegmentWriter::finish`]; a writer dropped before that
    /// (a rewrite that failed, e.g. on a full disk) removes its file, which
    /// nothing refers to yet.
    finished: bool,
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl SegmentWriter {
    fn new(dir: &Path, id: u32, last_seq: u64) -> Result<Self, LogError> {
        let path = staged_path(dir, id);
        // Never another job's file: two writers on one staged segment
        // would interleave their bytes.
        let file =
            OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        let mut file = std::io::BufWriter::with_capacity(1024 * 1024, file);
        file.write_all(&encode_header(id, true, last_seq)).map_err(io_err(&path))?;
        Ok(SegmentWriter {
            path,
            file,
            id,
            offset: SEGMENT_HEADER_BYTES,
            scratch: Vec::new(),
            finished: false,
        })
    }

    /// Appends one entry as a batch of its own; returns its version.
    pub fn append(&mut self, e: &EntryRef<'_>) -> Result<Version, LogError> {
        self.scratch.clear();
        encode_entry(&mut self.scratch, &EntryRef { batch_end: true, ..*e })?;
        self.file.write_all(&self.scratch).map_err(io_err(&self.path))?;
        let v = Version::new(e.seq, self.id, self.offset, self.scratch.len(), e.value.is_none());
        self.offset += self.scratch.len() as u64;
        Ok(v)
    }

    /// Flushes and fsyncs the segment (still under its temporary name).
    pub fn finish(mut self) -> Result<(), LogError> {
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.get_ref().sync_all().map_err(io_err(&self.path))?;
        self.finished = true;
        Ok(())
    }

    /// Like [`SegmentWriter::finish`], first recording `last_seq` in the
    /// header: a rewrite that went on while the log took writes ends at a
    /// higher seq than it started with.
    pub fn finish_at(mut self, last_seq: u64) -> Result<(), LogError> {
        self.file.flush().map_err(io_err(&self.path))?;
        let header = encode_header(self.id, true, last_seq);
        self.file.get_ref().write_all_at(&header, 0).map_err(io_err(&self.path))?;
        self.finish()
    }

    /// Flushes and fdatasyncs what was written so far, so that the fsync of
    /// [`SegmentWriter::finish`] has little left to do.
    pub fn sync_bulk(&mut self) -> Result<(), LogError> {
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }

    /// Bytes written so far, header included.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }
}

/// Removes segment files a compaction superseded (see
/// [`ChunkLog::install_compacted`]); a failure is logged, and recovery
/// removes what is left at the next start.
pub fn remove_superseded(files: Vec<PathBuf>) {
    for path in files {
        match fs::remove_file(&path) {
            Ok(()) => {}
            // The chunk was destroyed meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "cannot remove a superseded segment; the next start does");
            }
        }
    }
}

/// Renames a staged segment into place, durably: from here on it is the
/// base of the log.
fn publish_staged(dir: &Path, id: u32) -> Result<(), LogError> {
    let path = segment_path(dir, id);
    fs::rename(staged_path(dir, id), &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

/// A segment file's bytes as recovery reads them: mapped read-only, so
/// replaying a log reads the page cache in place instead of copying every
/// byte into fresh memory (which, zeroed first, cost more than the replay).
enum SegmentBytes {
    Mapped(memmap2::Mmap),
    /// A file of no bytes (a map of none is refused on some systems).
    Empty,
}

impl SegmentBytes {
    fn map(path: &Path) -> Result<Self, LogError> {
        let file = File::open(path).map_err(io_err(path))?;
        if file.metadata().map_err(io_err(path))?.len() == 0 {
            return Ok(SegmentBytes::Empty);
        }
        // SAFETY: while a log is opened nothing else writes or truncates its
        // segment files (the chunk is not open anywhere yet); recovery cuts
        // a torn tail only after the last read of those bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
        Ok(SegmentBytes::Mapped(map))
    }
}

impl AsRef<[u8]> for SegmentBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            SegmentBytes::Mapped(map) => map,
            SegmentBytes::Empty => &[],
        }
    }
}

impl ChunkLog {
    /// Creates a log in a new directory whose first segment holds `body`
    /// (already encoded entries, possibly none), durably.
    /// The directory must exist (see [`create_chunk_dir`]).
    pub fn create(dir: &Path, segment_size_max_bytes: u64) -> Result<Self, LogError> {
        SegmentWriter::new(dir, 1, 0)?.finish()?;
        Self::publish_new(dir, segment_size_max_bytes)
    }

    /// Where a new chunk's first segment is written (with [`SegmentWriter`])
    /// before [`ChunkLog::publish_new`] makes it the chunk's log. The
    /// directory must exist (see [`create_chunk_dir`]).
    pub fn first_segment_writer(dir: &Path, last_seq: u64) -> Result<SegmentWriter, LogError> {
        SegmentWriter::new(dir, 1, last_seq)
    }

    /// Puts a new chunk's finished first segment in place and opens the log.
    pub fn publish_new(dir: &Path, segment_size_max_bytes: u64) -> Result<Self, LogError> {
        Self::write_first_manifest(dir)?;
        Self::publish_first(dir, segment_size_max_bytes)
    }

    /// Writes a new chunk's manifest (naming its first segment), durably.
    /// Safe before the segment is in place: a directory no catalog names
    /// yet is not read as a chunk.
    pub fn write_first_manifest(dir: &Path) -> Result<(), LogError> {
        Manifest { first: 1, last: 1 }.write(dir)
    }

    /// [`ChunkLog::publish_new`] for a directory whose manifest is written.
    pub fn publish_first(dir: &Path, segment_size_max_bytes: u64) -> Result<Self, LogError> {
        publish_staged(dir, 1)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(io_err(parent))?;
        }
        let mut log = Self::empty(dir, segment_size_max_bytes);
        log.add_segment(1)?;
        Ok(log)
    }

    fn empty(dir: &Path, segment_size_max_bytes: u64) -> Self {
        ChunkLog {
            dir: dir.to_owned(),
            segments: BTreeMap::new(),
            active: 0,
            unwritten: Vec::new(),
            unsynced: Vec::new(),
            dir_dirty: false,
            segment_size_max_bytes,
            reserved_base: None,
            #[cfg(test)]
            fail_next_write: false,
        }
    }

    fn add_segment(&mut self, id: u32) -> Result<(), LogError> {
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
        let written_len = file.metadata().map_err(io_err(&path))?.len();
        self.segments.insert(id, Segment { file: std::sync::Arc::new(file), path, written_len });
        self.active = self.active.max(id);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follows the log's directory to `dir`, where it was renamed (its
    /// files stay open; only the paths the log keeps change).
    pub fn relocate(&mut self, dir: &Path) {
        self.dir = dir.to_owned();
        for (&id, segment) in &mut self.segments {
            segment.path = segment_path(dir, id);
        }
    }

    /// Every segment of the log with the length of its contents now,
    /// unwritten bytes included, lowest id first: read from offset 0 to
    /// `len`, they hold the log as it is (see [`SegmentImage`]).
    pub fn images(&self) -> Vec<SegmentImage> {
        self.segments
            .iter()
            .map(|(&id, s)| {
                let unwritten = if id == self.active { self.unwritten.len() as u64 } else { 0 };
                SegmentImage {
                    id,
                    file: s.file.clone(),
                    len: s.written_len + unwritten,
                    path: s.path.clone(),
                }
            })
            .collect()
    }

    /// Bytes the log takes on disk (and in its unwritten buffer).
    pub fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.written_len).sum::<u64>() + self.unwritten.len() as u64
    }

    /// Opens an existing log, calling `visit` for every entry of every
    /// complete batch in log order. A torn tail of the newest segment is
    /// cut off; any other damage, a missing segment included, is an error
    /// naming the file (and offset). A log without a manifest is an error
    /// when `manifest_required`, else one is written from what is found.
    pub fn open(
        dir: &Path,
        segment_size_max_bytes: u64,
        manifest_required: bool,
        mut visit: impl FnMut(&EntryRef<'_>, Version),
    ) -> Result<(Self, Recovery), LogError> {
        let mut files: BTreeMap<u32, SegmentBytes> = BTreeMap::new();
        for dirent in fs::read_dir(dir).map_err(io_err(dir))? {
            let dirent = dirent.map_err(io_err(dir))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // An interrupted compaction, split or manifest update: never
                // renamed into place, never used.
                fs::remove_file(dirent.path()).map_err(io_err(&dirent.path()))?;
            } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let id = stem.parse::<u32>().map_err(|_| LogError::Corrupt {
                    path: dirent.path(),
                    offset: 0,
                    reason: "unexpected segment file name".into(),
                })?;
                let path = segment_path(dir, id);
                files.insert(id, SegmentBytes::map(&path)?);
            }
        }
        let mut recovery = Recovery::default();
        let stored = Manifest::read(dir)?;
        let plan = match stored {
            Some(m) => plan_segments(m, &files),
            None if manifest_required => Err((None, "the chunk's manifest is missing".into())),
            None => plan_legacy(&files),
        }
        .map_err(|(id, reason)| LogError::Corrupt {
            path: id.map_or_else(|| dir.join(MANIFEST_FILE), |id| segment_path(dir, id)),
            offset: 0,
            reason,
        })?;
        // Only now that the segments in charge are known to be all there:
        // drop what they superseded, and what an interrupted rotation left.
        for &id in &plan.remove {
            let path = segment_path(dir, id);
            fs::remove_file(&path).map_err(io_err(&path))?;
            if id < plan.manifest.first {
                recovery.superseded_segments += 1;
            } else if let Some(bytes) = files.get(&id) {
                recovery.truncated_bytes += bytes.as_ref().len() as u64;
            }
        }
        if stored != Some(plan.manifest) {
            recovery.manifest_created = stored.is_none();
            plan.manifest.write(dir)?;
        } else if !plan.remove.is_empty() {
            sync_dir(dir).map_err(io_err(dir))?;
        }

        let mut log = Self::empty(dir, segment_size_max_bytes);
        let Manifest { first, last } = plan.manifest;
        for id in first..=last {
            let path = segment_path(dir, id);
            let bytes = files.get(&id).map(AsRef::as_ref).unwrap_or_default();
            if let Some(last_seq) = check_header(bytes, id).map_err(|reason| LogError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason,
            })? {
                recovery.base_last_seq = last_seq;
            }
            let replay = replay_segment(id, bytes, &mut visit, &mut recovery).map_err(
                |(offset, reason)| LogError::Corrupt { path: path.clone(), offset, reason },
            )?;
            let valid_len = replay.complete_len;
            if valid_len < bytes.len() as u64 {
                let damage = if id == last {
                    check_torn_tail(bytes, replay.stop_pos, replay.seq_max)
                } else {
                    Err(describe_damage(&bytes[valid_len as usize..]))
                };
                if let Err(reason) = damage {
                    return Err(LogError::Corrupt { path, offset: replay.stop_pos as u64, reason });
                }
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(valid_len).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                recovery.truncated_bytes += bytes.len() as u64 - valid_len;
            }
            log.add_segment(id)?;
            recovery.segments += 1;
        }
        Ok((log, recovery))
    }

    /// Encodes a batch (the last entry marked as its end) into the unwritten
    /// buffer and returns each entry's version, in order. Never splits a
    /// batch across segments.
    ///
    /// A batch larger than [`UNWRITTEN_KEEP_BYTES`] that finds nothing else
    /// unwritten (a snapshot's install) is handed to the kernel in pieces
    /// of about that size as it is encoded, so it never takes a buffer of
    /// its whole size: until its last entry is there the batch has no end
    /// mark, and recovery cuts it as a torn write. If a piece cannot be
    /// written, the file is cut back to where the batch began
    /// ([`LogError::WriteRefused`]).
    pub fn append_batch(&mut self, entries: &mut [EntryRef<'_>]) -> Result<Vec<Version>, LogError> {
        // Rotation waits until everything encoded is written out (at the
        // latest after the next group), so a failed write never spans two
        // segments.
        if self.active_len() >= self.segment_size_max_bytes && self.unwritten.is_empty() {
            self.rotate()?;
        }
        if let Some(last) = entries.last_mut() {
            last.batch_end = true;
        }
        let mut versions = Vec::with_capacity(entries.len());
        let size: usize =
            entries.iter().map(|e| entry_size(e.key.len(), e.value.map_or(0, <[u8]>::len))).sum();
        let batch_start = self.unwritten.len();
        let in_pieces = batch_start == 0 && size > UNWRITTEN_KEEP_BYTES;
        let batch_offset = self.active_len();
        let mut written = false;
        self.unwritten.reserve(size.min(2 * UNWRITTEN_KEEP_BYTES));
        for (i, e) in entries.iter().enumerate() {
            let offset = self.active_len();
            let before = self.unwritten.len();
            if let Err(refused) = encode_entry(&mut self.unwritten, e) {
                // All of the batch or none of it.
                self.unwritten.truncate(batch_start);
                if written {
                    self.cut_back(batch_offset)?;
                }
                return Err(refused.into());
            }
            let len = self.unwritten.len() - before;
            versions.push(Version::new(e.seq, self.active, offset, len, e.value.is_none()));
            if in_pieces && self.unwritten.len() >= UNWRITTEN_KEEP_BYTES && i + 1 < entries.len() {
                self.write_unwritten(batch_offset)?;
                written = true;
            }
        }
        Ok(versions)
    }

    /// Cuts the active segment back to `len` bytes, dropping what was
    /// written after it.
    fn cut_back(&mut self, len: u64) -> Result<(), LogError> {
        let seg = self.segments.get_mut(&self.active).expect("the active segment is open");
        seg.file.set_len(len).map_err(io_err(&seg.path))?;
        seg.written_len = len;
        Ok(())
    }

    fn active_len(&self) -> u64 {
        self.segments.get(&self.active).map_or(0, |s| s.written_len) + self.unwritten.len() as u64
    }

    /// Seals the active segment and starts a new one, durably, before the
    /// manifest names it (so recovery finds every segment the manifest
    /// names). If the new segment cannot be made or recorded (a full
    /// disk), the log goes on in the active one, a little past its size.
    fn rotate(&mut self) -> Result<(), LogError> {
        debug_assert!(self.unwritten.is_empty(), "rotation with unwritten entries");
        let id = self.active + 1;
        if let Some((base, job)) = &self.reserved_base {
            if job.strong_count() > 0 && id >= *base {
                // The running compaction's base must stay the highest id;
                // it takes this segment's entries in when it ends.
                return Ok(());
            }
        }
        let path = segment_path(&self.dir, id);
        let made = (|| {
            let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
            f.write_all(&encode_header(id, false, 0))?;
            f.sync_all()?;
            sync_dir(&self.dir)
        })();
        if let Err(e) = made {
            tracing::warn!(segment = %path.display(), error = %e, "cannot start a new segment; the current one grows");
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        let first = self.segments.keys().next().copied().unwrap_or(id);
        if let Err(e) = (Manifest { first, last: id }).write(&self.dir) {
            // Renamed into place after all (only the directory fsync
            // failed): the segment is in the log; the sync job fsyncs the
            // directory again and poisons the chunk if that fails.
            if matches!(Manifest::read(&self.dir), Ok(Some(m)) if m.last == id) {
                self.dir_dirty = true;
                return self.add_segment(id);
            }
            tracing::warn!(segment = %path.display(), error = %e, "cannot record a new segment; the current one grows");
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        self.add_segment(id)
    }

    /// Hands every encoded entry to the kernel: one positional write. If it
    /// fails (a full disk), the file is cut back to its last good length and
    /// the entries are dropped: the log is as it was before them, readable,
    /// and takes the next batch ([`LogError::WriteRefused`]).
    pub fn write_out(&mut self) -> Result<(), LogError> {
        let good = self.segments.get(&self.active).map_or(0, |s| s.written_len);
        self.write_unwritten(good)
    }

    /// [`Self::write_out`], cutting the file back to `good` bytes on failure.
    fn write_unwritten(&mut self, good: u64) -> Result<(), LogError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        let fail = std::mem::take(&mut self.fail_next_write);
        let seg = self.segments.get_mut(&self.active).expect("the active segment is open");
        let written = seg.file.write_all_at(&self.unwritten, seg.written_len);
        #[cfg(test)]
        let written = match fail {
            true => seg
                .file
                .write_all_at(&self.unwritten[..self.unwritten.len() / 2], seg.written_len)
                .and(Err(io::Error::from_raw_os_error(28))),
            false => written,
        };
        if let Err(source) = written {
            self.unwritten.clear();
            let path = seg.path.clone();
            self.cut_back(good)?;
            return Err(LogError::WriteRefused { path, source });
        }
        seg.written_len += self.unwritten.len() as u64;
        WRITTEN_BYTES.fetch_add(self.unwritten.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.unwritten.clear();
        if self.unwritten.capacity() > 2 * UNWRITTEN_KEEP_BYTES {
            // One large batch does not hold its memory for the chunk's life.
            self.unwritten = Vec::new();
        }
        if self.unsynced.last() != Some(&self.active) {
            self.unsynced.push(self.active);
        }
        Ok(())
    }

    /// Everything written so far, as a job that makes it durable.
    pub fn take_sync_job(&mut self) -> Result<SyncJob, LogError> {
        let mut files = Vec::with_capacity(self.unsynced.len());
        for id in self.unsynced.drain(..) {
            if let Some(seg) = self.segments.get(&id) {
                files.push(seg.file.clone());
            }
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(SyncJob { files, dir })
    }

    /// Reads back one entry and verifies it: checksum, and that it is the
    /// entry the version names.
    pub fn read(&self, key: &[u8], v: &Version) -> Result<Vec<u8>, LogError> {
        let seg = self.segment_of(v)?;
        let len = v.entry_len();
        let mut buf;
        let bytes: &[u8] = if v.offset >= seg.written_len {
            let start = (v.offset - seg.written_len) as usize;
            self.unwritten.get(start..start + len).ok_or_else(|| LogError::Corrupt {
                path: seg.path.clone(),
                offset: v.offset,
                reason: "index points past the end of the log".into(),
            })?
        } else {
            buf = vec![0u8; len];
            seg.file.read_exact_at(&mut buf, v.offset).map_err(io_err(&seg.path))?;
            &buf
        };
        value_of(seg, key, v, bytes)
    }

    /// The values of `wanted` (each as [`ChunkLog::read`]), in order.
    /// Entries that lie end to end in a segment's written part are read
    /// with one `pread` of up to [`READ_SPAN_MAX_BYTES`]: a compacted
    /// chunk's entries are in key order, so a scan reads it in spans.
    pub fn read_many(&self, wanted: &[(&[u8], Version)]) -> Result<Vec<Vec<u8>>, LogError> {
        let mut out = Vec::with_capacity(wanted.len());
        let mut buf = Vec::new();
        let mut i = 0;
        while i < wanted.len() {
            let (key, v) = &wanted[i];
            let seg = self.segment_of(v)?;
            let mut end = v.offset + v.entry_len() as u64;
            if end > seg.written_len {
                out.push(self.read(key, v)?);
                i += 1;
                continue;
            }
            // The entries after `i` that continue the span.
            let mut j = i + 1;
            while let Some((_, w)) = wanted.get(j) {
                let next = end + w.entry_len() as u64;
                if w.segment != v.segment
                    || w.offset != end
                    || next > seg.written_len
                    || next - v.offset > READ_SPAN_MAX_BYTES as u64
                {
                    break;
                }
                end = next;
                j += 1;
            }
            buf.clear();
            buf.resize((end - v.offset) as usize, 0);
            seg.file.read_exact_at(&mut buf, v.offset).map_err(io_err(&seg.path))?;
            for (key, w) in &wanted[i..j] {
                let at = (w.offset - v.offset) as usize;
                out.push(value_of(seg, key, w, &buf[at..at + w.entry_len()])?);
            }
            i = j;
        }
        Ok(out)
    }

    fn segment_of(&self, v: &Version) -> Result<&Segment, LogError> {
        self.segments.get(&v.segment).ok_or_else(|| LogError::Corrupt {
            path: segment_path(&self.dir, v.segment),
            offset: v.offset,
            reason: "index points at a missing segment".into(),
        })
    }

    /// A reader that copies entries out of whole segments read sequentially,
    /// for rewrites that touch most of the log.
    pub fn copier(&self) -> LogCopier<'_> {
        LogCopier { log: self, images: BTreeMap::new() }
    }

    /// The id the next new segment will get.
    pub fn next_segment_id(&self) -> u32 {
        self.active + 1
    }

    /// Reserves the id of the base segment a compaction will publish, above
    /// the active segment with room for [`BASE_ID_HEADROOM`] less one
    /// rotations, and returns a writer for it (staged). While `job` lives
    /// the log does not rotate onto that id. Takes `&mut self` only to record
    /// the reservation: the log keeps serving reads and appends meanwhile.
    pub fn reserve_base(
        &mut self,
        job: &Arc<()>,
        last_seq: u64,
    ) -> Result<SegmentWriter, LogError> {
        let id = self.active.checked_add(BASE_ID_HEADROOM).ok_or_else(|| LogError::Corrupt {
            path: segment_path(&self.dir, self.active),
            offset: 0,
            reason: "segment ids are exhausted".into(),
        })?;
        let writer = SegmentWriter::new(&self.dir, id, last_seq)?;
        self.reserved_base = Some((id, Arc::downgrade(job)));
        Ok(writer)
    }

    /// A writer for a base segment with id `id`, without a reservation: for
    /// a caller that takes no writes until it installs it.
    pub fn base_writer(&self, id: u32, last_seq: u64) -> Result<SegmentWriter, LogError> {
        SegmentWriter::new(&self.dir, id, last_seq)
    }

    /// The id of the active segment, the highest.
    pub fn active_segment(&self) -> u32 {
        self.active
    }

    /// Where the bytes handed to the kernel end. Everything before this
    /// place stays as it is until a compaction replaces the log (a refused
    /// write out cuts back only bytes after it); everything appended later
    /// lies after it.
    pub fn written_end(&self) -> LogPos {
        let offset =
            self.segments.get(&self.active).map_or(SEGMENT_HEADER_BYTES, |s| s.written_len);
        LogPos { segment: self.active, offset }
    }

    /// Bytes from `from` to the end of the log, unwritten ones included.
    pub fn bytes_after(&self, from: LogPos) -> u64 {
        let written: u64 = self
            .segments
            .range(from.segment..)
            .map(|(&id, s)| {
                let start = if id == from.segment { from.offset } else { SEGMENT_HEADER_BYTES };
                s.written_len.saturating_sub(start)
            })
            .sum();
        written + self.unwritten.len() as u64
    }

    /// Calls `visit` for every written entry from `from` up to `upto`, in
    /// log order. Stops once the entries visited reach `budget` bytes
    /// (never inside an entry) and returns where it stopped: `upto` when
    /// it got there, else the next entry to visit. `from` and `upto` must
    /// be entry boundaries within what is written (earlier returns, or
    /// [`ChunkLog::written_end`]s). Reads the files with `pread`, a few
    /// MiB at a time.
    pub fn visit_from(
        &self,
        from: LogPos,
        upto: LogPos,
        budget: u64,
        mut visit: impl FnMut(&EntryRef<'_>) -> Result<(), LogError>,
    ) -> Result<LogPos, LogError> {
        const PIECE: u64 = 4 << 20;
        let mut visited = 0u64;
        let mut buf = Vec::new();
        for (&id, seg) in self.segments.range(from.segment..=upto.segment) {
            let start = if id == from.segment { from.offset } else { SEGMENT_HEADER_BYTES };
            let end = if id == upto.segment { upto.offset } else { seg.written_len };
            let mut at = start;
            let corrupt = |offset: u64, reason: String| LogError::Corrupt {
                path: seg.path.clone(),
                offset,
                reason,
            };
            while at < end {
                if visited >= budget {
                    return Ok(LogPos { segment: id, offset: at });
                }
                let left = end - at;
                buf.resize(left.min(PIECE) as usize, 0);
                seg.file.read_exact_at(&mut buf, at).map_err(io_err(&seg.path))?;
                // An entry longer than a piece is read whole.
                if let Ok(first) = peek_entry_len(&buf) {
                    if first > buf.len() && first as u64 <= left {
                        buf.resize(first, 0);
                        seg.file.read_exact_at(&mut buf, at).map_err(io_err(&seg.path))?;
                    }
                }
                let mut pos = 0usize;
                while pos < buf.len() && visited < budget {
                    match decode_entry(&buf[pos..]) {
                        Ok((e, len)) => {
                            visit(&e)?;
                            pos += len;
                            visited += len as u64;
                        }
                        // The next piece starts with it.
                        Err(EntryError::Incomplete) if pos > 0 => break,
                        Err(e) => return Err(corrupt(at + pos as u64, e.to_string())),
                    }
                }
                at += pos as u64;
            }
        }
        Ok(upto)
    }

    /// Calls `visit` for every entry not yet written, in log order.
    pub fn visit_unwritten(
        &self,
        mut visit: impl FnMut(&EntryRef<'_>) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let written = self.active_len() - self.unwritten.len() as u64;
        let mut pos = 0usize;
        while pos < self.unwritten.len() {
            let (e, len) = decode_entry(&self.unwritten[pos..]).map_err(|e| LogError::Corrupt {
                path: segment_path(&self.dir, self.active),
                offset: written + pos as u64,
                reason: e.to_string(),
            })?;
            visit(&e)?;
            pos += len;
        }
        Ok(())
    }

    /// Makes staged segment `id` the base of the log. `id` must be above
    /// every segment of the log. Entries not yet written are dropped: the
    /// caller copied them into the base. Returns the files of the segments
    /// it superseded, for the caller to remove ([`remove_superseded`]),
    /// outside any lock: unlinking large files takes milliseconds, and
    /// recovery removes them anyway if that never happens.
    pub fn install_compacted(&mut self, id: u32) -> Result<Vec<PathBuf>, LogError> {
        assert!(id > self.active, "compacted segment {id} not above segment {}", self.active);
        let path = segment_path(&self.dir, id);
        if let Err(e) = fs::rename(staged_path(&self.dir, id), &path) {
            let _ = fs::remove_file(staged_path(&self.dir, id));
            return Err(io_err(&path)(e));
        }
        // From here the new segment is in charge on disk (recovery prefers
        // a base segment above the manifest's newest), so it is in charge
        // in memory too, whatever fails next: appending to a superseded
        // segment would lose those writes at the next start. The sync job
        // fsyncs the directory; if that fails, the chunk is poisoned.
        let old: Vec<PathBuf> =
            std::mem::take(&mut self.segments).into_values().map(|s| s.path).collect();
        self.unwritten.clear();
        self.unsynced.clear();
        self.reserved_base = None;
        self.dir_dirty = true;
        self.add_segment(id)?;
        let tidy = sync_dir(&self.dir)
            .map_err(io_err(&self.dir))
            .and_then(|()| Manifest { first: id, last: id }.write(&self.dir));
        if let Err(e) = tidy {
            // Recovery finishes the job: the base supersedes the rest.
            tracing::warn!(dir = %self.dir.display(), error = %e, "compaction installed; the manifest is updated at the next start");
            return Ok(Vec::new());
        }
        Ok(old)
    }

    /// Removes the whole chunk directory: the segments and the manifest
    /// first, the descriptor last. A crash midway leaves a directory that
    /// still says whose it was (start-up moves it aside), never segments
    /// without a descriptor, which read as a data directory of an older
    /// format and stop the node from starting.
    pub fn destroy(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        remove_log_files(&dir)?;
        fs::remove_dir_all(&dir)
    }
}

/// Removes a chunk directory's segments (sealed, staged) and manifest,
/// leaving its descriptor: the first step of [`ChunkLog::destroy`].
pub fn remove_log_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let is_log =
            path.extension().is_some_and(|x| x == &SEGMENT_SUFFIX[1..] || x == &TMP_SUFFIX[1..])
                || path.file_name().is_some_and(|n| n == MANIFEST_FILE);
        if is_log {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Copies entries out of a log for compaction and splits. Each segment is
/// mapped into memory the first time an entry in it is needed, so a rewrite
/// that touches most of the log costs no syscall per entry and no copy of
/// the segment.
pub struct LogCopier<'a> {
    log: &'a ChunkLog,
    images: BTreeMap<u32, memmap2::Mmap>,
}

impl LogCopier<'_> {
    /// Reads back one stored entry, verified.
    pub fn entry(&mut self, key: &[u8], v: &Version) -> Result<EntryRef<'_>, LogError> {
        let log = self.log;
        let seg = log.segments.get(&v.segment).ok_or_else(|| LogError::Corrupt {
            path: segment_path(&log.dir, v.segment),
            offset: v.offset,
            reason: "index points at a missing segment".into(),
        })?;
        let image = match self.images.entry(v.segment) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                // SAFETY: the mapping lives only while the copier borrows
                // the log, and every write to the log (appends, write outs,
                // a refused write's cut back, compaction's install) takes
                // `&mut ChunkLog`, which the borrow excludes: a copier is
                // made and dropped within one step of a rewrite, under the
                // chunk's read lock. The bytes read were written before the
                // borrow began, and are never shrunk away (a cut back only
                // removes bytes past the written end). Removing the file
                // (after compaction) leaves a live mapping valid.
                let map = unsafe { memmap2::Mmap::map(&*seg.file) }.map_err(io_err(&seg.path))?;
                e.insert(map)
            }
        };
        let corrupt =
            |reason: String| LogError::Corrupt { path: seg.path.clone(), offset: v.offset, reason };
        let start = v.offset as usize;
        let bytes = image
            .get(start..start + v.entry_len())
            .ok_or_else(|| corrupt("index points past the end of the segment".into()))?;
        let (e, _) = decode_entry(bytes).map_err(|e| corrupt(e.to_string()))?;
        if e.seq != v.seq || e.key != key {
            return Err(corrupt("entry is not the one the index expects".into()));
        }
        Ok(e)
    }
}

struct Replay {
    /// Leading bytes that hold complete batches.
    complete_len: u64,
    /// Where decoding stopped: the end, or the first undecodable byte.
    stop_pos: usize,
    seq_max: u64,
}

/// Replays one segment, or returns `(offset, reason)` for damage that cannot
/// be a torn write.
fn replay_segment(
    id: u32,
    bytes: &[u8],
    visit: &mut impl FnMut(&EntryRef<'_>, Version),
    recovery: &mut Recovery,
) -> Result<Replay, (u64, String)> {
    let mut pos = SEGMENT_HEADER_BYTES as usize;
    let mut batch: Vec<(EntryRef<'_>, Version)> = Vec::new();
    let mut batch_start = pos;
    let mut seq_max = 0;
    while pos < bytes.len() {
        let (e, len) = match decode_entry(&bytes[pos..]) {
            Ok(ok) => ok,
            Err(_) => break,
        };
        seq_max = seq_max.max(e.seq);
        if let Some((first, _)) = batch.first() {
            if first.seq != e.seq {
                return Err((pos as u64, "batch entries carry different seqs".into()));
            }
        }
        batch.push((e, Version::new(e.seq, id, pos as u64, len, e.value.is_none())));
        pos += len;
        if e.batch_end {
            for (e, v) in batch.drain(..) {
                visit(&e, v);
                recovery.entries += 1;
            }
            batch_start = pos;
        }
    }
    Ok(Replay { complete_len: batch_start as u64, stop_pos: pos, seq_max })
}

/// Decides whether the bytes from `stop_pos` (where decoding the newest
/// segment stopped) to the end of the file are a torn write, which recovery
/// cuts, or damage, which it reports. A process dying mid-append leaves an
/// entry that ends past the end of the file, or, on file systems that
/// extend a file before its data lands, zeros to the end of the file. A
/// complete entry whose checksum fails is neither.
fn check_torn_tail(bytes: &[u8], stop_pos: usize, seq_max: u64) -> Result<(), String> {
    let rest = &bytes[stop_pos..];
    let zeros_from = stop_pos + rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if zeros_from == stop_pos {
        return Ok(());
    }
    let torn = match decode_entry(rest) {
        // Replay stopped between entries of a batch whose end is missing.
        Ok(_) => true,
        Err(EntryError::Incomplete) => true,
        Err(EntryError::Checksum | EntryError::BadFields) => {
            // Complete by its length: torn only if its end is the zeros
            // that run to the end of the file.
            let end = stop_pos + peek_entry_len(rest).unwrap_or(rest.len());
            zeros_from < end
        }
        // A whole entry with a sound checksum, over the limits: written so,
        // not torn.
        Err(EntryError::BadLength(_) | EntryError::OverLimits { .. }) => false,
    };
    if torn && !has_valid_entry_after(bytes, stop_pos, seq_max) {
        return Ok(());
    }
    let after = bytes.len() - stop_pos;
    Err(format!("{} ({after} bytes from here to the end of the file)", describe_damage(rest)))
}

/// Whether an intact entry starts anywhere after the damage at `stop_pos`: if
/// one does, the damage is not a torn tail but corruption in the middle of
/// the log. Candidates must carry a plausible seq before their checksum is
/// computed, which keeps the search linear on random garbage.
fn has_valid_entry_after(bytes: &[u8], stop_pos: usize, seq_max: u64) -> bool {
    let seq_limit = seq_max.saturating_add(1 << 40);
    (stop_pos + 1..bytes.len()).any(|p| {
        let Some(seq_bytes) = bytes.get(p + 8..p + 16) else {
            return false;
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(seq_bytes);
        let seq = u64::from_le_bytes(a);
        (1..=seq_limit).contains(&seq) && decode_entry(&bytes[p..]).is_ok()
    })
}

fn describe_damage(bytes: &[u8]) -> String {
    match decode_entry(bytes) {
        Err(EntryError::Checksum) => "complete entry with a checksum mismatch".into(),
        Err(e) => e.to_string(),
        Ok(_) => "incomplete batch followed by more data".into(),
    }
}

/// Most bytes one `pread` of [`ChunkLog::read_many`] reads.
pub const READ_SPAN_MAX_BYTES: usize = 1 << 20;

/// The value of the entry `bytes` holds, checked against what the index
/// expects of it (`key` at `v`).
fn value_of(seg: &Segment, key: &[u8], v: &Version, bytes: &[u8]) -> Result<Vec<u8>, LogError> {
    let corrupt =
        |reason: String| LogError::Corrupt { path: seg.path.clone(), offset: v.offset, reason };
    let (e, _) = decode_entry(bytes).map_err(|e| corrupt(e.to_string()))?;
    if e.seq != v.seq || e.key != key {
        return Err(corrupt("entry is not the one the index expects".into()));
    }
    Ok(e.value.unwrap_or_default().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let e = EntryRef { seq, key, value: Some(b"value"), expiry_ms: 0, batch_end: true };
        encode_entry(&mut out, &e).expect("within limits");
        out
    }

    /// `read_many` reads entries end to end in spans; it must give what
    /// `read` gives one by one: written and unwritten entries, segments
    /// rotated between them, out-of-order and repeated versions, and a
    /// span longer than one `pread`.
    #[test]
    fn read_many_equals_reading_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c");
        create_chunk_dir(&path).expect("dir");
        let mut log = ChunkLog::create(&path, 64 * 1024).expect("log");
        let big = vec![7u8; 300 * 1024];
        let mut written = Vec::new();
        for round in 0..40u64 {
            let keys: Vec<Vec<u8>> =
                (0..50u64).map(|i| format!("k{round:03}-{i:03}").into_bytes()).collect();
            let values: Vec<Vec<u8>> = (0..50u64)
                .map(|i| if i == 7 { big.clone() } else { format!("v{round}\0{i}").into_bytes() })
                .collect();
            let mut entries: Vec<EntryRef<'_>> = keys
                .iter()
                .zip(&values)
                .enumerate()
                .map(|(i, (k, v))| EntryRef {
                    seq: round * 100 + i as u64 + 1,
                    key: k,
                    value: Some(v),
                    expiry_ms: 0,
                    batch_end: false,
                })
                .collect();
            let versions = log.append_batch(&mut entries).expect("append");
            for ((k, v), version) in keys.into_iter().zip(values).zip(versions) {
                written.push((k, v, version));
            }
            // The last rounds stay in the unwritten buffer.
            if round < 37 {
                log.write_out().expect("write out");
            }
        }
        let mut wanted: Vec<(&[u8], Version)> =
            written.iter().map(|(k, _, v)| (&k[..], *v)).collect();
        wanted.extend(written.iter().rev().take(80).map(|(k, _, v)| (&k[..], *v)));
        wanted.push(wanted[3]);
        let got = log.read_many(&wanted).expect("read_many");
        assert_eq!(got.len(), wanted.len());
        for ((k, v), value) in wanted.iter().zip(&got) {
            assert_eq!(*value, log.read(k, v).expect("read"));
        }
        assert_eq!(got[7], big);
        // An index that points at the wrong key inside a span is damage.
        let mut bad = wanted[..10].to_vec();
        bad[4].0 = b"other";
        assert!(matches!(log.read_many(&bad), Err(LogError::Corrupt { .. })));
    }

    fn segment_with(entries: &[Vec<u8>]) -> (Vec<u8>, usize) {
        let mut b = encode_header(1, true, 0).to_vec();
        for e in &entries[..entries.len() - 1] {
            b.extend_from_slice(e);
        }
        let stop = b.len();
        b.extend_from_slice(&entries[entries.len() - 1]);
        (b, stop)
    }

    #[test]
    fn torn_tails_are_cut_and_complete_corrupt_entries_are_not() {
        let good = [entry(1, b"a"), entry(2, b"b")];
        // Short: the process died mid-append.
        let (b, stop) = segment_with(&good);
        for cut in 1..good[1].len() {
            assert_eq!(check_torn_tail(&b[..b.len() - cut], stop, 1), Ok(()), "cut {cut}");
        }
        // Zero-filled to the end of the file, from anywhere in the entry.
        for zero_from in stop..b.len() {
            let mut z = b.clone();
            z[zero_from..].fill(0);
            assert_eq!(check_torn_tail(&z, stop, 1), Ok(()), "zeros from {zero_from}");
        }
        // Regression: a complete entry whose checksum fails was cut as a
        // torn write.
        let mut flipped = b.clone();
        flipped[stop + 12] ^= 0x01;
        let reason = check_torn_tail(&flipped, stop, 1).expect_err("complete entry, bad crc");
        assert!(reason.contains("checksum"), "{reason}");
        // Zeros inside a complete entry, with data after them: damage.
        let mut holed = b.clone();
        holed[stop + 29..stop + 31].fill(0);
        assert!(check_torn_tail(&holed, stop, 1).is_err());
        // An impossible length prefix.
        let mut garbage = b.clone();
        garbage[stop..stop + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(check_torn_tail(&garbage, stop, 1).is_err());
    }
}
