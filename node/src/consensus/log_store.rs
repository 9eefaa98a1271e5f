//! The Raft log of one group, in segment files.
//!
//! # Files
//!
//! A group's directory holds:
//!
//! - segment files `NNNNNNNNNNNNNNNNNNNN.rlog` (a u64 id, ascending in log
//!   order), each a 32-byte header and then entries:
//!
//!   ```text
//!   header: magic "MTRAFTLG" | format u32 | first_index u64 | 8 zero bytes | crc32c u32
//!   entry:  len u32 | body_crc u32 | head_crc u32 | body (len bytes)
//!   ```
//!
//!   All integers little-endian. `first_index` is the log index of the
//!   segment's first entry; entries follow with consecutive indexes. `body`
//!   is the MessagePack (`rmp_serde::to_vec`) of an
//!   `openraft::Entry<TypeConfig>`; `body_crc` is its CRC32C and
//!   `head_crc` the CRC32C of the 8 bytes before it, so a length is
//!   trusted before the body it announces is read.
//! - `VOTE` and `PURGED`: the vote and the last purged log id, each
//!   `len u32 | crc32c u32 | MessagePack`, replaced atomically and durably
//!   ([`write_file_durably`]).
//! - `COMMITTED`: the last committed log id in the same framing, written in
//!   place and never synced: advisory, see [`LogStore::open`].
//!
//! # What is durable when
//!
//! - `append` writes the entries of one call to one segment with one
//!   `pwrite`, makes them readable, and asks the [`SyncPoint`] to sync the
//!   segment; openraft's callback is called from the sync's completion
//!   only, and completions are acknowledged in append order: an append is
//!   acknowledged only when it and every append before it are durable. A
//!   failed write or sync poisons the store: that append and every later
//!   one fail, and every later write call returns an error.
//! - A new segment is started (at the first append after the active one
//!   reached its size) only after the active one is fdatasynced, and the
//!   new file and the directory are fsynced before entries go into it: so
//!   only the newest segment can end in a torn write, and every segment
//!   file found is one the log made.
//! - `save_vote` returns once the vote is durable.
//! - `truncate` removes the later segments (directory fsynced) before it
//!   cuts the segment that holds the first removed entry (fdatasynced),
//!   and returns once both are durable: a crash never leaves a hole.
//! - `purge` records the purged log id durably *before* it deletes any
//!   segment; deleted files that a crash brings back hold only purged
//!   entries and are deleted again at the next open.
//!
//! # Recovery
//!
//! Only the newest segment may end in a torn write, and recovery cuts a
//! tail only if it is what a dying process leaves: an entry (or header)
//! that ends past the end of the file, or bytes that are zero to the end of
//! the file. A complete entry failing its checksum, an entry out of index
//! order, or a hole between segments is damage, reported with its file and
//! offset; nothing is cut then.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Debug};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, SyncPoint, TypeConfig};
use crate::storage::chunk_log::{sync_dir, write_file_durably};

type Vote = openraft::Vote<NodeId>;

const SEGMENT_MAGIC: [u8; 8] = *b"MTRAFTLG";
const SEGMENT_FORMAT: u32 = 1;
const HEADER_BYTES: u64 = 32;
const FRAME_BYTES: usize = 12;
const SEGMENT_SUFFIX: &str = ".rlog";
const VOTE_FILE: &str = "VOTE";
const PURGED_FILE: &str = "PURGED";
const COMMITTED_FILE: &str = "COMMITTED";

/// A segment is closed once it holds this many bytes (the entries of one
/// append always go to one segment, so a segment can be larger by one
/// append).
pub const SEGMENT_BYTES_DEFAULT: u64 = 8 << 20;

/// The largest entry body (encoded) the log takes; larger appends are
/// refused before anything is written, larger lengths read back are damage.
pub const ENTRY_BYTES_MAX: usize = 1 << 30;

/// How many entry bytes one `limited_get_log_entries` returns at most
/// (always at least one entry).
const READ_BATCH_BYTES: u64 = 4 << 20;

