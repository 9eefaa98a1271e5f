//! Quiescence: a group with nothing to do switches its Raft timers off, so
//! thousands of idle groups on a node cost neither heartbeats nor election
//! timers; one message per pair of nodes per heartbeat interval keeps the
//! nodes' liveness known instead.
//!
//! # Protocol
//!
//! Every group that [`super::Group::join_quiescence`]s is in one phase here:
//!
//! - *active*: its Raft ticks as usual (heartbeats on a leader, election
//!   timer on a follower).
//! - *quiescing* (leader only): the leader saw no new log entry for
//!   [`IDLE_ROUNDS`] heartbeat intervals, has applied its whole log and
//!   every member has matched it (openraft's replication metrics). It asks
//!   each member node, in its next node ping, to quiesce the group at
//!   `(term, last log index)`, and keeps ticking meanwhile.
//! - *quiet*: a follower accepts the request only if it has the same term,
//!   knows the sender as its leader and has the same last log index,
//!   applied; it then stops its Raft's tick (no election timer) and
//!   acknowledges. Once every member acknowledged (or, for a member whose
//!   node is dead, once the acknowledgements and the leader are a majority
//!   of the voters), the leader stops its tick (no heartbeats).
//!
//! A group wakes (tick on again) on:
//!
//! - the leader: any proposal, read barrier or membership change
//!   (`Group` calls `Switch::wake`) and any RPC it receives;
//! - a follower: an RPC that is not the quiet leader's own empty heartbeat
//!   at the quiesced position (an append with entries, another term or
//!   leader, a moved commit; a vote request; a snapshot), *after* the RPC
//!   was handled, so its election timer restarts from a fresh leader
//!   contact;
//! - a follower whose leader's node restarted (its incarnation changed) or
//!   said the group left it: after a random delay in
//!   `0..=election_max_ms - election_min_ms` (so the followers of one group
//!   do not all campaign at once); its election timer has long expired, so
//!   it campaigns at its next tick;
//! - a leader whose member node came back or restarted, so that member
//!   hears heartbeats before its own election timer runs out.
//!
//! # Failover
//!
//! The node pings also watch the node of every leader that an active group
//! here follows. When a leader's node stops answering (no ping answered for
//! `election_min_ms`), every replica here that follows it, quiet or not,
//! campaigns itself (`campaign_after`): at a random time between
//! `election_min_ms` and a heartbeat before `election_max_ms` after the
//! node last answered (later while the dead leader's last append or a vote
//! it granted is recent), then again after half to all of the spread
//! between the two while there is no leader. A replica that refuses its vote to a
//! candidate whose log is behind its own campaigns at once if its leader's
//! node is dead (or as soon as it is found so): the candidate cannot win,
//! and this replica may. Every campaign is in a term above the terms of
//! the candidates this replica refused (openraft 0.9 does not take them,
//! and its next campaign in such a term is refused by that candidate's own
//! vote). openraft's own election timer still runs on active followers, and
//! elects when a leader replica stops on a live node; but after losing an
//! election to a longer log it adds twice `election_max_ms` to its timeout
//! until its next campaign, which is why it is not relied on here.
//!
//! # Why it is safe
//!
//! Raft's safety (one leader per term, committed entries never lost) rests
//! on votes and log matching, never on timers: stopping a tick only delays
//! elections and heartbeats, so at worst it costs liveness. Reads stay
//! linearizable because a read barrier (openraft's `ensure_linearizable`)
//! confirms leadership with a quorum round, not with a lease, and it wakes
//! the group first. A campaign is only ever a campaign: it is safe at any
//! time (a replica votes for itself in a term only if it has voted in no
//! later one, once per term, as any candidate does). Liveness rests on the
//! node pings: a follower whose leader's node stops answering campaigns
//! within `election_max_ms` of the node's last answer, and a quiet group
//! with a live leader node needs no election. What is lost: a leader replica that stops while
//! its node keeps answering pings and does not say so (e.g. a Raft that
//! failed on a storage error) leaves its group without a leader until
//! something else wakes it.
//!
//! # Messages
//!
//! Node pings travel by the node's [`Transport`] addressed to the group
//! [`NODE_GROUP`]; the receiving node hands them to
//! [`Quiescence::handle_rpc`]. A ping is a MessagePack `Ping`, its reply a
//! `Pong`; both carry the sender's incarnation (random per process start).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::group::Timing;
use super::{decode, encode, GroupId, NodeId, RaftRpc, Transport, TypeConfig};

/// The group id node-level messages are addressed to; no Raft group has it.
pub const NODE_GROUP: GroupId = GroupId::MAX;

/// Heartbeat intervals without a new log entry before a leader quiesces
/// its group.
pub const IDLE_ROUNDS: u32 = 3;

