//! How to connect: the password and the timeouts.

use std::fmt;
use std::time::Duration;

/// Default of [`Options::connect_timeout`]: how long the TCP connection
/// may take.
pub const CONNECT_TIMEOUT_DEFAULT_MS: u64 = 5_000;

/// Default of [`Options::handshake_timeout`]: how long the server may take
/// to answer the version handshake, and again to answer the password. A
/// node answers both at once unless it is throttling failed passwords from
/// this address, which delays at most a few seconds.
pub const HANDSHAKE_TIMEOUT_DEFAULT_MS: u64 = 5_000;

/// Options of [`crate::Client::connect_with`].
///
/// ```
/// use std::time::Duration;
/// let options = monotable_client::Options::new()
///     .password("s3cret")
///     .connect_timeout(Duration::from_secs(1));
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) password: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            password: None,
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_DEFAULT_MS),
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_DEFAULT_MS),
        }
    }
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }

    /// The node's password (`serve --requirepass`), given right after the
    /// handshake.
    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.password = Some(password.as_ref().to_vec());
        self
    }

    /// How long the TCP connection may take
    /// (default [`CONNECT_TIMEOUT_DEFAULT_MS`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long the server may take to answer the handshake, and again the
    /// password (default [`HANDSHAKE_TIMEOUT_DEFAULT_MS`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}
