//! Lua 5.4's pattern functions (`string.find`, `match`, `gmatch`, `gsub`)
//! with every matching step charged to the call's instruction budget.
//!
//! Lua's own matcher backtracks in C, where no hook fires: a pattern like
//! `.-.-.-.-b` over a long subject runs for hours and nothing can stop it.
//! This is a port of lstrlib.c's matcher (same syntax, same results, same
//! error messages) whose steps are counted and charged to the [`Meter`] a
//! thousand at a time, so a runaway match ends with the instruction limit
//! like any loop. Plain finds use a linear-time substring search.

use std::sync::Arc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::sandbox::{Meter, LUA_MEMORY_MAX_BYTES};

const CAPTURES_MAX: usize = 32;
/// Lua's MAXCCALLS for patterns: how deep the matcher may recurse.
const MATCH_DEPTH_MAX: usize = 200;
/// Matching steps charged to the budget at once.
const STEPS_PER_CHARGE: u64 = 1_000;
const ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";

#[derive(Clone, Copy, PartialEq)]
enum CapLen {
    Position,
    Unfinished,
    Len(usize),
}

struct State<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, CapLen); CAPTURES_MAX],
    depth_left: usize,
    steps: u64,
    meter: &'a Meter,
}

type Found = mlua::Result<Option<usize>>;

fn fail(message: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(message.into())
}

fn class_matches(c: u8, class: u8) -> bool {
    let res = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !res
    } else {
        res
    }
}

