//! Redis 7.0 functions (`functions.c`, `function_lua.c`): FUNCTION LOAD,
//! DELETE, FLUSH, LIST, DUMP, RESTORE, STATS, KILL, HELP, and the
//! libraries FCALL and FCALL_RO run.
//!
//! A library is Lua code that starts `#!lua name=LIB` and calls
//! `redis.register_function` as it loads; its functions then run like
//! scripts ([`super::start`]: alone, their writes one atomic batch).
//! Library names are case-sensitive, function names not, as in Redis.
//!
//! The node's libraries are durable: every change rewrites
//! `DATA_DIR/functions` (a MessagePack list of libraries with a CRC32C,
//! written to a temporary file, fsynced and renamed), read back at start;
//! a damaged file stops the start with an error rather than losing them.
//! FUNCTION DUMP's payload is the same bytes (not Redis's RDB format: a
//! payload moves between Monotable nodes only), and RESTORE loads each
//! library again to check it. Like the script cache, libraries are per
//! node: on a cluster, load them on every node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::super::args::lower;
use super::super::reply::Reply;
use super::super::state::RespState;
use super::vm::{Registered, ScriptVm};

/// One loaded library.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Library {
    pub name: String,
    /// The whole code, its `#!lua` line included (FUNCTION LIST WITHCODE).
    #[serde(with = "serde_bytes")]
    pub code: Vec<u8>,
    pub functions: Vec<Registered>,
}

/// The node's libraries, by name.
#[derive(Default)]
pub struct Functions {
    libraries: Mutex<BTreeMap<String, Arc<Library>>>,
    /// Where they are kept, once opened.
    path: std::sync::OnceLock<PathBuf>,
    /// Held by a change from reading the libraries to installing them.
    changing: tokio::sync::Mutex<()>,
}

/// What FCALL runs: the library (its code) and the function's name as
/// registered.
pub struct Found {
    pub library: Arc<Library>,
    pub function: String,
    pub no_writes: bool,
    pub allow_oom: bool,
}

const FORMAT_VERSION: u8 = 1;

/// The libraries as bytes: a version byte and their MessagePack, framed
/// with their CRC32C ([`crate::storage::manifest::with_crc`]).
fn encode(libraries: &[Arc<Library>]) -> Vec<u8> {
    let list: Vec<&Library> = libraries.iter().map(|l| l.as_ref()).collect();
    let mut body = vec![FORMAT_VERSION];
    body.extend(rmp_serde::to_vec(&list).expect("libraries serialize"));
    crate::storage::manifest::with_crc(body)
}

/// [`encode`]'s bytes back.
///
/// Errors: a checksum mismatch, another version, or undecodable bytes.
fn decode(bytes: &[u8]) -> Result<Vec<Library>, String> {
    let body = crate::storage::manifest::checked_crc(bytes)?;
    if body.first() != Some(&FORMAT_VERSION) {
        return Err(format!("unknown format {:?}", body.first()));
    }
    rmp_serde::from_slice(&body[1..]).map_err(|e| e.to_string())
}

