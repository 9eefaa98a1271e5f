//! A new mapper's backfill in bulk: the source as of the mapper's first
//! checkpoint is mapped whole, its rows sorted through an
//! [`ExtendedHashtable`] (spilling sorted runs past the node's
//! `backfill_memory_max_bytes`, [`BULK_BACKFILL_MEMORY_DEFAULT_BYTES`]), and written in key order straight into
//! new chunks of the target ([`SortedLoad`]), which then take the place of
//! the target's one empty chunk ([`SortedLoad::replace_empty`]). Rows reach
//! the target without routing, group commits, index inserts in random
//! order or splits: the same machinery as a batch job's shuffle and output.
//!
//! It applies to a mapper that begins its backfill (no cursor yet, nothing
//! to prune) from an ordinary range into an ordinary range that has never
//! held anything. Otherwise, or when something wrote into the target while
//! the rows were loaded, the backfill runs as before: a batch of records at
//! a time through ordinary writes ([`crate::view::mapper`]).
//!
//! The node runs one bulk backfill at a time (each takes up to its memory
//! setting); a new mapper waits its turn, showing no progress meanwhile.
//!
//! Readers of the target see nothing of it until the swap, then all of
//! it: the chunks it builds are registered only then. Views reading the
//! target read it at the mapper's cut, which stays below every loaded row
//! until the mapper publishes the cut that follows the swap, so a reducer
//! created meanwhile finds every loaded row among its changes. A crash
//! before the swap leaves chunks marked as being created and spilled runs,
//! both removed at the next start ([`remove_leftovers`]), and the mapper
//! begins its backfill again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use monotable_proto::limits::BATCH_OPS_MAX;
use monotable_proto::ScanRequest;

use crate::catalog::MapperMeta;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::replicated::is_replicated;
use crate::shuffle::runs::{RunError, RunStore};
use crate::shuffle::table::{Combiner, ExtendedHashtable};
use crate::sorted_load::{self, NotReplaced, SortedLoad};
use crate::view::map_fn::{check_rows, Mapper};
use crate::view::sandbox::Interrupt;

/// Default of the memory a bulk backfill's rows gather in before they
/// spill a sorted run (bytes of keys, values and the table's overhead per
/// row): `serve --backfill-memory-max-bytes`.
pub const BULK_BACKFILL_MEMORY_DEFAULT_BYTES: usize = 256 * 1024 * 1024;

/// Source records read per page.
const PAGE_RECORDS: u32 = 4096;

/// Pages read ahead of the mapping.
const PAGES_AHEAD: usize = 4;

/// Bytes of rows per batch handed to the load.
const LOAD_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Batches the merge runs ahead of the load.
const LOAD_BATCHES_AHEAD: usize = 4;

/// Where bulk backfills spill their runs, under the data directory.
fn spill_root(data_dir: &Path) -> PathBuf {
    data_dir.join("backfill")
}

/// Removes the runs of bulk backfills a crash or a kill stopped (called at
/// start, before any mapper runs).
pub fn remove_leftovers(data_dir: &Path) {
    let root = spill_root(data_dir);
    let held = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
    if !held {
        let _ = std::fs::remove_dir(&root);
        return;
    }
    match std::fs::remove_dir_all(&root) {
        Ok(()) => {
            tracing::info!(dir = %root.display(), "removed the runs of an unfinished bulk backfill")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %root.display(), error = %e, "could not remove the runs of an unfinished bulk backfill")
        }
    }
}

/// Index rows as the shuffle's entries: a row key and its value. Row keys
/// are unique (each names its source record and the emit's position), so
/// no two ever combine; if they did, the newer value would stand, as a
/// second write of the row would.
struct RowValues;

impl Combiner for RowValues {
    type P = Vec<u8>;

    fn combine(&self, _older: &Vec<u8>, newer: &Vec<u8>) -> Vec<u8> {
        newer.clone()
    }

    fn encode(&self, p: &Vec<u8>) -> Vec<u8> {
        p.clone()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }

    fn heap_bytes(&self, p: &Vec<u8>) -> usize {
        p.capacity()
    }
}

/// Most source records mapped between two updates of the progress (and
/// two checks for a drop); fewer while records map slowly, so that a
/// function that runs each record to its instruction limit shows its
/// errors within about [`PROGRESS_INTERVAL_MS`].
const PROGRESS_RECORDS: usize = 256;
const PROGRESS_INTERVAL_MS: u128 = 100;

/// A bulk backfill's progress while it runs, shown in its mapper's
/// status: the records it failed on count as they are found, not at the
/// end.
#[derive(Debug, Default)]
pub struct BulkProgress {
    /// Out of the backfill's total: the first half for the records
    /// mapped, the second for the rows loaded.
    pub done: AtomicU64,
    /// Records the function failed on so far, and the last of them.
    pub errors: AtomicU64,
    pub last_error: std::sync::Mutex<Option<(Vec<u8>, String)>>,
}

