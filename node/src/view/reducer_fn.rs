//! A reducer's function, built-in or Lua, and the reduce tree it keeps.

use std::ops::Bound;

use serde_json::Value as Json;

use super::lua::{LuaReducer, LuaReduction};
use super::reduce_tree::ReduceTree;
use super::reduction::{Builtin, Reduction};

/// A reducer's function as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReducerFunction {
    Builtin(Builtin),
    /// Lua source defining `reduce(keys, values, rereduce)`.
    Lua(String),
}

impl ReducerFunction {
    pub fn describe(&self) -> String {
        match self {
            ReducerFunction::Builtin(b) => format!("builtin {b}"),
            ReducerFunction::Lua(src) => format!("lua ({} bytes)", src.len()),
        }
    }

    /// The empty reduce tree this function keeps.
    pub fn tree(&self) -> Result<Reductions, String> {
        Ok(match self {
            ReducerFunction::Builtin(b) => Reductions::Builtin(ReduceTree::new(*b)),
            ReducerFunction::Lua(src) => {
                Reductions::Lua(ReduceTree::new(LuaReducer::new(src).map_err(|e| e.to_string())?))
            }
        })
    }
}

/// The reduce tree of either kind of function.
pub enum Reductions {
    Builtin(ReduceTree<Builtin>),
    Lua(ReduceTree<LuaReducer>),
}

fn msgpack_json(v: &rmpv::Value) -> Json {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
    crate::cli::json::value_to_json(&out)
}

impl Reductions {
    pub fn len(&self) -> usize {
        match self {
            Reductions::Builtin(t) => t.len(),
            Reductions::Lua(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the row `key` from its value, or removes it. An error means the
    /// function refused the value: the row is left out.
    pub fn set(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match self {
            Reductions::Builtin(t) => {
                t.remove(key);
                if let Some(v) = value {
                    let leaf = t.monoid().leaf(v).map_err(|e| e.to_string())?;
                    t.insert(key, leaf);
                }
            }
            Reductions::Lua(t) => {
                t.remove(key);
                if let Some(v) = value {
                    let leaf: LuaReduction = t.monoid().leaf(key, v);
                    let leaf = leaf.map_err(|e| e.to_string())?;
                    t.insert(key, Ok(leaf));
                }
            }
        }
        Ok(())
    }

    /// The reduction of the rows within the bounds, as JSON; an error when a
    /// combine within them failed (a Lua error, a reduction that grows).
    pub fn reduce(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Result<Json, String> {
        match self {
            Reductions::Builtin(t) => {
                let f = *t.monoid();
                Ok(t.reduce(bounds).map_or_else(|| Reduction::empty_json(f), |r| r.to_json()))
            }
            Reductions::Lua(t) => match t.reduce(bounds) {
                None => Ok(Json::Null),
                Some(Ok(v)) => Ok(msgpack_json(&v)),
                Some(Err(e)) => Err(e.to_string()),
            },
        }
    }

    pub fn first_key_from(&self, lower: Bound<&[u8]>) -> Option<Vec<u8>> {
        match self {
            Reductions::Builtin(t) => t.first_key_from(lower).map(<[u8]>::to_vec),
            Reductions::Lua(t) => t.first_key_from(lower).map(<[u8]>::to_vec),
        }
    }
}
