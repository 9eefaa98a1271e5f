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
//! Requests ([`Node::route_replicated`]): a write is proposed to the chunk's
//! Raft group and acknowledged once committed (a majority has it durable)
//! and applied on the leader; a read waits for Raft's read index on the
//! leader, then reads what the leader applied. A
//! replica that is not the leader forwards the request to the leader; a
//! node without a replica forwards it to one. Ranges of one replica are
//! ordinary ranges of the node that made them.
//!
//! Views on replicated ranges: [`crate::replicated_views`].
//!
//! Not yet: splits of replicated chunks (a replicated range is one chunk),
//! reads at a snapshot, sinks and bridge jobs on replicated ranges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use monotable_proto::{ChunkInfo, Command, ErrorCode, RangeOptions, Reply, WriteOp};

use crate::cluster::meta::{MetaCommand, MetaRange, MetaReply, REPLICATED_ID_BASE};
use crate::cluster::Cluster;
use crate::consensus::log_store::LogStore;
use crate::consensus::replica_store::ReplicaStore;
use crate::consensus::{ConsensusError, Group, GroupConfig, NodeId};
use crate::error::{NodeError, NodeResult};
use crate::node::{check_op, Node};
use crate::replica::{decode_reply, encode_command, ChunkCommand, ChunkReplica};

/// Names of the Redis endpoint's databases start with this: the endpoint
/// creates them on a database's first write ([`Node::create_redis_database`]),
/// `range create` does not.
const REDIS_DATABASE_PREFIX: &str = "redis.";

/// Replicas a range gets when its creator names no number.
pub const REPLICAS_DEFAULT: u32 = 3;

