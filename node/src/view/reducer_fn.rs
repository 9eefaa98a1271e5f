//! A reducer's function, built-in or Lua, and the reduce tree it keeps.

use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value as Json;

use super::levels::{Levels, Loader, PartBounds, ReduceFn, Rows};
use super::lua::{LuaEnv, LuaReducer, LuaReduction};
use super::reduction::{Builtin, Reduction};

/// A reducer's function as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReducerFunction {
    Builtin(Builtin),
    /// Lua source defining `reduce(keys, values, rereduce)`.
    Lua(String),
}

impl ReducerFunction {
    /// The function as `CreateReducer` takes it.
    pub fn to_proto(&self) -> monotable_proto::ReduceFunction {
        match self {
            ReducerFunction::Builtin(b) => monotable_proto::ReduceFunction::Builtin(b.to_string()),
            ReducerFunction::Lua(source) => {
                monotable_proto::ReduceFunction::Lua { source: source.clone() }
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ReducerFunction::Builtin(b) => format!("builtin {b}"),
            ReducerFunction::Lua(src) => format!("lua ({} bytes)", src.len()),
        }
    }

    /// Checks that the function compiles (a Lua one runs its top-level
    /// code: call this off the connection workers).
    pub fn check(&self, env: &LuaEnv) -> Result<(), String> {
        match self {
            ReducerFunction::Builtin(_) => Ok(()),
            ReducerFunction::Lua(src) => {
                LuaReducer::new(src, env).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    /// The reduce tree of an empty range.
    pub fn levels(&self, env: &LuaEnv) -> Result<Box<dyn ReduceView>, String> {
        Ok(match self {
            ReducerFunction::Builtin(b) => Box::new(Levels::new(*b)),
            ReducerFunction::Lua(src) => {
                Box::new(Levels::new(LuaReducer::new(src, env).map_err(|e| e.to_string())?))
            }
        })
    }

    /// The reduce tree rebuilt from its meta-ranges (see [`Levels::restore`]).
    pub fn restore(
        &self,
        partitions: Vec<Vec<PartBounds>>,
        meta_rows: Vec<Rows>,
        load: &mut Loader<'_>,
        env: &LuaEnv,
    ) -> Result<Box<dyn ReduceView>, String> {
        Ok(match self {
            ReducerFunction::Builtin(b) => {
                Box::new(Levels::restore(*b, partitions, meta_rows, load)?)
            }
            ReducerFunction::Lua(src) => {
                let f = LuaReducer::new(src, env).map_err(|e| e.to_string())?;
                Box::new(Levels::restore(f, partitions, meta_rows, load)?)
            }
        })
    }
}

impl ReduceFn for Builtin {
    fn leaf(&self, _key: &[u8], value: &[u8]) -> Result<Reduction, String> {
        Builtin::leaf(*self, value).map_err(|e| e.to_string())
    }

    fn encode(&self, r: &Reduction) -> Vec<u8> {
        r.encode()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Reduction, String> {
        let r = Reduction::decode(bytes)
            .ok_or("stored reduction is damaged or of an older format (its part is rebuilt)")?;
        // A reduction of another kind would panic in combine.
        self.try_combine(&r, &r).map_err(|e| e.to_string())?;
        Ok(r)
    }

    fn answer(&self, r: Option<&Reduction>) -> Result<Json, String> {
        match r {
            None => Ok(Reduction::empty_json(*self)),
            Some(r) => r.to_json().map_err(|e| e.to_string()),
        }
    }
}

fn msgpack_json(v: &rmpv::Value) -> Json {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
    crate::json::value_to_json(&out)
}

impl ReduceFn for LuaReducer {
    fn leaf(&self, key: &[u8], value: &[u8]) -> Result<LuaReduction, String> {
        LuaReducer::leaf(self, key, value).map(Ok).map_err(|e| e.to_string())
    }

    /// `0 | MessagePack value`, or `1 | error text` for a reduction that
    /// failed (it poisons every reduction above it).
    fn encode(&self, r: &LuaReduction) -> Vec<u8> {
        match r {
            Ok(v) => {
                let mut out = vec![0];
                rmpv::encode::write_value(&mut out, v).expect("writing to a Vec cannot fail");
                out
            }
            Err(e) => {
                let mut out = vec![1];
                out.extend_from_slice(e.as_bytes());
                out
            }
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<LuaReduction, String> {
        match bytes.split_first() {
            Some((0, mut rest)) => {
                let v = rmpv::decode::read_value(&mut rest).map_err(|e| e.to_string())?;
                Ok(Ok(v))
            }
            Some((1, rest)) => Ok(Err(Arc::from(String::from_utf8_lossy(rest).as_ref()))),
            _ => Err("stored reduction is damaged".into()),
        }
    }

    fn answer(&self, r: Option<&LuaReduction>) -> Result<Json, String> {
        match r {
            None => Ok(Json::Null),
            Some(Ok(v)) => Ok(msgpack_json(v)),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    fn failure(&self, r: &LuaReduction) -> Option<String> {
        r.as_ref().err().map(|e| e.to_string())
    }
}

/// What a reducer actor needs of its reduce tree, whatever the function.
pub trait ReduceView {
    /// See [`Levels::apply`].
    fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<String>, String>;
    fn repartition(
        &mut self,
        level: usize,
        bounds: &[PartBounds],
        load: &mut Loader<'_>,
    ) -> Result<(), String>;
    fn propagate(&mut self);
    fn needs_level(&self) -> bool;
    fn add_level(&mut self);
    fn depth(&self) -> usize;
    /// Parts of each level, level 0 first.
    fn parts_per_level(&self) -> Vec<u64>;
    fn rows(&self) -> u64;
    fn loaded_parts(&self) -> (usize, usize);
    fn take_unsaved(&mut self) -> Vec<(usize, Vec<u8>, Option<Vec<u8>>)>;
    fn return_unsaved(&mut self, rows: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>);
    fn has_unsaved(&self) -> bool;
    /// The reduction within the bounds, as JSON; an error when a combine
    /// within them failed (a Lua error, a reduction that grows).
    fn reduce_json(
        &mut self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        load: &mut Loader<'_>,
    ) -> Result<Json, String>;
    fn first_key_from(
        &mut self,
        lower: Bound<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<Vec<u8>>, String>;
    /// See [`Levels::take_failures`].
    fn take_failures(&mut self) -> Vec<(Vec<u8>, String)>;
}

impl<M: ReduceFn> ReduceView for Levels<M> {
    fn apply(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<String>, String> {
        Levels::apply(self, key, value, load)
    }
    fn repartition(
        &mut self,
        level: usize,
        bounds: &[PartBounds],
        load: &mut Loader<'_>,
    ) -> Result<(), String> {
        Levels::repartition(self, level, bounds, load)
    }
    fn propagate(&mut self) {
        Levels::propagate(self)
    }
    fn needs_level(&self) -> bool {
        Levels::needs_level(self)
    }
    fn add_level(&mut self) {
        Levels::add_level(self)
    }
    fn depth(&self) -> usize {
        Levels::depth(self)
    }
    fn parts_per_level(&self) -> Vec<u64> {
        Levels::parts_per_level(self)
    }
    fn rows(&self) -> u64 {
        Levels::rows(self)
    }
    fn loaded_parts(&self) -> (usize, usize) {
        Levels::loaded_parts(self)
    }
    fn take_unsaved(&mut self) -> Vec<(usize, Vec<u8>, Option<Vec<u8>>)> {
        Levels::take_unsaved(self)
    }
    fn return_unsaved(&mut self, rows: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>) {
        Levels::return_unsaved(self, rows)
    }
    fn has_unsaved(&self) -> bool {
        Levels::has_unsaved(self)
    }
    fn reduce_json(
        &mut self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        load: &mut Loader<'_>,
    ) -> Result<Json, String> {
        let r = self.reduce(bounds, load)?;
        self.function().answer(r.as_ref())
    }
    fn first_key_from(
        &mut self,
        lower: Bound<&[u8]>,
        load: &mut Loader<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        Levels::first_key_from(self, lower, load)
    }
    fn take_failures(&mut self) -> Vec<(Vec<u8>, String)> {
        Levels::take_failures(self)
    }
}

/// The tree of a reducer whose function cannot run (a Lua source that no
/// longer loads, the node's Lua memory used up): every step fails with the
/// reason, so the reducer reports it and can still be dropped.
pub struct Broken(pub String);

impl Broken {
    fn fail<T>(&self) -> Result<T, String> {
        Err(format!("the reducer's function cannot run: {}", self.0))
    }
}

impl ReduceView for Broken {
    fn apply(
        &mut self,
        _: &[u8],
        _: Option<&[u8]>,
        _: &mut Loader<'_>,
    ) -> Result<Option<String>, String> {
        self.fail()
    }
    fn repartition(
        &mut self,
        _: usize,
        _: &[PartBounds],
        _: &mut Loader<'_>,
    ) -> Result<(), String> {
        self.fail()
    }
    fn propagate(&mut self) {}
    fn needs_level(&self) -> bool {
        false
    }
    fn add_level(&mut self) {}
    fn depth(&self) -> usize {
        1
    }
    fn parts_per_level(&self) -> Vec<u64> {
        vec![0]
    }
    fn rows(&self) -> u64 {
        0
    }
    fn loaded_parts(&self) -> (usize, usize) {
        (0, 0)
    }
    fn take_unsaved(&mut self) -> Vec<(usize, Vec<u8>, Option<Vec<u8>>)> {
        Vec::new()
    }
    fn return_unsaved(&mut self, _: Vec<(usize, Vec<u8>, Option<Vec<u8>>)>) {}
    fn has_unsaved(&self) -> bool {
        false
    }
    fn reduce_json(
        &mut self,
        _: (Bound<&[u8]>, Bound<&[u8]>),
        _: &mut Loader<'_>,
    ) -> Result<Json, String> {
        self.fail()
    }
    fn first_key_from(
        &mut self,
        _: Bound<&[u8]>,
        _: &mut Loader<'_>,
    ) -> Result<Option<Vec<u8>>, String> {
        self.fail()
    }
    fn take_failures(&mut self) -> Vec<(Vec<u8>, String)> {
        Vec::new()
    }
}
