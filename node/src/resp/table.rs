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
    /// PING, ECHO, QUIT, SELECT, HELLO, AUTH, RESET, CLIENT, INFO
    /// ([`super::connection`]).
    Connection,
    /// COMMAND and its subcommands ([`super::introspect`]).
    Command,
    /// String commands ([`super::strings`]).
    Strings,
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

impl Command {
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
        Command { docs: Docs { summary, since, group, complexity, deprecated: None }, ..self }
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
        docs: Docs { summary: "", since: "", group: "", complexity: "", deprecated: None },
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

use Flag::*;
use Handler as H;

#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("append", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append a value to a key", "2.0.0", "string", "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation."),
    cmd("auth", -2, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Authenticate to the server", "1.0.0", "connection", "O(N) where N is the number of passwords defined for the user")
        .per_node(),
    cmd("client", -2, H::Connection, &[], (0, 0, 0), &["@slow"])
        .subcommands(CLIENT_SUBCOMMANDS)
        .docs("A container for client connection commands", "2.4.0", "connection", "Depends on subcommand.")
        .per_node(),
    cmd("command", -1, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .subcommands(COMMAND_SUBCOMMANDS)
        .docs("Get array of Redis command details", "2.8.13", "server", "O(N) where N is the total number of Redis commands")
        .per_node(),
    cmd("dbsize", 1, H::Keys, &[Readonly, Fast], (0, 0, 0), &["@keyspace", "@read", "@fast"])
        .tips(&["request_policy:all_shards", "response_policy:agg_sum"])
        .docs("Return the number of keys in the selected database", "1.0.0", "server", "O(1)"),
    cmd("decr", 2, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Decrement the integer value of a key by one", "1.0.0", "string", "O(1)"),
    cmd("decrby", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Decrement the integer value of a key by the given number", "1.0.0", "string", "O(1)"),
    cmd("del", -2, H::Keys, &[Write], (1, -1, 1), &["@keyspace", "@write", "@slow"])
        .tips(&["request_policy:multi_shard", "response_policy:agg_sum"])
        .specs(&[spec(&["RM", "delete"], 1, -1, 1, 0)])
        .docs("Delete a key", "1.0.0", "generic", "O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1)."),
    cmd("discard", 1, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (0, 0, 0), &["@fast", "@transaction"])
        .docs("Discard all commands issued after MULTI", "2.0.0", "transactions", "O(N), when N is the number of queued commands"),
    cmd("echo", 2, H::Connection, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Echo the given string", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("exec", 1, H::Transaction, &[Noscript, Loading, Stale, SkipSlowlog], (0, 0, 0), &["@slow", "@transaction"])
        .docs("Execute all commands issued after MULTI", "1.2.0", "transactions", "Depends on commands in the transaction"),
    cmd("exists", -2, H::Keys, &[Readonly, Fast], (1, -1, 1), &["@keyspace", "@read", "@fast"])
        .tips(&["request_policy:multi_shard", "response_policy:agg_sum"])
        .specs(&[spec(&["RO"], 1, -1, 1, 0)])
        .docs("Determine if a key exists", "1.0.0", "generic", "O(N) where N is the number of keys to check."),
    cmd("expire", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set a key's time to live in seconds", "1.0.0", "generic", "O(1)"),
    cmd("expireat", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set the expiration for a key as a UNIX timestamp", "1.2.0", "generic", "O(1)"),
    cmd("flushall", -1, H::Keys, &[Write], (0, 0, 0), &["@keyspace", "@write", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Remove all keys from all databases", "1.0.0", "server", "O(N) where N is the total number of keys in all databases")
        .per_node(),
    cmd("flushdb", -1, H::Keys, &[Write], (0, 0, 0), &["@keyspace", "@write", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Remove all keys from the current database", "1.0.0", "server", "O(N) where N is the number of keys in the selected database"),
    cmd("get", 2, H::Strings, &[Readonly, Fast], (1, 1, 1), &["@read", "@string", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the value of a key", "1.0.0", "string", "O(1)"),
    cmd("getdel", 2, H::Strings, &[Write, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Get the value of a key and delete the key", "6.2.0", "string", "O(1)"),
    cmd("getex", -2, H::Keys, &[Write, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0).notes("RW and UPDATE because it changes the TTL")])
        .docs("Get the value of a key and optionally set its expiration", "6.2.0", "string", "O(1)"),
    cmd("getrange", 4, H::Keys, &[Readonly], (1, 1, 1), &["@read", "@string", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get a substring of the string stored at a key", "2.4.0", "string", "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings."),
    cmd("getset", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Set the string value of a key and return its old value", "1.0.0", "string", "O(1)")
        .deprecated("6.2.0", "`SET` with the `!GET` argument"),
    cmd("hdel", -3, H::Collections, &[Write, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Delete one or more hash fields", "2.0.0", "hash", "O(N) where N is the number of fields to be removed."),
    cmd("hello", -1, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Handshake with Redis", "6.0.0", "connection", "O(1)")
        .per_node(),
    cmd("hexists", 3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@hash", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Determine if a hash field exists", "2.0.0", "hash", "O(1)"),
    cmd("hget", 3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@hash", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the value of a hash field", "2.0.0", "hash", "O(1)"),
    cmd("hgetall", 2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@hash", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get all the fields and values in a hash", "2.0.0", "hash", "O(N) where N is the size of the hash."),
    cmd("hincrby", 4, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the integer value of a hash field by the given number", "2.0.0", "hash", "O(1)"),
    cmd("hincrbyfloat", 4, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the float value of a hash field by the given amount", "2.6.0", "hash", "O(1)"),
    cmd("hkeys", 2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@hash", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get all the fields in a hash", "2.0.0", "hash", "O(N) where N is the size of the hash."),
    cmd("hlen", 2, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@hash", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the number of fields in a hash", "2.0.0", "hash", "O(1)"),
    cmd("hmget", -3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@hash", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the values of all the given hash fields", "2.0.0", "hash", "O(N) where N is the number of fields being requested."),
    cmd("hmset", -4, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set multiple hash fields to multiple values", "2.0.0", "hash", "O(N) where N is the number of fields being set.")
        .deprecated("4.0.0", "`HSET` with multiple field-value pairs"),
    cmd("hscan", -3, H::Keys, &[Readonly], (1, 1, 1), &["@read", "@hash", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Incrementally iterate hash fields and associated values", "2.8.0", "hash", "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.."),
    cmd("hset", -4, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set the string value of a hash field", "2.0.0", "hash", "O(1) for each field/value pair added, so O(N) to add N field/value pairs when the command is called with multiple field/value pairs."),
    cmd("hsetnx", 4, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hash", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Set the value of a hash field, only if the field does not exist", "2.0.0", "hash", "O(1)"),
    cmd("hstrlen", 3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@hash", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the length of the value of a hash field", "3.2.0", "hash", "O(1)"),
    cmd("hvals", 2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@hash", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get all the values in a hash", "2.0.0", "hash", "O(N) where N is the size of the hash."),
    cmd("incr", 2, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the integer value of a key by one", "1.0.0", "string", "O(1)"),
    cmd("incrby", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the integer value of a key by the given amount", "1.0.0", "string", "O(1)"),
    cmd("incrbyfloat", 3, H::Keys, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the float value of a key by the given amount", "2.6.0", "string", "O(1)"),
    cmd("info", -1, H::Connection, &[Loading, Stale], (0, 0, 0), &["@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"])
        .docs("Get information and statistics about the server", "1.0.0", "server", "O(1)")
        .per_node(),
    cmd("keys", 2, H::Keys, &[Readonly], (0, 0, 0), &["@keyspace", "@read", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "nondeterministic_output_order"])
        .docs("Find all keys matching the given pattern", "1.0.0", "generic", "O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length."),
    cmd("lindex", 3, H::Lists, &[Readonly], (1, 1, 1), &["@read", "@list", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get an element from a list by its index", "1.0.0", "list", "O(N) where N is the number of elements to traverse to get to the element at index. This makes asking for the first or the last element of the list O(1)."),
    cmd("linsert", 5, H::Lists, &[Write, Denyoom], (1, 1, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Insert an element before or after another element in a list", "2.2.0", "list", "O(N) where N is the number of elements to traverse before seeing the value pivot. This means that inserting somewhere on the left end on the list (head) can be considered O(1) and inserting somewhere on the right end (tail) is O(N)."),
    cmd("llen", 2, H::Lists, &[Readonly, Fast], (1, 1, 1), &["@read", "@list", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the length of a list", "1.0.0", "list", "O(1)"),
    cmd("lpop", -2, H::Lists, &[Write, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and get the first elements in a list", "1.0.0", "list", "O(N) where N is the number of elements returned"),
    cmd("lpush", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Prepend one or multiple elements to a list", "1.0.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("lpushx", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Prepend an element to a list, only if the list exists", "2.2.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("lrange", 4, H::Lists, &[Readonly], (1, 1, 1), &["@read", "@list", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get a range of elements from a list", "1.0.0", "list", "O(S+N) where S is the distance of start offset from HEAD for small lists, from nearest end (HEAD or TAIL) for large lists; and N is the number of elements in the specified range."),
    cmd("lrem", 4, H::Lists, &[Write], (1, 1, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove elements from a list", "1.0.0", "list", "O(N+M) where N is the length of the list and M is the number of elements removed."),
    cmd("lset", 4, H::Lists, &[Write, Denyoom], (1, 1, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set the value of an element in a list by its index", "1.0.0", "list", "O(N) where N is the length of the list. Setting either the first or the last element of the list is O(1)."),
    cmd("ltrim", 4, H::Lists, &[Write], (1, 1, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Trim a list to the specified range", "1.0.0", "list", "O(N) where N is the number of elements to be removed by the operation."),
    cmd("mget", -2, H::Strings, &[Readonly, Fast], (1, -1, 1), &["@read", "@string", "@fast"])
        .tips(&["request_policy:multi_shard"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Get the values of all the given keys", "1.0.0", "string", "O(N) where N is the number of keys to retrieve."),
    cmd("mset", -3, H::Strings, &[Write, Denyoom], (1, -1, 2), &["@write", "@string", "@slow"])
        .tips(&["request_policy:multi_shard", "response_policy:all_succeeded"])
        .specs(&[spec(&["OW", "update"], 1, -1, 2, 0)])
        .docs("Set multiple keys to multiple values", "1.0.1", "string", "O(N) where N is the number of keys to set."),
    cmd("msetnx", -3, H::Strings, &[Write, Denyoom], (1, -1, 2), &["@write", "@string", "@slow"])
        .tips(&["request_policy:multi_shard", "response_policy:agg_min"])
        .specs(&[spec(&["OW", "insert"], 1, -1, 2, 0)])
        .docs("Set multiple keys to multiple values, only if none of the keys exist", "1.0.1", "string", "O(N) where N is the number of keys to set."),
    // Monotable's own: Redis knows nothing of them ("since" is Monotable's version).
    cmd("mt.agg", -2, H::Mt, &[Readonly], (0, 0, 0), &["@read", "@slow"])
        .docs("Reduce a range of a view's rows with its reducer (JSON reply)", "0.1.0", "module", "O(log(N)) with N the rows of the view, more when FRESH waits for the view")
        .per_node(),
    cmd("mt.scan", -2, H::Mt, &[Readonly], (0, 0, 0), &["@read", "@slow"])
        .docs("Return the records of a range between two keys (JSON reply)", "0.1.0", "module", "O(log(N)+M) with N the records of the range and M the records returned")
        .per_node(),
    cmd("mt.views", 1, H::Mt, &[Readonly], (0, 0, 0), &["@read", "@slow"])
        .docs("Return the status of every view (JSON reply)", "0.1.0", "module", "O(N) with N the number of views")
        .per_node(),
    cmd("multi", 1, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (0, 0, 0), &["@fast", "@transaction"])
        .docs("Mark the start of a transaction block", "1.2.0", "transactions", "O(1)"),
    cmd("persist", 2, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Remove the expiration from a key", "2.2.0", "generic", "O(1)"),
    cmd("pexpire", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set a key's time to live in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("pexpireat", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set the expiration for a key as a UNIX timestamp specified in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("ping", -1, H::Connection, &[Fast], (0, 0, 0), &["@fast", "@connection"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Ping the server", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("psetex", 4, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("Set the value and expiration in milliseconds of a key", "2.6.0", "string", "O(1)"),
    cmd("pttl", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the time to live for a key in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("quit", -1, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Close the connection", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("rename", 3, H::Keys, &[Write], (1, 2, 1), &["@keyspace", "@write", "@slow"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["OW", "update"], 2, 0, 1, 0)])
        .docs("Rename a key", "1.0.0", "generic", "O(1)"),
    cmd("renamenx", 3, H::Keys, &[Write, Fast], (1, 2, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["OW", "insert"], 2, 0, 1, 0)])
        .docs("Rename a key, only if the new key does not exist", "1.0.0", "generic", "O(1)"),
    cmd("reset", 1, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Reset the connection", "6.2.0", "connection", "O(1)")
        .per_node(),
    cmd("rpop", -2, H::Lists, &[Write, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and get the last elements in a list", "1.0.0", "list", "O(N) where N is the number of elements returned"),
    cmd("rpush", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append one or multiple elements to a list", "1.0.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("rpushx", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append an element to a list, only if the list exists", "2.2.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("sadd", -3, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@set", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Add one or more members to a set", "1.0.0", "set", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("scan", -2, H::Keys, &[Readonly], (0, 0, 0), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output", "request_policy:special"])
        .docs("Incrementally iterate the keys space", "2.8.0", "generic", "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection."),
    cmd("scard", 2, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the number of members in a set", "1.0.0", "set", "O(1)"),
    cmd("sdiff", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Subtract multiple sets", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("select", 2, H::Connection, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Change the selected database for the current connection", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("set", -3, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["RW", "access", "update", "variable_flags"], 1, 0, 1, 0).notes("RW and ACCESS due to the optional `GET` argument")])
        .docs("Set the string value of a key", "1.0.0", "string", "O(1)"),
    cmd("setex", 4, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("Set the value and expiration of a key", "2.0.0", "string", "O(1)"),
    cmd("setnx", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["OW", "insert"], 1, 0, 1, 0)])
        .docs("Set the value of a key, only if the key does not exist", "1.0.0", "string", "O(1)"),
    cmd("setrange", 4, H::Keys, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Overwrite part of a string at key starting at the specified offset", "2.2.0", "string", "O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument."),
    cmd("sinter", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Intersect multiple sets", "1.0.0", "set", "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets."),
    cmd("sismember", 3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Determine if a given value is a member of a set", "1.0.0", "set", "O(1)"),
    cmd("smembers", 2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get all the members in a set", "1.0.0", "set", "O(N) where N is the set cardinality."),
    cmd("smismember", -3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Returns the membership associated with the given elements for a set", "6.2.0", "set", "O(N) where N is the number of elements being checked for membership"),
    cmd("spop", -2, H::Collections, &[Write, Fast], (1, 1, 1), &["@write", "@set", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and return one or multiple random members from a set", "1.0.0", "set", "Without the count argument O(1), otherwise O(N) where N is the value of the passed count."),
    cmd("srandmember", -2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get one or multiple random members from a set", "1.0.0", "set", "Without the count argument O(1), otherwise O(N) where N is the absolute value of the passed count."),
    cmd("srem", -3, H::Collections, &[Write, Fast], (1, 1, 1), &["@write", "@set", "@fast"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove one or more members from a set", "1.0.0", "set", "O(N) where N is the number of members to be removed."),
    cmd("sscan", -3, H::Keys, &[Readonly], (1, 1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Incrementally iterate Set elements", "2.8.0", "set", "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.."),
    cmd("strlen", 2, H::Strings, &[Readonly, Fast], (1, 1, 1), &["@read", "@string", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the length of the value stored in a key", "2.2.0", "string", "O(1)"),
    cmd("sunion", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Add multiple sets", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("time", 1, H::Keys, &[Loading, Stale, Fast], (0, 0, 0), &["@fast"])
        .tips(&["nondeterministic_output"])
        .docs("Return the current server time", "2.6.0", "server", "O(1)")
        .per_node(),
    cmd("ttl", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the time to live for a key in seconds", "1.0.0", "generic", "O(1)"),
    cmd("type", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Determine the type stored at key", "1.0.0", "generic", "O(1)"),
    cmd("unlink", -2, H::Keys, &[Write, Fast], (1, -1, 1), &["@keyspace", "@write", "@fast"])
        .tips(&["request_policy:multi_shard", "response_policy:agg_sum"])
        .specs(&[spec(&["RM", "delete"], 1, -1, 1, 0)])
        .docs("Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.", "4.0.0", "generic", "O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of."),
    cmd("unwatch", 1, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (0, 0, 0), &["@fast", "@transaction"])
        .docs("Forget about all watched keys", "2.2.0", "transactions", "O(1)"),
    cmd("watch", -2, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (1, -1, 1), &["@fast", "@transaction"])
        .specs(&[spec(&["RO"], 1, -1, 1, 0)])
        .docs("Watch the given keys to determine execution of the MULTI/EXEC block", "2.2.0", "transactions", "O(1) for every key."),
    cmd("zadd", -4, H::Zsets, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Add one or more members to a sorted set, or update its score if it already exists", "1.2.0", "sorted-set", "O(log(N)) for each item added, where N is the number of elements in the sorted set."),
    cmd("zcard", 2, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the number of members in a sorted set", "1.2.0", "sorted-set", "O(1)"),
    cmd("zcount", 4, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Count the members in a sorted set with scores within the given values", "2.0.0", "sorted-set", "O(log(N)) with N being the number of elements in the sorted set."),
    cmd("zincrby", 4, H::Zsets, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the score of a member in a sorted set", "1.2.0", "sorted-set", "O(log(N)) where N is the number of elements in the sorted set."),
    cmd("zmscore", -3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the score associated with the given members in a sorted set", "6.2.0", "sorted-set", "O(N) where N is the number of members being requested."),
    cmd("zrange", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set", "1.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned."),
    cmd("zrangebyscore", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by score", "1.0.5", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).")
        .deprecated("6.2.0", "`ZRANGE` with the `BYSCORE` argument"),
    cmd("zrank", 3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Determine the index of a member in a sorted set", "2.0.0", "sorted-set", "O(log(N))"),
    cmd("zrem", -3, H::Zsets, &[Write, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove one or more members from a sorted set", "1.2.0", "sorted-set", "O(M*log(N)) with N being the number of elements in the sorted set and M the number of elements to be removed."),
    cmd("zremrangebyrank", 4, H::Zsets, &[Write], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove all members in a sorted set within the given indexes", "2.0.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation."),
    cmd("zremrangebyscore", 4, H::Zsets, &[Write], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove all members in a sorted set within the given scores", "1.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation."),
    cmd("zrevrange", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by index, with scores ordered from high to low", "1.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned.")
        .deprecated("6.2.0", "`ZRANGE` with the `REV` argument"),
    cmd("zrevrangebyscore", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by score, with scores ordered from high to low", "2.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).")
        .deprecated("6.2.0", "`ZRANGE` with the `REV` and `BYSCORE` arguments"),
    cmd("zrevrank", 3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Determine the index of a member in a sorted set, with scores ordered from high to low", "2.0.0", "sorted-set", "O(log(N))"),
    cmd("zscan", -3, H::Keys, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Incrementally iterate sorted sets elements and associated scores", "2.8.0", "sorted-set", "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.."),
    cmd("zscore", 3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the score associated with the given member in a sorted set", "1.2.0", "sorted-set", "O(1)"),
];

#[rustfmt::skip]
static CLIENT_SUBCOMMANDS: &[Command] = &[
    cmd("client|getname", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Get the current connection name", "2.6.9", "connection", "O(1)"),
    cmd("client|id", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Returns the client ID for the current connection", "5.0.0", "connection", "O(1)"),
    cmd("client|setname", 3, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Set the current connection name", "2.6.9", "connection", "O(1)"),
];

#[rustfmt::skip]
static COMMAND_SUBCOMMANDS: &[Command] = &[
    cmd("command|count", 2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Get total number of Redis commands", "2.8.13", "server", "O(1)"),
    cmd("command|docs", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs("Get array of specific Redis command documentation", "7.0.0", "server", "O(N) where N is the number of commands to look up"),
    cmd("command|getkeys", -4, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Extract keys given a full Redis command", "2.8.13", "server", "O(N) where N is the number of arguments to the command"),
    cmd("command|getkeysandflags", -4, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Extract keys and access flags given a full Redis command", "7.0.0", "server", "O(N) where N is the number of arguments to the command"),
    cmd("command|help", 2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "server", "O(1)"),
    cmd("command|info", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs("Get array of specific Redis command details, or all when no argument is given.", "2.8.13", "server", "O(N) where N is the number of commands to look up"),
    cmd("command|list", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs("Get an array of Redis command names", "7.0.0", "server", "O(N) where N is the total number of Redis commands"),
];

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
        assert!(subcommand(lookup("client").expect("client"), "kill").is_none());
    }

    #[test]
    fn per_node_commands_are_not_forwarded() {
        let per_node: Vec<&str> = COMMANDS.iter().filter(|c| c.per_node).map(|c| c.name).collect();
        assert_eq!(
            per_node,
            [
                "auth", "client", "command", "echo", "flushall", "hello", "info", "mt.agg",
                "mt.scan", "mt.views", "ping", "quit", "reset", "select", "time"
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
        // Where every key spec is an index and a range, COMMAND's legacy
        // (first, last, step) spans them (Redis derives it so).
        for c in COMMANDS.iter().filter(|c| !c.key_specs.is_empty()) {
            let first = c.key_specs.iter().filter_map(|k| match k.begin {
                BeginSearch::Index(i) => Some(i),
                BeginSearch::Keyword { .. } => None,
            });
            assert_eq!(first.min(), Some(c.first_key), "{}", c.name);
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
