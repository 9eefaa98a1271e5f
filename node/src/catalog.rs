//! The node's catalog of ranges and chunks, in sled.
//!
//! sled holds only this small, low-churn metadata; chunk logs live in their
//! own files. Every change is one sled transaction followed by an explicit
//! flush, so once a method returns, the change survives a crash.

use std::path::Path;

use monotable_proto::RangeOptions;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use crate::bridge::sink::SinkMeta;
use crate::storage::chunk::ChunkMeta;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMeta {
    pub id: u64,
    pub name: String,
    pub options: RangeOptions,
    /// A view index range: the target of a mapper, whose keys are index
    /// rows ([`monotable_proto::row`]). Reducers on it take bounds and
    /// group by emitted keys.
    #[serde(default)]
    pub view_index: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage: {0}")]
    Sled(#[from] sled::Error),
    /// Another process holds the catalog (another node on this data
    /// directory): nothing about its contents is known.
    #[error("the catalog at {0} is in use by another process (is another node running on this data directory?)")]
    Locked(String),
    #[error("catalog entry cannot be decoded: {0}")]
    Decode(String),
    #[error("range {0:?} already exists")]
    RangeExists(String),
    #[error("range {0:?} does not exist")]
    RangeNotFound(String),
    #[error("chunk {0} is not in the catalog")]
    ChunkNotFound(u64),
}

impl From<TransactionError<CatalogError>> for CatalogError {
    fn from(e: TransactionError<CatalogError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => CatalogError::Sled(e),
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("catalog types always encode")
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, CatalogError> {
    rmp_serde::from_slice(bytes).map_err(|e| CatalogError::Decode(e.to_string()))
}

/// Every value of a tree, decoded.
fn all<T: for<'de> Deserialize<'de>>(tree: &sled::Tree) -> Result<Vec<T>, CatalogError> {
    tree.iter().values().map(|v| decode(&v?)).collect()
}

fn abort(e: CatalogError) -> ConflictableTransactionError<CatalogError> {
    ConflictableTransactionError::Abort(e)
}

/// How long to wait for the catalog's file lock. sled releases it only when
/// its background flusher thread exits, shortly after the previous `Db` in
/// this process is dropped (a node restarted in the same process).
const CATALOG_LOCK_WAIT_MS: u64 = 5_000;

fn open_with_retry(path: &Path) -> Result<sled::Db, CatalogError> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(CATALOG_LOCK_WAIT_MS);
    loop {
        match sled::Config::new().path(path).mode(sled::Mode::LowSpace).open() {
            // sled reports a held lock only through its message.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(CatalogError::Locked(path.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return Ok(other?),
        }
    }
}

/// A registered mapper and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapperMeta {
    pub name: String,
    pub source: String,
    pub source_id: u64,
    pub target: String,
    pub target_id: u64,
    pub function: crate::view::map_fn::MapperFunction,
    /// Every change to the source at or below this seq is reflected in the
    /// target. The node keeps a pin here, so the values the source had at
    /// this seq stay readable: they are the "old" side of the next changes.
    pub checkpoint: u64,
    /// Set while the mapper is still mapping what the source held when it
    /// was created (read at `checkpoint`).
    pub backfill: Option<Backfill>,
    /// The upper seq `S` of the round under way, pinned and saved before
    /// the round writes any row: after a crash the round is replayed over
    /// the same `(checkpoint, S]`, so the rows it wrote from the values at
    /// `S` are exactly reconciled.
    #[serde(default)]
    pub round_upto: Option<u64>,
    /// The target's seq at the end of the mapper's last complete round: the
    /// target holds exactly the rows of the source at `checkpoint` there
    /// (see [`crate::node::Node::consistent_upto`]). Pinned like the
    /// checkpoint, so the target stays readable at it after a restart.
    #[serde(default)]
    pub cut: u64,
    /// What its rounds did since it was created, saved with the
    /// checkpoint: a restart keeps the figures.
    #[serde(default)]
    pub tally: MapperTally,
}

/// A mapper's figures since it was created, up to its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapperTally {
    /// Rows it wrote into its target (puts and deletes).
    pub rows_written: u64,
    /// Source records its function failed on (each failing change counts).
    pub errors: u64,
    /// The last record it failed on: (source key, error).
    pub last_error: Option<(Vec<u8>, String)>,
}

