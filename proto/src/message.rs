//! Requests and replies of the native protocol.
//!
//! Every request carries an id chosen by the client; the reply carries the
//! same id. Replies may arrive in any order, so a client can pipeline.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::ErrorInfo;
use crate::limits::CHUNK_SIZE_DEFAULT_BYTES;

/// Key or value bytes on the wire.
pub type Bytes = ByteBuf;

/// What the server says once the handshake succeeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerHello {
    pub protocol_version: u32,
    /// The server's own version, for logs and `--version` style output.
    pub server_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub command: Command,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, ErrorInfo>,
}

/// Options of a range, fixed at creation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RangeOptions {
    /// A chunk splits in two once its live data passes this many bytes.
    pub chunk_size_max_bytes: u64,
}

impl Default for RangeOptions {
    fn default() -> Self {
        RangeOptions { chunk_size_max_bytes: CHUNK_SIZE_DEFAULT_BYTES }
    }
}

/// One operation of a write batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum WriteOp {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

impl WriteOp {
    pub fn key(&self) -> &[u8] {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }

    /// The value a put writes; `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            WriteOp::Put { value, .. } => Some(value),
            WriteOp::Delete { .. } => None,
        }
    }

    /// Checks the row against the key and value limits
    /// ([`crate::limits::check_row_size`]).
    pub fn check_size(&self) -> Result<(), crate::ErrorInfo> {
        crate::limits::check_row_size(self.key(), self.value())
    }
}

