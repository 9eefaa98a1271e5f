//! Views on replicated ranges: mappers and reducers whose input is a range
//! replicated by Raft ([`crate::replicated`]).
//!
//! # Where they live
//!
//! A view on a replicated range is registered in the meta range
//! ([`MetaView`], by name), so every node knows it. A mapper's target is
//! created with it as a range *riding* on the source's first chunk
//! ([`MetaRange::rides_on`]): it has no Raft group of its own; its rows are
//! written as [`ChunkCommand::Rider`] entries of that chunk's Raft log, so
//! every replica of the source holds a copy of the target, applied in one
//! order with the first chunk's writes. A source's first chunk keeps its id
//! and Raft group through every split (a split's lower half keeps them), so
//! the target rides on the same group for its whole life; it is one chunk
//! and does not split (`SplitChunk` refuses it).
//!
//! # Where they run
//!
//! A view runs on the leader of the Raft group carrying its input
//! ([`MetaState::view_group`]: the source's first chunk for a mapper, and
//! for a reducer its range's first chunk, or the chunk its range rides
//! on), and only there, over that node's replica of *every* chunk of the
//! range: all chunks of a range have the same replicas (the range's
//! `replicas`; a split's upper half gets a group over the same nodes), so
//! the node holds them all, each applied in its own group's log order. The
//! mapper and the reducer are the single-node ones, over the node's local
//! range of several chunks: they follow each chunk's change journal, and a
//! split of a source chunk ([`ChunkCommand::Split`], applied at one log
//! index on every replica) is a local split of the node's replica, which
//! single-node views follow already (the split keeps the journals from the
//! views' pinned seqs; a backfill's cursor is a key, not a chunk). Every
//! node checks every [`VIEW_SYNC_MS`] which of those groups it leads, and
//! in which term ([`Node::sync_views`]): a view whose group it leads in a
//! term it does not run the view for yet is (re)started here, a view whose
//! group it no longer leads in that term is stopped. Its local state (the
//! catalog entry, pinned checkpoint, the reducer's tree) is this node's
//! alone and goes when the view stops here (and at a restart). Leader
//! changes of the other chunks do not move the views.
//!
//! # Why a new leader's views are exact: resync, not replicated seqs
//!
//! Seqs are each replica's own ([`crate::replica`]), so a mapper's
//! checkpoint (a seq) means nothing on another node. A view starting on a
//! new leader therefore does not resume from one: it first waits for
//! Raft's read index (it has applied every committed entry), pins its own
//! stable seq `S`, and then
//!
//! - a mapper prunes the target rows the source at `S` does not produce
//!   (each row key names its source record) and backfills the rows it does
//!   produce ([`crate::catalog::Backfill::prune`]), then follows the source's
//!   journal from `S` with this node's seqs, as on a single node;
//! - a reducer builds its tree from its range at `S`, then follows it.
//!
//! Both cost one pass over the whole range, every chunk (measured in
//! `tests/tests/cluster_views.rs`: the prune reads every target row and
//! maps again each source record it names; the backfill maps the source
//! and writes through the first chunk's log the rows the target does not
//! hold already with their value). The result is exact
//! because the target's rows are in the first chunk's log: the old
//! leader's writes that committed are all applied before `S`, those that
//! did not commit never will be (a deposed leader's proposals fail, and its
//! round stops), and the new leader's writes follow `S` in the same log. A
//! mapper writes rows only while its node leads the group in the term it
//! started in ([`Node::write_view_rows`]). The other chunks' replicas on
//! the new leader may lag their own leaders at `S`: a record they have not
//! applied yet is pruned (or not yet backfilled) and mapped once it is
//! applied here, like any change.
//!
//! # Fresh aggregates over several chunks
//!
//! A write to a chunk other than the view group's is acknowledged once its
//! own leader applied it; the views' node may apply it later. So a
//! `--fresh` aggregate, on the views' node after the view group's read
//! index, also asks each other chunk's leader for its group's read index
//! (`Command::GroupReadIndex`; [`crate::consensus::Group::read_index`]),
//! all at once, and waits until its own replica applied up to it
//! ([`crate::consensus::Group::wait_applied`]) before it settles its seqs
//! and answers as on a single node ([`Node::catch_up_chunks`]). A chunk
//! that split meanwhile is caught up with its upper half: the split is in
//! the chunk's log, so once applied the node knows the upper half, whose
//! group it catches up in turn. Non-fresh aggregates answer from what the
//! node applied.
//!
//! Requests: creating and dropping views go through the meta range from
//! any node; an aggregate is answered on the leader of its reducer's group
//! (forwarded there); `ListViews` gathers each view's status from the node
//! running it; a target is read like any replicated range, through the
//! source's first chunk's leader.
//!
//! # Why not one part per source chunk
//!
//! The other way (the mapper's target in one riding part per source chunk,
//! each source chunk's leader mapping its own part, a reducer of one part
//! per chunk with the parts' results combined by rereduce at query time)
//! spreads the views' work over the chunks' leaders and lets targets grow
//! with their sources. It needs, beyond this: mappers and reducers bounded
//! to a chunk's key span; target scans and gets merging parts (a target
//! row's key starts with the emitted key, so parts overlap in key order);
//! parts that split with their source chunk at the split's log index;
//! reduce states that travel between nodes and combine (the built-in
//! reducers' states, not only their final values); and grouped aggregates
//! paged across parts. Running the single-node views over one node's
//! replica of every chunk gives the same exactness through leader changes
//! and splits with none of that, at these costs, which are the limits
//! today: one node (the first chunk's leader) does all of a range's view
//! work, every target row goes through the first chunk's Raft log, a
//! target is one chunk (so it is bounded by one chunk's practical size,
//! and the first chunk's Raft snapshots carry it), and a leader change of
//! the first chunk resyncs over the whole range.
//!
//! Sinks of replicated ranges run the same way: [`crate::bridge::cluster_sinks`].
//!
//! Not yet: chains of mappers (a mapper whose source is a riding target),
//! and mapping into an existing range.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monotable_proto::{Command, ErrorCode, Reply, SinkSource, ViewDefinition, ViewStatus, WriteOp};

