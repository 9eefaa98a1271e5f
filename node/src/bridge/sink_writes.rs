//! What a sink writes to Redis in each of its phases: a page of the copy,
//! a page of the sweep, a round of changes (patching collections element
//! by element where it can). See [`super::sink`] for the phases. A source
//! key that would land on a sink's own key in Redis (a fence key, the
//! owners' record: [`super::ownership`]) is never written, and the sweep
//! never deletes those.

use std::collections::BTreeMap;
use std::sync::Arc;

use monotable_proto::keys::tuple_prefix_end;
use monotable_proto::{Bytes, ScanRequest};
use redis::aio::MultiplexedConnection;

use super::item::{key_of_row, Item};
use super::ownership::is_bookkeeping;
use super::redis_io::{format_score, prefixed, queue_item, scan_page};
use super::rows::{keys_rendering_as, render_key, render_value};
use super::sink::SinkMeta;
use super::BridgeError;
use crate::error::{NodeError, NodeResult};
use crate::node::Node;
use crate::resp::keyspace::{
    decode_field, decode_score, key_row, key_rows_prefix, now_ms, tag, Value, KIND_HASH, KIND_SET,
    KIND_ZSET,
};
use crate::storage::chunk::Change;

/// Source keys (typed) or rows copied per round of the copy phase.
const COPY_PAGE_MAX: u32 = 500;

/// Keys written per MULTI/EXEC while following.
const TRANSACTION_KEYS_MAX: usize = 500;

/// SCAN's COUNT during the sweep.
const SWEEP_COUNT: usize = 1_000;

/// Sends a page of writes: as it is, or for a fenced sink (one running on
/// a replicated range's leader, [`super::sink::Fence`]) as one MULTI/EXEC
/// under `WATCH` of the fence key, sent only while the key still holds
/// this sink's token.
///
/// Errors: `Moved` (as [`BridgeError::Node`]) when the fence names a newer
/// leader, or changed while the page was being sent (nothing written).
async fn send(
    meta: &SinkMeta,
    pipe: &redis::Pipeline,
    con: &mut MultiplexedConnection,
) -> Result<(), BridgeError> {
    if pipe.is_empty() {
        return Ok(());
    }
    let Some(fence) = &meta.fence else {
        return super::redis_io::send(pipe, con).await;
    };
    let mut watch = redis::pipe();
    watch.cmd("WATCH").arg(&fence.key).ignore().cmd("GET").arg(&fence.key);
    let (holder,): (Option<Vec<u8>>,) = watch.query_async(con).await?;
    if holder.as_deref() != Some(&fence.token[..]) {
        let _: () = redis::cmd("UNWATCH").query_async(con).await?;
        let shown = holder.as_deref().map(|h| String::from_utf8_lossy(h).into_owned());
        // Postmortem: a FLUSHDB (the key gone) or a key set by hand stopped
        // the sink for good, silently (every page answered `Moved`).
        if fence.claim(con).await? {
            // Gone, or an older term: Redis lost the sink's writes.
            let was = shown.unwrap_or_else(|| "nothing".into());
            return Err(BridgeError::Lost(format!("its fence key held {was}")));
        }
        return Err(BridgeError::Fenced(shown.unwrap_or_default()));
    }
    let mut fenced = pipe.clone();
    fenced.atomic();
    // EXEC answers nil when the fence key changed after WATCH.
    let done: Option<redis::Value> = fenced.query_async(con).await?;
    match done {
        Some(_) => Ok(()),
        None => Err(NodeError::Moved.into()),
    }
}

/// The Redis key a source key goes to. Callers leave out the keys that
/// land on a sink's own ([`is_bookkeeping`]): writing them would overwrite
/// this or another sink's fence or record.
fn redis_key(meta: &SinkMeta, key: &[u8]) -> Vec<u8> {
    prefixed(&meta.prefix, key)
}

/// What a sink writes of one key.
enum Synced {
    /// The key (`None`: absent or expired, deleted in Redis).
    Key(Option<Item>),
    /// A stream: not written to Redis, nor deleted there.
    Stream,
}

