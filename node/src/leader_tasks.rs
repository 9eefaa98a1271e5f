//! Work that runs on the leader of a Raft group: one task per name (a view
//! of a replicated range, a sink of one), run by the node whose replica
//! leads the task's group, and started again in each new term, so that one
//! node runs it while its leadership holds and the next leader takes over.
//!
//! [`LeaderTasks`] records what runs here and in which term;
//! [`LeaderTasks::plan`] compares it with what the meta range wants and
//! with this node's leadership of each task's group, and says what to stop
//! and what to start. Callers stop and start in the order their kind needs
//! (views: reducers before the mappers they read), then record the outcome
//! with [`LeaderTasks::stopped`] and [`LeaderTasks::started`].
//!
//! The rule ([`plan`]): a task keeps running while its spec is unchanged
//! and this node leads its group in the term it started in. A group whose
//! status merely stops naming this node as leader for a moment (no quorum
//! acknowledgement for a while, under load) while its replica is still
//! in the leader state of that term does not stop its tasks: a restart
//! costs a full resync (a view's rows, a sink's copy into Redis), and a
//! deposed leader's writes fail anyway (they check leadership).
//! Postmortem: sinks stopped on such a moment and copied their whole range
//! into Redis again; views had the rule, sinks had their own loop without
//! it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cluster::Cluster;
use crate::consensus::GroupId;

/// This node's standing in a task's group, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The group's term as this replica knows it.
    pub term: u64,
    /// The group's status names this node as its leader.
    pub leads: bool,
    /// This replica is in the leader state (possibly without a recent
    /// quorum acknowledgement).
    pub leader_state: bool,
}

/// What to do next: stop these names, then start these (name, spec, term).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<S> {
    pub stop: Vec<String>,
    pub start: Vec<(String, S, u64)>,
}

/// The tasks of one kind this node runs: name -> (term, spec).
pub struct LeaderTasks<S> {
    running: Mutex<HashMap<String, (u64, S)>>,
}

impl<S> Default for LeaderTasks<S> {
    fn default() -> Self {
        LeaderTasks { running: Mutex::new(HashMap::new()) }
    }
}

impl<S: Clone + PartialEq> LeaderTasks<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, S)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to stop and start, given `wanted`: each task the meta range
    /// holds with its spec and the group it runs on (`None`: none now).
    pub fn plan(&self, cluster: &Cluster, wanted: Vec<(String, S, Option<GroupId>)>) -> Plan<S> {
        let me = cluster.node_id();
        let wanted: Vec<(String, S, Option<Standing>)> = wanted
            .into_iter()
            .map(|(name, spec, group)| {
                let standing = group.and_then(|g| cluster.group(g)).map(|g| {
                    let s = g.status();
                    Standing {
                        term: s.term,
                        leads: me.is_some() && s.leader == me,
                        leader_state: s.state == "leader",
                    }
                });
                (name, spec, standing)
            })
            .collect();
        plan(&self.lock(), &wanted)
    }

    /// Records that `name` runs here in `term` as `spec`.
    pub fn started(&self, name: String, term: u64, spec: S) {
        self.lock().insert(name, (term, spec));
    }

    /// Records that `name` no longer runs here.
    pub fn stopped(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The term `name` runs here in, if it does.
    pub fn term(&self, name: &str) -> Option<u64> {
        self.lock().get(name).map(|(t, _)| *t)
    }
}

/// [`LeaderTasks::plan`] on plain values (see the module docs for the
/// rule). Stops come in the order of `running`'s names sorted; starts in
/// the order of `wanted`.
pub fn plan<S: Clone + PartialEq>(
    running: &HashMap<String, (u64, S)>,
    wanted: &[(String, S, Option<Standing>)],
) -> Plan<S> {
    let keeps = |name: &str, term: u64, spec: &S| {
        wanted.iter().any(|(n, s, standing)| {
            n == name
                && s == spec
                && standing.is_some_and(|st| st.term == term && (st.leads || st.leader_state))
        })
    };
    let mut stop: Vec<String> = running
        .iter()
        .filter(|(name, (term, spec))| !keeps(name, *term, spec))
        .map(|(name, _)| name.clone())
        .collect();
    stop.sort();
    let start = wanted
        .iter()
        .filter_map(|(name, spec, standing)| {
            let st = standing.filter(|st| st.leads)?;
            let kept = running.contains_key(name) && !stop.contains(name);
            (!kept).then(|| (name.clone(), spec.clone(), st.term))
        })
        .collect();
    Plan { stop, start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leads(term: u64) -> Option<Standing> {
        Some(Standing { term, leads: true, leader_state: true })
    }

    #[test]
    fn a_task_runs_on_its_groups_leader_and_restarts_in_a_new_term() {
        let none: HashMap<String, (u64, &str)> = HashMap::new();
        let wanted = vec![("v".to_owned(), "spec", leads(3)), ("w".to_owned(), "spec", None)];
        let p = plan(&none, &wanted);
        assert_eq!(p, Plan { stop: vec![], start: vec![("v".to_owned(), "spec", 3)] });

        let running = HashMap::from([("v".to_owned(), (3, "spec"))]);
        assert_eq!(plan(&running, &wanted), Plan { stop: vec![], start: vec![] }, "kept");
        // A new term of this node's leadership: stopped and started again.
        let later = vec![("v".to_owned(), "spec", leads(4))];
        let p = plan(&running, &later);
        assert_eq!(p, Plan { stop: vec!["v".into()], start: vec![("v".into(), "spec", 4)] });
        // Leadership gone to another node: stopped, not started.
        let follower = Some(Standing { term: 4, leads: false, leader_state: false });
        let p = plan(&running, &[("v".to_owned(), "spec", follower)]);
        assert_eq!(p, Plan { stop: vec!["v".into()], start: vec![] });
        // Dropped, or its spec changed (dropped and made again).
        assert_eq!(plan(&running, &[]).stop, vec!["v".to_owned()]);
        let p = plan(&running, &[("v".to_owned(), "other", leads(3))]);
        assert_eq!(p, Plan { stop: vec!["v".into()], start: vec![("v".into(), "other", 3)] });
    }

    #[test]
    fn a_leader_without_a_recent_quorum_keeps_its_tasks() {
        let running = HashMap::from([("s".to_owned(), (7, "spec"))]);
        // The status names no leader for a moment; the replica is still the
        // leader of term 7.
        let unsure = Some(Standing { term: 7, leads: false, leader_state: true });
        let p = plan(&running, &[("s".to_owned(), "spec", unsure)]);
        assert_eq!(p, Plan { stop: vec![], start: vec![] });
        // Nothing is started on such a replica either.
        let p = plan(&HashMap::new(), &[("s".to_owned(), "spec", unsure)]);
        assert_eq!(p, Plan { stop: vec![], start: vec![] });
    }
}