impl BulkProgress {
    /// Back to nothing: before a bulk backfill, and once its outcome is in
    /// the mapper's figures (or thrown away).
    pub fn reset(&self) {
        self.done.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The last record the function failed on, if it failed on any.
    pub fn last_error(&self) -> Option<(Vec<u8>, String)> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn add_errors(&self, outcome: &BulkOutcome, before: u64) {
        if outcome.errors > before {
            self.errors.store(outcome.errors, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = outcome.last_error.clone();
        }
    }
}

/// What a bulk backfill did.
#[derive(Debug, Default)]
pub struct BulkOutcome {
    /// Source records mapped.
    pub records: u64,
    /// Rows loaded into the target.
    pub rows: u64,
    /// Records the function failed on, and the last of them.
    pub errors: u64,
    pub last_error: Option<(Vec<u8>, String)>,
    /// Sorted runs spilled.
    pub spills: u64,
    /// Time reading and mapping the source, and time merging and loading
    /// the rows (ms).
    pub map_ms: u64,
    pub load_ms: u64,
}

impl BulkOutcome {
    fn error(&mut self, key: &[u8], e: String) {
        self.errors += 1;
        tracing::debug!(key = %monotable_proto::keys::hex(key), error = %e, "map failed for a record");
        self.last_error = Some((key.to_vec(), e));
    }
}

/// Whether `meta`'s backfill can run in bulk: it has not begun, and both
/// ranges are this node's own (not replicated).
pub fn applies(meta: &MapperMeta) -> bool {
    meta.backfill.as_ref().is_some_and(|b| b.cursor.is_none() && !b.prune && b.done == 0)
        && !is_replicated(meta.source_id)
        && !is_replicated(meta.target_id)
}

/// Runs `meta`'s backfill in bulk (see the module doc); `Ok(None)` when the
/// target held something (or split, or gained a chunk) by the time the
/// rows were loaded: nothing changed, and the caller backfills the
/// ordinary way. `progress` is what the mapper's status shows meanwhile,
/// out of `total` (the source's records when the backfill began).
/// Errors: `ShuttingDown` when `interrupt` was
/// set (a drop or a shutdown); the errors of a scan, of the disk, of the
/// catalog. Nothing is left behind on error but what the next start
/// removes.
pub async fn run(
    node: &Arc<Node>,
    meta: &MapperMeta,
    mapper: &Arc<Mapper>,
    interrupt: &Interrupt,
    (progress, total): (&Arc<BulkProgress>, u64),
) -> NodeResult<Option<BulkOutcome>> {
    // Checked now, so a target that cannot take a bulk load costs no
    // mapping; checked again under the chunk's lock at the swap.
    let target = sorted_load::sole_empty_chunk(node, meta.target_id).map(|(_, range)| range);
    let Some(target) = target else {
        tracing::info!(mapper = %meta.name, "the target held something: backfilling it a batch at a time");
        return Ok(None);
    };
    // Waits its turn, giving way to a drop or a shutdown (both set the
    // interrupt).
    let _turn = tokio::select! {
        turn = node.bulk_backfill_turn.acquire() => turn.map_err(|_| NodeError::ShuttingDown)?,
        () = interrupt.stopped() => return Err(NodeError::ShuttingDown),
    };
    let dir =
        spill_root(&node.config.data_dir).join(format!("{}-{}", meta.target_id, meta.checkpoint));
    let result = run_in(node, meta, mapper, interrupt, (progress, total), target, &dir).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a bulk backfill's runs; removed at next start");
        }
    }
    result
}

