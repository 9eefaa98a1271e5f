//! A chunk's `MANIFEST`: which segments make up its log, and what recovery
//! decides from it and the segment files it finds.
//!
//! The manifest names the base segment and the newest one. It is rewritten
//! (atomically: a temporary file, fsynced, renamed) when a segment is added
//! or a compaction takes over, always *after* the segment it names is
//! durable, so every segment it names must be there: a deleted segment
//! file, first, middle or newest, is reported instead of silently losing
//! its records.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::chunk_log::{
    check_header, io_err, sync_dir, LogError, SEGMENT_HEADER_BYTES, TMP_SUFFIX,
};

pub(super) const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_MAGIC: [u8; 8] = *b"MTMANIFS";
const MANIFEST_FORMAT: u32 = 1;
const MANIFEST_BYTES: usize = 24;

/// Which segments make up the log: the base and the newest, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub first: u32,
    pub last: u32,
}

impl Manifest {
    fn encode(self) -> [u8; MANIFEST_BYTES] {
        let mut b = [0u8; MANIFEST_BYTES];
        b[..8].copy_from_slice(&MANIFEST_MAGIC);
        b[8..12].copy_from_slice(&MANIFEST_FORMAT.to_le_bytes());
        b[12..16].copy_from_slice(&self.first.to_le_bytes());
        b[16..20].copy_from_slice(&self.last.to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != MANIFEST_BYTES || b[..8] != MANIFEST_MAGIC {
            return Err("not a chunk manifest".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if crc32c::crc32c(&b[..20]) != u32_at(20) {
            return Err("manifest checksum mismatch".into());
        }
        if u32_at(8) != MANIFEST_FORMAT {
            return Err(format!("unknown manifest format {}", u32_at(8)));
        }
        let m = Manifest { first: u32_at(12), last: u32_at(16) };
        if m.first == 0 || m.first > m.last {
            return Err(format!("manifest names segments {} to {}", m.first, m.last));
        }
        Ok(m)
    }

    /// Reads a chunk directory's manifest; `None` if it has none.
    pub fn read(dir: &Path) -> Result<Option<Self>, LogError> {
        read_small_file(dir, MANIFEST_FILE, Manifest::decode)
    }

    pub(super) fn write(self, dir: &Path) -> Result<(), LogError> {
        write_file_durably(dir, MANIFEST_FILE, &self.encode())
    }
}

/// `body` followed by its CRC32C (4 bytes, little-endian): the framing of
/// the node's small files that carry no header of their own.
pub fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// The body of [`with_crc`]'s bytes, once its CRC32C matches.
///
/// Errors: too short for a checksum, or a checksum mismatch.
pub fn checked_crc(bytes: &[u8]) -> Result<&[u8], String> {
    let split = bytes.len().checked_sub(4).ok_or("too short for its checksum")?;
    let (body, crc) = bytes.split_at(split);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

/// Replaces `dir/name` with `bytes` atomically and durably: a temporary
/// file, fsynced, renamed over the old one, then the directory fsynced. A
/// crash leaves either the old file or the new one.
pub fn write_file_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(LogError::Io { path: tmp, source });
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir).map_err(io_err(dir))
}

/// Reads a small file that [`write_file_durably`] wrote and decodes it;
/// `None` when the file does not exist, corruption (naming the file) when
/// `decode` refuses its bytes.
pub fn read_small_file<T>(
    dir: &Path,
    name: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, LogError> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(b) => {
            decode(&b).map(Some).map_err(|reason| LogError::Corrupt { path, offset: 0, reason })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Io { path, source }),
    }
}

/// Which segments recovery puts in charge, and which files it removes.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SegmentPlan {
    pub(super) manifest: Manifest,
    /// Segments superseded by the base, and a segment an interrupted
    /// rotation created but never used.
    pub(super) remove: Vec<u32>,
}

/// Damage found while planning: the segment it concerns (`None`: the
/// manifest) and what is wrong.
pub(super) type PlanError = (Option<u32>, String);

/// Whether a segment file holds nothing but (at most) its header: what a
/// rotation leaves when it stops before the manifest names the segment.
fn holds_no_entries(bytes: &[u8]) -> bool {
    bytes.len() <= SEGMENT_HEADER_BYTES as usize
}

fn is_base(bytes: &[u8], id: u32) -> bool {
    matches!(check_header(bytes, id), Ok(Some(_)))
}

