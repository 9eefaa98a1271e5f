//! Which sink owns which Redis keys: one sink per keyspace.
//!
//! A sink deletes, in its sweep, every key under its prefix that its
//! source does not hold, so two sinks writing overlapping keys of one Redis
//! database delete each other's keys for ever. A [`SinkTarget`] is where a
//! sink writes (server, database, prefix); two overlap when they name the
//! same server and database and one prefix starts the other (an empty
//! prefix overlaps every prefix). A sink is refused at creation when its
//! target overlaps one of another sink:
//!
//! - registered on the same node (its catalog) or in the cluster's meta
//!   range (sinks of replicated ranges), checked by the node; a sink of a
//!   replicated range is checked again by the meta range's state machine,
//!   so two such creations racing through two nodes cannot both succeed;
//! - recorded in the target itself: every sink records itself in the hash
//!   [`OWNERS_KEY`] of the database it writes (field: its name, value: its
//!   prefix, node and cluster, [`Owner`]), at creation and at the start of
//!   every copy (so again after a FLUSHDB), so a sink of another node or
//!   another cluster is seen too, and so is one of the same name there.
//!
//! Not detected: the same server named by two addresses (`localhost` and
//! `127.0.0.1`), two creations at the same moment unless both are of
//! sinks of replicated ranges of one cluster (the read and the write of
//! [`OWNERS_KEY`] are not one transaction), a sink whose record was removed (a
//! FLUSHDB) until its next copy, and sinks of versions that did not record
//! themselves (only their fence keys are there, which are not looked for).
//! A dropped sink's record is removed at the drop; if Redis was
//! unreachable then, the record stays and the refusal says how to remove
//! it.
//!
//! The sink's bookkeeping keys ([`is_bookkeeping`]) are never data: the
//! sweep leaves them and `redis verify` skips them.

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::redis_io::Target;
use super::BridgeError;

/// The hash recording, for a Redis database, the sinks that write it.
pub const OWNERS_KEY: &[u8] = b"monotable:sink-owners";

/// Every fence key ([`super::sink::Fence`]) starts with this.
pub const FENCE_KEY_PREFIX: &[u8] = b"monotable:sink-fence:";

/// A key a sink keeps for itself in its target: a fence key or
/// [`OWNERS_KEY`].
pub fn is_bookkeeping(key: &[u8]) -> bool {
    key == OWNERS_KEY || key.starts_with(FENCE_KEY_PREFIX)
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTarget {
    /// `redis://HOST:PORT/DB`, without the password ([`Target::display`]).
    pub server: String,
    pub prefix: Vec<u8>,
}

impl SinkTarget {
    /// Errors: `Redis` for a URL that does not parse.
    pub fn of(url: &str, prefix: &[u8]) -> Result<SinkTarget, BridgeError> {
        Ok(SinkTarget { server: Target::parse(url)?.display, prefix: prefix.to_vec() })
    }

    /// Whether a key could be written by both: the same database, and one
    /// prefix starts the other.
    pub fn overlaps(&self, other: &SinkTarget) -> bool {
        self.server == other.server
            && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
    }
}

/// Why sink `name` may not write to `target`: another sink, `other`,
/// writes `theirs`, which overlaps it.
pub fn refusal(name: &str, target: &SinkTarget, other: &str, theirs: &SinkTarget) -> String {
    format!(
        "sink {name:?} would write {} under prefix {:?}, which sink {other:?} already writes \
         (prefix {:?}): a sink deletes the keys under its prefix that its source lacks, so two \
         would delete each other's keys; use another database or prefixes that do not start \
         one another",
        target.server,
        String::from_utf8_lossy(&target.prefix),
        String::from_utf8_lossy(&theirs.prefix),
    )
}

/// The first of `others` (by name, with their URL and prefix) other than
/// `name` whose target overlaps `target`, as a refusal ([`refusal`]).
/// Sinks whose URL does not parse are passed over.
pub fn first_conflict<'a>(
    name: &str,
    target: &SinkTarget,
    others: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>,
) -> Option<String> {
    others.into_iter().filter(|(other, _, _)| *other != name).find_map(|(other, url, prefix)| {
        let theirs = SinkTarget::of(url, prefix).ok()?;
        theirs.overlaps(target).then(|| refusal(name, target, other, &theirs))
    })
}

/// A sink's record in [`OWNERS_KEY`] (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub prefix: Vec<u8>,
    /// Who runs it, for people reading the refusal: `node ADDR`.
    pub node: String,
    /// The id of its cluster (0: none known).
    #[serde(default)]
    pub cluster: u64,
    /// The node it runs on, for a node's own sink; `None` for a sink of a
    /// replicated range, which runs on whichever node leads its range.
    #[serde(default)]
    pub node_id: Option<u64>,
}

impl Owner {
    /// Whether `self` and `other`, records under one name, are one sink.
    fn same_sink(&self, other: &Owner) -> bool {
        self.cluster == other.cluster && self.node_id == other.node_id
    }
}

