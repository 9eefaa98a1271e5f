//! MIGRATE host port key|"" destination-db timeout [COPY] [REPLACE]
//! [AUTH password] [AUTH2 username password] [KEYS key [key ...]], as
//! Redis 7.0's `migrateCommand`: each key that exists is sent to the
//! target (a redis-server or another Monotable) as a RESTORE of its DUMP
//! payload with its remaining TTL, after AUTH and SELECT; the keys the
//! target acknowledged are then deleted here (not with COPY), in one
//! write.
//!
//! Differences: no connection is cached between calls (Redis keeps one
//! per target for 10 seconds), so SELECT is always sent and a failed
//! connection is not retried; a stream cannot be dumped, so MIGRATE of one
//! is refused before connecting. `timeout` bounds the connection and each
//! read and write (milliseconds; 0 or less means 1000, as in Redis). The
//! keys stay locked meanwhile, as Redis blocks for the whole exchange.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::args::{lower, parse_i64, NOT_INTEGER};
use super::errors::SYNTAX;
use super::keyspace::{now_ms, Db};
use super::notify;
use super::reply::Reply;
use super::state::RespState;
use crate::error::NodeResult;

/// A reply line of the target longer than this is an error (Redis reads
/// its replies into 1024-byte buffers).
const REPLY_LINE_MAX_BYTES: usize = 1024;

/// Runs MIGRATE (its arity checked) on database `dbi` through `db`.
pub async fn migrate(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let (mut copy, mut replace) = (false, false);
    let mut auth: Option<(Option<&[u8]>, &[u8])> = None;
    let mut j = 6;
    while j < args.len() {
        let more = args.len() - 1 - j;
        match lower(&args[j]).as_str() {
            "copy" => copy = true,
            "replace" => replace = true,
            "auth" if more >= 1 => {
                auth = Some((None, &args[j + 1]));
                j += 1;
            }
            "auth2" if more >= 2 => {
                auth = Some((Some(&args[j + 1]), &args[j + 2]));
                j += 2;
            }
            "keys" => {
                if !args[3].is_empty() {
                    return Ok(Reply::err(
                        "ERR When using MIGRATE KEYS option, the key argument must be set to \
                         the empty string",
                    ));
                }
                break;
            }
            _ => return Ok(Reply::err(SYNTAX)),
        }
        j += 1;
    }
    let (Some(timeout), Some(target_db)) = (parse_i64(&args[5]), parse_i64(&args[4])) else {
        return Ok(Reply::err(NOT_INTEGER));
    };
    let timeout = Duration::from_millis(if timeout <= 0 { 1000 } else { timeout as u64 });
    let key_args = super::introspect::migrate_keys(args);
    let keys: Vec<&[u8]> = key_args.iter().map(|&i| args[i].as_slice()).collect();
    let _g = state.lock(dbi, &keys).await;
    // What exists, with its remaining TTL (1 ms at least) and payload.
    let mut found = Vec::new();
    for &key in &keys {
        let Some(head) = db.get(key).await? else { continue };
        if found.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let ttl = head.expire_at_ms.map_or(0, |at| at.saturating_sub(now_ms()).max(1));
        match super::dump::payload(db, key, &head).await? {
            Ok(payload) => found.push((key, ttl, payload)),
            Err(reply) => return Ok(reply),
        }
    }
    if found.is_empty() {
        return Ok(Reply::Simple("NOKEY"));
    }
    let mut request = Vec::new();
    let mut add = |words: &[&[u8]]| {
        request.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
        for w in words {
            request.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            request.extend_from_slice(w);
            request.extend_from_slice(b"\r\n");
        }
    };
    match auth {
        Some((Some(user), pass)) => add(&[b"AUTH", user, pass]),
        Some((None, pass)) => add(&[b"AUTH", pass]),
        None => {}
    }
    add(&[b"SELECT", target_db.to_string().as_bytes()]);
    for (key, ttl, payload) in &found {
        let ttl = ttl.to_string();
        let mut words: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), payload];
        if replace {
            words.push(b"REPLACE");
        }
        add(&words);
    }
    let host = String::from_utf8_lossy(&args[1]).into_owned();
    let port = String::from_utf8_lossy(&args[2]).into_owned();
    let connected =
        tokio::time::timeout(timeout, TcpStream::connect(format!("{host}:{port}"))).await;
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        // Redis's blocking connect waits for the socket to turn writable,
        // which a refused connection does too: its error shows when the
        // request is written.
        Ok(Err(_)) => return Ok(Reply::err("IOERR error or timeout writing to target instance")),
        Err(_) => return Ok(Reply::err("IOERR error or timeout connecting to the client")),
    };
    let mut stream = BufReader::new(stream);
    let written = tokio::time::timeout(timeout, stream.get_mut().write_all(&request)).await;
    if !matches!(written, Ok(Ok(()))) {
        return Ok(Reply::err("IOERR error or timeout writing to target instance"));
    }
    // AUTH's and SELECT's replies, then one per RESTORE.
    // A failed AUTH or SELECT makes every key's outcome an error, as in
    // Redis (nothing is deleted here).
    let mut first_error: Option<String> = None;
    for _ in 0..usize::from(auth.is_some()) + 1 {
        match read_line(&mut stream, timeout).await {
            Some(line) if line.starts_with('-') => {
                first_error.get_or_insert(line);
            }
            Some(_) => {}
            None => return Ok(Reply::err("IOERR error or timeout reading to target instance")),
        }
    }
    let handshake_failed = first_error.is_some();
    let mut moved = Vec::new();
    let mut socket_error = false;
    for (key, _, _) in &found {
        match read_line(&mut stream, timeout).await {
            None => {
                socket_error = true;
                break;
            }
            Some(line) if line.starts_with('-') => {
                first_error.get_or_insert(line);
            }
            Some(_) if handshake_failed => {}
            Some(_) => moved.push(*key),
        }
    }
    if !copy && !moved.is_empty() {
        // The keys the target took, in one write.
        let mut ops = Vec::new();
        for &key in &moved {
            if let Some(v) = db.get(key).await? {
                ops.extend(db.remove_ops(key, &v).await?);
            }
        }
        db.write(ops).await?;
        for &key in &moved {
            db.notify(notify::GENERIC, "del", key);
        }
    }
    Ok(match (first_error, socket_error) {
        (Some(line), _) => {
            Reply::err(format!("ERR Target instance replied with error: {}", &line[1..]))
        }
        (None, true) => Reply::err("IOERR error or timeout reading to target instance"),
        (None, false) => Reply::ok(),
    })
}

/// One reply line of the target (without its CRLF); `None` on a timeout,
/// an error, a line longer than [`REPLY_LINE_MAX_BYTES`] or the end of
/// the stream.
async fn read_line(stream: &mut BufReader<TcpStream>, timeout: Duration) -> Option<String> {
    let mut line = Vec::new();
    // Bounded: a target that never ends its line cannot fill memory.
    let mut bounded = (&mut *stream).take(REPLY_LINE_MAX_BYTES as u64 + 2);
    let read = tokio::time::timeout(timeout, bounded.read_until(b'\n', &mut line)).await;
    match read {
        Ok(Ok(n)) if n > 0 && line.ends_with(b"\n") => {
            line.truncate(line.len().saturating_sub(2));
            Some(String::from_utf8_lossy(&line).into_owned())
        }
        _ => None,
    }
}
