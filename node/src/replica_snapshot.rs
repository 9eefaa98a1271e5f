//! Snapshots of a chunk replica: the list of its log segments, which a
//! replica that needs the whole state copies by segment reads.
//!
//! A chunk keeps its state in its own log, so a snapshot needs no copy on
//! the replica that builds it: [`ChunkSnapshot`] lists the segments of the
//! chunk (and of the ranges riding on it) as they are at the snapshot's
//! log index, registered as regions of this node ([`crate::segments`]). A
//! snapshot is a few hundred bytes whatever the chunk's size.
//!
//! The replica that receives it copies the regions from the node that
//! listed them, verifying every entry, into its staging directory, folds
//! them into the records they hold and makes its chunk hold exactly those
//! (Raft then sends the entries after the snapshot's index). The copy runs
//! in a task of its own ([`Incoming`]), started by the first message that
//! carries the snapshot: openraft gives each snapshot message a timeout,
//! and a copy of a large chunk outlasts it. Until the copy is done the
//! message is answered "still copying" (the leader sends it again after a
//! pause); a later snapshot of the same chunk goes on from what the copy
//! staged (the regions it shares with the earlier one, the active segment
//! from where it was).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::consensus::replica_store::Prepared;
use crate::consensus::NodeId;
use crate::replica::RiderSpec;
use crate::segments::{
    CopyError, CopyProgress, FoldedRows, RegionRef, Regions, SegmentReader, Staging,
};
use crate::storage::chunk::SegmentImage;

/// A snapshot of a replicated chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSnapshot {
    /// The chunk's bounds (start, end) at the snapshot.
    pub bounds: (Vec<u8>, Option<Vec<u8>>),
    /// The chunk's log segments, lowest id first.
    pub chunk: Vec<RegionRef>,
    /// Each riding range's log segments.
    pub riders: Vec<(RiderSpec, Vec<RegionRef>)>,
}

impl ChunkSnapshot {
    /// The bytes of every region it lists.
    pub fn total_bytes(&self) -> u64 {
        self.regions().iter().map(|r| r.len).sum()
    }

    /// Every region it lists.
    fn regions(&self) -> Vec<RegionRef> {
        self.chunk.iter().chain(self.riders.iter().flat_map(|(_, r)| r)).cloned().collect()
    }

    /// The node whose regions it lists.
    pub fn source(&self) -> Option<NodeId> {
        self.chunk.first().map(|r| r.owner)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("undecodable chunk snapshot: {e}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("chunk snapshots always encode")
    }
}

/// Registers `images` as regions of this node.
pub fn register(regions: &Regions, images: &[SegmentImage]) -> Result<Vec<RegionRef>, String> {
    images.iter().map(|i| regions.register(i)).collect()
}

/// What a node's replicas snapshot with: its regions, a reader of other
/// nodes' regions, and the copies under way (for `cluster status`).
pub struct SnapshotCopies {
    pub regions: Arc<Regions>,
    pub reader: Arc<dyn SegmentReader>,
    /// Copies under way, by chunk group. A std mutex: held only to add,
    /// remove or list.
    copying: Mutex<BTreeMap<u64, Arc<CopyProgress>>>,
}

impl SnapshotCopies {
    pub fn new(regions: Arc<Regions>, reader: Arc<dyn SegmentReader>) -> Self {
        SnapshotCopies { regions, reader, copying: Mutex::new(BTreeMap::new()) }
    }

