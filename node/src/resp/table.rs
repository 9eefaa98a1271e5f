//! The one table of the Redis commands this endpoint knows: for each, what
//! Redis 7.0's `COMMAND` says of it (arity, flags, legacy key positions,
//! ACL categories, tips, key specs, subcommands, and the summary of
//! `COMMAND DOCS`), whether every node answers it itself on a cluster
//! (`per_node`, see [`super::cluster`]), and which module runs it
//! ([`Handler`]).
//!
//! [`COMMANDS`] is sorted by name, so [`lookup`] is a binary search; a
//! unit test keeps it sorted. The dispatcher ([`super::commands`]) checks
//! arity against it and picks the handler with one match; `COMMAND`
//! ([`super::introspect`]) answers from it. The rows of Redis's own
//! commands were taken from `redis-server` 7.0.15, and the differential
//! test `tests/tests/resp_command.rs` compares them with a running one;
//! `mt.*` rows are Monotable's own (group `module`, as Redis shows a
//! module's commands).

/// A command flag, as `COMMAND` names it. Declared in the order Redis
/// 7.0 lists them in a reply, which is the order each row keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Write,
    Readonly,
    Denyoom,
    Admin,
    Pubsub,
    Noscript,
    Blocking,
    Loading,
    Stale,
    SkipMonitor,
    SkipSlowlog,
    Asking,
    Fast,
    NoAuth,
    NoMandatoryKeys,
    NoAsyncLoading,
    NoMulti,
    MovableKeys,
    AllowBusy,
}

impl Flag {
    /// The flag's name in `COMMAND`'s reply.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Write => "write",
            Flag::Readonly => "readonly",
            Flag::Denyoom => "denyoom",
            Flag::Admin => "admin",
            Flag::Pubsub => "pubsub",
            Flag::Noscript => "noscript",
            Flag::Blocking => "blocking",
            Flag::Loading => "loading",
            Flag::Stale => "stale",
            Flag::SkipMonitor => "skip_monitor",
            Flag::SkipSlowlog => "skip_slowlog",
            Flag::Asking => "asking",
            Flag::Fast => "fast",
            Flag::NoAuth => "no_auth",
            Flag::NoMandatoryKeys => "no_mandatory_keys",
            Flag::NoAsyncLoading => "no_async_loading",
            Flag::NoMulti => "no_multi",
            Flag::MovableKeys => "movablekeys",
            Flag::AllowBusy => "allow_busy",
        }
    }
}

/// The module that runs a command: the dispatcher matches this once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// PING, ECHO, QUIT, SELECT, HELLO, AUTH, RESET ([`super::connection`]),
    /// CLIENT ([`super::clients`]), INFO ([`super::info`]).
    Connection,
    /// COMMAND and its subcommands ([`super::introspect`]).
    Command,
    /// String commands ([`super::strings`]).
    Strings,
    /// Bitmap commands on strings ([`super::bits`]).
    Bits,
    /// Whole keys: expiry, renaming, scanning, flushing, and the string
    /// commands that edit parts of a value ([`super::keys`]).
    Keys,
    /// Hashes and sets ([`super::collections`]).
    Collections,
    /// Lists ([`super::lists`]).
    Lists,
    /// Sorted sets ([`super::zsets`]).
    Zsets,
    /// Monotable's own `MT.*` commands ([`super::mt`]).
    Mt,
    /// PUBLISH, SUBSCRIBE and the like, PUBSUB ([`super::pubsub`]).
    PubSub,
    /// BLPOP and the other blocking pops ([`super::blocking`]).
    Blocking,
    /// EVAL and the like, SCRIPT ([`super::scripting`]); the dispatcher
    /// runs a script's commands.
    Scripting,
    /// CONFIG ([`super::config`]), OBJECT and MEMORY ([`super::object`]).
    Server,
    /// SAVE, BGSAVE, LASTSAVE, SHUTDOWN ([`super::persistence`]).
    Persistence,
    /// CLUSTER: answered as by a Redis with cluster support disabled
    /// (Monotable's own cluster routes every key from any node).
    Cluster,
    /// SORT and SORT_RO ([`super::sort`]).
    Sort,
    /// GEOADD and the other geo commands, over sorted sets ([`super::geo`]).
    Geo,
    /// PFADD and the other HyperLogLog commands, over strings
    /// ([`super::hyperloglog`]).
    HyperLogLog,
    /// Streams ([`super::stream_commands`], [`super::stream_groups`]).
    Streams,
    /// ACL and its subcommands ([`super::acl_command`]).
    Acl,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: run by the dispatcher itself,
    /// before a command is queued or placed.
    Transaction,
}

