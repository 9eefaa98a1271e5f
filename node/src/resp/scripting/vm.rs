//! The Lua VM that EVAL runs scripts in: the view functions' sandbox
//! ([`crate::view::sandbox`]: the same instruction budget per call, memory
//! limit and node-wide memory pool, the same refused finalizers) with
//! Redis 7.0's scripting API on top, and the conversions between Lua
//! values and replies (Redis's `script_lua.c`, whose rules and error
//! texts are followed).
//!
//! A script runs on the node's Lua thread. `redis.call`/`redis.pcall` hand
//! the command to the task that started it (a [`Call`] on a channel) and
//! wait for its reply: the commands run on the async side, with the
//! dispatcher's checks and the transaction's held-back writes, while the
//! Lua code never blocks the runtime.
//!
//! What differs from Redis's Lua 5.1: the VM is Lua 5.4 (`tostring(10/2)`
//! is `5.0`, integers are a subtype); `unpack` and `loadstring` (text
//! only) are provided as in 5.1; `cjson`, `cmsgpack` and `bit` are
//! ([`super::libs`]), `struct` is not; globals, `redis`, those libraries
//! and the standard library tables are read-only as in Redis.

use std::sync::mpsc;
use std::sync::Arc;

use mlua::{ChunkMode, Function, Lua, MultiValue, Table, Value};

use super::super::reply::{format_double, Reply};
use crate::view::sandbox::{LuaEnv, LuaFnError, Sandbox, LUA_INSTRUCTIONS_MAX_PER_CALL};

/// A command a script runs (`redis.call`/`redis.pcall`): its arguments,
/// and the protocol version (2 or 3, `redis.setresp`) its reply is shaped
/// in before it becomes a Lua value.
#[derive(Debug)]
pub struct Call {
    pub args: Vec<Vec<u8>>,
    pub resp: u8,
    /// `redis.acl_check_cmd`: not run, only checked against the caller's
    /// ACL user; the answer is 1 or 0 (or an error for an unknown command).
    pub acl_check: bool,
}

/// The two ends a running script talks through, kept in the VM's app data
/// while it runs.
struct Ctx {
    calls: tokio::sync::mpsc::UnboundedSender<Call>,
    answers: mpsc::Receiver<Reply>,
    resp: u8,
}

/// How a script's run ended.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    /// Stopped by its instruction budget or a shutdown: the caller must
    /// drop every write it made.
    pub stopped: bool,
}

/// Instructions a script (or function) may run by default
/// (`serve --script-instructions-max`): far past any script a client waits
/// for (minutes), a last stop for one that has written and so cannot be
/// killed; its writes are then dropped. Other clients see the node BUSY
/// long before (`lua-time-limit`, see [`super::busy`]).
pub const SCRIPT_INSTRUCTIONS_MAX: u64 = 20_000_000_000;

/// Nested tables a script's reply may have.
const REPLY_DEPTH_MAX: usize = 256;
/// Elements (of every level) a script's reply may have: a table that holds
/// itself would otherwise make an endless reply.
const REPLY_ELEMENTS_MAX: usize = 1 << 21;
/// Compiled scripts one VM keeps; past it the cache starts over (scripts
/// compile again from their bodies on their next call).
const COMPILED_MAX: usize = 10_000;
use super::super::info::REDIS_VERSION;
/// [`REDIS_VERSION`] as `redis.REDIS_VERSION_NUM` gives it (0x00MMmmpp).
const REDIS_VERSION_NUM: i64 = 0x0007_000f;

/// The API, after the sandbox's prelude: `redis.call` raising what
/// `redis.pcall` returns as an error, `pcall` turning a raised error table
/// into its message (Redis 7.0 does, for scripts written for older
/// versions), read-only globals and library tables, and the function that
/// runs a script under the error handler.
const SETUP: &str = r#"
local raw, handler = ...
local pcall, xpcall, error, type, rawget, rawset, setmetatable, next, select =
  pcall, xpcall, error, type, rawget, rawset, setmetatable, next, select
local pack, unpack = table.pack, table.unpack
local api = {
  call = raw.call,
  pcall = raw.pcall,
  sha1hex = raw.sha1hex,
  error_reply = raw.error_reply,
  status_reply = raw.status_reply,
  setresp = raw.setresp,
  log = raw.log,
  acl_check_cmd = raw.acl_check_cmd,
  set_repl = function() end,
  replicate_commands = function() return true end,
  breakpoint = function() return false end,
  debug = function() end,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
  REDIS_VERSION = raw.version, REDIS_VERSION_NUM = raw.version_num,
}
_G.pcall = function(...)
  local r = pack(pcall(...))
  if not r[1] and type(r[2]) == "table" and type(rawget(r[2], "err")) == "string" then
    r[2] = r[2].err
  end
  return unpack(r, 1, r.n)
end
_G.unpack = unpack
_G.redis = api
_G.cjson = raw.cjson
_G.cmsgpack = raw.cmsgpack
_G.bit = raw.bit
_G.loadstring = raw.loadstring
_G.print = nil
local function readonly()
  error("Attempt to modify a readonly table", 2)
end
-- What getmetatable answers for a protected table: itself read-only.
local locked = setmetatable({}, { __newindex = readonly, __metatable = false })
local protected = {}
local function protect(t)
  local proxy = setmetatable({}, { __index = t, __newindex = readonly, __metatable = locked })
  protected[proxy] = true
  return proxy
end
for _, name in next, { "redis", "string", "table", "math", "utf8", "time", "cjson", "cmsgpack", "bit" } do
  local lib = rawget(_G, name)
  if lib ~= nil then rawset(_G, name, protect(lib)) end
end
_G.rawset = function(t, k, v)
  if protected[t] then readonly() end
  return rawset(t, k, v)
end
local set_metatable = setmetatable
_G.setmetatable = function(t, mt)
  if protected[t] then readonly() end
  return set_metatable(t, mt)
