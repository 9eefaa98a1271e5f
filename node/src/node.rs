//! The node: its catalog, chunk actors and router, and the execution of
//! every native-protocol command against them.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use actix::{Actor, Arbiter, ArbiterHandle};
use monotable_proto::limits::{RANGE_NAME_LEN_MAX, SCAN_LIMIT_MAX};
use monotable_proto::{ErrorCode, WriteOp};
use tokio::sync::oneshot;

use crate::catalog::Catalog;
use crate::chunk_actor::{ChunkActor, ChunkMsg, ReplyTo};
use crate::chunk_cell::{CellState, ChunkCell};
use crate::chunk_host::ChunkHost;
use crate::config::NodeConfig;
use crate::error::{NodeError, NodeResult};
use crate::router::{ChunkRoute, RangeRoute, Route, Router};
use crate::storage::chunk::{Chunk, ChunkMeta, ReadAt};
use crate::storage::clock::SeqClock;
use crate::storage::descriptor::ChunkDescriptor;

/// Passes of shutdown over the chunks: each shuts down the halves of the
/// splits that finished during the one before.
const SHUTDOWN_PASSES_MAX: usize = 8;

/// How often a request is routed again after its chunk moved (split or
/// dropped) before the node gives up with `Busy`.
const ROUTE_ATTEMPTS_MAX: u32 = 100;

pub struct Node {
    pub config: NodeConfig,
    /// Batches that span chunks, recorded whole before their parts are
    /// applied (see [`crate::storage::intents`]). A std mutex: held to
    /// append and sync one record.
    pub(crate) intents: Mutex<crate::storage::intents::IntentLog>,
    /// The intents found at start, completed by [`Node::complete_intents`]
    /// before the node serves.
    pub(crate) intents_found: Mutex<Vec<crate::storage::intents::Intent>>,
    /// The password check both protocol servers share, with its throttle.
    pub auth: crate::auth::Auth,
    pub clock: SeqClock,
    /// Compactions, splits and merges since the start.
    pub maintenance: crate::chunk_host::MaintenanceCounts,
    pub catalog: Catalog,
    /// A std lock: held only to look up or swap routes, never across an
    /// await, so readers never wait on I/O.
    router: RwLock<Router>,
    /// Handles of the arbiters that run connections (the first third),
    /// chunk actors (the second) and view actors (the last). Kept apart so
    /// that a busy chunk's thread does no protocol work, and a slow view
    /// function (Lua may run up to its instruction limit) never delays a
    /// chunk's writes.
    workers: Vec<ArbiterHandle>,
    /// The arbiters themselves, kept to stop and join them at shutdown.
    arbiters: Mutex<Vec<Arbiter>>,
    next_worker: AtomicUsize,
    next_chunk_worker: AtomicUsize,
    /// Round-robin position of view actors on their third of the workers.
    next_view_worker: AtomicUsize,
    chunks_dir: PathBuf,
    shutting_down: AtomicBool,
    /// Registered views. A std lock: read on every committed write group,
    /// written only when views come, go or advance; never held across an
    /// await.
    views: RwLock<crate::view::registry::ViewRegistry>,
    /// Woken whenever a view's checkpoint advances, for fresh queries.
    pub(crate) views_advanced: tokio::sync::Notify,
    /// Held while a range is created (a std lock: creation is synchronous).
    pub(crate) creating_range: Mutex<()>,
    /// Held while a mapper is created or dropped, from its checks (a target
    /// of its own, no cycle) to its registration: a tokio lock, held across
    /// the awaits in between. Creation is rare; two at once are serialized.
    pub(crate) changing_mappers: tokio::sync::Mutex<()>,
    /// One bulk backfill at a time ([`crate::view::bulk_backfill`]): each
    /// takes up to `backfill_memory_max_bytes`, and two cannot go faster
    /// than one on the cores they share.
    pub(crate) bulk_backfill_turn: tokio::sync::Semaphore,
    /// The group commit every chunk shares.
    pub syncer: Arc<crate::group_commit::Syncer>,
    /// This node, for work started from a `&Node` (a split's halves).
    me: std::sync::Weak<Node>,
    /// This node's part of the cluster, set by the server once it listens.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// The replicated chunks this node holds ([`crate::replicated`]).
    pub(crate) replicated: crate::replicated::Replicas,
    /// The views on replicated ranges this node runs.
    pub(crate) replicated_views: crate::replicated_views::ViewsHere,
    /// Sinks of replicated ranges this node runs (as their leader).
    pub(crate) replicated_sinks: crate::bridge::cluster_sinks::SinksHere,
    /// Batch jobs running here, and the last that ended.
    pub(crate) jobs: crate::job::Jobs,
}

