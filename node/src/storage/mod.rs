//! Durable storage of chunks.
//!
//! - [`entry`]: one CRC32C-framed log entry as bytes.
//! - [`chunk_log`]: a chunk's segment files: append, read back, recover, rewrite.
//! - [`manifest`]: which segments make up a chunk's log; recovery's plan.
//! - [`chunk_index`]: the in-memory versioned index (no I/O).
//! - [`ranked_keys`]: the index's order statistics: how many live keys lie
//!   in a key interval, and which has a given position.
//! - [`hash_order`]: a second order of the live keys, by hash, so a scan
//!   resumes from a cursor that is one number (Redis's SCAN).
//! - [`chunk`]: index + log = one chunk, with reads at snapshots, compaction
//!   and splits.
//! - [`descriptor`]: the file that makes a chunk directory self-describing.
//! - [`clock`]: the node's seq counter and snapshot pins.
//! - [`journal`]: the keys a chunk changed, for views to catch up on.
//! - [`intents`]: the node's log of batches that span chunks, recorded
//!   whole before any chunk applies its part.

pub mod chunk;
pub mod chunk_index;
pub mod chunk_log;
pub mod clock;
pub mod descriptor;
pub mod entry;
pub mod hash_order;
pub mod intents;
pub mod journal;
pub mod manifest;
pub mod ranked_keys;

#[cfg(test)]
mod maintenance_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
