//! Lua scripting: EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT (LOAD,
//! EXISTS, FLUSH, KILL, HELP), as Redis 7.0 (`eval.c`, `script.c`).
//!
//! A script is an EXEC of its own: it runs alone on the node (the
//! endpoint's gate, held for writing), its commands' writes are held back
//! and seen by its later commands, and they are applied as one atomic
//! batch when it returns, as a transaction's are ([`super::commands`]
//! drives it). On a replicated database it runs on the chunk's leader and
//! its writes are one Raft entry; EVALSHA is sent there as EVAL with the
//! body this node knows.
//!
//! As in Redis, a script that raises an error keeps the writes it made
//! before. One that runs longer than `lua-time-limit` makes the node BUSY
//! for other clients until it ends, and SCRIPT KILL (FUNCTION KILL) stops
//! it unless it has written ([`busy`]). A script that runs over
//! [`vm::SCRIPT_INSTRUCTIONS_MAX`] instructions, killed or not, is stopped
//! and none of its writes are applied.
//!
//! The cache of scripts is per node, like Redis's per server: SCRIPT LOAD
//! on one node does not make EVALSHA work on another. Bodies of scripts
//! EVAL ran (not those SCRIPT LOAD loaded) are forgotten oldest first past
//! [`SCRIPT_CACHE_MAX_BYTES`]; EVALSHA of one answers NOSCRIPT, which
//! clients answer by sending the body again.

pub mod busy;
pub mod functions;
pub mod libs;
pub mod vm;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::args::{lower, parse_i64};
use super::reply::Reply;
use super::state::RespState;
use vm::{Call, Outcome, ScriptVm};

/// Bytes of script bodies a node keeps for EVALSHA before it forgets the
/// oldest of those EVAL brought (SCRIPT LOAD's are kept until SCRIPT
/// FLUSH).
pub const SCRIPT_CACHE_MAX_BYTES: usize = 64 << 20;

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// The node's scripts: bodies by SHA1, and the idle Lua VM.
#[derive(Default)]
pub struct Scripts {
    cache: Mutex<Cache>,
    /// The VM between scripts (taken by the one that runs), and the
    /// generation of SCRIPT FLUSH it belongs to.
    idle: Mutex<(u64, Option<ScriptVm>)>,
    /// What VMs are made with (the node's Lua memory pool and shutdown
    /// interrupt), taken from the node once.
    env: std::sync::OnceLock<crate::view::sandbox::LuaEnv>,
    /// FUNCTION's libraries.
    pub functions: functions::Functions,
    /// The running script and the BUSY state.
    pub busy: Arc<busy::Busy>,
}

#[derive(Default)]
struct Cache {
    bodies: HashMap<String, Entry>,
    /// Scripts EVAL brought, oldest first: the ones forgotten first.
    evaled: VecDeque<String>,
    bytes: usize,
    /// Bumped by SCRIPT FLUSH: a VM of an older generation is dropped.
    generation: u64,
}

struct Entry {
    body: Arc<[u8]>,
    loaded: bool,
}

impl Cache {
    fn get(&self, sha: &str) -> Option<Arc<[u8]>> {
        self.bodies.get(sha).map(|e| e.body.clone())
    }

    fn add(&mut self, sha: &str, body: Arc<[u8]>, loaded: bool) {
        if let Some(entry) = self.bodies.get_mut(sha) {
            entry.loaded |= loaded;
            return;
        }
        self.bytes += body.len();
        self.bodies.insert(sha.to_owned(), Entry { body, loaded });
        if !loaded {
            self.evaled.push_back(sha.to_owned());
        }
        while self.bytes > SCRIPT_CACHE_MAX_BYTES {
            let Some(old) = self.evaled.pop_front() else { break };
            if self.bodies.get(&old).is_some_and(|e| !e.loaded) {
                if let Some(e) = self.bodies.remove(&old) {
                    self.bytes -= e.body.len();
                }
            }
        }
    }
}

/// The SHA1 of `body`, in lowercase hex (the name EVALSHA takes).
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// What an invocation runs: a script's body, or a library's function.
enum Program {
    Script { sha: String, body: Arc<[u8]> },
    Function { library: String, code: Arc<[u8]>, function: String },
}