/// What a connection owns on the node: its pinned snapshots, released when
/// the connection ends.
#[derive(Default)]
pub struct Session {
    /// A std mutex: tasks of one connection touch it briefly, never across
    /// an await.
    pub(crate) pins: Mutex<Vec<u64>>,
    node: Option<Arc<Node>>,
}

impl Session {
    pub fn new(node: Arc<Node>) -> Self {
        Session { pins: Mutex::new(Vec::new()), node: Some(node) }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            let pins = self.pins.get_mut().unwrap_or_else(|p| p.into_inner());
            for seq in pins.drain(..) {
                node.clock.unpin(seq);
            }
        }
    }
}

pub(crate) fn call<T>(
    addr: &actix::Addr<ChunkActor>,
    make: impl FnOnce(ReplyTo<T>) -> ChunkMsg,
) -> oneshot::Receiver<NodeResult<T>> {
    let (tx, rx) = oneshot::channel();
    addr.do_send(make(tx));
    rx
}

/// A dropped reply means the actor stopped (split or dropped): route again.
pub(crate) async fn answer<T>(rx: oneshot::Receiver<NodeResult<T>>) -> NodeResult<T> {
    rx.await.unwrap_or(Err(NodeError::Moved))
}

/// Waits before routing a request again; gives up when the chunk keeps
/// moving, or at once when the node is shutting down (its chunks stopped).
/// Longest a snapshot waits for older writes to become durable.
const SETTLE_WAIT_MAX_MS: u64 = 10_000;

pub(crate) async fn backoff(node: &Node, attempt: u32) -> NodeResult<()> {
    if node.is_shutting_down() {
        return Err(NodeError::ShuttingDown);
    }
    if attempt >= ROUTE_ATTEMPTS_MAX {
        return Err(NodeError::client(ErrorCode::Busy, "chunk kept moving; retry later"));
    }
    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
    Ok(())
}

/// Checks the name of a range: 1 to [`RANGE_NAME_LEN_MAX`] characters
/// from `A-Z a-z 0-9 _ - . :`.
///
/// Errors: `InvalidRangeName`, saying "invalid range name".
pub fn validate_range_name(name: &str) -> NodeResult<()> {
    validate_name("range", name)
}

/// Checks the name of a `what` (`"range"`, `"view"`, `"sink"`: one rule
/// for all three) as [`validate_range_name`] does.
///
/// Errors: `InvalidRangeName`, saying "invalid WHAT name".
pub fn validate_name(what: &str, name: &str) -> NodeResult<()> {
    let ok = !name.is_empty()
        && name.len() <= RANGE_NAME_LEN_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NodeError::client(
            ErrorCode::InvalidRangeName,
            format!(
                "invalid {what} name {name:?}: use 1 to {RANGE_NAME_LEN_MAX} characters from A-Z a-z 0-9 _ - . :"
            ),
        ))
    }
}

/// Checks a key against the key limit ([`monotable_proto::limits::check_key_size`]).
pub(crate) fn check_key(key: &[u8]) -> NodeResult<()> {
    monotable_proto::limits::check_key_size(key).map_err(NodeError::from)
}

/// Checks a row against the key and value limits ([`WriteOp::check_size`]),
/// the same check each chunk makes before logging it: a write path calls it
/// for every row before sending any, so a batch over the limits is refused
/// whole rather than applied on the chunks that happen to come first.
pub(crate) fn check_op(op: &WriteOp) -> NodeResult<()> {
    op.check_size().map_err(NodeError::from)
}

