//! The part of a chunk that every thread shares: the chunk itself behind a
//! lock, and its writes on their way to durability.
//!
//! Writes do not go through the chunk's actor. A request task applies its
//! batch itself under the cell's write lock ([`ChunkCell::apply`]): seq,
//! log entry, index, in that one critical section, so a read-modify-write
//! command on a hot key costs no hand-off between threads. Reads take the
//! read lock. Durability is the node's group commit
//! ([`crate::group_commit`]): under `--fsync always` the batch's
//! acknowledgement waits here until the syncer's next round has synced it.
//! The actor ([`crate::chunk_actor`]) keeps what is slow and rare:
//! compaction, splits, shutdown.
//!
//! Lock order: `state`, then `commits`; neither is ever held across an
//! fsync or an await.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use actix::Addr;
use monotable_proto::{CommitToken, WriteOp};
use tokio::sync::oneshot;

use crate::chunk_actor::{ChunkActor, Maintain};
use crate::chunk_host::ChunkHost;
use crate::error::{NodeError, NodeResult};
use crate::group_commit::Syncer;
use crate::storage::chunk::{BatchOp, Chunk, ChunkError};
use crate::storage::chunk_log::{exchange_dirs, sync_dir, LogError, SyncJob};

/// The change journal is trimmed once it holds this many entries.
const JOURNAL_TRIM_AT_ENTRIES: usize = 4096;

// One cell per chunk, and almost all are open: boxing the chunk would add
// an indirection to every read for no memory worth saving.
#[allow(clippy::large_enum_variant)]
pub enum CellState {
    Open(Chunk),
    /// The chunk could not be opened; the reason says why.
    Unavailable(String),
    /// Split or dropped: its keys live elsewhere now, route again.
    Gone,
}

/// Whom to tell that a batch is durable (or why it never will be).
pub type Ack = oneshot::Sender<NodeResult<CommitToken>>;

/// An applied batch waiting for durability: its seq and whom to tell.
pub type Pending = (u64, Ack);

/// A batch applied by [`ChunkCell::apply`], on its way to durability.
pub struct Applied {
    seq: u64,
    ack: oneshot::Receiver<NodeResult<CommitToken>>,
    cell: Arc<ChunkCell>,
    syncer: Arc<Syncer>,
}

impl Applied {
    /// Waits until the batch is durable as the node's `--fsync` mode
    /// defines it. The first writer to wait starts the group commit's round
    /// (so a burst of batches applied before anyone waits shares one), and
    /// under `--fsync interval|never`, where a round is only a write, runs
    /// it on its own thread.
    pub async fn durable(self) -> NodeResult<CommitToken> {
        let Applied { mut ack, cell, syncer, .. } = self;
        match ack.try_recv() {
            Ok(answer) => return answer,
            Err(oneshot::error::TryRecvError::Closed) => return Err(group_commit_stopped()),
            Err(oneshot::error::TryRecvError::Empty) => syncer.start_round(&cell),
        }
        ack.await.unwrap_or_else(|_| Err(group_commit_stopped()))
    }

    /// The seq the batch was applied at.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The answer, if the round has given it already.
    #[cfg(test)]
    pub fn try_answer(mut self) -> Option<NodeResult<CommitToken>> {
        self.ack.try_recv().ok()
    }
}

fn group_commit_stopped() -> NodeError {
    NodeError::Internal("the group commit stopped before answering".into())
}

/// Why a group of writes failed, and whether the chunk may take more.
#[derive(Debug)]
pub struct GroupFailure {
    pub reason: String,
    /// A failed fsync (the page cache may have dropped the data) or a log
    /// in an unknown state: the chunk takes no more writes. A write refused
    /// before any fsync left the log as it was: the next group may succeed
    /// (a full disk with room again).
    pub poisons: bool,
}

impl GroupFailure {
    pub fn poisoning(reason: String) -> Self {
        GroupFailure { reason, poisons: true }
    }

    pub fn of_write_out(e: &ChunkError) -> Self {
        let poisons = !matches!(e, ChunkError::Log(LogError::WriteRefused { .. }));
        GroupFailure { reason: e.to_string(), poisons }
    }
}

