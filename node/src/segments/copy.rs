//! The reader's side of segment reads: regions copied into staging files,
//! every entry verified, bad reads retried; then folded into the records
//! they hold.
//!
//! A region is read in order, [`READS_IN_FLIGHT`] reads of at most
//! [`SEGMENT_READ_MAX_BYTES`] at a time. The bytes are checked as they
//! arrive: the segment header (magic, id, CRC), then entry after entry
//! (length in bounds, CRC32C of the body, known flags). Only verified
//! bytes reach the staging file, so a staged copy is always a verified
//! prefix of its region, and a later copy of the same region (a newer
//! snapshot listing it, longer) goes on from its end.
//!
//! A read that brings damaged bytes (a checksum that fails, a length out
//! of bounds, an entry cut by the region's end) is dropped with everything
//! read after it, and the bytes are read again from the first bad entry,
//! up to [`READ_RETRIES`] times in a row without progress. A short read
//! means the owner has not written those bytes yet; the reader waits for
//! them up to [`WRITE_WAIT_MAX_MS`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ReadError, RegionRef, SegmentReader, SEGMENT_READ_MAX_BYTES};
use crate::storage::chunk_log::{check_header, segment_file_name, sync_dir, SEGMENT_HEADER_BYTES};
use crate::storage::entry::{decode_entry, EntryError};

/// Reads of one region in flight at once.
pub const READS_IN_FLIGHT: usize = 4;

/// Damaged or failed reads in a row, without a verified byte between
/// them, after which a copy gives up.
pub const READ_RETRIES: u32 = 5;

/// How long a reader waits for bytes the owner listed but has not written
/// to its file yet.
pub const WRITE_WAIT_MAX_MS: u64 = 10_000;

/// Pause before reading again after a failed or short read.
const RETRY_PAUSE_MS: u64 = 10;

/// Why a copy failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The region's bytes failed verification [`READ_RETRIES`] times in a
    /// row at the same place.
    #[error("segment {segment} of node {owner}: damaged at byte {offset} after {READ_RETRIES} reads: {reason}")]
    Corrupt { owner: u64, segment: u32, offset: u64, reason: String },
    /// The owner did not write bytes it listed within [`WRITE_WAIT_MAX_MS`].
    #[error("segment {segment} of node {owner}: byte {offset} was not written within {WRITE_WAIT_MAX_MS} ms")]
    Stalled { owner: u64, segment: u32, offset: u64 },
    /// The staging directory failed.
    #[error("staging a copy in {path}: {reason}")]
    Staging { path: PathBuf, reason: String },
}

/// How far a copy is, for `cluster status`; shared with whoever shows it.
#[derive(Debug)]
pub struct CopyProgress {
    /// The node copied from.
    pub source: u64,
    pub started: Instant,
    copied_bytes: AtomicU64,
    total_bytes: AtomicU64,
    /// Bytes that were staged already when the copy began (copied by an
    /// earlier one), not counted in its rate.
    reused_bytes: AtomicU64,
}

impl CopyProgress {
    pub fn new(source: u64) -> Self {
        CopyProgress {
            source,
            started: Instant::now(),
            copied_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            reused_bytes: AtomicU64::new(0),
        }
    }

    /// Bytes copied and verified so far (those staged before included).
    pub fn copied_bytes(&self) -> u64 {
        self.copied_bytes.load(Ordering::Relaxed)
    }

    /// Bytes the copy needs in all.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Bytes per second read by this copy so far.
    pub fn rate_bytes_per_sec(&self) -> u64 {
        let read = self.copied_bytes().saturating_sub(self.reused_bytes.load(Ordering::Relaxed));
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        (read as f64 / secs) as u64
    }
}

/// A staged copy of one region: its first `verified` bytes, checked.
struct Staged {
    path: PathBuf,
    file: File,
    verified: u64,
}

/// Copies of regions on the reader's disk, one file per region, kept so
/// that a later copy of the same regions goes on from what this one
/// copied. The directory is emptied when the staging opens (a copy left
/// by an earlier process names regions of an owner incarnation that may be
/// gone) and when it drops.
pub struct Staging {
    dir: PathBuf,
    copies: HashMap<(u64, u64), Staged>,
    files: u64,
}

