//! `CONFIG` GET, SET, RESETSTAT, REWRITE and HELP over the parameters
//! clients and tools read, in Redis 7.0's words ([`RespConfig`] holds the
//! values of the node's Redis endpoint).
//!
//! Each parameter is one of:
//!
//! - **in effect**: `timeout` (idle connections are closed, see
//!   [`super::clients::Clients::close_idle`]), `slowlog-log-slower-than`
//!   and `slowlog-max-len` ([`super::slowlog`]), `hll-sparse-max-bytes`
//!   ([`super::hyperloglog`]), `stream-node-max-entries` and
//!   `stream-node-max-bytes` ([`super::streams`]), `tracking-table-max-keys`
//!   ([`super::tracking`]), `notify-keyspace-events`
//!   ([`super::notify`]) and the encoding thresholds
//!   (`hash-max-listpack-entries` and the like, with their `ziplist`
//!   aliases), which OBJECT ENCODING's answers follow ([`super::object`]);
//! - **fixed** facts of Monotable, which CONFIG SET refuses as immutable:
//!   `databases`, `daemonize`, `cluster-enabled`, `replicaof` (immutable in
//!   Redis too), and `port`, `bind`, `dir`, `maxclients`,
//!   `proto-max-bulk-len` (which Redis can change: setting the value they
//!   have is accepted, as a round trip of CONFIG GET and SET does);
//! - **accepted, no effect** (documented in the README): `save` and
//!   `appendonly` (every write goes through Monotable's journal, fsynced
//!   as the node's `--fsync` says; there are no RDB snapshots nor AOF),
//!   `maxmemory-clients`, `maxmemory-policy`, `maxmemory-samples` (the
//!   data lives on disk; nothing is evicted: `maxmemory` refuses writes as
//!   `noeviction` does, see [`super::maxmemory`]), `lazyfree-lazy-*`,
//!   `client-query-buffer-limit` (requests are bounded by the argument
//!   limit, `proto-max-bulk-len`), `repl-backlog-size` (no Redis
//!   replication here), `sanitize-dump-payload` (RESTORE checks every
//!   payload whole, see [`super::rdb`]).
//!
//! Any other name is unknown: CONFIG GET matches nothing, CONFIG SET
//! answers Redis's "Unknown option" error. CONFIG SET of several pairs is
//! atomic as in 7.0: every name is checked first, then every value, and
//! nothing changes unless all are valid.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::args::{lower, parse_i64};
use super::errors::{unknown_subcommand, SYNTAX};
use super::reply::Reply;
use super::state::RespState;

/// How a parameter's value is checked and whether it may change.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    /// Bytes, with Redis's units (`1gb`, `100mb`, `10k`), at least `min`.
    Memory {
        min: u64,
    },
    Bool,
    Enum(&'static [&'static str]),
    /// Bytes, or a percentage up to 100 (`maxmemory-clients`).
    MemoryOrPercent,
    /// `save`: pairs of seconds and changes, or empty.
    Save,
    /// `notify-keyspace-events`: class letters (see [`super::notify`]).
    Events,
    /// Immutable in Redis too: CONFIG SET refuses it.
    Immutable,
    /// A fact of Monotable that Redis lets CONFIG SET change: setting the
    /// value it has is accepted (nothing changes), another is refused as
    /// immutable.
    Held,
}

/// One parameter: its names (the first is the main one; Redis lists each
/// alias on its own in CONFIG GET), how it is checked, its default.
struct Param {
    names: &'static [&'static str],
    kind: Kind,
    default: &'static str,
}

const fn param(names: &'static [&'static str], kind: Kind, default: &'static str) -> Param {
    Param { names, kind, default }
}

/// `sanitize-dump-payload`'s values: RESTORE checks every payload whole
/// whatever it says (see [`super::rdb`]).
const SANITIZE: &[&str] = &["no", "yes", "clients"];

const POLICIES: &[&str] = &[
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "noeviction",
];
const INT_MAX: i64 = i32::MAX as i64;
const LONG_MAX: i64 = i64::MAX;