/// A chunk's part of one round of the group commit.
pub struct Round {
    /// The batches the round acknowledges, in seq order.
    pub batch: Vec<Pending>,
    /// What makes them durable; `Err` if writing them out failed already.
    pub job: Result<Option<SyncJob>, GroupFailure>,
    /// The chunk's range, while it was open: views still hear of the
    /// batches if a split closes the cell before the round ends.
    pub range_id: Option<u64>,
}

/// Acknowledgements waiting for the group commit, and the chunk's health.
#[derive(Default)]
struct Commits {
    /// Applied batches the next round acknowledges, in seq order.
    pending: Vec<Pending>,
    /// The cell is in the syncer's queue.
    queued: bool,
    /// Set after an fsync or write failure: no further writes are
    /// accepted, since the log's state on disk is unknown. Reads of durable
    /// data go on.
    poisoned: Option<String>,
}

/// What the writer of a batch does after releasing the chunk's lock.
struct AfterCommit {
    range_id: u64,
    journal_len: usize,
    needs_maintenance: bool,
}

/// Why [`ChunkCell::adopt`] did not adopt a chunk.
pub enum Adopt {
    /// Nothing changed: the chunk offered, and why.
    Refused(Box<Chunk>, String),
    /// Adopted, but the directories' exchange was not made durable.
    Failed(String),
}

pub struct ChunkCell {
    pub id: u64,
    /// A std lock: never held across an await, and held for writing only
    /// for in-memory work (indexing a batch, handing it to the kernel,
    /// swapping in a compacted index), so blocking a thread briefly is
    /// cheaper than an async lock.
    state: RwLock<CellState>,
    /// A std mutex, taken only with `state` held for writing or for a
    /// moment to read the chunk's health.
    commits: Mutex<Commits>,
    /// The chunk's actor, told when the chunk needs maintenance; set once,
    /// right after it starts.
    actor: OnceLock<Addr<ChunkActor>>,
    /// The range's chunk size limit: a chunk over it splits.
    pub chunk_size_max_bytes: u64,
    /// A `Maintain` is on its way to the actor: not sent again until it
    /// ran.
    maintenance_asked: AtomicBool,
    /// The chunk never splits on its own: every replica of a replicated
    /// chunk holds the same keys, so a split is one decision for all of
    /// them (a Raft command); the actor asks its host for one instead
    /// ([`ChunkHost::split_wanted`]).
    no_splits: AtomicBool,
    /// The chunk is a replica whose writes a Raft log keeps durable: a
    /// group commit round that fails its writes closes it (see
    /// `close_replica`) instead of leaving it to serve without them.
    raft_durable: AtomicBool,
}

impl ChunkCell {
    pub fn new(id: u64, state: CellState, chunk_size_max_bytes: u64) -> Self {
        ChunkCell {
            id,
            state: RwLock::new(state),
            commits: Mutex::default(),
            actor: OnceLock::new(),
            chunk_size_max_bytes,
            maintenance_asked: AtomicBool::new(false),
            no_splits: AtomicBool::new(false),
            raft_durable: AtomicBool::new(false),
        }
    }

    /// From now on the chunk is a replica kept durable by a Raft log (see
    /// `raft_durable`).
    pub fn mark_raft_durable(&self) {
        self.raft_durable.store(true, Ordering::Release);
    }

    /// Whether the chunk is a replica kept durable by a Raft log.
    pub fn is_raft_durable(&self) -> bool {
        self.raft_durable.load(Ordering::Acquire)
    }

    /// From now on the chunk never splits on its own (see `no_splits`).
    pub fn forbid_splits(&self) {
        self.no_splits.store(true, Ordering::Release);
    }

    /// Whether the chunk splits on its own when it grows past its size
    /// limit (else its actor asks the host for a split).
    pub fn splits(&self) -> bool {
        !self.no_splits.load(Ordering::Acquire)
    }

    pub fn set_actor(&self, addr: Addr<ChunkActor>) {
        let _ = self.actor.set(addr);
    }

