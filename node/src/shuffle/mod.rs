//! The shuffle: keys and their partial reductions gathered under a memory
//! budget, spilled as sorted runs, and streamed back in key order. Plain
//! data structures and files (no actors, no node): batch jobs
//! ([`crate::job`]) and a new mapper's bulk backfill
//! ([`crate::view::bulk_backfill`]) build on it.
//!
//! - [`table`]: the ExtendedHashtable: partial reductions under a memory
//!   budget, spilled as sorted runs and merged at the end.
//! - [`runs`]: the runs it spills (CRC-framed, in files or in a Redis
//!   database) and their removal after a crash; a backup's range files
//!   (`monotable backup`) are runs too.

pub mod runs;
pub mod table;