/// A key range to scan. Bounds are byte keys; `prefix` is an alternative to
/// `start`/`end` (giving both is an error).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScanRequest {
    pub range: String,
    /// Inclusive lower bound; `None` is the start of the range.
    pub start: Option<Bytes>,
    /// Exclusive upper bound; `None` is the end of the range.
    pub end: Option<Bytes>,
    /// Every key that starts with these bytes.
    pub prefix: Option<Bytes>,
    /// Most records to return; capped at [`crate::limits::SCAN_LIMIT_MAX`].
    pub limit: u32,
    /// Descending key order.
    pub reverse: bool,
    /// Read at this snapshot instead of the newest durable state.
    pub snapshot: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Ping,
    CreateRange {
        name: String,
        options: RangeOptions,
        /// Nodes to hold a replica of each chunk (Raft voters); `None`: 3.
        /// Capped at the number of live nodes; a range of one replica is
        /// an ordinary range of the node that creates it.
        #[serde(default)]
        replicas: Option<u32>,
    },
    ListRanges,
    DescribeRange {
        name: String,
    },
    DropRange {
        name: String,
    },
    Get {
        range: String,
        key: Bytes,
        snapshot: Option<u64>,
    },
    MultiGet {
        range: String,
        keys: Vec<Bytes>,
        snapshot: Option<u64>,
    },
    /// Applies the operations; those that fall in one chunk are atomic.
    Write {
        range: String,
        ops: Vec<WriteOp>,
        atomic: bool,
    },
    Scan(ScanRequest),
    /// Pins the current state; it stays readable until released or until
    /// the connection closes.
    CreateSnapshot,
    ReleaseSnapshot {
        seq: u64,
    },
    /// Rewrites every chunk of the range keeping only what pinned snapshots
    /// can still see. On a replicated range every replica compacts its own
    /// files; `replica_only` (sent from one replica's node to another's)
    /// asks for the answering node's replica alone.
    CompactRange {
        name: String,
        #[serde(default)]
        replica_only: bool,
    },
    /// Splits the chunk holding `key` so that `key` starts a new chunk.
    SplitChunk {
        range: String,
        key: Bytes,
    },
    /// Registers a mapper from `source` to `target` (created if missing);
    /// it backfills what `source` holds, then follows its changes.
    CreateMapper {
        name: String,
        source: String,
        target: String,
        function: MapFunction,
    },
    DropMapper {
        name: String,
    },
    /// Status of every view.
    ListViews,
    /// Registers a reducer on `range`.
    CreateReducer {
        name: String,
        range: String,
        function: ReduceFunction,
    },
    DropReducer {
        name: String,
    },
    /// Registers a sink that keeps the Redis database at `url` equal to a
    /// range or a view's rows.
    CreateSink {
        name: String,
        source: SinkSource,
        url: String,
        /// Prepended to every Redis key the sink writes.
        prefix: Bytes,
    },
    DropSink {
        name: String,
    },
    Aggregate(AggregateRequest),
    /// Starts a batch map-reduce job on the answering node ([`JobSpec`]);
    /// answers `Ok` once it runs (follow it with [`Command::ListJobs`]).
    /// Errors: `BadRequest` for a spec that does not hold (its message
    /// says what), `JobExists` while a job of that name runs.
    RunJob(JobSpec),
    /// The answering node's jobs: running, and the last ones that ended.
    ListJobs,
    /// Stops a running job; it ends `cancelled` and leaves no output in a
    /// range. Errors: `JobNotFound`.
    CancelJob {
        name: String,
    },
    /// Gives the node's password (`serve --requirepass`). On a node with a
    /// password it is the only request a connection may send until it
    /// succeeds; on a node without one it fails, so a client that expects
    /// a protected node learns that this one is open.
    Auth {
        password: Password,
    },
    /// The nodes of the cluster as the answering node sees them.
    ClusterStatus,
    /// Takes a node out of the cluster for good: it leaves the meta
    /// range's Raft group and the node list. Its data directory can then
    /// be deleted; it cannot rejoin with it.
    ClusterRemove {
        node: u64,
    },
    /// Node to node: a node asks for an id to join the cluster with.
    /// `token` is the joining node's own random id for this attempt, so a
    /// retried request gets the same node id.
    ClusterJoin {
        addr: String,
        token: u64,
    },
    /// Node to node: once it runs its replica of the meta range, a joining
    /// node asks the meta leader to make it a voter.
    ClusterAddVoter {
        node: u64,
        addr: String,
    },
    /// Node to node: the answering node's id and what it holds.
    NodeInfo,
    /// Node to node: a command for the meta range, encoded by the node's
    /// cluster layer, to be proposed by the meta leader; answered with
    /// [`Reply::Raft`] holding the encoded reply.
    MetaPropose {
        command: Bytes,
    },
    /// Node to node: an RPC of the Raft group `group`, bytes as the
    /// node's consensus layer encodes them.
    Raft {
        group: u64,
        rpc: Bytes,
        /// The sender's cluster and node, and the node it is meant for: a
        /// node refuses a message of another cluster, for another node id
        /// (a node that took over a member's address), or from a node
        /// removed from the cluster.
        cluster: u64,
        from: u64,
        to: u64,
    },
    /// Status of the views this node runs, and no others (a node asks
    /// the others with it to answer `ListViews` for views of replicated
    /// ranges, which run on their chunk's leader).
    ListViewsHere,
    /// Node to node: Redis commands for database `db`, a replicated range,
    /// to run on the leader of its chunk (the node answering forwards them
    /// on when it is not). `commands` holds one command; or with `multi`
    /// the commands of a MULTI/EXEC to run as one transaction; or, without
    /// it, up to 256 commands a client pipelined, to run one after another
    /// with their writes in one Raft entry. Answered with [`Reply::Resp`]:
    /// the reply (or the pipeline's replies, one after another) in RESP
    /// version `proto` (2 or 3).
    /// `hops` counts the forwards so far; past a few the request fails.
    RespForward {
        db: u32,
        commands: Vec<Vec<Bytes>>,
        multi: bool,
        proto: u8,
        hops: u8,
    },
    /// Node to node: Raft's read index of chunk group `group`, asked of its
    /// leader (answered with [`Reply::Index`]): a replica that applied its
    /// log up to it holds every write acknowledged before the request.
    GroupReadIndex {
        group: u64,
    },
    /// Node to node: a message PUBLISHed on another node's Redis endpoint,
    /// for this node's subscribers of `channel` and of the patterns
    /// matching it (answered with [`Reply::Ok`]; it goes no further).
    RespPublish {
        channel: Bytes,
        message: Bytes,
    },
    /// Node to node: the voters and learners of group `group` (a chunk's,
    /// or 0: the meta range's) as the
    /// answering node's replica knows them, answered with
    /// [`Reply::Members`] (a node asks before it drops a replica the chunk
    /// map no longer lists: only once the group's leader has taken it out).
    GroupMembers {
        group: u64,
    },
    /// Node to node: up to `len` bytes at `offset` of segment region
    /// `region` that the answering node registered in its process
    /// `incarnation` (a replica copying a chunk's log segments for a
    /// snapshot), answered with [`Reply::Segment`]: fewer bytes only when
    /// the node has not written the rest yet. Errors: `SnapshotNotFound`
    /// when the region is gone (the snapshot that listed it is stale),
    /// `BadRequest` for a read outside it or over 1 MiB.
    SegmentRead {
        cluster: u64,
        incarnation: u64,
        region: u64,
        offset: u64,
        len: u32,
    },
    /// Node to node, on nodes built with RDMA: connects a reliable-connected
    /// queue pair of the answering node to `reader`'s, answered with
    /// [`Reply::RdmaEndpoint`] (the answering side's queue pair), over
    /// which the reader then posts RDMA READs of regions. Errors:
    /// `BadRequest` from a node without RDMA (built without it, or no
    /// device): the reader uses [`Command::SegmentRead`] instead.
    RdmaConnect {
        cluster: u64,
        reader: RdmaEndpoint,
    },
    /// Node to node, on nodes built with RDMA: registers segment region
    /// `region` (of process `incarnation`) for remote reads, renewing its
    /// lease, answered with [`Reply::RdmaRegion`]. Errors as
    /// [`Command::SegmentRead`], and `BadRequest` from a node without RDMA.
    RdmaRegion {
        cluster: u64,
        incarnation: u64,
        region: u64,
    },
    /// What every view and sink was created from, answered with
    /// [`Reply::ViewDefinitions`] (by name): enough to create them again
    /// elsewhere (`monotable restore`). A sink's URL is given as created,
    /// password included.
    ViewDefinitions,
}

