//! The node's intent log: batches that span chunks, recorded whole before
//! any chunk applies its part, so that a crash leaves all of such a batch
//! or none of it.
//!
//! A batch written to several chunks takes one seq for all its parts
//! ([`super::clock::SeqClock::allocate_parts`]). Its [`Intent`] (the seq
//! and every part's rows) is appended here and made durable first; then
//! each chunk applies and logs its part under that seq, and once every
//! part is durable the intent is [`IntentLog::done`]. After a crash, the
//! intents still in the log are the batches whose parts may not all be
//! durable: a part whose chunk's log holds a seq at or above the intent's
//! has been applied (a chunk logs seqs in order, and the parts were
//! applied with every chunk of the batch locked, so nothing later reached
//! the chunk first); the others are applied again, and the intent is done.
//!
//! ```text
//! +---------+-----------+-----------------------------------+
//! | len u32 | crc32c u32| body: MessagePack of an Intent    |
//! +---------+-----------+-----------------------------------+
//!             crc covers the body; len counts its bytes
//! ```
//!
//! Integers are little-endian. Intents are appended one at a time, each
//! made durable before the next, so only the last one can be torn by a
//! crash: a torn last record (cut short, zeros where it should be, or
//! failing its checksum) is cut off with a log line (it was not durable,
//! so its batch was never applied anywhere); a damaged record before the
//! last is corruption, and opening fails. An append that fails (a full
//! disk) is cut back off at once, so what follows is never written after
//! a partial record. The file is emptied whenever no intent is pending, so
//! it holds only the batches in flight.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use monotable_proto::WriteOp;
use serde::{Deserialize, Serialize};

/// Bytes before each record's body.
const RECORD_PREFIX_BYTES: usize = 8;
/// The largest body a record may have (a transaction's writes are bounded
/// far below it); a larger length read back is corruption.
const RECORD_BODY_MAX_BYTES: usize = 1 << 30;

