//! Built-in reducers and their reductions.
//!
//! Each built-in is a monoid over [`Reduction`]: a row becomes a leaf
//! reduction ([`Builtin::leaf`]), and reductions combine associatively
//! ([`Builtin::combine`]), which is what the reduce tree and the meta-ranges
//! (rereduce) need. Row values are MessagePack documents; `sum`, `min`,
//! `max` and `stats` take numbers (integers or floats) and refuse anything
//! else with an error the view records.
//!
//! Numbers are exact where the inputs are:
//! - `sum` keeps the exact sum of its inputs in a long fixed-point
//!   accumulator ([`Fixed`], Kulisch's long accumulator), so combines are
//!   exact, associative and commutative: chunk size, tree shape and
//!   restarts cannot change a sum. Integers only: the answer is the exact
//!   integer, and an error naming the range when it leaves
//!   `-2^63 ..= 2^64 - 1` (MessagePack's integers). Any float among the
//!   inputs: the answer is the float nearest the exact sum of all inputs,
//!   integers included (rounded once, ties to even; +-inf past f64's range).
//! - inf and NaN inputs are kept beside the exact sum as flags: a NaN, or
//!   both infinities, make the sum NaN; else an infinity makes it that
//!   infinity. Reductions are recomputed from the rows, never subtracted,
//!   so removing the row restores the finite sum.
//! - `min`/`max` return a value some row holds, in the order of keys: all
//!   numbers by value, integers and floats compared exactly, -inf lowest,
//!   NaN above +inf; of equal values (`1` and `1.0`) the integer, and
//!   -0.0 below 0.0.
//! - `stats`: count, sum (as `sum`), min, max, sumsqr (exact like sum:
//!   an integer when every input is one and it fits the 64-bit range, else
//!   the float nearest it) and mean (the float nearest the exact sum / count).
//!
//! Non-finite results answer as `{"$float":"inf"}`, `{"$float":"-inf"}`,
//! `{"$float":"nan"}`; the reduction of no rows is `null` (`0` for `count`
//! and `sum`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{json, Value as Json};

use super::exact::Fixed;
use super::hll::Hll;
use super::reduce_tree::Monoid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Builtin {
    /// Number of rows.
    Count,
    /// Sum of the rows' numeric values.
    Sum,
    Min,
    Max,
    /// count, sum, min, max, sum of squares and mean of the numeric values.
    Stats,
    /// Estimated number of distinct values (HyperLogLog, 1.6% standard error).
    CountDistinct,
}

impl Builtin {
    pub fn parse(name: &str) -> Option<Builtin> {
        Some(match name {
            "count" => Builtin::Count,
            "sum" => Builtin::Sum,
            "min" => Builtin::Min,
            "max" => Builtin::Max,
            "stats" => Builtin::Stats,
            "count_distinct" => Builtin::CountDistinct,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Count => "count",
            Builtin::Sum => "sum",
            Builtin::Min => "min",
            Builtin::Max => "max",
            Builtin::Stats => "stats",
            Builtin::CountDistinct => "count_distinct",
        }
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A number a row holds, as MessagePack has it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    Float(f64),
}

impl Num {
    fn int(self) -> Option<i128> {
        match self {
            Num::Int(i) => Some(i128::from(i)),
            Num::UInt(u) => Some(i128::from(u)),
            Num::Float(_) => None,
        }
    }

    /// Compares by value, exactly: NaN above everything (one value).
    fn cmp_value(self, other: Num) -> Ordering {
        match (self.int(), other.int()) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(a), None) => cmp_int_float(a, other.float()),
            (None, Some(b)) => cmp_int_float(b, self.float()).reverse(),
            (None, None) => {
                let (a, b) = (self.float(), other.float());
                match (a.is_nan(), b.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                }
            }
        }
    }