impl Command {
    /// Every command's name, in the order of [`Command::index`]: the
    /// label of its figures (`/metrics`).
    pub const NAMES: [&'static str; 41] = [
        "Ping",
        "CreateRange",
        "ListRanges",
        "DescribeRange",
        "DropRange",
        "Get",
        "MultiGet",
        "Write",
        "Scan",
        "CreateSnapshot",
        "ReleaseSnapshot",
        "CompactRange",
        "SplitChunk",
        "CreateMapper",
        "DropMapper",
        "ListViews",
        "CreateReducer",
        "DropReducer",
        "CreateSink",
        "DropSink",
        "Aggregate",
        "RunJob",
        "ListJobs",
        "CancelJob",
        "Auth",
        "ClusterStatus",
        "ClusterRemove",
        "ClusterJoin",
        "ClusterAddVoter",
        "NodeInfo",
        "MetaPropose",
        "Raft",
        "ListViewsHere",
        "RespForward",
        "GroupReadIndex",
        "RespPublish",
        "GroupMembers",
        "SegmentRead",
        "RdmaConnect",
        "RdmaRegion",
        "ViewDefinitions",
    ];

    /// The command's place in [`Command::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            Command::Ping => 0,
            Command::CreateRange { .. } => 1,
            Command::ListRanges => 2,
            Command::DescribeRange { .. } => 3,
            Command::DropRange { .. } => 4,
            Command::Get { .. } => 5,
            Command::MultiGet { .. } => 6,
            Command::Write { .. } => 7,
            Command::Scan(..) => 8,
            Command::CreateSnapshot => 9,
            Command::ReleaseSnapshot { .. } => 10,
            Command::CompactRange { .. } => 11,
            Command::SplitChunk { .. } => 12,
            Command::CreateMapper { .. } => 13,
            Command::DropMapper { .. } => 14,
            Command::ListViews => 15,
            Command::CreateReducer { .. } => 16,
            Command::DropReducer { .. } => 17,
            Command::CreateSink { .. } => 18,
            Command::DropSink { .. } => 19,
            Command::Aggregate(..) => 20,
            Command::RunJob(..) => 21,
            Command::ListJobs => 22,
            Command::CancelJob { .. } => 23,
            Command::Auth { .. } => 24,
            Command::ClusterStatus => 25,
            Command::ClusterRemove { .. } => 26,
            Command::ClusterJoin { .. } => 27,
            Command::ClusterAddVoter { .. } => 28,
            Command::NodeInfo => 29,
            Command::MetaPropose { .. } => 30,
            Command::Raft { .. } => 31,
            Command::ListViewsHere => 32,
            Command::RespForward { .. } => 33,
            Command::GroupReadIndex { .. } => 34,
            Command::RespPublish { .. } => 35,
            Command::GroupMembers { .. } => 36,
            Command::SegmentRead { .. } => 37,
            Command::RdmaConnect { .. } => 38,
            Command::RdmaRegion { .. } => 39,
            Command::ViewDefinitions => 40,
        }
    }

    /// The command's name (`Get`, `Write`).
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// A reliable-connected queue pair's address (InfiniBand or RoCE): what
/// the other side needs to connect its own queue pair to it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RdmaEndpoint {
    /// The port's local identifier (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The port's global identifier (an IPv6 address on RoCE).
    pub gid: [u8; 16],
    pub qp_num: u32,
    /// The first packet sequence number (24 bits).
    pub psn: u32,
}