end
-- Scripts see the globals through a proxy (their _ENV and _G): every
-- assignment to it fails, to an existing global too, and reading one
-- that does not exist is an error, as in Redis.
local env = _G
local scripts_env = protect(env)
rawset(env, "_G", scripts_env)
set_metatable(env, {
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
  end,
  __newindex = readonly,
  __metatable = locked,
})
-- FUNCTION libraries (Redis's function_lua.c): their code runs in
-- `lib_env`. While a library loads, its only global is `redis` with
-- register_function, log and the version (Redis's library API); once
-- loaded, its functions see the scripts' globals.
local lower, tostring, pairs = string.lower, tostring, pairs
local registering
local known_flags = {
  ["no-writes"] = true, ["allow-oom"] = true, ["allow-stale"] = true,
  ["no-cluster"] = true, ["allow-cross-slot-keys"] = true,
}
local function name_ok(name)
  return #name > 0 and not name:find("[^%w_]")
end
-- register_function's errors: error tables without a position, as
-- Redis's luaPushError makes them.
local function fail(message) error({ err = "ERR " .. message }) end
local function register_function(...)
  if not registering then
    fail("redis.register_function can only be called on FUNCTION LOAD command")
  end
  local n = select('#', ...)
  if n < 1 or n > 2 then fail("wrong number of arguments to redis.register_function") end
  local name, callback, flags, description
  if n == 1 then
    local t = ...
    if type(t) ~= "table" then
      fail("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).")
    end
    for k, v in pairs(t) do
      if type(k) ~= "string" and type(k) ~= "number" then
        fail("named argument key given to redis.register_function is not a string")
      end
      local key = lower(tostring(k))
      if key == "function_name" then
        if type(v) ~= "string" and type(v) ~= "number" then
          fail("function_name argument given to redis.register_function must be a string")
        end
        name = tostring(v)
      elseif key == "description" then
        if type(v) ~= "string" and type(v) ~= "number" then
          fail("description argument given to redis.register_function must be a string")
        end
        description = tostring(v)
      elseif key == "callback" then
        if type(v) ~= "function" then
          fail("callback argument given to redis.register_function must be a function")
        end
        callback = v
      elseif key == "flags" then
        if type(v) ~= "table" then
          fail("flags argument to redis.register_function must be a table representing function flags")
        end
        flags = {}
        local i = 1
        while v[i] ~= nil do
          local f = v[i]
          if (type(f) ~= "string" and type(f) ~= "number") or not known_flags[lower(tostring(f))] then
            fail("unknown flag given")
          end
          flags[#flags + 1] = lower(tostring(f))
          i = i + 1
        end
      else
        fail("unknown argument given to redis.register_function")
      end
    end
    if not name then fail("redis.register_function must get a function name argument") end
    if not callback then fail("redis.register_function must get a callback argument") end
  else
    name, callback = ...
    if type(name) ~= "string" and type(name) ~= "number" then
      fail("first argument to redis.register_function must be a string")
    end
    name = tostring(name)
    if type(callback) ~= "function" then
      fail("second argument to redis.register_function must be a function")
    end
  end
  if not name_ok(name) then
    fail("Library names can only contain letters, numbers, or underscores(_) and must be at least one character long")
  end
  if registering.names[name] then fail("Function already exists in the library") end
  registering.names[name] = true
  registering[#registering + 1] = {
    name = name, callback = callback, flags = flags or {}, description = description,
  }
end
local function missing(_, name)
  error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
end
-- A read-only proxy, as every library loaded later gets the same one.
-- Postmortem: a library set redis.register_function to nil (or wrapped
-- it) and broke (or hijacked) every FUNCTION LOAD after it.
local load_redis_fields = {
  register_function = register_function, log = raw.log,
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REDIS_VERSION = raw.version, REDIS_VERSION_NUM = raw.version_num,
}
local load_redis = set_metatable({}, {
  __index = function(_, name)
    local v = rawget(load_redis_fields, name)
    if v == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end
    return v
  end,
  __newindex = readonly,
  __metatable = locked,
})
protected[load_redis] = true
local load_api = set_metatable({ redis = load_redis }, {
  __index = missing, __newindex = readonly, __metatable = locked,
})
local lib_env = set_metatable({}, {
  __index = function(_, name)
    if registering then
      local v = rawget(load_api, name)
      if v == nil then
        error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
      end
      return v
    end
    return scripts_env[name]
  end,
  __newindex = readonly,
  __metatable = locked,
})
-- Libraries may not add globals through rawset or setmetatable either.
protected[lib_env] = true
local function load_library(code)
  registering = { names = {} }
  local ok, err = xpcall(code, handler)
  local found = registering
  registering = nil
  found.names = nil
  if not ok then return false, err end
  return true, found
end
local function call_function(f, keys, args)
  return xpcall(f, handler, keys, args)
end
return function(f) return xpcall(f, handler) end, scripts_env, lib_env, load_library, call_function
"#;

/// A Lua VM for scripts, with the scripts it compiled.
pub struct ScriptVm {
    sandbox: Sandbox,
    /// `run(f)`: calls `f` under the error handler; `ok, value`.
    runner: Function,
    /// The read-only view of the globals scripts run in (their `_ENV`).
    env: Table,
    /// sha -> compiled function.
    compiled: Table,
    compiled_count: usize,
    /// What FUNCTION libraries' code runs in (see SETUP).
    lib_env: Table,
    /// `load_library(f)`: runs a library's compiled code; `ok, found`.
    load_library: Function,
    /// `call_function(f, keys, args)`: a function under the handler.
    call_function: Function,
    /// Library name -> { function name -> callback }, as loaded here.
    libraries: Table,
    /// Instructions a script may run (`serve --script-instructions-max`).
    pub budget: u64,
    /// The code each library here was loaded from.
    loaded: std::collections::HashMap<String, std::sync::Arc<[u8]>>,
}

/// A function a library registered: its name, description and flags
/// (`no-writes`...), as FUNCTION LIST shows them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Registered {
    pub name: String,
    pub description: Option<String>,
    pub flags: Vec<String>,
}

impl ScriptVm {
    /// A fresh VM; its memory limit is reserved from `env`'s pool.
    pub fn new(env: &LuaEnv) -> Result<ScriptVm, String> {
        let sandbox =
            Sandbox::for_purpose("", env, "scripts").map_err(|e| format!("ERR Lua VM: {e}"))?;
        type Setup = (Function, Table, Table, Function, Function);
        let setup = || -> mlua::Result<(Setup, Table, Table)> {
            let lua = &sandbox.lua;
            let raw = api_functions(lua)?;
            let handler = lua.create_function(error_handler)?;
            let made: Setup = lua
                .load(SETUP)
                .set_name("=scripting")
                .set_mode(ChunkMode::Text)
                .call((raw, handler))?;
            lua.set_named_registry_value(super::libs::SCRIPTS_ENV_KEY, made.1.clone())?;
            Ok((made, lua.create_table()?, lua.create_table()?))
        };
        let ((runner, env, lib_env, load_library, call_function), compiled, libraries) = sandbox
            .run(LUA_INSTRUCTIONS_MAX_PER_CALL, setup)
            .map_err(|e| format!("ERR Lua VM: {e}"))?;
        Ok(ScriptVm {
            sandbox,
            runner,
            env,
            compiled,
            compiled_count: 0,
            lib_env,
            load_library,
            call_function,
            libraries,
            loaded: Default::default(),
            budget: SCRIPT_INSTRUCTIONS_MAX,
        })
    }

    /// Loads FUNCTION library `name` from `code` (its whole text, the
    /// `#!lua name=...` line included): runs it so it registers its
    /// functions (under the instruction budget), and keeps them here.
    ///
    /// Errors: Redis's `ERR Error compiling function: ...`, `ERR Error
    /// registering functions: ...`, `ERR No functions registered`.
    pub fn load_library(
        &mut self,
        name: &str,
        code: &Arc<[u8]>,
    ) -> Result<Vec<Registered>, String> {
        // The `#!` line is skipped, its line feed kept (line numbers hold).
        let body = match code.iter().position(|&b| b == b'\n') {
            Some(at) => &code[at..],
            None => &code[code.len()..],
        };
        let f = self.compile_text(body, "@user_function", &self.lib_env, "function")?;
        let loader = self.load_library.clone();
        let lua = &self.sandbox.lua;
        let run = self.sandbox.run(LUA_INSTRUCTIONS_MAX_PER_CALL, || {
            let (ok, found): (bool, Value) = loader.call(f)?;
            if !ok {
                // The handler's error table, or the bare error a memory
                // failure raises (no handler runs then).
                let text = match &found {
                    Value::Table(t) => match t.raw_get::<Value>("err")? {
                        Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
                        _ => String::new(),
                    },
                    Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
                    Value::Error(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
                    _ => String::new(),
                };
                return Ok(Err(format!("ERR Error registering functions: {text}")));
            }
            let Value::Table(found) = found else {
                return Ok(Err("ERR Error registering functions".into()));
            };
            let callbacks = lua.create_table()?;
            let mut out = Vec::new();
            for entry in found.sequence_values::<Table>() {
                let entry = entry?;
                let name: String = entry.get("name")?;
                callbacks.raw_set(name.as_str(), entry.get::<Function>("callback")?)?;
                let flags: Vec<String> = entry
                    .get::<Table>("flags")?
                    .sequence_values::<String>()
                    .collect::<mlua::Result<_>>()?;
                out.push(Registered { name, description: entry.get("description")?, flags });
            }
            Ok(Ok((out, callbacks)))
        });
        let (functions, callbacks) = match run {
            Ok(Ok(done)) => done,
            Ok(Err(text)) => return Err(text),
            Err(LuaFnError::Limit(why)) => {
                return Err(format!(
                    "ERR Error registering functions: FUNCTION LOAD timeout ({why})"
                ))
            }
            Err(e) => return Err(format!("ERR Error registering functions: {e}")),
        };
        if functions.is_empty() {
            return Err("ERR No functions registered".into());
        }
        // FUNCTION LIST's order (Redis leaves it open): by name.
        let mut functions = functions;
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        self.libraries.raw_set(name, callbacks).map_err(|e| format!("ERR {e}"))?;
        self.loaded.insert(name.to_owned(), code.clone());
        Ok(functions)
    }

    /// Runs `function` of library `library` (loaded from `code` first if
    /// this VM has another version or none) with its keys and arguments,
    /// as [`ScriptVm::run`] runs a script.
    #[allow(clippy::too_many_arguments)]
    pub fn run_function(
        &mut self,
        library: &str,
        code: &Arc<[u8]>,
        function: &str,
        keys: &[Vec<u8>],
        argv: &[Vec<u8>],
        calls: tokio::sync::mpsc::UnboundedSender<Call>,
        answers: mpsc::Receiver<Reply>,
    ) -> Outcome {
        if self.loaded.get(library).is_none_or(|c| c[..] != code[..]) {
            if let Err(text) = self.load_library(library, code) {
                return Outcome { reply: Reply::err(text), stopped: false };
            }
        }
        let callback =
            self.libraries.raw_get::<Table>(library).and_then(|t| t.raw_get::<Function>(function));
        let callback = match callback {
            Ok(f) => f,
            Err(_) => {
                return Outcome { reply: Reply::err("ERR Function not found"), stopped: false }
            }
        };
        let lua = &self.sandbox.lua;
        let sequence =
            |items: &[Vec<u8>]| lua.create_sequence_from(items.iter().map(|a| lua_bytes(lua, a)));
        let (keys, args) = match (sequence(keys), sequence(argv)) {
            (Ok(k), Ok(a)) => (k, a),
            (Err(e), _) | (_, Err(e)) => {
                return Outcome { reply: Reply::err(format!("ERR {e}")), stopped: false }
            }
        };
        let caller = self.call_function.clone();
        self.call(function, calls, answers, || caller.call::<MultiValue>((callback, keys, args)))
    }

    /// Runs `start` (a script or function under the error handler: `ok,
    /// value`) with the command channels in place, and makes its reply.
    fn call(
        &mut self,
        name: &str,
        calls: tokio::sync::mpsc::UnboundedSender<Call>,
        answers: mpsc::Receiver<Reply>,
        start: impl FnOnce() -> mlua::Result<MultiValue>,
    ) -> Outcome {
        let lua = &self.sandbox.lua;
        lua.set_app_data(Ctx { calls, answers, resp: 2 });
        let result = self.sandbox.run(self.budget, || {
            let mut out = start()?.into_iter();
            let ok = matches!(out.next(), Some(Value::Boolean(true)));
            let value = out.next().unwrap_or(Value::Nil);
            let resp = lua.app_data_ref::<Ctx>().map_or(2, |c| c.resp);
            if ok {
                let mut elements = 0;
                Ok(to_reply(&value, resp, 0, &mut elements))
            } else {
                Ok(uncaught(name, &value))
            }
        });
        // Closes the calls channel: the caller's loop ends.
        lua.remove_app_data::<Ctx>();
        match result {
            Ok(reply) => Outcome { reply, stopped: false },
            Err(LuaFnError::Limit(why)) => Outcome {
                reply: Reply::err(format!(
                    "ERR Script killed: {why}; none of its writes were applied script: {name}"
                )),
                stopped: true,
            },
            Err(e) => Outcome {
                reply: Reply::err(format!("ERR Error running script {name}, {e}")),
                stopped: false,
            },
        }
    }

    /// Compiles the text chunk `body` as `name` (its errors' source) in
    /// `env`; errors are Redis's `ERR Error compiling WHAT: ...`.
    fn compile_text(
        &self,
        body: &[u8],
        name: &str,
        env: &Table,
        what: &str,
    ) -> Result<Function, String> {
        self.sandbox
            .lua
            .load(body)
            .set_name(name)
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone())
            .into_function()
            .map_err(|e| {
                let text = match e {
                    mlua::Error::SyntaxError { message, .. } => message,
                    other => other.to_string(),
                };
                format!("ERR Error compiling {what}: {text}")
            })
    }

    /// Compiles `body` as script `sha` unless it is compiled already.
    ///
    /// Errors: Redis's `ERR Error compiling script (new function): ...`
    /// with Lua's message (`user_script:LINE: ...`).
    pub fn compile(&mut self, sha: &str, body: &[u8]) -> Result<Function, String> {
        if let Ok(Value::Function(f)) = self.compiled.raw_get(sha) {
            return Ok(f);
        }
        if self.compiled_count >= COMPILED_MAX {
            self.compiled = self.sandbox.lua.create_table().map_err(|e| format!("ERR {e}"))?;
            self.compiled_count = 0;
        }
        let f = self.compile_text(body, "@user_script", &self.env, "script (new function)")?;
        self.compiled.raw_set(sha, f.clone()).map_err(|e| format!("ERR {e}"))?;
        self.compiled_count += 1;
        Ok(f)
    }

    /// Runs script `sha` (`body`, compiled if needed) with `KEYS` and
    /// `ARGV`; its commands go out on `calls` and their replies come back
    /// on `answers`. Blocks: call it on a thread of its own.
    pub fn run(
        &mut self,
        sha: &str,
        body: &[u8],
        keys: &[Vec<u8>],
        argv: &[Vec<u8>],
        calls: tokio::sync::mpsc::UnboundedSender<Call>,
        answers: mpsc::Receiver<Reply>,
    ) -> Outcome {
        let f = match self.compile(sha, body) {
            Ok(f) => f,
            Err(text) => return Outcome { reply: Reply::err(text), stopped: false },
        };
        let lua = &self.sandbox.lua;
        let set_args = || -> mlua::Result<()> {
            let globals = lua.globals();
            globals.raw_set(
                "KEYS",
                lua.create_sequence_from(keys.iter().map(|k| lua_bytes(lua, k)))?,
            )?;
            globals
                .raw_set("ARGV", lua.create_sequence_from(argv.iter().map(|a| lua_bytes(lua, a)))?)
        };
        if let Err(e) = set_args() {
            return Outcome { reply: Reply::err(format!("ERR {e}")), stopped: false };
        }
        let runner = self.runner.clone();
        let outcome = self.call(sha, calls, answers, || runner.call::<MultiValue>(f));
        let globals = self.sandbox.lua.globals();
        let _ = globals.raw_set("KEYS", Value::Nil);
        let _ = globals.raw_set("ARGV", Value::Nil);
        outcome
    }
}

fn lua_bytes(lua: &Lua, bytes: &[u8]) -> Value {
    lua.create_string(bytes).map(Value::String).unwrap_or(Value::Nil)
}

/// `{err = text}`, as Redis's `luaPushErrorBuff` makes it from `raw`:
/// `-CODE message` keeps its code, anything else gets `ERR`; line breaks
/// at the ends are trimmed.
pub fn error_text(raw: &[u8]) -> Vec<u8> {
    let (code, message): (&[u8], &[u8]) = match raw.strip_prefix(b"-") {
        Some(rest) => match rest.iter().position(|&b| b == b' ') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (b"ERR", rest),
        },
        None => (b"ERR", raw),
    };
    let trim = |b: &u8| *b == b'\r' || *b == b'\n';
    let start = message.iter().position(|b| !trim(b)).unwrap_or(message.len());
    let end = message.iter().rposition(|b| !trim(b)).map_or(start, |i| i + 1);
    let mut out = code.to_vec();
    out.push(b' ');
    out.extend_from_slice(&message[start..end.max(start)]);
    out
}

fn err_table(lua: &Lua, text: &[u8]) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set("err", lua.create_string(text)?)?;
    Ok(Value::Table(t))
}

