//! The `monotable` command line: `serve` runs a node; every other command is
//! a client of one (`--addr`, default 127.0.0.1:7070, env `MONOTABLE_ADDR`).
//!
//! The names and output formats here are a contract scripts rely on.

mod backup;
mod bench;
mod bench_views;
mod config_file;
mod job;
mod load;
mod redis;
pub(crate) mod run;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{FsyncMode, NodeConfig};

#[derive(Parser)]
#[command(
    name = "monotable",
    version,
    about = "Monotable: an ordered key-value database with live map-reduce views"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Address of the node's native protocol.
    #[arg(long, env = "MONOTABLE_ADDR", default_value = "127.0.0.1:7070", global = true)]
    pub addr: String,
    /// The node's password (serve --requirepass). On the command line it
    /// shows in `ps`; prefer MONOTABLE_PASSWORD or --password-file.
    #[arg(long, env = "MONOTABLE_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// Read the node's password from this file (without its final
    /// newline); wins over --password and MONOTABLE_PASSWORD.
    #[arg(long, env = "MONOTABLE_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Milliseconds to wait for the connection, and again for the node to
    /// answer the handshake and the password.
    #[arg(
        long,
        env = "MONOTABLE_CONNECT_TIMEOUT_MS",
        default_value_t = monotable_client::CONNECT_TIMEOUT_DEFAULT_MS,
        global = true
    )]
    pub connect_timeout_ms: u64,
}