/// The Redis key `key` of a Redis database range as of `snapshot`.
fn item_at(node: &Node, range_id: u64, key: &[u8], snapshot: u64) -> NodeResult<Synced> {
    let row = key_row(key);
    let mut end = row.clone();
    end.push(0);
    let Some((_, head)) = node.rows_at(range_id, &row, Some(&end), Some(snapshot))?.pop() else {
        return Ok(Synced::Key(None));
    };
    let head = Value::decode(&head)
        .ok_or_else(|| NodeError::Internal(format!("damaged key row for {key:?}")))?;
    if head.kind == crate::resp::keyspace::KIND_STREAM {
        return Ok(Synced::Stream);
    }
    if head.expire_at_ms.is_some_and(|at| at <= now_ms()) {
        return Ok(Synced::Key(None));
    }
    let elements = match Item::element_prefix(&head, key) {
        // Whole elements: the rows of key "a" are not those of "a\0b".
        Some(p) => node.rows_at(range_id, &p, tuple_prefix_end(&p).as_deref(), Some(snapshot))?,
        None => Vec::new(),
    };
    Item::from_rows(key.to_vec(), &head, elements)
        .map(|item| Synced::Key(Some(item)))
        .map_err(|e| NodeError::Internal(e.to_string()))
}

/// Copies one page of the source as of the checkpoint; returns the keys
/// written and where the next page starts.
pub async fn copy_page(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    cursor: Option<Vec<u8>>,
) -> Result<(u64, Option<Vec<u8>>), BridgeError> {
    let first_page = cursor.is_none();
    let (start, end) = if meta.typed {
        let prefix = key_rows_prefix();
        let end = tuple_prefix_end(&prefix);
        (cursor.unwrap_or(prefix), end)
    } else {
        (cursor.unwrap_or_default(), None)
    };
    let reply = node
        .scan_range(ScanRequest {
            range: meta.source.clone(),
            start: Some(Bytes::from(start)),
            end: end.map(Bytes::from),
            limit: COPY_PAGE_MAX,
            snapshot: Some(meta.checkpoint),
            ..ScanRequest::default()
        })
        .await?;
    let mut pipe = redis::pipe();
    if first_page {
        // A copy from scratch follows a FLUSHDB or a restarted Redis, which
        // lost the record made at creation too.
        let owner = node.sink_owner(&meta.prefix, meta.fence.is_some());
        super::ownership::queue_record(&mut pipe, &meta.name, &owner);
    }
    for r in &reply.records {
        if meta.typed {
            let key = crate::resp::keyspace::last_bytes(&r.key)?;
            let target = redis_key(meta, &key);
            if is_bookkeeping(&target) {
                continue;
            }
            if let Synced::Key(item) = item_at(node, meta.source_id, &key, meta.checkpoint)? {
                queue_item(&mut pipe, &target, item.as_ref());
            }
        } else {
            let target = redis_key(meta, &render_key(&r.key));
            if !is_bookkeeping(&target) {
                pipe.cmd("SET").arg(target).arg(render_value(&r.value)).ignore();
            }
        }
    }
    send(meta, &pipe, con).await?;
    Ok((reply.records.len() as u64, reply.resume.map(|k| k.into_vec())))
}

/// A glob pattern matching exactly the keys that start with `prefix`.
fn prefix_pattern(prefix: &[u8]) -> String {
    let mut p = String::new();
    for c in String::from_utf8_lossy(prefix).chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('*');
    p
}