impl<'a> State<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], meter: &'a Meter) -> Self {
        State {
            src,
            pat,
            level: 0,
            capture: [(0, CapLen::Unfinished); CAPTURES_MAX],
            depth_left: MATCH_DEPTH_MAX,
            steps: 0,
            meter,
        }
    }

    fn reset(&mut self) {
        self.level = 0;
        self.depth_left = MATCH_DEPTH_MAX;
    }

    fn step(&mut self) -> mlua::Result<()> {
        self.steps += 1;
        if self.steps >= STEPS_PER_CHARGE {
            self.steps = 0;
            self.meter.charge(STEPS_PER_CHARGE)?;
        }
        Ok(())
    }

    /// The pattern byte at `i`, or 0 past its end (C's terminator).
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    fn s(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn class_end(&self, mut p: usize) -> mlua::Result<usize> {
        let c = self.p(p);
        p += 1;
        match c {
            ESC => {
                if p >= self.pat.len() {
                    return Err(fail("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return Err(fail("malformed pattern (missing ']')"));
                    }
                    let c = self.p(p);
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// `p` at the '[' of a set, `ec` at its ']'.
    fn bracket_matches(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            if self.p(p) == ESC {
                p += 1;
                if class_matches(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if self.p(p) == c {
                return sig;
            }
        }
    }

    fn single_matches(&mut self, s: usize, p: usize, ep: usize) -> mlua::Result<bool> {
        self.step()?;
        if s >= self.src.len() {
            return Ok(false);
        }
        let c = self.src[s];
        Ok(match self.p(p) {
            b'.' => true,
            ESC => class_matches(c, self.p(p + 1)),
            b'[' => self.bracket_matches(c, p, ep - 1),
            other => other == c,
        })
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Found {
        if p + 1 >= self.pat.len() {
            return Err(fail("malformed pattern (missing arguments to '%b')"));
        }
        if s >= self.src.len() || self.src[s] != self.p(p) {
            return Ok(None);
        }
        let (open, close) = (self.p(p), self.p(p + 1));
        let mut depth = 1;
        let mut i = s + 1;
        while i < self.src.len() {
            self.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        Ok(None)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Found {
        let mut i = 0;
        while self.single_matches(s + i, p, ep)? {
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Found {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if self.single_matches(s, p, ep)? {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CapLen) -> Found {
        if self.level >= CAPTURES_MAX {
            return Err(fail("too many captures"));
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Found {
        let l = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CapLen::Unfinished)
            .ok_or_else(|| fail("invalid pattern capture"))?;
        self.capture[l].1 = CapLen::Len(s - self.capture[l].0);
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].1 = CapLen::Unfinished;
        }
        Ok(res)
    }

    fn check_capture(&self, c: u8) -> mlua::Result<usize> {
        let l = i32::from(c) - i32::from(b'1');
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CapLen::Unfinished {
            return Err(fail(format!("invalid capture index %{}", l + 1)));
        }
        Ok(l as usize)
    }

    fn match_capture(&mut self, s: usize, c: u8) -> Found {
        let l = self.check_capture(c)?;
        let (init, len) = self.capture[l];
        let CapLen::Len(len) = len else { return Ok(None) };
        self.steps += len as u64 / 64;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> Found {
        if self.depth_left == 0 {
            return Err(fail("pattern too complex"));
        }
        self.depth_left -= 1;
        let res = self.match_here(s, p);
        self.depth_left += 1;
        res
    }

    fn match_here(&mut self, mut s: usize, mut p: usize) -> Found {
        loop {
            self.step()?;
            if p >= self.pat.len() {
                return Ok(Some(s));
            }
            match self.p(p) {
                b'(' => {
                    return if self.p(p + 1) == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                ESC if self.p(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(next) => {
                        s = next;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                ESC if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return Err(fail("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.s(s - 1) };
                    if !self.bracket_matches(previous, p, ep - 1)
                        && self.bracket_matches(self.s(s), p, ep - 1)
                    {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                ESC if self.p(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.p(p + 1))? {
                        Some(next) => {
                            s = next;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single_matches(s, p, ep)? {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(res) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(res));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    /// Capture `i` of a match `[s, e)`: a string, or a position.
    fn capture_value(&self, lua: &Lua, i: usize, s: usize, e: usize) -> mlua::Result<Value> {
        if i >= self.level {
            if i != 0 {
                return Err(fail(format!("invalid capture index %{}", i + 1)));
            }
            return Ok(Value::String(lua.create_string(&self.src[s..e])?));
        }
        let (init, len) = self.capture[i];
        match len {
            CapLen::Unfinished => Err(fail("unfinished capture")),
            CapLen::Position => Ok(Value::Integer(init as i64 + 1)),
            CapLen::Len(len) => Ok(Value::String(lua.create_string(&self.src[init..init + len])?)),
        }
    }

    /// Every capture, or the whole match `[s, e)` when there is none
    /// (`whole` false: nothing then, as `find` wants).
    fn captures(&self, lua: &Lua, s: usize, e: usize, whole: bool) -> mlua::Result<MultiValue> {
        let n = if self.level == 0 && whole { 1 } else { self.level };
        (0..n).map(|i| self.capture_value(lua, i, s, e)).collect()
    }
}

/// Lua's posrelatI: a 1-based start position, from the end when negative.
fn start_of(init: Option<i64>, len: usize) -> usize {
    let len_i = len as i64;
    match init.unwrap_or(1) {
        i if i > 0 => usize::try_from(i).unwrap_or(usize::MAX),
        0 => 1,
        i if i < -len_i => 1,
        i => (len_i + i + 1) as usize,
    }
}

fn no_specials(pat: &[u8]) -> bool {
    !pat.iter().any(|c| SPECIALS.contains(c))
}

fn find_aux(
    lua: &Lua,
    meter: &Meter,
    args: (mlua::String, mlua::String, Option<i64>, Option<Value>),
    find: bool,
) -> mlua::Result<MultiValue> {
    let (subject, pattern, init, plain) = args;
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let init = start_of(init, src.len()) - 1;
    if init > src.len() {
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    let plain = plain.is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    if find && (plain || no_specials(&pat)) {
        meter.charge((src.len() - init) as u64 / 64)?;
        return Ok(match memchr::memmem::find(&src[init..], &pat) {
            Some(at) => MultiValue::from_iter([
                Value::Integer((init + at + 1) as i64),
                Value::Integer((init + at + pat.len()) as i64),
            ]),
            None => MultiValue::from_iter([Value::Nil]),
        });
    }
    let anchor = pat.first() == Some(&b'^');
    let body = if anchor { &pat[1..] } else { &pat[..] };
    let mut st = State::new(&src, body, meter);
    let mut s1 = init;
    loop {
        st.reset();
        if let Some(e) = st.do_match(s1, 0)? {
            return if find {
                let mut out = st.captures(lua, s1, e, false)?;
                out.push_front(Value::Integer(e as i64));
                out.push_front(Value::Integer(s1 as i64 + 1));
                Ok(out)
            } else {
                st.captures(lua, s1, e, true)
            };
        }
        s1 += 1;
        if s1 > src.len() || anchor {
            return Ok(MultiValue::from_iter([Value::Nil]));
        }
    }
}

/// Appends to `out`, refusing a result over the VM's memory limit (the
/// buffer lives outside the VM).
fn append(out: &mut Vec<u8>, bytes: &[u8]) -> mlua::Result<()> {
    if out.len() + bytes.len() > LUA_MEMORY_MAX_BYTES {
        return Err(fail(format!(
            "string.gsub: the result is over the memory limit of {LUA_MEMORY_MAX_BYTES} bytes"
        )));
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// A string or number as Lua's `tostring` makes it, as a replacement.
fn as_bytes_of(lua: &Lua, v: &Value) -> mlua::Result<Option<Vec<u8>>> {
    Ok(match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => {
            lua.coerce_string(v.clone())?.map(|s| s.as_bytes().to_vec())
        }
        _ => None,
    })
}

/// Appends the replacement string for a match `[s, e)`.
fn add_string(
    st: &State,
    lua: &Lua,
    out: &mut Vec<u8>,
    repl: &[u8],
    s: usize,
    e: usize,
) -> mlua::Result<()> {
    let mut i = 0;
    while i < repl.len() {
        let c = repl[i];
        if c != ESC {
            let next = repl[i..].iter().position(|&b| b == ESC).map_or(repl.len(), |p| i + p);
            append(out, &repl[i..next])?;
            i = next;
            continue;
        }
        i += 1;
        let d = repl.get(i).copied().unwrap_or(0);
        if d == ESC {
            append(out, b"%")?;
        } else if d == b'0' {
            append(out, &st.src[s..e])?;
        } else if d.is_ascii_digit() {
            match st.capture_value(lua, usize::from(d - b'1'), s, e)? {
                Value::String(v) => append(out, &v.as_bytes())?,
                Value::Integer(n) => append(out, n.to_string().as_bytes())?,
                _ => {}
            }
        } else {
            return Err(fail("invalid use of '%' in replacement string"));
        }
        i += 1;
    }
    Ok(())
}

fn gsub(
    lua: &Lua,
    meter: &Meter,
    (subject, pattern, repl, max): (mlua::String, mlua::String, Value, Option<i64>),
) -> mlua::Result<(Value, i64)> {
    let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
    let repl_bytes = match &repl {
        Value::Function(_) | Value::Table(_) => None,
        other => Some(as_bytes_of(lua, other)?.ok_or_else(|| {
            fail(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            ))
        })?),
    };
    let max = max.unwrap_or(src.len() as i64 + 1);
    let anchor = pat.first() == Some(&b'^');
    let body = if anchor { &pat[1..] } else { &pat[..] };
    let mut st = State::new(&src, body, meter);
    let mut out = Vec::new();
    let (mut at, mut last, mut n, mut changed) = (0usize, None, 0i64, false);
    while n < max {
        st.reset();
        match st.do_match(at, 0)? {
            Some(e) if Some(e) != last => {
                n += 1;
                let value = match (&repl, &repl_bytes) {
                    (_, Some(r)) => {
                        add_string(&st, lua, &mut out, r, at, e)?;
                        changed = true;
                        None
                    }
                    (Value::Function(f), _) => {
                        Some(f.call::<Value>(st.captures(lua, at, e, true)?)?)
                    }
                    (Value::Table(t), _) => Some(t.get::<Value>(st.capture_value(lua, 0, at, e)?)?),
                    _ => None,
                };
                match value {
                    None => {}
                    Some(Value::Nil | Value::Boolean(false)) => append(&mut out, &src[at..e])?,
                    Some(v) => {
                        let bytes = as_bytes_of(lua, &v)?.ok_or_else(|| {
                            fail(format!("invalid replacement value (a {})", v.type_name()))
                        })?;
                        append(&mut out, &bytes)?;
                        changed = true;
                    }
                }
                at = e;
                last = Some(e);
            }
            _ if at < src.len() => {
                append(&mut out, &src[at..at + 1])?;
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    if !changed {
        return Ok((Value::String(subject.clone()), n));
    }
    append(&mut out, &src[at..])?;
    Ok((Value::String(lua.create_string(&out)?), n))
}

fn gmatch(
    lua: &Lua,
    meter: Arc<Meter>,
    (subject, pattern, init): (mlua::String, mlua::String, Option<i64>),
) -> mlua::Result<Function> {
    let len = subject.as_bytes().len();
    let mut at = (start_of(init, len) - 1).min(len + 1);
    let mut last: Option<usize> = None;
    lua.create_function_mut(move |lua, ()| {
        let (src, pat) = (subject.as_bytes(), pattern.as_bytes());
        let mut st = State::new(&src, &pat, &meter);
        while at <= src.len() {
            st.reset();
            if let Some(e) = st.do_match(at, 0)? {
                if Some(e) != last {
                    let out = st.captures(lua, at, e, true)?;
                    at = e;
                    last = Some(e);
                    return Ok(out);
                }
            }
            at += 1;
        }
        Ok(MultiValue::new())
    })
}

/// Replaces the pattern functions of the `string` table.
pub fn install(lua: &Lua, string: &Table, meter: Arc<Meter>) -> mlua::Result<()> {
    let m = meter.clone();
    string.set("find", lua.create_function(move |lua, args| find_aux(lua, &m, args, true))?)?;
    let m = meter.clone();
    string.set("match", lua.create_function(move |lua, args| find_aux(lua, &m, args, false))?)?;
    let m = meter.clone();
    string.set("gsub", lua.create_function(move |lua, args| gsub(lua, &m, args))?)?;
    string
        .set("gmatch", lua.create_function(move |lua, args| gmatch(lua, meter.clone(), args))?)?;
    Ok(())
}
