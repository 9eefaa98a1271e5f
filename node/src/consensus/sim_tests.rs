//! Simulation of Raft groups under seeded faults, checked for safety
//! through the [`Group`] API only.
//!
//! A cluster of 3-5 nodes runs two groups each over one in-process
//! transport ([`SimNet`]) that drops, delays and reorders messages and cuts
//! the network in two for a while (a random minority, or a group's
//! leader). Nodes crash and restart from their storage: on [`MemBackend`]
//! a crash is a power failure (the log loses what was not flushed), on the
//! file log store a process crash. Nodes 4 and 5, where a seed has them,
//! join groups as voters mid-run, a voter (the leader, in some seeds) is
//! removed, and a replica moves as the node's balancer moves one (a
//! snapshot and a purge of the leader's log, a learner on a node without
//! a replica, its promotion, the old voter's removal). A replica sent a
//! snapshot copies its data first, as a chunk replica copies segments: a
//! gate ([`SlowCopy`]) answers "not ready" for a while, or fails a copy
//! once. Concurrent clients put, CAS and read 3 keys per group
//! through random gateway nodes, following `NotLeader` to the leader named,
//! and record a history of invocations and returns. An op with no answer
//! within [`OP_TIMEOUT`] stays open forever and its client is replaced by a
//! new one (a fresh id), as Jepsen replaces a crashed process.
//!
//! Checked:
//! - every key's history is linearizable (a Wing-Gong search with
//!   memoization, [`check_register`]; cross-checked against stateright's
//!   `LinearizabilityTester` on small random histories);
//! - leader election safety, sampled from [`Group::status`]: openraft's
//!   default leader ids are (term, node) pairs, so two nodes may lead one
//!   term in turn (counted, not a violation); no leadership may start
//!   under a lower leader id than one already seen;
//! - a replica's term never goes back, across restarts too;
//! - once faults are healed and a final write committed, every member
//!   replica has the same machine state (same writes in the same order),
//!   it holds every acknowledged write, and no write twice.
//!
//! Deterministic per seed: the cluster size, the fault schedule (which
//! nodes crash or are cut off, when and for how long), the membership
//! changes and each client's choice of keys, ops and values. Not
//! deterministic: the interleaving of tasks and real-time timers (openraft
//! runs on tokio's real clock; its elections, and so which message a
//! per-message fault hits, depend on scheduling), so a seed reproduces the
//! same kind of run, not the same run.
//!
//! Environment: `MONOTABLE_SIM_SEED=n` runs seed `n` alone;
//! `MONOTABLE_SIM_SEEDS` runs a count (`200`), a range (`100..200`) or a
//! list (`3,17,42`) of seeds, on each log store. Default: [`DEFAULT_SEEDS`]
//! seeds on a model of a disk that loses unflushed writes in a crash, and
//! [`DEFAULT_FILE_SEEDS`] on the node's file log store ([`LogStore`]).
//! `MONOTABLE_SIM_VERBOSE=1` prints each seed's schedule and phases; a
//! history that is not linearizable is written whole to a file in the
//! temporary directory, named in the failure.
//!
//! The checkers are shown to fail: `sim_catches_*` inject a bug (reads
//! without a barrier; a log that acknowledges appends before they are
//! durable) and expect a violation.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, StorageError, StorageIOError, Vote};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::futures_lite::BoxedFuture;
use super::log_store::LogStore;
use super::machine_store::MachineStore;
use super::replica_store::{Prepared, SnapshotGate};
use super::{
    decode, encode, ConsensusError, Group, GroupConfig, GroupId, Machine, NodeId, RaftRpc,
    RaftRpcReply, SyncEach, Timing, Transport, TransportError, TypeConfig,
};

/// Seeds run when the environment names none, on the disk model and on
/// the file log store.
const DEFAULT_SEEDS: u64 = 6;
const DEFAULT_FILE_SEEDS: u64 = 3;

/// Faster than [`Timing::FAST`] so a few seconds hold many elections.
const SIM_TIMING: Timing = Timing { heartbeat_ms: 30, election_min_ms: 150, election_max_ms: 300 };

/// A client gives up on an op (its outcome is then unknown) after this.
const OP_TIMEOUT: Duration = Duration::from_millis(1500);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// The replicated machine: a few registers per group.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum KvOp {
    /// Replies with the previous value (0: never written).
    Put { key: u8, value: u64 },
    /// Writes `new` if the value is `expect`; replies with the previous value.
    Cas { key: u8, expect: u64, new: u64 },
    /// Not a command: served by a read of the machine.
    Read { key: u8 },
}

impl KvOp {
    fn key(&self) -> u8 {
        match *self {
            KvOp::Put { key, .. } | KvOp::Cas { key, .. } | KvOp::Read { key } => key,
        }
    }
}

/// What an op returned: the register's value before it (after it, for a
/// read, which is the same thing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct KvRet {
    prev: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KvMachine {
    values: BTreeMap<u8, u64>,
    /// Every write applied, in order: (log index, key, value).
    writes: Vec<(u64, u8, u64)>,
}

impl KvMachine {
    fn decode(bytes: &[u8]) -> KvMachine {
        rmp_serde::from_slice(bytes).expect("a KvMachine snapshot")
    }
}

impl Machine for KvMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        let op: KvOp = rmp_serde::from_slice(command).expect("a KvOp command");
        let prev = self.values.get(&op.key()).copied().unwrap_or(0);
        let write = match op {
            KvOp::Put { key, value } => Some((key, value)),
            KvOp::Cas { key, expect, new } if expect == prev => Some((key, new)),
            KvOp::Cas { .. } | KvOp::Read { .. } => None,
        };
        if let Some((key, value)) = write {
            self.values.insert(key, value);
            self.writes.push((index, key, value));
        }
        encode(&KvRet { prev })
    }

    fn snapshot(&self) -> Vec<u8> {
        encode(self)
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        *self = rmp_serde::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Log storage: a model of a disk, and the seam for real log stores.

/// Bugs the simulation can inject to show that its checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// Gateways answer reads from their own replica's machine without a
    /// read barrier.
    StaleReads,
    /// The log store reports appends flushed before they are durable.
    AckBeforeDurable,
}

/// Where the sim's groups keep their logs. `open` is called at every
/// (re)start of a replica; `crash` when its node loses power.
trait LogBackend: Send + Sync + 'static {
    type Store: RaftLogStorage<TypeConfig>;
    fn name(&self) -> &'static str;
    fn open(&self, node: NodeId, group: GroupId, dir: &Path, seed: u64) -> Self::Store;
    /// Drops what a power failure loses. Called before the replica is shut
    /// down; unfinished flushes fail (openraft's core waits for each append's
    /// flush without watching for shutdown, so they must not hang).
    fn crash(&self, node: NodeId, group: GroupId);
}

/// One log's contents, as a disk holds them.
#[derive(Clone, Default)]
struct LogImage {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

struct DiskState {
    /// What reads see: every write so far (the page cache).
    cache: LogImage,
    /// What survives a power failure: the cache as of the last flush.
    durable: LogImage,
    /// Bumped by a crash: stores opened before it fail every call.
    epoch: u64,
    pending: Vec<LogFlushed<TypeConfig>>,
    flush_scheduled: bool,
    rng: StdRng,
}

/// A disk holding one log: writes land in a page cache and become durable
/// when a flush (a task a few ms later) copies the cache, in the order they
/// were made; only then are the appends acknowledged. A vote is durable
/// when `save_vote` returns (it flushes everything before it too).
#[derive(Clone)]
struct MemDisk {
    state: Arc<Mutex<DiskState>>,
    bug: Bug,
    /// Whether `save_committed` keeps anything (openraft makes it
    /// optional; without it a restart knows only the snapshot's index).
    keep_committed: bool,
}

fn io_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

impl MemDisk {
    fn new(seed: u64, bug: Bug, keep_committed: bool) -> MemDisk {
        MemDisk {
            state: Arc::new(Mutex::new(DiskState {
                cache: LogImage::default(),
                durable: LogImage::default(),
                epoch: 0,
                pending: Vec::new(),
                flush_scheduled: false,
                rng: StdRng::seed_from_u64(seed),
            })),
            bug,
            keep_committed,
        }
    }

    fn schedule_flush(&self, s: &mut DiskState) {
        if s.flush_scheduled {
            return;
        }
        s.flush_scheduled = true;
        let delay = match self.bug {
            // Lazy flushes, so acknowledged entries stay volatile for long.
            Bug::AckBeforeDurable => s.rng.gen_range(200..800),
            _ => s.rng.gen_range(0..6),
        };
        let epoch = s.epoch;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let callbacks = {
                let mut s = lock(&me.state);
                if s.epoch != epoch {
                    return;
                }
                s.flush_scheduled = false;
                s.durable = s.cache.clone();
                std::mem::take(&mut s.pending)
            };
            for cb in callbacks {
                cb.log_io_completed(Ok(()));
            }
        });
    }
}

struct MemLogStore {
    disk: MemDisk,
    epoch: u64,
}