/// Deletes the keys of one SCAN page that the source did not hold at the
/// checkpoint; returns how many and the next cursor.
pub async fn sweep_page(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    cursor: u64,
) -> Result<(u64, u64), BridgeError> {
    let pattern = (!meta.prefix.is_empty()).then(|| prefix_pattern(&meta.prefix));
    let (next, keys) = scan_page(con, cursor, pattern.as_deref(), SWEEP_COUNT).await?;
    let mut pipe = redis::pipe();
    let mut deleted = 0;
    for k in keys {
        // Fence keys and the owners' record are no source's keys.
        if is_bookkeeping(&k) {
            continue;
        }
        let Some(ours) = k.strip_prefix(&meta.prefix[..]) else { continue };
        let held = if meta.typed {
            // A stream's name is kept: the sink leaves what Redis holds there.
            !matches!(item_at(node, meta.source_id, ours, meta.checkpoint)?, Synced::Key(None))
        } else {
            let mut held = false;
            for row in keys_rendering_as(ours) {
                let mut end = row.clone();
                end.push(0);
                held |= !node
                    .rows_at(meta.source_id, &row, Some(&end), Some(meta.checkpoint))?
                    .is_empty();
            }
            held
        };
        if !held {
            pipe.cmd("DEL").arg(&k).ignore();
            deleted += 1;
        }
    }
    send(meta, &pipe, con).await?;
    Ok((deleted, next))
}

/// An old value expiring sooner than this is not patched element by
/// element (Redis may drop it before the patch lands): the key is rewritten.
const EXPIRY_MARGIN_MS: u64 = 1_000;

/// Queues what turns Redis's copy of `key` (as of the checkpoint) into what
/// the source holds at `upto`: field by field (member by member) for a
/// hash, set or sorted set that kept its type, so one change costs one
/// command however large the collection; the whole key otherwise.
///
/// Every command queued sets an absolute state (HSET, HDEL, ZADD with the
/// score, PEXPIREAT, DEL + rewrite), so a round replayed over a Redis that
/// already took part or all of it ends in the same state. That is why
/// lists are rewritten whole: their cheap patches (pushes, pops) are not
/// idempotent, and a round repeated after a lost connection would apply
/// them twice.
fn queue_key_changes(
    node: &Node,
    meta: &SinkMeta,
    pipe: &mut redis::Pipeline,
    key: &[u8],
    changes: &[&Change],
    upto: u64,
) -> NodeResult<()> {
    let row = key_row(key);
    let now = now_ms();
    let live = |bytes: Option<&Vec<u8>>, margin: u64| {
        bytes
            .and_then(|b| Value::decode(b))
            .filter(|h| h.expire_at_ms.is_none_or(|at| at > now + margin))
    };
    let head_change = changes.iter().find(|c| c.key == row);
    let new_head = match head_change {
        Some(c) => live(c.new.as_ref(), 0),
        None => {
            let mut end = row.clone();
            end.push(0);
            let head = node.rows_at(meta.source_id, &row, Some(&end), Some(upto))?.pop();
            live(head.map(|(_, v)| v).as_ref(), 0)
        }
    };
    let old_head = match head_change {
        Some(c) => live(c.old.as_ref(), EXPIRY_MARGIN_MS),
        None => {
            new_head.clone().filter(|h| h.expire_at_ms.is_none_or(|at| at > now + EXPIRY_MARGIN_MS))
        }
    };
    let target = redis_key(meta, key);
    let patched = match (&old_head, &new_head) {
        (Some(old), Some(new)) if old.kind == new.kind => match new.kind {
            KIND_HASH | KIND_SET | KIND_ZSET => {
                patch_elements(pipe, &target, new, changes)?;
                true
            }
            _ => false,
        },
        _ => false,
    };
    let (true, Some(old), Some(new)) = (patched, &old_head, &new_head) else {
        if let Synced::Key(item) = item_at(node, meta.source_id, key, upto)? {
            queue_item(pipe, &target, item.as_ref());
        }
        return Ok(());
    };
    if old.expire_at_ms != new.expire_at_ms {
        match new.expire_at_ms {
            Some(at) => pipe.cmd("PEXPIREAT").arg(&target).arg(at).ignore(),
            None => pipe.cmd("PERSIST").arg(&target).ignore(),
        };
    }
    Ok(())
}

