//! `COMMAND` and its subcommands (COUNT, INFO, DOCS, LIST, GETKEYS,
//! GETKEYSANDFLAGS, HELP), answered from [`super::table`] in Redis 7.0's
//! reply shapes and with its errors.
//!
//! What differs from `redis-server` 7.0's answers:
//!
//! - Only the commands this endpoint runs are listed, and of CLIENT's,
//!   CONFIG's, OBJECT's and MEMORY's subcommands those it runs (no CLIENT
//!   TRACKING, CACHING, GETREDIR, UNBLOCK); `COMMAND COUNT` counts the
//!   table's top-level commands. `MT.SCAN`, `MT.AGG` and `MT.VIEWS` are
//!   listed too (group `module`, though `FILTERBY MODULE` lists nothing).
//! - `COMMAND`, and INFO, DOCS and LIST without names, go in name order
//!   (Redis: its hash table's order).
//! - `COMMAND DOCS` gives summary, since, group, complexity and the
//!   deprecation fields (and subcommands), not `history` nor `arguments`.
//! - GETKEYS uses the key specs for every command (Redis uses a command's
//!   own key finder where its specs are not enough; no command here is one
//!   of those). SET's flags in GETKEYSANDFLAGS, the only ones here that
//!   vary, are worked out as Redis's `setGetKeys` does.
//! - `LIST FILTERBY PATTERN` lowercases the pattern, then matches it
//!   against the lowercase names; Redis matches ignoring case, which comes
//!   to the same but for odd classes whose bounds change order (`[Z-a]`).
//!
//! Everything else (every row's INFO entry, the DOCS fields given, the
//! errors, HELP, GETKEYS) is compared with a running `redis-server` by
//! `tests/tests/resp_command.rs`.

use super::args::{lower, parse_i64};
use super::errors::{unknown_subcommand, SYNTAX};
use super::reply::Reply;
use super::table::{self, BeginSearch, Command, FindKeys, KeySpec, COMMANDS};

/// COMMAND's help, word for word as Redis 7.0 gives it.
const HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all Redis commands.",
    "COUNT",
    "    Return the total number of commands in this Redis server.",
    "LIST",
    "    Return a list of all commands in this Redis server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple Redis commands.",
    "    If no command names are given, documentation details for all",
    "    commands are returned.",
    "GETKEYS <full-command>",
    "    Return the keys from a full Redis command.",
    "GETKEYSANDFLAGS <full-command>",
    "    Return the keys and the access flags from a full Redis command.",
    "HELP",
    "    Prints this help.",
];

/// Runs `COMMAND [subcommand args...]` (`args[0]` is COMMAND itself).
pub fn command(args: &[Vec<u8>]) -> Reply {
    let Some(sub) = args.get(1) else { return all_info() };
    match lower(sub).as_str() {
        "count" => Reply::Int(COMMANDS.len() as i64),
        "info" if args.len() == 2 => all_info(),
        "info" => {
            Reply::Array(args[2..].iter().map(|n| find(n).map_or(Reply::Null, info)).collect())
        }
        "docs" if args.len() == 2 => Reply::Map(COMMANDS.iter().map(docs_pair).collect()),
        "docs" => Reply::Map(args[2..].iter().filter_map(|n| find(n)).map(docs_pair).collect()),
        "list" => list(&args[2..]),
        "getkeys" => getkeys(&args[2..], false),
        "getkeysandflags" => getkeys(&args[2..], true),
        "help" => Reply::Array(HELP.iter().map(|l| Reply::Simple(l)).collect()),
        _ => unknown_subcommand(&args[0], sub),
    }
}

/// A command or subcommand by the name a client gave (`client|id` names a
/// subcommand), as COMMAND INFO and DOCS look names up.
fn find(name: &[u8]) -> Option<&'static Command> {
    let name = lower(name);
    match name.split_once('|') {
        None => table::lookup(&name),
        Some((parent, sub)) => table::subcommand(table::lookup(parent)?, sub),
    }
}

fn all_info() -> Reply {
    Reply::Array(COMMANDS.iter().map(info).collect())
}

fn bulk(s: &str) -> Reply {
    Reply::bulk(s.as_bytes().to_vec())
}

