//! Lua 5.4 functions for views, sandboxed.
//!
//! A Lua mapper defines a global `map(key, value)` that calls
//! `emit(key, value)` for each index row. `key` is the source key decoded
//! as a tuple (a Lua array of its elements), `value` the record decoded from
//! MessagePack into Lua tables. An emitted key is a Lua value or an array of
//! them (a composite key); the emitted value becomes MessagePack.
//!
//! The sandbox: only the `string`, `table`, `math` and `utf8` libraries and
//! the safe parts of the base library are loaded (no `io`, `os`, `require`,
//! `load`, `dofile`, `collectgarbage`); source is loaded as text only, never
//! bytecode. Every call gets an instruction budget and the VM a memory
//! limit; passing either is an error for that record, not for the node.
//! Records are mapped in batches, one Lua call per batch; a batch that fails
//! is mapped again record by record so the error lands on its record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};
use monotable_proto::tuple::{self, Element};

use super::map_fn::Row;

/// Lua VM instructions one call may run (a batch of records shares it).
pub const LUA_INSTRUCTIONS_MAX_PER_CALL: u64 = 10_000_000;
/// Memory one Lua VM may hold.
pub const LUA_MEMORY_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Nesting depth of values converted between Lua and MessagePack.
const VALUE_DEPTH_MAX: usize = 32;
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
}

fn runtime(e: mlua::Error) -> LuaFnError {
    let text = e.to_string();
    // The first line says what happened; the traceback after it is noise.
    LuaFnError::Runtime(text.lines().next().unwrap_or_default().to_owned())
}

/// A sandboxed Lua VM with per-call limits.
struct Sandbox {
    lua: Lua,
    /// Instructions left in the current call, shared with the hook.
    budget: Arc<AtomicU64>,
}

impl Sandbox {
    fn new(source: &str) -> Result<Sandbox, LuaFnError> {
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8;
        let lua = Lua::new_with(libs, LuaOptions::default())
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        lua.set_memory_limit(LUA_MEMORY_MAX_BYTES)
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        let globals = lua.globals();
        for name in
            ["load", "loadstring", "dofile", "loadfile", "require", "collectgarbage", "module"]
        {
            globals.raw_set(name, Value::Nil).map_err(|e| LuaFnError::Compile(e.to_string()))?;
        }
        let budget = Arc::new(AtomicU64::new(LUA_INSTRUCTIONS_MAX_PER_CALL));
        let hook_budget = budget.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY_INSTRUCTIONS),
            move |_, _| {
                let left = hook_budget.load(Ordering::Relaxed);
                if left < u64::from(HOOK_EVERY_INSTRUCTIONS) {
                    return Err(mlua::Error::RuntimeError(format!(
                        "instruction limit of {LUA_INSTRUCTIONS_MAX_PER_CALL} per call exceeded"
                    )));
                }
                hook_budget.store(left - u64::from(HOOK_EVERY_INSTRUCTIONS), Ordering::Relaxed);
                Ok(VmState::Continue)
            },
        );
        lua.load(source)
            .set_mode(ChunkMode::Text)
            .set_name("view")
            .exec()
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        Ok(Sandbox { lua, budget })
    }

    fn reset_budget(&self) {
        self.budget.store(LUA_INSTRUCTIONS_MAX_PER_CALL, Ordering::Relaxed);
    }
}

fn msgpack_to_lua(lua: &Lua, v: &rmpv::Value, depth: usize) -> mlua::Result<Value> {
    if depth > VALUE_DEPTH_MAX {
        return Err(mlua::Error::RuntimeError("value nested too deeply".into()));
    }
    Ok(match v {
        rmpv::Value::Nil => Value::Nil,
        rmpv::Value::Boolean(b) => Value::Boolean(*b),
        rmpv::Value::Integer(i) => match i.as_i64() {
            Some(x) => Value::Integer(x),
            None => Value::Number(i.as_u64().unwrap_or_default() as f64),
        },
        rmpv::Value::F32(f) => Value::Number(f64::from(*f)),
        rmpv::Value::F64(f) => Value::Number(*f),
        rmpv::Value::String(s) => Value::String(lua.create_string(s.as_bytes())?),
        rmpv::Value::Binary(b) => Value::String(lua.create_string(b)?),
        rmpv::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, msgpack_to_lua(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        rmpv::Value::Map(pairs) => {
            let t = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, v) in pairs {
                t.raw_set(msgpack_to_lua(lua, k, depth + 1)?, msgpack_to_lua(lua, v, depth + 1)?)?;
            }
            Value::Table(t)
        }
        rmpv::Value::Ext(_, data) => Value::String(lua.create_string(data)?),
    })
}

