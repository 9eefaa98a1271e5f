//! The part of a chunk that readers share with its actor.
//!
//! The chunk actor is the only writer; reads do not go through its mailbox.
//! A request task reads the chunk under the cell's read lock directly, which
//! saves two cross-thread wakeups per read. The actor takes the write lock
//! only for short in-memory updates (indexing a batch, marking it durable,
//! swapping in a compacted index), never for an fsync or a rewrite.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{NodeError, NodeResult};
use crate::storage::chunk::Chunk;

// One cell per chunk, and almost all are open: boxing the chunk would add
// an indirection to every read for no memory worth saving.
#[allow(clippy::large_enum_variant)]
pub enum CellState {
    Open(Chunk),
    /// The chunk could not be opened; the reason says why.
    Unavailable(String),
    /// Split or dropped: its keys live elsewhere now, route again.
    Gone,
}

pub struct ChunkCell {
    pub id: u64,
    /// A std lock: never held across an await, and held for writing only
    /// briefly, so blocking a reader's thread is cheaper than an async lock.
    state: RwLock<CellState>,
}

impl ChunkCell {
    pub fn new(id: u64, state: CellState) -> Self {
        ChunkCell { id, state: RwLock::new(state) }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, CellState> {
        // Every critical section either completes or panics before touching
        // the state, so a poisoned lock still guards a consistent chunk.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, CellState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read against the chunk, or says why it cannot be read.
    pub fn with_chunk<T>(&self, f: impl FnOnce(&Chunk) -> NodeResult<T>) -> NodeResult<T> {
        match &*self.read() {
            CellState::Open(chunk) => f(chunk),
            CellState::Unavailable(reason) => {
                Err(NodeError::Unavailable { chunk: self.id, reason: reason.clone() })
            }
            CellState::Gone => Err(NodeError::Moved),
        }
    }

    /// Runs an update against the chunk; `None` if it is not open.
    pub fn with_chunk_mut<T>(&self, f: impl FnOnce(&mut Chunk) -> T) -> Option<T> {
        match &mut *self.write() {
            CellState::Open(chunk) => Some(f(chunk)),
            _ => None,
        }
    }

    /// Takes the chunk out, leaving the cell `Gone`.
    pub fn take(&self) -> Option<Chunk> {
        match std::mem::replace(&mut *self.write(), CellState::Gone) {
            CellState::Open(chunk) => Some(chunk),
            _ => None,
        }
    }
}