impl Functions {
    /// Reads the libraries kept at `path` (none when it does not exist).
    ///
    /// Errors: the file cannot be read, or is damaged.
    pub fn open(&self, path: &Path) -> Result<(), String> {
        let _ = self.path.set(path.to_owned());
        let (dir, name) = dir_and_name(path);
        let libraries = match crate::storage::manifest::read_small_file(dir, name, decode) {
            Ok(found) => found.unwrap_or_default(),
            Err(crate::storage::chunk_log::LogError::Corrupt { reason, .. }) => {
                return Err(format!(
                    "{} is damaged ({reason}): move it away to start without its functions",
                    path.display()
                ))
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut held = self.libraries.lock().unwrap_or_else(|p| p.into_inner());
        for l in libraries {
            held.insert(l.name.clone(), Arc::new(l));
        }
        Ok(())
    }

    fn all(&self) -> Vec<Arc<Library>> {
        self.libraries.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The function FCALL names (case-insensitive).
    pub fn find(&self, name: &[u8]) -> Option<Found> {
        let name = String::from_utf8_lossy(name);
        let held = self.libraries.lock().unwrap_or_else(|p| p.into_inner());
        held.values().find_map(|l| {
            let f = l.functions.iter().find(|f| f.name.eq_ignore_ascii_case(&name))?;
            Some(Found {
                library: l.clone(),
                function: f.name.clone(),
                no_writes: f.flags.iter().any(|x| x == "no-writes"),
                allow_oom: f.flags.iter().any(|x| x == "allow-oom"),
            })
        })
    }

    /// Replaces every library with `libraries`, durably first.
    fn install(&self, libraries: BTreeMap<String, Arc<Library>>) -> Result<(), String> {
        if let Some(path) = self.path.get() {
            let list: Vec<Arc<Library>> = libraries.values().cloned().collect();
            let (dir, name) = dir_and_name(path);
            crate::storage::manifest::write_file_durably(dir, name, &encode(&list))
                .map_err(|e| format!("ERR cannot keep the functions in {}: {e}", path.display()))?;
        }
        *self.libraries.lock().unwrap_or_else(|p| p.into_inner()) = libraries;
        Ok(())
    }

    fn current(&self) -> BTreeMap<String, Arc<Library>> {
        self.libraries.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `library`'s functions clash with another library's (not `except`).
    fn clash(
        libraries: &BTreeMap<String, Arc<Library>>,
        library: &Library,
        except: &str,
    ) -> Option<String> {
        library.functions.iter().find_map(|f| {
            libraries
                .values()
                .filter(|l| l.name != except)
                .any(|l| l.functions.iter().any(|g| g.name.eq_ignore_ascii_case(&f.name)))
                .then(|| format!("ERR Function {} already exists", f.name))
        })
    }
}

/// `path` as the directory and file name the storage helpers take.
fn dir_and_name(path: &Path) -> (&Path, &str) {
    let dir = path.parent().unwrap_or(Path::new("."));
    (dir, path.file_name().and_then(|n| n.to_str()).unwrap_or("functions"))
}

/// The name in a library's `#!lua name=...` line, as Redis's
/// `functionExtractLibMetaData` reads it, and its engine checked.
fn library_name(code: &[u8]) -> Result<String, String> {
    if !code.starts_with(b"#!") {
        return Err("ERR Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid library metadata".into());
    };
    let line = String::from_utf8_lossy(&code[..end]);
    let parts = split_args(&line).ok_or("ERR Invalid library metadata")?;
    let mut parts = parts.into_iter();
    let engine =
        parts.next().map(|e| e.get(2..).unwrap_or_default().to_owned()).unwrap_or_default();
    let mut name = None;
    for part in parts {
        match part.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("name=") => {
                if name.is_some() {
                    return Err(
                        "ERR Invalid metadata value, name argument was given multiple times".into(),
                    );
                }
                name = Some(part[5..].to_owned());
            }
            _ => return Err(format!("ERR Invalid metadata value given: {part}")),
        }
    }
    let name = name.ok_or("ERR Library name was not given")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long".into());
    }
    if !engine.eq_ignore_ascii_case("lua") {
        return Err(format!("ERR Engine '{engine}' not found"));
    }
    Ok(name)
}

/// Words as Redis's `sdssplitargs` splits a line: separated by blanks, a
/// word may hold `"..."` (with `\n`, `\r`, `\t`, `\b`, `\a`, `\xHH` and
/// `\` escapes) or `'...'` (only `\'`) parts; `None` when a quote is not
/// closed or is followed by something other than a blank.
fn split_args(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(words);
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\n' | '\r' | '\t' => break,
                '"' | '\'' => {
                    loop {
                        match (c, chars.next()?) {
                            ('"', '"') | ('\'', '\'') => break,
                            ('"', '\\') => match chars.next()? {
                                'n' => word.push('\n'),
                                'r' => word.push('\r'),
                                't' => word.push('\t'),
                                'b' => word.push('\u{8}'),
                                'a' => word.push('\u{7}'),
                                'x' => {
                                    let hex: String =
                                        [chars.next()?, chars.next()?].iter().collect();
                                    word.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                                }
                                other => word.push(other),
                            },
                            ('\'', '\\') if chars.peek() == Some(&'\'') => {
                                chars.next();
                                word.push('\'');
                            }
                            (_, other) => word.push(other),
                        }
                    }
                    if chars.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                        return None;
                    }
                }
                other => word.push(other),
            }
        }
        words.push(word);
    }
}