use crate::catalog::{MapperMeta, ReducerMeta};
use crate::chunk_cell::ChunkCell;
use crate::cluster::meta::{MetaCommand, MetaRange, MetaState, MetaView};
use crate::cluster::Cluster;
use crate::error::{NodeError, NodeResult};
use crate::node::{validate_name, validate_range_name, Node};
use crate::replica::{decode_reply, encode_command, ChunkCommand, RiderSpec, Riders};
use crate::replicated::is_replicated;

/// How often a node checks which views it must run.
pub const VIEW_SYNC_MS: u64 = 100;

/// How long a request waits for a view's leader to run it.
const VIEW_READY_WAIT_MS: u64 = 15_000;

/// How long a fresh aggregate waits for this node's replicas of a range's
/// other chunks to reach their leaders' read indexes (each chunk retried
/// meanwhile, e.g. through its election) before it fails with
/// `ClusterUnavailable`: below a node-to-node call's timeout
/// ([`crate::cluster::transport::PEER_CALL_TIMEOUT_MS`]).
const CATCH_UP_WAIT_MS: u64 = 4_000;

/// The views on replicated ranges this node runs, and where their rows go.
#[derive(Default)]
pub struct ViewsHere {
    /// View name -> the term of its group this node runs it in, and the
    /// view as it was then (a view dropped and created again under its
    /// name between two checks is restarted).
    running: crate::leader_tasks::LeaderTasks<MetaView>,
    /// Target range name -> where its mapper proposes rows: (group, rider,
    /// term the mapper runs in).
    targets: Mutex<HashMap<String, (u64, RiderSpec, u64)>>,
    /// Riders this node created (from its log, possibly before its meta
    /// range knew them, or as a view started): rider chunk id -> (group,
    /// rider). With the meta range's, what a group's snapshot holds.
    riders: Mutex<HashMap<u64, (u64, RiderSpec)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::ClusterUnavailable, message)
}

/// The rider of range `name`, as the meta range records it.
pub fn rider_spec(name: &str, range: &MetaRange) -> Option<RiderSpec> {
    Some(RiderSpec {
        name: name.to_owned(),
        range_id: range.id,
        chunk_id: range.chunks.first()?.id,
        options: range.options,
    })
}

/// Local catalog entries of views on replicated ranges, left by a run that
/// ended: removed at start (their seqs are pinned by nobody now), since a
/// view on a replicated range starts afresh wherever its group's leader is.
/// Returns the entries of the node's own ranges.
pub fn purge_replicated_views(
    catalog: &crate::catalog::Catalog,
    mappers: Vec<MapperMeta>,
    reducers: Vec<ReducerMeta>,
) -> (Vec<MapperMeta>, Vec<ReducerMeta>) {
    let (gone, mappers): (Vec<_>, Vec<_>) =
        mappers.into_iter().partition(|m| is_replicated(m.source_id));
    for m in gone {
        if let Err(e) = catalog.remove_mapper(&m.name) {
            tracing::warn!(mapper = %m.name, error = %e, "stale entry not removed");
        }
    }
    let (gone, reducers): (Vec<_>, Vec<_>) =
        reducers.into_iter().partition(|r| is_replicated(r.range_id));
    for r in gone {
        if let Err(e) = catalog.remove_reducer(&r.name) {
            tracing::warn!(reducer = %r.name, error = %e, "stale entry not removed");
        }
    }
    (mappers, reducers)
}