/// The parameters with Redis 7.0's defaults. Immutable and held ones get
/// their values from the node ([`fixed`]); an empty default there.
static PARAMS: &[Param] = &[
    param(&["appendonly"], Kind::Bool, "no"),
    param(&["bind"], Kind::Held, ""),
    param(&["busy-reply-threshold", "lua-time-limit"], Kind::Int { min: 0, max: LONG_MAX }, "5000"),
    param(&["client-query-buffer-limit"], Kind::Memory { min: 1 << 20 }, "1073741824"),
    param(&["cluster-enabled"], Kind::Immutable, "no"),
    param(&["daemonize"], Kind::Immutable, "no"),
    param(&["databases"], Kind::Immutable, ""),
    param(&["dir"], Kind::Held, ""),
    param(
        &["hash-max-listpack-entries", "hash-max-ziplist-entries"],
        Kind::Int { min: 0, max: LONG_MAX },
        "512",
    ),
    param(
        &["hash-max-listpack-value", "hash-max-ziplist-value"],
        Kind::Int { min: 0, max: LONG_MAX },
        "64",
    ),
    param(&["hll-sparse-max-bytes"], Kind::Memory { min: 0 }, "3000"),
    param(&["hz"], Kind::Int { min: 0, max: INT_MAX }, "10"),
    param(&["latency-monitor-threshold"], Kind::Int { min: 0, max: LONG_MAX }, "0"),
    param(&["lazyfree-lazy-eviction"], Kind::Bool, "no"),
    param(&["lazyfree-lazy-expire"], Kind::Bool, "no"),
    param(&["lazyfree-lazy-server-del"], Kind::Bool, "no"),
    param(&["lazyfree-lazy-user-del"], Kind::Bool, "no"),
    param(&["lazyfree-lazy-user-flush"], Kind::Bool, "no"),
    param(
        &["list-max-listpack-size", "list-max-ziplist-size"],
        Kind::Int { min: i32::MIN as i64, max: INT_MAX },
        "-2",
    ),
    param(&["maxclients"], Kind::Held, ""),
    param(&["maxmemory"], Kind::Memory { min: 0 }, "0"),
    param(&["maxmemory-clients"], Kind::MemoryOrPercent, "0"),
    param(&["maxmemory-policy"], Kind::Enum(POLICIES), "noeviction"),
    param(&["maxmemory-samples"], Kind::Int { min: 1, max: 64 }, "5"),
    param(&["notify-keyspace-events"], Kind::Events, ""),
    param(&["port"], Kind::Held, ""),
    param(&["proto-max-bulk-len"], Kind::Held, ""),
    param(&["repl-backlog-size"], Kind::Memory { min: 1 }, "1048576"),
    param(&["replicaof", "slaveof"], Kind::Immutable, ""),
    param(&["sanitize-dump-payload"], Kind::Enum(SANITIZE), "no"),
    param(&["save"], Kind::Save, ""),
    param(&["set-max-intset-entries"], Kind::Int { min: 0, max: LONG_MAX }, "512"),
    param(&["slowlog-log-slower-than"], Kind::Int { min: -1, max: LONG_MAX }, "10000"),
    param(&["slowlog-max-len"], Kind::Int { min: 0, max: LONG_MAX }, "128"),
    param(&["stream-node-max-bytes"], Kind::Memory { min: 0 }, "4096"),
    param(&["stream-node-max-entries"], Kind::Int { min: 0, max: LONG_MAX }, "100"),
    param(&["timeout"], Kind::Int { min: 0, max: INT_MAX }, "0"),
    param(&["tracking-table-max-keys"], Kind::Int { min: 0, max: LONG_MAX }, "1000000"),
    param(
        &["zset-max-listpack-entries", "zset-max-ziplist-entries"],
        Kind::Int { min: 0, max: LONG_MAX },
        "128",
    ),
    param(
        &["zset-max-listpack-value", "zset-max-ziplist-value"],
        Kind::Int { min: 0, max: LONG_MAX },
        "64",
    ),
];

/// CONFIG's help, word for word as Redis 7.0 gives it.
const HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

/// The current values of the parameters that may change, by main name.
pub struct RespConfig {
    /// A std Mutex: taken by CONFIG, OBJECT ENCODING and the idle sweep
    /// (every 100 ms), never per command nor across an await.
    values: Mutex<BTreeMap<&'static str, String>>,
}

