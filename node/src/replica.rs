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
    /// The local chunk of `spec`'s range, riding on chunk `group`, created
    /// when it is missing; `None` when the range was dropped (its rows are
    /// then skipped).
    fn rider_cell(&self, group: u64, spec: &RiderSpec) -> Result<Option<Arc<ChunkCell>>, String>;
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
        self.riders
            .as_ref()
            .and_then(Weak::upgrade)
            .ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    /// Applies a batch to a riding range's chunk, as [`Self::write`].
    fn write_rider(&self, spec: &RiderSpec, ops: &[WriteOp]) -> Result<ChunkReply, String> {
        let host = self.host().map_err(|e| e.message)?;
        let riders = self.riders().map_err(|e| e.message)?;
        let cell = riders.rider_cell(self.cell.id, spec).map_err(|message| {
            format!("range {:?} riding on chunk {}: {message}", spec.name, self.cell.id)
        })?;
        let Some(cell) = cell else {
            return Ok(Ok(CommitToken { chunk: spec.chunk_id, seq: 0 }));
        };
        Ok(apply_to(&cell, host.as_ref(), ops)?.map(|applied| {
            let token = CommitToken { chunk: cell.id, seq: applied.seq() };
            self.riders_last.lock().unwrap_or_else(|p| p.into_inner()).insert(cell.id, applied);
            token
        }))
    }

    fn host(&self) -> Result<Arc<dyn ChunkHost>, ErrorInfo> {
        self.host.upgrade().ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    /// Applies a batch. `Ok(Err(_))`: refused alike on every replica (a
    /// row limit, a key the chunk does not hold); `Err`: this replica could
    /// not apply it (its chunk is unavailable, the node is stopping).
    fn write(&self, ops: &[WriteOp]) -> Result<ChunkReply, String> {
        let host = self.host().map_err(|e| e.message)?;
        Ok(apply_to(&self.cell, host.as_ref(), ops)?.map(|applied| {
            let token = CommitToken { chunk: self.cell.id, seq: applied.seq() };
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied);
            token
        }))
    }
}