/// What went wrong, before it becomes openraft's error.
#[derive(Debug)]
enum Failure {
    Io {
        path: PathBuf,
        source: io::Error,
    },
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    Refused(String),
    /// A small file's durable replace failed.
    File(crate::storage::chunk_log::LogError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io { path, source } => write!(f, "i/o error on {}: {source}", path.display()),
            Failure::Corrupt { path, offset, reason } => {
                write!(f, "corrupt raft log file {} at byte {offset}: {reason}", path.display())
            }
            Failure::Refused(reason) => f.write_str(reason),
            Failure::File(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for Failure {}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Failure + '_ {
    move |source| Failure::Io { path: path.to_owned(), source }
}

fn read_err(e: Failure) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: Failure) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn vote_err(e: Failure) -> StorageError<NodeId> {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

fn encode_header(first_index: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Returns the segment's first index.
fn decode_header(h: &[u8]) -> Result<u64, String> {
    if h.len() < HEADER_BYTES as usize {
        return Err("segment shorter than its header".into());
    }
    if h[..8] != SEGMENT_MAGIC || crc32c::crc32c(&h[..28]) != u32_at(h, 28) {
        return Err("bad segment header".into());
    }
    let format = u32_at(h, 8);
    if format != SEGMENT_FORMAT {
        return Err(format!("unknown segment format {format}"));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h[12..20]);
    Ok(u64::from_le_bytes(first))
}

/// Appends one framed entry body to `out`.
fn encode_frame(out: &mut Vec<u8>, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let head_crc = crc32c::crc32c(&out[start..start + 8]);
    out.extend_from_slice(&head_crc.to_le_bytes());
    out.extend_from_slice(body);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameError {
    /// The frame header is not all there.
    ShortHeader,
    /// The frame header fails its checksum.
    BadHeader,
    /// A sound header announcing a body longer than the log ever writes.
    TooLong(usize),
    /// The body the header announces ends past the end of the buffer.
    ShortBody(usize),
    /// A complete body failing its checksum.
    Checksum(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ShortHeader => f.write_str("entry header is incomplete"),
            FrameError::BadHeader => f.write_str("entry header checksum mismatch"),
            FrameError::TooLong(n) => write!(f, "entry length {n} is impossible"),
            FrameError::ShortBody(n) => write!(f, "entry of {n} bytes is incomplete"),
            FrameError::Checksum(_) => f.write_str("complete entry with a checksum mismatch"),
        }
    }
}

/// Verifies the frame at the start of `buf`; returns its body and the
/// bytes the whole frame takes.
fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let head = buf.get(..FRAME_BYTES).ok_or(FrameError::ShortHeader)?;
    if crc32c::crc32c(&head[..8]) != u32_at(head, 8) {
        return Err(FrameError::BadHeader);
    }
    let len = u32_at(head, 0) as usize;
    if len > ENTRY_BYTES_MAX {
        return Err(FrameError::TooLong(len));
    }
    let body = buf.get(FRAME_BYTES..FRAME_BYTES + len).ok_or(FrameError::ShortBody(len))?;
    if crc32c::crc32c(body) != u32_at(head, 4) {
        return Err(FrameError::Checksum(len));
    }
    Ok((body, FRAME_BYTES + len))
}

/// Whether the bytes from `pos` (where reading stopped with `error`) to the
/// end of the newest segment are what a process dying mid-append leaves: a
/// frame (or its header) ending past the end of the file, or bytes that are
/// zero to the end of the file, the zeros starting inside the frame.
fn is_torn_tail(bytes: &[u8], pos: usize, error: FrameError) -> bool {
    let rest = &bytes[pos..];
    let zeros_from = pos + rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    match error {
        FrameError::ShortHeader | FrameError::ShortBody(_) => true,
        FrameError::BadHeader => zeros_from < pos + FRAME_BYTES,
        FrameError::Checksum(len) => zeros_from < pos + FRAME_BYTES + len,
        FrameError::TooLong(_) => zeros_from == pos,
    }
}

/// `len u32 | crc32c u32 | body`.
fn encode_small<T: Serialize>(value: &T) -> Vec<u8> {
    let body = rmp_serde::to_vec(value).expect("log ids and votes always encode");
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes what [`encode_small`] wrote; `exact`: the bytes must end with it.
fn decode_small<T: DeserializeOwned>(b: &[u8], exact: bool) -> Result<T, String> {
    if b.len() < 8 {
        return Err("file is too short".into());
    }
    let len = u32_at(b, 0) as usize;
    let body = b.get(8..8 + len).ok_or("file is shorter than its length says")?;
    if exact && b.len() != 8 + len {
        return Err("file is longer than its length says".into());
    }
    if crc32c::crc32c(body) != u32_at(b, 4) {
        return Err("checksum mismatch".into());
    }
    rmp_serde::from_slice(body).map_err(|e| format!("undecodable: {e}"))
}

/// Reads a file written by [`write_file_durably`] with [`encode_small`]
/// bytes; `None` if there is none, damage (naming the file) if it does not
/// decode.
fn read_small<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, Failure> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(b) => decode_small(&b, true).map(Some).map_err(|reason| Failure::Corrupt {
            path,
            offset: 0,
            reason,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Failure::Io { path, source }),
    }
}

/// One segment file, as the writer sees it.
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    first_index: u64,
    /// Bytes written, header included: where the next entry goes.
    len: u64,
}

/// Where one entry lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    log_id: LogId<NodeId>,
    segment: u64,
    offset: u64,
    /// Frame bytes, header included.
    len: u32,
}

/// What readers see.
struct Index {
    /// The entries after the purged ones; `slots[i]` has index `first + i`.
    slots: VecDeque<Slot>,
    first: u64,
    purged: Option<LogId<NodeId>>,
    vote: Option<Vote>,
    committed: Option<LogId<NodeId>>,
    /// Open segment files by id, for reads.
    files: BTreeMap<u64, (Arc<File>, PathBuf)>,
}

impl Index {
    fn last(&self) -> Option<&Slot> {
        self.slots.back()
    }

    fn slot(&self, index: u64) -> Option<&Slot> {
        index.checked_sub(self.first).and_then(|i| self.slots.get(i as usize))
    }