/// A script to run, its arguments checked.
pub struct Invocation {
    program: Program,
    keys: Vec<Vec<u8>>,
    argv: Vec<Vec<u8>>,
    /// EVAL_RO/EVALSHA_RO, or a `#!lua flags=no-writes` script: a write
    /// command fails.
    pub read_only: bool,
    /// How it meets `maxmemory` (see [`Invocation::refused_when_out_of_memory`]).
    oom: OomRule,
}

/// How a script meets `maxmemory`, as Redis 7.0's scripts do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomRule {
    /// A script without a `#!lua` line: it runs, and its calls of
    /// `denyoom` commands fail until it has written (Redis's compatibility
    /// mode).
    Calls,
    /// A script with a `#!lua` line or a function, without `allow-oom` nor
    /// `no-writes`: refused whole.
    Refused,
    /// `allow-oom` or `no-writes`: runs, its calls unchecked.
    Allowed,
}

impl Invocation {
    /// Whether it is refused whole while the node is over `maxmemory`.
    pub fn refused_when_out_of_memory(&self) -> bool {
        self.oom == OomRule::Refused
    }

    /// Whether its calls of `denyoom` commands are checked against
    /// `maxmemory` (until it writes).
    pub fn calls_checked_for_memory(&self) -> bool {
        self.oom == OomRule::Calls
    }
}

/// The rule of a script of `body` with no-writes `no_writes`.
fn oom_rule(body: &[u8], no_writes: bool) -> OomRule {
    if !body.starts_with(b"#!") {
        return OomRule::Calls;
    }
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let allow_oom = line
        .split_ascii_whitespace()
        .filter_map(|p| p.strip_prefix("flags="))
        .any(|flags| flags.split(',').any(|f| f == "allow-oom"));
    if allow_oom || no_writes {
        OomRule::Allowed
    } else {
        OomRule::Refused
    }
}

/// The flags of a script's `#!lua` line, if it has one (Redis's
/// `evalExtractShebangFlags`): whether it is `no-writes`, and how many
/// bytes the line takes (skipped when compiling, its line feed kept).
fn shebang(body: &[u8]) -> Result<(bool, usize), String> {
    if !body.starts_with(b"#!") {
        return Ok((false, 0));
    }
    let Some(end) = body.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_ascii_whitespace();
    let engine = parts.next().unwrap_or_default();
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    let mut no_writes = false;
    for part in parts {
        let Some(flags) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in flags.split(',').filter(|f| !f.is_empty()) {
            match flag {
                "no-writes" => no_writes = true,
                "allow-oom" | "allow-stale" | "no-cluster" | "allow-cross-slot-keys" => {}
                other => return Err(format!("ERR Unexpected flag in script shebang: {other}")),
            }
        }
    }
    Ok((no_writes, end))
}

/// Checks EVAL's (or EVALSHA's, `_RO`'s) arguments: the script and its
/// keys and arguments, or the error reply.
pub fn invocation(state: &RespState, name: &str, args: &[Vec<u8>]) -> Result<Invocation, Reply> {
    if name.starts_with("fcall") {
        return function_invocation(state, name, args);
    }
    let by_sha = name.starts_with("evalsha");
    let numkeys = match parse_i64(&args[2]) {
        Some(n) if n < 0 => return Err(Reply::err("ERR Number of keys can't be negative")),
        Some(n) if n as u64 > (args.len() - 3) as u64 => {
            return Err(Reply::err("ERR Number of keys can't be greater than number of args"))
        }
        Some(n) => n as usize,
        None => return Err(Reply::err("ERR value is not an integer or out of range")),
    };
    let (sha, body) = if by_sha {
        let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        let cache = state.scripts.cache.lock().unwrap_or_else(|p| p.into_inner());
        match (sha.len() == 40).then(|| cache.get(&sha)).flatten() {
            Some(body) => (sha, body),
            None => return Err(Reply::err(NOSCRIPT)),
        }
    } else {
        (sha1_hex(&args[1]), Arc::from(&args[1][..]))
    };
    let (no_writes, _) = shebang(&body).map_err(Reply::err)?;
    let oom = oom_rule(&body, no_writes);
    Ok(Invocation {
        program: Program::Script { sha, body },
        keys: args[3..3 + numkeys].to_vec(),
        argv: args[3 + numkeys..].to_vec(),
        read_only: no_writes || name.ends_with("_ro"),
        oom,
    })
}

