//! Order-preserving tuple encoding of composite keys.
//!
//! The model is FoundationDB's tuple layer: every element starts with a type
//! byte, and the bytes of an encoded tuple compare (lexicographically, as
//! Monotable compares keys) exactly as the tuples compare element by element.
//! So `("paris", 31)` sorts before `("paris", 40)`, and the encoding of a tuple
//! is a byte prefix of the encoding of every longer tuple that starts with it:
//! scanning by the prefix `("paris",)` finds every key whose first element is
//! `"paris"` and nothing else.
//!
//! | element  | type byte     | body |
//! |----------|---------------|------|
//! | null     | `0x00`        | none |
//! | bytes    | `0x01`        | bytes with `0x00` escaped as `0x00 0xFF`, then `0x00` |
//! | string   | `0x02`        | UTF-8, escaped and terminated like bytes |
//! | tuple    | `0x05`        | the nested elements (a nested null is `0x00 0xFF`), then `0x00` |
//! | integer  | `0x0C..=0x1C` | `0x14` is zero; `0x14 + n` a positive integer in `n` big-endian bytes; `0x14 - n` a negative one in `n` bytes of one's complement |
//! | float    | `0x21`        | the IEEE 754 bits, big-endian, sign bit flipped (all bits flipped when negative) |
//! | false    | `0x26`        | none |
//! | true     | `0x27`        | none |
//!
//! Elements of different types order by their type byte. Floats order by
//! [`f64::total_cmp`] (so `-0.0 < 0.0` and NaN sorts last), integers cover
//! `-(2^64 - 1) ..= 2^64 - 1`.

use std::cmp::Ordering;
use std::fmt;

const NULL: u8 = 0x00;
const BYTES: u8 = 0x01;
const STRING: u8 = 0x02;
const NESTED: u8 = 0x05;
const INT_ZERO: u8 = 0x14;
const INT_MIN_CODE: u8 = INT_ZERO - 8;
const INT_MAX_CODE: u8 = INT_ZERO + 8;
const FLOAT: u8 = 0x21;
const FALSE: u8 = 0x26;
const TRUE: u8 = 0x27;
const ESCAPE: u8 = 0xFF;

/// The largest magnitude an integer element can hold: 2^64 - 1.
pub const INT_MAGNITUDE_MAX: u128 = u64::MAX as u128;

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
            Element::Int(_) => INT_ZERO,
            Element::Float(_) => FLOAT,
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
        (Element::Float(x), Element::Float(y)) => x.total_cmp(y),
        (Element::Bool(x), Element::Bool(y)) => x.cmp(y),
        _ => a.type_rank().cmp(&b.type_rank()),
    }
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
        Element::Float(f) => {
            out.push(FLOAT);
            let bits = f.to_bits();
            let bits = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
            out.extend_from_slice(&bits.to_be_bytes());
        }
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

/// Decodes key bytes into a tuple.
pub fn decode(bytes: &[u8]) -> Result<Vec<Element>, TupleError> {
    let mut decoder = Decoder { bytes, pos: 0 };
    let mut out = Vec::new();
    while decoder.pos < bytes.len() {
        out.push(decoder.element(false, 0)?);
    }
    Ok(out)
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
                Ok(Element::Int(if negative { -v } else { v }))
            }
            FLOAT => {
                let body = self
                    .bytes
                    .get(self.pos..self.pos + 8)
                    .ok_or_else(|| self.malformed("truncated float"))?;
                let mut be = [0u8; 8];
                be.copy_from_slice(body);
                self.pos += 8;
                let bits = u64::from_be_bytes(be);
                let bits = if bits >> 63 == 1 { bits ^ (1 << 63) } else { !bits };
                Ok(Element::Float(f64::from_bits(bits)))
            }
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
            any::<bool>().prop_map(Element::Bool),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            proptest::collection::vec(inner, 0..4).prop_map(Element::Tuple)
        })
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
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode(&bytes);
        }
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
