//! The sink actor: keeps a Redis database equal to a range (or a view's
//! rows) as it changes.
//!
//! A sink works like a mapper whose target is a Redis server. It has a
//! checkpoint `C` (pinned): Redis reflects every change of the source at or
//! below `C`. It goes through three phases, persisted in the catalog:
//!
//! 1. *copy*: writes the source as of `C` to Redis, a page at a time,
//!    persisting a cursor;
//! 2. *sweep*: SCANs Redis (keys under the sink's prefix) and deletes the
//!    keys the source did not hold at `C`;
//! 3. *follow*: each round takes the stable seq `S`, reads the keys changed
//!    in `(C, S]` as they are at `S` and rewrites them in Redis, in
//!    MULTI/EXEC transactions; then persists `S` as the checkpoint.
//!
//! Every write sets a key, field or member to its state at a snapshot
//! (never a relative change such as a push), so a round repeated after a
//! crash (of the node, or of the connection) leaves Redis the same:
//! nothing is missed, nothing applied twice. A Redis server that
//! restarted (its `run_id` changed) may have lost writes it acknowledged,
//! so the sink copies and sweeps again from a new checkpoint.
//!
//! For a Redis database range (typed mode) one Redis key is one key of the
//! range, with its type and expiry; a hash, set or sorted set that kept its
//! type is patched element by element, anything else rewritten whole. Any
//! other range or a view goes as one string per row (see [`super::rows`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use monotable_proto::ViewStatus;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::ownership;
use super::redis_io::{run_id, Target};
use super::sink_writes::{copy_page, follow, sweep_page};
use super::BridgeError;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::resp::keyspace::database_of_range;
use crate::view::mapper::Dirty;

/// A round that failed is retried after this long, doubling up to
/// [`ROUND_RETRY_MAX_MS`] while Redis stays unreachable.
const ROUND_RETRY_MS: u64 = 50;
const ROUND_RETRY_MAX_MS: u64 = 2_000;

/// How often an idle sink checks that Redis is up and is the same server
/// (a restarted one may have lost what the sink wrote).
const REDIS_CHECK_MS: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkPhase {
    /// Copying the source as of the checkpoint; `cursor` is the next source
    /// row to copy.
    Copy {
        cursor: Option<Vec<u8>>,
        done: u64,
        total: u64,
    },
    /// Deleting Redis keys the source does not hold; `cursor` is Redis's
    /// SCAN cursor.
    Sweep {
        cursor: u64,
    },
    Follow,
}

/// A registered sink and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkMeta {
    pub name: String,
    /// The range it mirrors (a view's target range, for a view).
    pub source: String,
    pub source_id: u64,
    /// The view it was created for, if any.
    pub view: Option<String>,
    pub url: String,
    /// Prepended to every Redis key it writes.
    pub prefix: Vec<u8>,
    /// The source is a Redis database range: keys go with their types.
    pub typed: bool,
    /// Redis reflects every change of the source at or below this seq; the
    /// node keeps a pin here.
    pub checkpoint: u64,
    pub phase: SinkPhase,
    /// The `run_id` of the Redis server the sink last wrote to.
    pub redis_run_id: Option<String>,
    /// The seq the follow round under way reads up to (pinned too). It is
    /// recorded before the round writes anything, so a round repeated after
    /// a failure or a crash reads exactly the same changes and sends the
    /// same absolute writes: a later seq could miss a key that changed and
    /// changed back, which Redis may have taken half of.
    #[serde(default)]
    pub round_upto: Option<u64>,
    /// For a sink on a replicated range: the fence it writes under.
    #[serde(default)]
    pub fence: Option<Fence>,
}

/// Keeps a deposed leader's sink from writing to Redis after the next
/// leader's: a sink on a replicated range runs on its chunk's leader, and
/// holds a key in Redis (`key`) naming the leader it runs on (`token`:
/// the Raft term and node id). A new leader takes the key (refused when it
/// names a later term), and every page a sink sends is one MULTI/EXEC
/// under `WATCH` of the key, sent only while the key holds its token:
/// compare-and-set in Redis, not a lease, so a leader that has not noticed
/// it was deposed (cut off from its group, not from Redis) writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub key: Vec<u8>,
    pub token: Vec<u8>,
    pub term: u64,
}