/// A password on the wire. Its `Debug` form hides the bytes, so a logged
/// request never shows it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(pub Bytes);

impl Password {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Password(Bytes::from(bytes.into()))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// What a reducer computes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ReduceFunction {
    /// count, sum, min, max, stats or count_distinct.
    Builtin(String),
    /// Lua 5.4 source defining a global `reduce(keys, values, rereduce)`.
    Lua { source: String },
}

/// An aggregate query; the bounds are as in [`ScanRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AggregateRequest {
    pub reducer: String,
    pub start: Option<Bytes>,
    pub end: Option<Bytes>,
    pub prefix: Option<Bytes>,
    /// Group rows by their first N tuple elements.
    pub group_level: Option<u32>,
    /// Wait until every write committed before the query arrived is
    /// reflected (or fail with `ViewLagging` after `timeout_ms`).
    pub fresh: bool,
    /// How long a fresh aggregate waits, in milliseconds: 0 does not wait
    /// (it answers only if the view is fresh already, else `ViewLagging` at
    /// once). Default [`crate::limits::AGGREGATE_TIMEOUT_DEFAULT_MS`]; at
    /// most a day.
    pub timeout_ms: u64,
    /// A grouped aggregate goes on from a previous reply's `cursor` (the
    /// same reducer, bounds and group level); `None` starts at `start`.
    #[serde(default)]
    pub cursor: Option<Bytes>,
    /// Most groups in one reply; 0 (or more than
    /// [`crate::limits::AGGREGATE_GROUPS_MAX`]) means that maximum.
    #[serde(default)]
    pub limit: u32,
}

impl Default for AggregateRequest {
    fn default() -> Self {
        AggregateRequest {
            reducer: String::new(),
            start: None,
            end: None,
            prefix: None,
            group_level: None,
            fresh: false,
            timeout_ms: crate::limits::AGGREGATE_TIMEOUT_DEFAULT_MS,
            cursor: None,
            limit: 0,
        }
    }
}

/// An aggregate's result: reductions as MessagePack documents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum AggregateReply {
    Total(Bytes),
    /// One page of groups: (group key, reduction), in key order, at most
    /// the request's `limit` of them and about
    /// [`crate::limits::AGGREGATE_REPLY_SIZE_MAX_BYTES`]. `cursor` is set
    /// when more groups follow: send the same request with it for the next
    /// page.
    Groups {
        groups: Vec<(Bytes, Bytes)>,
        cursor: Option<Bytes>,
    },
}

/// What a mapper computes from each record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum MapFunction {
    /// Emit the record's field at `key_path` (dot-separated) as the index
    /// key; the row's value is the field at `value_path`, or nil.
    Field { key_path: String, value_path: Option<String> },
    /// Lua 5.4 source defining a global `map(key, value)` that calls
    /// `emit(key, value)` for each row.
    Lua { source: String },
}

