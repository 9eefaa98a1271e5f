//! SLOWLOG: the commands that ran longer than `slowlog-log-slower-than`
//! microseconds, newest first, at most `slowlog-max-len` of them, as Redis
//! 7.0's `slowlog.c`.
//!
//! An entry is (id, unix time in seconds, duration in microseconds, the
//! arguments, the client's `ip:port`, its name). Arguments are trimmed as
//! Redis trims them: at most [`ENTRY_ARGS_MAX`] (the last one then says
//! how many more there were) of at most [`ENTRY_ARG_BYTES_MAX`] bytes each;
//! passwords (AUTH, HELLO's AUTH, CONFIG SET of `requirepass` or
//! `masterauth`) are logged as `(redacted)`.
//!
//! What is timed is what INFO's commandstats times ([`super::stats`]): from
//! the dispatcher's start of the command to its reply, without the wait for
//! its writes to be durable. A blocked command is logged once it is
//! served, with the time of that run (one that times out or that CLIENT
//! UNBLOCK ends is not logged); EXEC is not logged, the commands it
//! runs are, each with its own time; a script is, and so is each command
//! it calls (as by Redis's scripting client: `?:0`, no name). Commands a
//! replicated database's leader runs for another node are logged on
//! neither.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::args::{lower, parse_i64};
use super::errors::{subcommand_syntax, unknown_subcommand};
use super::reply::Reply;
use super::state::{Conn, RespState};

/// Arguments kept of a command (Redis's `SLOWLOG_ENTRY_MAX_ARGC`).
pub const ENTRY_ARGS_MAX: usize = 32;
/// Bytes kept of an argument (Redis's `SLOWLOG_ENTRY_MAX_STRING`).
pub const ENTRY_ARG_BYTES_MAX: usize = 128;

/// One logged command.
struct Entry {
    id: u64,
    /// Unix time in seconds when it was logged.
    time: i64,
    micros: u64,
    args: Vec<Vec<u8>>,
    peer: String,
    name: Vec<u8>,
}

/// The log and its two parameters (atomics, read by every command).
pub struct SlowLog {
    /// `slowlog-log-slower-than` in microseconds; negative: off.
    slower_than: AtomicI64,
    /// `slowlog-max-len`.
    max_len: AtomicU64,
    next_id: AtomicU64,
    /// Newest first. A std Mutex: taken only to log a slow command and by
    /// SLOWLOG, never across an await.
    entries: Mutex<VecDeque<Entry>>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            slower_than: AtomicI64::new(10_000),
            max_len: AtomicU64::new(128),
            next_id: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }
}

impl SlowLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `slowlog-log-slower-than` (microseconds, negative: off).
    pub fn set_slower_than(&self, micros: i64) {
        self.slower_than.store(micros, Ordering::Relaxed);
    }

    /// Sets `slowlog-max-len`; older entries go at the next logged one,
    /// as in Redis.
    pub fn set_max_len(&self, len: u64) {
        self.max_len.store(len, Ordering::Relaxed);
    }

    /// Logs `args`, run by `conn` for `took`, if that is slow enough.
    pub fn note(&self, conn: &Conn, args: &[Vec<u8>], took: Duration) {
        self.note_by(args, took, || {
            (conn.info.addr.to_string(), conn.info.name().unwrap_or_default())
        });
    }

    /// Logs `args`, a command a script called, as Redis logs its scripting
    /// client's (`?:0`, no name).
    pub fn note_script_call(&self, args: &[Vec<u8>], took: Duration) {
        self.note_by(args, took, || ("?:0".to_owned(), Vec::new()));
    }

    /// Logs `args`, run for `took` by the client `who` names (address,
    /// name), if that is slow enough.
    fn note_by(&self, args: &[Vec<u8>], took: Duration, who: impl FnOnce() -> (String, Vec<u8>)) {
        let slower_than = self.slower_than.load(Ordering::Relaxed);
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        if slower_than < 0 || micros < slower_than as u64 {
            return;
        }
        let (peer, name) = who();
        let entry = Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
            micros,
            args: logged_args(args),
            peer,
            name,
        };
        let max = self.max_len.load(Ordering::Relaxed);
        let mut entries = self.lock();
        entries.push_front(entry);
        entries.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    }
}

/// What is kept of a command's arguments: trimmed, and with passwords
/// redacted.
fn logged_args(args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let redacted = redacted(args);
    let kept = args.len().min(ENTRY_ARGS_MAX);
    let mut out = Vec::with_capacity(kept);
    for (i, a) in args.iter().enumerate().take(kept) {
        if kept < args.len() && i == kept - 1 {
            out.push(format!("... ({} more arguments)", args.len() - kept + 1).into_bytes());
        } else if redacted.contains(&i) {
            out.push(b"(redacted)".to_vec());
        } else if a.len() > ENTRY_ARG_BYTES_MAX {
            let mut t = a[..ENTRY_ARG_BYTES_MAX].to_vec();
            t.extend(format!("... ({} more bytes)", a.len() - ENTRY_ARG_BYTES_MAX).bytes());
            out.push(t);
        } else {
            out.push(a.clone());
        }
    }
    out
}