/// FCALL's (FCALL_RO's) arguments checked, as Redis's
/// `fcallCommandGeneric` and `scriptPrepareForRun`.
fn function_invocation(
    state: &RespState,
    name: &str,
    args: &[Vec<u8>],
) -> Result<Invocation, Reply> {
    let Some(found) = state.scripts.functions.find(&args[1]) else {
        return Err(Reply::err("ERR Function not found"));
    };
    let numkeys = match parse_i64(&args[2]) {
        None => return Err(Reply::err("ERR Bad number of keys provided")),
        Some(n) if n > (args.len() - 3) as i64 => {
            return Err(Reply::err("ERR Number of keys can't be greater than number of args"))
        }
        Some(n) if n < 0 => return Err(Reply::err("ERR Number of keys can't be negative")),
        Some(n) => n as usize,
    };
    let read_only = name == "fcall_ro";
    if read_only && !found.no_writes {
        return Err(Reply::err("ERR Can not execute a script with write flag using *_ro command."));
    }
    Ok(Invocation {
        program: Program::Function {
            library: found.library.name.clone(),
            code: Arc::from(found.library.code.as_slice()),
            function: found.function,
        },
        keys: args[3..3 + numkeys].to_vec(),
        argv: args[3 + numkeys..].to_vec(),
        read_only: read_only || found.no_writes,
        oom: if found.no_writes || found.allow_oom { OomRule::Allowed } else { OomRule::Refused },
    })
}

/// Whether the script EVAL or EVALSHA (`args`) would run declares
/// `#!lua flags=no-writes` (false when it is unknown or its shebang is
/// bad: it then fails when it runs).
pub fn declares_no_writes(state: &RespState, args: &[Vec<u8>]) -> bool {
    let Some(script) = args.get(1) else { return false };
    let body: Arc<[u8]> = if lower(&args[0]).starts_with("evalsha") {
        let sha = String::from_utf8_lossy(script).to_ascii_lowercase();
        let cache = state.scripts.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&sha) {
            Some(body) => body,
            None => return false,
        }
    } else {
        Arc::from(&script[..])
    };
    matches!(shebang(&body), Ok((true, _)))
}

/// EVALSHA's arguments as EVAL's, with the body this node has, for a node
/// that may not have it (a replicated database's leader); other commands'
/// as they are. NOSCRIPT when this node does not have it either.
pub fn with_body(state: &RespState, args: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, Reply> {
    let name = lower(&args[0]);
    if (name != "evalsha" && name != "evalsha_ro") || args.len() < 3 {
        return Ok(args);
    }
    let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let body = state.scripts.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&sha);
    let Some(body) = body else { return Err(Reply::err(NOSCRIPT)) };
    let mut args = args;
    args[0] = if name == "evalsha" { b"eval".to_vec() } else { b"eval_ro".to_vec() };
    args[1] = body.to_vec();
    Ok(args)
}

/// Stack of the thread Lua runs on: deep but legal nesting (cjson's 1000
/// levels, Lua's 200 C calls) needs more than a pool thread's 2 MiB,
/// notably in debug builds. Only the pages touched are committed.
const LUA_THREAD_STACK_BYTES: usize = 256 << 20;

type LuaJob = Box<dyn FnOnce() + Send>;

/// Runs `job` on the node's Lua thread and hands back its result. Scripts
/// run alone on a node (the endpoint's gate), so one thread serves them
/// and the loads of scripts and libraries, in turn.
/// Postmortem: deep cjson nesting and nested string.gsub callbacks
/// overflowed a blocking-pool thread's stack and aborted the process.
pub fn on_lua_thread<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    static JOBS: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<LuaJob>>> =
        std::sync::OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<LuaJob>();
        std::thread::Builder::new()
            .name("monotable-lua".into())
            .stack_size(LUA_THREAD_STACK_BYTES)
            .spawn(move || {
                for job in rx {
                    // A job that panics must not take the thread down.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .expect("the Lua thread starts");
        Mutex::new(tx)
    });
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: LuaJob = Box::new(move || {
        let _ = tx.send(job());
    });
    let _ = jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job);
    rx
}

/// What a running script asks of its caller next.
pub enum Step {
    /// Run this command for it (see [`Running::next`]).
    Call(Call),
    /// It returned or failed.
    Done(Outcome),
}

/// A script running on the Lua thread ([`on_lua_thread`]).
pub struct Running {
    calls: tokio::sync::mpsc::UnboundedReceiver<Call>,
    answers: std::sync::mpsc::Sender<Reply>,
    done: tokio::sync::oneshot::Receiver<Outcome>,
}

