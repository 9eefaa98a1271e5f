//! Sinks of replicated ranges: a Redis database kept equal to a range
//! replicated by Raft ([`crate::replicated`]).
//!
//! A sink of a replicated range is registered in the meta range
//! ([`MetaSink`], by name), so every node knows it. It runs on the leader
//! of the source's first chunk ([`MetaState::sink_group`]) and only there:
//! every node checks every [`crate::replicated_views::VIEW_SYNC_MS`] which
//! sinks' groups it leads, and in which term ([`Node::sync_sinks`]), and
//! starts or stops its local sink actor ([`super::sink`]) to match.
//!
//! The actor reads this node's replica of the range (every chunk of a
//! range has the same replicas, so the leader of the first chunk holds them
//! all), as a sink of a node's own range would. A replica applies only
//! committed entries, in log order, so what it mirrors is always a state
//! the range had. Seqs are each replica's own, so a sink starting on a new
//! leader does not resume from the old leader's checkpoint: after the
//! group's read index it copies the range afresh and sweeps what Redis
//! holds beyond it, then follows, as a new sink does.
//!
//! Two leaders may believe they lead for a moment (one not yet told it
//! was deposed); Redis must not take the old one's writes after the new
//! one's. Each sink writes under a fence ([`super::sink::Fence`]): a key in
//! Redis naming the term and node it runs on, which a new leader takes,
//! and which every page of writes checks with `WATCH` inside the same
//! MULTI/EXEC.
//!
//! Not yet: sinks of a mapper's rows on a replicated range (refused).

use std::sync::Arc;

use monotable_proto::{Command, ErrorCode, Reply, SinkSource};

use super::redis_io::Target;
use super::sink::Fence;
use crate::cluster::meta::{MetaCommand, MetaSink};
use crate::cluster::Cluster;
use crate::error::{NodeError, NodeResult};
use crate::node::{validate_name, Node};

/// The sinks of replicated ranges this node runs: sink name -> the term
/// of its group this node runs it in, and the sink as it was then.
pub type SinksHere = crate::leader_tasks::LeaderTasks<MetaSink>;

/// Local catalog entries of sinks of replicated ranges, left by a run that
/// ended: removed at start (a sink of a replicated range starts afresh
/// wherever its group's leader is). Returns the node's own sinks.
pub fn purge_replicated_sinks(
    catalog: &crate::catalog::Catalog,
    sinks: Vec<super::sink::SinkMeta>,
) -> Vec<super::sink::SinkMeta> {
    let (gone, kept): (Vec<_>, Vec<_>) =
        sinks.into_iter().partition(|s| crate::replicated::is_replicated(s.source_id));
    for s in gone {
        if let Err(e) = catalog.remove_sink(&s.name) {
            tracing::warn!(sink = %s.name, error = %e, "stale entry not removed");
        }
    }
    kept
}

impl Node {
    /// Answers a sink request that concerns a replicated range (`None`:
    /// not one; the node answers it the ordinary way).
    pub(crate) async fn route_sink_command(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        command: &Command,
    ) -> Option<NodeResult<Reply>> {
        let meta = cluster.meta()?;
        match command {
            Command::CreateSink { name, source: SinkSource::Range(range), url, prefix } => {
                meta.ranges.get(range)?;
                let sink = MetaSink {
                    source: range.clone(),
                    url: url.clone(),
                    prefix: prefix.to_vec(),
                    incarnation: 0,
                };
                Some(self.create_replicated_sink(cluster, name, sink).await)
            }
            Command::CreateSink { source: SinkSource::View(view), .. } => {
                meta.views.contains_key(view).then(|| {
                    Err(NodeError::bad_request(format!(
                        "{view:?} is a view on a replicated range: sinks of views on replicated \
                         ranges are not supported yet (a sink of the source range is)"
                    )))
                })
            }
            Command::DropSink { name } => {
                let url = meta.sinks.get(name)?.url.clone();
                let drop = MetaCommand::DropSink { name: name.clone() };
                let dropped = self.change_meta(cluster, drop, |m| !m.sinks.contains_key(name));
                if let Err(e) = dropped.await {
                    return Some(Err(e));
                }
                super::ownership::forget(&url, name).await;
                Some(Ok(Reply::Ok))
            }
            _ => None,
        }
    }

