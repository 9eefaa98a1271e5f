//! Built-in reducers and their reductions.
//!
//! Each built-in is a monoid over [`Reduction`]: a row becomes a leaf
//! reduction ([`Builtin::leaf`]), and reductions combine associatively
//! ([`Builtin::combine`]), which is what the reduce tree and the meta-ranges
//! (rereduce) need. Row values are MessagePack documents; `sum`, `min`,
//! `max` and `stats` take numbers (integers or floats) and refuse anything
//! else with an error the view records. Sums are computed in f64: exact for
//! integers up to 2^53.

use std::fmt;

use serde_json::{json, Value as Json};

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
    /// count, sum, min, max and sum of squares of the numeric values.
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

/// A partial result of a built-in reducer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reduction {
    Count(u64),
    Sum(f64),
    Min(f64),
    Max(f64),
    Stats { count: u64, sum: f64, min: f64, max: f64, sumsqr: f64 },
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
}

/// The number in a MessagePack value.
pub fn number(value: &[u8], reducer: Builtin) -> Result<f64, ReduceError> {
    let mut rest = value;
    let v = rmpv::decode::read_value(&mut rest).map_err(|_| ReduceError::NotMessagePack)?;
    if !rest.is_empty() {
        return Err(ReduceError::NotMessagePack);
    }
    match v {
        rmpv::Value::Integer(i) => {
            Ok(i.as_i64().map(|x| x as f64).or_else(|| i.as_u64().map(|x| x as f64)).unwrap_or(0.0))
        }
        rmpv::Value::F32(f) => Ok(f64::from(f)),
        rmpv::Value::F64(f) => Ok(f),
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
            Builtin::Sum => Reduction::Sum(number(value, self)?),
            Builtin::Min => Reduction::Min(number(value, self)?),
            Builtin::Max => Reduction::Max(number(value, self)?),
            Builtin::Stats => {
                let v = number(value, self)?;
                Reduction::Stats { count: 1, sum: v, min: v, max: v, sumsqr: v * v }
            }
            Builtin::CountDistinct => Reduction::Distinct(Hll::of_value(value)),
        })
    }

    /// Combines two reductions of this reducer.
    pub fn try_combine(self, a: &Reduction, b: &Reduction) -> Result<Reduction, ReduceError> {
        use Reduction::*;
        Ok(match (a, b) {
            (Count(x), Count(y)) => Count(x + y),
            (Sum(x), Sum(y)) => Sum(x + y),
            (Min(x), Min(y)) => Min(x.min(*y)),
            (Max(x), Max(y)) => Max(x.max(*y)),
            (
                Stats { count: c1, sum: s1, min: lo1, max: hi1, sumsqr: q1 },
                Stats { count: c2, sum: s2, min: lo2, max: hi2, sumsqr: q2 },
            ) => Stats {
                count: c1 + c2,
                sum: s1 + s2,
                min: lo1.min(*lo2),
                max: hi1.max(*hi2),
                sumsqr: q1 + q2,
            },
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

fn number_json(x: f64) -> Json {
    // Integral sums print as integers, as users expect from counting.
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

impl Reduction {
    /// The JSON a query returns: a number, or an object for `stats`.
    pub fn to_json(&self) -> Json {
        match self {
            Reduction::Count(n) => json!(n),
            Reduction::Sum(x) | Reduction::Min(x) | Reduction::Max(x) => number_json(*x),
            Reduction::Stats { count, sum, min, max, sumsqr } => json!({
                "count": count,
                "sum": number_json(*sum),
                "min": number_json(*min),
                "max": number_json(*max),
                "sumsqr": number_json(*sumsqr),
            }),
            Reduction::Distinct(h) => json!(h.estimate()),
        }
    }

    /// The stored form, in a meta-range row: a tag byte, then big-endian
    /// numbers (or the HyperLogLog's own form).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41);
        match self {
            Reduction::Count(n) => {
                out.push(0);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Reduction::Sum(x) | Reduction::Min(x) | Reduction::Max(x) => {
                out.push(match self {
                    Reduction::Sum(_) => 1,
                    Reduction::Min(_) => 2,
                    _ => 3,
                });
                out.extend_from_slice(&x.to_be_bytes());
            }
            Reduction::Stats { count, sum, min, max, sumsqr } => {
                out.push(4);
                out.extend_from_slice(&count.to_be_bytes());
                for x in [sum, min, max, sumsqr] {
                    out.extend_from_slice(&x.to_be_bytes());
                }
            }
            Reduction::Distinct(h) => {
                out.push(5);
                out.extend_from_slice(&h.encode());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Reduction> {
        let (&tag, rest) = bytes.split_first()?;
        let word = |i: usize| -> Option<[u8; 8]> { rest.get(i * 8..i * 8 + 8)?.try_into().ok() };
        let float = |i: usize| word(i).map(f64::from_be_bytes);
        let fixed = |n: usize| rest.len() == n * 8;
        Some(match tag {
            0 if fixed(1) => Reduction::Count(u64::from_be_bytes(word(0)?)),
            1 if fixed(1) => Reduction::Sum(float(0)?),
            2 if fixed(1) => Reduction::Min(float(0)?),
            3 if fixed(1) => Reduction::Max(float(0)?),
            4 if fixed(5) => Reduction::Stats {
                count: u64::from_be_bytes(word(0)?),
                sum: float(1)?,
                min: float(2)?,
                max: float(3)?,
                sumsqr: float(4)?,
            },
            5 => Reduction::Distinct(Hll::decode(rest)?),
            _ => return None,
        })
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
        Ok(acc.map_or_else(|| Reduction::empty_json(reducer), |r| r.to_json()))
    }

    #[test]
    fn builtins_reduce_numbers() {
        let values: Vec<Vec<u8>> =
            [3i64, -1, 10, 4].iter().map(|&i| mp(rmpv::Value::from(i))).collect();
        assert_eq!(fold(Builtin::Count, &values), Ok(json!(4)));
        assert_eq!(fold(Builtin::Sum, &values), Ok(json!(16)));
        assert_eq!(fold(Builtin::Min, &values), Ok(json!(-1)));
        assert_eq!(fold(Builtin::Max, &values), Ok(json!(10)));
        assert_eq!(
            fold(Builtin::Stats, &values),
            Ok(json!({"count": 4, "sum": 16, "min": -1, "max": 10, "sumsqr": 126}))
        );
        assert_eq!(
            fold(Builtin::Sum, &[mp(rmpv::Value::F64(0.5)), mp(rmpv::Value::F64(0.25))]),
            Ok(json!(0.75))
        );
        assert_eq!(fold(Builtin::Sum, &[]), Ok(json!(0)));
        assert_eq!(fold(Builtin::Max, &[]), Ok(Json::Null));
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
            Ok(json!(1))
        );
        assert_eq!(Builtin::Sum.leaf(b"\x92\x01"), Err(ReduceError::NotMessagePack));
    }

    #[test]
    fn reductions_round_trip_through_their_stored_form() {
        let mut h = Hll::of(b"a");
        for i in 0..5000u32 {
            h = h.merge(&Hll::of(&i.to_be_bytes()));
        }
        for r in [
            Reduction::Count(7),
            Reduction::Sum(-2.5),
            Reduction::Min(f64::MIN),
            Reduction::Max(1e300),
            Reduction::Stats { count: 3, sum: 6.0, min: 1.0, max: 3.0, sumsqr: 14.0 },
            Reduction::Distinct(Hll::of(b"x")),
            Reduction::Distinct(h),
        ] {
            assert_eq!(Reduction::decode(&r.encode()), Some(r));
        }
        assert_eq!(Reduction::decode(&[0, 1, 2]), None);
        assert_eq!(Reduction::decode(&[9; 9]), None);
        assert_eq!(Reduction::decode(&[]), None);
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
