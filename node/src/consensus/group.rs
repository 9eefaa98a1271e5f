//! One Raft group on this node: its replica of the log and state machine,
//! and the calls the rest of the node makes on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, ChangeMembers, Entry, LogId, Raft, ServerState, SnapshotPolicy, StorageError, Vote,
};

use super::network::NetworkFactory;
use super::quiescence::{Quiescence, Switch};
use super::replica_store::{Prepared, SnapshotGate};
use super::{
    decode, encode, Command, ConsensusError, GroupId, NodeId, RaftRpc, RaftRpcReply, Transport,
    TypeConfig,
};

/// Raft's timers, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `election_min_ms..election_max_ms` starts an election (from
    /// 3/4 of `election_max_ms` when that is later: see
    /// [`Timing::openraft_election`]).
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Timing {
    /// For clusters on real networks: a leader lost is replaced within
    /// 3-6 s, and an idle group sends two heartbeats a second.
    pub const PRODUCTION: Timing =
        Timing { heartbeat_ms: 500, election_min_ms: 3000, election_max_ms: 6000 };
    /// For tests on loopback and in simulation.
    pub const FAST: Timing =
        Timing { heartbeat_ms: 50, election_min_ms: 300, election_max_ms: 600 };
}

/// How to start a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: GroupId,
    /// This node.
    pub node: NodeId,
    pub timing: Timing,
    /// A snapshot is built once this many entries were applied since the
    /// last one, and the log before it is purged.
    pub snapshot_every_entries: u64,
    /// Checks snapshots sent to this replica before they are installed
    /// (a replica that fetches a snapshot's data, see
    /// [`super::replica_store::Replica::prepare_restore`]).
    pub snapshot_gate: Option<Arc<dyn SnapshotGate>>,
}

/// What a replica knows of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub node: NodeId,
    pub term: u64,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub state: &'static str,
    pub leader: Option<NodeId>,
    /// Voters and learners with their addresses.
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    /// While a membership change is half done (a joint configuration:
    /// `voters` holds both), the voters it is changing to.
    pub joint_target: Option<BTreeSet<NodeId>>,
    /// On a leader: the last log index each other member is known to hold
    /// (`None`: nothing yet); empty elsewhere.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

/// A handle on one group's replica. Clones share it.
#[derive(Clone)]
pub struct Group {
    id: GroupId,
    raft: Raft<TypeConfig>,
    timing: Timing,
    /// Its timers' switch, for the node's [`Quiescence`] if it joined one.
    quiet: Arc<Switch>,
    /// See [`GroupConfig::snapshot_gate`].
    gate: Option<Arc<dyn SnapshotGate>>,
}

/// How long a snapshot message waits for its replica to be ready before
/// it is answered "not yet": well inside the sender's call timeout
/// (`transport::PEER_CALL_TIMEOUT_MS`, and openraft's snapshot timeout,
/// at least 5 s).
pub const SNAPSHOT_PREPARE_WAIT_MS: u64 = 2_000;

/// Bytes of a snapshot sent in one message.
pub const SNAPSHOT_SEGMENT_BYTES: u64 = 1 << 20;

/// A leader that heard from no majority for this many election timeouts
/// is not reported as the leader: it may have been cut off.
const QUORUM_STALE_ELECTIONS: u64 = 2;

impl Timing {
    /// Checks the timers as Raft needs them.
    ///
    /// Errors: a heartbeat of 0, an election timeout below twice the
    /// heartbeat, or values above an hour.
    pub fn validate(&self) -> Result<(), String> {
        const HOUR_MS: u64 = 3_600_000;
        if self.heartbeat_ms == 0 || self.election_min_ms < 2 * self.heartbeat_ms {
            return Err(format!(
                "the election timeout ({} ms) must be at least twice the heartbeat ({} ms), \
                 which must be above 0",
                self.election_min_ms, self.heartbeat_ms
            ));
        }
        if self.election_max_ms > HOUR_MS
            || self.election_max_ms <= self.election_min_ms
            || self.election_max_ms < 2 * self.heartbeat_ms + 4
        {
            return Err(format!(
                "election timeouts must lie between the heartbeat and an hour, the maximum \
                 above the minimum and at least twice the heartbeat plus 4 ms (got {}..{} ms)",
                self.election_min_ms, self.election_max_ms
            ));
        }
        Ok(())
    }