/// Queues one command per changed field or member of a hash, set or
/// sorted set.
fn patch_elements(
    pipe: &mut redis::Pipeline,
    target: &[u8],
    new: &Value,
    changes: &[&Change],
) -> NodeResult<()> {
    let tag = tag(new.kind).expect("a collection kind");
    for c in changes {
        let Some((row_tag, element)) = tag_and_element(&c.key) else { continue };
        if row_tag != tag {
            continue;
        }
        match (new.kind, &c.new) {
            (KIND_HASH, Some(v)) => pipe.cmd("HSET").arg(target).arg(element).arg(decode_field(v)?),
            (KIND_HASH, None) => pipe.cmd("HDEL").arg(target).arg(element),
            (KIND_SET, Some(_)) => pipe.cmd("SADD").arg(target).arg(element),
            (KIND_SET, None) => pipe.cmd("SREM").arg(target).arg(element),
            (_, Some(v)) => {
                pipe.cmd("ZADD").arg(target).arg(format_score(decode_score(v)?)).arg(element)
            }
            (_, None) => pipe.cmd("ZREM").arg(target).arg(element),
        }
        .ignore();
    }
    Ok(())
}

/// The tag and last element of an element row (`("h", KEY, FIELD)`).
fn tag_and_element(row: &[u8]) -> Option<(String, Vec<u8>)> {
    use monotable_proto::tuple::Element;
    let mut t = monotable_proto::tuple::decode(row).ok()?;
    let last = match t.pop()? {
        Element::Bytes(b) => b,
        _ => return None,
    };
    match t.first()? {
        Element::String(s) => Some((s.clone(), last)),
        _ => None,
    }
}

/// Rewrites in Redis what changed in `(checkpoint, upto]`, in MULTI/EXEC
/// transactions; returns the keys written.
pub async fn follow(
    node: &Arc<Node>,
    meta: &SinkMeta,
    con: &mut MultiplexedConnection,
    upto: u64,
) -> Result<u64, BridgeError> {
    let changes = node.changes(meta.source_id, meta.checkpoint, upto)?;
    let mut written = 0;
    if meta.typed {
        let mut by_key: BTreeMap<Vec<u8>, Vec<&Change>> = BTreeMap::new();
        for c in &changes {
            let Some(key) = key_of_row(&c.key) else { continue };
            if !is_bookkeeping(&redis_key(meta, &key)) {
                by_key.entry(key).or_default().push(c);
            }
        }
        let keys: Vec<(Vec<u8>, Vec<&Change>)> = by_key.into_iter().collect();
        for part in keys.chunks(TRANSACTION_KEYS_MAX) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (key, changes) in part {
                queue_key_changes(node, meta, &mut pipe, key, changes, upto)?;
            }
            send(meta, &pipe, con).await?;
            written += part.len() as u64;
        }
    } else {
        for part in changes.chunks(TRANSACTION_KEYS_MAX) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for c in part {
                let key = redis_key(meta, &render_key(&c.key));
                if is_bookkeeping(&key) {
                    continue;
                }
                match &c.new {
                    Some(v) => pipe.cmd("SET").arg(key).arg(render_value(v)).ignore(),
                    None => pipe.cmd("DEL").arg(key).ignore(),
                };
            }
            send(meta, &pipe, con).await?;
            written += part.len() as u64;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_match_only_the_prefix() {
        assert_eq!(prefix_pattern(b"m:"), "m:*");
        assert_eq!(prefix_pattern(b"a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
        for key in [&b"a*b?[c]\\x"[..], b"a*b?[c]\\"] {
            assert!(crate::resp::glob::matches(prefix_pattern(b"a*b?[c]\\").as_bytes(), key));
        }
        assert!(!crate::resp::glob::matches(prefix_pattern(b"a*b").as_bytes(), b"axxb"));
    }

    #[test]
    fn element_rows_give_their_tag_and_element() {
        let row = crate::resp::keyspace::element_row(KIND_HASH, b"key", b"field");
        assert_eq!(tag_and_element(&row), Some(("h".to_owned(), b"field".to_vec())));
        let score = crate::resp::keyspace::score_row(b"key", 1.5, b"m");
        assert_eq!(tag_and_element(&score), Some(("Z".to_owned(), b"m".to_vec())));
    }
}
