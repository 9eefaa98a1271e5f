//! What the node does with its chunk directories at start-up, checked
//! against the catalog, and the rebuild of a lost catalog from them.
//!
//! The rule: damage is reported, never "repaired" by deleting. A chunk
//! directory is removed at start-up only when the node itself marked it
//! and the catalog does not name it: `DROPPED`, written before a drop
//! commits, or `CREATING`, written when a new chunk is made and taken off
//! once the catalog names it (a range creation, a sorted load or a bulk
//! backfill that did not commit: no acknowledged write ever reached it). A directory the catalog does not know is moved aside into
//! `<data>/orphaned/`, and only when the catalog demonstrably covers its
//! keys with other chunks (an interrupted split); anything else the
//! catalog does not explain (a range it does not know, a gap in a range)
//! stops the start with a message that names the way out:
//! `monotable serve --recover-catalog`, which rebuilds the catalog from the
//! chunks' descriptors.
//!
//! [`plan_start`] and [`plan_recovery`] only decide; they touch no file, so
//! every decision is unit tested.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, RangeMeta};
use crate::storage::chunk::ChunkMeta;
use crate::storage::descriptor::{self, ChunkDescriptor};

/// Where unknown chunk directories are moved, under the data directory.
pub const ORPHANED_DIR: &str = "orphaned";

/// One entry of the chunks directory, as found.
#[derive(Debug, Clone)]
pub struct FoundDir {
    pub path: PathBuf,
    /// The chunk id its name encodes; `None`: not a chunk directory name.
    pub id: Option<u64>,
    /// Its descriptor: `Ok(None)` when it has none (a directory from before
    /// descriptors), `Err` when it cannot be read.
    pub descriptor: Result<Option<ChunkDescriptor>, String>,
    /// Marked by a range drop.
    pub dropped: bool,
    /// Holds segment files: chunk data, whatever its descriptor says.
    pub has_segments: bool,
    /// Marked by a range creation (not yet named by the catalog then).
    pub creating: bool,
}

/// Reads every entry of the chunks directory.
pub fn scan_chunk_dirs(chunks_dir: &Path) -> std::io::Result<Vec<FoundDir>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(chunks_dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let id = (name.len() == 16).then(|| u64::from_str_radix(&name, 16).ok()).flatten();
        let descriptor = if path.is_dir() {
            ChunkDescriptor::read(&path).map_err(|e| e.to_string())
        } else {
            Err("not a directory".to_owned())
        };
        let dropped = descriptor::is_marked_dropped(&path);
        let has_segments = fs::read_dir(&path).is_ok_and(|entries| {
            entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "seg"))
        });
        let creating = descriptor::is_marked_creating(&path);
        found.push(FoundDir { path, id, descriptor, dropped, has_segments, creating });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Refuses a data directory written in an older format: the chunk
/// directories whose descriptor carries [`descriptor::FORMAT_FLOATS_APART`],
/// or that hold segments without any descriptor (older still), hold keys the
/// current tuple encoding would misread. The error names one of them and
/// the way out (export with the older version, load into a new data
/// directory).
pub fn refuse_old_format(data_dir: &Path, chunks_dir: &Path) -> Result<(), String> {
    let Ok(entries) = fs::read_dir(chunks_dir) else { return Ok(()) };
    let is_old = |dir: &Path| match ChunkDescriptor::format_of(dir) {
        Some(format) => format == descriptor::FORMAT_FLOATS_APART,
        None => {
            !dir.join(descriptor::DESCRIPTOR_FILE).exists()
                && fs::read_dir(dir).is_ok_and(|files| {
                    files.flatten().any(|f| f.path().extension().is_some_and(|x| x == "seg"))
                })
        }
    };
    let mut old: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| is_old(p)).collect();
    old.sort();
    let Some(first) = old.first() else { return Ok(()) };
    Err(format!(
        "the data directory {} is in format {} (or older) of an older Monotable ({} chunk \
         directories, e.g. {}), which encoded float keys apart from integers; this version reads format {} \
         only and has not touched it. Start it with the older version, export each range \
         with `monotable scan RANGE > RANGE.jsonl`, and load that into a new data directory \
         with `monotable load RANGE RANGE.jsonl` (then re-create the views)",
        data_dir.display(),
        descriptor::FORMAT_FLOATS_APART,
        old.len(),
        first.display(),
        descriptor::FORMAT,
    ))
}

