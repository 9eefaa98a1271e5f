//! The client's error type.

use monotable_proto::{ErrorCode, ErrorInfo};

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(std::sync::Arc<std::io::Error>),
    /// The server refused the handshake (wrong protocol version, too many
    /// connections).
    #[error("server refused the connection: {0}")]
    Handshake(ErrorInfo),
    /// Something answered at the address, but not the Monotable handshake:
    /// typically the node's Redis-protocol port, or another service.
    #[error("{0}")]
    NoHandshake(String),
    /// The server took longer than the options allow to answer the
    /// password.
    #[error("{0}")]
    Timeout(String),
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorInfo),
    /// The request breaks a protocol limit and was not sent.
    #[error("request not sent: {0}")]
    Invalid(ErrorInfo),
    /// The connection broke; requests in flight may or may not have been
    /// applied.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Connect(std::sync::Arc::new(e))
    }
}

impl Error {
    /// The typed error code, for errors the server (or a local limit check)
    /// gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(info) | Error::Invalid(info) | Error::Handshake(info) => Some(info.code),
            _ => None,
        }
    }

    /// Whether sending the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Server(info) => info.code.is_retryable(),
            Error::Connect(_) | Error::Disconnected(_) | Error::Timeout(_) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