/// The Rust half of the API: functions that return (ok, value) where Lua
/// wrappers raise, since a Rust function cannot raise a table.
fn api_functions(lua: &Lua) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    let pcall = lua.create_function(redis_pcall)?;
    raw.set("pcall", pcall.clone())?;
    lua.set_named_registry_value(key(PCALL_KEY), pcall)?;
    let sha1hex = lua.create_function(|lua, args: MultiValue| {
        if args.len() != 1 {
            return err_table(lua, b"ERR wrong number of arguments");
        }
        let bytes = arg_bytes(&args[0]).unwrap_or_default();
        let hex = sha1_smol::Sha1::from(&bytes).digest().to_string();
        Ok(Value::String(lua.create_string(hex)?))
    })?;
    lua.set_named_registry_value(key(SHA1HEX_KEY), sha1hex)?;
    raw.set(
        "error_reply",
        lua.create_function(|lua, args: MultiValue| match (args.len(), args.front()) {
            (1, Some(Value::String(s))) => {
                let raw = s.as_bytes();
                let text =
                    if raw.starts_with(b"-") { raw.to_vec() } else { [b"-", &raw[..]].concat() };
                err_table(lua, &error_text(&text))
            }
            _ => err_table(lua, b"ERR wrong number or type of arguments"),
        })?,
    )?;
    raw.set(
        "status_reply",
        lua.create_function(|lua, args: MultiValue| match (args.len(), args.front()) {
            (1, Some(Value::String(s))) => {
                let t = lua.create_table()?;
                t.raw_set("ok", s.clone())?;
                Ok(Value::Table(t))
            }
            _ => err_table(lua, b"ERR wrong number or type of arguments"),
        })?,
    )?;
    let setresp = lua.create_function(|lua, args: MultiValue| {
        if args.len() != 1 {
            return err_table(lua, b"ERR redis.setresp() requires one argument.");
        }
        let resp = match &args[0] {
            Value::Integer(n @ 2..=3) => *n as u8,
            Value::Number(n) if *n == 2.0 || *n == 3.0 => *n as u8,
            _ => return err_table(lua, b"ERR RESP version must be 2 or 3."),
        };
        if let Some(mut ctx) = lua.app_data_mut::<Ctx>() {
            ctx.resp = resp;
        }
        Ok(Value::Nil)
    })?;
    lua.set_named_registry_value(key(SETRESP_KEY), setresp)?;
    let log = lua.create_function(|lua, args: MultiValue| {
        if args.len() < 2 {
            return err_table(lua, b"ERR redis.log() requires two arguments or more.");
        }
        let level = match &args[0] {
            Value::Integer(n) => *n,
            Value::Number(n) => *n as i64,
            _ => return err_table(lua, b"ERR First argument must be a number"),
        };
        if !(0..=3).contains(&level) {
            return err_table(lua, b"ERR Invalid debug level.");
        }
        let words: Vec<String> = args
            .iter()
            .skip(1)
            .filter_map(arg_bytes)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        let text = words.join(" ");
        match level {
            0 | 1 => tracing::debug!(target: "monotable::script", "{text}"),
            2 => tracing::info!(target: "monotable::script", "{text}"),
            _ => tracing::warn!(target: "monotable::script", "{text}"),
        }
        Ok(Value::Nil)
    })?;
    lua.set_named_registry_value(key(LOG_KEY), log)?;
    lua.set_named_registry_value(key(ACL_CHECK_KEY), lua.create_function(redis_acl_check)?)?;
    // SAFETY: each only moves values on the stack it is given and calls
    // the function stored under its key (set just above).
    unsafe {
        raw.set("call", lua.create_c_function(redis_call)?)?;
        raw.set("sha1hex", lua.create_c_function(redis_sha1hex)?)?;
        raw.set("setresp", lua.create_c_function(redis_setresp)?)?;
        raw.set("log", lua.create_c_function(redis_log)?)?;
        raw.set("acl_check_cmd", lua.create_c_function(redis_acl_check_cmd)?)?;
    }
    super::libs::install(lua, &raw)?;
    raw.set("version", REDIS_VERSION)?;
    raw.set("version_num", REDIS_VERSION_NUM)?;
    Ok(raw)
}