    pub fn read(&self) -> RwLockReadGuard<'_, CellState> {
        // Every critical section either completes or panics before touching
        // the state, so a poisoned lock still guards a consistent chunk.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, CellState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn commits(&self) -> MutexGuard<'_, Commits> {
        // Commit bookkeeping is single pushes and takes: still consistent
        // after a panic elsewhere.
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read against the chunk, or says why it cannot be read.
    pub fn with_chunk<T>(&self, f: impl FnOnce(&Chunk) -> NodeResult<T>) -> NodeResult<T> {
        match &*self.read() {
            CellState::Open(chunk) => f(chunk),
            CellState::Unavailable(reason) => Err(self.unavailable(reason)),
            CellState::Gone => Err(NodeError::Moved),
        }
    }

    /// Runs an update against the chunk; `None` if it is not open.
    pub fn with_chunk_mut<T>(&self, f: impl FnOnce(&mut Chunk) -> T) -> Option<T> {
        match &mut *self.write() {
            CellState::Open(chunk) => Some(f(chunk)),
            _ => None,
        }
    }

    /// Takes the chunk out (the cell is `Gone` from now on) with the
    /// batches still waiting for the group commit, which the caller must
    /// answer. Call with the write guard of this cell.
    pub fn take_locked(&self, state: &mut CellState) -> (Option<Chunk>, Vec<Pending>) {
        let chunk = match std::mem::replace(state, CellState::Gone) {
            CellState::Open(chunk) => Some(chunk),
            _ => None,
        };
        (chunk, std::mem::take(&mut self.commits().pending))
    }

    /// Whether batches wait for the group commit.
    pub fn has_pending(&self) -> bool {
        !self.commits().pending.is_empty()
    }

