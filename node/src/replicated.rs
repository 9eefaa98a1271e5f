//! Replicated ranges on this node: their creation and drop through the
//! meta range, the replicas this node holds, and the requests for them.
//!
//! A replicated range is created by the node asked: it picks the replicas
//! (the live nodes holding the fewest) and records the range in the meta
//! range (through the meta leader, wherever it is). Every node follows the meta range
//! ([`Node::follow_meta`]): a node named as a replica creates the range in
//! its catalog and router under the ids the meta range gave, and starts the
//! chunk's Raft group over it ([`crate::replica`]); the first replica
//! starts the group with every replica as a voter. A range dropped from the
//! meta range is dropped by each replica.
//!
//! Splits: a chunk over the range's size limit asks the node (from its
//! actor, the same trigger and split key as an ordinary chunk's); only the
//! chunk's Raft leader acts, and only while the meta range's record of the
//! chunk matches what the replica applied ([`Node::propose_split`]). It
//! takes an id for the upper half from the meta range, proposes
//! [`ChunkCommand::Split`] to the chunk's group (every replica splits its
//! chunk at the same log index; the lower half keeps the chunk's id and
//! group, the upper half gets the new id and a group of its own over the
//! same replicas, started by each replica with the same voters), then
//! records the split in the meta range ([`MetaCommand::SplitChunk`], with
//! the chunk's next generation: replays and stale repeats change nothing).
//! A leader that stops between the two leaves the record to the chunk's
//! next leader, which checks every second that the meta range names the
//! splits its chunks applied ([`Node::repair_chunk_map`]).
//!
//! A chunk's id is its Raft group's: a range's first chunk and every upper
//! half keep theirs in the node's catalog; a lower half gets an id of the
//! node's own, and is found by its start key, which its group keeps.
//!
//! Requests ([`Node::route_replicated`]) are routed by the chunk map in
//! this node's meta replica, chunk by chunk: a write's part for a chunk is
//! proposed to that chunk's group and acknowledged once committed (a
//! majority has it durable) and applied on the leader; a read waits for
//! Raft's read index on the chunk's leader, then reads what the leader
//! applied, once the leader's replica still holds every key asked for;
//! scans walk the chunks in key order. A replica that is not the leader
//! forwards the request to the leader; a node without a replica forwards it
//! to one. A part routed by a chunk map from before a split is refused with
//! `StaleChunkMap` (by every replica alike, at apply) and routed again once
//! the meta range has the split, for up to 15 s. Ranges of one replica are
//! ordinary ranges of the node that made them.
//!
//! Views on replicated ranges: [`crate::replicated_views`]; they run on the
//! leader of the range's first chunk, over its replica of every chunk, so a
//! range a view reads goes on splitting; a mapper's target rides on the
//! first chunk's log and does not split.
//!
//! Reads at a snapshot are served by this node's own replicas, and never
//! forwarded (a snapshot's seq is one node's): a snapshot taken here waits
//! first for each replica's read index ([`Node::settle_replicas`]). A Redis
//! database never splits ([`is_redis_database`]).
//!
//! Sinks of replicated ranges: [`crate::bridge::cluster_sinks`].
//!
//! A replica that missed a split (its leader purged the log past it) is
//! sent a snapshot of the lower half; it splits its own copy the same way
//! once this node's chunk map records the split, and the upper half's
//! group, which it starts unseeded, sends it that half in turn
//! ([`crate::replica`]'s `narrow`). A split's upper group begins at a
//! snapshot at log index 0 (`ReplicaStore::seed_membership`), so a replica
//! without the split's records is never sent its log from the start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monotable_proto::limits::{BATCH_OPS_MAX, MULTI_GET_KEYS_MAX, SCAN_REPLY_SIZE_MAX_BYTES};
use monotable_proto::{
    ChunkInfo, Command, CommitToken, ErrorCode, ErrorInfo, RangeOptions, Reply, ScanReply,
    ScanRequest, WriteOp,
};

use crate::cluster::meta::{MetaChunk, MetaCommand, MetaRange, MetaReply, REPLICATED_ID_BASE};
use crate::cluster::Cluster;
use crate::commands::check_count;
use crate::consensus::log_store::LogStore;
use crate::consensus::replica_store::ReplicaStore;
use crate::consensus::{ConsensusError, Group, GroupConfig, NodeId};
use crate::error::{NodeError, NodeResult};
use crate::node::{check_key, check_op, Node};
use crate::replica::{decode_reply, encode_command, ChunkCommand, ChunkReplica, SplitNews, Voters};
use crate::router::Route;
use crate::storage::chunk::ChunkMeta;

/// Names of the Redis endpoint's databases start with this: the endpoint
/// creates them on a database's first write ([`Node::create_redis_database`]),
/// and so does `range create` of such a name (a bridge import), with the
/// same replicas and options.
const REDIS_DATABASE_PREFIX: &str = "redis.";

/// Whether replicated range `name` is a Redis database. One never splits:
/// a Redis command runs on one Raft group (its database's), and a key's
/// rows lie under several tags (see `resp::keyspace`), so any split would
/// put one key's rows in two groups.
pub(crate) fn is_redis_database(name: &str) -> bool {
    name.starts_with(REDIS_DATABASE_PREFIX)
}

/// Replicas a range gets when its creator names no number.
pub const REPLICAS_DEFAULT: u32 = 3;

/// A replicated chunk builds a snapshot (marks its chunk durable and
/// purges its Raft log) every this many entries, unless the node is told
/// otherwise (`serve --raft-snapshot-entries`).
pub const RAFT_SNAPSHOT_ENTRIES_DEFAULT: u64 = 10_000;

/// How often a node checks that the meta range records every split of
/// the chunks it leads.
const REPAIR_EVERY_MS: u64 = 1_000;

/// How long a peer has to say whether it leads a group, and who its
/// members are, before a replica is dropped (all peers are asked at once).
const GROUP_MEMBERS_ASK_MS: u64 = 1_000;

/// A new group's leader-to-be campaigns this many times, this often,
/// until the group has a leader (the other replicas start the group as
/// they apply the split, up to a heartbeat later).
const CAMPAIGN_TRIES: u32 = 20;
const CAMPAIGN_EVERY_MS: u64 = 150;

/// How long a request waits for a replica to appear or a leader to be
/// elected before failing with `ClusterUnavailable`.
const READY_WAIT_MAX_MS: u64 = 15_000;

/// Whether a range id names a replicated range.
pub fn is_replicated(range_id: u64) -> bool {
    range_id >= REPLICATED_ID_BASE
}

fn unavailable(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::ClusterUnavailable, message)
}

/// A write whose fate is unknown: it may have been applied, so it must not
/// be sent again as it is.
fn outcome_unknown(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::OutcomeUnknown, message)
}

/// Whether a request reads at a snapshot seq (which is one replica's own).
fn reads_at_snapshot(command: &Command) -> bool {
    match command {
        Command::Get { snapshot, .. } | Command::MultiGet { snapshot, .. } => snapshot.is_some(),
        Command::Scan(req) => req.snapshot.is_some(),
        _ => false,
    }
}

/// Whether a request changes data, so that a copy sent after an ambiguous
/// failure could apply it twice.
fn is_write(command: &Command) -> bool {
    // A forwarded Redis command may write.
    matches!(command, Command::Write { .. } | Command::RespForward { .. })
}

/// The range a data request names, if it is one the cluster routes.
fn routed_range(command: &Command) -> Option<&str> {
    match command {
        Command::Get { range, .. }
        | Command::MultiGet { range, .. }
        | Command::Write { range, .. }
        | Command::SplitChunk { range, .. } => Some(range),
        Command::Scan(req) => Some(&req.range),
        Command::DescribeRange { name }
        | Command::DropRange { name }
        | Command::CompactRange { name, .. } => Some(name),
        _ => None,
    }
}

impl Node {
    /// Where a request for a replicated range is answered: `None` when
    /// this node answers it the ordinary way (a range of its own, or a
    /// read on the leader of a replicated chunk once it is linearizable),
    /// else the answer (proposed to Raft, forwarded, or refused).
    pub(crate) async fn route_replicated(
        self: &Arc<Self>,
        command: &Command,
    ) -> Option<NodeResult<Reply>> {
        let cluster = self.cluster().ok()?.clone();
        if let Some(reply) = self.route_view_command(&cluster, command).await {
            return Some(reply);
        }
        if let Command::CreateRange { name, options, replicas } = command {
            return self.create_replicated(&cluster, name, *options, *replicas).await;
        }
        if let Command::ListRanges = command {
            return Some(self.list_with_replicated(&cluster).await);
        }
        let name = routed_range(command)?;
        let local = self.router_read().range(name).map(|r| r.meta.id);
        // A range of this node's own: served the ordinary way, without a
        // look at the meta range.
        if local.is_some_and(|id| !is_replicated(id)) {
            return None;
        }
        let known = self.replicated_range(&cluster, name);
        match (local, known) {
            (Some(id), Some(range)) if range.id == id => {
                Some(self.serve_replicated(&cluster, command, name, &range).await)
            }
            // This node's replica of a range the meta range dropped (or
            // replaced): never served as if it were the node's own.
            (Some(_), _) => Some(Err(NodeError::client(
                ErrorCode::RangeNotFound,
                format!("range {name:?} does not exist (it was dropped)"),
            ))),
            (None, Some(range)) => {
                Some(self.serve_replicated(&cluster, command, name, &range).await)
            }
            // Unknown here: maybe created through another node a moment
            // ago, which this node's meta replica has not applied yet.
            // Postmortem: a range created through one node and written at
            // once through another was not found there.
            (None, None) => {
                let several = cluster.with_meta(|m| m.live_members().nth(1).is_some());
                if several != Some(true) {
                    return None;
                }
                if !cluster.catch_up_meta().await {
                    // Not "no such range": this node cannot tell.
                    return Some(Err(unavailable(format!(
                        "range {name:?} is not known to this node, and whether it exists \
                         cannot be told now: this node's copy of the cluster map could not \
                         catch up with the meta range's leader; try again"
                    ))));
                }
                let range = self.replicated_range(&cluster, name)?;
                if self.router_read().range(name).is_some() {
                    // Started here meanwhile: served as a replica.
                    return Box::pin(self.route_replicated(command)).await;
                }
                Some(self.serve_replicated(&cluster, command, name, &range).await)
            }
        }
    }