fn simples(words: &[&'static str]) -> Reply {
    Reply::Set(words.iter().map(|w| Reply::Simple(w)).collect())
}

/// One command's entry of COMMAND / COMMAND INFO: name, arity, flags,
/// first key, last key, step, ACL categories, tips, key specs,
/// subcommands.
pub fn info(c: &Command) -> Reply {
    Reply::Array(vec![
        bulk(c.name),
        Reply::Int(c.arity.into()),
        Reply::Set(c.flags.iter().map(|f| Reply::Simple(f.name())).collect()),
        Reply::Int(c.first_key.into()),
        Reply::Int(c.last_key.into()),
        Reply::Int(c.step.into()),
        simples(c.acl_categories),
        // Tips are bulk strings, unlike flags and categories.
        Reply::Set(c.tips.iter().map(|t| bulk(t)).collect()),
        Reply::Set(c.key_specs.iter().map(key_spec).collect()),
        // Redis 7.0 writes no subcommands as an empty set, and some as an
        // array.
        if c.subcommands.is_empty() {
            Reply::Set(Vec::new())
        } else {
            Reply::Array(c.subcommands.iter().map(info).collect())
        },
    ])
}

fn key_spec(k: &KeySpec) -> Reply {
    let int = |n: i32| Reply::Int(n.into());
    let (begin_type, begin) = match k.begin {
        BeginSearch::Index(i) => ("index", vec![(bulk("index"), int(i))]),
        BeginSearch::Keyword { keyword, start_from } => (
            "keyword",
            vec![(bulk("keyword"), bulk(keyword)), (bulk("startfrom"), int(start_from))],
        ),
        BeginSearch::Unknown => ("unknown", Vec::new()),
    };
    let (find_type, find) = match k.find {
        FindKeys::Range { last_key, key_step, limit } => (
            "range",
            vec![
                (bulk("lastkey"), int(last_key)),
                (bulk("keystep"), int(key_step)),
                (bulk("limit"), int(limit)),
            ],
        ),
        FindKeys::KeyNum { key_num_index, first_key, key_step } => (
            "keynum",
            vec![
                (bulk("keynumidx"), int(key_num_index)),
                (bulk("firstkey"), int(first_key)),
                (bulk("keystep"), int(key_step)),
            ],
        ),
        FindKeys::Unknown => ("unknown", Vec::new()),
    };
    let search = |kind: &str, spec: Vec<(Reply, Reply)>| {
        Reply::Map(vec![(bulk("type"), bulk(kind)), (bulk("spec"), Reply::Map(spec))])
    };
    let mut map = Vec::with_capacity(4);
    if let Some(notes) = k.notes {
        map.push((bulk("notes"), bulk(notes)));
    }
    map.push((bulk("flags"), simples(k.flags)));
    map.push((bulk("begin_search"), search(begin_type, begin)));
    map.push((bulk("find_keys"), search(find_type, find)));
    Reply::Map(map)
}

/// A command's name and its COMMAND DOCS map.
fn docs_pair(c: &'static Command) -> (Reply, Reply) {
    let d = &c.docs;
    let mut map = vec![
        (bulk("summary"), bulk(d.summary)),
        (bulk("since"), bulk(d.since)),
        (bulk("group"), bulk(d.group)),
    ];
    // Redis leaves it out when the command's docs give none (MONITOR).
    if !d.complexity.is_empty() {
        map.push((bulk("complexity"), bulk(d.complexity)));
    }
    if d.syscmd {
        map.push((bulk("doc_flags"), simples(&["syscmd"])));
    }
    if let Some((since, replaced_by)) = d.deprecated {
        map.push((bulk("doc_flags"), simples(&["deprecated"])));
        map.push((bulk("deprecated_since"), bulk(since)));
        map.push((bulk("replaced_by"), bulk(replaced_by)));
    }
    if !c.subcommands.is_empty() {
        map.push((bulk("subcommands"), Reply::Map(c.subcommands.iter().map(docs_pair).collect())));
    }
    (bulk(c.name), Reply::Map(map))
}

/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN glob]:
/// every command's name, then its subcommands' (`client|id`).
fn list(options: &[Vec<u8>]) -> Reply {
    let keep: Box<dyn Fn(&Command) -> bool> = match options {
        [] => Box::new(|_| true),
        [filterby, kind, arg] if lower(filterby) == "filterby" => match lower(kind).as_str() {
            // No command here comes from a Redis module.
            "module" => Box::new(|_| false),
            "aclcat" => {
                let category = format!("@{}", lower(arg));
                Box::new(move |c| {
                    c.acl_categories.iter().any(|a| a.eq_ignore_ascii_case(&category))
                })
            }
            "pattern" => {
                // Redis matches without regard to case; names are lowercase.
                let pattern = arg.to_ascii_lowercase();
                Box::new(move |c| super::glob::matches(&pattern, c.name.as_bytes()))
            }
            _ => return Reply::err(SYNTAX),
        },
        _ => return Reply::err(SYNTAX),
    };
    let names = COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c).chain(c.subcommands))
        .filter(|c| keep(c))
        .map(|c| bulk(c.name))
        .collect();
    Reply::Array(names)
}

