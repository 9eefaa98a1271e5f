//! `OBJECT` (ENCODING, REFCOUNT, IDLETIME, FREQ, HELP) and `MEMORY`
//! (USAGE, STATS, DOCTOR, MALLOC-STATS, PURGE, HELP), in Redis 7.0's
//! shapes and words.
//!
//! These are compatibility answers, as Monotable stores every key as rows
//! (see [`super::keyspace`]) and has no listpacks, intsets nor shared
//! objects:
//!
//! - OBJECT ENCODING names the encoding Redis 7.0 would choose for the
//!   same contents written now, under the thresholds CONFIG holds (Redis
//!   keeps the encoding a key got when written: a set that was an intset
//!   stays one after the threshold is lowered, a hash that grew past it and
//!   shrank stays a hashtable; Monotable cannot know that past) (7.0's defaults:
//!   `hash-max-listpack-entries` 512 / `-value` 64, `set-max-intset-entries`
//!   512, `zset-max-listpack-entries` 128 / `-value` 64): a string is `int`
//!   when it reads as a 64-bit integer, `embstr` up to 44 bytes, `raw`
//!   beyond (Redis also answers `raw` for a short string that APPEND or
//!   SETRANGE made; Monotable cannot tell); a list is `quicklist` (7.0
//!   has no other list encoding); it reads at most the threshold's number
//!   of elements.
//! - OBJECT REFCOUNT is 2147483647 for the integers 0..9999 (Redis's shared
//!   integers), 1 otherwise.
//! - OBJECT IDLETIME is 0 and OBJECT FREQ 0 (with an LFU policy set): no
//!   access clock is kept per key. Each answers Redis's error under the
//!   other kind of `maxmemory-policy`.
//! - MEMORY USAGE estimates the bytes of the key's rows (key, value and
//!   [`ROW_OVERHEAD_BYTES`] each), sampling SAMPLES elements (5 by
//!   default, 0 for all) and scaling to the element count, as Redis
//!   samples.

use super::args::{lower, parse_i64};
use super::errors::{unknown_subcommand, SYNTAX};
use super::keyspace::{
    decode_field, element_prefix, key_row, Db, Value, KIND_HASH, KIND_LIST, KIND_SET, KIND_STRING,
    KIND_ZSET,
};
use super::reply::Reply;
use super::state::RespState;
use crate::error::NodeResult;

/// What one stored row costs besides its key and value bytes, for MEMORY
/// USAGE: the chunk index entry and the record header, roughly.
pub const ROW_OVERHEAD_BYTES: u64 = 48;
/// Redis's `OBJ_SHARED_REFCOUNT`: the refcount of a shared integer.
const SHARED_REFCOUNT: i64 = i32::MAX as i64;
/// Redis shares the integers below this (`OBJ_SHARED_INTEGERS`).
const SHARED_INTEGERS: i64 = 10_000;
/// The longest string Redis 7.0 keeps `embstr`.
const EMBSTR_MAX_BYTES: usize = 44;
/// Elements MEMORY USAGE samples unless told (Redis's default).
const USAGE_SAMPLES_DEFAULT: u64 = 5;

const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

const MEMORY_HELP: &[&str] = &[
    "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return memory problems reports.",
    "MALLOC-STATS",
    "    Return internal statistics report from the memory allocator.",
    "PURGE",
    "    Attempt to purge dirty pages for reclamation by the allocator.",
    "STATS",
    "    Return information about the memory usage of the server.",
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
    "HELP",
    "    Prints this help.",
];