impl MapperTally {
    /// Adds a round's figures.
    pub fn add(&mut self, rows_written: u64, errors: &[(Vec<u8>, String)]) {
        self.rows_written += rows_written;
        self.errors += errors.len() as u64;
        if let Some(last) = errors.last() {
            self.last_error = Some(last.clone());
        }
    }
}

/// A registered reducer and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReducerMeta {
    pub name: String,
    pub range: String,
    pub range_id: u64,
    pub function: crate::view::reducer_fn::ReducerFunction,
    /// Every change to the range at or below this seq is reflected in the
    /// meta-ranges; `None` until the first build is saved. The node keeps a
    /// pin here, like a mapper's.
    pub checkpoint: Option<u64>,
    /// The meta-ranges of the reduce tree, level 1 upwards: (name, id).
    pub levels: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// The next source key to map; `None` before the first batch.
    pub cursor: Option<Vec<u8>>,
    pub done: u64,
    pub total: u64,
    /// Before its first batch, delete the target's rows that the source at
    /// the checkpoint does not produce: a mapper taking over a target that
    /// holds rows (a new leader of a replicated source, see
    /// [`crate::replicated_views`]) makes it exact this way.
    #[serde(default)]
    pub prune: bool,
}

pub struct Catalog {
    db: sled::Db,
    /// range name -> RangeMeta
    ranges: sled::Tree,
    /// chunk id (big-endian) -> ChunkMeta
    chunks: sled::Tree,
    /// mapper name -> MapperMeta
    mappers: sled::Tree,
    /// reducer name -> ReducerMeta
    reducers: sled::Tree,
    /// sink name -> SinkMeta
    sinks: sled::Tree,
    /// Added to every id sled generates; raised by a catalog rebuilt from
    /// chunk directories, so new ids stay above the ids found there. Read
    /// once at open, written only by [`Catalog::raise_ids_above`].
    id_offset: u64,
    /// Small settings of the catalog itself (the id offset).
    settings: sled::Tree,
}

const ID_OFFSET_KEY: &[u8] = b"id_offset";
/// The ranges a rename (SWAPDB) is renaming, with their former names,
/// until every chunk's descriptor names them anew.
const RENAMING_KEY: &[u8] = b"renaming";
const CLUSTER_IDENTITY_KEY: &[u8] = b"cluster_identity";

/// Who this node is in its cluster: node-local, so it lives here and not
/// in the replicated meta range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterIdentity {
    /// The random id of this node's join attempt, kept so that a retried
    /// join gets the same node id.
    pub join_token: u64,
    /// The node id, once the cluster gave one (the founding node takes 1).
    pub node: Option<u64>,
    /// The cluster's random id, chosen by its founding node.
    #[serde(default)]
    pub cluster: u64,
}

/// The catalog's record of this node's [`ClusterIdentity`]; clones share it.
#[derive(Clone)]
pub struct IdentityStore {
    db: sled::Db,
    settings: sled::Tree,
}

impl IdentityStore {
    /// This node's cluster identity, if it has one.
    pub fn get(&self) -> Result<Option<ClusterIdentity>, CatalogError> {
        match self.settings.get(CLUSTER_IDENTITY_KEY)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Records this node's cluster identity durably.
    pub fn set(&self, identity: &ClusterIdentity) -> Result<(), CatalogError> {
        self.settings.insert(CLUSTER_IDENTITY_KEY, encode(identity))?;
        self.db.flush()?;
        Ok(())
    }
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let db = open_with_retry(path)?;
        let ranges = db.open_tree("ranges")?;
        let chunks = db.open_tree("chunks")?;
        let mappers = db.open_tree("mappers")?;
        let reducers = db.open_tree("reducers")?;
        let sinks = db.open_tree("sinks")?;
        let settings = db.open_tree("settings")?;
        let id_offset = match settings.get(ID_OFFSET_KEY)? {
            Some(v) => decode(&v)?,
            None => 0,
        };
        Ok(Catalog { db, ranges, chunks, mappers, reducers, sinks, id_offset, settings })
    }