    async fn create_replicated_sink(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        sink: MetaSink,
    ) -> NodeResult<Reply> {
        validate_name("sink", name)?;
        if self.views_read().contains(name) {
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        let target = Target::parse(&sink.url).map_err(|e| NodeError::bad_request(e.to_string()))?;
        // Checked again by the meta range as it applies the creation,
        // against sinks created meanwhile through other nodes.
        self.refuse_taken_target(name, &sink.url, &sink.prefix)?;
        let mut con = super::redis_io::reachable(&target).await?;
        // The fence needs WATCH and MULTI/EXEC: a server without them (a
        // replicated database of Monotable's own RESP port) is refused now.
        // Postmortem: such a sink was created and never started, silently.
        let me = cluster.node_id().unwrap_or_default();
        Fence::new(name, 0, me).claim(&mut con).await.map_err(|e| {
            NodeError::bad_request(format!("{}: the sink's fence: {e}", target.display))
        })?;
        let owner = self.sink_owner(&sink.prefix, true);
        self.own_target(&mut con, name, &target, &owner, true).await?;
        let command = MetaCommand::CreateSink { name: name.to_owned(), sink };
        self.change_meta(cluster, command, |m| m.sinks.contains_key(name)).await?;
        tracing::info!(sink = name, "created sink of a replicated range");
        Ok(Reply::Ok)
    }

    /// Starts the loop that runs this node's share of the sinks of
    /// replicated ranges ([`Node::sync_sinks`]), apart from the views' loop:
    /// a sink starting here waits on its Redis, which must not hold back a
    /// view's move to a new leader.
    pub fn follow_sinks(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let node = self.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_millis(crate::replicated_views::VIEW_SYNC_MS);
            while !node.is_shutting_down() {
                node.sync_sinks(&cluster).await;
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Starts the sinks whose group this node leads in a term it does not
    /// run them for yet, and stops those it no longer leads (or that were
    /// dropped or changed).
    pub(crate) async fn sync_sinks(self: &Arc<Self>, cluster: &Arc<Cluster>) {
        let Some(meta) = cluster.meta() else { return };
        let Some(me) = cluster.node_id() else { return };
        let wanted = meta
            .sinks
            .iter()
            .map(|(name, sink)| (name.clone(), sink.clone(), meta.sink_group(name)))
            .collect();
        let plan = self.replicated_sinks.plan(cluster, wanted);
        for name in plan.stop {
            match self.drop_sink(&name).await {
                Ok(()) => {}
                // Stopped already (dropped through this node).
                Err(e) if e.to_info().code == ErrorCode::RangeNotFound => {}
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "sink not stopped here; retrying");
                    continue;
                }
            }
            tracing::info!(sink = %name, "sink stopped here (leadership moved, or dropped)");
            self.replicated_sinks.stopped(&name);
        }
        for (name, sink, term) in plan.start {
            if self.replicated_sinks.term(&name).is_some() {
                // Its stop failed: retried on the next pass.
                continue;
            }
            match self.start_sink_here(cluster, &name, &sink, term, me).await {
                Ok(()) => {
                    tracing::info!(sink = %name, term, "sink runs here (its group's leader)");
                    self.replicated_sinks.started(name, term, sink);
                }
                Err(e) => tracing::debug!(sink = %name, error = %e, "sink not started here yet"),
            }
        }
    }

    /// Starts sink `name` on this node, the leader of its group in `term`:
    /// a new local sink (copy, sweep, follow) under a fence of `term`.
    async fn start_sink_here(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        sink: &MetaSink,
        term: u64,
        me: u64,
    ) -> NodeResult<()> {
        let group_id =
            cluster.with_meta(|m| m.sink_group(name)).flatten().ok_or(NodeError::Moved)?;
        let group = cluster.group(group_id).ok_or(NodeError::Moved)?;
        // Every committed entry is applied here before the copy pins its
        // snapshot.
        group.read_barrier().await.map_err(|e| {
            NodeError::client(ErrorCode::ClusterUnavailable, format!("chunk {group_id}: {e}"))
        })?;
        if self.views_read().sinks.contains_key(name) {
            // Left by a stop that did not finish: done now.
            self.drop_sink(name).await?;
        }
        let source = SinkSource::Range(sink.source.clone());
        let fence = Fence::new(name, term, me);
        self.create_sink(name, source, &sink.url, sink.prefix.clone(), Some(fence)).await
    }
}