/// What start-up does with the catalog's chunks and the directories.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartPlan {
    /// Catalog chunks to open, with what their descriptors must say.
    pub open: Vec<ChunkDescriptor>,
    /// Catalog chunks whose directory is missing: served as unavailable.
    pub missing: Vec<(ChunkMeta, String)>,
    /// Directories of a dropped range (marked, and the catalog forgot
    /// them): the drop is finished by removing them.
    pub finish_drop: Vec<PathBuf>,
    /// Directories marked `CREATING` that the catalog never named: removed.
    pub remove_uncommitted: Vec<PathBuf>,
    /// Catalog chunks marked by a drop that did not commit: unmarked.
    pub unmark: Vec<PathBuf>,
    /// Catalog chunks still marked by their range's creation (it committed
    /// just before a crash): unmarked.
    pub unmark_creating: Vec<PathBuf>,
    /// Directories the catalog does not need: moved into `orphaned/`.
    pub move_aside: Vec<(PathBuf, String)>,
    /// Catalog chunks whose descriptor still holds their range's former
    /// name (a rename, SWAPDB, did not finish): written anew.
    pub rename: Vec<(PathBuf, ChunkDescriptor)>,
}

/// Whether `chunks` (of one range, any order) cover the whole key space
/// exactly once.
pub fn tiles_key_space(chunks: &[&ChunkMeta]) -> bool {
    let mut sorted: Vec<&&ChunkMeta> = chunks.iter().collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start));
    let mut expect: Option<&[u8]> = Some(&[]);
    for c in sorted {
        match expect {
            Some(start) if start == c.start.as_slice() => expect = c.end.as_deref(),
            _ => return false,
        }
    }
    expect.is_none()
}