impl Default for RespConfig {
    fn default() -> Self {
        let values = PARAMS
            .iter()
            .filter(|p| !fixed_kind(p.kind))
            .map(|p| (p.names[0], p.default.to_owned()))
            .collect();
        RespConfig { values: Mutex::new(values) }
    }
}

impl RespConfig {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.values.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A numeric parameter's value (by main name); 0 if it has none.
    pub fn int(&self, name: &str) -> i64 {
        let values = self.lock();
        match values.get(name) {
            Some(v) => memory(v).map_or_else(|| parse_i64(v.as_bytes()).unwrap_or(0), |b| b as i64),
            None => 0,
        }
    }

    /// A parameter's value as text (by main name).
    pub fn text(&self, name: &str) -> String {
        self.lock().get(name).cloned().unwrap_or_default()
    }

    /// `timeout`: how long a connection may stay idle (None: for ever).
    pub fn idle_timeout(&self) -> Option<Duration> {
        let secs = self.int("timeout");
        (secs > 0).then(|| Duration::from_secs(secs as u64))
    }
}

/// The value of an immutable parameter: what is true of this node.
fn fixed(state: &RespState, name: &str) -> String {
    let listen = state.resp_addr.get();
    match name {
        "databases" => super::keyspace::DATABASES.to_string(),
        "port" => listen.map_or(0, |a| a.port()).to_string(),
        "bind" => listen.map_or_else(String::new, |a| a.ip().to_string()),
        "dir" => state.node.config.data_dir.display().to_string(),
        "maxclients" => crate::config::CONNECTIONS_MAX.to_string(),
        "proto-max-bulk-len" => super::parse::ARG_SIZE_MAX_BYTES.to_string(),
        other => PARAMS
            .iter()
            .find(|p| p.names[0] == other)
            .map_or_else(String::new, |p| p.default.to_owned()),
    }
}

fn fixed_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Immutable | Kind::Held)
}

fn value(state: &RespState, p: &Param) -> String {
    if fixed_kind(p.kind) {
        fixed(state, p.names[0])
    } else {
        state.config.text(p.names[0])
    }
}

/// Redis's memory value: digits and an optional unit (b, k, kb, m, mb, g,
/// gb, any case); None when it is not one.
fn memory(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(mul)
}

/// Checks `v` for `p`: its stored form, or the reason Redis gives.
fn check(p: &Param, v: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(v).into_owned();
    match p.kind {
        Kind::Immutable | Kind::Held => Err("can't set immutable config".into()),
        Kind::Int { min, max } => match parse_i64(v) {
            None => Err("argument couldn't be parsed into an integer".into()),
            Some(n) if n < min || n > max => {
                Err(format!("argument must be between {min} and {max} inclusive"))
            }
            Some(n) => Ok(n.to_string()),
        },
        Kind::Memory { min } => match memory(&text) {
            Some(bytes) if bytes < min || bytes > LONG_MAX as u64 => {
                Err(format!("argument must be between {min} and {LONG_MAX} inclusive"))
            }
            Some(bytes) => Ok(bytes.to_string()),
            None => Err("argument must be a memory value".into()),
        },
        Kind::MemoryOrPercent => match text.strip_suffix('%').map(str::parse::<u64>) {
            Some(Ok(p)) if p <= 100 => Ok(format!("{p}%")),
            Some(Ok(_)) => Err("percentage argument must be less or equal to 100".into()),
            Some(Err(_)) => Err("argument must be a memory or percent value".into()),
            None => match memory(&text) {
                Some(bytes) => Ok(bytes.to_string()),
                None => Err("argument must be a memory or percent value".into()),
            },
        },
        Kind::Bool => match lower(v).as_str() {
            w @ ("yes" | "no") => Ok(w.to_owned()),
            _ => Err("argument must be 'yes' or 'no'".into()),
        },
        Kind::Enum(options) => {
            let w = lower(v);
            match options.iter().find(|o| **o == w) {
                Some(o) => Ok((*o).to_owned()),
                None => {
                    Err(format!("argument(s) must be one of the following: {}", options.join(", ")))
                }
            }
        }
        Kind::Events => match super::notify::parse(v) {
            Some(flags) => Ok(super::notify::format(flags)),
            None => Err(super::notify::INVALID_CLASS.into()),
        },
        Kind::Save => {
            let words: Vec<&str> = text.split_whitespace().collect();
            let valid =
                words.len().is_multiple_of(2) && words.iter().all(|w| w.parse::<u64>().is_ok());
            if valid {
                Ok(words.join(" "))
            } else {
                Err("Invalid save parameters".into())
            }
        }
    }
}

