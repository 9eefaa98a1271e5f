//! A new range built from rows that arrive in key order, written straight
//! into its chunks: no routing, no group commit, no splits. Each chunk is
//! cut once its rows pass three quarters of the range's chunk size, so the
//! range starts at the size splits would leave it. Nothing of it is
//! visible until [`SortedLoad::register`] names every chunk in the catalog
//! in one transaction; until then the chunk directories are marked as
//! being created (a start after a crash removes them), and dropping the
//! load removes them.
//!
//! Used for a batch job's output range ([`crate::job`]), and for a new
//! mapper's bulk backfill, whose chunks take the place of its target's one
//! empty chunk ([`SortedLoad::replace_empty`]).

use std::sync::Arc;

use monotable_proto::{ErrorCode, RangeOptions};

use crate::catalog::{CatalogError, RangeMeta};
use crate::chunk_actor::ChunkMsg;
use crate::chunk_cell::CellState;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::router::Route;
use crate::storage::chunk::{Chunk, ChunkMeta};
use crate::storage::descriptor::ChunkDescriptor;

/// Rows appended per log batch (each batch takes one seq).
const BATCH_ROWS: usize = 4096;

/// A log entry's bytes beyond its key and value, about (the cut between
/// chunks is estimated with it).
const ENTRY_OVERHEAD: usize = 32;

/// A range being built in key order (see the module doc). Its methods
/// other than [`SortedLoad::register`] do blocking I/O.
pub struct SortedLoad {
    node: Arc<Node>,
    range: RangeMeta,
    segment_size_max_bytes: u64,
    /// Chunks written, in key order; the last is still being written.
    /// The one `finishing` holds is missing from it.
    chunks: Vec<Chunk>,
    /// A full chunk building its index and syncing on its own thread
    /// while the next one is written, and its place in `chunks`.
    finishing: Option<(usize, Finishing)>,
    last_key: Option<Vec<u8>>,
    rows: u64,
}

type Finishing = std::thread::JoinHandle<(Chunk, NodeResult<()>)>;

/// Builds a full chunk's index and makes its log durable.
fn finish_chunk(mut chunk: Chunk) -> (Chunk, NodeResult<()>) {
    chunk.finish_load();
    let synced = chunk
        .take_sync_job()
        .map_err(NodeError::from)
        .and_then(|job| job.run().map_err(|e| NodeError::Internal(format!("sync: {e}"))));
    (chunk, synced)
}

