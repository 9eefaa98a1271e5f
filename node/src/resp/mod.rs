//! The Redis protocol endpoint (RESP2 and RESP3): Redis clients talk to
//! Monotable unchanged. Redis data lives in ordinary ranges, one per
//! database (see [`keyspace`] for the row layout), so views can be
//! registered over what Redis clients write. On a cluster every node
//! answers for every database ([`cluster`]).
//!
//! # Layout
//!
//! A request flows `server` (connections) -> `parse` (RESP frames into
//! arguments) -> `commands` (the dispatcher) -> a command module ->
//! `keyspace` (rows) -> `reply` (RESP2/RESP3 bytes).
//!
//! - [`table`]: the one static table of commands (name, arity, flags, key
//!   positions and specs, ACL categories, docs, per-node, handler), sorted
//!   for a binary search; the dispatcher and `COMMAND` both read it.
//! - [`commands`]: looks a command up, checks arity and AUTH, queues it in
//!   MULTI, places it ([`cluster`]) and runs its row's handler; runs the
//!   transaction commands.
//! - Command modules: [`connection`], [`clients`] (`CLIENT`, the
//!   registry of connections, CLIENT PAUSE), [`info`] (`INFO`), [`config`]
//!   (`CONFIG`), [`object`] (`OBJECT`, `MEMORY`), [`persistence`] (`SAVE`,
//!   `BGSAVE`, `LASTSAVE`, `SHUTDOWN`), [`introspect`] (`COMMAND`),
//!   [`strings`], [`bits`], [`keys`], [`key_copy`], [`dump`] (`DUMP`,
//!   `RESTORE`), [`migrate`], [`collections`], [`sets`],
//!   [`lists`], [`zsets`], [`zset_algebra`] (sorted set commands over
//!   several keys), [`zset_range`] (their range arguments), [`mt`],
//!   [`pubsub`] (channels and patterns of the node, relayed to the cluster),
//!   [`blocking`] (BLPOP and the like: the connection waits, woken by
//!   writers of the keys), [`scripting`] (EVAL and SCRIPT: Lua scripts
//!   whose commands the dispatcher runs, as a transaction's).
//! - Below them: [`state`] (shared and per-connection state), [`stats`]
//!   (INFO's counters: the dispatcher calls [`stats::begin`] as a command
//!   starts, the connection [`stats::finish`] once it replied), [`errors`]
//!   (shared error replies), [`args`] (argument parsing), [`long_double`]
//!   (float increments in C's long double, as Redis), [`stripes`] (key
//!   locks), [`glob`], [`keyspace`], [`reply`].

/// Unwraps `Ok`, or returns the reply in `Err` from the enclosing function
/// (which returns `NodeResult<Reply>`): for lookups that may answer with an
/// error reply, such as WRONGTYPE.
macro_rules! or_reply {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return Ok(reply),
        }
    };
}

pub mod acl;
pub mod acl_command;
pub mod args;
pub mod bits;
pub mod blocking;
pub mod clients;
pub mod cluster;
pub mod collections;
pub mod commands;
pub mod config;
pub mod connection;
pub mod dump;
pub mod errors;
pub mod geo;
pub mod glob;
pub mod hyperloglog;
pub mod info;
pub mod introspect;
pub mod key_copy;
pub mod keys;
pub mod keyspace;
pub mod latency;
pub mod lists;
pub mod long_double;
pub mod maxmemory;
pub mod migrate;
pub mod monitor;
pub mod mt;
pub mod notify;
pub mod object;
pub mod parse;
pub mod persistence;
pub mod pubsub;
pub mod rdb;
pub mod reply;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod slowlog;
pub mod sort;
pub mod state;
pub mod stats;
pub mod stream_commands;
pub mod stream_groups;
pub mod streams;
pub mod strings;
pub mod stripes;
pub mod table;
pub mod tracking;
pub mod watches;
pub mod zset_algebra;
pub mod zset_range;
pub mod zsets;
