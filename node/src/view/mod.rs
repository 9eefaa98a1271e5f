//! Live map-reduce building blocks: the functions views run and the reduce
//! tree that answers range aggregates in O(log n).
//!
//! - [`map_fn`]: the built-in field mapper (record -> index rows).
//! - [`reduction`]: built-in reducers as monoids over [`reduction::Reduction`].
//! - [`exact`]: exact sums of integers and floats (a long accumulator).
//! - [`hll`]: HyperLogLog sketches for `count_distinct`.
//! - [`reduce_tree`]: an ordered map with a reduction in every node.
//! - [`levels`]: the reduce tree across chunks: one tree per chunk, each
//!   chunk's total a row of a meta-range one level up.
//! - [`mapper`]: the actor that keeps a mapper's target range up to date;
//!   [`bulk_backfill`]: a new mapper's backfill as one sort and bulk load
//!   ([`crate::shuffle`], [`crate::sorted_load`]).
//! - [`reducer`]: the actor that keeps a reducer's tree and answers
//!   aggregates.
//! - [`registry`]: the node's views and the commands that manage them.
//! - [`sandbox`]: the Lua VM a function runs in and the limits it cannot
//!   escape; [`lua_pattern`]: Lua's pattern functions, charged per step;
//!   [`lua_time`]: UTC timestamps (the `time` table);
//!   [`lua`]: Lua mappers and reducers on top of it.
//!
//! The functions, the sandbox and the trees are plain structs without
//! actors or I/O; [`mapper`] and [`reducer`] are the actors that keep them up
//! to date as chunks change.

/// Implements the messages every follower of a range (the mapper, reducer
/// and sink actors) answers alike: `Dirty` schedules a round, `Stop` stops
/// it once no round is running, `Status` reports. The actor has the fields
/// `dirty`, `running` and `stopping`, and the methods `schedule`,
/// `finish_stop` and `status`.
macro_rules! follower_handlers {
    ($actor:ty) => {
        impl actix::Handler<$crate::view::mapper::Dirty> for $actor {
            type Result = ();

            fn handle(&mut self, _: $crate::view::mapper::Dirty, ctx: &mut Self::Context) {
                self.dirty = true;
                self.schedule(ctx);
            }
        }

        impl actix::Handler<$crate::view::mapper::Stop> for $actor {
            type Result = ();

            fn handle(&mut self, msg: $crate::view::mapper::Stop, ctx: &mut Self::Context) {
                self.stopping = Some(msg.0);
                if !self.running {
                    self.finish_stop(ctx);
                }
            }
        }

        impl actix::Handler<$crate::view::mapper::Status> for $actor {
            type Result = ();

            fn handle(&mut self, msg: $crate::view::mapper::Status, _: &mut Self::Context) {
                let _ = msg.0.send(self.status());
            }
        }
    };
}
pub(crate) use follower_handlers;

pub mod bulk_backfill;
pub mod exact;
pub mod hll;
pub mod levels;
pub mod lua;
pub mod lua_pattern;
pub mod lua_time;
pub mod map_fn;
pub mod mapper;
pub mod reduce_tree;
pub mod reducer;
pub mod reducer_fn;
pub mod reduction;
pub mod registry;
pub mod sandbox;