impl SortedLoad {
    /// Starts building range `name`. Refused (`RangeExists`) when the name
    /// is taken; checked again when it is registered.
    pub fn begin(node: &Arc<Node>, name: &str, options: RangeOptions) -> NodeResult<SortedLoad> {
        crate::node::validate_range_name(name)?;
        if node.router_read().range(name).is_some() {
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("range {name:?} already exists"),
            ));
        }
        let range = RangeMeta {
            id: node.catalog.next_id()?,
            name: name.to_owned(),
            options,
            view_index: false,
        };
        Ok(SortedLoad::into_range(node, range))
    }

    /// Starts building chunks of existing range `range`, to take the place
    /// of its one empty chunk ([`SortedLoad::replace_empty`]).
    pub fn into_range(node: &Arc<Node>, range: RangeMeta) -> SortedLoad {
        let segment_size_max_bytes =
            node.config.segment_size_for(range.options.chunk_size_max_bytes);
        SortedLoad {
            node: node.clone(),
            range,
            segment_size_max_bytes,
            chunks: Vec::new(),
            finishing: None,
            last_key: None,
            rows: 0,
        }
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn new_chunk(&mut self, start: Vec<u8>) -> NodeResult<()> {
        let meta = ChunkMeta {
            id: self.node.catalog.next_id()?,
            range_id: self.range.id,
            start,
            end: None,
        };
        let descriptor = ChunkDescriptor {
            range_name: self.range.name.clone(),
            options: self.range.options,
            chunk: meta,
        };
        let chunk = Chunk::create(
            &descriptor,
            &self.node.chunk_dir(descriptor.chunk.id),
            self.segment_size_max_bytes,
        )?;
        self.chunks.push(chunk);
        Ok(())
    }

    /// Appends `rows`, whose keys must increase strictly (also from the
    /// rows of earlier calls). Errors: `BadRequest` for keys out of order
    /// or a row over the limits (nothing of `rows` is appended then);
    /// `ChunkUnavailable` when the disk fails.
    pub fn push(&mut self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> NodeResult<()> {
        let mut last = self.last_key.as_deref();
        for (k, v) in &rows {
            if last.is_some_and(|l| l >= &k[..]) {
                return Err(NodeError::client(
                    ErrorCode::BadRequest,
                    "a sorted load's keys must increase",
                ));
            }
            monotable_proto::limits::check_row_size(k, Some(v)).map_err(NodeError::from)?;
            last = Some(k);
        }
        let n = rows.len() as u64;
        self.last_key = rows.last().map(|(k, _)| k.clone()).or(self.last_key.take());
        let cut = self.range.options.chunk_size_max_bytes / 4 * 3;
        let mut at = 0;
        while at < rows.len() {
            match self.chunks.last() {
                None => self.new_chunk(Vec::new())?,
                Some(c) if c.loaded_bytes() >= cut => {
                    let start = rows[at].0.clone();
                    // One chunk finishes at a time, beside the writing.
                    self.join_finishing()?;
                    let mut full = self.chunks.pop().expect("a chunk");
                    if let Err(e) = full.set_end(start.clone()) {
                        self.chunks.push(full);
                        return Err(e.into());
                    }
                    let at = self.chunks.len();
                    let thread = std::thread::Builder::new()
                        .name("sorted-load".into())
                        .spawn(move || finish_chunk(full))
                        .map_err(|e| NodeError::Internal(format!("a load thread: {e}")))?;
                    self.finishing = Some((at, thread));
                    self.new_chunk(start)?;
                }
                Some(_) => {}
            }
            // Up to a batch, and no further than the cut.
            let room = cut.saturating_sub(self.chunks.last().map_or(0, Chunk::loaded_bytes));
            let mut end = at;
            let mut bytes = 0u64;
            while end < rows.len() && end - at < BATCH_ROWS && (end == at || bytes < room) {
                let (k, v) = &rows[end];
                bytes += (k.len() + v.len() + ENTRY_OVERHEAD) as u64;
                end += 1;
            }
            let seq = self.node.clock.allocate();
            let chunk = self.chunks.last_mut().expect("a chunk");
            let applied = chunk.load_batch(seq, &rows[at..end]).and_then(|()| chunk.write_out());
            // Nothing reads these chunks before they are registered, after
            // they are durable: the seq settles now either way.
            self.node.clock.resolve([seq]);
            applied?;
            at = end;
        }
        self.rows += n;
        Ok(())
    }

    /// Waits for the chunk finishing on its own thread and puts it back
    /// in its place; its error, if it failed.
    fn join_finishing(&mut self) -> NodeResult<()> {
        let Some((at, thread)) = self.finishing.take() else { return Ok(()) };
        let (chunk, finished) = thread
            .join()
            .map_err(|_| NodeError::Internal("a sorted load's thread panicked".into()))?;
        self.chunks.insert(at, chunk);
        finished
    }

    /// Makes every chunk durable (blocking): call before
    /// [`SortedLoad::register`].
    pub fn sync(&mut self) -> NodeResult<()> {
        self.join_finishing()?;
        if self.chunks.is_empty() {
            self.new_chunk(Vec::new())?;
        }
        for c in &mut self.chunks {
            c.finish_load();
            c.take_sync_job()?.run().map_err(|e| NodeError::Internal(format!("sync: {e}")))?;
            let last = c.last_seq();
            c.mark_durable(last);
        }
        Ok(())
    }

    /// Names the range and its chunks in the catalog (one transaction) and
    /// routes them: from here on the range is the node's like any other.
    /// Errors: `RangeExists` when the name was taken meanwhile.
    pub fn register(mut self) -> NodeResult<()> {
        self.join_finishing()?;
        let chunks = std::mem::take(&mut self.chunks);
        let _creating = self.node.creating_range.lock().unwrap_or_else(|p| p.into_inner());
        if self.node.router_read().range(&self.range.name).is_some() {
            for c in chunks {
                let _ = c.destroy();
            }
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("range {:?} already exists", self.range.name),
            ));
        }
        self.node.register_range(self.range.clone(), chunks).map(|_| ())
    }
}