/// A batch map-reduce job: map every record of the input with a mapper's
/// function, combine the values emitted under each key with a reducer's
/// function, and write one row per emitted key to the output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub input: JobInput,
    pub output: JobOutput,
    pub map: MapFunction,
    pub reduce: ReduceFunction,
    /// Bytes the shuffle may hold in memory, shared by its tasks; past it
    /// tables spill sorted runs. See `limits::JOB_MEMORY_BUDGET_*`.
    pub memory_budget_bytes: u64,
    /// Where disk runs go (a directory on the answering node); `None`:
    /// `DATA_DIR/jobs`.
    pub spill_dir: Option<String>,
    /// `Some(redis://HOST:PORT)`: runs go to that Redis server, one
    /// database per task (seed 000's intermediate store), instead of disk.
    pub intermediate: Option<String>,
    /// Map tasks run at once (one per source chunk, or per share of a
    /// Redis keyspace); 0: the node's core count.
    pub tasks: u32,
    /// Replace an output range that holds rows, or a Redis output hash
    /// that exists; without it such a job is refused (`BadRequest`).
    #[serde(default)]
    pub replace: bool,
}

/// Where a job reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobInput {
    /// Every record of a range, at one pinned snapshot.
    Range(String),
    /// The keys of a Redis database (`redis://HOST:PORT/DB`), read by SCAN
    /// (with `MATCH pattern` when given) and typed reads.
    Redis { url: String, pattern: Option<String> },
}

/// Where a job writes its rows (key = the emitted key as a tuple, value =
/// the reduction as MessagePack).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum JobOutput {
    /// A range, replaced whole when the job succeeds (written to a staging
    /// range first, then swapped in).
    Range(String),
    /// A Redis database: one string per row (key and value rendered as
    /// `redis export` renders them), or the fields of `hash`; each key
    /// prefixed with `prefix`.
    Redis { url: String, hash: Option<Bytes>, prefix: Bytes },
}

/// Where a job stands ([`Command::ListJobs`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub name: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// While running: `map` (reading, mapping, combining), `merge`
    /// (merging runs and writing the output) or `commit`.
    pub phase: String,
    pub input: String,
    pub output: String,
    /// Records read from the input, and how many it held when the job
    /// began (an estimate for a Redis input: `DBSIZE`).
    pub records_in: u64,
    pub records_total: u64,
    /// Rows the map function emitted.
    pub rows_emitted: u64,
    /// Records whose map failed, and rows whose reduction failed (each
    /// left out, as in views), with the first few errors and their keys.
    pub map_errors: u64,
    pub reduce_errors: u64,
    pub errors: Vec<JobErrorSample>,
    /// Rows written to the output.
    pub rows_out: u64,
    /// Runs spilled, their bytes, and the most bytes the tables held.
    pub spills: u64,
    pub spilled_bytes: u64,
    pub peak_memory_bytes: u64,
    pub tasks: u32,
    pub elapsed_ms: u64,
    /// Milliseconds spent reading and mapping, and merging and writing
    /// the output (so far).
    #[serde(default)]
    pub map_ms: u64,
    #[serde(default)]
    pub merge_ms: u64,
    /// Why a job failed.
    pub error: Option<String>,
}

/// One failed record or row of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobErrorSample {
    /// The input record's key (a map error) or the emitted key (a reduce
    /// error).
    pub key: Bytes,
    pub error: String,
}