    fn float(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::UInt(u) => u as f64,
            Num::Float(f) => f,
        }
    }

    /// The smaller; of equal values the integer, then -0.0, then 0.0 (NaNs
    /// by their bits), so the choice is a total order and combines are
    /// associative.
    fn min(self, other: Num) -> Num {
        let rank = |n: Num| match n {
            Num::Float(f) if f.is_nan() => (1, f.to_bits()),
            Num::Float(f) => (1, u64::from(f.is_sign_positive())),
            _ => (0, 0),
        };
        match self.cmp_value(other).then_with(|| rank(self).cmp(&rank(other))) {
            Ordering::Greater => other,
            _ => self,
        }
    }

    /// The larger; of equal values the integer, then 0.0, then -0.0.
    fn max(self, other: Num) -> Num {
        let rank = |n: Num| match n {
            Num::Float(f) if f.is_nan() => (1, f.to_bits()),
            Num::Float(f) => (1, u64::from(f.is_sign_positive())),
            _ => (2, 0),
        };
        match self.cmp_value(other).then_with(|| rank(self).cmp(&rank(other))) {
            Ordering::Less => other,
            _ => self,
        }
    }

    fn to_json(self) -> Json {
        match self {
            Num::Int(i) => json!(i),
            Num::UInt(u) => json!(u),
            Num::Float(f) => float_json(f),
        }
    }

    fn encode_into(self, out: &mut Vec<u8>) {
        let (tag, bits) = match self {
            Num::Int(i) => (0, i as u64),
            Num::UInt(u) => (1, u),
            Num::Float(f) => (2, f.to_bits()),
        };
        out.push(tag);
        out.extend_from_slice(&bits.to_be_bytes());
    }

    fn decode_from(bytes: &[u8]) -> Option<(Num, &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        let bits = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let n = match tag {
            0 => Num::Int(bits as i64),
            1 if bits > i64::MAX as u64 => Num::UInt(bits),
            2 => Num::Float(f64::from_bits(bits)),
            _ => return None,
        };
        Some((n, &rest[8..]))
    }
}

/// Compares an integer with a float exactly (NaN above everything).
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    if f.is_nan() {
        return Ordering::Less;
    }
    // Every integer here is below 2^64 in magnitude.
    if f >= 2f64.powi(100) {
        return Ordering::Less;
    }
    if f <= -(2f64.powi(100)) {
        return Ordering::Greater;
    }
    let floor = f.floor();
    match i.cmp(&(floor as i128)) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    }
}

/// The JSON of a float: a number, or `{"$float": "inf" | "-inf" | "nan"}`.
pub fn float_json(f: f64) -> Json {
    if f.is_nan() {
        json!({"$float": "nan"})
    } else if f.is_infinite() {
        json!({"$float": if f > 0.0 { "inf" } else { "-inf" }})
    } else {
        json!(f)
    }
}

/// Inputs seen besides the exact finite sum.
const SAW_FLOAT: u8 = 1;
const SAW_POS_INF: u8 = 2;
const SAW_NEG_INF: u8 = 4;
const SAW_NAN: u8 = 8;

/// The exact sum of numbers: the finite ones as `small + big` (integers
/// add in `small` until it would overflow, so integer sums cost one i64
/// addition; floats and what overflows go to the [`Fixed`] accumulator),
/// and flags for what else was seen (a float at all, +inf, -inf, NaN).
/// Combining ORs the flags, which is enough because reductions are
/// recomputed from their rows, never subtracted from.
#[derive(Debug, Clone, Default)]
pub struct ExactSum {
    small: i64,
    big: Fixed,
    flags: u8,
}

/// Equal sums compare equal however their parts are split.
impl PartialEq for ExactSum {
    fn eq(&self, other: &ExactSum) -> bool {
        self.flags == other.flags && self.finite() == other.finite()
    }
}

/// The 64-bit integer range a sum of integers must stay in.
pub const SUM_INT_RANGE: &str = "-9223372036854775808..=18446744073709551615";

impl ExactSum {
    fn of(n: Num) -> ExactSum {
        match n {
            Num::Int(i) => ExactSum { small: i, ..ExactSum::default() },
            Num::UInt(u) => ExactSum { big: Fixed::from_int(i128::from(u)), ..ExactSum::default() },
            Num::Float(f) => ExactSum::of_float(f, Fixed::from_f64),
        }
    }

    fn square_of(n: Num) -> ExactSum {
        match n {
            Num::Int(i) => match i.checked_mul(i) {
                Some(sq) => ExactSum { small: sq, ..ExactSum::default() },
                None => {
                    ExactSum { big: Fixed::square_int(i.unsigned_abs()), ..ExactSum::default() }
                }
            },
            Num::UInt(u) => ExactSum { big: Fixed::square_int(u), ..ExactSum::default() },
            Num::Float(f) => ExactSum::of_float(f.abs(), Fixed::square_f64),
        }
    }

