//! Errors inside the node, and how they reach a client.

use monotable_proto::{ErrorCode, ErrorInfo};

use crate::catalog::CatalogError;
use crate::storage::chunk::ChunkError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A client's mistake; the code says which.
    #[error("{message}")]
    Client { code: ErrorCode, message: String },
    /// The chunk the request went to no longer owns the key (it split, or
    /// its range was dropped): route again.
    #[error("chunk moved")]
    Moved,
    #[error("chunk {chunk} is unavailable: {reason}")]
    Unavailable { chunk: u64, reason: String },
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    /// The node refuses to start; the message says why and what to do.
    #[error("{0}")]
    Start(String),
}

impl NodeError {
    pub fn client(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError::Client { code, message: message.into() }
    }

    /// A request refused as it stands (`BadRequest`): `message` says why
    /// and what to change.
    pub fn bad_request(message: impl Into<String>) -> Self {
        NodeError::client(ErrorCode::BadRequest, message)
    }

    pub fn to_info(&self) -> ErrorInfo {
        let code = match self {
            NodeError::Client { code, .. } => *code,
            NodeError::Moved => ErrorCode::Busy,
            NodeError::Unavailable { .. } => ErrorCode::ChunkUnavailable,
            NodeError::Chunk(ChunkError::SnapshotTooOld { .. }) => ErrorCode::SnapshotTooOld,
            NodeError::Chunk(ChunkError::Refused(info)) => info.code,
            NodeError::Chunk(ChunkError::Busy) => ErrorCode::Busy,
            NodeError::Chunk(ChunkError::RewriteRefused(_)) => ErrorCode::Internal,
            NodeError::Chunk(ChunkError::Log(_) | ChunkError::DescriptorMismatch { .. }) => {
                ErrorCode::ChunkUnavailable
            }
            NodeError::Catalog(CatalogError::RangeExists(_)) => ErrorCode::RangeExists,
            NodeError::Catalog(CatalogError::RangeNotFound(_)) => ErrorCode::RangeNotFound,
            NodeError::Catalog(_) => ErrorCode::Internal,
            NodeError::ShuttingDown => ErrorCode::ShuttingDown,
            NodeError::Internal(_) | NodeError::Start(_) => ErrorCode::Internal,
        };
        ErrorInfo::new(code, self.to_string())
    }
}

impl From<ErrorInfo> for NodeError {
    fn from(info: ErrorInfo) -> Self {
        NodeError::Client { code: info.code, message: info.message }
    }
}

pub type NodeResult<T> = Result<T, NodeError>;