    /// A new id for a range or chunk, never handed out before.
    pub fn next_id(&self) -> Result<u64, CatalogError> {
        Ok(self.db.generate_id()? + 1 + self.id_offset)
    }

    /// Makes every id handed out from now on greater than `max`, durably.
    pub fn raise_ids_above(&mut self, max: u64) -> Result<(), CatalogError> {
        let generated = self.db.generate_id()?;
        let offset = max.saturating_sub(generated).max(self.id_offset);
        self.settings.insert(ID_OFFSET_KEY, encode(&offset))?;
        self.flush()?;
        self.id_offset = offset;
        Ok(())
    }

    /// Records ranges and chunks rebuilt from chunk directories into an
    /// empty catalog.
    pub fn insert_recovered(
        &self,
        ranges: &[RangeMeta],
        chunks: &[ChunkMeta],
    ) -> Result<(), CatalogError> {
        (&self.ranges, &self.chunks).transaction(|(r, c)| {
            for range in ranges {
                r.insert(range.name.as_bytes(), encode(range))?;
            }
            for chunk in chunks {
                c.insert(&chunk.id.to_be_bytes(), encode(chunk))?;
            }
            Ok::<_, ConflictableTransactionError<CatalogError>>(())
        })?;
        self.flush()
    }

    /// Where this node's cluster identity is kept.
    pub fn identity_store(&self) -> IdentityStore {
        IdentityStore { db: self.db.clone(), settings: self.settings.clone() }
    }

    pub fn flush(&self) -> Result<(), CatalogError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn ranges(&self) -> Result<Vec<RangeMeta>, CatalogError> {
        all(&self.ranges)
    }

    pub fn chunks(&self) -> Result<Vec<ChunkMeta>, CatalogError> {
        all(&self.chunks)
    }

    /// Records a new range and its first chunk (whose files must exist).
    pub fn create_range(&self, range: &RangeMeta, chunk: &ChunkMeta) -> Result<(), CatalogError> {
        self.create_range_of(range, std::slice::from_ref(chunk))
    }

    /// Records a new range made of `chunks` (whose files must exist),
    /// atomically.
    pub fn create_range_of(
        &self,
        range: &RangeMeta,
        chunks: &[ChunkMeta],
    ) -> Result<(), CatalogError> {
        let name = range.name.as_str();
        (&self.ranges, &self.chunks).transaction(|(r, c)| {
            if r.get(name.as_bytes())?.is_some() {
                return Err(abort(CatalogError::RangeExists(name.to_owned())));
            }
            r.insert(name.as_bytes(), encode(range))?;
            for chunk in chunks {
                c.insert(&chunk.id.to_be_bytes(), encode(chunk))?;
            }
            Ok(())
        })?;
        self.flush()
    }

    /// Removes a range and all its chunks; returns the chunks' ids.
    pub fn drop_range(&self, name: &str) -> Result<Vec<u64>, CatalogError> {
        let range: RangeMeta = match self.ranges.get(name.as_bytes())? {
            Some(v) => decode(&v)?,
            None => return Err(CatalogError::RangeNotFound(name.to_owned())),
        };
        let ids: Vec<u64> =
            self.chunks()?.into_iter().filter(|c| c.range_id == range.id).map(|c| c.id).collect();
        (&self.ranges, &self.chunks).transaction(|(r, c)| {
            r.remove(name.as_bytes())?;
            for id in &ids {
                c.remove(&id.to_be_bytes())?;
            }
            Ok::<_, ConflictableTransactionError<CatalogError>>(())
        })?;
        self.flush()?;
        Ok(ids)
    }

