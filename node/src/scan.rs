//! Range scans across chunks: walk the chunks in key order (or reverse),
//! one chunk at a time, until the limit, the byte budget or the end bound.

use std::ops::Bound;

use monotable_proto::limits::SCAN_REPLY_SIZE_MAX_BYTES;
use monotable_proto::{ErrorCode, ScanReply, ScanRequest};

use crate::error::{NodeError, NodeResult};
use monotable_proto::keys::prefix_end;

use crate::node::{scan_limit, Node};
use crate::storage::chunk::ReadAt;
use crate::storage::hash_order::MergedPages;

/// Resolves `start`/`end`/`prefix` into an inclusive start and exclusive end.
/// An inclusive start and an exclusive end; `None` is unbounded.
pub type KeySpan = (Option<Vec<u8>>, Option<Vec<u8>>);

pub fn bounds_of(req: &ScanRequest) -> NodeResult<KeySpan> {
    match &req.prefix {
        Some(prefix) => {
            if req.start.is_some() || req.end.is_some() {
                return Err(NodeError::client(
                    ErrorCode::BadRequest,
                    "give either a prefix or start/end bounds, not both",
                ));
            }
            let start = (!prefix.is_empty()).then(|| prefix.to_vec());
            Ok((start, prefix_end(prefix)))
        }
        None => Ok((req.start.as_ref().map(|b| b.to_vec()), req.end.as_ref().map(|b| b.to_vec()))),
    }
}

pub async fn run(node: &Node, req: ScanRequest) -> NodeResult<ScanReply> {
    let at = node.read_at(req.snapshot)?;
    run_at(node, req, at).await
}

/// A scan at an explicit read point.
pub async fn run_at(node: &Node, req: ScanRequest, at: ReadAt) -> NodeResult<ScanReply> {
    let (start, end) = bounds_of(&req)?;
    for bound in [&start, &end].into_iter().flatten() {
        if bound.len() > monotable_proto::limits::KEY_SIZE_MAX_BYTES + 1 {
            return Err(NodeError::client(
                ErrorCode::KeyTooLarge,
                "scan bound exceeds the key size limit",
            ));
        }
    }
    let empty = matches!((&start, &end), (Some(s), Some(e)) if s >= e)
        || end.as_ref().is_some_and(|e| e.is_empty());
    let limit = scan_limit(req.limit);
    let mut records = Vec::new();
    let mut bytes = 0usize;
    let mut resume: Option<Vec<u8>> = None;
    if empty {
        return Ok(ScanReply { records, resume: None, snapshot: req.snapshot });
    }
    if !req.reverse {
        let mut pos = start.clone().unwrap_or_default();
        loop {
            let remaining = limit - records.len();
            let budget = SCAN_REPLY_SIZE_MAX_BYTES.saturating_sub(bytes);
            let (route, scan) = node
                .scan_step(
                    &req.range,
                    |r| r.chunk_for(&pos).cloned(),
                    |c| {
                        let bounds = (
                            Bound::Included(&pos[..]),
                            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                        );
                        Ok(c.scan(bounds, at, false, remaining, budget)?)
                    },
                )
                .await?;
            bytes += scan.records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
            records.extend(scan.records);
            if let Some(next) = scan.stopped_at {
                resume = Some(next);
                break;
            }
            let next = match route.end.clone() {
                Some(chunk_end) if end.as_ref().is_none_or(|e| &chunk_end < e) => chunk_end,
                _ => break,
            };
            if records.len() >= limit || bytes >= SCAN_REPLY_SIZE_MAX_BYTES {
                resume = Some(next);
                break;
            }
            pos = next;
        }
    } else {
        let mut upper = end.clone();
        loop {
            let remaining = limit - records.len();
            let budget = SCAN_REPLY_SIZE_MAX_BYTES.saturating_sub(bytes);
            let locate = |r: &crate::router::RangeRoute| match &upper {
                Some(u) => r.chunk_before(u).cloned(),
                None => r.last_chunk().cloned(),
            };
            let (route, scan) = node
                .scan_step(&req.range, locate, |c| {
                    let bounds = (
                        start.as_deref().map_or(Bound::Unbounded, Bound::Included),
                        upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                    );
                    Ok(c.scan(bounds, at, true, remaining, budget)?)
                })
                .await?;
            bytes += scan.records.iter().map(|r| r.key.len() + r.value.len()).sum::<usize>();
            records.extend(scan.records);
            if let Some(mut next) = scan.stopped_at {
                // The reverse cursor is an exclusive end: just above `next`.
                next.push(0);
                resume = Some(next);
                break;
            }
            let chunk_start = route.start.clone();
            if chunk_start.is_empty() || start.as_ref().is_some_and(|s| &chunk_start <= s) {
                break;
            }
            if records.len() >= limit || bytes >= SCAN_REPLY_SIZE_MAX_BYTES {
                resume = Some(chunk_start);
                break;
            }
            upper = Some(chunk_start);
        }
    }
    Ok(ScanReply { records, resume: resume.map(Into::into), snapshot: req.snapshot })
}