/// A replicated chunk builds a snapshot (marks its chunk durable and
/// purges its Raft log) every this many entries.
const CHUNK_SNAPSHOT_EVERY_ENTRIES: u64 = 10_000;

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
            (None, None) => None,
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
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!("range {name:?} is replicated: its chunk does not split yet"),
            ));
        }
        if range.rides_on.is_some() && matches!(command, Command::Write { .. }) {
            return Err(NodeError::client(
                ErrorCode::BadRequest,
                format!("range {name:?} is the target of a mapper: only the mapper writes it"),
            ));
        }
        if !range.replicas.contains(&me) {
            return self.forward_to_replica(cluster, range, command.clone()).await;
        }
        // A view's target is read through the group its rows ride on.
        let chunk = range.group_of(0).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MAX_MS);
        let group = loop {
            // The replica appears once this node has applied the meta
            // range's record of it.
            if let Some(g) = cluster.group(chunk) {
                break g;
            }
            if Instant::now() > deadline {
                return Err(unavailable(format!(
                    "this node's replica of range {name:?} is not running"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match command {
            Command::DescribeRange { .. } | Command::CompactRange { .. } => {
                // This replica's own state.
                Box::pin(self.execute_local(command.clone())).await
            }
            Command::Write { ops, .. } => self.write_replicated(&group, me, ops, command).await,
            Command::Get { snapshot: Some(_), .. }
            | Command::MultiGet { snapshot: Some(_), .. } => Err(NodeError::client(
                ErrorCode::BadRequest,
                "reads at a snapshot are not supported on replicated ranges yet",
            )),
            Command::Scan(req) if req.snapshot.is_some() => Err(NodeError::client(
                ErrorCode::BadRequest,
                "reads at a snapshot are not supported on replicated ranges yet",
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
        loop {
            match f(group.clone()).await {
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
                Err(e @ (ConsensusError::Timeout(_) | ConsensusError::Fatal(_)))
                    if is_write(command) =>
                {
                    return Err(outcome_unknown(format!(
                        "chunk {}: {e}; the write may or may not have been applied",
                        group.id()
                    )))
                }
                Err(e @ ConsensusError::Timeout(_)) => {
                    return Err(unavailable(format!("chunk {}: {e}", group.id())))
                }
                Err(e) => return Err(NodeError::Internal(format!("chunk {}: {e}", group.id()))),
            }
        }
    }

    async fn write_replicated(
        &self,
        group: &Group,
        me: NodeId,
        ops: &[WriteOp],
        command: &Command,
    ) -> NodeResult<Reply> {
        // Refused whole before anything is proposed, as on a local range.
        ops.iter().try_for_each(check_op)?;
        let proposal = encode_command(&ChunkCommand::Write { ops: ops.to_vec() });
        let reply = std::sync::Mutex::new(None);
        let forwarded = self
            .on_leader(group, me, command, |g| {
                let (proposal, reply) = (proposal.clone(), &reply);
                async move {
                    let bytes = g.propose(proposal).await?;
                    *reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
                    Ok(())
                }
            })
            .await?;
        if let Some(r) = forwarded {
            return Ok(r);
        }
        let bytes = reply.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_default();
        match decode_reply(&bytes) {
            Ok(token) => Ok(Reply::Written(vec![token])),
            Err(info) => Err(NodeError::client(info.code, info.message)),
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
        if wanted.min(members.len()) <= 1 {
            if meta.ranges.contains_key(name) {
                return Some(Err(NodeError::client(
                    ErrorCode::RangeExists,
                    format!("range {name:?} already exists (replicated)"),
                )));
            }
            return None;
        }
        if name.starts_with(REDIS_DATABASE_PREFIX) {
            return Some(Err(NodeError::client(
                ErrorCode::InvalidRangeName,
                format!(
                    "{name:?}: names starting with {REDIS_DATABASE_PREFIX:?} are the Redis \
                     endpoint's databases, created by their first write through it"
                ),
            )));
        }
        if meta.ranges.contains_key(name) || self.router_read().range(name).is_some() {
            return Some(Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("range {name:?} already exists"),
            )));
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
        let mut live: Vec<NodeId> = status.nodes.iter().filter(|n| n.live).map(|n| n.id).collect();
        live.sort_by_key(|id| (load(*id), *id));
        if live.len() < wanted {
            tracing::warn!(
                range = name,
                wanted,
                live = live.len(),
                "fewer live nodes than replicas asked for: the range gets one per live node"
            );
        }
        live.truncate(wanted);
        if live.len() < 2 {
            return Err(unavailable("fewer than two nodes are live to hold replicas"));
        }
        let command = MetaCommand::CreateRange { name: name.to_owned(), options, replicas: live };
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
            MetaReply::Refused(m) if m.contains("already exists") => {
                Err(NodeError::client(ErrorCode::RangeExists, m))
            }
            MetaReply::Refused(m) => Err(NodeError::client(ErrorCode::BadRequest, m)),
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
        match cluster.propose_meta(MetaCommand::DropRange { name: name.to_owned() }).await? {
            MetaReply::Ok => {
                self.wait_meta(cluster, |m| !m.ranges.contains_key(name)).await;
                Ok(Reply::Ok)
            }
            MetaReply::Refused(m) => Err(NodeError::client(ErrorCode::RangeNotFound, m)),
            other => Err(NodeError::Internal(format!("unexpected meta reply {other:?}"))),
        }
    }

    /// Fills in who holds and leads each chunk of range `name` (id
    /// `range_id`): this node for an ordinary range; the meta range's
    /// replicas and the Raft leader for a replicated one.
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
    /// replicas as it says, now and after every change.
    pub fn follow_meta(self: &Arc<Self>, cluster: Arc<Cluster>) {
        self.follow_views(cluster.clone());
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
            loop {
                if node.is_shutting_down() {
                    return;
                }
                if let Err(e) = node.reconcile(&cluster).await {
                    tracing::warn!(error = %e, "replicas not yet as the meta range says; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    async fn reconcile(self: &Arc<Self>, cluster: &Arc<Cluster>) -> NodeResult<()> {
        let Some(me) = cluster.node_id() else { return Ok(()) };
        let Some(meta) = cluster.meta() else { return Ok(()) };
        // Replicas of ranges the meta range dropped (or dropped and made
        // again under the same name), or moved to other nodes.
        let gone: Vec<String> = self
            .router_read()
            .ranges()
            .filter(|r| {
                is_replicated(r.meta.id)
                    && match meta.ranges.get(&r.meta.name) {
                        // An id this meta replica has not given out yet: a
                        // view's target created from its source's log ahead
                        // of the meta range's record of it, not a drop.
                        None => r.meta.id < meta.next_id,
                        Some(m) => m.id != r.meta.id || !m.replicas.contains(&me),
                    }
            })
            .map(|r| r.meta.name.clone())
            .collect();
        for name in gone {
            let chunks: Vec<u64> =
                self.range_route(&name, |r| r.chunks.values().map(|c| c.id).collect())?;
            for id in chunks {
                if let Some(g) = cluster.remove_group(id) {
                    g.shutdown().await;
                }
                let dir = self.config.data_dir.join("raft").join(format!("{id:016x}"));
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "raft files not removed");
                }
            }
            self.drop_range_unchecked(&name).await?;
        }
        // Replicas this node should hold.
        for (name, range) in &meta.ranges {
            if !range.replicas.contains(&me) {
                continue;
            }
            let chunk = &range.chunks[0];
            let route = {
                let router = self.router_read();
                router.range(name).and_then(|r| r.chunks.values().next().cloned())
            };
            let route = match route {
                Some(r) => r,
                None => {
                    let _creating = self.creating_range.lock().unwrap_or_else(|p| p.into_inner());
                    if self.router_read().range(name).is_some() {
                        continue;
                    }
                    self.create_range_with_ids(name, range.options, range.id, chunk.id)?
                }
            };
            // A view's target rides on its source's group.
            if range.rides_on.is_some() || cluster.group(chunk.id).is_some() {
                continue;
            }
            let dir = self.config.data_dir.join("raft").join(format!("{:016x}", chunk.id));
            let start = |e: String| NodeError::Internal(format!("raft group {}: {e}", chunk.id));
            let log = LogStore::open(&dir.join("log"), cluster.sync_point())
                .map_err(|e| start(e.to_string()))?;
            let host: Arc<dyn crate::chunk_host::ChunkHost> = self.clone();
            let riders: Arc<dyn crate::replica::Riders> = self.clone();
            let replica = Arc::new(
                ChunkReplica::new(route.cell.clone(), Arc::downgrade(&host))
                    .with_riders(Arc::downgrade(&riders)),
            );
            let store = ReplicaStore::open(&dir.join("state"), replica)
                .map_err(|e| start(e.to_string()))?;
            let config = GroupConfig {
                group: chunk.id,
                node: me,
                timing: cluster.timing(),
                snapshot_every_entries: CHUNK_SNAPSHOT_EVERY_ENTRIES,
            };
            let group =
                cluster.start_group(config, log, store).await.map_err(|e| start(e.to_string()))?;
            // Every replica the range was created on initializes the group
            // with that same membership (a no-op where it ran before), so
            // the group starts even if the others are down or were
            // replaced since; a replica added later waits for its leader.
            if range.initial_voters().contains(&me) {
                let voters = range
                    .initial_voters()
                    .iter()
                    .filter_map(|id| meta.nodes.get(id).map(|n| (*id, n.addr.clone())))
                    .collect();
                group.initialize(voters).await.map_err(|e| start(e.to_string()))?;
            }
            cluster.add_group(group);
            tracing::info!(range = name, chunk = chunk.id, "replica running");
        }
        Ok(())
    }
}