impl Running {
    /// Hands `answer` (the reply to the last [`Step::Call`]) to the script
    /// and waits for its next step.
    pub async fn next(&mut self, answer: Option<Reply>) -> Step {
        if let Some(reply) = answer {
            // A script gone (stopped) reads no more answers.
            let _ = self.answers.send(reply);
        }
        match self.calls.recv().await {
            Some(call) => Step::Call(call),
            None => Step::Done(match (&mut self.done).await {
                Ok(outcome) => outcome,
                Err(e) => Outcome {
                    reply: Reply::err(format!("ERR the script's thread failed: {e}")),
                    stopped: true,
                },
            }),
        }
    }
}

/// Starts `script` on the Lua thread, with the node's idle VM (or a new
/// one, its memory reserved from the node's Lua pool).
pub fn start(state: &RespState, script: Invocation) -> Running {
    let scripts = state.scripts.clone();
    let env = state.scripts.env(state);
    let budget = state.node.config.script_instructions_max;
    let (calls_tx, calls) = tokio::sync::mpsc::unbounded_channel();
    let (answers, answers_rx) = std::sync::mpsc::channel();
    let done = on_lua_thread(move || {
        let (generation, mut vm) = scripts.take_vm();
        let mut vm = match vm.take().map_or_else(|| ScriptVm::new(&env), Ok) {
            Ok(vm) => vm,
            Err(text) => return Outcome { reply: Reply::err(text), stopped: false },
        };
        vm.budget = budget;
        let outcome = match &script.program {
            Program::Script { sha, body: whole } => {
                let (_, skip) = shebang(whole).unwrap_or((false, 0));
                let mut body = whole.to_vec();
                // The `#!` line is skipped, its line feed kept (line numbers hold).
                body.drain(..skip);
                // Cached once it compiles, as Redis does, whatever the run does.
                if vm.compile(sha, &body).is_ok() {
                    scripts.add(sha, whole.clone(), false);
                }
                vm.run(sha, &body, &script.keys, &script.argv, calls_tx, answers_rx)
            }
            Program::Function { library, code, function } => vm.run_function(
                library,
                code,
                function,
                &script.keys,
                &script.argv,
                calls_tx,
                answers_rx,
            ),
        };
        scripts.put_vm(generation, vm);
        outcome
    });
    Running { calls, answers, done }
}

impl Scripts {
    fn env(&self, state: &RespState) -> crate::view::sandbox::LuaEnv {
        self.env
            .get_or_init(|| {
                // The view flag of this environment is the scripts' own:
                // SCRIPT KILL sets it, the next script clears it.
                let env = state.node.lua_env();
                self.busy.set_interrupt(env.interrupt.clone());
                env
            })
            .clone()
    }

    /// Scripts cached for EVALSHA, and the bytes of their bodies (INFO's
    /// `number_of_cached_scripts`, `used_memory_scripts_eval`).
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        (cache.bodies.len(), cache.bytes)
    }

    fn take_vm(&self) -> (u64, Option<ScriptVm>) {
        let generation = self.cache.lock().unwrap_or_else(|p| p.into_inner()).generation;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.0 != generation {
            *idle = (generation, None);
        }
        (generation, idle.1.take())
    }

    fn put_vm(&self, generation: u64, vm: ScriptVm) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.0 == generation && idle.1.is_none() {
            idle.1 = Some(vm);
        }
    }

    /// Drops the idle VM (the next script starts a new one): the
    /// libraries it loaded for FCALL may have been deleted or replaced.
    fn drop_idle_vm(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).1 = None;
    }

    fn add(&self, sha: &str, body: Arc<[u8]>, loaded: bool) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).add(sha, body, loaded);
    }

    fn flush(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let generation = cache.generation + 1;
        *cache = Cache { generation, ..Cache::default() };
        drop(cache);
        *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = (generation, None);
    }
}