    /// Gives ranges `a` and `b` each other's names (either may not exist:
    /// the other is then renamed), in one transaction that also records
    /// each renamed range's former name (see [`Catalog::renaming`]), which
    /// the chunks' descriptors still hold until [`Catalog::renamed`].
    pub fn swap_range_names(&self, a: &str, b: &str) -> Result<(), CatalogError> {
        (&self.ranges, &self.settings).transaction(|(r, s)| {
            type Tx = ConflictableTransactionError<CatalogError>;
            let get = |name: &str| -> Result<Option<RangeMeta>, Tx> {
                match r.get(name.as_bytes())? {
                    Some(v) => Ok(Some(decode(&v).map_err(abort)?)),
                    None => Ok(None),
                }
            };
            let (ra, rb) = (get(a)?, get(b)?);
            let mut renaming: Vec<(u64, String)> = match s.get(RENAMING_KEY)? {
                Some(v) => decode(&v).map_err(abort)?,
                None => Vec::new(),
            };
            for (range, name) in [(&ra, b), (&rb, a)] {
                r.remove(name.as_bytes())?;
                if let Some(range) = range {
                    if !renaming.iter().any(|(id, _)| *id == range.id) {
                        renaming.push((range.id, range.name.clone()));
                    }
                    let renamed = RangeMeta { name: name.to_owned(), ..range.clone() };
                    r.insert(name.as_bytes(), encode(&renamed))?;
                }
            }
            s.insert(RENAMING_KEY, encode(&renaming))?;
            Ok::<_, Tx>(())
        })?;
        self.flush()
    }

    /// Ranges renamed whose chunks' descriptors may still hold the former
    /// name: range id -> former name.
    pub fn renaming(&self) -> Result<Vec<(u64, String)>, CatalogError> {
        match self.settings.get(RENAMING_KEY)? {
            Some(v) => decode(&v),
            None => Ok(Vec::new()),
        }
    }

    /// Every chunk's descriptor names its range as the catalog does.
    pub fn renamed(&self) -> Result<(), CatalogError> {
        self.settings.remove(RENAMING_KEY)?;
        self.flush()
    }

    /// Marks a range as a view index range, or not; false when it does not
    /// exist.
    pub fn set_view_index(&self, name: &str, view_index: bool) -> Result<bool, CatalogError> {
        let Some(v) = self.ranges.get(name.as_bytes())? else { return Ok(false) };
        let mut range: RangeMeta = decode(&v)?;
        if range.view_index != view_index {
            range.view_index = view_index;
            self.ranges.insert(name.as_bytes(), encode(&range))?;
            self.flush()?;
        }
        Ok(true)
    }

    pub fn mappers(&self) -> Result<Vec<MapperMeta>, CatalogError> {
        all(&self.mappers)
    }

    /// Records a mapper's definition and progress, durably.
    pub fn put_mapper(&self, m: &MapperMeta) -> Result<(), CatalogError> {
        self.put(&self.mappers, &m.name, m)
    }

    pub fn remove_mapper(&self, name: &str) -> Result<bool, CatalogError> {
        self.remove(&self.mappers, name)
    }

    pub fn reducers(&self) -> Result<Vec<ReducerMeta>, CatalogError> {
        all(&self.reducers)
    }

    pub fn put_reducer(&self, r: &ReducerMeta) -> Result<(), CatalogError> {
        self.put(&self.reducers, &r.name, r)
    }

    pub fn remove_reducer(&self, name: &str) -> Result<bool, CatalogError> {
        self.remove(&self.reducers, name)
    }

    pub fn sinks(&self) -> Result<Vec<SinkMeta>, CatalogError> {
        all(&self.sinks)
    }

    /// Records a sink's definition and progress, durably.
    pub fn put_sink(&self, s: &SinkMeta) -> Result<(), CatalogError> {
        self.put(&self.sinks, &s.name, s)
    }

    pub fn remove_sink(&self, name: &str) -> Result<bool, CatalogError> {
        self.remove(&self.sinks, name)
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, name: &str, v: &T) -> Result<(), CatalogError> {
        tree.insert(name.as_bytes(), encode(v))?;
        self.flush()
    }

