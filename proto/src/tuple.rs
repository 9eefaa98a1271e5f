//! Order-preserving tuple encoding of composite keys.
//!
//! The model is FoundationDB's tuple layer: every element starts with a type
//! byte, and the bytes of an encoded tuple compare (lexicographically, as
//! Monotable compares keys) exactly as the tuples compare element by element.
//! So `("paris", 31)` sorts before `("paris", 40)`, and the encoding of a tuple
//! is a byte prefix of the encoding of every longer tuple that starts with it:
//! scanning by the prefix `("paris",)` finds every key whose first element is
//! `"paris"` and nothing else (up to the exclusive end
//! [`crate::keys::tuple_prefix_end`], the prefix followed by `0xFF`).
//!
//! | element  | type byte     | body |
//! |----------|---------------|------|
//! | null     | `0x00`        | none |
//! | bytes    | `0x01`        | bytes with `0x00` escaped as `0x00 0xFF`, then `0x00` |
//! | string   | `0x02`        | UTF-8, escaped and terminated like bytes |
//! | tuple    | `0x05`        | the nested elements (a nested null is `0x00 0xFF`), then `0x00` |
//! | number `x <= -2^64`, `-inf` | `0x0B` | the 8 ordered bytes of `x` (below) |
//! | integer `n`, and a float with an integral value `n` | `0x0C..=0x1C` | `0x14` is zero; `0x14 + k` a positive integer in `k` big-endian bytes (no leading zero byte); `0x14 - k` a negative one in `k` bytes of one's complement |
//! | non-integral float `x` | as the integer `floor(x)` | the integer `floor(x)` encoded as above, then `0xFF`, then the 8 ordered bytes of `x` |
//! | number `x >= 2^64`, `+inf` | `0x1D` | the 8 ordered bytes of `x` |
//! | NaN (any payload) | `0x1E` | none |
//! | false    | `0x26`        | none |
//! | true     | `0x27`        | none |
//!
//! The 8 ordered bytes of a float are its IEEE 754 bits, big-endian, with the
//! sign bit flipped when positive and all bits flipped when negative, so they
//! compare as the floats do.
//!
//! Numbers form one order across integers and floats, as CouchDB's view
//! collation: `-inf < -2^70 < -1 < -0.5 < 0 < 1 < 1.5 < 2 < 2^70 < inf < NaN`.
//! A float and an integer with the same value are the same key: a float with
//! an integral value within the integer range encodes byte for byte like
//! that integer and decodes as [`Element::Int`] (`-0.0` is `0`). A
//! non-integral float sorts between its neighbouring integers: after the
//! integer `floor(x)` and every longer tuple starting with it (the `0xFF`
//! after the integer is above every type byte and the nested terminator),
//! before `floor(x) + 1`. It is therefore not matched by a tuple prefix scan
//! on `(floor(x),)`, whose end is that prefix followed by `0xFF`. Floats
//! beyond the integer range sort beyond every integer; every NaN is one key,
//! after `+inf`. Integers cover `-(2^64 - 1) ..= 2^64 - 1`.
//!
//! Elements of different kinds order by their type byte: null, bytes,
//! strings, tuples, numbers, false, true.

use std::cmp::Ordering;
use std::fmt;

const NULL: u8 = 0x00;
const BYTES: u8 = 0x01;
const STRING: u8 = 0x02;
const NESTED: u8 = 0x05;
const INT_ZERO: u8 = 0x14;
const INT_MIN_CODE: u8 = INT_ZERO - 8;
const INT_MAX_CODE: u8 = INT_ZERO + 8;
/// A number at or below -2^64 (and -inf).
const NUMBER_BELOW: u8 = 0x0B;
/// A number at or above 2^64 (and +inf).
const NUMBER_ABOVE: u8 = 0x1D;
/// Every NaN.
const NAN: u8 = 0x1E;
/// After an integer: a non-integral float follows (its 8 ordered bytes).
const FRACTION: u8 = 0xFF;
const FALSE: u8 = 0x26;
const TRUE: u8 = 0x27;
const ESCAPE: u8 = 0xFF;

/// The largest magnitude an integer element can hold: 2^64 - 1.
pub const INT_MAGNITUDE_MAX: u128 = u64::MAX as u128;

/// 2^64 as a float: the smallest magnitude of a float beyond the integer
/// range (the float below it, 2^64 - 2048, is an integer in range).
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// Nesting deeper than this is refused when decoding, so that hostile input
/// cannot exhaust the stack.
pub const TUPLE_DEPTH_MAX: usize = 32;