    /// `ListRanges` on a cluster: this node's ranges (its own, and its
    /// replicas, described from its own state) and the replicated ranges
    /// it holds no replica of (described by one of their replicas).
    async fn list_with_replicated(self: &Arc<Self>, cluster: &Cluster) -> NodeResult<Reply> {
        let Reply::Ranges(mut infos) = self.execute_local(Command::ListRanges).await? else {
            return Err(NodeError::Internal("ListRanges answered something else".into()));
        };
        let elsewhere: Vec<String> = cluster
            .with_meta(|m| {
                m.ranges
                    .keys()
                    .filter(|name| !infos.iter().any(|i| &i.name == *name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in elsewhere {
            match Box::pin(self.route_replicated(&Command::DescribeRange { name })).await {
                Some(Ok(Reply::Range(info))) => infos.push(info),
                // Dropped meanwhile.
                Some(Err(NodeError::Client { code: ErrorCode::RangeNotFound, .. })) => {}
                Some(Err(e)) => return Err(e),
                _ => {}
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Reply::Ranges(infos))
    }

    /// `CompactRange` on a replicated range: every replica compacts its own
    /// chunk files (compaction is local to a replica's storage; the data is
    /// the same everywhere). Fails naming the replicas that could not be
    /// reached, after the others compacted.
    async fn compact_replicated(
        self: &Arc<Self>,
        cluster: &Cluster,
        me: NodeId,
        range: &MetaRange,
        name: &str,
    ) -> NodeResult<Reply> {
        let command = Command::CompactRange { name: name.to_owned(), replica_only: true };
        let addrs: Vec<(NodeId, Option<String>)> = cluster
            .with_meta(|m| {
                range
                    .replicas
                    .iter()
                    .map(|id| (*id, m.nodes.get(id).map(|n| n.addr.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let mut failed = Vec::new();
        for (id, addr) in addrs {
            let done = if id == me {
                Box::pin(self.execute_local(command.clone())).await
            } else {
                match addr {
                    Some(addr) => self.forward(&addr, command.clone()).await,
                    None => Err(unavailable(format!("node {id} has no address"))),
                }
            };
            if let Err(e) = done {
                failed.push(format!("node {id}: {e}"));
            }
        }
        if failed.is_empty() {
            Ok(Reply::Ok)
        } else {
            Err(unavailable(format!("not every replica compacted: {}", failed.join("; "))))
        }
    }

    /// The replicated range `name`, from the meta range.
    fn replicated_range(&self, cluster: &Cluster, name: &str) -> Option<MetaRange> {
        cluster.with_meta(|m| m.ranges.get(name).cloned()).flatten()
    }

    /// Waits until this node's meta replica has applied what `done` looks
    /// for (a create or drop this node just committed through the leader),
    /// so the caller's next request here sees it.
    pub(crate) async fn wait_meta(
        &self,
        cluster: &Cluster,
        done: impl Fn(&crate::cluster::meta::MetaState) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        while Instant::now() < deadline {
            if cluster.with_meta(&done).unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn serve_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        command: &Command,
        name: &str,
        range: &MetaRange,
    ) -> NodeResult<Reply> {
        let me = cluster.node_id().ok_or_else(|| unavailable("this node has not joined"))?;
        if let Command::DropRange { .. } = command {
            return self.drop_replicated(cluster, name).await;
        }
        if let Command::CompactRange { name, replica_only } = command {
            if !replica_only {
                return self.compact_replicated(cluster, me, range, name).await;
            }
        }
        if let Command::SplitChunk { .. } = command {
            if range.rides_on.is_some() {
                return Err(NodeError::client(
                    ErrorCode::BadRequest,
                    format!("range {name:?} is the target of a mapper: it does not split"),
                ));
            }
        }
        if range.rides_on.is_some() && matches!(command, Command::Write { .. }) {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!("range {name:?} is the target of a mapper: only the mapper writes it"),
            ));
        }
        if reads_at_snapshot(command) {
            // A snapshot's seq is the node's own: such a read is served by
            // this node's replicas, as they were when it was pinned (after
            // `Node::settle_replicas`), and never forwarded.
            if !range.replicas.contains(&me) {
                return Err(NodeError::client(
                    ErrorCode::BadRequest,
                    format!(
                        "range {name:?} has replicas on nodes {:?}, not on this node {me}: read \
                         it at a snapshot taken through one of those (a snapshot is one node's)",
                        range.replicas
                    ),
                ));
            }
            self.wait_local_range(name, range.id).await?;
            return Box::pin(self.execute_local(command.clone())).await;
        }
        if !range.replicas.contains(&me) {
            return self.forward_to_replica(cluster, range, command.clone()).await;
        }
        // A view's target (one chunk) is read through the group its rows
        // ride on.
        if range.rides_on.is_some() {
            return self.serve_rider(cluster, me, command, name, range).await;
        }
        match command {
            Command::DescribeRange { .. } | Command::CompactRange { .. } => {
                // This replica's own state, once it has the range.
                self.wait_local_range(name, range.id).await?;
                Box::pin(self.execute_local(command.clone())).await
            }
            _ => {
                // Refused whole before anything is routed, as on a local range.
                match command {
                    Command::Write { ops, .. } => {
                        check_count(ops.len(), BATCH_OPS_MAX, "operations", "batch")?;
                    }
                    Command::MultiGet { keys, .. } => {
                        check_count(keys.len(), MULTI_GET_KEYS_MAX, "keys", "multi-get")?;
                        keys.iter().try_for_each(|k| check_key(k))?;
                    }
                    Command::Get { key, .. } => check_key(key)?,
                    _ => {}
                }
                let mut attempt = 0u32;
                let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
                loop {
                    // The chunk map as this node's meta replica has it now.
                    let range = self.replicated_range(cluster, name).ok_or_else(|| {
                        NodeError::client(
                            ErrorCode::RangeNotFound,
                            format!("range {name:?} does not exist (it was dropped)"),
                        )
                    })?;
                    let result = match command {
                        Command::Write { ops, atomic, .. } => {
                            return self.write_chunks(cluster, me, name, ops, *atomic).await;
                        }
                        Command::SplitChunk { key, .. } => {
                            self.split_command(cluster, me, name, &range, key, command).await
                        }
                        Command::Get { key, .. } => {
                            let chunk = range.chunk_for(key);
                            let span = (key.to_vec(), Some(key_after(key)));
                            self.read_chunk(cluster, me, chunk.id, span, command.clone()).await
                        }
                        Command::MultiGet { keys, .. } => {
                            self.multi_get_chunks(cluster, me, name, &range, keys).await
                        }
                        Command::Scan(req) => self.scan_chunks(cluster, me, &range, req).await,
                        other => {
                            Err(NodeError::Internal(format!("not a replicated request: {other:?}")))
                        }
                    };
                    match result {
                        // Routed by a chunk map from before a split: this
                        // node's meta replica learns the new one shortly.
                        Err(e)
                            if e.to_info().code == ErrorCode::StaleChunkMap
                                && Instant::now() < deadline =>
                        {
                            attempt += 1;
                            let ms = (10u64 << attempt.min(4)).min(200);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// A request for a mapper's target (one chunk, whose rows ride on its
    /// source's group): read through that group's leader.
    async fn serve_rider(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        me: NodeId,
        command: &Command,
        name: &str,
        range: &MetaRange,
    ) -> NodeResult<Reply> {
        let chunk = range.group_of(0).unwrap_or_default();
        // The replica appears once this node has applied the meta range's
        // record of it.
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        let group = running_group(cluster, chunk, deadline).await.ok_or_else(|| {
            unavailable(format!("this node's replica of range {name:?} is not running"))
        })?;
        match command {
            Command::DescribeRange { .. } | Command::CompactRange { .. } => {
                // This replica's own state.
                Box::pin(self.execute_local(command.clone())).await
            }
            Command::Write { .. } => Err(NodeError::client(
                ErrorCode::BadRequest,
                format!("range {name:?} is the target of a mapper: only the mapper writes it"),
            )),
            _ => {
                // A linearizable read: Raft's read index on the leader,
                // then what the leader applied (all of it committed).
                match self
                    .on_leader(&group, me, command, |g| async move { g.read_barrier().await })
                    .await?
                {
                    Some(reply) => Ok(reply),
                    None => self.read_applied(command.clone()).await,
                }
            }
        }
    }

    /// Waits until every replica this node holds has applied every entry
    /// committed before the call: a snapshot pinned after it shows every
    /// write acknowledged before it, on every replicated chunk here. A
    /// leader confirms its read index with a majority; a follower asks its
    /// leader for it ([`Command::GroupReadIndex`]) and waits to apply up to it.
    /// Costs one round to a majority per group held, all at once.
    ///
    /// Errors: `ClusterUnavailable` when a group has no reachable leader
    /// in time.
    pub(crate) async fn settle_replicas(self: &Arc<Self>) -> NodeResult<()> {
        let Ok(cluster) = self.cluster() else { return Ok(()) };
        if cluster.node_id().is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        // Every group whose chunk this node reads, running or not yet.
        // Postmortem: the upper half of a split this replica missed holds
        // its records from before the split until its group starts and
        // sends it a snapshot; skipped as not running, or made while the
        // others settled, a snapshot read it (deleted keys came back).
        let groups = || self.readable_groups(cluster).into_iter().collect();
        self.catch_up_groups(cluster, groups, HashSet::new(), deadline).await
    }

    /// Brings this node's replica of each group `groups` lists (but those
    /// in `caught`) up to its leader's read index, all at once, then asks
    /// `groups` again, until it lists no group not caught up: a replica
    /// that installs a snapshot of a narrower chunk meanwhile makes a
    /// chunk (the upper half it missed) that was not there at first.
    ///
    /// Errors: `ClusterUnavailable` once `deadline` passes with a group
    /// without a replica here, without a leader, or not answering.
    pub(crate) async fn catch_up_groups(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        groups: impl Fn() -> Vec<u64>,
        mut caught: HashSet<u64>,
        deadline: Instant,
    ) -> NodeResult<()> {
        loop {
            let todo: Vec<u64> = groups().into_iter().filter(|g| !caught.contains(g)).collect();
            if todo.is_empty() {
                return Ok(());
            }
            let mut tasks = tokio::task::JoinSet::new();
            for g in todo.iter().copied() {
                let (node, cluster) = (self.clone(), cluster.clone());
                tasks.spawn(async move { node.catch_up_group(&cluster, g, deadline).await });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| NodeError::Internal(format!("catch-up task: {e}")))??;
            }
            caught.extend(todo);
        }
    }

    /// Waits until this node's replica of chunk group `g` applied its
    /// leader's read index, trying again until `deadline` while the group
    /// has no replica here, no leader, or an unreachable one.
    async fn catch_up_group(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        g: u64,
        deadline: Instant,
    ) -> NodeResult<()> {
        loop {
            let attempt = async {
                let group = cluster
                    .group(g)
                    .ok_or_else(|| unavailable(format!("no replica of chunk {g} runs here yet")))?;
                let status = group.status();
                let me = cluster.node_id();
                if status.leader.is_some() && status.leader == me {
                    return group
                        .read_barrier()
                        .await
                        .map_err(|e| unavailable(format!("chunk {g}: {e}")));
                }
                let addr = status
                    .leader
                    .and_then(|l| cluster.with_meta(|m| m.nodes.get(&l).map(|n| n.addr.clone())))
                    .flatten()
                    .ok_or_else(|| unavailable(format!("chunk {g} has no leader")))?;
                match self.forward(&addr, Command::GroupReadIndex { group: g }).await? {
                    Reply::Index(index) => group
                        .wait_applied(index)
                        .await
                        .map_err(|e| unavailable(format!("chunk {g}: {e}"))),
                    other => Err(NodeError::Internal(format!("unexpected reply {other:?}"))),
                }
            };
            match attempt.await {
                Err(e)
                    if Instant::now() < deadline
                        && e.to_info().code == ErrorCode::ClusterUnavailable =>
                {
                    tracing::debug!(chunk = g, error = %e, "chunk not caught up yet; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// The Raft groups of the replicated chunks this node holds: those
    /// whose replicas run, and every chunk of a replicated range in its
    /// router whose id is a group's (one made before its group starts).
    /// Ranges riding on another chunk's log have no group of their own.
    fn readable_groups(&self, cluster: &Cluster) -> std::collections::BTreeSet<u64> {
        let mut groups: std::collections::BTreeSet<u64> =
            self.replicated.all().into_iter().map(|(id, _, _)| id).collect();
        // Taken before the router's lock, not under it.
        let own_log: HashSet<u64> = cluster
            .with_meta(|m| {
                m.ranges.values().filter(|r| r.rides_on.is_none()).map(|r| r.id).collect()
            })
            .unwrap_or_default();
        for r in self.router_read().ranges() {
            if is_replicated(r.meta.id) && own_log.contains(&r.meta.id) {
                groups.extend(r.chunks.values().map(|c| c.id).filter(|id| is_replicated(*id)));
            }
        }
        groups
    }

    /// Runs `f` on this node's replica if it leads the group; else forwards
    /// `command` to the leader and returns its reply (`Some`). Waits for an
    /// election when there is no leader.
    ///
    /// A request is sent again (to this replica or a leader) only when the
    /// failure shows it was not taken: `NotLeader` before proposing, or a
    /// leader that could not be connected to. A write whose proposal timed
    /// out, whose replica stopped, or whose forwarded copy got no answer
    /// fails with [`ErrorCode::OutcomeUnknown`]: Raft may still commit it,
    /// so a copy could apply it twice (a put replayed after a later put of
    /// the same key undoes that one).
    pub(crate) async fn on_leader<F, Fut>(
        &self,
        group: &Group,
        me: NodeId,
        command: &Command,
        f: F,
    ) -> NodeResult<Option<Reply>>
    where
        F: Fn(Group) -> Fut,
        Fut: std::future::Future<Output = Result<(), ConsensusError>>,
    {
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        let write = is_write(command);
        // `f` proposes the command itself (for a `RespForward`, `f` is a
        // read barrier and the leader proposes later, on its own terms).
        // Postmortem: a read barrier refused on a replica that had just
        // lost its leadership failed RESP reads (TYPE) with "may or may
        // not have been applied".
        let proposes = matches!(command, Command::Write { .. });
        loop {
            // A write is proposed only on a replica that believes it leads,
            // and one refused with `NotLeader` after that is not sent
            // again: openraft answers `ForwardToLeader` also for an entry
            // its log dropped in favour of a new leader's, and another
            // replica that has that entry may still commit it (a copy sent
            // on would then be applied twice).
            // The full status (it copies the group's membership) only
            // when this replica does not lead: not on every write.
            let outcome = if write && !group.is_leader() {
                let status = group.status();
                let leader = status
                    .leader
                    .and_then(|id| status.voters.get(&id).map(|addr| (id, addr.clone())));
                Err(ConsensusError::NotLeader { leader })
            } else {
                match f(group.clone()).await {
                    Err(e @ ConsensusError::NotLeader { .. }) if proposes => {
                        return Err(outcome_unknown(format!(
                            "chunk {}: {e} while the write was proposed; it may or may not \
                             have been applied",
                            group.id()
                        )))
                    }
                    other => other,
                }
            };
            match outcome {
                Ok(()) => return Ok(None),
                Err(ConsensusError::NotLeader { leader: Some((id, addr)) }) if id != me => {
                    match self.forward(&addr, command.clone()).await {
                        // The leader this replica knows of could not be
                        // reached (down, or not yet restarted): nothing was
                        // sent; ask again once Raft moved on.
                        Err(e)
                            if e.to_info().code == ErrorCode::ClusterUnavailable
                                && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => return other.map(Some),
                    }
                }
                Err(ConsensusError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e @ ConsensusError::NotLeader { .. }) => {
                    return Err(unavailable(format!("chunk {}: {e}", group.id())))
                }
                Err(e @ (ConsensusError::Timeout(_) | ConsensusError::Fatal(_))) if proposes => {
                    return Err(outcome_unknown(format!(
                        "chunk {}: {e}; the write may or may not have been applied",
                        group.id()
                    )))
                }
                Err(e @ ConsensusError::Timeout(_)) => {
                    return Err(unavailable(format!("chunk {}: {e}", group.id())))
                }
                // This node's replica stopped (removed from the group, or
                // its storage failed): the others may serve it.
                Err(e @ ConsensusError::Fatal(_)) => {
                    return Err(unavailable(format!(
                        "chunk {}: this node's replica: {e}; try another node",
                        group.id()
                    )))
                }
                Err(e) => return Err(NodeError::Internal(format!("chunk {}: {e}", group.id()))),
            }
        }
    }

    /// Waits until this node holds its replica of range `name` (id `id`).
    async fn wait_local_range(&self, name: &str, id: u64) -> NodeResult<()> {
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        while self.router_read().range(name).is_none_or(|r| r.meta.id != id) {
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "this node's replica of range {name:?} is not running"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// This node's replica of chunk `chunk`, once it runs (it appears once
    /// this node applied the meta range's record of the range, or the
    /// split that made the chunk).
    async fn wait_group(
        &self,
        cluster: &Cluster,
        chunk: u64,
    ) -> NodeResult<(Group, Arc<ChunkReplica>)> {
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        loop {
            if let (Some(g), Some(r)) = (cluster.group(chunk), self.replicated.replica(chunk)) {
                return Ok((g, r));
            }
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "this node's replica of chunk {chunk} is not running"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `ops` chunk by chunk (each chunk's part atomic), by the chunk
    /// map in this node's meta replica. A part refused as routed by a stale
    /// map is routed again by a fresher one (alone: the parts written are
    /// not written again), for up to [`READY_WAIT_MAX_MS`].
    async fn write_chunks(
        &self,
        cluster: &Cluster,
        me: NodeId,
        name: &str,
        ops: &[WriteOp],
        atomic: bool,
    ) -> NodeResult<Reply> {
        // Refused whole before anything is proposed, as on a local range.
        ops.iter().try_for_each(check_op)?;
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        let mut tokens = Vec::new();
        let mut todo = ops.to_vec();
        let mut attempt = 0u32;
        while !todo.is_empty() {
            let range = self.replicated_range(cluster, name).ok_or_else(|| {
                NodeError::client(
                    ErrorCode::RangeNotFound,
                    format!("range {name:?} does not exist (it was dropped)"),
                )
            })?;
            let mut parts: Vec<(u64, Vec<WriteOp>)> = Vec::new();
            for op in std::mem::take(&mut todo) {
                let id = range.chunk_for(op.key()).id;
                match parts.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, v)) => v.push(op),
                    None => parts.push((id, vec![op])),
                }
            }
            if atomic && parts.len() > 1 {
                return Err(NodeError::client(
                    ErrorCode::CrossChunkBatch,
                    format!(
                        "an atomic batch must fall in one chunk; this one spans {}",
                        parts.len()
                    ),
                ));
            }
            for (chunk, part) in parts {
                match self.write_part(cluster, me, name, chunk, &part, atomic).await {
                    Ok(t) => tokens.extend(t),
                    Err(e)
                        if e.to_info().code == ErrorCode::StaleChunkMap
                            && Instant::now() < deadline =>
                    {
                        todo.extend(part)
                    }
                    Err(e) => return Err(e),
                }
            }
            if !todo.is_empty() {
                // This node's meta replica learns the split shortly.
                attempt += 1;
                tokio::time::sleep(Duration::from_millis((10u64 << attempt.min(4)).min(200))).await;
            }
        }
        tokens.sort();
        Ok(Reply::Written(tokens))
    }

    /// Writes `part`, all of it in chunk `chunk` by this node's chunk map:
    /// proposed on the chunk's leader here, or sent to it as a request
    /// (atomic if the client's was: the leader's chunk map may be newer).
    async fn write_part(
        &self,
        cluster: &Cluster,
        me: NodeId,
        name: &str,
        chunk: u64,
        part: &[WriteOp],
        atomic: bool,
    ) -> NodeResult<Vec<CommitToken>> {
        let (group, replica) = self.wait_group(cluster, chunk).await?;
        let sub = Command::Write { range: name.to_owned(), ops: part.to_vec(), atomic };
        match self.propose_on_leader(&group, &replica, me, &sub, part).await? {
            Proposed::Forwarded(Reply::Written(t)) => Ok(t),
            Proposed::Forwarded(other) => {
                Err(NodeError::Internal(format!("unexpected reply {other:?}")))
            }
            Proposed::Here(token) => Ok(vec![token]),
        }
    }

    /// Proposes the write `ops` to `group` on its leader (through the
    /// replica's batcher: with the other writes to the chunk that arrive
    /// meanwhile), or sends `command` (the same change as a request) to
    /// the leader.
    async fn propose_on_leader(
        &self,
        group: &Group,
        replica: &ChunkReplica,
        me: NodeId,
        command: &Command,
        ops: &[WriteOp],
    ) -> NodeResult<Proposed> {
        let reply = std::sync::Mutex::new(None);
        let batcher = replica.batcher();
        let forwarded = self
            .on_leader(group, me, command, |g| {
                let reply = &reply;
                async move {
                    let answer = batcher.write(&g, ops.to_vec(), None).await?;
                    *reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
                    Ok(())
                }
            })
            .await?;
        if let Some(r) = forwarded {
            return Ok(Proposed::Forwarded(r));
        }
        let answer = reply.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| {
            Err(ErrorInfo { code: ErrorCode::Internal, message: "no reply to a write".into() })
        });
        match answer {
            Ok(token) => Ok(Proposed::Here(token)),
            Err(info) => Err(NodeError::client(info.code, info.message)),
        }
    }

    /// Reads `command` (its keys within `span`: start inclusive, end
    /// exclusive or `None` for the end of the range) from chunk `chunk` on
    /// its leader, after Raft's read index there; `StaleChunkMap` if the
    /// chunk no longer holds the whole span.
    async fn read_chunk(
        &self,
        cluster: &Cluster,
        me: NodeId,
        chunk: u64,
        span: (Vec<u8>, Option<Vec<u8>>),
        command: Command,
    ) -> NodeResult<Reply> {
        let (group, replica) = self.wait_group(cluster, chunk).await?;
        // A linearizable read: Raft's read index on the leader, then what
        // the leader applied (all of it committed).
        if let Some(reply) =
            self.on_leader(&group, me, &command, |g| async move { g.read_barrier().await }).await?
        {
            return Ok(reply);
        }
        let (start, end) = replica.bounds()?;
        let inside = span.0 >= start
            && match (&end, &span.1) {
                (None, _) => true,
                (Some(e), Some(s)) => s <= e,
                (Some(_), None) => false,
            };
        if !inside {
            return Err(NodeError::client(
                ErrorCode::StaleChunkMap,
                format!("chunk {chunk} no longer holds every key asked for"),
            ));
        }
        self.read_applied(command).await
    }

    async fn multi_get_chunks(
        &self,
        cluster: &Cluster,
        me: NodeId,
        name: &str,
        range: &MetaRange,
        keys: &[monotable_proto::Bytes],
    ) -> NodeResult<Reply> {
        let mut parts: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let id = range.chunk_for(key).id;
            match parts.iter_mut().find(|(c, _)| *c == id) {
                Some((_, v)) => v.push(i),
                None => parts.push((id, vec![i])),
            }
        }
        let mut values = vec![None; keys.len()];
        for (chunk, at) in parts {
            let part: Vec<_> = at.iter().map(|i| keys[*i].clone()).collect();
            let first = part.iter().min().map(|k| k.to_vec()).unwrap_or_default();
            let last = part.iter().max().map(|k| key_after(k));
            let sub = Command::MultiGet { range: name.to_owned(), keys: part, snapshot: None };
            match self.read_chunk(cluster, me, chunk, (first, last), sub).await? {
                Reply::Values(v) if v.len() == at.len() => {
                    for (i, v) in at.into_iter().zip(v) {
                        values[i] = v;
                    }
                }
                other => return Err(NodeError::Internal(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(Reply::Values(values))
    }

    /// A scan walking the chunks in key order (descending for a reverse
    /// scan), each read on its leader, until the limit or the reply size
    /// is reached (then `resume` is where the next chunk starts).
    async fn scan_chunks(
        &self,
        cluster: &Cluster,
        me: NodeId,
        range: &MetaRange,
        req: &ScanRequest,
    ) -> NodeResult<Reply> {
        let (start, end) = crate::scan::bounds_of(req)?;
        let limit = crate::node::scan_limit(req.limit);
        let (mut records, mut bytes) = (Vec::new(), 0usize);
        let done = |records: Vec<_>, resume: Option<Vec<u8>>| {
            Ok(Reply::Scan(ScanReply { records, resume: resume.map(Into::into), snapshot: None }))
        };
        if matches!((&start, &end), (Some(s), Some(e)) if s >= e) {
            return done(records, None);
        }
        let mut lower = start.clone().unwrap_or_default();
        let mut upper = end.clone();
        loop {
            let chunk = if req.reverse {
                match &upper {
                    Some(u) => {
                        let i = range.chunks.partition_point(|c| c.start.as_slice() < u.as_slice());
                        &range.chunks[i.saturating_sub(1)]
                    }
                    None => range
                        .chunks
                        .last()
                        .ok_or_else(|| NodeError::Internal("no chunks".into()))?,
                }
            } else {
                range.chunk_for(&lower)
            };
            let sub_start = lower.clone().max(chunk.start.clone());
            let sub_end = match (&upper, &chunk.end) {
                (Some(u), Some(e)) => Some(u.clone().min(e.clone())),
                (Some(u), None) => Some(u.clone()),
                (None, e) => e.clone(),
            };
            let sub = ScanRequest {
                range: req.range.clone(),
                start: Some(sub_start.clone().into()),
                end: sub_end.clone().map(Into::into),
                prefix: None,
                limit: (limit - records.len()) as u32,
                reverse: req.reverse,
                snapshot: None,
            };
            let reply = self
                .read_chunk(cluster, me, chunk.id, (sub_start, sub_end), Command::Scan(sub))
                .await?;
            let Reply::Scan(part) = reply else {
                return Err(NodeError::Internal(format!("unexpected reply {reply:?}")));
            };
            bytes += part.records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
            records.extend(part.records);
            if part.resume.is_some() {
                return done(records, part.resume.map(|b| b.to_vec()));
            }
            // The next chunk in the scan's direction, if the scan reaches it.
            let next = if req.reverse {
                (!chunk.start.is_empty() && start.as_ref().is_none_or(|s| s < &chunk.start))
                    .then(|| chunk.start.clone())
            } else {
                chunk.end.clone().filter(|e| end.as_ref().is_none_or(|x| e < x))
            };
            let Some(next) = next else { return done(records, None) };
            if records.len() >= limit || bytes >= SCAN_REPLY_SIZE_MAX_BYTES {
                return done(records, Some(next));
            }
            if req.reverse {
                upper = Some(next);
            } else {
                lower = next;
            }
        }
    }

    /// `SplitChunk` on a replicated range: the chunk holding `key` splits
    /// there, decided on its leader (forwarded there).
    async fn split_command(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        me: NodeId,
        name: &str,
        range: &MetaRange,
        key: &[u8],
        command: &Command,
    ) -> NodeResult<Reply> {
        check_key(key)?;
        let chunk = range.chunk_for(key);
        if chunk.start.as_slice() == key {
            return Ok(Reply::Ok);
        }
        let (group, _) = self.wait_group(cluster, chunk.id).await?;
        if let Some(reply) =
            self.on_leader(&group, me, command, |g| async move { g.read_barrier().await }).await?
        {
            return Ok(reply);
        }
        self.propose_split(cluster, name, chunk.id, key.to_vec()).await
    }

    /// Splits replicated chunk `chunk` of range `name` at `at`, on this
    /// node, its leader (see the module docs: the upper half's id from the
    /// meta range, [`ChunkCommand::Split`] through the chunk's group, then
    /// [`MetaCommand::SplitChunk`]). `Ok` without a split when `at` is not
    /// strictly inside the chunk.
    ///
    /// Errors: `BadRequest` for a Redis database; `Busy` while the chunk is
    /// splitting; `StaleChunkMap` while the meta range's record of the
    /// chunk is behind the replica; `ClusterUnavailable` when the group
    /// lost its leader.
    async fn propose_split(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        chunk: u64,
        at: Vec<u8>,
    ) -> NodeResult<Reply> {
        if is_redis_database(name) {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!(
                    "range {name:?} is a Redis database on a cluster: it stays one chunk (one \
                     key's rows lie under several tags, and a command runs on one Raft group)"
                ),
            ));
        }
        let Some(_splitting) = self.replicated.begin_split(chunk) else {
            return Err(NodeError::client(ErrorCode::Busy, format!("chunk {chunk} is splitting")));
        };
        let (group, replica) = self.wait_group(cluster, chunk).await?;
        let range = self.replicated_range(cluster, name).ok_or_else(|| {
            NodeError::client(ErrorCode::RangeNotFound, format!("range {name:?} does not exist"))
        })?;
        let recorded = range.chunks.iter().find(|c| c.id == chunk).cloned();
        let bounds = replica.bounds()?;
        let Some(recorded) = recorded.filter(|c| (c.start.clone(), c.end.clone()) == bounds) else {
            return Err(NodeError::client(
                ErrorCode::StaleChunkMap,
                format!("the meta range's record of chunk {chunk} is behind its replica"),
            ));
        };
        if !recorded.contains(&at) || at == recorded.start {
            return Ok(Reply::Ok);
        }
        // Not while the group's replicas change: the upper half starts with
        // the group's voters, which must be one settled set that holds the
        // chunk (not a joint configuration, nor a learner still copying),
        // and a replica the chunk map places on a node meanwhile is made
        // from the map's boundaries, which a split would make stale.
        let status = group.status();
        let mut listed = range.replicas.clone();
        listed.sort_unstable();
        let voters: Vec<NodeId> = status.voters.keys().copied().collect();
        if status.joint_target.is_some() || !status.learners.is_empty() || voters != listed {
            return Err(NodeError::client(
                ErrorCode::Busy,
                format!("chunk {chunk}'s replicas are being moved: it splits once they are done"),
            ));
        }
        let right = match cluster.propose_meta(MetaCommand::NewChunkId).await? {
            MetaReply::Id(id) => id,
            other => return Err(NodeError::Internal(format!("unexpected meta reply {other:?}"))),
        };
        // The upper half's group starts with this group's voters now, on
        // every replica that applies the split: the range's first replicas
        // may have moved away since.
        let voters = group.status().voters;
        let proposal =
            encode_command(&ChunkCommand::Split { at: at.clone(), right_id: right, voters });
        let bytes = group.propose(proposal).await.map_err(|e| match e {
            e @ (ConsensusError::NotLeader { .. } | ConsensusError::Timeout(_)) => {
                unavailable(format!("chunk {chunk}: {e}"))
            }
            e => NodeError::Internal(format!("chunk {chunk}: {e}")),
        })?;
        decode_reply(&bytes).map_err(|info| NodeError::client(info.code, info.message))?;
        tracing::info!(range = name, chunk, right, at = ?String::from_utf8_lossy(&at), "replicated chunk split");
        let generation = recorded.generation + 1;
        let record =
            MetaCommand::SplitChunk { range: name.to_owned(), chunk, at, right, generation };
        match cluster.propose_meta(record).await? {
            MetaReply::Ok => {}
            // Dropped meanwhile, or recorded by a later split's repair.
            other => tracing::warn!(range = name, chunk, reply = ?other, "split not recorded"),
        }
        Ok(Reply::Ok)
    }

    /// Called from a replicated chunk's actor while the chunk is over its
    /// size limit: if this node leads the chunk's Raft group, the chunk
    /// splits at `key` (in a task of its own).
    pub(crate) fn split_wanted(self: &Arc<Self>, chunk: &ChunkMeta, key: Vec<u8>) {
        let Ok(cluster) = self.cluster() else { return };
        let cluster = cluster.clone();
        let Some(name) =
            self.router_read().range_by_id(chunk.range_id).map(|r| r.meta.name.clone())
        else {
            return;
        };
        if is_redis_database(&name) {
            // Stays one chunk (see `is_redis_database`), however large.
            return;
        }
        let Some(group) = self.replicated.group_of(chunk.id) else { return };
        let me = cluster.node_id();
        if me.is_none() || cluster.group(group).and_then(|g| g.status().leader) != me {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            match node.propose_split(&cluster, &name, group, key).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(range = name, chunk = group, error = %e, "split not made")
                }
            }
        });
    }

    /// Records in the meta range the splits that the chunks this node
    /// leads applied but the meta range does not name (the leader that
    /// split them stopped before it recorded them): a chunk whose replica
    /// ends before its record does, with the upper half's chunk (its id is
    /// its Raft group's, unsplit since: a chunk splits only once its record
    /// is current) starting there.
    async fn repair_chunk_map(&self, cluster: &Cluster) {
        let Some(me) = cluster.node_id() else { return };
        for (chunk, name, replica) in self.replicated.all() {
            if cluster.group(chunk).and_then(|g| g.status().leader) != Some(me)
                || self.replicated.lock_splitting().contains(&chunk)
            {
                // Not this node's to record, or about to be recorded.
                continue;
            }
            let Ok((_, Some(at))) = replica.bounds() else { continue };
            let Some(recorded) = self
                .replicated_range(cluster, &name)
                .and_then(|r| r.chunks.iter().find(|c| c.id == chunk).cloned())
            else {
                continue;
            };
            let upper =
                self.router_read().range(&name).and_then(|r| r.chunks.get(&at).map(|c| c.id));
            let Some(record) = missed_split(&name, &recorded, at, upper) else { continue };
            tracing::info!(range = name, chunk, "recording a split the meta range missed");
            if let Err(e) = cluster.propose_meta(record).await {
                tracing::debug!(range = name, chunk, error = %e, "split not recorded yet");
            }
        }
    }

    /// Sends `command` to the node at `addr` as it is; its reply or error.
    ///
    /// Errors: `ClusterUnavailable` when no connection could be made
    /// (nothing was sent); for a write that was sent and got no answer,
    /// `OutcomeUnknown`; the node's own error otherwise.
    pub(crate) async fn forward(&self, addr: &str, command: Command) -> NodeResult<Reply> {
        use crate::cluster::transport::PeerError;
        let cluster = self.cluster()?;
        let write = is_write(&command);
        cluster.peers().call(addr, |c| async move { c.forward(command).await }).await.map_err(|e| {
            match e {
                PeerError::Server(info) => NodeError::client(info.code, info.message),
                PeerError::Call(e) if write => outcome_unknown(format!(
                    "node at {addr}: {e}; the write may or may not have been applied"
                )),
                e => unavailable(format!("node at {addr}: {e}")),
            }
        })
    }

    pub(crate) async fn forward_to_replica(
        &self,
        cluster: &Cluster,
        range: &MetaRange,
        command: Command,
    ) -> NodeResult<Reply> {
        let meta = cluster.meta().ok_or_else(|| unavailable("this node has not joined"))?;
        let mut last = None;
        for id in &range.replicas {
            let Some(node) = meta.nodes.get(id) else { continue };
            match self.forward(&node.addr, command.clone()).await {
                Err(e) if e.to_info().code == ErrorCode::ClusterUnavailable => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| unavailable("no replica of the range is reachable")))
    }

    /// Creates a replicated range, or returns `None` when the range is to
    /// be an ordinary one of this node (one replica).
    async fn create_replicated(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        options: RangeOptions,
        replicas: Option<u32>,
    ) -> Option<NodeResult<Reply>> {
        let meta = cluster.meta()?;
        if replicas == Some(0) {
            return Some(Err(NodeError::client(
                ErrorCode::BadRequest,
                "a range needs at least 1 replica",
            )));
        }
        let members: Vec<NodeId> = meta.live_members().map(|(id, _)| id).collect();
        let wanted = replicas.unwrap_or(REPLICAS_DEFAULT).max(1) as usize;
        // A cluster of one makes ordinary ranges, unless more replicas are
        // asked for: then a replicated range of one, which takes more as
        // nodes join.
        if wanted <= 1 || (members.len() <= 1 && replicas.is_none()) {
            if meta.ranges.contains_key(name) {
                return Some(Err(NodeError::client(
                    ErrorCode::RangeExists,
                    format!("range {name:?} already exists (replicated)"),
                )));
            }
            return None;
        }
        if meta.ranges.contains_key(name) {
            return Some(Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("range {name:?} already exists"),
            )));
        }
        if let Some(r) = self.router_read().range(name) {
            // Dropped from the map, and its replica here not yet.
            let (code, message) = match is_replicated(r.meta.id) {
                true => (
                    ErrorCode::Busy,
                    format!("range {name:?} is still being dropped on this node; retry"),
                ),
                false => (ErrorCode::RangeExists, format!("range {name:?} already exists")),
            };
            return Some(Err(NodeError::client(code, message)));
        }
        if is_redis_database(name) {
            // Made as the endpoint's first write makes it (a bridge import
            // into a database no client wrote yet comes this way).
            if options != RangeOptions::default() || replicas.is_some() {
                return Some(Err(NodeError::client(
                    ErrorCode::BadRequest,
                    format!(
                        "{name:?} is a Redis database: on a cluster it gets the default options \
                         and min({REPLICAS_DEFAULT}, members) replicas"
                    ),
                )));
            }
            return Some(self.create_redis_database(name).await.map(|()| Reply::Ok));
        }
        Some(self.create_replicated_range(cluster, name, options, wanted).await)
    }

    async fn create_replicated_range(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        options: RangeOptions,
        wanted: usize,
    ) -> NodeResult<Reply> {
        crate::node::validate_range_name(name)?;
        if options.chunk_size_max_bytes < monotable_proto::limits::CHUNK_SIZE_MIN_BYTES {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!(
                    "chunk size must be at least {} bytes",
                    monotable_proto::limits::CHUNK_SIZE_MIN_BYTES
                ),
            ));
        }
        // Live nodes holding the fewest replicas, then the lowest ids.
        let status = cluster.status(self.node_info()).await?;
        let meta = cluster.meta().ok_or_else(|| unavailable("this node has not joined"))?;
        let load = |id: NodeId| meta.ranges.values().filter(|r| r.replicas.contains(&id)).count();
        let mut live: Vec<NodeId> =
            status.nodes.iter().filter(|n| n.live && !n.draining).map(|n| n.id).collect();
        live.sort_by_key(|id| (load(*id), *id));
        if live.len() < wanted {
            tracing::warn!(
                range = name,
                wanted,
                live = live.len(),
                "fewer live nodes than replicas asked for: the range gets one per live node, \
                 and one on each node that joins later until it has as many as asked for"
            );
        }
        live.truncate(wanted);
        let command = MetaCommand::CreateRange {
            name: name.to_owned(),
            options,
            replicas: live,
            wanted: wanted as u32,
        };
        // A range of one node's own under this name would shadow the
        // replicated one on that node: refused while any live node has one.
        for n in status.nodes.iter().filter(|n| n.live && n.id != status.answered_by) {
            let describe = Command::DescribeRange { name: name.to_owned() };
            if self.forward(&n.addr, describe).await.is_ok() {
                return Err(NodeError::client(
                    ErrorCode::RangeExists,
                    format!("range {name:?} already exists on node {}", n.id),
                ));
            }
        }
        match cluster.propose_meta(command).await? {
            MetaReply::Range(r) => {
                tracing::info!(range = name, id = r.id, replicas = ?r.replicas, "created replicated range");
                self.wait_meta(cluster, |m| m.ranges.get(name).is_some_and(|x| x.id == r.id)).await;
                Ok(Reply::Ok)
            }
            MetaReply::Refused(m) => Err(meta_refusal(m)),
            other => Err(NodeError::Internal(format!("unexpected meta reply {other:?}"))),
        }
    }

    /// Creates the Redis database range `name` (`redis.N`) as a replicated
    /// range of min(3, members) replicas, through the meta range; `Ok` too
    /// when another node created it meanwhile.
    ///
    /// Errors: `RangeExists` naming the node when a live node holds an
    /// ordinary range of that name (made before the cluster grew: only that
    /// node serves it); `ClusterUnavailable` when fewer than two nodes are
    /// live.
    pub(crate) async fn create_redis_database(self: &Arc<Self>, name: &str) -> NodeResult<()> {
        let cluster = self.cluster()?.clone();
        let meta = cluster.meta().ok_or_else(|| unavailable("this node has not joined"))?;
        if meta.ranges.contains_key(name) {
            return Ok(());
        }
        let wanted = meta.live_members().count().min(REPLICAS_DEFAULT as usize);
        let created =
            self.create_replicated_range(&cluster, name, RangeOptions::default(), wanted).await;
        match created {
            Ok(_) => Ok(()),
            Err(e @ NodeError::Client { code: ErrorCode::RangeExists, .. }) => {
                // Lost a race with another node's create: its record shows
                // up here shortly. A node's own range never does.
                let deadline = Instant::now() + Duration::from_millis(2_000);
                while Instant::now() < deadline {
                    if cluster.with_meta(|m| m.ranges.contains_key(name)).unwrap_or(false) {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn drop_replicated(&self, cluster: &Arc<Cluster>, name: &str) -> NodeResult<Reply> {
        let drop = MetaCommand::DropRange { name: name.to_owned() };
        self.change_meta(cluster, drop, |m| !m.ranges.contains_key(name)).await.map(|()| Reply::Ok)
    }

    /// Proposes `command` (answered [`MetaReply::Ok`]) to the meta range
    /// and waits until this node's meta replica shows `done`.
    ///
    /// Errors: a refusal as [`meta_refusal`] maps it; the meta range's
    /// errors.
    pub(crate) async fn change_meta(
        &self,
        cluster: &Cluster,
        command: MetaCommand,
        done: impl Fn(&crate::cluster::meta::MetaState) -> bool,
    ) -> NodeResult<()> {
        match cluster.propose_meta(command).await? {
            MetaReply::Ok => {
                self.wait_meta(cluster, done).await;
                Ok(())
            }
            MetaReply::Refused(m) => Err(meta_refusal(m)),
            other => Err(NodeError::Internal(format!("unexpected meta reply {other:?}"))),
        }
    }

    /// Fills in who holds and leads each chunk of range `name` (id
    /// `range_id`): this node for an ordinary range; the meta range's
    /// replicas, the Raft group's voters and leader for a replicated one,
    /// whose chunks are named by their Raft groups' ids.
    pub(crate) fn fill_replicas(&self, name: &str, range_id: u64, chunks: &mut [ChunkInfo]) {
        let Ok(cluster) = self.cluster() else { return };
        let me = cluster.node_id().unwrap_or(0);
        let replicas = if is_replicated(range_id) {
            cluster
                .with_meta(|m| m.ranges.get(name).map(|r| (r.replicas.clone(), r.rides_on)))
                .flatten()
        } else {
            None
        };
        for c in chunks {
            match &replicas {
                Some((r, rides_on)) => {
                    c.replicas = r.clone();
                    if let Some(group) = self.replicated.group_of(c.id) {
                        c.id = group;
                    }
                    let group = rides_on.unwrap_or(c.id);
                    if let Some(status) = cluster.group(group).map(|g| g.status()) {
                        c.leader = status.leader;
                        c.voters = status.voters.keys().copied().collect();
                    }
                }
                None => {
                    c.replicas = vec![me];
                    c.leader = Some(me);
                }
            }
        }
    }

    /// Follows the meta range: creates, starts and drops this node's
    /// replicas as it says, now, after every change and every split of a
    /// chunk here; and once a second records the splits it missed
    /// ([`Node::repair_chunk_map`]).
    pub fn follow_meta(self: &Arc<Self>, cluster: Arc<Cluster>) {
        self.follow_views(cluster.clone());
        self.follow_sinks(cluster.clone());
        let node = self.clone();
        tokio::spawn(async move {
            // Joining: no meta replica yet.
            let mut changes = loop {
                if let Some(c) = cluster.meta_changes() {
                    break c;
                }
                if node.is_shutting_down() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let kick = node.replicated.kick.clone();
            loop {
                if node.is_shutting_down() {
                    return;
                }
                if let Err(e) = node.reconcile(&cluster).await {
                    tracing::warn!(error = %e, "replicas not yet as the meta range says; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                node.repair_chunk_map(&cluster).await;
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = kick.notified() => {}
                    // A replica stopped and was unregistered: start it again.
                    _ = cluster.replicas_wanted().notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(REPAIR_EVERY_MS)) => {}
                }
            }
        });
    }

    async fn reconcile(self: &Arc<Self>, cluster: &Arc<Cluster>) -> NodeResult<()> {
        let Some(me) = cluster.node_id() else { return Ok(()) };
        let Some(meta) = cluster.meta() else { return Ok(()) };
        // Replicas of ranges the meta range dropped (or dropped and made
        // again under the same name), or moved to other nodes. A moved
        // replica that leads one of the range's groups stays until it has
        // handed the group over (its placement loop adds the new replica,
        // then removes itself, and steps down).
        // Postmortem: a removed node that led a group dropped its replica
        // at once; the others kept following a leader whose node still
        // answered pings, and the database was unavailable until the
        // removed node's process ended.
        let leads_here = |name: &str| {
            self.replicated
                .all()
                .iter()
                .any(|(g, n, _)| n == name && cluster.group(*g).is_some_and(|g| g.is_leader()))
        };
        let candidates: Vec<(String, bool)> = self
            .router_read()
            .ranges()
            .filter_map(|r| {
                let gone = is_replicated(r.meta.id)
                    && match meta.ranges.get(&r.meta.name) {
                        // An id this meta replica has not given out yet: a
                        // view's target created from its source's log ahead
                        // of the meta range's record of it, not a drop.
                        None => r.meta.id < meta.next_id,
                        Some(m) if m.id != r.meta.id => true,
                        // A view's target goes with the replica of the
                        // group it rides on, not before: that replica's
                        // snapshots carry the target's rows. Postmortem: a
                        // drained leader dropped the target at once while
                        // it kept leading its source (handing it over); the
                        // snapshot it sent the new replica held the source
                        // without the target's rows.
                        Some(m) if m.rides_on.is_some_and(|g| cluster.group(g).is_some()) => false,
                        Some(m) => !m.replicas.contains(&me) && !leads_here(&r.meta.name),
                    };
                let moved = meta.ranges.get(&r.meta.name).is_some_and(|m| m.id == r.meta.id);
                gone.then(|| (r.meta.name.clone(), moved))
            })
            .collect();
        // A replica moved away is dropped only once every group of the
        // range here has left it out: until then it may still count
        // towards a majority, and entries it acknowledged would be lost
        // with it. Postmortem: a follower dropped its replica as soon as
        // the chunk map moved it, while still a voter; placed on the range
        // again before the leader removed it, it came back empty and the
        // leader found its log reverted.
        let mut gone = Vec::new();
        for (name, moved) in candidates {
            if !moved || self.released(cluster, me, &name).await {
                gone.push(name);
            }
        }
        let stale = self.stale_new_replicas(cluster, me, &meta.ranges, &gone);
        gone.extend(stale);
        for name in gone {
            // A split's lower halves have ids of this node's: their groups
            // are the registry's.
            let mut groups: Vec<u64> =
                self.range_route(&name, |r| r.chunks.values().map(|c| c.id).collect())?;
            groups.extend(self.replicated.remove_range(&name));
            groups.sort_unstable();
            groups.dedup();
            for id in groups {
                if let Some(g) = cluster.remove_group(id) {
                    g.shutdown().await;
                }
                let dir = group_dir(&self.config.data_dir, id);
                if dir.exists() {
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "raft files not removed");
                    }
                }
            }
            self.drop_range_unchecked(&name).await?;
        }
        // Replicas this node should hold.
        for (name, range) in &meta.ranges {
            if !range.replicas.contains(&me) {
                continue;
            }
            // A view's target rides on its source's group.
            let rides = range.rides_on.is_some();
            // The range's first chunk: its id never changes (a split's
            // lower half keeps its chunk's id and Raft group).
            let first = range.id + 1;
            let routes: Vec<Route> = {
                let router = self.router_read();
                match router.range(name) {
                    Some(r) => r.chunks.values().cloned().collect(),
                    None => Vec::new(),
                }
            };
            let routes = if routes.is_empty() {
                let _creating = self.creating_range.lock().unwrap_or_else(|p| p.into_inner());
                if self.router_read().range(name).is_some() {
                    continue;
                }
                // A replica starts as the chunks the map lists (with their
                // groups' ids); splits not yet in the map come from the
                // groups' logs. Postmortem: a replica started as the first
                // chunk alone waited for the splits to come from that
                // chunk's log; once the log was purged (a snapshot for a
                // move) the snapshot covered less than the chunk, which
                // refused it, and the replica never came up.
                let chunks: Vec<ChunkMeta> = match rides {
                    true => Vec::new(),
                    false => range
                        .chunks
                        .iter()
                        .map(|c| ChunkMeta {
                            id: c.id,
                            range_id: range.id,
                            start: c.start.clone(),
                            end: c.end.clone(),
                        })
                        .collect(),
                };
                if chunks.is_empty() {
                    vec![self.create_range_with_ids(name, range.options, range.id, first)?]
                } else {
                    self.create_range_with_chunks(name, range.options, range.id, &chunks)?
                }
            } else {
                routes
            };
            if rides {
                continue;
            }
            for route in routes {
                // A chunk with an id of the meta range's is its Raft
                // group's; one with an id of this node's is a split's
                // lower half, the group that starts there.
                let group = if is_replicated(route.id) {
                    Some(route.id)
                } else {
                    range.chunks.iter().find(|c| c.start == route.start).map(|c| c.id)
                };
                let Some(group) = group else { continue };
                if cluster.group(group).is_some() {
                    continue;
                }
                let initial = || -> Voters {
                    range
                        .initial_voters()
                        .iter()
                        .filter_map(|id| meta.nodes.get(id).map(|n| (*id, n.addr.clone())))
                        .collect()
                };
                // A node moved off the range and placed on it again
                // starts empty: it must not seed (its log would be a second
                // history of the group); the leader brings it in.
                let first_seeded =
                    range.initial_voters().contains(&me) && !range.departed.contains(&me);
                let (voters, seeded) = if group == first {
                    (initial(), first_seeded)
                } else {
                    // A split's upper half: seeded by the replicas that
                    // applied the split (they hold its records), with the
                    // voters it carried.
                    let dir = group_dir(&self.config.data_dir, group);
                    match read_split_seed(&dir) {
                        Ok(Some(v)) if v.is_empty() => (initial(), first_seeded),
                        Ok(Some(v)) => {
                            let seeded = v.contains_key(&me);
                            (v, seeded)
                        }
                        Ok(None) => (Voters::new(), false),
                        Err(e) => {
                            tracing::error!(group, error = %e, "split seed unreadable");
                            (Voters::new(), false)
                        }
                    }
                };
                // Every replica a range was created on seeds its chunks'
                // groups with the same voters (a no-op where it ran
                // before); one of them campaigns at once (see `Init`).
                let init = if !seeded {
                    // Added later (a removed node's place): its leader
                    // brings it in.
                    Init::Never
                } else if group == first {
                    Init::Now(voters)
                } else {
                    let parent = self.replicated.parents_lock().remove(&group);
                    match parent.and_then(|p| cluster.group(p)).and_then(|p| p.status().leader) {
                        Some(leader) if leader == me => Init::Lead(voters),
                        _ => Init::Later(voters),
                    }
                };
                self.start_replica(cluster, me, name, group, &route, init).await?;
            }
        }
        Ok(())
    }

    /// This node's replicas of replicated ranges that were made from a
    /// chunk map behind a split (applied in a chunk's Raft log, not yet
    /// recorded in the map) and hold nothing yet. Such a replica's chunk is
    /// wider than the one its group holds now; rather than split its empty
    /// copy when the leader's snapshot comes (see [`crate::replica`]), it
    /// is dropped and made again from the map, which records the split by
    /// now. Only a replica that holds nothing qualifies: no
    /// live record in any chunk, and in each of its groups no entry applied
    /// and not a voter, so dropping it loses nothing a majority counted on.
    fn stale_new_replicas(
        &self,
        cluster: &Cluster,
        me: NodeId,
        ranges: &std::collections::BTreeMap<String, MetaRange>,
        skip: &[String],
    ) -> Vec<String> {
        let mut stale = Vec::new();
        for (name, range) in ranges {
            if !range.replicas.contains(&me) || range.rides_on.is_some() || skip.contains(name) {
                continue;
            }
            let routes: Vec<Route> = match self.router_read().range(name) {
                Some(r) if r.meta.id == range.id => r.chunks.values().cloned().collect(),
                _ => continue,
            };
            let bounds: Vec<ChunkBounds<'_>> =
                routes.iter().map(|r| (r.id, r.start.as_slice(), r.end.as_deref())).collect();
            if !wider_than_recorded(&bounds, &range.chunks) {
                continue;
            }
            let holds_nothing = routes.iter().all(|route| {
                let empty = route.cell.with_chunk(|c| Ok(c.live_records() == 0)).unwrap_or(false);
                let fresh = cluster.group(route.id).is_none_or(|g| {
                    let status = g.status();
                    status.last_applied_index.is_none() && !status.voters.contains_key(&me)
                });
                empty && fresh
            });
            if holds_nothing {
                tracing::warn!(
                    range = %name,
                    "this node's new replica was made from a chunk map behind a split: made \
                     again from the map"
                );
                stale.push(name.clone());
            }
        }
        stale
    }

    /// Whether every Raft group of this node's replica of range `name` has
    /// taken this node out of its voters and learners, as the group's
    /// leader (asked with [`Command::GroupMembers`]) or this replica
    /// itself says; `false` when that cannot be told now.
    async fn released(&self, cluster: &Arc<Cluster>, me: NodeId, name: &str) -> bool {
        let groups: Vec<u64> = self
            .replicated
            .all()
            .into_iter()
            .filter(|(_, n, _)| n == name)
            .map(|(g, _, _)| g)
            .collect();
        for id in groups {
            let Some(group) = cluster.group(id) else { continue };
            if group.stopped().is_some() {
                return false;
            }
            let status = group.status();
            if !status.voters.contains_key(&me) && !status.learners.contains_key(&me) {
                continue;
            }
            // The replicas it knows of, and those the chunk map lists now
            // (the leader may be one added since this replica last heard).
            let listed: Vec<(NodeId, String)> = cluster
                .with_meta(|m| {
                    let replicas =
                        m.ranges.get(name).map(|r| r.replicas.clone()).unwrap_or_default();
                    replicas
                        .into_iter()
                        .filter_map(|id| m.nodes.get(&id).map(|n| (id, n.addr.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let known =
                status.voters.iter().chain(&status.learners).map(|(id, a)| (*id, a.clone()));
            let mut peers: Vec<(NodeId, String)> = known.chain(listed).collect();
            peers.sort();
            peers.dedup();
            let addrs = peers.into_iter().filter(|(peer, _)| *peer != me).map(|(_, a)| a);
            let ask = Duration::from_millis(GROUP_MEMBERS_ASK_MS);
            let confirmed = cluster
                .peers()
                .leader_members(id, addrs, ask)
                .await
                .is_some_and(|members| !members.contains(&me));
            if !confirmed {
                return false;
            }
        }
        true
    }

    /// Starts this node's replica of chunk (and Raft group) `group` of
    /// range `name` over the chunk at `route`, initialized as `init` says
    /// (a group that ran before keeps its own voters).
    async fn start_replica(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        me: NodeId,
        name: &str,
        group: u64,
        route: &Route,
        init: Init,
    ) -> NodeResult<()> {
        // A replica that closed after losing applied writes (a full disk)
        // opens again from its files; its Raft log applies them again on
        // top.
        route.cell.reopen_replica(self.as_ref())?;
        for (_, cell) in crate::replica::Riders::riders_of(self.as_ref(), group) {
            cell.reopen_replica(self.as_ref())?;
        }
        let dir = group_dir(&self.config.data_dir, group);
        let start = |e: String| NodeError::Internal(format!("raft group {group}: {e}"));
        let log = LogStore::open(&dir.join("log"), cluster.sync_point())
            .map_err(|e| start(e.to_string()))?;
        let host: Arc<dyn crate::chunk_host::ChunkHost> = self.clone();
        let riders: Arc<dyn crate::replica::Riders> = self.clone();
        let copies = cluster
            .snapshot_copies()
            .ok_or_else(|| start("this node is not a member of the cluster yet".into()))?;
        let (kick, parents) = (self.replicated.kick.clone(), self.replicated.parents.clone());
        let data_dir = self.config.data_dir.clone();
        let on_split = Box::new(move |news: SplitNews<'_>| {
            if news.done {
                // Its upper half's group is to start.
                kick.notify_one()
            } else {
                // Recorded before the upper half is routed, where the next
                // reconcile may find it: see `Init::Lead` and `SPLIT_SEED_FILE`.
                let dir = group_dir(&data_dir, news.right);
                if let Err(e) = write_split_seed(&dir, news.voters) {
                    tracing::error!(group = news.right, error = %e, "split seed not recorded");
                }
                parents.lock().unwrap_or_else(|p| p.into_inner()).insert(news.right, group);
            }
        });
        let replica = Arc::new(
            ChunkReplica::new(route.cell.clone(), Arc::downgrade(&host))
                .for_group(group)
                .with_riders(Arc::downgrade(&riders))
                .with_on_split(on_split)
                .with_chunk_map(recorded_chunk(cluster))
                .with_snapshots(copies, dir.join("incoming")),
        );
        let store = ReplicaStore::open(&dir.join("state"), replica.clone())
            .map_err(|e| start(e.to_string()))?;
        log.unpurge_to_snapshot(store.applied()).map_err(|e| start(e.to_string()))?;
        let config = GroupConfig {
            group,
            node: me,
            timing: cluster.timing(),
            snapshot_every_entries: self.config.raft_snapshot_entries.max(1),
            snapshot_gate: Some(store.gate()),
        };
        // A new group's log starts with its membership on every replica
        // (see `LogStore::seed_membership`): whichever of them is up can
        // be elected. Postmortem: the first replica initialized the group
        // and the others waited to hear from it; one that voted for it and
        // never got its first entry could not start the group itself, so a
        // split's upper half had no leader until the splitting node was
        // back.
        let fresh = match &init {
            Init::Never => false,
            Init::Now(voters) => {
                log.seed_membership(voters.clone()).await.map_err(|e| start(e.to_string()))?
            }
            // A split's upper half: its replicas hold its state already,
            // which its log does not (see `ReplicaStore::seed_membership`).
            Init::Lead(voters) | Init::Later(voters) => {
                log.is_empty()
                    && store
                        .seed_membership(voters.clone())
                        .await
                        .map_err(|e| start(e.to_string()))?
            }
        };
        // Registered before the group runs: its log may split the chunk
        // as soon as it applies.
        self.replicated.insert(group, name, replica);
        let g = cluster.start_group(config, log, store).await.map_err(|e| start(e.to_string()))?;
        // One replica of a new group campaigns at once (all at once would
        // split the vote): the one that led the split it comes from, or a
        // new range's lowest-id replica. The others hold their own
        // elections until they hear from a leader, for two election
        // timeouts at most (it may be down).
        let campaigns = fresh
            && match &init {
                Init::Lead(_) => true,
                Init::Now(voters) => voters.keys().next() == Some(&me),
                Init::Never | Init::Later(_) => false,
            };
        if fresh && !campaigns {
            // The replica that campaigns wins unopposed unless it is down.
            let election_max = Duration::from_millis(cluster.timing().election_max_ms);
            g.hold_elections(2 * election_max);
        }
        if campaigns {
            let g = g.clone();
            tokio::spawn(async move {
                for _ in 0..CAMPAIGN_TRIES {
                    // A leader not yet acknowledged by a quorum reports no
                    // leader: campaigning again would depose it.
                    let status = g.status();
                    if status.state == "leader" || status.leader.is_some() {
                        return;
                    }
                    if g.campaign().await.is_err() {
                        return;
                    }
                    // Until the other replicas start the group (as they
                    // apply the split), its votes go unanswered.
                    tokio::time::sleep(Duration::from_millis(CAMPAIGN_EVERY_MS)).await;
                }
            });
        }
        cluster.add_group(g);
        tracing::info!(range = name, chunk = group, "replica running");
        Ok(())
    }
}

/// A split's proposal in flight on this node; ends when dropped.
struct Splitting<'a> {
    replicas: &'a Replicas,
    chunk: u64,
}

impl Drop for Splitting<'_> {
    fn drop(&mut self) {
        self.replicas.lock_splitting().remove(&self.chunk);
    }
}

/// The replicated chunks this node holds, by their Raft groups' ids.
#[derive(Default)]
pub struct Replicas {
    replicas: std::sync::Mutex<HashMap<u64, (String, Arc<ChunkReplica>)>>,
    /// Chunks whose split this node is proposing now.
    splitting: std::sync::Mutex<HashSet<u64>>,
    /// Woken when a chunk here split (its upper half's group is to start).
    kick: Arc<tokio::sync::Notify>,
    /// Upper halves of splits applied here whose groups are yet to start,
    /// with the group they split from.
    parents: Arc<std::sync::Mutex<HashMap<u64, u64>>>,
}

impl Replicas {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Arc<ChunkReplica>)>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parents_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.parents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_splitting(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.splitting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, group: u64, range: &str, replica: Arc<ChunkReplica>) {
        self.lock().insert(group, (range.to_owned(), replica));
    }

    /// The replica of chunk `group`.
    pub fn replica(&self, group: u64) -> Option<Arc<ChunkReplica>> {
        self.lock().get(&group).map(|(_, r)| r.clone())
    }

    /// The Raft group whose replica is this node's chunk `chunk` (an id of
    /// the node's catalog).
    pub fn group_of(&self, chunk: u64) -> Option<u64> {
        self.lock().iter().find(|(_, (_, r))| r.cell().id == chunk).map(|(g, _)| *g)
    }

    fn all(&self) -> Vec<(u64, String, Arc<ChunkReplica>)> {
        self.lock().iter().map(|(g, (n, r))| (*g, n.clone(), r.clone())).collect()
    }

    /// Forgets the replicas of range `name`; returns their groups.
    fn remove_range(&self, name: &str) -> Vec<u64> {
        let mut replicas = self.lock();
        let groups: Vec<u64> =
            replicas.iter().filter(|(_, (n, _))| n == name).map(|(g, _)| *g).collect();
        for g in &groups {
            replicas.remove(g);
        }
        groups
    }

    /// Marks a split of `chunk` in flight, unless one is already.
    fn begin_split(&self, chunk: u64) -> Option<Splitting<'_>> {
        // The lock is released before a guard exists: dropping one takes
        // it again. Postmortem: `then_some` built the guard even when the
        // chunk was already marked, then dropped it with the lock still
        // held (the thread locked the mutex it held: the node hung for
        // good under concurrent splits), and its drop also unmarked the
        // split in flight.
        let inserted = self.lock_splitting().insert(chunk);
        inserted.then(|| Splitting { replicas: self, chunk })
    }
}

/// The record of a split that chunk `recorded` of range `range` applied
/// but the meta range lacks: `Some` when the chunk's replica ends at `at`,
/// strictly inside the recorded chunk, and `upper` (the id of this node's
/// chunk starting at `at`) is a replicated chunk's, so the split's upper
/// half (which cannot have split since: a chunk splits only once its
/// record is current).
fn missed_split(
    range: &str,
    recorded: &MetaChunk,
    at: Vec<u8>,
    upper: Option<u64>,
) -> Option<MetaCommand> {
    if !recorded.contains(&at) || at == recorded.start {
        return None;
    }
    let right = upper.filter(|id| is_replicated(*id))?;
    Some(MetaCommand::SplitChunk {
        range: range.to_owned(),
        chunk: recorded.id,
        at,
        right,
        generation: recorded.generation + 1,
    })
}

/// The least key after `key`.
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The client error for a refusal of the meta range: `RangeExists` for a
/// name taken, `RangeNotFound` for a name unknown, `BadRequest` otherwise.
/// Postmortem: dropping a range a view reads answered `RangeNotFound`
/// (every refusal of a drop was mapped to it).
pub(crate) fn meta_refusal(message: String) -> NodeError {
    let code = if message.contains("already exists") {
        ErrorCode::RangeExists
    } else if message.ends_with("does not exist") {
        ErrorCode::RangeNotFound
    } else {
        ErrorCode::BadRequest
    };
    NodeError::client(code, message)
}

/// How a replica's Raft group is initialized when it starts (voters by
/// node id, with their addresses).
///
/// The file in a split's upper half's Raft group directory that names the
/// voters its log starts with ([`ChunkCommand::Split`]'s, MessagePack with
/// a CRC32C), written durably before the replica splits. Its presence says
/// this node applied the split and holds the upper half's records, so it
/// may seed the group; a node without it (the chunk placed on it later, or
/// a copy that came by snapshot) waits for the group's leader to bring it
/// in. Every replica that seeds writes the same voters: the split's.
const SPLIT_SEED_FILE: &str = "split-seed";

/// A chunk's id, start (inclusive) and end (exclusive; `None`: the end of
/// the range).
type ChunkBounds<'a> = (u64, &'a [u8], Option<&'a [u8]>);

/// Whether a chunk of a replica (id, start, end) ends after the chunk
/// map's record of the same chunk: a split the map records that the
/// replica never applied.
fn wider_than_recorded(replica: &[ChunkBounds<'_>], recorded: &[MetaChunk]) -> bool {
    replica.iter().any(|&(id, start, end)| {
        recorded.iter().find(|c| c.id == id).is_some_and(|c| {
            c.start == start
                && match (c.end.as_deref(), end) {
                    (Some(recorded_end), Some(end)) => recorded_end < end,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
        })
    })
}

/// The directory of this node's files of Raft group `id`: its log, its
/// state machine's marker, snapshot copies coming in.
fn group_dir(data_dir: &std::path::Path, id: u64) -> std::path::PathBuf {
    data_dir.join("raft").join(format!("{id:016x}"))
}

/// This node's running replica of Raft group `id`, once there is one, or
/// `None` past `deadline`.
async fn running_group(cluster: &Cluster, id: u64, deadline: Instant) -> Option<Group> {
    loop {
        if let Some(g) = cluster.group(id) {
            return Some(g);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Looks up chunks in this node's copy of the chunk map (see
/// [`crate::replica::RecordedChunk`]).
fn recorded_chunk(cluster: &Arc<Cluster>) -> crate::replica::RecordedChunk {
    let cluster = Arc::downgrade(cluster);
    Box::new(move |range_id, start| {
        cluster.upgrade()?.with_meta(|m| {
            let range = m.ranges.values().find(|r| r.id == range_id)?;
            range.chunks.iter().find(|c| c.start == start).map(|c| c.id)
        })?
    })
}

fn write_split_seed(dir: &std::path::Path, voters: &Voters) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let body = rmp_serde::to_vec(voters).map_err(|e| e.to_string())?;
    crate::storage::manifest::write_file_durably(
        dir,
        SPLIT_SEED_FILE,
        &crate::storage::manifest::with_crc(body),
    )
    .map_err(|e| e.to_string())
}

fn read_split_seed(dir: &std::path::Path) -> Result<Option<Voters>, String> {
    crate::storage::manifest::read_small_file(dir, SPLIT_SEED_FILE, |bytes| {
        let body = crate::storage::manifest::checked_crc(bytes)?;
        rmp_serde::from_slice(body).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())
}

/// Every variant but `Never` seeds a new group's log with its voters
/// ([`LogStore::seed_membership`]); they differ in who campaigns at once.
enum Init {
    /// A replica added later (in a removed node's place): its leader
    /// brings it in.
    Never,
    /// A new range's first chunk: its lowest-id replica campaigns at once.
    Now(std::collections::BTreeMap<NodeId, String>),
    /// A split's upper half on the replica that led the split: it
    /// campaigns until the group has a leader.
    Lead(std::collections::BTreeMap<NodeId, String>),
    /// A split's upper half on the other replicas: they elect after their
    /// election timeout if the splitting replica does not win.
    Later(std::collections::BTreeMap<NodeId, String>),
}

/// A proposal's outcome: applied here, or the leader's reply to the
/// request forwarded to it.
enum Proposed {
    Here(CommitToken),
    Forwarded(Reply),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta::MetaMachine;
    use crate::consensus::Machine;

    // A second split of a chunk already splitting deadlocked the thread
    // (see `Replicas::begin_split`); it must be refused and leave the
    // first one marked.
    #[test]
    fn a_second_split_of_a_chunk_in_flight_is_refused_and_keeps_the_first() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = Replicas::default();
            let first = r.begin_split(7).expect("the first split");
            let second = r.begin_split(7).is_none();
            let still = r.lock_splitting().contains(&7);
            drop(first);
            let again = r.begin_split(7).is_some();
            let _ = tx.send((second, still, again));
        });
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("no deadlock");
        assert_eq!(got, (true, true, true), "(second refused, first still marked, free after)");
    }

    fn chunk(id: u64, start: &str, end: Option<&str>, generation: u64) -> MetaChunk {
        let end = end.map(|e| e.as_bytes().to_vec());
        MetaChunk { id, start: start.as_bytes().to_vec(), end, generation }
    }

    /// A split that a chunk's leader applied and that the meta range lacks
    /// (its proposer died between the two) is recorded by the next leader,
    /// at the next generation; a replica that agrees with its record, or a
    /// chunk at `at` of the node's own ids (a lower half), records nothing.
    /// Recorded twice, it changes the chunk map once.
    #[test]
    fn a_split_the_meta_range_missed_is_recorded_once() {
        let base = REPLICATED_ID_BASE;
        let recorded = chunk(base + 1, "", None, 3);
        assert_eq!(missed_split("r", &recorded, b"".to_vec(), Some(base + 9)), None);
        assert_eq!(missed_split("r", &recorded, b"m".to_vec(), Some(17)), None);
        assert_eq!(missed_split("r", &recorded, b"m".to_vec(), None), None);
        let bounded = chunk(base + 1, "", Some("m"), 3);
        assert_eq!(missed_split("r", &bounded, b"m".to_vec(), Some(base + 9)), None, "agrees");
        assert_eq!(missed_split("r", &bounded, b"q".to_vec(), Some(base + 9)), None, "outside");
        let record = missed_split("r", &bounded, b"f".to_vec(), Some(base + 9)).expect("missed");
        assert_eq!(
            record,
            MetaCommand::SplitChunk {
                range: "r".into(),
                chunk: base + 1,
                at: b"f".to_vec(),
                right: base + 9,
                generation: 4
            }
        );
        // Applied to a meta range that has the chunk at generation 3.
        let mut m = MetaMachine::default();
        let run = |m: &mut MetaMachine, c: &MetaCommand| -> MetaReply {
            rmp_serde::from_slice(&m.apply(0, &rmp_serde::to_vec(c).expect("encode")))
                .expect("decode")
        };
        let found = MetaCommand::Found { addr: "a:1".into(), join_token: 1, cluster: 1 };
        run(&mut m, &found);
        let create = MetaCommand::CreateRange {
            name: "r".into(),
            options: Default::default(),
            replicas: vec![1],
            wanted: 0,
        };
        run(&mut m, &create);
        for (g, at, right) in [(2, "t", base + 5), (3, "m", base + 6)] {
            let c = MetaCommand::SplitChunk {
                range: "r".into(),
                chunk: base + 1,
                at: at.as_bytes().to_vec(),
                right,
                generation: g,
            };
            assert_eq!(run(&mut m, &c), MetaReply::Ok);
        }
        assert_eq!(run(&mut m, &record), MetaReply::Ok);
        let once = m.state().ranges["r"].clone();
        assert_eq!(run(&mut m, &record), MetaReply::Ok);
        assert_eq!(m.state().ranges["r"], once, "recorded twice, changed once");
        let starts: Vec<&[u8]> = once.chunks.iter().map(|c| c.start.as_slice()).collect();
        assert_eq!(starts, vec![&b""[..], b"f", b"m", b"t"]);
        assert_eq!(once.chunks[0].generation, 4);
    }

    /// The voters a split carried survive a restart in its group's
    /// directory; a damaged record is an error (the node then waits to be
    /// brought in rather than seed with a guess), and no record says this
    /// node did not apply the split.
    #[test]
    fn a_split_seed_is_kept_durably_and_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let group = group_dir(dir.path(), 0x42);
        assert_eq!(read_split_seed(&group), Ok(None));
        let voters: Voters =
            [(3, "127.0.0.1:3".to_string()), (7, "127.0.0.1:7".to_string())].into_iter().collect();
        write_split_seed(&group, &voters).expect("written");
        assert_eq!(read_split_seed(&group), Ok(Some(voters)));
        let file = group.join(SPLIT_SEED_FILE);
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[0] ^= 1;
        std::fs::write(&file, bytes).expect("damaged");
        assert!(read_split_seed(&group).is_err());
    }

    /// A replica made from a chunk map that was behind a split is wider
    /// than the map's record once the map has the split; one the map is
    /// behind (the split applied, not yet recorded) is not.
    #[test]
    fn a_replica_wider_than_the_maps_record_is_found() {
        let recorded = [chunk(5, "", Some("m"), 2), chunk(9, "m", None, 1)];
        assert!(wider_than_recorded(&[(5, b"", None)], &recorded));
        assert!(wider_than_recorded(&[(5, b"", Some(b"t"))], &recorded));
        assert!(!wider_than_recorded(&[(5, b"", Some(b"m")), (9, b"m", None)], &recorded));
        // The map behind the replica: narrower here, never wider.
        let behind = [chunk(5, "", None, 1)];
        assert!(!wider_than_recorded(&[(5, b"", Some(b"m")), (9, b"m", None)], &behind));
    }
}