/// Applies `ops` to `cell`: `Ok(Err(_))` when refused alike on every
/// replica (a row limit, a key the chunk does not hold), `Err` when this
/// replica could not apply them (its chunk is unavailable).
fn apply_to(
    cell: &Arc<ChunkCell>,
    host: &dyn ChunkHost,
    ops: &[WriteOp],
) -> Result<Result<Applied, ErrorInfo>, String> {
    match cell.apply(host, ops) {
        Ok(applied) => Ok(Ok(applied)),
        Err(e @ (NodeError::Client { .. } | NodeError::Moved)) => Ok(Err(e.to_info())),
        Err(e) => Err(format!("chunk {}: {e}", cell.id)),
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
            Ok(ChunkCommand::Rider { rider, ops }) => self.write_rider(&rider, &ops)?,
            Err(e) => Err(ErrorInfo {
                code: ErrorCode::BadRequest,
                message: format!("undecodable chunk command: {e}"),
            }),
        };
        Ok(encode_reply(&reply))
    }

    fn flush(&self) -> BoxedFuture<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        let riders: Vec<Applied> =
            std::mem::take(&mut *self.riders_last.lock().unwrap_or_else(|p| p.into_inner()))
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
            let snapshot: ChunkSnapshot = rmp_serde::from_slice(&snapshot)
                .map_err(|e| format!("undecodable snapshot: {e}"))?;
            let host = self.host().map_err(|e| e.message)?;
            let mut applied: Vec<Applied> =
                restore_cell(&self.cell, host.as_ref(), snapshot.records)?.into_iter().collect();
            if !snapshot.riders.is_empty() {
                let riders = self.riders().map_err(|e| e.message)?;
                for (spec, records) in snapshot.riders {
                    if let Some(cell) = riders.rider_cell(self.cell.id, &spec)? {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::catalog::CatalogError;
    use crate::chunk_cell::CellState;
    use crate::config::FsyncMode;
    use crate::group_commit::{SyncMethod, Syncer};
    use crate::storage::chunk::{Chunk, ChunkMeta};
    use crate::storage::clock::SeqClock;
    use crate::storage::descriptor::ChunkDescriptor;

    /// A host whose syncer never runs (nothing here waits for durability)
    /// and whose riders are cells made on demand.
    struct Host {
        clock: SeqClock,
        syncer: Arc<Syncer>,
        dir: PathBuf,
        riders: Mutex<HashMap<u64, (RiderSpec, Arc<ChunkCell>)>>,
    }

    impl ChunkHost for Host {
        fn clock(&self) -> &SeqClock {
            &self.clock
        }
        fn syncer(&self) -> &Arc<Syncer> {
            &self.syncer
        }
        fn notify_views(&self, _: u64) {}
        fn view_floor(&self, _: u64) -> Option<u64> {
            None
        }
        fn next_chunk_id(&self) -> Result<u64, CatalogError> {
            unreachable!("no splits here")
        }
        fn chunk_dir(&self, _: u64) -> PathBuf {
            unreachable!("no splits here")
        }
        fn segment_size_for(&self, _: u64) -> u64 {
            4096
        }
        fn record_split(&self, _: u64, _: &ChunkMeta, _: &ChunkMeta) -> Result<(), CatalogError> {
            unreachable!("no splits here")
        }
        fn start_halves(&self, _: u64, _: Chunk, _: Chunk, _: u64) {}
    }

    impl Riders for Host {
        fn rider_cell(&self, _: u64, spec: &RiderSpec) -> Result<Option<Arc<ChunkCell>>, String> {
            if spec.name == "dropped" {
                return Ok(None);
            }
            let mut riders = self.riders.lock().expect("riders");
            let (_, cell) = riders
                .entry(spec.chunk_id)
                .or_insert_with(|| (spec.clone(), cell(&self.dir, spec.range_id, spec.chunk_id)));
            Ok(Some(cell.clone()))
        }
        fn riders_of(&self, _: u64) -> Vec<(RiderSpec, Arc<ChunkCell>)> {
            self.riders.lock().expect("riders").values().cloned().collect()
        }
    }

    fn cell(dir: &Path, range_id: u64, id: u64) -> Arc<ChunkCell> {
        let chunk = ChunkMeta { id, range_id, start: vec![], end: None };
        let desc = ChunkDescriptor { range_name: "r".into(), options: Default::default(), chunk };
        let chunk = Chunk::create(&desc, &dir.join(id.to_string()), 4096).expect("create");
        Arc::new(ChunkCell::new(id, CellState::Open(chunk), 1 << 20))
    }

    /// A replica of chunk 1 over its own host, and the host.
    fn replica(dir: &Path) -> (Arc<Host>, ChunkReplica) {
        std::fs::create_dir_all(dir).expect("dir");
        let syncer = Syncer::new(dir, FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer");
        let host = Arc::new(Host {
            clock: SeqClock::new(0),
            syncer: Arc::new(syncer),
            dir: dir.to_owned(),
            riders: Mutex::default(),
        });
        let as_host: Arc<dyn ChunkHost> = host.clone();
        let as_riders: Arc<dyn Riders> = host.clone();
        let replica = ChunkReplica::new(cell(dir, 1, 1), Arc::downgrade(&as_host))
            .with_riders(Arc::downgrade(&as_riders));
        (host, replica)
    }

    fn put(k: &str, v: &str) -> WriteOp {
        WriteOp::Put { key: k.as_bytes().to_vec().into(), value: v.as_bytes().to_vec().into() }
    }

    fn command(c: ChunkCommand) -> Vec<u8> {
        encode_command(&c)
    }

    fn keys(cell: &ChunkCell) -> Vec<(Vec<u8>, Vec<u8>)> {
        applied_records(cell)
            .expect("records")
            .into_iter()
            .map(|r| (r.key.to_vec(), r.value.to_vec()))
            .collect()
    }

    fn spec(name: &str) -> RiderSpec {
        RiderSpec { name: name.into(), range_id: 10, chunk_id: 11, options: Default::default() }
    }

    #[test]
    fn riders_apply_in_the_log_and_travel_in_snapshots() {
        let dir = tempfile::tempdir().expect("tmp");
        let (host, a) = replica(&dir.path().join("a"));
        let write = ChunkCommand::Write { ops: vec![put("k1", "v1"), put("k2", "v2")] };
        assert!(decode_reply(&a.apply(1, &command(write)).expect("applied")).is_ok());
        let rows = vec![put("row1", "1"), put("row2", "2")];
        let reply = decode_reply(
            &a.apply(2, &command(ChunkCommand::Rider { rider: spec("idx"), ops: rows }))
                .expect("applied"),
        );
        assert_eq!(reply.expect("applied").chunk, 11, "the token names the rider's chunk");
        let delete = WriteOp::Delete { key: b"row1".to_vec().into() };
        let rider = ChunkCommand::Rider { rider: spec("idx"), ops: vec![delete] };
        assert!(decode_reply(&a.apply(3, &command(rider)).expect("applied")).is_ok());
        // A dropped rider's rows are skipped, not an error that would stop
        // the log.
        let gone = ChunkCommand::Rider { rider: spec("dropped"), ops: vec![put("x", "y")] };
        assert!(decode_reply(&a.apply(4, &command(gone)).expect("applied")).is_ok());
        let rider_cell = host.riders.lock().expect("riders")[&11].1.clone();
        assert_eq!(keys(&rider_cell), vec![(b"row2".to_vec(), b"2".to_vec())]);
        assert_eq!(keys(&a.cell).len(), 2, "the chunk's own rows are apart");

        // Another replica, behind and with rows of its own that must go,
        // installs the snapshot: the chunk and its rider.
        let snapshot = a.snapshot().expect("snapshot");
        let (other_host, b) = replica(&dir.path().join("b"));
        assert!(decode_reply(
            &b.apply(1, &command(ChunkCommand::Write { ops: vec![put("stale", "s")] }))
                .expect("applied")
        )
        .is_ok());
        let stale = ChunkCommand::Rider { rider: spec("idx"), ops: vec![put("row9", "9")] };
        assert!(decode_reply(&b.apply(2, &command(stale)).expect("applied")).is_ok());
        // Applied at once; the future only waits for durability, which no
        // syncer runs here.
        drop(b.restore(snapshot));
        assert_eq!(keys(&b.cell), keys(&a.cell));
        let other_rider = other_host.riders.lock().expect("riders")[&11].1.clone();
        assert_eq!(keys(&other_rider), keys(&rider_cell));
    }
}