/// Where a key spec starts looking for keys (Redis's `begin_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument (the command name is 0).
    Index(i32),
    /// After `keyword`, searched for from argument `start_from` (a negative
    /// one counts from the end and searches backwards).
    Keyword { keyword: &'static str, start_from: i32 },
    /// Not known from the arguments' positions (SORT's STORE, and the keys
    /// its BY and GET patterns name).
    Unknown,
}

/// Which arguments from the start are keys (Redis's `find_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// From the start to `last_key` (relative to it; -1 the last
    /// argument, -2 the one before...), every `key_step`-th; a negative
    /// last key with `limit` > 1 stops at 1/limit of the rest.
    Range { last_key: i32, key_step: i32, limit: i32 },
    /// A count of keys at `key_num_index` (relative to the start), the
    /// first key at `first_key`, every `key_step`-th.
    KeyNum { key_num_index: i32, first_key: i32, key_step: i32 },
    /// Not known from the arguments' positions.
    Unknown,
}

/// One of a command's key specs, as Redis 7.0 describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Redis's key spec flags (`RO`, `RW`, `OW`, `RM`, `access`, `insert`,
    /// `update`, `delete`, ...), in its order.
    pub flags: &'static [&'static str],
    pub notes: Option<&'static str>,
    pub begin: BeginSearch,
    pub find: FindKeys,
}

impl KeySpec {
    const fn notes(self, notes: &'static str) -> KeySpec {
        KeySpec { notes: Some(notes), ..self }
    }
}

/// A key spec found by index and range, as every command here has.
const fn spec(
    flags: &'static [&'static str],
    index: i32,
    last_key: i32,
    key_step: i32,
    limit: i32,
) -> KeySpec {
    KeySpec {
        flags,
        notes: None,
        begin: BeginSearch::Index(index),
        find: FindKeys::Range { last_key, key_step, limit },
    }
}

/// What `COMMAND DOCS` says of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Docs {
    pub summary: &'static str,
    /// The Redis version that added it.
    pub since: &'static str,
    pub group: &'static str,
    pub complexity: &'static str,
    /// For a deprecated command: (since which version, what replaces it).
    pub deprecated: Option<(&'static str, &'static str)>,
    /// A system command, not meant for applications (`doc_flags` syscmd).
    pub syscmd: bool,
}

/// One command (or subcommand, named `parent|sub`) of the table.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Lowercase.
    pub name: &'static str,
    /// Redis's arity, counting the name: positive exact, negative a minimum.
    pub arity: i32,
    pub flags: &'static [Flag],
    /// The legacy key positions (first key, last key, step) of `COMMAND`.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// ACL categories with their `@`, in Redis's order.
    pub acl_categories: &'static [&'static str],
    /// Redis's command tips (`request_policy:...`, `nondeterministic_output`).
    pub tips: &'static [&'static str],
    pub key_specs: &'static [KeySpec],
    /// The subcommands `COMMAND` shows (only those this endpoint runs).
    pub subcommands: &'static [Command],
    pub docs: Docs,
    /// Every node answers it itself, whatever database is selected: it is
    /// never run on a replicated database's leader (see [`super::cluster`]).
    pub per_node: bool,
    pub handler: Handler,
}

/// Commands Redis 7.0 flags `MAY_REPLICATE` (not shown by COMMAND): they
/// may write (a script) or reach replicas (PUBLISH).
const MAY_REPLICATE: &[&str] = &["eval", "evalsha", "fcall", "pfcount", "publish", "spublish"];

