//! The Redis protocol endpoint (RESP2 and RESP3): Redis clients talk to
//! Monotable unchanged. Redis data lives in ordinary ranges, one per
//! database (see [`keyspace`] for the row layout), so views can be
//! registered over what Redis clients write. On a cluster every node
//! answers for every database ([`cluster`]).

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

pub mod args;
pub mod cluster;
pub mod collections;
pub mod commands;
pub mod glob;
pub mod keys;
pub mod keyspace;
pub mod lists;
pub mod mt;
pub mod parse;
pub mod reply;
pub mod server;
pub mod stripes;
pub mod zsets;
