//! The owner's side of segment reads: segment images registered as
//! regions that other nodes read by offset.
//!
//! A region holds its segment's file open, so the bytes it names stay
//! readable while it is registered even if a compaction of the chunk
//! supersedes the segment and unlinks the file (the disk space returns
//! when the region goes). A region is *leased*: it stays registered for
//! [`REGION_LEASE_MS`] after it was last listed in a snapshot or read, so a
//! reader copying it keeps it alive by reading, and one that went away lets
//! it go. Registering the same file again gives the same region (with the
//! longer length, for an active segment that grew), so the regions of a
//! chunk whose snapshot is taken again and again stay the same ones.
//!
//! Reads run on the calling task with a positional read of the file: no
//! chunk lock, no chunk actor, no log state.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{ReadError, RegionRef, SEGMENT_READ_MAX_BYTES};
use crate::consensus::NodeId;
use crate::storage::chunk::SegmentImage;

/// How long a region stays registered after it was last listed or read.
pub const REGION_LEASE_MS: u64 = 60_000;

/// The most regions a node holds at once; a snapshot that would register
/// more fails (and is tried again later), so open files stay bounded.
pub const REGIONS_MAX: usize = 16_384;

struct Region {
    file: Arc<File>,
    /// The file, as the kernel knows it (device, inode), which names it
    /// while it is held open.
    file_id: (u64, u64),
    segment: u32,
    len: u64,
    used: Instant,
}

#[derive(Default)]
struct Inner {
    next: u64,
    by_id: HashMap<u64, Region>,
    by_file: HashMap<(u64, u64), u64>,
}

/// The regions this node serves; one per node, shared by its chunks.
pub struct Regions {
    owner: NodeId,
    owner_addr: String,
    incarnation: u64,
    lease: Duration,
    /// A std mutex: held only to look a region up or register one, never
    /// across a read of the file or an await.
    inner: Mutex<Inner>,
}

impl Regions {
    /// The regions of node `owner`, reached at `owner_addr`, with a new
    /// random incarnation.
    pub fn new(owner: NodeId, owner_addr: String) -> Self {
        Self::with_lease(owner, owner_addr, Duration::from_millis(REGION_LEASE_MS))
    }