    /// Takes the batches waiting for the group commit, for a caller that
    /// holds the write lock and answers them itself.
    pub fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut self.commits().pending)
    }

    /// Closes the cell for good (its range was dropped) and returns its
    /// chunk, whose files the caller removes. The batches still waiting for
    /// the group commit fail with `Moved` (a writer routing again finds the
    /// range gone) and their seqs are settled on the clock.
    pub fn retire(&self, host: &dyn ChunkHost) -> Option<Chunk> {
        let (chunk, pending) = {
            let mut state = self.write();
            self.take_locked(&mut state)
        };
        fail_batches(host, pending, || NodeError::Moved);
        chunk
    }

    pub fn unavailable(&self, reason: &str) -> NodeError {
        NodeError::Unavailable { chunk: self.id, reason: reason.to_owned() }
    }

    /// Why the chunk takes no writes, if it does not.
    pub fn poisoned(&self) -> Option<String> {
        self.commits().poisoned.clone()
    }

    /// A replica kept durable by a Raft log whose chunk lost writes it had
    /// applied (a write out refused by a full disk takes them out of the
    /// chunk, a failed sync leaves them unknown): it must not serve reads
    /// or take more writes without them, so the chunk closes as
    /// unavailable; the replica stops at its next command and applies them
    /// again from its Raft log when the node restarts.
    fn close_replica(&self, reason: &str) {
        tracing::error!(chunk = self.id, %reason, "replicated chunk lost applied writes; it closes until the node restarts");
        self.poison(reason.to_owned());
        *self.write() = CellState::Unavailable(format!(
            "{reason}; this replica closed and applies its writes again from its Raft log after \
             the node restarts"
        ));
    }

    /// Opens again, from its files, a replicated chunk that
    /// `close_replica` closed (once its disk has room again, say):
    /// what its Raft log holds after the replica's last snapshot is then
    /// applied again on top. Does nothing to an open chunk.
    ///
    /// Errors: the chunk's files cannot be opened (the cell stays closed).
    pub fn reopen_replica(&self, host: &dyn ChunkHost) -> NodeResult<()> {
        if !self.is_raft_durable() || !matches!(&*self.read(), CellState::Unavailable(_)) {
            return Ok(());
        }
        let dir = host.chunk_dir(self.id);
        let failed = |e: String| self.unavailable(&format!("reopening {}: {e}", dir.display()));
        let descriptor = crate::storage::descriptor::ChunkDescriptor::read(&dir)
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| failed("no chunk descriptor".into()))?;
        let segment = host.segment_size_for(descriptor.options.chunk_size_max_bytes);
        let (chunk, _) =
            Chunk::open(&descriptor, &dir, segment).map_err(|e| failed(e.to_string()))?;
        let mut state = self.write();
        if matches!(&*state, CellState::Unavailable(_)) {
            self.commits().poisoned = None;
            *state = CellState::Open(chunk);
            tracing::info!(chunk = self.id, "replicated chunk opened again from its files");
        }
        Ok(())
    }

    /// Replaces the cell's chunk with `chunk`, a copy of another replica's
    /// log opened by [`Chunk::open_placed`] in the directory `placed`, if
    /// the cell's chunk is [`Chunk::replaceable`] and has no batch waiting
    /// for the group commit. The two directories are exchanged in one
    /// atomic rename ([`exchange_dirs`]; a crash leaves one chunk or the
    /// other whole in the chunk's directory), so `placed` holds the old
    /// chunk's files afterwards, for the caller to remove. The chunk reads
    /// as applied at a new seq of the node's clock (which first passes
    /// the copied entries' seqs), like a batch writing it whole.
    ///
    /// Errors: [`Adopt::Refused`] (the cell's chunk is not replaceable, or
    /// the directories cannot be exchanged) with `chunk` back, nothing
    /// changed; [`Adopt::Failed`]: exchanged and in charge, but the
    /// exchange may not survive a crash.
    pub fn adopt(
        &self,
        host: &dyn ChunkHost,
        mut chunk: Chunk,
        placed: &Path,
    ) -> Result<(), Adopt> {
        let mut state = self.write();
        let dir = match &*state {
            CellState::Open(old) if !old.replaceable() => {
                let why = "it holds records, a view follows it, or it is being rewritten";
                return Err(Adopt::Refused(Box::new(chunk), why.into()));
            }
            CellState::Open(old) => old.dir().to_owned(),
            _ => return Err(Adopt::Refused(Box::new(chunk), "the chunk is closed".into())),
        };
        if !self.commits().pending.is_empty() {
            let why = "writes to it wait for the group commit";
            return Err(Adopt::Refused(Box::new(chunk), why.into()));
        }
        if let Err(e) = exchange_dirs(placed, &dir) {
            return Err(Adopt::Refused(
                Box::new(chunk),
                format!("exchanging the directories: {e}"),
            ));
        }
        // From here the new chunk is in charge on disk, so it is in memory
        // too, whatever fails next.
        let clock = host.clock();
        clock.observe(chunk.last_seq());
        let seq = clock.allocate();
        chunk.settle_adopted(&dir, seq);
        *state = CellState::Open(chunk);
        drop(state);
        clock.resolve([seq]);
        // Off the cell's lock: the syncs wait for the disk.
        let synced = [&dir, placed].iter().filter_map(|d| d.parent()).try_for_each(sync_dir);
        synced.map_err(|e| Adopt::Failed(format!("syncing the exchanged directories: {e}")))
    }

    pub fn poison(&self, reason: String) {
        tracing::error!(chunk = self.id, %reason, "chunk stops accepting writes");
        self.commits().poisoned.get_or_insert(reason);
    }

    /// Applies one batch atomically on the calling thread: takes the next
    /// seq, logs and indexes the batch, and queues the chunk for the group
    /// commit's next round, which answers the returned [`Applied`] once
    /// the batch is durable (handed to the kernel, and synced under
    /// `--fsync always`). The batch is readable (at
    /// [`crate::storage::chunk::ReadAt::Applied`]) on return.
    ///
    /// Errors: `Moved` if a key is outside the chunk or the chunk split or
    /// went; `Unavailable` on a poisoned chunk; the storage's refusal (key
    /// or value over its limit, a full disk) with nothing applied.
    pub fn apply<O: BatchOp>(
        self: &Arc<Self>,
        host: &dyn ChunkHost,
        ops: &[O],
    ) -> NodeResult<Applied> {
        let clock = host.clock();
        let mut state = self.write();
        let chunk = match &mut *state {
            CellState::Open(chunk) => chunk,
            CellState::Unavailable(reason) => return Err(self.unavailable(reason)),
            CellState::Gone => return Err(NodeError::Moved),
        };
        if !ops.iter().all(|op| chunk.meta.contains(op.key())) {
            return Err(NodeError::Moved);
        }
        let mut commits = self.commits();
        if let Some(reason) = &commits.poisoned {
            return Err(self.unavailable(reason));
        }
        let seq = clock.allocate();
        if let Err(e) = chunk.apply_batch(seq, ops) {
            clock.resolve([seq]);
            return Err(match e {
                // Refused before anything was logged: the chunk is unharmed.
                ChunkError::Refused(refused) => NodeError::client(refused.code, refused.message),
                e => {
                    let reason = e.to_string();
                    drop(commits);
                    self.poison(reason.clone());
                    self.unavailable(&reason)
                }
            });
        }
        let (tx, rx) = oneshot::channel();
        commits.pending.push((seq, tx));
        let queue = !std::mem::replace(&mut commits.queued, true);
        drop(commits);
        drop(state);
        let syncer = host.syncer().clone();
        if queue {
            syncer.enqueue(self.clone());
        }
        Ok(Applied { seq, ack: rx, cell: self.clone(), syncer })
    }

    /// Applies one batch that spans chunks atomically: every chunk of
    /// `parts` is locked (in id order, so two such batches never wait on
    /// each other in a cycle), one seq is taken for all the parts (or
    /// `seq` is used: a batch completed again at start), `record(seq)`
    /// makes the whole batch durable elsewhere (the node's intent log)
    /// before any part is applied, and each chunk then logs and indexes its
    /// part under that seq. The seq settles once every part is durable.
    /// Nothing later reaches these chunks before their part: what a chunk
    /// logs after the seq, it logs after the part.
    ///
    /// Errors: `Moved` if a key is outside its chunk or a chunk split or
    /// went, `Unavailable` on a poisoned chunk, or `record`'s error, with
    /// nothing applied; a log failure part way through poisons that chunk
    /// and is returned, while the parts already applied stay (the intent
    /// log completes the batch at the next start).
    pub fn apply_across(
        host: &dyn ChunkHost,
        parts: &[(Arc<ChunkCell>, Vec<WriteOp>)],
        seq: Option<u64>,
        record: impl FnOnce(u64) -> NodeResult<()>,
    ) -> NodeResult<Vec<Applied>> {
        let clock = host.clock();
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by_key(|&i| parts[i].0.id);
        let mut states = Vec::with_capacity(parts.len());
        for &i in &order {
            let (cell, ops) = &parts[i];
            let state = cell.write();
            match &*state {
                CellState::Open(chunk) if ops.iter().all(|op| chunk.meta.contains(op.key())) => {}
                CellState::Open(_) | CellState::Gone => return Err(NodeError::Moved),
                CellState::Unavailable(reason) => return Err(cell.unavailable(reason)),
            }
            if let Some(reason) = &cell.commits().poisoned {
                return Err(cell.unavailable(reason));
            }
            states.push((i, state));
        }
        let count = u32::try_from(parts.len()).expect("far fewer chunks than 4 billion");
        let seq = match seq {
            Some(seq) => {
                clock.adopt(seq, count);
                seq
            }
            None => clock.allocate_parts(count),
        };
        if let Err(e) = record(seq) {
            clock.resolve(std::iter::repeat_n(seq, parts.len()));
            return Err(e);
        }
        let mut applied = Vec::with_capacity(parts.len());
        let mut failure = None;
        let mut to_queue = Vec::new();
        for (done, (i, state)) in states.iter_mut().enumerate() {
            let (cell, ops) = &parts[*i];
            let CellState::Open(chunk) = &mut **state else { unreachable!("checked above") };
            let mut commits = cell.commits();
            if let Err(e) = chunk.apply_batch(seq, ops) {
                clock.resolve(std::iter::repeat_n(seq, parts.len() - done));
                drop(commits);
                let reason = e.to_string();
                if !matches!(e, ChunkError::Refused(_)) {
                    cell.poison(reason.clone());
                }
                failure = Some(cell.unavailable(&reason));
                break;
            }
            let (tx, rx) = oneshot::channel();
            commits.pending.push((seq, tx));
            if !std::mem::replace(&mut commits.queued, true) {
                to_queue.push(cell.clone());
            }
            applied.push(Applied {
                seq,
                ack: rx,
                cell: cell.clone(),
                syncer: host.syncer().clone(),
            });
        }
        drop(states);
        for cell in to_queue {
            host.syncer().enqueue(cell);
        }
        match failure {
            Some(e) => {
                // The parts applied are durable in time; their writers are
                // gone, so a round is started for them.
                for a in &applied {
                    a.syncer.start_round(&a.cell);
                }
                Err(e)
            }
            None => Ok(applied),
        }
    }

    fn after_commit_facts(&self, chunk: &Chunk) -> AfterCommit {
        AfterCommit {
            range_id: chunk.meta.range_id,
            journal_len: chunk.journal_len(),
            needs_maintenance: needs_maintenance(chunk, self.chunk_size_max_bytes),
        }
    }

    /// Tells views reading this range that it changed, trims the change
    /// journal below what they have all seen, and asks the actor for a
    /// split or compaction if the chunk needs one.
    fn after_commit(&self, host: &dyn ChunkHost, after: AfterCommit) {
        if after.journal_len > 0 {
            host.notify_views(after.range_id);
            if after.journal_len >= JOURNAL_TRIM_AT_ENTRIES {
                if let Some(floor) = host.view_floor(after.range_id) {
                    self.with_chunk_mut(|c| c.trim_journal(floor));
                }
            }
        }
        if after.needs_maintenance && !self.maintenance_asked.swap(true, Ordering::AcqRel) {
            match self.actor.get() {
                Some(actor) => actor.do_send(Maintain),
                None => self.maintenance_asked.store(false, Ordering::Release),
            }
        }
    }

    /// The actor ran the maintenance it was asked for.
    pub fn maintenance_done(&self) {
        self.maintenance_asked.store(false, Ordering::Release);
    }

    /// The group commit's first step for this chunk: hands its new entries
    /// to the kernel and takes the batches they acknowledge, with what
    /// will make them durable when `sync` (else the log keeps collecting
    /// its unsynced files for a later [`ChunkCell::take_sync_job`]).
    pub fn begin_round(&self, sync: bool) -> Round {
        let mut state = self.write();
        let mut commits = self.commits();
        commits.queued = false;
        let batch = std::mem::take(&mut commits.pending);
        let range_id = match &*state {
            CellState::Open(chunk) => Some(chunk.meta.range_id),
            _ => None,
        };
        let job = match &mut *state {
            CellState::Open(chunk) => chunk
                .write_out()
                .and_then(|()| if sync { chunk.take_sync_job().map(Some) } else { Ok(None) })
                .map_err(|e| GroupFailure::of_write_out(&e)),
            // Whoever closed the cell answered what it held.
            _ if batch.is_empty() => Ok(None),
            _ => Err(GroupFailure::poisoning(
                "the chunk closed before its writes were synced".into(),
            )),
        };
        Round { batch, job, range_id }
    }

    /// What makes everything this chunk handed to the kernel durable
    /// (`--fsync interval`); `None` if it is closed.
    pub fn take_sync_job(&self) -> Option<Result<SyncJob, GroupFailure>> {
        self.with_chunk_mut(|c| {
            c.take_sync_job().map_err(|e| GroupFailure::poisoning(e.to_string()))
        })
    }

    /// The group commit's last step: the sync ended (`failed` says how);
    /// acknowledges or fails the round's batches.
    pub fn end_round(&self, host: &dyn ChunkHost, round: Round, failed: Option<std::io::Error>) {
        let settled = self.settle_round(round, failed);
        host.clock().resolve(settled.seqs());
        settled.answer(host);
    }

    /// The first half of [`ChunkCell::end_round`], for a round over many
    /// chunks: marks the batches durable in the chunk (or fails them). The
    /// caller then resolves the seqs of every chunk of the round on the
    /// clock at once (one wake-up of the tasks waiting for a stable seq,
    /// not one per chunk) and calls [`SettledRound::answer`].
    pub fn settle_round(&self, round: Round, failed: Option<std::io::Error>) -> SettledRound<'_> {
        let Round { batch, job, range_id } = round;
        let result = match (job, failed) {
            (Err(f), _) => Err(f),
            (Ok(_), Some(e)) => Err(GroupFailure::poisoning(format!("fsync failed: {e}"))),
            (Ok(_), None) => Ok(()),
        };
        if let Err(f) = &result {
            if self.is_raft_durable() {
                self.close_replica(&f.reason);
            }
        }
        // The chunk must show a batch as durable before the clock calls its
        // seq stable: a snapshot or a view round at the stable seq reads
        // this chunk only up to what it shows as durable, and would skip
        // the batch for good if the order were the other way round.
        let mut after = None;
        if let (Ok(()), Some(&(last, _))) = (&result, batch.last()) {
            after = self.with_chunk_mut(|chunk| {
                chunk.mark_durable(last);
                self.after_commit_facts(chunk)
            });
        }
        SettledRound { cell: self, batch, result, after, range_id }
    }
}