// Where the Rust halves of the raising functions are kept in the
// registry, for their C wrappers below.
const PCALL_KEY: &std::ffi::CStr = c"monotable.redis.pcall";
const SHA1HEX_KEY: &std::ffi::CStr = c"monotable.redis.sha1hex";
const SETRESP_KEY: &std::ffi::CStr = c"monotable.redis.setresp";
const LOG_KEY: &std::ffi::CStr = c"monotable.redis.log";
const ACL_CHECK_KEY: &std::ffi::CStr = c"monotable.redis.acl_check_cmd";

fn key(name: &std::ffi::CStr) -> &str {
    name.to_str().unwrap_or_default()
}

/// Calls the function registered under `key` with the arguments on the
/// stack and raises the `{err = ...}` table it returns; otherwise returns
/// its value.
///
/// Raising functions are C functions, as in Redis, so that the error
/// handler finds the script's line in the frame that called them: a Lua
/// function in their place would be tail-called by `return f(...)`, and
/// that frame gone. (A Rust function cannot raise a table.)
unsafe fn call_raising(state: *mut mlua::ffi::lua_State, key: &std::ffi::CStr) -> std::ffi::c_int {
    use mlua::ffi;
    let n = ffi::lua_gettop(state);
    ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, key.as_ptr());
    ffi::lua_insert(state, 1);
    ffi::lua_call(state, n, 1);
    if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
        ffi::lua_getfield(state, -1, c"err".as_ptr());
        let failed = ffi::lua_type(state, -1) != ffi::LUA_TNIL;
        ffi::lua_pop(state, 1);
        if failed {
            ffi::lua_error(state);
        }
    }
    1
}