impl Staging {
    /// Opens (and empties) the staging directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, CopyError> {
        let err =
            |e: std::io::Error| CopyError::Staging { path: dir.to_owned(), reason: e.to_string() };
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        std::fs::create_dir_all(dir).map_err(err)?;
        Ok(Staging { dir: dir.to_owned(), copies: HashMap::new(), files: 0 })
    }

    fn staged(&mut self, region: &RegionRef) -> Result<&mut Staged, CopyError> {
        let key = (region.incarnation, region.region);
        if !self.copies.contains_key(&key) {
            self.files += 1;
            let path = self.dir.join(format!("{:010}-{}.copy", region.segment, self.files));
            let file =
                OpenOptions::new().create_new(true).read(true).write(true).open(&path).map_err(
                    |e| CopyError::Staging { path: path.clone(), reason: e.to_string() },
                )?;
            self.copies.insert(key, Staged { path, file, verified: 0 });
        }
        Ok(self.copies.get_mut(&key).expect("inserted above"))
    }

    /// Drops the staged copies of regions not in `keep`.
    fn retain(&mut self, keep: &[RegionRef]) {
        let wanted: std::collections::HashSet<(u64, u64)> =
            keep.iter().map(|r| (r.incarnation, r.region)).collect();
        self.copies.retain(|key, staged| {
            let kept = wanted.contains(key);
            if !kept {
                let _ = std::fs::remove_file(&staged.path);
            }
            kept
        });
    }

    /// Bytes of `regions` staged already.
    pub fn staged_bytes(&self, regions: &[RegionRef]) -> u64 {
        regions
            .iter()
            .map(|r| {
                self.copies.get(&(r.incarnation, r.region)).map_or(0, |s| s.verified.min(r.len))
            })
            .sum()
    }

    /// Copies `regions` through `reader` (going on from what is staged of
    /// them) and drops staged copies of other regions; `progress` follows
    /// it.
    ///
    /// Errors: a read the owner refuses ([`ReadError::Gone`],
    /// [`ReadError::OutOfBounds`]); damage or failures [`READ_RETRIES`]
    /// times in a row; bytes not written in time; the staging directory.
    pub async fn copy(
        &mut self,
        reader: &Arc<dyn SegmentReader>,
        regions: &[RegionRef],
        progress: &CopyProgress,
    ) -> Result<(), CopyError> {
        self.retain(regions);
        let total: u64 = regions.iter().map(|r| r.len).sum();
        let staged = self.staged_bytes(regions);
        progress.total_bytes.store(total, Ordering::Relaxed);
        progress.copied_bytes.store(staged, Ordering::Relaxed);
        progress.reused_bytes.store(staged, Ordering::Relaxed);
        for region in regions {
            let staged = self.staged(region)?;
            copy_region(reader, region, staged, progress).await?;
        }
        Ok(())
    }

    /// Moves the staged copies of `regions` (copied in full by
    /// [`Staging::copy`], a log's consecutive segments, lowest id first)
    /// into the directory `dir` under their segment file names, each cut
    /// to its region's length and synced (the directory too); returns the
    /// first and last segment ids. `None`, with nothing moved, when they
    /// cannot make a log (not consecutive, not staged in full, shorter
    /// than a segment header): the caller folds them instead.
    ///
    /// Errors: a move or sync failed part way (the regions moved are no
    /// longer staged; a later copy reads them again).
    pub fn place(
        &mut self,
        regions: &[RegionRef],
        dir: &Path,
    ) -> Result<Option<(u32, u32)>, CopyError> {
        let (Some(first), Some(last)) = (regions.first(), regions.last()) else {
            return Ok(None);
        };
        let loggable = regions.windows(2).all(|w| w[1].segment == w[0].segment.wrapping_add(1))
            && regions.iter().all(|r| {
                r.len >= SEGMENT_HEADER_BYTES
                    && self
                        .copies
                        .get(&(r.incarnation, r.region))
                        .is_some_and(|s| s.verified >= r.len)
            });
        if !loggable {
            return Ok(None);
        }
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| CopyError::Staging { path, reason: e.to_string() }
        };
        for r in regions {
            let staged = self.copies.remove(&(r.incarnation, r.region)).expect("checked above");
            let to = dir.join(segment_file_name(r.segment));
            if staged.verified > r.len {
                staged.file.set_len(r.len).map_err(failed(&staged.path))?;
            }
            staged.file.sync_data().map_err(failed(&staged.path))?;
            std::fs::rename(&staged.path, &to).map_err(failed(&to))?;
        }
        sync_dir(dir).map_err(failed(dir))?;
        Ok(Some((first.segment, last.segment)))
    }

    /// The records `regions` hold (copied in full by [`Staging::copy`],
    /// listed in log order: ascending segment ids): for each key inside
    /// `[start, end)` its newest entry (highest seq, the last in log order
    /// among equal seqs), unless that is a delete; in key order. The rows
    /// are slices of the staged files, mapped read-only: nothing is copied
    /// until they are applied.
    ///
    /// Errors: a region not staged in full, or a staged file that cannot
    /// be read back or fails its checks (damaged on this node's disk).
    pub fn fold(
        &mut self,
        regions: &[RegionRef],
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Result<FoldedRows, CopyError> {
        let mut maps = Vec::with_capacity(regions.len());
        for region in regions {
            let staged = self.staged(region)?;
            let staging_err =
                |reason: String| CopyError::Staging { path: staged.path.clone(), reason };
            if staged.verified < region.len {
                return Err(staging_err(format!(
                    "{} of {} bytes staged",
                    staged.verified, region.len
                )));
            }
            if region.len == 0 {
                continue;
            }
            // SAFETY: nothing writes a staged file once it is verified in
            // full (only its copy writes it, and that copy is done); the
            // mapping outlives the file's removal.
            let map =
                unsafe { memmap2::MmapOptions::new().len(region.len as usize).map(&staged.file) }
                    .map_err(|e| staging_err(e.to_string()))?;
            let (verified, damage) = verify(&map, 0, region.segment);
            if let Some((offset, reason)) = damage.or_else(|| {
                (verified < map.len()).then(|| (verified as u64, "cut short".to_string()))
            }) {
                return Err(staging_err(format!("damaged at byte {offset}: {reason}")));
            }
            maps.push(map);
        }
        /// A key's newest entry: its seq, its mapping, its key there (an
        /// insert over an older entry keeps the older one's key) and its
        /// value (`None` for a delete).
        type Newest<'a> = (u64, usize, &'a [u8], Option<&'a [u8]>);
        let mut newest: BTreeMap<&[u8], Newest<'_>> = BTreeMap::new();
        for (i, bytes) in maps.iter().enumerate() {
            let mut at = SEGMENT_HEADER_BYTES as usize;
            while at < bytes.len() {
                let (e, len) = decode_entry(&bytes[at..]).expect("verified above");
                at += len;
                let inside = e.key >= start && end.is_none_or(|end| e.key < end);
                if !inside {
                    continue;
                }
                // Equal seqs are one batch's: the later entry is the newer.
                match newest.get(e.key) {
                    Some((seq, ..)) if *seq > e.seq => {}
                    _ => {
                        newest.insert(e.key, (e.seq, i, e.key, e.value));
                    }
                }
            }
        }
        // An empty part may be a slice of anything (a literal `&[]`).
        let within = |map: &[u8], part: &[u8]| match part.is_empty() {
            true => 0..0,
            false => {
                let from = part.as_ptr() as usize - map.as_ptr() as usize;
                debug_assert!(from + part.len() <= map.len(), "a slice of its mapping");
                from..from + part.len()
            }
        };
        let mut rows = Vec::with_capacity(newest.len());
        rows.extend(newest.into_iter().filter_map(|(_, (_, i, key, value))| {
            value.map(|v| FoldedRow {
                map: i,
                key: within(&maps[i], key),
                value: within(&maps[i], v),
            })
        }));
        Ok(FoldedRows { maps, rows })
    }
}