impl MemLogStore {
    fn with<T>(&self, f: impl FnOnce(&mut DiskState) -> T) -> Result<T, StorageError<NodeId>> {
        let mut s = lock(&self.disk.state);
        if s.epoch != self.epoch {
            return Err(io_error("the disk lost power"));
        }
        Ok(f(&mut s))
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.with(|s| s.cache.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.with(|s| {
            let last = s.cache.entries.values().next_back().map(|e| e.log_id).or(s.cache.purged);
            LogState { last_purged_log_id: s.cache.purged, last_log_id: last }
        })
    }

    async fn get_log_reader(&mut self) -> MemLogStore {
        MemLogStore { disk: self.disk.clone(), epoch: self.epoch }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.with(|s| {
            s.cache.vote = Some(*vote);
            // A synced write: what was written before it is durable too.
            s.durable = s.cache.clone();
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.with(|s| s.cache.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let keep = self.disk.keep_committed;
        self.with(|s| {
            if keep {
                s.cache.committed = committed;
            }
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.with(|s| s.cache.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let disk = self.disk.clone();
        let early = self.with(|s| {
            for e in entries {
                s.cache.entries.insert(e.log_id.index, e);
            }
            disk.schedule_flush(s);
            if disk.bug == Bug::AckBeforeDurable {
                Some(callback)
            } else {
                s.pending.push(callback);
                None
            }
        })?;
        if let Some(cb) = early {
            cb.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let disk = self.disk.clone();
        self.with(|s| {
            s.cache.entries.split_off(&log_id.index);
            disk.schedule_flush(s);
        })
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let disk = self.disk.clone();
        self.with(|s| {
            s.cache.entries = s.cache.entries.split_off(&(log_id.index + 1));
            s.cache.purged = Some(log_id);
            disk.schedule_flush(s);
        })
    }
}

/// [`MemDisk`]s by (node, group).
struct MemBackend {
    disks: Mutex<BTreeMap<(NodeId, GroupId), MemDisk>>,
    bug: Bug,
    keep_committed: bool,
}

impl MemBackend {
    fn new(bug: Bug, keep_committed: bool) -> MemBackend {
        MemBackend { disks: Mutex::new(BTreeMap::new()), bug, keep_committed }
    }
}

impl LogBackend for MemBackend {
    type Store = MemLogStore;

    fn name(&self) -> &'static str {
        "mem-disk"
    }

    fn open(&self, node: NodeId, group: GroupId, _dir: &Path, seed: u64) -> MemLogStore {
        let mut disks = lock(&self.disks);
        let disk = disks
            .entry((node, group))
            .or_insert_with(|| {
                MemDisk::new(seed ^ (node << 32) ^ group, self.bug, self.keep_committed)
            })
            .clone();
        let epoch = lock(&disk.state).epoch;
        MemLogStore { disk, epoch }
    }

    fn crash(&self, node: NodeId, group: GroupId) {
        let Some(disk) = lock(&self.disks).get(&(node, group)).cloned() else { return };
        let pending = {
            let mut s = lock(&disk.state);
            s.epoch += 1;
            s.cache = s.durable.clone();
            s.flush_scheduled = false;
            std::mem::take(&mut s.pending)
        };
        for cb in pending {
            cb.log_io_completed(Err(std::io::Error::other("power failure")));
        }
    }
}

/// The node's log store in each replica's directory. A crash here is a
/// process crash: what the store wrote stays, synced or not (the sim cannot
/// cut power under a real file system; [`MemBackend`] models that).
struct FileBackend;

impl LogBackend for FileBackend {
    type Store = LogStore;

    fn name(&self) -> &'static str {
        "file-log"
    }

    fn open(&self, _node: NodeId, _group: GroupId, dir: &Path, _seed: u64) -> LogStore {
        LogStore::open(dir, Arc::new(SyncEach)).expect("the log store opens")
    }

    fn crash(&self, _node: NodeId, _group: GroupId) {}
}

// ---------------------------------------------------------------------------
// The network.

struct NodeEntry {
    up: bool,
    incarnation: u64,
    groups: BTreeMap<GroupId, Replica>,
}

#[derive(Default)]
struct NetCounters {
    calls: AtomicU64,
    dropped: AtomicU64,
    cut: AtomicU64,
}

/// The in-process network every node's [`Transport`] goes through.
struct SimNet {
    nodes: Mutex<BTreeMap<NodeId, NodeEntry>>,
    /// Nodes cut off from the others (both ways) while set.
    cut: Mutex<Option<BTreeSet<NodeId>>>,
    /// Per-message drops and delays; off for the final quiet period.
    faults: AtomicBool,
    drop_per_mille: u32,
    rng: Mutex<StdRng>,
    counters: NetCounters,
    /// A test's extra delay for chosen RPCs.
    hold: Mutex<Option<RpcDelay>>,
}

type RpcDelay = Box<dyn Fn(&RaftRpc) -> Duration + Send>;

impl SimNet {
    fn new(seed: u64, drop_per_mille: u32) -> SimNet {
        SimNet {
            nodes: Mutex::new(BTreeMap::new()),
            cut: Mutex::new(None),
            faults: AtomicBool::new(true),
            drop_per_mille,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_f4e7)),
            counters: NetCounters::default(),
            hold: Mutex::new(None),
        }
    }

    fn separated(&self, a: NodeId, b: NodeId) -> bool {
        match &*lock(&self.cut) {
            Some(cut) => cut.contains(&a) != cut.contains(&b),
            None => false,
        }
    }

    /// The target's group if `from` can reach `target` now; `incarnation`
    /// must still match for the reply to come back.
    fn route(
        &self,
        from: NodeId,
        target: NodeId,
        group: GroupId,
    ) -> Result<(u64, Option<Replica>), TransportError> {
        let nodes = lock(&self.nodes);
        let unreachable = |reason: &str| TransportError::Unreachable {
            node: target,
            addr: addr(target),
            reason: reason.to_string(),
        };
        if !nodes.get(&from).is_some_and(|n| n.up) {
            return Err(unreachable("the sender is down"));
        }
        let Some(t) = nodes.get(&target).filter(|n| n.up) else {
            return Err(unreachable("crashed"));
        };
        Ok((t.incarnation, t.groups.get(&group).cloned()))
    }

    fn still_there(&self, from: NodeId, target: NodeId, incarnation: u64) -> bool {
        let nodes = lock(&self.nodes);
        nodes.get(&from).is_some_and(|n| n.up)
            && nodes.get(&target).is_some_and(|n| n.up && n.incarnation == incarnation)
    }

    /// (drop request, drop reply, delay there, delay back)
    fn draw(&self) -> (bool, bool, Duration, Duration) {
        if !self.faults.load(Ordering::Relaxed) {
            return (false, false, Duration::ZERO, Duration::ZERO);
        }
        let mut rng = lock(&self.rng);
        let mut delay = || {
            let ms =
                if rng.gen_ratio(1, 20) { rng.gen_range(20..100) } else { rng.gen_range(0..8) };
            Duration::from_millis(ms)
        };
        let (there, back) = (delay(), delay());
        let p = self.drop_per_mille;
        (rng.gen_ratio(p, 1000), rng.gen_ratio(p, 1000), there, back)
    }

    async fn deliver(
        &self,
        from: NodeId,
        target: NodeId,
        group: GroupId,
        rpc: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let lost = |why: &str| TransportError::Network { node: target, reason: why.to_string() };
        let (incarnation, handle) = self.route(from, target, group)?;
        let (drop_there, drop_back, mut there, back) = self.draw();
        if let Some(hold) = &*lock(&self.hold) {
            there += hold(&decode(&rpc).expect("an RPC"));
        }
        tokio::time::sleep(there).await;
        if self.separated(from, target) {
            self.counters.cut.fetch_add(1, Ordering::Relaxed);
            return Err(lost("partitioned"));
        }
        if drop_there {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(lost("request lost"));
        }
        let Some(handle) = handle else {
            return Ok(encode(&RaftRpcReply::NoGroup));
        };
        if !self.still_there(from, target, incarnation) {
            return Err(lost("target crashed"));
        }
        let reply = handle.handle_rpc(&rpc).await.map_err(|e| lost(&e))?;
        tokio::time::sleep(back).await;
        // A node that crashed while answering may have answered from state
        // it did not keep: its reply is lost with it.
        if !self.still_there(from, target, incarnation) {
            return Err(lost("target crashed while answering"));
        }
        if self.separated(from, target) {
            self.counters.cut.fetch_add(1, Ordering::Relaxed);
            return Err(lost("partitioned"));
        }
        if drop_back {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(lost("reply lost"));
        }
        Ok(reply)
    }

    fn group(&self, node: NodeId, group: GroupId) -> Option<Replica> {
        lock(&self.nodes).get(&node).filter(|n| n.up).and_then(|n| n.groups.get(&group).cloned())
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        lock(&self.nodes).iter().filter(|(_, n)| n.up).map(|(id, _)| *id).collect()
    }

    fn all_replicas(&self) -> Vec<(NodeId, Replica)> {
        let nodes = lock(&self.nodes);
        nodes
            .iter()
            .filter(|(_, n)| n.up)
            .flat_map(|(id, n)| n.groups.values().map(|g| (*id, g.clone())))
            .collect()
    }
}

fn addr(node: NodeId) -> String {
    format!("sim-node-{node}")
}

/// A node's replica of a group: its Raft and its own handle on the machine.
#[derive(Clone)]
struct Replica {
    group: Group,
    machine: MachineStore,
}

impl std::ops::Deref for Replica {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.group
    }
}

impl Replica {
    /// A copy of the machine's state (no barrier).
    fn kv(&self) -> KvMachine {
        KvMachine::decode(&self.machine.with_machine(|m| m.snapshot()))
    }
}

/// One node's end of the [`SimNet`].
struct NodeTransport {
    from: NodeId,
    net: Arc<SimNet>,
}

impl Transport for NodeTransport {
    fn call(
        &self,
        target: NodeId,
        _addr: &str,
        group: GroupId,
        rpc: Vec<u8>,
    ) -> super::futures_lite::BoxedFuture<Result<Vec<u8>, TransportError>> {
        let (net, from) = (self.net.clone(), self.from);
        Box::pin(async move { net.deliver(from, target, group, rpc).await })
    }
}

// ---------------------------------------------------------------------------
// Invariants sampled during the run.

#[derive(Default)]
struct Checks {
    violations: Mutex<Vec<String>>,
    /// Leaderships seen: (group, term, node) -> when first seen (ms).
    leaders: Mutex<BTreeMap<(GroupId, u64, NodeId), u128>>,
    /// (group, term)s led by more than one node.
    shared_terms: AtomicU64,
    max_term: Mutex<BTreeMap<(NodeId, GroupId), u64>>,
}

/// How late the sampler may notice a leadership (metrics are published
/// asynchronously).
const SAMPLING_SLACK_MS: u128 = 200;

impl Checks {
    fn violation(&self, v: String) {
        let mut all = lock(&self.violations);
        if !all.contains(&v) {
            eprintln!("VIOLATION: {v}");
            all.push(v);
        }
    }

    /// Leader election safety in openraft's terms. Its default leader ids
    /// are (term, node) pairs, ordered: a node may be elected in a term
    /// another node led, if its id is higher (so "one leader per term"
    /// does not hold, and is only counted). What must hold: a quorum that
    /// granted a leader id grants no lower one later, so no leadership
    /// starts under a lower id than one already seen.
    fn leader_seen(&self, group: GroupId, term: u64, node: NodeId, now: u128) {
        let mut leaders = lock(&self.leaders);
        if leaders.contains_key(&(group, term, node)) {
            return;
        }
        let higher = leaders
            .range((group, term, node)..(group + 1, 0, 0))
            .find(|(_, &seen)| seen + SAMPLING_SLACK_MS < now)
            .map(|(k, seen)| (*k, *seen));
        if leaders.range((group, term, 0)..(group, term + 1, 0)).next().is_some() {
            self.shared_terms.fetch_add(1, Ordering::Relaxed);
        }
        leaders.insert((group, term, node), now);
        drop(leaders);
        if let Some(((_, t, n), seen)) = higher {
            self.violation(format!(
                "group {group}: node {node} became leader in term {term} at {now} ms, after \
                 node {n} was seen leading term {t} at {seen} ms"
            ));
        }
    }

    fn sample(&self, net: &SimNet, now: u128) {
        for (node, group) in net.all_replicas() {
            let st = group.status();
            // openraft's metrics start out blank (term 0, no membership)
            // until its core has loaded the storage: not a real state.
            if st.term == 0 && st.voters.is_empty() && st.learners.is_empty() {
                continue;
            }
            if st.state == "leader" {
                self.leader_seen(st.group, st.term, node, now);
            }
            let mut max = lock(&self.max_term);
            let seen = max.entry((node, st.group)).or_insert(0);
            if st.term < *seen {
                let v = format!(
                    "group {}: node {node}'s term went back from {} to {}",
                    st.group, *seen, st.term
                );
                drop(max);
                self.violation(v);
            } else {
                *seen = st.term;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The cluster.

#[derive(Debug, Clone)]
struct SimConfig {
    seed: u64,
    /// Node ids 1..=nodes; 1..=3 start as the voters of every group.
    nodes: u64,
    groups: u64,
    keys: u8,
    clients: u64,
    fault_ms: u64,
    drop_per_mille: u32,
    membership: bool,
    /// Crash two nodes at once more often (for durability bugs).
    double_crashes: bool,
    bug: Bug,
}

impl SimConfig {
    fn for_seed(seed: u64, bug: Bug) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = rng.gen_range(3..=5);
        if bug == Bug::AckBeforeDurable {
            // Two crashes at once are a majority.
            nodes = 3;
        }
        SimConfig {
            seed,
            nodes,
            groups: 2,
            keys: 3,
            clients: 5,
            fault_ms: 3000,
            drop_per_mille: rng.gen_range(0..60),
            membership: nodes > 3,
            double_crashes: bug == Bug::AckBeforeDurable,
            bug,
        }
    }
}

/// A fault episode: starts at `at_ms` after the run's start, lasts `for_ms`.
#[derive(Debug, Clone)]
enum Fault {
    Crash(Vec<NodeId>),
    Partition(Vec<NodeId>),
    /// Cuts off whichever node leads the group then.
    IsolateLeader(GroupId),
    /// Crashes whichever node leads the group then.
    CrashLeader(GroupId),
}

#[derive(Debug, Clone)]
enum Change {
    Add(GroupId, NodeId),
    /// Removes a voter: the leader itself if `leader`, else another one.
    Remove(GroupId, bool),
    /// Moves a replica as the node's balancer does: the leader builds a
    /// snapshot and purges its log, a node that holds no replica joins as
    /// a learner (installing the snapshot through the copy gate) and is
    /// promoted, then a voter goes (the leader itself if `leader`).
    Move(GroupId, bool),
}

/// A fault: (start ms, duration ms, what).
type Timed = (u64, u64, Fault);

/// Longest a [`SlowCopy`] holds a snapshot message before answering "not
/// ready" (the node's gate waits 2 s; the simulation's runs are short).
const COPY_WAIT_MS: u64 = 50;

/// A chunk replica's copy of a snapshot's data (segment reads), modelled
/// as a gate: each snapshot a replica is sent takes a time drawn from the
/// seed and the snapshot (up to 700 ms from when it first came) to copy,
/// while the replica answers "not ready" (the leader sends it again); one
/// copy in eight fails once first. A restarted replica copies anew.
struct SlowCopy {
    seed: u64,
    /// By snapshot: when it first came.
    seen: Mutex<BTreeMap<u64, Instant>>,
    failed: Mutex<BTreeSet<u64>>,
    gated: Arc<AtomicU64>,
}

impl SlowCopy {
    fn new(seed: u64, gated: Arc<AtomicU64>) -> SlowCopy {
        SlowCopy { seed, seen: Mutex::default(), failed: Mutex::default(), gated }
    }
}

impl SnapshotGate for SlowCopy {
    fn prepare(&self, snapshot: &[u8], wait: Duration) -> BoxedFuture<Prepared> {
        let id = u64::from(crc32c::crc32c(snapshot)) << 32 | snapshot.len() as u64;
        let mut rng = StdRng::seed_from_u64(self.seed ^ id);
        let copy = Duration::from_millis(rng.gen_range(0..700));
        let fails = rng.gen_ratio(1, 8);
        let first = *lock(&self.seen).entry(id).or_insert_with(Instant::now);
        let gated = self.gated.clone();
        if fails && lock(&self.failed).insert(id) {
            gated.fetch_add(1, Ordering::Relaxed);
            return Box::pin(async { Prepared::Failed("a simulated copy failure".into()) });
        }
        let wait = wait.min(Duration::from_millis(COPY_WAIT_MS));
        Box::pin(async move {
            let ready_at = first + copy;
            tokio::time::sleep(ready_at.saturating_duration_since(Instant::now()).min(wait)).await;
            if Instant::now() >= ready_at {
                return Prepared::Ready;
            }
            gated.fetch_add(1, Ordering::Relaxed);
            let total = copy.as_millis() as u64;
            Prepared::Copying {
                copied_bytes: first.elapsed().as_millis() as u64,
                total_bytes: total,
            }
        })
    }
}

fn schedule(cfg: &SimConfig) -> (Vec<Timed>, Vec<(u64, Change)>) {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 1);
    let ids: Vec<NodeId> = (1..=cfg.nodes).collect();
    let mut faults = Vec::new();
    let mut t = rng.gen_range(100..300);
    while t < cfg.fault_ms.saturating_sub(300) {
        let dur = rng.gen_range(100..600);
        let fault = if cfg.double_crashes && rng.gen_ratio(2, 3) {
            Fault::Crash(ids.choose_multiple(&mut rng, 2).copied().collect())
        } else {
            match rng.gen_range(0..20) {
                0..=5 => {
                    let n = if rng.gen_ratio(1, 4) { 2 } else { 1 };
                    Fault::Crash(ids.choose_multiple(&mut rng, n).copied().collect())
                }
                6..=9 => Fault::CrashLeader(rng.gen_range(1..=cfg.groups)),
                10..=14 => {
                    let n = rng.gen_range(1..=(cfg.nodes as usize) / 2);
                    Fault::Partition(ids.choose_multiple(&mut rng, n).copied().collect())
                }
                _ => Fault::IsolateLeader(rng.gen_range(1..=cfg.groups)),
            }
        };
        faults.push((t, dur, fault));
        t += dur + rng.gen_range(50..300);
    }
    let mut changes = Vec::new();
    if cfg.membership {
        for g in 1..=cfg.groups {
            let new = rng.gen_range(4..=cfg.nodes);
            changes.push((cfg.fault_ms / 5 + rng.gen_range(0..300), Change::Add(g, new)));
            changes.push((cfg.fault_ms / 2 + rng.gen_range(0..300), Change::Remove(g, rng.gen())));
            changes
                .push((cfg.fault_ms * 7 / 10 + rng.gen_range(0..300), Change::Move(g, rng.gen())));
        }
        changes.sort_by_key(|(t, _)| *t);
    }
    (faults, changes)
}

struct Cluster<B: LogBackend> {
    cfg: SimConfig,
    net: Arc<SimNet>,
    backend: B,
    root: tempfile::TempDir,
    /// The groups each node keeps a replica of (started again on restart).
    hosted: Mutex<BTreeMap<NodeId, BTreeSet<GroupId>>>,
    checks: Checks,
    crashes: AtomicU64,
    starting: tokio::sync::Mutex<()>,
    /// Membership changes made.
    changes: AtomicU64,
    /// Of those, replica moves.
    moves: AtomicU64,
    /// By group: the node a [`Change::Move`] under way joined.
    moving: Mutex<BTreeMap<GroupId, NodeId>>,
    /// Snapshot messages answered "not ready" by the copy gates.
    gated: Arc<AtomicU64>,
    started: Instant,
}

impl<B: LogBackend> Cluster<B> {
    fn new(cfg: SimConfig, backend: B) -> Cluster<B> {
        let net = Arc::new(SimNet::new(cfg.seed, cfg.drop_per_mille));
        Cluster {
            net,
            backend,
            root: tempfile::tempdir().expect("a temporary directory"),
            hosted: Mutex::new(BTreeMap::new()),
            checks: Checks::default(),
            crashes: AtomicU64::new(0),
            starting: tokio::sync::Mutex::new(()),
            changes: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            moving: Mutex::new(BTreeMap::new()),
            gated: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            cfg,
        }
    }

    /// Starts `node`'s replica of `group` unless it runs already or the
    /// node is down (then its restart starts it).
    async fn start_replica(&self, node: NodeId, group: GroupId) {
        // One start at a time: a restart and a membership change must not
        // both open one replica's storage.
        let _starting = self.starting.lock().await;
        let incarnation = {
            let nodes = lock(&self.net.nodes);
            let entry = nodes.get(&node).expect("a known node");
            if !entry.up || entry.groups.contains_key(&group) {
                return;
            }
            entry.incarnation
        };
        let dir = self.root.path().join(format!("n{node}")).join(format!("g{group}"));
        let machine = MachineStore::open(&dir.join("machine"), Box::new(KvMachine::default()))
            .expect("the machine store opens");
        let log = self.backend.open(node, group, &dir.join("log"), self.cfg.seed);
        let config = GroupConfig {
            group,
            node,
            timing: SIM_TIMING,
            snapshot_every_entries: 20,
            snapshot_gate: Some(Arc::new(SlowCopy::new(self.cfg.seed ^ node, self.gated.clone()))),
        };
        let transport = Arc::new(NodeTransport { from: node, net: self.net.clone() });
        let g =
            Group::start(&config, log, machine.clone(), transport).await.expect("the group starts");
        let g = Replica { group: g, machine };
        let crashed = {
            let mut nodes = lock(&self.net.nodes);
            let entry = nodes.get_mut(&node).expect("a known node");
            if entry.up && entry.incarnation == incarnation {
                entry.groups.insert(group, g);
                None
            } else {
                Some(g)
            }
        };
        if let Some(g) = crashed {
            // The node crashed while the replica started.
            g.shutdown().await;
        }
    }

    async fn boot(&self) {
        for node in 1..=self.cfg.nodes {
            lock(&self.net.nodes)
                .insert(node, NodeEntry { up: true, incarnation: 0, groups: BTreeMap::new() });
            let groups: BTreeSet<GroupId> =
                if node <= 3 { (1..=self.cfg.groups).collect() } else { BTreeSet::new() };
            for &g in &groups {
                self.start_replica(node, g).await;
            }
            lock(&self.hosted).insert(node, groups);
        }
        let voters: BTreeMap<NodeId, String> = (1..=3).map(|n| (n, addr(n))).collect();
        for g in 1..=self.cfg.groups {
            let group = self.net.group(1, g).expect("node 1 is up");
            group.initialize(voters.clone()).await.expect("the group initializes");
        }
    }

    async fn crash(&self, node: NodeId) {
        let groups = {
            let mut nodes = lock(&self.net.nodes);
            let Some(n) = nodes.get_mut(&node).filter(|n| n.up) else { return };
            n.up = false;
            n.incarnation += 1;
            std::mem::take(&mut n.groups)
        };
        self.crashes.fetch_add(1, Ordering::Relaxed);
        // Every disk of the node, also of a replica still starting.
        let hosted = lock(&self.hosted).get(&node).cloned().unwrap_or_default();
        for g in hosted.iter().chain(groups.keys()).collect::<BTreeSet<_>>() {
            self.backend.crash(node, *g);
        }
        for (g, group) in groups {
            if tokio::time::timeout(Duration::from_secs(5), group.shutdown()).await.is_err() {
                self.checks.violation(format!("group {g}: node {node}'s replica did not stop"));
            }
        }
    }

    async fn restart(&self, node: NodeId) {
        {
            let mut nodes = lock(&self.net.nodes);
            let Some(n) = nodes.get_mut(&node).filter(|n| !n.up) else { return };
            n.up = true;
        }
        let groups = lock(&self.hosted).get(&node).cloned().unwrap_or_default();
        for g in groups {
            self.start_replica(node, g).await;
        }
    }

    /// Stops `node`'s replica of `group` for good (it left the group).
    async fn drop_replica(&self, node: NodeId, group: GroupId) {
        if let Some(h) = lock(&self.hosted).get_mut(&node) {
            h.remove(&group);
        }
        let handle = lock(&self.net.nodes).get_mut(&node).and_then(|n| n.groups.remove(&group));
        if let Some(handle) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
        }
    }

    /// The replica that leads `group` in the highest term seen, if any.
    fn leader(&self, group: GroupId) -> Option<(NodeId, Replica)> {
        let mut best: Option<(u64, NodeId, Replica)> = None;
        for node in self.net.up_nodes() {
            if let Some(g) = self.net.group(node, group) {
                let st = g.status();
                if st.state == "leader" && best.as_ref().is_none_or(|(t, _, _)| st.term > *t) {
                    best = Some((st.term, node, g));
                }
            }
        }
        best.map(|(_, n, g)| (n, g))
    }

    /// The leader of `group`, waiting up to `within` for one (a group
    /// may be between two leaders when asked).
    async fn wait_leader(&self, group: GroupId, within: Duration) -> Option<(NodeId, Replica)> {
        let deadline = Instant::now() + within;
        loop {
            let leader = self.leader(group);
            if leader.is_some() || Instant::now() > deadline {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run_faults(&self, faults: Vec<Timed>, start: Instant) {
        for (at, dur, fault) in faults {
            sleep_until(start + Duration::from_millis(at)).await;
            let fault = match fault {
                Fault::CrashLeader(g) => match self.leader(g) {
                    Some((n, _)) => Fault::Crash(vec![n]),
                    None => continue,
                },
                other => other,
            };
            match fault {
                Fault::CrashLeader(_) => {}
                Fault::Crash(nodes) => {
                    for &n in &nodes {
                        self.crash(n).await;
                    }
                    tokio::time::sleep(Duration::from_millis(dur)).await;
                    for &n in &nodes {
                        self.restart(n).await;
                    }
                }
                Fault::Partition(nodes) => {
                    self.cut(nodes.into_iter().collect(), dur).await;
                }
                Fault::IsolateLeader(g) => {
                    if let Some((n, _)) = self.leader(g) {
                        self.cut(BTreeSet::from([n]), dur).await;
                    }
                }
            }
        }
    }

    async fn cut(&self, nodes: BTreeSet<NodeId>, dur: u64) {
        *lock(&self.net.cut) = Some(nodes);
        tokio::time::sleep(Duration::from_millis(dur)).await;
        *lock(&self.net.cut) = None;
    }

    async fn run_changes(&self, changes: Vec<(u64, Change)>, start: Instant, end: Instant) {
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ 0xc4a6e);
        for (at, change) in changes {
            sleep_until(start + Duration::from_millis(at)).await;
            while Instant::now() < end {
                if self.try_change(&change, &mut rng).await {
                    self.changes.fetch_add(1, Ordering::Relaxed);
                    if matches!(change, Change::Move(..)) {
                        self.moves.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Makes `node` keep a replica of group `group` (an empty one, which
    /// catches up from the leader), from now on and after restarts.
    async fn start_hosting(&self, node: NodeId, group: GroupId) {
        let new = lock(&self.hosted).entry(node).or_default().insert(group);
        if new {
            self.start_replica(node, group).await;
        }
    }

    /// One attempt at a membership change; true once it is done.
    async fn try_change(&self, change: &Change, rng: &mut StdRng) -> bool {
        let Some((leader_id, leader)) = self.leader(change_group(change)) else { return false };
        let st = leader.status();
        match *change {
            Change::Add(g, node) => {
                if st.voters.contains_key(&node) {
                    return true;
                }
                let hosting = lock(&self.hosted).get(&node).is_some_and(|h| h.contains(&g));
                if !hosting {
                    if !self.net.up_nodes().contains(&node) {
                        return false;
                    }
                    self.start_hosting(node, g).await;
                }
                matches!(
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        leader.add_voter(node, addr(node))
                    )
                    .await,
                    Ok(Ok(()))
                )
            }
            Change::Move(g, remove_leader) => {
                // The node joined by an earlier attempt, if it got that far.
                let joined = *lock(&self.moving).get(&g).unwrap_or(&0);
                let to = if joined != 0 && st.voters.contains_key(&joined) {
                    joined
                } else {
                    let up = self.net.up_nodes();
                    let mut spare: Vec<NodeId> = (1..=self.cfg.nodes)
                        .filter(|n| !st.voters.contains_key(n) && up.contains(n))
                        .collect();
                    spare.sort_unstable();
                    let Some(&to) = spare.choose(rng) else {
                        // Every node holds a replica already: nothing to move to.
                        return st.voters.len() <= 3 || self.cfg.nodes <= 3;
                    };
                    lock(&self.moving).insert(g, to);
                    self.start_hosting(to, g).await;
                    let added = async {
                        leader.snapshot_and_purge().await?;
                        leader.add_voter(to, addr(to)).await
                    };
                    if !matches!(
                        tokio::time::timeout(Duration::from_secs(3), added).await,
                        Ok(Ok(()))
                    ) {
                        return false;
                    }
                    to
                };
                let st = leader.status();
                let others: Vec<NodeId> =
                    st.voters.keys().copied().filter(|&n| n != to && n != leader_id).collect();
                let victim = if remove_leader && leader_id != to {
                    leader_id
                } else {
                    match others.choose(rng) {
                        Some(&n) => n,
                        None => return false,
                    }
                };
                let done = matches!(
                    tokio::time::timeout(Duration::from_secs(2), leader.remove_member(victim))
                        .await,
                    Ok(Ok(()))
                );
                if done {
                    lock(&self.moving).remove(&g);
                    self.drop_replica(victim, g).await;
                }
                done
            }
            Change::Remove(g, remove_leader) => {
                if st.voters.len() <= 3 {
                    // Only after the add: keep at least three voters.
                    return false;
                }
                let victim = if remove_leader {
                    leader_id
                } else {
                    let others: Vec<NodeId> =
                        st.voters.keys().copied().filter(|&n| n != leader_id).collect();
                    *others.choose(rng).expect("other voters")
                };
                let done = matches!(
                    tokio::time::timeout(Duration::from_secs(2), leader.remove_member(victim))
                        .await,
                    Ok(Ok(()))
                );
                if done {
                    self.drop_replica(victim, g).await;
                }
                done
            }
        }
    }
}

fn change_group(c: &Change) -> GroupId {
    match *c {
        Change::Add(g, _) | Change::Remove(g, _) | Change::Move(g, _) => g,
    }
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
}

// ---------------------------------------------------------------------------
// Clients and their history.

#[derive(Debug, Clone)]
enum Event {
    Invoke {
        client: u64,
        group: GroupId,
        op: KvOp,
    },
    /// `via`: which replica answered, for the report of a failure.
    Return {
        client: u64,
        ret: KvRet,
        via: Via,
    },
}

/// The replica that answered an op, as it saw itself just after.
#[derive(Debug, Clone, Copy, Default)]
struct Via {
    node: NodeId,
    term: u64,
    leader: bool,
    applied: Option<u64>,
    millis: u128,
}

#[derive(Default)]
struct History {
    events: Mutex<Vec<Event>>,
    ok: AtomicU64,
    unknown: AtomicU64,
}

impl<B: LogBackend> Cluster<B> {
    fn random_node(&self, rng: &mut StdRng) -> NodeId {
        rng.gen_range(1..=self.cfg.nodes)
    }

    /// Runs `op` through gateways until it returns or times out (`None`:
    /// outcome unknown).
    async fn execute(&self, group: GroupId, op: KvOp, rng: &mut StdRng) -> Option<(KvRet, Via)> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut target = self.random_node(rng);
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let via = |g: &Replica| {
                let st = g.status();
                Via {
                    node: target,
                    term: st.term,
                    leader: st.state == "leader",
                    applied: st.last_applied_index,
                    millis: self.started.elapsed().as_millis(),
                }
            };
            let Some(g) = self.net.group(target, group) else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                target = self.random_node(rng);
                continue;
            };
            let result = match op {
                KvOp::Read { key } => {
                    let barrier = if self.cfg.bug == Bug::StaleReads {
                        Ok(Ok(()))
                    } else {
                        tokio::time::timeout(left, g.read_barrier()).await
                    };
                    match barrier {
                        Err(_) => return None,
                        Ok(Ok(())) => {
                            let m = g.kv();
                            let prev = m.values.get(&key).copied().unwrap_or(0);
                            return Some((KvRet { prev }, via(&g)));
                        }
                        Ok(Err(e)) => e,
                    }
                }
                // Proposed only on a replica that believes it leads; a
                // `NotLeader` after proposing leaves the outcome unknown, as
                // in the node's gateway (`Node::on_leader`).
                // Postmortem: a write refused with `NotLeader` after its
                // entry was appended (openraft answers so when its log drops
                // the entry for a new leader's) was sent again, while
                // another replica holding the entry later committed it:
                // applied twice, at indices 20 and 24 (seed 0, file log).
                KvOp::Put { .. } | KvOp::Cas { .. } => {
                    let st = g.status();
                    if st.state != "leader" {
                        ConsensusError::NotLeader {
                            leader: st.leader.map(|id| (id, String::new())),
                        }
                    } else {
                        match tokio::time::timeout(left, g.propose(encode(&op))).await {
                            Err(_) => return None,
                            Ok(Ok(reply)) => {
                                let ret = rmp_serde::from_slice(&reply).expect("a KvRet");
                                return Some((ret, via(&g)));
                            }
                            Ok(Err(ConsensusError::NotLeader { .. })) => return None,
                            Ok(Err(e)) => e,
                        }
                    }
                }
            };
            match result {
                ConsensusError::NotLeader { leader: Some((id, _)) } if id != target => target = id,
                ConsensusError::NotLeader { .. } => {
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(5..30))).await;
                    target = self.random_node(rng);
                }
                // The replica stopped (its node crashed) while the command
                // may have been proposed: unknown.
                ConsensusError::Fatal(_)
                | ConsensusError::Membership(_)
                | ConsensusError::Timeout(_) => {
                    if matches!(op, KvOp::Read { .. }) {
                        target = self.random_node(rng);
                        continue;
                    }
                    return None;
                }
            }
        }
    }

    async fn client(&self, index: u64, history: &History, end: Instant) {
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ (index + 1).wrapping_mul(0x1234_5679));
        let mut client = index;
        let mut seq = 0u64;
        let mut seen: BTreeMap<(GroupId, u8), u64> = BTreeMap::new();
        while Instant::now() < end {
            let group = rng.gen_range(1..=self.cfg.groups);
            let key = rng.gen_range(0..self.cfg.keys);
            seq += 1;
            let value = (client << 24) | seq;
            let op = match rng.gen_range(0..20) {
                0..=8 => KvOp::Put { key, value },
                9..=11 => KvOp::Cas {
                    key,
                    expect: seen.get(&(group, key)).copied().unwrap_or(0),
                    new: value,
                },
                _ => KvOp::Read { key },
            };
            lock(&history.events).push(Event::Invoke { client, group, op });
            match self.execute(group, op, &mut rng).await {
                Some((ret, via)) => {
                    lock(&history.events).push(Event::Return { client, ret, via });
                    history.ok.fetch_add(1, Ordering::Relaxed);
                    let now = match op {
                        KvOp::Put { value, .. } => value,
                        KvOp::Cas { expect, new, .. } if expect == ret.prev => new,
                        _ => ret.prev,
                    };
                    seen.insert((group, key), now);
                }
                None => {
                    // Outcome unknown: this client's op stays open forever
                    // and a new client takes over the task.
                    history.unknown.fetch_add(1, Ordering::Relaxed);
                    client += self.cfg.clients;
                    seq = 0;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Linearizability of one register: Wing & Gong's search with Lowe's
// memoization of (linearized set, state). Stateright's tester has no
// memoization: on a history that is not linearizable it retries every
// order of concurrent reads before each point of failure, which is
// exponential in the history's length; this search stays polynomial for
// the small concurrency of the sim's clients.

/// One op on a register: `call` and `ret` are positions in the history
/// (`ret` None: never returned, it may or may not have taken effect).
#[derive(Debug, Clone)]
struct RegOp {
    client: u64,
    op: KvOp,
    call: usize,
    ret: Option<(usize, KvRet)>,
    via: Via,
}

/// The register's next value after `op`, if `op` could return `ret` from
/// `value` (an unknown `ret` matches anything).
fn step(value: u64, op: &KvOp, ret: Option<KvRet>) -> Option<u64> {
    if ret.is_some_and(|r| r.prev != value) {
        return None;
    }
    Some(match *op {
        KvOp::Put { value: v, .. } => v,
        KvOp::Cas { expect, new, .. } if expect == value => new,
        KvOp::Cas { .. } | KvOp::Read { .. } => value,
    })
}

/// Checks that `ops` (on one register starting at 0) are linearizable.
/// Errors: a description of the longest linearizable prefix found and the
/// ops that could not follow it.
fn check_register(ops: &[RegOp]) -> Result<(), String> {
    let n = ops.len();
    if n == 0 {
        return Ok(());
    }
    // Events: 2i = call of op i, 2i+1 = its return; sorted by time, with
    // the returns of open ops after everything.
    let mut events: Vec<(usize, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, 2 * i));
        events.push((o.ret.map(|(t, _)| t).unwrap_or(usize::MAX - n + i), 2 * i + 1));
    }
    events.sort();
    let (head, tail) = (2 * n, 2 * n + 1);
    let mut next = vec![0usize; 2 * n + 2];
    let mut prev = vec![0usize; 2 * n + 2];
    let mut last = head;
    for &(_, e) in &events {
        next[last] = e;
        prev[e] = last;
        last = e;
    }
    next[last] = tail;
    prev[tail] = last;

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut entry = next[head];
    let mut deepest: Vec<usize> = Vec::new();
    let mut steps = 0u64;
    while next[head] != tail {
        steps += 1;
        if steps > 50_000_000 {
            return Err(format!("gave up after {steps} steps ({n} ops)"));
        }
        if entry.is_multiple_of(2) {
            let i = entry / 2;
            let o = &ops[i];
            let moved = step(state, &o.op, o.ret.map(|(_, r)| r)).and_then(|new| {
                let mut set = linearized.clone();
                set[i / 64] |= 1 << (i % 64);
                cache.insert((set.clone(), new)).then_some((set, new))
            });
            if let Some((set, new)) = moved {
                stack.push((entry, state));
                state = new;
                linearized = set;
                // Lift the call and its return out of the list.
                let r = entry + 1;
                next[prev[entry]] = next[entry];
                prev[next[entry]] = prev[entry];
                next[prev[r]] = next[r];
                prev[next[r]] = prev[r];
                if stack.len() > deepest.len() {
                    deepest = stack.iter().map(|(e, _)| e / 2).collect();
                }
                entry = next[head];
            } else {
                entry = next[entry];
            }
        } else {
            // A return whose call is not linearized yet: backtrack.
            let Some((e, s)) = stack.pop() else {
                return Err(describe_failure(ops, &deepest));
            };
            let i = e / 2;
            state = s;
            linearized[i / 64] &= !(1 << (i % 64));
            let r = e + 1;
            next[prev[r]] = r;
            prev[next[r]] = r;
            next[prev[e]] = e;
            prev[next[e]] = e;
            entry = next[e];
        }
    }
    Ok(())
}

fn describe_failure(ops: &[RegOp], deepest: &[usize]) -> String {
    let done: HashSet<usize> = deepest.iter().copied().collect();
    let mut value = 0;
    let mut out = format!(
        "not linearizable: {} ops; longest linearizable prefix has {}; its last steps:\n",
        ops.len(),
        deepest.len()
    );
    for (k, &i) in deepest.iter().enumerate() {
        let o = &ops[i];
        value = step(value, &o.op, None).unwrap_or(value);
        if k + 8 >= deepest.len() {
            out += &format!("  {}\n", show(o));
        }
    }
    out += &format!("  (value now {value}); ops that could not come next:\n");
    let cutoff = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !done.contains(i))
        .filter_map(|(_, o)| o.ret.map(|(t, _)| t))
        .min()
        .unwrap_or(usize::MAX);
    for (i, o) in ops.iter().enumerate() {
        if !done.contains(&i) && o.call <= cutoff {
            out += &format!("  {}\n", show(o));
        }
    }
    out
}

fn show(o: &RegOp) -> String {
    let v = &o.via;
    match o.ret {
        Some((t, r)) => format!(
            "[{}..{t}] {:?} by client {} -> {} (node {} term {}{} applied {:?} at {} ms)",
            o.call,
            o.op,
            o.client,
            r.prev,
            v.node,
            v.term,
            if v.leader { " leader" } else { "" },
            v.applied,
            v.millis
        ),
        None => format!("[{}..] {:?} by client {} -> unknown", o.call, o.op, o.client),
    }
}

/// Splits a history into one register history per (group, key).
fn per_key(events: &[Event]) -> BTreeMap<(GroupId, u8), Vec<RegOp>> {
    let mut open: BTreeMap<u64, ((GroupId, u8), usize)> = BTreeMap::new();
    let mut out: BTreeMap<(GroupId, u8), Vec<RegOp>> = BTreeMap::new();
    for (t, e) in events.iter().enumerate() {
        match *e {
            Event::Invoke { client, group, op } => {
                let key = (group, op.key());
                let ops = out.entry(key).or_default();
                open.insert(client, (key, ops.len()));
                ops.push(RegOp { client, op, call: t, ret: None, via: Via::default() });
            }
            Event::Return { client, ret, via } => {
                let (key, i) = open.remove(&client).expect("a return follows its invoke");
                let o = &mut out.get_mut(&key).expect("the key's history")[i];
                o.ret = Some((t, ret));
                o.via = via;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// One run.

#[derive(Debug)]
struct RunReport {
    seed: u64,
    nodes: u64,
    ok: u64,
    unknown: u64,
    crashes: u64,
    calls: u64,
    dropped: u64,
    cut: u64,
    leaderships: usize,
    shared_terms: u64,
    changes: u64,
    moves: u64,
    snapshots: usize,
    /// Snapshot messages answered "not ready" or "failed" by copy gates.
    gated: u64,
    millis: u128,
    violations: Vec<String>,
}

fn run_seed<B: LogBackend>(cfg: SimConfig, backend: B) -> RunReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = rt.block_on(run(cfg, backend));
    rt.shutdown_timeout(Duration::from_secs(1));
    report
}

async fn run<B: LogBackend>(cfg: SimConfig, backend: B) -> RunReport {
    let started = Instant::now();
    let cluster = Arc::new(Cluster::new(cfg.clone(), backend));
    cluster.boot().await;
    let (faults, changes) = schedule(&cfg);
    let verbose = std::env::var_os("MONOTABLE_SIM_VERBOSE").is_some();
    if verbose {
        eprintln!("seed {}: {cfg:?}\nfaults {faults:?}\nchanges {changes:?}", cfg.seed);
    }
    let start = Instant::now();
    let end = start + Duration::from_millis(cfg.fault_ms);
    let history = Arc::new(History::default());

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (c, on) = (cluster.clone(), sampling.clone());
        tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                c.checks.sample(&c.net, c.started.elapsed().as_millis());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..cfg.clients {
        let (c, h) = (cluster.clone(), history.clone());
        tasks.push(tokio::spawn(async move { c.client(i, &h, end).await }));
    }
    let f = {
        let c = cluster.clone();
        tokio::spawn(async move { c.run_faults(faults, start).await })
    };
    let m = {
        let c = cluster.clone();
        tokio::spawn(async move { c.run_changes(changes, start, end).await })
    };
    for t in tasks {
        t.await.expect("a client task");
    }
    if verbose {
        eprintln!("clients done at {} ms", start.elapsed().as_millis());
    }
    f.await.expect("the fault task");
    if verbose {
        eprintln!("faults done at {} ms", start.elapsed().as_millis());
    }
    m.await.expect("the membership task");

    // Heal everything, then let the groups settle.
    *lock(&cluster.net.cut) = None;
    cluster.net.faults.store(false, Ordering::Relaxed);
    for n in 1..=cfg.nodes {
        cluster.restart(n).await;
    }
    let healed = Instant::now();
    if verbose {
        eprintln!(
            "boot {} ms, faults+clients {} ms",
            (start - started).as_millis(),
            (healed - start).as_millis()
        );
    }
    for g in 1..=cfg.groups {
        if verbose {
            eprintln!(
                "group {g} before settling: {:?}",
                cluster.leader(g).map(|(_, g)| g.status())
            );
        }
        if let Err(v) = settle(&cluster, g).await {
            cluster.checks.violation(v);
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("the sampler");
    if verbose {
        eprintln!("settled in {} ms", healed.elapsed().as_millis());
    }

    let events = lock(&history.events).clone();
    for ((g, key), ops) in per_key(&events) {
        if let Err(e) = check_register(&ops) {
            let path = std::env::temp_dir()
                .join(format!("monotable-sim-seed{}-g{g}-k{key}.txt", cfg.seed));
            let text: Vec<String> = ops.iter().map(show).collect();
            let _ = std::fs::write(&path, text.join("\n"));
            cluster.checks.violation(format!(
                "group {g} key {key}: {e}(whole history of the key in {})",
                path.display()
            ));
        }
    }
    check_acked_writes(&cluster, &events).await;
    if verbose {
        eprintln!("checked at {} ms", started.elapsed().as_millis());
    }

    for (_, group) in cluster.net.all_replicas() {
        let _ = tokio::time::timeout(Duration::from_secs(5), group.shutdown()).await;
    }
    let leaderships = lock(&cluster.checks.leaders).len();
    // Replicas that built or installed a snapshot.
    let snapshots = (1..=cfg.nodes)
        .flat_map(|n| (1..=cfg.groups).map(move |g| (n, g)))
        .filter(|(n, g)| {
            let dir = cluster.root.path().join(format!("n{n}/g{g}/machine/SNAPSHOT"));
            dir.exists()
        })
        .count();
    let shared_terms = cluster.checks.shared_terms.load(Ordering::Relaxed);
    let violations = lock(&cluster.checks.violations).clone();
    let n = &cluster.net.counters;
    RunReport {
        seed: cfg.seed,
        nodes: cfg.nodes,
        ok: history.ok.load(Ordering::Relaxed),
        unknown: history.unknown.load(Ordering::Relaxed),
        crashes: cluster.crashes.load(Ordering::Relaxed),
        calls: n.calls.load(Ordering::Relaxed),
        dropped: n.dropped.load(Ordering::Relaxed),
        cut: n.cut.load(Ordering::Relaxed),
        leaderships,
        shared_terms,
        changes: cluster.changes.load(Ordering::Relaxed),
        moves: cluster.moves.load(Ordering::Relaxed),
        snapshots,
        gated: cluster.gated.load(Ordering::Relaxed),
        millis: started.elapsed().as_millis(),
        violations,
    }
}

/// The key the final write of [`settle`] uses, outside the clients' keys.
const SETTLE_KEY: u8 = 255;

/// Commits one more write in `group` and waits until every member replica
/// applied it, then compares their machines.
async fn settle<B: LogBackend>(cluster: &Cluster<B>, group: GroupId) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (leader, index) = loop {
        if Instant::now() > deadline {
            return Err(format!("group {group}: no write committed after the faults healed"));
        }
        if let Some((id, g)) = cluster.leader(group) {
            let op = KvOp::Put { key: SETTLE_KEY, value: 1 };
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), g.propose(encode(&op))).await
            {
                if let Some(index) = g.status().last_applied_index {
                    break (id, index);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    loop {
        let Some(leader_group) = cluster.net.group(leader, group) else {
            return Err(format!("group {group}: leader {leader} vanished"));
        };
        let st = leader_group.status();
        let members: Vec<NodeId> = st.voters.keys().chain(st.learners.keys()).copied().collect();
        let mut machines = Vec::new();
        let mut behind = Vec::new();
        for &n in &members {
            match cluster.net.group(n, group) {
                Some(g) if g.status().last_applied_index >= Some(index) => {
                    machines.push((n, g.kv()));
                }
                _ => behind.push(n),
            }
        }
        if behind.is_empty() {
            let (first_node, first) = &machines[0];
            for (n, m) in &machines[1..] {
                let common = first.writes.len().min(m.writes.len());
                if first.writes[..common] != m.writes[..common] || first.values != m.values {
                    return Err(format!(
                        "group {group}: machines of nodes {first_node} and {n} differ \
                         ({} and {} writes)",
                        first.writes.len(),
                        m.writes.len()
                    ));
                }
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "group {group}: members {behind:?} did not apply index {index} (members \
                 {members:?}; leader {leader}: {st:?}; behind: {:?})",
                why_behind(cluster, group, &behind).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// For each replica in `nodes`: the groups its node hosts, its status
/// and, if its Raft stopped, why (what a proposal to it answers).
async fn why_behind<B: LogBackend>(
    cluster: &Cluster<B>,
    group: GroupId,
    nodes: &[NodeId],
) -> Vec<String> {
    let mut out = Vec::new();
    for &n in nodes {
        let hosted = lock(&cluster.hosted).get(&n).cloned();
        let Some(g) = cluster.net.group(n, group) else {
            out.push(format!("node {n}: no replica (hosts {hosted:?})"));
            continue;
        };
        let st = g.status();
        let stopped = if st.state == "shutdown" {
            let op = encode(&KvOp::Read { key: SETTLE_KEY });
            format!("; stopped: {:?}", g.propose(op).await.err())
        } else {
            String::new()
        };
        out.push(format!("node {n} (hosts {hosted:?}): {st:?}{stopped}"));
    }
    out
}

/// Every acknowledged write is in the final machine of its group.
async fn check_acked_writes<B: LogBackend>(cluster: &Cluster<B>, events: &[Event]) {
    let mut open: BTreeMap<u64, (GroupId, KvOp)> = BTreeMap::new();
    let mut acked: Vec<(GroupId, u8, u64)> = Vec::new();
    for e in events {
        match *e {
            Event::Invoke { client, group, op } => {
                open.insert(client, (group, op));
            }
            Event::Return { client, ret, .. } => match open.remove(&client) {
                Some((g, KvOp::Put { key, value })) => acked.push((g, key, value)),
                Some((g, KvOp::Cas { key, expect, new })) if expect == ret.prev => {
                    acked.push((g, key, new))
                }
                _ => {}
            },
        }
    }
    for g in 1..=cluster.cfg.groups {
        let Some((_, leader)) = cluster.wait_leader(g, Duration::from_secs(5)).await else {
            cluster.checks.violation(format!("group {g}: no leader within 5 s at the end"));
            continue;
        };
        let m = leader.kv();
        // Every op writes a value of its own: one written twice was
        // applied twice (a retried command that had been committed).
        let mut first: BTreeMap<(u8, u64), u64> = BTreeMap::new();
        for &(index, k, v) in &m.writes {
            if k == SETTLE_KEY {
                continue;
            }
            if let Some(earlier) = first.insert((k, v), index) {
                cluster.checks.violation(format!(
                    "group {g}: value {v} of key {k} written at indices {earlier} and {index}"
                ));
            }
        }
        let writes: HashSet<(u8, u64)> = m.writes.iter().map(|&(_, k, v)| (k, v)).collect();
        let lost: Vec<_> =
            acked.iter().filter(|&&(ag, k, v)| ag == g && !writes.contains(&(k, v))).collect();
        if !lost.is_empty() {
            cluster.checks.violation(format!(
                "group {g}: {} acknowledged writes lost, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Seeds and tests.

/// The seeds to run: from the environment, else `0..default`.
fn seeds(default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("MONOTABLE_SIM_SEED") {
        return vec![s.trim().parse().expect("MONOTABLE_SIM_SEED: a number")];
    }
    let Ok(s) = std::env::var("MONOTABLE_SIM_SEEDS") else {
        return (0..default).collect();
    };
    let s = s.trim();
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.parse().expect("MONOTABLE_SIM_SEEDS: a..b");
        let b: u64 = b.parse().expect("MONOTABLE_SIM_SEEDS: a..b");
        return (a..b).collect();
    }
    if s.contains(',') {
        return s.split(',').map(|x| x.trim().parse().expect("a seed")).collect();
    }
    (0..s.parse::<u64>().expect("MONOTABLE_SIM_SEEDS: a count, a..b or a,b,c")).collect()
}

fn print(backend: &str, r: &RunReport) {
    eprintln!(
        "sim {backend} seed {}: {} nodes, {} ops ok, {} unknown, {} crashes, {} leaderships \
         ({} in a term already led), {} membership changes ({} moves), {} replicas with a snapshot ({} \
         answered not ready), {} msgs ({} dropped, {} cut), {} ms, {} violations",
        r.seed,
        r.nodes,
        r.ok,
        r.unknown,
        r.crashes,
        r.leaderships,
        r.shared_terms,
        r.changes,
        r.moves,
        r.snapshots,
        r.gated,
        r.calls,
        r.dropped,
        r.cut,
        r.millis,
        r.violations.len()
    );
}

#[test]
fn sim_raft_groups_stay_safe_under_faults() {
    let mut failed = Vec::new();
    for seed in seeds(DEFAULT_SEEDS) {
        // Half the seeds keep the commit index, half do not.
        let backend = MemBackend::new(Bug::None, seed % 2 == 0);
        let name = backend.name();
        let r = run_seed(SimConfig::for_seed(seed, Bug::None), backend);
        print(name, &r);
        if !r.violations.is_empty() {
            failed.push((seed, r.violations));
        }
    }
    assert!(failed.is_empty(), "seeds with violations: {failed:#?}");
}

#[test]
fn sim_raft_groups_on_the_file_log_store() {
    let mut failed = Vec::new();
    for seed in seeds(DEFAULT_FILE_SEEDS) {
        let r = run_seed(SimConfig::for_seed(seed, Bug::None), FileBackend);
        print(FileBackend.name(), &r);
        if !r.violations.is_empty() {
            failed.push((seed, r.violations));
        }
    }
    assert!(failed.is_empty(), "seeds with violations: {failed:#?}");
}

/// Runs seeds with `bug` until one is caught; returns its violations.
fn first_caught(bug: Bug, seeds: std::ops::Range<u64>) -> Option<(u64, Vec<String>)> {
    for seed in seeds {
        let r = run_seed(SimConfig::for_seed(seed, bug), MemBackend::new(bug, seed % 2 == 0));
        print(&format!("{bug:?}"), &r);
        if !r.violations.is_empty() {
            return Some((seed, r.violations));
        }
    }
    None
}

#[test]
fn sim_catches_reads_without_a_barrier() {
    let caught = first_caught(Bug::StaleReads, 0..4);
    let (_, v) = caught.expect("stale reads went unnoticed");
    assert!(v.iter().any(|v| v.contains("not linearizable")), "{v:#?}");
}

#[test]
fn sim_catches_appends_acknowledged_before_durable() {
    // Postmortem: on a loaded machine six seeds once all missed the bug
    // (crashes land at other moments of the writes under load); a seed
    // that catches it ends the search, so more seeds cost nothing then.
    let caught = first_caught(Bug::AckBeforeDurable, 0..16);
    let (_, v) = caught.expect("lost writes went unnoticed");
    let data_lost = ["not linearizable", "lost", "differ"];
    assert!(v.iter().any(|v| data_lost.iter().any(|s| v.contains(s))), "{v:#?}");
}

/// Postmortem: openraft 0.9 restarts a node whose stored vote is its own
/// committed one straight back as leader of that term, and its read index
/// is then that term's first entry or the commit index it reloaded, both
/// possibly older than writes it acknowledged before the restart: its first
/// reads after a restart returned values already overwritten.
#[test]
fn a_restarted_leader_serves_no_stale_read() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let mut reads = 0;
        for attempt in 0..3 {
            let mut cfg = SimConfig::for_seed(attempt, Bug::None);
            cfg.nodes = 3;
            cfg.groups = 1;
            let cluster = Cluster::new(cfg, MemBackend::new(Bug::None, false));
            cluster.net.faults.store(false, Ordering::Relaxed);
            cluster.boot().await;
            let t = Instant::now();
            let (leader, g) = loop {
                if let Some(l) = cluster.leader(1) {
                    break l;
                }
                assert!(t.elapsed() < Duration::from_secs(5), "no leader");
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            // Enough writes for a snapshot to cover the term's first entry
            // (the restart's read index) but not the last writes.
            for value in 1..=30 {
                let op = KvOp::Put { key: 0, value };
                g.propose(encode(&op)).await.expect("the put commits");
            }
            // Let the appends be flushed: a process crash, not a power failure.
            tokio::time::sleep(Duration::from_millis(20)).await;
            cluster.crash(leader).await;
            // Replication after the restart is slow; heartbeats (no entries,
            // nothing known of the follower) are not.
            let restarted = Instant::now();
            *lock(&cluster.net.hold) = Some(Box::new(move |rpc| match rpc {
                RaftRpc::Append(a)
                    if a.prev_log_id.is_some()
                        && restarted.elapsed() < Duration::from_millis(150) =>
                {
                    Duration::from_millis(100)
                }
                _ => Duration::ZERO,
            }));
            cluster.restart(leader).await;
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(1000) {
                for node in 1..=3 {
                    let Some(g) = cluster.net.group(node, 1) else { continue };
                    let barrier = tokio::time::timeout(OP_TIMEOUT, g.read_barrier()).await;
                    if matches!(barrier, Ok(Ok(()))) {
                        let m = g.kv();
                        let term = g.status().term;
                        assert_eq!(m.values.get(&0), Some(&30), "node {node} in term {term}");
                        reads += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for (_, g) in cluster.net.all_replicas() {
                g.shutdown().await;
            }
        }
        assert!(reads > 0);
    });
}

// The checker itself, on histories small enough to enumerate.

fn reg(client: u64, op: KvOp, call: usize, ret: Option<(usize, u64)>) -> RegOp {
    RegOp { client, op, call, ret: ret.map(|(t, prev)| (t, KvRet { prev })), via: Via::default() }
}

#[test]
fn checker_accepts_and_rejects_known_histories() {
    let put = |value| KvOp::Put { key: 0, value };
    let read = KvOp::Read { key: 0 };
    // Sequential: put 1, read 1.
    assert!(
        check_register(&[reg(1, put(1), 0, Some((1, 0))), reg(2, read, 2, Some((3, 1)))]).is_ok()
    );
    // A read after a completed put sees the old value: stale.
    assert!(
        check_register(&[reg(1, put(1), 0, Some((1, 0))), reg(2, read, 2, Some((3, 0)))]).is_err()
    );
    // Concurrent: either order.
    assert!(
        check_register(&[reg(1, put(1), 0, Some((3, 0))), reg(2, read, 1, Some((2, 0)))]).is_ok()
    );
    // An open put may take effect later...
    assert!(check_register(&[reg(1, put(1), 0, None), reg(2, read, 1, Some((2, 1)))]).is_ok());
    // ...or never.
    assert!(check_register(&[reg(1, put(1), 0, None), reg(2, read, 1, Some((2, 0)))]).is_ok());
    // But not un-happen: 1 then 0 again.
    assert!(check_register(&[
        reg(1, put(1), 0, None),
        reg(2, read, 1, Some((2, 1))),
        reg(3, read, 3, Some((4, 0))),
    ])
    .is_err());
    // Two puts that both saw 0: one of them must have seen the other.
    assert!(check_register(&[reg(1, put(1), 0, Some((2, 0))), reg(2, put(2), 1, Some((3, 0)))])
        .is_err());
}

/// The register's semantics for stateright's tester.
#[derive(Clone, Default, Debug, PartialEq)]
struct SrRegister(u64);

impl stateright::semantics::SequentialSpec for SrRegister {
    type Op = KvOp;
    type Ret = KvRet;
    fn invoke(&mut self, op: &KvOp) -> KvRet {
        let prev = self.0;
        self.0 = step(prev, op, None).expect("an unknown return always steps");
        KvRet { prev }
    }
}

/// Differential test: on random small concurrent histories, the memoized
/// search and stateright's `LinearizabilityTester` agree.
#[test]
fn checker_agrees_with_stateright() {
    use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
    let mut rng = StdRng::seed_from_u64(7);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        let clients = rng.gen_range(1..=3u64);
        let mut t = 0usize;
        let mut ops: Vec<RegOp> = Vec::new();
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        let mut tester = LinearizabilityTester::new(SrRegister(0));
        let mut stopped = BTreeSet::new();
        for _ in 0..rng.gen_range(1..9) {
            let c = rng.gen_range(0..clients);
            if stopped.contains(&c) {
                continue;
            }
            if let Some(i) = open.remove(&c) {
                if rng.gen_ratio(1, 6) {
                    // Never returns.
                    stopped.insert(c);
                    continue;
                }
                let ret = KvRet { prev: rng.gen_range(0..3) };
                ops[i].ret = Some((t, ret));
                tester.on_return(c, ret).expect("a valid return");
            } else {
                let op = if rng.gen() {
                    KvOp::Put { key: 0, value: rng.gen_range(1..3) }
                } else if rng.gen_ratio(1, 3) {
                    KvOp::Cas { key: 0, expect: rng.gen_range(0..3), new: rng.gen_range(1..3) }
                } else {
                    KvOp::Read { key: 0 }
                };
                open.insert(c, ops.len());
                ops.push(RegOp { client: c, op, call: t, ret: None, via: Via::default() });
                tester.on_invoke(c, op).expect("a valid invoke");
            }
            t += 1;
        }
        let ours = check_register(&ops).is_ok();
        assert_eq!(ours, tester.is_consistent(), "{ops:#?}");
        if ours {
            yes += 1
        } else {
            no += 1
        }
    }
    assert!(yes > 100 && no > 100, "{yes} linearizable, {no} not");
}