/// Where a view stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ViewStatus {
    pub name: String,
    /// "mapper" or "reducer".
    pub kind: String,
    /// The range the view reads.
    pub source: String,
    /// The range a mapper writes (empty for a reducer).
    pub target: String,
    /// The function, as a person would write it.
    pub function: String,
    /// Every change to `source` committed at or below this seq is reflected.
    pub watermark: u64,
    /// Changes to `source` above the watermark not yet reflected.
    pub pending_changes: u64,
    /// Index rows written (puts and deletes) since the node started.
    pub rows_written: u64,
    /// Records the function failed on since the node started.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_key: Option<Bytes>,
    /// While backfilling: records done, and records in the source when the
    /// backfill began. A reducer shows its tree's build, or the backfill of
    /// a mapper feeding its range; `(0, 0)` while the progress is unknown
    /// (restoring after a restart, or busy).
    pub backfill: Option<(u64, u64)>,
    /// A reducer's reduce tree.
    pub tree: Option<TreeStatus>,
}

/// The shape of a reducer's reduce tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeStatus {
    /// Levels: the range, then one meta-range per level above it.
    pub levels: u32,
    /// Chunks of the range, and how many have their tree in memory (the
    /// others are loaded when a change or a query's edge lands in them).
    pub chunks: u64,
    pub chunks_in_memory: u64,
    /// The checkpoint saved with the meta-ranges, which a restart resumes
    /// from; `None` before the first save.
    pub saved: Option<u64>,
    /// Parts of each level, the range first (its chunks), then each
    /// meta level's; `levels` entries once built.
    #[serde(default)]
    pub parts: Vec<u64>,
}

/// A write's place in history: the chunk that applied it and its seq there.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitToken {
    pub chunk: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanReply {
    pub records: Vec<Record>,
    /// Where to go on: `Some` when the scan stopped early (limit or reply
    /// size); pass it back as `start` (forward) or `end` (reverse).
    pub resume: Option<Bytes>,
    /// The snapshot the scan read at, when it asked for one. Without one,
    /// each chunk is read at its newest durable state.
    pub snapshot: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkInfo {
    pub id: u64,
    pub start: Bytes,
    /// `None` is the end of the range.
    pub end: Option<Bytes>,
    pub records: u64,
    pub live_bytes: u64,
    pub log_bytes: u64,
    pub last_seq: u64,
    /// Why the chunk is not serving, if it is not.
    pub unavailable: Option<String>,
    /// The nodes holding a replica of the chunk (one for an ordinary
    /// range: the node that answered).
    #[serde(default)]
    pub replicas: Vec<u64>,
    /// The replica leading the chunk's Raft group, as the answering node
    /// knows it; `None` while there is none (an election).
    #[serde(default)]
    pub leader: Option<u64>,
    /// The voters of the chunk's Raft group as the answering replica knows
    /// them: `replicas` once a replica move is done, and during one the
    /// nodes that still count for a majority. Empty from a node without a
    /// replica, and for an ordinary range.
    #[serde(default)]
    pub voters: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RangeInfo {
    pub name: String,
    pub id: u64,
    pub options: RangeOptions,
    pub chunks: Vec<ChunkInfo>,
}

/// A view or sink as created ([`Command::ViewDefinitions`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ViewDefinition {
    /// [`Command::CreateMapper`]'s fields.
    Mapper { name: String, source: String, target: String, function: MapFunction },
    /// [`Command::CreateReducer`]'s fields.
    Reducer { name: String, range: String, function: ReduceFunction },
    /// [`Command::CreateSink`]'s fields.
    Sink { name: String, source: SinkSource, url: String, prefix: Bytes },
}

impl ViewDefinition {
    pub fn name(&self) -> &str {
        match self {
            ViewDefinition::Mapper { name, .. }
            | ViewDefinition::Reducer { name, .. }
            | ViewDefinition::Sink { name, .. } => name,
        }
    }
}

/// What a sink mirrors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum SinkSource {
    /// A range: a Redis database range goes with its Redis types, any
    /// other range as one string per row.
    Range(String),
    /// A mapper's rows, one string per row.
    View(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reply {
    Ok,
    Pong,
    Range(RangeInfo),
    Ranges(Vec<RangeInfo>),
    Value(Option<Bytes>),
    Values(Vec<Option<Bytes>>),
    Written(Vec<CommitToken>),
    Scan(ScanReply),
    Snapshot(u64),
    Views(Vec<ViewStatus>),
    ViewDefinitions(Vec<ViewDefinition>),
    Jobs(Vec<JobStatus>),
    Aggregate(AggregateReply),
    Cluster(ClusterStatus),
    Joined {
        node: u64,
        /// The cluster's id, which every Raft message between its nodes
        /// carries.
        cluster: u64,
    },
    NodeInfo(NodeInfo),
    Raft(Bytes),
    /// A Redis reply, RESP-encoded (answers [`Command::RespForward`]).
    Resp(Bytes),
    /// A Raft log index (answers [`Command::GroupReadIndex`]).
    Index(u64),
    /// Bytes of a segment region (answers [`Command::SegmentRead`]).
    Segment(Bytes),
    /// The answering node's queue pair (answers [`Command::RdmaConnect`]).
    RdmaEndpoint(RdmaEndpoint),
    /// Where a region is readable by RDMA READ (answers
    /// [`Command::RdmaRegion`]): its registered address and remote key,
    /// and the bytes registered from `addr` (the file's length when it was
    /// registered; an active segment grows, and asking again registers the
    /// longer file).
    RdmaRegion {
        addr: u64,
        rkey: u32,
        len: u64,
    },
    /// A group's voters and learners, and whether the answering replica
    /// leads it (answers [`Command::GroupMembers`]).
    Members {
        leader: bool,
        members: Vec<u64>,
    },
}

/// The cluster as one node sees it (`monotable cluster status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub answered_by: u64,
    /// The meta range's leader as the answering node knows it.
    pub meta_leader: Option<u64>,
    /// The meta range's Raft term at the answering node.
    pub meta_term: u64,
    pub nodes: Vec<NodeStatus>,
}

/// One node of [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub id: u64,
    pub addr: String,
    /// It answered the answering node within a second.
    pub live: bool,
    /// Its place in the meta range's Raft group: "leader", "voter",
    /// "learner" or "none" (registered, not yet a member).
    pub meta_role: String,
    /// What it reported of itself, when live.
    pub info: Option<NodeInfo>,
    /// Its replicas are moving to other nodes (`cluster remove`, or dead
    /// too long); it is removed once it holds none.
    #[serde(default)]
    pub draining: bool,
}

