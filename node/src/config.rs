//! Settings of a node, with the defaults `monotable serve` uses.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::Secret;

/// When a write is made durable before it is acknowledged.
///
/// | mode | acknowledged after | a power failure can lose |
/// |------|--------------------|--------------------------|
/// | `Always` (default) | the batch is fsynced | nothing that was acknowledged |
/// | `Interval { ms }` | the batch is written to the kernel; fsync every `ms` | up to `ms` of acknowledged writes |
/// | `Never` | the batch is written to the kernel | whatever the kernel had not flushed (typically up to 30 s) |
///
/// A crash of the process alone (kill -9, panic) loses nothing acknowledged
/// in any mode: the kernel has the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    Always,
    Interval { ms: u64 },
    Never,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub fsync: FsyncMode,
    /// How the group commit makes a round durable (see
    /// [`crate::group_commit`]).
    pub sync_method: crate::group_commit::SyncMethod,
    /// A chunk log starts a new segment once the current one reaches this size.
    pub segment_size_max_bytes: u64,
    /// Threads (actix arbiters) that run connections; as many again run
    /// chunk actors, and as many again view actors.
    pub workers: usize,
    /// The password clients of both protocols must give before anything
    /// else (Redis's `requirepass`; native `Command::Auth`); `None`: no
    /// authentication. See [`crate::auth`] for how failures are throttled.
    pub password: Option<Secret>,
    /// `serve --aclfile`: the Redis protocol's ACL users, read at start and
    /// by ACL LOAD, written by ACL SAVE (see [`crate::resp::acl`]).
    pub acl_file: Option<std::path::PathBuf>,
    /// How long a sink keeps the source's history for a Redis it cannot
    /// reach before it lets go and plans a fresh copy.
    pub sink_outage_max_ms: u64,
    /// Rebuild the catalog from the chunk directories before starting
    /// (`serve --recover-catalog`); the old catalog is moved aside.
    pub recover_catalog: bool,
    /// Memory all Lua VMs of views may reserve together (each reserves its
    /// own limit while it lives): `serve --lua-memory-max-bytes`.
    pub lua_memory_max_bytes: usize,
    /// Memory a new mapper's bulk backfill sorts its rows in before it
    /// spills runs (`serve --backfill-memory-max-bytes`).
    pub backfill_memory_max_bytes: usize,
    /// Instructions an EVAL script or FCALL function may run before it is
    /// stopped, none of its writes applied (`serve
    /// --script-instructions-max`).
    pub script_instructions_max: u64,
    /// `serve --join`: a node of the cluster to join (on a node that has
    /// not joined one yet).
    pub join: Option<String>,
    /// The address other nodes reach this one at; `None`: the address the
    /// native protocol listens on.
    pub advertise: Option<String>,
    /// Raft's timers for the groups of this node.
    pub raft_timing: crate::consensus::Timing,
    /// `serve --raft-snapshot-entries`: a replicated chunk builds a
    /// snapshot (marks its chunk durable) and purges its Raft log every
    /// this many entries; at least 1.
    pub raft_snapshot_entries: u64,
    /// `serve --dead-after-secs`: a member silent this long is drained and
    /// removed; 0 never.
    pub dead_after_secs: u64,
    /// Requests that take at least this long are logged (0: none).
    pub slow_request_ms: u64,
}

/// Default of [`NodeConfig::slow_request_ms`]: a second.
pub const SLOW_REQUEST_DEFAULT_MS: u64 = 1000;

/// Default segment size; chunks with a small `chunk_size_max` use smaller ones.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 16 * 1024 * 1024;

/// Most client connections a node serves at once; more are refused.
pub const CONNECTIONS_MAX: usize = 10_000;

/// Seconds a new connection has to complete its handshake.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// Default of [`NodeConfig::sink_outage_max_ms`]: ten minutes.
pub const SINK_OUTAGE_MAX_DEFAULT_MS: u64 = 600_000;

/// Seconds a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./monotable-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            fsync: FsyncMode::Always,
            sync_method: crate::group_commit::SyncMethod::Auto,
            segment_size_max_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            password: None,
            acl_file: None,
            sink_outage_max_ms: SINK_OUTAGE_MAX_DEFAULT_MS,
            recover_catalog: false,
            lua_memory_max_bytes: crate::view::sandbox::LUA_MEMORY_MAX_DEFAULT_BYTES,
            backfill_memory_max_bytes:
                crate::view::bulk_backfill::BULK_BACKFILL_MEMORY_DEFAULT_BYTES,
            script_instructions_max: crate::resp::scripting::vm::SCRIPT_INSTRUCTIONS_MAX,
            join: None,
            advertise: None,
            raft_timing: crate::consensus::Timing::PRODUCTION,
            raft_snapshot_entries: crate::replicated::RAFT_SNAPSHOT_ENTRIES_DEFAULT,
            dead_after_secs: crate::cluster::balance::DEAD_AFTER_SECS_DEFAULT,
            slow_request_ms: SLOW_REQUEST_DEFAULT_MS,
        }
    }
}

impl NodeConfig {
    /// Segment size for a range: a quarter of its chunk size, within bounds,
    /// so that small chunks still have several segments to seal and compact.
    pub fn segment_size_for(&self, chunk_size_max_bytes: u64) -> u64 {
        (chunk_size_max_bytes / 4).clamp(4096, self.segment_size_max_bytes)
    }
}

impl NodeConfig {
    /// A node for tests and examples: data in `dir`, a free loopback port,
    /// one worker.
    pub fn for_tests(dir: &std::path::Path) -> Self {
        NodeConfig {
            data_dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            ..NodeConfig::default()
        }
    }
}

/// The machine's memory, from `/proc/meminfo` (`None` where there is
/// none).
pub fn memory_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