/// Runs a command of [`super::table::Handler::Server`]: CONFIG here,
/// SLOWLOG in [`super::slowlog`], OBJECT and MEMORY in [`super::object`]
/// (on database `db`).
pub async fn server(
    state: &RespState,
    db: &super::keyspace::Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> crate::error::NodeResult<Reply> {
    match name {
        "config" => Ok(run(state, args)),
        "slowlog" => Ok(super::slowlog::run(state, args)),
        "latency" => Ok(super::latency::run(state, args)),
        _ => super::object::run(state, db, name, args).await,
    }
}

/// Runs `CONFIG subcommand ...` (`args[0]` is CONFIG).
pub fn run(state: &RespState, args: &[Vec<u8>]) -> Reply {
    match lower(&args[1]).as_str() {
        "get" => get(state, &args[2..]),
        "set" => set(state, &args[2..]),
        "resetstat" => {
            state.stats.reset();
            state.saves.reset_stats();
            Reply::ok()
        }
        "rewrite" => Reply::err("ERR The server is running without a config file"),
        "help" => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
        _ => unknown_subcommand(&args[0], &args[1]),
    }
}

/// CONFIG GET pattern [pattern ...]: every name matching one of the
/// patterns (case-insensitive globs), once, with its value.
fn get(state: &RespState, patterns: &[Vec<u8>]) -> Reply {
    // A name without glob characters answers under the name as sent, as
    // Redis's (`CONFIG GET HZ`: "HZ").
    let is_glob = |p: &[u8]| p.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
    let (globs, exact): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = patterns.iter().partition(|p| is_glob(p));
    let globs: Vec<Vec<u8>> = globs.iter().map(|p| p.to_ascii_lowercase()).collect();
    let mut pairs: Vec<(Vec<u8>, String)> = Vec::new();
    for sent in exact {
        let name = lower(sent);
        if let Some(p) = PARAMS.iter().find(|p| p.names.contains(&name.as_str())) {
            if !pairs.iter().any(|(n, _)| n == sent) {
                pairs.push((sent.clone(), value(state, p)));
            }
        }
    }
    for p in PARAMS {
        for name in p.names {
            let matched = globs.iter().any(|pat| super::glob::matches(pat, name.as_bytes()));
            if matched && !pairs.iter().any(|(n, _)| n == name.as_bytes()) {
                pairs.push((name.as_bytes().to_vec(), value(state, p)));
            }
        }
    }
    Reply::Map(pairs.into_iter().map(|(n, v)| (Reply::bulk(n), Reply::bulk(v))).collect())
}

/// CONFIG SET name value [name value ...], all or nothing.
fn set(state: &RespState, pairs: &[Vec<u8>]) -> Reply {
    if !pairs.len().is_multiple_of(2) {
        return Reply::err(SYNTAX);
    }
    let failed = |name: &[u8], why: &str| {
        Reply::err(format!(
            "ERR CONFIG SET failed (possibly related to argument '{}') - {why}",
            String::from_utf8_lossy(name)
        ))
    };
    let mut found: Vec<(&Param, &[u8], &[u8])> = Vec::new();
    for pair in pairs.chunks(2) {
        let name = lower(&pair[0]);
        let Some(p) = PARAMS.iter().find(|p| p.names.contains(&name.as_str())) else {
            return Reply::err(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(&pair[0])
            ));
        };
        let unchanged = matches!(p.kind, Kind::Held) && pair[1] == value(state, p).as_bytes();
        if fixed_kind(p.kind) && !unchanged {
            return failed(&pair[0], "can't set immutable config");
        }
        if found.iter().any(|(q, _, _)| std::ptr::eq(*q, p)) {
            return failed(&pair[0], "duplicate parameter");
        }
        found.push((p, &pair[0], &pair[1]));
    }
    let mut checked = Vec::with_capacity(found.len());
    // A held parameter set to its own value changes nothing.
    for (p, name, v) in found.into_iter().filter(|(p, _, _)| !fixed_kind(p.kind)) {
        match check(p, v) {
            Ok(value) => checked.push((p.names[0], value)),
            Err(why) => return failed(name, &why),
        }
    }
    let mut values = state.config.lock();
    for (name, mut value) in checked {
        // Read per command: kept beside the map, where commands read them.
        let number = parse_i64(value.as_bytes()).unwrap_or(0);
        let number = || number;
        match name {
            // Taken into Redis's bounds (CONFIG_MIN_HZ, CONFIG_MAX_HZ), as
            // Redis's apply step does: CONFIG GET shows the value in use.
            "hz" => value = number().clamp(1, 500).to_string(),
            "slowlog-log-slower-than" => state.slowlog.set_slower_than(number()),
            "slowlog-max-len" => state.slowlog.set_max_len(number().max(0) as u64),
            "busy-reply-threshold" => state.scripts.busy.set_time_limit_ms(number().max(0) as u64),
            "maxmemory" => state.memory.set_limit(memory(&value).unwrap_or(0)),
            "latency-monitor-threshold" => state.latency.set_threshold(number()),
            "notify-keyspace-events" => {
                // Parsed from what was sent: the text kept may leave out
                // `n` (see `notify::format`).
                let sent = pairs.chunks(2).rev().find(|p| lower(&p[0]) == name);
                state.notify.set(sent.and_then(|p| super::notify::parse(&p[1])).unwrap_or(0));
            }
            _ => {}
        }
        values.insert(name, value);
    }
    Reply::ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_take_redis_units() {
        assert_eq!(memory("0"), Some(0));
        assert_eq!(memory("1gb"), Some(1 << 30));
        assert_eq!(memory("10K"), Some(10_000));
        assert_eq!(memory("3mb"), Some(3 << 20));
        assert_eq!(memory("-1"), None);
        assert_eq!(memory("10x"), None);
        assert_eq!(memory(""), None);
    }

    #[test]
    fn values_are_checked_as_redis_checks_them() {
        let find = |n: &str| PARAMS.iter().find(|p| p.names.contains(&n)).expect(n);
        assert_eq!(check(find("timeout"), b"30"), Ok("30".into()));
        assert!(check(find("timeout"), b"-1")
            .expect_err("refused")
            .contains("between 0 and 2147483647"));
        assert_eq!(check(find("appendonly"), b"YES"), Ok("yes".into()));
        assert_eq!(check(find("save"), b"3600 1  300 100"), Ok("3600 1 300 100".into()));
        assert_eq!(check(find("save"), b"3600 1 300"), Err("Invalid save parameters".into()));
        assert_eq!(check(find("save"), b""), Ok(String::new()));
        assert_eq!(check(find("maxmemory-policy"), b"allkeys-LRU"), Ok("allkeys-lru".into()));
        assert!(check(find("databases"), b"3").is_err());
        assert_eq!(check(find("maxmemory-clients"), b"5%"), Ok("5%".into()));
        let over = check(find("maxmemory-clients"), b"200%").expect_err("refused");
        assert_eq!(over, "percentage argument must be less or equal to 100");
        assert!(check(find("maxmemory-clients"), b"x%")
            .expect_err("refused")
            .contains("percent value"));
    }

    #[test]
    fn the_parameters_are_sorted_and_the_defaults_are_valid() {
        for pair in PARAMS.windows(2) {
            assert!(pair[0].names[0] < pair[1].names[0]);
        }
        for p in PARAMS.iter().filter(|p| !fixed_kind(p.kind)) {
            assert_eq!(check(p, p.default.as_bytes()).as_deref(), Ok(p.default), "{}", p.names[0]);
        }
        let config = RespConfig::default();
        assert_eq!(config.int("hash-max-listpack-entries"), 512);
        assert_eq!(config.idle_timeout(), None);
    }
}