/// COMMAND GETKEYS / GETKEYSANDFLAGS `full` (a whole command), with
/// Redis's errors.
fn getkeys(full: &[Vec<u8>], with_flags: bool) -> Reply {
    let Some(command) = command_of(full) else {
        return Reply::err("ERR Invalid command specified");
    };
    if command.key_specs.is_empty() {
        return Reply::err("ERR The command has no key arguments");
    }
    if !command.arity_fits(full.len()) {
        return Reply::err("ERR Invalid number of arguments specified for command");
    }
    let keys = match keys_of(command, full) {
        Some(keys) if !keys.is_empty() => keys,
        _ if command.has(table::Flag::NoMandatoryKeys) => Vec::new(),
        _ => return Reply::err("ERR Invalid arguments specified for command"),
    };
    Reply::Array(
        keys.into_iter()
            .map(|(i, flags)| {
                let key = Reply::Bulk(full[i].clone());
                if with_flags {
                    Reply::Array(vec![key, simples(flags)])
                } else {
                    key
                }
            })
            .collect(),
    )
}

/// The command a whole command line runs, as Redis's `lookupCommand`: a
/// container's subcommand when there is an argument after its name.
pub(super) fn command_of(full: &[Vec<u8>]) -> Option<&'static Command> {
    let command = table::lookup(&lower(full.first()?))?;
    match full.get(1) {
        Some(sub) if !command.subcommands.is_empty() => table::subcommand(command, &lower(sub)),
        _ => Some(command),
    }
}

/// SORT's keys as Redis's `sortGetKeys` finds them (SORT_RO's as
/// `sortROGetKeys`): the sorted key, and the argument after the last
/// `STORE` (LIMIT's, GET's and BY's arguments skipped).
fn sort_keys(command: &Command, args: &[Vec<u8>]) -> Vec<(usize, &'static [&'static str])> {
    const SORTED: &[&str] = &["RO", "access"];
    const STORE: &[&str] = &["OW", "update"];
    let mut keys = vec![(1, SORTED)];
    if command.name == "sort_ro" {
        return keys;
    }
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "limit" => i += 2,
            "get" | "by" => i += 1,
            "store" if i + 1 < args.len() => store = Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    keys.extend(store.map(|at| (at, STORE)));
    keys
}

/// The flags of MIGRATE's keys (Redis's `migrateGetKeys`).
const MIGRATED: &[&str] = &["RW", "access", "delete"];

/// MIGRATE's keys as Redis's `migrateGetKeys` finds them: the key
/// argument, or after a `KEYS` option (AUTH's and AUTH2's arguments
/// skipped) every argument after it, none if the key argument is not
/// empty (its key spec is "incomplete", so Redis uses its own finder);
/// argument indexes.
pub fn migrate_keys(args: &[Vec<u8>]) -> Vec<usize> {
    let mut i = 6;
    while i < args.len() {
        match lower(&args[i]).as_str() {
            "keys" if args[3].is_empty() => return (i + 1..args.len()).collect(),
            "keys" => return Vec::new(),
            "auth" => i += 1,
            "auth2" => i += 2,
            _ => {}
        }
        i += 1;
    }
    if args.len() > 3 {
        vec![3]
    } else {
        Vec::new()
    }
}