const ACTIVE: u8 = 0;
const QUIESCING: u8 = 1;
const QUIET: u8 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    from: NodeId,
    incarnation: u64,
    /// Groups the sender leads and asks the receiver to quiesce.
    quiesce: Vec<QuiesceRequest>,
    /// Groups that left the sender while it led them: their replicas on
    /// the receiver must wake and elect.
    wake: Vec<GroupId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct QuiesceRequest {
    group: GroupId,
    term: u64,
    last_log_index: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pong {
    incarnation: u64,
    /// The requests the receiver quiesced its replica for (or had): an
    /// acknowledgement counts only for the position it was asked at.
    acked: Vec<QuiesceRequest>,
}

/// One group's quiescence switch, shared by its [`super::Group`] handles and the
/// node's [`Quiescence`].
pub(crate) struct Switch {
    group: GroupId,
    flag: AtomicU8,
    raft: Raft<TypeConfig>,
    node: OnceLock<Weak<Inner>>,
    born: Instant,
    /// When this replica last took an append from a leader: milliseconds
    /// after `born`, plus one (0: never).
    contact_ms: AtomicU64,
    /// The highest term a candidate was refused this replica's vote in.
    refused_term: AtomicU64,
    /// When this replica last granted its vote (as `contact_ms`).
    granted_ms: AtomicU64,
    /// Vote requests being handled (a grant is answered only once the vote
    /// is durable, tens of milliseconds later).
    voting: AtomicU64,
    /// When this replica last refused a candidate behind its own log while
    /// its leader's node still answered pings (as `contact_ms`).
    ahead_ms: AtomicU64,
}

impl Switch {
    pub(crate) fn new(group: GroupId, raft: Raft<TypeConfig>) -> Switch {
        Switch {
            group,
            flag: AtomicU8::new(ACTIVE),
            raft,
            node: OnceLock::new(),
            born: Instant::now(),
            contact_ms: AtomicU64::new(0),
            refused_term: AtomicU64::new(0),
            ahead_ms: AtomicU64::new(0),
            granted_ms: AtomicU64::new(0),
            voting: AtomicU64::new(0),
        }
    }

    /// Records that a leader's append reached this replica (whatever it
    /// carried, but for one refused as from a stale term).
    pub(crate) fn note_append(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.contact_ms.store(ms, Ordering::Release);
    }

    /// Whether a leader's append reached this replica within `ms`.
    fn heard_within(&self, ms: u64) -> bool {
        self.within(&self.contact_ms, ms)
    }

    /// A vote request is being handled until the guard returned drops.
    pub(crate) fn vote_handling(&self) -> Voting<'_> {
        self.voting.fetch_add(1, Ordering::AcqRel);
        Voting(&self.voting)
    }

    /// Records that this replica granted its vote to a candidate.
    pub(crate) fn vote_granted(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.granted_ms.store(ms, Ordering::Release);
    }

    /// Whether the instant in `mark` (as `contact_ms`) is less than `ms` ago.
    fn within(&self, mark: &AtomicU64, ms: u64) -> bool {
        let at = mark.load(Ordering::Acquire);
        at != 0 && (self.born.elapsed().as_millis() as u64 + 1).saturating_sub(at) < ms
    }

    /// This replica refused its vote to a candidate of `term`; `ours_longer`
    /// if because its own log is ahead of the candidate's.
    ///
    /// openraft 0.9 does not take a refused candidate's term, so this
    /// replica's next campaign would be in that very term, where the
    /// refused candidate has voted for itself: refused in turn, and the
    /// group waits another election timeout (the second round of slow
    /// failovers). Campaigns from here are in a term above it (see
    /// [`Switch::campaign`]). And a candidate refused for a shorter log
    /// cannot win while this replica lives: if the leader this replica
    /// knows is on a node that stopped answering pings (or it knows none),
    /// it campaigns at once (after up to a heartbeat of jitter, so that
    /// several voters ahead of the candidate rarely split the vote);
    /// otherwise it remembers the refusal, and campaigns as soon as the
    /// leader's node is found dead rather than after the usual jitter. A
    /// live leader is not disrupted by a candidate behind it.
    pub(crate) fn vote_refused(self: &Arc<Self>, term: u64, ours_longer: bool) {
        self.refused_term.fetch_max(term, Ordering::AcqRel);
        let Some(inner) = self.inner() else { return };
        if !ours_longer {
            return;
        }
        let leader = self.raft.metrics().borrow().current_leader;
        let leader_gone = match leader {
            Some(l) => inner.lock().peers.get(&l).is_some_and(|p| p.dead),
            None => true,
        };
        if !leader_gone {
            let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
            self.ahead_ms.store(ms, Ordering::Release);
            return;
        }
        let switch = self.clone();
        let timing = inner.timing;
        let delay = inner.jitter_up_to(timing.heartbeat_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if switch.may_campaign(&timing) {
                tracing::info!(
                    group = switch.group,
                    term,
                    "a candidate behind this replica's log asked for its vote: campaigning"
                );
                switch.campaign(Some(&inner)).await;
            }
        });
    }

    /// Whether this replica refused a candidate behind its own log within
    /// `ms`.
    fn ahead_within(&self, ms: u64) -> bool {
        self.within(&self.ahead_ms, ms)
    }

    /// Whether this replica should campaign now: it is a follower or a
    /// candidate, no leader reached it within the leader lease, and it is
    /// granting no vote now nor granted one within half the minimum
    /// election timeout (that
    /// candidate is likely winning: a campaign now would unseat it).
    /// Postmortem: read from openraft's metrics (a vote for another node
    /// not committed), a grant was seen too late, and a replica that
    /// openraft had made take a refused candidate's vote as its own looked
    /// like one that granted it, so it never took over from a candidate
    /// behind it: two replicas campaigned in turn in the same terms for 15 s.
    fn may_campaign(&self, t: &Timing) -> bool {
        let m = self.raft.metrics().borrow().clone();
        matches!(m.state, ServerState::Follower | ServerState::Candidate)
            && self.voting.load(Ordering::Acquire) == 0
            && !self.within(&self.granted_ms, t.election_min_ms / 2)
            && !self.heard_within(t.openraft_election().1)
    }

    /// Campaigns now (openraft does nothing if this replica leads or is
    /// not a voter), in a term above every term this replica refused a
    /// candidate in: it first votes for itself in the highest of them, as
    /// it would had it campaigned then (safe: it had voted in no such term,
    /// so it still has its one vote there). Its own leader lease refuses
    /// that vote while a leader reached it within the lease; then it does
    /// not campaign. `inner` (its node's quiescence) wakes it if quiet.
    async fn campaign(&self, inner: Option<&Arc<Inner>>) {
        let m = self.raft.metrics().borrow().clone();
        let refused = self.refused_term.load(Ordering::Acquire);
        if refused > m.vote.leader_id().get_term() {
            let top =
                openraft::LogId::new(openraft::CommittedLeaderId::new(u64::MAX, m.id), u64::MAX);
            let own =
                openraft::raft::VoteRequest::new(openraft::Vote::new(refused, m.id), Some(top));
            match self.raft.vote(own).await {
                Ok(r) if r.vote_granted => {}
                _ => return,
            }
        }
        if let Some(inner) = inner {
            let mut s = inner.lock();
            if s.groups.get(&self.group).is_some_and(|m| !matches!(m.phase, Phase::Active { .. })) {
                s.set_phase(inner, self.group, Phase::active());
            }
        }
        let _ = self.raft.trigger().elect().await;
    }

    fn inner(&self) -> Option<Arc<Inner>> {
        self.node.get().and_then(Weak::upgrade)
    }

    /// Before a proposal, read barrier or membership change: wakes the
    /// group if this replica quiesced it as its leader. A quiet follower
    /// stays quiet (the request fails as not-the-leader; waking it would
    /// start an election with its long-expired timer).
    pub(crate) fn wake(&self) {
        if self.flag.load(Ordering::Acquire) == ACTIVE {
            return;
        }
        if let Some(inner) = self.inner() {
            let mut s = inner.lock();
            let leads = matches!(
                s.groups.get(&self.group).map(|m| &m.phase),
                Some(Phase::Quiescing { .. } | Phase::QuietLeader { .. })
            );
            if leads {
                s.set_phase(&inner, self.group, Phase::active());
            }
        }
    }

    /// Whether `rpc`, received by this replica, wakes the group (to be
    /// done with [`Switch::wake_after_rpc`] once the RPC was handled).
    pub(crate) fn wakes_on(&self, rpc: &RaftRpc) -> bool {
        if self.flag.load(Ordering::Acquire) == ACTIVE {
            return false;
        }
        let Some(inner) = self.inner() else { return false };
        let s = inner.lock();
        match (s.groups.get(&self.group).map(|m| &m.phase), rpc) {
            (
                Some(Phase::QuietFollower { term, leader, last_log_index, .. }),
                RaftRpc::Append(r),
            ) => {
                let l = r.vote.leader_id();
                !r.entries.is_empty()
                    || l.get_term() != *term
                    || l.voted_for() != Some(*leader)
                    || r.leader_commit.map(|c| c.index) != *last_log_index
            }
            (Some(Phase::Active { .. }) | None, _) => false,
            _ => true,
        }
    }

    pub(crate) fn wake_after_rpc(&self) {
        if let Some(inner) = self.inner() {
            let mut s = inner.lock();
            if s.groups.get(&self.group).is_some_and(|m| !matches!(m.phase, Phase::Active { .. })) {
                s.set_phase(&inner, self.group, Phase::active());
            }
        }
    }

    /// Whether `node` stopped answering this node's pings.
    pub(crate) fn node_dead(&self, node: NodeId) -> bool {
        self.inner().is_some_and(|inner| inner.lock().peers.get(&node).is_some_and(|p| p.dead))
    }

    /// Whether the group is quiet on this replica (its tick is off).
    pub(crate) fn is_quiet(&self) -> bool {
        self.flag.load(Ordering::Acquire) == QUIET
    }

    /// The group stops on this node: it leaves the node's quiescence, and
    /// if this replica led it, the other members are told to wake theirs.
    pub(crate) fn leave(&self) {
        if let Some(inner) = self.inner() {
            inner.lock().unregister(&inner, self.group, &self.raft);
        }
    }
}

