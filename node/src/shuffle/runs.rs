//! Sorted runs: what an [`super::table::ExtendedHashtable`] spills, and
//! the k-way merge that reads them back in key order.
//!
//! A run is a stream of CRC-framed blocks of entries in strictly
//! increasing key order, ended by a footer that counts the entries (so a
//! run cut short by a crash or a full disk is an error, never a shorter
//! answer):
//!
//! ```text
//! frame  = len u32 LE | crc32c(payload) u32 LE | payload
//! block  = 0x02 | (key_len u32 LE | partial_len u32 LE | key | partial)+
//! footer = 0x01 | entries u64 LE
//! ```
//!
//! A block holds up to [`BLOCK_BYTES_MAX`] (one entry larger than that is
//! a block of its own), so the CRC is computed over long buffers and a
//! reader makes two reads per block rather than per entry. Runs written
//! before blocks existed (a backup's range files of manifest version 1)
//! hold one entry per frame, `0x00 | key_len u32 LE | key | partial`;
//! readers read both.
//!
//! Runs live in a [`RunStore`]: files in a spill directory, or lists in a
//! Redis database (the intermediate store of seed 000, one database per
//! task), each list element a block of frames. A Redis store removes the
//! `run:*` lists of its database (and nothing else) before use and at the
//! end.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest frame payload read back: a key (at most the key limit) and a
/// partial reduction (at most a Lua reduction's limit) with room to spare.
/// A length past it is damage, not an allocation to attempt.
pub const RUN_FRAME_MAX_BYTES: usize = 64 * 1024 * 1024;

const TAG_ENTRY: u8 = 0;
const TAG_FOOTER: u8 = 1;
const TAG_BLOCK: u8 = 2;

/// Bytes a block gathers before it is written as one frame.
pub const BLOCK_BYTES_MAX: usize = 64 * 1024;

/// How long an intermediate Redis server may take to answer.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes a Redis run block gathers before it is pushed.
const REDIS_BLOCK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("spill I/O: {0}")]
    Io(#[from] io::Error),
    #[error("intermediate Redis: {0}")]
    Redis(String),
    #[error("{run} is damaged: {what}")]
    Damaged { run: String, what: String },
}

impl From<redis::RedisError> for RunError {
    fn from(e: redis::RedisError) -> Self {
        RunError::Redis(e.to_string())
    }
}

/// Where a table's runs are kept.
pub enum RunStore {
    /// One file per run in `dir` (created, and removed whole on drop).
    Disk { dir: PathBuf },
    /// One list per run, `run:N`, in Redis database `db` (flushed before
    /// use and on drop).
    Redis { con: Arc<Mutex<redis::Connection>>, db: i64 },
}

/// A run's entry: a key and its partial reduction, encoded.
pub type RunEntry = (Vec<u8>, Vec<u8>);

/// A run's name in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub u64);

impl RunStore {
    /// A store in a new directory `dir` (which must not exist: a leftover
    /// of a crash is removed first by whoever owns the parent).
    pub fn disk(dir: PathBuf) -> Result<RunStore, RunError> {
        std::fs::create_dir_all(&dir)?;
        Ok(RunStore::Disk { dir })
    }

    /// A store in Redis database `db` of the server at `url`, its `run:*`
    /// lists (a stopped job's) removed first.
    pub fn redis(url: &str, db: i64) -> Result<RunStore, RunError> {
        let client = redis::Client::open(url)?;
        let mut con = client.get_connection_with_timeout(REDIS_TIMEOUT)?;
        // A server that stalls fails the job rather than holding it.
        con.set_read_timeout(Some(REDIS_TIMEOUT))?;
        con.set_write_timeout(Some(REDIS_TIMEOUT))?;
        redis::cmd("SELECT").arg(db).query::<()>(&mut con)?;
        purge_runs(&mut con)?;
        Ok(RunStore::Redis { con: Arc::new(Mutex::new(con)), db })
    }

    fn describe(&self, id: RunId) -> String {
        match self {
            RunStore::Disk { dir } => dir.join(run_file(id)).display().to_string(),
            RunStore::Redis { db, .. } => format!("run:{} in Redis database {db}", id.0),
        }
    }

