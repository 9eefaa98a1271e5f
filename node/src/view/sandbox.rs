//! The Lua VM a view function runs in, and the limits nothing in it can
//! escape.
//!
//! - Instructions: every call from Rust gets a budget, counted by a hook.
//!   Once it is spent the VM is *stopped* until the call returns to Rust:
//!   the hook errors again at every later firing, and `pcall`/`xpcall` are
//!   wrappers that re-raise the stop, so no handler can swallow it and go
//!   on. The same stop ends a call at once when its view is dropped or the
//!   node shuts down ([`Interrupt`]).
//! - Memory: each VM has a limit, and every VM's limit is reserved from
//!   the node's [`LuaMemoryPool`] while the VM lives, so all VMs together
//!   stay under `serve --lua-memory-max-bytes`.
//! - C functions whose work is not bounded by memory and that no hook
//!   interrupts: `table.move` charges its element count to the budget,
//!   `string.rep` refuses a result over the memory limit before it loops,
//!   and the pattern functions (`string.find`, `match`, `gmatch`, `gsub`)
//!   are replaced by a matcher that charges every step
//!   ([`super::lua_pattern`]).
//! - `time` ([`super::lua_time`]): UTC timestamp parsing and formatting,
//!   pure (no clock) and charged per call.
//! - Finalizers and to-be-closed variables: `setmetatable` refuses a
//!   metatable with `__gc` (a finalizer would run at any allocation, even
//!   between calls) or `__close` (it runs while an error unwinds, with the
//!   counting hook off), and locks the metatable it sets (a copy, with
//!   `__metatable`) so neither can be added later; the strings' shared
//!   metatable is locked too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Value, VmState};

/// Lua VM instructions one call may run (a batch of records shares it).
pub const LUA_INSTRUCTIONS_MAX_PER_CALL: u64 = 10_000_000;
/// Instructions one batch of records may use, its retries record by record
/// included, before it stops and leaves the records it has not reached to
/// a fresh batch. Every record still gets a whole call's budget; this
/// bounds how long one batch runs, so a backfill round that has used it
/// ends and saves its progress.
pub const LUA_INSTRUCTIONS_MAX_PER_BATCH: u64 = 4 * LUA_INSTRUCTIONS_MAX_PER_CALL;
/// Memory one Lua VM may hold.
pub const LUA_MEMORY_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Default of the node's `--lua-memory-max-bytes`: the memory all Lua VMs
/// together may reserve (16 VMs at [`LUA_MEMORY_MAX_BYTES`]).
pub const LUA_MEMORY_MAX_DEFAULT_BYTES: usize = 1024 * 1024 * 1024;
/// The instruction hook runs every this many instructions.
const HOOK_EVERY_INSTRUCTIONS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LuaFnError {
    #[error("Lua function does not compile: {0}")]
    Compile(String),
    #[error("Lua source must define a global function `{0}`")]
    Missing(&'static str),
    #[error("Lua error: {0}")]
    Runtime(String),
    #[error("Lua value cannot be stored: {0}")]
    Value(String),
    #[error("{0}")]
    Limit(String),
}

pub fn runtime(e: mlua::Error) -> LuaFnError {
    let text = e.to_string();
    // The first line says what happened; the traceback after it is noise.
    LuaFnError::Runtime(text.lines().next().unwrap_or_default().to_owned())
}

fn setup(e: mlua::Error) -> LuaFnError {
    LuaFnError::Compile(e.to_string())
}

/// The memory all Lua VMs of a node may hold together. Shared by the
/// node's view registry (which creates it from the node's settings) and
/// every [`Sandbox`], each holding a reservation of its VM's limit.
#[derive(Debug)]
pub struct LuaMemoryPool {
    max_bytes: usize,
    reserved_bytes: AtomicUsize,
}

impl LuaMemoryPool {
    pub fn new(max_bytes: usize) -> Arc<LuaMemoryPool> {
        Arc::new(LuaMemoryPool { max_bytes, reserved_bytes: AtomicUsize::new(0) })
    }

    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes.load(Ordering::Acquire)
    }

    /// Bytes not reserved now.
    pub fn free_bytes(&self) -> usize {
        self.max_bytes.saturating_sub(self.reserved_bytes())
    }

    fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, LuaFnError> {
        let mut now = self.reserved_bytes.load(Ordering::Acquire);
        loop {
            let after = now.saturating_add(bytes);
            if after > self.max_bytes {
                return Err(LuaFnError::Limit(format!(
                    "the node's Lua memory is used up: {now} of {} bytes are reserved by other \
                     Lua functions and this one needs {bytes}; drop a Lua view or raise \
                     `serve --lua-memory-max-bytes`",
                    self.max_bytes
                )));
            }
            match self.reserved_bytes.compare_exchange(
                now,
                after,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(Reservation { pool: self.clone(), bytes }),
                Err(actual) => now = actual,
            }
        }
    }
}