impl Command {
    /// Whether Redis 7.0 flags the command `MAY_REPLICATE`: CLIENT PAUSE
    /// WRITE holds it, and a read-only script may not call it.
    pub fn may_replicate(&self) -> bool {
        MAY_REPLICATE.contains(&self.name)
    }

    /// Whether `argc` arguments (the name included) fit the arity.
    pub fn arity_fits(&self, argc: usize) -> bool {
        let argc = i64::try_from(argc).unwrap_or(i64::MAX);
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    pub fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }

    const fn tips(self, tips: &'static [&'static str]) -> Command {
        Command { tips, ..self }
    }

    const fn specs(self, key_specs: &'static [KeySpec]) -> Command {
        Command { key_specs, ..self }
    }

    const fn subcommands(self, subcommands: &'static [Command]) -> Command {
        Command { subcommands, ..self }
    }

    const fn docs(
        self,
        summary: &'static str,
        since: &'static str,
        group: &'static str,
        complexity: &'static str,
    ) -> Command {
        Command {
            docs: Docs { summary, since, group, complexity, deprecated: None, syscmd: false },
            ..self
        }
    }

    const fn syscmd(self) -> Command {
        let mut docs = self.docs;
        docs.syscmd = true;
        Command { docs, ..self }
    }

    const fn deprecated(self, since: &'static str, replaced_by: &'static str) -> Command {
        let mut docs = self.docs;
        docs.deprecated = Some((since, replaced_by));
        Command { docs, ..self }
    }

    const fn per_node(self) -> Command {
        Command { per_node: true, ..self }
    }
}

/// A row with what every row has; the builder methods add the rest.
const fn cmd(
    name: &'static str,
    arity: i32,
    handler: Handler,
    flags: &'static [Flag],
    (first_key, last_key, step): (i32, i32, i32),
    acl_categories: &'static [&'static str],
) -> Command {
    Command {
        name,
        arity,
        flags,
        first_key,
        last_key,
        step,
        acl_categories,
        tips: &[],
        key_specs: &[],
        subcommands: &[],
        docs: Docs {
            summary: "",
            since: "",
            group: "",
            complexity: "",
            deprecated: None,
            syscmd: false,
        },
        per_node: false,
        handler,
    }
}

/// The command named `name` (lowercase), by binary search.
pub fn lookup(name: &str) -> Option<&'static Command> {
    COMMANDS.binary_search_by(|c| c.name.cmp(name)).ok().map(|i| &COMMANDS[i])
}