    /// openraft's `(election_timeout_min, election_timeout_max)` for these
    /// timers.
    ///
    /// A follower of a known leader in openraft 0.9 waits out a leader
    /// lease of `election_timeout_max` and then a random election timeout
    /// in `election_timeout_min..election_timeout_max` before it campaigns,
    /// and a voter refuses votes while its own lease runs. Passing our
    /// timers through would make a follower wait `election_max_ms` plus up
    /// to `election_max_ms` again (9-12 s with [`Timing::PRODUCTION`]), so
    /// the lease is half of `election_max_ms` and the random part the rest:
    /// a follower campaigns `max(election_min_ms, 3/4 election_max_ms,
    /// election_max_ms / 2 + heartbeat_ms + 1)..election_max_ms` after its
    /// leader last reached it (4.5-6 s with [`Timing::PRODUCTION`]), a
    /// candidate without a majority tries again after the random part
    /// alone (1.5-3 s), and voters whose leader reached them within `election_max_ms / 2`
    /// (several heartbeats) still refuse a disruptive candidate.
    pub fn openraft_election(&self) -> (u64, u64) {
        let lease = self.election_max_ms / 2;
        // A candidate whose vote got no majority tries again after the
        // random part alone: not less than half the lease, so split votes
        // are not retried faster than messages travel under load.
        let min =
            self.election_min_ms.saturating_sub(lease).max(lease / 2).max(self.heartbeat_ms + 1);
        (min.min(lease - 1), lease)
    }

    /// How long a request waits for a majority before failing.
    pub fn request_timeout_ms(&self) -> u64 {
        (4 * self.election_max_ms).max(5_000)
    }
}

fn fatal(e: impl std::fmt::Display) -> ConsensusError {
    ConsensusError::Fatal(e.to_string())
}

fn not_leader(f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> ConsensusError {
    ConsensusError::NotLeader {
        leader: f.leader_id.map(|id| (id, f.leader_node.map(|n| n.addr).unwrap_or_default())),
    }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ConsensusError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(m)) => {
            ConsensusError::Membership(m.to_string())
        }
        RaftError::Fatal(f) => fatal(f),
    }
}

impl Group {
    /// Starts this node's replica of a group on the given storage. A group
    /// whose storage is new waits to be [`Group::initialize`]d (on one node)
    /// or to hear from a leader that added this node.
    pub async fn start(
        config: &GroupConfig,
        log: impl RaftLogStorage<TypeConfig>,
        machine: impl RaftStateMachine<TypeConfig>,
        transport: Arc<dyn Transport>,
    ) -> Result<Group, ConsensusError> {
        config.timing.validate().map_err(ConsensusError::Fatal)?;
        let raft_config = openraft::Config {
            cluster_name: format!("group-{}", config.group),
            heartbeat_interval: config.timing.heartbeat_ms,
            election_timeout_min: config.timing.openraft_election().0,
            election_timeout_max: config.timing.openraft_election().1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 0,
            // A snapshot travels in segments of 1 MiB, each (the last one
            // with its installation) given the request timeout.
            // Postmortem: with openraft's defaults (3 MiB, 200 ms) a 6 MB
            // chunk's snapshot never reached a new replica: every attempt
            // timed out, and its move after `cluster remove` never ended.
            snapshot_max_chunk_size: SNAPSHOT_SEGMENT_BYTES,
            install_snapshot_timeout: config.timing.request_timeout_ms(),
            ..Default::default()
        }
        .validate()
        .map_err(fatal)?;
        let network = NetworkFactory::new(config.group, transport);
        let log = NoLeaderRestart { log, node: config.node };
        let raft = Raft::new(config.node, Arc::new(raft_config), network, log, machine)
            .await
            .map_err(fatal)?;
        let quiet = Arc::new(Switch::new(config.group, raft.clone()));
        let gate = config.snapshot_gate.clone();
        Ok(Group { id: config.group, raft, quiet, timing: config.timing, gate })
    }

