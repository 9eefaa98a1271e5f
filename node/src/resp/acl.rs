//! Access control lists: users, their passwords, and which commands, keys
//! and Pub/Sub channels each may use, as Redis 7.0's ACL (`src/acl.c`)
//! defines them. The rules are Redis's `ACL SETUSER` words (`on`, `>pass`,
//! `#sha256`, `+cmd`, `-@category`, `+cmd|sub`, `~pattern`, `%R~pattern`,
//! `&channel`, `(selector)`, `reset`, ...); a user's description
//! (`ACL LIST`, `ACL GETUSER`) is made by Redis's algorithm, so rules set
//! on Redis read back the same here, except that single commands are
//! listed in name order where Redis lists them in its hash table's order.
//!
//! The users apply to the Redis protocol. The native protocol and the
//! cluster's peers authenticate with the node's password
//! (`serve --requirepass`), which is also the `default` user's password at
//! start. Users live in memory, as on a Redis without an ACL file: a
//! restart starts again from the `default` user.
//!
//! Command ids: every row of [`super::table::COMMANDS`] and each of its
//! subcommands has one (its place in table order); a selector keeps one
//! bit per id. Passwords are kept as SHA-256 hex digests and compared in
//! constant time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::glob;
use super::table::{Command, Flag, COMMANDS};

/// Redis 7.0's ACL categories, in its order (`ACL CAT`, descriptions).
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// Entries `ACL LOG` keeps (Redis's `acllog-max-len` default); the oldest
/// go first.
pub const LOG_ENTRIES_MAX: usize = 128;

/// Denials of the same kind within this many ms count as one log entry
/// (Redis's `ACL_LOG_GROUPING_MAX_TIME_DELTA`).
const LOG_GROUPING_MS: u128 = 60_000;

/// Every command and subcommand of the table, by id.
struct Ids {
    rows: Vec<&'static Command>,
    by_name: HashMap<&'static str, usize>,
    /// For a container: the ids of its subcommands.
    children: Vec<Vec<usize>>,
    /// For a subcommand: its container's id.
    parent: Vec<Option<usize>>,
}

static IDS: LazyLock<Ids> = LazyLock::new(|| {
    let mut ids =
        Ids { rows: Vec::new(), by_name: HashMap::new(), children: Vec::new(), parent: Vec::new() };
    for command in COMMANDS {
        let id = ids.rows.len();
        ids.rows.push(command);
        ids.by_name.insert(command.name, id);
        ids.children.push(Vec::new());
        ids.parent.push(None);
        for sub in command.subcommands {
            let sub_id = ids.rows.len();
            ids.rows.push(sub);
            ids.by_name.insert(sub.name, sub_id);
            ids.children.push(Vec::new());
            ids.parent.push(Some(id));
            ids.children[id].push(sub_id);
        }
    }
    ids
});

fn id_of(command: &Command) -> Option<usize> {
    IDS.by_name.get(command.name).copied()
}

fn has_category(id: usize, category: &str) -> bool {
    IDS.rows[id].acl_categories.iter().any(|c| c.strip_prefix('@') == Some(category))
}

/// Why a command was refused, with the argument index of the key or
/// channel at fault (Redis's `ACL_DENIED_*`, in its order of relevance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denied {
    Command,
    Key(usize),
    Channel(usize),
}

impl Denied {
    fn rank(self) -> (u8, usize) {
        match self {
            Denied::Command => (0, 0),
            Denied::Key(i) => (1, i),
            Denied::Channel(i) => (2, i),
        }
    }

    /// The error a client gets (Redis's `processCommand`).
    pub fn message(self, command: &str) -> String {
        match self {
            Denied::Command => {
                format!("NOPERM this user has no permissions to run the '{command}' command")
            }
            Denied::Key(_) => "NOPERM this user has no permissions to access one of the keys used \
                               as arguments"
                .into(),
            Denied::Channel(_) => "NOPERM this user has no permissions to access one of the \
                                   channels used as arguments"
                .into(),
        }
    }

    /// How EXEC refuses a queued command the user may no longer run
    /// (Redis's execCommand).
    pub fn exec_message(self) -> String {
        let reason = match self {
            Denied::Command => "no permission to execute the command or subcommand",
            Denied::Key(_) => "no permission to touch the specified keys",
            Denied::Channel(_) => "no permission to access one of the channels used as arguments",
        };
        format!(
            "NOPERM ACLs rules changed between the moment the transaction was accumulated and \
             the EXEC call. This command is no longer allowed for the following reason: {reason}"
        )
    }

    /// How a script's call is refused (Redis's `getAclErrorMessage`).
    pub fn script_message(self) -> &'static str {
        match self {
            Denied::Command => "can't run this command or subcommand",
            Denied::Key(_) => {
                "can't access at least one of the keys mentioned in the command arguments"
            }
            Denied::Channel(_) => "can't publish to the channel mentioned in the command",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Denied::Command => "command",
            Denied::Key(_) => "key",
            Denied::Channel(_) => "channel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    pattern: Vec<u8>,
    read: bool,
    write: bool,
}

impl KeyPattern {
    fn describe(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match (self.read, self.write) {
            (true, true) => b"~",
            (true, false) => b"%R~",
            _ => b"%W~",
        });
        out.extend_from_slice(&self.pattern);
    }
}