    /// A writer of run `id`, buffering `buffer` bytes (a Redis run pushes
    /// blocks of [`REDIS_BLOCK_BYTES`]).
    pub fn create(&self, id: RunId, buffer: usize) -> Result<RunWriter, RunError> {
        let sink = match self {
            RunStore::Disk { dir } => {
                return RunWriter::create_file(&dir.join(run_file(id)), buffer)
            }
            RunStore::Redis { con, .. } => Sink::Redis {
                con: con.clone(),
                list: run_list(id),
                block: Vec::with_capacity(REDIS_BLOCK_BYTES.min(buffer)),
            },
        };
        Ok(RunWriter::new(sink, buffer))
    }

    /// A reader of run `id`, reading `buffer` bytes at a time.
    pub fn open(&self, id: RunId, buffer: usize) -> Result<RunReader, RunError> {
        let name = self.describe(id);
        let source: Box<dyn Read + Send> = match self {
            RunStore::Disk { dir } => return RunReader::open_file(&dir.join(run_file(id)), buffer),
            RunStore::Redis { con, .. } => Box::new(RedisBlocks {
                con: con.clone(),
                list: run_list(id),
                next: 0,
                block: Vec::new(),
                at: 0,
            }),
        };
        Ok(RunReader::new(source, name))
    }

    /// Removes run `id`.
    pub fn remove(&self, id: RunId) -> Result<(), RunError> {
        match self {
            RunStore::Disk { dir } => match std::fs::remove_file(dir.join(run_file(id))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            RunStore::Redis { con, .. } => {
                redis::cmd("DEL").arg(run_list(id)).query::<()>(&mut *lock(con))?;
                Ok(())
            }
        }
    }

    /// Removes every run (and a disk store's directory).
    pub fn clear(&mut self) -> Result<(), RunError> {
        match self {
            RunStore::Disk { dir } => match std::fs::remove_dir_all(&*dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            RunStore::Redis { con, .. } => purge_runs(&mut lock(con)),
        }
    }

    /// The Redis database of a Redis store.
    pub fn redis_db(&self) -> Option<i64> {
        match self {
            RunStore::Redis { db, .. } => Some(*db),
            RunStore::Disk { .. } => None,
        }
    }

    /// The directory of a disk store.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            RunStore::Disk { dir } => Some(dir),
            RunStore::Redis { .. } => None,
        }
    }
}

/// Removes the `run:*` lists of the connection's database.
pub fn purge_runs(con: &mut redis::Connection) -> Result<(), RunError> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("run:*")
            .arg("COUNT")
            .arg(1000)
            .query(con)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(keys).query::<()>(con)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn lock(con: &Mutex<redis::Connection>) -> std::sync::MutexGuard<'_, redis::Connection> {
    con.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_file(id: RunId) -> String {
    format!("run-{:06}", id.0)
}

fn run_list(id: RunId) -> String {
    format!("run:{}", id.0)
}

enum Sink {
    File(BufWriter<File>),
    Redis { con: Arc<Mutex<redis::Connection>>, list: String, block: Vec<u8> },
}

/// Writes one run: entries in strictly increasing key order, then
/// [`RunWriter::finish`].
pub struct RunWriter {
    sink: Sink,
    entries: u64,
    bytes: u64,
    last: Option<Vec<u8>>,
    /// The block being gathered (its tag first), and the bytes it
    /// gathers before it is written.
    block: Vec<u8>,
    block_max: usize,
}

impl RunWriter {
    /// A run written to a new file at `path` (an error if it exists),
    /// buffering `buffer` bytes.
    pub fn create_file(path: &Path, buffer: usize) -> Result<RunWriter, RunError> {
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let sink = Sink::File(BufWriter::with_capacity(buffer, f));
        Ok(RunWriter::new(sink, buffer))
    }

    /// A writer of blocks of about `buffer` bytes (4 KiB to
    /// [`BLOCK_BYTES_MAX`]): a reader holds one block at a time.
    fn new(sink: Sink, buffer: usize) -> RunWriter {
        let block_max = buffer.clamp(4096, BLOCK_BYTES_MAX);
        RunWriter { sink, entries: 0, bytes: 0, last: None, block: Vec::new(), block_max }
    }

    /// Appends an entry; `key` must sort after the previous one.
    pub fn push(&mut self, key: &[u8], partial: &[u8]) -> Result<(), RunError> {
        debug_assert!(self.last.as_deref().is_none_or(|l| l < key), "run keys must increase");
        if cfg!(debug_assertions) {
            self.last = Some(key.to_vec());
        }
        let len = 8 + key.len() + partial.len();
        if self.block.len() > 1 && self.block.len() + len > self.block_max {
            self.write_block()?;
        }
        if self.block.is_empty() {
            self.block.reserve(self.block_max.max(len + 1));
            self.block.push(TAG_BLOCK);
        }
        self.block.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.block.extend_from_slice(&(partial.len() as u32).to_le_bytes());
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(partial);
        self.entries += 1;
        Ok(())
    }

