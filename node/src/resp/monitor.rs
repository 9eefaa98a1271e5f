//! MONITOR: every command the node runs, as Redis 7.0 shows it to its
//! monitors (`replicationFeedMonitors`): a status line
//! `+<seconds>.<microseconds> [<db> <ip:port>] "arg" "arg" ...`, arguments
//! quoted and escaped as Redis's `sdscatrepr`, and `lua` for the client of
//! the commands a script calls.
//!
//! What is shown, and when, follows Redis: a command once it ran (not when
//! queued in MULTI; EXEC's commands as EXEC runs them, then EXEC); EVAL,
//! EVALSHA and FCALL before their scripts run, so the commands a script
//! calls follow it; a blocked command once, when it blocks; not commands
//! flagged `admin` or `skip_monitor` (nor unknown or refused ones). AUTH and
//! HELLO AUTH passwords and CONFIG SET `requirepass` values are shown as
//! `(redacted)`. Lines go through the monitor's mailbox ([`super::pubsub`]):
//! one that lets more than
//! [`super::pubsub::SUBSCRIBER_PENDING_MAX_BYTES`] pile up is disconnected.
//! A monitor may not run commands that read or write keys (Redis's
//! "Replica can't interact with the keyspace"). Commands a replicated
//! database's leader runs for another node are shown on neither node, but
//! for a script's (shown on the leader).

use std::time::{SystemTime, UNIX_EPOCH};

use super::reply::Reply;
use super::state::{Conn, RespState};

/// MONITOR on `conn`: from now on it receives the lines.
pub fn start(state: &RespState, conn: &mut Conn) -> Reply {
    let subs = conn
        .subs
        .get_or_insert_with(|| super::pubsub::Subscriptions::new(state.pubsub.clone(), conn.id));
    subs.monitor();
    conn.info.set_flag(super::clients::FLAG_MONITOR, true);
    Reply::ok()
}

/// Shows `args`, run on database `db` by the client at `peer` (`lua` for
/// a script's calls), to every monitor. Nothing is formatted when none
/// listens.
pub fn feed(state: &RespState, db: u32, peer: &dyn std::fmt::Display, args: &[Vec<u8>]) {
    if !state.pubsub.has_monitors() {
        return;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut line = format!("{}.{:06} [{db} {peer}]", now.as_secs(), now.subsec_micros());
    let redacted = super::slowlog::redacted(args);
    for (i, a) in args.iter().enumerate() {
        line.push(' ');
        if redacted.contains(&i) {
            line.push_str("\"(redacted)\"");
        } else {
            repr(a, &mut line);
        }
    }
    state.pubsub.feed_monitors(line);
}

/// `bytes` quoted as Redis's `sdscatrepr`: `\\`, `\"`, `\n`, `\r`, `\t`,
/// `\a`, `\b` escaped, other bytes outside printable ASCII as `\xHH`.
pub fn repr(bytes: &[u8], out: &mut String) {
    out.push('"');
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_as_sdscatrepr() {
        let mut s = String::new();
        repr(b"a \"b\"\\\n\r\t\x07\x08\x00\xff~", &mut s);
        assert_eq!(s, r#""a \"b\"\\\n\r\t\a\b\x00\xff~""#);
    }
}