    /// Lets the node's `quiescence` switch this group's timers off while it
    /// is idle (see [`super::quiescence`]). A group joins one quiescence
    /// once; later calls do nothing.
    pub fn join_quiescence(&self, quiescence: &Quiescence) {
        quiescence.register(self.quiet.clone());
    }

    /// Whether this replica's timers are off because the group is quiet.
    pub fn is_quiet(&self) -> bool {
        self.quiet.is_quiet()
    }

    /// [`Group::start`] on `runtime`: openraft's tasks of the group (its
    /// core, replication, state machine worker) run there, not on the
    /// caller's runtime.
    pub async fn start_on(
        runtime: &tokio::runtime::Handle,
        config: GroupConfig,
        log: impl RaftLogStorage<TypeConfig>,
        machine: impl RaftStateMachine<TypeConfig>,
        transport: Arc<dyn Transport>,
    ) -> Result<Group, ConsensusError> {
        runtime
            .spawn(async move { Group::start(&config, log, machine, transport).await })
            .await
            .map_err(fatal)?
    }

    pub fn id(&self) -> GroupId {
        self.id
    }

    /// Makes `members` (id -> address) the group's first voters, on a
    /// replica that has never run; one that has is left as it is (`Ok`).
    /// Several members may call it, always with the same `members` (their
    /// first log entries are then the same); each that does campaigns at
    /// once, so replicas initializing together may split the first vote.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, String>,
    ) -> Result<(), ConsensusError> {
        match self.raft.initialize(super::raft_nodes(members)).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(fatal(e)),
        }
    }

    /// Replicates `command` and applies it; returns the machine's reply
    /// once a majority has the entry durable and this replica applied it.
    ///
    /// Errors: [`ConsensusError::NotLeader`] on a replica that is not the
    /// leader (the command was not proposed; retry at the leader named);
    /// [`ConsensusError::Fatal`] if the group stopped.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, ConsensusError> {
        self.quiet.wake();
        let started = std::time::Instant::now();
        let reply =
            self.bounded(self.raft.client_write(Command(command))).await?.map_err(write_error)?;
        tracing::debug!(target: super::TIMING, stage = "propose", group = self.id, us = started.elapsed().as_micros() as u64);
        Ok(reply.data.0)
    }

    /// Runs a request against a majority, within the request timeout.
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, ConsensusError> {
        let ms = self.timing.request_timeout_ms();
        tokio::time::timeout(std::time::Duration::from_millis(ms), request)
            .await
            .map_err(|_| ConsensusError::Timeout(ms))
    }

    /// Waits until this replica's state machine holds every entry committed
    /// before the call (Raft's read index: the leader confirms with a
    /// majority that it still leads). A read of the machine (through the
    /// caller's own handle on it) after it is linearizable.
    ///
    /// Errors: [`ConsensusError::NotLeader`] on a replica that is not (or
    /// is no longer) the leader.
    pub async fn read_barrier(&self) -> Result<(), ConsensusError> {
        self.read_index().await.map(|_| ())
    }

    /// Raft's read index: the log index every entry committed before the
    /// call is at or below, confirmed by a majority as the leader's, and
    /// applied on this replica when it returns (0: nothing was ever
    /// committed). Another replica that applied up to it
    /// ([`Group::wait_applied`]) holds every write acknowledged before the
    /// call.
    ///
    /// Errors: as [`Group::read_barrier`].
    pub async fn read_index(&self) -> Result<u64, ConsensusError> {
        self.quiet.wake();
        match self.bounded(self.raft.ensure_linearizable()).await? {
            Ok(read) => Ok(read.map_or(0, |l| l.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(not_leader(f))
            }
            Err(RaftError::APIError(e)) => {
                // No quorum confirmed this replica's leadership in time.
                tracing::debug!(group = self.id, error = %e, "read barrier failed");
                Err(ConsensusError::NotLeader { leader: None })
            }
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    /// Waits until this replica applied the log up to `index` (a leader's
    /// [`Group::read_index`]), within the request timeout.
    ///
    /// Errors: [`ConsensusError::Timeout`] if it did not in time;
    /// [`ConsensusError::Fatal`] if the group stopped.
    pub async fn wait_applied(&self, index: u64) -> Result<(), ConsensusError> {
        if index == 0 {
            return Ok(());
        }
        let ms = self.timing.request_timeout_ms();
        let wait = self.raft.wait(Some(std::time::Duration::from_millis(ms)));
        match wait.applied_index_at_least(Some(index), "wait_applied").await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::Timeout(..)) => Err(ConsensusError::Timeout(ms)),
            Err(e) => Err(fatal(e)),
        }
    }

    /// Starts an election on this replica now rather than after the
    /// election timeout: for a new group whose leader-to-be is known (the
    /// node that led the group it split from).
    ///
    /// Errors: [`ConsensusError::Fatal`] if the group stopped.
    pub async fn campaign(&self) -> Result<(), ConsensusError> {
        self.quiet.wake();
        self.raft.trigger().elect().await.map_err(fatal)
    }

    /// Keeps this replica's election timer from starting an election until
    /// it has heard from a leader, or for `grace` at most: for the replicas
    /// of a new group that wait for the one that [`Group::campaign`]s.
    /// Explicit campaigns (the node pings' failover) still run.
    ///
    /// Postmortem: a follower of a split's new group whose timer ran out
    /// before the splitter's appends reached it (openraft backs off 500 ms
    /// from a replica that had not started the group yet) campaigned in a
    /// later term; its answer to the next append deposed the new leader,
    /// and a write proposed there failed with its outcome unknown.
    pub fn hold_elections(&self, grace: std::time::Duration) {
        let raft = self.raft.clone();
        raft.runtime_config().elect(false);
        let deadline = tokio::time::Instant::now() + grace;
        tokio::spawn(async move {
            let mut metrics = raft.metrics();
            while metrics.borrow_and_update().current_leader.is_none() {
                match tokio::time::timeout_at(deadline, metrics.changed()).await {
                    Ok(Ok(())) => {}
                    // Past the grace, or the group stopped.
                    _ => break,
                }
            }
            raft.runtime_config().elect(true);
        });
    }

    /// Adds `node` as a voter: see [`Group::add_voters`].
    pub async fn add_voter(&self, node: NodeId, addr: String) -> Result<(), ConsensusError> {
        self.add_voters(&BTreeMap::from([(node, addr)])).await.map(|_| ())
    }

    /// Adds `nodes` (id to address) as voters: first each as a learner,
    /// all catching up side by side (copying the same snapshot's
    /// segments), then those that caught up within the request timeout
    /// become voters through one membership change. Returns the nodes made
    /// voters. Call on the leader.
    ///
    /// Errors: [`ConsensusError::Timeout`] when none caught up in time (the
    /// learners stay, and catch up further; the caller tries again);
    /// refusals of the membership changes.
    pub async fn add_voters(
        &self,
        nodes: &BTreeMap<NodeId, String>,
    ) -> Result<BTreeSet<NodeId>, ConsensusError> {
        self.quiet.wake();
        let mut added = None;
        for (&node, addr) in nodes {
            let learner = self.raft.add_learner(node, BasicNode { addr: addr.clone() }, false);
            added = Some(self.bounded(learner).await?.map_err(write_error)?.log_id);
        }
        let Some(added) = added else { return Ok(BTreeSet::new()) };
        // Caught up: replicated at least up to the membership that added
        // the last of them.
        let caught_up = |m: &openraft::RaftMetrics<NodeId, BasicNode>| -> BTreeSet<NodeId> {
            let matched = |n: &NodeId| {
                let replication = m.replication.as_ref()?;
                replication.get(n).cloned().flatten()
            };
            nodes
                .keys()
                .filter(|n| matched(n).is_some_and(|l| l.index >= added.index))
                .copied()
                .collect()
        };
        let mut metrics = self.raft.metrics();
        let all = self
            .bounded(metrics.wait_for(|m| caught_up(m).len() == nodes.len()))
            .await
            .map(|r| r.map(|_| ()));
        let ready = caught_up(&self.raft.metrics().borrow());
        if ready.is_empty() {
            return Err(match all {
                Err(timeout) => timeout,
                Ok(_) => ConsensusError::Fatal("the group stopped while learners caught up".into()),
            });
        }
        self.change_membership(ChangeMembers::AddVoterIds(ready.clone())).await?;
        Ok(ready)
    }

    /// Builds a snapshot of everything this replica applied and purges its
    /// log up to it: a replica added next (or one behind) then installs the
    /// snapshot and replays only what came after, instead of the whole log.
    ///
    /// Errors: [`ConsensusError::Timeout`] if the build does not end within
    /// the request timeout; [`ConsensusError::Fatal`] if the group stopped.
    pub async fn snapshot_and_purge(&self) -> Result<(), ConsensusError> {
        self.quiet.wake();
        let mut metrics = self.raft.metrics();
        let Some(applied) = metrics.borrow().last_applied else { return Ok(()) };
        if metrics.borrow().snapshot < Some(applied) {
            self.raft.trigger().snapshot().await.map_err(fatal)?;
            self.bounded(metrics.wait_for(|m| m.snapshot >= Some(applied)))
                .await?
                .map_err(fatal)?;
        }
        self.raft.trigger().purge_log(applied.index).await.map_err(fatal)
    }

    /// Finishes a membership change left half done (a joint configuration,
    /// as after its leader changed between the two steps): changes to the
    /// voters it was changing to. Does nothing when none is. Call on the
    /// leader.
    pub async fn finish_membership_change(&self) -> Result<(), ConsensusError> {
        self.quiet.wake();
        match self.status().joint_target {
            Some(target) => self.change_membership(ChangeMembers::ReplaceAllVoters(target)).await,
            None => Ok(()),
        }
    }

    /// Runs openraft's two-step change (a joint configuration, then the
    /// new one) in a task of its own and waits for it for the request
    /// timeout: a caller that gives up, or times out, no longer cuts the
    /// change off between its steps. Members dropped from the voters are
    /// removed, not kept as learners.
    ///
    /// Postmortem: cut off by the request timeout after its joint step, a
    /// replica move left the group joint, and the next move was refused
    /// ("already undergoing a configuration change") until one happened to
    /// finish it; a node's replicas took minutes to move.
    async fn change_membership(
        &self,
        change: ChangeMembers<NodeId, BasicNode>,
    ) -> Result<(), ConsensusError> {
        let raft = self.raft.clone();
        let task = tokio::spawn(async move { raft.change_membership(change, false).await });
        self.bounded(task).await?.map_err(fatal)?.map_err(write_error)?;
        Ok(())
    }

    /// Removes `node` from the group, voter or learner, in one membership
    /// change (a voter is not kept as a learner). Call on the leader; a
    /// leader that removes itself steps down once the change commits.
    pub async fn remove_member(&self, node: NodeId) -> Result<(), ConsensusError> {
        self.quiet.wake();
        let status = self.status();
        let ids = BTreeSet::from([node]);
        let change = if status.voters.contains_key(&node) {
            ChangeMembers::RemoveVoters(ids)
        } else if status.learners.contains_key(&node) {
            ChangeMembers::RemoveNodes(ids)
        } else {
            return Ok(());
        };
        self.change_membership(change).await
    }

    /// The group's current term as this replica knows it (cheaper than
    /// [`Group::status`]). A replica that leads in term T before and after
    /// something led throughout it: a lost and regained leadership has a
    /// later term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Whether this replica is in the leader state now (as
    /// [`GroupStatus::state`] `"leader"`; it may have lost its majority
    /// without knowing). Cheaper than [`Group::status`]: copies nothing.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// What this replica knows of the group now. Right after
    /// [`Group::start`] it may still be openraft's blank report (term 0, no
    /// members) until the replica's Raft task has first reported.
    pub fn status(&self) -> GroupStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, node) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, node.addr.clone());
            } else {
                learners.insert(*id, node.addr.clone());
            }
        }
        GroupStatus {
            group: self.id,
            node: m.id,
            term: m.current_term,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            leader: match m.state {
                // A leader cut off from its majority keeps believing it
                // leads (Raft has it step down only when it hears a higher
                // term): not reported as the leader once no majority
                // answered for a while.
                // A quiet leader hears no acknowledgements by design; the
                // node pings vouch for its followers instead.
                ServerState::Leader if voter_ids.len() > 1 && self.quiet.is_quiet() => {
                    let alive = voter_ids.iter().filter(|v| !self.quiet.node_dead(**v)).count();
                    (2 * alive > voter_ids.len()).then_some(m.id)
                }
                ServerState::Leader
                    if voter_ids.len() > 1
                        && m.millis_since_quorum_ack.is_none_or(|ms| {
                            ms > QUORUM_STALE_ELECTIONS * self.timing.election_max_ms
                        }) =>
                {
                    None
                }
                _ => m.current_leader,
            },
            voters,
            learners,
            last_log_index: m.last_log_index,
            last_applied_index: m.last_applied.map(|l| l.index),
            joint_target: match membership.get_joint_config().as_slice() {
                [_, .., last] => Some(last.clone()),
                _ => None,
            },
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(n, _)| **n != m.id)
                        .map(|(n, log)| (*n, log.map(|l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Answers an RPC another replica sent (bytes of a [`RaftRpc`]) with
    /// the bytes of a [`RaftRpcReply`].
    pub async fn handle_rpc(&self, rpc: &[u8]) -> Result<Vec<u8>, String> {
        let rpc = decode::<RaftRpc>(rpc)?;
        // A quiet replica wakes only after the RPC is handled, so that its
        // election timer restarts from this contact, not from the old one.
        let wake = self.quiet.wakes_on(&rpc);
        let reply = match rpc {
            RaftRpc::Append(r) => {
                let (started, entries) = (std::time::Instant::now(), r.entries.len());
                let reply = self.raft.append_entries(r).await;
                if entries > 0 {
                    tracing::debug!(target: super::TIMING, stage = "append_handle", entries, us = started.elapsed().as_micros() as u64);
                }
                if matches!(&reply, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    self.quiet.note_append();
                }
                RaftRpcReply::Append(reply)
            }
            RaftRpc::Vote(r) => {
                let (term, theirs) = (r.vote.leader_id().get_term(), r.last_log_id);
                let reply = {
                    // Counted as handling until the grant is recorded.
                    let _voting = self.quiet.vote_handling();
                    let reply = self.raft.vote(r).await;
                    if matches!(&reply, Ok(v) if v.vote_granted) {
                        self.quiet.vote_granted();
                    }
                    reply
                };
                if let Ok(v) = &reply {
                    if !v.vote_granted {
                        self.quiet.vote_refused(term, v.last_log_id > theirs);
                    }
                }
                RaftRpcReply::Vote(reply)
            }
            RaftRpc::Snapshot(r) => {
                // A snapshot in one message (a chunk's: a list of
                // segments) may name data the replica fetches first.
                let whole = r.offset == 0 && r.done;
                // One this replica applied already (sent again, its sender
                // having timed out while it was installed) needs no copy:
                // openraft answers it as installed.
                let applied = r.meta.last_log_id <= self.raft.metrics().borrow().last_applied;
                let prepared = match (&self.gate, whole && !applied) {
                    (Some(gate), true) => {
                        let wait = std::time::Duration::from_millis(SNAPSHOT_PREPARE_WAIT_MS);
                        gate.prepare(&r.data, wait).await
                    }
                    _ => Prepared::Ready,
                };
                match prepared {
                    Prepared::Ready => RaftRpcReply::Snapshot(self.raft.install_snapshot(r).await),
                    Prepared::Copying { copied_bytes, total_bytes } => RaftRpcReply::NotReady(
                        format!("copying the snapshot: {copied_bytes} of {total_bytes} bytes"),
                    ),
                    Prepared::Failed(e) => {
                        RaftRpcReply::NotReady(format!("the snapshot's copy failed: {e}"))
                    }
                }
            }
        };
        if wake {
            self.quiet.wake_after_rpc();
        }
        Ok(encode(&reply))
    }

    /// Stops the replica's Raft tasks. Storage stays as it is on disk.
    ///
    /// openraft waits for each log append's flush without watching for
    /// shutdown: this returns only once the log store has reported the
    /// append in progress, if any, flushed or failed.
    /// Why this replica stopped (a storage error, a command it could not
    /// apply, a [`Group::shutdown`]), or `None` while it runs.
    pub fn stopped(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        match m.running_state {
            Err(fatal) => Some(fatal.to_string()),
            Ok(()) if m.state == ServerState::Shutdown => Some("shut down".into()),
            Ok(()) => None,
        }
    }

    pub async fn shutdown(&self) {
        self.quiet.leave();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = self.id, error = %e, "raft group did not stop cleanly");
        }
    }
}

