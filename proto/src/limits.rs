//! Every limit of the native protocol, in one place. The README lists them.
//!
//! Both sides enforce them: the client refuses to send what the server would
//! refuse, and the server checks everything it receives before acting on it.

/// Version of the native protocol; the handshake refuses any other.
/// 2: grouped aggregates answer pages with a cursor, and a timeout of 0
/// does not wait.
pub const PROTOCOL_VERSION: u32 = 2;

/// First four bytes a client sends, before its protocol version.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"MTBL";

/// Largest frame (request or reply, without its 4-byte length prefix).
pub const FRAME_SIZE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Largest frame a client may send before it has authenticated (on a node
/// with a password): enough for the `Auth` request, so an unauthenticated
/// client cannot make the server buffer [`FRAME_SIZE_MAX_BYTES`] frames.
pub const UNAUTHENTICATED_FRAME_SIZE_MAX_BYTES: usize = 64 * 1024;

/// Largest key, in bytes.
pub const KEY_SIZE_MAX_BYTES: usize = 16 * 1024;

/// Largest value, in bytes.
pub const VALUE_SIZE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Most operations in one write batch.
pub const BATCH_OPS_MAX: usize = 10_000;

/// Most keys in one multi-get.
pub const MULTI_GET_KEYS_MAX: usize = 10_000;

/// Most records one scan reply carries; a scan asking for more is cut here
/// and returns a cursor.
pub const SCAN_LIMIT_MAX: u32 = 10_000;

/// A scan reply stops adding records once it holds this many bytes of keys
/// and values, and returns a cursor, so replies stay well under the frame limit.
pub const SCAN_REPLY_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Longest range name, in bytes.
pub const RANGE_NAME_LEN_MAX: usize = 128;

/// Smallest `chunk_size_max` a range accepts.
pub const CHUNK_SIZE_MIN_BYTES: u64 = 1024;

/// Default `chunk_size_max` of a range.
pub const CHUNK_SIZE_DEFAULT_BYTES: u64 = 64 * 1024 * 1024;

/// Most requests a connection may have in flight; the server stops reading
/// from a connection that reaches it until replies drain.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;

/// Reply bytes a connection (native or RESP) may have waiting to be sent;
/// past it the server reads no more requests from that connection until
/// the client reads its replies. A client that sends and never reads thus
/// costs the node this, plus the replies of requests already running. Redis
/// closes such a client at its `client-output-buffer-limit` instead; waiting
/// keeps a slow but live reader's connection working, and TCP pushes back.
pub const REPLY_BUFFER_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Checks a key against [`KEY_SIZE_MAX_BYTES`].
///
/// # Errors
/// [`ErrorCode::KeyTooLarge`](crate::ErrorCode::KeyTooLarge), with a message naming the limit.
pub fn check_key_size(key: &[u8]) -> Result<(), crate::ErrorInfo> {
    if key.len() > KEY_SIZE_MAX_BYTES {
        return Err(crate::ErrorInfo::new(
            crate::ErrorCode::KeyTooLarge,
            format!("key of {} bytes exceeds the limit of {KEY_SIZE_MAX_BYTES} bytes", key.len()),
        ));
    }
    Ok(())
}

/// Checks one row (a key and, for a put, its value) against
/// [`KEY_SIZE_MAX_BYTES`] and [`VALUE_SIZE_MAX_BYTES`]. This is the one
/// definition of a row that storage can hold: the client checks it before
/// sending, every write path of the node before routing, and each chunk
/// again before logging, and the log's entry codec accepts exactly these
/// sizes when it reads an entry back.
///
/// # Errors
/// [`ErrorCode::KeyTooLarge`](crate::ErrorCode::KeyTooLarge) or
/// [`ErrorCode::ValueTooLarge`](crate::ErrorCode::ValueTooLarge), with a
/// message naming the limit.
pub fn check_row_size(key: &[u8], value: Option<&[u8]>) -> Result<(), crate::ErrorInfo> {
    check_key_size(key)?;
    match value {
        Some(value) if value.len() > VALUE_SIZE_MAX_BYTES => Err(crate::ErrorInfo::new(
            crate::ErrorCode::ValueTooLarge,
            format!(
                "value of {} bytes exceeds the limit of {VALUE_SIZE_MAX_BYTES} bytes",
                value.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Most groups one grouped aggregate reply holds; a reply with more to come
/// carries a cursor for the next page.
pub const AGGREGATE_GROUPS_MAX: u32 = 10_000;

/// Bytes of group keys and reductions after which a grouped aggregate reply
/// ends its page (it always holds at least one group).
pub const AGGREGATE_REPLY_SIZE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// How long a fresh aggregate waits unless asked otherwise, in ms.
pub const AGGREGATE_TIMEOUT_DEFAULT_MS: u64 = 10_000;

/// A job's shuffle memory budget unless asked otherwise: 256 MiB.
pub const JOB_MEMORY_BUDGET_DEFAULT_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest budget a job may ask for, per task: 64 KiB (below it a table
/// spills after a handful of keys and its merges' buffers dominate).
pub const JOB_MEMORY_BUDGET_MIN_BYTES_PER_TASK: u64 = 64 * 1024;

/// Most map tasks a job may run at once.
pub const JOB_TASKS_MAX: u32 = 256;

/// Jobs that ended a node remembers for `ListJobs` (the oldest go first).
pub const JOB_HISTORY_MAX: usize = 32;

/// Failed records or rows a job's status shows (all are counted).
pub const JOB_ERROR_SAMPLES_MAX: usize = 10;

/// Jobs a node runs at once; one more is refused (`Busy`).
pub const JOB_RUNNING_MAX: usize = 16;
