//! Lua 5.4 functions for views, sandboxed.
//!
//! A Lua mapper defines a global `map(key, value)` that calls
//! `emit(key, value)` for each index row. `key` is the source key decoded
//! as a tuple (a Lua array of its elements), `value` the record decoded from
//! MessagePack into Lua tables. An emitted key is a Lua value or an array of
//! them (a composite key; `{}` the empty one); the emitted value becomes
//! MessagePack. Every emit is one row, a key emitted again by the same
//! record included ([`monotable_proto::row`] numbers the repeats).
//!
//! The sandbox: only the `string`, `table`, `math` and `utf8` libraries and
//! the safe parts of the base library are loaded (no `io`, `os`, `require`,
//! `load`, `dofile`, `collectgarbage`); source is loaded as text only, never
//! bytecode. Every call gets an instruction budget and the VM a memory
//! limit ([`super::sandbox`], which nothing in the VM can escape); passing
//! either is an error for that record, not for the node. Records are mapped
//! in batches, one Lua call per batch; a batch that fails is mapped again
//! record by record so the error lands on its record, within one budget per
//! batch. What a call emits, and what a reduction may hold, is bounded too.

use std::sync::{Arc, Mutex, MutexGuard};

use mlua::{ChunkMode, Lua, Value};
use monotable_proto::row;
use monotable_proto::tuple::{self, Element};

use super::map_fn::Row;
use super::sandbox::{
    runtime, Sandbox, LUA_INSTRUCTIONS_MAX_PER_BATCH, LUA_INSTRUCTIONS_MAX_PER_CALL,
};
pub use super::sandbox::{LuaEnv, LuaFnError};

/// Nesting depth of values converted between Lua and MessagePack.
const VALUE_DEPTH_MAX: usize = 32;
/// Rows one call may emit (a batch of records shares it).
pub const LUA_EMIT_ROWS_MAX_PER_CALL: usize = 100_000;
/// Bytes of keys and values one call may emit (a batch of records shares
/// it).
pub const LUA_EMIT_BYTES_MAX_PER_CALL: usize = 32 * 1024 * 1024;
/// Bytes one batch may emit in all, its retries record by record included.
pub const LUA_EMIT_BYTES_MAX_PER_BATCH: usize = 2 * LUA_EMIT_BYTES_MAX_PER_CALL;

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

/// What converting one Lua value to stored bytes may still produce. A Lua
/// table can hold itself many times over, so a value small in the VM
/// could otherwise expand without end outside it.
struct Size {
    left_bytes: usize,
}

/// Bytes counted for each value converted, besides its strings.
const VALUE_NODE_BYTES: usize = 16;

impl Size {
    fn take(&mut self, bytes: usize) -> Result<(), LuaFnError> {
        let bytes = bytes.saturating_add(VALUE_NODE_BYTES);
        if bytes > self.left_bytes {
            return Err(LuaFnError::Limit(
                "emitted rows are too large: a call may emit at most \
                 LUA_EMIT_BYTES_MAX_PER_CALL bytes"
                    .replace(
                        "LUA_EMIT_BYTES_MAX_PER_CALL",
                        &LUA_EMIT_BYTES_MAX_PER_CALL.to_string(),
                    ),
            ));
        }
        self.left_bytes -= bytes;
        Ok(())
    }
}

fn lua_to_element(v: &Value, depth: usize, size: &mut Size) -> Result<Element, LuaFnError> {
    if depth > VALUE_DEPTH_MAX {
        return Err(LuaFnError::Value("key nested too deeply".into()));
    }
    size.take(match v {
        Value::String(s) => s.as_bytes().len(),
        _ => 0,
    })?;
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
                let item = t.raw_get::<Value>(i).map_err(runtime)?;
                items.push(lua_to_element(&item, depth + 1, size)?);
            }
            Element::Tuple(items)
        }
        other => return Err(LuaFnError::Value(format!("a {} cannot be a key", other.type_name()))),
    })
}