/// One element of a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Null,
    Bytes(Vec<u8>),
    String(String),
    Tuple(Vec<Element>),
    /// An integer in `-(2^64 - 1) ..= 2^64 - 1`; encoding fails outside it.
    Int(i128),
    /// A float. One with an integral value in the integer range is the same
    /// key as that integer (it encodes as one and decodes as [`Element::Int`]);
    /// use [`compare_elements`], not `==`, to compare keys.
    Float(f64),
    Bool(bool),
}

/// A tuple that cannot be encoded, or bytes that are not an encoded tuple.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    #[error("integer {0} is out of the tuple range -(2^64-1)..=2^64-1")]
    IntOutOfRange(i128),
    #[error("not a tuple: {what} at byte {offset}")]
    Malformed { what: &'static str, offset: usize },
    #[error("tuple nested deeper than {TUPLE_DEPTH_MAX} levels")]
    TooDeep,
}

impl Element {
    fn type_rank(&self) -> u8 {
        match self {
            Element::Null => NULL,
            Element::Bytes(_) => BYTES,
            Element::String(_) => STRING,
            Element::Tuple(_) => NESTED,
            Element::Int(_) | Element::Float(_) => INT_ZERO,
            Element::Bool(_) => FALSE,
        }
    }
}

/// The order of tuples, which the encoding preserves.
pub fn compare_tuples(a: &[Element], b: &[Element]) -> Ordering {
    for (x, y) in a.iter().zip(b.iter()) {
        let ord = compare_elements(x, y);
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// The order of two elements: by type, then by value.
pub fn compare_elements(a: &Element, b: &Element) -> Ordering {
    match (a, b) {
        (Element::Null, Element::Null) => Ordering::Equal,
        (Element::Bytes(x), Element::Bytes(y)) => x.cmp(y),
        (Element::String(x), Element::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Element::Tuple(x), Element::Tuple(y)) => compare_tuples(x, y),
        (Element::Int(x), Element::Int(y)) => x.cmp(y),
        (Element::Float(x), Element::Float(y)) => compare_floats(*x, *y),
        (Element::Int(x), Element::Float(y)) => compare_int_float(*x, *y),
        (Element::Float(x), Element::Int(y)) => compare_int_float(*y, *x).reverse(),
        (Element::Bool(x), Element::Bool(y)) => x.cmp(y),
        _ => a.type_rank().cmp(&b.type_rank()),
    }
}

/// Numeric order of floats, with `-0.0 == 0.0` and every NaN equal and last.
fn compare_floats(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact numeric order of an integer (any `i128`) and a float (NaN last).
fn compare_int_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // i128 holds -2^127 ..= 2^127 - 1: a float at or above 2^127 is beyond
    // it, one below -2^127 too; in between, floor(f) converts exactly.
    const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= TWO_POW_127 {
        return Ordering::Less;
    }
    if f < -TWO_POW_127 {
        return Ordering::Greater;
    }
    let floor = f.floor();
    let n = floor as i128;
    match i.cmp(&n) {
        Ordering::Equal if floor < f => Ordering::Less,
        ord => ord,
    }
}

/// The integer a float equals, if it is integral and within the integer
/// element range.
fn integral(f: f64) -> Option<i128> {
    (f.is_finite() && f.abs() < TWO_POW_64 && f.fract() == 0.0).then_some(f as i128)
}

/// The 8 bytes of a float that compare as the floats do (NaN aside).
fn ordered_bits(f: f64) -> [u8; 8] {
    let bits = f.to_bits();
    let bits = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
    bits.to_be_bytes()
}

fn from_ordered_bits(be: [u8; 8]) -> f64 {
    let bits = u64::from_be_bytes(be);
    f64::from_bits(if bits >> 63 == 1 { bits ^ (1 << 63) } else { !bits })
}

/// Encodes a tuple into key bytes.
pub fn encode(tuple: &[Element]) -> Result<Vec<u8>, TupleError> {
    let mut out = Vec::with_capacity(16);
    for element in tuple {
        encode_element(element, &mut out, 0)?;
    }
    Ok(out)
}

fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0x00 {
            out.push(ESCAPE);
        }
    }
    out.push(0x00);
}