/// A vote request in handling, for [`Switch::may_campaign`]; counted out
/// when dropped (also if the RPC's handling is cancelled).
pub(crate) struct Voting<'a>(&'a AtomicU64);

impl Drop for Voting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Phase {
    Active {
        /// Rounds in a row this replica led the group with nothing to do.
        idle: u32,
        /// The last log index seen at the previous round.
        seen: Option<u64>,
    },
    Quiescing {
        term: u64,
        last_log_index: Option<u64>,
        voters: BTreeSet<NodeId>,
        members: Vec<(NodeId, String)>,
        /// Members that have not acknowledged yet.
        waiting: BTreeSet<NodeId>,
    },
    QuietLeader {
        members: Vec<(NodeId, String)>,
    },
    QuietFollower {
        term: u64,
        leader: NodeId,
        last_log_index: Option<u64>,
        members: Vec<(NodeId, String)>,
        /// Set once the leader's node is thought dead: when to wake.
        wake_at: Option<Instant>,
    },
}

impl Phase {
    fn active() -> Phase {
        Phase::Active { idle: 0, seen: None }
    }

    fn flag(&self) -> u8 {
        match self {
            Phase::Active { .. } => ACTIVE,
            Phase::Quiescing { .. } => QUIESCING,
            Phase::QuietLeader { .. } | Phase::QuietFollower { .. } => QUIET,
        }
    }