impl Node {
    /// Opens the data directory and starts one actor per chunk. Must run
    /// inside an actix `System`.
    pub fn start(config: NodeConfig) -> NodeResult<Arc<Node>> {
        let chunks_dir = config.data_dir.join("chunks");
        fs::create_dir_all(&chunks_dir).map_err(|e| {
            NodeError::Internal(format!("cannot create {}: {e}", chunks_dir.display()))
        })?;
        // Before any mapper starts: runs of a bulk backfill stopped by a
        // crash (the backfill begins again).
        crate::view::bulk_backfill::remove_leftovers(&config.data_dir);
        crate::startup::refuse_old_format(&config.data_dir, &chunks_dir)
            .map_err(NodeError::Start)?;
        if config.recover_catalog {
            let report = crate::startup::recover_catalog(&config.data_dir)
                .map_err(|e| NodeError::Start(format!("--recover-catalog failed: {e}")))?;
            for line in report {
                tracing::warn!("catalog recovery: {line}");
            }
        }
        let catalog_dir = config.data_dir.join("catalog");
        let unreadable = |e: crate::catalog::CatalogError| {
            NodeError::Start(format!(
                "the catalog at {} cannot be read ({e}); no chunk directory was touched. \
                 To rebuild the catalog from the chunk directories, run \
                 `monotable serve --data-dir {} --recover-catalog`",
                catalog_dir.display(),
                config.data_dir.display()
            ))
        };
        let catalog = Catalog::open(&catalog_dir).map_err(|e| match e {
            e @ crate::catalog::CatalogError::Locked(_) => NodeError::Start(e.to_string()),
            e => unreadable(e),
        })?;
        let ranges = catalog.ranges().map_err(unreadable)?;
        let metas = catalog.chunks().map_err(unreadable)?;
        let mappers = catalog.mappers().map_err(unreadable)?;
        let catalog_reducers = catalog.reducers().map_err(unreadable)?;
        let (mappers, catalog_reducers) =
            crate::replicated_views::purge_replicated_views(&catalog, mappers, catalog_reducers);
        let sinks = crate::bridge::cluster_sinks::purge_replicated_sinks(
            &catalog,
            catalog.sinks().map_err(unreadable)?,
        );
        let found = crate::startup::scan_chunk_dirs(&chunks_dir)
            .map_err(|e| NodeError::Start(format!("cannot read {}: {e}", chunks_dir.display())))?;
        let renaming = catalog.renaming().map_err(unreadable)?;
        let plan =
            crate::startup::plan_start(&ranges, &metas, &found, &renaming).map_err(|problems| {
                NodeError::Start(format!(
                    "the catalog at {} disagrees with the chunk directories in {}: {}. \
                 No chunk directory was touched. If the catalog is damaged, rebuild it from \
                 the chunk directories with `monotable serve --data-dir {} --recover-catalog`",
                    catalog_dir.display(),
                    chunks_dir.display(),
                    problems.join("; "),
                    config.data_dir.display()
                ))
            })?;
        crate::startup::apply_start_plan(&config.data_dir, &plan)
            .map_err(|e| NodeError::Start(format!("cannot tidy {}: {e}", chunks_dir.display())))?;
        if !renaming.is_empty() {
            catalog.renamed().map_err(unreadable)?;
        }

        let options_of = |range_id: u64| {
            ranges.iter().find(|r| r.id == range_id).map(|r| r.options).unwrap_or_default()
        };
        let mut opened = open_chunks(&config, &chunks_dir, plan.open);
        opened.extend(plan.missing.into_iter().map(|(meta, reason)| {
            let reason =
                format!("{reason}: {}", chunks_dir.join(format!("{:016x}", meta.id)).display());
            (meta, Err(reason))
        }));
        let last_seq = opened
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(Chunk::last_seq))
            .max()
            .unwrap_or(0);
        // Seqs the catalog recorded (views' checkpoints) were issued before
        // the stop: the clock resumes above them even when the chunk that
        // held the newest entries cannot be opened, so a restored view's
        // pin is stable and no new write reuses a seq a view has seen.
        let last_seq = mappers
            .iter()
            .flat_map(|m| [m.checkpoint, m.cut])
            .chain(sinks.iter().flat_map(|s| [Some(s.checkpoint), s.round_upto]).flatten())
            .chain(catalog_reducers.iter().filter_map(|r| r.checkpoint))
            .fold(last_seq, u64::max);