    fn copying(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<CopyProgress>>> {
        self.copying.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `progress` from the copies under way (unless a newer copy
    /// of the group took its place).
    fn forget(&self, group: u64, progress: &Arc<CopyProgress>) {
        let mut copying = self.copying();
        if copying.get(&group).is_some_and(|p| Arc::ptr_eq(p, progress)) {
            copying.remove(&group);
        }
    }

    /// The copies under way on this node: chunk group and progress.
    pub fn under_way(&self) -> Vec<(u64, Arc<CopyProgress>)> {
        self.copying().iter().map(|(g, p)| (*g, p.clone())).collect()
    }
}

/// How long a copy that this node's disk failed (full, say) waits before
/// it is tried again.
const STAGING_FAILED_PAUSE_MS: u64 = 10_000;

/// Times an install makes its snapshot's copy again when a newer one
/// replaced it.
const INSTALL_COPY_ATTEMPTS: u32 = 5;

/// A copy of one snapshot, under way or done.
struct Fetch {
    /// The snapshot it copies (its bytes, as the leader sent them).
    snapshot: Vec<u8>,
    progress: Arc<CopyProgress>,
    /// `None` while it runs, then its outcome.
    done: tokio::sync::watch::Receiver<Option<Result<(), String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A replica's copies of snapshots sent to it.
pub struct Incoming {
    group: u64,
    copies: Arc<SnapshotCopies>,
    staging_dir: PathBuf,
    /// The staged copies, taken by the copy task while it runs and by the
    /// fold; a tokio mutex, held across the copy's awaits.
    staging: Arc<tokio::sync::Mutex<Option<Staging>>>,
    /// The copy of the latest snapshot sent. A std mutex, never held
    /// across an await.
    fetch: Mutex<Option<Fetch>>,
    /// A snapshot is being installed from its copy ([`Incoming::stage`]):
    /// a newer one sent meanwhile waits, and does not replace that copy.
    installing: std::sync::atomic::AtomicBool,
}

impl Incoming {
    pub fn new(group: u64, copies: Arc<SnapshotCopies>, staging_dir: PathBuf) -> Self {
        Incoming {
            group,
            copies,
            staging_dir,
            staging: Arc::new(tokio::sync::Mutex::new(None)),
            fetch: Mutex::new(None),
            installing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn copies(&self) -> &Arc<SnapshotCopies> {
        &self.copies
    }

    /// The directory its copies are staged in.
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fetch>> {
        self.fetch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copy of `snapshot`: the one under way or done, or a new one
    /// (which ends a copy of another snapshot and goes on from what it
    /// staged).
    fn start(&self, snapshot: &[u8], parsed: &ChunkSnapshot) -> (Arc<CopyProgress>, Receiver) {
        let mut fetch = self.lock();
        if let Some(f) = fetch.as_ref() {
            let failed = matches!(&*f.done.borrow(), Some(Err(_)));
            if f.snapshot == snapshot && !failed {
                return (f.progress.clone(), f.done.clone());
            }
        }
        if let Some(old) = fetch.take() {
            old.task.abort();
        }
        let progress = Arc::new(CopyProgress::new(parsed.source().unwrap_or_default()));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let regions = parsed.regions();
        let (staging, dir) = (self.staging.clone(), self.staging_dir.clone());
        let (reader, copies, group) = (self.copies.reader.clone(), self.copies.clone(), self.group);
        let p = progress.clone();
        copies.copying().insert(group, p.clone());
        let task = tokio::spawn(async move {
            let result = async {
                let mut staging = staging.lock().await;
                if staging.is_none() {
                    *staging = Some(Staging::open(&dir).map_err(|e| e.to_string())?);
                }
                let staged = staging.as_mut().expect("opened above");
                let copied = staged.copy(&reader, &regions, &p).await;
                if let Err(CopyError::Staging { .. }) = &copied {
                    // This node's disk failed the copy (full, say): what
                    // was staged goes, so the space is not kept from the
                    // chunks the node holds already, and the copy is not
                    // tried again for a while (the failure is told only
                    // then; until then the sender hears "still copying").
                    // Postmortem: a joiner whose disk filled kept its
                    // partial copy and tried it again 1,180 times; its
                    // other replicas could not write.
                    *staging = None;
                    drop(staging);
                    tokio::time::sleep(Duration::from_millis(STAGING_FAILED_PAUSE_MS)).await;
                }
                copied.map_err(|e| e.to_string())
            }
            .await;
            match &result {
                Ok(()) => tracing::info!(
                    chunk = group,
                    from = p.source,
                    bytes = p.total_bytes(),
                    ms = p.started.elapsed().as_millis() as u64,
                    "copied a snapshot's segments"
                ),
                Err(e) => {
                    tracing::warn!(chunk = group, from = p.source, error = %e, "snapshot copy failed")
                }
            }
            copies.forget(group, &p);
            let _ = tx.send(Some(result));
        });
        *fetch = Some(Fetch {
            snapshot: snapshot.to_vec(),
            progress: progress.clone(),
            done: rx.clone(),
            task,
        });
        (progress, rx)
    }

    /// Starts (or joins) the copy of `snapshot` and waits for it up to
    /// `wait`.
    pub async fn prepare(&self, snapshot: &[u8], wait: Duration) -> Prepared {
        let parsed = match ChunkSnapshot::decode(snapshot) {
            Ok(p) => p,
            Err(e) => return Prepared::Failed(e),
        };
        let other = self.lock().as_ref().is_some_and(|f| f.snapshot != snapshot);
        if other && self.installing.load(std::sync::atomic::Ordering::Acquire) {
            // Another snapshot is being installed from its copy: this one
            // comes after it (the sender tries again).
            return Prepared::Copying { copied_bytes: 0, total_bytes: parsed.total_bytes() };
        }
        let (progress, mut done) = self.start(snapshot, &parsed);
        let outcome = tokio::time::timeout(wait, async {
            done.wait_for(Option::is_some).await.map(|r| r.clone().expect("waited for an outcome"))
        })
        .await;
        match outcome {
            Ok(Ok(r)) => match r {
                Ok(()) => Prepared::Ready,
                Err(e) => Prepared::Failed(e),
            },
            Ok(Err(_)) => Prepared::Failed("the copy was replaced by a newer one".into()),
            Err(_) => Prepared::Copying {
                copied_bytes: progress.copied_bytes(),
                total_bytes: progress.total_bytes(),
            },
        }
    }

    /// Copies `snapshot` (or waits for its copy under way) and stages it
    /// for its install: the chunk's log segments placed in `place_in`
    /// when given and they form a log ([`Staging::place`]), else the
    /// records of the chunk within its bounds; and the records of each
    /// rider. The staged copies are dropped afterwards.
    pub async fn stage(
        &self,
        snapshot: &ChunkSnapshot,
        bytes: &[u8],
        place_in: Option<PathBuf>,
    ) -> Result<Installable, String> {
        use std::sync::atomic::Ordering;
        /// Clears [`Incoming::installing`] however the install ends.
        struct Installing<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Installing<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.installing.store(true, Ordering::Release);
        let _installing = Installing(&self.installing);
        // openraft treats a failed install as a broken state machine and
        // stops the group: a copy replaced meanwhile (by one that began
        // before this install) is made again, never a failure.
        // Postmortem: "the copy of the snapshot was replaced by a newer
        // one" stopped a new replica's group mid-install.
        let mut attempts = 0;
        loop {
            let (_, mut done) = self.start(bytes, snapshot);
            match done.wait_for(Option::is_some).await.map(|r| r.clone()) {
                Ok(r) => r.expect("waited for an outcome")?,
                Err(_) if attempts < INSTALL_COPY_ATTEMPTS => {
                    attempts += 1;
                    continue;
                }
                Err(_) => return Err("the copy of the snapshot kept being replaced".into()),
            }
            let mut staging = self.staging.lock().await;
            let Some(mut staged) = staging.take() else {
                // Installed once already, and its copy dropped: copied again.
                *self.lock() = None;
                if attempts < INSTALL_COPY_ATTEMPTS {
                    attempts += 1;
                    continue;
                }
                return Err("the snapshot's copy is gone".into());
            };
            // Folding reads every staged byte: off the runtime's workers.
            let (snapshot, place_in) = (snapshot.clone(), place_in.clone());
            let (staged, folded) = tokio::task::spawn_blocking(move || {
                let folded = stage(&mut staged, &snapshot, place_in.as_deref());
                // Folded: the staged copies are of no more use.
                (folded.is_err().then_some(staged), folded)
            })
            .await
            .map_err(|e| format!("the fold of the snapshot stopped: {e}"))?;
            *staging = staged;
            // The copy stays known as done: the same snapshot sent again
            // (its sender timed out while this one was installed) is
            // answered at once instead of being copied a second time.
            // Postmortem: a new replica copied its first 8 chunks twice.
            return folded;
        }
    }
}

type Receiver = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

/// A snapshot's chunk, staged for its install.
pub enum StagedChunk {
    /// The chunk's records within its bounds.
    Folded(FoldedRows),
    /// The chunk's log segments `first..=last`, placed in the directory
    /// [`Incoming::stage`] was given.
    Placed { first: u32, last: u32 },
}

/// A snapshot ready to install: its chunk, and the records of each rider.
pub struct Installable {
    pub chunk: StagedChunk,
    pub riders: Vec<(RiderSpec, FoldedRows)>,
}

/// Stages a snapshot from its copies: see [`Incoming::stage`].
fn stage(
    staged: &mut Staging,
    snapshot: &ChunkSnapshot,
    place_in: Option<&Path>,
) -> Result<Installable, String> {
    let placed = match place_in {
        Some(dir) => {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("emptying {}: {e}", dir.display())),
            }
            std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
            staged.place(&snapshot.chunk, dir).map_err(|e| e.to_string())?
        }
        None => None,
    };
    let chunk = match placed {
        Some((first, last)) => StagedChunk::Placed { first, last },
        None => {
            let (start, end) = &snapshot.bounds;
            let records =
                staged.fold(&snapshot.chunk, start, end.as_deref()).map_err(|e| e.to_string())?;
            StagedChunk::Folded(records)
        }
    };
    let riders = snapshot
        .riders
        .iter()
        .map(|(spec, regions)| {
            staged.fold(regions, b"", None).map(|r| (spec.clone(), r)).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    Ok(Installable { chunk, riders })
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(f) = self.lock().take() {
            f.task.abort();
            self.copies.forget(self.group, &f.progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::futures_lite::BoxedFuture;
    use crate::segments::contract_tests::sample_log;
    use crate::segments::ReadError;

    /// The owner's regions, each read taking a while.
    struct Slow(Arc<Regions>);

    impl SegmentReader for Slow {
        fn read(
            &self,
            region: &RegionRef,
            offset: u64,
            len: u32,
        ) -> BoxedFuture<Result<Vec<u8>, ReadError>> {
            let read = self.0.read(region.incarnation, region.region, offset, len);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                read
            })
        }
    }

    /// Postmortem: a newer snapshot sent while a replica installed an
    /// older one replaced the older one's copy under the install, which
    /// failed ("the copy of the snapshot was replaced by a newer one"); a
    /// failed install stops the group. The newer one now waits.
    #[tokio::test]
    async fn a_newer_snapshot_waits_for_the_install_of_the_one_before() {
        let dir = tempfile::tempdir().expect("a directory");
        let regions = Arc::new(Regions::new(1, "local".into()));
        let (log, oracle) = sample_log(&dir.path().join("log"), 7, 40, 16 * 1024);
        let refs = register(&regions, &log.images()).expect("registered");
        assert!(refs.len() >= 3, "several regions, so the copy takes a while");
        let older =
            ChunkSnapshot { bounds: (Vec::new(), None), chunk: refs.clone(), riders: Vec::new() };
        let newer = ChunkSnapshot { bounds: (vec![0], None), ..older.clone() };
        let copies = Arc::new(SnapshotCopies::new(regions.clone(), Arc::new(Slow(regions))));
        let incoming = Arc::new(Incoming::new(9, copies, dir.path().join("incoming")));
        let install = {
            let (incoming, older) = (incoming.clone(), older.clone());
            tokio::spawn(async move { incoming.stage(&older, &older.encode(), None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let prepared = incoming.prepare(&newer.encode(), Duration::from_millis(10)).await;
        assert!(matches!(prepared, Prepared::Copying { .. }), "{prepared:?}");
        let staged = install.await.expect("the install ran").expect("installed");
        let StagedChunk::Folded(records) = staged.chunk else { panic!("folded, as asked") };
        let got: BTreeMap<Vec<u8>, Vec<u8>> =
            records.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert_eq!(got, oracle, "the older snapshot's records, whole");
        // Then the newer one is copied.
        let prepared = incoming.prepare(&newer.encode(), Duration::from_secs(30)).await;
        assert_eq!(prepared, Prepared::Ready);
    }
}