    /// The index the next appended entry must have; `None`: any (a log
    /// that never held an entry and never purged).
    fn next_index(&self) -> Option<u64> {
        match (self.last(), self.purged) {
            (Some(s), _) => Some(s.log_id.index + 1),
            (None, Some(p)) => Some(p.index + 1),
            (None, None) => None,
        }
    }

    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.last().map(|s| s.log_id).or(self.purged)
    }
}

/// What only writers touch; its lock serializes them.
struct Writer {
    /// Live segments by id; the highest is the one appended to. Every one
    /// holds at least one entry (unless a write into a new one failed,
    /// which poisons the store).
    segments: BTreeMap<u64, Segment>,
    next_segment_id: u64,
    committed_file: File,
    scratch: Vec<u8>,
}

struct Pending {
    callback: Option<Done>,
    outcome: Option<io::Result<()>>,
}

/// Who is told that an append is durable (or failed): openraft, or a
/// caller writing before any Raft runs on the log ([`LogStore::seed`]).
enum Done {
    Raft(LogFlushed<TypeConfig>),
    Seed(tokio::sync::oneshot::Sender<io::Result<()>>),
}

/// Appends waiting for their syncs, acknowledged in order.
#[derive(Default)]
struct Acks {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// Why the store takes no more writes.
    poisoned: Option<String>,
}

impl Acks {
    fn poison(&mut self, why: String) {
        if self.poisoned.is_none() {
            tracing::error!(reason = %why, "raft log poisoned: it takes no more writes");
            self.poisoned = Some(why);
        }
    }
}

/// Records `outcome` for append `seq` and calls, in append order, the
/// callbacks of every append whose turn has come.
fn complete(acks: &Mutex<Acks>, seq: u64, outcome: io::Result<()>) {
    let mut ready = Vec::new();
    {
        let mut a = acks.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = &outcome {
            a.poison(format!("a sync of the raft log failed: {e}"));
        }
        if let Some(p) = a.pending.get_mut(&seq) {
            p.outcome = Some(outcome);
        }
        while let Some(first) = a.pending.first_entry() {
            if first.get().outcome.is_none() {
                break;
            }
            let p = first.remove();
            // Nothing after a failed write or sync is acknowledged: a later
            // sync can succeed while the data before it was lost.
            let result = match (p.outcome.expect("checked above"), &a.poisoned) {
                (Err(e), _) => Err(e),
                (Ok(()), Some(why)) => Err(io::Error::other(why.clone())),
                (Ok(()), None) => Ok(()),
            };
            ready.push((p.callback, result));
        }
    }
    for (callback, result) in ready {
        match callback {
            Some(Done::Raft(cb)) => cb.log_io_completed(result),
            Some(Done::Seed(tx)) => {
                let _ = tx.send(result);
            }
            None => {}
        }
    }
}

struct Shared {
    dir: PathBuf,
    sync: Arc<dyn SyncPoint>,
    segment_bytes_max: u64,
    writer: Mutex<Writer>,
    index: Mutex<Index>,
    acks: Arc<Mutex<Acks>>,
    recovered: Recovered,
    /// Test hook: the next append's write writes half its bytes and fails.
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

/// What [`LogStore::open`] found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Segments in use.
    pub segments: usize,
    /// Entries after the purged ones.
    pub entries: u64,
    /// Bytes of torn writes dropped: cut from the end of the newest
    /// segment, or that segment whole if its header or every entry was torn.
    pub cut_bytes: u64,
    /// Segment files deleted: wholly purged (a purge's deletes that a crash
    /// undid), empty, or with a torn header.
    pub removed_segments: usize,
}

/// The Raft log of one group. Clones share it (openraft's log readers are
/// clones); writes are serialized among them.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

/// A segment read at recovery.
struct Found {
    id: u64,
    path: PathBuf,
    first_index: u64,
    /// Log id, offset and frame length of each entry.
    entries: Vec<(LogId<NodeId>, u64, u32)>,
    /// Where the sound part ends; the file is cut there (a torn tail).
    len: u64,
    /// Bytes in the file.
    file_len: u64,
}

impl Found {
    fn next_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64
    }
}