/// Rows of `range` in `[start, end)` (`None`: unbounded) as reads of
/// everything applied see them ([`ReadAt::Applied`]): O(log n) per chunk
/// the interval touches, however many rows it holds.
pub async fn count_applied(
    node: &Node,
    range: &str,
    start: &[u8],
    end: Option<&[u8]>,
) -> NodeResult<u64> {
    let mut total = 0;
    walk_applied(
        node,
        range,
        start,
        end,
        |chunk, bounds| chunk.count_applied(bounds),
        |count| {
            total += count;
            None::<()>
        },
    )
    .await?;
    Ok(total)
}

/// The row key at position `n` (0: the first) of `range` in `[start, end)`
/// as reads of everything applied see them, in O(log n) per chunk the
/// interval touches; `None` when it holds `n` rows or fewer.
pub async fn select_applied(
    node: &Node,
    range: &str,
    start: &[u8],
    end: Option<&[u8]>,
    n: u64,
) -> NodeResult<Option<Vec<u8>>> {
    let left = std::cell::Cell::new(n);
    walk_applied(
        node,
        range,
        start,
        end,
        |chunk, bounds| chunk.select_applied(bounds, left.get()),
        |found| match found {
            Ok(key) => Some(key),
            Err(count) => {
                left.set(left.get() - count);
                None
            }
        },
    )
    .await
}

/// The children of the tuple `parent` in `range`, in hashed order from
/// hash `from` on, as reads of everything applied see them: each chunk the
/// parent's rows span gives about `limit` ([`crate::storage::hash_order`]),
/// merged for [`MergedPages::take`].
pub async fn hashed_applied(
    node: &Node,
    range: &str,
    parent: &[u8],
    from: u64,
    limit: usize,
) -> NodeResult<MergedPages> {
    let mut merged = MergedPages::default();
    let end = monotable_proto::keys::tuple_prefix_end(parent);
    walk_applied(
        node,
        range,
        parent,
        end.as_deref(),
        |chunk, _| chunk.hashed_applied(parent, from, limit),
        |page| {
            merged.add(page);
            None::<()>
        },
    )
    .await?;
    Ok(merged)
}

/// Reads each chunk of `range` that `[start, end)` touches, in key order,
/// with the interval clipped to it (`read`, which may run again on a chunk
/// that moved meanwhile), and folds the answers (`fold`, once per chunk)
/// until it returns something.
async fn walk_applied<R, T>(
    node: &Node,
    range: &str,
    start: &[u8],
    end: Option<&[u8]>,
    read: impl Fn(&crate::storage::chunk::Chunk, crate::storage::chunk_index::KeyBounds<'_>) -> R,
    mut fold: impl FnMut(R) -> Option<T>,
) -> NodeResult<Option<T>> {
    if end.is_some_and(|e| e <= start) {
        return Ok(None);
    }
    let mut pos = start.to_vec();
    loop {
        let (route, answer) = node
            .scan_step(
                range,
                |r| r.chunk_for(&pos).cloned(),
                |c| {
                    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                    Ok(read(c, (Bound::Included(&pos[..]), upper)))
                },
            )
            .await?;
        if let Some(done) = fold(answer) {
            return Ok(Some(done));
        }
        match route.end.clone() {
            Some(chunk_end) if end.is_none_or(|e| chunk_end.as_slice() < e) => pos = chunk_end,
            _ => return Ok(None),
        }
    }
}
