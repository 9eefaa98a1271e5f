//! `monotable backup` and `monotable restore`: a logical copy of a node's
//! data at one pinned snapshot, and its return into a node.
//!
//! A backup is a directory:
//!
//! ```text
//! DIR/manifest.json     what the backup holds (written last: a backup
//!                       without it is incomplete)
//! DIR/ranges/NNNNNN.run the records of one range, in key order
//! ```
//!
//! Each range file is a sorted run in the shuffle's format
//! ([`crate::shuffle::runs`]): CRC32C-framed `(key, value)` entries in
//! strictly increasing key order, ended by a footer that counts them. The
//! manifest gives, per range, its options, replica count, file, record
//! count and file size, and the definition of every view and sink
//! ([`monotable_proto::ViewDefinition`]).
//!
//! Every range is read at one snapshot pinned for the whole backup, so the
//! copy is consistent: it holds exactly the writes acknowledged before the
//! snapshot, across every range. Ranges a view maintains (a mapper's target,
//! a reducer's tree levels `NAME#N`) and a running job's staging range
//! (`job.NAME.staging`) are not copied: restore creates the views again
//! from their definitions, and they rebuild those ranges from the data.
//!
//! Restore reads every file through and checks it against the manifest
//! (every frame's CRC, key order, footer, record count, size, the row
//! limits; names and mapper cycles) before it writes anything; it refuses a
//! node that already has a range or a view of the backup's names. It then
//! creates the ranges and the views empty (mappers each after the mapper
//! whose target it reads, then reducers; sinks only with `--sinks`, as they
//! write to the Redis servers the backup names), so that what only the node
//! can refuse is found before any record is written, and undone. Then it
//! loads the records in pipelined batches, which the views follow, and
//! waits until every view has caught up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use monotable_client::{Batch, Client, ErrorCode, RangeInfo, RangeOptions, Scan, ViewDefinition};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::shuffle::runs::{RunReader, RunWriter};

/// The manifest's `format` field.
const FORMAT: &str = "monotable-backup";
/// The manifest's `version` a backup writes: range files in blocks of
/// entries ([`crate::shuffle::runs`]).
const VERSION: u32 = 2;
/// The versions restore reads: 1 is the same manifest with range files
/// of one entry per frame, which the run reader still reads.
const VERSIONS_READ: [u32; 2] = [1, 2];
const MANIFEST: &str = "manifest.json";
/// The manifest while it is written.
const STAGED_MANIFEST: &str = "manifest.json.tmp";
/// Bytes a range file's writer and reader buffer.
const FILE_BUFFER_BYTES: usize = 1 << 20;
/// Records per write batch on restore, and batches in flight at once.
const RESTORE_BATCH_RECORDS: usize = 1_000;
const RESTORE_BATCHES_IN_FLIGHT: usize = 8;
/// Key and value bytes per restore batch.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// What a backup holds (`DIR/manifest.json`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    /// The version of the node backed up.
    pub server_version: String,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The node's snapshot seq every range was read at.
    pub snapshot: u64,
    pub ranges: Vec<RangeEntry>,
    /// Every view and sink, as created.
    pub views: Vec<ViewDefinition>,
}