/// The subcommand `sub` (lowercase) of `command`, as `COMMAND GETKEYS`
/// and `COMMAND INFO` look it up (a short list: a linear search).
pub fn subcommand(command: &'static Command, sub: &str) -> Option<&'static Command> {
    let (_, own) = command.name.split_once('|').unwrap_or((command.name, ""));
    debug_assert!(own.is_empty(), "subcommands have no subcommands");
    command.subcommands.iter().find(|s| s.name.split_once('|').is_some_and(|(_, n)| n == sub))
}

/// Why a container command's call names no subcommand it can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubcommandError {
    /// No such subcommand.
    Unknown,
    /// The subcommand (named so, `config|get`) takes another number of
    /// arguments.
    Arity(&'static str),
}

/// The subcommand `args` call of `command`, its arity checked, as Redis's
/// `processCommand` checks it before any handler runs: `Ok(None)` for a
/// command without subcommands or a container called without one
/// (`COMMAND`). CLIENT SETINFO (Redis 7.2's, which client libraries send on
/// every connect) is accepted though 7.0's table has no row for it; its
/// handler checks it.
pub fn checked_subcommand(
    command: &'static Command,
    args: &[Vec<u8>],
) -> Result<Option<&'static Command>, SubcommandError> {
    let Some(sub) = args.get(1).filter(|_| !command.subcommands.is_empty()) else {
        return Ok(None);
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    if command.name == "client" && sub == "setinfo" {
        return Ok(None);
    }
    let spec = subcommand(command, &sub).ok_or(SubcommandError::Unknown)?;
    if !spec.arity_fits(args.len()) {
        return Err(SubcommandError::Arity(spec.name));
    }
    Ok(Some(spec))
}

mod rows;
pub use rows::COMMANDS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_and_unique_so_lookup_finds_each() {
        for pair in COMMANDS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(std::ptr::eq(lookup(c.name).expect(c.name), c));
            assert!(!c.docs.summary.is_empty() && !c.docs.since.is_empty(), "{}", c.name);
            for s in c.subcommands {
                let (parent, sub) = s.name.split_once('|').expect("parent|sub");
                assert_eq!(parent, c.name);
                assert!(std::ptr::eq(subcommand(c, sub).expect(s.name), s));
                assert!(s.subcommands.is_empty());
            }
        }
        assert!(lookup("nosuch").is_none() && lookup("GET").is_none());
        assert!(subcommand(lookup("client").expect("client"), "setinfo").is_none());
    }

    #[test]
    fn per_node_commands_are_not_forwarded() {
        let per_node: Vec<&str> = COMMANDS.iter().filter(|c| c.per_node).map(|c| c.name).collect();
        assert_eq!(
            per_node,
            [
                "acl",
                "asking",
                "auth",
                "bgsave",
                "client",
                "cluster",
                "command",
                "config",
                "echo",
                "flushall",
                "function",
                "hello",
                "info",
                "lastsave",
                "monitor",
                "mt.agg",
                "mt.scan",
                "mt.views",
                "ping",
                "psubscribe",
                "publish",
                "pubsub",
                "punsubscribe",
                "quit",
                "readonly",
                "readwrite",
                "reset",
                "save",
                "script",
                "select",
                "shutdown",
                "slowlog",
                "subscribe",
                "swapdb",
                "time",
                "unsubscribe"
            ]
        );
    }

    #[test]
    fn arity_is_exact_or_a_minimum() {
        let get = lookup("get").expect("get");
        assert!(!get.arity_fits(1) && get.arity_fits(2) && !get.arity_fits(3));
        let del = lookup("del").expect("del");
        assert!(!del.arity_fits(1) && del.arity_fits(2) && del.arity_fits(300));
    }

    #[test]
    fn the_legacy_range_agrees_with_simple_key_specs() {
        // COMMAND's legacy (first, last, step) spans the key specs found by
        // an index and a range (Redis derives it so); a key spec with a
        // key count (LMPOP, ZUNIONSTORE's sources) makes the keys movable
        // and has no part in it: (0, 0, 0) when it is the only kind.
        // Postmortem: this test took every index spec, so LMPOP failed it.
        for c in COMMANDS.iter().filter(|c| !c.key_specs.is_empty()) {
            let first = c.key_specs.iter().filter_map(|k| match (k.begin, k.find) {
                (BeginSearch::Index(i), FindKeys::Range { .. }) => Some(i),
                _ => None,
            });
            assert_eq!(first.min().unwrap_or(0), c.first_key, "{}", c.name);
            if c.key_specs.iter().any(|k| matches!(k.find, FindKeys::KeyNum { .. })) {
                assert!(c.has(Flag::MovableKeys), "{}", c.name);
            }
        }
        for c in COMMANDS.iter().filter(|c| c.key_specs.is_empty()) {
            assert_eq!((c.first_key, c.last_key, c.step), (0, 0, 0), "{}", c.name);
        }
    }

    #[test]
    fn handlers_lock_by_the_write_flag() {
        // Lists, sorted sets, hashes and sets hold a key's stripe exactly
        // when their row says they write.
        for c in COMMANDS {
            assert!(!(c.has(Flag::Write) && c.has(Flag::Readonly)), "{}", c.name);
        }
        let transaction: Vec<&str> =
            COMMANDS.iter().filter(|c| c.handler == Handler::Transaction).map(|c| c.name).collect();
        assert_eq!(transaction, ["discard", "exec", "multi", "unwatch", "watch"]);
    }
}