fn element_to_lua(lua: &Lua, e: &Element) -> mlua::Result<Value> {
    Ok(match e {
        Element::Null => Value::Nil,
        Element::Bool(b) => Value::Boolean(*b),
        Element::Int(i) => match i64::try_from(*i) {
            Ok(x) => Value::Integer(x),
            Err(_) => Value::Number(*i as f64),
        },
        Element::Float(f) => Value::Number(*f),
        Element::String(s) => Value::String(lua.create_string(s)?),
        Element::Bytes(b) => Value::String(lua.create_string(b)?),
        Element::Tuple(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, element_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// The source key as Lua sees it: its tuple elements, or the raw bytes.
fn key_to_lua(lua: &Lua, key: &[u8]) -> mlua::Result<Value> {
    match tuple::decode(key) {
        Ok(elements) => {
            let t = lua.create_table()?;
            for (i, e) in elements.iter().enumerate() {
                t.raw_set(i + 1, element_to_lua(lua, e)?)?;
            }
            Ok(Value::Table(t))
        }
        Err(_) => Ok(Value::String(lua.create_string(key)?)),
    }
}

/// The length of a table that is a sequence 1..n with nothing else.
fn sequence_len(t: &mlua::Table) -> Option<usize> {
    let n = t.raw_len();
    let mut count = 0;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.ok()?;
        match k {
            Value::Integer(i) if i >= 1 && (i as usize) <= n => count += 1,
            _ => return None,
        }
    }
    (count == n).then_some(n)
}

fn lua_to_element(v: &Value, depth: usize) -> Result<Element, LuaFnError> {
    if depth > VALUE_DEPTH_MAX {
        return Err(LuaFnError::Value("key nested too deeply".into()));
    }
    Ok(match v {
        Value::Nil => Element::Null,
        Value::Boolean(b) => Element::Bool(*b),
        Value::Integer(i) => Element::Int(i128::from(*i)),
        Value::Number(f) => Element::Float(*f),
        Value::String(s) => match s.to_str() {
            Ok(text) => Element::String(text.to_owned()),
            Err(_) => Element::Bytes(s.as_bytes().to_vec()),
        },
        Value::Table(t) => {
            let n = sequence_len(t)
                .ok_or_else(|| LuaFnError::Value("a key table must be an array".into()))?;
            let mut items = Vec::with_capacity(n);
            for i in 1..=n {
                items.push(lua_to_element(&t.raw_get::<Value>(i).map_err(runtime)?, depth + 1)?);
            }
            Element::Tuple(items)
        }
        other => return Err(LuaFnError::Value(format!("a {} cannot be a key", other.type_name()))),
    })
}

/// An emitted key: an array table is a composite key, anything else one element.
fn lua_to_key(v: &Value) -> Result<Vec<u8>, LuaFnError> {
    let elements = match v {
        Value::Table(_) => match lua_to_element(v, 0)? {
            Element::Tuple(items) => items,
            other => vec![other],
        },
        other => vec![lua_to_element(other, 0)?],
    };
    tuple::encode(&elements).map_err(|e| LuaFnError::Value(e.to_string()))
}

pub fn lua_to_msgpack(v: &Value, depth: usize) -> Result<rmpv::Value, LuaFnError> {
    if depth > VALUE_DEPTH_MAX {
        return Err(LuaFnError::Value("value nested too deeply".into()));
    }
    Ok(match v {
        Value::Nil => rmpv::Value::Nil,
        Value::Boolean(b) => rmpv::Value::Boolean(*b),
        Value::Integer(i) => rmpv::Value::from(*i),
        Value::Number(f) => rmpv::Value::F64(*f),
        Value::String(s) => match s.to_str() {
            Ok(text) => rmpv::Value::String(text.to_owned().into()),
            Err(_) => rmpv::Value::Binary(s.as_bytes().to_vec()),
        },
        Value::Table(t) => match sequence_len(t) {
            Some(n) if n > 0 => {
                let mut items = Vec::with_capacity(n);
                for i in 1..=n {
                    items
                        .push(lua_to_msgpack(&t.raw_get::<Value>(i).map_err(runtime)?, depth + 1)?);
                }
                rmpv::Value::Array(items)
            }
            _ => {
                let mut pairs = Vec::new();
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(runtime)?;
                    pairs.push((lua_to_msgpack(&k, depth + 1)?, lua_to_msgpack(&v, depth + 1)?));
                }
                rmpv::Value::Map(pairs)
            }
        },
        other => {
            return Err(LuaFnError::Value(format!("a {} cannot be stored", other.type_name())))
        }
    })
}

/// These mutexes are only ever taken by the one thread running the VM; a
/// poisoned one holds plain data and stays usable.
trait Locked<T> {
    fn lock(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Arc<Mutex<T>> {
    fn lock(&self) -> MutexGuard<'_, T> {
        Mutex::lock(self).unwrap_or_else(|p| p.into_inner())
    }
}

fn encode(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
    out
}

/// A row emitted by the running call: (record index, key, value).
type Emitted = (usize, Vec<u8>, Vec<u8>);

/// A Lua mapper: `map(key, value)` calling `emit(key, value)`.
pub struct LuaMapper {
    sandbox: Sandbox,
    /// Rows emitted by the running call: (record index, key, value).
    emitted: Arc<Mutex<Vec<Emitted>>>,
    /// The record the running call is on, set by the batch driver.
    current: Arc<Mutex<usize>>,
    driver: mlua::Function,
    /// An emit that failed to convert; reported for its record.
    emit_error: Arc<Mutex<Option<(usize, LuaFnError)>>>,
}

/// The driver that maps a batch in one call.
const DRIVER: &str = r#"
local map, at = ...
return function(batch)
  for i = 1, #batch do
    at(i)
    map(batch[i][1], batch[i][2])
  end
end
"#;

impl LuaMapper {
    pub fn new(source: &str) -> Result<LuaMapper, LuaFnError> {
        let sandbox = Sandbox::new(source)?;
        let lua = &sandbox.lua;
        let map: mlua::Function = match lua.globals().get::<Value>("map") {
            Ok(Value::Function(f)) => f,
            _ => return Err(LuaFnError::Missing("map")),
        };
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::new(Mutex::new(0usize));
        let emit_error = Arc::new(Mutex::new(None));
        let (e, c, err) = (emitted.clone(), current.clone(), emit_error.clone());
        let emit = lua
            .create_function(move |_, (k, v): (Value, Value)| {
                let at = *c.lock();
                let row = lua_to_key(&k).and_then(|key| Ok((key, encode(&lua_to_msgpack(&v, 0)?))));
                match row {
                    Ok((key, value)) => e.lock().push((at, key, value)),
                    Err(problem) => {
                        err.lock().get_or_insert((at, problem));
                    }
                }
                Ok(())
            })
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        lua.globals().raw_set("emit", emit).map_err(|e| LuaFnError::Compile(e.to_string()))?;
        let c = current.clone();
        let at = lua
            .create_function(move |_, i: usize| {
                *c.lock() = i - 1;
                Ok(())
            })
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        let driver: mlua::Function = lua
            .load(DRIVER)
            .set_mode(ChunkMode::Text)
            .call((map, at))
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        Ok(LuaMapper { sandbox, emitted, current, driver, emit_error })
    }

    /// Maps records in one call; per record, its rows or its error.
    pub fn map_batch(&self, records: &[(&[u8], &[u8])]) -> Vec<Result<Vec<Row>, LuaFnError>> {
        match self.call(records) {
            Ok(rows) => rows,
            // One record spoiled the batch: map each alone to find it.
            Err(_) if records.len() > 1 => records
                .iter()
                .map(|r| {
                    self.call(std::slice::from_ref(r)).map(|mut v| v.remove(0)).unwrap_or_else(Err)
                })
                .collect(),
            Err(e) => vec![Err(e)],
        }
    }

    fn call(
        &self,
        records: &[(&[u8], &[u8])],
    ) -> Result<Vec<Result<Vec<Row>, LuaFnError>>, LuaFnError> {
        let lua = &self.sandbox.lua;
        self.emitted.lock().clear();
        *self.emit_error.lock() = None;
        *self.current.lock() = 0;
        let mut out: Vec<Result<Vec<Row>, LuaFnError>> =
            (0..records.len()).map(|_| Ok(Vec::new())).collect();
        let batch = lua.create_table_with_capacity(records.len(), 0).map_err(runtime)?;
        for (i, (key, value)) in records.iter().enumerate() {
            let mut rest = *value;
            let decoded = match rmpv::decode::read_value(&mut rest) {
                Ok(v) if rest.is_empty() => v,
                _ => {
                    out[i] = Err(LuaFnError::Value("record is not MessagePack".into()));
                    continue;
                }
            };
            let pair = lua.create_table().map_err(runtime)?;
            pair.raw_set(1, key_to_lua(lua, key).map_err(runtime)?).map_err(runtime)?;
            pair.raw_set(2, msgpack_to_lua(lua, &decoded, 0).map_err(runtime)?).map_err(runtime)?;
            batch.raw_set(i + 1, pair).map_err(runtime)?;
        }
        self.sandbox.reset_budget();
        self.driver.call::<()>(batch).map_err(runtime)?;
        if let Some((_, e)) = self.emit_error.lock().take() {
            return Err(e);
        }
        for (i, key, value) in self.emitted.lock().drain(..) {
            if let Some(Ok(rows)) = out.get_mut(i) {
                let mut k = key;
                k.extend_from_slice(records[i].0);
                rows.push((k, value));
            }
        }
        // Skipped (undecodable) records left holes in the Lua batch.
        Ok(out)
    }
}

/// A reduction a Lua reducer produced, or why it could not: an error in
/// any row poisons every reduction above it, and a query over it reports it.
pub type LuaReduction = Result<rmpv::Value, Arc<str>>;

/// Bytes a reduction may reach before it must shrink when combined (to at
/// most half of its inputs): a reduction that grows with its input
/// (CouchDB's reduce overflow) is refused.
pub const LUA_REDUCTION_GROWTH_FREE_BYTES: usize = 4096;

/// A Lua reducer: `reduce(keys, values, rereduce)` returning the reduction.
pub struct LuaReducer {
    sandbox: Sandbox,
    reduce: mlua::Function,
}

impl LuaReducer {
    pub fn new(source: &str) -> Result<LuaReducer, LuaFnError> {
        let sandbox = Sandbox::new(source)?;
        let reduce = match sandbox.lua.globals().get::<Value>("reduce") {
            Ok(Value::Function(f)) => f,
            _ => return Err(LuaFnError::Missing("reduce")),
        };
        Ok(LuaReducer { sandbox, reduce })
    }

    fn call(
        &self,
        keys: Value,
        values: Vec<&rmpv::Value>,
        rereduce: bool,
    ) -> Result<rmpv::Value, LuaFnError> {
        let lua = &self.sandbox.lua;
        let t = lua.create_table_with_capacity(values.len(), 0).map_err(runtime)?;
        for (i, v) in values.iter().enumerate() {
            t.raw_set(i + 1, msgpack_to_lua(lua, v, 0).map_err(runtime)?).map_err(runtime)?;
        }
        self.sandbox.reset_budget();
        let out: Value = self.reduce.call((keys, t, rereduce)).map_err(runtime)?;
        lua_to_msgpack(&out, 0)
    }

    /// The reduction of one row.
    pub fn leaf(&self, key: &[u8], value: &[u8]) -> LuaReduction {
        let mut rest = value;
        let v = match rmpv::decode::read_value(&mut rest) {
            Ok(v) if rest.is_empty() => v,
            _ => return Err("row value is not MessagePack".into()),
        };
        let lua = &self.sandbox.lua;
        let keys = (|| -> mlua::Result<Value> {
            let t = lua.create_table()?;
            t.raw_set(1, key_to_lua(lua, key)?)?;
            Ok(Value::Table(t))
        })()
        .map_err(|e| Arc::<str>::from(runtime(e).to_string()))?;
        self.call(keys, vec![&v], false).map_err(|e| e.to_string().into())
    }
}

fn encoded_len(v: &rmpv::Value) -> usize {
    encode(v).len()
}

impl super::reduce_tree::Monoid for LuaReducer {
    type R = LuaReduction;

    fn combine(&self, a: &LuaReduction, b: &LuaReduction) -> LuaReduction {
        let (a, b) = match (a, b) {
            (Err(e), _) | (_, Err(e)) => return Err(e.clone()),
            (Ok(a), Ok(b)) => (a, b),
        };
        let out =
            self.call(Value::Nil, vec![a, b], true).map_err(|e| Arc::<str>::from(e.to_string()))?;
        let (len, inputs) = (encoded_len(&out), encoded_len(a) + encoded_len(b));
        // CouchDB's rule: past a small size, a combined reduction must be
        // at most half the size of what it combines.
        if len > LUA_REDUCTION_GROWTH_FREE_BYTES && len * 2 > inputs {
            return Err(format!(
                "reduce output keeps growing ({len} bytes from {inputs}): a reduction must shrink its input"
            )
            .into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(j: serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec(&j).expect("json encodes")
    }

    fn key(n: i64) -> Vec<u8> {
        tuple::encode(&[Element::from(n)]).expect("key")
    }

    #[test]
    fn maps_a_batch_with_emit() {
        let m = LuaMapper::new(
            r#"function map(key, value)
                 for _, tag in ipairs(value.tags) do emit({tag, value.n}, key[1]) end
               end"#,
        )
        .expect("compiles");
        let (k1, k2) = (key(1), key(2));
        let v1 = doc(serde_json::json!({"tags": ["a", "b"], "n": 5}));
        let v2 = doc(serde_json::json!({"tags": [], "n": 6}));
        let out = m.map_batch(&[(&k1, &v1), (&k2, &v2)]);
        let rows = out[0].clone().expect("maps");
        assert_eq!(rows.len(), 2);
        let mut want = tuple::encode(&["a".into(), Element::from(5i64)]).expect("key");
        want.extend_from_slice(&k1);
        assert_eq!(rows[0].0, want);
        assert_eq!(rows[0].1, doc(serde_json::json!(1)));
        assert_eq!(out[1], Ok(vec![]));
    }

    #[test]
    fn sandbox_refuses_what_it_must() {
        for (src, needle) in [
            ("function map(k, v) while true do end end", "instruction limit"),
            ("function map(k, v) local t = {} local s = string.rep('x', 1024 * 1024) for i = 1, 1000 do t[i] = s .. i end end", "memory"),
            ("function map(k, v) io.write('x') end", "io"),
            ("function map(k, v) os.exit(1) end", "os"),
            ("function map(k, v) require('x') end", "require"),
            ("function map(k, v) load('return 1')() end", "load"),
            ("function map(k, v) error('boom') end", "boom"),
        ] {
            let m = LuaMapper::new(src).expect("compiles");
            let k = key(1);
            let v = doc(serde_json::json!({}));
            let out = m.map_batch(&[(&k, &v)]);
            let err = out[0].clone().expect_err(src).to_string();
            assert!(err.to_lowercase().contains(needle), "{src}: {err}");
        }
        assert!(matches!(LuaMapper::new("function map(k, v"), Err(LuaFnError::Compile(_))));
        assert!(matches!(LuaMapper::new("x = 1"), Err(LuaFnError::Missing("map"))));
        assert!(
            matches!(LuaMapper::new("\x1bLua"), Err(LuaFnError::Compile(_))),
            "bytecode is refused"
        );
    }

    #[test]
    fn lua_reducers_combine_and_refuse_growth() {
        use crate::view::reduce_tree::{Monoid, ReduceTree};
        let r = LuaReducer::new(
            "function reduce(keys, values, rereduce) local s = 0 for _, v in ipairs(values) do s = s + v end return s end",
        )
        .expect("compiles");
        let mut tree = ReduceTree::new();
        for i in 0..100i64 {
            let leaf = r.leaf(&key(i), &rmp_serde::to_vec(&i).expect("int"));
            tree.insert(&r, &key(i), leaf);
        }
        assert_eq!(tree.total(), Some(Ok(rmpv::Value::from(4950))));
        let grow = LuaReducer::new(
            "function reduce(keys, values, rereduce) local t = {} for _, v in ipairs(values) do if type(v) == 'table' then for _, x in ipairs(v) do t[#t+1] = x end else t[#t+1] = string.rep('x', 100) end end return t end",
        )
        .expect("compiles");
        let leaves: Vec<LuaReduction> =
            (0..200i64).map(|i| grow.leaf(&key(i), &rmp_serde::to_vec(&i).expect("int"))).collect();
        let total = leaves.iter().skip(1).fold(leaves[0].clone(), |acc, l| grow.combine(&acc, l));
        let err = match total {
            Ok(v) => panic!("growth was not refused ({} bytes)", encoded_len(&v)),
            Err(e) => e,
        };
        assert!(err.contains("keeps growing"), "{err}");
        assert!(matches!(LuaReducer::new("x = 1"), Err(LuaFnError::Missing("reduce"))));
    }

    #[test]
    fn one_bad_record_does_not_spoil_its_batch() {
        let m = LuaMapper::new("function map(k, v) emit(v.x * 2, nil) end").expect("compiles");
        let keys: Vec<Vec<u8>> = (0..3).map(key).collect();
        let vals = [
            doc(serde_json::json!({"x": 1})),
            doc(serde_json::json!({"y": 1})),
            doc(serde_json::json!({"x": 3})),
        ];
        let batch: Vec<(&[u8], &[u8])> =
            keys.iter().zip(&vals).map(|(k, v)| (&k[..], &v[..])).collect();
        let out = m.map_batch(&batch);
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(out[1].is_err());
        // The VM is healthy afterwards.
        assert!(m.map_batch(&batch[..1])[0].is_ok());
    }
}
