//! A job's reduce function as the shuffle's combiner: the built-in
//! reducers and Lua reducers of live views, unchanged.
//!
//! A job hands its reducer exactly what a view's reducer on a mapper's
//! index range gets: for each emitted row, the row key (`[emitted key,
//! source key]`, [`monotable_proto::row`]) and the row's value; partials
//! combine with rereduce. A row whose reduction fails (a value `sum`
//! cannot add, a Lua error) is left out and counted, as in views; a key
//! whose combined reduction fails (a Lua combine error, a sum past the
//! 64-bit integer range) writes no row and is counted.

use crate::shuffle::table::Combiner;
use crate::view::levels::ReduceFn;
use crate::view::lua::{LuaReducer, LuaReduction};
use crate::view::reduce_tree::Monoid;
use crate::view::reduction::{Builtin, Reduction};

/// What a job needs of its reduce function beyond combining.
pub trait JobReduce: Combiner {
    /// The partial reduction of one emitted row; `Err`: the row is left
    /// out (counted as a reduce error).
    fn leaf(&self, row_key: &[u8], value: &[u8]) -> Result<Self::P, String>;
    /// A key's output value (MessagePack) from its combined reduction, or
    /// why the key has none.
    fn output(&self, p: &Self::P) -> Result<Vec<u8>, String>;
    /// Whether [`JobReduce::leaf`] reads the row key (a Lua reducer's
    /// `keys`); the built-ins do not, so a field mapper's row key need
    /// not be built for them.
    fn reads_row_key(&self) -> bool {
        true
    }
}

fn msgpack_of_json(j: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec(j).expect("a JSON value encodes as MessagePack")
}

impl Combiner for Builtin {
    type P = Reduction;

    fn combine(&self, older: &Reduction, newer: &Reduction) -> Reduction {
        Monoid::combine(self, older, newer)
    }

    fn encode(&self, p: &Reduction) -> Vec<u8> {
        p.encode()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Reduction, String> {
        ReduceFn::decode(self, bytes)
    }

    fn heap_bytes(&self, p: &Reduction) -> usize {
        match p {
            Reduction::Count(_) | Reduction::Min(_) | Reduction::Max(_) => 0,
            // Three limbs inline; a sum of floats far apart spills more.
            Reduction::Sum(_) => 32,
            Reduction::Stats(_) => std::mem::size_of::<crate::view::reduction::Stats>() + 64,
            Reduction::Distinct(h) => h.heap_bytes(),
        }
    }
}

impl JobReduce for Builtin {
    fn leaf(&self, _row_key: &[u8], value: &[u8]) -> Result<Reduction, String> {
        Builtin::leaf(*self, value).map_err(|e| e.to_string())
    }

    fn output(&self, p: &Reduction) -> Result<Vec<u8>, String> {
        p.to_json().map(|j| msgpack_of_json(&j)).map_err(|e| e.to_string())
    }

    fn reads_row_key(&self) -> bool {
        false
    }
}

/// A Lua reducer owned by one task (a VM is used by one thread at a time).
pub struct LuaJobReducer(pub LuaReducer);

impl Combiner for LuaJobReducer {
    type P = LuaReduction;

    fn combine(&self, older: &LuaReduction, newer: &LuaReduction) -> LuaReduction {
        Monoid::combine(&self.0, older, newer)
    }

    fn encode(&self, p: &LuaReduction) -> Vec<u8> {
        ReduceFn::encode(&self.0, p)
    }

    fn decode(&self, bytes: &[u8]) -> Result<LuaReduction, String> {
        ReduceFn::decode(&self.0, bytes)
    }

    /// A decoded MessagePack value takes about three times its encoding.
    fn heap_bytes(&self, p: &LuaReduction) -> usize {
        match p {
            Ok(v) => {
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
                3 * out.len()
            }
            Err(e) => e.len(),
        }
    }
}

impl JobReduce for LuaJobReducer {
    fn leaf(&self, row_key: &[u8], value: &[u8]) -> Result<LuaReduction, String> {
        self.0.leaf(row_key, value).map(Ok).map_err(|e| e.to_string())
    }

    fn output(&self, p: &LuaReduction) -> Result<Vec<u8>, String> {
        match p {
            Ok(v) => {
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
                Ok(out)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The output key of an emitted row: its emitted key as a tuple (a
/// scalar emit `k` is the key `[k]`, as in views).
/// Read in place from the row key's nested element, not decoded and
/// encoded again ([`monotable_proto::tuple::first_nested_as_tuple`]).
pub fn output_key(row_key: &[u8]) -> Result<Vec<u8>, String> {
    monotable_proto::tuple::first_nested_as_tuple(row_key).map_err(|e| e.to_string())
}
