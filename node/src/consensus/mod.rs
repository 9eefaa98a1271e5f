//! Raft groups: replication of a state machine over a set of nodes.
//!
//! Built on openraft 0.9 (pinned, with its `storage-v2` traits). Every
//! openraft type stays inside this module, so its API churn stays here; the
//! rest of the node sees [`Group`], [`Machine`], [`Transport`], [`SyncPoint`]
//! and [`ConsensusError`].
//!
//! # Layout
//!
//! - this file: the type configuration, the commands and replies a group
//!   replicates (opaque bytes to Raft), and the three traits a group is
//!   built from: the [`Machine`] it replicates, the [`Transport`] its RPCs
//!   travel by and the [`SyncPoint`] that makes its log durable.
//! - [`group`]: one Raft group: start, propose, linearizable reads,
//!   membership changes, status, and the RPCs it receives.
//! - [`network`]: openraft's network traits over a [`Transport`]; the RPCs
//!   of every group of a node share one transport, addressed by group id.
//! - [`machine_store`]: openraft's state machine storage around a
//!   [`Machine`], with its snapshots in a file.
//! - [`log_store`]: the Raft log of one group in segment files.
//! - [`replica_store`]: openraft's state machine storage for a machine
//!   that stores its state itself (a chunk), marked durable at snapshots.
//! - [`quiescence`]: idle groups switch their timers off; one ping per
//!   node pair and heartbeat interval keeps the nodes' liveness known.
//! - [`mem_log`] and [`local_net`]: a Raft log in memory and an in-process
//!   network of nodes, for tests and measurements.
//! - `sim_tests` (tests only): groups on several nodes under seeded
//!   faults, with their clients' histories checked for linearizability.
//!
//! # Terms
//!
//! Raft's own: term, leader, follower, learner, voter, vote, log index,
//! commit, apply, snapshot, purge (Ongaro and Ousterhout, "In Search of an
//! Understandable Consensus Algorithm", 2014; openraft's documentation).

// openraft's trait methods return its large error types by value; the
// helpers here return the same ones.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod group;
pub mod local_net;
pub mod log_store;
pub mod machine_store;
pub mod mem_log;
pub mod network;
pub mod quiescence;
pub mod replica_store;
#[cfg(test)]
mod sim_tests;

pub use group::{Group, GroupConfig, GroupStatus, Timing};
pub use quiescence::{Quiescence, NODE_GROUP};

/// A node of the cluster, unique for the cluster's life.
pub type NodeId = u64;

/// A Raft group: the meta range's, or one chunk's.
pub type GroupId = u64;

openraft::declare_raft_types!(
    /// The one openraft type configuration of the node: every group
    /// replicates opaque commands, so one monomorphic Raft serves them all.
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A state machine store a [`Group`] can run on ([`machine_store::MachineStore`],
/// [`replica_store::ReplicaStore`]), named without openraft's types.
pub trait StateMachineStore: openraft::storage::RaftStateMachine<TypeConfig> {}

impl<T: openraft::storage::RaftStateMachine<TypeConfig>> StateMachineStore for T {}

/// A command a group replicates, encoded by the group's [`Machine`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// What a [`Machine`] answered to a [`Command`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Debug for CommandReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandReply({} bytes)", self.0.len())
    }
}

/// The deterministic state machine a group replicates. Every replica
/// applies the same commands in the same order and must reach the same
/// state and the same replies.
pub trait Machine: Send + Sync + 'static {
    /// Applies the committed command at log `index` and returns its reply.
    /// A command the machine refuses is answered with an error encoded in
    /// the reply: it is still applied (as a no-op) on every replica.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;

    /// The whole state, to be given to [`Machine::restore`] on another
    /// replica (or on this one after a restart).
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a [`Machine::snapshot`]'s.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// Makes written files durable. A node's groups share one, so the log
/// appends of all of them that arrive while a sync runs share the next
/// sync (the node-level group commit: [`crate::group_commit::Syncer`]).
pub trait SyncPoint: Send + Sync + 'static {
    /// Makes what was written to `file` so far durable, then calls `done`
    /// (on any thread) with the outcome.
    fn sync(&self, file: Arc<std::fs::File>, done: Box<dyn FnOnce(io::Result<()>) + Send>);
}

/// The tracing target of the debug events that time a write's stages
/// (`propose`, `append_rpc`, `append_handle`, `log_sync`, `apply`, and the
/// write batcher's `batch` and the syncer's `round`), each with its
/// duration in `us`: `serve --log info,monotable::timing=debug`.
pub const TIMING: &str = "monotable::timing";

/// A [`SyncPoint`] that calls `fdatasync` on a blocking thread per call.
/// The reference to compare a shared sync point with, and enough for tests.
#[derive(Debug, Default)]
pub struct SyncEach;