/// One batch spanning chunks: its seq and the rows of each range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub seq: u64,
    pub parts: Vec<(String, Vec<WriteOp>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("intent log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("intent log {path} is damaged at byte {offset}: {what}")]
    Damaged { path: PathBuf, offset: u64, what: String },
}

/// The open intent log (see the module doc).
#[derive(Debug)]
pub struct IntentLog {
    path: PathBuf,
    file: File,
    /// Seqs recorded and not yet done.
    pending: BTreeSet<u64>,
    /// The length of the file's good records: where the next one goes.
    len: u64,
    /// A failed append could not be cut back off: no more appends until a
    /// restart (whose open cuts the partial record as torn).
    broken: bool,
}

impl IntentLog {
    /// Opens the log at `path`, creating it if missing, and returns the
    /// intents it holds: batches whose parts may not all be durable, for
    /// the caller to complete and then mark [`IntentLog::done`]. A torn
    /// last record is cut off.
    ///
    /// # Errors
    /// [`IntentError::Damaged`] when a record other than the last fails
    /// its check; [`IntentError::Io`] when the file cannot be read or cut.
    pub fn open(path: &Path) -> Result<(IntentLog, Vec<Intent>), IntentError> {
        let io = |source| IntentError::Io { path: path.to_owned(), source };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut intents = Vec::new();
        let mut offset = 0usize;
        while offset < bytes.len() {
            match decode_record(&bytes[offset..]) {
                Ok((intent, used)) => {
                    intents.push(intent);
                    offset += used;
                }
                Err(Decode::Torn) => {
                    tracing::warn!(
                        path = %path.display(),
                        offset,
                        bytes = bytes.len() - offset,
                        "cutting off an intent record a crash left unfinished (it was never applied)"
                    );
                    break;
                }
                Err(Decode::Damaged(what)) => {
                    return Err(IntentError::Damaged {
                        path: path.to_owned(),
                        offset: offset as u64,
                        what,
                    })
                }
            }
        }
        if offset < bytes.len() {
            file.set_len(offset as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let pending = intents.iter().map(|i| i.seq).collect();
        let log =
            IntentLog { path: path.to_owned(), file, pending, len: offset as u64, broken: false };
        Ok((log, intents))
    }

    fn io(&self, source: std::io::Error) -> IntentError {
        IntentError::Io { path: self.path.clone(), source }
    }

    /// Appends `intent` and makes it durable before returning: only then
    /// may a chunk apply a part of it.
    ///
    /// # Errors
    /// [`IntentError::Io`] when it could not be written or synced; the
    /// batch must then not be applied.
    pub fn record(&mut self, intent: &Intent) -> Result<(), IntentError> {
        let body = rmp_serde::to_vec(intent).expect("an intent always encodes");
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&l| (l as usize) <= RECORD_BODY_MAX_BYTES)
            .ok_or_else(|| {
                self.io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("an intent of {} bytes is over the limit", body.len()),
                ))
            })?;
        if self.broken {
            return Err(self.io(std::io::Error::other(
                "an earlier append failed and could not be cut off; restart the node",
            )));
        }
        let mut record = Vec::with_capacity(RECORD_PREFIX_BYTES + body.len());
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        record.extend_from_slice(&body);
        self.append(&record, |file, bytes| {
            file.write_all(bytes)?;
            file.sync_data()
        })?;
        self.pending.insert(intent.seq);
        Ok(())
    }

    /// Appends `record` with `write` (all of it, durably), or cuts the file
    /// back to its good records when that fails.
    fn append(
        &mut self,
        record: &[u8],
        write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), IntentError> {
        if let Err(e) = write(&mut self.file, record) {
            // Cut back to the good records, or no append until a restart.
            // Postmortem: a partial record left by a full disk stayed, the
            // next intents went after it, and a crash then made the start
            // refuse the log as damaged.
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            if cut.is_err() {
                self.broken = true;
            }
            return Err(self.io(e));
        }
        self.len += record.len() as u64;
        Ok(())
    }

    /// Every part of the batch `seq` is durable: the intent is no longer
    /// needed. The file is emptied once no intent is pending (not synced:
    /// an intent that comes back after a crash finds its parts applied).
    ///
    /// # Errors
    /// [`IntentError::Io`] when the file could not be emptied.
    pub fn done(&mut self, seq: u64) -> Result<(), IntentError> {
        self.pending.remove(&seq);
        if self.pending.is_empty() {
            self.file.set_len(0).map_err(|e| self.io(e))?;
            self.file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
            self.len = 0;
        }
        Ok(())
    }

    /// Seqs recorded and not yet done.
    pub fn pending(&self) -> impl Iterator<Item = u64> + '_ {
        self.pending.iter().copied()
    }
}

enum Decode {
    /// The bytes end inside the record: a write cut short by a crash.
    Torn,
    Damaged(String),
}