/// The keys of `args` (a whole command, its name at 0) by `command`'s key
/// specs, as Redis 7.0's `getKeysUsingKeySpecs`: each key's argument index
/// and flags, in spec order; `None` when a spec does not fit the arguments
/// (Redis's "invalid spec").
pub fn keys_of(
    command: &Command,
    args: &[Vec<u8>],
) -> Option<Vec<(usize, &'static [&'static str])>> {
    let argc = i64::try_from(args.len()).ok()?;
    if command.key_specs.iter().any(|k| k.begin == BeginSearch::Unknown) {
        // Redis's spec search fails ("incomplete"): its own key finder.
        return Some(sort_keys(command, args));
    }
    if command.name == "migrate" {
        return Some(migrate_keys(args).into_iter().map(|i| (i, MIGRATED)).collect());
    }
    let mut keys = Vec::new();
    for spec in command.key_specs {
        if spec.flags.contains(&"not_key") {
            continue;
        }
        let first = match spec.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Unknown => continue,
            BeginSearch::Keyword { keyword, start_from } => {
                let start = i64::from(start_from);
                let (from, backwards) =
                    if start > 0 { (start, false) } else { (argc + start, true) };
                let mut found = None;
                let mut i = from;
                while (1..argc).contains(&i) {
                    if args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = Some(i + 1);
                        break;
                    }
                    i += if backwards { -1 } else { 1 };
                }
                // A keyword not found: this spec has no keys.
                let Some(first) = found else { continue };
                first
            }
        };
        let (first, last, step) = match spec.find {
            FindKeys::Range { last_key, key_step, limit } => {
                let last_key = i64::from(last_key);
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit == 0 {
                    argc + last_key
                } else {
                    first + ((argc - first) / i64::from(limit) + last_key)
                };
                (first, last, i64::from(key_step))
            }
            FindKeys::Unknown => continue,
            FindKeys::KeyNum { key_num_index, first_key, key_step } => {
                let at = usize::try_from(first + i64::from(key_num_index)).ok()?;
                let n = parse_i64(args.get(at)?).filter(|&n| n >= 0)?;
                let first = first + i64::from(first_key);
                (first, first.checked_add(n)? - 1, i64::from(key_step))
            }
        };
        if last >= argc || last < first || first >= argc || step < 1 {
            return None;
        }
        let flags = if spec.flags.contains(&"variable_flags") {
            variable_flags(command, args).unwrap_or(spec.flags)
        } else {
            spec.flags
        };
        let mut i = first;
        while i <= last {
            keys.push((usize::try_from(i).ok()?, flags));
            i += step;
        }
    }
    Some(keys)
}

