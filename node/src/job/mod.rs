//! Batch map-reduce jobs: one-off jobs over a snapshot of a range or the
//! keys of a Redis server, written to a range or to Redis.
//!
//! - [`table`]: the ExtendedHashtable, the shuffle: partial reductions
//!   under a memory budget, spilled as sorted runs and merged at the end.
//! - [`runs`]: the runs it spills (CRC-framed, in files or in a Redis
//!   database) and their removal after a crash.

pub mod runs;
pub mod table;