impl Fence {
    /// The fence of sink `name` on a leader in Raft term `term`.
    pub fn new(name: &str, term: u64, node: u64) -> Fence {
        Fence {
            key: [super::ownership::FENCE_KEY_PREFIX, name.as_bytes()].concat(),
            token: format!("{term}:{node}").into_bytes(),
            term,
        }
    }

    /// Takes the fence key for this leader: `Ok(false)` when it names a
    /// later term (this leader is deposed already).
    ///
    /// Errors: Redis's; `Redis` when the key changed under every one of a
    /// few attempts (something else keeps writing it).
    pub async fn claim(&self, con: &mut MultiplexedConnection) -> Result<bool, BridgeError> {
        const ATTEMPTS: usize = 8;
        for _ in 0..ATTEMPTS {
            let mut watch = redis::pipe();
            watch.cmd("WATCH").arg(&self.key).ignore().cmd("GET").arg(&self.key);
            let (holder,): (Option<String>,) = watch.query_async(con).await?;
            let held_term =
                holder.as_deref().and_then(|h| h.split(':').next()?.parse::<u64>().ok());
            if held_term.is_some_and(|t| t > self.term) {
                let _: () = redis::cmd("UNWATCH").query_async(con).await?;
                return Ok(false);
            }
            let mut set = redis::pipe();
            set.atomic().cmd("SET").arg(&self.key).arg(&self.token).ignore();
            let done: Option<()> = set.query_async(con).await?;
            if done.is_some() {
                return Ok(true);
            }
        }
        let key = String::from_utf8_lossy(&self.key);
        Err(BridgeError::Redis(format!("the sink's fence key {key} changed {ATTEMPTS} times over")))
    }
}

impl SinkMeta {
    pub fn describe(&self) -> String {
        let what = if self.typed { "Redis types" } else { "rows as strings" };
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix {:?}", String::from_utf8_lossy(&self.prefix))
        };
        format!("sink: {what}{prefix}")
    }
}

pub struct SinkActor {
    node: Arc<Node>,
    meta: SinkMeta,
    target: Target,
    /// The open connection to Redis; dropped after any error, so the next
    /// round reconnects (and notices a restarted server).
    con: Option<MultiplexedConnection>,
    dirty: bool,
    running: bool,
    /// The next round checks Redis's `run_id`.
    check_due: bool,
    retry_ms: u64,
    /// Rounds have failed to reach Redis since then.
    failing_since: Option<std::time::Instant>,
    keys_written: u64,
    errors: u64,
    last_error: Option<String>,
    stopping: Option<oneshot::Sender<NodeResult<()>>>,
}