/// A set of permissions (Redis's selector): a user holds a root one and
/// any number of `(...)` ones, and may run a command when one allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    /// Set by `+@all`, cleared by any removal: commands are not checked.
    all_commands: bool,
    /// Set by `+@all` and cleared only by `-@all`: the description starts
    /// from `+@all` (Redis's reserved "future commands" bit).
    from_all: bool,
    allowed: Vec<bool>,
    /// First arguments allowed of a command otherwise refused
    /// (`+select|0`), by command id.
    first_args: BTreeMap<usize, Vec<Vec<u8>>>,
    all_keys: bool,
    keys: Vec<KeyPattern>,
    all_channels: bool,
    channels: Vec<Vec<u8>>,
}

impl Selector {
    fn new() -> Selector {
        Selector {
            all_commands: false,
            from_all: false,
            allowed: vec![false; IDS.rows.len()],
            first_args: BTreeMap::new(),
            all_keys: false,
            keys: Vec::new(),
            // Redis 7.0's `acl-pubsub-default` is `resetchannels`.
            all_channels: false,
            channels: Vec::new(),
        }
    }

    fn set_bit(&mut self, id: usize, allow: bool) {
        self.allowed[id] = allow;
        if !allow {
            self.all_commands = false;
        }
    }

    /// Redis's `ACLChangeSelectorPerm`: the command and its subcommands.
    fn change(&mut self, id: usize, allow: bool) {
        self.set_bit(id, allow);
        self.first_args.remove(&id);
        for &sub in &IDS.children[id] {
            self.set_bit(sub, allow);
        }
    }

    fn set_category(&mut self, category: &str, allow: bool) {
        for id in 0..IDS.rows.len() {
            if has_category(id, category) {
                self.change(id, allow);
            }
        }
    }

    fn set_all(&mut self, allow: bool) {
        self.allowed.iter_mut().for_each(|b| *b = allow);
        self.all_commands = allow;
        self.from_all = allow;
        self.first_args.clear();
    }