/// A chunk's batches of a round, marked durable (or failed), whose seqs
/// the caller resolves on the clock before it answers them: a writer told
/// its batch is durable may at once ask for a snapshot that includes it.
pub struct SettledRound<'a> {
    cell: &'a ChunkCell,
    batch: Vec<Pending>,
    result: Result<(), GroupFailure>,
    after: Option<AfterCommit>,
    /// The chunk's range, for views to hear of batches whose cell a split
    /// closed meanwhile.
    range_id: Option<u64>,
}

impl SettledRound<'_> {
    /// The seqs to resolve.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.batch.iter().map(|(seq, _)| *seq)
    }

    /// Answers the writers (after the caller resolved [`Self::seqs`]).
    pub fn answer(self, host: &dyn ChunkHost) {
        let SettledRound { cell, batch, result, after, range_id } = self;
        match result {
            Ok(()) => {
                let acknowledged = !batch.is_empty();
                for (seq, ack) in batch {
                    let _ = ack.send(Ok(CommitToken { chunk: cell.id, seq }));
                }
                match (after, range_id) {
                    (Some(after), _) => cell.after_commit(host, after),
                    // A split closed the cell meanwhile: the halves hold
                    // these batches, and views reading the range must
                    // still hear of them now that their seqs are settled
                    // (the split told them only of the batches it answered).
                    (None, Some(range_id)) if acknowledged => host.notify_views(range_id),
                    (None, _) => {}
                }
            }
            Err(GroupFailure { reason, poisons }) => {
                for (_, ack) in batch {
                    let _ = ack.send(Err(cell.unavailable(&reason)));
                }
                if cell.is_raft_durable() {
                    host.replica_closed(cell.id);
                }
                if poisons {
                    cell.poison(reason);
                } else {
                    tracing::warn!(chunk = cell.id, %reason, "write refused; the log is as before it");
                }
            }
        }
    }
}

/// Answers batches that will never be durable with `error`, and settles
/// their seqs on the clock (failed for good). Every batch that fails must
/// pass here: a seq left in flight holds the stable seq below it for good,
/// and with it every view round and fresh read of the node.
pub fn fail_batches(host: &dyn ChunkHost, pending: Vec<Pending>, error: impl Fn() -> NodeError) {
    host.clock().resolve(pending.iter().map(|(seq, _)| *seq));
    for (_, ack) in pending {
        let _ = ack.send(Err(error()));
    }
}

/// Whether a chunk should split (over its size limit) or compact (mostly
/// garbage).
pub fn needs_maintenance(chunk: &Chunk, chunk_size_max_bytes: u64) -> bool {
    (chunk.live_bytes() > chunk_size_max_bytes && chunk.can_split())
        || chunk.wants_compaction(compaction_min_bytes(chunk_size_max_bytes))
}

/// The least log size worth compacting.
pub fn compaction_min_bytes(chunk_size_max_bytes: u64) -> u64 {
    (chunk_size_max_bytes / 2).max(4096)
}