/// Range `range_id`'s one chunk, `[empty, unbounded)`, with the range's
/// meta, when that chunk holds nothing ([`Chunk::holds_nothing`]): what
/// [`SortedLoad::replace_empty`] puts loaded chunks in place of. Read
/// without the chunk's write lock, so a writer may come between this and
/// the swap, which checks again under the lock.
pub fn sole_empty_chunk(node: &Node, range_id: u64) -> Option<(Route, RangeMeta)> {
    let router = node.router_read();
    let range = router.range_by_id(range_id)?;
    let mut chunks = range.chunks.values();
    let (Some(only), None) = (chunks.next(), chunks.next()) else { return None };
    let whole = only.start.is_empty() && only.end.is_none();
    let empty = whole && only.cell.with_chunk(|c| Ok(c.holds_nothing())).unwrap_or(false);
    empty.then(|| (only.clone(), range.meta.clone()))
}

/// Why [`SortedLoad::replace_empty`] left the range as it was.
#[derive(Debug)]
pub enum NotReplaced {
    /// The range is not one chunk that never held anything (rows were
    /// written into it meanwhile, it split, it was dropped): the loaded
    /// chunks are removed and the caller writes its rows another way.
    NotEmpty,
    Failed(NodeError),
}

impl SortedLoad {
    /// Puts the loaded chunks (synced: [`SortedLoad::sync`]) in place of
    /// the range's one chunk, `[empty, unbounded)`, provided that chunk
    /// never held anything ([`Chunk::holds_nothing`]), no write to it waits
    /// for the group commit, and it is not poisoned; checked under its
    /// write lock, which no writer holds until it is gone. The catalog
    /// records the swap in one transaction; the new chunks keep the change
    /// journal the range's views need, and are routed before anyone can
    /// ask for them. A reader at a snapshot taken while the load ran may
    /// see the rows loaded below it; views read a mapper's target at the
    /// mapper's cut, which stays below every loaded row until the mapper
    /// publishes a new one after the swap.
    pub fn replace_empty(mut self) -> Result<(), NotReplaced> {
        self.join_finishing().map_err(NotReplaced::Failed)?;
        let node = self.node.clone();
        let range_id = self.range.id;
        let size_max = self.range.options.chunk_size_max_bytes;
        let old = sole_empty_chunk(&node, range_id).map(|(route, _)| route);
        let Some(old) = old else { return Err(NotReplaced::NotEmpty) };
        let chunks = std::mem::take(&mut self.chunks);
        let metas: Vec<ChunkMeta> = chunks.iter().map(|c| c.meta.clone()).collect();
        let destroy = |chunks: Vec<Chunk>| {
            for c in chunks {
                let _ = c.destroy();
            }
        };
        let taken = {
            let mut state = old.cell.write();
            let empty = matches!(&*state, CellState::Open(c) if c.holds_nothing());
            if !empty || old.cell.has_pending() || old.cell.poisoned().is_some() {
                drop(state);
                destroy(chunks);
                return Err(NotReplaced::NotEmpty);
            }
            match node.catalog.replace_chunk(old.id, &metas) {
                Ok(()) => {}
                Err(CatalogError::ChunkNotFound(_)) => {
                    drop(state);
                    destroy(chunks);
                    return Err(NotReplaced::NotEmpty);
                }
                Err(e) => {
                    // The catalog may yet name either side at the next
                    // start; both are kept, and the old chunk takes no
                    // more writes, so whichever it names holds everything.
                    drop(state);
                    old.cell.poison(format!(
                        "the catalog could not record a bulk load in place of this chunk ({e}); \
                         restart the node"
                    ));
                    drop(chunks);
                    return Err(NotReplaced::Failed(e.into()));
                }
            }
            // Writers waiting for the lock find the cell gone and route
            // again, to the new chunks.
            let (taken, _no_pending) = old.cell.take_locked(&mut state);
            taken
        };
        for c in &chunks {
            if let Err(e) = crate::storage::descriptor::unmark_creating(c.dir()) {
                tracing::warn!(dir = %c.dir().display(), error = %e, "could not remove a chunk's creation mark");
            }
        }
        let count = chunks.len();
        {
            // Under the router's lock from the journals to the routes: a
            // view registered meanwhile either counts in the floor read
            // here or finds the new chunks when it asks them to watch.
            let mut router = node.router_write();
            let floor = node.view_floor(range_id);
            let routes = chunks
                .into_iter()
                .map(|mut c| {
                    if let Some(after) = floor {
                        c.watch_changes(after);
                    }
                    node.spawn_chunk(c, size_max)
                })
                .collect();
            if !router.replace_chunk(range_id, old.id, routes) {
                tracing::error!(
                    chunk = old.id,
                    "the router had no route to a chunk a bulk load replaced"
                );
            }
        }
        old.addr.do_send(ChunkMsg::Merged);
        if let Some(taken) = taken {
            if let Err(e) = taken.destroy() {
                tracing::warn!(chunk = old.id, error = %e, "a replaced chunk's files remain; removed at next start");
            }
        }
        tracing::info!(range = %self.range.name, chunks = count, rows = self.rows, "bulk load in place of an empty chunk");
        Ok(())
    }
}

