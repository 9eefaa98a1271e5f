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
//! A split is a command too ([`ChunkCommand::Split`]): every replica splits
//! its chunk at the same log index, keeps the lower half under this Raft
//! group and makes the upper half the chunk of a new group, over the same
//! replicas, which the node starts ([`crate::replicated`]). From then on
//! the replica's bounds are the lower half's: a write with a key outside
//! them is refused with [`ErrorCode::StaleChunkMap`] on every replica alike
//! (it was routed by a chunk map from before the split). Applied again
//! after a restart, the split finds the chunk split already and changes
//! nothing; writes from before it with keys of the upper half are refused
//! likewise, and lose nothing: the split's halves were made durable with
//! everything applied before it.
//!
//! Commands are MessagePack [`ChunkCommand`]s; replies MessagePack
//! `Result<CommitToken, ErrorInfo>`.

use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use monotable_proto::{CommitToken, ErrorCode, ErrorInfo, Record, WriteOp};
use serde::{Deserialize, Serialize};

use crate::chunk_cell::{Applied, CellState, ChunkCell};
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
    /// Splits the chunk at `at` (strictly inside it): the keys from `at`
    /// on become chunk `right_id` (an id from the meta range, also its Raft
    /// group's), held by the same replicas. Refused with `StaleChunkMap` if
    /// `at` is not inside the chunk (the chunk changed since the proposer
    /// looked); changes nothing if the chunk ends at `at` already (the
    /// split applied again after a restart).
    Split { at: Vec<u8>, right_id: u64 },
}

/// The reply to a [`ChunkCommand`].
pub type ChunkReply = Result<CommitToken, ErrorInfo>;

/// A snapshot: every live record of the chunk, in key order, and the
/// chunk's bounds (start, end) when it was taken.
#[derive(Serialize, Deserialize)]
struct ChunkSnapshot {
    records: Vec<Record>,
    #[serde(default)]
    bounds: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The replica of one chunk on this node.
pub struct ChunkReplica {
    /// The chunk as it is now: replaced by the lower half at a split.
    cell: Mutex<Arc<ChunkCell>>,
    host: Weak<dyn ChunkHost>,
    /// The last batch applied, whose durability [`Replica::flush`] waits
    /// for (a round makes every earlier batch of the chunk durable too).
    last: Mutex<Option<Applied>>,
    /// Told the id of a split's upper half before the split (`false`) and
    /// once the upper half is this node's chunk (`true`; also when a split
    /// applied again finds the chunk split already).
    on_split: Box<dyn Fn(u64, bool) + Send + Sync>,
}

fn stale(message: String) -> ErrorInfo {
    ErrorInfo { code: ErrorCode::StaleChunkMap, message }
}

impl ChunkReplica {
    /// The replica of the chunk in `cell`; `on_split` hears of the upper
    /// halves of its splits (see the field).
    pub fn new(
        cell: Arc<ChunkCell>,
        host: Weak<dyn ChunkHost>,
        on_split: Box<dyn Fn(u64, bool) + Send + Sync>,
    ) -> Self {
        ChunkReplica { cell: Mutex::new(cell), host, last: Mutex::new(None), on_split }
    }

    /// The chunk's cell now.
    pub fn cell(&self) -> Arc<ChunkCell> {
        self.cell.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The chunk's bounds now (start inclusive, end exclusive, `None` the
    /// end of the range), as this replica applied them.
    ///
    /// Errors: the chunk is unavailable or closed.
    pub fn bounds(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), NodeError> {
        self.cell().with_chunk(|c| Ok((c.meta.start.clone(), c.meta.end.clone())))
    }

    fn host(&self) -> Result<Arc<dyn ChunkHost>, ErrorInfo> {
        self.host.upgrade().ok_or_else(|| NodeError::ShuttingDown.to_info())
    }

    fn write(&self, ops: &[WriteOp]) -> ChunkReply {
        let host = self.host()?;
        let cell = self.cell();
        let applied = cell.apply(host.as_ref(), ops).map_err(|e| match e {
            NodeError::Moved if matches!(&*cell.read(), CellState::Gone) => {
                // Closed (the node is shutting down) while its group still
                // applies: this replica misses a committed write, so its
                // log must not be marked applied past it (see `flush`).
                if cell.poisoned().is_none() {
                    cell.poison("the chunk closed while its Raft group applied".into());
                }
                NodeError::ShuttingDown.to_info()
            }
            NodeError::Moved => stale(format!(
                "chunk {}: a key of the batch is outside the chunk; route again",
                cell.id
            )),
            e => e.to_info(),
        })?;
        let token = CommitToken { chunk: cell.id, seq: applied.seq() };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied);
        Ok(token)
    }