/// Loads `code` in a VM (on the Lua thread): the library it makes.
async fn load_code(state: &RespState, code: Vec<u8>) -> Result<Library, String> {
    let name = library_name(&code)?;
    let scripts = state.scripts.clone();
    let env = scripts.env(state);
    // A fresh VM, in place of the idle one (whose memory reservation it
    // takes over): a library that is refused leaves nothing behind, and
    // the VM becomes the idle one only once the library loaded.
    super::on_lua_thread(move || {
        let (generation, idle) = scripts.take_vm();
        drop(idle);
        let mut vm = ScriptVm::new(&env)?;
        let code_arc: Arc<[u8]> = Arc::from(code.as_slice());
        let functions = vm.load_library(&name, &code_arc)?;
        scripts.put_vm(generation, vm);
        Ok(Library { name, code, functions })
    })
    .await
    .map_err(|e| format!("ERR loading the library failed: {e}"))?
}

/// FUNCTION and its subcommands (the subcommand and its arity checked by
/// the dispatcher, [`super::super::table::checked_subcommand`]).
pub async fn command(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let sub = lower(&args[1]);
    let functions = &state.scripts.functions;
    let syntax = || super::super::errors::subcommand_syntax(&args[0], &args[1]);
    let reply = match sub.as_str() {
        "load" => {
            let mut replace = false;
            let mut at = 2;
            while at < args.len() - 1 {
                if lower(&args[at]) == "replace" {
                    replace = true;
                    at += 1;
                    continue;
                }
                return Reply::err(format!(
                    "ERR Unknown option given: {}",
                    String::from_utf8_lossy(&args[at])
                ));
            }
            let Some(code) = args.get(at) else {
                return Reply::err("ERR Function code is missing");
            };
            let name = match library_name(code) {
                Ok(name) => name,
                Err(text) => return Reply::err(text),
            };
            if !replace && functions.current().contains_key(&name) {
                return Reply::err(format!("ERR Library '{name}' already exists"));
            }
            let library = match load_code(state, code.clone()).await {
                Ok(l) => l,
                Err(text) => return Reply::err(text),
            };
            let _g = state.scripts.functions.changing.lock().await;
            let mut libraries = functions.current();
            if !replace && libraries.contains_key(&name) {
                return Reply::err(format!("ERR Library '{name}' already exists"));
            }
            if let Some(text) = Functions::clash(&libraries, &library, &name) {
                return Reply::err(text);
            }
            libraries.insert(name.clone(), Arc::new(library));
            match install(state, libraries).await {
                Ok(()) => Reply::bulk(name),
                Err(text) => Reply::err(text),
            }
        }
        "delete" => {
            let _g = state.scripts.functions.changing.lock().await;
            let mut libraries = functions.current();
            let name = String::from_utf8_lossy(&args[2]).into_owned();
            if libraries.remove(&name).is_none() {
                return Reply::err("ERR Library not found");
            }
            install(state, libraries).await.map_or_else(Reply::err, |()| Reply::ok())
        }
        "flush" if args.len() <= 3 => {
            if args.len() == 3 && !matches!(lower(&args[2]).as_str(), "sync" | "async") {
                return Reply::err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option");
            }
            let _g = state.scripts.functions.changing.lock().await;
            install(state, BTreeMap::new()).await.map_or_else(Reply::err, |()| Reply::ok())
        }
        "list" => list(functions, args),
        "dump" => Reply::Bulk(encode(&functions.all())),
        "restore" if args.len() <= 4 => restore(state, args).await,
        "stats" if state.scripts.busy.eval_running() => Reply::err(super::busy::BUSY_EVAL),
        "stats" => {
            let all = functions.all();
            let count = all.iter().map(|l| l.functions.len()).sum::<usize>();
            let lua = Reply::Map(vec![
                (Reply::bulk("libraries_count"), Reply::Int(all.len() as i64)),
                (Reply::bulk("functions_count"), Reply::Int(count as i64)),
            ]);
            let running = match state.scripts.busy.running_function() {
                Some((name, command, ms)) => Reply::Map(vec![
                    (Reply::bulk("name"), Reply::bulk(name.into_bytes())),
                    (
                        Reply::bulk("command"),
                        Reply::Array(command.into_iter().map(Reply::Bulk).collect()),
                    ),
                    (Reply::bulk("duration_ms"), Reply::Int(ms as i64)),
                ]),
                None => Reply::Null,
            };
            Reply::Map(vec![
                (Reply::bulk("running_script"), running),
                (Reply::bulk("engines"), Reply::Map(vec![(Reply::bulk("LUA"), lua)])),
            ])
        }
        "kill" => state.scripts.busy.kill(false).map_or_else(Reply::err, |()| Reply::ok()),
        "help" => Reply::Array(HELP.iter().map(|l| Reply::Status((*l).to_owned())).collect()),
        "flush" | "restore" => syntax(),
        _ => super::super::errors::unknown_subcommand(&args[0], &args[1]),
    };
    if matches!(sub.as_str(), "delete" | "flush" | "restore") {
        // The idle VM holds the libraries FCALL ran: those gone would stay
        // in its memory for good.
        state.scripts.drop_idle_vm();
    }
    reply
}

/// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE].
fn list(functions: &Functions, args: &[Vec<u8>]) -> Reply {
    let (mut with_code, mut pattern) = (false, None);
    let mut i = 2;
    while i < args.len() {
        let word = lower(&args[i]);
        if !with_code && word == "withcode" {
            with_code = true;
        } else if pattern.is_none() && word == "libraryname" {
            let Some(p) = args.get(i + 1) else {
                return Reply::err("ERR library name argument was not given");
            };
            pattern = Some(p.clone());
            i += 1;
        } else {
            return Reply::err(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(&args[i])
            ));
        }
        i += 1;
    }
    let bulk = |s: &str| Reply::bulk(s.to_owned());
    let libraries = functions
        .all()
        .into_iter()
        .filter(|l| {
            pattern.as_ref().is_none_or(|p| super::super::glob::matches(p, l.name.as_bytes()))
        })
        .map(|l| {
            let fns = l
                .functions
                .iter()
                .map(|f| {
                    Reply::Map(vec![
                        (bulk("name"), bulk(&f.name)),
                        (bulk("description"), f.description.as_deref().map_or(Reply::Null, bulk)),
                        (
                            bulk("flags"),
                            Reply::Set(f.flags.iter().map(|x| Reply::Status(x.clone())).collect()),
                        ),
                    ])
                })
                .collect();
            let mut map = vec![
                (bulk("library_name"), bulk(&l.name)),
                (bulk("engine"), bulk("LUA")),
                (bulk("functions"), Reply::Array(fns)),
            ];
            if with_code {
                map.push((bulk("library_code"), Reply::Bulk(l.code.clone())));
            }
            Reply::Map(map)
        })
        .collect();
    Reply::Array(libraries)
}

/// FUNCTION RESTORE payload [FLUSH|APPEND|REPLACE].
async fn restore(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let policy =
        match args.get(3).map(|p| lower(p)) {
            None => "append".to_owned(),
            Some(p) if matches!(p.as_str(), "append" | "replace" | "flush") => p,
            Some(_) => return Reply::err(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            ),
        };
    let Ok(payload) = decode(&args[2]) else {
        return Reply::err("ERR DUMP payload version or checksum are wrong");
    };
    // Each library loaded again: the payload's own list is not trusted.
    let mut restored = Vec::with_capacity(payload.len());
    for l in payload {
        match load_code(state, l.code).await {
            Ok(library) if library.name == l.name => restored.push(library),
            Ok(_) => return Reply::err("ERR failed loading the given functions payload"),
            Err(text) => return Reply::err(text),
        }
    }
    let _g = state.scripts.functions.changing.lock().await;
    let mut libraries =
        if policy == "flush" { BTreeMap::new() } else { state.scripts.functions.current() };
    for library in restored {
        if libraries.contains_key(&library.name) && policy == "append" {
            return Reply::err(format!("ERR Library {} already exists", library.name));
        }
        libraries.remove(&library.name);
        if let Some(text) = Functions::clash(&libraries, &library, &library.name) {
            return Reply::err(text);
        }
        libraries.insert(library.name.clone(), Arc::new(library));
    }
    install(state, libraries).await.map_or_else(Reply::err, |()| Reply::ok())
}