/// Reads one segment: its header and entries, and for the newest one
/// (`last`) where a torn tail starts (`len`; a torn header: no entries and
/// `len` 0). Changes nothing on disk: the caller cuts and deletes once the
/// whole log is known to be sound.
fn read_segment(id: u64, path: &Path, last: bool) -> Result<Found, Failure> {
    let bytes = fs::read(path).map_err(io_at(path))?;
    let file_len = bytes.len() as u64;
    let first_index = match decode_header(&bytes) {
        Ok(first) => first,
        Err(reason) => {
            let zeros_from = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            let torn = bytes.len() < HEADER_BYTES as usize || zeros_from < HEADER_BYTES as usize;
            if last && torn {
                return Ok(Found {
                    id,
                    path: path.to_owned(),
                    first_index: 0,
                    entries: Vec::new(),
                    len: 0,
                    file_len,
                });
            }
            return Err(Failure::Corrupt { path: path.to_owned(), offset: 0, reason });
        }
    };
    let corrupt = |offset: usize, reason: String| Failure::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let mut entries = Vec::new();
    let mut pos = HEADER_BYTES as usize;
    while pos < bytes.len() {
        let (body, len) = match decode_frame(&bytes[pos..]) {
            Ok(ok) => ok,
            Err(e) => {
                if last && is_torn_tail(&bytes, pos, e) {
                    break;
                }
                let left = bytes.len() - pos;
                return Err(corrupt(
                    pos,
                    format!("{e} ({left} bytes from here to the end of the file)"),
                ));
            }
        };
        let entry: Entry<TypeConfig> = rmp_serde::from_slice(body)
            .map_err(|e| corrupt(pos, format!("undecodable entry: {e}")))?;
        let expected = first_index + entries.len() as u64;
        if entry.log_id.index != expected {
            return Err(corrupt(
                pos,
                format!(
                    "entry has log index {}, the segment's order says {expected}",
                    entry.log_id.index
                ),
            ));
        }
        entries.push((entry.log_id, pos as u64, len as u32));
        pos += len;
    }
    Ok(Found { id, path: path.to_owned(), first_index, entries, len: pos as u64, file_len })
}

impl LogStore {
    /// Opens the log in `dir` (created if missing) with segments of
    /// [`SEGMENT_BYTES_DEFAULT`]; see [`LogStore::open_with_segment_bytes`].
    pub fn open(dir: &Path, sync: Arc<dyn SyncPoint>) -> Result<LogStore, StorageError<NodeId>> {
        Self::open_with_segment_bytes(dir, sync, SEGMENT_BYTES_DEFAULT)
    }

    /// Writes a group's first entry into an empty log, before any Raft
    /// runs on it, and waits until it is durable: the membership of
    /// `voters` (id -> address) at the default log id, the entry openraft's
    /// `initialize` writes. Every replica that seeds its log with the same
    /// voters holds the same entry, so any of them can be elected later,
    /// unlike after `initialize`, which also starts an election, and which
    /// a replica that already voted in the group's first term (for a
    /// candidate that then died) can no longer call. Returns whether it
    /// wrote (`false`: the log holds entries, or held some before a purge).
    ///
    /// Errors: the log's write or sync failed (it is poisoned).
    pub async fn seed_membership(
        &self,
        voters: BTreeMap<NodeId, String>,
    ) -> Result<bool, StorageError<NodeId>> {
        let membership = openraft::Membership::from(super::raft_nodes(voters));
        let entry = Entry::<TypeConfig> {
            log_id: LogId::default(),
            payload: openraft::EntryPayload::Membership(membership),
        };
        self.seed(entry).await
    }

    /// Whether the log holds no entry and was never purged: a group that
    /// has not started on this node.
    pub fn is_empty(&self) -> bool {
        self.shared.index().next_index().is_none()
    }

