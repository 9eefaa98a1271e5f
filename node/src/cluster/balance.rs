//! Where replicas should be: balancing, draining and dead nodes.
//!
//! No central placer decides. The chunk map (the meta range) shows how
//! many chunk replicas each node holds ([`MetaState::chunk_loads`]); the
//! leader of each range's first chunk — which holds a replica of every
//! chunk of the range — proposes moving one of the range's replicas
//! ([`MetaCommand::MoveReplica`]) when that evens the load out: off a
//! draining node first, else from the range's most loaded replica to the
//! least loaded node that lacks one, when their loads differ by more than
//! the range's chunks ([`MetaState::balancing_move`]). The meta range
//! applies a move only if it still evens the load out when it is applied,
//! so leaders deciding at once on different nodes never overshoot. Each
//! chunk's leader then carries the move out ([`super::placement`]: a
//! learner that copies the chunk's segments, a membership change, the old
//! replica removed).
//!
//! Moves are rate-limited: a node proposes at most one every
//! [`BALANCE_INTERVAL_MS`], and only for a range none of whose chunks has
//! a move under way (its groups' voters, as this node's replicas see them,
//! are the replicas the map lists, with no learner and no joint
//! configuration); it carries out at most `placement::MOVES_AT_ONCE`
//! membership changes at a time.
//!
//! The unit moved is a range's replica: all its chunks move together, so
//! loads even out to within one range's chunks (ranges are placed whole;
//! a range of many chunks does not spread over more nodes than its
//! replica count).
//!
//! The meta range's leader also watches the members: one that answers
//! nobody for `serve --dead-after-secs` is drained like one given to
//! `cluster remove`, and a draining node that no range lists any more
//! (and that dropped its replicas, or is dead) is removed from the
//! cluster.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::meta::{MetaCommand, MetaReply};
use super::Cluster;
use crate::consensus::NodeId;

/// The shortest time between two moves proposed by one node.
pub const BALANCE_INTERVAL_MS: u64 = 1_000;

/// How often the meta leader asks every member whether it is up.
pub const LIVENESS_PROBE_MS: u64 = 2_000;

/// How long a member may answer nobody before it is drained (`serve
/// --dead-after-secs`): CockroachDB's `server.time_until_store_dead`.
pub const DEAD_AFTER_SECS_DEFAULT: u64 = 300;

/// What a node remembers between rounds.
#[derive(Default)]
pub(super) struct Balancer {
    last_move: Option<Instant>,
    last_probe: Option<Instant>,
    /// On the meta leader: when each member last answered (or when this
    /// node became the leader, for those that have not since).
    last_live: HashMap<NodeId, Instant>,
    /// The chunk replica groups each member last reported running.
    replicas: HashMap<NodeId, u64>,
}