    /// The other members, whose nodes are pinged while the group is not
    /// active.
    fn members(&self) -> &[(NodeId, String)] {
        match self {
            Phase::Active { .. } => &[],
            Phase::Quiescing { members, .. }
            | Phase::QuietLeader { members }
            | Phase::QuietFollower { members, .. } => members,
        }
    }
}

struct Member {
    switch: Arc<Switch>,
    phase: Phase,
}

struct Peer {
    addr: String,
    /// Non-active groups that have this node as a member.
    refs: usize,
    last_ok: Instant,
    incarnation: Option<u64>,
    dead: bool,
    in_flight: bool,
    /// The node leads an active group this node follows: pinged too, so
    /// that its death starts campaigns ([`State::peer_died`]).
    watched: bool,
}

#[derive(Default)]
struct State {
    groups: HashMap<GroupId, Member>,
    /// Groups in the active or quiescing phase: the ones looked at every
    /// round. Quiet groups cost nothing per round.
    active: HashSet<GroupId>,
    peers: HashMap<NodeId, Peer>,
    /// Wake notices to send with the next ping to each node.
    outbox: HashMap<NodeId, Vec<GroupId>>,
}

struct Inner {
    node: NodeId,
    incarnation: u64,
    timing: Timing,
    transport: Arc<dyn Transport>,
    state: Mutex<State>,
    stopped: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn jitter(&self) -> Duration {
        self.jitter_up_to(self.timing.election_max_ms.saturating_sub(self.timing.election_min_ms))
    }

    fn jitter_up_to(&self, ms: u64) -> Duration {
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

/// The members of a group other than `me`, with their addresses.
fn others(
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    me: NodeId,
) -> Vec<(NodeId, String)> {
    m.membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != me)
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect()
}

impl State {
    /// Moves `group` to `phase`: switches its tick, and keeps the active set
    /// and the peers' reference counts in step.
    fn set_phase(&mut self, inner: &Inner, group: GroupId, phase: Phase) {
        let Some(m) = self.groups.get_mut(&group) else { return };
        let new_flag = phase.flag();
        let old = std::mem::replace(&mut m.phase, phase);
        let switch = m.switch.clone();
        for (id, _) in old.members() {
            if let Some(p) = self.peers.get_mut(id) {
                p.refs = p.refs.saturating_sub(1);
            }
        }
        let members: Vec<(NodeId, String)> = self.groups[&group].phase.members().to_vec();
        for (id, addr) in members {
            self.peer(id, addr).refs += 1;
        }
        if new_flag == QUIET {
            self.active.remove(&group);
        } else {
            self.active.insert(group);
        }
        let old_flag = switch.flag.swap(new_flag, Ordering::AcqRel);
        if (old_flag == QUIET) != (new_flag == QUIET) {
            switch.raft.runtime_config().tick(new_flag != QUIET);
            tracing::debug!(
                group,
                node = inner.node,
                quiet = new_flag == QUIET,
                "raft group quiescence changed"
            );
        }
    }

