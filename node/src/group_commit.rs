//! The node's group commit: one syncer thread makes the writes of every
//! chunk durable together.
//!
//! Writers apply their batches to a chunk directly, under its cell's write
//! lock, on whatever thread they run ([`ChunkCell::apply`]); the batch's
//! acknowledgement waits in the cell, and the cell in the syncer's queue.
//! The syncer takes every queued cell at once (a round): it hands each
//! chunk's new entries to the kernel in one write, under `--fsync always`
//! makes all of them durable with one sync, then acknowledges them. Cells
//! queued while a round runs wait for the next one, so the number of writes
//! and syncs follows the disk's speed, not the number of chunks, writers or
//! commands in a pipeline. Under `--fsync interval` rounds only write, and
//! every interval the syncer syncs the chunks written since the last time;
//! under `--fsync never` rounds only write.
//!
//! How a round syncs ([`SyncMethod`]) was chosen by measuring this workload
//! (100-byte appends to N files, then making all of them durable) on ext4:
//!
//! | files per round | fdatasync each | syncfs once |
//! |---|---|---|
//! | 1 | 0.108 ms | 0.093 ms |
//! | 4 | 0.527 ms | 0.121 ms |
//! | 16 | 1.366 ms | 0.235 ms |
//! | 32 | 2.889 ms | 0.333 ms |
//!
//! `syncfs(2)` costs about one journal commit whatever the number of files,
//! but flushes every dirty file of the file system, other programs' too
//! (6.4 ms for one file while another process wrote a large file), and
//! reports writeback errors only since Linux 5.8. The default (`auto`)
//! fdatasyncs rounds that touch few files and syncfs's larger ones, on
//! kernels that report its errors.
//!
//! A failed sync fails exactly the chunks whose data it covered: with
//! fdatasync, the chunk of the file that failed; with syncfs, which cannot
//! say which file failed, every chunk of the round. Those chunks are
//! poisoned (no more writes); nothing unsynced is ever acknowledged.
//!
//! The syncer is also the node's [`SyncPoint`]: Raft logs queue the files
//! they wrote ([`Syncer`]'s `sync`), which kicks a round at once. A file
//! queued before a round is cut is covered by that round: fdatasynced once
//! however many times it was queued, or by the round's syncfs (if it lies
//! on the data directory's file system; else fdatasynced), whatever the
//! `--fsync` mode (a Raft log acknowledges only what is durable), and every
//! `done` of it is called with that outcome. The chunks of replicated
//! ranges (`ChunkCell::is_raft_durable`) are written by rounds but not
//! synced under `--fsync always`: their Raft logs keep their writes, and
//! each replica syncs its chunk when its group builds a snapshot
//! ([`crate::replica`]), before the Raft log before it is removed.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::chunk_cell::{ChunkCell, Round, SettledRound};
use crate::chunk_host::ChunkHost;
use crate::config::FsyncMode;
use crate::consensus::SyncPoint;
use crate::storage::chunk_log::SyncJob;

/// What a [`SyncPoint`] caller is told once its file is durable (or not).
type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// How a round of the group commit makes its files durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMethod {
    /// fdatasync each file of a round that touches fewer than
    /// [`SYNCFS_MIN_FILES`] files, one syncfs otherwise (fdatasync only,
    /// on kernels older than 5.8).
    Auto,
    /// fdatasync every file a round touched.
    Fdatasync,
    /// One syncfs of the data directory's file system per round (Linux
    /// 5.8 or later).
    Syncfs,
}

/// Files (and directories) a round must touch before `auto` prefers one
/// syncfs to an fdatasync each (measured: 2 files cost 0.18 ms by
/// fdatasync, 0.13 ms by syncfs; 4 files 0.53 ms against 0.12 ms).
pub const SYNCFS_MIN_FILES: usize = 3;

/// Longest a queued chunk waits for its round when no writer asked for
/// one (a writer that applied a batch and did not wait for it).
pub const ROUND_DELAY_MAX_MS: u64 = 5;

/// Whether this kernel's syncfs reports writeback errors (Linux 5.8+).
pub fn syncfs_reports_errors() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

/// Counters of the group commit, for benchmarks and status.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Rounds that synced something.
    pub rounds: AtomicU64,
    /// Chunks those rounds covered, summed.
    pub chunks: AtomicU64,
    /// fdatasync and syncfs calls made.
    pub syncs: AtomicU64,
    /// Distinct files of [`SyncPoint`] callers (Raft logs) those rounds
    /// covered, summed.
    pub files: AtomicU64,
    /// Chunks per round.
    pub round_chunks: crate::counters::SizeHistogram,
}

/// The queue of chunks with writes to make durable, and its thread.
pub struct Syncer {
    /// Cells whose writes wait for a round. A std mutex with a condvar:
    /// writers push (briefly, never across I/O) and the syncer thread
    /// sleeps on it; no async runtime is involved on either side.
    queue: Mutex<Queue>,
    wake: Condvar,
    method: SyncMethod,
    fsync: FsyncMode,
    /// An open handle on the data directory: syncfs reports an error once
    /// per open file description, so one handle kept for the node's life
    /// sees every error after it was opened.
    fs: File,
    /// The device of the data directory's file system: syncfs covers only
    /// files on it.
    fs_dev: u64,
    pub stats: CommitStats,
    /// The thread, joined at shutdown.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The node, for rounds run by writers themselves; set at start.
    host: std::sync::OnceLock<Weak<dyn ChunkHost>>,
    /// Under `--fsync interval`: the chunks written since the last sync. A
    /// std mutex: pushed to after a round, taken every interval.
    unsynced: Mutex<Vec<Arc<ChunkCell>>>,
    /// Test hook: the next sync of a round fails with this error.
    #[cfg(test)]
    pub(crate) fail_next_sync: Mutex<Option<io::ErrorKind>>,
}