/// Runs `OBJECT ...` or `MEMORY ...` on database `db`.
pub async fn run(
    state: &RespState,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let sub = format!("{name}|{}", lower(&args[1]));
    let lfu = state.config.text("maxmemory-policy").contains("lfu");
    let help =
        |lines: &[&'static str]| Reply::Array(lines.iter().map(|l| Reply::Simple(l)).collect());
    Ok(match sub.as_str() {
        "object|help" => help(OBJECT_HELP),
        "memory|help" => help(MEMORY_HELP),
        "object|encoding" | "object|refcount" | "object|idletime" | "object|freq" => {
            // The key first, then the policy, as Redis.
            let Some(value) = db.get(&args[2]).await? else { return Ok(Reply::Null) };
            match sub.as_str() {
                "object|encoding" => Reply::bulk(encoding(state, db, &args[2], &value).await?),
                "object|refcount" => Reply::Int(refcount(&value)),
                "object|freq" if !lfu => Reply::err(
                    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
                ),
                "object|idletime" if lfu => Reply::err(
                    "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
                ),
                // No access clock per key (see the module's docs).
                _ => Reply::Int(0),
            }
        }
        "memory|usage" => {
            let samples = match usage_samples(&args[3..]) {
                Ok(n) => n,
                Err(reply) => return Ok(reply),
            };
            match db.get(&args[2]).await? {
                None => Reply::Null,
                Some(value) => Reply::Int(usage(db, &args[2], &value, samples).await? as i64),
            }
        }
        "memory|stats" => stats(state),
        "memory|doctor" => Reply::Verbatim(
            "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base.\n"
                .to_owned(),
        ),
        "memory|malloc-stats" => {
            Reply::bulk(&b"Stats not supported for the current allocator"[..])
        }
        "memory|purge" => Reply::ok(),
        _ => unknown_subcommand(&args[0], &args[1]),
    })
}

/// MEMORY USAGE's options: `[SAMPLES count]` (0: every element).
fn usage_samples(options: &[Vec<u8>]) -> Result<u64, Reply> {
    let mut samples = USAGE_SAMPLES_DEFAULT;
    let mut i = 0;
    while i < options.len() {
        if lower(&options[i]) != "samples" || i + 1 >= options.len() {
            return Err(Reply::err(SYNTAX));
        }
        match parse_i64(&options[i + 1]) {
            None => return Err(Reply::err("ERR value is not an integer or out of range")),
            Some(n) if n < 0 => return Err(Reply::err(SYNTAX)),
            Some(0) => samples = u64::MAX,
            Some(n) => samples = n as u64,
        }
        i += 2;
    }
    Ok(samples)
}

/// A string's value as Redis would share it: Some(n) when it is the
/// canonical text of an integer (no sign on 0, no leading zeros, no
/// spaces), as Redis's `string2ll`.
fn as_integer(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let n: i64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == bytes).then_some(n)
}

fn refcount(value: &Value) -> i64 {
    match as_integer(&value.payload).filter(|_| value.kind == KIND_STRING) {
        Some(n) if (0..SHARED_INTEGERS).contains(&n) => SHARED_REFCOUNT,
        _ => 1,
    }
}

/// The encoding Redis 7.0 would give `value` (see the module's docs).
async fn encoding(
    state: &RespState,
    db: &Db<'_>,
    key: &[u8],
    value: &Value,
) -> NodeResult<&'static str> {
    let limit = |name: &str| state.config.int(name).max(0) as u64;
    let count = value.count();
    Ok(match value.kind {
        KIND_STRING if as_integer(&value.payload).is_some() => "int",
        KIND_STRING if value.payload.len() <= EMBSTR_MAX_BYTES => "embstr",
        KIND_STRING => "raw",
        KIND_LIST => "quicklist",
        super::keyspace::KIND_STREAM => "stream",
        KIND_SET => {
            let small = count <= limit("set-max-intset-entries")
                && elements_all(db, KIND_SET, key, |member, _| as_integer(member).is_some())
                    .await?;
            if small {
                "intset"
            } else {
                "hashtable"
            }
        }
        KIND_HASH => {
            let max = limit("hash-max-listpack-value") as usize;
            let small = count <= limit("hash-max-listpack-entries")
                && elements_all(db, KIND_HASH, key, |field, stored| {
                    field.len() <= max && decode_field(stored).is_ok_and(|v| v.len() <= max)
                })
                .await?;
            if small {
                "listpack"
            } else {
                "hashtable"
            }
        }
        KIND_ZSET => {
            let max = limit("zset-max-listpack-value") as usize;
            let small = count <= limit("zset-max-listpack-entries")
                && elements_all(db, KIND_ZSET, key, |member, _| member.len() <= max).await?;
            if small {
                "listpack"
            } else {
                "skiplist"
            }
        }
        _ => "unknown",
    })
}

/// Whether `test` holds for every element (name, stored value) of the
/// collection at `key`; stops at the first that fails.
async fn elements_all(
    db: &Db<'_>,
    kind: u8,
    key: &[u8],
    mut test: impl FnMut(&[u8], &[u8]) -> bool,
) -> NodeResult<bool> {
    let prefix = element_prefix(kind, key);
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let mut all = true;
    db.visit_rows(prefix, end, false, |row, stored| {
        let element = super::keyspace::last_bytes(&row)?;
        all = test(&element, &stored);
        Ok(all)
    })
    .await?;
    Ok(all)
}

