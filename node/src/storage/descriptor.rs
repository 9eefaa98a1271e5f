//! The `DESCRIPTOR` file every chunk directory holds: which range the chunk
//! belongs to (id, name, options) and which keys it covers.
//!
//! It makes a chunk directory self-describing, so the node can check the
//! catalog against the directories at start-up and rebuild a lost catalog
//! from them (`monotable serve --recover-catalog`). It is written once, when
//! the chunk is created (or, for a chunk from before descriptors existed,
//! when it is first opened), atomically and durably; it never changes.
//!
//! ```text
//! | magic "MTCHUNKD" | format u32 | body_len u32 | crc32c(body) u32 | body (MessagePack) |
//! ```
//!
//! A `DROPPED` file next to it marks a chunk whose range is being dropped:
//! written before the catalog forgets the range, so a directory left behind
//! by a crash during the drop is recognised as the node's own garbage, not
//! as a chunk the catalog lost.

use std::fs;
use std::io;
use std::path::Path;

use monotable_proto::RangeOptions;
use serde::{Deserialize, Serialize};

use super::chunk::ChunkMeta;
use super::chunk_log::{write_file_durably, LogError};
use super::manifest::read_small_file;

pub const DESCRIPTOR_FILE: &str = "DESCRIPTOR";
pub const DROPPED_FILE: &str = "DROPPED";
const MAGIC: [u8; 8] = *b"MTCHUNKD";
/// The format of the data directory, carried by every chunk's descriptor.
/// Format 2: keys in the tuple encoding with one numeric order across
/// integers and floats ([`monotable_proto::tuple`]).
pub const FORMAT: u32 = 2;
/// Format 1 encoded tuple floats apart from integers (`1.0` was not the key
/// `1`, floats sorted after every integer): its keys would be misread, so a
/// data directory holding such a chunk is refused at start-up.
pub const FORMAT_FLOATS_APART: u32 = 1;
const HEADER_BYTES: usize = 20;
/// A descriptor holds two keys at most; anything longer is damage.
const DESCRIPTOR_SIZE_MAX_BYTES: usize = 1 << 20;

/// What a chunk directory says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkDescriptor {
    pub range_name: String,
    pub options: RangeOptions,
    /// Chunk id, range id and key interval.
    pub chunk: ChunkMeta,
}

