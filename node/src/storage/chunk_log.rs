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
//! Writes are two-phase so the chunk actor can group-commit: [`ChunkLog::append_batch`]
//! encodes entries into memory and returns their locations, [`ChunkLog::write_out`]
//! hands everything encoded so far to the kernel in one write per segment,
//! and [`SyncJob`] makes it durable on another thread.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::chunk_index::Version;
use super::entry::{decode_entry, encode_entry, EntryError, EntryRef};

const SEGMENT_MAGIC: [u8; 8] = *b"MTSEGMNT";
const SEGMENT_FORMAT: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 32;
const FLAG_BASE: u32 = 1;
const SEGMENT_SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".tmp";

/// Data found on disk that the log cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("corrupt segment {path} at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// An entry the log refused to write (nothing of its batch was written).
    #[error("refused to log an entry: {0}")]
    Refused(#[from] EntryError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
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
}

struct Segment {
    file: File,
    path: PathBuf,
    /// Bytes handed to the kernel, header included.
    written_len: u64,
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
}

/// A durable-making job that runs off the actor thread: fsync of the
/// segments written since the last job, and of the directory if needed.
pub struct SyncJob {
    files: Vec<File>,
    dir: Option<PathBuf>,
}

impl SyncJob {
    pub fn run(self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some(dir) = self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}{SEGMENT_SUFFIX}"))
}