    async fn seed(&self, entry: Entry<TypeConfig>) -> Result<bool, StorageError<NodeId>> {
        {
            let index = self.shared.index();
            if index.purged.is_some() || index.next_index().is_some() {
                return Ok(false);
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.append(std::iter::once(entry), Done::Seed(tx)).map_err(write_err)?;
        let synced = rx.await.unwrap_or_else(|_| Err(io::Error::other("the log store closed")));
        synced.map_err(|e| write_err(Failure::Io { path: self.shared.dir.clone(), source: e }))?;
        Ok(true)
    }

    /// Opens the log in `dir` (created if missing), closing segments once
    /// they hold `segment_bytes_max` bytes, and recovers what is there: a
    /// torn tail of the newest segment is cut; segments wholly purged are
    /// deleted.
    ///
    /// Errors: any other damage (a complete entry failing its checksum,
    /// entries out of order, a hole between segments, a damaged `VOTE` or
    /// `PURGED`), naming the file and offset; I/O errors. The advisory
    /// `COMMITTED` is dropped instead when it is damaged or names an entry
    /// the log does not hold.
    pub fn open_with_segment_bytes(
        dir: &Path,
        sync: Arc<dyn SyncPoint>,
        segment_bytes_max: u64,
    ) -> Result<LogStore, StorageError<NodeId>> {
        Self::recover(dir, sync, segment_bytes_max).map_err(read_err)
    }

    fn recover(
        dir: &Path,
        sync: Arc<dyn SyncPoint>,
        segment_bytes_max: u64,
    ) -> Result<LogStore, Failure> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        for name in [VOTE_FILE, PURGED_FILE] {
            // An interrupted replace: never renamed into place, never used.
            let tmp = dir.join(format!("{name}.tmp"));
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Failure::Io { path: tmp, source: e })
                }
                _ => {}
            }
        }
        let vote: Option<Vote> = read_small(dir, VOTE_FILE)?;
        let purged: Option<LogId<NodeId>> = read_small(dir, PURGED_FILE)?;
        let committed: Option<LogId<NodeId>> = fs::read(dir.join(COMMITTED_FILE))
            .ok()
            .and_then(|b| decode_small::<Option<LogId<NodeId>>>(&b, false).ok())
            .flatten();

        let mut ids = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_at(dir))? {
            let dirent = dirent.map_err(io_at(dir))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) {
                let id = stem.parse::<u64>().map_err(|_| Failure::Corrupt {
                    path: dirent.path(),
                    offset: 0,
                    reason: "unexpected segment file name".into(),
                })?;
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let next_segment_id = ids.last().map_or(1, |id| id + 1);

        let mut found = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            found.push(read_segment(id, &segment_path(dir, id), k + 1 == ids.len())?);
        }
        // Segments that hold nothing unpurged: a purge's deletes that a
        // crash undid, a segment whose only entries were torn, or one whose
        // creation was.
        let purged_next = purged.map_or(0, |p| p.index + 1);
        let (drop, keep): (Vec<Found>, Vec<Found>) = found.into_iter().partition(|s| {
            s.entries.is_empty() || (purged.is_some() && s.next_index() <= purged_next)
        });
        if let (Some(p), Some(first)) = (purged, keep.first()) {
            if first.first_index > purged_next {
                return Err(Failure::Corrupt {
                    path: first.path.clone(),
                    offset: HEADER_BYTES,
                    reason: format!(
                        "the log was purged up to index {} but this segment starts at index {}: entries between are missing",
                        p.index, first.first_index
                    ),
                });
            }
        }
        for pair in keep.windows(2) {
            if pair[1].first_index != pair[0].next_index() {
                return Err(Failure::Corrupt {
                    path: pair[1].path.clone(),
                    offset: HEADER_BYTES,
                    reason: format!(
                        "segment starts at index {} but the one before it ends at index {}",
                        pair[1].first_index,
                        pair[0].next_index() - 1
                    ),
                });
            }
        }

        // The log is sound: only now cut and delete.
        let mut recovered = Recovered::default();
        for seg in keep.iter().filter(|s| s.len < s.file_len) {
            let f = OpenOptions::new().write(true).open(&seg.path).map_err(io_at(&seg.path))?;
            f.set_len(seg.len).map_err(io_at(&seg.path))?;
            f.sync_all().map_err(io_at(&seg.path))?;
            recovered.cut_bytes += seg.file_len - seg.len;
            tracing::warn!(segment = %seg.path.display(), offset = seg.len, bytes = seg.file_len - seg.len, "cut a torn write from the raft log");
        }
        for seg in &drop {
            fs::remove_file(&seg.path).map_err(io_at(&seg.path))?;
            recovered.cut_bytes += seg.file_len - seg.len;
            recovered.removed_segments += 1;
        }
        if !drop.is_empty() {
            sync_dir(dir).map_err(io_at(dir))?;
        }

        let mut index = Index {
            slots: VecDeque::new(),
            first: purged_next,
            purged,
            vote,
            committed: None,
            files: BTreeMap::new(),
        };
        let mut segments = BTreeMap::new();
        for seg in keep {
            let file = Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_at(&seg.path))?,
            );
            for &(log_id, offset, len) in &seg.entries {
                if purged.is_some() && log_id.index < purged_next {
                    continue;
                }
                if index.slots.is_empty() {
                    index.first = log_id.index;
                }
                index.slots.push_back(Slot { log_id, segment: seg.id, offset, len });
            }
            index.files.insert(seg.id, (file.clone(), seg.path.clone()));
            segments.insert(
                seg.id,
                Segment { file, path: seg.path, first_index: seg.first_index, len: seg.len },
            );
        }
        // A committed id is used only if the log holds that very entry (or
        // purged it): it was written without a sync, possibly ahead of the
        // entries it names.
        index.committed = committed.filter(|c| {
            index.slot(c.index).map(|s| s.log_id == *c).unwrap_or(false)
                || purged.is_some_and(|p| c.index <= p.index)
        });
        recovered.segments = segments.len();
        recovered.entries = index.slots.len() as u64;

        let committed_path = dir.join(COMMITTED_FILE);
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&committed_path)
            .map_err(io_at(&committed_path))?;
        let writer = Writer { segments, next_segment_id, committed_file, scratch: Vec::new() };
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                sync,
                segment_bytes_max,
                writer: Mutex::new(writer),
                index: Mutex::new(index),
                acks: Arc::new(Mutex::new(Acks::default())),
                recovered,
                #[cfg(test)]
                fail_next_write: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// What opening the log found and did.
    pub fn recovered(&self) -> &Recovered {
        &self.shared.recovered
    }

    /// Before the group starts: when the log was purged past `durable`
    /// (the last snapshot its state machine holds durably) and holds no
    /// entry after the purge point, lowers the purge point to `durable`;
    /// returns whether it did.
    ///
    /// openraft 0.9 purges a replica's log up to a snapshot it installs as
    /// soon as it hands the snapshot to the state machine, not once the
    /// state machine holds it; an install cut short (a crash, or a failed
    /// install) leaves the log purged past the state machine, and the
    /// group panics when it starts (`purge_upto <= snapshot_last_log_id`).
    /// Nothing after an unfinished install was acknowledged (the leader
    /// sends entries after a snapshot only once its install is answered),
    /// so the replica may go back to its own snapshot and be sent the
    /// newer one again.
    ///
    /// Errors: the purge record cannot be rewritten.
    pub fn unpurge_to_snapshot(
        &self,
        durable: Option<LogId<NodeId>>,
    ) -> Result<bool, StorageError<NodeId>> {
        let lowered = self.shared.unpurge_to(durable).map_err(write_err)?;
        if lowered {
            tracing::warn!(
                log = %self.shared.dir.display(),
                "a raft log was purged past its state machine's snapshot (an install cut short): \
                 it goes back to the snapshot, and the newer one is sent again"
            );
        }
        Ok(lowered)
    }

    /// Why the store takes no more writes, if it does not.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.acks().poisoned.clone()
    }

    /// Segment files in use.
    pub fn segment_count(&self) -> usize {
        self.shared.writer().segments.len()
    }
}

