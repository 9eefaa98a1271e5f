//! openraft's state machine storage for a [`Replica`]: a machine that keeps
//! its own state on disk (a chunk), so a snapshot is a mark, not a copy.
//!
//! The replica applies committed commands to its own storage without
//! waiting for them to be durable there: the Raft log has them. The file
//! `APPLIED` in the group's directory records a log id up to which the
//! replica's storage is known durable (and the membership at that point);
//! it is written only after [`Replica::flush`], when openraft builds a
//! snapshot, and openraft purges the Raft log only up to a built
//! snapshot. A mark never replaces a newer one (a build may run while a
//! snapshot from the leader is installed), and one is written at a time. After a crash the replica reports `APPLIED` as its applied
//! state and openraft applies every committed entry after it again. The
//! replica's commands must therefore give the same state when a suffix of
//! them is applied again on top of a state that already holds some of
//! them: blind puts and deletes of whole records do.
//!
//! A snapshot sent to a lagging replica is [`Replica::snapshot`]'s bytes,
//! taken under the same lock as the applied log id, so the two agree.
//!
//! `APPLIED` holds a [`Marker`] in MessagePack followed by its CRC32C
//! (4 bytes, little-endian).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, Entry, LogId, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};

use super::futures_lite::BoxedFuture;
use super::{CommandReply, LogPosition, NodeId, TypeConfig};

const MARKER_FILE: &str = "APPLIED";

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// A state machine that stores its state itself.
pub trait Replica: Send + Sync + 'static {
    /// Applies the committed command at log position `at` (its index, and
    /// the term it was appended in); returns the reply. A
    /// command refused by the machine is answered with an encoded error
    /// and changes nothing, on every replica alike.
    ///
    /// Errors: this replica could not apply it (its storage failed, it is
    /// shutting down): nothing was applied, and the group's replica stops
    /// rather than go on without the command (which would make it differ
    /// from the others); it applies the command again when restarted.
    fn apply(&self, at: LogPosition, command: &[u8]) -> Result<Vec<u8>, String>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> BoxedFuture<Result<(), String>>;
    /// The whole state, for a replica that is too far behind.
    fn snapshot(&self) -> Result<Vec<u8>, String>;
    /// Replaces the whole state with a [`Replica::snapshot`]'s, durably.
    fn restore(&self, snapshot: Vec<u8>) -> BoxedFuture<Result<(), String>>;
    /// Gets ready to restore `snapshot`, waiting up to `wait`: for a
    /// snapshot that names data to fetch, the fetch starts (or goes on)
    /// in the background. [`Prepared::Ready`] (the default) lets the
    /// snapshot be installed now.
    fn prepare_restore(&self, snapshot: &[u8], wait: std::time::Duration) -> BoxedFuture<Prepared> {
        let _ = (snapshot, wait);
        Box::pin(async { Prepared::Ready })
    }
}

/// Whether a replica is ready to install a snapshot it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    Ready,
    /// It is still fetching the snapshot's data.
    Copying {
        copied_bytes: u64,
        total_bytes: u64,
    },
    /// The fetch failed; the sender should send a newer snapshot.
    Failed(String),
}

/// Checks a snapshot before its group installs it (see
/// [`Replica::prepare_restore`]); a group given one answers a snapshot
/// message with "not yet" until it is ready.
pub trait SnapshotGate: Send + Sync + 'static {
    fn prepare(&self, snapshot: &[u8], wait: std::time::Duration) -> BoxedFuture<Prepared>;
}

impl std::fmt::Debug for dyn SnapshotGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotGate")
    }
}

/// The gate of a [`Replica`].
struct ReplicaGate(Arc<dyn Replica>);

impl SnapshotGate for ReplicaGate {
    fn prepare(&self, snapshot: &[u8], wait: std::time::Duration) -> BoxedFuture<Prepared> {
        self.0.prepare_restore(snapshot, wait)
    }
}

/// What `APPLIED` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Marker {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

struct State {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Snapshots built by this process, for unique snapshot ids.
    built: u64,
}

/// The state machine storage of one replicated chunk; clones share it.
#[derive(Clone)]
pub struct ReplicaStore {
    dir: PathBuf,
    replica: Arc<dyn Replica>,
    state: Arc<Mutex<State>>,
    /// The log id in `APPLIED`. Held while the file is written: openraft
    /// builds snapshots in a task of their own, which may run while the
    /// state machine installs one from the leader.
    marked: Arc<Mutex<Option<LogId<NodeId>>>>,
}

fn io_error(write: bool, e: impl std::fmt::Display) -> StorageError<NodeId> {
    let e = openraft::AnyError::error(e.to_string());
    if write {
        StorageIOError::write_state_machine(e).into()
    } else {
        StorageIOError::read_state_machine(e).into()
    }
}