/// `depth` is 0 for a top-level element. Nesting deeper than
/// [`TUPLE_DEPTH_MAX`] is refused here exactly as [`decode`] refuses it, so
/// nothing encoded fails to decode.
fn encode_element(element: &Element, out: &mut Vec<u8>, depth: usize) -> Result<(), TupleError> {
    if depth > TUPLE_DEPTH_MAX {
        return Err(TupleError::TooDeep);
    }
    let nested = depth > 0;
    match element {
        Element::Null => {
            out.push(NULL);
            if nested {
                out.push(ESCAPE);
            }
        }
        Element::Bytes(b) => {
            out.push(BYTES);
            encode_escaped(b, out);
        }
        Element::String(s) => {
            out.push(STRING);
            encode_escaped(s.as_bytes(), out);
        }
        Element::Tuple(items) => {
            out.push(NESTED);
            for item in items {
                encode_element(item, out, depth + 1)?;
            }
            out.push(0x00);
        }
        Element::Int(v) => encode_int(*v, out)?,
        Element::Float(f) => encode_float(*f, out)?,
        Element::Bool(false) => out.push(FALSE),
        Element::Bool(true) => out.push(TRUE),
    }
    Ok(())
}

fn encode_int(v: i128, out: &mut Vec<u8>) -> Result<(), TupleError> {
    let magnitude = v.unsigned_abs();
    if magnitude > INT_MAGNITUDE_MAX {
        return Err(TupleError::IntOutOfRange(v));
    }
    let magnitude = magnitude as u64;
    let len = (8 - magnitude.leading_zeros() as usize / 8) as u8;
    let be = magnitude.to_be_bytes();
    let body = &be[8 - len as usize..];
    if v >= 0 {
        out.push(INT_ZERO + len);
        out.extend_from_slice(body);
    } else {
        out.push(INT_ZERO - len);
        out.extend(body.iter().map(|b| !b));
    }
    Ok(())
}

fn encode_float(f: f64, out: &mut Vec<u8>) -> Result<(), TupleError> {
    if f.is_nan() {
        out.push(NAN);
    } else if let Some(n) = integral(f) {
        encode_int(n, out)?;
    } else if f >= TWO_POW_64 {
        out.push(NUMBER_ABOVE);
        out.extend_from_slice(&ordered_bits(f));
    } else if f <= -TWO_POW_64 {
        out.push(NUMBER_BELOW);
        out.extend_from_slice(&ordered_bits(f));
    } else {
        // Non-integral, so |f| < 2^52 and floor(f) is an integer in range.
        encode_int(f.floor() as i128, out)?;
        out.push(FRACTION);
        out.extend_from_slice(&ordered_bits(f));
    }
    Ok(())
}

/// Decodes key bytes into a tuple.
pub fn decode(bytes: &[u8]) -> Result<Vec<Element>, TupleError> {
    let mut decoder = Decoder { bytes, pos: 0 };
    let mut out = Vec::new();
    while decoder.pos < bytes.len() {
        out.push(decoder.element(false, 0)?);
    }
    Ok(out)
}

/// Where the last top-level element of the key bytes `bytes` starts: the
/// bytes before it encode the tuple's parent (every element but the
/// last). Errors as [`decode`] does, and on an empty tuple.
pub fn last_element_start(bytes: &[u8]) -> Result<usize, TupleError> {
    let mut decoder = Decoder { bytes, pos: 0 };
    let mut start = None;
    while decoder.pos < bytes.len() {
        start = Some(decoder.pos);
        decoder.element(false, 0)?;
    }
    start.ok_or(TupleError::Malformed { what: "empty tuple", offset: 0 })
}