/// Bytes of a [`LuaMemoryPool`] held by one VM, given back on drop.
#[derive(Debug)]
struct Reservation {
    pool: Arc<LuaMemoryPool>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.reserved_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Stops running Lua calls: set for one view when it is dropped, for all
/// when the node shuts down. The node flag is shared by every view of a
/// node (owned by its view registry); the view flag by one view's VM and
/// its registry entry.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    node: Arc<Flag>,
    view: Arc<Flag>,
}

/// A sticky flag whose setting wakes those waiting for it.
#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Flag {
    fn set(&self, on: bool) {
        self.set.store(on, Ordering::Release);
        if on {
            self.notify.notify_waiters();
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
}

impl Interrupt {
    /// A fresh view flag under the same node flag.
    pub fn for_view(&self) -> Interrupt {
        Interrupt { node: self.node.clone(), view: Arc::default() }
    }

    /// Stops the calls of this view.
    pub fn stop_view(&self) {
        self.view.set(true);
    }

    /// Lets calls run again after [`Interrupt::stop_view`] (a script
    /// VM, reused after SCRIPT KILL stopped one script).
    pub fn clear_view(&self) {
        self.view.set(false);
    }

    /// Stops the calls of every view of the node.
    pub fn stop_node(&self) {
        self.node.set(true);
    }

    /// Whether calls are being stopped. Sticky until the view or node is
    /// gone (a script VM excepted, [`Interrupt::clear_view`]): a result
    /// computed while it was set is not the function's answer.
    pub fn is_set(&self) -> bool {
        self.node.is_set() || self.view.is_set()
    }

    /// Returns once [`Interrupt::is_set`] (at once if it is already).
    pub async fn stopped(&self) {
        loop {
            let node = self.node.notify.notified();
            let view = self.view.notify.notified();
            tokio::pin!(node, view);
            // Registered before the check: a stop between the two wakes
            // them.
            node.as_mut().enable();
            view.as_mut().enable();
            if self.is_set() {
                return;
            }
            tokio::select! {
                () = node => {}
                () = view => {}
            }
        }
    }
}

/// A batch of calls was cut short by an [`Interrupt`] (the view is being
/// dropped or the node is shutting down): its per-record errors are not
/// the records' own, so nothing computed from it may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted: the view is being dropped or the node is shutting down")]
pub struct Interrupted;

/// What a sandbox is made with: the node's memory pool and the view's
/// interrupt.
#[derive(Debug, Clone)]
pub struct LuaEnv {
    pub memory: Arc<LuaMemoryPool>,
    pub interrupt: Interrupt,
}

impl LuaEnv {
    /// An environment of its own (tests, and checks outside a node).
    pub fn standalone() -> LuaEnv {
        LuaEnv {
            memory: LuaMemoryPool::new(LUA_MEMORY_MAX_DEFAULT_BYTES),
            interrupt: Interrupt::default(),
        }
    }
}

/// The instruction budget of the running call, shared by the hook and the
/// wrappers of C functions. Only the thread running the VM touches it
/// (atomics because the hook closure must be `Send`).
#[derive(Debug, Default)]
pub struct Meter {
    left: AtomicU64,
    limit: AtomicU64,
    /// The budget ran out; sticky until the next call begins.
    spent: AtomicBool,
    interrupt: Interrupt,
}

impl Meter {
    fn start(&self, budget: u64) {
        self.left.store(budget, Ordering::Relaxed);
        self.limit.store(budget, Ordering::Relaxed);
        self.spent.store(false, Ordering::Relaxed);
    }

    fn used(&self) -> u64 {
        self.limit.load(Ordering::Relaxed).saturating_sub(self.left.load(Ordering::Relaxed))
    }

    /// Why the running call must stop, if it must.
    pub fn stopped(&self) -> Option<String> {
        if self.interrupt.is_set() {
            return Some(
                "interrupted: the view is being dropped or the node is shutting down".into(),
            );
        }
        self.spent.load(Ordering::Relaxed).then(|| {
            format!("instruction limit of {} per call exceeded", self.limit.load(Ordering::Relaxed))
        })
    }

    /// Whether the running call was stopped by a drop or a shutdown.
    pub fn interrupted(&self) -> bool {
        self.interrupt.is_set()
    }

    /// Takes `n` instructions' worth of work from the budget.
    pub fn charge(&self, n: u64) -> mlua::Result<()> {
        if let Some(why) = self.stopped() {
            return Err(mlua::Error::RuntimeError(why));
        }
        let left = self.left.load(Ordering::Relaxed);
        if n > left {
            self.left.store(0, Ordering::Relaxed);
            self.spent.store(true, Ordering::Relaxed);
            return Err(mlua::Error::RuntimeError(self.stopped().unwrap_or_default()));
        }
        self.left.store(left - n, Ordering::Relaxed);
        Ok(())
    }
}

/// Wraps the base functions that could catch the stop or register a
/// finalizer. Runs before the user's source, with the originals as locals.
const PRELUDE: &str = r#"
local pcall, xpcall, setmetatable, rawget, type, error, next = pcall, xpcall, setmetatable, rawget, type, error, next
local stopped, purpose = ...
local function pass(...)
  local why = stopped()
  if why then error(why, 0) end
  return ...
end
_G.pcall = function(...) return pass(pcall(...)) end
-- An error raised by the hook calls the message handler with hooks off:
-- once stopped, the user's handler is not called at all.
_G.xpcall = function(f, handler, ...)
  return pass(xpcall(f, function(e)
    if stopped() then return e end
    return handler(e)
  end, ...))
end
-- A metatable is copied and locked when it is set, so no field can be
-- added to it later: a finalizer (__gc) would run at any allocation, and
-- a __close metamethod runs while an error unwinds, where the hooks that
-- count instructions are off. getmetatable still returns the table given.
local banned = { __gc = "finalizers (__gc)", __close = "to-be-closed metamethods (__close)" }
_G.setmetatable = function(t, mt)
  if type(mt) == "table" then
    for field, what in next, banned do
      if rawget(mt, field) ~= nil then
        error(what .. " are not allowed in " .. purpose, 2)
      end
    end
    local locked = {}
    for k, v in next, mt do locked[k] = v end
    if rawget(locked, "__metatable") == nil then locked.__metatable = mt end
    mt = locked
  end
  return setmetatable(t, mt)
end
-- Strings share one metatable; locked so no __close can be added to it.
getmetatable("").__metatable = false
"#;

/// A sandboxed Lua VM with per-call limits.
pub struct Sandbox {
    pub lua: Lua,
    meter: Arc<Meter>,
    /// Held while the VM lives: its memory limit, taken from the node's pool.
    _memory: Reservation,
}

/// Charges `meter` for every [`HOOK_EVERY_INSTRUCTIONS`] instructions the
/// VM runs, counted from now.
fn set_hook(lua: &Lua, meter: &Arc<Meter>) {
    let meter = meter.clone();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY_INSTRUCTIONS),
        move |_, _| {
            meter.charge(u64::from(HOOK_EVERY_INSTRUCTIONS))?;
            Ok(VmState::Continue)
        },
    );
}