    /// Writes the block gathered so far as one frame.
    fn write_block(&mut self) -> Result<(), RunError> {
        if self.block.len() > 1 {
            let block = std::mem::take(&mut self.block);
            self.frame(&[&block])?;
            self.block = block;
        }
        self.block.clear();
        Ok(())
    }

    /// Writes one frame whose payload is `parts` end to end.
    fn frame(&mut self, parts: &[&[u8]]) -> Result<(), RunError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let crc = parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p));
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&(len as u32).to_le_bytes());
        head[4..].copy_from_slice(&crc.to_le_bytes());
        self.bytes += (head.len() + len) as u64;
        match &mut self.sink {
            Sink::File(w) => {
                w.write_all(&head)?;
                for p in parts {
                    w.write_all(p)?;
                }
            }
            Sink::Redis { block, .. } => {
                block.extend_from_slice(&head);
                for p in parts {
                    block.extend_from_slice(p);
                }
                if block.len() >= REDIS_BLOCK_BYTES {
                    self.push_block()?;
                }
            }
        }
        Ok(())
    }

    fn push_block(&mut self) -> Result<(), RunError> {
        if let Sink::Redis { con, list, block } = &mut self.sink {
            if !block.is_empty() {
                redis::cmd("RPUSH").arg(&*list).arg(&block[..]).query::<()>(&mut *lock(con))?;
                block.clear();
            }
        }
        Ok(())
    }

    /// Writes the footer and flushes; returns the run's bytes.
    pub fn finish(self) -> Result<u64, RunError> {
        self.finish_with(false)
    }

    /// As [`RunWriter::finish`], and a file run is on disk (fsynced) when
    /// it returns.
    pub fn finish_durable(self) -> Result<u64, RunError> {
        self.finish_with(true)
    }

    fn finish_with(mut self, sync: bool) -> Result<u64, RunError> {
        self.write_block()?;
        let count = self.entries.to_le_bytes();
        self.frame(&[&[TAG_FOOTER], &count])?;
        self.push_block()?;
        if let Sink::File(w) = &mut self.sink {
            w.flush()?;
            if sync {
                w.get_ref().sync_all()?;
            }
        }
        Ok(self.bytes)
    }
}

/// A Redis run's blocks as one byte stream (`LINDEX` one block at a time).
struct RedisBlocks {
    con: Arc<Mutex<redis::Connection>>,
    list: String,
    next: i64,
    block: Vec<u8>,
    at: usize,
}

impl Read for RedisBlocks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.block.len() {
            let block: Option<Vec<u8>> = redis::cmd("LINDEX")
                .arg(&self.list)
                .arg(self.next)
                .query(&mut *lock(&self.con))
                .map_err(|e| io::Error::other(format!("intermediate Redis: {e}")))?;
            let Some(block) = block else { return Ok(0) };
            self.next += 1;
            self.block = block;
            self.at = 0;
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads one run back, checking every frame's CRC, the key order and the
/// footer.
pub struct RunReader {
    source: Box<dyn Read + Send>,
    name: String,
    entries: u64,
    done: bool,
    /// The current frame's payload; `at`: where its next entry starts.
    payload: Vec<u8>,
    at: usize,
    /// The current entry's key and partial in `payload`.
    key: std::ops::Range<usize>,
    partial: std::ops::Range<usize>,
    /// The key before the current frame's first entry.
    last: Vec<u8>,
}

impl RunReader {
    /// A reader of the run in file `path`, buffering up to `buffer` bytes
    /// (4 KiB at most) besides the block it holds.
    pub fn open_file(path: &Path, buffer: usize) -> Result<RunReader, RunError> {
        let f = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let name = path.display().to_string();
        // Blocks larger than the buffer are read straight into the frame,
        // past it: a small buffer serves the frame heads (and runs of one
        // entry per frame).
        Ok(RunReader::new(Box::new(BufReader::with_capacity(buffer.min(4096), f)), name))
    }

    fn new(source: Box<dyn Read + Send>, name: String) -> RunReader {
        RunReader {
            source,
            name,
            entries: 0,
            done: false,
            payload: Vec::new(),
            at: 0,
            key: 0..0,
            partial: 0..0,
            last: Vec::new(),
        }
    }