impl Shared {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_poisoned(&self) -> Result<(), Failure> {
        match &self.acks().poisoned {
            Some(why) => Err(Failure::Refused(format!("the raft log takes no more writes: {why}"))),
            None => Ok(()),
        }
    }

    fn poison(&self, why: &Failure) {
        self.acks().poison(why.to_string());
    }

    /// Registers an append's callback; returns its sequence number.
    fn register(&self, callback: Done) -> u64 {
        let mut a = self.acks();
        let seq = a.next_seq;
        a.next_seq += 1;
        a.pending.insert(seq, Pending { callback: Some(callback), outcome: None });
        seq
    }

    fn append(
        &self,
        entries: impl Iterator<Item = Entry<TypeConfig>>,
        callback: Done,
    ) -> Result<(), Failure> {
        let mut w = self.writer();
        self.check_poisoned()?;
        let mut buf = std::mem::take(&mut w.scratch);
        buf.clear();
        let mut framed: Vec<(LogId<NodeId>, usize, u32)> = Vec::new();
        let (mut next, purged) = {
            let index = self.index();
            (index.next_index(), index.purged)
        };
        for entry in entries {
            if purged.is_some_and(|p| entry.log_id.index <= p.index) {
                // Covered by the snapshot the purge followed: nothing to keep.
                continue;
            }
            if let Some(n) = next {
                if entry.log_id.index != n {
                    return Err(Failure::Refused(format!(
                        "append of log index {} would leave a hole: the log's next index is {n}",
                        entry.log_id.index
                    )));
                }
            }
            next = Some(entry.log_id.index + 1);
            let body = rmp_serde::to_vec(&entry).map_err(|e| {
                Failure::Refused(format!("entry {} does not encode: {e}", entry.log_id))
            })?;
            if body.len() > ENTRY_BYTES_MAX {
                return Err(Failure::Refused(format!(
                    "entry {} of {} bytes is over the limit of {ENTRY_BYTES_MAX}",
                    entry.log_id,
                    body.len()
                )));
            }
            let at = buf.len();
            encode_frame(&mut buf, &body);
            framed.push((entry.log_id, at, (buf.len() - at) as u32));
        }
        let Some(&(first, _, _)) = framed.first() else {
            // Nothing to write; acknowledged in its turn.
            let seq = self.register(callback);
            complete(&self.acks, seq, Ok(()));
            w.scratch = buf;
            return Ok(());
        };
        let roll = match w.segments.values().next_back() {
            None => true,
            Some(seg) => seg.len >= self.segment_bytes_max,
        };
        if roll {
            if let Err(e) = self.roll(&mut w, first.index) {
                self.poison(&e);
                return Err(e);
            }
        }
        let (&id, seg) = w.segments.iter_mut().next_back().expect("a segment after a roll");
        let at = seg.len;
        #[cfg(test)]
        let written = if self.fail_next_write.swap(false, std::sync::atomic::Ordering::SeqCst) {
            seg.file
                .write_all_at(&buf[..buf.len() / 2], at)
                .and(Err(io::Error::from_raw_os_error(libc::ENOSPC)))
        } else {
            seg.file.write_all_at(&buf, at)
        };
        #[cfg(not(test))]
        let written = seg.file.write_all_at(&buf, at);
        if let Err(source) = written {
            let e = Failure::Io { path: seg.path.clone(), source };
            self.poison(&e);
            // Best effort: what is left is a torn tail, cut at the next open.
            let _ = seg.file.set_len(at);
            return Err(e);
        }
        seg.len += buf.len() as u64;
        let file = seg.file.clone();
        {
            let mut index = self.index();
            for &(log_id, offset, len) in &framed {
                if index.slots.is_empty() {
                    index.first = log_id.index;
                }
                index.slots.push_back(Slot {
                    log_id,
                    segment: id,
                    offset: at + offset as u64,
                    len,
                });
            }
        }
        w.scratch = buf;
        let seq = self.register(callback);
        let acks = self.acks.clone();
        let (started, entries) = (std::time::Instant::now(), framed.len());
        // Under the writer lock, so syncs are asked for in append order.
        self.sync.sync(
            file,
            Box::new(move |outcome| {
                tracing::debug!(target: super::TIMING, stage = "log_sync", entries, us = started.elapsed().as_micros() as u64);
                complete(&acks, seq, outcome)
            }),
        );
        Ok(())
    }

