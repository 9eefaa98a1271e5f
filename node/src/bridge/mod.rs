//! Moving data between Monotable and Redis servers.
//!
//! - [`item`]: one Redis key with its whole value ([`item::Item`]), and
//!   the rows that store it in a Redis database range.
//! - [`redis_io`]: the Redis side: URLs, SCAN pages, pipelined typed reads,
//!   the commands that write a key.
//! - [`monotable_io`]: the Monotable side, through the native client:
//!   reading keys whole and replacing them.
//! - [`import`], [`export`], [`verify`]: the `monotable redis` commands.
//! - [`sink`]: a node-side follower that keeps a Redis database equal to a
//!   range or a view as it changes; [`sink_writes`]: what it writes;
//!   [`cluster_sinks`]: sinks of replicated ranges, run on their leader;
//!   [`ownership`]: one sink per keyspace, and the keys sinks keep for
//!   themselves in Redis.

pub mod cluster_sinks;
pub mod export;
pub mod import;
pub mod item;
pub mod monotable_io;
pub mod ownership;
pub mod redis_io;
pub mod rows;
pub mod sink;
pub mod sink_writes;
pub mod verify;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// Redis could not be reached, or the connection broke.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis answered a command with an error (WRONGTYPE, OOM, ...).
    #[error("redis replied: {0}")]
    RedisReply(String),
    /// The node refused a request or could not be reached. Not a
    /// `#[source]`: the message already holds it, and an error chain
    /// printed it twice ("monotable: X: X").
    #[error("monotable: {0}")]
    Monotable(monotable_client::Error),
    #[error(transparent)]
    Node(#[from] crate::error::NodeError),
    #[error("damaged row: {0}")]
    Damaged(String),
    /// What the sink wrote is gone from Redis (its fence key vanished or
    /// went back to an older term: a FLUSHDB, a restore): it copies afresh.
    #[error("Redis lost what the sink wrote: {0}; copying afresh")]
    Lost(String),
    /// A sink's fence key names a later term than the sink's: a newer
    /// leader's sink, or something else writing it. The sink writes nothing
    /// until its node stops leading (or leads in a later term).
    #[error("fenced out: the fence key holds {0}")]
    Fenced(String),
}

impl From<monotable_client::Error> for BridgeError {
    fn from(e: monotable_client::Error) -> Self {
        BridgeError::Monotable(e)
    }
}