    fn of_float(f: f64, exact: fn(f64) -> Fixed) -> ExactSum {
        let flag = if f.is_nan() {
            SAW_NAN
        } else if f == f64::INFINITY {
            SAW_POS_INF
        } else if f == f64::NEG_INFINITY {
            SAW_NEG_INF
        } else {
            0
        };
        let big = if flag == 0 { exact(f) } else { Fixed::zero() };
        ExactSum { small: 0, big, flags: SAW_FLOAT | flag }
    }

    fn combine(&self, other: &ExactSum) -> ExactSum {
        let flags = self.flags | other.flags;
        let big = self.big.add(&other.big);
        match self.small.checked_add(other.small) {
            Some(small) => ExactSum { small, big, flags },
            None => {
                let spill = i128::from(self.small) + i128::from(other.small);
                ExactSum { small: 0, big: big.add(&Fixed::from_int(spill)), flags }
            }
        }
    }

    /// The exact sum of the finite inputs.
    fn finite(&self) -> Fixed {
        if self.small == 0 {
            self.big.clone()
        } else {
            self.big.add(&Fixed::from_int(i128::from(self.small)))
        }
    }

    /// The non-finite result, if the inputs make one.
    fn non_finite(&self) -> Option<f64> {
        let (pos, neg) = (self.flags & SAW_POS_INF != 0, self.flags & SAW_NEG_INF != 0);
        if self.flags & SAW_NAN != 0 || (pos && neg) {
            Some(f64::NAN)
        } else if pos {
            Some(f64::INFINITY)
        } else if neg {
            Some(f64::NEG_INFINITY)
        } else {
            None
        }
    }

    /// The sum as `sum` answers it: see the module docs.
    pub fn answer(&self, what: &str) -> Result<Json, ReduceError> {
        if let Some(x) = self.non_finite() {
            return Ok(float_json(x));
        }
        if self.flags & SAW_FLOAT != 0 {
            return Ok(float_json(self.finite().to_f64()));
        }
        let finite = self.finite();
        let n = finite.to_i128();
        if let Some(i) = n.and_then(|n| i64::try_from(n).ok()) {
            return Ok(json!(i));
        }
        if let Some(u) = n.and_then(|n| u64::try_from(n).ok()) {
            return Ok(json!(u));
        }
        Err(ReduceError::IntegerOverflow {
            what: what.to_string(),
            sum: match n {
                Some(n) => n.to_string(),
                None if finite.is_negative() => "below -2^127".into(),
                None => "above 2^127".into(),
            },
        })
    }

    /// Like [`ExactSum::answer`], but past the 64-bit range the float
    /// nearest it (for sums of squares, which outgrow it quickly).
    fn answer_or_float(&self) -> Json {
        self.answer("").unwrap_or_else(|_| float_json(self.finite().to_f64()))
    }

    /// The float nearest the exact sum divided by `count`.
    fn mean(&self, count: u64) -> Json {
        match self.non_finite() {
            Some(x) => float_json(x),
            None => float_json(self.finite().div_to_f64(count)),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.flags);
        // One canonical form: equal sums store equal bytes.
        self.finite().encode_into(out);
    }

    fn decode_from(bytes: &[u8]) -> Option<(ExactSum, &[u8])> {
        let (&flags, rest) = bytes.split_first()?;
        if flags > 15 {
            return None;
        }
        let (big, rest) = Fixed::decode_from(rest)?;
        Some((ExactSum { small: 0, big, flags }, rest))
    }
}

/// A `stats` reduction.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub sum: ExactSum,
    pub sumsqr: ExactSum,
    pub min: Num,
    pub max: Num,
}

/// A partial result of a built-in reducer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reduction {
    Count(u64),
    Sum(ExactSum),
    Min(Num),
    Max(Num),
    Stats(Box<Stats>),
    Distinct(Hll),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReduceError {
    #[error("{reducer} needs a number, the value is {found}")]
    NotANumber { reducer: Builtin, found: String },
    #[error("value is not MessagePack")]
    NotMessagePack,
    #[error("reductions of different kinds cannot combine")]
    Mismatch,
    #[error("{what} overflows the 64-bit integer range ({SUM_INT_RANGE}): the exact sum is {sum}")]
    IntegerOverflow { what: String, sum: String },
}