async fn run_in(
    node: &Arc<Node>,
    meta: &MapperMeta,
    mapper: &Arc<Mapper>,
    interrupt: &Interrupt,
    (progress, total): (&Arc<BulkProgress>, u64),
    target: crate::catalog::RangeMeta,
    dir: &Path,
) -> NodeResult<Option<BulkOutcome>> {
    let stopped = || NodeError::ShuttingDown;
    let started = std::time::Instant::now();
    let store = RunStore::disk(dir.to_owned()).map_err(run_error)?;
    let mut table =
        ExtendedHashtable::new(Arc::new(RowValues), node.config.backfill_memory_max_bytes, store);
    // Map: pages read here, mapped and sorted on a blocking thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Vec<u8>, Vec<u8>)>>(PAGES_AHEAD);
    let (mapper2, interrupt2, progress2) = (mapper.clone(), interrupt.clone(), progress.clone());
    let mapping = tokio::task::spawn_blocking(move || {
        let mut outcome = BulkOutcome::default();
        // Records per part: doubled while parts map quickly, halved when
        // one takes longer than the interval.
        let mut step = 1;
        while let Some(page) = rx.blocking_recv() {
            let mut rest = &page[..];
            while !rest.is_empty() {
                let (part, after) = rest.split_at(step.min(rest.len()));
                rest = after;
                let (errors, began) = (outcome.errors, std::time::Instant::now());
                map_page(&mapper2, part, &mut table, &mut outcome)?;
                step = if began.elapsed().as_millis() > PROGRESS_INTERVAL_MS {
                    (step / 2).max(1)
                } else {
                    (step * 2).min(PROGRESS_RECORDS)
                };
                outcome.records += part.len() as u64;
                // The first half of the progress: records mapped.
                let done = (outcome.records / 2).min(total / 2);
                progress2.done.store(done, Ordering::Relaxed);
                progress2.add_errors(&outcome, errors);
                if interrupt2.is_set() {
                    return Err(stopped());
                }
            }
        }
        Ok((table, outcome))
    });
    let scanned = async {
        let mut start = None;
        while !interrupt.is_set() {
            let reply = node
                .scan_range(ScanRequest {
                    range: meta.source.clone(),
                    start,
                    limit: PAGE_RECORDS,
                    snapshot: Some(meta.checkpoint),
                    ..ScanRequest::default()
                })
                .await?;
            let page =
                reply.records.into_iter().map(|r| (r.key.into_vec(), r.value.into_vec())).collect();
            if tx.send(page).await.is_err() {
                break;
            }
            match reply.resume {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok::<_, NodeError>(())
    }
    .await;
    // The mapping thread ends before anything returns: it may still be
    // spilling into the directory the caller removes.
    drop(tx);
    let mapped = mapping.await.map_err(|e| NodeError::Internal(format!("mapping stopped: {e}")))?;
    scanned?;
    let (table, mut outcome) = mapped?;
    if interrupt.is_set() {
        return Err(stopped());
    }
    outcome.map_ms = started.elapsed().as_millis() as u64;
    let started = std::time::Instant::now();
    // Merge the runs into new chunks of the target, in key order.
    let node2 = node.clone();
    let (interrupt2, progress2) = (interrupt.clone(), progress.clone());
    let (load, runs) = tokio::task::spawn_blocking(move || {
        let rows = table.stats().inserts.max(1);
        let mut merged = table.finish().map_err(run_error)?;
        let runs = merged.stats().spills;
        let mut load = SortedLoad::into_range(&node2, target);
        // The merge on a thread of its own, a few batches ahead of the
        // load: the two overlap.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Vec<u8>, Vec<u8>)>>(LOAD_BATCHES_AHEAD);
        std::thread::scope(|scope| {
            let merging = scope.spawn(move || {
                let mut batch = Vec::new();
                let mut bytes = 0;
                while let Some((key, value)) = merged.next_entry().map_err(run_error)? {
                    bytes += key.len() + value.len();
                    batch.push((key, value));
                    if batch.len() >= BATCH_OPS_MAX || bytes >= LOAD_BATCH_BYTES {
                        bytes = 0;
                        if tx.send(std::mem::take(&mut batch)).is_err() {
                            return Ok(());
                        }
                    }
                }
                let _ = tx.send(batch);
                Ok::<_, NodeError>(())
            });
            let loaded = (|| {
                for batch in rx {
                    if interrupt2.is_set() {
                        return Err(stopped());
                    }
                    load.push(batch)?;
                    // The second half: rows loaded.
                    let loaded = u128::from(load.rows().min(rows));
                    let half = u128::from(total - total / 2);
                    let part = (half * loaded / u128::from(rows)) as u64;
                    progress2.done.store(total / 2 + part, Ordering::Relaxed);
                }
                Ok(())
            })();
            // A failed load drops the receiver, which ends the merge.
            let merged =
                merging.join().map_err(|_| NodeError::Internal("the merge panicked".into()))?;
            loaded.and(merged)
        })?;
        load.sync()?;
        Ok::<_, NodeError>((load, runs))
    })
    .await
    .map_err(|e| NodeError::Internal(format!("loading stopped: {e}")))??;
    outcome.rows = load.rows();
    outcome.spills = runs;
    outcome.load_ms = started.elapsed().as_millis() as u64;
    match load.replace_empty() {
        Ok(()) => Ok(Some(outcome)),
        Err(NotReplaced::NotEmpty) => {
            tracing::info!(mapper = %meta.name, "the target was written meanwhile; backfilling it a batch at a time");
            Ok(None)
        }
        Err(NotReplaced::Failed(e)) => Err(e),
    }
}

fn run_error(e: RunError) -> NodeError {
    NodeError::Internal(format!("bulk backfill: {e}"))
}

/// Maps a page of source records and puts their rows into `table`; a
/// record whose function fails, or one of whose rows the target would
/// refuse, adds no row (as in a round).
fn map_page(
    mapper: &Mapper,
    page: &[(Vec<u8>, Vec<u8>)],
    table: &mut ExtendedHashtable<RowValues>,
    outcome: &mut BulkOutcome,
) -> NodeResult<()> {
    let refs: Vec<(&[u8], &[u8])> = page.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let mapped = mapper.map_many(&refs, None).map_err(|_| NodeError::ShuttingDown)?;
    for ((key, _), rows) in page.iter().zip(mapped) {
        match rows.and_then(|rows| check_rows(&rows).map(|()| rows)) {
            Ok(rows) => {
                for (k, v) in rows {
                    table.insert(&k, v).map_err(run_error)?;
                }
            }
            Err(e) => outcome.error(key, e),
        }
    }
    Ok(())
}