impl ReplicaStore {
    /// Opens the store of `replica` in `dir` (created if missing).
    ///
    /// Errors: `APPLIED` cannot be read or fails its checksum.
    pub fn open(dir: &Path, replica: Arc<dyn Replica>) -> Result<Self, StorageError<NodeId>> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(true, e))?;
        let path = dir.join(MARKER_FILE);
        let marker = match std::fs::read(&path) {
            Ok(bytes) => decode_marker(&bytes)
                .map_err(|e| io_error(false, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Marker::default(),
            Err(e) => return Err(io_error(false, format!("{}: {e}", path.display()))),
        };
        let marked = Arc::new(Mutex::new(marker.applied));
        let state = State { applied: marker.applied, membership: marker.membership, built: 0 };
        Ok(ReplicaStore {
            dir: dir.to_owned(),
            replica,
            state: Arc::new(Mutex::new(state)),
            marked,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The gate through which the group checks snapshots sent to this
    /// replica before installing them.
    pub fn gate(&self) -> Arc<dyn SnapshotGate> {
        Arc::new(ReplicaGate(self.replica.clone()))
    }

    /// Starts a new group's state machine at a snapshot at log index 0
    /// whose membership is `voters` (node id to address), durably, when it
    /// has applied nothing yet; returns whether it did.
    ///
    /// A group whose state at its start is already in the replicas'
    /// storage (a split's upper half) starts so, rather than with its
    /// membership as its log's entry 0 ([`super::log_store::LogStore::
    /// seed_membership`]): openraft then purges its log to index 0 as it
    /// starts (the state machine is ahead of the log), and a replica that
    /// joins the group later, with nothing, is sent a snapshot. With an
    /// entry 0 it would be sent the log from there instead, and apply the
    /// group's writes to a chunk without the state the group began with.
    ///
    /// Errors: `APPLIED` cannot be written.
    pub async fn seed_membership(
        &self,
        voters: std::collections::BTreeMap<NodeId, String>,
    ) -> Result<bool, StorageError<NodeId>> {
        if self.applied().is_some() {
            return Ok(false);
        }
        let start = LogId::default();
        let membership = StoredMembership::new(
            Some(start),
            openraft::Membership::from(super::raft_nodes(voters)),
        );
        let marker = Marker { applied: Some(start), membership: membership.clone() };
        self.write_marker(marker).await?;
        let mut s = self.lock();
        s.applied = Some(start);
        s.membership = membership;
        Ok(true)
    }

    /// The log id of the last applied entry.
    pub fn applied(&self) -> Option<LogId<NodeId>> {
        self.lock().applied
    }

    async fn write_marker(&self, marker: Marker) -> Result<(), StorageError<NodeId>> {
        let dir = self.dir.clone();
        let marked = self.marked.clone();
        tokio::task::spawn_blocking(move || {
            let mut marked = marked.lock().unwrap_or_else(|p| p.into_inner());
            if *marked > marker.applied {
                // A newer mark is in the file already: an older one would
                // point before the log openraft purged up to the newer.
                return Ok::<(), String>(());
            }
            let body = rmp_serde::to_vec(&marker).map_err(|e| e.to_string())?;
            let bytes = crate::storage::manifest::with_crc(body);
            crate::storage::chunk_log::write_file_durably(&dir, MARKER_FILE, &bytes)
                .map_err(|e| e.to_string())?;
            *marked = marker.applied;
            Ok(())
        })
        .await
        .map_err(|e| io_error(true, e))?
        .map_err(|e| io_error(true, e))
    }

    /// The replica's state with the log id and membership it is at.
    fn capture(&self) -> Result<(Meta, Vec<u8>), StorageError<NodeId>> {
        let mut s = self.lock();
        s.built += 1;
        let data = self.replica.snapshot().map_err(|e| io_error(false, e))?;
        let id = match s.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, s.built),
            None => format!("0-0-{}", s.built),
        };
        let meta = SnapshotMeta {
            last_log_id: s.applied,
            last_membership: s.membership.clone(),
            snapshot_id: id,
        };
        Ok((meta, data))
    }
}

fn decode_marker(bytes: &[u8]) -> Result<Marker, String> {
    let body = crate::storage::manifest::checked_crc(bytes)?;
    rmp_serde::from_slice(body).map_err(|e| e.to_string())
}

impl RaftSnapshotBuilder<TypeConfig> for ReplicaStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, data) = self.capture()?;
        // Everything applied up to the captured id is durable after this,
        // so the log before it may go.
        self.replica.flush().await.map_err(|e| io_error(true, e))?;
        let marker = Marker { applied: meta.last_log_id, membership: meta.last_membership.clone() };
        self.write_marker(marker).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for ReplicaStore {
    type SnapshotBuilder = ReplicaStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let s = self.lock();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandReply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let started = std::time::Instant::now();
        for entry in entries {
            // Applied under the lock that `capture` takes, so a snapshot
            // never sees a command without its log id or the reverse.
            let mut s = self.lock();
            let id = entry.log_id;
            let replica = &self.replica;
            let reply = super::apply_entry(entry, &mut s.membership, |at, c| replica.apply(at, c))
                .map_err(|e| {
                    tracing::error!(index = id.index, error = %e, "a replica could not apply a committed command; it stops");
                    StorageIOError::write_state_machine(openraft::AnyError::error(format!(
                        "applying log index {}: {e}",
                        id.index
                    )))
                })?;
            replies.push(reply);
            s.applied = Some(id);
        }
        tracing::debug!(target: super::TIMING, stage = "apply", entries = replies.len(), us = started.elapsed().as_micros() as u64);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> ReplicaStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.replica.restore(snapshot.into_inner()).await.map_err(|e| io_error(true, e))?;
        let marker = Marker { applied: meta.last_log_id, membership: meta.last_membership.clone() };
        self.write_marker(marker).await?;
        let mut s = self.lock();
        s.applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        if self.lock().applied.is_none() {
            return Ok(None);
        }
        // The current state, not the last one marked: the replica keeps no
        // copy, and the log after it is never purged before a build.
        let (meta, data) = self.capture()?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    /// Holds the bytes of the last snapshot restored.
    #[derive(Default)]
    struct Bytes(Mutex<Vec<u8>>);

    impl Replica for Bytes {
        fn apply(&self, _: LogPosition, _: &[u8]) -> Result<Vec<u8>, String> {
            Ok(Vec::new())
        }
        fn flush(&self) -> BoxedFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn snapshot(&self) -> Result<Vec<u8>, String> {
            Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
        }
        fn restore(&self, snapshot: Vec<u8>) -> BoxedFuture<Result<(), String>> {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
            Box::pin(async { Ok(()) })
        }
    }

    /// Postmortem: a snapshot built while one from the leader was being
    /// installed wrote `APPLIED` through the same temporary file: one of the
    /// two failed its rename (the replica stopped with a storage error), or
    /// the older mark landed last, pointing before the purged log.
    #[test]
    fn concurrent_build_and_install_keep_the_newest_mark() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = ReplicaStore::open(dir.path(), Arc::new(Bytes::default())).expect("opens");
        rt.block_on(async {
            for i in 1..=60u64 {
                let meta = SnapshotMeta {
                    last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), i)),
                    last_membership: StoredMembership::default(),
                    snapshot_id: format!("installed-{i}"),
                };
                let (mut builder, mut installer) = (store.clone(), store.clone());
                let data = Box::new(Cursor::new(i.to_le_bytes().to_vec()));
                let (built, installed) =
                    tokio::join!(builder.build_snapshot(), installer.install_snapshot(&meta, data));
                built.expect("the build succeeds");
                installed.expect("the install succeeds");
                let reopened =
                    ReplicaStore::open(dir.path(), Arc::new(Bytes::default())).expect("reopens");
                assert_eq!(reopened.applied(), meta.last_log_id, "round {i}");
            }
        });
    }
}

