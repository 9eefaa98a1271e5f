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
//! A chunk's log also carries the rows of the ranges riding on it (a view's
//! target: [`ChunkCommand::Rider`], [`Riders`]): every replica applies them
//! to its own copy of the rider, in one order with the chunk's writes, and
//! the chunk's snapshots hold them too.
//!
//! Commands are MessagePack [`ChunkCommand`]s; replies MessagePack
//! `Result<CommitToken, ErrorInfo>`.

use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use monotable_proto::{CommitToken, ErrorCode, ErrorInfo, RangeOptions, Record, WriteOp};
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
    /// One atomic batch into the chunk of `rider`, a range whose rows ride
    /// on this chunk's log (created where it is missing).
    Rider { rider: RiderSpec, ops: Vec<WriteOp> },
}

/// A range of one chunk whose rows ride on another chunk's Raft log, and
/// what a replica needs to create it where it does not exist yet (a
/// replica can apply its rows before it has seen the meta range's record
/// of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiderSpec {
    pub name: String,
    pub range_id: u64,
    pub chunk_id: u64,
    pub options: RangeOptions,
}

/// The chunks of riding ranges on this node.
pub trait Riders: Send + Sync + 'static {
    /// The local chunk of `spec`'s range, created when it is missing;
    /// `None` when the range was dropped (its rows are then skipped).
    fn rider_cell(&self, spec: &RiderSpec) -> Result<Option<Arc<ChunkCell>>, String>;
    /// The riders of the chunk `group` this node holds.
    fn riders_of(&self, group: u64) -> Vec<(RiderSpec, Arc<ChunkCell>)>;
}

/// The reply to a [`ChunkCommand`].
pub type ChunkReply = Result<CommitToken, ErrorInfo>;

/// A snapshot: every live record of the chunk, in key order.
#[derive(Serialize, Deserialize)]
struct ChunkSnapshot {
    records: Vec<Record>,
    /// Every riding range's records.
    #[serde(default)]
    riders: Vec<(RiderSpec, Vec<Record>)>,
}

/// The replica of one chunk on this node.
pub struct ChunkReplica {
    cell: Arc<ChunkCell>,
    host: Weak<dyn ChunkHost>,
    /// The last batch applied, whose durability [`Replica::flush`] waits
    /// for (a round makes every earlier batch of the chunk durable too).
    last: Mutex<Option<Applied>>,
    riders: Option<Weak<dyn Riders>>,
    /// The last batch applied to each rider, by rider chunk id.
    riders_last: Mutex<std::collections::HashMap<u64, Applied>>,
}

impl ChunkReplica {
    pub fn new(cell: Arc<ChunkCell>, host: Weak<dyn ChunkHost>) -> Self {
        ChunkReplica {
            cell,
            host,
            last: Mutex::new(None),
            riders: None,
            riders_last: Mutex::new(Default::default()),
        }
    }

    /// The replica, applying [`ChunkCommand::Rider`]s to the chunks
    /// `riders` finds.
    pub fn with_riders(mut self, riders: Weak<dyn Riders>) -> Self {
        self.riders = Some(riders);
        self
    }