    fn split(&self, at: &[u8], right_id: u64) -> ChunkReply {
        let cell = self.cell();
        let (start, end) = self.bounds().map_err(|e| e.to_info())?;
        if end.as_deref() == Some(at) {
            // Applied before a restart (the chunk's log replays from its
            // last durable mark).
            (self.on_split)(right_id, true);
            return Ok(CommitToken { chunk: cell.id, seq: 0 });
        }
        if at <= start.as_slice() || end.as_deref().is_some_and(|e| at >= e) {
            return Err(stale(format!("chunk {}: the split key is outside the chunk", cell.id)));
        }
        let host = self.host()?;
        (self.on_split)(right_id, false);
        let split = || crate::chunk_actor::split_now(&host, &cell, at, right_id);
        // The copy may take a while: on the Raft groups' runtime, its other
        // tasks (other groups' heartbeats) move to another thread meanwhile.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let done = if multi_thread { tokio::task::block_in_place(split) } else { split() };
        match done {
            Ok((lower, _upper)) => {
                let token = CommitToken { chunk: lower.id, seq: 0 };
                *self.cell.lock().unwrap_or_else(|p| p.into_inner()) = lower;
                (self.on_split)(right_id, true);
                Ok(token)
            }
            Err(e) => {
                // Every other replica split here: this one must not take
                // another write (nor mark its log applied) until a restart
                // applies the split again.
                let reason =
                    format!("a split of this replicated chunk failed ({e}); restart the node");
                tracing::error!(chunk = cell.id, error = %e, "replicated split failed");
                cell.poison(reason);
                Err(e.to_info())
            }
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
    fn apply(&self, _index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match rmp_serde::from_slice::<ChunkCommand>(command) {
            Ok(ChunkCommand::Write { ops }) => self.write(&ops),
            Ok(ChunkCommand::Split { at, right_id }) => self.split(&at, right_id),
            Err(e) => Err(ErrorInfo {
                code: ErrorCode::BadRequest,
                message: format!("undecodable chunk command: {e}"),
            }),
        };
        encode_reply(&reply)
    }

    fn flush(&self) -> BoxedFuture<Result<(), String>> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        let poisoned = self.cell().poisoned();
        Box::pin(async move {
            if let Some(reason) = poisoned {
                // Never marked durable past what this replica failed to do.
                return Err(reason);
            }
            match last {
                Some(applied) => applied.durable().await.map(|_| ()).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let (records, bounds) = self
            .cell()
            .with_chunk(|c| {
                let all = (Bound::Unbounded, Bound::Unbounded);
                let records = c.scan(all, ReadAt::Applied, false, usize::MAX, usize::MAX)?.records;
                Ok((records, (c.meta.start.clone(), c.meta.end.clone())))
            })
            .map_err(|e| e.to_string())?;
        rmp_serde::to_vec(&ChunkSnapshot { records, bounds: Some(bounds) })
            .map_err(|e| e.to_string())
    }

    fn restore(&self, snapshot: Vec<u8>) -> BoxedFuture<Result<(), String>> {
        let snapshot: Result<ChunkSnapshot, String> =
            rmp_serde::from_slice(&snapshot).map_err(|e| format!("undecodable snapshot: {e}"));
        let cell = self.cell();
        let ops = snapshot.and_then(|s| {
            let here = self.bounds().map_err(|e| e.to_string())?;
            if let Some(there) = &s.bounds {
                if *there != here {
                    // The leader's chunk split after this replica last
                    // applied: the upper half's state at the split is not
                    // in this snapshot, so this replica cannot rebuild it.
                    return Err(format!(
                        "chunk {}: the snapshot covers {:?}..{:?}, this replica {:?}..{:?}: it \
                         missed a split of the chunk and cannot take a snapshot over it",
                        cell.id, there.0, there.1, here.0, here.1
                    ));
                }
            }
            let keep: std::collections::BTreeSet<&[u8]> =
                s.records.iter().map(|r| r.key.as_ref()).collect();
            let gone = cell
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
            cell.apply(host.as_ref(), &ops).map(Some).map_err(|e| e.to_string())
        });
        Box::pin(async move {
            match result? {
                Some(applied) => applied.durable().await.map(|_| ()).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use monotable_proto::{Command, ErrorCode, RangeOptions, Reply, ScanRequest, WriteOp};

    use super::*;
    use crate::cluster::meta::REPLICATED_ID_BASE;
    use crate::config::NodeConfig;
    use crate::node::Node;

    const RANGE: u64 = REPLICATED_ID_BASE;
    const FIRST: u64 = REPLICATED_ID_BASE + 1;
    const RIGHT: u64 = REPLICATED_ID_BASE + 7;

    fn put(k: &str, v: &str) -> ChunkCommand {
        let (key, value) = (k.as_bytes().to_vec().into(), v.as_bytes().to_vec().into());
        ChunkCommand::Write { ops: vec![WriteOp::Put { key, value }] }
    }

    fn split(at: &str) -> ChunkCommand {
        ChunkCommand::Split { at: at.as_bytes().to_vec(), right_id: RIGHT }
    }

    /// The replica of the chunk starting at `start`, recording the upper
    /// halves it reports.
    fn replica(node: &Arc<Node>, start: &str) -> (ChunkReplica, Arc<Mutex<Vec<u64>>>) {
        let cell = node
            .range_route("r", |r| r.chunks.get(start.as_bytes()).map(|c| c.cell.clone()))
            .expect("range")
            .expect("chunk");
        let host: Arc<dyn ChunkHost> = node.clone();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let told = heard.clone();
        let on_split = Box::new(move |id, done| {
            if done {
                told.lock().expect("heard").push(id)
            }
        });
        (ChunkReplica::new(cell, Arc::downgrade(&host), on_split), heard)
    }

    fn apply(r: &ChunkReplica, index: u64, c: &ChunkCommand) -> ChunkReply {
        decode_reply(&r.apply(index, &encode_command(c)))
    }

    /// Every record of the node's replica of range `r`, with the chunks'
    /// (start, id).
    async fn contents(node: &Node) -> (Vec<(String, String)>, Vec<(String, u64)>) {
        let req = ScanRequest { range: "r".into(), ..ScanRequest::default() };
        let Ok(Reply::Scan(scan)) = node.read_applied(Command::Scan(req)).await else {
            panic!("scan")
        };
        let records = scan
            .records
            .into_iter()
            .map(|r| {
                (String::from_utf8_lossy(&r.key).into(), String::from_utf8_lossy(&r.value).into())
            })
            .collect();
        let chunks = node
            .range_route("r", |r| {
                r.chunks
                    .values()
                    .map(|c| (String::from_utf8_lossy(&c.start).into(), c.id))
                    .collect()
            })
            .expect("range");
        (records, chunks)
    }

    /// The log of one replica: writes on both sides of "m", the split at
    /// "m", then writes to the lower half only (the upper half is another
    /// group's from then on).
    fn log() -> Vec<ChunkCommand> {
        let mut log: Vec<ChunkCommand> =
            "abcnopq".chars().map(|c| put(&c.to_string(), "old")).collect();
        log.push(put("o", "before-split"));
        log.push(split("m"));
        log.push(put("b", "after-split"));
        log
    }

    /// A split applied, applied again, and a log replayed after a restart
    /// over a chunk that split already: writes routed by a stale map are
    /// refused on every replica alike, and a replayed write from before
    /// the split never overwrites what the upper half's own group wrote
    /// since.
    ///
    /// Postmortem-style guard: a replay that applied pre-split writes to
    /// the upper half by key would have put "o" back to an old value.
    #[test]
    fn split_applies_once_and_replays_without_touching_the_upper_half() {
        let dir = tempfile::tempdir().expect("tmp");
        actix::System::new().block_on(async {
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let options = RangeOptions { chunk_size_max_bytes: 1 << 20 };
            node.create_range_with_ids("r", options, RANGE, FIRST).expect("range");
            let (lower, heard) = replica(&node, "");
            for (i, c) in log().iter().enumerate() {
                apply(&lower, i as u64 + 1, c).expect("applied");
            }
            assert_eq!(*heard.lock().expect("heard"), vec![RIGHT]);
            assert_eq!(lower.bounds().expect("bounds"), (Vec::new(), Some(b"m".to_vec())));
            // A write routed before the split, to a key of the upper half:
            // refused, retryably, and not applied anywhere.
            let late = apply(&lower, 20, &put("z", "late")).expect_err("stale");
            assert_eq!(late.code, ErrorCode::StaleChunkMap);
            assert!(late.code.is_retryable());
            // A split key outside the chunk now.
            let outside = ChunkCommand::Split { at: b"x".to_vec(), right_id: RIGHT + 1 };
            assert_eq!(
                apply(&lower, 21, &outside).expect_err("stale").code,
                ErrorCode::StaleChunkMap
            );
            // The upper half's own group writes "o".
            let (upper, _) = replica(&node, "m");
            apply(&upper, 1, &put("o", "upper-group")).expect("applied");
            let (records, chunks) = contents(&node).await;
            let want: Vec<(String, String)> = [
                ("a", "old"),
                ("b", "after-split"),
                ("c", "old"),
                ("n", "old"),
                ("o", "upper-group"),
                ("p", "old"),
                ("q", "old"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(records, want);
            assert_eq!(chunks.len(), 2);
            assert_eq!(chunks[1], ("m".to_string(), RIGHT));
            // Applied again (a replay before the restart's): no change.
            apply(&lower, 10, &split("m")).expect("already split");
            assert_eq!(contents(&node).await, (records.clone(), chunks.clone()));
            node.shutdown().await;
            // Postmortem: a write applied to a chunk closed by the shutdown
            // was refused as a stale route, and the replica's log could be
            // marked applied past it; now the replica refuses to be marked.
            let closed = apply(&lower, 30, &put("b", "closed")).expect_err("closed");
            assert_eq!(closed.code, ErrorCode::ShuttingDown);
            assert!(lower.flush().await.is_err(), "never marked applied past a missed write");
            drop(node);

            // Restarted with the chunk's log replayed from its start.
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let (lower, heard) = replica(&node, "");
            for (i, c) in log().iter().enumerate() {
                let reply = apply(&lower, i as u64 + 1, c);
                if let ChunkCommand::Write { ops } = c {
                    let upper = ops.iter().any(|op| op.key() >= &b"m"[..]);
                    assert_eq!(reply.is_err(), upper, "{c:?}: {reply:?}");
                }
            }
            assert_eq!(*heard.lock().expect("heard"), vec![RIGHT], "the upper half is reported");
            assert_eq!(contents(&node).await, (records, chunks));
            node.shutdown().await;
        });
    }

    /// A snapshot carries the chunk's bounds: a replica whose chunk did not
    /// split the same way refuses it rather than lose the upper half's
    /// state; one with the same bounds takes it whole.
    #[test]
    fn a_snapshot_over_other_bounds_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let other = tempfile::tempdir().expect("tmp");
        actix::System::new().block_on(async {
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let behind = Node::start(NodeConfig::for_tests(other.path())).expect("node");
            let options = RangeOptions { chunk_size_max_bytes: 1 << 20 };
            node.create_range_with_ids("r", options, RANGE, FIRST).expect("range");
            behind.create_range_with_ids("r", options, RANGE, FIRST).expect("range");
            let (ahead, _) = replica(&node, "");
            let (lagging, _) = replica(&behind, "");
            for (i, c) in log().iter().enumerate() {
                apply(&ahead, i as u64 + 1, c).expect("applied");
            }
            apply(&lagging, 1, &put("zz", "gone")).expect("applied");
            let snapshot = ahead.snapshot().expect("snapshot");
            let refused = lagging.restore(snapshot.clone()).await.expect_err("refused");
            assert!(refused.contains("missed a split"), "{refused}");
            // Split the same way: the snapshot replaces its state.
            apply(&lagging, 2, &split("m")).expect("split");
            lagging.restore(snapshot).await.expect("restored");
            let (mine, _) = contents(&node).await;
            let (theirs, _) = contents(&behind).await;
            let lower = |v: Vec<(String, String)>| -> Vec<(String, String)> {
                v.into_iter().filter(|(k, _)| k.as_str() < "m").collect()
            };
            assert_eq!(lower(theirs), lower(mine));
            node.shutdown().await;
            behind.shutdown().await;
        });
    }
}