/// [`Functions::install`] on a blocking thread: it writes and fsyncs the
/// file.
async fn install(
    state: &RespState,
    libraries: BTreeMap<String, Arc<Library>>,
) -> Result<(), String> {
    let scripts = state.scripts.clone();
    tokio::task::spawn_blocking(move || scripts.functions.install(libraries))
        .await
        .map_err(|e| format!("ERR {e}"))?
}

const HELP: &[&str] = &[
    "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "LOAD [REPLACE] <FUNCTION CODE>",
    "    Create a new library with the given library name and code.",
    "DELETE <LIBRARY NAME>",
    "    Delete the given library.",
    "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
    "    Return general information on all the libraries:",
    "    * Library name",
    "    * The engine used to run the Library",
    "    * Library description",
    "    * Functions list",
    "    * Library code (if WITHCODE is given)",
    "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
    "STATS",
    "    Return information about the current function running:",
    "    * Function name",
    "    * Command used to run the function",
    "    * Duration in MS that the function is running",
    "    If no function is running, return nil",
    "    In addition, returns a list of available engines.",
    "KILL",
    "    Kill the current running function.",
    "FLUSH [ASYNC|SYNC]",
    "    Delete all the libraries.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the libraries.",
    "    * SYNC: Synchronously flush the libraries.",
    "DUMP",
    "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
    "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
    "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
    "    control how to handle existing libraries (default APPEND):",
    "    * FLUSH: delete all existing libraries.",
    "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
    "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
    "      libraries with the new libraries (notice that even on this option there is a chance of failure",
    "      in case of functions name collision with another library).",
    "HELP",
    "    Prints this help.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_lines_read_as_redis() {
        assert_eq!(library_name(b"#!lua name=mylib\nx"), Ok("mylib".into()));
        assert_eq!(library_name(b"#!LUA NAME=a_1\n"), Ok("a_1".into()));
        assert_eq!(library_name(b"return 1"), Err("ERR Missing library metadata".into()));
        assert_eq!(library_name(b"#!lua name=x"), Err("ERR Invalid library metadata".into()));
        assert_eq!(library_name(b"#!lua\n"), Err("ERR Library name was not given".into()));
        assert_eq!(
            library_name(b"#!lua name=a name=b\n"),
            Err("ERR Invalid metadata value, name argument was given multiple times".into())
        );
        assert_eq!(
            library_name(b"#!lua foo=bar\n"),
            Err("ERR Invalid metadata value given: foo=bar".into())
        );
        assert_eq!(library_name(b"#!py name=a\n"), Err("ERR Engine 'py' not found".into()));
        assert!(library_name(b"#!lua name=a-b\n").is_err());
        assert_eq!(library_name(b"#!lua name=\"foo\"\n"), Ok("foo".into()));
        assert_eq!(library_name(b"#!lua \"name=x\"\n"), Ok("x".into()));
        assert_eq!(library_name(b"#!lua name=\"foo\n"), Err("ERR Invalid library metadata".into()));
    }

    #[test]
    fn payloads_round_trip_and_refuse_damage() {
        let l = Arc::new(Library {
            name: "a".into(),
            code: b"#!lua name=a\n".to_vec(),
            functions: vec![Registered { name: "f".into(), description: None, flags: vec![] }],
        });
        let bytes = encode(std::slice::from_ref(&l));
        assert_eq!(decode(&bytes), Ok(vec![(*l).clone()]));
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(decode(&bad).is_err());
        assert!(decode(b"xyz").is_err());
    }
}