    /// One rule of a selector (Redis's `ACLSetSelector`), or why not.
    fn apply(&mut self, op: &[u8]) -> Result<(), &'static str> {
        let lower = op.to_ascii_lowercase();
        match &lower[..] {
            b"allkeys" | b"~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            b"resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            b"allchannels" | b"&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            b"resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            b"allcommands" | b"+@all" => self.set_all(true),
            b"nocommands" | b"-@all" => self.set_all(false),
            _ if op[0] == b'~' || op[0] == b'%' => {
                if self.all_keys {
                    return Err(ADDING_AFTER_ALL_KEYS);
                }
                let (mut read, mut write, mut at) = (false, false, 1);
                if op[0] == b'%' {
                    // `%~pattern` grants nothing: Redis refuses it.
                    if op.get(1) == Some(&b'~') {
                        return Err(SYNTAX_ERROR);
                    }
                    loop {
                        match op.get(at).map(u8::to_ascii_uppercase) {
                            Some(b'R') if !read => read = true,
                            Some(b'W') if !write => write = true,
                            Some(b'~') => {
                                at += 1;
                                break;
                            }
                            _ => return Err(SYNTAX_ERROR),
                        }
                        at += 1;
                    }
                } else {
                    (read, write) = (true, true);
                }
                let pattern = &op[at..];
                if has_spaces(pattern) {
                    return Err(SYNTAX_ERROR);
                }
                match self.keys.iter_mut().find(|k| k.pattern == pattern) {
                    Some(k) => {
                        k.read |= read;
                        k.write |= write;
                    }
                    None => self.keys.push(KeyPattern { pattern: pattern.to_vec(), read, write }),
                }
                self.all_keys = false;
            }
            _ if op[0] == b'&' => {
                if self.all_channels {
                    return Err(ADDING_AFTER_ALL_CHANNELS);
                }
                let pattern = &op[1..];
                if has_spaces(pattern) {
                    return Err(SYNTAX_ERROR);
                }
                if !self.channels.iter().any(|c| c == pattern) {
                    self.channels.push(pattern.to_vec());
                }
                self.all_channels = false;
            }
            _ if (op[0] == b'+' || op[0] == b'-') && op.get(1) == Some(&b'@') => {
                let category = String::from_utf8_lossy(&lower[2..]);
                if !CATEGORIES.contains(&&*category) {
                    return Err(UNKNOWN_NAME);
                }
                self.set_category(&category, op[0] == b'+');
            }
            _ if op[0] == b'+' || op[0] == b'-' => {
                let name = String::from_utf8_lossy(&lower[1..]).into_owned();
                let allow = op[0] == b'+';
                if let Some(&id) = IDS.by_name.get(name.as_str()) {
                    self.change(id, allow);
                    return Ok(());
                }
                // `+cmd|first-arg` of a command without subcommands.
                let Some((command, first)) = name.rsplit_once('|') else {
                    return Err(UNKNOWN_NAME);
                };
                let Some(&id) = IDS.by_name.get(command) else { return Err(UNKNOWN_NAME) };
                if !allow || !IDS.children[id].is_empty() {
                    return Err(UNKNOWN_NAME);
                }
                if IDS.parent[id].is_some() {
                    return Err("Allowing first-arg of a subcommand is not supported");
                }
                if first.is_empty() {
                    return Err(SYNTAX_ERROR);
                }
                let first = op[op.len() - first.len()..].to_vec();
                let allowed = self.first_args.entry(id).or_default();
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&first)) {
                    allowed.push(first);
                }
            }
            _ => return Err(SYNTAX_ERROR),
        }
        Ok(())
    }

    /// Whether this selector lets `command` (the row run: a subcommand's
    /// own) run with `args` (Redis's `ACLSelectorCheckCmd`).
    fn check(&self, command: &Command, id: usize, args: &[Vec<u8>]) -> Result<(), Denied> {
        if !self.all_commands && !command.has(Flag::NoAuth) && !self.allowed[id] {
            let at = if IDS.parent[id].is_some() { 2 } else { 1 };
            let first_ok = match (self.first_args.get(&id), args.get(at)) {
                (Some(allowed), Some(arg)) => allowed.iter().any(|a| a.eq_ignore_ascii_case(arg)),
                _ => false,
            };
            if !first_ok {
                return Err(Denied::Command);
            }
        }
        // Monotable's MT.* commands read whole ranges: they need every key.
        if command.handler == super::table::Handler::Mt && !self.reads_every_key() {
            return Err(Denied::Key(1.min(args.len().saturating_sub(1))));
        }
        if !self.all_keys && !command.key_specs.is_empty() {
            for (at, flags) in super::introspect::keys_of(command, args).unwrap_or_default() {
                let read = flags.contains(&"access");
                let write = flags.iter().any(|f| matches!(*f, "insert" | "delete" | "update"));
                let ok = self.keys.iter().any(|k| {
                    (k.read || !read) && (k.write || !write) && glob::matches(&k.pattern, &args[at])
                });
                if !ok {
                    return Err(Denied::Key(at));
                }
            }
        }
        if !self.all_channels {
            for (at, pattern) in channels(command.name, args) {
                let ok = self.channels.iter().any(|c| {
                    if pattern {
                        c == &args[at]
                    } else {
                        glob::matches(c, &args[at])
                    }
                });
                if !ok {
                    return Err(Denied::Channel(at));
                }
            }
        }
        Ok(())
    }

    /// Whether it may read any key (`allkeys`, `~*` or `%R~*`).
    fn reads_every_key(&self) -> bool {
        self.all_keys || self.keys.iter().any(|k| k.read && k.pattern == b"*")
    }

    /// The selector's keys, channels and commands as rules (Redis's
    /// `ACLDescribeSelector`), each followed by a space but the last.
    fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.all_keys {
            out.extend_from_slice(b"~* ");
        } else {
            for k in &self.keys {
                k.describe(&mut out);
                out.push(b' ');
            }
        }
        if self.all_channels {
            out.extend_from_slice(b"&* ");
        } else {
            out.extend_from_slice(b"resetchannels ");
            for c in &self.channels {
                out.push(b'&');
                out.extend_from_slice(c);
                out.push(b' ');
            }
        }
        out.extend_from_slice(self.describe_commands().as_bytes());
        out
    }

    fn keys_text(&self) -> Vec<u8> {
        if self.all_keys {
            return b"~*".to_vec();
        }
        let mut out = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            k.describe(&mut out);
        }
        out
    }

    fn channels_text(&self) -> Vec<u8> {
        if self.all_channels {
            return b"&*".to_vec();
        }
        let words: Vec<Vec<u8>> = self.channels.iter().map(|c| [&b"&"[..], c].concat()).collect();
        words.join(&b' ')
    }

    /// The command rules that rebuild this selector's bits (Redis's
    /// `ACLDescribeSelectorCommandRules`): `+@all` or `-@all`, then the
    /// categories that fit best, one at a time, then single commands.
    fn describe_commands(&self) -> String {
        let mut rules = Vec::new();
        let additive = !self.from_all;
        let mut fake = Selector::new();
        if additive {
            rules.push("-@all".to_string());
        } else {
            rules.push("+@all".to_string());
            fake.set_all(true);
        }
        let mut temp = self.clone();
        let mut applied = [false; CATEGORIES.len()];
        loop {
            let mut best = None;
            let (mut min_diff, mut max_same) = (usize::MAX, 0);
            for (j, category) in CATEGORIES.iter().enumerate() {
                if applied[j] {
                    continue;
                }
                let (mut on, mut off) = (0, 0);
                for id in (0..IDS.rows.len()).filter(|&id| has_category(id, category)) {
                    if temp.allowed[id] {
                        on += 1;
                    } else {
                        off += 1;
                    }
                }
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                if same > diff && (diff < min_diff || (diff == min_diff && same > max_same)) {
                    best = Some(j);
                    min_diff = diff;
                    max_same = same;
                }
            }
            let Some(j) = best else { break };
            fake.set_category(CATEGORIES[j], additive);
            temp.set_category(CATEGORIES[j], !additive);
            rules.push(format!("{}@{}", if additive { '+' } else { '-' }, CATEGORIES[j]));
            applied[j] = true;
        }
        for id in 0..IDS.rows.len() {
            let user_bit = self.allowed[id];
            if user_bit != fake.allowed[id] {
                rules.push(format!("{}{}", if user_bit { '+' } else { '-' }, IDS.rows[id].name));
                fake.change(id, user_bit);
            }
            if !user_bit {
                for first in self.first_args.get(&id).into_iter().flatten() {
                    let first = String::from_utf8_lossy(first);
                    rules.push(format!("+{}|{first}", IDS.rows[id].name));
                }
            }
        }
        rules.join(" ")
    }
}