impl Actor for SinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(REDIS_CHECK_MS), |act, ctx| {
            act.check_due = true;
            act.schedule(ctx);
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Round;

struct Outcome {
    con: MultiplexedConnection,
    keys_written: u64,
    more: bool,
}

impl SinkActor {
    pub fn new(node: Arc<Node>, meta: SinkMeta, target: Target) -> Self {
        SinkActor {
            node,
            meta,
            target,
            con: None,
            dirty: false,
            running: false,
            check_due: false,
            failing_since: None,
            retry_ms: ROUND_RETRY_MS,
            keys_written: 0,
            errors: 0,
            last_error: None,
            stopping: None,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.running && self.stopping.is_none() {
            self.running = true;
            ctx.notify(Round);
        }
    }

    fn finish_stop(&mut self, ctx: &mut Context<Self>) {
        let Some(reply) = self.stopping.take() else { return };
        let result =
            self.node.catalog.remove_sink(&self.meta.name).map(|_| ()).map_err(NodeError::from);
        self.node.clock.unpin(self.meta.checkpoint);
        if let Some(upto) = self.meta.round_upto {
            self.node.clock.unpin(upto);
        }
        self.node.views_write().sinks.remove(&self.meta.name);
        let _ = reply.send(result);
        ctx.stop();
    }

    /// Called after each round that failed talking to Redis. Once Redis
    /// has been failing for the node's `sink_outage_max_ms`, the sink stops
    /// holding back the source's history for it (its pin keeps every old
    /// version and its journal every change): it moves its checkpoint to
    /// now and will copy afresh when Redis is back, instead of the disk
    /// filling up while Redis stays away.
    fn redis_down(&mut self) {
        let since = *self.failing_since.get_or_insert_with(std::time::Instant::now);
        let max = Duration::from_millis(self.node.config.sink_outage_max_ms);
        if since.elapsed() < max {
            return;
        }
        let node = self.node.clone();
        match copy_afresh(&node, &mut self.meta) {
            Ok(()) => {
                tracing::warn!(
                    sink = %self.meta.name,
                    outage_s = since.elapsed().as_secs(),
                    "Redis unreachable for too long: the sink lets go of the source's history and will copy afresh"
                );
                node.set_sink_checkpoint(&self.meta.name, self.meta.checkpoint);
                self.failing_since = Some(std::time::Instant::now());
            }
            Err(e) => {
                tracing::error!(sink = %self.meta.name, error = %e, "cannot move the sink's checkpoint");
            }
        }
    }

    fn status(&self) -> ViewStatus {
        let m = &self.meta;
        let backfill = match &m.phase {
            SinkPhase::Copy { done, total, .. } => Some((*done, *total)),
            SinkPhase::Sweep { .. } => Some((1, 1)),
            SinkPhase::Follow => None,
        };
        ViewStatus {
            name: m.name.clone(),
            kind: "sink".into(),
            source: m.view.clone().unwrap_or_else(|| m.source.clone()),
            target: self.target.display.clone(),
            function: m.describe(),
            watermark: m.checkpoint,
            pending_changes: self.node.pending_changes(m.source_id, m.checkpoint),
            rows_written: self.keys_written,
            errors: self.errors,
            last_error: self.last_error.clone(),
            last_error_key: None,
            backfill,
            tree: None,
        }
    }
}

crate::view::follower_handlers!(SinkActor);

impl Handler<Round> for SinkActor {
    type Result = ();