        let intents_path = config.data_dir.join("intents.log");
        let (intents, intents_found) = crate::storage::intents::IntentLog::open(&intents_path)
            .map_err(|e| NodeError::Start(e.to_string()))?;
        let last_seq = intents_found.iter().map(|i| i.seq).fold(last_seq, u64::max);
        let syncer =
            crate::group_commit::Syncer::new(&config.data_dir, config.fsync, config.sync_method)
                .map_err(|e| NodeError::Start(format!("group commit: {e}")))?;
        let threads = config.workers.max(1) * 3;
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let workers = arbiters.iter().map(Arbiter::handle).collect();
        let node = Arc::new_cyclic(|me| Node {
            me: me.clone(),
            intents: Mutex::new(intents),
            intents_found: Mutex::new(intents_found),
            auth: crate::auth::Auth::new(config.password.clone()),
            maintenance: Default::default(),
            config,
            clock: SeqClock::new(last_seq),
            catalog,
            router: RwLock::new(Router::default()),
            workers,
            arbiters: Mutex::new(arbiters),
            next_worker: AtomicUsize::new(0),
            next_chunk_worker: AtomicUsize::new(0),
            next_view_worker: AtomicUsize::new(0),
            chunks_dir,
            shutting_down: AtomicBool::new(false),
            views: RwLock::new(Default::default()),
            views_advanced: tokio::sync::Notify::new(),
            creating_range: Mutex::new(()),
            changing_mappers: tokio::sync::Mutex::new(()),
            bulk_backfill_turn: tokio::sync::Semaphore::new(1),
            replicated: Default::default(),
            syncer: Arc::new(syncer),
            cluster: std::sync::OnceLock::new(),
            replicated_views: Default::default(),
            jobs: Default::default(),
            replicated_sinks: Default::default(),
        });
        tracing::info!(fsync = ?node.config.fsync, sync_method = ?node.syncer.method(), "group commit");
        let host: Arc<dyn ChunkHost> = node.clone();
        node.syncer
            .start(Arc::downgrade(&host))
            .map_err(|e| NodeError::Start(format!("cannot start the group commit: {e}")))?;
        {
            let mut router = node.router_write();
            for range in &ranges {
                router.insert_range(range.clone());
            }
        }
        // Views' checkpoints are pinned before any chunk can compact, so the
        // old values they still need survive the restart.
        for m in &mappers {
            node.clock.pin(m.checkpoint);
            if let Some(upto) = m.round_upto {
                node.clock.pin(upto);
            }
            node.clock.pin(m.cut);
        }
        for s in &sinks {
            node.clock.pin(s.checkpoint);
            if let Some(upto) = s.round_upto {
                node.clock.pin(upto);
            }
        }
        // A reducer's saved checkpoint is its journal's floor (pinned here
        // and held as `saved`); a reducer without one builds from a fresh
        // snapshot, taken after this, so its range journals from the end of
        // the log.
        for r in &catalog_reducers {
            if let Some(saved) = r.checkpoint {
                node.clock.pin(saved);
            }
        }
        let floor = |range_id: u64| {
            let mapper =
                mappers.iter().filter(|m| m.source_id == range_id).map(|m| m.checkpoint).min();
            let reducer = catalog_reducers
                .iter()
                .filter(|r| r.range_id == range_id)
                .map(|r| r.checkpoint.unwrap_or(last_seq))
                .min();
            let sink = sinks.iter().filter(|s| s.source_id == range_id).map(|s| s.checkpoint).min();
            mapper.into_iter().chain(reducer).chain(sink).min()
        };
        for (meta, result) in opened {
            let range_id = meta.range_id;
            let route = match result {
                Ok(mut chunk) => {
                    if let Some(after) = floor(range_id) {
                        chunk.watch_changes(after);
                    }
                    node.spawn_chunk(chunk, options_of(range_id).chunk_size_max_bytes)
                }
                Err(reason) => {
                    tracing::error!(chunk = meta.id, %reason, "chunk is unavailable");
                    node.spawn_cell(meta, CellState::Unavailable(reason), 0)
                }
            };
            node.router_write().insert_chunk(range_id, route);
        }
        for m in mappers {
            let name = m.name.clone();
            if let Err(e) = node.start_mapper(m) {
                tracing::error!(mapper = %name, error = %e, "mapper did not start");
            }
        }
        for s in sinks {
            let name = s.name.clone();
            if let Err(e) = node.start_sink(s) {
                tracing::error!(sink = %name, error = %e, "sink did not start");
            }
        }
        // Reducers are registered before serving starts (their chunks
        // already journal from their floor) and restore or build their trees
        // in the background; until then, fresh queries wait and others
        // answer "view lagging".
        for r in catalog_reducers {
            let name = r.name.clone();
            match node.register_reducer(r) {
                Ok(addr) => addr.do_send(crate::view::mapper::Dirty),
                Err(e) => tracing::error!(reducer = %name, error = %e, "reducer did not start"),
            }
        }
        Ok(node)
    }

    pub fn chunk_dir(&self, id: u64) -> PathBuf {
        self.chunks_dir.join(format!("{id:016x}"))
    }

    /// The worker to place the next connection on, round robin.
    pub fn next_worker(&self) -> ArbiterHandle {
        let third = self.workers.len() / 3;
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % third;
        self.workers[i].clone()
    }

    /// The worker to place the next chunk actor on, round robin.
    pub(crate) fn next_chunk_worker(&self) -> ArbiterHandle {
        let third = self.workers.len() / 3;
        let i = self.next_chunk_worker.fetch_add(1, Ordering::Relaxed) % third;
        self.workers[third + i].clone()
    }

    /// The worker to place the next view actor on, round robin.
    pub(crate) fn next_view_worker(&self) -> ArbiterHandle {
        let third = self.workers.len() / 3;
        let i = self.next_view_worker.fetch_add(1, Ordering::Relaxed) % third;
        self.workers[2 * third + i].clone()
    }

    pub fn router_read(&self) -> RwLockReadGuard<'_, Router> {
        // Router updates are single map operations; a panic cannot leave
        // one half-done, so a poisoned lock is still consistent.
        self.router.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn views_read(&self) -> RwLockReadGuard<'_, crate::view::registry::ViewRegistry> {
        // Registry edits are single map operations: a poisoned lock is
        // still consistent.
        self.views.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn views_write(&self) -> RwLockWriteGuard<'_, crate::view::registry::ViewRegistry> {
        self.views.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn router_write(&self) -> RwLockWriteGuard<'_, Router> {
        self.router.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the actor of an open chunk on a worker.
    pub fn spawn_chunk(self: &Arc<Self>, chunk: Chunk, chunk_size_max_bytes: u64) -> Route {
        let meta = chunk.meta.clone();
        self.spawn_cell(meta, CellState::Open(chunk), chunk_size_max_bytes)
    }

    pub(crate) fn spawn_cell(
        self: &Arc<Self>,
        meta: ChunkMeta,
        state: CellState,
        chunk_size_max_bytes: u64,
    ) -> Route {
        let cell = Arc::new(ChunkCell::new(meta.id, state, chunk_size_max_bytes));
        if crate::replicated::is_replicated(meta.range_id) {
            cell.forbid_splits();
            cell.mark_raft_durable();
        }
        let host: Arc<dyn ChunkHost> = self.clone();
        let actor_cell = cell.clone();
        let actor_meta = meta.clone();
        let addr = ChunkActor::start_in_arbiter(&self.next_chunk_worker(), move |_| {
            ChunkActor::new(host, actor_meta, actor_cell)
        });
        Arc::new(ChunkRoute { id: meta.id, start: meta.start, end: meta.end, addr, cell })
    }

    pub(crate) fn self_arc(&self) -> Option<Arc<Node>> {
        self.me.upgrade()
    }

    /// Attaches this node's part of the cluster (once).
    pub fn set_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// This node's part of the cluster.
    pub fn cluster(&self) -> NodeResult<&Arc<crate::cluster::Cluster>> {
        self.cluster.get().ok_or_else(|| {
            NodeError::client(
                monotable_proto::ErrorCode::ClusterUnavailable,
                "this node has not started its cluster layer",
            )
        })
    }

    /// This node's id and what it holds (`Command::NodeInfo`): its chunk
    /// replicas, and those it leads (a chunk of an ordinary range is led by
    /// the node that holds it; a replicated chunk by its Raft leader).
    pub fn node_info(&self) -> monotable_proto::NodeInfo {
        let (mut chunks, mut own) = (0u64, 0u64);
        for r in self.router_read().ranges() {
            chunks += r.chunks.len() as u64;
            if !crate::replicated::is_replicated(r.meta.id) {
                own += r.chunks.len() as u64;
            }
        }
        let cluster = self.cluster.get();
        let id = cluster.and_then(|c| c.node_id()).unwrap_or(0);
        let led = cluster.map_or(0, |c| {
            c.groups().iter().filter(|g| g.status().leader == Some(id)).count() as u64
        });
        monotable_proto::NodeInfo {
            id,
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            chunk_replicas: chunks,
            chunk_leaders: own + led,
            meta_applied: cluster.and_then(|c| c.meta_applied()),
            copies: cluster.map(|c| c.copies_under_way()).unwrap_or_default(),
            replica_groups: cluster.map_or(0, |c| c.groups().len() as u64),
        }
    }

    /// Makes everything written so far durable now, whatever `--fsync`
    /// says (Redis's SAVE): the catalog is flushed and the data
    /// directory's file system synced (`syncfs`; where the kernel would
    /// not report its errors, every file of the data directory is
    /// fdatasynced instead). Blocks: call it off the async threads.
    ///
    /// Errors: the sync's, as an I/O error; the data stays as it was.
    pub fn sync_all(&self) -> std::io::Result<()> {
        self.catalog.flush().map_err(|e| std::io::Error::other(e.to_string()))?;
        if crate::group_commit::syncfs_reports_errors() {
            return self.syncer.syncfs();
        }
        fn walk(dir: &std::path::Path) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path())?;
                } else if kind.is_file() {
                    std::fs::File::open(entry.path())?.sync_data()?;
                }
            }
            std::fs::File::open(dir)?.sync_all()
        }
        walk(&self.config.data_dir)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// New requests are refused with `ShuttingDown` from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.interrupt_lua();
    }

    /// Stops accepting requests, makes every chunk durable and stops the
    /// workers. In-flight requests should have drained before this.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        // A chunk may split while the others shut down: its halves are
        // routed after the first pass, and shut down in the next.
        for _ in 0..SHUTDOWN_PASSES_MAX {
            let addrs: Vec<_> = self
                .router_read()
                .ranges()
                .flat_map(|r| r.chunks.values())
                .filter(|c| matches!(&*c.cell.read(), CellState::Open(_)))
                .map(|c| c.addr.clone())
                .collect();
            if addrs.is_empty() {
                break;
            }
            let replies: Vec<_> =
                addrs.iter().map(|a| call(a, |reply| ChunkMsg::Shutdown { reply })).collect();
            for rx in replies {
                match answer(rx).await {
                    // Split meanwhile: its halves come in the next pass.
                    Ok(()) | Err(NodeError::Moved) => {}
                    Err(e) => tracing::error!(error = %e, "chunk did not shut down cleanly"),
                }
            }
        }
        self.syncer.stop();
        if let Err(e) = self.catalog.flush() {
            tracing::error!(error = %e, "catalog flush failed at shutdown");
        }
        let arbiters =
            std::mem::take(&mut *self.arbiters.lock().unwrap_or_else(|p| p.into_inner()));
        for arbiter in arbiters {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }

    /// Waits until the stable seq covers every write acknowledged before
    /// the call (an older batch on another chunk may still be syncing).
    /// Every seq handed out so far, not only those settled: a replicated
    /// write is acknowledged once its Raft entry is durable and applied,
    /// before its chunk's own log settles its seq.
    ///
    /// Postmortem: a snapshot taken right after an acknowledged write to a
    /// replicated range did not show it (199 times in 200 through the
    /// leader): its seq was not settled yet, so not counted.
    pub(crate) async fn wait_settled(&self) -> NodeResult<()> {
        let target = self.clock.last_allocated();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_WAIT_MAX_MS);
        while self.clock.stable() < target {
            if self.is_shutting_down() {
                return Err(NodeError::ShuttingDown);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::client(
                    ErrorCode::Busy,
                    "a write on another chunk is taking too long to become durable; retry",
                ));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(())
    }

    pub(crate) fn range_route<T>(
        &self,
        name: &str,
        f: impl FnOnce(&RangeRoute) -> T,
    ) -> NodeResult<T> {
        let router = self.router_read();
        let route = router.range(name).ok_or_else(|| {
            NodeError::client(ErrorCode::RangeNotFound, format!("range {name:?} does not exist"))
        })?;
        Ok(f(route))
    }

    pub(crate) fn route_key(&self, range: &str, key: &[u8]) -> NodeResult<Route> {
        self.range_route(range, |r| r.chunk_for(key).cloned())?
            .ok_or_else(|| NodeError::Internal(format!("range {range:?} has no chunk for a key")))
    }

    pub(crate) fn read_at(&self, snapshot: Option<u64>) -> NodeResult<ReadAt> {
        match snapshot {
            None => Ok(ReadAt::Latest),
            Some(seq) => {
                if seq > self.clock.stable() {
                    return Err(NodeError::client(
                        ErrorCode::BadRequest,
                        format!(
                            "snapshot {seq} is in the future; take snapshots with CreateSnapshot"
                        ),
                    ));
                }
                Ok(ReadAt::Snapshot { seq, pinned: self.clock.is_pinned(seq) })
            }
        }
    }
}