    /// The peer `id`, known from now on if it was not.
    fn peer(&mut self, id: NodeId, addr: String) -> &mut Peer {
        let p = self.peers.entry(id).or_insert_with(|| Peer {
            addr: addr.clone(),
            refs: 0,
            last_ok: Instant::now(),
            incarnation: None,
            dead: false,
            in_flight: false,
            watched: false,
        });
        if p.refs == 0 && !p.watched && !p.dead {
            // Not pinged while unreferenced: its silence meant nothing.
            p.last_ok = Instant::now();
        }
        p.addr = addr;
        p
    }

    fn unregister(&mut self, inner: &Inner, group: GroupId, raft: &Raft<TypeConfig>) {
        if !self.groups.contains_key(&group) {
            return;
        }
        let m = raft.metrics().borrow().clone();
        if m.current_leader == Some(inner.node) {
            for (id, addr) in others(&m, inner.node) {
                self.peer(id, addr);
                self.outbox.entry(id).or_default().push(group);
            }
        }
        self.set_phase(inner, group, Phase::active());
        self.active.remove(&group);
        self.groups.remove(&group);
    }

    /// Wakes the quiet followers whose leader is on `peer` (after a jitter)
    /// and, if `leaders_too`, the groups this node leads with a member on
    /// `peer` (at once).
    fn peer_changed(&mut self, inner: &Inner, peer: NodeId, leaders_too: bool) {
        let now = Instant::now();
        let mut wake_now = Vec::new();
        for (g, m) in self.groups.iter_mut() {
            match &mut m.phase {
                Phase::QuietFollower { leader, wake_at, .. }
                    if *leader == peer && wake_at.is_none() =>
                {
                    *wake_at = Some(now + inner.jitter());
                    self.active.insert(*g);
                }
                Phase::QuietLeader { members } | Phase::Quiescing { members, .. }
                    if leaders_too && members.iter().any(|(id, _)| *id == peer) =>
                {
                    wake_now.push(*g);
                }
                _ => {}
            }
        }
        for g in wake_now {
            self.set_phase(inner, g, Phase::active());
        }
    }

    /// The node `peer` stopped answering pings: every replica here that
    /// follows a leader on it campaigns (quiet or not), each at a random
    /// time between `election_min_ms` after the peer last answered and a
    /// heartbeat before `election_max_ms` after it; until then openraft's
    /// own timers may get there first.
    ///
    /// Why not openraft's timers alone: after an election this replica
    /// lost to a longer log, openraft 0.9 keeps adding twice
    /// `election_max_ms` to its election timeout until its next campaign,
    /// however much later (6 s with the production timers, on the next
    /// failover: the slowest kills took two election rounds), and a quiet
    /// follower's timer was off anyway.
    fn peer_died(&mut self, inner: &Arc<Inner>, peer: NodeId) {
        let Some(last_ok) = self.peers.get(&peer).map(|p| p.last_ok) else { return };
        let t = inner.timing;
        let now = Instant::now();
        let spread = t.election_max_ms.saturating_sub(t.election_min_ms);
        let mut armed = 0;
        for (g, m) in self.groups.iter_mut() {
            let follows = {
                let metrics = m.switch.raft.metrics();
                let r = metrics.borrow();
                r.current_leader == Some(peer) && r.state != ServerState::Leader
            };
            match &mut m.phase {
                // Quiet at the dead leader's word, though Raft has moved
                // on since: it wakes after a jitter, its timer elects.
                Phase::QuietFollower { leader, wake_at, .. }
                    if *leader == peer && !follows && wake_at.is_none() =>
                {
                    *wake_at = Some(now + inner.jitter());
                    self.active.insert(*g);
                }
                _ if follows => {
                    let at = if m.switch.ahead_within(t.election_max_ms) {
                        now + inner.jitter_up_to(t.heartbeat_ms)
                    } else {
                        let from = last_ok + Duration::from_millis(t.election_min_ms);
                        (from + inner.jitter_up_to(spread.saturating_sub(t.heartbeat_ms))).max(now)
                    };
                    armed += 1;
                    tokio::spawn(campaign_after(Arc::downgrade(inner), m.switch.clone(), peer, at));
                }
                _ => {}
            }
        }
        if armed > 0 {
            tracing::debug!(node = inner.node, peer, groups = armed, "campaigns armed");
        }
    }