    fn handle(&mut self, _: Round, ctx: &mut Context<Self>) {
        self.dirty = false;
        let node = self.node.clone();
        let meta = self.meta.clone();
        let target = self.target.clone();
        let con = self.con.take();
        let check = std::mem::take(&mut self.check_due);
        let round = async move { run_round(&node, meta, &target, con, check).await };
        ctx.spawn(round.into_actor(self).map(|(meta, result), act, ctx| {
            act.running = false;
            act.meta = meta;
            act.node.set_sink_checkpoint(&act.meta.name, act.meta.checkpoint);
            match result {
                Ok(outcome) => {
                    act.con = Some(outcome.con);
                    act.retry_ms = ROUND_RETRY_MS;
                    act.failing_since = None;
                    act.keys_written += outcome.keys_written;
                    act.last_error = None;
                    if act.stopping.is_some() {
                        return act.finish_stop(ctx);
                    }
                    if outcome.more || act.dirty {
                        act.schedule(ctx);
                    }
                }
                Err(e) => {
                    if act.stopping.is_some() {
                        return act.finish_stop(ctx);
                    }
                    if act.node.is_shutting_down() {
                        return;
                    }
                    if !matches!(e, BridgeError::Node(NodeError::Moved)) {
                        tracing::warn!(sink = %act.meta.name, error = %e, "sink round failed; retrying");
                        act.errors += 1;
                        act.last_error = Some(format!("retrying: {e}"));
                    }
                    // Someone else changed a key the sink owns (its type,
                    // so a patch no longer applies), or Redis lost what
                    // the sink wrote: copy afresh, which replaces every
                    // key whole.
                    let lost = matches!(&e, BridgeError::Lost(_))
                        || matches!(&e, BridgeError::RedisReply(m) if m.contains("WRONGTYPE"));
                    match &e {
                        BridgeError::Redis(_) => act.redis_down(),
                        _ if lost => {
                            tracing::warn!(sink = %act.meta.name, "Redis no longer holds what the sink wrote; copying afresh");
                            if let Err(e) = copy_afresh(&act.node, &mut act.meta) {
                                tracing::error!(sink = %act.meta.name, error = %e, "cannot restart the sink's copy");
                            }
                            act.node.set_sink_checkpoint(&act.meta.name, act.meta.checkpoint);
                        }
                        _ => {}
                    }
                    act.dirty = true;
                    let wait = Duration::from_millis(act.retry_ms);
                    act.retry_ms = (act.retry_ms * 2).min(ROUND_RETRY_MAX_MS);
                    ctx.run_later(wait, |act, ctx| act.schedule(ctx));
                }
            }
        }));
    }
}

/// Persists `meta` with its checkpoint moved to `to` (pinned by the
/// caller); the old checkpoint's pin goes once the new one is durable.
fn advance(node: &Node, meta: &mut SinkMeta, to: u64) -> Result<(), BridgeError> {
    let previous = meta.checkpoint;
    meta.checkpoint = to;
    if let Err(e) = node.catalog.put_sink(meta) {
        meta.checkpoint = previous;
        node.clock.unpin(to);
        return Err(NodeError::from(e).into());
    }
    node.clock.unpin(previous);
    Ok(())
}

/// Starts the sink over from a copy at a new checkpoint (now), dropping
/// the pins of the old checkpoint and of any round under way. On failure
/// the meta is as it was.
fn copy_afresh(node: &Node, meta: &mut SinkMeta) -> Result<(), BridgeError> {
    let total = node.range_records(meta.source_id);
    let (phase, round) = (meta.phase.clone(), meta.round_upto.take());
    meta.phase = SinkPhase::Copy { cursor: None, done: 0, total };
    let now = node.pin_consistent(meta.source_id);
    if let Err(e) = advance(node, meta, now) {
        meta.phase = phase;
        meta.round_upto = round;
        return Err(e);
    }
    if let Some(upto) = round {
        node.clock.unpin(upto);
    }
    Ok(())
}

/// Runs one round; returns the sink's meta as the round left it (what the
/// catalog and the pins say now), whether or not the round succeeded.
async fn run_round(
    node: &Arc<Node>,
    mut meta: SinkMeta,
    target: &Target,
    con: Option<MultiplexedConnection>,
    check: bool,
) -> (SinkMeta, Result<Outcome, BridgeError>) {
    let result = round(node, &mut meta, target, con, check).await;
    (meta, result)
}

async fn round(
    node: &Arc<Node>,
    meta: &mut SinkMeta,
    target: &Target,
    con: Option<MultiplexedConnection>,
    check: bool,
) -> Result<Outcome, BridgeError> {
    let fresh = con.is_none();
    let mut con = match con {
        Some(c) => c,
        None => target.connect().await?,
    };
    if fresh || check {
        let id = run_id(&mut con).await?;
        if meta.redis_run_id.as_deref() != Some(id.as_str()) {
            if meta.redis_run_id.is_some() {
                tracing::info!(sink = %meta.name, "Redis restarted; copying the source again");
                let previous = meta.redis_run_id.replace(id);
                if let Err(e) = copy_afresh(node, meta) {
                    meta.redis_run_id = previous;
                    return Err(e);
                }
            } else {
                meta.redis_run_id = Some(id);
                node.catalog.put_sink(meta).map_err(NodeError::from)?;
            }
        }
    }
    let (keys_written, more) = match meta.phase.clone() {
        SinkPhase::Copy { cursor, done, total } => {
            let (n, next) = copy_page(node, meta, &mut con, cursor).await?;
            meta.phase = match next {
                Some(c) => SinkPhase::Copy { cursor: Some(c), done: done + n, total },
                None => SinkPhase::Sweep { cursor: 0 },
            };
            node.catalog.put_sink(meta).map_err(NodeError::from)?;
            (n, true)
        }
        SinkPhase::Sweep { cursor } => {
            let (n, next) = sweep_page(node, meta, &mut con, cursor).await?;
            meta.phase = if next == 0 {
                tracing::info!(sink = %meta.name, "sink copied; following changes");
                SinkPhase::Follow
            } else {
                SinkPhase::Sweep { cursor: next }
            };
            node.catalog.put_sink(meta).map_err(NodeError::from)?;
            (n, true)
        }
        SinkPhase::Follow => {
            // A replayed round stops at the seq it chose before; what came
            // after it is the next round's, which nothing else may start.
            let replay = meta.round_upto.is_some();
            let upto = match meta.round_upto {
                // A round that failed: again, exactly as it was.
                Some(upto) => upto,
                None => {
                    // A mapper's target is read only up to its mappers'
                    // last complete round (see `Node::consistent_upto`).
                    let upto = node.pin_consistent(meta.source_id);
                    if upto <= meta.checkpoint {
                        node.clock.unpin(upto);
                        // Changes announced but not yet stable: the round
                        // after they are.
                        let more = node.wait_announced(meta.source_id, meta.checkpoint).await;
                        return Ok(Outcome { con, keys_written: 0, more });
                    }
                    meta.round_upto = Some(upto);
                    if let Err(e) = node.catalog.put_sink(meta) {
                        meta.round_upto = None;
                        node.clock.unpin(upto);
                        return Err(NodeError::from(e).into());
                    }
                    upto
                }
            };
            let n = follow(node, meta, &mut con, upto).await?;
            // The round's pin becomes the checkpoint's.
            meta.round_upto = None;
            node.clock.pin(upto);
            if let Err(e) = advance(node, meta, upto) {
                meta.round_upto = Some(upto);
                return Err(e);
            }
            node.clock.unpin(upto);
            // Changes announced but not yet stable when this round chose
            // its seq: their `Dirty` was spent on this round.
            (n, replay || node.wait_announced(meta.source_id, upto).await)
        }
    };
    Ok(Outcome { con, keys_written, more })
}

impl Node {
    pub(crate) async fn create_sink(
        self: &Arc<Self>,
        name: &str,
        source: monotable_proto::SinkSource,
        url: &str,
        prefix: Vec<u8>,
        fence: Option<Fence>,
    ) -> NodeResult<()> {
        crate::node::validate_name("sink", name)?;
        if self.views_read().contains(name) {
            return Err(NodeError::client(
                monotable_proto::ErrorCode::RangeExists,
                format!("view {name:?} already exists"),
            ));
        }
        let target = Target::parse(url).map_err(|e| NodeError::bad_request(e.to_string()))?;
        let (range, view) = match source {
            monotable_proto::SinkSource::Range(r) => (r, None),
            monotable_proto::SinkSource::View(v) => {
                let views = self.views_read();
                if views.reducers.contains_key(&v) {
                    return Err(NodeError::bad_request(format!(
                        "{v:?} is a reducer: a sink follows a range or a mapper's rows (query reducers with MT.AGG)"
                    )));
                }
                let target_id =
                    views.mappers.get(&v).map(|m| m.target_id).ok_or_else(|| {
                        NodeError::bad_request(format!("view {v:?} does not exist"))
                    })?;
                drop(views);
                let range = self
                    .router_read()
                    .range_by_id(target_id)
                    .map(|r| r.meta.name.clone())
                    .ok_or_else(|| {
                        NodeError::bad_request(format!("the rows of view {v:?} are gone"))
                    })?;
                (range, Some(v))
            }
        };
        let info = self.describe_range(&range).await?;
        // A sink of a replicated range starting on a new leader was
        // checked when it was created (and the meta range holds it).
        if fence.is_none() {
            self.refuse_taken_target(name, url, &prefix)?;
        }
        let mut con = super::redis_io::reachable(&target).await?;
        let owner = self.sink_owner(&prefix, fence.is_some());
        self.own_target(&mut con, name, &target, &owner, fence.is_none()).await?;
        if let Some(fence) = &fence {
            let claimed = fence.claim(&mut con).await.map_err(|e| match e {
                BridgeError::Node(e) => e,
                e => NodeError::bad_request(format!("{}: {e}", target.display)),
            })?;
            if !claimed {
                return Err(NodeError::Moved);
            }
        }
        let typed = view.is_none() && database_of_range(&range).is_some();
        let total = info.chunks.iter().map(|c| c.records).sum();
        let checkpoint = self.pin_consistent(info.id);
        let meta = SinkMeta {
            name: name.to_owned(),
            source: range.clone(),
            source_id: info.id,
            view,
            url: url.to_owned(),
            prefix,
            typed,
            checkpoint,
            phase: SinkPhase::Copy { cursor: None, done: 0, total },
            redis_run_id: None,
            round_upto: None,
            fence,
        };
        if let Err(e) = self.catalog.put_sink(&meta) {
            self.clock.unpin(checkpoint);
            return Err(e.into());
        }
        self.start_sink(meta)?;
        self.rewatch(info.id).await?;
        tracing::info!(sink = name, source = range, redis = %target.display, "created sink");
        Ok(())
    }