/// `redis.call`: `redis.pcall`, raising its error.
unsafe extern "C-unwind" fn redis_call(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    call_raising(state, PCALL_KEY)
}

unsafe extern "C-unwind" fn redis_sha1hex(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    call_raising(state, SHA1HEX_KEY)
}

unsafe extern "C-unwind" fn redis_setresp(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    call_raising(state, SETRESP_KEY)
}

unsafe extern "C-unwind" fn redis_log(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    call_raising(state, LOG_KEY)
}

unsafe extern "C-unwind" fn redis_acl_check_cmd(
    state: *mut mlua::ffi::lua_State,
) -> std::ffi::c_int {
    call_raising(state, ACL_CHECK_KEY)
}

/// A Lua value as a command argument: strings as they are, numbers as
/// C's `%.17g` (Redis's rule; integers in full), anything else `None`.
fn arg_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(n) => Some(n.to_string().into_bytes()),
        Value::Number(n) if n.is_nan() => Some(b"nan".to_vec()),
        Value::Number(n) => Some(format_double(*n).into_bytes()),
        _ => None,
    }
}

/// `redis.pcall(command, args...)`: the command's reply as a Lua value,
/// an error as `{err = ...}` (which `redis.call` raises).
/// `redis.acl_check_cmd(command, args...)`: whether the script's caller
/// may run it, as a boolean (Redis's `luaRedisAclCheckCmdPermissionsCommand`).
fn redis_acl_check(lua: &Lua, args: MultiValue) -> mlua::Result<Value> {
    if args.is_empty() {
        return err_table(lua, b"ERR Please specify at least one argument for this redis lib call");
    }
    let Some(argv) = args.iter().map(arg_bytes).collect::<Option<Vec<_>>>() else {
        return err_table(lua, b"ERR Lua redis lib command arguments must be strings or integers");
    };
    let Some(ctx) = lua.app_data_ref::<Ctx>() else {
        return err_table(
            lua,
            b"ERR redis.acl_check_cmd can only be called inside a script invocation",
        );
    };
    let call = Call { args: argv, resp: ctx.resp, acl_check: true };
    if ctx.calls.send(call).is_err() {
        return err_table(lua, b"ERR the script's client is gone");
    }
    match ctx.answers.recv() {
        Ok(Reply::Int(n)) => Ok(Value::Boolean(n != 0)),
        Ok(Reply::Error(e)) => err_table(lua, e.as_bytes()),
        Ok(_) | Err(_) => err_table(lua, b"ERR the script's client is gone"),
    }
}