    fn incarnation_seen(&mut self, inner: &Inner, peer: NodeId, incarnation: u64) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let restarted = p.incarnation.is_some_and(|i| i != incarnation);
        p.incarnation = Some(incarnation);
        if restarted {
            tracing::info!(node = inner.node, peer, "peer node restarted: waking its groups");
            self.peer_changed(inner, peer, true);
        }
    }
}

/// A node's quiescence of its Raft groups: decides when they go quiet,
/// pings the nodes of quiet groups, wakes groups whose peers die. Clones
/// share it; it runs until [`Quiescence::stop`] or its last clone is
/// dropped.
#[derive(Clone)]
pub struct Quiescence {
    inner: Arc<Inner>,
}

impl Quiescence {
    /// Starts this node's quiescence: a task on the current Tokio runtime
    /// that runs a round every `timing.heartbeat_ms`. Groups join with
    /// [`super::Group::join_quiescence`]; node pings go out by `transport`.
    pub fn start(node: NodeId, timing: Timing, transport: Arc<dyn Transport>) -> Quiescence {
        let inner = Arc::new(Inner {
            node,
            incarnation: rand::thread_rng().gen(),
            timing,
            transport,
            state: Mutex::new(State::default()),
            stopped: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let period = Duration::from_millis(timing.heartbeat_ms.max(1));
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.stopped.load(Ordering::Acquire) {
                    return;
                }
                round(&inner);
            }
        });
        Quiescence { inner }
    }

    pub(crate) fn register(&self, switch: Arc<Switch>) {
        if switch.node.set(Arc::downgrade(&self.inner)).is_err() {
            return;
        }
        let mut s = self.inner.lock();
        let g = switch.group;
        s.groups.insert(g, Member { switch, phase: Phase::active() });
        s.active.insert(g);
    }

    /// How many of this node's groups are quiet (tick off).
    pub fn quiet_groups(&self) -> usize {
        let s = self.inner.lock();
        s.groups.len() - s.active.len()
    }

    /// Stops the rounds and wakes every group (their timers run again).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let mut s = self.inner.lock();
        let groups: Vec<GroupId> = s.groups.keys().copied().collect();
        for g in groups {
            s.set_phase(&self.inner, g, Phase::active());
        }
    }

    /// Answers a node ping another node's [`Quiescence`] sent (the bytes a
    /// [`Transport`] call addressed to [`NODE_GROUP`] carries).
    ///
    /// Errors: the bytes are not a ping.
    pub fn handle_rpc(&self, rpc: &[u8]) -> Result<Vec<u8>, String> {
        let ping: Ping = decode(rpc)?;
        let inner = &self.inner;
        let mut s = inner.lock();
        s.incarnation_seen(inner, ping.from, ping.incarnation);
        for g in ping.wake {
            let follows = matches!(
                s.groups.get(&g).map(|m| &m.phase),
                Some(Phase::QuietFollower { leader, .. }) if *leader == ping.from
            );
            if follows {
                if let Some(Member { phase: Phase::QuietFollower { wake_at, .. }, .. }) =
                    s.groups.get_mut(&g)
                {
                    *wake_at = Some(Instant::now() + inner.jitter());
                }
                s.active.insert(g);
            }
        }
        let mut acked = Vec::new();
        for q in ping.quiesce {
            let Some(member) = s.groups.get(&q.group) else { continue };
            if matches!(member.phase, Phase::Quiescing { .. } | Phase::QuietLeader { .. }) {
                continue;
            }
            let m = member.switch.raft.metrics().borrow().clone();
            let ok = matches!(m.state, ServerState::Follower | ServerState::Learner)
                && m.current_term == q.term
                && m.current_leader == Some(ping.from)
                && m.last_log_index == q.last_log_index
                && m.last_applied.map(|l| l.index) == q.last_log_index;
            if !ok {
                continue;
            }
            acked.push(q.clone());
            let already = matches!(
                member.phase,
                Phase::QuietFollower { term, leader, last_log_index, wake_at: None, .. }
                    if term == q.term && leader == ping.from && last_log_index == q.last_log_index
            );
            if !already {
                let phase = Phase::QuietFollower {
                    term: q.term,
                    leader: ping.from,
                    last_log_index: q.last_log_index,
                    members: others(&m, inner.node),
                    wake_at: None,
                };
                s.set_phase(inner, q.group, phase);
            }
        }
        Ok(encode(&Pong { incarnation: inner.incarnation, acked }))
    }
}

