//! The rows of [`super::COMMANDS`]: Redis's own taken from
//! `redis-server` 7.0.15's `COMMAND INFO` and `COMMAND DOCS` (checked
//! against a running one by `tests/tests/resp_command.rs`), and
//! Monotable's `mt.*`. Kept sorted by name (a unit test checks): the
//! subcommand lists too, as COMMAND LIST names them in this order.

use super::Flag::*;
use super::Handler as H;
use super::{cmd, spec, BeginSearch, Command, FindKeys, KeySpec};

#[rustfmt::skip]
pub static COMMANDS: &[Command] = &[
    cmd("acl", -2, H::Acl, &[], (0, 0, 0), &["@slow"])
        .subcommands(ACL_SUBCOMMANDS)
        .docs("A container for Access List Control commands ", "6.0.0", "server", "Depends on subcommand.")
        .per_node(),
    cmd("append", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append a value to a key", "2.0.0", "string", "O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation."),
    cmd("asking", 1, H::Cluster, &[Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Sent by cluster clients after an -ASK redirect", "3.0.0", "cluster", "O(1)")
        .per_node(),
    cmd("auth", -2, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Authenticate to the server", "1.0.0", "connection", "O(N) where N is the number of passwords defined for the user")
        .per_node(),
    cmd("bgsave", -1, H::Persistence, &[Admin, Noscript, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Asynchronously save the dataset to disk", "1.0.0", "server", "O(1)")
        .per_node(),
    cmd("bitcount", -2, H::Bits, &[Readonly], (1, 1, 1), &["@read", "@bitmap", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Count set bits in a string", "2.6.0", "bitmap", "O(N)"),
    cmd("bitfield", -2, H::Bits, &[Write, Denyoom], (1, 1, 1), &["@write", "@bitmap", "@slow"])
        .specs(&[KeySpec { flags: &["RW", "access", "update", "variable_flags"], notes: Some("This command allows both access and modification of the key"), begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Perform arbitrary bitfield integer operations on strings", "3.2.0", "bitmap", "O(1) for each subcommand specified"),
    cmd("bitfield_ro", -2, H::Bits, &[Readonly, Fast], (1, 1, 1), &["@read", "@bitmap", "@fast"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Perform arbitrary bitfield integer operations on strings. Read-only variant of BITFIELD", "6.0.0", "bitmap", "O(1) for each subcommand specified"),
    cmd("bitop", -4, H::Bits, &[Write, Denyoom], (2, -1, 1), &["@write", "@bitmap", "@slow"])
        .specs(&[spec(&["OW", "update"], 2, 0, 1, 0), spec(&["RO", "access"], 3, -1, 1, 0)])
        .docs("Perform bitwise operations between strings", "2.6.0", "bitmap", "O(N)"),
    cmd("bitpos", -3, H::Bits, &[Readonly], (1, 1, 1), &["@read", "@bitmap", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Find first bit set or clear in a string", "2.8.7", "bitmap", "O(N)"),
    cmd("blmove", 6, H::Blocking, &[Write, Denyoom, Noscript, Blocking], (1, 2, 1), &["@write", "@list", "@slow", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Pop an element from a list, push it to another list and return it; or block until one is available", "6.2.0", "list", "O(1)"),
    cmd("blmpop", -5, H::Blocking, &[Write, Blocking, MovableKeys], (0, 0, 0), &["@write", "@list", "@slow", "@blocking"])
        .specs(&[KeySpec { flags: &["RW", "access", "delete"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Pop elements from a list, or block until one is available", "7.0.0", "list", "O(N+M) where N is the number of provided keys and M is the number of elements returned."),
    cmd("blpop", -3, H::Blocking, &[Write, Noscript, Blocking], (1, -2, 1), &["@write", "@list", "@slow", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, -2, 1, 0)])
        .docs("Remove and get the first element in a list, or block until one is available", "2.0.0", "list", "O(N) where N is the number of provided keys."),
    cmd("brpop", -3, H::Blocking, &[Write, Noscript, Blocking], (1, -2, 1), &["@write", "@list", "@slow", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, -2, 1, 0)])
        .docs("Remove and get the last element in a list, or block until one is available", "2.0.0", "list", "O(N) where N is the number of provided keys."),
    cmd("brpoplpush", 4, H::Blocking, &[Write, Denyoom, Noscript, Blocking], (1, 2, 1), &["@write", "@list", "@slow", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Pop an element from a list, push it to another list and return it; or block until one is available", "2.2.0", "list", "O(1)")
        .deprecated("6.2.0", "`BLMOVE` with the `RIGHT` and `LEFT` arguments"),
    cmd("bzmpop", -5, H::Blocking, &[Write, Blocking, MovableKeys], (0, 0, 0), &["@write", "@sortedset", "@slow", "@blocking"])
        .specs(&[KeySpec { flags: &["RW", "access", "delete"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Remove and return members with scores in a sorted set or block until one is available", "7.0.0", "sorted-set", "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped."),
    cmd("bzpopmax", -3, H::Blocking, &[Write, Noscript, Blocking, Fast], (1, -2, 1), &["@write", "@sortedset", "@fast", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, -2, 1, 0)])
        .docs("Remove and return the member with the highest score from one or more sorted sets, or block until one is available", "5.0.0", "sorted-set", "O(log(N)) with N being the number of elements in the sorted set."),
    cmd("bzpopmin", -3, H::Blocking, &[Write, Noscript, Blocking, Fast], (1, -2, 1), &["@write", "@sortedset", "@fast", "@blocking"])
        .specs(&[spec(&["RW", "access", "delete"], 1, -2, 1, 0)])
        .docs("Remove and return the member with the lowest score from one or more sorted sets, or block until one is available", "5.0.0", "sorted-set", "O(log(N)) with N being the number of elements in the sorted set."),
    cmd("client", -2, H::Connection, &[], (0, 0, 0), &["@slow"])
        .subcommands(CLIENT_SUBCOMMANDS)
        .docs("A container for client connection commands", "2.4.0", "connection", "Depends on subcommand.")
        .per_node(),
    cmd("cluster", -2, H::Cluster, &[], (0, 0, 0), &["@slow"])
        .docs("A container for cluster commands", "3.0.0", "cluster", "Depends on subcommand.")
        .subcommands(CLUSTER_SUBCOMMANDS)
        .per_node(),
    cmd("command", -1, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .subcommands(COMMAND_SUBCOMMANDS)
        .docs("Get array of Redis command details", "2.8.13", "server", "O(N) where N is the total number of Redis commands")
        .per_node(),
    cmd("config", -2, H::Server, &[], (0, 0, 0), &["@slow"])
        .subcommands(CONFIG_SUBCOMMANDS)
        .docs("A container for server configuration commands", "2.0.0", "server", "Depends on subcommand.")
        .per_node(),
    cmd("copy", -3, H::Keys, &[Write, Denyoom], (1, 2, 1), &["@keyspace", "@write", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0), spec(&["OW", "update"], 2, 0, 1, 0)])
        .docs("Copy a key", "6.2.0", "generic", "O(N) worst case for collections, where N is the number of nested items. O(1) for string values."),
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
    cmd("dump", 2, H::Keys, &[Readonly], (1, 1, 1), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a serialized version of the value stored at the specified key.", "2.6.0", "generic", "O(1) to access the key and additional O(N*M) to serialize it, where N is the number of Redis objects composing the value and M their average size. For small string values the time complexity is thus O(1)+O(1*M) where M is small, so simply O(1)."),
    cmd("echo", 2, H::Connection, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Echo the given string", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("eval", -3, H::Scripting, &[Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RW", "access", "update"], notes: Some("We cannot tell how the keys will be used so we assume the worst, RW and UPDATE"), begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Execute a Lua script server side", "2.6.0", "scripting", "Depends on the script that is executed."),
    cmd("eval_ro", -3, H::Scripting, &[Readonly, Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: Some("We cannot tell how the keys will be used so we assume the worst, RO and ACCESS"), begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Execute a read-only Lua script server side", "7.0.0", "scripting", "Depends on the script that is executed."),
    cmd("evalsha", -3, H::Scripting, &[Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RW", "access", "update"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Execute a Lua script server side", "2.6.0", "scripting", "Depends on the script that is executed."),
    cmd("evalsha_ro", -3, H::Scripting, &[Readonly, Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Execute a read-only Lua script server side", "7.0.0", "scripting", "Depends on the script that is executed."),
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
    cmd("expiretime", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the expiration Unix timestamp for a key", "7.0.0", "generic", "O(1)"),
    cmd("fcall", -3, H::Scripting, &[Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RW", "access", "update"], notes: Some("We cannot tell how the keys will be used so we assume the worst, RW and UPDATE"), begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Invoke a function", "7.0.0", "scripting", "Depends on the function that is executed."),
    cmd("fcall_ro", -3, H::Scripting, &[Readonly, Noscript, Stale, SkipMonitor, NoMandatoryKeys, MovableKeys], (0, 0, 0), &["@slow", "@scripting"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: Some("We cannot tell how the keys will be used so we assume the worst, RO and ACCESS"), begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Invoke a read-only function", "7.0.0", "scripting", "Depends on the function that is executed."),
    cmd("flushall", -1, H::Keys, &[Write], (0, 0, 0), &["@keyspace", "@write", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Remove all keys from all databases", "1.0.0", "server", "O(N) where N is the total number of keys in all databases")
        .per_node(),
    cmd("flushdb", -1, H::Keys, &[Write], (0, 0, 0), &["@keyspace", "@write", "@slow", "@dangerous"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Remove all keys from the current database", "1.0.0", "server", "O(N) where N is the number of keys in the selected database"),
    cmd("function", -2, H::Scripting, &[], (0, 0, 0), &["@slow"])
        .subcommands(FUNCTION_SUBCOMMANDS)
        .docs("A container for function commands", "7.0.0", "scripting", "Depends on subcommand.")
        .per_node(),
    cmd("geoadd", -5, H::Geo, &[Write, Denyoom], (1, 1, 1), &["@write", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RW", "update"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Add one or more geospatial items in the geospatial index represented using a sorted set", "3.2.0", "geo", "O(log(N)) for each item added, where N is the number of elements in the sorted set."),
    cmd("geodist", -4, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Returns the distance between two members of a geospatial index", "3.2.0", "geo", "O(log(N))"),
    cmd("geohash", -2, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Returns members of a geospatial index as standard geohash strings", "3.2.0", "geo", "O(log(N)) for each member requested, where N is the number of elements in the sorted set."),
    cmd("geopos", -2, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Returns longitude and latitude of members of a geospatial index", "3.2.0", "geo", "O(N) where N is the number of members requested."),
    cmd("georadius", -6, H::Geo, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["OW", "update"], notes: None, begin: BeginSearch::Keyword { keyword: "STORE", start_from: 6 }, find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["OW", "update"], notes: None, begin: BeginSearch::Keyword { keyword: "STOREDIST", start_from: 6 }, find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a point", "3.2.0", "geo", "O(N+log(M)) where N is the number of elements inside the bounding box of the circular area delimited by center and radius and M is the number of items inside the index.")
        .deprecated("6.2.0", "`GEOSEARCH` and `GEOSEARCHSTORE` with the `BYRADIUS` argument"),
    cmd("georadius_ro", -6, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("A read-only variant for GEORADIUS", "3.2.10", "geo", "O(N+log(M)) where N is the number of elements inside the bounding box of the circular area delimited by center and radius and M is the number of items inside the index.")
        .deprecated("6.2.0", "`GEOSEARCH` with the `BYRADIUS` argument"),
    cmd("georadiusbymember", -5, H::Geo, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["OW", "update"], notes: None, begin: BeginSearch::Keyword { keyword: "STORE", start_from: 5 }, find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["OW", "update"], notes: None, begin: BeginSearch::Keyword { keyword: "STOREDIST", start_from: 5 }, find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Query a sorted set representing a geospatial index to fetch members matching a given maximum distance from a member", "3.2.0", "geo", "O(N+log(M)) where N is the number of elements inside the bounding box of the circular area delimited by center and radius and M is the number of items inside the index.")
        .deprecated("6.2.0", "`GEOSEARCH` and `GEOSEARCHSTORE` with the `BYRADIUS` and `FROMMEMBER` arguments"),
    cmd("georadiusbymember_ro", -5, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("A read-only variant for GEORADIUSBYMEMBER", "3.2.10", "geo", "O(N+log(M)) where N is the number of elements inside the bounding box of the circular area delimited by center and radius and M is the number of items inside the index.")
        .deprecated("6.2.0", "`GEOSEARCH` with the `BYRADIUS` and `FROMMEMBER` arguments"),
    cmd("geosearch", -7, H::Geo, &[Readonly], (1, 1, 1), &["@read", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle.", "6.2.0", "geo", "O(N+log(M)) where N is the number of elements in the grid-aligned bounding box area around the shape provided as the filter and M is the number of items inside the shape"),
    cmd("geosearchstore", -8, H::Geo, &[Write, Denyoom], (1, 2, 1), &["@write", "@geo", "@slow"])
        .specs(&[KeySpec { flags: &["OW", "update"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }])
        .docs("Query a sorted set representing a geospatial index to fetch members inside an area of a box or a circle, and store the result in another key.", "6.2.0", "geo", "O(N+log(M)) where N is the number of elements in the grid-aligned bounding box area around the shape provided as the filter and M is the number of items inside the shape"),
    cmd("get", 2, H::Strings, &[Readonly, Fast], (1, 1, 1), &["@read", "@string", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the value of a key", "1.0.0", "string", "O(1)"),
    cmd("getbit", 3, H::Bits, &[Readonly, Fast], (1, 1, 1), &["@read", "@bitmap", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Returns the bit value at offset in the string value stored at key", "2.2.0", "bitmap", "O(1)"),
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
    cmd("hrandfield", -2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@hash", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get one or multiple random fields from a hash", "6.2.0", "hash", "O(N) where N is the number of fields returned"),
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
    cmd("lastsave", 1, H::Persistence, &[Loading, Stale, Fast], (0, 0, 0), &["@admin", "@fast", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .docs("Get the UNIX time stamp of the last successful save to disk", "1.0.0", "server", "O(1)")
        .per_node(),
    cmd("latency", -2, H::Server, &[], (0, 0, 0), &["@slow"])
        .subcommands(LATENCY_SUBCOMMANDS)
        .docs("A container for latency diagnostics commands", "2.8.13", "server", "Depends on subcommand."),
    cmd("lcs", -3, H::Strings, &[Readonly], (1, 2, 1), &["@read", "@string", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 1, 1, 0)])
        .docs("Find longest common substring", "7.0.0", "string", "O(N*M) where N and M are the lengths of s1 and s2, respectively"),
    cmd("lindex", 3, H::Lists, &[Readonly], (1, 1, 1), &["@read", "@list", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get an element from a list by its index", "1.0.0", "list", "O(N) where N is the number of elements to traverse to get to the element at index. This makes asking for the first or the last element of the list O(1)."),
    cmd("linsert", 5, H::Lists, &[Write, Denyoom], (1, 1, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Insert an element before or after another element in a list", "2.2.0", "list", "O(N) where N is the number of elements to traverse before seeing the value pivot. This means that inserting somewhere on the left end on the list (head) can be considered O(1) and inserting somewhere on the right end (tail) is O(N)."),
    cmd("llen", 2, H::Lists, &[Readonly, Fast], (1, 1, 1), &["@read", "@list", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the length of a list", "1.0.0", "list", "O(1)"),
    cmd("lmove", 5, H::Lists, &[Write, Denyoom], (1, 2, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Pop an element from a list, push it to another list and return it", "6.2.0", "list", "O(1)"),
    cmd("lmpop", -4, H::Lists, &[Write, MovableKeys], (0, 0, 0), &["@write", "@list", "@slow"])
        .specs(&[KeySpec { flags: &["RW", "access", "delete"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Pop elements from a list", "7.0.0", "list", "O(N+M) where N is the number of provided keys and M is the number of elements returned."),
    cmd("lpop", -2, H::Lists, &[Write, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and get the first elements in a list", "1.0.0", "list", "O(N) where N is the number of elements returned"),
    cmd("lpos", -3, H::Lists, &[Readonly], (1, 1, 1), &["@read", "@list", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return the index of matching elements on a list", "6.0.6", "list", "O(N) where N is the number of elements in the list, for the average case. When searching for elements near the head or the tail of the list, or when the MAXLEN option is provided, the command may run in constant time."),
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
    cmd("memory", -2, H::Server, &[], (0, 0, 0), &["@slow"])
        .subcommands(MEMORY_SUBCOMMANDS)
        .docs("A container for memory diagnostics commands", "4.0.0", "server", "Depends on subcommand."),
    cmd("mget", -2, H::Strings, &[Readonly, Fast], (1, -1, 1), &["@read", "@string", "@fast"])
        .tips(&["request_policy:multi_shard"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Get the values of all the given keys", "1.0.0", "string", "O(N) where N is the number of keys to retrieve."),
    cmd("migrate", -6, H::Keys, &[Write, MovableKeys], (3, 3, 1), &["@keyspace", "@write", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .specs(&[KeySpec { flags: &["RW", "access", "delete"], notes: None, begin: BeginSearch::Index(3), find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 } }, KeySpec { flags: &["RW", "access", "delete", "incomplete"], notes: None, begin: BeginSearch::Keyword { keyword: "KEYS", start_from: -2 }, find: FindKeys::Range { last_key: -1, key_step: 1, limit: 0 } }])
        .docs("Atomically transfer a key from a Redis instance to another one.", "2.6.0", "generic", "This command actually executes a DUMP+DEL in the source instance, and a RESTORE in the target instance. See the pages of these commands for time complexity. Also an O(N) data transfer between the two instances is performed."),
    cmd("monitor", 1, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Listen for all requests received by the server in real time", "1.0.0", "server", "")
        .per_node(),
    cmd("move", 3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Move a key to another database", "1.0.0", "generic", "O(1)"),
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
    cmd("object", -2, H::Server, &[], (0, 0, 0), &["@slow"])
        .subcommands(OBJECT_SUBCOMMANDS)
        .docs("A container for object introspection commands", "2.2.3", "generic", "Depends on subcommand."),
    cmd("persist", 2, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Remove the expiration from a key", "2.2.0", "generic", "O(1)"),
    cmd("pexpire", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set a key's time to live in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("pexpireat", -3, H::Keys, &[Write, Fast], (1, 1, 1), &["@keyspace", "@write", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Set the expiration for a key as a UNIX timestamp specified in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("pexpiretime", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the expiration Unix timestamp for a key in milliseconds", "7.0.0", "generic", "O(1)"),
    cmd("pfadd", -2, H::HyperLogLog, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@hyperloglog", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Adds the specified elements to the specified HyperLogLog.", "2.8.9", "hyperloglog", "O(1) to add every element."),
    cmd("pfcount", -2, H::HyperLogLog, &[Readonly], (1, -1, 1), &["@read", "@hyperloglog", "@slow"])
        .specs(&[spec(&["RW", "access"], 1, -1, 1, 0).notes("RW because it may change the internal representation of the key, and propagate to replicas")])
        .docs("Return the approximated cardinality of the set(s) observed by the HyperLogLog at key(s).", "2.8.9", "hyperloglog", "O(1) with a very small average constant time when called with a single key. O(N) with N being the number of keys, and much bigger constant times, when called with multiple keys."),
    cmd("pfdebug", 3, H::HyperLogLog, &[Write, Denyoom, Admin], (2, 2, 1), &["@write", "@hyperloglog", "@admin", "@slow", "@dangerous"])
        .specs(&[spec(&["RW", "access"], 2, 0, 1, 0)])
        .docs("Internal commands for debugging HyperLogLog values", "2.8.9", "hyperloglog", "N/A")
        .syscmd(),
    cmd("pfmerge", -2, H::HyperLogLog, &[Write, Denyoom], (1, -1, 1), &["@write", "@hyperloglog", "@slow"])
        .specs(&[spec(&["RW", "access", "insert"], 1, 0, 1, 0), spec(&["RO", "access"], 2, -1, 1, 0)])
        .docs("Merge N different HyperLogLogs into a single one.", "2.8.9", "hyperloglog", "O(N) to merge N HyperLogLogs, but with high constant times."),
    cmd("ping", -1, H::Connection, &[Fast], (0, 0, 0), &["@fast", "@connection"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Ping the server", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("psetex", 4, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("Set the value and expiration in milliseconds of a key", "2.6.0", "string", "O(1)"),
    cmd("psubscribe", -2, H::PubSub, &[Pubsub, Noscript, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Listen for messages published to channels matching the given patterns", "2.0.0", "pubsub", "O(N) where N is the number of patterns the client is already subscribed to.")
        .per_node(),
    cmd("pttl", 2, H::Keys, &[Readonly, Fast], (1, 1, 1), &["@keyspace", "@read", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the time to live for a key in milliseconds", "2.6.0", "generic", "O(1)"),
    cmd("publish", 3, H::PubSub, &[Pubsub, Loading, Stale, Fast], (0, 0, 0), &["@pubsub", "@fast"])
        .docs("Post a message to a channel", "2.0.0", "pubsub", "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).")
        .per_node(),
    cmd("pubsub", -2, H::PubSub, &[], (0, 0, 0), &["@slow"])
        .subcommands(PUBSUB_SUBCOMMANDS)
        .docs("A container for Pub/Sub commands", "2.8.0", "pubsub", "Depends on subcommand.")
        .per_node(),
    cmd("punsubscribe", -1, H::PubSub, &[Pubsub, Noscript, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Stop listening for messages posted to channels matching the given patterns", "2.0.0", "pubsub", "O(N+M) where N is the number of patterns the client is already subscribed and M is the number of total patterns subscribed in the system (by any client).")
        .per_node(),
    cmd("quit", -1, H::Connection, &[Noscript, Loading, Stale, Fast, NoAuth, AllowBusy], (0, 0, 0), &["@fast", "@connection"])
        .docs("Close the connection", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("randomkey", 1, H::Keys, &[Readonly], (0, 0, 0), &["@keyspace", "@read", "@slow"])
        .tips(&["request_policy:all_shards", "nondeterministic_output"])
        .docs("Return a random key from the keyspace", "1.0.0", "generic", "O(1)"),
    cmd("readonly", 1, H::Cluster, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Enables read queries for a connection to a cluster replica node", "3.0.0", "cluster", "O(1)")
        .per_node(),
    cmd("readwrite", 1, H::Cluster, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Disables read queries for a connection to a cluster replica node", "3.0.0", "cluster", "O(1)")
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
    cmd("restore", -4, H::Keys, &[Write, Denyoom], (1, 1, 1), &["@keyspace", "@write", "@slow", "@dangerous"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("Create a key using the provided serialized value, previously obtained using DUMP.", "2.6.0", "generic", "O(1) to create the new key and additional O(N*M) to reconstruct the serialized value, where N is the number of Redis objects composing the value and M their average size. For small string values the time complexity is thus O(1)+O(1*M) where M is small, so simply O(1). However for sorted set values the complexity is O(N*M*log(N)) because inserting values into sorted sets is O(log(N))."),
    cmd("restore-asking", -4, H::Keys, &[Write, Denyoom, Asking], (1, 1, 1), &["@keyspace", "@write", "@slow", "@dangerous"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("An internal command for migrating keys in a cluster", "3.0.0", "server", "O(1) to create the new key and additional O(N*M) to reconstruct the serialized value, where N is the number of Redis objects composing the value and M their average size. For small string values the time complexity is thus O(1)+O(1*M) where M is small, so simply O(1). However for sorted set values the complexity is O(N*M*log(N)) because inserting values into sorted sets is O(log(N)).")
        .syscmd(),
    cmd("rpop", -2, H::Lists, &[Write, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and get the last elements in a list", "1.0.0", "list", "O(N) where N is the number of elements returned"),
    cmd("rpoplpush", 3, H::Lists, &[Write, Denyoom], (1, 2, 1), &["@write", "@list", "@slow"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Remove the last element in a list, prepend it to another list and return it", "1.2.0", "list", "O(1)")
        .deprecated("6.2.0", "`LMOVE` with the `RIGHT` and `LEFT` arguments"),
    cmd("rpush", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append one or multiple elements to a list", "1.0.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("rpushx", -3, H::Lists, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@list", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Append an element to a list, only if the list exists", "2.2.0", "list", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("sadd", -3, H::Collections, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@set", "@fast"])
        .specs(&[spec(&["RW", "insert"], 1, 0, 1, 0)])
        .docs("Add one or more members to a set", "1.0.0", "set", "O(1) for each element added, so O(N) to add N elements when the command is called with multiple arguments."),
    cmd("save", 1, H::Persistence, &[Admin, Noscript, NoAsyncLoading, NoMulti], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Synchronously save the dataset to disk", "1.0.0", "server", "O(N) where N is the total number of keys in all databases")
        .per_node(),
    cmd("scan", -2, H::Keys, &[Readonly], (0, 0, 0), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output", "request_policy:special"])
        .docs("Incrementally iterate the keys space", "2.8.0", "generic", "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection."),
    cmd("scard", 2, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the number of members in a set", "1.0.0", "set", "O(1)"),
    cmd("script", -2, H::Scripting, &[], (0, 0, 0), &["@slow"])
        .subcommands(SCRIPT_SUBCOMMANDS)
        .docs("A container for Lua scripts management commands", "2.6.0", "scripting", "Depends on subcommand.")
        .per_node(),
    cmd("sdiff", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Subtract multiple sets", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("sdiffstore", -3, H::Collections, &[Write, Denyoom], (1, -1, 1), &["@write", "@set", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), spec(&["RO", "access"], 2, -1, 1, 0)])
        .docs("Subtract multiple sets and store the resulting set in a key", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("select", 2, H::Connection, &[Loading, Stale, Fast], (0, 0, 0), &["@fast", "@connection"])
        .docs("Change the selected database for the current connection", "1.0.0", "connection", "O(1)")
        .per_node(),
    cmd("set", -3, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["RW", "access", "update", "variable_flags"], 1, 0, 1, 0).notes("RW and ACCESS due to the optional `GET` argument")])
        .docs("Set the string value of a key", "1.0.0", "string", "O(1)"),
    cmd("setbit", 4, H::Bits, &[Write, Denyoom], (1, 1, 1), &["@write", "@bitmap", "@slow"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Sets or clears the bit at offset in the string value stored at key", "2.2.0", "bitmap", "O(1)"),
    cmd("setex", 4, H::Strings, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0)])
        .docs("Set the value and expiration of a key", "2.0.0", "string", "O(1)"),
    cmd("setnx", 3, H::Strings, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@string", "@fast"])
        .specs(&[spec(&["OW", "insert"], 1, 0, 1, 0)])
        .docs("Set the value of a key, only if the key does not exist", "1.0.0", "string", "O(1)"),
    cmd("setrange", 4, H::Keys, &[Write, Denyoom], (1, 1, 1), &["@write", "@string", "@slow"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Overwrite part of a string at key starting at the specified offset", "2.2.0", "string", "O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument."),
    cmd("shutdown", -1, H::Persistence, &[Admin, Noscript, Loading, Stale, NoMulti, AllowBusy], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Synchronously save the dataset to disk and then shut down the server", "1.0.0", "server", "O(N) when saving, where N is the total number of keys in all databases when saving data, otherwise O(1)")
        .per_node(),
    cmd("sinter", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Intersect multiple sets", "1.0.0", "set", "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets."),
    cmd("sintercard", -3, H::Collections, &[Readonly, MovableKeys], (0, 0, 0), &["@read", "@set", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Intersect multiple sets and return the cardinality of the result", "7.0.0", "set", "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets."),
    cmd("sinterstore", -3, H::Collections, &[Write, Denyoom], (1, -1, 1), &["@write", "@set", "@slow"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0), spec(&["RO", "access"], 2, -1, 1, 0)])
        .docs("Intersect multiple sets and store the resulting set in a key", "1.0.0", "set", "O(N*M) worst case where N is the cardinality of the smallest set and M is the number of sets."),
    cmd("sismember", 3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Determine if a given value is a member of a set", "1.0.0", "set", "O(1)"),
    cmd("slowlog", -2, H::Server, &[], (0, 0, 0), &["@slow"])
        .subcommands(SLOWLOG_SUBCOMMANDS)
        .docs("A container for slow log commands", "2.2.12", "server", "Depends on subcommand.")
        .per_node(),
    cmd("smembers", 2, H::Collections, &[Readonly], (1, 1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get all the members in a set", "1.0.0", "set", "O(N) where N is the set cardinality."),
    cmd("smismember", -3, H::Collections, &[Readonly, Fast], (1, 1, 1), &["@read", "@set", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Returns the membership associated with the given elements for a set", "6.2.0", "set", "O(N) where N is the number of elements being checked for membership"),
    cmd("smove", 4, H::Collections, &[Write, Fast], (1, 2, 1), &["@write", "@set", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0), spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Move a member from one set to another", "1.0.0", "set", "O(1)"),
    cmd("sort", -2, H::Sort, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@set", "@sortedset", "@list", "@slow", "@dangerous"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0), KeySpec { flags: &["RO", "access"], notes: Some("For the optional BY/GET keyword. It is marked 'unknown' because the key names derive from the content of the key we sort"), begin: BeginSearch::Unknown, find: FindKeys::Unknown }, KeySpec { flags: &["OW", "update"], notes: Some("For the optional STORE keyword. It is marked 'unknown' because the keyword can appear anywhere in the argument array"), begin: BeginSearch::Unknown, find: FindKeys::Unknown }])
        .docs("Sort the elements in a list, set or sorted set", "1.0.0", "generic", "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N)."),
    cmd("sort_ro", -2, H::Sort, &[Readonly, MovableKeys], (1, 1, 1), &["@read", "@set", "@sortedset", "@list", "@slow", "@dangerous"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0), KeySpec { flags: &["RO", "access"], notes: Some("For the optional BY/GET keyword. It is marked 'unknown' because the key names derive from the content of the key we sort"), begin: BeginSearch::Unknown, find: FindKeys::Unknown }])
        .docs("Sort the elements in a list, set or sorted set. Read-only variant of SORT.", "7.0.0", "generic", "O(N+M*log(M)) where N is the number of elements in the list or set to sort, and M the number of returned elements. When the elements are not sorted, complexity is O(N)."),
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
    cmd("subscribe", -2, H::PubSub, &[Pubsub, Noscript, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Listen for messages published to the given channels", "2.0.0", "pubsub", "O(N) where N is the number of channels to subscribe to.")
        .per_node(),
    cmd("substr", 4, H::Keys, &[Readonly], (1, 1, 1), &["@read", "@string", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get a substring of the string stored at a key", "1.0.0", "string", "O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings.")
        .deprecated("2.0.0", "`GETRANGE`"),
    cmd("sunion", -2, H::Collections, &[Readonly], (1, -1, 1), &["@read", "@set", "@slow"])
        .tips(&["nondeterministic_output_order"])
        .specs(&[spec(&["RO", "access"], 1, -1, 1, 0)])
        .docs("Add multiple sets", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("sunionstore", -3, H::Collections, &[Write, Denyoom], (1, -1, 1), &["@write", "@set", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), spec(&["RO", "access"], 2, -1, 1, 0)])
        .docs("Add multiple sets and store the resulting set in a key", "1.0.0", "set", "O(N) where N is the total number of elements in all given sets."),
    cmd("swapdb", 3, H::Keys, &[Write, Fast], (0, 0, 0), &["@keyspace", "@write", "@fast", "@dangerous"])
        .docs("Swaps two Redis databases", "4.0.0", "server", "O(N) where N is the count of clients watching or blocking on keys from both databases.")
        .per_node(),
    cmd("time", 1, H::Keys, &[Loading, Stale, Fast], (0, 0, 0), &["@fast"])
        .tips(&["nondeterministic_output"])
        .docs("Return the current server time", "2.6.0", "server", "O(1)")
        .per_node(),
    cmd("touch", -2, H::Keys, &[Readonly, Fast], (1, -1, 1), &["@keyspace", "@read", "@fast"])
        .tips(&["request_policy:multi_shard", "response_policy:agg_sum"])
        .specs(&[spec(&["RO"], 1, -1, 1, 0)])
        .docs("Alters the last access time of a key(s). Returns the number of existing keys specified.", "3.2.1", "generic", "O(N) where N is the number of keys that will be touched."),
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
    cmd("unsubscribe", -1, H::PubSub, &[Pubsub, Noscript, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Stop listening for messages posted to the given channels", "2.0.0", "pubsub", "O(N) where N is the number of clients already subscribed to a channel.")
        .per_node(),
    cmd("unwatch", 1, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (0, 0, 0), &["@fast", "@transaction"])
        .docs("Forget about all watched keys", "2.2.0", "transactions", "O(1)"),
    cmd("watch", -2, H::Transaction, &[Noscript, Loading, Stale, Fast, AllowBusy], (1, -1, 1), &["@fast", "@transaction"])
        .specs(&[spec(&["RO"], 1, -1, 1, 0)])
        .docs("Watch the given keys to determine execution of the MULTI/EXEC block", "2.2.0", "transactions", "O(1) for every key."),
    cmd("xack", -4, H::Streams, &[Write, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Marks a pending message as correctly processed, effectively removing it from the pending entries list of the consumer group. Return value of the command is the number of messages successfully acknowledged, that is, the IDs we were actually able to resolve in the PEL.", "5.0.0", "stream", "O(1) for each message ID processed."),
    cmd("xadd", -5, H::Streams, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0).notes("UPDATE instead of INSERT because of the optional trimming feature")])
        .docs("Appends a new entry to a stream", "5.0.0", "stream", "O(1) when adding a new entry, O(N) when trimming where N being the number of entries evicted."),
    cmd("xautoclaim", -6, H::Streams, &[Write, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Changes (or acquires) ownership of messages in a consumer group, as if the messages were delivered to the specified consumer.", "6.2.0", "stream", "O(1) if COUNT is small."),
    cmd("xclaim", -6, H::Streams, &[Write, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Changes (or acquires) ownership of a message in a consumer group, as if the message was delivered to the specified consumer.", "5.0.0", "stream", "O(log N) with N being the number of messages in the PEL of the consumer group."),
    cmd("xdel", -3, H::Streams, &[Write, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Removes the specified entries from the stream. Returns the number of items actually deleted, that may be different from the number of IDs passed in case certain IDs do not exist.", "5.0.0", "stream", "O(1) for each single item to delete in the stream, regardless of the stream size."),
    cmd("xgroup", -2, H::Streams, &[], (0, 0, 0), &["@slow"])
        .subcommands(XGROUP_SUBCOMMANDS)
        .docs("A container for consumer groups commands", "5.0.0", "stream", "Depends on subcommand."),
    cmd("xinfo", -2, H::Streams, &[], (0, 0, 0), &["@slow"])
        .subcommands(XINFO_SUBCOMMANDS)
        .docs("A container for stream introspection commands", "5.0.0", "stream", "Depends on subcommand."),
    cmd("xlen", 2, H::Streams, &[Readonly, Fast], (1, 1, 1), &["@read", "@stream", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Return the number of entries in a stream", "5.0.0", "stream", "O(1)"),
    cmd("xpending", -3, H::Streams, &[Readonly], (1, 1, 1), &["@read", "@stream", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return information and entries from a stream consumer group pending entries list, that are messages fetched but never acknowledged.", "5.0.0", "stream", "O(N) with N being the number of elements returned, so asking for a small fixed number of entries per call is O(1). O(M), where M is the total number of entries scanned when used with the IDLE filter. When the command returns just the summary and the list of consumers is small, it runs in O(1) time; otherwise, an additional O(N) time for iterating every consumer."),
    cmd("xrange", -4, H::Streams, &[Readonly], (1, 1, 1), &["@read", "@stream", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of elements in a stream, with IDs matching the specified IDs interval", "5.0.0", "stream", "O(N) with N being the number of elements being returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1)."),
    cmd("xread", -4, H::Streams, &[Readonly, Blocking, MovableKeys], (0, 0, 0), &["@read", "@stream", "@slow", "@blocking"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Keyword { keyword: "STREAMS", start_from: 1 }, find: FindKeys::Range { last_key: -1, key_step: 1, limit: 2 } }])
        .docs("Return never seen elements in multiple streams, with IDs greater than the ones reported by the caller for each stream. Can block.", "5.0.0", "stream", "For each stream mentioned: O(N) with N being the number of elements being returned, it means that XREAD-ing with a fixed COUNT is O(1). Note that when the BLOCK option is used, XADD will pay O(M) time in order to serve the M clients blocked on the stream getting new data."),
    cmd("xreadgroup", -7, H::Streams, &[Write, Blocking, MovableKeys], (0, 0, 0), &["@write", "@stream", "@slow", "@blocking"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Keyword { keyword: "STREAMS", start_from: 4 }, find: FindKeys::Range { last_key: -1, key_step: 1, limit: 2 } }])
        .docs("Return new entries from a stream using a consumer group, or access the history of the pending entries for a given consumer. Can block.", "5.0.0", "stream", "For each stream mentioned: O(M) with M being the number of elements returned. If M is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1). On the other side when XREADGROUP blocks, XADD will pay the O(N) time in order to serve the N clients blocked on the stream getting new data."),
    cmd("xrevrange", -4, H::Streams, &[Readonly], (1, 1, 1), &["@read", "@stream", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of elements in a stream, with IDs matching the specified IDs interval, in reverse order (from greater to smaller IDs) compared to XRANGE", "5.0.0", "stream", "O(N) with N being the number of elements returned. If N is constant (e.g. always asking for the first 10 elements with COUNT), you can consider it O(1)."),
    cmd("xsetid", -3, H::Streams, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@stream", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("An internal command for replicating stream values", "5.0.0", "stream", "O(1)"),
    cmd("xtrim", -4, H::Streams, &[Write], (1, 1, 1), &["@write", "@stream", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Trims the stream to (approximately if '~' is passed) a certain size", "5.0.0", "stream", "O(N), with N being the number of evicted entries. Constant times are very small however, since entries are organized in macro nodes containing multiple entries that can be released with a single deallocation."),
    cmd("zadd", -4, H::Zsets, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "update"], 1, 0, 1, 0)])
        .docs("Add one or more members to a sorted set, or update its score if it already exists", "1.2.0", "sorted-set", "O(log(N)) for each item added, where N is the number of elements in the sorted set."),
    cmd("zcard", 2, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO"], 1, 0, 1, 0)])
        .docs("Get the number of members in a sorted set", "1.2.0", "sorted-set", "O(1)"),
    cmd("zcount", 4, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Count the members in a sorted set with scores within the given values", "2.0.0", "sorted-set", "O(log(N)) with N being the number of elements in the sorted set."),
    cmd("zdiff", -3, H::Zsets, &[Readonly, MovableKeys], (0, 0, 0), &["@read", "@sortedset", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Subtract multiple sorted sets", "6.2.0", "sorted-set", "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set."),
    cmd("zdiffstore", -4, H::Zsets, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Subtract multiple sorted sets and store the resulting sorted set in a new key", "6.2.0", "sorted-set", "O(L + (N-K)log(N)) worst case where L is the total number of elements in all the sets, N is the size of the first set, and K is the size of the result set."),
    cmd("zincrby", 4, H::Zsets, &[Write, Denyoom, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "access", "update"], 1, 0, 1, 0)])
        .docs("Increment the score of a member in a sorted set", "1.2.0", "sorted-set", "O(log(N)) where N is the number of elements in the sorted set."),
    cmd("zinter", -3, H::Zsets, &[Readonly, MovableKeys], (0, 0, 0), &["@read", "@sortedset", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Intersect multiple sorted sets", "6.2.0", "sorted-set", "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set."),
    cmd("zintercard", -3, H::Zsets, &[Readonly, MovableKeys], (0, 0, 0), &["@read", "@sortedset", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Intersect multiple sorted sets and return the cardinality of the result", "7.0.0", "sorted-set", "O(N*K) worst case with N being the smallest input sorted set, K being the number of input sorted sets."),
    cmd("zinterstore", -4, H::Zsets, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Intersect multiple sorted sets and store the resulting sorted set in a new key", "2.0.0", "sorted-set", "O(N*K)+O(M*log(M)) worst case with N being the smallest input sorted set, K being the number of input sorted sets and M being the number of elements in the resulting sorted set."),
    cmd("zlexcount", 4, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Count the number of members in a sorted set between a given lexicographical range", "2.8.9", "sorted-set", "O(log(N)) with N being the number of elements in the sorted set."),
    cmd("zmpop", -4, H::Zsets, &[Write, MovableKeys], (0, 0, 0), &["@write", "@sortedset", "@slow"])
        .specs(&[KeySpec { flags: &["RW", "access", "delete"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Remove and return members with scores in a sorted set", "7.0.0", "sorted-set", "O(K) + O(M*log(N)) where K is the number of provided keys, N being the number of elements in the sorted set, and M being the number of elements popped."),
    cmd("zmscore", -3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get the score associated with the given members in a sorted set", "6.2.0", "sorted-set", "O(N) where N is the number of members being requested."),
    cmd("zpopmax", -2, H::Zsets, &[Write, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and return members with the highest scores in a sorted set", "5.0.0", "sorted-set", "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped."),
    cmd("zpopmin", -2, H::Zsets, &[Write, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "access", "delete"], 1, 0, 1, 0)])
        .docs("Remove and return members with the lowest scores in a sorted set", "5.0.0", "sorted-set", "O(log(N)*M) with N being the number of elements in the sorted set, and M being the number of elements popped."),
    cmd("zrandmember", -2, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Get one or multiple random elements from a sorted set", "6.2.0", "sorted-set", "O(N) where N is the number of elements returned"),
    cmd("zrange", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set", "1.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements returned."),
    cmd("zrangebylex", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by lexicographical range", "2.8.9", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).")
        .deprecated("6.2.0", "`ZRANGE` with the `BYLEX` argument"),
    cmd("zrangebyscore", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by score", "1.0.5", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).")
        .deprecated("6.2.0", "`ZRANGE` with the `BYSCORE` argument"),
    cmd("zrangestore", -5, H::Zsets, &[Write, Denyoom], (1, 2, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), spec(&["RO", "access"], 2, 0, 1, 0)])
        .docs("Store a range of members from sorted set into another key", "6.2.0", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements stored into the destination key."),
    cmd("zrank", 3, H::Zsets, &[Readonly, Fast], (1, 1, 1), &["@read", "@sortedset", "@fast"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Determine the index of a member in a sorted set", "2.0.0", "sorted-set", "O(log(N))"),
    cmd("zrem", -3, H::Zsets, &[Write, Fast], (1, 1, 1), &["@write", "@sortedset", "@fast"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove one or more members from a sorted set", "1.2.0", "sorted-set", "O(M*log(N)) with N being the number of elements in the sorted set and M the number of elements to be removed."),
    cmd("zremrangebylex", 4, H::Zsets, &[Write], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["RW", "delete"], 1, 0, 1, 0)])
        .docs("Remove all members in a sorted set between the given lexicographical range", "2.8.9", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements removed by the operation."),
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
    cmd("zrevrangebylex", -4, H::Zsets, &[Readonly], (1, 1, 1), &["@read", "@sortedset", "@slow"])
        .specs(&[spec(&["RO", "access"], 1, 0, 1, 0)])
        .docs("Return a range of members in a sorted set, by lexicographical range, ordered from higher to lower strings.", "2.8.9", "sorted-set", "O(log(N)+M) with N being the number of elements in the sorted set and M the number of elements being returned. If M is constant (e.g. always asking for the first 10 elements with LIMIT), you can consider it O(log(N)).")
        .deprecated("6.2.0", "`ZRANGE` with the `REV` and `BYLEX` arguments"),
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
    cmd("zunion", -3, H::Zsets, &[Readonly, MovableKeys], (0, 0, 0), &["@read", "@sortedset", "@slow"])
        .specs(&[KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(1), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Add multiple sorted sets", "6.2.0", "sorted-set", "O(N)+O(M*log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set."),
    cmd("zunionstore", -4, H::Zsets, &[Write, Denyoom, MovableKeys], (1, 1, 1), &["@write", "@sortedset", "@slow"])
        .specs(&[spec(&["OW", "update"], 1, 0, 1, 0), KeySpec { flags: &["RO", "access"], notes: None, begin: BeginSearch::Index(2), find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 } }])
        .docs("Add multiple sorted sets and store the resulting sorted set in a new key", "2.0.0", "sorted-set", "O(N)+O(M log(M)) with N being the sum of the sizes of the input sorted sets, and M being the number of elements in the resulting sorted set."),
];

#[rustfmt::skip]
static CLIENT_SUBCOMMANDS: &[Command] = &[
    cmd("client|caching", 3, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Instruct the server about tracking or not keys in the next request", "6.0.0", "connection", "O(1)"),
    cmd("client|getname", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Get the current connection name", "2.6.9", "connection", "O(1)"),
    cmd("client|getredir", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Get tracking notifications redirection client ID if any", "6.0.0", "connection", "O(1)"),
    cmd("client|help", 2, H::Connection, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "connection", "O(1)"),
    cmd("client|id", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Returns the client ID for the current connection", "5.0.0", "connection", "O(1)"),
    cmd("client|info", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output"])
        .docs("Returns information about the current client connection.", "6.2.0", "connection", "O(1)"),
    cmd("client|kill", -3, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .docs("Kill the connection of a client", "2.4.0", "connection", "O(N) where N is the number of client connections"),
    cmd("client|list", -2, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .tips(&["nondeterministic_output"])
        .docs("Get the list of client connections", "2.4.0", "connection", "O(N) where N is the number of client connections"),
    cmd("client|no-evict", 3, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .docs("Set client eviction mode for the current connection", "7.0.0", "connection", "O(1)"),
    cmd("client|pause", -3, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .docs("Stop processing commands from clients for some time", "2.9.50", "connection", "O(1)"),
    cmd("client|reply", 3, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Instruct the server whether to reply to commands", "3.2.0", "connection", "O(1)"),
    cmd("client|setname", 3, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Set the current connection name", "2.6.9", "connection", "O(1)"),
    cmd("client|tracking", -3, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Enable or disable server assisted client side caching support", "6.0.0", "connection", "O(1). Some options may introduce additional complexity."),
    cmd("client|trackinginfo", 2, H::Connection, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Return information about server assisted client side caching for the current connection", "6.2.0", "connection", "O(1)"),
    cmd("client|unblock", -3, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .docs("Unblock a client blocked in a blocking command from a different connection", "5.0.0", "connection", "O(log N) where N is the number of client connections"),
    cmd("client|unpause", 2, H::Connection, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous", "@connection"])
        .docs("Resume processing of clients that were paused", "6.2.0", "connection", "O(N) Where N is the number of paused clients"),
];

#[rustfmt::skip]
static CLUSTER_SUBCOMMANDS: &[Command] = &[
    cmd("cluster|addslots", -3, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Assign new hash slots to receiving node", "3.0.0", "cluster", "O(N) where N is the total number of hash slot arguments"),
    cmd("cluster|addslotsrange", -4, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Assign new hash slots to receiving node", "7.0.0", "cluster", "O(N) where N is the total number of the slots between the start slot and end slot arguments."),
    cmd("cluster|bumpepoch", 2, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .docs("Advance the cluster config epoch", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|count-failure-reports", 3, H::Cluster, &[Admin, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .docs("Return the number of failure reports active for a given node", "3.0.0", "cluster", "O(N) where N is the number of failure reports"),
    cmd("cluster|countkeysinslot", 3, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .docs("Return the number of local keys in the specified hash slot", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|delslots", -3, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Set hash slots as unbound in receiving node", "3.0.0", "cluster", "O(N) where N is the total number of hash slot arguments"),
    cmd("cluster|delslotsrange", -4, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Set hash slots as unbound in receiving node", "7.0.0", "cluster", "O(N) where N is the total number of the slots between the start slot and end slot arguments."),
    cmd("cluster|failover", -2, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Forces a replica to perform a manual failover of its master.", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|flushslots", 2, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Delete a node's own slots information", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|forget", 3, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Remove a node from the nodes table", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|getkeysinslot", 4, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Return local key names in the specified hash slot", "3.0.0", "cluster", "O(log(N)) where N is the number of requested keys"),
    cmd("cluster|help", 2, H::Cluster, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "cluster", "O(1)"),
    cmd("cluster|info", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Provides info about Redis Cluster node state", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|keyslot", 3, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .docs("Returns the hash slot of the specified key", "3.0.0", "cluster", "O(N) where N is the number of bytes in the key"),
    cmd("cluster|links", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Returns a list of all TCP links to and from peer nodes in cluster", "7.0.0", "cluster", "O(N) where N is the total number of Cluster nodes"),
    cmd("cluster|meet", -4, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Force a node cluster to handshake with another node", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|myid", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .docs("Return the node id", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|nodes", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Get Cluster config for the node", "3.0.0", "cluster", "O(N) where N is the total number of Cluster nodes"),
    cmd("cluster|replicas", 3, H::Cluster, &[Admin, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .docs("List replica nodes of the specified master node", "5.0.0", "cluster", "O(1)"),
    cmd("cluster|replicate", 3, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Reconfigure a node as a replica of the specified master node", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|reset", -2, H::Cluster, &[Admin, Noscript, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Reset a Redis Cluster node", "3.0.0", "cluster", "O(N) where N is the number of known nodes. The command may execute a FLUSHALL as a side effect."),
    cmd("cluster|saveconfig", 2, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Forces the node to save cluster state on disk", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|set-config-epoch", 3, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Set the configuration epoch in a new node", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|setslot", -4, H::Cluster, &[Admin, Stale, NoAsyncLoading], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Bind a hash slot to a specific node", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|shards", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Get array of cluster slots to node mappings", "7.0.0", "cluster", "O(N) where N is the total number of cluster nodes"),
    cmd("cluster|slaves", 3, H::Cluster, &[Admin, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output"])
        .docs("List replica nodes of the specified master node", "3.0.0", "cluster", "O(1)"),
    cmd("cluster|slots", 2, H::Cluster, &[Stale], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output"])
        .docs("Get array of Cluster slot to node mappings", "3.0.0", "cluster", "O(N) where N is the total number of Cluster nodes"),
];

static COMMAND_SUBCOMMANDS: &[Command] = &[
    cmd("command|count", 2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Get total number of Redis commands", "2.8.13", "server", "O(1)"),
    cmd("command|docs", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs(
            "Get array of specific Redis command documentation",
            "7.0.0",
            "server",
            "O(N) where N is the number of commands to look up",
        ),
    cmd("command|getkeys", -4, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs(
            "Extract keys given a full Redis command",
            "2.8.13",
            "server",
            "O(N) where N is the number of arguments to the command",
        ),
    cmd(
        "command|getkeysandflags",
        -4,
        H::Command,
        &[Loading, Stale],
        (0, 0, 0),
        &["@slow", "@connection"],
    )
    .docs(
        "Extract keys and access flags given a full Redis command",
        "7.0.0",
        "server",
        "O(N) where N is the number of arguments to the command",
    ),
    cmd("command|help", 2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "server", "O(1)"),
    cmd("command|info", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs(
            "Get array of specific Redis command details, or all when no argument is given.",
            "2.8.13",
            "server",
            "O(N) where N is the number of commands to look up",
        ),
    cmd("command|list", -2, H::Command, &[Loading, Stale], (0, 0, 0), &["@slow", "@connection"])
        .tips(&["nondeterministic_output_order"])
        .docs(
            "Get an array of Redis command names",
            "7.0.0",
            "server",
            "O(N) where N is the total number of Redis commands",
        ),
];

#[rustfmt::skip]
static PUBSUB_SUBCOMMANDS: &[Command] = &[
    cmd("pubsub|channels", -2, H::PubSub, &[Pubsub, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("List active channels", "2.8.0", "pubsub", "O(N) where N is the number of active channels, and assuming constant time pattern matching (relatively short channels and patterns)"),
    cmd("pubsub|help", 2, H::PubSub, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands", "6.2.0", "pubsub", "O(1)"),
    cmd("pubsub|numpat", 2, H::PubSub, &[Pubsub, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Get the count of unique patterns pattern subscriptions", "2.8.0", "pubsub", "O(1)"),
    cmd("pubsub|numsub", -2, H::PubSub, &[Pubsub, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Get the count of subscribers for channels", "2.8.0", "pubsub", "O(N) for the NUMSUB subcommand, where N is the number of requested channels"),
    cmd("pubsub|shardchannels", -2, H::PubSub, &[Pubsub, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("List active shard channels", "7.0.0", "pubsub", "O(N) where N is the number of active shard channels, and assuming constant time pattern matching (relatively short shard channels)."),
    cmd("pubsub|shardnumsub", -2, H::PubSub, &[Pubsub, Loading, Stale], (0, 0, 0), &["@pubsub", "@slow"])
        .docs("Get the count of subscribers for shard channels", "7.0.0", "pubsub", "O(N) for the SHARDNUMSUB subcommand, where N is the number of requested shard channels"),
];

#[rustfmt::skip]
static SCRIPT_SUBCOMMANDS: &[Command] = &[
    cmd("script|exists", -3, H::Scripting, &[Noscript], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:agg_logical_and"])
        .docs("Check existence of scripts in the script cache.", "2.6.0", "scripting", "O(N) with N being the number of scripts to check (so checking a single script is an O(1) operation)."),
    cmd("script|flush", -2, H::Scripting, &[Noscript], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["request_policy:all_nodes", "response_policy:all_succeeded"])
        .docs("Remove all the scripts from the script cache.", "2.6.0", "scripting", "O(N) with N being the number of scripts in cache"),
    cmd("script|help", 2, H::Scripting, &[Loading, Stale], (0, 0, 0), &["@slow", "@scripting"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "scripting", "O(1)"),
    cmd("script|kill", 2, H::Scripting, &[Noscript, AllowBusy], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:one_succeeded"])
        .docs("Kill the script currently in execution.", "2.6.0", "scripting", "O(1)"),
    cmd("script|load", 3, H::Scripting, &[Noscript, Stale], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["request_policy:all_nodes", "response_policy:all_succeeded"])
        .docs("Load the specified Lua script into the script cache.", "2.6.0", "scripting", "O(N) with N being the length in bytes of the script body."),
];

#[rustfmt::skip]
static CONFIG_SUBCOMMANDS: &[Command] = &[
    cmd("config|get", -3, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Get the values of configuration parameters", "2.0.0", "server", "O(N) when N is the number of configuration parameters provided"),
    cmd("config|help", 2, H::Server, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "server", "O(1)"),
    cmd("config|resetstat", 2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Reset the stats returned by INFO", "2.0.0", "server", "O(1)"),
    cmd("config|rewrite", 2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Rewrite the configuration file with the in memory configuration", "2.8.0", "server", "O(1)"),
    cmd("config|set", -4, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["request_policy:all_nodes", "response_policy:all_succeeded"])
        .docs("Set configuration parameters to the given values", "2.0.0", "server", "O(N) when N is the number of configuration parameters provided"),
];

#[rustfmt::skip]
static ACL_SUBCOMMANDS: &[Command] = &[
    cmd("acl|cat", -2, H::Acl, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("List the ACL categories or the commands inside a category", "6.0.0", "server", "O(1) since the categories and commands are a fixed set."),
    cmd("acl|deluser", -3, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Remove the specified ACL users and the associated rules", "6.0.0", "server", "O(1) amortized time considering the typical user."),
    cmd("acl|dryrun", -4, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Returns whether the user can execute the given command without executing the command.", "7.0.0", "server", "O(1)."),
    cmd("acl|genpass", -2, H::Acl, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Generate a pseudorandom secure password to use for ACL users", "6.0.0", "server", "O(1)"),
    cmd("acl|getuser", 3, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Get the rules for a specific ACL user", "6.0.0", "server", "O(N). Where N is the number of password, command and pattern rules that the user has."),
    cmd("acl|help", 2, H::Acl, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands", "6.0.0", "server", "O(1)"),
    cmd("acl|list", 2, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("List the current ACL rules in ACL config file format", "6.0.0", "server", "O(N). Where N is the number of configured users."),
    cmd("acl|load", 2, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Reload the ACLs from the configured ACL file", "6.0.0", "server", "O(N). Where N is the number of configured users."),
    cmd("acl|log", -2, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("List latest events denied because of ACLs in place", "6.0.0", "server", "O(N) with N being the number of entries shown."),
    cmd("acl|save", 2, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Save the current ACL rules in the configured ACL file", "6.0.0", "server", "O(N). Where N is the number of configured users."),
    cmd("acl|setuser", -3, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("Modify or create the rules for a specific ACL user", "6.0.0", "server", "O(N). Where N is the number of rules provided."),
    cmd("acl|users", 2, H::Acl, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .docs("List the username of all the configured ACL rules", "6.0.0", "server", "O(N). Where N is the number of configured users."),
    cmd("acl|whoami", 2, H::Acl, &[Noscript, Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Return the name of the user associated to the current connection", "6.0.0", "server", "O(1)"),
];

#[rustfmt::skip]
static MEMORY_SUBCOMMANDS: &[Command] = &[
    cmd("memory|doctor", 2, H::Server, &[], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"])
        .docs("Outputs memory problems report", "4.0.0", "server", "O(1)"),
    cmd("memory|help", 2, H::Server, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands", "4.0.0", "server", "O(1)"),
    cmd("memory|malloc-stats", 2, H::Server, &[], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"])
        .docs("Show allocator internal stats", "4.0.0", "server", "Depends on how much memory is allocated, could be slow"),
    cmd("memory|purge", 2, H::Server, &[], (0, 0, 0), &["@slow"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Ask the allocator to release memory", "4.0.0", "server", "Depends on how much memory is allocated, could be slow"),
    cmd("memory|stats", 2, H::Server, &[], (0, 0, 0), &["@slow"])
        .tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"])
        .docs("Show memory usage details", "4.0.0", "server", "O(1)"),
    cmd("memory|usage", -3, H::Server, &[Readonly], (2, 2, 1), &["@read", "@slow"])
        .specs(&[spec(&["RO"], 2, 0, 1, 0)])
        .docs("Estimate the memory usage of a key", "4.0.0", "server", "O(N) where N is the number of samples."),
];

#[rustfmt::skip]
static OBJECT_SUBCOMMANDS: &[Command] = &[
    cmd("object|encoding", 3, H::Server, &[Readonly], (2, 2, 1), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO"], 2, 0, 1, 0)])
        .docs("Inspect the internal encoding of a Redis object", "2.2.3", "generic", "O(1)"),
    cmd("object|freq", 3, H::Server, &[Readonly], (2, 2, 1), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO"], 2, 0, 1, 0)])
        .docs("Get the logarithmic access frequency counter of a Redis object", "4.0.0", "generic", "O(1)"),
    cmd("object|help", 2, H::Server, &[Loading, Stale], (0, 0, 0), &["@keyspace", "@slow"])
        .docs("Show helpful text about the different subcommands", "6.2.0", "generic", "O(1)"),
    cmd("object|idletime", 3, H::Server, &[Readonly], (2, 2, 1), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO"], 2, 0, 1, 0)])
        .docs("Get the time since a Redis object was last accessed", "2.2.3", "generic", "O(1)"),
    cmd("object|refcount", 3, H::Server, &[Readonly], (2, 2, 1), &["@keyspace", "@read", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO"], 2, 0, 1, 0)])
        .docs("Get the number of references to the value of the key", "2.2.3", "generic", "O(1)"),
];

#[rustfmt::skip]
static FUNCTION_SUBCOMMANDS: &[Command] = &[
    cmd("function|delete", 3, H::Scripting, &[Write, Noscript], (0, 0, 0), &["@write", "@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Delete a function by name", "7.0.0", "scripting", "O(1)"),
    cmd("function|dump", 2, H::Scripting, &[Noscript], (0, 0, 0), &["@slow", "@scripting"])
        .docs("Dump all functions into a serialized binary payload", "7.0.0", "scripting", "O(N) where N is the number of functions"),
    cmd("function|flush", -2, H::Scripting, &[Write, Noscript], (0, 0, 0), &["@write", "@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Deleting all functions", "7.0.0", "scripting", "O(N) where N is the number of functions deleted"),
    cmd("function|help", 2, H::Scripting, &[Loading, Stale], (0, 0, 0), &["@slow", "@scripting"])
        .docs("Show helpful text about the different subcommands", "7.0.0", "scripting", "O(1)"),
    cmd("function|kill", 2, H::Scripting, &[Noscript, AllowBusy], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:one_succeeded"])
        .docs("Kill the function currently in execution.", "7.0.0", "scripting", "O(1)"),
    cmd("function|list", -2, H::Scripting, &[Noscript], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["nondeterministic_output_order"])
        .docs("List information about all the functions", "7.0.0", "scripting", "O(N) where N is the number of functions"),
    cmd("function|load", -3, H::Scripting, &[Write, Denyoom, Noscript], (0, 0, 0), &["@write", "@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Create a function with the given arguments (name, code, description)", "7.0.0", "scripting", "O(1) (considering compilation time is redundant)"),
    cmd("function|restore", -3, H::Scripting, &[Write, Denyoom, Noscript], (0, 0, 0), &["@write", "@slow", "@scripting"])
        .tips(&["request_policy:all_shards", "response_policy:all_succeeded"])
        .docs("Restore all the functions on the given payload", "7.0.0", "scripting", "O(N) where N is the number of functions on the payload"),
    cmd("function|stats", 2, H::Scripting, &[Noscript, AllowBusy], (0, 0, 0), &["@slow", "@scripting"])
        .tips(&["nondeterministic_output", "request_policy:all_shards", "response_policy:special"])
        .docs("Return information about the function currently running (name, description, duration)", "7.0.0", "scripting", "O(1)"),
];

static SLOWLOG_SUBCOMMANDS: &[Command] = &[
    cmd(
        "slowlog|get",
        -2,
        H::Server,
        &[Admin, Loading, Stale],
        (0, 0, 0),
        &["@admin", "@slow", "@dangerous"],
    )
    .tips(&["request_policy:all_nodes", "nondeterministic_output"])
    .docs(
        "Get the slow log's entries",
        "2.2.12",
        "server",
        "O(N) where N is the number of entries returned",
    ),
    cmd("slowlog|help", 2, H::Server, &[Loading, Stale], (0, 0, 0), &["@slow"]).docs(
        "Show helpful text about the different subcommands",
        "6.2.0",
        "server",
        "O(1)",
    ),
    cmd(
        "slowlog|len",
        2,
        H::Server,
        &[Admin, Loading, Stale],
        (0, 0, 0),
        &["@admin", "@slow", "@dangerous"],
    )
    .tips(&["request_policy:all_nodes", "response_policy:agg_sum", "nondeterministic_output"])
    .docs("Get the slow log's length", "2.2.12", "server", "O(1)"),
    cmd(
        "slowlog|reset",
        2,
        H::Server,
        &[Admin, Loading, Stale],
        (0, 0, 0),
        &["@admin", "@slow", "@dangerous"],
    )
    .tips(&["request_policy:all_nodes", "response_policy:all_succeeded"])
    .docs(
        "Clear all entries from the slow log",
        "2.2.12",
        "server",
        "O(N) where N is the number of entries in the slowlog",
    ),
];

#[rustfmt::skip]
static XGROUP_SUBCOMMANDS: &[Command] = &[
    cmd("xgroup|create", -5, H::Streams, &[Write, Denyoom], (2, 2, 1), &["@write", "@stream", "@slow"])
        .specs(&[spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Create a consumer group.", "5.0.0", "stream", "O(1)"),
    cmd("xgroup|createconsumer", 5, H::Streams, &[Write, Denyoom], (2, 2, 1), &["@write", "@stream", "@slow"])
        .specs(&[spec(&["RW", "insert"], 2, 0, 1, 0)])
        .docs("Create a consumer in a consumer group.", "6.2.0", "stream", "O(1)"),
    cmd("xgroup|delconsumer", 5, H::Streams, &[Write], (2, 2, 1), &["@write", "@stream", "@slow"])
        .specs(&[spec(&["RW", "delete"], 2, 0, 1, 0)])
        .docs("Delete a consumer from a consumer group.", "5.0.0", "stream", "O(1)"),
    cmd("xgroup|destroy", 4, H::Streams, &[Write], (2, 2, 1), &["@write", "@stream", "@slow"])
        .specs(&[spec(&["RW", "delete"], 2, 0, 1, 0)])
        .docs("Destroy a consumer group.", "5.0.0", "stream", "O(N) where N is the number of entries in the group's pending entries list (PEL)."),
    cmd("xgroup|help", 2, H::Streams, &[Loading, Stale], (0, 0, 0), &["@stream", "@slow"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "stream", "O(1)"),
    cmd("xgroup|setid", -5, H::Streams, &[Write], (2, 2, 1), &["@write", "@stream", "@slow"])
        .specs(&[spec(&["RW", "update"], 2, 0, 1, 0)])
        .docs("Set a consumer group to an arbitrary last delivered ID value.", "5.0.0", "stream", "O(1)"),
];

#[rustfmt::skip]
static XINFO_SUBCOMMANDS: &[Command] = &[
    cmd("xinfo|consumers", 4, H::Streams, &[Readonly], (2, 2, 1), &["@read", "@stream", "@slow"])
        .tips(&["nondeterministic_output"])
        .specs(&[spec(&["RO", "access"], 2, 0, 1, 0)])
        .docs("List the consumers in a consumer group", "5.0.0", "stream", "O(1)"),
    cmd("xinfo|groups", 3, H::Streams, &[Readonly], (2, 2, 1), &["@read", "@stream", "@slow"])
        .specs(&[spec(&["RO", "access"], 2, 0, 1, 0)])
        .docs("List the consumer groups of a stream", "5.0.0", "stream", "O(1)"),
    cmd("xinfo|help", 2, H::Streams, &[Loading, Stale], (0, 0, 0), &["@stream", "@slow"])
        .docs("Show helpful text about the different subcommands", "5.0.0", "stream", "O(1)"),
    cmd("xinfo|stream", -3, H::Streams, &[Readonly], (2, 2, 1), &["@read", "@stream", "@slow"])
        .specs(&[spec(&["RO", "access"], 2, 0, 1, 0)])
        .docs("Get information about a stream", "5.0.0", "stream", "O(1)"),
];

#[rustfmt::skip]
static LATENCY_SUBCOMMANDS: &[Command] = &[
    cmd("latency|doctor", 2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"])
        .docs("Return a human readable latency analysis report.", "2.8.13", "server", "O(1)"),
    cmd("latency|graph", 3, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"])
        .docs("Return a latency graph for the event.", "2.8.13", "server", "O(1)"),
    cmd("latency|help", 2, H::Server, &[Loading, Stale], (0, 0, 0), &["@slow"])
        .docs("Show helpful text about the different subcommands.", "2.8.13", "server", "O(1)"),
    cmd("latency|histogram", -2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"])
        .docs("Return the cumulative distribution of latencies of a subset of commands or all.", "7.0.0", "server", "O(N) where N is the number of commands with latency information being retrieved."),
    cmd("latency|history", 3, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"])
        .docs("Return timestamp-latency samples for the event.", "2.8.13", "server", "O(1)"),
    cmd("latency|latest", 2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"])
        .docs("Return the latest latency samples for all events.", "2.8.13", "server", "O(1)"),
    cmd("latency|reset", -2, H::Server, &[Admin, Noscript, Loading, Stale], (0, 0, 0), &["@admin", "@slow", "@dangerous"])
        .tips(&["request_policy:all_nodes", "response_policy:all_succeeded"])
        .docs("Reset latency data for one or more events.", "2.8.13", "server", "O(1)"),
];