impl Riders for Node {
    fn rider_cell(&self, group: u64, spec: &RiderSpec) -> Result<Option<Arc<ChunkCell>>, String> {
        let local = |node: &Node| {
            let router = node.router_read();
            let route = router.range(&spec.name)?;
            if route.meta.id != spec.range_id {
                return Some(None);
            }
            Some(route.chunks.values().next().map(|r| r.cell.clone()))
        };
        match local(self) {
            Some(Some(cell)) => return Ok(Some(cell)),
            Some(None) => {
                return Err(format!("a range {:?} of another id is in the way", spec.name))
            }
            None => {}
        }
        // Dropped already (its id is below the meta range's next one, and
        // the meta range no longer has it): its rows are of no use.
        if let Ok(cluster) = self.cluster() {
            let dropped = cluster
                .with_meta(|m| {
                    spec.range_id < m.next_id && !m.ranges.values().any(|r| r.id == spec.range_id)
                })
                .unwrap_or(false);
            if dropped {
                return Ok(None);
            }
        }
        let me = self.self_arc().ok_or("the node is shutting down")?;
        let _creating = self.creating_range.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = local(self) {
            return found.map(Some).ok_or_else(|| format!("range {:?} is in the way", spec.name));
        }
        let route = me
            .create_range_with_ids(&spec.name, spec.options, spec.range_id, spec.chunk_id)
            .map_err(|e| e.to_string())?;
        lock(&self.replicated_views.riders).insert(spec.chunk_id, (group, spec.clone()));
        tracing::info!(range = %spec.name, id = spec.range_id, "riding range created from the log");
        Ok(Some(route.cell.clone()))
    }