    /// Starts a new segment whose first entry will have `first_index`.
    fn roll(&self, w: &mut Writer, first_index: u64) -> Result<(), Failure> {
        if let Some(seg) = w.segments.values().next_back() {
            // Complete on disk before anything lies after it: only the
            // newest segment can end torn.
            seg.file.sync_data().map_err(io_at(&seg.path))?;
        }
        let id = w.next_segment_id;
        let path = segment_path(&self.dir, id);
        let made = (|| {
            let f = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
            f.write_all_at(&encode_header(first_index), 0)?;
            f.sync_all()?;
            sync_dir(&self.dir)?;
            Ok(f)
        })();
        let file = match made {
            Ok(f) => Arc::new(f),
            Err(source) => {
                let _ = fs::remove_file(&path);
                return Err(Failure::Io { path, source });
            }
        };
        w.next_segment_id += 1;
        self.index().files.insert(id, (file.clone(), path.clone()));
        w.segments.insert(id, Segment { file, path, first_index, len: HEADER_BYTES });
        Ok(())
    }

    fn truncate(&self, from: u64) -> Result<(), Failure> {
        let mut w = self.writer();
        self.check_poisoned()?;
        let (cut_segment, cut_offset) = {
            let mut index = self.index();
            let Some(last) = index.last() else { return Ok(()) };
            if from > last.log_id.index {
                return Ok(());
            }
            let from = from.max(index.first);
            let slot = *index.slot(from).expect("within the log");
            let keep = (from - index.first) as usize;
            index.slots.truncate(keep);
            (slot.segment, slot.offset)
        };
        let cut_whole = w.segments.get(&cut_segment).is_some_and(|s| s.offset_is_first(cut_offset));
        let doomed: Vec<u64> = w
            .segments
            .range(cut_segment..)
            .map(|(&id, _)| id)
            .filter(|&id| id > cut_segment || cut_whole)
            .collect();
        let result = (|| {
            if !doomed.is_empty() {
                {
                    let mut index = self.index();
                    for id in &doomed {
                        index.files.remove(id);
                    }
                }
                for id in &doomed {
                    let seg = w.segments.remove(id).expect("listed above");
                    fs::remove_file(&seg.path).map_err(io_at(&seg.path))?;
                }
                // The later segments are gone for good before the cut, so a
                // crash never leaves them after a shortened segment.
                sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            }
            if !cut_whole {
                let seg = w.segments.get_mut(&cut_segment).expect("the cut segment is live");
                seg.file.set_len(cut_offset).map_err(io_at(&seg.path))?;
                seg.file.sync_data().map_err(io_at(&seg.path))?;
                seg.len = cut_offset;
            }
            Ok(())
        })();
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn purge(&self, upto: LogId<NodeId>) -> Result<(), Failure> {
        let mut w = self.writer();
        self.check_poisoned()?;
        if self.index().purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        // Durable before any segment goes: recovery ignores (and deletes)
        // what lies at or below it.
        if let Err(e) = write_file_durably(&self.dir, PURGED_FILE, &encode_small(&upto)) {
            let e = Failure::File(e);
            self.poison(&e);
            return Err(e);
        }
        let doomed: Vec<u64> = {
            let mut index = self.index();
            index.purged = Some(upto);
            while index.slots.front().is_some_and(|s| s.log_id.index <= upto.index) {
                index.slots.pop_front();
                index.first += 1;
            }
            if index.slots.is_empty() {
                index.first = upto.index + 1;
            }
            let ids: Vec<u64> = w.segments.keys().copied().collect();
            let doomed: Vec<u64> = ids
                .iter()
                .enumerate()
                .filter(|&(k, _)| match ids.get(k + 1) {
                    // A segment's entries end where the next one's begin.
                    Some(next) => w.segments[next].first_index <= upto.index + 1,
                    None => index.slots.is_empty(),
                })
                .map(|(_, &id)| id)
                .collect();
            for id in &doomed {
                index.files.remove(id);
            }
            doomed
        };
        for id in doomed {
            let seg = w.segments.remove(&id).expect("listed above");
            if let Err(e) = fs::remove_file(&seg.path) {
                // Recovery deletes it: everything in it is purged.
                tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete a purged raft log segment");
            }
        }
        Ok(())
    }

    /// See [`LogStore::unpurge_to_snapshot`].
    fn unpurge_to(&self, durable: Option<LogId<NodeId>>) -> Result<bool, Failure> {
        let w = self.writer();
        self.check_poisoned()?;
        {
            let index = self.index();
            let Some(purged) = index.purged else { return Ok(false) };
            if durable >= Some(purged) || !index.slots.is_empty() {
                return Ok(false);
            }
        }
        match durable {
            Some(point) => write_file_durably(&self.dir, PURGED_FILE, &encode_small(&point))
                .map_err(Failure::File)?,
            None => {
                let path = self.dir.join(PURGED_FILE);
                fs::remove_file(&path).map_err(io_at(&path))?;
                crate::storage::chunk_log::sync_dir(&self.dir).map_err(io_at(&self.dir))?;
            }
        }
        // The committed id named a purged entry; it names none now.
        let path = self.dir.join(COMMITTED_FILE);
        w.committed_file.write_all_at(&encode_small(&durable), 0).map_err(io_at(&path))?;
        let mut index = self.index();
        index.purged = durable;
        index.first = durable.map_or(0, |p| p.index + 1);
        index.committed = durable;
        Ok(true)
    }

    fn save_vote(&self, vote: &Vote) -> Result<(), Failure> {
        let _w = self.writer();
        self.check_poisoned()?;
        write_file_durably(&self.dir, VOTE_FILE, &encode_small(vote)).map_err(Failure::File)?;
        self.index().vote = Some(*vote);
        Ok(())
    }

    fn save_committed(&self, committed: Option<LogId<NodeId>>) -> Result<(), Failure> {
        let w = self.writer();
        self.check_poisoned()?;
        let path = self.dir.join(COMMITTED_FILE);
        w.committed_file.write_all_at(&encode_small(&committed), 0).map_err(io_at(&path))?;
        self.index().committed = committed;
        Ok(())
    }

    /// Reads the entries with indexes in `start..end` that the log holds,
    /// stopping once they reach `budget` bytes (after at least one).
    fn read(&self, start: u64, end: u64, budget: u64) -> Result<Vec<Entry<TypeConfig>>, Failure> {
        let plan: Vec<(Slot, Arc<File>, PathBuf)> = {
            let index = self.index();
            let start = start.max(index.first);
            let end = end.min(index.first + index.slots.len() as u64);
            let mut plan = Vec::new();
            let mut bytes = 0u64;
            for i in start..end {
                if bytes >= budget && !plan.is_empty() {
                    break;
                }
                let slot = *index.slot(i).expect("within the log");
                let (file, path) =
                    index.files.get(&slot.segment).expect("live segments have files");
                bytes += u64::from(slot.len);
                plan.push((slot, file.clone(), path.clone()));
            }
            plan
        };
        let mut out = Vec::with_capacity(plan.len());
        // Entries of one segment lie back to back: one pread per segment.
        let mut k = 0;
        while k < plan.len() {
            let (first, file, _) = &plan[k];
            let mut run = k + 1;
            while run < plan.len()
                && plan[run].0.segment == first.segment
                && plan[run].0.offset == plan[run - 1].0.offset + u64::from(plan[run - 1].0.len)
            {
                run += 1;
            }
            let total = plan[run - 1].0.offset + u64::from(plan[run - 1].0.len) - first.offset;
            let mut buf = vec![0u8; total as usize];
            let read_whole = file.read_exact_at(&mut buf, first.offset);
            for (slot, file, path) in &plan[k..run] {
                let at = (slot.offset - first.offset) as usize;
                let entry = match &read_whole {
                    Ok(()) => self.decode_at(&buf[at..at + slot.len as usize], slot, path),
                    Err(_) => {
                        // A truncate may have cut the run's end: read alone.
                        let mut one = vec![0u8; slot.len as usize];
                        file.read_exact_at(&mut one, slot.offset)
                            .map_err(io_at(path))
                            .and_then(|()| self.decode_at(&one, slot, path))
                    }
                };
                match entry {
                    Ok(e) => out.push(e),
                    // Truncated or purged meanwhile: not found, which is allowed.
                    Err(_) if self.index().slot(slot.log_id.index) != Some(slot) => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
            k = run;
        }
        Ok(out)
    }

    fn decode_at(
        &self,
        frame: &[u8],
        slot: &Slot,
        path: &Path,
    ) -> Result<Entry<TypeConfig>, Failure> {
        let corrupt = |reason: String| Failure::Corrupt {
            path: path.to_owned(),
            offset: slot.offset,
            reason,
        };
        let (body, _) = decode_frame(frame).map_err(|e| corrupt(e.to_string()))?;
        let entry: Entry<TypeConfig> =
            rmp_serde::from_slice(body).map_err(|e| corrupt(format!("undecodable entry: {e}")))?;
        if entry.log_id != slot.log_id {
            return Err(corrupt(format!(
                "entry {} is not the {} the index expects",
                entry.log_id, slot.log_id
            )));
        }
        Ok(entry)
    }
}

impl Segment {
    /// Whether `offset` is where the segment's first entry lies.
    fn offset_is_first(&self, offset: u64) -> bool {
        offset == HEADER_BYTES
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Runs a write that may fsync off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Refused(format!("raft log task failed: {e}")))?
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        self.shared.read(start, end, u64::MAX).map_err(read_err)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.shared.read(start, end, READ_BATCH_BYTES).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let index = self.shared.index();
        Ok(LogState { last_purged_log_id: index.purged, last_log_id: index.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let shared = self.shared.clone();
        let vote = *vote;
        blocking(move || shared.save_vote(&vote)).await.map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        Ok(self.shared.index().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.shared.save_committed(committed).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.shared.index().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.shared.append(entries.into_iter(), Done::Raft(callback)).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let shared = self.shared.clone();
        blocking(move || shared.truncate(log_id.index)).await.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let shared = self.shared.clone();
        blocking(move || shared.purge(log_id)).await.map_err(write_err)
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;
