//! Wire types of Monotable's native protocol.
//!
//! # Layout
//!
//! - [`limits`]: every size and count limit, as named constants.
//! - [`frame`]: bytes on the socket -> frames (4-byte length + MessagePack),
//!   and the version handshake that opens a connection.
//! - [`message`]: what frames hold: [`Request`]s carrying a [`Command`] and an
//!   id, [`Response`]s carrying the same id and a [`Reply`] or an [`ErrorInfo`].
//! - [`error`]: [`ErrorCode`], the typed errors a server sends.
//! - [`mod@tuple`]: the order-preserving encoding of composite keys; [`row`]:
//!   the keys of index rows (emitted key, source key, repeat); [`keys`]:
//!   helpers on raw key bytes.

pub mod error;
pub mod frame;
pub mod keys;
pub mod limits;
pub mod message;
pub mod row;
pub mod tuple;

pub use error::{ErrorCode, ErrorInfo};
pub use message::{
    AggregateReply, AggregateRequest, Bytes, ChunkInfo, ClusterStatus, Command, CommitToken,
    CopyStatus, JobErrorSample, JobInput, JobOutput, JobSpec, JobStatus, MapFunction, NodeInfo,
    NodeStatus, Password, RangeInfo, RangeOptions, RdmaEndpoint, Record, ReduceFunction, Reply,
    Request, Response, ScanReply, ScanRequest, ServerHello, SinkSource, TreeStatus, ViewDefinition,
    ViewStatus, WriteOp,
};
pub use tuple::Element;
