//! WATCH's table: the keys connections watch, each with a version that
//! every write of the key moves.
//!
//! A key is modified, for WATCH, when a write of one of its rows (its key
//! row or an element row, see [`super::keyspace`]) is applied: the check
//! sits in [`super::keyspace::Db`]'s write path, which every command's
//! writes pass, so a command that changes nothing (DEL of a missing key,
//! SREM of absent members, ZADD of an unchanged score, a command refused
//! with WRONGTYPE) writes no row and fails no WATCH, as Redis signals a
//! key only when a command modified it (`signalModifiedKey`). A write of
//! another key never counts: the table holds the watched keys themselves,
//! not hashes of them.
//!
//! Removing an expired key is not a modification: EXEC checks instead that
//! a key live at WATCH still is (see [`Watched`]), so a key that had
//! expired before WATCH and is removed later fails nothing, as in Redis
//! (`touchWatchedKey`'s expired case).
//!
//! WATCH itself runs with no other command running (the endpoint's gate
//! held for writing, as EXEC), so a write that found no key watched when
//! it began cannot be applied after a WATCH read the key. A write while
//! no key is watched costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use monotable_proto::tuple::{self, Element};
use monotable_proto::WriteOp;

/// The watched keys of a node's databases, with their versions.
#[derive(Default)]
pub struct Watches {
    /// Watches held (one per connection and key): 0 lets writes skip the
    /// table.
    held: AtomicUsize,
    keys: Mutex<HashMap<(u32, Vec<u8>), Entry>>,
}

struct Entry {
    /// Connections watching the key; the entry goes with the last.
    watchers: usize,
    /// Moved by every write of the key while it is watched.
    version: u64,
}

impl Watches {
    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, Vec<u8>), Entry>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `key` of database `db` until the returned [`Watched`] is
    /// dropped; `live`: the key exists, unexpired, now.
    pub fn watch(self: &Arc<Self>, db: u32, key: &[u8], live: bool) -> Watched {
        let version = {
            let mut keys = self.keys();
            let entry = keys.entry((db, key.to_vec())).or_insert(Entry { watchers: 0, version: 0 });
            entry.watchers += 1;
            entry.version
        };
        self.held.fetch_add(1, Ordering::SeqCst);
        Watched { table: self.clone(), db, key: key.to_vec(), version, live }
    }

    fn unwatch(&self, db: u32, key: &[u8]) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        let mut keys = self.keys();
        let id = (db, key.to_vec());
        if let Some(entry) = keys.get_mut(&id) {
            entry.watchers -= 1;
            if entry.watchers == 0 {
                keys.remove(&id);
            }
        }
    }

    fn version(&self, db: u32, key: &[u8]) -> Option<u64> {
        self.keys().get(&(db, key.to_vec())).map(|e| e.version)
    }

    /// Whether any key is watched.
    pub fn any(&self) -> bool {
        self.held.load(Ordering::SeqCst) > 0
    }

    /// The keys of database `db` some connection watches.
    pub fn watched_in(&self, db: u32) -> Vec<Vec<u8>> {
        self.keys().keys().filter(|(d, _)| *d == db).map(|(_, k)| k.clone()).collect()
    }

    /// Counts `keys` of database `db` as modified (their writes were
    /// applied).
    pub fn written(&self, db: u32, keys: Vec<Vec<u8>>) {
        let mut table = self.keys();
        for key in keys {
            if let Some(entry) = table.get_mut(&(db, key)) {
                entry.version += 1;
            }
        }
    }
}

/// The Redis keys whose rows `ops` write, each once, in the order `ops`
/// first write them (as a command wrote them: CLIENT TRACKING tells of
/// them so).
pub fn keys_in_order(ops: &[WriteOp]) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    ops.iter().filter_map(|op| key_of_row(op.key())).filter(|k| seen.insert(k.clone())).collect()
}

/// The Redis keys whose rows `ops` write, each once, sorted.
pub fn keys_written(ops: &[WriteOp]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = ops.iter().filter_map(|op| key_of_row(op.key())).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The Redis key a row of a database belongs to: its key row or one of
/// its element rows. Expiry rows belong to none: one changes only with
/// its key row, or is a stale one the expirer removes.
fn key_of_row(row: &[u8]) -> Option<Vec<u8>> {
    let elements = tuple::decode(row).ok()?;
    match elements.as_slice() {
        [Element::String(tag), Element::Bytes(key), ..]
            if super::keyspace::KEY_TAGS.contains(&tag.as_str()) =>
        {
            Some(key.clone())
        }
        _ => None,
    }
}

/// A key WATCH recorded, watched until dropped. EXEC aborts when it was
/// written since (see [`Watched::written`]), or when it was live at WATCH
/// and is gone or expired now: expiry (lazy or in the background) and
/// FLUSHDB/FLUSHALL remove keys without counting as writes, and Redis
/// fails the watch of a key that existed (`touchAllWatchedKeysInDb`,
/// "WATCH will consider touched expired keys") but not of one that did
/// not, or had expired already, at WATCH.
pub struct Watched {
    table: Arc<Watches>,
    pub db: u32,
    pub key: Vec<u8>,
    version: u64,
    /// The key existed, unexpired, when WATCH ran.
    pub live: bool,
}

impl Watched {
    /// Whether a write of the key was applied since WATCH.
    pub fn written(&self) -> bool {
        self.table.version(self.db, &self.key) != Some(self.version)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.table.unwatch(self.db, &self.key);
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("db", &self.db)
            .field("key", &self.key)
            .field("version", &self.version)
            .field("live", &self.live)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::keyspace::{element_row, expiry_row, key_row, KIND_SET};

    fn put(row: Vec<u8>) -> WriteOp {
        WriteOp::Put { key: row.into(), value: Vec::new().into() }
    }

    #[test]
    fn only_writes_of_the_watched_key_move_its_version() {
        let table = Arc::new(Watches::default());
        let w = table.watch(0, b"a", false);
        let write = |db, ops: &[WriteOp]| table.written(db, keys_written(ops));
        write(0, &[put(key_row(b"b")), put(element_row(KIND_SET, b"ab", b"x"))]);
        write(1, &[put(key_row(b"a"))]);
        write(0, &[put(expiry_row(5, b"a"))]);
        assert!(!w.written(), "other keys, another database, an expiry row");
        write(0, &[put(element_row(KIND_SET, b"a", b"m"))]);
        assert!(w.written());
    }

    #[test]
    fn the_last_watch_dropped_empties_the_table() {
        let table = Arc::new(Watches::default());
        let first = table.watch(3, b"k", true);
        let second = table.watch(3, b"k", true);
        drop(first);
        table.written(3, vec![b"k".to_vec()]);
        assert!(second.written());
        drop(second);
        assert!(table.keys().is_empty());
        assert_eq!(table.held.load(Ordering::SeqCst), 0);
        // A watch made after a write starts from the key's state then.
        table.written(3, vec![b"k".to_vec()]);
        assert!(!table.watch(3, b"k", true).written());
    }
}
