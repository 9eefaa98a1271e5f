//! The node's views: which mapper reads which range, where each one's
//! checkpoint is, and the commands that create, drop and report them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr};
use monotable_proto::{ErrorCode, MapFunction, RangeOptions, ViewStatus};
use tokio::sync::oneshot;

use crate::catalog::{Backfill, MapperMeta};
use crate::chunk_actor::ChunkMsg;
use crate::error::{NodeError, NodeResult};
use crate::node::{validate_range_name, Node};
use crate::storage::chunk::Change;
use crate::view::map_fn::FieldMapper;
use crate::view::mapper::{Dirty, MapperActor, Status, Stop};

pub struct MapperEntry {
    pub source_id: u64,
    pub target_id: u64,
    pub checkpoint: u64,
    pub addr: Addr<MapperActor>,
}

/// Registered views, by name.
#[derive(Default)]
pub struct ViewRegistry {
    pub mappers: HashMap<String, MapperEntry>,
}

impl ViewRegistry {
    /// The oldest checkpoint of the views reading `range_id`: chunks of that
    /// range keep their change journal from there.
    pub fn floor(&self, range_id: u64) -> Option<u64> {
        self.mappers.values().filter(|m| m.source_id == range_id).map(|m| m.checkpoint).min()
    }
}

fn bad_request(message: impl Into<String>) -> NodeError {
    NodeError::client(ErrorCode::BadRequest, message)
}

impl Node {
    /// Tells the views reading `range_id` that it changed.
    pub fn notify_views(&self, range_id: u64) {
        let views = self.views_read();
        for m in views.mappers.values().filter(|m| m.source_id == range_id) {
            m.addr.do_send(Dirty);
        }
    }

    /// Where the change journals of `range_id` must start, if any view
    /// reads it.
    pub fn view_floor(&self, range_id: u64) -> Option<u64> {
        self.views_read().floor(range_id)
    }

    /// Whether some view reads or writes `range_id`.
    pub fn range_in_views(&self, range_id: u64) -> Option<String> {
        let views = self.views_read();
        views
            .mappers
            .iter()
            .find(|(_, m)| m.source_id == range_id || m.target_id == range_id)
            .map(|(name, _)| name.clone())
    }

    /// Records a mapper's new checkpoint.
    pub fn set_view_checkpoint(&self, name: &str, checkpoint: u64) {
        if let Some(m) = self.views_write().mappers.get_mut(name) {
            m.checkpoint = checkpoint;
        }
    }

    /// Changes to `range_id` in `(after, upto]`, from every chunk.
    pub fn changes(&self, range_id: u64, after: u64, upto: u64) -> NodeResult<Vec<Change>> {
        let routes = self
            .router_read()
            .range_by_id(range_id)
            .map(|r| r.chunks.values().cloned().collect::<Vec<_>>())
            .ok_or_else(|| bad_request("the source range of a view was dropped"))?;
        let mut out = Vec::new();
        for route in routes {
            match route.cell.with_chunk(|c| Ok(c.changes(after, upto)?))? {
                Some(changes) => out.extend(changes),
                // A chunk that does not journal yet (just opened): retry.
                None => return Err(NodeError::Moved),
            }
        }
        Ok(out)
    }

    /// Changes to `range_id` above `after` that views have yet to see.
    pub fn pending_changes(&self, range_id: u64, after: u64) -> u64 {
        let routes = self
            .router_read()
            .range_by_id(range_id)
            .map(|r| r.chunks.values().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        routes
            .iter()
            .map(|r| r.cell.with_chunk(|c| Ok(c.pending_changes(after))).unwrap_or(0))
            .sum()
    }

    /// Starts the actor of a registered mapper.
    pub fn start_mapper(self: &Arc<Self>, meta: MapperMeta) {
        let entry_checkpoint = meta.checkpoint;
        let (name, source_id, target_id) = (meta.name.clone(), meta.source_id, meta.target_id);
        let node = self.clone();
        let addr = MapperActor::start_in_arbiter(&self.next_chunk_worker(), move |_| {
            MapperActor::new(node, meta)
        });
        self.views_write()
            .mappers
            .insert(name, MapperEntry { source_id, target_id, checkpoint: entry_checkpoint, addr });
    }

    /// Makes every chunk of `range_id` keep its change journal from the
    /// views' floor (or stop, when no view reads it any more).
    async fn rewatch(&self, range_id: u64) -> NodeResult<()> {
        let floor = self.view_floor(range_id);
        let addrs: Vec<_> = self
            .router_read()
            .range_by_id(range_id)
            .map(|r| r.chunks.values().map(|c| c.addr.clone()).collect())
            .unwrap_or_default();
        for addr in addrs {
            let (reply, rx) = oneshot::channel();
            addr.do_send(ChunkMsg::Watch { after: floor, reply });
            match rx.await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) async fn create_mapper(
        self: &Arc<Self>,
        name: &str,
        source: &str,
        target: &str,
        function: MapFunction,
    ) -> NodeResult<()> {
        validate_range_name(name)?;
        if self.views_read().mappers.contains_key(name) {
            return Err(NodeError::client(
                ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        if source == target {
            return Err(bad_request(format!(
                "a mapper cannot write into its own source range {source:?}"
            )));
        }
        let MapFunction::Field { key_path, value_path } = function;
        let f = FieldMapper::new(&key_path, value_path.as_deref())
            .map_err(|e| bad_request(e.to_string()))?;
        let source_info = self.describe_range(source).await?;
        if self.router_read().range(target).is_none() {
            self.create_range(target, RangeOptions { ..source_info.options }).await?;
        }
        let target_id = self.describe_range(target).await?.id;
        let total = source_info.chunks.iter().map(|c| c.records).sum();
        let checkpoint = self.clock.pin_stable();
        let meta = MapperMeta {
            name: name.to_owned(),
            source: source.to_owned(),
            source_id: source_info.id,
            target: target.to_owned(),
            target_id,
            function: f,
            checkpoint,
            backfill: Some(Backfill { cursor: None, done: 0, total }),
        };
        if let Err(e) = self.catalog.put_mapper(&meta) {
            self.clock.unpin(checkpoint);
            return Err(e.into());
        }
        self.start_mapper(meta);
        self.rewatch(source_info.id).await?;
        tracing::info!(mapper = name, source, target, "created mapper");
        Ok(())
    }

    pub(crate) async fn drop_mapper(&self, name: &str) -> NodeResult<()> {
        let (addr, source_id) = match self.views_read().mappers.get(name) {
            Some(m) => (m.addr.clone(), m.source_id),
            None => {
                return Err(NodeError::client(
                    ErrorCode::RangeNotFound,
                    format!("view {name:?} does not exist"),
                ))
            }
        };
        // The actor removes itself (catalog entry, pin, registry) once no
        // round is running, so no round can outlive the drop.
        let (reply, rx) = oneshot::channel();
        addr.do_send(Stop(reply));
        rx.await.map_err(|_| NodeError::Internal("mapper stopped without answering".into()))??;
        self.rewatch(source_id).await?;
        tracing::info!(mapper = name, "dropped mapper");
        Ok(())
    }

    pub(crate) async fn view_statuses(&self) -> Vec<ViewStatus> {
        let addrs: Vec<_> = self.views_read().mappers.values().map(|m| m.addr.clone()).collect();
        let mut out = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let (tx, rx) = oneshot::channel();
            addr.do_send(Status(tx));
            if let Ok(status) = rx.await {
                out.push(status);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