/// SCRIPT and its subcommands.
pub async fn script(state: &RespState, args: &[Vec<u8>]) -> Reply {
    let sub = lower(&args[1]);
    match (sub.as_str(), args.len()) {
        ("load", 3) => load(state, args[2].clone()).await,
        ("exists", n) if n >= 3 => {
            let cache = state.scripts.cache.lock().unwrap_or_else(|p| p.into_inner());
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|sha| {
                        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                        Reply::Int(i64::from(cache.bodies.contains_key(&sha)))
                    })
                    .collect(),
            )
        }
        ("flush", 2) => {
            state.scripts.flush();
            Reply::ok()
        }
        ("flush", 3) => match lower(&args[2]).as_str() {
            "sync" | "async" => {
                state.scripts.flush();
                Reply::ok()
            }
            _ => Reply::err("ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
        },
        ("kill", 2) => state.scripts.busy.kill(true).map_or_else(Reply::err, |()| Reply::ok()),
        ("help", 2) => Reply::Array(HELP.iter().map(|l| Reply::Status((*l).to_owned())).collect()),
        ("load" | "exists" | "flush" | "kill" | "help", _) => {
            Reply::err(format!("ERR wrong number of arguments for 'script|{sub}' command"))
        }
        _ => Reply::err(format!(
            "ERR unknown subcommand '{}'. Try SCRIPT HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// SCRIPT LOAD: compiles `body` (in the idle VM, on the Lua thread) and
/// keeps it; its SHA1.
async fn load(state: &RespState, body: Vec<u8>) -> Reply {
    let sha = sha1_hex(&body);
    if let Err(text) = shebang(&body) {
        return Reply::err(text);
    }
    let scripts = state.scripts.clone();
    let env = state.scripts.env(state);
    let body: Arc<[u8]> = Arc::from(body);
    let compiled = {
        let (sha, body) = (sha.clone(), body.clone());
        on_lua_thread(move || {
            let (generation, vm) = scripts.take_vm();
            let mut vm = vm.map_or_else(|| ScriptVm::new(&env), Ok)?;
            let (_, skip) = shebang(&body).unwrap_or((false, 0));
            let result = vm.compile(&sha, &body[skip..]).map(|_| ());
            scripts.put_vm(generation, vm);
            result
        })
        .await
    };
    match compiled {
        Ok(Ok(())) => {
            state.scripts.add(&sha, body, true);
            Reply::bulk(sha)
        }
        Ok(Err(text)) => Reply::err(text),
        Err(e) => Reply::err(format!("ERR compiling the script failed: {e}")),
    }
}

const HELP: &[&str] = &[
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DEBUG (YES|SYNC|NO)",
    "    Set the debug mode for subsequent scripts executed.",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache. Very dangerous on replicas.",
    "    When called without the optional mode argument, the behavior is determined by the",
    "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
    "    * ASYNC: Asynchronously flush the scripts cache.",
    "    * SYNC: Synchronously flush the scripts cache.",
    "KILL",
    "    Kill the currently executing Lua script.",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Prints this help.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_follow_redis() {
        assert_eq!(shebang(b"return 1"), Ok((false, 0)));
        assert_eq!(shebang(b"#!lua\nreturn 1"), Ok((false, 5)));
        assert_eq!(shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1"), Ok((true, 31)));
        assert_eq!(oom_rule(b"return 1", false), OomRule::Calls);
        assert_eq!(oom_rule(b"#!lua\nreturn 1", false), OomRule::Refused);
        assert_eq!(oom_rule(b"#!lua flags=allow-oom\nreturn 1", false), OomRule::Allowed);
        assert_eq!(oom_rule(b"#!lua flags=no-writes\nreturn 1", true), OomRule::Allowed);
        assert_eq!(shebang(b"#!lua"), Err("ERR Invalid script shebang".into()));
        assert_eq!(
            shebang(b"#!python\n"),
            Err("ERR Unexpected engine in script shebang: #!python".into())
        );
        assert_eq!(
            shebang(b"#!lua flags=bad\n"),
            Err("ERR Unexpected flag in script shebang: bad".into())
        );
        assert_eq!(shebang(b"#!lua x\n"), Err("ERR Unknown lua shebang option: x".into()));
    }

    #[test]
    fn the_cache_forgets_evaled_scripts_first() {
        let mut cache = Cache::default();
        let big: Arc<[u8]> = Arc::from(vec![b'x'; SCRIPT_CACHE_MAX_BYTES / 2 + 1]);
        cache.add("loaded", big.clone(), true);
        cache.add("a", big.clone(), false);
        assert!(cache.get("loaded").is_some());
        assert!(cache.get("a").is_none(), "over the limit, the EVALed one goes");
        cache.add("b", Arc::from(&b"small"[..]), false);
        assert!(cache.get("b").is_some());
    }
}