/// Attempts at campaigning after a leader's node died, at most.
const CAMPAIGN_ATTEMPTS: u32 = 5;

/// Looks at whether to campaign after a leader's node died, at most (one a
/// heartbeat while the replica may not campaign yet).
const CAMPAIGN_CHECKS: u32 = 100;

/// The campaigns of `switch`'s replica after its leader's node `dead`
/// stopped answering pings ([`State::peer_died`]): the first at `at` (or,
/// while [`Switch::may_campaign`] says not yet, a heartbeat later, again),
/// then again after half to all of the election timeout spread, while the
/// group has no leader and the node is still dead.
async fn campaign_after(inner: Weak<Inner>, switch: Arc<Switch>, dead: NodeId, mut at: Instant) {
    let mut attempts = 0;
    let mut checks = 0;
    while attempts < CAMPAIGN_ATTEMPTS && checks < CAMPAIGN_CHECKS {
        tokio::time::sleep_until(at.into()).await;
        checks += 1;
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        let t = inner.timing;
        {
            let s = inner.lock();
            let ours = s.groups.get(&switch.group).is_some_and(|m| Arc::ptr_eq(&m.switch, &switch));
            let gone = s.peers.get(&dead).is_some_and(|p| p.dead);
            let m = switch.raft.metrics().borrow().clone();
            let led = m.current_leader.is_some_and(|l| {
                l == m.id || (l != dead && !s.peers.get(&l).is_some_and(|p| p.dead))
            });
            if !ours || !gone || led {
                return;
            }
        }
        if !switch.may_campaign(&t) {
            // The dead leader's last append (or a vote just granted) is
            // still recent: look again a heartbeat later.
            // Postmortem: the task gave up here, and a survivor whose
            // leader's node was found dead before the leader lease ran
            // out left the election to openraft's timer (11 s).
            at = Instant::now() + Duration::from_millis(t.heartbeat_ms.max(1));
            continue;
        }
        tracing::info!(
            group = switch.group,
            node = inner.node,
            leader_node = dead,
            "the leader's node stopped answering: campaigning"
        );
        switch.campaign(Some(&inner)).await;
        attempts += 1;
        let spread = t.election_max_ms.saturating_sub(t.election_min_ms);
        at = Instant::now()
            + Duration::from_millis(spread / 2)
            + inner.jitter_up_to(spread - spread / 2);
    }
}