impl SyncPoint for SyncEach {
    fn sync(&self, file: Arc<std::fs::File>, done: Box<dyn FnOnce(io::Result<()>) + Send>) {
        std::thread::spawn(move || done(file.sync_data()));
    }
}

/// Why a message could not be delivered. Raft retries on its own; the
/// distinction only decides how long it waits (openraft's `Unreachable`
/// backs off, a network error retries at the next heartbeat).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection to the node could be made.
    #[error("node {node} at {addr} is unreachable: {reason}")]
    Unreachable { node: NodeId, addr: String, reason: String },
    /// The connection failed during the call; the message may or may not
    /// have been delivered.
    #[error("call to node {node} failed: {reason}")]
    Network { node: NodeId, reason: String },
}

/// Carries a group's RPC to another node and brings its reply back. The
/// payloads are [`RaftRpc`]s and [`RaftRpcReply`]s encoded by
/// [`encode`]; the receiving node hands them to [`Group::handle_rpc`].
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        rpc: Vec<u8>,
    ) -> futures_lite::BoxedFuture<Result<Vec<u8>, TransportError>>;
}

/// Boxed futures without a futures crate.
pub mod futures_lite {
    /// A sendable boxed future.
    pub type BoxedFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

/// An RPC between the replicas of one group.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    Append(openraft::raft::AppendEntriesRequest<TypeConfig>),
    Vote(openraft::raft::VoteRequest<NodeId>),
    Snapshot(openraft::raft::InstallSnapshotRequest<TypeConfig>),
}

/// A reply to a [`RaftRpc`]; `Err` is the receiving Raft's own error.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    Append(
        Result<openraft::raft::AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>>,
    ),
    Vote(Result<openraft::raft::VoteResponse<NodeId>, openraft::error::RaftError<NodeId>>),
    Snapshot(
        Result<
            openraft::raft::InstallSnapshotResponse<NodeId>,
            openraft::error::RaftError<NodeId, openraft::error::InstallSnapshotError>,
        >,
    ),
    /// The receiving node has no such group (not yet created, or removed).
    NoGroup,
    /// A snapshot the receiving replica is not ready to install yet (it
    /// is fetching its data), or whose fetch failed; why, for the log.
    /// The sender tries again later.
    NotReady(String),
}

/// Applies one committed entry: a command through `apply` (its reply is
/// the entry's), a membership change into `membership`; a blank entry
/// answers nothing. An error of `apply` (the replica could not apply the
/// command: its storage failed) is returned as it is, with nothing applied.
/// Where a committed command sits in its group's log: its index, and the
/// term of the leader that appended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

pub(crate) fn apply_entry<E>(
    entry: openraft::Entry<TypeConfig>,
    membership: &mut openraft::StoredMembership<NodeId, openraft::BasicNode>,
    apply: impl FnOnce(LogPosition, &[u8]) -> Result<Vec<u8>, E>,
) -> Result<CommandReply, E> {
    let at = LogPosition { index: entry.log_id.index, term: entry.log_id.leader_id.term };
    let reply = match entry.payload {
        openraft::EntryPayload::Blank => Vec::new(),
        openraft::EntryPayload::Normal(command) => apply(at, &command.0)?,
        openraft::EntryPayload::Membership(m) => {
            *membership = openraft::StoredMembership::new(Some(entry.log_id), m);
            Vec::new()
        }
    };
    Ok(CommandReply(reply))
}

/// Encodes an RPC or its reply for a [`Transport`] (MessagePack).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    rmp_serde::to_vec(message).expect("raft messages always encode")
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("undecodable raft message: {e}"))
}

/// A group's nodes (id to address) as openraft keeps them.
pub(crate) fn raft_nodes(
    nodes: std::collections::BTreeMap<NodeId, String>,
) -> std::collections::BTreeMap<NodeId, openraft::BasicNode> {
    nodes.into_iter().map(|(id, addr)| (id, openraft::BasicNode { addr })).collect()
}

/// Why a request to a group failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// This replica is not the leader; `leader` is the one it knows of
    /// (id and address), if any. Retry there.
    #[error("not the leader{}", leader.as_ref().map(|(id, addr)| format!("; the leader is node {id} at {addr}")).unwrap_or_default())]
    NotLeader { leader: Option<(NodeId, String)> },
    /// A membership change that Raft refused (e.g. one already running).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// No majority confirmed the request in time (the leader may have lost
    /// its majority). A write may still take effect later.
    #[error("no majority of the group answered within {0} ms; a write may still take effect")]
    Timeout(u64),
    /// The group's storage failed or its Raft stopped; it serves nothing
    /// more until the node restarts.
    #[error("raft group stopped: {0}")]
    Fatal(String),
}