    fn riders_of(&self, group: u64) -> Vec<(RiderSpec, Arc<ChunkCell>)> {
        let mut specs: Vec<RiderSpec> = lock(&self.replicated_views.riders)
            .values()
            .filter(|(g, _)| *g == group)
            .map(|(_, s)| s.clone())
            .collect();
        if let Ok(cluster) = self.cluster() {
            let known = cluster
                .with_meta(|m| {
                    m.ranges
                        .iter()
                        .filter(|(_, r)| r.rides_on == Some(group))
                        .filter_map(|(n, r)| rider_spec(n, r))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            for s in known {
                if !specs.iter().any(|x| x.range_id == s.range_id) {
                    specs.push(s);
                }
            }
        }
        let router = self.router_read();
        specs
            .into_iter()
            .filter_map(|s| {
                let route = router.range(&s.name).filter(|r| r.meta.id == s.range_id)?;
                let cell = route.chunks.values().next()?.cell.clone();
                Some((s, cell))
            })
            .collect()
    }
}

impl Node {
    /// The term this node leads `group` in, if it leads it.
    fn leads(&self, cluster: &Cluster, group: u64) -> Option<u64> {
        let me = cluster.node_id()?;
        let status = cluster.group(group)?.status();
        (status.leader == Some(me)).then_some(status.term)
    }

    /// Writes a mapper's rows into `target`: proposed to the group it
    /// rides on (only while this node leads it in the term the mapper
    /// started in; else `Moved`, and the round is retried until the mapper
    /// is stopped here), or written the ordinary way for a range of the
    /// node's own.
    pub(crate) async fn write_view_rows(&self, target: &str, ops: Vec<WriteOp>) -> NodeResult<()> {
        let riding = lock(&self.replicated_views.targets).get(target).cloned();
        let Some((group_id, rider, term)) = riding else {
            return self.write_ops(target, ops).await.map(|_| ());
        };
        let cluster = self.cluster()?;
        if self.leads(cluster, group_id) != Some(term) {
            return Err(NodeError::Moved);
        }
        let group = cluster.group(group_id).ok_or(NodeError::Moved)?;
        let proposal = encode_command(&ChunkCommand::Rider { rider, ops });
        let bytes = match group.propose(proposal).await {
            Ok(bytes) => bytes,
            Err(crate::consensus::ConsensusError::NotLeader { .. }) => {
                return Err(NodeError::Moved)
            }
            Err(e) => return Err(unavailable(format!("chunk {group_id}: {e}"))),
        };
        match decode_reply(&bytes) {
            // Applied here (the leader) at `token.seq`, which the group
            // commit settles in a moment: the round's cut, chosen from the
            // settled seqs, must cover it.
            Ok(token) => {
                self.clock.wait_stable(token.seq).await;
                Ok(())
            }
            Err(info) => Err(NodeError::client(info.code, info.message)),
        }
    }

    /// Starts the loop that runs this node's share of the views on
    /// replicated ranges ([`Node::sync_views`]).
    pub fn follow_views(self: &Arc<Self>, cluster: Arc<Cluster>) {
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                if node.is_shutting_down() {
                    return;
                }
                node.sync_views(&cluster).await;
                tokio::time::sleep(Duration::from_millis(VIEW_SYNC_MS)).await;
            }
        });
    }

    /// Starts the views whose group this node leads in a term it does not
    /// run them for yet, and stops those it no longer leads (or that were
    /// dropped). Mappers start before reducers, so a reducer on a target
    /// finds its mapper backfilling, never a target without its mapper.
    pub(crate) async fn sync_views(self: &Arc<Self>, cluster: &Arc<Cluster>) {
        let Some(meta) = cluster.meta() else { return };
        let wanted = meta
            .views
            .iter()
            .map(|(name, view)| (name.clone(), view.clone(), meta.view_group(name)))
            .collect();
        let mut plan = self.replicated_views.running.plan(cluster, wanted);
        // Stopped first, reducers before the mappers they read, so a view
        // restarted in a new term starts clean; started mappers first.
        plan.stop
            .sort_by_key(|name| !matches!(meta.views.get(name), Some(MetaView::Reducer { .. })));
        plan.start.sort_by_key(|(_, v, _)| matches!(v, MetaView::Reducer { .. }));
        for name in plan.stop {
            if let Err(e) = self.stop_view_here(&name).await {
                tracing::warn!(view = %name, error = %e, "view not stopped here; retrying");
                continue;
            }
            tracing::info!(view = %name, "view stopped here (leadership moved, or dropped)");
            self.replicated_views.running.stopped(&name);
        }
        for (name, view, term) in plan.start {
            if self.replicated_views.running.term(&name).is_some() {
                // Its stop failed: retried on the next pass.
                continue;
            }
            match self.start_view_here(cluster, &meta, &name, &view, term).await {
                Ok(()) => {
                    tracing::info!(view = %name, term, "view runs here (its group's leader)");
                    self.replicated_views.running.started(name, term, view);
                }
                Err(e) => tracing::debug!(view = %name, error = %e, "view not started here yet"),
            }
        }
    }

    /// Starts view `name` on this node, the leader of its group in `term`.
    async fn start_view_here(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        meta: &MetaState,
        name: &str,
        view: &MetaView,
        term: u64,
    ) -> NodeResult<()> {
        let group_id = meta.view_group(name).ok_or(NodeError::Moved)?;
        let group = cluster.group(group_id).ok_or(NodeError::Moved)?;
        // Everything committed is applied here before the view pins its
        // start: the rows of the old leader's rounds are all in.
        group.read_barrier().await.map_err(|e| unavailable(format!("chunk {group_id}: {e}")))?;
        if self.views_read().contains(name) {
            // Left by a stop that did not finish: done now.
            self.stop_view_here(name).await?;
        }
        let range_id = |range: &str| {
            self.router_read()
                .range(range)
                .map(|r| r.meta.id)
                .ok_or_else(|| unavailable(format!("this node has no replica of {range:?} yet")))
        };
        match view {
            MetaView::Mapper { source, target, function } => {
                let rider =
                    meta.ranges.get(target).and_then(|r| rider_spec(target, r)).ok_or_else(
                        || NodeError::bad_request(format!("target {target:?} is gone")),
                    )?;
                self.rider_cell(group_id, &rider).map_err(NodeError::Internal)?;
                let f = self.checked_map_function(function.clone()).await?;
                let (source_id, target_id) = (range_id(source)?, range_id(target)?);
                lock(&self.replicated_views.targets)
                    .insert(target.clone(), (group_id, rider, term));
                self.set_view_index(target, true)?;
                let total = self.range_records(source_id);
                let ranges = (source.clone(), source_id, target.clone(), target_id);
                self.start_new_mapper(name, ranges, f, total, true).await?;
            }
            MetaView::Reducer { range, function } => {
                let function = self.checked_reduce_function(function.clone()).await?;
                let range_id = range_id(range)?;
                self.start_new_reducer(name, range, range_id, function).await?;
            }
        }
        Ok(())
    }

    /// Stops view `name` here, leaving its rows (they are the group's, and
    /// the next leader's view takes them over).
    async fn stop_view_here(&self, name: &str) -> NodeResult<()> {
        let mapper = self.views_read().mappers.get(name).map(|m| {
            m.interrupt.stop_view();
            (m.addr.clone().recipient(), m.source_id)
        });
        if let Some(found) = mapper {
            let target =
                self.catalog.mappers()?.into_iter().find(|m| m.name == name).map(|m| m.target);
            self.stop_view(name, Some(found)).await?;
            if let Some(target) = target {
                lock(&self.replicated_views.targets).remove(&target);
            }
            return Ok(());
        }
        if self.views_read().reducers.contains_key(name) {
            return self.drop_reducer(name).await;
        }
        Ok(())
    }

    /// Answers a view request that concerns a replicated range (`None`:
    /// not one; the node answers it the ordinary way).
    pub(crate) async fn route_view_command(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        command: &Command,
    ) -> Option<NodeResult<Reply>> {
        let known = |f: &dyn Fn(&MetaState) -> bool| cluster.with_meta(f).unwrap_or(false);
        match command {
            Command::CreateMapper { name, source, target, function } => {
                let names =
                    |m: &MetaState| m.ranges.contains_key(source) || m.ranges.contains_key(target);
                if !known_caught_up(cluster, &names).await {
                    return None;
                }
                let view = MetaView::Mapper {
                    source: source.clone(),
                    target: target.clone(),
                    function: function.clone(),
                };
                Some(self.create_replicated_view(cluster, name, view).await)
            }
            Command::CreateReducer { name, range, function } => {
                if !known_caught_up(cluster, &|m| m.ranges.contains_key(range)).await {
                    return None;
                }
                let view = MetaView::Reducer { range: range.clone(), function: function.clone() };
                Some(self.create_replicated_view(cluster, name, view).await)
            }
            Command::DropMapper { name } | Command::DropReducer { name } => {
                let kind = cluster.with_meta(|m| m.views.get(name).cloned()).flatten()?;
                let mapper = matches!(command, Command::DropMapper { .. });
                if mapper != matches!(kind, MetaView::Mapper { .. }) {
                    return Some(Err(NodeError::bad_request(format!(
                        "view {name:?} is a {}",
                        if mapper { "reducer" } else { "mapper" }
                    ))));
                }
                Some(self.drop_replicated_view(cluster, name).await)
            }
            Command::CreateSink { .. } | Command::DropSink { .. } => {
                self.route_sink_command(cluster, command).await
            }
            Command::Aggregate(req) => {
                // Postmortem: a node just restarted, its meta replica not
                // yet caught up, answered "reducer does not exist" for a
                // view on a replicated range. A reducer of this node's own
                // is answered at once, without asking the meta leader.
                let view = |m: &MetaState| m.views.contains_key(&req.reducer);
                if !known(&view)
                    && (self.views_read().reducers.contains_key(&req.reducer)
                        || !known_caught_up(cluster, &view).await)
                {
                    return None;
                }
                Some(self.serve_replicated_view(cluster, &req.reducer, command).await)
            }
            Command::ListViews => Some(Ok(Reply::Views(self.all_view_statuses(cluster).await))),
            Command::ViewDefinitions => Some(self.all_view_definitions(cluster)),
            _ => None,
        }
    }

    async fn create_replicated_view(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        view: MetaView,
    ) -> NodeResult<Reply> {
        validate_name("view", name)?;
        if self.views_read().contains(name) {
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        match &view {
            MetaView::Mapper { source, target, function } => {
                validate_range_name(target)?;
                if source == target {
                    return Err(NodeError::bad_request(format!(
                        "a mapper cannot write into its own source range {source:?}"
                    )));
                }
                if self.router_read().range(target).is_some_and(|r| !is_replicated(r.meta.id)) {
                    return Err(NodeError::bad_request(format!(
                        "range {target:?} is a range of this node's own: the target of a mapper \
                         on a replicated range is created with it; choose a new name"
                    )));
                }
                self.checked_map_function(function.clone()).await?;
            }
            MetaView::Reducer { function, .. } => {
                self.checked_reduce_function(function.clone()).await?;
            }
        }
        let command = MetaCommand::CreateView { name: name.to_owned(), view };
        self.change_meta(cluster, command, |m| m.views.contains_key(name)).await?;
        tracing::info!(view = name, "created view on a replicated range");
        Ok(Reply::Ok)
    }

    async fn drop_replicated_view(&self, cluster: &Arc<Cluster>, name: &str) -> NodeResult<Reply> {
        let drop = MetaCommand::DropView { name: name.to_owned() };
        self.change_meta(cluster, drop, |m| !m.views.contains_key(name)).await.map(|()| Reply::Ok)
    }

    /// Whether view `name` and every mapper writing its input run here in
    /// `term` (a reducer answers only once the mapper feeding it runs on
    /// the same node: a fresh query waits for it there).
    fn runs_here(&self, meta: &MetaState, name: &str, term: u64) -> bool {
        let running = &self.replicated_views.running;
        let Some(view) = meta.views.get(name) else { return false };
        let feeding = meta.views.iter().filter(
            |(_, v)| matches!(v, MetaView::Mapper { target, .. } if target == view.input()),
        );
        std::iter::once(name)
            .chain(feeding.map(|(n, _)| n.as_str()))
            .all(|n| running.term(n) == Some(term))
    }

    /// Answers `command` (an aggregate of view `name`) on the leader of the
    /// view's group: here once the view runs here (after Raft's read
    /// index, so every acknowledged write is applied), else forwarded.
    async fn serve_replicated_view(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        name: &str,
        command: &Command,
    ) -> NodeResult<Reply> {
        let deadline = Instant::now() + Duration::from_millis(VIEW_READY_WAIT_MS);
        loop {
            let meta = cluster.meta().ok_or_else(|| unavailable("this node has not joined"))?;
            let group_id = meta
                .view_group(name)
                .ok_or_else(|| NodeError::client(ErrorCode::RangeNotFound, "view was dropped"))?;
            let Some(group) = cluster.group(group_id) else {
                // Not a replica: one is.
                let range = meta
                    .views
                    .get(name)
                    .and_then(|v| meta.ranges.get(v.input()))
                    .cloned()
                    .ok_or_else(|| NodeError::client(ErrorCode::RangeNotFound, "view dropped"))?;
                return self.forward_to_replica(cluster, &range, command.clone()).await;
            };
            let status = group.status();
            let me = cluster.node_id();
            let leading = status.leader.is_some() && status.leader == me;
            // A leader deposed meanwhile fails its read index: asked again.
            if leading
                && self.runs_here(&meta, name, status.term)
                && group.read_barrier().await.is_ok()
            {
                // A fresh query over several chunks also needs this node's
                // replica of every other chunk to hold the writes
                // acknowledged before it (they are applied on each chunk's
                // leader, maybe not yet here).
                let fresh = matches!(command, Command::Aggregate(r) if r.fresh);
                let caught = match carrying_range(&meta, name) {
                    Some(range) if fresh => {
                        // Within a node-to-node call's timeout, so that a
                        // node that forwarded the query gets this node's
                        // reason (a chunk without a leader) rather than
                        // silence.
                        let cap = Instant::now() + Duration::from_millis(CATCH_UP_WAIT_MS);
                        self.catch_up_chunks(cluster, &range, group_id, deadline.min(cap)).await
                    }
                    _ => Ok(()),
                };
                match caught {
                    Ok(()) => {
                        // What the leader applied (every acknowledged
                        // write) is settled before a fresh query takes the
                        // settled seq as the one to reach.
                        self.clock.wait_stable(self.clock.last_allocated()).await;
                        if self.runs_here(&meta, name, status.term) {
                            let reply = Box::pin(self.execute_local(command.clone())).await;
                            // A view stopped here while the query waited
                            // for it (leadership moved): asked again, of
                            // the new leader.
                            if reply.is_ok()
                                || self.runs_here(&meta, name, status.term)
                                || Instant::now() >= deadline
                            {
                                return reply;
                            }
                        }
                    }
                    // Retried by the node that forwarded the query, or by
                    // the client (ClusterUnavailable is retryable).
                    Err(e) => return Err(e),
                }
            } else if let Some(node) =
                status.leader.filter(|_| !leading).and_then(|l| meta.nodes.get(&l))
            {
                match self.forward(&node.addr, command.clone()).await {
                    Err(e)
                        if e.to_info().code == ErrorCode::ClusterUnavailable
                            && Instant::now() < deadline => {}
                    other => return other,
                }
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "view {name:?} is not running on its range's leader yet; retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Brings this node's replica of every chunk of replicated range
    /// `range` (but `done`, whose read index it has) up to the read index
    /// of the chunk's group: asked of each chunk's leader, all at once, then
    /// waited for here. A chunk that split meanwhile is caught up with its
    /// upper half (the split is in the chunk's log, so applying up to the
    /// read index makes the upper half known here).
    ///
    /// Errors: `ClusterUnavailable` when a chunk has no leader, its leader
    /// did not answer, or this node has no replica of it yet (a split's
    /// upper half whose group has not started); the caller retries until
    /// `deadline`.
    pub(crate) async fn catch_up_chunks(
        self: &Arc<Self>,
        cluster: &Arc<Cluster>,
        range: &str,
        done: u64,
        deadline: Instant,
    ) -> NodeResult<()> {
        let caught = std::collections::HashSet::from([done]);
        self.catch_up_groups(cluster, || self.chunk_groups(cluster, range), caught, deadline).await
    }

    /// The Raft groups of replicated range `range`'s chunks: those the meta
    /// range records and those this node's replica has (it may know a split
    /// the meta range does not record yet, or the other way round).
    fn chunk_groups(&self, cluster: &Cluster, range: &str) -> Vec<u64> {
        let mut groups: Vec<u64> = cluster
            .with_meta(|m| m.ranges.get(range).map(|r| r.chunks.iter().map(|c| c.id).collect()))
            .flatten()
            .unwrap_or_default();
        let local: Vec<u64> = self
            .router_read()
            .range(range)
            .map(|r| r.chunks.values().map(|c| c.id).collect())
            .unwrap_or_default();
        for chunk in local {
            if let Some(g) = self.replicated.group_of(chunk) {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        groups
    }

    /// `ViewDefinitions`: this node's own views and sinks, and those of
    /// replicated ranges as the meta range records them.
    fn all_view_definitions(&self, cluster: &Cluster) -> NodeResult<Reply> {
        let mut all = self.view_definitions()?;
        if let Some(meta) = cluster.meta() {
            let views = meta.views.iter().map(|(name, v)| match v {
                MetaView::Mapper { source, target, function } => ViewDefinition::Mapper {
                    name: name.clone(),
                    source: source.clone(),
                    target: target.clone(),
                    function: function.clone(),
                },
                MetaView::Reducer { range, function } => ViewDefinition::Reducer {
                    name: name.clone(),
                    range: range.clone(),
                    function: function.clone(),
                },
            });
            let sinks = meta.sinks.iter().map(|(name, s)| ViewDefinition::Sink {
                name: name.clone(),
                source: SinkSource::Range(s.source.clone()),
                url: s.url.clone(),
                prefix: s.prefix.clone().into(),
            });
            for d in views.chain(sinks) {
                // The meta range's record wins over a leader's local copy.
                all.retain(|local| local.name() != d.name());
                all.push(d);
            }
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Reply::ViewDefinitions(all))
    }

    /// `ListViews`: this node's views, and the status of every view on a
    /// replicated range from the node running it (a view whose node does
    /// not answer is shown with the reason).
    async fn all_view_statuses(self: &Arc<Self>, cluster: &Arc<Cluster>) -> Vec<ViewStatus> {
        let mut out = self.view_statuses().await;
        let Some(meta) = cluster.meta() else { return out };
        // Views and sinks of replicated ranges (a sink runs like a view).
        let missing: Vec<String> = (meta.views.keys().chain(meta.sinks.keys()))
            .filter(|n| !out.iter().any(|v| &v.name == *n))
            .cloned()
            .collect();
        let mut asked: HashMap<String, Vec<ViewStatus>> = HashMap::new();
        for name in missing {
            let leader = (meta.view_group(&name).or_else(|| meta.sink_group(&name)))
                .and_then(|g| cluster.group(g))
                .and_then(|g| g.status().leader)
                .or_else(|| {
                    // Not a replica here: ask the replicas.
                    let input = match meta.views.get(&name) {
                        Some(v) => v.input(),
                        None => &meta.sinks.get(&name)?.source,
                    };
                    meta.ranges.get(input)?.replicas.first().copied()
                });
            let addr = leader.and_then(|l| meta.nodes.get(&l)).map(|n| n.addr.clone());
            let mut found = None;
            if let Some(addr) = addr {
                if !asked.contains_key(&addr) {
                    let reply = self.forward(&addr, Command::ListViewsHere).await;
                    let views = match reply {
                        Ok(Reply::Views(v)) => v,
                        _ => Vec::new(),
                    };
                    asked.insert(addr.clone(), views);
                }
                found = asked[&addr].iter().find(|v| v.name == name).cloned();
            }
            out.push(found.unwrap_or_else(|| placeholder(&meta, &name)));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Whether this node's meta replica says `f`, after catching up with the
/// meta leader when it does not at first (on a cluster of several nodes): a
/// range made through another node a moment ago is then seen here, so a
/// view on it is not taken for a view of a range of this node's own.
/// Postmortem: `reducer create` on a mapper's target, through another node
/// right after `mapper create`, failed with RangeNotFound.
async fn known_caught_up(cluster: &Cluster, f: &dyn Fn(&MetaState) -> bool) -> bool {
    if cluster.with_meta(f).unwrap_or(false) {
        return true;
    }
    let several = cluster.with_meta(|m| m.live_members().nth(1).is_some());
    several == Some(true) && cluster.catch_up_meta().await && cluster.with_meta(f).unwrap_or(false)
}

/// The replicated range whose chunks carry view `name`'s input: the input
/// itself, or for a mapper's target the source whose first chunk's log its
/// rows ride on.
pub fn carrying_range(meta: &MetaState, name: &str) -> Option<String> {
    let input = meta.views.get(name)?.input();
    let range = meta.ranges.get(input)?;
    match range.rides_on {
        None => Some(input.to_owned()),
        Some(g) => meta
            .ranges
            .iter()
            .find(|(_, r)| r.rides_on.is_none() && r.chunks.iter().any(|c| c.id == g))
            .map(|(n, _)| n.clone()),
    }
}

/// The status of a view whose node could not be asked.
fn placeholder(meta: &MetaState, name: &str) -> ViewStatus {
    let view = meta.views.get(name);
    let (kind, source, target, function) = match view {
        Some(MetaView::Mapper { source, target, function }) => {
            ("mapper", source.clone(), target.clone(), format!("{function:?}"))
        }
        Some(MetaView::Reducer { range, function }) => {
            ("reducer", range.clone(), String::new(), format!("{function:?}"))
        }
        None => match meta.sinks.get(name) {
            Some(sink) => ("sink", sink.source.clone(), String::new(), "sink".to_owned()),
            None => ("", String::new(), String::new(), String::new()),
        },
    };
    ViewStatus {
        name: name.to_owned(),
        kind: kind.into(),
        source,
        target,
        function,
        watermark: 0,
        pending_changes: 0,
        rows_written: 0,
        errors: 0,
        last_error: Some("starting on its range's leader (or the leader is unreachable)".into()),
        last_error_key: None,
        backfill: Some((0, 0)),
        tree: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta::MetaChunk;

    fn range(id: u64, chunks: &[u64], rides_on: Option<u64>) -> MetaRange {
        MetaRange {
            id,
            options: Default::default(),
            replicas: vec![1, 2, 3],
            chunks: chunks
                .iter()
                .map(|&c| MetaChunk { id: c, start: Vec::new(), end: None, generation: 1 })
                .collect(),
            seed: Vec::new(),
            rides_on,
            wanted: 0,
            departed: Vec::new(),
        }
    }

    /// A fresh aggregate catches up the chunks of the range carrying the
    /// view's input: the source itself, or for a reducer on a mapper's
    /// target, the source whose first chunk the target rides on (whatever
    /// chunk of it that is after splits).
    #[test]
    fn the_carrying_range_of_a_view_is_its_input_or_the_source_its_target_rides_on() {
        let mut meta = MetaState::default();
        meta.ranges.insert("r".into(), range(10, &[11, 20, 21], None));
        meta.ranges.insert("other".into(), range(30, &[31], None));
        meta.ranges.insert("idx".into(), range(12, &[13], Some(11)));
        let count = monotable_proto::ReduceFunction::Builtin("count".into());
        let map = monotable_proto::MapFunction::Field { key_path: "a".into(), value_path: None };
        meta.views.insert(
            "m".into(),
            MetaView::Mapper { source: "r".into(), target: "idx".into(), function: map },
        );
        meta.views
            .insert("n".into(), MetaView::Reducer { range: "r".into(), function: count.clone() });
        meta.views.insert(
            "total".into(),
            MetaView::Reducer { range: "idx".into(), function: count.clone() },
        );
        meta.views.insert("gone".into(), MetaView::Reducer { range: "x".into(), function: count });
        assert_eq!(carrying_range(&meta, "m").as_deref(), Some("r"));
        assert_eq!(carrying_range(&meta, "n").as_deref(), Some("r"));
        assert_eq!(carrying_range(&meta, "total").as_deref(), Some("r"));
        assert_eq!(carrying_range(&meta, "gone"), None, "an input the meta range lost");
        assert_eq!(carrying_range(&meta, "nope"), None);
        // Every view of the range runs on its first chunk's group.
        for v in ["m", "n", "total"] {
            assert_eq!(meta.view_group(v), Some(11), "{v}");
        }
    }
}