/// Decides what start-up does, or lists every way the catalog disagrees
/// with the chunk directories.
pub fn plan_start(
    ranges: &[RangeMeta],
    chunks: &[ChunkMeta],
    dirs: &[FoundDir],
    renaming: &[(u64, String)],
) -> Result<StartPlan, Vec<String>> {
    let mut plan = StartPlan::default();
    let mut problems = Vec::new();
    let range_by_id: BTreeMap<u64, &RangeMeta> = ranges.iter().map(|r| (r.id, r)).collect();
    let dir_by_id: BTreeMap<u64, &FoundDir> =
        dirs.iter().filter_map(|d| d.id.map(|id| (id, d))).collect();
    for range in ranges {
        let own: Vec<&ChunkMeta> = chunks.iter().filter(|c| c.range_id == range.id).collect();
        if !tiles_key_space(&own) {
            problems.push(format!(
                "the catalog's chunks of range {:?} do not cover its keys exactly once",
                range.name
            ));
        }
    }
    for chunk in chunks {
        let Some(range) = range_by_id.get(&chunk.range_id) else {
            problems.push(format!("the catalog's chunk {} belongs to no range", chunk.id));
            continue;
        };
        let expected = ChunkDescriptor {
            range_name: range.name.clone(),
            options: range.options,
            chunk: chunk.clone(),
        };
        match dir_by_id.get(&chunk.id) {
            None => plan.missing.push((chunk.clone(), "the chunk's directory is missing".into())),
            Some(dir) => {
                let former = |found: &ChunkDescriptor| {
                    let renamed =
                        ChunkDescriptor { range_name: range.name.clone(), ..found.clone() };
                    renamed == expected
                        && renaming
                            .iter()
                            .any(|(id, name)| *id == range.id && *name == found.range_name)
                };
                match &dir.descriptor {
                    Ok(Some(found)) if *found != expected && former(found) => {
                        plan.rename.push((dir.path.clone(), expected.clone()));
                    }
                    Ok(Some(found)) if *found != expected => problems.push(format!(
                        "{} describes {found:?}, the catalog {expected:?}",
                        dir.path.display()
                    )),
                    // An unreadable descriptor is the chunk's own damage:
                    // opening it reports that chunk unavailable.
                    _ => {}
                }
                if dir.dropped {
                    plan.unmark.push(dir.path.clone());
                }
                if dir.creating {
                    plan.unmark_creating.push(dir.path.clone());
                }
                plan.open.push(expected);
            }
        }
    }
    let known: std::collections::BTreeSet<u64> = chunks.iter().map(|c| c.id).collect();
    for dir in dirs {
        if dir.id.is_some_and(|id| known.contains(&id)) {
            continue;
        }
        if dir.dropped {
            plan.finish_drop.push(dir.path.clone());
            continue;
        }
        if dir.creating {
            // Made by a range creation (or a sorted load) the catalog never
            // recorded: no write was acknowledged from it (writes follow
            // the catalog's commit).
            // Postmortem: a kill -9 during FLUSHDB (which makes its range
            // again) left such a directory, and the node refused to start;
            // then every kill -9 during a bulk backfill left its loaded
            // chunks in `orphaned/` for good.
            plan.remove_uncommitted.push(dir.path.clone());
            continue;
        }
        let found = match &dir.descriptor {
            Ok(Some(found)) => found,
            Ok(None) if dir.has_segments => {
                problems.push(format!(
                    "{} holds chunk data without a descriptor (from an older version) that the catalog does not know",
                    dir.path.display()
                ));
                continue;
            }
            Ok(None) => {
                plan.move_aside
                    .push((dir.path.clone(), "unknown directory without chunk data".into()));
                continue;
            }
            Err(e) => {
                plan.move_aside.push((dir.path.clone(), format!("unknown directory: {e}")));
                continue;
            }
        };
        // By id alone: ids are never reused, and a rename (SWAPDB) leaves
        // a superseded chunk's descriptor with the former name.
        match range_by_id.get(&found.chunk.range_id) {
            Some(_) => {
                // The catalog covers the range's keys (else it was reported
                // above): this is a split's half or parent a crash left.
                plan.move_aside.push((
                    dir.path.clone(),
                    format!(
                        "chunk {} of range {:?} is superseded by the catalog's chunks (an interrupted split)",
                        found.chunk.id, found.range_name
                    ),
                ));
            }
            None => problems.push(format!(
                "{} holds chunk {} of range {:?} (id {}), which the catalog does not know",
                dir.path.display(),
                found.chunk.id,
                found.range_name,
                found.chunk.range_id
            )),
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// Carries out the file side of a start plan: finishes drops, removes
/// creations that did not commit, unmarks, moves orphans aside. Never
/// removes anything else.
pub fn apply_start_plan(data_dir: &Path, plan: &StartPlan) -> std::io::Result<()> {
    for path in &plan.finish_drop {
        tracing::info!(dir = %path.display(), "removing a dropped range's chunk directory");
        // Segments first, as a live drop does: a crash midway never leaves
        // segments without their descriptor and drop marker.
        crate::storage::chunk_log::remove_log_files(path)?;
        fs::remove_dir_all(path)?;
    }
    for path in &plan.remove_uncommitted {
        tracing::info!(dir = %path.display(), "removing a new chunk whose creation did not commit");
        crate::storage::chunk_log::remove_log_files(path)?;
        fs::remove_dir_all(path)?;
    }
    for path in &plan.unmark {
        tracing::info!(dir = %path.display(), "the range drop did not commit; keeping the chunk");
        descriptor::unmark_dropped(path)?;
    }
    for (path, descriptor) in &plan.rename {
        tracing::info!(dir = %path.display(), range = %descriptor.range_name, "the range was renamed; naming it so in the chunk's descriptor");
        descriptor.write(path).map_err(std::io::Error::other)?;
    }
    for path in &plan.unmark_creating {
        tracing::info!(dir = %path.display(), "the range creation committed; unmarking the chunk");
        descriptor::unmark_creating(path)?;
    }
    if !plan.move_aside.is_empty() {
        let aside = data_dir.join(ORPHANED_DIR);
        fs::create_dir_all(&aside)?;
        for (path, reason) in &plan.move_aside {
            let name = path.file_name().unwrap_or_default();
            let mut target = aside.join(name);
            let mut n = 1;
            while target.exists() {
                target = aside.join(format!("{}.{n}", name.to_string_lossy()));
                n += 1;
            }
            tracing::warn!(dir = %path.display(), to = %target.display(), %reason, "moving a chunk directory the catalog does not name aside");
            fs::rename(path, &target)?;
        }
        crate::storage::chunk_log::sync_dir(&aside)?;
    }
    Ok(())
}

/// A catalog rebuilt from chunk descriptors.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub ranges: Vec<RangeMeta>,
    pub chunks: Vec<ChunkMeta>,
    /// Directories not taken: superseded by newer chunks over the same
    /// keys, or without a readable descriptor. Moved aside.
    pub left_out: Vec<(PathBuf, String)>,
    /// The highest range or chunk id seen.
    pub max_id: u64,
}

/// Rebuilds ranges and chunks from descriptors. Where chunks of a range
/// overlap (the parent and halves of an interrupted split), the newest
/// (highest id) wins: halves are made from the parent once it takes no
/// more writes. Fails if a range's chunks then leave a gap.
pub fn plan_recovery(dirs: &[FoundDir]) -> Result<RecoveryPlan, Vec<String>> {
    let mut plan = RecoveryPlan::default();
    let mut problems = Vec::new();
    let mut by_range: BTreeMap<u64, Vec<(&FoundDir, &ChunkDescriptor)>> = BTreeMap::new();
    for dir in dirs {
        match (&dir.descriptor, dir.dropped) {
            (_, true) => {
                plan.left_out.push((dir.path.clone(), "marked by a range drop".into()));
            }
            _ if dir.creating => plan.left_out.push((
                dir.path.clone(),
                "marked by a range creation (it may not have committed)".into(),
            )),
            (Ok(Some(d)), false) if dir.id == Some(d.chunk.id) => {
                by_range.entry(d.chunk.range_id).or_default().push((dir, d));
            }
            (Ok(Some(_)), false) => {
                plan.left_out
                    .push((dir.path.clone(), "its descriptor names another chunk id".into()));
            }
            (Ok(None), false) => plan.left_out.push((
                dir.path.clone(),
                "no descriptor (written by an older version): cannot tell its range".into(),
            )),
            (Err(e), false) => plan.left_out.push((dir.path.clone(), e.clone())),
        }
    }
    for (range_id, mut found) in by_range {
        found.sort_by_key(|(_, d)| std::cmp::Reverse(d.chunk.id));
        let (_, newest) = found[0];
        // Rebuilt from descriptors: the mappers are not recovered, so no
        // range is a view's index any more.
        let range = RangeMeta {
            id: range_id,
            name: newest.range_name.clone(),
            options: newest.options,
            view_index: false,
        };
        plan.max_id = plan.max_id.max(range_id);
        let mut taken: Vec<&ChunkMeta> = Vec::new();
        for (dir, d) in found {
            plan.max_id = plan.max_id.max(d.chunk.id);
            if d.range_name != range.name || d.options != range.options {
                problems.push(format!(
                    "{} names range {range_id} {:?}, other chunks of it {:?}",
                    dir.path.display(),
                    d.range_name,
                    range.name
                ));
                continue;
            }
            let overlaps = taken.iter().any(|t| {
                let starts_before_t_ends =
                    t.end.as_deref().is_none_or(|e| d.chunk.start.as_slice() < e);
                let t_starts_before_ends =
                    d.chunk.end.as_deref().is_none_or(|e| t.start.as_slice() < e);
                starts_before_t_ends && t_starts_before_ends
            });
            if overlaps {
                plan.left_out.push((
                    dir.path.clone(),
                    format!("superseded by a newer chunk of range {:?}", range.name),
                ));
            } else {
                taken.push(&d.chunk);
            }
        }
        if !tiles_key_space(&taken) {
            problems.push(format!(
                "the chunks found for range {:?} do not cover all its keys (a chunk directory is missing)",
                range.name
            ));
        }
        plan.chunks.extend(taken.into_iter().cloned());
        plan.ranges.push(range);
    }
    let mut names: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &plan.ranges {
        if let Some(other) = names.insert(&r.name, r.id) {
            problems.push(format!("two ranges are named {:?} (ids {other} and {})", r.name, r.id));
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

/// `serve --recover-catalog`: moves the old catalog aside (never deletes
/// it) and builds a new one from the chunk directories. Returns what it
/// did, for the log and the operator.
pub fn recover_catalog(data_dir: &Path) -> Result<Vec<String>, String> {
    let catalog_dir = data_dir.join("catalog");
    let chunks_dir = data_dir.join("chunks");
    let dirs = scan_chunk_dirs(&chunks_dir)
        .map_err(|e| format!("cannot read {}: {e}", chunks_dir.display()))?;
    if catalog_is_sound(&catalog_dir, &dirs)? {
        return Err(format!(
            "the catalog at {} is readable and agrees with the chunk directories; nothing to \
             recover (rebuilding it would lose its mappers, reducers and sinks)",
            catalog_dir.display()
        ));
    }
    let plan = plan_recovery(&dirs).map_err(|problems| {
        format!("cannot rebuild the catalog from {}: {}", chunks_dir.display(), problems.join("; "))
    })?;
    let mut report = Vec::new();
    if catalog_dir.exists() {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = data_dir.join(format!("catalog.damaged-{stamp}"));
        report.push(views_in_old_catalog(&catalog_dir));
        fs::rename(&catalog_dir, &aside)
            .map_err(|e| format!("cannot move {} aside: {e}", catalog_dir.display()))?;
        report.push(format!("the old catalog was moved to {}", aside.display()));
    }
    let mut catalog =
        Catalog::open(&catalog_dir).map_err(|e| format!("cannot create a new catalog: {e}"))?;
    catalog
        .insert_recovered(&plan.ranges, &plan.chunks)
        .and_then(|()| catalog.raise_ids_above(plan.max_id))
        .map_err(|e| format!("cannot write the new catalog: {e}"))?;
    for r in &plan.ranges {
        let n = plan.chunks.iter().filter(|c| c.range_id == r.id).count();
        report.push(format!("recovered range {:?} (id {}) with {n} chunks", r.name, r.id));
    }
    let start = StartPlan { move_aside: plan.left_out, ..StartPlan::default() };
    apply_start_plan(data_dir, &start)
        .map_err(|e| format!("cannot move unused chunk directories aside: {e}"))?;
    for (path, reason) in &start.move_aside {
        report.push(format!("left out {} ({reason}), moved into {ORPHANED_DIR}/", path.display()));
    }
    Ok(report)
}

/// Whether the catalog opens, reads and agrees with the directories. A
/// catalog another process holds is an error: it must not be moved aside.
fn catalog_is_sound(catalog_dir: &Path, dirs: &[FoundDir]) -> Result<bool, String> {
    if !catalog_dir.exists() {
        return Ok(false);
    }
    let catalog = match Catalog::open(catalog_dir) {
        Ok(catalog) => catalog,
        Err(e @ crate::catalog::CatalogError::Locked(_)) => return Err(e.to_string()),
        Err(_) => return Ok(false),
    };
    let read = catalog.ranges().and_then(|r| Ok((r, catalog.chunks()?)));
    let readable =
        catalog.mappers().is_ok() && catalog.reducers().is_ok() && catalog.sinks().is_ok();
    Ok(match read {
        Ok((ranges, chunks)) => {
            let renaming = catalog.renaming().unwrap_or_default();
            readable && plan_start(&ranges, &chunks, dirs, &renaming).is_ok()
        }
        Err(_) => false,
    })
}

/// Names the views the damaged catalog still shows, if it can be read:
/// they live only in the catalog and must be created again.
fn views_in_old_catalog(catalog_dir: &Path) -> String {
    let lost = "mappers, reducers and sinks live only in the catalog and are not recovered";
    let Ok(old) = Catalog::open(catalog_dir) else {
        return format!("{lost}; the old catalog cannot be read to name them");
    };
    let mut names = Vec::new();
    if let Ok(ms) = old.mappers() {
        names.extend(ms.into_iter().map(|m| format!("mapper {:?}", m.name)));
    }
    if let Ok(rs) = old.reducers() {
        names.extend(rs.into_iter().map(|r| format!("reducer {:?}", r.name)));
    }
    if let Ok(ss) = old.sinks() {
        names.extend(ss.into_iter().map(|s| format!("sink {:?}", s.name)));
    }
    if names.is_empty() {
        format!("{lost}; the old catalog shows none")
    } else {
        format!("{lost}; create these again: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monotable_proto::RangeOptions;

    fn range(id: u64, name: &str) -> RangeMeta {
        RangeMeta { id, name: name.into(), options: RangeOptions::default(), view_index: false }
    }

    fn chunk(id: u64, range_id: u64, start: &str, end: Option<&str>) -> ChunkMeta {
        ChunkMeta {
            id,
            range_id,
            start: start.as_bytes().to_vec(),
            end: end.map(|e| e.as_bytes().to_vec()),
        }
    }

    /// Postmortem: the numeric key order changed the bytes of float keys;
    /// without a format check, chunks of the older format would be misread.
    #[test]
    fn chunks_of_the_older_key_format_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let chunks = tmp.path().join("chunks");
        let current = ChunkDescriptor {
            range_name: "r".into(),
            options: RangeOptions::default(),
            chunk: chunk(1, 1, "", None),
        };
        let make = |name: &str| {
            let d = chunks.join(name);
            fs::create_dir_all(&d).expect("mkdir");
            d
        };
        assert_eq!(refuse_old_format(tmp.path(), &chunks), Ok(()), "no chunks directory");
        let a = make("0000000000000001");
        current.write(&a).expect("write");
        fs::write(a.join("00000001.seg"), b"x").expect("seg");
        // A directory being created (no descriptor, no segment yet) is fine.
        make("0000000000000002");
        assert_eq!(refuse_old_format(tmp.path(), &chunks), Ok(()));
        // Segments without any descriptor: from before descriptors.
        let b = make("0000000000000003");
        fs::write(b.join("00000001.seg"), b"x").expect("seg");
        let err = refuse_old_format(tmp.path(), &chunks).expect_err("refused");
        assert!(err.contains("0000000000000003") && err.contains("monotable load"), "{err}");
        fs::remove_dir_all(&b).expect("rm");
        // A descriptor of format 1.
        let c = make("0000000000000004");
        current.write(&c).expect("write");
        let mut bytes = fs::read(c.join(descriptor::DESCRIPTOR_FILE)).expect("read");
        bytes[8..12].copy_from_slice(&descriptor::FORMAT_FLOATS_APART.to_le_bytes());
        fs::write(c.join(descriptor::DESCRIPTOR_FILE), bytes).expect("write");
        let err = refuse_old_format(tmp.path(), &chunks).expect_err("refused");
        assert!(err.contains("format 1") && err.contains("0000000000000004"), "{err}");
        assert!(a.join("00000001.seg").exists() && c.join(descriptor::DESCRIPTOR_FILE).exists());
    }

    fn dir_of(c: &ChunkMeta, name: &str) -> FoundDir {
        FoundDir {
            path: PathBuf::from(format!("{:016x}", c.id)),
            id: Some(c.id),
            descriptor: Ok(Some(ChunkDescriptor {
                range_name: name.into(),
                options: RangeOptions::default(),
                chunk: c.clone(),
            })),
            dropped: false,
            has_segments: true,
            creating: false,
        }
    }

    #[test]
    fn an_uncommitted_creation_is_removed_and_a_committed_one_unmarked() {
        let r = range(1, "users");
        let a = chunk(2, 1, "", None);
        let new = chunk(7, 9, "", None);
        let mut known = dir_of(&a, "users");
        known.creating = true;
        let mut unknown = dir_of(&new, "redis.3");
        unknown.creating = true;
        let plan = plan_start(&[r], std::slice::from_ref(&a), &[known, unknown.clone()], &[])
            .expect("a creation that did not commit stops nothing");
        assert_eq!(plan.unmark_creating, vec![PathBuf::from(format!("{:016x}", a.id))]);
        assert!(plan.move_aside.is_empty(), "{:?}", plan.move_aside);
        assert_eq!(plan.remove_uncommitted, vec![PathBuf::from(format!("{:016x}", new.id))]);
        let recovered = plan_recovery(&[unknown]).expect("recovers");
        assert_eq!(recovered.left_out.len(), 1);
    }

    #[test]
    fn agreeing_catalog_opens_everything_and_touches_nothing() {
        let r = range(1, "users");
        let (a, b) = (chunk(2, 1, "", Some("m")), chunk(3, 1, "m", None));
        let dirs = [dir_of(&a, "users"), dir_of(&b, "users")];
        let plan = plan_start(&[r], &[a, b], &dirs, &[]).expect("agrees");
        assert_eq!(plan.open.len(), 2);
        assert!(plan.finish_drop.is_empty() && plan.move_aside.is_empty());
    }

    // Regression: an empty (truncated) catalog made start-up delete every
    // chunk directory as an orphan.
    #[test]
    fn empty_catalog_with_chunk_directories_stops_the_start() {
        let a = chunk(2, 1, "", None);
        let problems = plan_start(&[], &[], &[dir_of(&a, "users")], &[]).expect_err("disagrees");
        assert!(problems[0].contains("does not know"), "{problems:?}");
    }

    #[test]
    fn leftover_of_an_interrupted_split_is_moved_aside_not_removed() {
        let r = range(1, "users");
        let parent = chunk(2, 1, "", None);
        let half = chunk(5, 1, "", Some("m"));
        let dirs = [dir_of(&parent, "users"), dir_of(&half, "users")];
        let plan = plan_start(&[r], std::slice::from_ref(&parent), &dirs, &[]).expect("agrees");
        assert_eq!(plan.move_aside.len(), 1);
        assert!(plan.finish_drop.is_empty());
    }

    #[test]
    fn unknown_data_without_descriptor_stops_the_start_an_empty_directory_does_not() {
        let r = range(1, "users");
        let a = chunk(2, 1, "", None);
        let mut old = dir_of(&chunk(9, 1, "", None), "users");
        old.descriptor = Ok(None);
        let problems = plan_start(
            std::slice::from_ref(&r),
            std::slice::from_ref(&a),
            &[dir_of(&a, "users"), old.clone()],
            &[],
        )
        .expect_err("unexplained data");
        assert!(problems[0].contains("without a descriptor"), "{problems:?}");
        old.has_segments = false;
        let plan = plan_start(&[r], std::slice::from_ref(&a), &[dir_of(&a, "users"), old], &[])
            .expect("empty");
        assert_eq!(plan.move_aside.len(), 1);
    }

    #[test]
    fn catalog_missing_a_chunk_of_a_range_stops_the_start() {
        let r = range(1, "users");
        let (a, b) = (chunk(2, 1, "", Some("m")), chunk(3, 1, "m", None));
        let dirs = [dir_of(&a, "users"), dir_of(&b, "users")];
        let problems = plan_start(&[r], &[a], &dirs, &[]).expect_err("gap");
        assert!(problems[0].contains("do not cover"), "{problems:?}");
    }

    #[test]
    fn dropped_marks_finish_a_drop_or_are_undone() {
        let r = range(1, "users");
        let kept = chunk(2, 1, "", None);
        let gone = chunk(7, 4, "", None);
        let mut kept_dir = dir_of(&kept, "users");
        kept_dir.dropped = true;
        let mut gone_dir = dir_of(&gone, "old");
        gone_dir.dropped = true;
        let plan = plan_start(&[r], &[kept], &[kept_dir, gone_dir], &[]).expect("agrees");
        assert_eq!(plan.finish_drop, vec![PathBuf::from(format!("{:016x}", 7))]);
        assert_eq!(plan.unmark, vec![PathBuf::from(format!("{:016x}", 2))]);
    }

    /// A rename (SWAPDB) interrupted after the catalog swapped the names:
    /// a descriptor holding the former name the catalog recorded is written
    /// anew; any other name still stops the start.
    #[test]
    fn descriptor_with_a_recorded_former_name_is_renamed() {
        let r = range(1, "redis.1");
        let a = chunk(2, 1, "", None);
        let dirs = [dir_of(&a, "redis.0")];
        let renaming = [(1, "redis.0".to_owned())];
        let plan = plan_start(std::slice::from_ref(&r), std::slice::from_ref(&a), &dirs, &renaming)
            .expect("renamed");
        assert_eq!(plan.rename.len(), 1);
        assert_eq!(plan.rename[0].1.range_name, "redis.1");
        assert_eq!(plan.open.len(), 1);
        let problems = plan_start(std::slice::from_ref(&r), std::slice::from_ref(&a), &dirs, &[])
            .expect_err("no rename recorded");
        assert!(problems[0].contains("describes"), "{problems:?}");
        let other = [(9, "redis.0".to_owned())];
        let problems = plan_start(&[r], &[a], &dirs, &other).expect_err("another range's");
        assert!(problems[0].contains("describes"), "{problems:?}");
    }

    #[test]
    fn descriptor_disagreeing_with_catalog_stops_the_start() {
        let r = range(1, "users");
        let a = chunk(2, 1, "", None);
        let mut other = a.clone();
        other.end = Some(b"x".to_vec());
        let problems =
            plan_start(&[r], &[a], &[dir_of(&other, "users")], &[]).expect_err("differs");
        assert!(problems[0].contains("describes"), "{problems:?}");
    }

    #[test]
    fn catalog_chunk_without_directory_is_unavailable() {
        let r = range(1, "users");
        let a = chunk(2, 1, "", None);
        let plan = plan_start(&[r], &[a], &[], &[]).expect("agrees");
        assert_eq!(plan.missing.len(), 1);
    }

    #[test]
    fn recovery_prefers_split_halves_and_leaves_the_parent_out() {
        let parent = chunk(2, 1, "", None);
        let (lo, hi) = (chunk(5, 1, "", Some("m")), chunk(6, 1, "m", None));
        let other = chunk(4, 3, "", None);
        let dirs = [
            dir_of(&parent, "users"),
            dir_of(&lo, "users"),
            dir_of(&hi, "users"),
            dir_of(&other, "events"),
        ];
        let plan = plan_recovery(&dirs).expect("recovers");
        assert_eq!(plan.ranges.len(), 2);
        let mut ids: Vec<u64> = plan.chunks.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![4, 5, 6]);
        assert_eq!(plan.left_out.len(), 1);
        assert_eq!(plan.max_id, 6);
    }

    #[test]
    fn recovery_refuses_a_range_with_a_gap() {
        let lo = chunk(5, 1, "", Some("m"));
        let problems = plan_recovery(&[dir_of(&lo, "users")]).expect_err("gap");
        assert!(problems[0].contains("do not cover"), "{problems:?}");
    }

    #[test]
    fn tiling() {
        let a = chunk(1, 1, "", Some("m"));
        let b = chunk(2, 1, "m", None);
        let c = chunk(3, 1, "n", None);
        assert!(tiles_key_space(&[&b, &a]));
        assert!(!tiles_key_space(&[&a]));
        assert!(!tiles_key_space(&[&a, &c]));
        assert!(!tiles_key_space(&[&a, &b, &c]));
        assert!(!tiles_key_space(&[]));
    }
}