/// The channels `args` names for ACL (Redis's `getChannelsFromCommand`
/// for the commands that publish or subscribe): argument index, and
/// whether it is a pattern (PSUBSCRIBE's, matched literally).
fn channels(command: &str, args: &[Vec<u8>]) -> Vec<(usize, bool)> {
    match command {
        "publish" | "spublish" if args.len() > 1 => vec![(1, false)],
        "subscribe" | "ssubscribe" => (1..args.len()).map(|i| (i, false)).collect(),
        "psubscribe" => (1..args.len()).map(|i| (i, true)).collect(),
        _ => Vec::new(),
    }
}

const SYNTAX_ERROR: &str = "Syntax error";
const UNKNOWN_NAME: &str = "Unknown command or category name in ACL";
const ADDING_AFTER_ALL_KEYS: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) \
     is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of \
     patterns";
const ADDING_AFTER_ALL_CHANNELS: &str = "Adding a pattern after the * pattern (or the \
     'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start \
     with an empty list of channels";
const BAD_HASH: &str =
    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal \
     characters";

fn has_spaces(s: &[u8]) -> bool {
    s.iter().any(|&b| b.is_ascii_whitespace() || b == 0 || b == 0x0b)
}

/// SHA-256 of `password` in lowercase hex, as Redis keeps passwords.
pub fn hash_password(password: &[u8]) -> String {
    let digest = Sha256::digest(password);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_hash(hash: &[u8]) -> bool {
    hash.len() == 64 && hash.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Compares two hex digests in time that does not depend on where they
/// differ.
fn same_hash(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// One ACL user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: Vec<u8>,
    enabled: bool,
    nopass: bool,
    /// `skip-sanitize-payload` (`Some(false)`) or `sanitize-payload`
    /// (`Some(true)`), once set.
    sanitize: Option<bool>,
    passwords: Vec<String>,
    /// The root selector first, then the `(...)` ones.
    selectors: Vec<Selector>,
}

impl User {
    fn new(name: &[u8]) -> User {
        User {
            name: name.to_vec(),
            enabled: false,
            nopass: false,
            sanitize: None,
            passwords: Vec::new(),
            selectors: vec![Selector::new()],
        }
    }

    pub fn name_text(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// May run anything: no check is needed.
    pub fn unrestricted(&self) -> bool {
        self.selectors.iter().any(|s| s.all_commands && s.all_keys && s.all_channels)
    }

    /// Whether every password works (and so a new connection is
    /// authenticated as this user when it is `default`).
    pub fn nopass(&self) -> bool {
        self.nopass
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn password_ok(&self, given: &[u8]) -> bool {
        if self.nopass {
            return true;
        }
        let hashed = hash_password(given);
        // Every password is compared: no early exit.
        self.passwords.iter().fold(false, |ok, p| same_hash(p, &hashed) | ok)
    }

    /// One `ACL SETUSER` rule (Redis's `ACLSetUser`), or why not.
    fn apply(&mut self, op: &[u8]) -> Result<(), &'static str> {
        if op.is_empty() {
            return Ok(());
        }
        match &op.to_ascii_lowercase()[..] {
            b"on" => self.enabled = true,
            b"off" => self.enabled = false,
            b"skip-sanitize-payload" => self.sanitize = Some(false),
            b"sanitize-payload" => self.sanitize = Some(true),
            b"nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            b"resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            b"clearselectors" => self.selectors.truncate(1),
            b"reset" => {
                self.nopass = false;
                self.passwords.clear();
                self.enabled = false;
                self.sanitize = Some(true);
                self.selectors = vec![Selector::new()];
            }
            _ if op[0] == b'>' || op[0] == b'#' => {
                let hash = if op[0] == b'>' {
                    hash_password(&op[1..])
                } else if valid_hash(&op[1..]) {
                    String::from_utf8_lossy(&op[1..]).into_owned()
                } else {
                    return Err(BAD_HASH);
                };
                if !self.passwords.contains(&hash) {
                    self.passwords.push(hash);
                }
                self.nopass = false;
            }
            _ if op[0] == b'<' || op[0] == b'!' => {
                let hash = if op[0] == b'<' {
                    hash_password(&op[1..])
                } else if valid_hash(&op[1..]) {
                    String::from_utf8_lossy(&op[1..]).into_owned()
                } else {
                    return Err(BAD_HASH);
                };
                let before = self.passwords.len();
                self.passwords.retain(|p| *p != hash);
                if self.passwords.len() == before {
                    return Err(
                        "The password you are trying to remove from the user does not exist",
                    );
                }
            }
            _ if op[0] == b'(' && op[op.len() - 1] == b')' && op.len() >= 2 => {
                let mut selector = Selector::new();
                let inner = String::from_utf8_lossy(&op[1..op.len() - 1]).into_owned();
                for word in inner.split_ascii_whitespace() {
                    selector.apply(word.as_bytes())?;
                }
                self.selectors.push(selector);
            }
            _ => self.selectors[0].apply(op)?,
        }
        Ok(())
    }

    /// Whether the user may run `command` (the row run: a subcommand's
    /// own) with `args`: one selector allowing it is enough; otherwise the
    /// most relevant refusal (Redis's `ACLCheckAllUserCommandPerm`).
    pub fn check(&self, command: &Command, args: &[Vec<u8>]) -> Result<(), Denied> {
        let Some(id) = id_of(command) else { return Err(Denied::Command) };
        let mut worst = Denied::Command;
        for selector in &self.selectors {
            match selector.check(command, id, args) {
                Ok(()) => return Ok(()),
                Err(denied) if denied.rank() > worst.rank() => worst = denied,
                Err(_) => {}
            }
        }
        Err(worst)
    }

    /// Whether the user may run `command` with `args` and read every key
    /// while at it (Redis's `ACLUserCheckCmdWithUnrestrictedKeyAccess` for
    /// read access): SORT's BY and GET read keys no argument names.
    pub fn reads_every_key(&self, command: &Command, args: &[Vec<u8>]) -> bool {
        let Some(id) = id_of(command) else { return false };
        self.selectors.iter().any(|s| s.reads_every_key() && s.check(command, id, args).is_ok())
    }

    /// Whether some channel it could subscribe to under `self` it can no
    /// longer under `now` (its subscribers must then go, as Redis's
    /// `ACLKillPubsubClientsIfNeeded` closes them).
    pub fn channels_narrowed(&self, now: &User) -> bool {
        if now.selectors.iter().any(|s| s.all_channels) {
            return false;
        }
        let rules = |u: &User| -> Vec<(bool, Vec<Vec<u8>>)> {
            u.selectors.iter().map(|s| (s.all_channels, s.channels.clone())).collect()
        };
        rules(self) != rules(now)
    }

    /// The user as `ACL LIST` shows it, without `user NAME ` (Redis's
    /// `ACLDescribeUser`).
    pub fn describe(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for flag in self.flags() {
            out.extend_from_slice(flag.as_bytes());
            out.push(b' ');
        }
        for p in &self.passwords {
            out.push(b'#');
            out.extend_from_slice(p.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.selectors[0].describe());
        for s in &self.selectors[1..] {
            out.extend_from_slice(b" (");
            out.extend_from_slice(&s.describe());
            out.push(b')');
        }
        out
    }

    fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        match self.sanitize {
            Some(false) => flags.push("skip-sanitize-payload"),
            Some(true) => flags.push("sanitize-payload"),
            None => {}
        }
        flags
    }
}

/// What `ACL GETUSER` shows of a user.
pub struct UserView {
    pub flags: Vec<&'static str>,
    pub passwords: Vec<String>,
    /// (commands, keys, channels) of the root selector, then of each other.
    pub selectors: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl User {
    pub fn view(&self) -> UserView {
        UserView {
            flags: self.flags(),
            passwords: self.passwords.clone(),
            selectors: self
                .selectors
                .iter()
                .map(|s| (s.describe_commands(), s.keys_text(), s.channels_text()))
                .collect(),
        }
    }
}

/// Where a refused command came from (`ACL LOG`'s `context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Toplevel,
    Multi,
    Lua,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Toplevel => "toplevel",
            Context::Multi => "multi",
            Context::Lua => "lua",
        }
    }
}

/// One `ACL LOG` entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub count: u64,
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    pub context: Context,
    pub object: Vec<u8>,
    pub username: Vec<u8>,
    pub at: Instant,
    pub client_info: String,
}