    /// Records sink `name` (as `owner`) in its target's
    /// [`ownership::OWNERS_KEY`], first refusing (when `check`) a target
    /// where another sink records overlapping keys: a sink of another node
    /// or cluster.
    ///
    /// Errors: `BadRequest` naming the other sink, or Redis's error.
    pub(crate) async fn own_target(
        &self,
        con: &mut MultiplexedConnection,
        name: &str,
        target: &Target,
        owner: &ownership::Owner,
        check: bool,
    ) -> NodeResult<()> {
        let redis_error =
            |e: BridgeError| NodeError::bad_request(format!("{}: {e}", target.display));
        if check {
            let server = target.display.clone();
            let wanted = ownership::SinkTarget { server, prefix: owner.prefix.clone() };
            ownership::check_owners(con, name, &wanted, owner)
                .await
                .map_err(redis_error)?
                .map_err(NodeError::bad_request)?;
        }
        let mut pipe = redis::pipe();
        ownership::queue_record(&mut pipe, name, owner);
        super::redis_io::send(&pipe, con).await.map_err(redis_error)
    }

    /// Drops sink `name` for good (a client's `DropSink`), and its record
    /// in its target ([`ownership::forget`]).
    pub(crate) async fn drop_sink_for_good(&self, name: &str) -> NodeResult<()> {
        let url = self.catalog.sinks()?.into_iter().find(|s| s.name == name).map(|s| s.url);
        self.drop_sink(name).await?;
        if let Some(url) = url {
            ownership::forget(&url, name).await;
        }
        Ok(())
    }