    /// As [`Regions::new`], with leases of `lease` (tests).
    pub fn with_lease(owner: NodeId, owner_addr: String, lease: Duration) -> Self {
        Regions {
            owner,
            owner_addr,
            incarnation: rand::random(),
            lease,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `image` (or renews the region of its file, to its longer
    /// length) and returns its reference.
    ///
    /// Errors: the file's metadata cannot be read, or [`REGIONS_MAX`]
    /// regions are registered.
    pub fn register(&self, image: &SegmentImage) -> Result<RegionRef, String> {
        let meta = image.file.metadata().map_err(|e| format!("{}: {e}", image.path.display()))?;
        let file_id = (meta.dev(), meta.ino());
        let now = Instant::now();
        let mut inner = self.lock();
        sweep(&mut inner, now, self.lease);
        let id = match inner.by_file.get(&file_id).copied() {
            Some(id) => {
                let region = inner.by_id.get_mut(&id).expect("by_file names registered regions");
                region.len = region.len.max(image.len);
                region.used = now;
                id
            }
            None => {
                if inner.by_id.len() >= REGIONS_MAX {
                    return Err(format!(
                        "{REGIONS_MAX} segment regions are registered; no more until some \
                         lease ends"
                    ));
                }
                inner.next += 1;
                let id = inner.next;
                let region = Region {
                    file: image.file.clone(),
                    file_id,
                    segment: image.id,
                    len: image.len,
                    used: now,
                };
                inner.by_id.insert(id, region);
                inner.by_file.insert(file_id, id);
                id
            }
        };
        let region = &inner.by_id[&id];
        Ok(RegionRef {
            owner: self.owner,
            owner_addr: self.owner_addr.clone(),
            incarnation: self.incarnation,
            region: id,
            segment: region.segment,
            len: image.len,
        })
    }

    /// Reads up to `len` bytes of region `region` at `offset`, and renews
    /// its lease; fewer if the file does not hold them yet (written out
    /// later by the group commit).
    ///
    /// Errors: [`ReadError::Gone`] for a region not registered (in this
    /// incarnation); [`ReadError::OutOfBounds`] past its end or over
    /// [`SEGMENT_READ_MAX_BYTES`]; [`ReadError::Failed`] if the file read
    /// fails.
    pub fn read(
        &self,
        incarnation: u64,
        region: u64,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, ReadError> {
        let file = self.checked(incarnation, region, offset, len)?;
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(ReadError::Failed { owner: self.owner, reason: e.to_string() })
                }
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// What [`Regions::read`] would read, left in the file for the caller
    /// to send from it (`sendfile`): the region's file and how many of the
    /// `len` bytes at `offset` it holds now (fewer than `len`, or none,
    /// while the group commit has not written them out). Renews the
    /// region's lease, which keeps the file open; the bytes it holds never
    /// change (see [`SegmentImage`]).
    ///
    /// Errors: as [`Regions::read`]'s.
    pub fn slice(
        &self,
        incarnation: u64,
        region: u64,
        offset: u64,
        len: u32,
    ) -> Result<(Arc<File>, u32), ReadError> {
        let file = self.checked(incarnation, region, offset, len)?;
        let file_len = file
            .metadata()
            .map_err(|e| ReadError::Failed { owner: self.owner, reason: e.to_string() })?
            .len();
        let held = file_len.saturating_sub(offset).min(u64::from(len)) as u32;
        Ok((file, held))
    }

    /// The file of a read within bounds, with the region's lease renewed.
    fn checked(
        &self,
        incarnation: u64,
        region: u64,
        offset: u64,
        len: u32,
    ) -> Result<Arc<File>, ReadError> {
        let (file, region_len) = self.lease(incarnation, region)?;
        let end = offset.checked_add(u64::from(len));
        if len == 0 || len > SEGMENT_READ_MAX_BYTES || end.is_none_or(|end| end > region_len) {
            return Err(ReadError::OutOfBounds { region, offset, len, region_len });
        }
        Ok(file)
    }

    /// The file of region `region` and its length, with its lease renewed:
    /// for a transport that reads the file by other means (RDMA maps it).
    ///
    /// Errors: [`ReadError::Gone`] for a region not registered (in this
    /// incarnation).
    pub fn lease(&self, incarnation: u64, region: u64) -> Result<(Arc<File>, u64), ReadError> {
        let gone = ReadError::Gone { owner: self.owner, region };
        if incarnation != self.incarnation {
            return Err(gone);
        }
        let mut inner = self.lock();
        sweep(&mut inner, Instant::now(), self.lease);
        let r = inner.by_id.get_mut(&region).ok_or(gone)?;
        r.used = Instant::now();
        Ok((r.file.clone(), r.len))
    }

    /// Whether region `region` is still registered (its lease not over).
    pub fn contains(&self, region: u64) -> bool {
        let mut inner = self.lock();
        sweep(&mut inner, Instant::now(), self.lease);
        inner.by_id.contains_key(&region)
    }

    /// The node whose regions these are.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    /// Regions registered now (after dropping those whose lease ended).
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        sweep(&mut inner, Instant::now(), self.lease);
        inner.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the regions whose lease ended.
fn sweep(inner: &mut Inner, now: Instant, lease: Duration) {
    let expired: Vec<u64> = inner
        .by_id
        .iter()
        .filter(|(_, r)| now.duration_since(r.used) >= lease)
        .map(|(&id, _)| id)
        .collect();
    for id in expired {
        if let Some(r) = inner.by_id.remove(&id) {
            inner.by_file.remove(&r.file_id);
        }
    }
}

/// A reader of this node's own regions, without a network: for tests and
/// for a replica that copies from itself.
impl super::SegmentReader for Regions {
    fn read(
        &self,
        region: &RegionRef,
        offset: u64,
        len: u32,
    ) -> crate::consensus::futures_lite::BoxedFuture<Result<Vec<u8>, ReadError>> {
        let result = Regions::read(self, region.incarnation, region.region, offset, len);
        Box::pin(async move { result })
    }
}