    fn riders(&self) -> Result<Arc<dyn Riders>, ErrorInfo> {
        self.riders.as_ref().and_then(Weak::upgrade).ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    fn write_rider(&self, spec: &RiderSpec, ops: &[WriteOp]) -> ChunkReply {
        let host = self.host()?;
        let cell = self.riders()?.rider_cell(spec).map_err(|message| ErrorInfo {
            code: ErrorCode::Internal,
            message: format!("range {:?} riding on chunk {}: {message}", spec.name, self.cell.id),
        })?;
        let Some(cell) = cell else {
            return Ok(CommitToken { chunk: spec.chunk_id, seq: 0 });
        };
        let applied = cell.apply(host.as_ref(), ops).map_err(|e| e.to_info())?;
        let token = CommitToken { chunk: cell.id, seq: applied.seq() };
        self.riders_last.lock().unwrap_or_else(|p| p.into_inner()).insert(cell.id, applied);
        Ok(token)
    }

    fn host(&self) -> Result<Arc<dyn ChunkHost>, ErrorInfo> {
        self.host.upgrade().ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    fn write(&self, ops: &[WriteOp]) -> ChunkReply {
        let host = self.host()?;
        let applied = self.cell.apply(host.as_ref(), ops).map_err(|e| e.to_info())?;
        let token = CommitToken { chunk: self.cell.id, seq: applied.seq() };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied);
        Ok(token)
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
    fn apply(&self, _index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match rmp_serde::from_slice::<ChunkCommand>(command) {
            Ok(ChunkCommand::Write { ops }) => self.write(&ops),
            Ok(ChunkCommand::Rider { rider, ops }) => self.write_rider(&rider, &ops),
            Err(e) => Err(ErrorInfo {
                code: ErrorCode::BadRequest,
                message: format!("undecodable chunk command: {e}"),
            }),
        };
        encode_reply(&reply)
    }

    fn flush(&self) -> BoxedFuture<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        let riders: Vec<Applied> = std::mem::take(
            &mut *self.riders_last.lock().unwrap_or_else(|p| p.into_inner()),
        )
        .into_values()
        .collect();
        Box::pin(async move {
            for applied in last.into_iter().chain(riders) {
                applied.durable().await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let records = applied_records(&self.cell)?;
        let riders = match &self.riders {
            Some(_) => {
                let riders = self.riders().map_err(|e| e.message)?.riders_of(self.cell.id);
                riders
                    .into_iter()
                    .map(|(spec, cell)| Ok((spec, applied_records(&cell)?)))
                    .collect::<Result<_, String>>()?
            }
            None => Vec::new(),
        };
        rmp_serde::to_vec(&ChunkSnapshot { records, riders }).map_err(|e| e.to_string())
    }

    fn restore(&self, snapshot: Vec<u8>) -> BoxedFuture<Result<(), String>> {
        let result = (|| {
            let snapshot: ChunkSnapshot =
                rmp_serde::from_slice(&snapshot).map_err(|e| format!("undecodable snapshot: {e}"))?;
            let host = self.host().map_err(|e| e.message)?;
            let mut applied: Vec<Applied> =
                restore_cell(&self.cell, host.as_ref(), snapshot.records)?.into_iter().collect();
            if !snapshot.riders.is_empty() {
                let riders = self.riders().map_err(|e| e.message)?;
                for (spec, records) in snapshot.riders {
                    if let Some(cell) = riders.rider_cell(&spec)? {
                        applied.extend(restore_cell(&cell, host.as_ref(), records)?);
                    }
                }
            }
            Ok::<_, String>(applied)
        })();
        Box::pin(async move {
            for a in result? {
                a.durable().await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// Every live record of `cell`, as applied.
fn applied_records(cell: &ChunkCell) -> Result<Vec<Record>, String> {
    cell.with_chunk(|c| {
        let all = (Bound::Unbounded, Bound::Unbounded);
        Ok(c.scan(all, ReadAt::Applied, false, usize::MAX, usize::MAX)?.records)
    })
    .map_err(|e| e.to_string())
}

/// Makes `cell` hold exactly `records`: one batch deleting the records it
/// has beyond them and putting them; `None` when nothing was to change.
fn restore_cell(
    cell: &Arc<ChunkCell>,
    host: &dyn ChunkHost,
    records: Vec<Record>,
) -> Result<Option<Applied>, String> {
    let keep: std::collections::BTreeSet<&[u8]> = records.iter().map(|r| r.key.as_ref()).collect();
    let mut ops: Vec<WriteOp> = applied_records(cell)?
        .into_iter()
        .filter(|r| !keep.contains(r.key.as_ref()))
        .map(|r| WriteOp::Delete { key: r.key })
        .collect();
    ops.extend(records.into_iter().map(|r| WriteOp::Put { key: r.key, value: r.value }));
    if ops.is_empty() {
        return Ok(None);
    }
    cell.apply(host, &ops).map(Some).map_err(|e| e.to_string())
}