impl Drop for SortedLoad {
    fn drop(&mut self) {
        if let Err(e) = self.join_finishing() {
            tracing::debug!(error = %e, "a dropped sorted load's chunk did not finish");
        }
        for c in self.chunks.drain(..) {
            if let Err(e) = c.destroy() {
                tracing::warn!(error = %e, "removing a sorted load's chunk failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use monotable_proto::{Command, Reply, ScanRequest};

    use super::*;
    use crate::config::NodeConfig;
    use crate::node::Session;

    fn rows(from: u32, to: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (from..to).map(|i| (format!("k{i:08}").into_bytes(), vec![b'v'; 100])).collect()
    }

    #[test]
    fn builds_chunks_in_key_order_and_refuses_keys_out_of_order() {
        let dir = tempfile::tempdir().expect("tmp");
        actix::System::new().block_on(async {
            let node = Node::start(NodeConfig::for_tests(dir.path())).expect("node");
            let options = RangeOptions { chunk_size_max_bytes: 64 * 1024 };
            let mut load = SortedLoad::begin(&node, "built", options).expect("begin");
            load.push(rows(0, 1000)).expect("push");
            load.push(rows(1000, 3000)).expect("push");
            // Regression guard: out of order, or repeating the last key, is
            // refused whole and changes nothing.
            for bad in [rows(2999, 3001), rows(10, 11)] {
                let err = load.push(bad).expect_err("out of order");
                assert!(err.to_string().contains("must increase"), "{err}");
            }
            assert_eq!(load.rows(), 3000);
            load.join_finishing().expect("the chunk before the last finished");
            let dirs = load.chunks.iter().map(|c| c.dir().to_owned()).collect::<Vec<_>>();
            assert!(dirs.len() > 4, "cut at the chunk size: {} chunks", dirs.len());
            load.sync().expect("sync");
            // Nothing is visible before it is registered.
            assert!(node.router_read().range("built").is_none());
            load.register().expect("register");
            let reply = node
                .execute(
                    Command::Scan(ScanRequest {
                        range: "built".into(),
                        limit: 10_000,
                        ..Default::default()
                    }),
                    &Session::default(),
                )
                .await
                .expect("scan");
            let Reply::Scan(scan) = reply else { panic!("{reply:?}") };
            let keys: Vec<Vec<u8>> = scan.records.into_iter().map(|r| r.key.into_vec()).collect();
            assert_eq!(keys, rows(0, 3000).into_iter().map(|(k, _)| k).collect::<Vec<_>>());
            // A load dropped before it is registered leaves nothing.
            let mut dropped = SortedLoad::begin(&node, "dropped", options).expect("begin");
            dropped.push(rows(0, 2000)).expect("push");
            let finishing = dropped.finishing.as_ref().map(|(at, _)| *at);
            assert!(finishing.is_some(), "a full chunk finishes on its own thread");
            dropped.join_finishing().expect("finish");
            let left: Vec<_> = dropped.chunks.iter().map(|c| c.dir().to_owned()).collect();
            drop(dropped);
            assert!(left.iter().all(|d| !d.exists()), "directories left: {left:?}");
            // Dropped while a chunk finishes on its thread: that one goes too.
            let parent = left[0].parent().expect("chunk dirs' parent").to_owned();
            let count = || std::fs::read_dir(&parent).expect("dir").count();
            let before = count();
            let mut dropped = SortedLoad::begin(&node, "dropped", options).expect("begin");
            dropped.push(rows(0, 2000)).expect("push");
            assert!(dropped.finishing.is_some());
            assert!(count() > before + 2);
            drop(dropped);
            assert_eq!(count(), before, "chunk directories left");
            assert!(SortedLoad::begin(&node, "built", options).is_err(), "the name is taken");
            node.shutdown().await;
        });
    }
}
