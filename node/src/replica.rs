//! A chunk replicated by Raft: the [`Replica`] that applies a chunk's
//! committed commands to its [`ChunkCell`].
//!
//! Every replica of a chunk applies the same writes in Raft's log order,
//! each under its own node's seq clock (seqs are a node's own: reads at a
//! snapshot seq are reads of one replica). A write is acknowledged once a
//! majority has its Raft log entry durable and the leader applied it; the
//! chunk's own log is made durable lazily, when the group builds a
//! snapshot ([`crate::consensus::replica_store`]), and a restart applies
//! again what came after.
//!
//! Commands are MessagePack [`ChunkCommand`]s; replies MessagePack
//! `Result<CommitToken, ErrorInfo>`.

use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use monotable_proto::{CommitToken, ErrorCode, ErrorInfo, Record, WriteOp};
use serde::{Deserialize, Serialize};

use crate::chunk_cell::{Applied, ChunkCell};
use crate::chunk_host::ChunkHost;
use crate::consensus::futures_lite::BoxedFuture;
use crate::consensus::replica_store::Replica;
use crate::error::NodeError;
use crate::storage::chunk::ReadAt;

/// A change to a replicated chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChunkCommand {
    /// One atomic batch; every key inside the chunk, checked against the
    /// row limits before it was proposed.
    Write { ops: Vec<WriteOp> },
}

/// The reply to a [`ChunkCommand`].
pub type ChunkReply = Result<CommitToken, ErrorInfo>;

/// A snapshot: every live record of the chunk, in key order.
#[derive(Serialize, Deserialize)]
struct ChunkSnapshot {
    records: Vec<Record>,
}

/// The replica of one chunk on this node.
pub struct ChunkReplica {
    cell: Arc<ChunkCell>,
    host: Weak<dyn ChunkHost>,
    /// The last batch applied, whose durability [`Replica::flush`] waits
    /// for (a round makes every earlier batch of the chunk durable too).
    last: Mutex<Option<Applied>>,
}

impl ChunkReplica {
    pub fn new(cell: Arc<ChunkCell>, host: Weak<dyn ChunkHost>) -> Self {
        ChunkReplica { cell, host, last: Mutex::new(None) }
    }

    fn host(&self) -> Result<Arc<dyn ChunkHost>, ErrorInfo> {
        self.host.upgrade().ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    /// Applies a batch. `Ok(Err(_))`: refused alike on every replica (a
    /// row limit, a key the chunk does not hold); `Err`: this replica could
    /// not apply it (its chunk is unavailable, the node is stopping).
    fn write(&self, ops: &[WriteOp]) -> Result<ChunkReply, String> {
        let host = self.host().map_err(|e| e.message)?;
        match self.cell.apply(host.as_ref(), ops) {
            Ok(applied) => {
                let token = CommitToken { chunk: self.cell.id, seq: applied.seq() };
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied);
                Ok(Ok(token))
            }
            Err(e @ (NodeError::Client { .. } | NodeError::Moved)) => Ok(Err(e.to_info())),
            Err(e) => Err(format!("chunk {}: {e}", self.cell.id)),
        }
    }
}

fn encode_reply(reply: &ChunkReply) -> Vec<u8> {
    rmp_serde::to_vec(reply).expect("chunk replies always encode")
}

/// Decodes a replica's reply.
pub fn decode_reply(bytes: &[u8]) -> ChunkReply {
    rmp_serde::from_slice(bytes).unwrap_or_else(|e| {
        Err(ErrorInfo { code: ErrorCode::Internal, message: format!("undecodable reply: {e}") })
    })
}

/// Encodes a command for [`crate::consensus::Group::propose`].
pub fn encode_command(command: &ChunkCommand) -> Vec<u8> {
    rmp_serde::to_vec(command).expect("chunk commands always encode")
}

impl Replica for ChunkReplica {
    fn apply(&self, _index: u64, command: &[u8]) -> Result<Vec<u8>, String> {
        let reply = match rmp_serde::from_slice::<ChunkCommand>(command) {
            Ok(ChunkCommand::Write { ops }) => self.write(&ops)?,
            Err(e) => Err(ErrorInfo {
                code: ErrorCode::BadRequest,
                message: format!("undecodable chunk command: {e}"),
            }),
        };
        Ok(encode_reply(&reply))
    }

    fn flush(&self) -> BoxedFuture<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(async move {
            match last {
                Some(applied) => applied.durable().await.map(|_| ()).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let records = self
            .cell
            .with_chunk(|c| {
                let all = (Bound::Unbounded, Bound::Unbounded);
                Ok(c.scan(all, ReadAt::Applied, false, usize::MAX, usize::MAX)?.records)
            })
            .map_err(|e| e.to_string())?;
        rmp_serde::to_vec(&ChunkSnapshot { records }).map_err(|e| e.to_string())
    }

    fn restore(&self, snapshot: Vec<u8>) -> BoxedFuture<Result<(), String>> {
        let snapshot: Result<ChunkSnapshot, String> =
            rmp_serde::from_slice(&snapshot).map_err(|e| format!("undecodable snapshot: {e}"));
        let ops = snapshot.and_then(|s| {
            let keep: std::collections::BTreeSet<&[u8]> =
                s.records.iter().map(|r| r.key.as_ref()).collect();
            let gone = self
                .cell
                .with_chunk(|c| {
                    let all = (Bound::Unbounded, Bound::Unbounded);
                    Ok(c.scan(all, ReadAt::Applied, false, usize::MAX, usize::MAX)?.records)
                })
                .map_err(|e| e.to_string())?;
            let mut ops: Vec<WriteOp> = gone
                .into_iter()
                .filter(|r| !keep.contains(r.key.as_ref()))
                .map(|r| WriteOp::Delete { key: r.key })
                .collect();
            ops.extend(s.records.into_iter().map(|r| WriteOp::Put { key: r.key, value: r.value }));
            Ok(ops)
        });
        let result = ops.and_then(|ops| {
            if ops.is_empty() {
                return Ok(None);
            }
            let host = self.host().map_err(|e| e.message)?;
            self.cell.apply(host.as_ref(), &ops).map(Some).map_err(|e| e.to_string())
        });
        Box::pin(async move {
            match result? {
                Some(applied) => applied.durable().await.map(|_| ()).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }
}