impl Sandbox {
    /// A VM with only the safe libraries, the wrappers, and `source` run
    /// (under the same limits as any call).
    pub fn new(source: &str, env: &LuaEnv) -> Result<Sandbox, LuaFnError> {
        Sandbox::for_purpose(source, env, "view functions")
    }

    /// [`Sandbox::new`] for code that is not a view function: `purpose`
    /// names it in the sandbox's own errors ("... are not allowed in
    /// `purpose`").
    pub fn for_purpose(
        source: &str,
        env: &LuaEnv,
        purpose: &'static str,
    ) -> Result<Sandbox, LuaFnError> {
        let memory = env.memory.reserve(LUA_MEMORY_MAX_BYTES)?;
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(setup)?;
        lua.set_memory_limit(LUA_MEMORY_MAX_BYTES).map_err(setup)?;
        let globals = lua.globals();
        for name in
            ["load", "loadstring", "dofile", "loadfile", "require", "collectgarbage", "module"]
        {
            globals.raw_set(name, Value::Nil).map_err(setup)?;
        }
        let meter = Arc::new(Meter { interrupt: env.interrupt.clone(), ..Meter::default() });
        set_hook(&lua, &meter);
        let sandbox = Sandbox { lua, meter, _memory: memory };
        sandbox.wrap_c_functions().map_err(setup)?;
        sandbox
            .run(LUA_INSTRUCTIONS_MAX_PER_CALL, || {
                let stop_meter = sandbox.meter.clone();
                let stopped = sandbox.lua.create_function(move |_, ()| Ok(stop_meter.stopped()))?;
                sandbox.lua.load(PRELUDE).set_mode(ChunkMode::Text).call::<()>((stopped, purpose))
            })
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        sandbox
            .run(LUA_INSTRUCTIONS_MAX_PER_CALL, || {
                sandbox.lua.load(source).set_mode(ChunkMode::Text).set_name("view").exec()
            })
            .map_err(|e| match e {
                LuaFnError::Runtime(text) => LuaFnError::Compile(text),
                other => other,
            })?;
        Ok(sandbox)
    }