/// A key's flags where the key spec says they vary (`variable_flags`),
/// as the command's own key finder gives them: SET's key is read too
/// with GET (Redis's `setGetKeys`).
fn variable_flags(command: &Command, args: &[Vec<u8>]) -> Option<&'static [&'static str]> {
    if command.name == "bitfield" {
        // Redis's bitfieldGetKeys: read-only when every operation is a GET.
        let mut i = 2;
        while i < args.len() {
            let left = args.len() - i - 1;
            match lower(&args[i]).as_str() {
                "get" if left >= 2 => i += 3,
                "overflow" if left >= 1 => i += 2,
                _ => return Some(&["RW", "access", "update"]),
            }
        }
        return Some(&["RO", "access"]);
    }
    if command.name != "set" {
        return None;
    }
    let get = args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get"));
    Some(if get { &["RW", "access", "update"] } else { &["OW", "update"] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    /// COMMAND as the dispatcher runs it: its subcommand and arity
    /// checked first.
    fn run(line: &str) -> Reply {
        let args = words(line);
        match super::super::commands::checked_command(&args) {
            Ok(_) => command(&args),
            Err(reply) => reply,
        }
    }

    fn keys(line: &str) -> Option<Vec<String>> {
        let args = words(line);
        let command = command_of(&args)?;
        let found = keys_of(command, &args)?;
        Some(
            found
                .into_iter()
                .map(|(i, _)| line.split(' ').nth(i).unwrap_or("").to_owned())
                .collect(),
        )
    }

    #[test]
    fn keys_are_found_by_the_key_specs() {
        assert_eq!(keys("get a"), Some(vec!["a".into()]));
        assert_eq!(keys("mset a 1 b 2"), Some(vec!["a".into(), "b".into()]));
        // An odd MSET still yields the keys at odd positions, as Redis's.
        assert_eq!(keys("mset a 1 b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys("del a b c"), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(keys("rename a b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(keys("ping"), Some(vec![]));
    }

    #[test]
    fn keyword_and_keynum_specs_follow_redis() {
        // ZUNIONSTORE's specs: the destination, then numkeys keys.
        const SPECS: &[KeySpec] = &[
            KeySpec {
                flags: &["OW", "update"],
                notes: None,
                begin: BeginSearch::Index(1),
                find: FindKeys::Range { last_key: 0, key_step: 1, limit: 0 },
            },
            KeySpec {
                flags: &["RO", "access"],
                notes: None,
                begin: BeginSearch::Index(2),
                find: FindKeys::KeyNum { key_num_index: 0, first_key: 1, key_step: 1 },
            },
        ];
        let mut zunionstore = *table::lookup("get").expect("get");
        zunionstore.name = "zunionstore";
        zunionstore.key_specs = SPECS;
        let args = words("zunionstore d 2 a b weights 1 2");
        let found: Vec<usize> =
            keys_of(&zunionstore, &args).expect("keys").into_iter().map(|(i, _)| i).collect();
        assert_eq!(found, vec![1, 3, 4]);
        assert_eq!(keys_of(&zunionstore, &words("zunionstore d 5 a b")), None);
        assert_eq!(keys_of(&zunionstore, &words("zunionstore d x a b")), None);
        // A keyword searched from the end (MIGRATE's KEYS).
        const KEYWORD: &[KeySpec] = &[KeySpec {
            flags: &["RW"],
            notes: None,
            begin: BeginSearch::Keyword { keyword: "keys", start_from: -2 },
            find: FindKeys::Range { last_key: -1, key_step: 1, limit: 0 },
        }];
        zunionstore.key_specs = KEYWORD;
        let found: Vec<usize> = keys_of(&zunionstore, &words("migrate h p \"\" 0 5 KEYS a b"))
            .expect("keys")
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, vec![7, 8]);
        assert_eq!(keys_of(&zunionstore, &words("migrate h p k 0 5")), Some(vec![]));
    }

    #[test]
    fn getkeys_errors_are_redis_words() {
        let err = |line: &str| match run(line) {
            Reply::Error(e) => e,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(err("COMMAND GETKEYS nosuch a"), "ERR Invalid command specified");
        assert_eq!(err("COMMAND GETKEYS ping x"), "ERR The command has no key arguments");
        assert_eq!(
            err("COMMAND GETKEYS get a b"),
            "ERR Invalid number of arguments specified for command"
        );
        assert_eq!(err("COMMAND GETKEYS client nosuch"), "ERR Invalid command specified");
        assert_eq!(err("COMMAND GETKEYS client id"), "ERR The command has no key arguments");
        assert_eq!(
            err("COMMAND GETKEYS get"),
            "ERR wrong number of arguments for 'command|getkeys' command"
        );
        assert_eq!(err("COMMAND foo bar"), "ERR unknown subcommand 'foo'. Try COMMAND HELP.");
        assert_eq!(
            err("COMMAND COUNT x"),
            "ERR wrong number of arguments for 'command|count' command"
        );
        assert_eq!(err("COMMAND LIST FILTERBY x y"), SYNTAX);
        assert_eq!(err("COMMAND LIST x"), SYNTAX);
    }

    #[test]
    fn set_flags_depend_on_get() {
        let flags = |line: &str| match run(line) {
            Reply::Array(keys) => keys,
            other => panic!("{other:?}"),
        };
        let with_get = flags("COMMAND GETKEYSANDFLAGS set k v get");
        let plain = flags("COMMAND GETKEYSANDFLAGS set k v");
        assert_eq!(
            with_get,
            vec![Reply::Array(vec![Reply::bulk("k"), simples(&["RW", "access", "update"])])]
        );
        assert_eq!(plain, vec![Reply::Array(vec![Reply::bulk("k"), simples(&["OW", "update"])])]);
    }

    #[test]
    fn info_docs_list_and_count_answer_from_the_table() {
        assert_eq!(run("COMMAND COUNT"), Reply::Int(COMMANDS.len() as i64));
        let Reply::Array(entries) = run("COMMAND INFO get nosuch CLIENT|ID") else {
            panic!("an array")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1], Reply::Null);
        let Reply::Array(get) = &entries[0] else { panic!("an entry") };
        assert_eq!(get[0], Reply::bulk("get"));
        assert_eq!(get[1], Reply::Int(2));
        let Reply::Array(id) = &entries[2] else { panic!("an entry") };
        assert_eq!(id[0], Reply::bulk("client|id"));
        let Reply::Map(docs) = run("COMMAND DOCS get nosuch") else { panic!("a map") };
        assert_eq!(docs.len(), 1);
        let Reply::Array(all) = run("COMMAND") else { panic!("an array") };
        assert_eq!(all.len(), COMMANDS.len());
        let Reply::Array(names) = run("COMMAND LIST FILTERBY PATTERN CLIENT|*ID") else {
            panic!("an array")
        };
        let names: Vec<Reply> = names;
        assert_eq!(names, ["client|id"].map(bulk).to_vec());
        let Reply::Array(hashes) = run("COMMAND LIST FILTERBY ACLCAT HASH") else {
            panic!("an array")
        };
        assert!(hashes.contains(&bulk("hset")) && !hashes.contains(&bulk("get")));
    }
}