/// The node's users and the ACL log.
pub struct Acl {
    /// The `default` user's password at start (`serve --requirepass`).
    default_password: Option<Vec<u8>>,
    /// `serve --aclfile`: where ACL LOAD and SAVE read and write users.
    file: Option<std::path::PathBuf>,
    users: RwLock<BTreeMap<Vec<u8>, Arc<User>>>,
    /// Bumped by every change, so a connection knows to look its user up
    /// again (see [`Acl::refresh`]).
    generation: AtomicU64,
    log: Mutex<VecDeque<LogEntry>>,
}

/// A connection's user, as of a generation of the users.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: Arc<User>,
    generation: u64,
}

impl Acl {
    /// The `default` user alone: every command, key and channel, with
    /// `password` (`serve --requirepass`) or `nopass`.
    pub fn new(password: Option<&[u8]>) -> Acl {
        let default_password = password.map(<[u8]>::to_vec);
        let mut users = BTreeMap::new();
        users.insert(b"default".to_vec(), Arc::new(default_user(default_password.as_deref())));
        Acl {
            default_password,
            file: None,
            users: RwLock::new(users),
            generation: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// [`Acl::new`] with its users read from `path` (`serve --aclfile`),
    /// as [`Acl::load`] reads them.
    pub fn with_file(password: Option<&[u8]>, path: &std::path::Path) -> Result<Acl, String> {
        let mut acl = Acl::new(password);
        acl.file = Some(path.to_owned());
        acl.load()?;
        Ok(acl)
    }

    /// This with `path` as its ACL file, its users as they are.
    pub fn with_path(mut self, path: &std::path::Path) -> Acl {
        self.file = Some(path.to_owned());
        self
    }

    /// The ACL file, if the node has one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// ACL LOAD: replaces every user with those of the ACL file, one
    /// `user NAME RULES...` line each (blank lines and `#` comments
    /// skipped; words split at spaces, no quoting), as Redis's
    /// `ACLLoadFromFile`: all or nothing. A file that does not define
    /// `default` keeps the start's one. A missing file holds no user.
    pub fn load(&self) -> Result<(), String> {
        let Some(path) = &self.file else { return Err(NO_ACL_FILE.into()) };
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(format!(
                    "ERR Error loading ACLs, opening file '{}': {e}",
                    path.display()
                ))
            }
        };
        let mut users = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let words: Vec<Vec<u8>> = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            if words.is_empty() || words[0].starts_with(b"#") {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            if words[0] != b"user" || words.len() < 2 {
                errors.push(format!("{at}: should start with user keyword"));
                continue;
            }
            if users.contains_key(&words[1]) {
                errors.push(format!(
                    "{at}: Duplicate user '{}' found",
                    String::from_utf8_lossy(&words[1])
                ));
                continue;
            }
            match build_user(None, &words[1], &words[2..]) {
                Ok(user) => {
                    users.insert(words[1].clone(), Arc::new(user));
                }
                Err(e) => errors.push(format!(
                    "{at}: {}",
                    e.trim_start_matches("ERR ")
                        .replace("Error in ACL SETUSER modifier", "Error in applying operation")
                )),
            }
        }
        if !errors.is_empty() {
            return Err(format!(
                "ERR {}. WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
                errors.join(". ")
            ));
        }
        users
            .entry(b"default".to_vec())
            .or_insert_with(|| Arc::new(default_user(self.default_password.as_deref())));
        *self.write() = users;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// ACL SAVE: every user as a `user NAME RULES` line (passwords as
    /// their SHA-256), written to a new file made durable before it
    /// replaces the ACL file.
    pub fn save(&self) -> Result<(), String> {
        let Some(path) = &self.file else { return Err(NO_ACL_FILE.into()) };
        let mut text = Vec::new();
        for user in self.all() {
            text.extend_from_slice(b"user ");
            text.extend_from_slice(&user.name);
            text.push(b' ');
            text.extend_from_slice(&user.describe());
            text.push(b'\n');
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        crate::storage::manifest::write_file_durably(dir, &name, &text).map_err(|e| {
            tracing::error!(path = %path.display(), error = %e, "ACL SAVE failed");
            "ERR There was an error trying to save the ACLs. Please check the server logs for more information".to_string()
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Arc<User>>> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Arc<User>>> {
        self.users.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn user(&self, name: &[u8]) -> Option<Arc<User>> {
        self.read().get(name).cloned()
    }

    pub fn default_user(&self) -> Arc<User> {
        self.user(b"default").expect("the default user cannot be removed")
    }

    /// A session of `user`, as of now.
    pub fn session(&self, user: Arc<User>) -> Session {
        Session { user, generation: self.generation.load(Ordering::Acquire) }
    }

    /// Brings `session` up to date after a change of the users; `false`
    /// when its user was removed.
    pub fn refresh(&self, session: &mut Session) -> bool {
        let now = self.generation.load(Ordering::Acquire);
        if session.generation == now {
            return true;
        }
        match self.user(&session.user.name) {
            Some(user) => {
                *session = Session { user, generation: now };
                true
            }
            None => false,
        }
    }

    /// The user `name` when it is enabled and `password` is one of its
    /// own (any, for a `nopass` user).
    pub fn credentials(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let user = self.user(name)?;
        (user.enabled && user.password_ok(password)).then_some(user)
    }

    pub fn names(&self) -> Vec<Vec<u8>> {
        self.read().keys().cloned().collect()
    }

    pub fn all(&self) -> Vec<Arc<User>> {
        self.read().values().cloned().collect()
    }

    /// `ACL SETUSER name rules...`: every rule applied to a copy first,
    /// so a bad one changes nothing; Redis's error text otherwise.
    pub fn set_user(&self, name: &[u8], rules: &[Vec<u8>]) -> Result<(), String> {
        let mut users = self.write();
        let user = build_user(users.get(name).map(|u| &**u), name, rules)?;
        users.insert(name.to_vec(), Arc::new(user));
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// `ACL DELUSER`: how many of `names` existed (and are gone).
    pub fn delete_users(&self, names: &[Vec<u8>]) -> Result<usize, String> {
        if names.iter().any(|n| n == b"default") {
            return Err("ERR The 'default' user cannot be removed".into());
        }
        let mut users = self.write();
        let deleted = names.iter().filter(|n| users.remove(*n).is_some()).count();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(deleted)
    }

    /// Adds a denial to the log, or counts it on a matching recent entry.
    pub fn log(&self, entry: LogEntry) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let matching = log.iter().take(10).position(|e| {
            e.reason == entry.reason
                && e.context == entry.context
                && e.object == entry.object
                && e.username == entry.username
                && entry.at.duration_since(e.at).as_millis() < LOG_GROUPING_MS
        });
        match matching.and_then(|i| log.remove(i)) {
            Some(mut found) => {
                found.count += 1;
                found.at = entry.at;
                found.client_info = entry.client_info;
                log.push_front(found);
            }
            None => {
                log.push_front(entry);
                log.truncate(LOG_ENTRIES_MAX);
            }
        }
    }

    /// The newest `count` entries of the log.
    pub fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().take(count).cloned().collect()
    }

    pub fn reset_log(&self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Denied {
    /// The log entry of this refusal of `command` run with `args`.
    pub fn entry(
        self,
        command: &str,
        args: &[Vec<u8>],
        username: &[u8],
        context: Context,
        client_info: String,
    ) -> LogEntry {
        let object = match self {
            Denied::Command => command.as_bytes().to_vec(),
            Denied::Key(i) | Denied::Channel(i) => args.get(i).cloned().unwrap_or_default(),
        };
        LogEntry {
            count: 1,
            reason: self.reason(),
            context,
            object,
            username: username.to_vec(),
            at: Instant::now(),
            client_info,
        }
    }
}

/// What ACL LOAD and SAVE answer on a node without `--aclfile` (Redis's
/// words).
pub const NO_ACL_FILE: &str = "ERR This Redis instance is not configured to use an ACL file. You \
     may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE \
     (assuming you have a Redis configuration file set) in order to store users in the Redis \
     configuration.";

/// The `default` user of a start: every permission, and `password` or
/// `nopass`.
fn default_user(password: Option<&[u8]>) -> User {
    let mut default = User::new(b"default");
    for op in [&b"+@all"[..], b"~*", b"&*", b"on"] {
        default.apply(op).expect("the default user's rules are valid");
    }
    match password {
        Some(p) => default.passwords.push(hash_password(p)),
        None => default.nopass = true,
    }
    default
}

/// `existing` (or a new user `name`) with `rules` applied, or Redis's
/// error for the first that is not valid.
fn build_user(existing: Option<&User>, name: &[u8], rules: &[Vec<u8>]) -> Result<User, String> {
    if has_spaces(name) {
        return Err("ERR Usernames can't contain spaces or null characters".into());
    }
    let rules = merge_selectors(rules)?;
    let mut user = existing.cloned().unwrap_or_else(|| User::new(name));
    for rule in &rules {
        if let Err(why) = user.apply(rule) {
            return Err(format!(
                "ERR Error in ACL SETUSER modifier '{}': {why}",
                String::from_utf8_lossy(rule)
            ));
        }
    }
    Ok(user)
}

/// `ACL SETUSER`'s arguments with each `(...)` selector spread over
/// several of them joined into one (Redis's `ACLMergeSelectorArguments`).
fn merge_selectors(rules: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for rule in rules {
        if let Some(selector) = &mut open {
            selector.push(b' ');
            selector.extend_from_slice(rule);
            if rule.last() == Some(&b')') {
                out.push(open.take().unwrap_or_default());
            }
            continue;
        }
        if rule.first() == Some(&b'(') && rule.last() != Some(&b')') {
            open = Some(rule.clone());
            continue;
        }
        out.push(rule.clone());
    }
    match open {
        Some(selector) => Err(format!(
            "ERR Unmatched parenthesis in acl selector starting at '{}'.",
            String::from_utf8_lossy(selector.split(|&b| b == b' ').next().unwrap_or_default())
        )),
        None => Ok(out),
    }
}

/// The commands (and subcommands) of `category`, in table order, for
/// `ACL CAT`; `None` for an unknown category.
pub fn commands_in(category: &str) -> Option<Vec<&'static str>> {
    let category = category.to_ascii_lowercase();
    CATEGORIES.contains(&category.as_str()).then(|| {
        (0..IDS.rows.len())
            .filter(|&id| has_category(id, &category))
            .map(|id| IDS.rows[id].name)
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    fn args(s: &str) -> Vec<Vec<u8>> {
        words(s)
    }

    fn row(name: &str) -> &'static Command {
        super::super::table::lookup(name).expect("a command")
    }

    fn user(rules: &str) -> Arc<User> {
        let acl = Acl::new(None);
        acl.set_user(b"u", &words(rules)).expect("valid rules");
        acl.user(b"u").expect("made")
    }

    #[test]
    fn descriptions_match_redis() {
        // As redis-server 7.0.15 lists them.
        let acl = Acl::new(None);
        let line =
            |name: &[u8]| String::from_utf8(acl.user(name).expect("ok").describe()).expect("ok");
        assert_eq!(line(b"default"), "on nopass ~* &* +@all");
        acl.set_user(b"bob", &words("on >123 +@scripting +set ~x*")).expect("ok");
        assert_eq!(
            line(b"bob"),
            "on #a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3 ~x* \
             resetchannels -@all +@scripting +set"
        );
        acl.set_user(b"al", &words("%R~a* %W~b* %RW~c* &ch* -@all +@hash -hset (+get ~k*)"))
            .expect("ok");
        assert_eq!(
            line(b"al"),
            "off %R~a* %W~b* ~c* resetchannels &ch* -@all +@hash -hset (~k* resetchannels -@all +get)"
        );
        acl.set_user(b"s", &words("+@all -get -config|set -select +select|0")).expect("ok");
        assert_eq!(line(b"s"), "off resetchannels +@all -config|set -get -select +select|0");
    }

    #[test]
    fn a_bad_rule_changes_nothing() {
        let acl = Acl::new(None);
        acl.set_user(b"u", &words("on +get")).expect("ok");
        let before = acl.user(b"u").expect("ok");
        let err = acl.set_user(b"u", &words("+set +nosuchcommand")).expect_err("refused");
        assert_eq!(
            err,
            "ERR Error in ACL SETUSER modifier '+nosuchcommand': Unknown command or category name in ACL"
        );
        assert_eq!(acl.user(b"u").expect("ok"), before);
        assert!(acl.set_user(b"u", &words("~* ~x")).expect_err("refused").contains("'allkeys'"));
        assert!(acl.set_user(b"u", &words("#abc")).expect_err("refused").contains("64 characters"));
        assert!(acl.set_user(b"u", &words("%~y")).expect_err("refused").contains("Syntax error"));
        assert!(acl
            .set_user(b"u", &words("<nope"))
            .expect_err("refused")
            .contains("does not exist"));
        assert!(acl.set_user(b"u", &words("(+get ~x")).expect_err("refused").contains("Unmatched"));
        assert!(acl.set_user(b"a b", &[]).expect_err("refused").contains("spaces"));
    }

    #[test]
    fn commands_keys_and_channels_are_checked() {
        let u = user("on nopass +@read +set -@dangerous ~app:* %R~ro:* &news.*");
        assert_eq!(u.check(row("get"), &args("get app:1")), Ok(()));
        assert_eq!(u.check(row("get"), &args("get ro:1")), Ok(()));
        assert_eq!(u.check(row("set"), &args("set ro:1 v")), Err(Denied::Key(1)));
        assert_eq!(u.check(row("get"), &args("get other")), Err(Denied::Key(1)));
        assert_eq!(u.check(row("del"), &args("del app:1")), Err(Denied::Command));
        assert_eq!(u.check(row("mget"), &args("mget app:1 x")), Err(Denied::Key(2)));
        let u = user("on nopass +@pubsub &news.*");
        assert_eq!(u.check(row("publish"), &args("publish news.a m")), Ok(()));
        assert_eq!(u.check(row("publish"), &args("publish other m")), Err(Denied::Channel(1)));
        assert_eq!(u.check(row("psubscribe"), &args("psubscribe news.*")), Ok(()));
        assert_eq!(
            u.check(row("psubscribe"), &args("psubscribe news.a*")),
            Err(Denied::Channel(1))
        );
        // A key named by EVAL is checked; one the script makes up is not.
        let u = user("on nopass +@scripting ~x*");
        assert_eq!(u.check(row("eval"), &args("eval s 1 xx")), Ok(()));
        assert_eq!(u.check(row("eval"), &args("eval s 1 yy")), Err(Denied::Key(3)));
    }

    #[test]
    fn subcommands_and_first_args() {
        let config = row("config");
        let get = super::super::table::subcommand(config, "get").expect("ok");
        let set = super::super::table::subcommand(config, "set").expect("ok");
        let u = user("on nopass +config|get");
        assert_eq!(u.check(get, &args("config get x")), Ok(()));
        assert_eq!(u.check(set, &args("config set x y")), Err(Denied::Command));
        let u = user("on nopass +@all -config|set");
        assert_eq!(u.check(get, &args("config get x")), Ok(()));
        assert_eq!(u.check(set, &args("config set x y")), Err(Denied::Command));
        let u = user("on nopass -@all +select|0");
        assert_eq!(u.check(row("select"), &args("select 0")), Ok(()));
        assert_eq!(u.check(row("select"), &args("select 1")), Err(Denied::Command));
        let acl = Acl::new(None);
        assert!(acl.set_user(b"u", &words("+config|get|x")).is_err());
        assert!(acl.set_user(b"u", &words("-select|0")).is_err());
    }

    #[test]
    fn selectors_each_grant_on_their_own() {
        let u = user("on nopass +get ~a* (+set ~b*)");
        assert_eq!(u.check(row("get"), &args("get a1")), Ok(()));
        assert_eq!(u.check(row("set"), &args("set b1 v")), Ok(()));
        assert_eq!(u.check(row("set"), &args("set a1 v")), Err(Denied::Key(1)));
        assert_eq!(u.check(row("get"), &args("get b1")), Err(Denied::Key(1)));
    }

    #[test]
    fn passwords_and_states() {
        let acl = Acl::new(Some(b"pw"));
        assert!(acl.credentials(b"default", b"pw").is_some());
        assert!(acl.credentials(b"default", b"no").is_none());
        acl.set_user(b"u", &words(">a >b")).expect("ok");
        assert!(acl.credentials(b"u", b"a").is_none(), "off until on");
        acl.set_user(b"u", &words("on <a")).expect("ok");
        assert!(acl.credentials(b"u", b"a").is_none());
        assert!(acl.credentials(b"u", b"b").is_some());
        acl.set_user(b"u", &words("nopass")).expect("ok");
        assert!(acl.credentials(b"u", b"anything").is_some());
        acl.set_user(b"u", &words("reset")).expect("ok");
        assert_eq!(
            String::from_utf8(acl.user(b"u").expect("ok").describe()).expect("ok"),
            "off sanitize-payload resetchannels -@all"
        );
        assert_eq!(acl.delete_users(&words("u nobody")), Ok(1));
        assert!(acl.delete_users(&words("default")).is_err());
    }

    #[test]
    fn the_acl_file_round_trips_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("users.acl");
        let acl = Acl::with_file(Some(b"pw"), &path).expect("no file yet: no users");
        acl.set_user(b"app", &words("on >s3 ~app:* +@read (+set ~w*)")).expect("ok");
        acl.save().expect("saved");
        let again = Acl::with_file(None, &path).expect("loads");
        for name in [&b"default"[..], b"app"] {
            assert_eq!(again.user(name), acl.user(name), "{}", String::from_utf8_lossy(name));
        }
        std::fs::write(&path, "# users\n\nuser x on +get\nuser x off\nbogus\nuser y +nosuch\n")
            .expect("write");
        let err = again.load().expect_err("refused");
        assert!(err.contains(":4: Duplicate user 'x' found"), "{err}");
        assert!(err.contains(":5: should start with user keyword"), "{err}");
        assert!(err.contains(":6: Error in applying operation '+nosuch'"), "{err}");
        assert!(again.user(b"app").is_some(), "nothing changed");
        assert_eq!(Acl::new(None).load(), Err(NO_ACL_FILE.into()));
    }

    #[test]
    fn the_log_groups_repeats() {
        let acl = Acl::new(None);
        for _ in 0..3 {
            acl.log(Denied::Command.entry("get", &[], b"u", Context::Toplevel, String::new()));
        }
        acl.log(Denied::Key(1).entry("get", &args("get k"), b"u", Context::Multi, String::new()));
        let entries = acl.log_entries(10);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].reason, entries[0].object.as_slice()), ("key", &b"k"[..]));
        assert_eq!((entries[1].count, entries[1].reason), (3, "command"));
    }
}