/// What a node holds (`Command::NodeInfo`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: u64,
    pub server_version: String,
    /// Chunk replicas on the node.
    pub chunk_replicas: u64,
    /// Of those, the ones whose Raft leader it is (a chunk with one
    /// replica is led by the node that holds it).
    pub chunk_leaders: u64,
    /// The last log index of the meta range this node's replica applied.
    #[serde(default)]
    pub meta_applied: Option<u64>,
    /// Raft groups of chunk replicas the node runs (a draining node is
    /// removed once it runs none).
    #[serde(default)]
    pub replica_groups: u64,
    /// Chunk replicas this node is copying from another node (a replica
    /// move, or a replica that fell behind the leader's log).
    #[serde(default)]
    pub copies: Vec<CopyStatus>,
}

/// A copy of a chunk's log segments under way (`cluster status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyStatus {
    /// The chunk (its Raft group).
    pub chunk: u64,
    /// The node copied from.
    pub from: u64,
    pub copied_bytes: u64,
    pub total_bytes: u64,
    /// Bytes per second read so far.
    pub rate_bytes_per_sec: u64,
    pub elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command's name is its variant's, as `Debug` spells it.
    #[test]
    fn command_names_are_their_variants() {
        let commands = [
            Command::Ping,
            Command::ListRanges,
            Command::CreateSnapshot,
            Command::ListViews,
            Command::ListJobs,
            Command::ClusterStatus,
            Command::NodeInfo,
            Command::ListViewsHere,
            Command::ViewDefinitions,
            Command::DropRange { name: "r".into() },
            Command::Get { range: "r".into(), key: Bytes::from(vec![1]), snapshot: None },
            Command::Scan(ScanRequest::default()),
        ];
        for c in commands {
            let debug = format!("{c:?}");
            let variant = debug.split([' ', '(']).next().unwrap_or_default();
            assert_eq!(c.name(), variant);
        }
        let mut sorted = Command::NAMES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), Command::NAMES.len(), "names are distinct");
    }
}