fn redis_pcall(lua: &Lua, args: MultiValue) -> mlua::Result<Value> {
    if args.is_empty() {
        return err_table(lua, b"ERR Please specify at least one argument for this redis lib call");
    }
    let Some(argv) = args.iter().map(arg_bytes).collect::<Option<Vec<_>>>() else {
        return err_table(lua, b"ERR Lua redis lib command arguments must be strings or integers");
    };
    let (reply, resp) = {
        let Some(ctx) = lua.app_data_ref::<Ctx>() else {
            return err_table(
                lua,
                b"ERR redis.call/pcall can only be called inside a script invocation",
            );
        };
        let resp = ctx.resp;
        if ctx.calls.send(Call { args: argv, resp, acl_check: false }).is_err() {
            return err_table(lua, b"ERR the script's client is gone");
        }
        match ctx.answers.recv() {
            Ok(reply) => (reply, resp),
            Err(_) => return err_table(lua, b"ERR the script's client is gone"),
        }
    };
    to_lua(lua, reply, resp)
}

/// A reply as Redis 7.0 hands it to Lua (`redisProtocolToLuaType`), as
/// written in protocol `resp`: statuses `{ok=}`, errors `{err=}`, nulls
/// `false` (RESP2) or `nil` (RESP3), RESP3's maps, sets, doubles, big
/// numbers as `{map=}`, `{set=}`, `{double=}`, `{big_number=}`.
fn to_lua(lua: &Lua, reply: Reply, resp: u8) -> mlua::Result<Value> {
    let resp3 = resp >= 3;
    let field = |name: &str, v: Value| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        t.raw_set(name, v)?;
        Ok(Value::Table(t))
    };
    let string = |b: &[u8]| -> mlua::Result<Value> { Ok(Value::String(lua.create_string(b)?)) };
    let list = |items: Vec<Reply>| -> mlua::Result<Value> {
        let t = lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.into_iter().enumerate() {
            t.raw_set(i + 1, to_lua(lua, item, resp)?)?;
        }
        Ok(Value::Table(t))
    };
    Ok(match reply {
        Reply::Simple(s) => field("ok", string(s.as_bytes())?)?,
        Reply::Status(s) => field("ok", string(s.as_bytes())?)?,
        Reply::Error(e) => field("err", string(e.as_bytes())?)?,
        Reply::Int(n) => Value::Integer(n),
        Reply::Bulk(b) => string(&b)?,
        Reply::Null | Reply::NullArray if resp3 => Value::Nil,
        Reply::Null | Reply::NullArray => Value::Boolean(false),
        Reply::Array(items) | Reply::Push(items) => list(items)?,
        Reply::Set(items) if resp3 => {
            let set = lua.create_table()?;
            for item in items {
                set.raw_set(to_lua(lua, item, resp)?, true)?;
            }
            field("set", Value::Table(set))?
        }
        Reply::Set(items) => list(items)?,
        Reply::Map(pairs) if resp3 => {
            let map = lua.create_table()?;
            for (k, v) in pairs {
                map.raw_set(to_lua(lua, k, resp)?, to_lua(lua, v, resp)?)?;
            }
            field("map", Value::Table(map))?
        }
        Reply::Pairs(pairs) if resp3 => {
            list(pairs.into_iter().map(|(k, v)| Reply::Array(vec![k, v])).collect())?
        }
        Reply::Map(pairs) | Reply::Pairs(pairs) => {
            list(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())?
        }
        Reply::Double(x) if resp3 => field("double", Value::Number(x))?,
        Reply::Double(x) => string(format_double(x).as_bytes())?,
        Reply::Bool(b) if resp3 => Value::Boolean(b),
        Reply::Bool(b) => Value::Integer(i64::from(b)),
        Reply::BigNumber(n) if resp3 => field("big_number", string(n.as_bytes())?)?,
        Reply::BigNumber(n) => string(n.as_bytes())?,
        Reply::DoubleText(text) if resp3 => match text.parse::<f64>() {
            Ok(x) => field("double", Value::Number(x))?,
            Err(_) => string(text.as_bytes())?,
        },
        Reply::Verbatim(text) | Reply::DoubleText(text) => string(text.as_bytes())?,
        Reply::Raw(bytes) => string(&bytes)?,
    })
}

