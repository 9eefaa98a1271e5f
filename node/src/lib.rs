//! The Monotable node: storage, chunk actors and the native-protocol server.
//!
//! # Layout
//!
//! Along the path of a request:
//!
//! - [`server`]: TCP connections -> handshake -> frames -> one task per
//!   request -> [`node::Node::execute`]; replies are written as they finish.
//! - [`node`]: the node itself (start, workers, shutdown, routing); its
//!   [`commands`] validate each request, find the chunks it touches through
//!   the [`router`], and read or apply writes to their [`chunk_cell`]s on
//!   the request's own task; [`scan`] walks chunks for range scans.
//! - [`chunk_cell`]: a chunk shared by every thread: writes applied under
//!   its write lock, reads under its read lock. [`group_commit`]: the
//!   node's syncer thread, one sync for the new writes of every chunk.
//!   [`chunk_actor`]: one actix actor per chunk for compaction, splits,
//!   shutdown and drop. [`chunk_host`]: the narrow trait through which this
//!   layer reaches the node.
//! - [`storage`]: the chunk itself: log segments on disk, its manifest and
//!   descriptor, the versioned in-memory index, the seq clock and snapshot
//!   pins; the row limits are enforced here, where every write passes.
//! - [`consensus`]: Raft groups on openraft (pinned, every openraft type
//!   kept inside): a group handle, the state machine and log storage, and
//!   the network adapter over a transport shared by all groups of a node.
//! - [`cluster`]: the nodes of the cluster and the meta range they
//!   replicate (one Raft group): founding, `--join`, status, removal, and
//!   the connections to peers that carry Raft RPCs and forwarded requests;
//!   its placement loop moves replicas to where the meta range wants them.
//! - [`segments`]: segment reads: a replica that needs a chunk's whole
//!   state copies the log segments of the replica that built the snapshot
//!   by offset (`read(region, offset, len)`), each entry verified by its
//!   CRC32C, with no work for that replica's chunk.
//! - [`replica`]: a chunk replicated by Raft: the state machine that
//!   applies a chunk's committed commands (writes, splits, the rows of
//!   views riding on it) to its chunk cell; [`replica_snapshot`]: its
//!   snapshots, lists of its log segments that a replica in need copies
//!   by segment reads; [`write_batch`]: writes to a
//!   chunk arriving together on its leader, proposed as one Raft entry.
//! - [`replicated`]: requests for replicated ranges on any node: proposed
//!   or read on the chunk's leader (forwarded there), replicated ranges
//!   created and dropped through the meta range, each node's replicas
//!   started and stopped as the meta range says, splits.
//! - [`replicated_views`]: views on replicated ranges (of any number of
//!   chunks), run on the leader of the range's first chunk over its replica
//!   of every chunk, resynced by a new leader; fresh aggregates catch up
//!   every chunk's replica there first.
//! - [`leader_tasks`]: the rule by which work tied to a Raft group's
//!   leader (views and sinks of replicated ranges) runs on the node that
//!   leads it and restarts in each new term.
//! - [`catalog`]: ranges and chunk boundaries in sled, and this node's
//!   cluster identity (node-local state).
//! - [`startup`]: the catalog checked against the chunk directories at
//!   start, and its rebuild from them (`serve --recover-catalog`).
//! - [`view`]: live map-reduce: mapper and reducer functions, the Lua
//!   sandbox, the reduce tree, and the mapper and reducer actors that
//!   follow their ranges.
//! - [`resp`]: the Redis protocol endpoint: request reader, commands, the
//!   layout of Redis databases as ranges, and their commands on a cluster
//!   (run on the leader of the database's chunk).
//! - [`config`], [`error`]: settings with their defaults, and error types.
//! - [`auth`]: the password both protocols check, and the throttle on
//!   failed attempts; [`file_modes`]: data files readable by their owner
//!   only.
//! - [`sorted_load`]: a new range built from rows in key order, straight
//!   into its chunks, registered whole at the end (a job's output).
//! - [`shuffle`]: the ExtendedHashtable, keys and partial reductions
//!   under a memory budget spilled as sorted runs (to files or Redis) and
//!   merged back in key order: the shuffle of jobs and bulk backfills.
//! - [`job`]: batch map-reduce jobs over a range snapshot or a Redis
//!   server, with views' functions, shuffled through ExtendedHashtables.
//! - [`bridge`]: data in and out of Redis servers: import, export, and
//!   sinks that mirror a range into Redis as it changes (on a cluster, a
//!   replicated range's sink runs on the leader of its first chunk, fenced
//!   in Redis).
//! - [`counters`]: lock-free counters kept where things happen (call
//!   durations, a command's counts, sizes in power-of-two buckets);
//!   [`metrics`]: the node's figures gathered at a scrape and encoded as
//!   OpenMetrics text; [`http`]: the HTTP listener that serves them
//!   (`/metrics`) and the status page (`/`).
//! - [`json`]: the JSON forms of keys and values that the command line,
//!   the `MT.*` Redis commands, sinks and jobs read and print.
//! - [`cli`]: the `monotable` command line (client commands, load, bench,
//!   backup and restore, `serve` and its config file).

pub mod auth;
pub mod bridge;
pub mod catalog;
pub mod chunk_actor;
pub mod chunk_cell;
pub mod chunk_host;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod consensus;
pub mod counters;
pub mod error;
pub mod file_modes;
pub mod group_commit;
pub mod http;
pub mod job;
pub mod json;
pub mod leader_tasks;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod replica_snapshot;
pub mod replicated;
pub mod replicated_views;
pub mod resp;
pub mod router;
pub mod scan;
pub mod segments;
pub mod server;
pub mod shuffle;
pub mod sorted_load;
pub mod startup;
pub mod storage;
pub mod view;
pub mod write_batch;
