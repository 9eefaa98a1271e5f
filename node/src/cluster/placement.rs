//! Replica placement: each chunk's leader brings its Raft group's voters to
//! the replicas the meta range lists for the chunk's range.
//!
//! The meta range decides where replicas go (today: when a node is removed,
//! another node takes its place, see [`super::meta::MetaCommand::Remove`]);
//! this loop carries it out, one membership change at a time per group, on
//! the node that leads the group, for up to [`MOVES_AT_ONCE`] groups at a
//! time (a node's chunks move to its replacement side by side):
//!
//! 0. a change left half done (a joint configuration, after the leader
//!    that proposed it changed) is finished first;
//! 1. a listed node that is not a voter is added: as a learner first, which
//!    the leader catches up, then as a voter. The leader first builds a
//!    snapshot and purges its log up to it, so the learner copies the
//!    chunk's log segments ([`crate::replica_snapshot`]) and replays only
//!    the entries after them;
//! 2. only then is a voter that is not listed removed, so the group never
//!    has fewer copies than it had while a move is under way.
//!
//! A node that is no longer listed drops its own replica when it sees the
//! meta range say so (`Node::reconcile`); a leader that is removed from its
//! group steps down and another replica carries on. Every step is
//! idempotent and driven by the state it finds, so a leader that changes or
//! restarts halfway simply continues.
//!
//! The same loop restarts this node's chunk replicas that stopped on their
//! own (a failed write or sync of the Raft log, a disk that was full, a
//! command the replica could not apply): it unregisters and shuts the
//! stopped replica down and asks `Node::reconcile` to start it again from
//! its files (at most once per [`REVIVE_INTERVAL_MS`] per replica), which
//! recovers the log and applies again what came after the last snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Cluster;
use crate::consensus::{GroupId, NodeId};

/// How often a node checks the groups it leads against the meta range
/// (also after every change of the meta range, and as soon as one of its
/// membership changes ends, so a move's next step does not wait a tick).
pub const PLACEMENT_INTERVAL_MS: u64 = 1_000;

/// The shortest time between two restarts of one stopped replica.
pub const REVIVE_INTERVAL_MS: u64 = 10_000;

/// Most membership changes one node runs at once (each may be streaming a
/// snapshot to a new replica).
pub const MOVES_AT_ONCE: usize = 8;

/// What a leader does next to bring its group's voters to `wanted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Finish the joint configuration a change left: change to these
    /// voters.
    Finish(BTreeSet<NodeId>),
    /// Add these nodes (learners catching up side by side, then voters
    /// in one change).
    Add(BTreeSet<NodeId>),
    /// Remove this voter or learner.
    Remove(NodeId),
}

/// The next membership change that brings `voters` (and `learners`) to
/// `wanted`, or `None` when they match: a half-done change (`joint_target`,
/// with `voters` holding both configurations) is finished first; then
/// every addition at once, then removals, one at a time. A learner not
/// wanted is removed too; a wanted learner is made a voter by
/// [`Step::Add`].
pub fn next_step(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    joint_target: Option<&BTreeSet<NodeId>>,
    wanted: &BTreeSet<NodeId>,
) -> Option<Step> {
    if let Some(target) = joint_target {
        return Some(Step::Finish(target.clone()));
    }
    let missing: BTreeSet<NodeId> = wanted.difference(voters).copied().collect();
    if !missing.is_empty() {
        return Some(Step::Add(missing));
    }
    voters.union(learners).find(|id| !wanted.contains(id)).map(|id| Step::Remove(*id))
}