/// A script's return value as Redis 7.0 replies it
/// (`luaReplyToRedisReply`), `resp` being the script's `redis.setresp`.
fn to_reply(v: &Value, resp: u8, depth: usize, elements: &mut usize) -> Reply {
    *elements += 1;
    if depth > REPLY_DEPTH_MAX || *elements > REPLY_ELEMENTS_MAX {
        return Reply::err("ERR reached lua stack limit");
    }
    match v {
        Value::String(s) => Reply::Bulk(s.as_bytes().to_vec()),
        Value::Boolean(b) if resp >= 3 => Reply::Bool(*b),
        Value::Boolean(true) => Reply::Int(1),
        Value::Boolean(false) => Reply::Null,
        Value::Integer(n) => Reply::Int(*n),
        // As Redis's `(long long)` cast: 1e30 and NaN give i64::MIN.
        Value::Number(n) => Reply::Int(crate::resp::reply::c_double_to_i64(*n)),
        Value::Table(t) => table_reply(t, resp, depth, elements),
        _ => Reply::Null,
    }
}

fn table_reply(t: &Table, resp: u8, depth: usize, elements: &mut usize) -> Reply {
    let text = |v: &Value| match v {
        Value::String(s) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
        _ => None,
    };
    if let Some(err) = t.raw_get::<Value>("err").ok().as_ref().and_then(text) {
        return Reply::Error(err);
    }
    if let Some(ok) = t.raw_get::<Value>("ok").ok().as_ref().and_then(text) {
        return Reply::Status(ok);
    }
    match t.raw_get::<Value>("double") {
        Ok(Value::Number(x)) => return Reply::Double(x),
        Ok(Value::Integer(n)) => return Reply::Double(n as f64),
        _ => {}
    }
    if let Some(n) = t.raw_get::<Value>("big_number").ok().as_ref().and_then(text) {
        return Reply::BigNumber(n);
    }
    if let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string") {
        if let (Ok(Value::String(_)), Ok(Value::String(s))) =
            (v.raw_get::<Value>("format"), v.raw_get::<Value>("string"))
        {
            return Reply::Bulk(s.as_bytes().to_vec());
        }
    }
    if let Ok(Value::Table(map)) = t.raw_get::<Value>("map") {
        let mut pairs = Vec::new();
        for (k, v) in map.pairs::<Value, Value>().flatten() {
            pairs.push((
                to_reply(&k, resp, depth + 1, elements),
                to_reply(&v, resp, depth + 1, elements),
            ));
        }
        return Reply::Map(pairs);
    }
    if let Ok(Value::Table(set)) = t.raw_get::<Value>("set") {
        let items = set
            .pairs::<Value, Value>()
            .flatten()
            .map(|(k, _)| to_reply(&k, resp, depth + 1, elements))
            .collect();
        return Reply::Set(items);
    }
    let mut items = Vec::new();
    for i in 1.. {
        match t.raw_get::<Value>(i) {
            Ok(Value::Nil) | Err(_) => break,
            Ok(v) => items.push(to_reply(&v, resp, depth + 1, elements)),
        }
        if *elements > REPLY_ELEMENTS_MAX {
            return Reply::err("ERR reached lua stack limit");
        }
    }
    Reply::Array(items)
}