/// One round: advances the phases of the groups not quiet, wakes the
/// followers whose time came, finds dead peers and pings the live ones.
fn round(inner: &Arc<Inner>) {
    let now = Instant::now();
    let dead_after = Duration::from_millis(inner.timing.election_min_ms);
    let mut guard = inner.lock();
    let s = &mut *guard;
    let mut requests: HashMap<NodeId, Vec<QuiesceRequest>> = HashMap::new();
    let mut moves: Vec<(GroupId, Phase)> = Vec::new();
    let dead: HashSet<NodeId> = s.peers.iter().filter(|(_, p)| p.dead).map(|(id, _)| *id).collect();
    let active: Vec<GroupId> = s.active.iter().copied().collect();
    let mut watched: HashMap<NodeId, String> = HashMap::new();
    for g in active {
        let Some(member) = s.groups.get_mut(&g) else { continue };
        let metrics = member.switch.raft.metrics();
        let m = metrics.borrow();
        let leads = m.state == ServerState::Leader && m.current_leader == Some(inner.node);
        if let Some(l) = m.current_leader.filter(|l| !leads && *l != inner.node) {
            if let Some(n) = m.membership_config.membership().get_node(&l) {
                watched.entry(l).or_insert_with(|| n.addr.clone());
            }
        }
        match &mut member.phase {
            Phase::Active { idle, seen } => {
                if !leads || m.last_log_index != *seen {
                    *idle = 0;
                    *seen = m.last_log_index;
                    continue;
                }
                // Settled: everything applied here, one membership config,
                // and every member matched the whole log, but for members
                // on dead nodes as long as a majority of the voters has it.
                let membership = m.membership_config.membership();
                let matched = |id: &NodeId| {
                    *id == inner.node
                        || m.replication.as_ref().is_some_and(|r| {
                            r.get(id).copied().flatten().map(|l| l.index) == m.last_log_index
                        })
                };
                let voters: Vec<NodeId> = membership.voter_ids().collect();
                let settled = m.last_applied.map(|l| l.index) == m.last_log_index
                    && membership.get_joint_config().len() == 1
                    && membership.nodes().all(|(id, _)| matched(id) || dead.contains(id))
                    && voters.iter().filter(|v| matched(v)).count() * 2 > voters.len();
                if !settled {
                    *idle = 0;
                    continue;
                }
                *idle += 1;
                if *idle >= IDLE_ROUNDS {
                    let members = others(&m, inner.node);
                    moves.push((
                        g,
                        Phase::Quiescing {
                            term: m.current_term,
                            last_log_index: m.last_log_index,
                            voters: membership.voter_ids().collect(),
                            waiting: members.iter().map(|(id, _)| *id).collect(),
                            members,
                        },
                    ));
                }
            }
            Phase::Quiescing { term, last_log_index, voters, waiting, members } => {
                if !leads || m.current_term != *term || m.last_log_index != *last_log_index {
                    moves.push((g, Phase::active()));
                    continue;
                }
                let acked_voters =
                    voters.iter().filter(|v| **v == inner.node || !waiting.contains(v)).count();
                let rest_dead = waiting.iter().all(|id| dead.contains(id));
                if waiting.is_empty() || (rest_dead && acked_voters * 2 > voters.len()) {
                    moves.push((g, Phase::QuietLeader { members: members.clone() }));
                    continue;
                }
                for id in waiting.iter() {
                    requests.entry(*id).or_default().push(QuiesceRequest {
                        group: g,
                        term: *term,
                        last_log_index: *last_log_index,
                    });
                }
            }
            Phase::QuietFollower { wake_at: Some(at), .. } => {
                if *at <= now {
                    moves.push((g, Phase::active()));
                }
            }
            Phase::QuietFollower { wake_at: None, .. } | Phase::QuietLeader { .. } => {
                // Only here for a moment (a wake was cancelled): quiet again.
                s.active.remove(&g);
            }
        }
    }
    for (g, phase) in moves {
        s.set_phase(inner, g, phase);
    }

    // Liveness, then pings.
    for (id, addr) in &watched {
        let p = s.peers.entry(*id).or_insert_with(|| Peer {
            addr: addr.clone(),
            refs: 0,
            last_ok: now,
            incarnation: None,
            dead: false,
            in_flight: false,
            watched: false,
        });
        if !p.watched && p.refs == 0 && !p.dead {
            // Not pinged until now: its silence meant nothing.
            p.last_ok = now;
        }
        p.watched = true;
    }
    let mut died = Vec::new();
    for (id, p) in s.peers.iter_mut() {
        p.watched &= watched.contains_key(id);
        if (p.refs > 0 || p.watched) && !p.dead && now.duration_since(p.last_ok) > dead_after {
            p.dead = true;
            died.push(*id);
        }
    }
    for id in died {
        tracing::info!(node = inner.node, peer = id, "peer node unreachable: waking its groups");
        s.peer_died(inner, id);
    }
    let mut calls = Vec::new();
    let targets: Vec<NodeId> = s
        .peers
        .iter()
        .filter(|(id, p)| {
            !p.in_flight
                && (p.refs > 0
                    || p.watched
                    || requests.contains_key(id)
                    || s.outbox.contains_key(id))
        })
        .map(|(id, _)| *id)
        .collect();
    for id in targets {
        let wake = s.outbox.remove(&id).unwrap_or_default();
        let p = s.peers.get_mut(&id).expect("target is a peer");
        p.in_flight = true;
        let ping = Ping {
            from: inner.node,
            incarnation: inner.incarnation,
            quiesce: requests.remove(&id).unwrap_or_default(),
            wake,
        };
        calls.push((id, p.addr.clone(), ping));
    }
    drop(guard);
    for (id, addr, ping) in calls {
        let inner = inner.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(inner.timing.heartbeat_ms.max(1) * 2);
            let call = inner.transport.call(id, &addr, NODE_GROUP, encode(&ping));
            let reply = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(bytes)) => decode::<Pong>(&bytes).ok(),
                _ => None,
            };
            let mut s = inner.lock();
            let Some(p) = s.peers.get_mut(&id) else { return };
            p.in_flight = false;
            let Some(pong) = reply else {
                if !ping.wake.is_empty() {
                    s.outbox.entry(id).or_default().extend(ping.wake);
                }
                return;
            };
            p.last_ok = Instant::now();
            let back = std::mem::replace(&mut p.dead, false);
            if back {
                tracing::info!(node = inner.node, peer = id, "peer node reachable again");
                s.peer_changed(&inner, id, true);
            }
            s.incarnation_seen(&inner, id, pong.incarnation);
            for a in pong.acked {
                if let Some(Member {
                    phase: Phase::Quiescing { term, last_log_index, waiting, .. },
                    ..
                }) = s.groups.get_mut(&a.group)
                {
                    // A late acknowledgement of an earlier request is no
                    // acknowledgement of this one.
                    if *term == a.term && *last_log_index == a.last_log_index {
                        waiting.remove(&id);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
#[path = "quiescence_tests.rs"]
mod tests;