pub(crate) fn scan_limit(requested: u32) -> usize {
    if requested == 0 {
        SCAN_LIMIT_MAX as usize
    } else {
        requested.min(SCAN_LIMIT_MAX) as usize
    }
}

/// Opens every chunk, in parallel; a chunk that fails to open is reported
/// with its reason and does not stop the others.
fn open_chunks(
    config: &NodeConfig,
    chunks_dir: &std::path::Path,
    descriptors: Vec<ChunkDescriptor>,
) -> Vec<(ChunkMeta, Result<Chunk, String>)> {
    let threads = config.workers.max(1);
    let queue = Mutex::new(descriptors);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some(descriptor) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop() else {
                    break;
                };
                let meta = descriptor.chunk.clone();
                let dir = chunks_dir.join(format!("{:016x}", meta.id));
                let segment = config.segment_size_for(descriptor.options.chunk_size_max_bytes);
                let result = match Chunk::open(&descriptor, &dir, segment) {
                    Ok((chunk, recovery)) => {
                        if recovery.manifest_created {
                            tracing::info!(
                                chunk = meta.id,
                                "wrote the chunk's descriptor and manifest"
                            );
                        }
                        if recovery.superseded_segments > 0 {
                            tracing::info!(
                                chunk = meta.id,
                                segments = recovery.superseded_segments,
                                "removed segments a finished compaction superseded"
                            );
                        }
                        if recovery.truncated_bytes > 0 {
                            tracing::warn!(
                                chunk = meta.id,
                                bytes = recovery.truncated_bytes,
                                "truncated a torn write at the end of the chunk log"
                            );
                        }
                        Ok(chunk)
                    }
                    Err(e) => Err(e.to_string()),
                };
                results.lock().unwrap_or_else(|p| p.into_inner()).push((meta, result));
            });
        }
    });
    results.into_inner().unwrap_or_else(|p| p.into_inner())
}