    fn remove(&self, tree: &sled::Tree, name: &str) -> Result<bool, CatalogError> {
        let existed = tree.remove(name.as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Replaces a chunk by the two halves of its split, atomically.
    pub fn split_chunk(
        &self,
        parent: u64,
        lower: &ChunkMeta,
        upper: &ChunkMeta,
    ) -> Result<(), CatalogError> {
        self.replace_chunk(parent, &[lower.clone(), upper.clone()])
    }

    /// Records that chunk `parent` became `children` (which tile its
    /// interval, in key order): a split, or a bulk load that takes the
    /// place of an empty chunk. One transaction;
    /// [`CatalogError::ChunkNotFound`] (and nothing changed) if `parent`
    /// is not recorded.
    pub fn replace_chunk(&self, parent: u64, children: &[ChunkMeta]) -> Result<(), CatalogError> {
        self.chunks.transaction(|c| {
            if c.remove(&parent.to_be_bytes())?.is_none() {
                return Err(abort(CatalogError::ChunkNotFound(parent)));
            }
            for child in children {
                c.insert(&child.id.to_be_bytes(), encode(child))?;
            }
            Ok(())
        })?;
        self.flush()
    }

    /// Records that `lower` and `upper`, neighbours of one range, became
    /// `merged`; [`CatalogError::ChunkNotFound`] (and nothing changed) if
    /// either is not recorded.
    pub fn merge_chunks(
        &self,
        lower: u64,
        upper: u64,
        merged: &ChunkMeta,
    ) -> Result<(), CatalogError> {
        self.chunks.transaction(|c| {
            for id in [lower, upper] {
                if c.remove(&id.to_be_bytes())?.is_none() {
                    return Err(abort(CatalogError::ChunkNotFound(id)));
                }
            }
            c.insert(&merged.id.to_be_bytes(), encode(merged))?;
            Ok(())
        })?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_splits_survive_reopen() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("meta");
        let (range, first) = {
            let cat = Catalog::open(&path).expect("open");
            let range = RangeMeta {
                id: cat.next_id().expect("id"),
                name: "users".into(),
                options: RangeOptions::default(),
                view_index: false,
            };
            let first = ChunkMeta {
                id: cat.next_id().expect("id"),
                range_id: range.id,
                start: vec![],
                end: None,
            };
            cat.create_range(&range, &first).expect("create");
            assert!(matches!(cat.create_range(&range, &first), Err(CatalogError::RangeExists(_))));
            let lower =
                ChunkMeta { id: 100, range_id: range.id, start: vec![], end: Some(b"m".to_vec()) };
            let upper = ChunkMeta { id: 101, range_id: range.id, start: b"m".to_vec(), end: None };
            cat.split_chunk(first.id, &lower, &upper).expect("split");
            assert!(cat.split_chunk(first.id, &lower, &upper).is_err(), "parent is gone");
            (range, first)
        };
        let cat = Catalog::open(&path).expect("reopen");
        assert_eq!(cat.ranges().expect("ranges"), vec![range]);
        let ids: Vec<u64> = cat.chunks().expect("chunks").iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![100, 101]);
        assert!(!ids.contains(&first.id));
        assert!(cat.next_id().expect("id") > first.id);
        assert_eq!(cat.drop_range("users").expect("drop"), vec![100, 101]);
        assert!(cat.chunks().expect("chunks").is_empty());
        assert!(matches!(cat.drop_range("users"), Err(CatalogError::RangeNotFound(_))));
    }

    #[test]
    fn a_rebuilt_catalog_hands_out_ids_above_the_recovered_ones() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("meta");
        {
            let mut cat = Catalog::open(&path).expect("open");
            let range = RangeMeta {
                id: 500,
                name: "users".into(),
                options: RangeOptions::default(),
                view_index: false,
            };
            let chunk = ChunkMeta { id: 900, range_id: 500, start: vec![], end: None };
            cat.insert_recovered(&[range], &[chunk]).expect("insert");
            cat.raise_ids_above(900).expect("raise");
            assert!(cat.next_id().expect("id") > 900);
        }
        let cat = Catalog::open(&path).expect("reopen");
        assert!(cat.next_id().expect("id") > 900, "the offset survives a restart");
        assert_eq!(cat.chunks().expect("chunks").len(), 1);
    }
}