    /// Stops sink `name` here and removes it from the catalog; a sink of a
    /// replicated range stopped here (its leadership moved) keeps running
    /// elsewhere, so its record in Redis stays.
    pub(crate) async fn drop_sink(&self, name: &str) -> NodeResult<()> {
        let found =
            self.views_read().sinks.get(name).map(|s| (s.addr.clone().recipient(), s.source_id));
        self.stop_view(name, found).await
    }

    /// Starts the actor of a registered sink.
    pub fn start_sink(self: &Arc<Self>, meta: SinkMeta) -> NodeResult<()> {
        let target = Target::parse(&meta.url).map_err(|e| NodeError::bad_request(e.to_string()))?;
        let (name, source_id, checkpoint) = (meta.name.clone(), meta.source_id, meta.checkpoint);
        let node = self.clone();
        let addr = SinkActor::start_in_arbiter(&self.next_view_worker(), move |_| {
            SinkActor::new(node, meta, target)
        });
        self.views_write().sinks.insert(
            name,
            crate::view::registry::SinkEntry { source_id, checkpoint, addr: addr.clone() },
        );
        addr.do_send(Dirty);
        Ok(())
    }

    /// Records a sink's new checkpoint (its source's journal floor).
    pub fn set_sink_checkpoint(&self, name: &str, checkpoint: u64) {
        if let Some(s) = self.views_write().sinks.get_mut(name) {
            s.checkpoint = checkpoint;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_database_ranges_are_typed() {
        let typed = |r: &str| database_of_range(r).is_some();
        assert!(typed("redis.0") && typed("redis.15"));
        assert!(!typed("redis.16") && !typed("redis.x") && !typed("people"));
    }
}