    fn damaged(&self, what: impl Into<String>) -> RunError {
        RunError::Damaged { run: self.name.clone(), what: what.into() }
    }

    /// The next entry `(key, partial)`, or `None` after the footer.
    pub fn next_entry(&mut self) -> Result<Option<RunEntry>, RunError> {
        Ok(self.advance()?.then(|| (self.key().to_vec(), self.partial().to_vec())))
    }

    /// The current entry's key (after [`RunReader::advance`] returned true).
    pub fn key(&self) -> &[u8] {
        &self.payload[self.key.clone()]
    }

    /// The current entry's partial reduction.
    pub fn partial(&self) -> &[u8] {
        &self.payload[self.partial.clone()]
    }

    /// Moves to the next entry ([`RunReader::key`], [`RunReader::partial`]);
    /// false after the footer.
    pub fn advance(&mut self) -> Result<bool, RunError> {
        if self.done {
            return Ok(false);
        }
        if self.at < self.payload.len() {
            return self.block_entry();
        }
        if self.entries > 0 {
            self.last.clear();
            self.last.extend_from_slice(&self.payload[self.key.clone()]);
        }
        self.read_frame()?;
        match self.payload[0] {
            TAG_FOOTER if self.payload.len() == 9 => {
                let n = u64::from_le_bytes(self.payload[1..9].try_into().expect("8 bytes"));
                if n != self.entries {
                    return Err(self.damaged(format!(
                        "its footer counts {n} entries, it holds {}",
                        self.entries
                    )));
                }
                // Nothing may follow the footer.
                let mut more = [0u8; 1];
                if self.source.read(&mut more)? > 0 {
                    return Err(self.damaged("bytes follow its footer"));
                }
                self.done = true;
                Ok(false)
            }
            TAG_BLOCK if self.payload.len() > 1 => {
                self.at = 1;
                self.block_entry()
            }
            TAG_ENTRY if self.payload.len() >= 5 => {
                let klen =
                    u32::from_le_bytes(self.payload[1..5].try_into().expect("4 bytes")) as usize;
                if 5 + klen > self.payload.len() {
                    return Err(self.damaged("an entry's key runs past its frame"));
                }
                self.at = self.payload.len();
                self.entry(5..5 + klen, 5 + klen..self.payload.len())
            }
            t => Err(self.damaged(format!("a frame of unknown kind {t}"))),
        }
    }

    /// The entry at `at` in the current block.
    fn block_entry(&mut self) -> Result<bool, RunError> {
        let rest = &self.payload[self.at..];
        if rest.len() < 8 {
            return Err(self.damaged("a block ends inside an entry's lengths"));
        }
        let klen = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let plen = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes")) as usize;
        if klen + plen > rest.len() - 8 {
            return Err(self.damaged("an entry runs past its block"));
        }
        let k = self.at + 8;
        self.at = k + klen + plen;
        self.entry(k..k + klen, k + klen..self.at)
    }

    /// Makes `key` and `partial` (in the payload) the current entry,
    /// checking that the key sorts after the previous one.
    fn entry(
        &mut self,
        key: std::ops::Range<usize>,
        partial: std::ops::Range<usize>,
    ) -> Result<bool, RunError> {
        if self.entries > 0 {
            // The previous key: in this frame (a key never starts at 0), or
            // kept from the one before.
            let prev =
                if self.key.start > 0 { &self.payload[self.key.clone()] } else { &self.last[..] };
            if prev >= &self.payload[key.clone()] {
                return Err(self.damaged("its keys are out of order"));
            }
        }
        self.key = key;
        self.partial = partial;
        self.entries += 1;
        Ok(true)
    }