/// One record from the start of `buf`: the intent and the bytes it took.
fn decode_record(buf: &[u8]) -> Result<(Intent, usize), Decode> {
    if buf.len() < RECORD_PREFIX_BYTES {
        return Err(Decode::Torn);
    }
    // Zeros to the end: a file grown by a crash before its bytes landed.
    if buf.iter().all(|&b| b == 0) {
        return Err(Decode::Torn);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len == 0 {
        return Err(Decode::Damaged("a record of 0 bytes".into()));
    }
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > RECORD_BODY_MAX_BYTES {
        return Err(Decode::Damaged(format!("a record length of {len} bytes")));
    }
    let end = RECORD_PREFIX_BYTES + len;
    if buf.len() < end {
        return Err(Decode::Torn);
    }
    let body = &buf[RECORD_PREFIX_BYTES..end];
    if crc32c::crc32c(body) != crc {
        // Only the last record can be torn: one followed by more bytes
        // was complete once.
        return Err(if end == buf.len() {
            Decode::Torn
        } else {
            Decode::Damaged("a record fails its checksum".into())
        });
    }
    let intent = rmp_serde::from_slice(body)
        .map_err(|e| Decode::Damaged(format!("a record does not decode: {e}")))?;
    Ok((intent, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(seq: u64) -> Intent {
        let put = WriteOp::Put { key: vec![0, seq as u8].into(), value: vec![0xff; 100].into() };
        let del = WriteOp::Delete { key: b"gone".to_vec().into() };
        Intent { seq, parts: vec![("redis.0".into(), vec![put]), ("redis.3".into(), vec![del])] }
    }

    #[test]
    fn intents_not_done_come_back_and_done_ones_do_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("intents");
        let (mut log, found) = IntentLog::open(&path).expect("open");
        assert!(found.is_empty());
        for seq in [5, 6, 7] {
            log.record(&intent(seq)).expect("record");
        }
        log.done(6).expect("done");
        drop(log);
        let (mut log, found) = IntentLog::open(&path).expect("reopen");
        // Done is not written down: 6 comes back while others are pending.
        assert_eq!(found, vec![intent(5), intent(6), intent(7)]);
        for seq in [5, 6, 7] {
            log.done(seq).expect("done");
        }
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
        log.record(&intent(9)).expect("record after emptying");
        drop(log);
        assert_eq!(IntentLog::open(&path).expect("reopen").1, vec![intent(9)]);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("intents");
        let (mut log, _) = IntentLog::open(&path).expect("open");
        log.record(&intent(1)).expect("record");
        log.record(&intent(2)).expect("record");
        drop(log);
        let whole = std::fs::read(&path).expect("read");
        let first_len = whole.len() / 2;
        // Every cut inside the second record: the first survives alone.
        for cut in first_len..whole.len() {
            std::fs::write(&path, &whole[..cut]).expect("write");
            let (_, found) = IntentLog::open(&path).expect("torn tail");
            assert_eq!(found, vec![intent(1)], "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, first_len);
        }
        // A flipped byte in the last record: torn. In the first: damaged.
        let mut flipped = whole.clone();
        flipped[whole.len() - 3] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert_eq!(IntentLog::open(&path).expect("torn").1, vec![intent(1)]);
        let mut flipped = whole.clone();
        flipped[20] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        let e = IntentLog::open(&path).expect_err("damaged");
        assert!(matches!(e, IntentError::Damaged { offset: 0, .. }), "{e}");
        // Zeros after the records (a file grown before its bytes landed):
        // torn, cut off.
        // Postmortem: a zero header read as an empty record refused the start.
        let mut zeros = whole.clone();
        zeros.extend([0u8; 100]);
        std::fs::write(&path, &zeros).expect("write");
        assert_eq!(IntentLog::open(&path).expect("zero tail").1, vec![intent(1), intent(2)]);
        assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, whole.len());
        std::fs::write(&path, [0u8; 50]).expect("write");
        assert!(IntentLog::open(&path).expect("all zeros").1.is_empty());
    }

    /// Postmortem: an append that failed (a full disk) left its partial
    /// bytes; later intents went after them, and a crash made the log
    /// unreadable. A failed append is cut back off.
    #[test]
    fn a_failed_append_leaves_no_partial_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("intents");
        let (mut log, _) = IntentLog::open(&path).expect("open");
        log.record(&intent(1)).expect("record");
        let good = std::fs::metadata(&path).expect("meta").len();
        // An intent over the size limit fails before writing; a write that
        // fails midway is simulated by a partial record the log must cut.
        // A write that fails midway (a full disk) after half the bytes.
        let failed =
            log.append(b"\x40\x00\x00\x00\x01\x02\x03\x04partial record", |file, bytes| {
                file.write_all(&bytes[..bytes.len() / 2])?;
                Err(std::io::Error::other("no space left on device"))
            });
        assert!(failed.is_err());
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), good);
        log.record(&intent(3)).expect("record after a failure");
        drop(log);
        assert_eq!(IntentLog::open(&path).expect("reopen").1, vec![intent(1), intent(3)]);
    }
}
