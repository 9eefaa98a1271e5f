//! Replica placement: each chunk's leader brings its Raft group's voters to
//! the replicas the meta range lists for the chunk's range.
//!
//! The meta range decides where replicas go (today: when a node is removed,
//! another node takes its place, see [`super::meta::MetaCommand::Remove`]);
//! this loop carries it out, one membership change at a time per group, on
//! the node that leads the group:
//!
//! 1. a listed node that is not a voter is added: as a learner first, which
//!    the leader catches up (log entries or a snapshot), then as a voter;
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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Cluster;
use crate::consensus::{Group, GroupId, NodeId};

/// How often a node checks the groups it leads against the meta range
/// (also after every change of the meta range).
pub const PLACEMENT_INTERVAL_MS: u64 = 1_000;

/// The shortest time between two restarts of one stopped replica.
pub const REVIVE_INTERVAL_MS: u64 = 10_000;

/// What a leader does next to bring its group's voters to `wanted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Add this node (learner, caught up, then voter).
    Add(NodeId),
    /// Remove this voter or learner.
    Remove(NodeId),
}

/// The next membership change that brings `voters` (and `learners`) to
/// `wanted`, or `None` when they match: additions first (lowest id first),
/// then removals, one at a time. A learner not wanted is removed too; a
/// wanted learner is made a voter by [`Step::Add`].
pub fn next_step(
    voters: &BTreeSet<NodeId>,
    learners: &BTreeSet<NodeId>,
    wanted: &BTreeSet<NodeId>,
) -> Option<Step> {
    if let Some(id) = wanted.difference(voters).next() {
        return Some(Step::Add(*id));
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
            loop {
                let Some(cluster) = weak.upgrade() else { return };
                if cluster.is_shut_down() {
                    return;
                }
                if changes.is_none() {
                    changes = cluster.meta_changes();
                }
                cluster.revive_stopped(&mut revived).await;
                cluster.place_once().await;
                drop(cluster);
                let tick = tokio::time::sleep(Duration::from_millis(PLACEMENT_INTERVAL_MS));
                match changes.as_mut() {
                    Some(c) => {
                        tokio::select! {
                            _ = tick => {}
                            r = c.changed() => if r.is_err() { return },
                        }
                    }
                    None => tick.await,
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

    /// One pass over the chunks whose group this node leads.
    async fn place_once(&self) {
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
            if status.state != "leader" || status.leader != Some(me) {
                continue;
            }
            let voters: BTreeSet<NodeId> = status.voters.keys().copied().collect();
            let learners: BTreeSet<NodeId> = status.learners.keys().copied().collect();
            let Some(step) = next_step(&voters, &learners, &wanted) else { continue };
            if let Err(e) = self.take_step(&group, &step).await {
                tracing::warn!(chunk, ?step, error = %e, "replica move did not finish; retrying");
            } else {
                tracing::info!(chunk, ?step, "replica moved");
            }
        }
    }

    async fn take_step(&self, group: &Group, step: &Step) -> Result<(), String> {
        match *step {
            Step::Add(id) => {
                let addr = self
                    .with_meta(|m| m.nodes.get(&id).map(|n| n.addr.clone()))
                    .flatten()
                    .ok_or_else(|| format!("node {id} is not in the meta range"))?;
                group.add_voter(id, addr).await.map_err(|e| e.to_string())
            }
            Step::Remove(id) => group.remove_member(id).await.map_err(|e| e.to_string()),
        }
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
        assert_eq!(next_step(&voters, &none, &set(&[1, 2, 3])), None);
        assert_eq!(next_step(&voters, &none, &set(&[1, 2, 4])), Some(Step::Add(4)));
        let grown = set(&[1, 2, 3, 4]);
        assert_eq!(next_step(&grown, &none, &set(&[1, 2, 4])), Some(Step::Remove(3)));
        // A learner left over from an interrupted move: made a voter if
        // wanted, removed if not.
        assert_eq!(next_step(&voters, &set(&[4]), &set(&[1, 2, 3, 4])), Some(Step::Add(4)));
        assert_eq!(next_step(&voters, &set(&[4]), &voters), Some(Step::Remove(4)));
        // A shrink (no node to take the removed one's place).
        assert_eq!(next_step(&voters, &none, &set(&[1, 2])), Some(Step::Remove(3)));
    }
}
