//! The meta range's state machine: what the whole cluster agrees on.
//!
//! It holds the node list and the chunk map of replicated ranges (chunk
//! boundaries with their generation, replica placement); the registered
//! views and sinks are to move here from each node's catalog. Every replica applies
//! the same [`MetaCommand`]s in log order, so every replica holds the same
//! [`MetaState`]; the encoding of both is MessagePack.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::consensus::{Machine, NodeId};

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where it serves the native protocol (and Raft).
    pub addr: String,
    /// The token of the join attempt that registered it.
    pub join_token: u64,
    /// Taken out with `cluster remove`; its id is never reused.
    pub removed: bool,
}

/// Ids of replicated ranges and chunks start here, far above the ids a
/// node's catalog gives its own ranges and chunks, so the two never meet
/// in a node's catalog or chunk directories.
pub const REPLICATED_ID_BASE: u64 = 1 << 62;

/// A range replicated by Raft over several nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaRange {
    pub id: u64,
    pub options: monotable_proto::RangeOptions,
    /// The nodes holding a replica of every chunk; the first one starts
    /// each chunk's Raft group.
    pub replicas: Vec<NodeId>,
    pub chunks: Vec<MetaChunk>,
}

/// A chunk of a [`MetaRange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaChunk {
    /// Also the id of its Raft group.
    pub id: u64,
    /// Inclusive.
    pub start: Vec<u8>,
    /// Exclusive; `None`: the end of the range.
    pub end: Option<Vec<u8>>,
    /// Raised by every change of the chunk's boundaries or replicas, so a
    /// cached copy can tell it is stale.
    pub generation: u64,
}

impl MetaRange {
    /// The chunk holding `key` (chunks tile the range, in key order).
    pub fn chunk_for(&self, key: &[u8]) -> &MetaChunk {
        let i = self.chunks.partition_point(|c| c.start.as_slice() <= key);
        &self.chunks[i.saturating_sub(1)]
    }
}

impl MetaChunk {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }
}

/// The replicated state of the meta range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// The cluster's random id, chosen by its founding node.
    pub cluster: u64,
    /// Replicated ranges by name.
    pub ranges: BTreeMap<String, MetaRange>,
    /// The next id for a replicated range or chunk, from
    /// [`REPLICATED_ID_BASE`].
    pub next_id: u64,
}

impl MetaState {
    /// Nodes not removed, with their addresses.
    pub fn live_members(&self) -> impl Iterator<Item = (NodeId, &NodeRecord)> {
        self.nodes.iter().filter(|(_, n)| !n.removed).map(|(id, n)| (*id, n))
    }
}

/// A change to the meta range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Registers the founding node under id 1 (the first command of a
    /// cluster). Answers [`MetaReply::Node`].
    Found { addr: String, join_token: u64, cluster: u64 },
    /// Gives a joining node its id: the node already registered with this
    /// `join_token` keeps its id, a new token gets the next id. Answers
    /// [`MetaReply::Node`], or an error for a token of a removed node.
    Join { addr: String, join_token: u64 },
    /// Marks a node removed. Answers [`MetaReply::Ok`].
    Remove { node: NodeId },
    /// Creates a replicated range of one chunk on `replicas`. Answers
    /// [`MetaReply::Range`], or an error if the name is taken or a replica
    /// is not a live node.
    CreateRange { name: String, options: monotable_proto::RangeOptions, replicas: Vec<NodeId> },
    /// Drops a replicated range. Answers [`MetaReply::Ok`].
    DropRange { name: String },
    /// Allocates an id for a replicated chunk (the upper half of a split).
    /// Answers [`MetaReply::Id`].
    NewChunkId,
    /// Records that chunk `chunk` of range `range` split at `at`: it ends
    /// at `at` with generation `generation` (its previous one plus one)
    /// and chunk `right` (generation 1) holds the rest. Answers
    /// [`MetaReply::Ok`]; also when the chunk has `generation` or a later
    /// one already (a replay, or a stale repeat: nothing changes). Refused
    /// if the range or chunk is unknown, `generation` skips one, or `at`
    /// is not strictly inside the chunk.
    SplitChunk { range: String, chunk: u64, at: Vec<u8>, right: u64, generation: u64 },
}

/// What applying a [`MetaCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaReply {
    Ok,
    Node(NodeId),
    Range(MetaRange),
    Id(u64),
    Refused(String),
}

