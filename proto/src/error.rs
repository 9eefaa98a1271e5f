//! Typed errors that travel from the server to the client.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, as a code a program can branch on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or its arguments contradict each other.
    BadRequest,
    /// The handshake named a protocol version the server does not speak.
    ProtocolVersion,
    FrameTooLarge,
    KeyTooLarge,
    ValueTooLarge,
    BatchTooLarge,
    InvalidRangeName,
    RangeNotFound,
    RangeExists,
    /// A batch asked to be atomic but its keys fall in more than one chunk.
    CrossChunkBatch,
    /// The chunk holding the key cannot serve: corrupt log, failed fsync.
    ChunkUnavailable,
    /// The snapshot is older than what compaction kept and is not pinned.
    SnapshotTooOld,
    SnapshotNotFound,
    /// The server is overloaded; retry after a pause.
    Busy,
    /// A fresh aggregate timed out waiting for its view to catch up, or the
    /// view is still loading; retry later.
    ViewLagging,
    /// The server is shutting down; retry against it once it is back.
    ShuttingDown,
    /// A bug or an unexpected failure on the server; the message says more.
    Internal,
    /// The node has a password and this connection has not given it: the
    /// only request it may send is [`crate::Command::Auth`].
    NoAuth,
    /// [`crate::Command::Auth`] gave the wrong password. The node answers
    /// failures more slowly the more an address has failed.
    AuthFailed,
    /// The cluster cannot decide now: this node has not finished joining,
    /// or no leader of the cluster's meta range is reachable (no majority
    /// of its nodes is up). Retry later.
    ClusterUnavailable,
    /// A write may or may not have been applied: the node that took it
    /// stopped answering, or its Raft group did not decide within the
    /// request timeout (it may still commit the write later). Not
    /// retryable as it is: a write sent again may apply twice; read the
    /// keys back (or make the write idempotent) before writing again.
    OutcomeUnknown,
    /// A write computed by a chunk's leader (from what it read under a
    /// read barrier) reached the Raft log in a later leader's term: it was
    /// not applied (it could undo writes made in between). The node asked
    /// runs the command again at the current leader by itself; a client
    /// sees this only when that kept failing. Retry.
    StaleTerm,
    /// The request was routed by a chunk map that changed meanwhile (a
    /// replicated chunk split): its keys are no longer where it was sent.
    /// The node asked routes it again by itself; a client sees this only
    /// when that kept failing. Retry.
    StaleChunkMap,
    /// A job of that name is running on the node.
    JobExists,
    /// The node has no job of that name (running or remembered).
    JobNotFound,
}

impl ErrorCode {
    /// Whether the same request may succeed if sent again later unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::ViewLagging
                | ErrorCode::ClusterUnavailable
                | ErrorCode::StaleChunkMap
                | ErrorCode::StaleTerm
        )
    }
}

/// An error reply: a code and a message for a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorInfo { code, message: message.into() }
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorInfo {}