impl ChunkHost for Node {
    fn clock(&self) -> &SeqClock {
        &self.clock
    }

    fn maintenance(&self) -> &crate::chunk_host::MaintenanceCounts {
        &self.maintenance
    }

    fn syncer(&self) -> &Arc<crate::group_commit::Syncer> {
        &self.syncer
    }

    fn notify_views(&self, range_id: u64) {
        Node::notify_views(self, range_id);
    }

    fn view_floor(&self, range_id: u64) -> Option<u64> {
        Node::view_floor(self, range_id)
    }

    fn next_chunk_id(&self) -> Result<u64, crate::catalog::CatalogError> {
        self.catalog.next_id()
    }

    fn chunk_dir(&self, id: u64) -> PathBuf {
        Node::chunk_dir(self, id)
    }

    fn segment_size_for(&self, chunk_size_max_bytes: u64) -> u64 {
        self.config.segment_size_for(chunk_size_max_bytes)
    }

    fn record_split(
        &self,
        parent: u64,
        lower: &ChunkMeta,
        upper: &ChunkMeta,
    ) -> Result<(), crate::catalog::CatalogError> {
        self.catalog.split_chunk(parent, lower, upper)
    }

    fn replica_closed(&self, chunk: u64) {
        if let Ok(cluster) = self.cluster() {
            cluster.stop_replica(chunk);
        }
    }