/// The number in a MessagePack value.
pub fn number(value: &[u8], reducer: Builtin) -> Result<Num, ReduceError> {
    let v = super::map_fn::decode_value(value).ok_or(ReduceError::NotMessagePack)?;
    match v {
        rmpv::Value::Integer(i) => Ok(match (i.as_i64(), i.as_u64()) {
            (Some(x), _) => Num::Int(x),
            (None, Some(u)) => Num::UInt(u),
            (None, None) => return Err(ReduceError::NotMessagePack),
        }),
        rmpv::Value::F32(f) => Ok(Num::Float(f64::from(f))),
        rmpv::Value::F64(f) => Ok(Num::Float(f)),
        other => {
            let mut found = other.to_string();
            found.truncate(64);
            Err(ReduceError::NotANumber { reducer, found })
        }
    }
}

impl Builtin {
    /// The reduction of one row.
    pub fn leaf(self, value: &[u8]) -> Result<Reduction, ReduceError> {
        Ok(match self {
            Builtin::Count => Reduction::Count(1),
            Builtin::Sum => Reduction::Sum(ExactSum::of(number(value, self)?)),
            Builtin::Min => Reduction::Min(number(value, self)?),
            Builtin::Max => Reduction::Max(number(value, self)?),
            Builtin::Stats => {
                let v = number(value, self)?;
                Reduction::Stats(Box::new(Stats {
                    count: 1,
                    sum: ExactSum::of(v),
                    sumsqr: ExactSum::square_of(v),
                    min: v,
                    max: v,
                }))
            }
            Builtin::CountDistinct => Reduction::Distinct(Hll::of_value(value)),
        })
    }

    /// Combines two reductions of this reducer.
    pub fn try_combine(self, a: &Reduction, b: &Reduction) -> Result<Reduction, ReduceError> {
        use Reduction::*;
        Ok(match (a, b) {
            (Count(x), Count(y)) => Count(x + y),
            (Sum(x), Sum(y)) => Sum(x.combine(y)),
            (Min(x), Min(y)) => Min(x.min(*y)),
            (Max(x), Max(y)) => Max(x.max(*y)),
            (Stats(x), Stats(y)) => Stats(Box::new(self::Stats {
                count: x.count + y.count,
                sum: x.sum.combine(&y.sum),
                sumsqr: x.sumsqr.combine(&y.sumsqr),
                min: x.min.min(y.min),
                max: x.max.max(y.max),
            })),
            (Distinct(x), Distinct(y)) => Distinct(x.merge(y)),
            _ => return Err(ReduceError::Mismatch),
        })
    }
}

impl Monoid for Builtin {
    type R = Reduction;

    fn combine(&self, a: &Reduction, b: &Reduction) -> Reduction {
        // Every reduction in one tree comes from `leaf` of the same reducer,
        // so the kinds always match.
        self.try_combine(a, b).expect("reductions of one reducer share their kind")
    }
}

/// Tags of the stored forms. 1 to 4 were f64 sums, mins, maxes and stats
/// of an older format: they no longer decode, and the parts they summed
/// are rebuilt from their rows.
const TAG_COUNT: u8 = 0;
const TAG_DISTINCT: u8 = 5;
const TAG_SUM: u8 = 6;
const TAG_MIN: u8 = 7;
const TAG_MAX: u8 = 8;
const TAG_STATS: u8 = 9;

impl Reduction {
    /// The JSON a query returns: a number, or an object for `stats`; an
    /// error for an integer sum past the 64-bit range.
    pub fn to_json(&self) -> Result<Json, ReduceError> {
        Ok(match self {
            Reduction::Count(n) => json!(n),
            Reduction::Sum(s) => s.answer("sum")?,
            Reduction::Min(x) | Reduction::Max(x) => x.to_json(),
            Reduction::Stats(s) => json!({
                "count": s.count,
                "sum": s.sum.answer("stats sum")?,
                "min": s.min.to_json(),
                "max": s.max.to_json(),
                "sumsqr": s.sumsqr.answer_or_float(),
                "mean": s.sum.mean(s.count),
            }),
            Reduction::Distinct(h) => json!(h.estimate()),
        })
    }