/// The [`Machine`] of the meta range; clones share the state, so the node
/// reads what its replica applied.
#[derive(Clone)]
pub struct MetaMachine {
    state: Arc<Mutex<MetaState>>,
    /// Counts applied commands and restores, for those who follow changes.
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for MetaMachine {
    fn default() -> Self {
        MetaMachine {
            state: Default::default(),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl MetaMachine {
    pub fn state(&self) -> MutexGuard<'_, MetaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes after every applied command and restore.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn run(&self, command: MetaCommand) -> MetaReply {
        let mut s = self.state();
        match command {
            MetaCommand::Found { addr, join_token, cluster } => {
                if let Some((id, _)) = s.nodes.iter().find(|(_, n)| n.join_token == join_token) {
                    return MetaReply::Node(*id);
                }
                if s.nodes.contains_key(&1) {
                    return MetaReply::Refused("the cluster already has a founding node".into());
                }
                s.nodes.insert(1, NodeRecord { addr, join_token, removed: false });
                s.cluster = cluster;
                MetaReply::Node(1)
            }
            MetaCommand::Join { addr, join_token } => {
                if let Some((id, n)) = s.nodes.iter().find(|(_, n)| n.join_token == join_token) {
                    if n.removed {
                        return MetaReply::Refused(format!(
                            "node {id} was removed from the cluster; start it on an empty \
                             data directory to join as a new node"
                        ));
                    }
                    return MetaReply::Node(*id);
                }
                if let Some((id, _)) = s.nodes.iter().find(|(_, n)| !n.removed && n.addr == addr) {
                    return MetaReply::Refused(format!(
                        "{addr} is the address of node {id}; if that node's data is gone, take \
                         it out first with `monotable cluster remove {id}`"
                    ));
                }
                let id = s.nodes.keys().next_back().map_or(1, |last| last + 1);
                s.nodes.insert(id, NodeRecord { addr, join_token, removed: false });
                MetaReply::Node(id)
            }
            MetaCommand::CreateRange { name, options, replicas } => {
                if s.ranges.contains_key(&name) {
                    return MetaReply::Refused(format!("range {name:?} already exists"));
                }
                if let Some(bad) =
                    replicas.iter().find(|r| s.nodes.get(r).is_none_or(|n| n.removed))
                {
                    return MetaReply::Refused(format!("node {bad} is not a live member"));
                }
                let id = s.next_id.max(REPLICATED_ID_BASE);
                s.next_id = id + 2;
                let chunk = MetaChunk { id: id + 1, start: Vec::new(), end: None, generation: 1 };
                let range = MetaRange { id, options, replicas, chunks: vec![chunk] };
                s.ranges.insert(name, range.clone());
                MetaReply::Range(range)
            }
            MetaCommand::DropRange { name } => match s.ranges.remove(&name) {
                Some(_) => MetaReply::Ok,
                None => MetaReply::Refused(format!("range {name:?} does not exist")),
            },
            MetaCommand::NewChunkId => {
                let id = s.next_id.max(REPLICATED_ID_BASE);
                s.next_id = id + 1;
                MetaReply::Id(id)
            }
            MetaCommand::SplitChunk { range, chunk, at, right, generation } => {
                let Some(r) = s.ranges.get_mut(&range) else {
                    return MetaReply::Refused(format!("range {range:?} does not exist"));
                };
                let Some(i) = r.chunks.iter().position(|c| c.id == chunk) else {
                    return MetaReply::Refused(format!("range {range:?} has no chunk {chunk}"));
                };
                let c = &r.chunks[i];
                if c.generation >= generation {
                    return MetaReply::Ok;
                }
                if c.generation + 1 != generation {
                    return MetaReply::Refused(format!(
                        "chunk {chunk} is at generation {}, not {}",
                        c.generation,
                        generation - 1
                    ));
                }
                if !c.contains(&at) || at == c.start || r.chunks.iter().any(|c| c.id == right) {
                    return MetaReply::Refused(format!("chunk {chunk} cannot split at {at:?}"));
                }
                let upper =
                    MetaChunk { id: right, start: at.clone(), end: c.end.clone(), generation: 1 };
                let c = &mut r.chunks[i];
                c.end = Some(at);
                c.generation = generation;
                r.chunks.insert(i + 1, upper);
                MetaReply::Ok
            }
            MetaCommand::Remove { node } => match s.nodes.get_mut(&node) {
                Some(n) => {
                    n.removed = true;
                    MetaReply::Ok
                }
                None => MetaReply::Refused(format!("the cluster has no node {node}")),
            },
        }
    }
}

impl Machine for MetaMachine {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match rmp_serde::from_slice::<MetaCommand>(command) {
            Ok(c) => self.run(c),
            Err(e) => MetaReply::Refused(format!("undecodable meta command: {e}")),
        };
        self.bump();
        rmp_serde::to_vec(&reply).expect("meta replies always encode")
    }

    fn snapshot(&self) -> Vec<u8> {
        rmp_serde::to_vec(&*self.state()).expect("the meta state always encodes")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let state: MetaState = rmp_serde::from_slice(snapshot)
            .map_err(|e| format!("undecodable meta snapshot: {e}"))?;
        *self.state() = state;
        self.bump();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &mut MetaMachine, c: MetaCommand) -> MetaReply {
        rmp_serde::from_slice(&m.apply(0, &rmp_serde::to_vec(&c).expect("encode"))).expect("decode")
    }

    fn range(m: &MetaMachine) -> MetaRange {
        m.state().ranges.get("r").cloned().expect("range r")
    }

    fn split(chunk: u64, at: &str, right: u64, generation: u64) -> MetaCommand {
        MetaCommand::SplitChunk {
            range: "r".into(),
            chunk,
            at: at.as_bytes().to_vec(),
            right,
            generation,
        }
    }

    /// A split's record: applied once per generation, replays and stale
    /// repeats change nothing, gaps and keys outside the chunk are refused,
    /// and ids for upper halves never meet the ranges' or each other.
    #[test]
    fn split_records_carry_generations_and_replay_harmlessly() {
        let mut m = MetaMachine::default();
        let found = MetaCommand::Found { addr: "a:1".into(), join_token: 7, cluster: 5 };
        assert_eq!(apply(&mut m, found), MetaReply::Node(1));
        let create = MetaCommand::CreateRange {
            name: "r".into(),
            options: Default::default(),
            replicas: vec![1],
        };
        let MetaReply::Range(r) = apply(&mut m, create) else { panic!("created") };
        let first = r.chunks[0].id;
        let MetaReply::Id(right) = apply(&mut m, MetaCommand::NewChunkId) else { panic!("id") };
        let MetaReply::Id(other) = apply(&mut m, MetaCommand::NewChunkId) else { panic!("id") };
        assert!(right > first && other > right, "fresh ids: {first} {right} {other}");
        // A gap in generations, a key outside the chunk or at its start.
        assert!(matches!(apply(&mut m, split(first, "m", right, 3)), MetaReply::Refused(_)));
        assert!(matches!(apply(&mut m, split(first, "", right, 2)), MetaReply::Refused(_)));
        assert!(matches!(apply(&mut m, split(99, "m", right, 2)), MetaReply::Refused(_)));
        assert_eq!(range(&m).chunks.len(), 1, "nothing refused changed the map");
        assert_eq!(apply(&mut m, split(first, "m", right, 2)), MetaReply::Ok);
        let r = range(&m);
        assert_eq!(r.chunks.len(), 2);
        assert_eq!((r.chunks[0].end.as_deref(), r.chunks[0].generation), (Some(&b"m"[..]), 2));
        assert_eq!((r.chunks[1].id, r.chunks[1].start.as_slice()), (right, &b"m"[..]));
        assert_eq!((r.chunks[1].end.clone(), r.chunks[1].generation), (None, 1));
        // Replayed, or a stale repeat of generation 2 at another key: the
        // map stays as it is.
        assert_eq!(apply(&mut m, split(first, "m", right, 2)), MetaReply::Ok);
        assert_eq!(apply(&mut m, split(first, "f", other, 2)), MetaReply::Ok);
        assert_eq!(range(&m), r);
        // The upper half splits in its turn; lookups by key follow.
        assert_eq!(apply(&mut m, split(right, "t", other, 2)), MetaReply::Ok);
        let r = range(&m);
        let ids: Vec<u64> =
            ["", "a", "m", "s", "t", "zz"].iter().map(|k| r.chunk_for(k.as_bytes()).id).collect();
        assert_eq!(ids, vec![first, first, right, right, other, other]);
        // The same for every replica: a snapshot restores it.
        let mut copy = MetaMachine::default();
        copy.restore(&m.snapshot()).expect("restore");
        assert_eq!(range(&copy), r);
    }

    #[test]
    fn joins_are_idempotent_per_token_and_ids_are_never_reused() {
        let mut m = MetaMachine::default();
        let found = MetaCommand::Found { addr: "a:1".into(), join_token: 7, cluster: 5 };
        assert_eq!(apply(&mut m, found.clone()), MetaReply::Node(1));
        assert_eq!(apply(&mut m, found), MetaReply::Node(1), "a retried founding");
        let join = MetaCommand::Join { addr: "b:1".into(), join_token: 8 };
        assert_eq!(apply(&mut m, join.clone()), MetaReply::Node(2));
        assert_eq!(apply(&mut m, join.clone()), MetaReply::Node(2), "a retried join");
        assert_eq!(apply(&mut m, MetaCommand::Remove { node: 2 }), MetaReply::Ok);
        assert!(matches!(apply(&mut m, join), MetaReply::Refused(_)), "a removed node's token");
        let again = MetaCommand::Join { addr: "b:1".into(), join_token: 9 };
        assert_eq!(apply(&mut m, again), MetaReply::Node(3), "a new token, a new id");
        // A member's address is its own: a wiped node rejoining there must
        // not stand in for the member, which would count twice.
        let taken = MetaCommand::Join { addr: "b:1".into(), join_token: 11 };
        assert!(matches!(apply(&mut m, taken), MetaReply::Refused(_)));
        assert!(matches!(
            apply(&mut m, MetaCommand::Found { addr: "c:1".into(), join_token: 10, cluster: 6 }),
            MetaReply::Refused(_)
        ));
        let snapshot = m.snapshot();
        let mut other = MetaMachine::default();
        other.restore(&snapshot).expect("restore");
        assert_eq!(*other.state(), *m.state());
        assert!(matches!(
            rmp_serde::from_slice::<MetaReply>(&m.apply(0, b"\xc1")).expect("decode"),
            MetaReply::Refused(_)
        ));
    }
}