impl ChunkDescriptor {
    fn encode(&self) -> Vec<u8> {
        let body = rmp_serde::to_vec(self).expect("descriptors always encode");
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_BYTES || b[..8] != MAGIC {
            return Err("not a chunk descriptor".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if u32_at(8) != FORMAT {
            return Err(format!("unknown descriptor format {}", u32_at(8)));
        }
        let body = &b[HEADER_BYTES..];
        if body.len() != u32_at(12) as usize || body.len() > DESCRIPTOR_SIZE_MAX_BYTES {
            return Err("descriptor length does not match".into());
        }
        if crc32c::crc32c(body) != u32_at(16) {
            return Err("descriptor checksum mismatch".into());
        }
        rmp_serde::from_slice(body).map_err(|e| format!("descriptor cannot be decoded: {e}"))
    }

    /// Writes the descriptor into a chunk directory, durably.
    pub fn write(&self, dir: &Path) -> Result<(), LogError> {
        write_file_durably(dir, DESCRIPTOR_FILE, &self.encode())
    }

    /// The format number in the header of a chunk directory's descriptor;
    /// `None` when it has no descriptor or the file is not one.
    pub fn format_of(dir: &Path) -> Option<u32> {
        let b = fs::read(dir.join(DESCRIPTOR_FILE)).ok()?;
        if b.len() < HEADER_BYTES || b[..8] != MAGIC {
            return None;
        }
        Some(u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
    }

    /// Reads a chunk directory's descriptor; `None` if it has none.
    pub fn read(dir: &Path) -> Result<Option<Self>, LogError> {
        read_small_file(dir, DESCRIPTOR_FILE, Self::decode)
    }
}

/// Marks a chunk directory whose range is being created: written before
/// anything else in it, removed once the catalog names the chunk, so a
/// start finds out what a crash in between left (see `startup`).
pub const CREATING_FILE: &str = "CREATING";

pub fn mark_creating(dir: &Path) -> Result<(), LogError> {
    write_file_durably(dir, CREATING_FILE, b"")
}

/// Whether `dir` is marked as being created, or its mark was being
/// written (the mark is the first thing a new chunk's directory gets, so
/// nothing else of it was written then).
/// Postmortem: a kill -9 between the mark's temporary file and its rename
/// left a directory holding only `CREATING.tmp`, moved aside for good.
pub fn is_marked_creating(dir: &Path) -> bool {
    dir.join(CREATING_FILE).exists()
        || dir.join(format!("{CREATING_FILE}{}", super::chunk_log::TMP_SUFFIX)).exists()
}

/// Removes the creation mark once the catalog names the chunk.
pub fn unmark_creating(dir: &Path) -> io::Result<()> {
    for name in
        [CREATING_FILE.to_owned(), format!("{CREATING_FILE}{}", super::chunk_log::TMP_SUFFIX)]
    {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Marks a chunk directory as belonging to a range being dropped.
pub fn mark_dropped(dir: &Path) -> Result<(), LogError> {
    write_file_durably(dir, DROPPED_FILE, b"")
}

pub fn is_marked_dropped(dir: &Path) -> bool {
    dir.join(DROPPED_FILE).exists()
}

/// Removes the drop mark of a chunk whose range was not dropped after all.
pub fn unmark_dropped(dir: &Path) -> io::Result<()> {
    fs::remove_file(dir.join(DROPPED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ChunkDescriptor {
        ChunkDescriptor {
            range_name: "users".into(),
            options: RangeOptions { chunk_size_max_bytes: 1 << 20 },
            chunk: ChunkMeta { id: 7, range_id: 3, start: b"a".to_vec(), end: Some(b"m".to_vec()) },
        }
    }

    /// Postmortem: a kill -9 between the creation mark's temporary file
    /// and its rename left a directory the start moved aside for good.
    #[test]
    fn a_creation_mark_cut_short_still_marks_and_unmarks() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(!is_marked_creating(dir.path()));
        fs::write(dir.path().join("CREATING.tmp"), b"").expect("tmp mark");
        assert!(is_marked_creating(dir.path()));
        unmark_creating(dir.path()).expect("unmark");
        assert!(!is_marked_creating(dir.path()));
        mark_creating(dir.path()).expect("mark");
        assert!(is_marked_creating(dir.path()));
        unmark_creating(dir.path()).expect("unmark");
        unmark_creating(dir.path()).expect("unmarking twice is harmless");
        assert!(!is_marked_creating(dir.path()));
    }

    #[test]
    fn round_trip_and_every_bit_flip_is_detected() {
        let bytes = sample().encode();
        assert_eq!(ChunkDescriptor::decode(&bytes), Ok(sample()));
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(ChunkDescriptor::decode(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
        for cut in 0..bytes.len() {
            assert!(ChunkDescriptor::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_format_is_read_from_the_header() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert_eq!(ChunkDescriptor::format_of(tmp.path()), None);
        sample().write(tmp.path()).expect("write");
        assert_eq!(ChunkDescriptor::format_of(tmp.path()), Some(FORMAT));
        let mut old = sample().encode();
        old[8..12].copy_from_slice(&FORMAT_FLOATS_APART.to_le_bytes());
        fs::write(tmp.path().join(DESCRIPTOR_FILE), old).expect("write");
        assert_eq!(ChunkDescriptor::format_of(tmp.path()), Some(FORMAT_FLOATS_APART));
        assert!(ChunkDescriptor::read(tmp.path()).is_err());
    }

    #[test]
    fn written_descriptor_reads_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert!(ChunkDescriptor::read(tmp.path()).expect("read").is_none());
        sample().write(tmp.path()).expect("write");
        assert_eq!(ChunkDescriptor::read(tmp.path()).expect("read"), Some(sample()));
        assert!(!is_marked_dropped(tmp.path()));
        mark_dropped(tmp.path()).expect("mark");
        assert!(is_marked_dropped(tmp.path()));
        unmark_dropped(tmp.path()).expect("unmark");
        assert!(!is_marked_dropped(tmp.path()));
    }
}