    /// The stored form, in a meta-range row: a tag byte, then big-endian
    /// fields (see [`Fixed::encode_into`]), or the HyperLogLog's own form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match self {
            Reduction::Count(n) => {
                out.push(TAG_COUNT);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Reduction::Sum(s) => {
                out.push(TAG_SUM);
                s.encode_into(&mut out);
            }
            Reduction::Min(x) => {
                out.push(TAG_MIN);
                x.encode_into(&mut out);
            }
            Reduction::Max(x) => {
                out.push(TAG_MAX);
                x.encode_into(&mut out);
            }
            Reduction::Stats(s) => {
                out.push(TAG_STATS);
                out.extend_from_slice(&s.count.to_be_bytes());
                s.sum.encode_into(&mut out);
                s.sumsqr.encode_into(&mut out);
                s.min.encode_into(&mut out);
                s.max.encode_into(&mut out);
            }
            Reduction::Distinct(h) => {
                out.push(TAG_DISTINCT);
                out.extend_from_slice(&h.encode());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Reduction> {
        let (&tag, rest) = bytes.split_first()?;
        let (r, rest): (Reduction, &[u8]) = match tag {
            TAG_COUNT if rest.len() == 8 => {
                (Reduction::Count(u64::from_be_bytes(rest.try_into().ok()?)), &[])
            }
            TAG_SUM => {
                let (s, rest) = ExactSum::decode_from(rest)?;
                (Reduction::Sum(s), rest)
            }
            TAG_MIN | TAG_MAX => {
                let (x, rest) = Num::decode_from(rest)?;
                (if tag == TAG_MIN { Reduction::Min(x) } else { Reduction::Max(x) }, rest)
            }
            TAG_STATS => {
                let count = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let (sum, rest) = ExactSum::decode_from(&rest[8..])?;
                let (sumsqr, rest) = ExactSum::decode_from(rest)?;
                let (min, rest) = Num::decode_from(rest)?;
                let (max, rest) = Num::decode_from(rest)?;
                (Reduction::Stats(Box::new(Stats { count, sum, sumsqr, min, max })), rest)
            }
            TAG_DISTINCT => (Reduction::Distinct(Hll::decode(rest)?), &[]),
            _ => return None,
        };
        rest.is_empty().then_some(r)
    }

    /// The reduction of no rows, for queries over an empty range.
    pub fn empty_json(reducer: Builtin) -> Json {
        match reducer {
            Builtin::Count | Builtin::CountDistinct => json!(0),
            Builtin::Sum => json!(0),
            Builtin::Min | Builtin::Max | Builtin::Stats => Json::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mp(v: rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).expect("vec");
        out
    }

    fn fold(reducer: Builtin, values: &[Vec<u8>]) -> Result<Json, ReduceError> {
        let mut acc: Option<Reduction> = None;
        for v in values {
            let leaf = reducer.leaf(v)?;
            acc = Some(match acc {
                None => leaf,
                Some(a) => reducer.try_combine(&a, &leaf)?,
            });
        }
        acc.map_or_else(|| Ok(Reduction::empty_json(reducer)), |r| r.to_json())
    }

    fn ints(xs: &[i64]) -> Vec<Vec<u8>> {
        xs.iter().map(|&i| mp(rmpv::Value::from(i))).collect()
    }

    fn floats(xs: &[f64]) -> Vec<Vec<u8>> {
        xs.iter().map(|&f| mp(rmpv::Value::F64(f))).collect()
    }

    #[test]
    fn builtins_reduce_numbers() {
        let values = ints(&[3, -1, 10, 4]);
        assert_eq!(fold(Builtin::Count, &values), Ok(json!(4)));
        assert_eq!(fold(Builtin::Sum, &values), Ok(json!(16)));
        assert_eq!(fold(Builtin::Min, &values), Ok(json!(-1)));
        assert_eq!(fold(Builtin::Max, &values), Ok(json!(10)));
        assert_eq!(
            fold(Builtin::Stats, &values),
            Ok(json!({"count": 4, "sum": 16, "min": -1, "max": 10, "sumsqr": 126, "mean": 4.0}))
        );
        assert_eq!(fold(Builtin::Sum, &floats(&[0.5, 0.25])), Ok(json!(0.75)));
        assert_eq!(fold(Builtin::Sum, &[]), Ok(json!(0)));
        assert_eq!(fold(Builtin::Max, &[]), Ok(Json::Null));
    }

    /// Postmortem: sums were f64, so 2^53 + 1 printed 9007199254740992.0
    /// and max of 9007199254740993 returned ...992; integers now stay exact.
    #[test]
    fn integer_sums_and_extremes_are_exact() {
        let big = (1i64 << 53) + 1;
        assert_eq!(fold(Builtin::Sum, &ints(&[1 << 53, 1])), Ok(json!(big)));
        assert_eq!(fold(Builtin::Max, &ints(&[big, 1 << 53])), Ok(json!(big)));
        assert_eq!(fold(Builtin::Min, &ints(&[big, big + 2])), Ok(json!(big)));
        let stats = fold(Builtin::Stats, &ints(&[big, 1])).expect("stats");
        assert_eq!(stats["sum"], json!(big + 1));
        assert_eq!(stats["max"], json!(big));
        // Up to u64::MAX is a sum; past it, an error naming the range.
        let u = |x: u64| mp(rmpv::Value::from(x));
        assert_eq!(fold(Builtin::Sum, &[u(u64::MAX - 1), u(1)]), Ok(json!(u64::MAX)));
        assert_eq!(fold(Builtin::Max, &[u(u64::MAX), u(1)]), Ok(json!(u64::MAX)));
        let err = fold(Builtin::Sum, &[u(u64::MAX), u(1)]).expect_err("overflow");
        assert!(err.to_string().contains("overflows the 64-bit integer range"), "{err}");
        assert!(err.to_string().contains("18446744073709551616"), "{err}");
        let err = fold(Builtin::Sum, &ints(&[i64::MIN, -1])).expect_err("overflow");
        assert!(err.to_string().contains("-9223372036854775809"), "{err}");
        // i64 partial sums that overflow move to the accumulator, exactly.
        assert_eq!(
            fold(Builtin::Sum, &ints(&[i64::MAX, i64::MAX, -i64::MAX])),
            Ok(json!(i64::MAX))
        );
        assert_eq!(fold(Builtin::Sum, &ints(&[i64::MAX, i64::MAX, 1])), Ok(json!(u64::MAX)));
        assert_eq!(fold(Builtin::Sum, &ints(&[i64::MIN, -1, 1])), Ok(json!(i64::MIN)));
        // sumsqr: exact in the 64-bit range, else the nearest float.
        let sq = fold(Builtin::Stats, &ints(&[1 << 31, -3])).expect("stats");
        assert_eq!(sq["sumsqr"], json!((1u64 << 62) + 9));
        let sq = fold(Builtin::Stats, &ints(&[1 << 32, -3])).expect("stats");
        assert_eq!(sq["sumsqr"], json!(18_446_744_073_709_551_616.0));
        // A partial past the range is fine when the total is back in it.
        assert_eq!(
            fold(Builtin::Sum, &[u(u64::MAX), u(5), mp((-10i64).into())]),
            Ok(json!(u64::MAX - 5))
        );
        let err = fold(Builtin::Stats, &[u(u64::MAX), u(1)]).expect_err("stats overflow");
        assert!(err.to_string().starts_with("stats sum overflows"), "{err}");
    }

    /// Postmortem: f64 sums depended on the order of combines, so chunk
    /// sizes and restarts changed them; sums are now exact until answered.
    #[test]
    fn float_sums_are_rounded_once() {
        assert_eq!(fold(Builtin::Sum, &floats(&[0.1, 0.2, 0.3])), Ok(json!(0.6)));
        assert_eq!(fold(Builtin::Sum, &floats(&[1e100, 1.0, -1e100])), Ok(json!(1.0)));
        // Mixed: the integers count exactly, the answer is a float.
        let mut mixed = ints(&[(1 << 53) + 1]);
        mixed.extend(floats(&[0.0]));
        assert_eq!(fold(Builtin::Sum, &mixed), Ok(json!(9_007_199_254_740_992.0)));
        let mut mixed = ints(&[(1 << 53) + 1]);
        mixed.extend(floats(&[1.0]));
        assert_eq!(fold(Builtin::Sum, &mixed), Ok(json!(9_007_199_254_740_994.0)));
        assert_eq!(fold(Builtin::Sum, &floats(&[0.5, 0.5])), Ok(json!(1.0)));
        let stats = fold(Builtin::Stats, &floats(&[0.1, 0.2, 0.3])).expect("stats");
        assert_eq!(stats["mean"], json!(0.2));
        assert_eq!(fold(Builtin::Stats, &ints(&[1, 2])).expect("stats")["mean"], json!(1.5));
    }

    /// Postmortem: inf and NaN sums printed null like "no rows".
    #[test]
    fn non_finite_results_are_tagged() {
        let inf = json!({"$float": "inf"});
        let nan = json!({"$float": "nan"});
        assert_eq!(fold(Builtin::Sum, &floats(&[1.0, f64::INFINITY])), Ok(inf.clone()));
        assert_eq!(
            fold(Builtin::Sum, &floats(&[f64::NEG_INFINITY, 2.0])),
            Ok(json!({"$float": "-inf"}))
        );
        assert_eq!(
            fold(Builtin::Sum, &floats(&[f64::INFINITY, f64::NEG_INFINITY])),
            Ok(nan.clone())
        );
        assert_eq!(fold(Builtin::Sum, &floats(&[1.0, f64::NAN])), Ok(nan.clone()));
        assert_eq!(fold(Builtin::Sum, &floats(&[f64::MAX, f64::MAX])), Ok(inf.clone()));
        assert_eq!(fold(Builtin::Max, &floats(&[1.0, f64::NAN, f64::INFINITY])), Ok(nan.clone()));
        assert_eq!(
            fold(Builtin::Min, &floats(&[1.0, f64::NAN, f64::NEG_INFINITY])),
            Ok(json!({"$float": "-inf"}))
        );
        let stats = fold(Builtin::Stats, &floats(&[f64::NEG_INFINITY, 1.0])).expect("stats");
        assert_eq!(stats["sumsqr"], inf);
        assert_eq!(stats["mean"], json!({"$float": "-inf"}));
        assert_eq!(fold(Builtin::Min, &[]), Ok(Json::Null));
    }

    #[test]
    fn min_and_max_compare_integers_and_floats_exactly() {
        let mut v = ints(&[(1 << 53) + 1]);
        v.extend(floats(&[9_007_199_254_740_992.0]));
        assert_eq!(fold(Builtin::Max, &v), Ok(json!((1i64 << 53) + 1)));
        assert_eq!(fold(Builtin::Min, &v), Ok(json!(9_007_199_254_740_992.0)));
        // Equal values: the integer, whatever the order.
        for v in [
            vec![mp(1.into()), mp(rmpv::Value::F64(1.0))],
            vec![mp(rmpv::Value::F64(1.0)), mp(1.into())],
        ] {
            assert_eq!(fold(Builtin::Min, &v), Ok(json!(1)));
            assert_eq!(fold(Builtin::Max, &v), Ok(json!(1)));
        }
        assert_eq!(fold(Builtin::Min, &floats(&[0.0, -0.0])), Ok(json!(-0.0)));
        assert_eq!(fold(Builtin::Max, &floats(&[-0.0, 0.0])), Ok(json!(0.0)));
        assert_eq!(fold(Builtin::Min, &floats(&[1.5, 1.25])), Ok(json!(1.25)));
    }

    fn number_strategy() -> impl Strategy<Value = rmpv::Value> {
        prop_oneof![
            any::<i64>().prop_map(rmpv::Value::from),
            any::<u64>().prop_map(rmpv::Value::from),
            (-5i64..5).prop_map(rmpv::Value::from),
            any::<u64>().prop_map(|b| rmpv::Value::F64(f64::from_bits(b))),
            prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(1.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(f64::NAN),
                Just(1e300),
                Just(-1e300)
            ]
            .prop_map(rmpv::Value::F64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any order and grouping of combines gives the same reduction,
        /// and the stored form round-trips.
        #[test]
        fn combines_are_associative_and_commutative(
            values in proptest::collection::vec(number_strategy(), 1..25),
            cut in any::<usize>(),
        ) {
            let bytes: Vec<Vec<u8>> = values.iter().map(|v| mp(v.clone())).collect();
            for reducer in [Builtin::Sum, Builtin::Min, Builtin::Max, Builtin::Stats] {
                let leaves: Vec<Reduction> = bytes.iter().map(|b| reducer.leaf(b).expect("number")).collect();
                let fold = |ls: &[Reduction]| ls.iter().skip(1).fold(ls[0].clone(), |a, l| reducer.combine(&a, l));
                let whole = fold(&leaves);
                let mut rev = leaves.clone();
                rev.reverse();
                prop_assert_eq!(fold(&rev).encode(), whole.encode());
                let at = 1 + cut % leaves.len().max(1);
                if at < leaves.len() {
                    let split = reducer.combine(&fold(&leaves[at..]), &fold(&leaves[..at]));
                    prop_assert_eq!(split.encode(), whole.encode());
                }
                prop_assert_eq!(Reduction::decode(&whole.encode()).map(|r| r.encode()), Some(whole.encode()));
            }
        }
    }

    #[test]
    fn count_distinct_counts_distinct_values() {
        let values: Vec<Vec<u8>> = (0..1000).map(|i| mp(rmpv::Value::from(i % 37))).collect();
        assert_eq!(fold(Builtin::CountDistinct, &values), Ok(json!(37)));
    }

    #[test]
    fn non_numbers_are_refused_with_the_value() {
        let err = Builtin::Sum.leaf(&mp(rmpv::Value::from("ten"))).expect_err("not a number");
        assert_eq!(err, ReduceError::NotANumber { reducer: Builtin::Sum, found: "\"ten\"".into() });
        assert_eq!(
            Builtin::Count.leaf(&mp(rmpv::Value::from("ten"))).map(|r| r.to_json()),
            Ok(Ok(json!(1)))
        );
        assert_eq!(Builtin::Sum.leaf(b"\x92\x01"), Err(ReduceError::NotMessagePack));
    }

    #[test]
    fn reductions_round_trip_through_their_stored_form() {
        let mut h = Hll::of(b"a");
        for i in 0..5000u32 {
            h = h.merge(&Hll::of(&i.to_be_bytes()));
        }
        let leaf = |b: Builtin, v: rmpv::Value| b.leaf(&mp(v)).expect("leaf");
        let stats = Builtin::Stats.combine(
            &leaf(Builtin::Stats, rmpv::Value::F64(-2.5)),
            &leaf(Builtin::Stats, rmpv::Value::from(u64::MAX)),
        );
        for r in [
            Reduction::Count(7),
            leaf(Builtin::Sum, rmpv::Value::F64(-2.5)),
            leaf(Builtin::Sum, rmpv::Value::F64(f64::NAN)),
            leaf(Builtin::Sum, rmpv::Value::from(0)),
            leaf(Builtin::Min, rmpv::Value::F64(f64::MIN)),
            leaf(Builtin::Max, rmpv::Value::from(u64::MAX)),
            leaf(Builtin::Max, rmpv::Value::from(-3)),
            stats,
            Reduction::Distinct(Hll::of(b"x")),
            Reduction::Distinct(h),
        ] {
            assert_eq!(Reduction::decode(&r.encode()), Some(r));
        }
        assert_eq!(Reduction::decode(&[0, 1, 2]), None);
        assert_eq!(Reduction::decode(&[9; 9]), None);
        assert_eq!(Reduction::decode(&[]), None);
    }

    /// Partials of the older f64 format do not decode (their parts are
    /// rebuilt from the rows instead of carrying their rounding along).
    #[test]
    fn older_partials_do_not_decode() {
        for tag in 1u8..=4 {
            let mut old = vec![tag];
            old.extend_from_slice(&1.5f64.to_be_bytes());
            assert_eq!(Reduction::decode(&old), None);
        }
    }

    #[test]
    fn names_round_trip() {
        for b in [
            Builtin::Count,
            Builtin::Sum,
            Builtin::Min,
            Builtin::Max,
            Builtin::Stats,
            Builtin::CountDistinct,
        ] {
            assert_eq!(Builtin::parse(b.name()), Some(b));
        }
        assert_eq!(Builtin::parse("median"), None);
    }
}

#[cfg(test)]
mod size {
    /// Every node of a reduce tree holds two reductions: exactness must not
    /// make them large (stats' extra fields live behind a Box).
    #[test]
    fn reductions_stay_small() {
        let size = std::mem::size_of::<super::Reduction>();
        assert!(size <= 64, "Reduction is {size} bytes");
    }
}