/// MEMORY USAGE's estimate for `key` (see the module's docs).
async fn usage(db: &Db<'_>, key: &[u8], value: &Value, samples: u64) -> NodeResult<u64> {
    let own = key_row(key).len() as u64 + value.encode().len() as u64 + ROW_OVERHEAD_BYTES;
    if value.kind == KIND_STRING || value.count() == 0 {
        return Ok(own);
    }
    let prefix = element_prefix(value.kind, key);
    let end = monotable_proto::keys::tuple_prefix_end(&prefix);
    let (mut seen, mut bytes) = (0u64, 0u64);
    db.visit_rows(prefix, end, false, |row, stored| {
        seen += 1;
        bytes += (row.len() + stored.len()) as u64 + ROW_OVERHEAD_BYTES;
        Ok(seen < samples)
    })
    .await?;
    if seen == 0 {
        return Ok(own);
    }
    // A sorted set keeps a second row per member, in score order, about
    // as large as the first.
    let rows_per_element = if value.kind == KIND_ZSET { 2 } else { 1 };
    Ok(own + bytes * value.count() * rows_per_element / seen)
}

/// MEMORY STATS: the fields Monotable can fill truly (the process's
/// resident memory stands for what Redis's allocator reports).
fn stats(state: &RespState) -> Reply {
    let rss = super::info::rss_bytes();
    let peak = state.peak_rss(rss);
    let int = |n: u64| Reply::Int(n as i64);
    let s = |t: &str| Reply::bulk(t.as_bytes());
    Reply::Map(vec![
        (s("peak.allocated"), int(peak)),
        (s("total.allocated"), int(rss)),
        (s("startup.allocated"), int(state.startup_rss)),
        (s("replication.backlog"), int(0)),
        (s("clients.slaves"), int(0)),
        (s("clients.normal"), int(0)),
        (s("cluster.links"), int(0)),
        (s("aof.buffer"), int(0)),
        (s("lua.caches"), int(0)),
        (s("functions.caches"), int(0)),
        (s("overhead.total"), int(state.startup_rss)),
        (s("dataset.bytes"), int(rss.saturating_sub(state.startup_rss))),
        (s("fragmentation"), Reply::Double(1.0)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_canonical_as_redis_reads_them() {
        assert_eq!(as_integer(b"12"), Some(12));
        assert_eq!(as_integer(b"-5"), Some(-5));
        assert_eq!(as_integer(b"01"), None);
        assert_eq!(as_integer(b"+1"), None);
        assert_eq!(as_integer(b" 1"), None);
        assert_eq!(as_integer(b"-0"), None);
        assert_eq!(as_integer(b"12345678901234567890"), None);
        assert_eq!(as_integer(b""), None);
    }

    #[test]
    fn shared_integers_have_redis_refcount() {
        let s = |t: &[u8]| Value::string(t.to_vec(), None);
        assert_eq!(refcount(&s(b"1")), SHARED_REFCOUNT);
        assert_eq!(refcount(&s(b"9999")), SHARED_REFCOUNT);
        assert_eq!(refcount(&s(b"10000")), 1);
        assert_eq!(refcount(&s(b"-5")), 1);
        assert_eq!(refcount(&s(b"abc")), 1);
    }

    #[test]
    fn usage_options_are_parsed_as_redis() {
        let o = |w: &[&str]| w.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(usage_samples(&o(&[])), Ok(USAGE_SAMPLES_DEFAULT));
        assert_eq!(usage_samples(&o(&["SAMPLES", "0"])), Ok(u64::MAX));
        assert_eq!(usage_samples(&o(&["samples", "3"])), Ok(3));
        assert_eq!(usage_samples(&o(&["samples"])), Err(Reply::err(SYNTAX)));
        assert_eq!(usage_samples(&o(&["foo", "1"])), Err(Reply::err(SYNTAX)));
        assert_eq!(usage_samples(&o(&["samples", "-1"])), Err(Reply::err(SYNTAX)));
        assert!(usage_samples(&o(&["samples", "x"])).is_err());
    }
}