#[derive(Default)]
struct Queue {
    cells: VecDeque<Arc<ChunkCell>>,
    /// Files of [`SyncPoint`] callers, with what to call once the round
    /// that takes them ends.
    files: Vec<(Arc<File>, Done)>,
    /// A writer waits: run the round now.
    kicked: bool,
    /// The syncer sleeps until notified (nothing was queued).
    idle: bool,
    stopping: bool,
}

impl Syncer {
    /// A syncer for the node whose data lives in `data_dir`. Refuses
    /// `syncfs` on a kernel that would not report its errors.
    pub fn new(data_dir: &Path, fsync: FsyncMode, method: SyncMethod) -> io::Result<Syncer> {
        if method == SyncMethod::Syncfs && !syncfs_reports_errors() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "--sync-method syncfs needs Linux 5.8 or later (older kernels do not report its errors)",
            ));
        }
        let method = match method {
            SyncMethod::Auto if !syncfs_reports_errors() => SyncMethod::Fdatasync,
            m => m,
        };
        let fs = File::open(data_dir)?;
        let fs_dev = std::os::unix::fs::MetadataExt::dev(&fs.metadata()?);
        Ok(Syncer {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            method,
            fsync,
            fs,
            fs_dev,
            stats: CommitStats::default(),
            thread: Mutex::new(None),
            host: std::sync::OnceLock::new(),
            unsynced: Mutex::new(Vec::new()),
            #[cfg(test)]
            fail_next_sync: Mutex::new(None),
        })
    }

    pub fn method(&self) -> SyncMethod {
        self.method
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Queue edits are single pushes and takes: a poisoned lock is
        // still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the syncer's thread; it holds the host weakly, so a node
    /// dropped without shutdown is not kept alive by it.
    pub fn start(self: &Arc<Self>, host: Weak<dyn ChunkHost>) -> io::Result<()> {
        let _ = self.host.set(host);
        let syncer = self.clone();
        let handle = std::thread::Builder::new()
            .name("monotable-sync".to_owned())
            .spawn(move || syncer.run())?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    /// Queues a cell for the next round (the caller saw it was not
    /// queued). The round starts when a writer waits for it
    /// ([`Syncer::start_round`]) or at the latest after
    /// [`ROUND_DELAY_MAX_MS`].
    pub fn enqueue(&self, cell: Arc<ChunkCell>) {
        let mut q = self.queue();
        q.cells.push_back(cell);
        if q.idle {
            // The syncer sleeps without a deadline: it starts the clock
            // of `ROUND_DELAY_MAX_MS` for this cell.
            q.idle = false;
            self.wake.notify_one();
        }
    }

    /// A writer waits for `cell`'s batches: under `--fsync always` the
    /// syncer thread starts a round now (with every chunk queued by then);
    /// otherwise, where a round is only a write(2), the writer runs this
    /// chunk's round itself, sparing two thread wake-ups.
    pub fn start_round(&self, cell: &Arc<ChunkCell>) {
        if self.fsync != FsyncMode::Always {
            if let Some(host) = self.host.get().and_then(Weak::upgrade) {
                let round = cell.begin_round(false);
                if !round.batch.is_empty() && self.fsync != FsyncMode::Never {
                    self.note_unsynced(cell);
                }
                cell.end_round(&*host, round, None);
                return;
            }
        }
        // Always notified: a kick left over from a round that took the
        // chunk already must not silence this one.
        self.queue().kicked = true;
        self.wake.notify_one();
    }

    /// `--fsync interval`: `cell` has writes the next interval syncs.
    fn note_unsynced(&self, cell: &Arc<ChunkCell>) {
        let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
        if !unsynced.iter().any(|c| Arc::ptr_eq(c, cell)) {
            unsynced.push(cell.clone());
        }
    }

    /// Runs the rounds still queued, then stops the thread.
    pub fn stop(&self) {
        self.queue().stopping = true;
        self.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn run(&self) {
        let interval = match self.fsync {
            FsyncMode::Interval { ms } => Some(Duration::from_millis(ms.max(1))),
            _ => None,
        };
        let mut next_sync = interval.map(|i| Instant::now() + i);
        let round_delay_max = Duration::from_millis(ROUND_DELAY_MAX_MS);
        loop {
            let (cells, files, stopping) = {
                let mut q = self.queue();
                let mut queued_since: Option<Instant> = None;
                loop {
                    if q.stopping {
                        break;
                    }
                    let now = Instant::now();
                    if !q.cells.is_empty() || !q.files.is_empty() {
                        // Woken by a waiting writer, or the round is overdue.
                        let since = *queued_since.get_or_insert(now);
                        if q.kicked || now >= since + round_delay_max {
                            break;
                        }
                    }
                    if next_sync.is_some_and(|at| now >= at) {
                        break;
                    }
                    let mut wait = if q.cells.is_empty() && q.files.is_empty() {
                        None
                    } else {
                        Some(round_delay_max)
                    };
                    if let Some(at) = next_sync {
                        let left = at.saturating_duration_since(now);
                        wait = Some(wait.map_or(left, |w| w.min(left)));
                    }
                    q = match wait {
                        Some(w) => {
                            self.wake.wait_timeout(q, w).unwrap_or_else(|p| p.into_inner()).0
                        }
                        None => {
                            q.idle = true;
                            let mut q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                            q.idle = false;
                            q
                        }
                    };
                }
                q.kicked = false;
                (q.cells.drain(..).collect::<Vec<_>>(), std::mem::take(&mut q.files), q.stopping)
            };
            let Some(host) = self.host.get().and_then(Weak::upgrade) else {
                // The node is gone: nothing will run a round again.
                let mut q = self.queue();
                q.stopping = true;
                let left = std::mem::take(&mut q.files);
                drop(q);
                fail_files(files.into_iter().chain(left), "the node stopped");
                return;
            };
            if !cells.is_empty() || !files.is_empty() {
                self.round(&*host, cells, files);
            }
            if let (Some(at), Some(interval)) = (next_sync, interval) {
                if stopping || Instant::now() >= at {
                    let cells = std::mem::take(
                        &mut *self.unsynced.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    self.sync_written(cells);
                    next_sync = Some(Instant::now() + interval);
                }
            }
            if stopping {
                let q = self.queue();
                if q.cells.is_empty() && q.files.is_empty() {
                    return;
                }
            }
        }
    }

    /// One round: every queued chunk's entries written out, synced
    /// together (under `--fsync always`), then acknowledged.
    /// `files` (queued by [`SyncPoint`] callers) are made durable by the
    /// round's sync whatever the `--fsync` mode, then their `done`s called.
    pub(crate) fn round(
        &self,
        host: &dyn ChunkHost,
        cells: Vec<Arc<ChunkCell>>,
        files: Vec<(Arc<File>, Done)>,
    ) {
        let (started, cell_count, file_count) = (Instant::now(), cells.len(), files.len());
        // Each file once, however often it was queued (one Raft log's
        // appends between two rounds all name its active segment).
        let mut distinct: Vec<Arc<File>> = Vec::new();
        let mut slot_of: std::collections::HashMap<*const File, usize> = Default::default();
        let dones: Vec<(usize, Done)> = files
            .into_iter()
            .map(|(file, done)| {
                let i = *slot_of.entry(Arc::as_ptr(&file)).or_insert_with(|| {
                    distinct.push(file.clone());
                    distinct.len() - 1
                });
                (i, done)
            })
            .collect();
        let sync = self.fsync == FsyncMode::Always;
        // A replica's chunk is written but not synced: its Raft log keeps
        // its writes, and its replica syncs it when its group builds a
        // snapshot. Syncing it here would put a second fdatasync on the
        // path of every Raft log append.
        let mut rounds: Vec<(Arc<ChunkCell>, Round)> = cells
            .into_iter()
            .map(|c| {
                let round = c.begin_round(sync && !c.is_raft_durable());
                (c, round)
            })
            .collect();
        let mut outcomes: Vec<Option<io::Error>> = (0..rounds.len()).map(|_| None).collect();
        let file_outcomes: Vec<io::Result<()>>;
        if sync {
            let jobs: Vec<(usize, &SyncJob)> = rounds
                .iter()
                .enumerate()
                .filter_map(|(i, (_, r))| {
                    r.job.as_ref().ok().and_then(Option::as_ref).map(|j| (i, j))
                })
                .collect();
            let (failed, files) = self.sync_round(&jobs, &distinct);
            for (i, e) in failed {
                outcomes[i] = Some(e);
            }
            file_outcomes = files;
        } else {
            if self.fsync != FsyncMode::Never {
                for (cell, _) in &rounds {
                    self.note_unsynced(cell);
                }
            }
            file_outcomes = self.sync_round(&[], &distinct).1;
        }
        let settled: Vec<_> = rounds
            .iter_mut()
            .zip(outcomes)
            .map(|((cell, round), failed)| {
                let round = std::mem::replace(
                    round,
                    Round { batch: Vec::new(), job: Ok(None), range_id: None },
                );
                cell.settle_round(round, failed)
            })
            .collect();
        host.clock().resolve(settled.iter().flat_map(SettledRound::seqs));
        for s in settled {
            s.answer(host);
        }
        for (i, done) in dones {
            done(match &file_outcomes[i] {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        tracing::debug!(target: crate::consensus::TIMING, stage = "round", cells = cell_count, files = file_count, distinct = distinct.len(), us = started.elapsed().as_micros() as u64);
    }

    /// `--fsync interval`: makes what the chunks handed to the kernel since
    /// the last call durable; a chunk whose sync failed is poisoned (its
    /// writes were acknowledged already: it takes no more).
    fn sync_written(&self, cells: Vec<Arc<ChunkCell>>) {
        let mut jobs = Vec::with_capacity(cells.len());
        for cell in cells {
            match cell.take_sync_job() {
                Some(Ok(job)) => jobs.push((cell, job)),
                Some(Err(f)) => cell.poison(f.reason),
                None => {}
            }
        }
        let refs: Vec<(usize, &SyncJob)> =
            jobs.iter().enumerate().map(|(i, (_, j))| (i, j)).collect();
        for (i, e) in self.sync_jobs(&refs) {
            jobs[i].0.poison(format!("fsync failed: {e}"));
        }
    }

    /// Syncs the jobs of one round by the node's method; returns the jobs
    /// that failed (by their index) with the error.
    fn sync_jobs(&self, jobs: &[(usize, &SyncJob)]) -> Vec<(usize, io::Error)> {
        self.sync_round(jobs, &[]).0
    }

    /// Syncs the chunk jobs and the extra `files` of one round by the
    /// node's method (`files` count toward the choice of syncfs); returns
    /// the jobs that failed (by their index) with the error, and each
    /// file's outcome, in order.
    fn sync_round(
        &self,
        jobs: &[(usize, &SyncJob)],
        files: &[Arc<File>],
    ) -> (Vec<(usize, io::Error)>, Vec<io::Result<()>>) {
        let jobs: Vec<(usize, &SyncJob)> =
            jobs.iter().copied().filter(|(_, j)| !j.is_empty()).collect();
        let handles: usize = jobs.iter().map(|(_, j)| j.handles()).sum::<usize>() + files.len();
        if handles == 0 {
            return (Vec::new(), Vec::new());
        }
        self.stats.rounds.fetch_add(1, Ordering::Relaxed);
        self.stats.chunks.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.stats.files.fetch_add(files.len() as u64, Ordering::Relaxed);
        self.stats.round_chunks.record(jobs.len() as u64);
        let syncfs = match self.method {
            SyncMethod::Syncfs => true,
            SyncMethod::Auto => handles >= SYNCFS_MIN_FILES,
            SyncMethod::Fdatasync => false,
        };
        let copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        if syncfs {
            self.stats.syncs.fetch_add(1, Ordering::Relaxed);
            let outcome = self.syncfs();
            let failed = match &outcome {
                Ok(()) => Vec::new(),
                Err(e) => jobs.iter().map(|(i, _)| (*i, copy(e))).collect(),
            };
            let files = files
                .iter()
                .map(|f| {
                    let on_fs = f
                        .metadata()
                        .is_ok_and(|m| std::os::unix::fs::MetadataExt::dev(&m) == self.fs_dev);
                    if on_fs {
                        outcome.as_ref().map_err(copy).copied()
                    } else {
                        // Another file system: the syncfs did not cover it.
                        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                        f.sync_data()
                    }
                })
                .collect();
            return (failed, files);
        }
        let mut failed = Vec::new();
        for (i, job) in jobs {
            self.stats.syncs.fetch_add(job.handles() as u64, Ordering::Relaxed);
            if let Err(e) = self.injected_failure().map_or_else(|| job.run(), Err) {
                failed.push((i, e));
            }
        }
        let outcomes = files
            .iter()
            .map(|f| {
                self.stats.syncs.fetch_add(1, Ordering::Relaxed);
                self.injected_failure().map_or_else(|| f.sync_data(), Err)
            })
            .collect();
        (failed, outcomes)
    }

    /// `syncfs(2)` of the data directory's file system.
    pub fn syncfs(&self) -> io::Result<()> {
        if let Some(e) = self.injected_failure() {
            return Err(e);
        }
        // SAFETY: syncfs takes a file descriptor this struct owns and keeps
        // open for the duration of the call; it reads no memory of ours.
        let r = unsafe { libc::syncfs(self.fs.as_raw_fd()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    #[cfg(test)]
    fn injected_failure(&self) -> Option<io::Error> {
        self.fail_next_sync.lock().unwrap_or_else(|p| p.into_inner()).take().map(io::Error::from)
    }

    #[cfg(not(test))]
    fn injected_failure(&self) -> Option<io::Error> {
        None
    }
}

/// Tells `files`' callers their sync will not happen.
fn fail_files(files: impl IntoIterator<Item = (Arc<File>, Done)>, why: &str) {
    for (_, done) in files {
        done(Err(io::Error::other(format!("not synced: {why}"))));
    }
}

impl SyncPoint for Syncer {
    /// Queues `file` for the next round and starts it now: a Raft log
    /// waits for this sync before it acknowledges anything. Under every
    /// `--fsync` mode. After [`Syncer::stop`], `done` is told the sync
    /// failed.
    fn sync(&self, file: Arc<File>, done: Done) {
        let mut q = self.queue();
        if q.stopping {
            drop(q);
            fail_files([(file, done)], "the node's syncer stopped");
            return;
        }
        q.files.push((file, done));
        q.kicked = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use monotable_proto::WriteOp;

    use super::*;
    use crate::catalog::CatalogError;
    use crate::chunk_cell::CellState;
    use crate::error::NodeError;
    use crate::storage::chunk::{Chunk, ChunkMeta};
    use crate::storage::clock::SeqClock;
    use crate::storage::descriptor::ChunkDescriptor;

    /// A host with a clock and a syncer whose thread never runs: the test
    /// runs rounds itself.
    struct Host {
        clock: SeqClock,
        maintenance: crate::chunk_host::MaintenanceCounts,
        syncer: Arc<Syncer>,
        /// The ranges views were told about, in order.
        notified: Mutex<Vec<u64>>,
    }

    impl Host {
        fn new(syncer: &Arc<Syncer>) -> Host {
            Host {
                clock: SeqClock::new(0),
                maintenance: Default::default(),
                syncer: syncer.clone(),
                notified: Mutex::default(),
            }
        }
    }

    impl ChunkHost for Host {
        fn clock(&self) -> &SeqClock {
            &self.clock
        }
        fn maintenance(&self) -> &crate::chunk_host::MaintenanceCounts {
            &self.maintenance
        }
        fn syncer(&self) -> &Arc<Syncer> {
            &self.syncer
        }
        fn notify_views(&self, range_id: u64) {
            self.notified.lock().expect("notified").push(range_id);
        }
        fn view_floor(&self, _: u64) -> Option<u64> {
            None
        }
        fn next_chunk_id(&self) -> Result<u64, CatalogError> {
            unreachable!("no splits here")
        }
        fn chunk_dir(&self, _: u64) -> PathBuf {
            unreachable!("no splits here")
        }
        fn segment_size_for(&self, _: u64) -> u64 {
            4096
        }
        fn record_split(&self, _: u64, _: &ChunkMeta, _: &ChunkMeta) -> Result<(), CatalogError> {
            unreachable!("no splits here")
        }
        fn start_halves(
            &self,
            _: u64,
            _: Chunk,
            _: Chunk,
            _: u64,
        ) -> Option<(Arc<ChunkCell>, Arc<ChunkCell>)> {
            None
        }
        fn split_wanted(&self, _: &ChunkMeta, _: Vec<u8>) {}
    }

    fn cells(dir: &Path, n: u64) -> Vec<Arc<ChunkCell>> {
        (1..=n)
            .map(|id| {
                let chunk = ChunkMeta { id, range_id: 1, start: vec![], end: None };
                let desc =
                    ChunkDescriptor { range_name: "r".into(), options: Default::default(), chunk };
                let chunk = Chunk::create(&desc, &dir.join(id.to_string()), 4096).expect("create");
                Arc::new(ChunkCell::new(id, CellState::Open(chunk), 1 << 20))
            })
            .collect()
    }

    fn put(k: &str) -> Vec<WriteOp> {
        vec![WriteOp::Put { key: k.as_bytes().to_vec().into(), value: b"v".to_vec().into() }]
    }

    /// Applies one batch to each cell, runs one round that fails its first
    /// sync, and says which batches were acknowledged.
    fn round_with_failure(method: SyncMethod) -> (Vec<bool>, Vec<bool>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(Syncer::new(dir.path(), FsyncMode::Always, method).expect("syncer"));
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 3);
        let mut acks = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            acks.push(cell.apply(&host, &put(&format!("k{i}"))).expect("apply"));
        }
        let queued: Vec<_> = syncer.queue().cells.drain(..).collect();
        assert_eq!(queued.len(), 3, "each cell is queued once");
        *syncer.fail_next_sync.lock().expect("hook") = Some(io::ErrorKind::Other);
        syncer.round(&host, queued, Vec::new());
        let acked = acks
            .into_iter()
            .map(|applied| applied.try_answer().expect("answered after the round").is_ok())
            .collect();
        let poisoned = cells.iter().map(|c| c.poisoned().is_some()).collect();
        // Nothing acknowledged or not stays unresolved on the clock.
        assert_eq!(host.clock.stable(), host.clock.last_allocated());
        (acked, poisoned)
    }

    #[test]
    fn a_failed_fdatasync_fails_only_the_chunk_whose_file_it_was() {
        let (acked, poisoned) = round_with_failure(SyncMethod::Fdatasync);
        assert_eq!(acked, [false, true, true]);
        assert_eq!(poisoned, [true, false, false]);
    }

    #[test]
    fn a_failed_syncfs_fails_every_chunk_of_the_round() {
        if !syncfs_reports_errors() {
            eprintln!("SKIPPED: this kernel's syncfs does not report errors");
            return;
        }
        let (acked, poisoned) = round_with_failure(SyncMethod::Syncfs);
        assert_eq!(acked, [false, false, false]);
        assert_eq!(poisoned, [true, true, true]);
    }

    // Postmortem: a replicated chunk whose write out a full disk refused
    // took the applied batches out of the chunk (as an ordinary chunk does,
    // for its writers to retry) and went on serving without writes Raft had
    // committed: that replica's reads missed them for good.
    #[test]
    fn a_replicated_chunk_that_loses_applied_writes_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 2);
        cells[0].mark_raft_durable();
        let mut acks = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            acks.push(cell.apply(&host, &put(&format!("k{i}"))).expect("apply"));
            cell.with_chunk_mut(|c| c.fail_next_write_out_for_tests()).expect("open");
        }
        let queued: Vec<_> = syncer.queue().cells.drain(..).collect();
        syncer.round(&host, queued, Vec::new());
        for a in acks {
            assert!(a.try_answer().expect("answered").is_err(), "the round failed");
        }
        let read = |c: &ChunkCell| c.with_chunk(|c| Ok(c.last_seq()));
        assert!(read(&cells[0]).is_err(), "the replica serves no reads without its writes");
        assert!(cells[0].apply(&host, &put("again")).is_err(), "nor writes");
        // An ordinary chunk is as it was and takes the next batch.
        assert!(read(&cells[1]).is_ok());
        assert!(cells[1].apply(&host, &put("again")).is_ok());
    }

    // A replicated chunk's writes are in its Raft log, synced by the round
    // too: syncing the chunk's own files as well put a second fdatasync on
    // the path of every Raft append (measured: a third of a write's time).
    #[test]
    fn a_round_writes_a_replicated_chunk_and_leaves_its_sync_to_its_replica() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 2);
        cells[0].mark_raft_durable();
        let acks: Vec<_> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| c.apply(&host, &put(&format!("k{i}"))).expect("apply"))
            .collect();
        let queued: Vec<_> = syncer.queue().cells.drain(..).collect();
        syncer.round(&host, queued, Vec::new());
        for a in acks {
            assert!(a.try_answer().expect("answered").is_ok());
        }
        let job = |c: &ChunkCell| c.take_sync_job().expect("open").expect("job");
        assert!(!job(&cells[0]).is_empty(), "the replica's files are still to sync");
        assert!(job(&cells[1]).is_empty(), "the ordinary chunk's were synced by the round");
        assert_eq!(syncer.stats.chunks.load(Ordering::Relaxed), 1);
    }

    // Postmortem: dropping a range failed the batches still waiting in its
    // chunks without settling their seqs, so the stable seq stopped below
    // them for good and every view of the node stalled (view_model hung in
    // "drop and re-create" when a reducer's meta rows were in flight).
    #[test]
    fn a_retired_chunk_settles_the_seqs_of_the_batches_it_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 2);
        let dropped = cells[0].apply(&host, &put("a")).expect("apply");
        let kept = cells[1].apply(&host, &put("b")).expect("apply");
        cells[0].retire(&host).expect("an open chunk").destroy().expect("destroy");
        assert!(matches!(dropped.try_answer(), Some(Err(NodeError::Moved))));
        let queued: Vec<_> = syncer.queue().cells.drain(..).collect();
        syncer.round(&host, queued, Vec::new());
        assert!(matches!(kept.try_answer(), Some(Ok(_))));
        assert_eq!(host.clock.stable(), host.clock.last_allocated(), "no seq left in flight");
    }

    // Postmortem: a split that closed a cell while the syncer's round held
    // its batches left them to that round, which acknowledged them but told
    // no view (the cell was gone), so a mapper whose source took its last
    // write so never caught up with it.
    #[test]
    fn views_hear_of_a_round_whose_cell_a_split_closed_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 1);
        let cell = &cells[0];
        cell.with_chunk_mut(|c| c.watch_changes(0)).expect("open");
        let applied = cell.apply(&host, &put("a")).expect("apply");
        let round = cell.begin_round(true);
        // The split's finish: the cell closes, with no batch left waiting.
        let (chunk, pending) = cell.take_locked(&mut cell.write());
        assert!(chunk.is_some() && pending.is_empty());
        cell.end_round(&host, round, None);
        assert!(matches!(applied.try_answer(), Some(Ok(_))));
        assert_eq!(host.clock.stable(), 1);
        assert_eq!(*host.notified.lock().expect("notified"), vec![1], "views were told");
    }

    #[test]
    fn a_poisoned_chunk_refuses_writes_and_others_take_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 2);
        cells[0].poison("fsync failed: injected".into());
        let refused = cells[0].apply(&host, &put("a")).err().expect("refused");
        assert!(refused.to_string().contains("injected"), "{refused}");
        assert!(cells[1].apply(&host, &put("a")).is_ok());
    }

    #[test]
    fn rounds_group_many_chunks_into_one_syncfs() {
        if !syncfs_reports_errors() {
            eprintln!("SKIPPED: this kernel's syncfs does not report errors");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer =
            Arc::new(Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Auto).expect("syncer"));
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 8);
        for (i, cell) in cells.iter().enumerate() {
            for j in 0..3 {
                let _ = cell.apply(&host, &put(&format!("k{i}-{j}"))).expect("apply");
            }
        }
        let queued: Vec<_> = syncer.queue().cells.drain(..).collect();
        assert_eq!(queued.len(), 8);
        syncer.round(&host, queued, Vec::new());
        assert_eq!(syncer.stats.syncs.load(Ordering::Relaxed), 1, "one syncfs for 8 chunks");
        assert_eq!(host.clock.stable(), 24);
        for cell in &cells {
            cell.with_chunk(|c| {
                assert_eq!(c.durable_seq(), c.last_seq());
                Ok(())
            })
            .expect("open");
        }
    }

    /// A syncer (`--fsync always`, fdatasync) whose thread runs.
    fn started(dir: &Path) -> (Arc<Syncer>, Arc<dyn ChunkHost>) {
        let syncer =
            Arc::new(Syncer::new(dir, FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"));
        let host: Arc<dyn ChunkHost> = Arc::new(Host::new(&syncer));

        syncer.start(Arc::downgrade(&host)).expect("start");
        (syncer, host)
    }

    // Regression: a kick left over from a round that had taken its chunk
    // already kept the next writer's kick from waking the syncer, and that
    // write waited for good (found by the crash test over many chunks).
    #[tokio::test]
    async fn a_stale_kick_does_not_silence_the_next_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (syncer, host) = started(dir.path());
        let cells = cells(dir.path(), 1);
        syncer.queue().kicked = true;
        // Let the syncer go to sleep on an empty queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..20 {
            let applied = cells[0].apply(&*host, &put(&format!("k{i}"))).expect("apply");
            tokio::time::timeout(Duration::from_secs(5), applied.durable())
                .await
                .expect("answered")
                .expect("durable");
        }
        syncer.stop();
    }

    // Regression: a batch nobody waited for (the Redis expirer's deletes)
    // was never written when the syncer slept with an empty queue: queuing
    // did not wake it, so its round never came (found by the RESP expiry
    // test).
    #[tokio::test]
    async fn a_batch_nobody_waits_for_is_written_within_the_round_delay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (syncer, host) = started(dir.path());
        let cells = cells(dir.path(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(cells[0].apply(&*host, &put("unwatched")).expect("apply"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while host.clock().stable() < 1 {
            assert!(std::time::Instant::now() < deadline, "the batch was never made durable");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        syncer.stop();
    }

    /// A file with a few bytes written, and a `done` that records its outcome.
    fn raft_file(dir: &Path, name: &str) -> Arc<File> {
        let f = File::create(dir.join(name)).expect("create");
        std::io::Write::write_all(&mut &f, b"entry").expect("write");
        Arc::new(f)
    }

    /// A `done`'s tag and the kind of error it was given, if any.
    type Outcome = (&'static str, Option<io::ErrorKind>);
    type Outcomes = Arc<Mutex<Vec<Outcome>>>;

    fn recording(outcomes: &Outcomes, tag: &'static str) -> Done {
        let outcomes = outcomes.clone();
        Box::new(move |r: io::Result<()>| {
            outcomes.lock().expect("outcomes").push((tag, r.err().map(|e| e.kind())));
        })
    }

    fn sorted(outcomes: &Outcomes) -> Vec<Outcome> {
        let mut v = outcomes.lock().expect("outcomes").clone();
        v.sort();
        v
    }

    /// Queues files `a` (twice) and `b` through the [`SyncPoint`], a batch
    /// on one chunk, and runs one round, with `failure` injected into its
    /// first sync; returns the files' outcomes and whether the chunk's
    /// batch was acknowledged.
    fn round_with_files(method: SyncMethod, failure: bool) -> (Vec<Outcome>, bool, Arc<Syncer>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(Syncer::new(dir.path(), FsyncMode::Always, method).expect("syncer"));
        let host = Host::new(&syncer);
        let cells = cells(dir.path(), 1);
        let applied = cells[0].apply(&host, &put("k")).expect("apply");
        let (a, b) = (raft_file(dir.path(), "a"), raft_file(dir.path(), "b"));
        let outcomes = Outcomes::default();
        let point: &dyn SyncPoint = &*syncer;
        point.sync(a.clone(), recording(&outcomes, "a1"));
        point.sync(b, recording(&outcomes, "b"));
        point.sync(a, recording(&outcomes, "a2"));
        let (queued, files) = {
            let mut q = syncer.queue();
            assert!(q.kicked, "a queued file starts a round at once");
            (q.cells.drain(..).collect::<Vec<_>>(), std::mem::take(&mut q.files))
        };
        assert_eq!(files.len(), 3);
        assert!(outcomes.lock().expect("outcomes").is_empty(), "nothing is done before its round");
        if failure {
            *syncer.fail_next_sync.lock().expect("hook") = Some(io::ErrorKind::Other);
        }
        syncer.round(&host, queued, files);
        let acked = applied.try_answer().expect("answered after the round").is_ok();
        (sorted(&outcomes), acked, syncer)
    }

    #[test]
    fn files_queued_before_a_round_are_fdatasynced_once_each_by_it() {
        let (outcomes, acked, syncer) = round_with_files(SyncMethod::Fdatasync, false);
        assert_eq!(outcomes, [("a1", None), ("a2", None), ("b", None)]);
        assert!(acked);
        assert_eq!(syncer.stats.files.load(Ordering::Relaxed), 2, "file a once");
        assert_eq!(syncer.stats.syncs.load(Ordering::Relaxed), 3, "the chunk, a and b");
        assert_eq!(syncer.stats.rounds.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_fdatasync_fails_only_its_own_file_or_chunk() {
        // The chunk's sync runs first and takes the injected failure.
        let (outcomes, acked, _) = round_with_files(SyncMethod::Fdatasync, true);
        assert!(!acked);
        assert_eq!(outcomes, [("a1", None), ("a2", None), ("b", None)]);
        // A round of files only: the first file (a) fails, every done of it.
        let dir = tempfile::tempdir().expect("tempdir");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Fdatasync).expect("syncer"),
        );
        let host = Host::new(&syncer);
        let (a, b) = (raft_file(dir.path(), "a"), raft_file(dir.path(), "b"));
        let outcomes = Outcomes::default();
        syncer.sync(a.clone(), recording(&outcomes, "a1"));
        syncer.sync(b, recording(&outcomes, "b"));
        syncer.sync(a, recording(&outcomes, "a2"));
        let files = std::mem::take(&mut syncer.queue().files);
        *syncer.fail_next_sync.lock().expect("hook") = Some(io::ErrorKind::Other);
        syncer.round(&host, Vec::new(), files);
        let other = Some(io::ErrorKind::Other);
        assert_eq!(sorted(&outcomes), [("a1", other), ("a2", other), ("b", None)]);
    }

    #[test]
    fn a_syncfs_covers_the_files_of_its_round_and_its_failure_fails_them_all() {
        if !syncfs_reports_errors() {
            eprintln!("SKIPPED: this kernel's syncfs does not report errors");
            return;
        }
        let (outcomes, acked, syncer) = round_with_files(SyncMethod::Syncfs, false);
        assert_eq!(outcomes, [("a1", None), ("a2", None), ("b", None)]);
        assert!(acked);
        assert_eq!(syncer.stats.syncs.load(Ordering::Relaxed), 1, "one syncfs for all");
        let (outcomes, acked, _) = round_with_files(SyncMethod::Syncfs, true);
        let other = Some(io::ErrorKind::Other);
        assert_eq!(outcomes, [("a1", other), ("a2", other), ("b", other)]);
        assert!(!acked);
    }

    #[test]
    fn a_file_on_another_file_system_is_fdatasynced_in_a_syncfs_round() {
        if !syncfs_reports_errors() || !Path::new("/dev/shm").is_dir() {
            eprintln!("SKIPPED: no syncfs errors or no /dev/shm");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm");
        let syncer = Arc::new(
            Syncer::new(dir.path(), FsyncMode::Always, SyncMethod::Syncfs).expect("syncer"),
        );
        let same_fs = |p: &Path| {
            std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).expect("stat"))
                == syncer.fs_dev
        };
        if same_fs(other.path()) {
            eprintln!("SKIPPED: /dev/shm is on the data directory's file system");
            return;
        }
        let host = Host::new(&syncer);
        let outcomes = Outcomes::default();
        syncer.sync(raft_file(dir.path(), "here"), recording(&outcomes, "here"));
        syncer.sync(raft_file(other.path(), "there"), recording(&outcomes, "there"));
        let files = std::mem::take(&mut syncer.queue().files);
        syncer.round(&host, Vec::new(), files);
        assert_eq!(sorted(&outcomes), [("here", None), ("there", None)]);
        assert_eq!(syncer.stats.syncs.load(Ordering::Relaxed), 2, "one syncfs, one fdatasync");
    }

    #[test]
    fn files_are_synced_whatever_the_fsync_mode() {
        for fsync in [FsyncMode::Never, FsyncMode::Interval { ms: 60_000 }] {
            let dir = tempfile::tempdir().expect("tempdir");
            let syncer =
                Arc::new(Syncer::new(dir.path(), fsync, SyncMethod::Fdatasync).expect("syncer"));
            let host = Host::new(&syncer);
            let outcomes = Outcomes::default();
            syncer.sync(raft_file(dir.path(), "a"), recording(&outcomes, "a"));
            let files = std::mem::take(&mut syncer.queue().files);
            syncer.round(&host, Vec::new(), files);
            assert_eq!(sorted(&outcomes), [("a", None)], "{fsync:?}");
            assert_eq!(syncer.stats.syncs.load(Ordering::Relaxed), 1, "{fsync:?}");
        }
    }

    #[tokio::test]
    async fn a_raft_log_on_the_running_syncer_is_durable_and_poisoned_by_its_failure() {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

        let dir = tempfile::tempdir().expect("tempdir");
        let (syncer, _host) = started(dir.path());
        // Let the syncer go to sleep on an empty queue: the file must wake it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut log =
            crate::consensus::log_store::LogStore::open(&dir.path().join("raft"), syncer.clone())
                .expect("open");
        let entry = |i| Entry::<crate::consensus::TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
            payload: EntryPayload::Normal(crate::consensus::Command(vec![i as u8])),
        };
        for i in 1..=5 {
            tokio::time::timeout(Duration::from_secs(5), log.blocking_append([entry(i)]))
                .await
                .expect("acknowledged")
                .expect("durable");
        }
        assert!(syncer.stats.files.load(Ordering::Relaxed) >= 1);
        assert_eq!(log.try_get_log_entries(..).await.expect("read").len(), 5);
        *syncer.fail_next_sync.lock().expect("hook") = Some(io::ErrorKind::Other);
        let failed = tokio::time::timeout(Duration::from_secs(5), log.blocking_append([entry(6)]))
            .await
            .expect("answered");
        assert!(failed.is_err(), "the failed sync fails the append");
        assert!(log.blocking_append([entry(7)]).await.is_err(), "and poisons the log");
        syncer.stop();
        // After the stop, a sync is refused rather than left waiting.
        let outcomes = Outcomes::default();
        syncer.sync(raft_file(dir.path(), "late"), recording(&outcomes, "late"));
        assert_eq!(sorted(&outcomes), [("late", Some(io::ErrorKind::Other))]);
        let _ = log.get_log_state().await.expect("state");
    }

    /// Measures Raft logs appending concurrently through the group commit
    /// against a thread and an fdatasync per append. Run with
    /// `cargo test -j1 -p monotable-node --lib -- --ignored raft_logs_share --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement; prints numbers"]
    async fn raft_logs_share_the_rounds_of_the_group_commit() {
        use openraft::storage::RaftLogStorageExt;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

        const LOGS: u64 = 16;
        const APPENDS: u64 = 200;
        let dir = tempfile::tempdir().expect("tempdir");
        let start = |method| {
            let syncer =
                Arc::new(Syncer::new(dir.path(), FsyncMode::Always, method).expect("syncer"));
            let host: Arc<dyn ChunkHost> = Arc::new(Host::new(&syncer));
            syncer.start(Arc::downgrade(&host)).expect("start");
            (syncer, host)
        };
        let (auto, _auto_host) = start(SyncMethod::Auto);
        let (fdatasync, _fdatasync_host) = start(SyncMethod::Fdatasync);
        let (on_auto, on_fdatasync, each): (
            Arc<dyn SyncPoint>,
            Arc<dyn SyncPoint>,
            Arc<dyn SyncPoint>,
        ) = (auto.clone(), fdatasync.clone(), Arc::new(crate::consensus::SyncEach));
        let points = [
            ("group commit, auto", on_auto, Some(&auto)),
            ("group commit, fdatasync", on_fdatasync, Some(&fdatasync)),
            ("a thread and an fdatasync per append", each, None),
        ];
        let stats = |s: Option<&Arc<Syncer>>| {
            s.map_or((0, 0), |s| {
                (s.stats.rounds.load(Ordering::Relaxed), s.stats.syncs.load(Ordering::Relaxed))
            })
        };
        for (k, (name, point, syncer)) in points.into_iter().enumerate() {
            let before = stats(syncer);
            let started_at = Instant::now();
            let mut tasks = Vec::new();
            for g in 0..LOGS {
                let path = dir.path().join(format!("{k}-{g}"));
                let mut log = crate::consensus::log_store::LogStore::open(&path, point.clone())
                    .expect("open");
                tasks.push(tokio::spawn(async move {
                    for i in 1..=APPENDS {
                        let entry = Entry::<crate::consensus::TypeConfig> {
                            log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                            payload: EntryPayload::Normal(crate::consensus::Command(vec![7; 100])),
                        };
                        log.blocking_append([entry]).await.expect("durable");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            let elapsed = started_at.elapsed();
            let appends = LOGS * APPENDS;
            let after = stats(syncer);
            println!(
                "{name}: {LOGS} logs x {APPENDS} appends of 100 bytes: {:.0} ms, {:.1} us/append, {} rounds, {} syncs",
                elapsed.as_secs_f64() * 1e3,
                elapsed.as_secs_f64() * 1e6 / appends as f64,
                after.0 - before.0,
                after.1 - before.1,
            );
        }
        auto.stop();
        fdatasync.stop();
    }
}