/// An emitted key: an array table is a composite key (`{}` the empty one),
/// anything else one element. Checked here to fit in a row key
/// ([`monotable_proto::row`]), so an error lands on the emit.
fn lua_to_key(v: &Value, size: &mut Size) -> Result<Vec<Element>, LuaFnError> {
    let elements = match v {
        Value::Table(_) => match lua_to_element(v, 0, size)? {
            Element::Tuple(items) => items,
            other => vec![other],
        },
        other => vec![lua_to_element(other, 0, size)?],
    };
    row::emitted_bound(&elements).map_err(|e| LuaFnError::Value(e.to_string()))?;
    Ok(elements)
}

fn lua_to_msgpack(v: &Value, depth: usize, size: &mut Size) -> Result<rmpv::Value, LuaFnError> {
    if depth > VALUE_DEPTH_MAX {
        return Err(LuaFnError::Value("value nested too deeply".into()));
    }
    size.take(match v {
        Value::String(s) => s.as_bytes().len(),
        _ => 0,
    })?;
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
                    let item = t.raw_get::<Value>(i).map_err(runtime)?;
                    items.push(lua_to_msgpack(&item, depth + 1, size)?);
                }
                rmpv::Value::Array(items)
            }
            _ => {
                let mut pairs = Vec::new();
                for pair in t.clone().pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(runtime)?;
                    pairs.push((
                        lua_to_msgpack(&k, depth + 1, size)?,
                        lua_to_msgpack(&v, depth + 1, size)?,
                    ));
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

/// A row emitted by the running call: (record index, emitted key, value).
type Emitted = (usize, Vec<Element>, Vec<u8>);

/// What the running call emitted, written by `emit` and read by the
/// driver between calls. Behind a std Mutex: only the thread running the
/// VM takes it, and never across a call into Lua.
#[derive(Default)]
struct Emits {
    rows: Vec<Emitted>,
    /// The record the running call is on, set by the batch driver.
    current: usize,
    /// The first emit that failed (a value that cannot be stored, a limit
    /// passed), reported for its record.
    error: Option<(usize, LuaFnError)>,
    /// Bytes this call may still emit.
    left_bytes: usize,
}

/// A Lua mapper: `map(key, value)` calling `emit(key, value)`.
pub struct LuaMapper {
    sandbox: Sandbox,
    emits: Arc<Mutex<Emits>>,
    driver: mlua::Function,
}

/// The driver that maps a batch in one call. It is given the batch's
/// length: a record that is not MessagePack is a hole in the batch, and
/// `#batch` on a table with holes may be any border, which would end the
/// loop early.
const DRIVER: &str = r#"
local map, at = ...
return function(batch, n)
  for i = 1, n do
    local record = batch[i]
    if record ~= nil then
      at(i)
      map(record[1], record[2])
    end
  end
end
"#;

impl LuaMapper {
    pub fn new(source: &str, env: &LuaEnv) -> Result<LuaMapper, LuaFnError> {
        let sandbox = Sandbox::new(source, env)?;
        let lua = &sandbox.lua;
        let map: mlua::Function = match lua.globals().get::<Value>("map") {
            Ok(Value::Function(f)) => f,
            _ => return Err(LuaFnError::Missing("map")),
        };
        let emits = Arc::new(Mutex::new(Emits::default()));
        let e = emits.clone();
        let emit = lua
            .create_function(move |_, (k, v): (Value, Value)| {
                let mut emits = e.lock();
                let at = emits.current;
                if emits.rows.len() >= LUA_EMIT_ROWS_MAX_PER_CALL {
                    let problem = LuaFnError::Limit(format!(
                        "too many rows emitted: a call may emit at most {LUA_EMIT_ROWS_MAX_PER_CALL}"
                    ));
                    emits.error.get_or_insert((at, problem.clone()));
                    return Err(mlua::Error::RuntimeError(problem.to_string()));
                }
                let mut size = Size { left_bytes: emits.left_bytes };
                let row = lua_to_key(&k, &mut size)
                    .and_then(|key| Ok((key, encode(&lua_to_msgpack(&v, 0, &mut size)?))));
                match row {
                    Ok((key, value)) => {
                        emits.left_bytes = size.left_bytes;
                        emits.rows.push((at, key, value));
                    }
                    Err(problem @ LuaFnError::Limit(_)) => {
                        emits.error.get_or_insert((at, problem.clone()));
                        return Err(mlua::Error::RuntimeError(problem.to_string()));
                    }
                    Err(problem) => {
                        emits.error.get_or_insert((at, problem));
                    }
                }
                Ok(())
            })
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        lua.globals().raw_set("emit", emit).map_err(|e| LuaFnError::Compile(e.to_string()))?;
        let e = emits.clone();
        let at = lua
            .create_function(move |_, i: usize| {
                e.lock().current = i.saturating_sub(1);
                Ok(())
            })
            .map_err(|e| LuaFnError::Compile(e.to_string()))?;
        let driver: mlua::Function = sandbox.run(LUA_INSTRUCTIONS_MAX_PER_CALL, || {
            lua.load(DRIVER).set_mode(ChunkMode::Text).call((map, at))
        })?;
        Ok(LuaMapper { sandbox, emits, driver })
    }

    /// Whether its calls are being stopped ([`super::sandbox::Interrupt`]):
    /// what they returned meanwhile is not the function's answer.
    pub fn interrupted(&self) -> bool {
        self.sandbox.meter().interrupted()
    }

    /// Maps records in one call; per record, its rows or its error, for a
    /// prefix of `records` (at least one record when there are any), and
    /// the instructions that took. A batch that fails is mapped again
    /// record by record, so the error lands on its record. Every record
    /// gets a whole call's budget ([`LUA_INSTRUCTIONS_MAX_PER_CALL`]
    /// instructions, [`LUA_EMIT_BYTES_MAX_PER_CALL`] bytes emitted), so its
    /// result is the one it gets mapped alone; the batch stops once what it
    /// has left ([`LUA_INSTRUCTIONS_MAX_PER_BATCH`],
    /// [`LUA_EMIT_BYTES_MAX_PER_BATCH`]) is less than that, and the records
    /// after it are the caller's to map in a fresh batch.
    pub fn map_batch(
        &self,
        records: &[(&[u8], &[u8])],
    ) -> (Vec<Result<Vec<Row>, LuaFnError>>, u64) {
        let whole = self.call(records, LUA_INSTRUCTIONS_MAX_PER_CALL, LUA_EMIT_BYTES_MAX_PER_CALL);
        let mut used = self.sandbox.used();
        match whole {
            Ok(rows) => return (rows, used),
            Err(e) if records.len() == 1 => return (vec![Err(e)], used),
            Err(e @ LuaFnError::Limit(_)) if self.sandbox.meter().interrupted() => {
                return (records.iter().map(|_| Err(e.clone())).collect(), used);
            }
            Err(_) => {}
        }
        // One record spoiled the batch: map each alone to find it.
        let mut bytes_left = LUA_EMIT_BYTES_MAX_PER_BATCH;
        let mut out = Vec::new();
        for r in records {
            let instructions_left = LUA_INSTRUCTIONS_MAX_PER_BATCH.saturating_sub(used);
            if !out.is_empty()
                && (instructions_left < LUA_INSTRUCTIONS_MAX_PER_CALL
                    || bytes_left < LUA_EMIT_BYTES_MAX_PER_CALL)
            {
                break;
            }
            let result = self.call(
                std::slice::from_ref(r),
                LUA_INSTRUCTIONS_MAX_PER_CALL,
                LUA_EMIT_BYTES_MAX_PER_CALL,
            );
            used += self.sandbox.used();
            let rows = result.and_then(|mut v| v.pop().unwrap_or(Ok(Vec::new())));
            if let Ok(rows) = &rows {
                let bytes: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
                bytes_left = bytes_left.saturating_sub(bytes);
            }
            out.push(rows);
        }
        (out, used)
    }

    fn call(
        &self,
        records: &[(&[u8], &[u8])],
        instructions: u64,
        emit_bytes: usize,
    ) -> Result<Vec<Result<Vec<Row>, LuaFnError>>, LuaFnError> {
        let lua = &self.sandbox.lua;
        *self.emits.lock() = Emits { left_bytes: emit_bytes, ..Emits::default() };
        let mut out: Vec<Result<Vec<Row>, LuaFnError>> =
            (0..records.len()).map(|_| Ok(Vec::new())).collect();
        let batch = lua.create_table_with_capacity(records.len(), 0).map_err(runtime)?;
        for (i, (key, value)) in records.iter().enumerate() {
            let decoded = match super::map_fn::decode_record(value) {
                Ok(v) => v,
                Err(e) => {
                    out[i] = Err(LuaFnError::Value(e.to_string()));
                    continue;
                }
            };
            let pair = lua.create_table().map_err(runtime)?;
            pair.raw_set(1, key_to_lua(lua, key).map_err(runtime)?).map_err(runtime)?;
            pair.raw_set(2, msgpack_to_lua(lua, &decoded, 0).map_err(runtime)?).map_err(runtime)?;
            batch.raw_set(i + 1, pair).map_err(runtime)?;
        }
        let ran = self.sandbox.run(instructions, || self.driver.call::<()>((batch, records.len())));
        let mut emits = std::mem::take(&mut *self.emits.lock());
        if let Some((_, e)) = emits.error.take() {
            return Err(e);
        }
        ran?;
        let mut by_record: Vec<Vec<(Vec<Element>, Vec<u8>)>> = vec![Vec::new(); records.len()];
        for (i, key, value) in emits.rows.drain(..) {
            if let Some(emitted) = by_record.get_mut(i) {
                emitted.push((key, value));
            }
        }
        for ((slot, emitted), (source_key, _)) in out.iter_mut().zip(by_record).zip(records) {
            if slot.is_ok() {
                *slot =
                    row::rows_of(source_key, emitted).map_err(|e| LuaFnError::Value(e.to_string()));
            }
        }
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

/// Largest reduction a Lua reducer may return, encoded: its meta row must
/// stay well under the value limit, and every node of a reduce tree holds
/// one.
pub const LUA_REDUCTION_SIZE_MAX_BYTES: usize = 1024 * 1024;

/// A Lua reducer: `reduce(keys, values, rereduce)` returning the reduction.
/// `keys` and `values` are always lists: for a row, `{key}` (the key as a
/// tuple array) and `{value}` with `rereduce` false; for a combine, `nil`
/// and the reductions to combine, with `rereduce` true.
pub struct LuaReducer {
    sandbox: Sandbox,
    reduce: mlua::Function,
}

impl LuaReducer {
    pub fn new(source: &str, env: &LuaEnv) -> Result<LuaReducer, LuaFnError> {
        let sandbox = Sandbox::new(source, env)?;
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
        let out: Value = self
            .sandbox
            .run(LUA_INSTRUCTIONS_MAX_PER_CALL, || self.reduce.call((keys, t, rereduce)))?;
        let mut size = Size { left_bytes: LUA_REDUCTION_SIZE_MAX_BYTES };
        let overflow = || {
            LuaFnError::Limit(format!(
                "reduce_overflow_error: a reduction may be at most \
                 {LUA_REDUCTION_SIZE_MAX_BYTES} bytes; reduce to a summary, not a collection"
            ))
        };
        let reduction = match lua_to_msgpack(&out, 0, &mut size) {
            Err(LuaFnError::Limit(_)) => return Err(overflow()),
            other => other?,
        };
        if encoded_len(&reduction) > LUA_REDUCTION_SIZE_MAX_BYTES {
            return Err(overflow());
        }
        Ok(reduction)
    }

    /// The reduction of one row.
    pub fn leaf(&self, key: &[u8], value: &[u8]) -> LuaReduction {
        let Some(v) = super::map_fn::decode_value(value) else {
            return Err("row value is not MessagePack".into());
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
                "reduce output too large ({len} bytes from {inputs}): past \
                 {LUA_REDUCTION_GROWTH_FREE_BYTES} bytes a reduction must be at most half the size \
                 of what it combines"
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
            &LuaEnv::standalone(),
        )
        .expect("compiles");
        let (k1, k2) = (key(1), key(2));
        let v1 = doc(serde_json::json!({"tags": ["a", "b"], "n": 5}));
        let v2 = doc(serde_json::json!({"tags": [], "n": 6}));
        let out = m.map_batch(&[(&k1, &v1), (&k2, &v2)]).0;
        let rows = out[0].clone().expect("maps");
        assert_eq!(rows.len(), 2);
        let want = row::encode_row(&["a".into(), Element::from(5i64)], &k1, 0).expect("key");
        assert_eq!(rows[0].0, want);
        assert_eq!(rows[0].1, doc(serde_json::json!(1)));
        assert_eq!(out[1], Ok(vec![]));
    }

    /// Postmortem: the driver looped to `#batch`, and a record that is not
    /// MessagePack leaves a hole in the batch, so `#` could stop at an
    /// earlier border and the records after it were mapped to no rows at
    /// all (view_model: an index row missing, or one left behind, when a
    /// round's batch held two such records).
    #[test]
    fn records_after_an_undecodable_one_are_mapped() {
        let m = LuaMapper::new(
            "function map(key, value) emit(value.g, key[1]) end",
            &LuaEnv::standalone(),
        )
        .expect("compiles");
        let good = doc(serde_json::json!({"g": "x"}));
        let bad = b"\xc1 not msgpack".to_vec();
        // Every pattern of good and undecodable records up to 8 long.
        for len in 1..=8usize {
            for mask in 0u32..(1 << len) {
                let keys: Vec<Vec<u8>> = (0..len as i64).map(key).collect();
                let records: Vec<(&[u8], &[u8])> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let v: &[u8] = if mask & (1 << i) != 0 { &good } else { &bad };
                        (&k[..], v)
                    })
                    .collect();
                let out = m.map_batch(&records).0;
                assert_eq!(out.len(), len);
                for (i, result) in out.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        let rows = result.as_ref().expect("a good record maps");
                        assert_eq!(rows.len(), 1, "record {i} of pattern {mask:0len$b}");
                    } else {
                        assert!(result.is_err(), "record {i} of pattern {mask:0len$b}");
                    }
                }
            }
        }
    }

    /// Postmortem: rows were keyed by the emitted key and the source key
    /// only, so a second `emit("a", 2)` overwrote the first row: the sum of
    /// the record went from 3 to 2, and to 1 after an unrelated update.
    #[test]
    fn duplicate_scalar_and_empty_emits() {
        let m = LuaMapper::new(
            r#"function map(key, value)
                 emit("a", 1) emit("a", 2) emit({"a"}, 3) emit({}, 4) emit({"a", "b"}, 5)
               end"#,
            &LuaEnv::standalone(),
        )
        .expect("compiles");
        let k = key(7);
        let v = doc(serde_json::json!({}));
        let rows = m.map_batch(&[(&k, &v)]).0[0].clone().expect("maps");
        let decoded: Vec<(Vec<Element>, Vec<u8>, u64)> =
            rows.iter().map(|(key, _)| row::decode_row(key).expect("a row key")).collect();
        let a = vec![Element::from("a")];
        assert_eq!(decoded[0], (a.clone(), k.clone(), 0));
        assert_eq!(decoded[1], (a.clone(), k.clone(), 1));
        // `"a"` and `{"a"}` are the same emitted key.
        assert_eq!(decoded[2], (a, k.clone(), 2));
        assert_eq!(decoded[3], (vec![], k.clone(), 0));
        assert_eq!(decoded[4].0, vec![Element::from("a"), Element::from("b")]);
        let mut keys: Vec<&Vec<u8>> = rows.iter().map(|(key, _)| key).collect();
        keys.dedup();
        assert_eq!(keys.len(), 5, "every emit is its own row");
    }

    #[test]
    fn raw_bytes_are_an_error_for_their_record() {
        let m = LuaMapper::new("function map(k, v) emit(1, 1) end", &LuaEnv::standalone())
            .expect("compiles");
        let k = key(1);
        let out = m.map_batch(&[(&k, b"hello")]).0;
        let err = out[0].clone().expect_err("raw bytes").to_string();
        assert!(err.contains("not MessagePack"), "{err}");
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
            let m = LuaMapper::new(src, &LuaEnv::standalone()).expect("compiles");
            let k = key(1);
            let v = doc(serde_json::json!({}));
            let out = m.map_batch(&[(&k, &v)]).0;
            let err = out[0].clone().expect_err(src).to_string();
            assert!(err.to_lowercase().contains(needle), "{src}: {err}");
        }
        assert!(matches!(
            LuaMapper::new("function map(k, v", &LuaEnv::standalone()),
            Err(LuaFnError::Compile(_))
        ));
        assert!(matches!(
            LuaMapper::new("x = 1", &LuaEnv::standalone()),
            Err(LuaFnError::Missing("map"))
        ));
        assert!(
            matches!(LuaMapper::new("\x1bLua", &LuaEnv::standalone()), Err(LuaFnError::Compile(_))),
            "bytecode is refused"
        );
    }

    #[test]
    fn lua_reducers_combine_and_refuse_growth() {
        use crate::view::reduce_tree::{Monoid, ReduceTree};
        let r = LuaReducer::new(
            "function reduce(keys, values, rereduce) local s = 0 for _, v in ipairs(values) do s = s + v end return s end",
            &LuaEnv::standalone(),
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
            &LuaEnv::standalone(),
        )
        .expect("compiles");
        let leaves: Vec<LuaReduction> =
            (0..200i64).map(|i| grow.leaf(&key(i), &rmp_serde::to_vec(&i).expect("int"))).collect();
        let total = leaves.iter().skip(1).fold(leaves[0].clone(), |acc, l| grow.combine(&acc, l));
        let err = match total {
            Ok(v) => panic!("growth was not refused ({} bytes)", encoded_len(&v)),
            Err(e) => e,
        };
        assert!(err.contains("at most half the size"), "{err}");
        assert!(matches!(
            LuaReducer::new("x = 1", &LuaEnv::standalone()),
            Err(LuaFnError::Missing("reduce"))
        ));
    }

    /// The arguments are what the README says: lists, also for one row.
    #[test]
    fn lua_reducers_get_lists_also_for_one_row() {
        use crate::view::reduce_tree::Monoid;
        let r = LuaReducer::new(
            r#"function reduce(keys, values, rereduce)
                 if rereduce then
                   return {n = #values, keys = type(keys), first = values[1].first}
                 end
                 return {n = #values, keys = #keys, first = keys[1][1], v = values[1].x}
               end"#,
            &LuaEnv::standalone(),
        )
        .expect("compiles");
        let leaf = r.leaf(&key(7), &doc(serde_json::json!({"x": 5})));
        let get = |v: &LuaReduction, field: &str| -> rmpv::Value {
            let map = v.clone().expect("reduces");
            let pairs = map.as_map().cloned().unwrap_or_default();
            pairs
                .into_iter()
                .find(|(k, _)| k.as_str() == Some(field))
                .map(|(_, v)| v)
                .unwrap_or(rmpv::Value::Nil)
        };
        assert_eq!(get(&leaf, "n"), rmpv::Value::from(1));
        assert_eq!(get(&leaf, "keys"), rmpv::Value::from(1));
        assert_eq!(get(&leaf, "first"), rmpv::Value::from(7));
        assert_eq!(get(&leaf, "v"), rmpv::Value::from(5));
        let both = r.combine(&leaf, &leaf);
        assert_eq!(get(&both, "n"), rmpv::Value::from(2));
        assert_eq!(get(&both, "keys"), rmpv::Value::from("nil"));
        assert_eq!(get(&both, "first"), rmpv::Value::from(7));
    }

    #[test]
    fn one_bad_record_does_not_spoil_its_batch() {
        let m = LuaMapper::new("function map(k, v) emit(v.x * 2, nil) end", &LuaEnv::standalone())
            .expect("compiles");
        let keys: Vec<Vec<u8>> = (0..3).map(key).collect();
        let vals = [
            doc(serde_json::json!({"x": 1})),
            doc(serde_json::json!({"y": 1})),
            doc(serde_json::json!({"x": 3})),
        ];
        let batch: Vec<(&[u8], &[u8])> =
            keys.iter().zip(&vals).map(|(k, v)| (&k[..], &v[..])).collect();
        let out = m.map_batch(&batch).0;
        assert!(out[0].is_ok() && out[2].is_ok());
        assert!(out[1].is_err());
        // The VM is healthy afterwards.
        assert!(m.map_batch(&batch[..1]).0[0].is_ok());
    }
}
