//! Segment reads: a replica that needs a chunk's whole state copies the
//! log segments of the replica that built the snapshot, by offset, with no
//! work for that replica's chunk.
//!
//! The model is seed 004's replication by one-sided reads: the owner
//! registers a memory region (here: an immutable segment image), hands out
//! its identity, and readers fetch it at their own pace; the owner's CPU
//! does not grow with the number of readers. Reads are self-verifying as
//! in Pilaf (Mitchell, Geng and Li, "Using One-Sided RDMA Reads to Build a
//! Fast, CPU-Efficient Key-Value Store", USENIX ATC 2013): every log entry
//! carries its own CRC32C, so a reader detects a torn or damaged read by
//! itself and reads those bytes again.
//!
//! # Layout
//!
//! - this file: [`RegionRef`] (what a snapshot lists), the
//!   [`SegmentReader`] contract every transport keeps, its errors and
//!   limits.
//! - [`regions`]: the owner's side: segment images registered as regions,
//!   each held open while it is leased, read by offset.
//! - [`copy`]: the reader's side: regions copied into staging files with
//!   every entry verified and bad reads retried, then folded into the
//!   records they hold.
//!
//! - [`rdma`] (cargo feature `rdma`): regions exposed to RDMA one-sided
//!   READs, and the reader's connections.
//!
//! The TCP transport (the default) is the native protocol's
//! `SegmentRead` request, served by the owner from the file on the
//! connection's own task (`cluster::transport`); the RDMA one
//! (`cluster::transport::RdmaSegmentReads`) falls back to it for an owner
//! it cannot reach that way.

use serde::{Deserialize, Serialize};

use crate::consensus::futures_lite::BoxedFuture;
use crate::consensus::NodeId;

pub mod copy;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod regions;

pub use copy::{CopyError, CopyProgress, FoldedRows, Staging};
pub use regions::Regions;

/// The most bytes one [`SegmentReader::read`] returns (a native-protocol
/// frame carries it with room to spare).
pub const SEGMENT_READ_MAX_BYTES: u32 = 1 << 20;

/// One registered segment image of an owner, as a snapshot lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionRef {
    /// The node that owns the region, and its native-protocol address.
    pub owner: NodeId,
    pub owner_addr: String,
    /// The owner's process: a random number drawn at its start. With
    /// `region`, it names the same bytes for as long as the owner runs, so
    /// a reader that copied part of a region may go on from there when a
    /// later snapshot lists it again (longer, if it is the active segment).
    pub incarnation: u64,
    /// The owner's id for the region, unique within its incarnation.
    pub region: u64,
    /// The segment's id in the owner's log (its header names it).
    pub segment: u32,
    /// Bytes to copy, from offset 0, the segment header included.
    pub len: u64,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The owner holds no such region (its lease ran out, or it restarted):
    /// the snapshot that listed it is stale; ask for a new one.
    #[error("region {region} is gone from node {owner}")]
    Gone { owner: NodeId, region: u64 },
    /// The read asked for bytes past the region's end, or more than
    /// [`SEGMENT_READ_MAX_BYTES`].
    #[error("read of {len} bytes at {offset} is outside region {region} ({region_len} bytes)")]
    OutOfBounds { region: u64, offset: u64, len: u32, region_len: u64 },
    /// The owner could not be reached or failed the read; it may work
    /// again.
    #[error("segment read from node {owner} failed: {reason}")]
    Failed { owner: NodeId, reason: String },
}

/// Reads registered segment images of other nodes.
///
/// The contract every transport keeps (checked by `contract_tests` against
/// each one):
/// - `read(region, offset, len)` returns at most `len` bytes of the region
///   starting at `offset`, `0 < len <= SEGMENT_READ_MAX_BYTES`,
///   `offset + len <= region.len`;
/// - fewer bytes than asked only when the owner has not written the rest
///   to its file yet (they come later);
/// - bytes that arrive damaged or cut are possible on a faulty path: the
///   reader verifies every entry ([`copy`]), so a transport need not.
pub trait SegmentReader: Send + Sync + 'static {
    fn read(
        &self,
        region: &RegionRef,
        offset: u64,
        len: u32,
    ) -> BoxedFuture<Result<Vec<u8>, ReadError>>;
}

#[cfg(test)]
pub(crate) mod contract_tests;