/// Decides which segments are in charge, given the stored manifest and the
/// segment files found (id -> contents). Pure, so its decisions are unit
/// tested without files.
///
/// - A base segment above the manifest's newest is a compaction that was
///   published before the manifest was updated: it is in charge alone.
/// - Otherwise every segment the manifest names must be there; a missing
///   one is reported by name.
/// - Above the newest, only one header-only segment may exist: a rotation
///   interrupted before the manifest named it. It is removed.
/// - Below the base: superseded segments a crash kept from being removed.
pub(super) fn plan_segments<B: AsRef<[u8]>>(
    stored: Manifest,
    files: &BTreeMap<u32, B>,
) -> Result<SegmentPlan, PlanError> {
    let newer_base =
        files.iter().rev().find(|(&id, b)| id > stored.last && is_base(b.as_ref(), id));
    let manifest = match newer_base {
        Some((&id, _)) => Manifest { first: id, last: id },
        None => stored,
    };
    for id in manifest.first..=manifest.last {
        if !files.contains_key(&id) {
            return Err((
                Some(id),
                format!(
                    "segment file is missing (the chunk's manifest names segments {} to {})",
                    manifest.first, manifest.last
                ),
            ));
        }
    }
    let mut remove = Vec::new();
    for (&id, bytes) in files {
        if id < manifest.first {
            remove.push(id);
        } else if id > manifest.last {
            if id == manifest.last + 1 && holds_no_entries(bytes.as_ref()) {
                remove.push(id);
            } else {
                return Err((
                    Some(id),
                    format!(
                        "segment is not in the chunk's manifest (segments {} to {})",
                        manifest.first, manifest.last
                    ),
                ));
            }
        }
    }
    Ok(SegmentPlan { manifest, remove })
}

/// The plan for a log written before manifests existed: the newest base
/// segment and every segment after it, which must have no gaps. A newest
/// segment shorter than its header is a rotation torn by a crash.
pub(super) fn plan_legacy<B: AsRef<[u8]>>(
    files: &BTreeMap<u32, B>,
) -> Result<SegmentPlan, PlanError> {
    let mut remove = Vec::new();
    let mut ids: Vec<u32> = files.keys().copied().collect();
    if let Some(&newest) = ids.last() {
        if ids.len() > 1 && files[&newest].as_ref().len() < SEGMENT_HEADER_BYTES as usize {
            remove.push(newest);
            ids.pop();
        }
    }
    let Some(&last) = ids.last() else {
        return Err((None, "chunk directory holds no segment".into()));
    };
    let first =
        ids.iter().rev().copied().find(|&id| is_base(files[&id].as_ref(), id)).ok_or_else(
            || (Some(ids[0]), "no base segment: the first segment is missing".into()),
        )?;
    for id in first..=last {
        if !files.contains_key(&id) {
            return Err((Some(id), "segment file is missing".into()));
        }
    }
    remove.extend(ids.iter().copied().filter(|&id| id < first));
    remove.sort_unstable();
    Ok(SegmentPlan { manifest: Manifest { first, last }, remove })
}

#[cfg(test)]
mod tests {
    use super::super::chunk_log::encode_header;
    use super::*;

    fn files(ids: &[(u32, bool)]) -> BTreeMap<u32, Vec<u8>> {
        ids.iter()
            .map(|&(id, base)| {
                let mut b = encode_header(id, base, 0).to_vec();
                b.extend_from_slice(b"entries");
                (id, b)
            })
            .collect()
    }

    #[test]
    fn manifest_round_trip_and_damage() {
        let m = Manifest { first: 3, last: 9 };
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
        for i in 0..MANIFEST_BYTES * 8 {
            let mut bad = m.encode();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(Manifest::decode(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn every_segment_the_manifest_names_must_be_there() {
        let m = Manifest { first: 1, last: 3 };
        let all = files(&[(1, true), (2, false), (3, false)]);
        assert_eq!(plan_segments(m, &all), Ok(SegmentPlan { manifest: m, remove: vec![] }));
        for missing in 1..=3 {
            let mut some = all.clone();
            some.remove(&missing);
            let (id, reason) = plan_segments(m, &some).expect_err("a segment is missing");
            assert_eq!(id, Some(missing));
            assert!(reason.contains("missing"), "{reason}");
        }
    }

    #[test]
    fn compaction_published_before_the_manifest_takes_charge() {
        let m = Manifest { first: 1, last: 2 };
        let found = files(&[(1, true), (2, false), (3, true)]);
        let plan = plan_segments(m, &found).expect("plan");
        assert_eq!(plan.manifest, Manifest { first: 3, last: 3 });
        assert_eq!(plan.remove, vec![1, 2]);
    }

    #[test]
    fn only_an_empty_segment_of_an_interrupted_rotation_may_follow_the_newest() {
        let m = Manifest { first: 1, last: 2 };
        let mut found = files(&[(1, true), (2, false)]);
        found.insert(3, encode_header(3, false, 0)[..10].to_vec());
        assert_eq!(plan_segments(m, &found).expect("plan").remove, vec![3]);
        found.insert(3, files(&[(3, false)])[&3].clone());
        assert_eq!(plan_segments(m, &found).expect_err("unexpected").0, Some(3));
        found.remove(&3);
        found.insert(5, encode_header(5, false, 0).to_vec());
        assert_eq!(plan_segments(m, &found).expect_err("unexpected").0, Some(5));
    }

    #[test]
    fn legacy_logs_need_their_base_and_no_gaps() {
        let plan = plan_legacy(&files(&[(1, true), (2, false)])).expect("plan");
        assert_eq!(plan.manifest, Manifest { first: 1, last: 2 });
        assert_eq!(plan_legacy(&files(&[(2, false), (3, false)])).expect_err("no base").0, Some(2));
        assert_eq!(plan_legacy(&files(&[(1, true), (3, false)])).expect_err("gap").0, Some(2));
    }
}