/// Reads a password from a file: its content without one final newline.
/// An empty password is refused: a file meant to hold one that holds
/// nothing is a mistake, not a wish for no password.
pub fn read_password_file(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the password file {}: {e}", path.display()))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(password.to_owned())
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node.
    Serve(ServeArgs),
    /// Create, list, describe, compact and drop ranges.
    Range {
        #[command(subcommand)]
        command: RangeCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Write one record. KEY and VALUE are JSON (a bare word is a string).
    Put {
        range: String,
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print a record's value as JSON; exits 1 when the key is absent.
    Get {
        range: String,
        key: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a record.
    Del {
        range: String,
        key: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print records as JSON lines {"key":..,"value":..}.
    Scan(ScanArgs),
    /// Load JSON lines {"key":..,"value":..} from FILE ('-' for stdin).
    Load {
        range: String,
        file: String,
        /// Records per write batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Measure put, get and scan throughput and latency against a node.
    Bench(bench::BenchArgs),
    /// Measure what live views cost: backfill, incremental updates,
    /// sub-range aggregates, freshness.
    BenchViews(bench_views::BenchViewsArgs),
    /// Create and drop mappers (live secondary indexes).
    Mapper {
        #[command(subcommand)]
        command: MapperCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Create and drop reducers (live aggregates).
    Reducer {
        #[command(subcommand)]
        command: ReducerCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print a reducer's aggregate as JSON (JSON lines with --group-level).
    Agg(AggArgs),
    /// Run, list and cancel batch map-reduce jobs over a range or Redis.
    Job {
        #[command(subcommand)]
        command: job::JobCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Move data between Monotable and Redis: import, export, sinks.
    Redis {
        #[command(subcommand)]
        command: redis::RedisCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// See and change the cluster: nodes, liveness, removal.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Copy every range and view definition at one snapshot into DIR (a
    /// new or empty directory): a consistent, checksummed backup.
    Backup {
        dir: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Check the backup in DIR, then load it into the node: its ranges,
    /// records and views (the node must have none of their names).
    Restore {
        dir: PathBuf,
        /// Only check the backup's files and print what it holds; connect
        /// to no node.
        #[arg(long)]
        check: bool,
        /// Create the backup's sinks too (they write to the Redis servers
        /// the backup names).
        #[arg(long)]
        sinks: bool,
        /// Return once the data is loaded and the views created, without
        /// waiting for the views to catch up.
        #[arg(long)]
        no_wait: bool,
        /// Replicas of each range's chunks (capped at the nodes there are),
        /// instead of the backup's counts; Redis databases always get the
        /// node's own.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Status of every view: watermark, pending changes, errors, backfill.
    Views {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// The cluster's nodes as the node asked sees them: id, address,
    /// liveness, role in the meta range, chunk replicas and leaders.
    Status {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Take a node out of the cluster for good. A node that holds chunk
    /// replicas is drained first: they move to other nodes (watch `cluster
    /// status`), then it leaves. Its id is never reused; to bring the
    /// machine back, start it on an empty data directory with --join.
    Remove {
        /// The node's id (see `cluster status`).
        node: u64,
    },
}

#[derive(Subcommand)]
enum ReducerCmd {
    /// Register a reducer on RANGE.
    Create {
        name: String,
        #[arg(long)]
        range: String,
        /// count, sum, min, max, stats or count_distinct.
        #[arg(long, required_unless_present = "lua", conflicts_with = "lua")]
        builtin: Option<String>,
        /// A Lua 5.4 file defining `reduce(keys, values, rereduce)`: `keys` and
        /// `values` are lists, also for one row (its value is `values[1]`).
        #[arg(long)]
        lua: Option<PathBuf>,
    },
    /// Drop a reducer.
    Drop { name: String },
}

#[derive(Args)]
struct AggArgs {
    reducer: String,
    #[command(flatten)]
    bounds: KeyBoundsArgs,
    /// Group rows by their first N key elements; prints one JSON line per group.
    #[arg(long)]
    group_level: Option<u32>,
    /// Wait until every write committed before the query is reflected.
    #[arg(long)]
    fresh: bool,
    /// How long --fresh waits before failing with a "view lagging" error;
    /// 0 does not wait (answers only if the view is fresh already).
    #[arg(long, default_value_t = monotable_proto::limits::AGGREGATE_TIMEOUT_DEFAULT_MS)]
    timeout_ms: u64,
    /// With --group-level: print at most N groups; more groups than that
    /// is an error (after the N are printed). Default: every group.
    #[arg(long)]
    limit: Option<u64>,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Subcommand)]
enum MapperCmd {
    /// Register a mapper from RANGE to RANGE; it backfills, then follows changes.
    Create {
        name: String,
        /// The range to read.
        #[arg(long)]
        source: String,
        /// The range to write index rows to (created if missing).
        #[arg(long)]
        target: String,
        /// Emit this field of each record (dot-separated path) as the row key.
        #[arg(long, required_unless_present = "lua", conflicts_with = "lua")]
        field: Option<String>,
        /// Use this field as the row value (default: nil).
        #[arg(long, requires = "field")]
        value_field: Option<String>,
        /// A Lua 5.4 file defining `map(key, value)`, which calls `emit(key, value)`.
        #[arg(long)]
        lua: Option<PathBuf>,
    },
    /// Drop a mapper; its target range keeps the rows.
    Drop { name: String },
}

#[derive(Args)]
struct ServeArgs {
    /// Read settings from this TOML file: `option-name = value` for any
    /// option below (a flag or its environment variable wins over the
    /// file). See `--print-config`.
    #[arg(long, env = "MONOTABLE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the settings in effect (flags, environment, config file,
    /// defaults), each with where it came from, as a TOML file --config
    /// reads; then exit.
    #[arg(long)]
    print_config: bool,
    /// Directory for the node's data; created if missing.
    #[arg(long, env = "MONOTABLE_DATA_DIR", default_value = "./monotable-data")]
    data_dir: PathBuf,
    /// Address for the native protocol.
    #[arg(long, env = "MONOTABLE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Address for the Redis protocol (RESP2/RESP3), or "off".
    #[arg(long, env = "MONOTABLE_RESP_LISTEN", default_value = "127.0.0.1:7379")]
    resp_listen: String,
    /// Address for HTTP (GET /metrics: Prometheus/OpenMetrics text), or
    /// "off". It asks for no password: keep it on loopback or a private
    /// network.
    #[arg(long, env = "MONOTABLE_HTTP_LISTEN", default_value = "127.0.0.1:7080")]
    http_listen: String,
    /// Require clients of both protocols to give this password first
    /// (native clients: --password; Redis clients: AUTH, as Redis's
    /// requirepass). On the command line it shows in `ps`; prefer
    /// MONOTABLE_REQUIREPASS or --requirepass-file. Empty: no password.
    #[arg(long, env = "MONOTABLE_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Read the password of --requirepass from this file (without its final
    /// newline); wins over --requirepass and MONOTABLE_REQUIREPASS.
    #[arg(long, env = "MONOTABLE_REQUIREPASS_FILE")]
    requirepass_file: Option<PathBuf>,
    /// The Redis protocol's ACL users (Redis's aclfile): one `user NAME
    /// RULES...` line each, read at start (a file that does not load stops
    /// the start) and by ACL LOAD, written by ACL SAVE. Without it users
    /// live in memory only.
    #[arg(long, env = "MONOTABLE_ACLFILE")]
    aclfile: Option<PathBuf>,
    /// How long a Redis sink keeps the source's history while its Redis is
    /// unreachable; after that it lets go and copies afresh once Redis is
    /// back.
    #[arg(long, env = "MONOTABLE_SINK_OUTAGE_MAX_MS", default_value_t = crate::config::SINK_OUTAGE_MAX_DEFAULT_MS)]
    sink_outage_max_ms: u64,
    /// Memory all Lua functions of views may hold together; each Lua VM
    /// reserves its own limit (64 MiB) from it while it lives. Bytes, or
    /// with a unit: 1GiB.
    #[arg(long, env = "MONOTABLE_LUA_MEMORY_MAX_BYTES", value_parser = parse_size,
          default_value_t = crate::view::sandbox::LUA_MEMORY_MAX_DEFAULT_BYTES as u64)]
    lua_memory_max_bytes: u64,
    /// Memory a new mapper's bulk backfill sorts its rows in before it
    /// spills sorted runs under the data directory (`backfill/`), e.g.
    /// 256MiB; at least 1MiB.
    #[arg(long, env = "MONOTABLE_BACKFILL_MEMORY_MAX_BYTES", value_parser = parse_backfill_memory,
          default_value_t = crate::view::bulk_backfill::BULK_BACKFILL_MEMORY_DEFAULT_BYTES as u64)]
    backfill_memory_max_bytes: u64,
    /// Instructions an EVAL script or FCALL function may run before it is
    /// stopped with none of its writes applied (a last stop for one that
    /// has written and cannot be killed; SCRIPT KILL stops the others).
    #[arg(long, env = "MONOTABLE_SCRIPT_INSTRUCTIONS_MAX", default_value_t = crate::resp::scripting::vm::SCRIPT_INSTRUCTIONS_MAX)]
    script_instructions_max: u64,
    /// When writes are fsynced: always (before each acknowledgement, many
    /// writes per fsync), interval (every --fsync-interval-ms), never (left
    /// to the OS).
    #[arg(long, env = "MONOTABLE_FSYNC", value_enum, default_value_t = FsyncArg::Always)]
    fsync: FsyncArg,
    /// Milliseconds between fsyncs with --fsync interval.
    #[arg(long, env = "MONOTABLE_FSYNC_INTERVAL_MS", default_value_t = 100)]
    fsync_interval_ms: u64,
    /// How the node-wide group commit makes the writes of all chunks
    /// durable together: auto (fdatasync each file for a few files, one
    /// syncfs for more), fdatasync (each file written), syncfs (the whole
    /// file system at once: flushes other programs' files too; Linux 5.8+).
    #[arg(long, env = "MONOTABLE_SYNC_METHOD", value_enum, default_value_t = SyncMethodArg::Auto)]
    sync_method: SyncMethodArg,
    /// Threads for connections, as many for chunks and as many for views
    /// (default: one per core).
    #[arg(long, env = "MONOTABLE_WORKERS")]
    workers: Option<usize>,
    /// Log level or filter: error, warn, info, debug, trace, or per
    /// module, e.g. info,monotable_node::view=debug (the syntax of
    /// RUST_LOG, which sets it too).
    #[arg(long, visible_alias = "log", env = "RUST_LOG", default_value = "info")]
    log_level: String,
    /// Log lines as text (colored on a terminal) or as JSON objects, one
    /// per line (timestamp, level, target, message and the event's fields).
    #[arg(long, env = "MONOTABLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log a warning for each request that took at least this many
    /// milliseconds to serve (protocol, command, client; never its
    /// arguments); 0: never. Requests that block by design (BLPOP, XREAD
    /// BLOCK) are not timed.
    #[arg(long, env = "MONOTABLE_SLOW_REQUEST_MS", default_value_t = crate::config::SLOW_REQUEST_DEFAULT_MS)]
    slow_request_ms: u64,
    /// Rebuild a damaged or lost catalog from the chunk directories (each
    /// holds a descriptor naming its range and keys), then serve. The old
    /// catalog is moved aside, not deleted; mappers, reducers and sinks
    /// must be created again.
    #[arg(long, env = "MONOTABLE_RECOVER_CATALOG")]
    recover_catalog: bool,
    /// Join the cluster the node at this address belongs to (native
    /// address). Only on a node that is in no cluster yet; a node that
    /// joined once rejoins by itself. Without it, a fresh node founds a
    /// cluster of one.
    #[arg(long, env = "MONOTABLE_JOIN", value_name = "ADDR")]
    join: Option<String>,
    /// The address other nodes reach this one at (default: --listen). Needed
    /// when --listen is a wildcard address such as 0.0.0.0.
    #[arg(long, env = "MONOTABLE_ADVERTISE_ADDR", value_name = "ADDR")]
    advertise_addr: Option<String>,
    /// Raft heartbeat interval of this node's groups, in milliseconds.
    #[arg(long, env = "MONOTABLE_RAFT_HEARTBEAT_MS", default_value_t = crate::consensus::Timing::PRODUCTION.heartbeat_ms)]
    raft_heartbeat_ms: u64,
    /// A follower that hears no leader for this long (randomised up to
    /// twice as long) starts an election, in milliseconds. Must be well
    /// above --raft-heartbeat-ms.
    #[arg(long, env = "MONOTABLE_RAFT_ELECTION_TIMEOUT_MS", default_value_t = crate::consensus::Timing::PRODUCTION.election_min_ms)]
    raft_election_timeout_ms: u64,
    /// A replicated chunk builds a snapshot and purges its Raft log every
    /// this many log entries (etcd's --snapshot-count). Fewer keep less
    /// log on disk and send lagging replicas snapshots sooner.
    #[arg(long, env = "MONOTABLE_RAFT_SNAPSHOT_ENTRIES", default_value_t = crate::replicated::RAFT_SNAPSHOT_ENTRIES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    raft_snapshot_entries: u64,
    /// A member that answers nobody for this long, in seconds, is drained:
    /// its chunk replicas move to other nodes, and then it is removed from
    /// the cluster (as `cluster remove` does). 0: never.
    #[arg(long, env = "MONOTABLE_DEAD_AFTER_SECS", default_value_t = crate::cluster::balance::DEAD_AFTER_SECS_DEFAULT)]
    dead_after_secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum SyncMethodArg {
    Auto,
    Fdatasync,
    Syncfs,
}

/// How `serve` writes its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum FsyncArg {
    Always,
    Interval,
    Never,
}

#[derive(Subcommand)]
enum RangeCmd {
    /// Create a range.
    Create {
        name: String,
        /// Split chunks past this size: bytes, or with a unit (64MiB, 512KiB).
        #[arg(long, value_parser = parse_size)]
        chunk_size: Option<u64>,
        /// Nodes that hold a replica of each chunk, replicated by Raft
        /// (default 3; capped at the live nodes, with a warning; 1: an
        /// ordinary range of the node asked).
        #[arg(long)]
        replicas: Option<u32>,
    },
    /// List ranges, one line each.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a range's chunks as JSON.
    Describe { name: String },
    /// Compact every chunk of a range now.
    Compact { name: String },
    /// Make a chunk boundary at KEY now: the chunk holding KEY splits
    /// there (nothing changes if a chunk starts at KEY already). KEY: JSON
    /// or a bare word, as for `put`. Chunks also split on their own past
    /// `--chunk-size`.
    Split { name: String, key: String },
    /// Drop a range and delete its data.
    Drop { name: String },
}

/// Key bounds shared by `scan` and `agg`.
#[derive(Args)]
struct KeyBoundsArgs {
    /// First key (inclusive), JSON.
    #[arg(long)]
    start: Option<String>,
    /// Last key (exclusive), JSON.
    #[arg(long)]
    end: Option<String>,
    /// Only keys with this tuple prefix, JSON.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    prefix: Option<String>,
}

#[derive(Args)]
struct ScanArgs {
    range: String,
    #[command(flatten)]
    bounds: KeyBoundsArgs,
    /// Most records to print (default: all).
    #[arg(long)]
    limit: Option<u64>,
    /// Descending key order.
    #[arg(long)]
    reverse: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// `serve --backfill-memory-max-bytes`: a size of at least 1 MiB and at
/// most the machine's memory.
fn parse_backfill_memory(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 1 << 20 {
        return Err(format!("{n} bytes is below the least a backfill sorts in, 1MiB"));
    }
    if let Some(total) = crate::config::memory_total_bytes().filter(|&t| n > t) {
        return Err(format!("{n} bytes is more than this machine's memory ({total} bytes)"));
    }
    Ok(n)
}

/// Parses `65536`, `64KiB`, `64MiB`, `1GiB` (also K, M, G, KB, MB, GB as
/// powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Exit status for "not found" (`get` of an absent key).
const EXIT_NOT_FOUND: i32 = 1;
/// Exit status for every other failure.
const EXIT_ERROR: i32 = 2;

/// Entry point of the `monotable` binary.
pub fn main() -> ! {
    let command = <Cli as clap::CommandFactory>::command();
    let (args, from_file) = match config_file::expand(&command, std::env::args_os().collect()) {
        Ok(expanded) => expanded,
        Err(e) => std::process::exit(report(&e)),
    };
    let matches = match command.clone().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            if let Some(f) = from_file.as_ref().filter(|_| e.use_stderr()) {
                eprintln!("(settings of the config file {} are read as flags)", f.path.display());
            }
            std::process::exit(e.exit_code())
        }
    };
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let code = match cli.command {
        Cmd::Serve(args) if args.print_config => {
            let serve = command.find_subcommand("serve").expect("the serve command");
            let serve_matches = matches.subcommand_matches("serve").expect("serve's matches");
            print!("{}", config_file::print(serve, serve_matches, from_file.as_ref()));
            // The settings printed, then whether serve would take them.
            match log_filter(&args).and_then(|_| node_config(&args)) {
                Ok(_) => 0,
                Err(e) => report(&e),
            }
        }
        Cmd::Serve(args) => serve(args),
        other => run::client_main(other),
    };
    std::process::exit(code)
}

fn report(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    EXIT_ERROR
}

/// Levels a log filter names.
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Checks a log filter more strictly than RUST_LOG's own syntax, which
/// reads a bare word as a target to log everything of (`warning` would
/// log nothing of the node): each directive is a level, or TARGET=LEVEL.
fn check_log_filter(spec: &str) -> Result<(), String> {
    for directive in spec.split(',') {
        let d = directive.trim();
        if d.is_empty() {
            return Err("an empty directive".into());
        }
        if d.contains('[') {
            continue; // span filters: left to the parser
        }
        let level = match d.split_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level.trim(),
            Some(_) => return Err(format!("{d:?} names no target")),
            None => d,
        };
        if !LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!("{level:?} is not a level"));
        }
    }
    Ok(())
}

/// The log filter `--log-level` (or RUST_LOG) asks for, checked.
fn log_filter(args: &ServeArgs) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    // openraft reports benign races of its own tasks as warnings; they say
    // nothing to an operator unless asked for by name.
    let spec: Vec<&str> = args.log_level.split(',').map(str::trim).collect();
    let spec = spec.join(",");
    // Quieter than error for openraft, unless asked for by name or
    // everything is off.
    let off = spec.split(',').any(|d| d.eq_ignore_ascii_case("off"));
    let log =
        if spec.contains("openraft") || off { spec } else { format!("{spec},openraft=error") };
    check_log_filter(&args.log_level)
        .and_then(|()| {
            tracing_subscriber::EnvFilter::builder().parse(&log).map_err(|e| e.to_string())
        })
        .map_err(|e| {
            anyhow::anyhow!(
                "--log-level (or RUST_LOG) {:?}: {e}; give a level (error, warn, info, debug, \
                 trace, off) or TARGET=LEVEL directives separated by commas",
                args.log_level
            )
        })
}

/// `--resp-listen` or `--http-listen`: an address, or `None` for "off".
fn optional_addr(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    let addr =
        value.parse().map_err(|e| anyhow::anyhow!("{flag} {value:?}: {e} (an address, or off)"))?;
    Ok(Some(addr))
}

/// The node's settings from serve's arguments, every one checked (the
/// password and ACL files read, the Raft timing, the addresses), without
/// binding or starting anything: `--print-config` runs it too.
fn node_config(args: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let mut config = NodeConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        ..NodeConfig::default()
    };
    config.fsync = match args.fsync {
        FsyncArg::Always => FsyncMode::Always,
        FsyncArg::Interval => FsyncMode::Interval { ms: args.fsync_interval_ms.max(1) },
        FsyncArg::Never => FsyncMode::Never,
    };
    config.sync_method = match args.sync_method {
        SyncMethodArg::Auto => crate::group_commit::SyncMethod::Auto,
        SyncMethodArg::Fdatasync => crate::group_commit::SyncMethod::Fdatasync,
        SyncMethodArg::Syncfs => crate::group_commit::SyncMethod::Syncfs,
    };
    let password = match &args.requirepass_file {
        Some(path) => Some(read_password_file(path)?),
        None => args.requirepass.clone(),
    };
    config.password = password.and_then(crate::auth::Secret::new);
    if let Some(path) = &args.aclfile {
        let password = config.password.as_ref().map(|p| p.expose());
        crate::resp::acl::Acl::with_file(password, path)
            .map_err(|e| anyhow::anyhow!("the ACL file does not load: {e}"))?;
    }
    config.acl_file = args.aclfile.clone();
    config.sink_outage_max_ms = args.sink_outage_max_ms;
    config.slow_request_ms = args.slow_request_ms;
    config.recover_catalog = args.recover_catalog;
    config.lua_memory_max_bytes = usize::try_from(args.lua_memory_max_bytes).unwrap_or(usize::MAX);
    config.backfill_memory_max_bytes = args.backfill_memory_max_bytes as usize;
    config.script_instructions_max = args.script_instructions_max.max(1);
    config.join = args.join.clone();
    config.advertise = args.advertise_addr.clone();
    config.dead_after_secs = args.dead_after_secs;
    config.raft_snapshot_entries = args.raft_snapshot_entries;
    config.raft_timing = crate::consensus::Timing {
        heartbeat_ms: args.raft_heartbeat_ms,
        election_min_ms: args.raft_election_timeout_ms,
        election_max_ms: args.raft_election_timeout_ms.saturating_mul(2),
    };
    config.raft_timing.validate().map_err(|e| {
        anyhow::anyhow!(
            "--raft-heartbeat-ms {} and --raft-election-timeout-ms {}: {e}",
            args.raft_heartbeat_ms,
            args.raft_election_timeout_ms
        )
    })?;
    if let Some(w) = args.workers {
        config.workers = w.max(1);
    }
    // The listeners: distinct addresses (port 0 aside).
    let resp = optional_addr("--resp-listen", &args.resp_listen)?;
    let http = optional_addr("--http-listen", &args.http_listen)?;
    let named = [("--listen", Some(args.listen)), ("--resp-listen", resp), ("--http-listen", http)];
    for (i, (a, x)) in named.iter().enumerate() {
        for (b, y) in &named[i + 1..] {
            if let (Some(x), Some(y)) = (x, y) {
                // A wildcard address takes its port on every address.
                let overlap =
                    x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified();
                if overlap && x.port() == y.port() && x.port() != 0 {
                    anyhow::bail!("{a} {x} and {b} {y} take the same port: give each its own");
                }
            }
        }
    }
    // What the cluster checks at start: the address other nodes use, the
    // seed to join.
    let advertise = crate::server::advertised_addr(
        config.advertise.as_deref(),
        config.listen,
        config.join.is_some(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(seed) = &config.join {
        crate::cluster::check_seed(seed, &advertise)?;
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> i32 {
    let filter = match log_filter(&args) {
        Ok(f) => f,
        Err(e) => return report(&e),
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
    let config = match node_config(&args) {
        Ok(c) => c,
        Err(e) => return report(&e),
    };
    let listener = match std::net::TcpListener::bind(config.listen) {
        Ok(l) => l,
        Err(e) => return report(&anyhow::anyhow!("cannot listen on {}: {e}", config.listen)),
    };
    let bind = |flag: &str, value: &str| -> anyhow::Result<Option<std::net::TcpListener>> {
        let Some(addr) = optional_addr(flag, value)? else { return Ok(None) };
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({flag}): {e}"))?;
        Ok(Some(listener))
    };
    let extra = match (
        bind("--resp-listen", &args.resp_listen),
        bind("--http-listen", &args.http_listen),
    ) {
        (Ok(resp), Ok(http)) => crate::server::Extra { resp, http },
        (Err(e), _) | (_, Err(e)) => return report(&e),
    };
    let result = actix_rt::System::new().block_on(crate::server::serve_with_listeners(
        config,
        listener,
        extra,
        shutdown_signal(),
    ));
    match result {
        Ok(()) => 0,
        Err(e) => report(&e.into()),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem: `--log-level warning` (and `verbose`, `7`, `''`) started
    /// a node that logged nothing: RUST_LOG's syntax reads a bare word as a
    /// target.
    #[test]
    fn log_filters_name_levels() {
        for good in ["info", "WARN", "info,monotable_node::view=debug", " debug , x=trace", "off"] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in ["warning", "verbose", "7", "", "info,,", "x=", "=info", "x=loud"] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    /// Every `serve` option can come from a flag, the environment or the
    /// config file (`--print-config` only from a flag).
    #[test]
    fn every_serve_option_has_an_environment_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for arg in serve.get_arguments() {
            let name = arg.get_long().unwrap_or_default();
            if ["print-config", "help", "version"].contains(&name) {
                continue;
            }
            let env = arg.get_env().unwrap_or_else(|| panic!("--{name} has no variable"));
            let env = env.to_string_lossy();
            let expected = format!("MONOTABLE_{}", name.to_uppercase().replace('-', "_"));
            assert!(env == expected || name == "log-level" && env == "RUST_LOG", "--{name}: {env}");
        }
    }

    #[test]
    fn command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