/// Refuses `target` for sink `name` (recorded as `me`) when
/// [`OWNERS_KEY`] records another sink writing overlapping keys in it, or
/// a sink of the same name elsewhere (another cluster or node: one name
/// is one record).
///
/// Errors: the refusal as `Ok(Err(message))`; Redis's errors as `Err`.
pub async fn check_owners(
    con: &mut MultiplexedConnection,
    name: &str,
    target: &SinkTarget,
    me: &Owner,
) -> Result<Result<(), String>, BridgeError> {
    let owners: Vec<(String, Vec<u8>)> =
        redis::cmd("HGETALL").arg(OWNERS_KEY).query_async(con).await?;
    let key = String::from_utf8_lossy(OWNERS_KEY);
    for (other, record) in owners {
        // A record that does not read is another writer's all the same:
        // its prefix unknown, it may overlap anything.
        let owner = serde_json::from_slice::<Owner>(&record).unwrap_or_else(|_| Owner {
            prefix: Vec::new(),
            node: "unknown".into(),
            cluster: 0,
            node_id: None,
        });
        let theirs = SinkTarget { server: target.server.clone(), prefix: owner.prefix.clone() };
        let why = if other != name {
            if !theirs.overlaps(target) {
                continue;
            }
            refusal(name, target, &other, &theirs)
        } else if owner.same_sink(me) {
            continue;
        } else {
            format!(
                "{} already records a sink named {name:?} of another cluster or node; give \
                 this one another name",
                target.server
            )
        };
        return Ok(Err(format!(
            "{why} (recorded in Redis by {}; if that sink no longer exists: HDEL {key} {other})",
            owner.node,
        )));
    }
    Ok(Ok(()))
}

/// Queues the command that records sink `name` in [`OWNERS_KEY`].
pub fn queue_record(pipe: &mut redis::Pipeline, name: &str, owner: &Owner) {
    let record = serde_json::to_vec(owner).expect("an Owner serializes");
    pipe.cmd("HSET").arg(OWNERS_KEY).arg(name).arg(record).ignore();
}

/// Removes sink `name`'s record from its target (a dropped sink). Best
/// effort: a Redis that cannot be reached keeps the record, logged.
pub async fn forget(url: &str, name: &str) {
    let result = async {
        let mut con = Target::parse(url)?.connect().await?;
        let () = redis::cmd("HDEL").arg(OWNERS_KEY).arg(name).query_async(&mut con).await?;
        Ok::<(), BridgeError>(())
    };
    if let Err(e) = result.await {
        let key = String::from_utf8_lossy(OWNERS_KEY);
        tracing::warn!(sink = name, error = %e, "the dropped sink's record in {key} stays");
    }
}

impl crate::node::Node {
    /// This node's record of a sink writing under `prefix`: of a
    /// replicated range (`replicated`), or of the node's own.
    pub(crate) fn sink_owner(&self, prefix: &[u8], replicated: bool) -> Owner {
        let addr = self.config.advertise.clone().unwrap_or_else(|| self.config.listen.to_string());
        let cluster = self.cluster().ok();
        Owner {
            prefix: prefix.to_vec(),
            node: format!("node {addr}"),
            cluster: cluster.and_then(|c| c.with_meta(|m| m.cluster)).unwrap_or(0),
            node_id: if replicated { None } else { cluster.and_then(|c| c.node_id()) },
        }
    }

    /// Refuses sink `name` writing `prefix` in `url` when a sink of
    /// another name that this node knows of (its own, or the cluster's
    /// sinks of replicated ranges) writes overlapping keys.
    ///
    /// Errors: `BadRequest` naming the other sink; `BadRequest` for a URL
    /// that does not parse.
    pub(crate) fn refuse_taken_target(
        &self,
        name: &str,
        url: &str,
        prefix: &[u8],
    ) -> crate::error::NodeResult<()> {
        let bad =
            |m: String| crate::error::NodeError::client(monotable_proto::ErrorCode::BadRequest, m);
        let target = SinkTarget::of(url, prefix).map_err(|e| bad(e.to_string()))?;
        let own = self.catalog.sinks()?;
        let own = own.iter().map(|s| (s.name.as_str(), s.url.as_str(), &s.prefix[..]));
        if let Some(refusal) = first_conflict(name, &target, own) {
            return Err(bad(refusal));
        }
        let cluster = self.cluster().ok().and_then(|c| c.meta());
        let replicated = cluster.iter().flat_map(|m| m.sinks.iter());
        let replicated = replicated.map(|(n, s)| (n.as_str(), s.url.as_str(), &s.prefix[..]));
        match first_conflict(name, &target, replicated) {
            Some(refusal) => Err(bad(refusal)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str, prefix: &str) -> SinkTarget {
        SinkTarget::of(url, prefix.as_bytes()).expect("url")
    }

    #[test]
    fn targets_overlap_on_one_database_when_a_prefix_starts_the_other() {
        let db0 = "redis://127.0.0.1:6379/0";
        assert!(at(db0, "").overlaps(&at(db0, "")));
        assert!(at(db0, "").overlaps(&at(db0, "a:")));
        assert!(at(db0, "a:").overlaps(&at(db0, "a:b")));
        assert!(!at(db0, "a:").overlaps(&at(db0, "b:")));
        // Another database, another port: apart.
        assert!(!at(db0, "").overlaps(&at("redis://127.0.0.1:6379/1", "")));
        assert!(!at(db0, "").overlaps(&at("redis://127.0.0.1:6380/0", "")));
        // The password is not part of the target; no DB means 0.
        assert!(at("redis://:pw@127.0.0.1:6379", "").overlaps(&at(db0, "")));
    }

    #[test]
    fn conflicts_name_the_other_sink_and_pass_over_the_same_name() {
        let db0 = "redis://127.0.0.1:6379/0";
        let others = [("a", db0, &b"x:"[..]), ("b", db0, &b""[..])];
        let e = first_conflict("a", &at(db0, "x:"), others).expect("b overlaps");
        assert!(e.contains("sink \"b\" already writes"), "{e}");
        assert_eq!(first_conflict("a", &at(db0, "x:"), [("a", db0, &b"x:"[..])]), None);
    }

    #[test]
    fn bookkeeping_keys_are_the_fences_and_the_owners() {
        assert!(is_bookkeeping(b"monotable:sink-fence:mirror"));
        assert!(is_bookkeeping(OWNERS_KEY));
        assert!(!is_bookkeeping(b"monotable:sink-fenc"));
        assert!(!is_bookkeeping(b"user:1"));
    }
}