    /// Reads the next frame into the payload, checking its CRC.
    fn read_frame(&mut self) -> Result<(), RunError> {
        let mut head = [0u8; 8];
        if let Err(e) = self.source.read_exact(&mut head) {
            return Err(match e.kind() {
                io::ErrorKind::UnexpectedEof => self.damaged("it ends before its footer"),
                _ => e.into(),
            });
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > RUN_FRAME_MAX_BYTES {
            return Err(self.damaged(format!("a frame of {len} bytes")));
        }
        self.payload.clear();
        self.payload.resize(len, 0);
        self.at = 0;
        self.key = 0..0;
        if let Err(e) = self.source.read_exact(&mut self.payload) {
            return Err(match e.kind() {
                io::ErrorKind::UnexpectedEof => self.damaged("it ends inside a frame"),
                _ => e.into(),
            });
        }
        if crc32c::crc32c(&self.payload) != crc {
            return Err(self.damaged("a frame's CRC does not match"));
        }
        Ok(())
    }
}

/// Removes what jobs left under `dir` when their node stopped without
/// finishing them (every entry: the directory belongs to jobs alone).
pub fn remove_leftovers(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as runs write them.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn footer(entries: u64) -> Vec<u8> {
        let mut f = vec![TAG_FOOTER];
        f.extend_from_slice(&entries.to_le_bytes());
        frame(&f)
    }

    fn read_all(bytes: Vec<u8>) -> Result<Vec<RunEntry>, RunError> {
        let mut r = RunReader::new(Box::new(io::Cursor::new(bytes)), "test run".into());
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    fn entries(n: u32) -> Vec<RunEntry> {
        (0..n)
            .map(|i| {
                let key = format!("key\0{i:06}").into_bytes();
                // Now and then a partial larger than a block.
                let len = if i % 997 == 3 { BLOCK_BYTES_MAX + 10 } else { (i % 7) as usize };
                (key, vec![(i % 251) as u8; len])
            })
            .collect()
    }

    fn written(entries: &[RunEntry]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run");
        let mut w = RunWriter::create_file(&path, 4096).expect("create");
        for (k, p) in entries {
            w.push(k, p).expect("push");
        }
        let bytes = w.finish().expect("finish");
        let file = std::fs::read(&path).expect("read");
        assert_eq!(bytes, file.len() as u64);
        file
    }

    #[test]
    fn blocks_read_back_as_written() {
        let want = entries(5000);
        let file = written(&want);
        assert!(file.len() < want.iter().map(|(k, p)| k.len() + p.len() + 13).sum::<usize>());
        assert_eq!(read_all(file).expect("read"), want);
        assert_eq!(read_all(written(&[])).expect("read"), Vec::<RunEntry>::new());
    }

    /// Range files of version-1 backups hold one entry per frame; they
    /// still read, and their order is still checked.
    #[test]
    fn runs_of_one_entry_per_frame_still_read() {
        let want = entries(300);
        // A version-1 run: a frame per entry.
        let v1 = |entries: &[RunEntry]| {
            let mut file = Vec::new();
            for (k, p) in entries {
                let mut payload = vec![TAG_ENTRY];
                payload.extend_from_slice(&(k.len() as u32).to_le_bytes());
                payload.extend_from_slice(k);
                payload.extend_from_slice(p);
                file.extend(frame(&payload));
            }
            file.extend(footer(entries.len() as u64));
            file
        };
        assert_eq!(read_all(v1(&want)).expect("read"), want);
        let bad = v1(&[want[1].clone(), want[0].clone()]);
        assert!(read_all(bad).expect_err("out of order").to_string().contains("out of order"));
    }

    /// Damage inside a block with a valid CRC (a writer bug, or a crafted
    /// file) is refused as well as damage the CRC catches.
    #[test]
    fn damaged_blocks_are_refused() {
        let block = |items: &[(&[u8], &[u8])], cut: usize| {
            let mut b = vec![TAG_BLOCK];
            for (k, p) in items {
                b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                b.extend_from_slice(&(p.len() as u32).to_le_bytes());
                b.extend_from_slice(k);
                b.extend_from_slice(p);
            }
            b.truncate(b.len() - cut);
            b
        };
        let cases: [(Vec<u8>, &str); 5] = [
            (block(&[(b"a", b"1"), (b"a", b"2")], 0), "out of order"),
            (block(&[(b"b", b"1"), (b"a", b"2")], 0), "out of order"),
            (block(&[(b"a", b"1"), (b"b", b"2")], 1), "runs past its block"),
            (block(&[(b"a", b"1"), (b"b", b"")], 3), "inside an entry's lengths"),
            (vec![TAG_BLOCK], "unknown kind"),
        ];
        for (payload, want) in cases {
            let mut file = frame(&payload);
            file.extend(footer(2));
            let err = read_all(file).expect_err(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Out of order across two blocks.
        let mut file = frame(&block(&[(b"a", b""), (b"c", b"")], 0));
        file.extend(frame(&block(&[(b"b", b"")], 0)));
        file.extend(footer(3));
        assert!(read_all(file).expect_err("order").to_string().contains("out of order"));
        // A flipped bit anywhere in a written run fails its CRC.
        let mut file = written(&entries(2000));
        let at = file.len() / 2;
        file[at] ^= 1;
        assert!(read_all(file).expect_err("flip").to_string().contains("CRC"));
    }
}