/// What [`Staging::fold`] found: the live rows of a chunk, in key order,
/// each a slice of a mapped staged file.
pub struct FoldedRows {
    maps: Vec<memmap2::Mmap>,
    rows: Vec<FoldedRow>,
}

/// A row of [`FoldedRows`]: where its key and value are in which mapping.
struct FoldedRow {
    map: usize,
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

impl FoldedRows {
    /// Rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Each row's key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.rows.iter().map(|r| {
            let map = &self.maps[r.map];
            (&map[r.key.clone()], &map[r.value.clone()])
        })
    }

    /// The rows as records (each copied).
    #[cfg(test)]
    pub fn to_records(&self) -> Vec<monotable_proto::Record> {
        self.iter()
            .map(|(k, v)| monotable_proto::Record {
                key: k.to_vec().into(),
                value: v.to_vec().into(),
            })
            .collect()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks the bytes of a region that start at `offset` (a verified
/// boundary: 0 or the end of an entry): returns how many of them form
/// whole, verified units (the header, entries), and the place and reason
/// of the first damage, if any. Bytes after the verified ones that are
/// neither verified nor damaged are an entry not yet complete.
fn verify(bytes: &[u8], offset: u64, segment: u32) -> (usize, Option<(u64, String)>) {
    let mut at = 0usize;
    if offset == 0 {
        let header = SEGMENT_HEADER_BYTES as usize;
        if bytes.len() < header {
            return (0, None);
        }
        if let Err(reason) = check_header(&bytes[..header], segment) {
            return (0, Some((0, reason)));
        }
        at = header;
    }
    while at < bytes.len() {
        match decode_entry(&bytes[at..]) {
            Ok((_, len)) => at += len,
            Err(EntryError::Incomplete) => break,
            Err(e) => return (at, Some((offset + at as u64, e.to_string()))),
        }
    }
    (at, None)
}

/// A read under way: where it starts, how much it asked, its result.
type Read = (u64, u32, tokio::task::JoinHandle<Result<Vec<u8>, ReadError>>);

/// Copies what `staged` lacks of `region` (see the module docs).
async fn copy_region(
    reader: &Arc<dyn SegmentReader>,
    region: &RegionRef,
    staged: &mut Staged,
    progress: &CopyProgress,
) -> Result<(), CopyError> {
    // Everything before `verified` is in the staging file; `pending` holds
    // the bytes read after it, not yet verified; `next` is where the next
    // read starts.
    let mut pending: Vec<u8> = Vec::new();
    let mut next = staged.verified;
    let mut in_flight: VecDeque<Read> = VecDeque::new();
    let mut failures = 0u32;
    let mut waiting_since: Option<Instant> = None;
    let owner = region.owner;
    let segment = region.segment;
    let stop = |in_flight: &mut VecDeque<Read>| {
        for (_, _, h) in in_flight.drain(..) {
            h.abort();
        }
    };
    while staged.verified < region.len {
        while in_flight.len() < READS_IN_FLIGHT && next < region.len {
            let len = (region.len - next).min(u64::from(SEGMENT_READ_MAX_BYTES)) as u32;
            let (reader, r) = (reader.clone(), region.clone());
            let at = next;
            in_flight.push_back((
                at,
                len,
                tokio::spawn(async move { reader.read(&r, at, len).await }),
            ));
            next += u64::from(len);
        }
        let Some((at, asked, handle)) = in_flight.pop_front() else {
            // Everything was read, and what is pending does not verify to
            // the end: an entry cut by the region's end (a damaged length).
            failures += 1;
            if failures > READ_RETRIES {
                return Err(CopyError::Corrupt {
                    owner,
                    segment,
                    offset: staged.verified,
                    reason: "an entry runs past the end of the region".into(),
                });
            }
            pending.clear();
            next = staged.verified;
            continue;
        };
        let read = match handle.await {
            Ok(r) => r,
            Err(e) => Err(ReadError::Failed { owner, reason: e.to_string() }),
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e @ (ReadError::Gone { .. } | ReadError::OutOfBounds { .. })) => {
                stop(&mut in_flight);
                return Err(e.into());
            }
            Err(e @ ReadError::Failed { .. }) => {
                stop(&mut in_flight);
                failures += 1;
                if failures > READ_RETRIES {
                    return Err(e.into());
                }
                next = staged.verified + pending.len() as u64;
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                continue;
            }
        };
        debug_assert_eq!(at, staged.verified + pending.len() as u64, "reads are consumed in order");
        let short = bytes.len() < asked as usize;
        pending.extend_from_slice(&bytes);
        if short {
            // The owner has not written the rest yet: what was asked after
            // it is asked again.
            stop(&mut in_flight);
            next = at + bytes.len() as u64;
            if bytes.is_empty() {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(WRITE_WAIT_MAX_MS) {
                    return Err(CopyError::Stalled { owner, segment, offset: next });
                }
                tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
            }
        }
        if !bytes.is_empty() {
            waiting_since = None;
        }
        let (ok, damage) = verify(&pending, staged.verified, segment);
        if ok > 0 {
            staged.file.write_all_at(&pending[..ok], staged.verified).map_err(|e| {
                CopyError::Staging { path: staged.path.clone(), reason: e.to_string() }
            })?;
            staged.verified += ok as u64;
            pending.drain(..ok);
            progress.copied_bytes.fetch_add(ok as u64, Ordering::Relaxed);
            failures = 0;
        }
        if let Some((offset, reason)) = damage {
            stop(&mut in_flight);
            failures += 1;
            tracing::debug!(owner, segment, offset, %reason, "damaged segment read; reading it again");
            if failures > READ_RETRIES {
                return Err(CopyError::Corrupt { owner, segment, offset, reason });
            }
            pending.clear();
            next = staged.verified;
        }
    }
    stop(&mut in_flight);
    Ok(())
}
