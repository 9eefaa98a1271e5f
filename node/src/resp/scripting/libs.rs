//! The Lua libraries Redis 7.0 gives scripts beside its API: `cjson`
//! (lua-cjson 2.1: `encode`, `decode`, `null` and the configuration
//! functions), `cmsgpack` (lua-cmsgpack 0.4: `pack`, `unpack`,
//! `unpack_one`, `unpack_limit`), `bit` (LuaBitOp 1.0: 32-bit operations)
//! and `loadstring` (Lua 5.1's, text chunks only, in the script's
//! globals). `struct` is not provided.
//!
//! Lua 5.4 has integers where Redis's 5.1 has only doubles: numbers are
//! encoded as 5.1 sees them (JSON with `%.14g`, MessagePack integers for
//! integral values), and decoded numbers with an integral value become
//! integers, so `tostring` prints them as 5.1 does.

use std::sync::{Arc, Mutex};

use mlua::{ChunkMode, LightUserData, Lua, MultiValue, Table, Value};

/// The registry key of the globals scripts run in (for `loadstring`).
pub const SCRIPTS_ENV_KEY: &str = "monotable.scripts_env";

/// lua-cjson's settings a script may change (they last for the VM).
struct JsonConfig {
    encode_max_depth: usize,
    decode_max_depth: usize,
    encode_invalid_numbers: bool,
}

impl Default for JsonConfig {
    fn default() -> Self {
        JsonConfig { encode_max_depth: 1000, decode_max_depth: 1000, encode_invalid_numbers: false }
    }
}

fn runtime(text: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(text.into())
}

/// `cjson.null`: a light userdata holding NULL, as lua-cjson's.
fn json_null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// Adds `cjson`, `cmsgpack`, `bit` and `loadstring` to `raw` (the table
/// the API's setup reads).
pub fn install(lua: &Lua, raw: &Table) -> mlua::Result<()> {
    raw.set("cjson", cjson(lua)?)?;
    raw.set("cmsgpack", cmsgpack(lua)?)?;
    raw.set("bit", bit(lua)?)?;
    raw.set(
        "loadstring",
        lua.create_function(|lua, (code, name): (mlua::String, Option<mlua::String>)| {
            let env: Table = lua.named_registry_value(SCRIPTS_ENV_KEY)?;
            let name = name.map_or_else(|| "=(load)".to_owned(), |n| n.to_string_lossy());
            let chunk = lua
                .load(code.as_bytes().to_vec())
                .set_name(name)
                .set_mode(ChunkMode::Text)
                .set_environment(env);
            Ok(match chunk.into_function() {
                Ok(f) => (Value::Function(f), Value::Nil),
                Err(e) => (Value::Nil, Value::String(lua.create_string(e.to_string())?)),
            })
        })?,
    )?;
    Ok(())
}

fn cjson(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let config = Arc::new(Mutex::new(JsonConfig::default()));
    let c = config.clone();
    t.set(
        "encode",
        lua.create_function(move |_, v: Value| {
            let config = c.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            json_encode(&v, &config, 1, &mut out)?;
            Ok(mlua::BString::from(out))
        })?,
    )?;
    let c = config.clone();
    t.set(
        "decode",
        lua.create_function(move |lua, text: mlua::String| {
            let max = c.lock().unwrap_or_else(|p| p.into_inner()).decode_max_depth;
            let bytes = text.as_bytes();
            let max = max.min(DECODE_DEPTH_CAP);
            if let Some((depth, at)) = nesting_past(&bytes, max) {
                return Err(runtime(format!(
                    "Found too many nested data structures ({depth}) at character {at}"
                )));
            }
            // Nesting is bounded above, so serde's own limit (128) is off.
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            de.disable_recursion_limit();
            let parsed = serde::Deserialize::deserialize(&mut de)
                .and_then(|v: serde_json::Value| de.end().map(|()| v))
                .map_err(|e| runtime(format!("Expected value but found invalid token: {e}")))?;
            json_to_lua(lua, &parsed, 1, max)
        })?,
    )?;
    t.set("null", json_null())?;
    let depth_setter = |lua: &Lua, set: fn(&mut JsonConfig, usize)| {
        let c = config.clone();
        lua.create_function(move |_, n: Option<i64>| {
            let mut config = c.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = n {
                if !(1..=i64::from(i32::MAX)).contains(&n) {
                    return Err(runtime(
                        "bad argument #1 to '?' (expected integer between 1 and 2147483647)",
                    ));
                }
                set(&mut config, n as usize);
            }
            Ok(())
        })
    };
    t.set("encode_max_depth", depth_setter(lua, |c, n| c.encode_max_depth = n)?)?;
    t.set("decode_max_depth", depth_setter(lua, |c, n| c.decode_max_depth = n)?)?;
    let c = config.clone();
    t.set(
        "encode_invalid_numbers",
        lua.create_function(move |_, on: Option<Value>| {
            if let Some(on) = on {
                let on = matches!(on, Value::Boolean(true))
                    || matches!(&on, Value::String(s) if s.as_bytes().as_ref() == b"on");
                c.lock().unwrap_or_else(|p| p.into_inner()).encode_invalid_numbers = on;
            }
            Ok(())
        })?,
    )?;
    // Settings that change nothing here (buffers, sparse arrays, precision).
    for name in [
        "encode_keep_buffer",
        "encode_sparse_array",
        "encode_number_precision",
        "decode_invalid_numbers",
    ] {
        t.set(name, lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    }
    Ok(t)
}

/// `%.14g`, as lua-cjson formats numbers.
fn format_g14(x: f64) -> String {
    crate::resp::reply::format_g(x, 14)
}

fn lua_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(x) => Some(*x),
        _ => None,
    }
}