impl Cluster {
    /// Proposes the next balancing move of a range whose first chunk this
    /// node leads, if any is due (see the module docs).
    pub(super) async fn balance_once(&self, b: &mut Balancer) {
        let Some(me) = self.node_id() else { return };
        if b.last_move.is_some_and(|t| t.elapsed() < Duration::from_millis(BALANCE_INTERVAL_MS)) {
            return;
        }
        let Some(ranges) = self.with_meta(|m| {
            m.ranges
                .iter()
                .filter(|(_, r)| r.rides_on.is_none())
                .map(|(name, r)| {
                    (
                        name.clone(),
                        r.chunks.iter().map(|c| c.id).collect::<Vec<_>>(),
                        r.replicas.clone(),
                    )
                })
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        for (name, chunks, replicas) in ranges {
            let Some(first) = chunks.first().and_then(|c| self.group(*c)) else { continue };
            let status = first.status();
            if status.state != "leader"
                || status.leader != Some(me)
                || !status.voters.contains_key(&me)
            {
                continue;
            }
            let wanted: std::collections::BTreeSet<NodeId> = replicas.iter().copied().collect();
            let settled = chunks.iter().all(|c| {
                self.group(*c).is_some_and(|g| {
                    let s = g.status();
                    s.joint_target.is_none()
                        && s.learners.is_empty()
                        && s.voters.keys().copied().collect::<std::collections::BTreeSet<_>>()
                            == wanted
                })
            });
            if !settled {
                continue;
            }
            let Some(Some((from, to))) = self.with_meta(|m| m.balancing_move(&name)) else {
                continue;
            };
            b.last_move = Some(Instant::now());
            let command = MetaCommand::MoveReplica { range: name.clone(), from, to };
            match self.propose(command).await {
                Ok(MetaReply::Ok) => {
                    tracing::info!(range = name, from, to, "moving a replica of the range")
                }
                Ok(other) => tracing::debug!(range = name, ?other, "replica move not taken"),
                Err(e) => tracing::debug!(range = name, error = %e, "replica move not proposed"),
            }
            return;
        }
    }

    /// On the meta leader: probes the members, drains those dead for too
    /// long and removes drained ones (see the module docs).
    pub(super) async fn watch_members(&self, b: &mut Balancer) {
        let Some(me) = self.node_id() else { return };
        let Ok(member) = self.member() else { return };
        let meta = member.meta.status();
        if meta.state != "leader" || meta.leader != Some(me) {
            b.last_live.clear();
            b.replicas.clear();
            return;
        }
        // A removal whose membership change was cut short (its leader
        // changed between marking the node removed and taking it out of
        // the meta range's group) is finished here. Postmortem: a meta
        // leader that removed itself lost its leadership in between; the
        // removed node stayed a voter of the meta range, campaigned for
        // ever, and never learnt it should stop.
        let stale: Vec<NodeId> = meta
            .voters
            .keys()
            .chain(meta.learners.keys())
            .copied()
            .filter(|id| {
                self.with_meta(|m| m.nodes.get(id).is_some_and(|n| n.removed)).unwrap_or(false)
            })
            .collect();
        for id in stale {
            match member.meta.remove_member(id).await {
                Ok(()) => tracing::info!(node = id, "a removed node left the meta range's group"),
                Err(e) => {
                    tracing::warn!(node = id, error = %e, "removed node still in the meta group")
                }
            }
        }
        if b.last_probe.is_some_and(|t| t.elapsed() < Duration::from_millis(LIVENESS_PROBE_MS)) {
            return;
        }
        let now = Instant::now();
        b.last_probe = Some(now);
        let Some(members) = self.with_meta(|m| {
            m.live_members().map(|(id, n)| (id, n.addr.clone(), n.draining)).collect::<Vec<_>>()
        }) else {
            return;
        };
        let others = members.iter().filter(|(id, _, _)| *id != me);
        let timeout = Duration::from_millis(super::STATUS_PROBE_TIMEOUT_MS);
        let answers = self.peers.probe(others.map(|(id, a, _)| (*id, a.clone())), timeout).await;
        let mut live = std::collections::HashSet::from([me]);
        for (id, info) in answers {
            live.insert(id);
            b.replicas.insert(id, info.replica_groups);
        }
        for (id, _, _) in &members {
            let seen = b.last_live.entry(*id).or_insert(now);
            if live.contains(id) {
                *seen = now;
            }
        }
        b.last_live.retain(|id, _| members.iter().any(|(m, _, _)| m == id));
        let dead_after = Duration::from_secs(self.config.dead_after_secs);
        for (id, _, draining) in &members {
            let silent = now.duration_since(b.last_live[id]);
            if self.config.dead_after_secs > 0 && !draining && silent >= dead_after {
                tracing::warn!(
                    node = id,
                    silent_secs = silent.as_secs(),
                    "node dead too long: draining it"
                );
                match self.propose(MetaCommand::Drain { node: *id }).await {
                    Ok(MetaReply::Refused(why)) => {
                        tracing::warn!(node = id, %why, "dead node not drained")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(node = id, error = %e, "dead node not drained"),
                }
            }
        }
        // Drained: no range lists it, and it let its replicas go (or it
        // is down and cannot).
        for (id, _, draining) in &members {
            let listed = self
                .with_meta(|m| m.ranges.values().any(|r| r.replicas.contains(id)))
                .unwrap_or(true);
            let let_go = match *id == me {
                true => self.groups().is_empty(),
                false => !live.contains(id) || b.replicas.get(id) == Some(&0),
            };
            if *draining && !listed && let_go {
                match self.remove(*id).await {
                    Ok(()) => tracing::info!(node = id, "node drained: removed from the cluster"),
                    Err(e) => tracing::warn!(node = id, error = %e, "drained node not removed yet"),
                }
            }
        }
    }
}