impl Cluster {
    /// Starts the placement loop of this node (see the module docs); it
    /// ends when the cluster is shut down.
    pub fn follow_placement(self: &Arc<Self>) {
        let weak: Weak<Cluster> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut changes = None;
            let mut revived: HashMap<GroupId, Instant> = HashMap::new();
            let moves = Moves::default();
            let mut balancer = super::balance::Balancer::default();
            loop {
                let Some(cluster) = weak.upgrade() else { return };
                if cluster.is_shut_down() {
                    return;
                }
                if changes.is_none() {
                    changes = cluster.meta_changes();
                }
                if cluster.stop_if_removed().await {
                    return;
                }
                cluster.revive_stopped(&mut revived).await;
                cluster.place_once(&moves);
                cluster.balance_once(&mut balancer).await;
                cluster.watch_members(&mut balancer).await;
                drop(cluster);
                let tick = tokio::time::sleep(Duration::from_millis(PLACEMENT_INTERVAL_MS));
                match changes.as_mut() {
                    Some(c) => {
                        tokio::select! {
                            _ = tick => {}
                            r = c.changed() => if r.is_err() { return },
                            () = moves.ended().notified() => {}
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = tick => {}
                            () = moves.ended().notified() => {}
                        }
                    }
                }
            }
        });
    }

    /// Unregisters and shuts down this node's chunk replicas that stopped
    /// on their own, so that `Node::reconcile` starts them again.
    async fn revive_stopped(&self, revived: &mut HashMap<GroupId, Instant>) {
        let now = Instant::now();
        revived.retain(|_, at| now.duration_since(*at) < Duration::from_millis(REVIVE_INTERVAL_MS));
        let mut any = false;
        for group in self.groups() {
            let Some(why) = group.stopped() else { continue };
            if revived.contains_key(&group.id()) {
                continue;
            }
            tracing::error!(chunk = group.id(), reason = %why, "chunk replica stopped; restarting it");
            if let Some(g) = self.remove_group(group.id()) {
                g.shutdown().await;
            }
            revived.insert(group.id(), now);
            any = true;
        }
        if any {
            self.replicas_wanted.notify_one();
        }
    }

    /// One pass over the chunks whose group this node leads: starts the
    /// next step of each that is not where the meta range wants it and has
    /// no step under way, while fewer than [`MOVES_AT_ONCE`] are.
    fn place_once(&self, moves: &Moves) {
        let Some(me) = self.node_id() else { return };
        let Some(work) = self.with_meta(|m| {
            let mut work = Vec::new();
            for range in m.ranges.values() {
                let wanted: BTreeSet<NodeId> = range.replicas.iter().copied().collect();
                for chunk in &range.chunks {
                    work.push((chunk.id, wanted.clone()));
                }
            }
            work
        }) else {
            return;
        };
        for (chunk, wanted) in work {
            let Some(group) = self.group(chunk) else { continue };
            let status = group.status();
            // A leader that removed itself leads until it steps down, but
            // must change the membership no more (openraft asserts it).
            // Postmortem: a leader that had just removed itself from a
            // chunk's group started the next move of that group; its Raft
            // task panicked and the group stopped on that node.
            if status.state != "leader"
                || status.leader != Some(me)
                || !status.voters.contains_key(&me)
            {
                continue;
            }
            let voters: BTreeSet<NodeId> = status.voters.keys().copied().collect();
            let learners: BTreeSet<NodeId> = status.learners.keys().copied().collect();
            let joint = status.joint_target.as_ref();
            let Some(step) = next_step(&voters, &learners, joint, &wanted) else { continue };
            let addrs = match &step {
                Step::Add(ids) => {
                    let addrs = self.with_meta(|m| {
                        ids.iter()
                            .map(|id| Some((*id, m.nodes.get(id)?.addr.clone())))
                            .collect::<Option<BTreeMap<NodeId, String>>>()
                    });
                    match addrs.flatten() {
                        Some(addrs) => Some(addrs),
                        None => {
                            tracing::warn!(chunk, ?step, "node is not in the meta range");
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let Some(slot) = moves.start(chunk) else {
                if moves.full() {
                    return;
                }
                continue;
            };
            tokio::spawn(async move {
                let _slot = slot;
                let done = match (&step, addrs) {
                    (Step::Add(_), Some(addrs)) => {
                        // The new replicas copy the chunk's segments and
                        // replay only the log after them.
                        match group.snapshot_and_purge().await {
                            Ok(()) => group.add_voters(&addrs).await.map(|added| {
                                if added.len() < addrs.len() {
                                    tracing::info!(
                                        chunk,
                                        ?added,
                                        "some new replicas caught up, the others go on"
                                    );
                                }
                            }),
                            Err(e) => Err(e),
                        }
                    }
                    (Step::Remove(id), _) => group.remove_member(*id).await,
                    (Step::Finish(_), _) => group.finish_membership_change().await,
                    (Step::Add(_), None) => return,
                };
                match done {
                    Ok(()) => tracing::info!(chunk, ?step, "replica moved"),
                    Err(e) => {
                        tracing::warn!(chunk, ?step, error = %e, "replica move did not finish; retrying")
                    }
                }
            });
        }
    }
}

/// The groups with a membership change under way on this node, and a
/// notice when one ends (the loop then takes the group's next step at
/// once, not at its next tick).
#[derive(Default, Clone)]
struct Moves(Arc<std::sync::Mutex<BTreeSet<GroupId>>>, Arc<tokio::sync::Notify>);

impl Moves {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<GroupId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notified when a change ends.
    fn ended(&self) -> &tokio::sync::Notify {
        &self.1
    }

    fn full(&self) -> bool {
        self.lock().len() >= MOVES_AT_ONCE
    }

    /// A slot for a change of `group`, held until dropped; `None` when one
    /// is under way for it or [`MOVES_AT_ONCE`] are.
    fn start(&self, group: GroupId) -> Option<MoveSlot> {
        let mut under_way = self.lock();
        if under_way.len() >= MOVES_AT_ONCE || !under_way.insert(group) {
            return None;
        }
        Some(MoveSlot { moves: self.clone(), group })
    }
}

struct MoveSlot {
    moves: Moves,
    group: GroupId,
}

impl Drop for MoveSlot {
    fn drop(&mut self) {
        self.moves.lock().remove(&self.group);
        self.moves.ended().notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn additions_come_before_removals_one_at_a_time() {
        let (voters, none) = (set(&[1, 2, 3]), set(&[]));
        assert_eq!(next_step(&voters, &none, None, &set(&[1, 2, 3])), None);
        assert_eq!(next_step(&voters, &none, None, &set(&[1, 2, 4])), Some(Step::Add(set(&[4]))));
        let grown = set(&[1, 2, 3, 4]);
        assert_eq!(next_step(&grown, &none, None, &set(&[1, 2, 4])), Some(Step::Remove(3)));
        // A learner left over from an interrupted move: made a voter if
        // wanted, removed if not.
        assert_eq!(
            next_step(&voters, &set(&[4]), None, &set(&[1, 2, 3, 4])),
            Some(Step::Add(set(&[4])))
        );
        // Several new replicas are added at once.
        assert_eq!(
            next_step(&voters, &set(&[4]), None, &set(&[1, 2, 3, 4, 5, 6])),
            Some(Step::Add(set(&[4, 5, 6])))
        );
        assert_eq!(next_step(&voters, &set(&[4]), None, &voters), Some(Step::Remove(4)));
        // A shrink (no node to take the removed one's place).
        assert_eq!(next_step(&voters, &none, None, &set(&[1, 2])), Some(Step::Remove(3)));
        // A change left joint ({1,2,3} -> {1,2,4}) is finished before
        // anything else, whatever is wanted now.
        let joint = set(&[1, 2, 3, 4]);
        let target = set(&[1, 2, 4]);
        for wanted in [set(&[1, 2, 4]), set(&[1, 2, 3]), set(&[1, 2, 5])] {
            assert_eq!(
                next_step(&joint, &none, Some(&target), &wanted),
                Some(Step::Finish(target.clone()))
            );
        }
    }

    #[test]
    fn a_group_has_one_move_at_a_time_and_a_node_a_bounded_number() {
        let moves = Moves::default();
        let first = moves.start(1).expect("a slot");
        assert!(moves.start(1).is_none(), "one change per group at a time");
        let mut held: Vec<MoveSlot> =
            (2..=MOVES_AT_ONCE as u64).map(|g| moves.start(g).expect("a slot")).collect();
        assert!(moves.full() && moves.start(100).is_none(), "at most MOVES_AT_ONCE");
        drop(first);
        assert!(moves.start(1).is_some(), "its slot is free once its move ended");
        held.clear();
        assert!(!moves.full());
    }
}