/// How long a table is as an array (keys 1..n, no others), as
/// lua-cjson's `lua_array_length`: `None` when it is an object.
fn array_length(t: &Table) -> mlua::Result<Option<usize>> {
    let (mut max, mut items) = (0usize, 0usize);
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        match lua_number(&k) {
            Some(x) if x >= 1.0 && x.fract() == 0.0 && x <= usize::MAX as f64 => {
                max = max.max(x as usize);
                items += 1;
            }
            _ => return Ok(None),
        }
    }
    // lua-cjson's default sparse-array rule: refuse an array more than
    // half holes past the first 10.
    if max > 10 && max > items * 2 {
        return Err(runtime("Cannot serialise table: excessively sparse array"));
    }
    Ok((max > 0).then_some(max))
}

fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// The most bytes `cjson.encode` and `cmsgpack.pack` produce: the largest
/// string value Monotable stores. Their output is built outside the Lua
/// heap, where the script's memory limit does not see it, and a table that
/// holds one subtable many times over encodes to exponentially many bytes.
const ENCODED_BYTES_MAX: usize = crate::resp::args::STRING_LEN_MAX_BYTES;

/// Refuses to go on once `out` is past [`ENCODED_BYTES_MAX`].
fn within_bound(out: &[u8], what: &str) -> mlua::Result<()> {
    if out.len() > ENCODED_BYTES_MAX {
        return Err(runtime(format!("{what}: the result would exceed {ENCODED_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// The deepest `decode_max_depth` honoured, whatever is set: parsing
/// recurses once per level on the Lua thread's stack.
const DECODE_DEPTH_CAP: usize = 20_000;

/// Where the nesting of arrays and objects in `text` (strings skipped)
/// first passes `max`: (the depth, the 1-based character), as lua-cjson
/// reports it before building anything.
fn nesting_past(text: &[u8], max: usize) -> Option<(usize, usize)> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some((depth, i + 1));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn json_encode(
    v: &Value,
    config: &JsonConfig,
    depth: usize,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    within_bound(out, "Cannot serialise")?;
    match v {
        Value::Nil => out.extend_from_slice(b"null"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(_) | Value::Number(_) => {
            let x = lua_number(v).unwrap_or_default();
            if !x.is_finite() && !config.encode_invalid_numbers {
                return Err(runtime("Cannot serialise number: must not be NaN or Inf"));
            }
            out.extend_from_slice(format_g14(x).as_bytes());
        }
        Value::String(s) => json_string(&s.as_bytes(), out),
        Value::Table(t) => {
            if depth > config.encode_max_depth {
                return Err(runtime(format!("Cannot serialise, excessive nesting ({depth})")));
            }
            match array_length(t)? {
                Some(n) => {
                    out.push(b'[');
                    for i in 1..=n {
                        if i > 1 {
                            out.push(b',');
                        }
                        json_encode(&t.raw_get::<Value>(i)?, config, depth + 1, out)?;
                    }
                    out.push(b']');
                }
                None => {
                    out.push(b'{');
                    let mut first = true;
                    for pair in t.pairs::<Value, Value>() {
                        let (k, value) = pair?;
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        match &k {
                            Value::String(s) => json_string(&s.as_bytes(), out),
                            Value::Integer(_) | Value::Number(_) => json_string(
                                format_g14(lua_number(&k).unwrap_or_default()).as_bytes(),
                                out,
                            ),
                            other => {
                                return Err(runtime(format!(
                                    "Cannot serialise {}: table key must be a number or string",
                                    other.type_name()
                                )))
                            }
                        }
                        out.push(b':');
                        json_encode(&value, config, depth + 1, out)?;
                    }
                    out.push(b'}');
                }
            }
        }
        other => {
            return Err(runtime(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// A number as Lua 5.1 would show it: integral values as integers.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
        Value::Integer(x as i64)
    } else {
        Value::Number(x)
    }
}

fn json_to_lua(lua: &Lua, v: &serde_json::Value, depth: usize, max: usize) -> mlua::Result<Value> {
    use serde_json::Value as J;
    if matches!(v, J::Array(_) | J::Object(_)) && depth > max {
        return Err(runtime(format!("Found too many nested data structures ({depth})")));
    }
    Ok(match v {
        J::Null => json_null(),
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => number(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Value::String(lua.create_string(s)?),
        J::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, json_to_lua(lua, item, depth + 1, max)?)?;
            }
            Value::Table(t)
        }
        J::Object(fields) => {
            let t = lua.create_table_with_capacity(0, fields.len())?;
            for (k, item) in fields {
                t.raw_set(k.as_str(), json_to_lua(lua, item, depth + 1, max)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Nesting lua-cmsgpack encodes; deeper tables become nil.
const MSGPACK_DEPTH_MAX: usize = 16;
/// Nesting `unpack` reads before it refuses the input.
const MSGPACK_DECODE_DEPTH_MAX: usize = 4000;

fn cmsgpack(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "pack",
        lua.create_function(|_, args: MultiValue| {
            if args.is_empty() {
                return Err(runtime("MessagePack pack needs input."));
            }
            let mut out = Vec::new();
            for v in args.iter() {
                msgpack_encode(v, 0, &mut out)?;
            }
            Ok(mlua::BString::from(out))
        })?,
    )?;
    t.set(
        "unpack",
        lua.create_function(|lua, data: mlua::String| {
            let bytes = data.as_bytes().to_vec();
            let (values, _) = msgpack_decode(lua, &bytes, 0, usize::MAX)?;
            Ok(MultiValue::from_iter(values))
        })?,
    )?;
    t.set(
        "unpack_one",
        lua.create_function(|lua, (data, offset): (mlua::String, Option<i64>)| {
            unpack_limited(lua, &data.as_bytes(), 1, offset.unwrap_or(0))
        })?,
    )?;
    t.set(
        "unpack_limit",
        lua.create_function(|lua, (data, limit, offset): (mlua::String, i64, Option<i64>)| {
            unpack_limited(lua, &data.as_bytes(), limit, offset.unwrap_or(0))
        })?,
    )?;
    Ok(t)
}

/// `unpack_limit` (lua-cmsgpack's `mp_unpack_full`): up to `limit` values
/// from byte `offset`, after the offset reading stopped at (-1 at the
/// end); with both 0, every value and no offset, as `unpack`.
fn unpack_limited(lua: &Lua, data: &[u8], limit: i64, offset: i64) -> mlua::Result<MultiValue> {
    if offset < 0 || limit < 0 {
        return Err(runtime(format!(
            "Invalid request to unpack with offset of {offset} and limit of {}.",
            data.len()
        )));
    }
    let at = usize::try_from(offset).unwrap_or(usize::MAX);
    if at > data.len() {
        return Err(runtime(format!(
            "Start offset {offset} greater than input length {}.",
            data.len()
        )));
    }
    let all = limit == 0 && offset == 0;
    let limit = if all { usize::MAX } else { usize::try_from(limit).unwrap_or(usize::MAX) };
    let (values, at) = msgpack_decode(lua, data, at, limit)?;
    if all {
        return Ok(MultiValue::from_iter(values));
    }
    let next = if at >= data.len() { -1 } else { at as i64 };
    Ok(MultiValue::from_iter(std::iter::once(Value::Integer(next)).chain(values)))
}

/// An encoder's result (writing to a `Vec` cannot fail; kept as a Lua
/// error all the same).
fn packed<T, E: std::fmt::Display>(r: Result<T, E>) -> mlua::Result<()> {
    r.map(|_| ()).map_err(|e| runtime(format!("MessagePack pack failed: {e}")))
}

fn msgpack_encode(v: &Value, depth: usize, out: &mut Vec<u8>) -> mlua::Result<()> {
    within_bound(out, "MessagePack pack failed")?;
    match v {
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(_) | Value::Number(_) => {
            let x = lua_number(v).unwrap_or_default();
            let integral = match v {
                Value::Integer(n) => Some(*n),
                _ if x.fract() == 0.0 && x.abs() < 9.223_372_036_854_776e18 => Some(x as i64),
                _ => None,
            };
            match integral {
                Some(n) if n >= 0 => packed(rmp::encode::write_uint(out, n as u64))?,
                Some(n) => packed(rmp::encode::write_sint(out, n))?,
                // A float when it holds the value exactly, as lua-cmsgpack.
                None if (x as f32) as f64 == x => packed(rmp::encode::write_f32(out, x as f32))?,
                None => packed(rmp::encode::write_f64(out, x))?,
            }
        }
        Value::String(s) => {
            let bytes = s.as_bytes();
            packed(rmp::encode::write_str_len(out, bytes.len() as u32))?;
            out.extend_from_slice(&bytes);
        }
        Value::Table(t) if depth < MSGPACK_DEPTH_MAX => {
            let len = t.raw_len();
            let pairs: Vec<(Value, Value)> =
                t.pairs::<Value, Value>().collect::<mlua::Result<_>>()?;
            if pairs.len() == len {
                packed(rmp::encode::write_array_len(out, len as u32))?;
                for i in 1..=len {
                    msgpack_encode(&t.raw_get::<Value>(i)?, depth + 1, out)?;
                }
            } else {
                packed(rmp::encode::write_map_len(out, pairs.len() as u32))?;
                for (k, value) in &pairs {
                    msgpack_encode(k, depth + 1, out)?;
                    msgpack_encode(value, depth + 1, out)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

/// Up to `limit` values from `data[at..]`, and where reading stopped.
fn msgpack_decode(
    lua: &Lua,
    data: &[u8],
    mut at: usize,
    limit: usize,
) -> mlua::Result<(Vec<Value>, usize)> {
    let mut values = Vec::new();
    while at < data.len() && values.len() < limit {
        let mut rest = &data[at..];
        let before = rest.len();
        // Nesting bounded: decoding recurses.
        // Postmortem: 600 nested arrays overflowed the stack and aborted
        // the process.
        // rmpv counts two steps per nested array or map.
        let v = rmpv::decode::read_value_with_max_depth(&mut rest, 2 * MSGPACK_DECODE_DEPTH_MAX)
            .map_err(|e| match e {
                rmpv::decode::Error::InvalidMarkerRead(_)
                | rmpv::decode::Error::InvalidDataRead(_) => runtime("Missing bytes in input."),
                rmpv::decode::Error::DepthLimitExceeded => runtime(format!(
                    "stack overflow (input nested deeper than {MSGPACK_DECODE_DEPTH_MAX} levels)"
                )),
            })?;
        at += before - rest.len();
        values.push(msgpack_to_lua(lua, &v)?);
    }
    Ok((values, at))
}

fn msgpack_to_lua(lua: &Lua, v: &rmpv::Value) -> mlua::Result<Value> {
    use rmpv::Value as M;
    Ok(match v {
        M::Nil => Value::Nil,
        M::Boolean(b) => Value::Boolean(*b),
        M::Integer(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Number(n.as_f64().unwrap_or_default()),
        },
        M::F32(x) => number(f64::from(*x)),
        M::F64(x) => number(*x),
        M::String(s) => Value::String(lua.create_string(s.as_bytes())?),
        M::Binary(b) => Value::String(lua.create_string(b)?),
        M::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, msgpack_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        M::Map(pairs) => {
            let t = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, item) in pairs {
                let k = msgpack_to_lua(lua, k)?;
                if !matches!(k, Value::Nil) {
                    t.raw_set(k, msgpack_to_lua(lua, item)?)?;
                }
            }
            Value::Table(t)
        }
        M::Ext(_, b) => Value::String(lua.create_string(b)?),
    })
}

/// LuaBitOp's normalisation: a number to a signed 32-bit integer (rounded,
/// then taken modulo 2^32).
fn tobit(v: &Value) -> mlua::Result<i32> {
    // A numeric string counts, as Lua's luaL_checknumber takes it.
    let from_string = |s: &mlua::String| s.to_str().ok().and_then(|t| t.trim().parse::<f64>().ok());
    let x = match v {
        Value::String(s) => from_string(s),
        other => lua_number(other),
    }
    .ok_or_else(|| runtime("bad argument to bit operation (number expected)"))?;
    // LuaBitOp's normalisation of a non-finite number: 0.
    if !x.is_finite() {
        return Ok(0);
    }
    Ok((x.round_ties_even() as i64) as u32 as i32)
}

fn bit(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let fold = |lua: &Lua, f: fn(i32, i32) -> i32| {
        lua.create_function(move |_, args: MultiValue| {
            let mut it = args.iter();
            let first = it
                .next()
                .ok_or_else(|| runtime("bad argument #1 (number expected, got no value)"))?;
            let mut acc = tobit(first)?;
            for v in it {
                acc = f(acc, tobit(v)?);
            }
            Ok(acc)
        })
    };
    t.set("band", fold(lua, |a, b| a & b)?)?;
    t.set("bor", fold(lua, |a, b| a | b)?)?;
    t.set("bxor", fold(lua, |a, b| a ^ b)?)?;
    t.set("tobit", lua.create_function(|_, v: Value| tobit(&v))?)?;
    t.set("bnot", lua.create_function(|_, v: Value| Ok(!tobit(&v)?))?)?;
    t.set("bswap", lua.create_function(|_, v: Value| Ok(tobit(&v)?.swap_bytes()))?)?;
    let shift = |lua: &Lua, f: fn(i32, u32) -> i32| {
        lua.create_function(move |_, (v, n): (Value, Value)| {
            Ok(f(tobit(&v)?, (tobit(&n)? & 31) as u32))
        })
    };
    t.set("lshift", shift(lua, |x, n| ((x as u32) << n) as i32)?)?;
    t.set("rshift", shift(lua, |x, n| ((x as u32) >> n) as i32)?)?;
    t.set("arshift", shift(lua, |x, n| x >> n)?)?;
    t.set("rol", shift(lua, |x, n| (x as u32).rotate_left(n) as i32)?)?;
    t.set("ror", shift(lua, |x, n| (x as u32).rotate_right(n) as i32)?)?;
    t.set(
        "tohex",
        lua.create_function(|_, (v, n): (Value, Option<Value>)| {
            let x = tobit(&v)? as u32;
            let n = match n {
                Some(n) => tobit(&n)?,
                None => 8,
            };
            let (upper, digits) = (n < 0, n.unsigned_abs().min(8) as usize);
            let hex = if upper { format!("{x:08X}") } else { format!("{x:08x}") };
            Ok(hex[8 - digits..].to_owned())
        })?,
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_as_lua_cjson() {
        assert_eq!(format_g14(100.0), "100");
        assert_eq!(format_g14(0.1), "0.1");
        assert_eq!(format_g14(1e300), "1e+300");
        assert_eq!(format_g14(2f64.powi(53)), "9.007199254741e+15");
    }

    #[test]
    fn bit_operations_follow_luabitop() {
        let lua = Lua::new();
        let b = bit(&lua).expect("bit");
        let call = |name: &str, args: &str| -> String {
            let f: mlua::Function = b.get(name).expect("fn");
            let args: MultiValue = lua.load(format!("return {args}")).eval().expect("args");
            let r: Value = f.call(args).expect("call");
            format!("{r:?}")
        };
        assert_eq!(call("tobit", "0xffffffff"), "Integer(-1)");
        assert_eq!(call("bor", "1, 2, 4, 8, 16, 32, 64, 128"), "Integer(255)");
        assert_eq!(call("lshift", "1, 31"), "Integer(-2147483648)");
        assert_eq!(call("rshift", "-1, 28"), "Integer(15)");
        assert_eq!(call("arshift", "-256, 4"), "Integer(-16)");
        assert_eq!(call("tohex", "255, -4"), "String(\"00FF\")");
        assert_eq!(call("tohex", "-1"), "String(\"ffffffff\")");
    }
}