#[cfg(test)]
mod apply_tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    /// Applies commands until one says "fail", which it cannot apply.
    #[derive(Default)]
    struct FailsOn(Mutex<Vec<u64>>);

    impl Replica for FailsOn {
        fn apply(&self, at: LogPosition, command: &[u8]) -> Result<Vec<u8>, String> {
            if command == b"fail" {
                return Err("its storage failed".into());
            }
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(at.index);
            Ok(Vec::new())
        }
        fn flush(&self) -> BoxedFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn snapshot(&self) -> Result<Vec<u8>, String> {
            Ok(Vec::new())
        }
        fn restore(&self, _: Vec<u8>) -> BoxedFuture<Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn entry(index: u64, command: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(super::super::Command(command.to_vec())),
        }
    }

    // A chunk replica that could not apply a committed write (its chunk
    // unavailable after a failed write or sync, the node stopping) answered
    // it with an error and went on as if it were applied: that replica then
    // lacked the write for good while the others had it.
    #[test]
    fn a_command_the_replica_cannot_apply_stops_it_unapplied() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let replica = Arc::new(FailsOn::default());
        let mut store = ReplicaStore::open(dir.path(), replica.clone()).expect("opens");
        rt.block_on(async {
            let entries = vec![entry(1, b"a"), entry(2, b"fail"), entry(3, b"b")];
            assert!(store.apply(entries).await.is_err(), "a storage error for openraft");
            let (applied, _) = store.applied_state().await.expect("state");
            assert_eq!(applied.map(|l| l.index), Some(1), "applied up to the failed command");
        });
        assert_eq!(*replica.0.lock().unwrap_or_else(|p| p.into_inner()), vec![1]);
    }
}
