//! What a chunk needs from the node it runs in, and nothing more.
//!
//! Chunk actors and the group commit reach the node only through this
//! trait, so the chunk layer does not depend on the node, its router or
//! its views: [`crate::node::Node`] implements it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::catalog::CatalogError;
use crate::chunk_cell::ChunkCell;
use crate::group_commit::Syncer;
use crate::storage::chunk::{Chunk, ChunkMeta};
use crate::storage::clock::SeqClock;

/// What the chunk actors of a node did since it started (`/metrics`).
#[derive(Debug, Default)]
pub struct MaintenanceCounts {
    pub compactions: AtomicU64,
    pub splits: AtomicU64,
    /// Pairs of chunks merged into one.
    pub merges: AtomicU64,
}

pub trait ChunkHost: Send + Sync + 'static {
    /// The node-wide seq clock: seqs for batches, pins, stability.
    fn clock(&self) -> &SeqClock;
    /// Where the chunk actors count their compactions, splits and merges.
    fn maintenance(&self) -> &MaintenanceCounts;
    /// The group commit every chunk of the node shares.
    fn syncer(&self) -> &Arc<Syncer>;
    /// Tells the views that read `range_id` that it changed.
    fn notify_views(&self, range_id: u64);
    /// Where the change journals of `range_id` must start, if a view reads it.
    fn view_floor(&self, range_id: u64) -> Option<u64>;
    /// A new chunk id, never used before on this node.
    fn next_chunk_id(&self) -> Result<u64, CatalogError>;
    /// The directory of chunk `id`.
    fn chunk_dir(&self, id: u64) -> PathBuf;
    /// Log segment size for chunks of at most `chunk_size_max_bytes`.
    fn segment_size_for(&self, chunk_size_max_bytes: u64) -> u64;
    /// Records in the catalog that `parent` became `lower` and `upper`.
    fn record_split(
        &self,
        parent: u64,
        lower: &ChunkMeta,
        upper: &ChunkMeta,
    ) -> Result<(), CatalogError>;
    /// Starts the halves of a recorded split and routes requests to them;
    /// returns their cells (lower, upper), `None` if the node is gone.
    fn start_halves(
        &self,
        parent: u64,
        lower: Chunk,
        upper: Chunk,
        chunk_size_max_bytes: u64,
    ) -> Option<(Arc<ChunkCell>, Arc<ChunkCell>)>;
    /// The chunk of range `range_id` that starts at `start` (a chunk's
    /// neighbour above), with its cell and actor; `None` if none is routed
    /// (or the host merges no chunks: the default).
    fn chunk_starting_at(
        &self,
        range_id: u64,
        start: &[u8],
    ) -> Option<(ChunkMeta, Arc<ChunkCell>, actix::Addr<crate::chunk_actor::ChunkActor>)> {
        let _ = (range_id, start);
        None
    }
    /// Records in the catalog that neighbours `lower` and `upper` became
    /// `merged`.
    fn record_merge(&self, lower: u64, upper: u64, merged: &ChunkMeta) -> Result<(), CatalogError> {
        let _ = (upper, merged);
        Err(CatalogError::ChunkNotFound(lower))
    }
    /// Starts the chunk of a recorded merge and routes requests to it in
    /// place of `lower` and `upper`; `None` if the node is gone.
    fn start_merged(
        &self,
        lower: u64,
        upper: u64,
        merged: Chunk,
        chunk_size_max_bytes: u64,
    ) -> Option<Arc<ChunkCell>> {
        let _ = (lower, upper, merged, chunk_size_max_bytes);
        None
    }
    /// A chunk that does not split on its own (a replicated one) is over
    /// its size limit; `key` is where its live bytes halve. Called from the
    /// chunk's actor, at most about once a second per chunk while it stays
    /// over the limit; must not block.
    fn split_wanted(&self, chunk: &ChunkMeta, key: Vec<u8>);
    /// A replicated chunk closed after it lost applied writes (see
    /// `ChunkCell::mark_raft_durable`): its replica should stop serving at
    /// once. Called on the syncer's thread; must not block.
    fn replica_closed(&self, _chunk: u64) {}
}
