//! Batch map-reduce jobs: one-off jobs over a snapshot of a range or the
//! keys of a Redis server, written to a range or to Redis.
//!
//! A job runs on the node that was asked ([`run`]): map tasks (one per
//! source chunk, or per share of a Redis keyspace, at most `tasks` at
//! once) map records with a view's map function and combine what they
//! emit, per key, into their own [`crate::shuffle::table::ExtendedHashtable`] under a
//! share of the memory budget; then one k-way merge of every table
//! streams the keys in order, each reduced once more, to the output.
//!
//! - [`functions`]: views' reduce functions as the shuffle's combiner.
//! - [`input`]: Redis keys as records.
//! - [`intermediate`]: a Redis server as the intermediate store: its lock,
//!   its checks, and the cleanup after a crash.
//! - [`run`]: the job itself: its checks, its tasks, its output, and the
//!   node's list of jobs.

pub mod functions;
pub mod input;
pub mod intermediate;
pub mod run;

pub use run::Jobs;