    /// Runs a call from Rust with `budget` instructions.
    pub fn run<R>(
        &self,
        budget: u64,
        f: impl FnOnce() -> mlua::Result<R>,
    ) -> Result<R, LuaFnError> {
        self.meter.start(budget);
        // Set anew for each call, which restarts the VM's instruction count
        // towards the next hook: otherwise a call would begin with whatever
        // count the last one left, and the same record would be charged
        // differently depending on the calls before it (a record within a
        // hook's interval of the limit mapped alone but failed after a
        // neighbour, or the other way round).
        set_hook(&self.lua, &self.meter);
        let result = f();
        // What the call was stopped for, whatever error the function made
        // of it on the way out.
        match (result, self.meter.stopped()) {
            (Ok(r), None) => Ok(r),
            (_, Some(why)) => Err(LuaFnError::Limit(why)),
            (Err(e), None) => Err(runtime(e)),
        }
    }

    /// Instructions the last call used.
    pub fn used(&self) -> u64 {
        self.meter.used()
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    fn wrap_c_functions(&self) -> mlua::Result<()> {
        let lua = &self.lua;
        let table: mlua::Table = lua.globals().get("table")?;
        let move_fn: mlua::Function = table.get("move")?;
        let meter = self.meter.clone();
        table.set(
            "move",
            lua.create_function(move |_, args: MultiValue| {
                // table.move(a1, f, e, t [, a2]) copies e - f + 1 elements
                // in C, with no hook and, for nils, no allocation.
                let at = |i: usize| match args.get(i) {
                    Some(Value::Integer(n)) => Some(*n),
                    Some(Value::Number(n)) => Some(*n as i64),
                    _ => None,
                };
                if let (Some(f), Some(e)) = (at(1), at(2)) {
                    if e >= f {
                        meter
                            .charge((e as i128 - f as i128 + 1).min(i128::from(u32::MAX)) as u64)?;
                    }
                }
                move_fn.call::<MultiValue>(args)
            })?,
        )?;
        let string: mlua::Table = lua.globals().get("string")?;
        let rep: mlua::Function = string.get("rep")?;
        string.set(
            "rep",
            lua.create_function(
                move |lua, (s, n, sep): (mlua::String, i64, Option<mlua::String>)| {
                    let (len, sep_len) = (
                        s.as_bytes().len() as u128,
                        sep.as_ref().map_or(0, |x| x.as_bytes().len()) as u128,
                    );
                    // An empty result still loops n times in C.
                    if n <= 0 || len + sep_len == 0 {
                        return Ok(Value::String(lua.create_string("")?));
                    }
                    let n = n as u128;
                    let total = n * len + (n - 1) * sep_len;
                    if total > LUA_MEMORY_MAX_BYTES as u128 {
                        return Err(mlua::Error::RuntimeError(format!(
                            "string.rep: a result of {total} bytes is over the memory limit of \
                             {LUA_MEMORY_MAX_BYTES} bytes"
                        )));
                    }
                    rep.call::<Value>((s, n as i64, sep))
                },
            )?,
        )?;
        super::lua_pattern::install(lua, &string, self.meter.clone())?;
        super::lua_time::install(lua, self.meter.clone())
    }
}

#[cfg(test)]
#[path = "sandbox_tests.rs"]
mod tests;