/// The top-level encoding of the tuple nested as the first element of
/// `bytes` (the bytes after it are not read): `encode(items)` for that
/// element's `items`, taken from its bytes without encoding anything
/// again. Inside a nested tuple an element is encoded as at the top level
/// except a null (`00 FF` there, `00` here). Errors as [`decode`] does on
/// the nested element, and when `bytes` does not start with one.
pub fn first_nested_as_tuple(bytes: &[u8]) -> Result<Vec<u8>, TupleError> {
    let mut decoder = Decoder { bytes, pos: 0 };
    if decoder.next_byte("missing element")? != NESTED {
        return Err(TupleError::Malformed { what: "not a nested tuple", offset: 0 });
    }
    let mut out = Vec::with_capacity(bytes.len());
    loop {
        match bytes.get(decoder.pos) {
            None => return Err(decoder.malformed("unterminated nested tuple")),
            Some(0x00) if bytes.get(decoder.pos + 1) != Some(&ESCAPE) => return Ok(out),
            Some(_) => {
                let start = decoder.pos;
                match decoder.element(true, 1)? {
                    Element::Null => out.push(NULL),
                    _ => out.extend_from_slice(&bytes[start..decoder.pos]),
                }
            }
        }
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn malformed(&self, what: &'static str) -> TupleError {
        TupleError::Malformed { what, offset: self.pos }
    }

    fn next_byte(&mut self, what: &'static str) -> Result<u8, TupleError> {
        let b = *self.bytes.get(self.pos).ok_or_else(|| self.malformed(what))?;
        self.pos += 1;
        Ok(b)
    }

    fn escaped(&mut self) -> Result<Vec<u8>, TupleError> {
        let mut out = Vec::new();
        loop {
            let b = self.next_byte("unterminated bytes or string")?;
            if b != 0x00 {
                out.push(b);
                continue;
            }
            if self.bytes.get(self.pos) == Some(&ESCAPE) {
                self.pos += 1;
                out.push(0x00);
            } else {
                return Ok(out);
            }
        }
    }

    fn float(&mut self) -> Result<f64, TupleError> {
        let body = self
            .bytes
            .get(self.pos..self.pos + 8)
            .ok_or_else(|| self.malformed("truncated float"))?;
        let mut be = [0u8; 8];
        be.copy_from_slice(body);
        self.pos += 8;
        Ok(from_ordered_bits(be))
    }

    fn element(&mut self, nested: bool, depth: usize) -> Result<Element, TupleError> {
        if depth > TUPLE_DEPTH_MAX {
            return Err(TupleError::TooDeep);
        }
        let code = self.next_byte("missing element")?;
        match code {
            NULL => {
                if nested && self.next_byte("unescaped null in nested tuple")? != ESCAPE {
                    return Err(self.malformed("unescaped null in nested tuple"));
                }
                Ok(Element::Null)
            }
            BYTES => Ok(Element::Bytes(self.escaped()?)),
            STRING => {
                let raw = self.escaped()?;
                String::from_utf8(raw)
                    .map(Element::String)
                    .map_err(|_| self.malformed("string is not UTF-8"))
            }
            NESTED => {
                let mut items = Vec::new();
                loop {
                    match self.bytes.get(self.pos) {
                        None => return Err(self.malformed("unterminated nested tuple")),
                        Some(0x00) if self.bytes.get(self.pos + 1) != Some(&ESCAPE) => {
                            self.pos += 1;
                            return Ok(Element::Tuple(items));
                        }
                        Some(_) => items.push(self.element(true, depth + 1)?),
                    }
                }
            }
            INT_MIN_CODE..=INT_MAX_CODE => {
                let negative = code < INT_ZERO;
                let len = code.abs_diff(INT_ZERO) as usize;
                let end = self.pos + len;
                let body = self
                    .bytes
                    .get(self.pos..end)
                    .ok_or_else(|| self.malformed("truncated integer"))?;
                let mut magnitude: u64 = 0;
                for &b in body {
                    magnitude = (magnitude << 8) | u64::from(if negative { !b } else { b });
                }
                // A minimal encoding has no leading zero byte; refusing others
                // keeps decode(encode(t)) == t a bijection.
                if len > 0 && magnitude >> ((len - 1) * 8) == 0 {
                    return Err(self.malformed("non-minimal integer"));
                }
                self.pos = end;
                let v = i128::from(magnitude);
                let v = if negative { -v } else { v };
                if self.bytes.get(self.pos) != Some(&FRACTION) {
                    return Ok(Element::Int(v));
                }
                self.pos += 1;
                let f = self.float()?;
                // Canonical: a non-integral float whose floor is the integer.
                if f.is_nan() || f.fract() == 0.0 || f.is_infinite() || f.floor() as i128 != v {
                    return Err(self.malformed("float does not follow its integer part"));
                }
                Ok(Element::Float(f))
            }
            NUMBER_ABOVE | NUMBER_BELOW => {
                let f = self.float()?;
                let canonical =
                    if code == NUMBER_ABOVE { f >= TWO_POW_64 } else { f <= -TWO_POW_64 };
                if !canonical {
                    return Err(self.malformed("float out of place"));
                }
                Ok(Element::Float(f))
            }
            NAN => Ok(Element::Float(f64::NAN)),
            FALSE => Ok(Element::Bool(false)),
            TRUE => Ok(Element::Bool(true)),
            _ => {
                self.pos -= 1;
                Err(self.malformed("unknown type code"))
            }
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Null => write!(f, "null"),
            Element::Bytes(b) => {
                write!(f, "b\"")?;
                for byte in b {
                    write!(f, "{}", std::ascii::escape_default(*byte))?;
                }
                write!(f, "\"")
            }
            Element::String(s) => write!(f, "{s:?}"),
            Element::Tuple(items) => {
                write!(f, "(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, ")")
            }
            Element::Int(v) => write!(f, "{v}"),
            Element::Float(v) => write!(f, "{v:?}"),
            Element::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl From<&str> for Element {
    fn from(s: &str) -> Self {
        Element::String(s.to_owned())
    }
}
impl From<String> for Element {
    fn from(s: String) -> Self {
        Element::String(s)
    }
}
impl From<i64> for Element {
    fn from(v: i64) -> Self {
        Element::Int(i128::from(v))
    }
}
impl From<u64> for Element {
    fn from(v: u64) -> Self {
        Element::Int(i128::from(v))
    }
}
impl From<i32> for Element {
    fn from(v: i32) -> Self {
        Element::Int(i128::from(v))
    }
}
impl From<f64> for Element {
    fn from(v: f64) -> Self {
        Element::Float(v)
    }
}
impl From<bool> for Element {
    fn from(v: bool) -> Self {
        Element::Bool(v)
    }
}
impl From<Vec<u8>> for Element {
    fn from(v: Vec<u8>) -> Self {
        Element::Bytes(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn element_strategy() -> impl Strategy<Value = Element> {
        let leaf = prop_oneof![
            Just(Element::Null),
            proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), any::<u8>()], 0..6)
                .prop_map(Element::Bytes),
            "[a\\x00\u{e9}\u{1F600}]{0,5}".prop_map(Element::String),
            (-(INT_MAGNITUDE_MAX as i128)..=INT_MAGNITUDE_MAX as i128).prop_map(Element::Int),
            prop_oneof![-300i128..300, Just(0i128), Just(-1), Just(255), Just(256), Just(-256)]
                .prop_map(Element::Int),
            any::<f64>().prop_map(Element::Float),
            number_strategy(),
            any::<bool>().prop_map(Element::Bool),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Element::Tuple)
        })
    }

    const INT_MAX: i128 = INT_MAGNITUDE_MAX as i128;

    /// Integers and floats mixed, with the edge cases of their shared order.
    fn number_strategy() -> impl Strategy<Value = Element> {
        let special_ints = [
            0,
            1,
            -1,
            2,
            INT_MAX,
            -INT_MAX,
            INT_MAX - 1,
            (1 << 53) + 1,
            1 << 53,
            -(1 << 53) - 1,
            i128::from(i64::MIN),
            i128::from(i64::MAX),
            i128::from(u64::MAX) - 2047,
        ];
        let special_floats = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            1.5,
            -1.5,
            1.0 - f64::EPSILON / 2.0,
            -(1.0 - f64::EPSILON / 2.0),
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            4_503_599_627_370_495.5,
            -4_503_599_627_370_495.5,
            TWO_POW_64,
            -TWO_POW_64,
            TWO_POW_64 - 2048.0,
            -(TWO_POW_64 - 2048.0),
            1.2e21,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
        ];
        prop_oneof![
            any::<i64>().prop_map(|i| Element::Int(i128::from(i))),
            any::<u64>().prop_map(|u| Element::Int(i128::from(u))),
            (-INT_MAX..=INT_MAX).prop_map(Element::Int),
            proptest::sample::select(special_ints.to_vec()).prop_map(Element::Int),
            any::<f64>().prop_map(Element::Float),
            proptest::sample::select(special_floats.to_vec()).prop_map(Element::Float),
            // Floats next to integers, and integers next to floats.
            (-300i64..300, 0usize..4).prop_map(|(i, k)| {
                let f = i as f64;
                // The floats just above and below f.
                let (up, down) = match f {
                    0.0 => (5e-324, -5e-324),
                    f if f > 0.0 => {
                        (f64::from_bits(f.to_bits() + 1), f64::from_bits(f.to_bits() - 1))
                    }
                    f => (f64::from_bits(f.to_bits() - 1), f64::from_bits(f.to_bits() + 1)),
                };
                Element::Float([f, f + 0.5, up, down][k])
            }),
            (any::<i64>(), -1i128..=1).prop_map(|(i, d)| Element::Int(i128::from(i) + d)),
            any::<i64>().prop_map(|i| Element::Float(i as f64)),
            any::<u64>().prop_map(|u| Element::Float(u as f64)),
        ]
    }

    /// The numeric order computed independently of the encoding: a float
    /// is `m * 2^e` with an integer `m`, compared with an integer in exact
    /// integer arithmetic.
    fn numeric_oracle(a: &Element, b: &Element) -> Ordering {
        fn int_vs_float(i: i128, f: f64) -> Ordering {
            if f.is_nan() || f == f64::INFINITY {
                return Ordering::Less;
            }
            if f == f64::NEG_INFINITY {
                return Ordering::Greater;
            }
            if f == 0.0 {
                return i.cmp(&0);
            }
            let bits = f.to_bits();
            let negative = bits >> 63 == 1;
            let exp = ((bits >> 52) & 0x7ff) as i32;
            let frac = i128::from(bits & ((1 << 52) - 1));
            let (m, e) = if exp == 0 { (frac, -1074) } else { (frac | (1 << 52), exp - 1075) };
            let m = if negative { -m } else { m };
            if e >= 0 {
                if e > 70 {
                    return if negative { Ordering::Greater } else { Ordering::Less };
                }
                return i.cmp(&(m << e));
            }
            // Compare i * 2^-e with m; when that overflows |f| < 1.
            match i.checked_mul(1i128.checked_shl((-e) as u32).unwrap_or(0)).filter(|_| -e < 120) {
                Some(scaled) => scaled.cmp(&m),
                None if i != 0 => i.cmp(&0),
                None => 0.cmp(&m),
            }
        }
        match (a, b) {
            (Element::Int(x), Element::Int(y)) => x.cmp(y),
            (Element::Int(x), Element::Float(y)) => int_vs_float(*x, *y),
            (Element::Float(x), Element::Int(y)) => int_vs_float(*y, *x).reverse(),
            (Element::Float(x), Element::Float(y)) => {
                if x.is_nan() || y.is_nan() {
                    x.is_nan().cmp(&y.is_nan())
                } else {
                    x.partial_cmp(y).expect("not NaN")
                }
            }
            _ => unreachable!("numbers only"),
        }
    }

    fn tuple_strategy() -> impl Strategy<Value = Vec<Element>> {
        proptest::collection::vec(element_strategy(), 0..4)
    }

    /// NaN != NaN under PartialEq, so round trips compare encodings instead.
    fn same(a: &[Element], b: &[Element]) -> bool {
        compare_tuples(a, b) == Ordering::Equal
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The parent's bytes are the encoding of every element but the last.
        #[test]
        fn last_element_start_splits_off_the_parent(
            t in proptest::collection::vec(element_strategy(), 1..5)
        ) {
            let bytes = encode(&t).expect("encodes");
            let at = last_element_start(&bytes).expect("splits");
            prop_assert_eq!(&bytes[..at], &encode(&t[..t.len() - 1]).expect("encodes")[..]);
        }

        /// A nested tuple's bytes, read in place, are its items' top-level
        /// encoding (what a job takes as its output key from a row key).
        #[test]
        fn first_nested_as_tuple_is_the_items_encoding(
            items in proptest::collection::vec(element_strategy(), 0..5),
            rest in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let bytes = encode(&[Element::Tuple(items.clone()), Element::Bytes(rest)])
                .expect("encodes");
            prop_assert_eq!(first_nested_as_tuple(&bytes).expect("reads"), encode(&items).expect("encodes"));
        }

        #[test]
        fn encoding_order_equals_tuple_order(a in tuple_strategy(), b in tuple_strategy()) {
            let ea = encode(&a).expect("in range");
            let eb = encode(&b).expect("in range");
            prop_assert_eq!(ea.cmp(&eb), compare_tuples(&a, &b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn decode_inverts_encode(t in tuple_strategy()) {
            let bytes = encode(&t).expect("in range");
            let back = decode(&bytes).expect("valid encoding");
            prop_assert!(same(&t, &back), "{:?} -> {:?}", t, back);
            prop_assert_eq!(encode(&back).expect("in range"), bytes);
        }

        #[test]
        fn prefix_tuple_is_byte_prefix(t in tuple_strategy(), n in 0usize..4) {
            let n = n.min(t.len());
            let whole = encode(&t).expect("in range");
            let prefix = encode(&t[..n]).expect("in range");
            prop_assert!(whole.starts_with(&prefix));
        }

        #[test]
        fn numbers_order_numerically_in_bytes_and_in_compare(
            a in number_strategy(),
            b in number_strategy(),
            tail_a in element_strategy(),
            tail_b in element_strategy(),
        ) {
            let want = numeric_oracle(&a, &b);
            prop_assert_eq!(compare_elements(&a, &b), want, "{:?} vs {:?}", a, b);
            let ea = encode(std::slice::from_ref(&a)).expect("in range");
            let eb = encode(std::slice::from_ref(&b)).expect("in range");
            prop_assert_eq!(ea.cmp(&eb), want, "{:?} vs {:?}", a, b);
            prop_assert_eq!(ea == eb, want == Ordering::Equal);
            // Longer tuples and nested tuples keep the numeric order first.
            let ta = vec![a.clone(), tail_a.clone()];
            let tb = vec![b.clone(), tail_b.clone()];
            let (eta, etb) = (encode(&ta).expect("in range"), encode(&tb).expect("in range"));
            prop_assert_eq!(eta.cmp(&etb), compare_tuples(&ta, &tb));
            if want != Ordering::Equal {
                prop_assert_eq!(eta.cmp(&etb), want);
            }
            let na = [Element::Tuple(ta.clone())];
            let nb = [Element::Tuple(tb.clone())];
            let (ena, enb) = (encode(&na).expect("in range"), encode(&nb).expect("in range"));
            prop_assert_eq!(ena.cmp(&enb), compare_tuples(&na, &nb));
            // A tuple prefix scan on (a,) holds exactly the tuples starting with a.
            let end = crate::keys::tuple_prefix_end(&ea).expect("non-empty");
            let inside = eb.as_slice() >= ea.as_slice() && etb.as_slice() < end.as_slice();
            prop_assert_eq!(inside, want == Ordering::Equal, "{:?} prefix of {:?}", a, tb);
        }

        #[test]
        fn numbers_decode_canonically(x in number_strategy()) {
            let bytes = encode(std::slice::from_ref(&x)).expect("in range");
            let back = decode(&bytes).expect("valid encoding");
            prop_assert_eq!(back.len(), 1);
            prop_assert_eq!(compare_elements(&x, &back[0]), Ordering::Equal);
            prop_assert_eq!(encode(&back).expect("in range"), bytes.clone());
            match (&x, &back[0]) {
                (_, Element::Float(f)) => {
                    prop_assert!(integral(*f).is_none(), "{:?} decoded as float {:?}", x, f);
                    prop_assert!(!f.is_nan() || f.to_bits() == f64::NAN.to_bits());
                }
                (Element::Float(f), Element::Int(n)) => prop_assert_eq!(*f, *n as f64),
                (Element::Int(a), Element::Int(n)) => prop_assert_eq!(a, n),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn numbers_sort_in_one_order() {
        let ordered = [
            Element::Float(f64::NEG_INFINITY),
            Element::Float(-1e300),
            Element::Float(-TWO_POW_64),
            Element::Int(-INT_MAX),
            Element::Int(-2),
            Element::Float(-1.5),
            Element::Int(-1),
            Element::Float(-0.5),
            Element::Float(-5e-324),
            Element::Int(0),
            Element::Float(5e-324),
            Element::Float(0.5),
            Element::Int(1),
            Element::Float(1.5),
            Element::Int(2),
            Element::Int(1 << 53),
            Element::Int((1 << 53) + 1),
            Element::Float(9_007_199_254_740_994.0),
            Element::Int(INT_MAX),
            Element::Float(TWO_POW_64),
            Element::Float(2f64.powi(70)),
            Element::Float(f64::INFINITY),
            Element::Float(f64::NAN),
        ];
        let keys: Vec<Vec<u8>> =
            ordered.iter().map(|e| encode(std::slice::from_ref(e)).expect("encodes")).collect();
        for (i, pair) in keys.windows(2).enumerate() {
            assert!(pair[0] < pair[1], "{} < {}", ordered[i], ordered[i + 1]);
            assert_eq!(compare_elements(&ordered[i], &ordered[i + 1]), Ordering::Less);
        }
        // compare_elements is exact over all of i128, beyond the key range.
        assert_eq!(
            compare_elements(&Element::Int(i128::MAX), &Element::Float(1.7e38)),
            Ordering::Greater
        );
        assert_eq!(
            compare_elements(&Element::Int(i128::MIN), &Element::Float(-1.7e38)),
            Ordering::Less
        );
        assert_eq!(
            compare_elements(&Element::Int(i128::MIN), &Element::Float(-(2f64.powi(127)))),
            Ordering::Equal
        );
        assert_eq!(
            compare_elements(&Element::Int(i128::MAX), &Element::Float(2f64.powi(127))),
            Ordering::Less
        );
        // Numbers sit between tuples and booleans.
        assert!(encode(&[Element::Tuple(vec![])]).expect("e") < keys[0]);
        assert!(keys[keys.len() - 1] < encode(&[false.into()]).expect("e"));
    }

    #[test]
    fn a_float_with_an_integral_value_is_that_integer() {
        for (f, n) in
            [(1.0, 1), (-0.0, 0), (0.0, 0), (-7.0, -7), (TWO_POW_64 - 2048.0, INT_MAX - 2047)]
        {
            let bytes = encode(&[Element::Float(f)]).expect("encodes");
            assert_eq!(bytes, encode(&[Element::Int(n)]).expect("encodes"), "{f}");
            assert_eq!(decode(&bytes).expect("decodes"), vec![Element::Int(n)]);
        }
        let nan = encode(&[Element::Float(f64::NAN)]).expect("encodes");
        assert_eq!(nan, encode(&[Element::Float(-f64::NAN)]).expect("encodes"));
        assert_eq!(
            nan,
            encode(&[Element::Float(f64::from_bits(0x7ff0_0000_0000_0001))]).expect("e")
        );
    }

    #[test]
    fn non_canonical_numbers_are_refused() {
        let with = |prefix: &[u8], f: f64| {
            let mut b = prefix.to_vec();
            b.extend_from_slice(&ordered_bits(f));
            decode(&b)
        };
        // An integral value after an integer part, a wrong integer part.
        assert!(with(&[INT_ZERO + 1, 1, FRACTION], 2.0).is_err());
        assert!(with(&[INT_ZERO + 1, 2, FRACTION], 1.5).is_err());
        assert!(with(&[INT_ZERO + 1, 1, FRACTION], f64::NAN).is_err());
        assert!(with(&[INT_ZERO + 1, 1, FRACTION], 1.5).is_ok());
        // Beyond-range codes holding numbers in range.
        assert!(with(&[NUMBER_ABOVE], 5.0).is_err());
        assert!(with(&[NUMBER_BELOW], -TWO_POW_64 + 2048.0).is_err());
        assert!(with(&[NUMBER_ABOVE], f64::INFINITY).is_ok());
        // The old float type code is not a number any more.
        assert!(with(&[0x21], 1.5).is_err());
    }

    #[test]
    fn paris_example_orders() {
        let a = encode(&["paris".into(), 31i64.into()]).expect("in range");
        let b = encode(&["paris".into(), 40i64.into()]).expect("in range");
        assert!(a < b);
    }

    #[test]
    fn integer_range_is_enforced() {
        assert!(encode(&[Element::Int(INT_MAGNITUDE_MAX as i128)]).is_ok());
        assert!(encode(&[Element::Int(-(INT_MAGNITUDE_MAX as i128))]).is_ok());
        assert_eq!(
            encode(&[Element::Int(INT_MAGNITUDE_MAX as i128 + 1)]),
            Err(TupleError::IntOutOfRange(INT_MAGNITUDE_MAX as i128 + 1))
        );
    }

    // Regression: a key nested 34 levels deep was encoded and stored, then
    // could not be decoded (it printed as {"$raw":...}).
    #[test]
    fn encode_refuses_the_depth_decode_refuses() {
        let nest = |levels: usize| {
            let mut e = Element::Int(1);
            for _ in 0..levels {
                e = Element::Tuple(vec![e]);
            }
            vec![e]
        };
        let deepest = encode(&nest(TUPLE_DEPTH_MAX)).expect("at the limit");
        assert!(decode(&deepest).is_ok());
        assert_eq!(encode(&nest(TUPLE_DEPTH_MAX + 1)), Err(TupleError::TooDeep));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = vec![NESTED; TUPLE_DEPTH_MAX + 5];
        bytes.extend(std::iter::repeat_n(0u8, TUPLE_DEPTH_MAX + 5));
        assert_eq!(decode(&bytes), Err(TupleError::TooDeep));
    }
}