/// Segment header: magic, format, flags, id, and for a base segment the
/// highest seq the log had when it was rewritten, then a CRC of all that.
fn encode_header(id: u32, base: bool, last_seq: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
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
fn check_header(h: &[u8], id: u32) -> Result<Option<u64>, String> {
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
}

impl SegmentWriter {
    fn new(dir: &Path, id: u32, last_seq: u64) -> Result<Self, LogError> {
        let path = staged_path(dir, id);
        let file = File::create(&path).map_err(io_err(&path))?;
        let mut file = std::io::BufWriter::with_capacity(1024 * 1024, file);
        file.write_all(&encode_header(id, true, last_seq)).map_err(io_err(&path))?;
        Ok(SegmentWriter { path, file, id, offset: SEGMENT_HEADER_BYTES, scratch: Vec::new() })
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
    pub fn finish(self) -> Result<(), LogError> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| LogError::Io { path: self.path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_err(&self.path))
    }
}

/// Renames a staged segment into place, durably: from here on it is the
/// base of the log.
fn publish_staged(dir: &Path, id: u32) -> Result<(), LogError> {
    let path = segment_path(dir, id);
    fs::rename(staged_path(dir, id), &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

impl ChunkLog {
    /// Creates a log in a new directory whose first segment holds `body`
    /// (already encoded entries, possibly none), durably.
    pub fn create(dir: &Path, segment_size_max_bytes: u64) -> Result<Self, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        SegmentWriter::new(dir, 1, 0)?.finish()?;
        Self::publish_new(dir, segment_size_max_bytes)
    }

    /// Where a new chunk's first segment is written (with [`SegmentWriter`])
    /// before [`ChunkLog::publish_new`] makes it the chunk's log.
    pub fn first_segment_writer(dir: &Path, last_seq: u64) -> Result<SegmentWriter, LogError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        SegmentWriter::new(dir, 1, last_seq)
    }

    /// Puts a new chunk's finished first segment in place and opens the log.
    pub fn publish_new(dir: &Path, segment_size_max_bytes: u64) -> Result<Self, LogError> {
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
        }
    }

    fn add_segment(&mut self, id: u32) -> Result<(), LogError> {
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
        let written_len = file.metadata().map_err(io_err(&path))?.len();
        self.segments.insert(id, Segment { file, path, written_len });
        self.active = self.active.max(id);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the log takes on disk (and in its unwritten buffer).
    pub fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.written_len).sum::<u64>() + self.unwritten.len() as u64
    }

    /// Opens an existing log, calling `visit` for every entry of every
    /// complete batch in log order. A torn tail of the last segment is cut
    /// off; any other damage is an error naming the file and offset.
    pub fn open(
        dir: &Path,
        segment_size_max_bytes: u64,
        mut visit: impl FnMut(&EntryRef<'_>, Version),
    ) -> Result<(Self, Recovery), LogError> {
        let mut ids = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_err(dir))? {
            let dirent = dirent.map_err(io_err(dir))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // An interrupted compaction or split: never renamed, never used.
                fs::remove_file(dirent.path()).map_err(io_err(&dirent.path()))?;
            } else if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let id = stem.parse::<u32>().map_err(|_| LogError::Corrupt {
                    path: dirent.path(),
                    offset: 0,
                    reason: "unexpected segment file name".into(),
                })?;
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut recovery = Recovery::default();
        let mut contents = Vec::with_capacity(ids.len());
        for &id in &ids {
            let path = segment_path(dir, id);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            let is_last = Some(&id) == ids.last();
            let base_last_seq = match check_header(&bytes, id) {
                Ok(base) => base,
                // A crash can tear only the header of a segment just created.
                Err(_) if is_last && bytes.len() < SEGMENT_HEADER_BYTES as usize => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    recovery.truncated_bytes += bytes.len() as u64;
                    continue;
                }
                Err(reason) => return Err(LogError::Corrupt { path, offset: 0, reason }),
            };
            if let Some(last_seq) = base_last_seq {
                recovery.base_last_seq = last_seq;
                recovery.superseded_segments += contents.len();
                for (old_id, _) in contents.drain(..) {
                    let old = segment_path(dir, old_id);
                    fs::remove_file(&old).map_err(io_err(&old))?;
                }
            }
            contents.push((id, bytes));
        }
        if recovery.superseded_segments > 0 {
            sync_dir(dir).map_err(io_err(dir))?;
        }
        if contents.is_empty() {
            return Err(LogError::Corrupt {
                path: dir.to_owned(),
                offset: 0,
                reason: "chunk directory holds no segment".into(),
            });
        }

        let mut log = Self::empty(dir, segment_size_max_bytes);
        let last_index = contents.len() - 1;
        for (i, (id, bytes)) in contents.iter().enumerate() {
            let path = segment_path(dir, *id);
            let replay = replay_segment(*id, bytes, &mut visit, &mut recovery).map_err(
                |(offset, reason)| LogError::Corrupt { path: path.clone(), offset, reason },
            )?;
            let valid_len = replay.complete_len;
            if valid_len < bytes.len() as u64 {
                let torn = i == last_index
                    && !has_valid_entry_after(bytes, replay.stop_pos, replay.seq_max);
                if !torn {
                    return Err(LogError::Corrupt {
                        path,
                        offset: valid_len,
                        reason: describe_damage(&bytes[valid_len as usize..]),
                    });
                }
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(valid_len).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                recovery.truncated_bytes += bytes.len() as u64 - valid_len;
            }
            log.add_segment(*id)?;
            recovery.segments += 1;
        }
        Ok((log, recovery))
    }

    /// Encodes a batch (the last entry marked as its end) into the unwritten
    /// buffer and returns each entry's version, in order. Never splits a
    /// batch across segments.
    pub fn append_batch(&mut self, entries: &mut [EntryRef<'_>]) -> Result<Vec<Version>, LogError> {
        if self.active_len() >= self.segment_size_max_bytes {
            self.rotate()?;
        }
        if let Some(last) = entries.last_mut() {
            last.batch_end = true;
        }
        let mut versions = Vec::with_capacity(entries.len());
        let batch_start = self.unwritten.len();
        for e in entries.iter() {
            let offset = self.active_len();
            let before = self.unwritten.len();
            if let Err(refused) = encode_entry(&mut self.unwritten, e) {
                // All of the batch or none of it.
                self.unwritten.truncate(batch_start);
                return Err(refused.into());
            }
            let len = self.unwritten.len() - before;
            versions.push(Version::new(e.seq, self.active, offset, len, e.value.is_none()));
        }
        Ok(versions)
    }

    fn active_len(&self) -> u64 {
        self.segments.get(&self.active).map_or(0, |s| s.written_len) + self.unwritten.len() as u64
    }

    /// Seals the active segment and starts a new one. Only between batches,
    /// with nothing unwritten.
    fn rotate(&mut self) -> Result<(), LogError> {
        self.write_out()?;
        let id = self.active + 1;
        let path = segment_path(&self.dir, id);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&encode_header(id, false, 0)).map_err(io_err(&path))?;
        self.add_segment(id)?;
        self.unsynced.push(id);
        self.dir_dirty = true;
        Ok(())
    }

    /// Hands every encoded entry to the kernel: one positional write.
    pub fn write_out(&mut self) -> Result<(), LogError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        let seg = self.segments.get_mut(&self.active).expect("the active segment is open");
        seg.file.write_all_at(&self.unwritten, seg.written_len).map_err(io_err(&seg.path))?;
        seg.written_len += self.unwritten.len() as u64;
        self.unwritten.clear();
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
                files.push(seg.file.try_clone().map_err(io_err(&seg.path))?);
            }
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(SyncJob { files, dir })
    }

    /// Reads back one entry and verifies it: checksum, and that it is the
    /// entry the version names.
    pub fn read(&self, key: &[u8], v: &Version) -> Result<Vec<u8>, LogError> {
        let seg = self.segments.get(&v.segment).ok_or_else(|| LogError::Corrupt {
            path: segment_path(&self.dir, v.segment),
            offset: v.offset,
            reason: "index points at a missing segment".into(),
        })?;
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
        let corrupt =
            |reason: String| LogError::Corrupt { path: seg.path.clone(), offset: v.offset, reason };
        let (e, _) = decode_entry(bytes).map_err(|e| corrupt(e.to_string()))?;
        if e.seq != v.seq || e.key != key {
            return Err(corrupt("entry is not the one the index expects".into()));
        }
        Ok(e.value.unwrap_or_default().to_vec())
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

    /// A writer for the segment that will replace this log's segments.
    /// Takes `&self`: the log keeps serving reads meanwhile.
    pub fn compaction_writer(&self, last_seq: u64) -> Result<SegmentWriter, LogError> {
        SegmentWriter::new(&self.dir, self.next_segment_id(), last_seq)
    }

    /// Makes a staged segment the base of the log and removes every older
    /// segment. Call with nothing unwritten.
    pub fn install_compacted(&mut self, id: u32) -> Result<(), LogError> {
        assert!(self.unwritten.is_empty(), "compaction with unwritten entries");
        assert_eq!(id, self.next_segment_id(), "compacted segment id");
        publish_staged(&self.dir, id)?;
        let old: Vec<u32> = self.segments.keys().copied().collect();
        self.segments.clear();
        self.unsynced.clear();
        for old_id in old {
            let path = segment_path(&self.dir, old_id);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        self.add_segment(id)?;
        self.dir_dirty = true;
        Ok(())
    }

    /// Removes the whole chunk directory.
    pub fn destroy(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir)
    }
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
                // the log, during which nothing writes to or truncates the
                // segment: the chunk actor, its only writer, is the one
                // running this rewrite, and a segment is never shrunk after
                // recovery. Removing the file (after compaction) leaves a
                // live mapping valid.
                let map = unsafe { memmap2::Mmap::map(&seg.file) }.map_err(io_err(&seg.path))?;
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
        Err(EntryError::Checksum) => "checksum mismatch".into(),
        Err(e) => e.to_string(),
        Ok(_) => "incomplete batch followed by more data".into(),
    }
}