    fn start_halves(
        &self,
        parent: u64,
        lower: Chunk,
        upper: Chunk,
        chunk_size_max_bytes: u64,
    ) -> Option<(Arc<ChunkCell>, Arc<ChunkCell>)> {
        let node = self.self_arc()?;
        let range_id = lower.meta.range_id;
        // The router stays locked from the halves' start to their routes: a
        // half over the size limit splits as soon as its actor starts, and
        // its own routes must not be swapped in before it is routed to.
        let mut router = self.router_write();
        let lower = node.spawn_chunk(lower, chunk_size_max_bytes);
        let upper = node.spawn_chunk(upper, chunk_size_max_bytes);
        let cells = (lower.cell.clone(), upper.cell.clone());
        if !router.replace_chunk(range_id, parent, vec![lower, upper]) {
            tracing::error!(chunk = parent, "the router had no route to a chunk that split");
        }
        Some(cells)
    }

    fn chunk_starting_at(
        &self,
        range_id: u64,
        start: &[u8],
    ) -> Option<(ChunkMeta, Arc<ChunkCell>, actix::Addr<crate::chunk_actor::ChunkActor>)> {
        let router = self.router_read();
        let route = router.range_by_id(range_id)?.chunks.get(start)?;
        let meta = ChunkMeta {
            id: route.id,
            range_id,
            start: route.start.clone(),
            end: route.end.clone(),
        };
        Some((meta, route.cell.clone(), route.addr.clone()))
    }

    fn record_merge(
        &self,
        lower: u64,
        upper: u64,
        merged: &ChunkMeta,
    ) -> Result<(), crate::catalog::CatalogError> {
        self.catalog.merge_chunks(lower, upper, merged)
    }

    fn start_merged(
        &self,
        lower: u64,
        upper: u64,
        merged: Chunk,
        chunk_size_max_bytes: u64,
    ) -> Option<Arc<ChunkCell>> {
        let node = self.self_arc()?;
        let range_id = merged.meta.range_id;
        let mut router = self.router_write();
        let route = node.spawn_chunk(merged, chunk_size_max_bytes);
        let cell = route.cell.clone();
        if !router.replace_merge(range_id, lower, upper, route) {
            tracing::error!(lower, upper, "the router had no routes to chunks that merged");
        }
        Some(cell)
    }

    fn split_wanted(&self, chunk: &ChunkMeta, key: Vec<u8>) {
        if let Some(node) = self.self_arc() {
            node.split_wanted(chunk, key);
        }
    }
}