/// A group's log store as Raft sees it: the store itself, except that a
/// vote this node cast for itself reads back as not granted.
///
/// openraft 0.9 restarts a node whose stored vote is its own granted one
/// straight back as leader of the same term. That leader lost its commit
/// index with the restart (it reloads a stored one, which may be behind,
/// or the snapshot's), and its read index is the term's first entry or that
/// commit index: a read barrier on it passed without the writes it had
/// acknowledged, and reads were stale. Reading the vote back as not granted
/// makes the node restart as a follower that has voted for itself, as after
/// any candidacy; it leads again only by winning an election in a new term,
/// whose first entry the read index then waits for.
struct NoLeaderRestart<S> {
    log: S,
    node: NodeId,
}

impl<S: RaftLogReader<TypeConfig>> RaftLogReader<TypeConfig> for NoLeaderRestart<S> {
    async fn try_get_log_entries<
        RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send,
    >(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.log.try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.log.limited_get_log_entries(start, end).await
    }
}

impl<S: RaftLogStorage<TypeConfig>> RaftLogStorage<TypeConfig> for NoLeaderRestart<S> {
    type LogReader = S::LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.log.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> S::LogReader {
        self.log.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log.save_vote(vote).await
    }

    /// Called by openraft only when the group starts.
    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let vote = self.log.read_vote().await?;
        Ok(vote.map(|v| {
            if v.is_committed() && v.leader_id().voted_for() == Some(self.node) {
                Vote::new(v.leader_id().term, self.node)
            } else {
                v
            }
        }))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.log.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.log.read_committed().await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.log.append(entries, callback).await
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.log.purge(log_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::Timing;

    /// A follower's wait in openraft is its lease plus a random timeout in
    /// `min..max`, with the lease equal to `max`.
    fn follower_wait(t: &Timing) -> (u64, u64) {
        let (min, max) = t.openraft_election();
        (max + min, 2 * max)
    }

    // Failover took 9-12 s with 3-6 s election timeouts: openraft's leader
    // lease (its election_timeout_max) came on top of the election timeout.
    #[test]
    fn followers_campaign_within_the_election_timeout() {
        for t in [Timing::PRODUCTION, Timing::FAST] {
            let (from, to) = follower_wait(&t);
            assert!(to <= t.election_max_ms, "{t:?}: waits up to {to} ms");
            assert!(from >= t.election_min_ms, "{t:?}: waits from {from} ms");
        }
        assert_eq!(follower_wait(&Timing::PRODUCTION), (4500, 6000));
    }

    #[test]
    fn every_valid_timing_is_valid_for_openraft() {
        for heartbeat_ms in [1, 2, 3, 50, 500] {
            for election_min_ms in [2 * heartbeat_ms, 2 * heartbeat_ms + 1, 1000, 3000] {
                for extra in [1, 2, 3, 4, 5, 100, 3000] {
                    let t = Timing {
                        heartbeat_ms,
                        election_min_ms,
                        election_max_ms: election_min_ms + extra,
                    };
                    if t.validate().is_err() {
                        continue;
                    }
                    let (min, max) = t.openraft_election();
                    let config = openraft::Config {
                        heartbeat_interval: heartbeat_ms,
                        election_timeout_min: min,
                        election_timeout_max: max,
                        ..Default::default()
                    };
                    assert!(config.validate().is_ok(), "{t:?} -> {min}..{max}");
                    assert!(2 * max <= t.election_max_ms, "{t:?}");
                }
            }
        }
    }
}