/// The positions of `args` that hold secrets, as Redis redacts them
/// (`redactClientCommandArgument`): AUTH's arguments, the two after
/// HELLO's AUTH, the value of CONFIG SET `requirepass` or `masterauth`,
/// everything after ACL SETUSER.
pub(super) fn redacted(args: &[Vec<u8>]) -> Vec<usize> {
    match lower(&args[0]).as_str() {
        "auth" => (1..args.len()).collect(),
        "acl" if args.len() > 1 && args[1].eq_ignore_ascii_case(b"setuser") => {
            (2..args.len()).collect()
        }
        "hello" => {
            let at = args.iter().position(|a| a.eq_ignore_ascii_case(b"auth"));
            at.map_or_else(Vec::new, |i| vec![i + 1, i + 2])
        }
        "config" if args.len() > 1 && args[1].eq_ignore_ascii_case(b"set") => args
            .iter()
            .enumerate()
            .skip(2)
            .step_by(2)
            .filter(|(_, name)| {
                name.eq_ignore_ascii_case(b"requirepass")
                    || name.eq_ignore_ascii_case(b"masterauth")
            })
            .map(|(i, _)| i + 1)
            .collect(),
        _ => Vec::new(),
    }
}

const HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

/// Runs `SLOWLOG subcommand ...` (`args[0]` is SLOWLOG, its subcommand's
/// arity checked).
pub fn run(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let log = &state.slowlog;
    match (lower(&args[1]).as_str(), args.len()) {
        ("help", 2) => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
        ("reset", 2) => {
            log.lock().clear();
            Reply::ok()
        }
        ("len", 2) => Reply::Int(log.lock().len() as i64),
        ("get", 2 | 3) => {
            let count = match args.get(2).map(|c| parse_i64(c)) {
                None => 10,
                Some(Some(-1)) => i64::MAX,
                Some(Some(n)) if n >= 0 => n,
                Some(_) => return Reply::err("ERR count should be greater than or equal to -1"),
            };
            let entries = log.lock();
            let take = usize::try_from(count).unwrap_or(usize::MAX);
            Reply::Array(entries.iter().take(take).map(entry_reply).collect())
        }
        ("help" | "reset" | "len" | "get", _) => subcommand_syntax(&args[0], &args[1]),
        _ => unknown_subcommand(&args[0], &args[1]),
    }
}

fn entry_reply(e: &Entry) -> Reply {
    Reply::Array(vec![
        Reply::Int(e.id as i64),
        Reply::Int(e.time),
        Reply::Int(e.micros.min(i64::MAX as u64) as i64),
        Reply::Array(e.args.iter().map(|a| Reply::Bulk(a.clone())).collect()),
        Reply::Bulk(e.peer.clone().into_bytes()),
        Reply::Bulk(e.name.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<Vec<u8>> {
        w.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn arguments_are_trimmed_as_redis_trims_them() {
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let mut args = words(&["sadd", "set"]);
        args.extend(many.iter().map(|s| s.as_bytes().to_vec()));
        let logged = logged_args(&args);
        assert_eq!(logged.len(), ENTRY_ARGS_MAX);
        assert_eq!(logged[31], b"... (11 more arguments)");
        assert_eq!(logged[30], b"28");
        let long = vec![b'A'; 129];
        let logged = logged_args(&[b"set".to_vec(), b"k".to_vec(), long]);
        let mut want = vec![b'A'; 128];
        want.extend(b"... (1 more bytes)");
        assert_eq!(logged[2], want);
        // Exactly 32 arguments and 128 bytes are kept whole.
        let exact: Vec<Vec<u8>> = (0..32).map(|_| vec![b'x'; 128]).collect();
        assert_eq!(logged_args(&exact), exact);
    }

    #[test]
    fn passwords_are_redacted() {
        let r = |w: &[&str]| logged_args(&words(w));
        assert_eq!(r(&["AUTH", "pw"]), words(&["AUTH", "(redacted)"]));
        assert_eq!(
            r(&["acl", "SETUSER", "u", ">pw"]),
            words(&["acl", "SETUSER", "(redacted)", "(redacted)"])
        );
        assert_eq!(r(&["auth", "u", "pw"]), words(&["auth", "(redacted)", "(redacted)"]));
        assert_eq!(
            r(&["hello", "3", "AUTH", "u", "pw", "SETNAME", "n"]),
            words(&["hello", "3", "AUTH", "(redacted)", "(redacted)", "SETNAME", "n"])
        );
        assert_eq!(
            r(&["config", "set", "timeout", "5", "requirepass", "pw"]),
            words(&["config", "set", "timeout", "5", "requirepass", "(redacted)"])
        );
    }
}