/// The message handler a script runs under (Redis's
/// `__redis__err__handler`): the error as a table `{err = ...}` (a
/// non-table error becomes `ERR <text>`), with the line of the script it
/// was raised at.
fn error_handler(lua: &Lua, err: Value) -> mlua::Result<Value> {
    let t = match err {
        Value::Table(t) => t,
        other => {
            let text = match &other {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(n) => n.to_string().into_bytes(),
                Value::Number(n) => format_double(*n).into_bytes(),
                Value::Error(e) => first_line(&e.to_string()).into_bytes(),
                v => v.to_string().map(String::into_bytes).unwrap_or_default(),
            };
            let t = lua.create_table()?;
            t.raw_set("err", lua.create_string([&b"ERR "[..], &text].concat())?)?;
            t
        }
    };
    let line = (1..64).map_while(|level| lua.inspect_stack(level)).find_map(|frame| {
        let source = frame.source();
        let source =
            source.source.as_deref().filter(|s| *s == "@user_script" || *s == "@user_function")?;
        Some((source.to_owned(), frame.curr_line()))
    });
    if let Some((source, line)) = line {
        t.raw_set("source", source)?;
        t.raw_set("line", line)?;
    }
    Ok(Value::Table(t))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// The reply of a script that raised `err` (Redis's `luaCallFunction`):
/// the error's message, and where it was raised.
fn uncaught(sha: &str, err: &Value) -> Reply {
    let Value::Table(t) = err else {
        let text = match err {
            Value::String(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
            _ => "execution failure".to_owned(),
        };
        return Reply::err(format!("ERR Error running script {sha}, {text}"));
    };
    let message = match t.raw_get::<Value>("err") {
        Ok(Value::String(s)) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
        _ => String::new(),
    };
    match (t.raw_get::<Value>("source"), t.raw_get::<Value>("line")) {
        (Ok(Value::String(source)), Ok(Value::Integer(line))) => Reply::err(format!(
            "{message} script: {sha}, on {}:{line}.",
            String::from_utf8_lossy(&source.as_bytes())
        )),
        _ => Reply::err(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_follow_redis() {
        assert_eq!(error_text(b"-x y"), b"x y");
        assert_eq!(error_text(b"-x"), b"ERR x");
        assert_eq!(error_text(b"-"), b"ERR ");
        assert_eq!(error_text(b"plain words\r\n"), b"ERR plain words");
        assert_eq!(error_text(b"-WRONGTYPE bad\n"), b"WRONGTYPE bad");
    }

    fn run(body: &str) -> Outcome {
        let mut vm = ScriptVm::new(&LuaEnv::standalone()).expect("vm");
        // No caller: every command a script calls finds it gone.
        let (calls, _) = tokio::sync::mpsc::unbounded_channel();
        let (_, answers) = mpsc::channel();
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        vm.run(&sha, body.as_bytes(), &[b"k".to_vec()], &[b"a".to_vec()], calls, answers)
    }

    #[test]
    fn values_convert_as_redis() {
        let r = run("return {1, 'two', 3.9, true, false, {ok='fine'}, {err='bad'}, nil, 5}");
        assert_eq!(
            r.reply,
            Reply::Array(vec![
                Reply::Int(1),
                Reply::bulk("two"),
                Reply::Int(3),
                Reply::Int(1),
                Reply::Null,
                Reply::Status("fine".into()),
                Reply::err("bad"),
            ])
        );
        assert_eq!(
            run("return {KEYS[1], ARGV[1]}").reply,
            Reply::Array(vec![Reply::bulk("k"), Reply::bulk("a")])
        );
        assert_eq!(run("return redis.error_reply('x y')").reply, Reply::err("x y"));
        assert_eq!(run("return redis.status_reply('FINE')").reply, Reply::Status("FINE".into()));
        assert_eq!(
            run("return redis.sha1hex('')").reply,
            Reply::bulk("da39a3ee5e6b4b0d3255bfef95601890afd80709")
        );
        assert_eq!(run("return unpack({7, 8})").reply, Reply::Int(7));
    }

    #[test]
    fn errors_name_the_script_and_line() {
        let body = "\nerror('boom')";
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        assert_eq!(
            run(body).reply,
            Reply::err(format!("ERR user_script:2: boom script: {sha}, on @user_script:2."))
        );
        let body = "x = 1";
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        assert_eq!(
            run(body).reply,
            Reply::err(format!(
                "ERR user_script:1: Attempt to modify a readonly table script: {sha}, on @user_script:1."
            ))
        );
        assert!(
            matches!(run("return y").reply, Reply::Error(e) if e.contains("Script attempted to access nonexistent global variable 'y'"))
        );
        assert!(
            matches!(run("redis.call = nil").reply, Reply::Error(e) if e.contains("Attempt to modify a readonly table"))
        );
        assert!(
            matches!(run("rawset(_G, 'z', 1)").reply, Reply::Error(e) if e.contains("Attempt to modify a readonly table"))
        );
        // Existing globals are as read-only as new ones, through every door
        // Redis's own suite tries.
        // Postmortem: `redis = function() end` replaced `redis` for every
        // later script (only new globals were refused).
        for trick in [
            "redis = function() return 1 end",
            "_G = {}",
            "KEYS = {}",
            "setmetatable(_G, {})",
            "local g = getmetatable(_G) g.__index = {}",
            "_G.redis = 1",
            "rawset(redis, 'call', 1)",
            "string.rep = nil",
            "getmetatable(redis).x = 1",
        ] {
            let r = run(trick).reply;
            let refused =
                matches!(&r, Reply::Error(e) if e.contains("Attempt to modify a readonly table"));
            assert!(refused, "{trick}: {r:?}");
        }
        let r = run("print('x')").reply;
        assert!(
            matches!(&r, Reply::Error(e) if e.contains("nonexistent global variable 'print'")),
            "{r:?}"
        );
        assert!(
            matches!(run("syntax error here").reply, Reply::Error(e) if e.starts_with("ERR Error compiling script (new function): user_script:1:"))
        );
    }

    #[test]
    fn a_script_over_its_budget_is_stopped_and_its_writes_dropped() {
        let r = run("while true do end");
        assert!(r.stopped);
        assert!(
            matches!(&r.reply, Reply::Error(e) if e.contains("instruction limit")),
            "{:?}",
            r.reply
        );
        // pcall cannot swallow the stop.
        let r = run("while true do pcall(function() while true do end end) end");
        assert!(r.stopped);
    }

    #[test]
    fn a_reply_that_holds_itself_is_refused() {
        let r = run("local t = {} t[1] = t t[2] = t return t");
        let mut out = Vec::new();
        r.reply.write(2, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("reached lua stack limit"));
    }

    #[test]
    fn calls_without_a_client_fail_cleanly() {
        let r = run("return redis.pcall('get', 'k')");
        assert!(matches!(r.reply, Reply::Error(e) if e.contains("client is gone")));
        let r = run("return redis.pcall()");
        assert_eq!(
            r.reply,
            Reply::err("ERR Please specify at least one argument for this redis lib call")
        );
        let r = run("return redis.pcall('get', {})");
        assert_eq!(
            r.reply,
            Reply::err("ERR Lua redis lib command arguments must be strings or integers")
        );
    }
}