/// One range of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct RangeEntry {
    pub name: String,
    pub options: RangeOptions,
    /// Replicas of each chunk (1: a range of the node's own).
    pub replicas: u32,
    /// The range file, relative to the backup directory.
    pub file: String,
    pub records: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Whether range `name` is one that views maintain or a job stages (not
/// copied: restore rebuilds it).
fn derived(name: &str, mapper_targets: &BTreeSet<&str>) -> bool {
    name.contains('#')
        || mapper_targets.contains(name)
        || (name.starts_with("job.") && name.ends_with(".staging"))
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Creates `dir` (or takes an empty one), refusing one that holds files.
fn fresh_dir(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("{} is not empty: back up into a new directory", dir.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    std::fs::create_dir(dir.join("ranges"))
        .with_context(|| format!("cannot create {}/ranges", dir.display()))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// `monotable backup DIR`: copies every range (but the derived ones) and
/// every view definition at one snapshot into `dir`.
pub async fn backup(client: &Client, dir: &Path) -> Result<()> {
    crate::file_modes::restrict_new_files();
    fresh_dir(dir)?;
    let written = write_backup(client, dir).await;
    if written.is_err() {
        // Nothing half-made stays behind to be taken for a backup.
        let _ = std::fs::remove_dir_all(dir.join("ranges"));
        let _ = std::fs::remove_file(dir.join(STAGED_MANIFEST));
    }
    written
}

async fn write_backup(client: &Client, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let snapshot = client.snapshot().await.context("cannot pin a snapshot")?;
    let created_unix_ms = now_unix_ms();
    let views = client.view_definitions().await.context("cannot list the views")?;
    let ranges = client.list_ranges().await.context("cannot list the ranges")?;
    let targets: BTreeSet<&str> = views
        .iter()
        .filter_map(|v| match v {
            ViewDefinition::Mapper { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    let mut entries = Vec::new();
    for (i, range) in ranges.iter().filter(|r| !derived(&r.name, &targets)).enumerate() {
        let file = format!("ranges/{:06}.run", i + 1);
        let (records, bytes) = copy_range(client, range, snapshot, &dir.join(&file))
            .await
            .with_context(|| format!("cannot back up range {:?}", range.name))?;
        eprintln!("{}: {records} records, {bytes} bytes", range.name);
        entries.push(RangeEntry {
            name: range.name.clone(),
            options: range.options,
            replicas: range.chunks.first().map_or(1, |c| c.replicas.len().max(1) as u32),
            file,
            records,
            bytes,
        });
    }
    sync_dir(&dir.join("ranges"))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        server_version: client.server().server_version.clone(),
        created_unix_ms,
        snapshot,
        ranges: entries,
        views,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest encodes");
    let staged = dir.join(STAGED_MANIFEST);
    let mut f = std::fs::File::create(&staged)
        .with_context(|| format!("cannot create {}", staged.display()))?;
    f.write_all(&text).and_then(|()| f.sync_all()).context("cannot write the manifest")?;
    std::fs::rename(&staged, dir.join(MANIFEST)).context("cannot write the manifest")?;
    sync_dir(dir)?;
    client.release_snapshot(snapshot).await.ok();
    let records: u64 = manifest.ranges.iter().map(|r| r.records).sum();
    eprintln!(
        "backed up {} ranges ({records} records) and {} views at snapshot {snapshot} into {} in {:.2} s",
        manifest.ranges.len(),
        manifest.views.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes range `range` at `snapshot` into the run file `path`: (records,
/// file bytes).
async fn copy_range(
    client: &Client,
    range: &RangeInfo,
    snapshot: u64,
    path: &Path,
) -> Result<(u64, u64)> {
    let mut out = RunWriter::create_file(path, FILE_BUFFER_BYTES)?;
    let mut stream = client.scan_stream(&range.name, Scan::all().at(snapshot));
    let mut records = 0u64;
    while let Some(record) = stream.next().await {
        let record = record?;
        out.push(&record.key, &record.value)?;
        records += 1;
    }
    let bytes = out.finish_durable()?;
    Ok((records, bytes))
}

/// Reads a backup's manifest and checks every range file against it;
/// nothing is written. Returns the manifest.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).with_context(|| {
        format!("cannot read {} (a backup without it is incomplete)", path.display())
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT || !VERSIONS_READ.contains(&manifest.version) {
        bail!(
            "{} is {:?} version {}; this monotable reads {FORMAT:?} versions 1 and {VERSION}",
            path.display(),
            manifest.format,
            manifest.version
        );
    }
    check_names(&manifest)?;
    for r in &manifest.ranges {
        verify_range(dir, r).with_context(|| format!("range {:?} is damaged", r.name))?;
    }
    Ok(manifest)
}

/// The manifest's names as the node would take them: valid, each range
/// and view once, no range that a mapper of the backup maintains, at
/// least one replica. Checked before anything is written, so a restore
/// does not stop halfway on one.
fn check_names(manifest: &Manifest) -> Result<()> {
    let valid = |what: &str, name: &str| {
        crate::node::validate_name(what, name).map_err(|e| anyhow::anyhow!("the manifest: {e}"))
    };
    let mut ranges = BTreeSet::new();
    for r in &manifest.ranges {
        valid("range", &r.name)?;
        if !ranges.insert(r.name.as_str()) {
            bail!("the manifest lists range {:?} twice", r.name);
        }
        if r.replicas == 0 {
            bail!("the manifest gives range {:?} no replicas", r.name);
        }
    }
    let mut views = BTreeSet::new();
    for v in &manifest.views {
        valid("view", v.name())?;
        if !views.insert(v.name()) {
            bail!("the manifest lists view {:?} twice", v.name());
        }
        match v {
            ViewDefinition::Mapper { source, target, .. } => {
                valid("range", source)?;
                valid("range", target)?;
                if ranges.contains(target.as_str()) {
                    bail!(
                        "the manifest lists range {target:?}, which mapper {:?} writes",
                        v.name()
                    );
                }
            }
            ViewDefinition::Reducer { range, .. } => valid("range", range)?,
            ViewDefinition::Sink { .. } => {}
        }
    }
    let mut targets = BTreeMap::new();
    for v in &manifest.views {
        if let ViewDefinition::Mapper { target, .. } = v {
            if let Some(other) = targets.insert(target.as_str(), v.name()) {
                bail!("the manifest's mappers {other:?} and {:?} both write {target:?}", v.name());
            }
        }
    }
    order_views(&manifest.views.iter().collect::<Vec<_>>())?;
    Ok(())
}

/// The file of range entry `r`, refusing a path that leaves the backup.
fn range_file(dir: &Path, r: &RangeEntry) -> Result<PathBuf> {
    let rel = Path::new(&r.file);
    let plain = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        bail!("its file {:?} is not a path inside the backup", r.file);
    }
    Ok(dir.join(rel))
}

fn verify_range(dir: &Path, r: &RangeEntry) -> Result<()> {
    let path = range_file(dir, r)?;
    // A plain file, reached without a symbolic link: nothing outside the
    // backup, and nothing that blocks a read (a FIFO).
    for p in [dir.join("ranges"), path.clone()] {
        let meta = std::fs::symlink_metadata(&p)
            .with_context(|| format!("cannot read {}", p.display()))?;
        let expected = if p == path { meta.is_file() } else { meta.is_dir() };
        if !expected {
            bail!(
                "{} is not a plain {}",
                p.display(),
                if p == path { "file" } else { "directory" }
            );
        }
    }
    let size =
        std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size != r.bytes {
        bail!("{} holds {size} bytes, the manifest says {}", path.display(), r.bytes);
    }
    let mut reader = RunReader::open_file(&path, FILE_BUFFER_BYTES)?;
    let mut records = 0u64;
    while let Some((key, value)) = reader.next_entry()? {
        records += 1;
        monotable_proto::limits::check_row_size(&key, Some(&value)).map_err(|e| {
            anyhow::anyhow!("record {records} of {} is over a limit: {}", path.display(), e.message)
        })?;
    }
    if records != r.records {
        bail!("{} holds {records} records, the manifest says {}", path.display(), r.records);
    }
    Ok(())
}

/// What `monotable restore` does besides loading the data.
pub struct RestoreOptions {
    /// Create the backup's sinks too.
    pub sinks: bool,
    /// Return once the data is loaded and the views created, without
    /// waiting for the views to catch up.
    pub no_wait: bool,
    /// Replicas of every range but the Redis databases, instead of the
    /// backup's counts.
    pub replicas: Option<u32>,
}

/// What a restore has made on the node so far, undone when it fails
/// before loading any record.
#[derive(Default)]
struct Made<'a> {
    ranges: Vec<&'a str>,
    views: Vec<&'a ViewDefinition>,
}

impl Made<'_> {
    /// The targets of the mappers made: ranges too (a mapper's drop leaves
    /// its target on a node's own range).
    fn targets(&self) -> impl Iterator<Item = &str> {
        self.views.iter().filter_map(|v| match v {
            ViewDefinition::Mapper { target, .. } => Some(target.as_str()),
            _ => None,
        })
    }

    fn describe(&self) -> String {
        let ranges: Vec<String> =
            self.ranges.iter().copied().chain(self.targets()).map(|r| format!("{r:?}")).collect();
        let views: Vec<String> = self.views.iter().map(|v| format!("{:?}", v.name())).collect();
        format!("ranges [{}] and views [{}]", ranges.join(", "), views.join(", "))
    }

    /// Drops what was made (views first, the last made first); the error
    /// names what is left.
    async fn undo(&mut self, client: &Client) -> Result<()> {
        let targets: Vec<String> = self.targets().map(str::to_owned).collect();
        while let Some(v) = self.views.last() {
            let dropped = match v {
                ViewDefinition::Mapper { name, .. } => client.drop_mapper(name).await,
                ViewDefinition::Reducer { name, .. } => client.drop_reducer(name).await,
                ViewDefinition::Sink { name, .. } => client.drop_sink(name).await,
            };
            dropped.map_err(|e| anyhow::anyhow!("{e}; left: {}", self.describe()))?;
            self.views.pop();
        }
        for target in targets.iter().rev() {
            match client.drop_range(target).await {
                // On a cluster the mapper's drop took its target with it.
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::RangeNotFound) => {}
                Err(e) => bail!("{e}; left: range {target:?} and {}", self.describe()),
            }
        }
        while let Some(r) = self.ranges.last() {
            client
                .drop_range(r)
                .await
                .map_err(|e| anyhow::anyhow!("{e}; left: {}", self.describe()))?;
            self.ranges.pop();
        }
        Ok(())
    }
}

/// `monotable restore DIR`: checks the backup, then creates its ranges and
/// views on the node `client` speaks to (empty: whatever the node refuses
/// is found before any record is written, and what was made is dropped
/// again), then loads the records, which the views follow.
pub async fn restore(client: &Client, dir: &Path, options: RestoreOptions) -> Result<()> {
    let started = Instant::now();
    let manifest = verify(dir)?;
    let records: u64 = manifest.ranges.iter().map(|r| r.records).sum();
    eprintln!(
        "verified {} ranges ({records} records) and {} views",
        manifest.ranges.len(),
        manifest.views.len()
    );
    let views: Vec<&ViewDefinition> = manifest
        .views
        .iter()
        .filter(|v| options.sinks || !matches!(v, ViewDefinition::Sink { .. }))
        .collect();
    let views = order_views(&views)?;
    refuse_clashes(client, &manifest, &views).await?;
    let mut made = Made::default();
    if let Err(e) = create_empty(client, &manifest, &views, options.replicas, &mut made).await {
        let undone = made.undo(client).await;
        return Err(match undone {
            Ok(()) => e.context("the node refused the backup; nothing was kept"),
            Err(left) => e.context(format!(
                "the node refused the backup, and what restore made could not all be \
                 dropped ({left}): drop it before running restore again"
            )),
        });
    }
    for r in &manifest.ranges {
        if let Err(e) = load_range(client, dir, r).await {
            return Err(e.context(format!(
                "restore stopped while loading range {:?}; it made {}: drop them (the views \
                 first) before running restore again",
                r.name,
                made.describe()
            )));
        }
        eprintln!("{}: {} records", r.name, r.records);
    }
    let skipped = manifest.views.len() - views.len();
    if skipped > 0 {
        eprintln!("{skipped} sinks not created (restore --sinks creates them)");
    }
    if !options.no_wait {
        wait_caught_up(client, &views).await?;
    }
    eprintln!(
        "restored {} ranges ({records} records) and {} views from {} in {:.2} s",
        manifest.ranges.len(),
        views.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Creates the backup's ranges, then its views in order, recording each
/// in `made` once the node has made it. A Redis database range is made
/// as the Redis endpoint makes it (the node's options and replica count
/// for it: on a cluster, a replicated range).
async fn create_empty<'a>(
    client: &Client,
    manifest: &'a Manifest,
    views: &[&'a ViewDefinition],
    replicas: Option<u32>,
    made: &mut Made<'a>,
) -> Result<()> {
    for r in &manifest.ranges {
        let created = if crate::resp::keyspace::database_of_range(&r.name).is_some() {
            client.create_range(&r.name, RangeOptions::default()).await
        } else {
            client.create_range_replicated(&r.name, r.options, replicas.unwrap_or(r.replicas)).await
        };
        created.with_context(|| format!("cannot create range {:?}", r.name))?;
        made.ranges.push(&r.name);
    }
    for v in views {
        create_view(client, v)
            .await
            .with_context(|| format!("cannot create view {:?}", v.name()))?;
        made.views.push(v);
    }
    Ok(())
}

/// Refuses a node that has a range or view of the backup's names (or a
/// mapper target's).
async fn refuse_clashes(
    client: &Client,
    manifest: &Manifest,
    views: &[&ViewDefinition],
) -> Result<()> {
    let ranges: BTreeSet<String> = client
        .list_ranges()
        .await
        .context("cannot list the ranges")?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let existing: BTreeSet<String> = client
        .view_definitions()
        .await
        .context("cannot list the views")?
        .into_iter()
        .map(|v| v.name().to_owned())
        .collect();
    let mut clashes: Vec<String> = Vec::new();
    for r in &manifest.ranges {
        if ranges.contains(&r.name) {
            clashes.push(format!("range {:?}", r.name));
        }
    }
    for v in views {
        if existing.contains(v.name()) {
            clashes.push(format!("view {:?}", v.name()));
        }
        if let ViewDefinition::Mapper { target, .. } = v {
            if ranges.contains(target) {
                clashes.push(format!("range {target:?} (mapper {:?}'s target)", v.name()));
            }
        }
    }
    if !clashes.is_empty() {
        bail!(
            "the node already has {}: restore into a node without them (nothing was written)",
            clashes.join(", ")
        );
    }
    Ok(())
}

/// Loads range `r`'s file into it, batches pipelined (their keys are
/// distinct, so their order does not matter).
async fn load_range(client: &Client, dir: &Path, r: &RangeEntry) -> Result<()> {
    let mut reader = RunReader::open_file(&range_file(dir, r)?, FILE_BUFFER_BYTES)?;
    let mut in_flight: VecDeque<JoinHandle<Result<()>>> = VecDeque::new();
    let mut batch = Batch::new();
    let mut bytes = 0;
    loop {
        // The client runs on one thread: file reads between its awaits.
        let entry = reader.next_entry()?;
        let last = entry.is_none();
        if let Some((key, value)) = entry {
            bytes += key.len() + value.len();
            batch = batch.put(key, value);
        }
        let full = batch.len() >= RESTORE_BATCH_RECORDS || bytes >= RESTORE_BATCH_BYTES;
        if (full || last) && !batch.is_empty() {
            if in_flight.len() >= RESTORE_BATCHES_IN_FLIGHT {
                in_flight.pop_front().expect("a batch in flight").await??;
            }
            let (c, name, b) = (client.clone(), r.name.clone(), std::mem::take(&mut batch));
            bytes = 0;
            in_flight.push_back(tokio::spawn(async move {
                c.write(&name, b).await.map(drop).map_err(Into::into)
            }));
        }
        if last {
            break;
        }
    }
    for task in in_flight {
        task.await??;
    }
    Ok(())
}

/// Views in an order they can be created in: mappers first, each after
/// the mappers whose targets it reads; then reducers; then sinks. Errors:
/// mappers that read each other's targets in a cycle.
fn order_views<'a>(views: &[&'a ViewDefinition]) -> Result<Vec<&'a ViewDefinition>> {
    let rank = |v: &ViewDefinition| match v {
        ViewDefinition::Mapper { .. } => 0,
        ViewDefinition::Reducer { .. } => 1,
        ViewDefinition::Sink { .. } => 2,
    };
    let mut rest: Vec<&ViewDefinition> = views.to_vec();
    rest.sort_by_key(|v| rank(v));
    let mut out: Vec<&ViewDefinition> = Vec::with_capacity(rest.len());
    // Mapper targets not made yet: a mapper reading one waits for it.
    let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &rest {
        if let ViewDefinition::Mapper { target, .. } = v {
            *pending.entry(target.as_str()).or_default() += 1;
        }
    }
    while !rest.is_empty() {
        let ready = rest.iter().position(|v| match v {
            ViewDefinition::Mapper { source, .. } => !pending.contains_key(source.as_str()),
            _ => true,
        });
        let Some(ready) = ready else {
            let cycle: Vec<String> = rest
                .iter()
                .filter(|v| matches!(v, ViewDefinition::Mapper { .. }))
                .map(|v| format!("{:?}", v.name()))
                .collect();
            bail!(
                "the manifest's mappers {} read each other's targets in a cycle",
                cycle.join(", ")
            );
        };
        let v = rest.remove(ready);
        if let ViewDefinition::Mapper { target, .. } = v {
            if let Some(n) = pending.get_mut(target.as_str()) {
                *n -= 1;
                if *n == 0 {
                    pending.remove(target.as_str());
                }
            }
        }
        out.push(v);
    }
    Ok(out)
}

async fn create_view(client: &Client, v: &ViewDefinition) -> Result<()> {
    match v.clone() {
        ViewDefinition::Mapper { name, source, target, function } => {
            client.create_mapper(&name, &source, &target, function).await?
        }
        ViewDefinition::Reducer { name, range, function } => {
            client.create_reducer_with(&name, &range, function).await?
        }
        ViewDefinition::Sink { name, source, url, prefix } => {
            client.create_sink(&name, source, &url, &prefix).await?
        }
    }
    Ok(())
}

/// Waits until every view of `views` has finished its backfill and has no
/// changes pending, printing its progress now and then.
async fn wait_caught_up(client: &Client, views: &[&ViewDefinition]) -> Result<()> {
    let names: BTreeSet<&str> = views.iter().map(|v| v.name()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut said = Instant::now();
    loop {
        let statuses = client.list_views().await.context("cannot list the views")?;
        let behind: Vec<_> = statuses
            .iter()
            .filter(|s| names.contains(s.name.as_str()))
            .filter(|s| s.backfill.is_some() || s.pending_changes > 0)
            .collect();
        // A view the listing does not show yet (a cluster's node that has
        // not heard of it) is not caught up either.
        let listed = statuses.iter().filter(|s| names.contains(s.name.as_str())).count();
        if behind.is_empty() && listed == names.len() {
            return Ok(());
        }
        if said.elapsed() >= Duration::from_secs(5) {
            said = Instant::now();
            let shown: Vec<String> = behind
                .iter()
                .map(|s| match s.backfill {
                    Some((done, total)) if total > 0 => format!("{} {done}/{total}", s.name),
                    _ => format!("{} ({} changes pending)", s.name, s.pending_changes),
                })
                .collect();
            eprintln!("views catching up: {}", shown.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl std::fmt::Display for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "backup of monotable {:?} at snapshot {} ({} ms since the epoch)",
            self.server_version, self.snapshot, self.created_unix_ms
        )?;
        for r in &self.ranges {
            writeln!(
                f,
                "range {:?}: {} records, {} bytes, {} replicas",
                r.name, r.records, r.bytes, r.replicas
            )?;
        }
        for v in &self.views {
            let kind = match v {
                ViewDefinition::Mapper { .. } => "mapper",
                ViewDefinition::Reducer { .. } => "reducer",
                ViewDefinition::Sink { .. } => "sink",
            };
            writeln!(f, "{kind} {:?}", v.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monotable_client::{MapFunction, ReduceFunction};

    fn mapper(name: &str, source: &str, target: &str) -> ViewDefinition {
        ViewDefinition::Mapper {
            name: name.into(),
            source: source.into(),
            target: target.into(),
            function: MapFunction::Field { key_path: "a".into(), value_path: None },
        }
    }

    #[test]
    fn mappers_come_after_the_mappers_whose_targets_they_read() {
        let reducer = ViewDefinition::Reducer {
            name: "a".into(),
            range: "t2".into(),
            function: ReduceFunction::Builtin("count".into()),
        };
        let (m1, m2, m3) =
            (mapper("x", "t2", "t3"), mapper("y", "t1", "t2"), mapper("z", "r", "t1"));
        let views = [&reducer, &m1, &m2, &m3];
        let names: Vec<&str> =
            order_views(&views).expect("ordered").iter().map(|v| v.name()).collect();
        assert_eq!(names, ["z", "y", "x", "a"]);
        let (c1, c2) = (mapper("c1", "t2", "t1"), mapper("c2", "t1", "t2"));
        let cycle = order_views(&[&c1, &m3, &c2]).expect_err("a cycle").to_string();
        assert!(cycle.contains("\"c1\", \"c2\"") && cycle.contains("cycle"), "{cycle}");
        let own = mapper("own", "r", "r");
        assert!(order_views(&[&own]).is_err(), "a mapper of its own target");
    }

    #[test]
    fn manifest_names_are_checked_before_anything_is_written() {
        let range = |name: &str| RangeEntry {
            name: name.into(),
            options: RangeOptions::default(),
            replicas: 1,
            file: "ranges/000001.run".into(),
            records: 0,
            bytes: 0,
        };
        let manifest = |ranges: Vec<RangeEntry>, views: Vec<ViewDefinition>| Manifest {
            format: FORMAT.into(),
            version: VERSION,
            server_version: String::new(),
            created_unix_ms: 0,
            snapshot: 0,
            ranges,
            views,
        };
        assert!(check_names(&manifest(vec![range("r")], vec![mapper("m", "r", "t")])).is_ok());
        let bad = [
            (manifest(vec![range("a#1")], vec![]), "invalid range name"),
            (manifest(vec![range("r"), range("r")], vec![]), "twice"),
            (manifest(vec![RangeEntry { replicas: 0, ..range("r") }], vec![]), "no replicas"),
            (manifest(vec![range("r"), range("t")], vec![mapper("m", "r", "t")]), "which mapper"),
            (manifest(vec![], vec![mapper("m", "r", "t"), mapper("m", "r", "u")]), "twice"),
            (manifest(vec![], vec![mapper("../m", "r", "t")]), "invalid view name"),
            (manifest(vec![], vec![mapper("a", "r", "t"), mapper("b", "s", "t")]), "both write"),
            (manifest(vec![], vec![mapper("a", "u", "t"), mapper("b", "t", "u")]), "cycle"),
        ];
        for (m, says) in bad {
            let e = check_names(&m).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn derived_ranges_are_not_copied() {
        let targets: BTreeSet<&str> = ["idx"].into();
        assert!(derived("idx", &targets));
        assert!(derived("total#1", &targets));
        assert!(derived("job.wc.staging", &targets));
        assert!(!derived("r", &targets));
        assert!(!derived("redis.0", &targets));
    }

    #[test]
    fn a_range_file_outside_the_backup_is_refused() {
        let entry = |file: &str| RangeEntry {
            name: "r".into(),
            options: RangeOptions::default(),
            replicas: 1,
            file: file.into(),
            records: 0,
            bytes: 0,
        };
        let dir = Path::new("/backup");
        assert!(range_file(dir, &entry("ranges/000001.run")).is_ok());
        for bad in ["../x.run", "/etc/passwd", "ranges/../../x"] {
            assert!(range_file(dir, &entry(bad)).is_err(), "{bad}");
        }
    }
}
