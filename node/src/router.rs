//! Which chunk actor serves which keys of which range.

use std::collections::{BTreeMap, HashMap};

use actix::Addr;

use std::sync::Arc;

use crate::catalog::RangeMeta;
use crate::chunk_actor::ChunkActor;
use crate::chunk_cell::ChunkCell;

/// How to reach one chunk: its actor for writes, its cell for reads.
pub struct ChunkRoute {
    pub id: u64,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    pub addr: Addr<ChunkActor>,
    pub cell: Arc<ChunkCell>,
}

/// Routes are shared, not copied: a lookup clones one `Arc`.
pub type Route = Arc<ChunkRoute>;

pub struct RangeRoute {
    pub meta: RangeMeta,
    /// start key -> chunk; the chunks tile the whole key space of the range.
    pub chunks: BTreeMap<Vec<u8>, Route>,
}

#[derive(Default)]
pub struct Router {
    ranges: HashMap<String, RangeRoute>,
}

impl Router {
    pub fn insert_range(&mut self, meta: RangeMeta) {
        self.ranges.insert(meta.name.clone(), RangeRoute { meta, chunks: BTreeMap::new() });
    }

    /// Puts back a range taken out with [`Router::remove_range`], under
    /// the name its meta holds now.
    pub fn insert_route(&mut self, route: RangeRoute) {
        self.ranges.insert(route.meta.name.clone(), route);
    }

    pub fn remove_range(&mut self, name: &str) -> Option<RangeRoute> {
        self.ranges.remove(name)
    }

    pub fn range(&self, name: &str) -> Option<&RangeRoute> {
        self.ranges.get(name)
    }

    pub fn ranges(&self) -> impl Iterator<Item = &RangeRoute> {
        self.ranges.values()
    }

    pub fn ranges_mut(&mut self, name: &str) -> Option<&mut RangeRoute> {
        self.ranges.get_mut(name)
    }

    pub fn range_by_id(&self, id: u64) -> Option<&RangeRoute> {
        self.ranges.values().find(|r| r.meta.id == id)
    }

    pub fn range_by_id_mut(&mut self, id: u64) -> Option<&mut RangeRoute> {
        self.ranges.values_mut().find(|r| r.meta.id == id)
    }

    /// Adds a chunk, replacing whatever chunk started at the same key.
    pub fn insert_chunk(&mut self, range_id: u64, route: Route) {
        if let Some(r) = self.range_by_id_mut(range_id) {
            r.chunks.insert(route.start.clone(), route);
        }
    }

    /// Swaps chunk `parent` for `children` (its split halves, or the chunks
    /// of a bulk load that took its place), which start at its start; false
    /// if the router has no route to `parent` (the range was dropped
    /// meanwhile, or a bug).
    pub fn replace_chunk(&mut self, range_id: u64, parent: u64, children: Vec<Route>) -> bool {
        let Some(r) = self.range_by_id_mut(range_id) else {
            return false;
        };
        let Some(first) = children.first() else { return false };
        if r.chunks.get(&first.start).is_some_and(|c| c.id == parent) {
            for child in children {
                r.chunks.insert(child.start.clone(), child);
            }
            return true;
        }
        false
    }
}

impl Router {
    /// Routes to `merged` in place of chunks `lower` and `upper` (its
    /// halves); false, and nothing changed, if they are not routed.
    pub fn replace_merge(&mut self, range_id: u64, lower: u64, upper: u64, merged: Route) -> bool {
        let Some(r) = self.range_by_id_mut(range_id) else {
            return false;
        };
        let Some(upper_start) =
            r.chunks.get(&merged.start).filter(|c| c.id == lower).and_then(|c| c.end.clone())
        else {
            return false;
        };
        if r.chunks.get(&upper_start).is_none_or(|c| c.id != upper) {
            return false;
        }
        r.chunks.remove(&upper_start);
        r.chunks.insert(merged.start.clone(), merged);
        true
    }
}

impl RangeRoute {
    /// The chunk whose interval holds `key`.
    pub fn chunk_for(&self, key: &[u8]) -> Option<&Route> {
        self.chunks
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .map(|(_, c)| c)
    }

    /// The chunk holding the largest keys below `key` (for reverse scans).
    pub fn chunk_before(&self, key: &[u8]) -> Option<&Route> {
        self.chunks
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(key)))
            .next_back()
            .map(|(_, c)| c)
    }

    pub fn last_chunk(&self) -> Option<&Route> {
        self.chunks.values().next_back()
    }
}
