//! The serialized values of DUMP and RESTORE: Redis's RDB object format
//! (Redis 7.0's `rdb.c`, `ziplist.c`, `listpack.c`, `intset.c`; format
//! notes at <https://rdb.fnordig.de/file_format.html>).
//!
//! A payload is one object type byte, the object, then a footer: the RDB
//! version (2 bytes, little endian) and a CRC-64 (Jones, as Redis's
//! `crc64.c`, little endian) of everything before it.
//!
//! [`encode`] writes the plain encodings every Redis since 2.6 loads: a
//! string, and a list, set, hash or sorted set as a length and its
//! elements (`RDB_TYPE_LIST`, `SET`, `HASH`, `ZSET_2`), under RDB version
//! 10 (Redis 7.0's). [`decode`] reads those and what Redis 7.0 and older
//! write: integer and LZF-compressed strings, ziplists, listpacks,
//! intsets, quicklists of either, and text or binary sorted set scores.
//! Streams, modules and the pre-2.6 zipmap are not read. Every payload is
//! checked whole (Redis's `sanitize-dump-payload yes`): a length past the
//! end, a count that disagrees, a duplicate member or field, an empty
//! collection or a NaN score is refused.

use std::collections::HashSet;

use crate::bridge::item::Data;
use monotable_proto::limits::VALUE_SIZE_MAX_BYTES;

/// The RDB version this node writes and the newest it reads (Redis 7.0's
/// `RDB_VERSION`).
pub const RDB_VERSION: u16 = 10;

const TYPE_STRING: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_ZSET: u8 = 3;
const TYPE_HASH: u8 = 4;
const TYPE_ZSET_2: u8 = 5;
const TYPE_LIST_ZIPLIST: u8 = 10;
const TYPE_SET_INTSET: u8 = 11;
const TYPE_ZSET_ZIPLIST: u8 = 12;
const TYPE_HASH_ZIPLIST: u8 = 13;
const TYPE_LIST_QUICKLIST: u8 = 14;
const TYPE_HASH_LISTPACK: u8 = 16;
const TYPE_ZSET_LISTPACK: u8 = 17;
const TYPE_LIST_QUICKLIST_2: u8 = 18;

/// Quicklist 2 node containers (Redis's `QUICKLIST_NODE_CONTAINER_*`).
const CONTAINER_PLAIN: u64 = 1;
const CONTAINER_PACKED: u64 = 2;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Too short for its footer, from a newer RDB version, or its CRC
    /// does not match (Redis: "DUMP payload version or checksum are
    /// wrong").
    #[error("DUMP payload version or checksum are wrong")]
    Footer,
    /// The object cannot be read (Redis: "Bad data format"); the reason is
    /// for logs and tests.
    #[error("Bad data format ({0})")]
    Format(&'static str),
}

fn bad<T>(why: &'static str) -> Result<T, PayloadError> {
    Err(PayloadError::Format(why))
}

/// The DUMP payload of `data`.
pub fn encode(data: &Data) -> Vec<u8> {
    let mut out = Vec::new();
    match data {
        Data::String(s) => {
            out.push(TYPE_STRING);
            put_string(&mut out, s);
        }
        Data::List(elements) => {
            out.push(TYPE_LIST);
            put_len(&mut out, elements.len() as u64);
            elements.iter().for_each(|e| put_string(&mut out, e));
        }
        Data::Set(members) => {
            out.push(TYPE_SET);
            put_len(&mut out, members.len() as u64);
            members.iter().for_each(|m| put_string(&mut out, m));
        }
        Data::Hash(fields) => {
            out.push(TYPE_HASH);
            put_len(&mut out, fields.len() as u64);
            for (f, v) in fields {
                put_string(&mut out, f);
                put_string(&mut out, v);
            }
        }
        Data::ZSet(members) => {
            out.push(TYPE_ZSET_2);
            put_len(&mut out, members.len() as u64);
            for (m, score) in members {
                put_string(&mut out, m);
                out.extend_from_slice(&score.to_le_bytes());
            }
        }
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Redis's `rdbSaveLen`.
fn put_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.extend_from_slice(&[0x40 | (len >> 8) as u8, len as u8]);
    } else if let Ok(len) = u32::try_from(len) {
        out.push(0x80);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Checks `payload`'s footer (Redis's `verifyDumpPayload`) and reads its
/// object.
pub fn decode(payload: &[u8]) -> Result<Data, PayloadError> {
    let Some(body_len) = payload.len().checked_sub(10) else {
        return Err(PayloadError::Footer);
    };
    let version = u16::from_le_bytes([payload[body_len], payload[body_len + 1]]);
    if version > RDB_VERSION {
        return Err(PayloadError::Footer);
    }
    let crc = u64::from_le_bytes(payload[body_len + 2..].try_into().expect("8 bytes"));
    if CRC64.checksum(&payload[..body_len + 2]) != crc {
        return Err(PayloadError::Footer);
    }
    // What follows the object is not looked at, as in Redis.
    Reader { b: &payload[..body_len], at: 0, expanded: 0 }.object()
}

/// A cursor over RDB bytes; every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// Bytes LZF strings expanded to so far (see [`EXPANDED_MAX_BYTES`]).
    expanded: usize,
}

/// The most a payload's LZF strings may expand to in all: a payload under
/// the 8 MiB argument limit could otherwise declare gigabytes (LZF
/// back-references repeat bytes cheaply). The bytes a transaction may
/// write, as a RESTORE's rows are one batch.
pub const EXPANDED_MAX_BYTES: usize = super::keyspace::TRANSACTION_WRITES_MAX_BYTES;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PayloadError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else { return bad("truncated") };
        let out = &self.b[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, PayloadError> {
        Ok(self.take(1)?[0])
    }

    /// Redis's `rdbLoadLenByRef`: (length, whether it is a special
    /// string encoding).
    fn len_or_encoding(&mut self) -> Result<(u64, bool), PayloadError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => (u64::from(first & 0x3f), false),
            1 => ((u64::from(first & 0x3f) << 8) | u64::from(self.byte()?), false),
            3 => (u64::from(first & 0x3f), true),
            _ if first == 0x80 => {
                (u64::from(u32::from_be_bytes(self.take(4)?.try_into().expect("4"))), false)
            }
            _ if first == 0x81 => (u64::from_be_bytes(self.take(8)?.try_into().expect("8")), false),
            _ => return bad("unknown length encoding"),
        })
    }

    fn len(&mut self) -> Result<u64, PayloadError> {
        match self.len_or_encoding()? {
            (len, false) => Ok(len),
            (_, true) => bad("an encoded string where a length belongs"),
        }
    }

    /// A count of things still to read, each at least `min_bytes` long:
    /// refused when the rest of the payload cannot hold them (so nothing
    /// is allocated for a count that lies).
    fn count(&mut self, min_bytes: usize) -> Result<usize, PayloadError> {
        let n = self.len()?;
        let room = (self.b.len() - self.at) / min_bytes.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= room => Ok(n),
            _ => bad("a count larger than the payload"),
        }
    }

    /// Redis's `rdbGenericLoadStringObject`.
    fn string(&mut self) -> Result<Vec<u8>, PayloadError> {
        let (len, encoded) = self.len_or_encoding()?;
        if !encoded {
            let len = usize::try_from(len).or(bad("string too long"))?;
            return Ok(self.take(len)?.to_vec());
        }
        let int = |b: &[u8]| -> i64 {
            match b.len() {
                1 => i64::from(b[0] as i8),
                2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                _ => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            }
        };
        match len {
            0 => Ok(int(self.take(1)?).to_string().into_bytes()),
            1 => Ok(int(self.take(2)?).to_string().into_bytes()),
            2 => Ok(int(self.take(4)?).to_string().into_bytes()),
            3 => {
                let clen = usize::try_from(self.len()?).or(bad("string too long"))?;
                let len = usize::try_from(self.len()?).or(bad("string too long"))?;
                let compressed = self.take(clen)?;
                if len == 0 {
                    return bad("an empty LZF string");
                }
                // Refused before anything is allocated for it.
                if len > VALUE_SIZE_MAX_BYTES
                    || self.expanded.saturating_add(len) > EXPANDED_MAX_BYTES
                {
                    return bad("LZF strings expanding past the limits");
                }
                self.expanded += len;
                match lzf::decompress(compressed, len) {
                    Ok(out) if out.len() == len => Ok(out),
                    _ => bad("an LZF string that does not decompress"),
                }
            }
            _ => bad("unknown string encoding"),
        }
    }

    /// Redis's `rdbLoadDoubleValue` (the text scores of `RDB_TYPE_ZSET`).
    fn text_double(&mut self) -> Result<f64, PayloadError> {
        match self.byte()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => parse_score(self.take(usize::from(n))?),
        }
    }

    fn binary_double(&mut self) -> Result<f64, PayloadError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// One object after its type byte (Redis's `rdbLoadObject`).
    fn object(&mut self) -> Result<Data, PayloadError> {
        let kind = self.byte()?;
        let data = match kind {
            TYPE_STRING => return Ok(Data::String(self.string()?)),
            TYPE_LIST => {
                let n = self.count(1)?;
                Data::List((0..n).map(|_| self.string()).collect::<Result<_, _>>()?)
            }
            TYPE_SET => {
                let n = self.count(1)?;
                Data::Set((0..n).map(|_| self.string()).collect::<Result<_, _>>()?)
            }
            TYPE_ZSET | TYPE_ZSET_2 => {
                let n = self.count(2)?;
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    let m = self.string()?;
                    let score =
                        if kind == TYPE_ZSET { self.text_double()? } else { self.binary_double()? };
                    members.push((m, score));
                }
                Data::ZSet(members)
            }
            TYPE_HASH => {
                let n = self.count(2)?;
                let mut fields = Vec::with_capacity(n);
                for _ in 0..n {
                    fields.push((self.string()?, self.string()?));
                }
                Data::Hash(fields)
            }
            TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => {
                let nodes = self.count(1)?;
                let mut elements = Vec::new();
                for _ in 0..nodes {
                    let container =
                        if kind == TYPE_LIST_QUICKLIST_2 { self.len()? } else { CONTAINER_PACKED };
                    let blob = self.string()?;
                    match container {
                        CONTAINER_PLAIN => elements.push(blob),
                        CONTAINER_PACKED if kind == TYPE_LIST_QUICKLIST => {
                            elements.extend(ziplist(&blob)?)
                        }
                        CONTAINER_PACKED => elements.extend(listpack(&blob)?),
                        _ => return bad("unknown quicklist container"),
                    }
                }
                Data::List(elements)
            }
            TYPE_LIST_ZIPLIST => Data::List(ziplist(&self.string()?)?),
            TYPE_SET_INTSET => Data::Set(intset(&self.string()?)?),
            TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK => {
                let blob = self.string()?;
                let flat =
                    if kind == TYPE_HASH_ZIPLIST { ziplist(&blob)? } else { listpack(&blob)? };
                Data::Hash(pairs(flat)?)
            }
            TYPE_ZSET_ZIPLIST | TYPE_ZSET_LISTPACK => {
                let blob = self.string()?;
                let flat =
                    if kind == TYPE_ZSET_ZIPLIST { ziplist(&blob)? } else { listpack(&blob)? };
                let members = pairs(flat)?
                    .into_iter()
                    .map(|(m, s)| Ok((m, parse_score(&s)?)))
                    .collect::<Result<_, PayloadError>>()?;
                Data::ZSet(members)
            }
            15 | 19 => return bad("streams are not restored"),
            6 | 7 => return bad("module values are not restored"),
            9 => return bad("zipmap hashes (Redis before 2.6) are not restored"),
            _ => return bad("unknown object type"),
        };
        checked(data)
    }
}

/// A collection as RESTORE may create it: not empty, no member or field
/// twice, no NaN score; a -0 score is 0, as Monotable stores every score.
fn checked(mut data: Data) -> Result<Data, PayloadError> {
    if let Data::ZSet(members) = &mut data {
        // Postmortem: a restored -0 score stayed -0 (ZSCORE answered "-0").
        for (_, score) in members.iter_mut().filter(|(_, s)| *s == 0.0) {
            *score = 0.0;
        }
    }
    if data.is_empty() {
        return bad("an empty collection");
    }
    fn unique<'a>(names: impl IntoIterator<Item = &'a Vec<u8>>) -> bool {
        let mut seen = HashSet::new();
        names.into_iter().all(|n| seen.insert(n))
    }
    let ok = match &data {
        Data::String(_) | Data::List(_) => true,
        Data::Set(members) => unique(members),
        Data::Hash(fields) => unique(fields.iter().map(|(f, _)| f)),
        Data::ZSet(members) => {
            if members.iter().any(|(_, s)| s.is_nan()) {
                return bad("a NaN score");
            }
            unique(members.iter().map(|(m, _)| m))
        }
    };
    if !ok {
        return bad("a duplicate member or field");
    }
    Ok(data)
}

/// A sorted set score stored as text (as `strtod` reads it; Redis writes
/// `%.17g`, `inf`, `-inf`).
fn parse_score(text: &[u8]) -> Result<f64, PayloadError> {
    let s = std::str::from_utf8(text).or(bad("a score that is not a number"))?;
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
        "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|f| !f.is_nan()).map_or(bad("a bad score"), Ok),
    }
}

/// Flat elements as (field, value) pairs.
/// A field or member with its value or score.
type Pair = (Vec<u8>, Vec<u8>);

fn pairs(flat: Vec<Vec<u8>>) -> Result<Vec<Pair>, PayloadError> {
    if !flat.len().is_multiple_of(2) {
        return bad("an odd number of elements for pairs");
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn le_int(b: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    buf[..b.len()].copy_from_slice(b);
    let v = i64::from_le_bytes(buf);
    // Sign-extended from the top bit of its own width.
    let shift = 64 - 8 * b.len() as u32;
    (v << shift) >> shift
}

/// The elements of a ziplist (Redis's `ziplist.c`: a header of total
/// bytes, tail offset and count; entries of previous length, encoding
/// and data; `0xFF`).
fn ziplist(b: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    if b.len() < 11 || u32::from_le_bytes(b[..4].try_into().expect("4")) as usize != b.len() {
        return bad("a ziplist whose length disagrees");
    }
    if b[b.len() - 1] != 0xff {
        return bad("a ziplist without its end");
    }
    let count = u16::from_le_bytes([b[8], b[9]]);
    let mut r = Reader { b: &b[..b.len() - 1], at: 10, expanded: 0 };
    let mut out = Vec::new();
    while r.at < r.b.len() {
        let prev = r.byte()?;
        if prev == 0xfe {
            r.take(4)?;
        } else if prev == 0xff {
            return bad("a ziplist end inside the list");
        }
        let e = r.byte()?;
        let element = match e >> 6 {
            0 => r.take(usize::from(e & 0x3f))?.to_vec(),
            1 => {
                let len = (usize::from(e & 0x3f) << 8) | usize::from(r.byte()?);
                r.take(len)?.to_vec()
            }
            2 if e == 0x80 => {
                let len = u32::from_be_bytes(r.take(4)?.try_into().expect("4")) as usize;
                r.take(len)?.to_vec()
            }
            2 => return bad("unknown ziplist encoding"),
            _ => {
                let v = match e {
                    0xc0 => le_int(r.take(2)?),
                    0xd0 => le_int(r.take(4)?),
                    0xe0 => le_int(r.take(8)?),
                    0xf0 => le_int(r.take(3)?),
                    0xfe => le_int(r.take(1)?),
                    0xf1..=0xfd => i64::from(e & 0x0f) - 1,
                    _ => return bad("unknown ziplist encoding"),
                };
                v.to_string().into_bytes()
            }
        };
        out.push(element);
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return bad("a ziplist whose count disagrees");
    }
    Ok(out)
}

/// The elements of a listpack (Redis's `listpack.c`: a header of total
/// bytes and count; entries of encoding, data and back length; `0xFF`).
fn listpack(b: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    if b.len() < 7 || u32::from_le_bytes(b[..4].try_into().expect("4")) as usize != b.len() {
        return bad("a listpack whose length disagrees");
    }
    if b[b.len() - 1] != 0xff {
        return bad("a listpack without its end");
    }
    let count = u16::from_le_bytes([b[4], b[5]]);
    let mut r = Reader { b: &b[..b.len() - 1], at: 6, expanded: 0 };
    let mut out = Vec::new();
    while r.at < r.b.len() {
        let start = r.at;
        let e = r.byte()?;
        let element = if e & 0x80 == 0 {
            i64::from(e).to_string().into_bytes()
        } else if e & 0xc0 == 0x80 {
            r.take(usize::from(e & 0x3f))?.to_vec()
        } else if e & 0xe0 == 0xc0 {
            let uv = (i64::from(e & 0x1f) << 8) | i64::from(r.byte()?);
            let v = if uv >= 1 << 12 { uv - (1 << 13) } else { uv };
            v.to_string().into_bytes()
        } else if e & 0xf0 == 0xe0 {
            let len = (usize::from(e & 0x0f) << 8) | usize::from(r.byte()?);
            r.take(len)?.to_vec()
        } else {
            match e {
                0xf0 => {
                    let len = u32::from_le_bytes(r.take(4)?.try_into().expect("4")) as usize;
                    r.take(len)?.to_vec()
                }
                0xf1 => le_int(r.take(2)?).to_string().into_bytes(),
                0xf2 => le_int(r.take(3)?).to_string().into_bytes(),
                0xf3 => le_int(r.take(4)?).to_string().into_bytes(),
                0xf4 => le_int(r.take(8)?).to_string().into_bytes(),
                _ => return bad("unknown listpack encoding"),
            }
        };
        // The back length: the entry's size, 7 bits a byte, most
        // significant first (Redis's `lpEncodeBacklen`).
        let size = (r.at - start) as u64;
        let width = match size {
            0..=127 => 1,
            128..=16_382 => 2,
            16_383..=2_097_150 => 3,
            2_097_151..=268_435_454 => 4,
            _ => 5,
        };
        let back = r.take(width)?.iter().fold(0u64, |v, &byte| (v << 7) | u64::from(byte & 0x7f));
        if back != size {
            return bad("a listpack entry whose back length disagrees");
        }
        out.push(element);
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return bad("a listpack whose count disagrees");
    }
    Ok(out)
}

/// The members of an intset (Redis's `intset.c`: encoding width, count,
/// then the integers, little endian, ascending).
fn intset(b: &[u8]) -> Result<Vec<Vec<u8>>, PayloadError> {
    if b.len() < 8 {
        return bad("a truncated intset");
    }
    let width = u32::from_le_bytes(b[..4].try_into().expect("4")) as usize;
    let count = u32::from_le_bytes(b[4..8].try_into().expect("4")) as usize;
    if !matches!(width, 2 | 4 | 8) || count.checked_mul(width) != Some(b.len() - 8) {
        return bad("an intset whose length disagrees");
    }
    let ints: Vec<i64> = b[8..].chunks(width).map(le_int).collect();
    if ints.windows(2).any(|w| w[0] >= w[1]) {
        return bad("an intset out of order");
    }
    Ok(ints.into_iter().map(|v| v.to_string().into_bytes()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_footer(mut body: Vec<u8>) -> Vec<u8> {
        body.extend_from_slice(&RDB_VERSION.to_le_bytes());
        let crc = CRC64.checksum(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn every_type_reads_back_as_written() {
        let big = vec![7u8; 70_000];
        for data in [
            Data::String(Vec::new()),
            Data::String(b"\0bin\xff".to_vec()),
            Data::String(big.clone()),
            Data::List(vec![b"a".to_vec(), Vec::new(), big.clone(), b"a".to_vec()]),
            Data::Set(vec![b"x".to_vec(), b"\0".to_vec()]),
            Data::Hash(vec![(b"f".to_vec(), big.clone()), (b"g".to_vec(), Vec::new())]),
            Data::ZSet(vec![
                (b"m".to_vec(), f64::NEG_INFINITY),
                (b"n".to_vec(), -0.0),
                (b"o".to_vec(), f64::MAX),
            ]),
        ] {
            assert_eq!(decode(&encode(&data)), Ok(data));
        }
    }

    #[test]
    fn lengths_use_redis_widths() {
        for (len, bytes) in [(63u64, 1), (64, 2), (16_383, 2), (16_384, 5), (1 << 32, 9)] {
            let mut out = Vec::new();
            put_len(&mut out, len);
            assert_eq!(out.len(), bytes, "{len}");
            assert_eq!(Reader { b: &out, at: 0, expanded: 0 }.len(), Ok(len));
        }
    }

    #[test]
    fn payloads_written_by_redis_read() {
        let strings = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        let pair = |a: &str, b: &str| (a.as_bytes().to_vec(), b.as_bytes().to_vec());
        // `DUMP` replies of redis-server 7.0.15 (quicklist of a listpack,
        // listpack hash and sorted set, intset, hashtable set and hash,
        // skiplist sorted set, LZF and integer strings).
        let cases: Vec<(&str, Data)> = vec![
            (
                "1201022b2b00000008008161020101dffb02c12c02f2701101048378797a04f2c0bdf004f4ffffffff\
                 ffffff7f09ff0a00654c5326cf83f8c7",
                Data::List(strings(&[
                    "a",
                    "1",
                    "-5",
                    "300",
                    "70000",
                    "xyz",
                    "-1000000",
                    "9223372036854775807",
                ])),
            ),
            (
                "101616000000040081660201018167028568656c6c6f06ff0a001dfe7d5f0de3bd86",
                Data::Hash(vec![pair("f", "1"), pair("g", "hello")]),
            ),
            (
                "0b0e0200000003000000feff010003000a001b18460ee16f04bb",
                Data::Set(strings(&["-2", "1", "3"])),
            ),
            ("0202016201610a0075d99d835ef85f65", Data::Set(strings(&["b", "a"]))),
            (
                "111d1d0000000600816302842d696e660581610283312e35048162020201ff0a0017dce91ab8436c89",
                Data::ZSet(vec![
                    (b"c".to_vec(), f64::NEG_INFINITY),
                    (b"a".to_vec(), 1.5),
                    (b"b".to_vec(), 2.0),
                ]),
            ),
            (
                "0502016200000000000000400161000000000000f83f0a00e77c0b139f4e671e",
                Data::ZSet(vec![(b"b".to_vec(), 2.0), (b"a".to_vec(), 1.5)]),
            ),
            ("0401016601760a00adf24356b1860efc", Data::Hash(vec![pair("f", "v")])),
            ("00c30928016161e01b000161610a00cf092faaae25831d", Data::String(vec![b'a'; 40])),
            ("00c139300a009d94ea2793fc08b9", Data::String(b"12345".to_vec())),
            ("00c0f90a005e26d130d7a242ab", Data::String(b"-7".to_vec())),
        ];
        for (payload, want) in cases {
            assert_eq!(decode(&hex(payload)), Ok(want), "{payload}");
        }
    }

    #[test]
    fn hostile_payloads_are_refused_not_trusted() {
        assert_eq!(decode(b"short"), Err(PayloadError::Footer));
        let mut newer = encode(&Data::String(b"v".to_vec()));
        let at = newer.len() - 10;
        newer[at] = 11;
        assert_eq!(decode(&newer), Err(PayloadError::Footer));
        let mut flipped = encode(&Data::String(b"v".to_vec()));
        flipped[1] ^= 1;
        assert_eq!(decode(&flipped), Err(PayloadError::Footer));
        // A list claiming 2^32 elements in a few bytes allocates nothing.
        let huge = with_footer(vec![TYPE_LIST, 0x81, 0, 0, 0, 1, 0, 0, 0, 0, 1, b'a']);
        assert!(matches!(decode(&huge), Err(PayloadError::Format(_))));
        // Empty, duplicated, NaN.
        for body in [
            vec![TYPE_SET, 0],
            vec![TYPE_SET, 2, 1, b'a', 1, b'a'],
            vec![TYPE_ZSET, 1, 1, b'a', 253],
            vec![TYPE_HASH, 1, 1, b'f'],
            vec![15, 0],
            vec![200],
        ] {
            assert!(
                matches!(decode(&with_footer(body.clone())), Err(PayloadError::Format(_))),
                "{body:?}"
            );
        }
    }

    /// An RDB LZF string (encoding 3) of `len` bytes of `a`.
    fn lzf_string(len: usize) -> Vec<u8> {
        let compressed = lzf::compress(&vec![b'a'; len]).expect("compresses");
        let mut out = vec![0xc3];
        put_len(&mut out, compressed.len() as u64);
        put_len(&mut out, len as u64);
        out.extend(compressed);
        out
    }

    /// Postmortem: an LZF string was expanded to the length it declared
    /// before any limit was checked, so an 8 MiB payload could make the
    /// node allocate gigabytes (a list of many such elements passed the
    /// per-value limit each).
    #[test]
    fn lzf_strings_cannot_expand_past_the_limits() {
        let mut one = vec![TYPE_STRING, 0xc3];
        put_len(&mut one, 10);
        put_len(&mut one, VALUE_SIZE_MAX_BYTES as u64 + 1);
        one.extend([0; 10]);
        assert!(matches!(decode(&with_footer(one)), Err(PayloadError::Format(_))));
        let each = 4 << 20;
        let mut list = vec![TYPE_LIST];
        let n = EXPANDED_MAX_BYTES / each + 1;
        put_len(&mut list, n as u64);
        for _ in 0..n {
            list.extend(lzf_string(each));
        }
        assert!(matches!(decode(&with_footer(list)), Err(PayloadError::Format(_))));
        let mut fits = vec![TYPE_LIST, 2];
        fits.extend(lzf_string(each));
        fits.extend(lzf_string(each));
        assert!(decode(&with_footer(fits)).is_ok());
    }

    #[test]
    fn ziplists_listpacks_and_intsets_read_every_encoding() {
        // A ziplist of "ab", 12 (immediate), -2 (int8), 1000 (int16) and
        // 100000 (int24).
        let mut zl = vec![0u8; 10];
        for entry in [
            vec![0, 0x02, b'a', b'b'],
            vec![4, 0xfd],
            vec![2, 0xfe, 0xfe],
            vec![3, 0xc0, 0xe8, 0x03],
            vec![4, 0xf0, 0xa0, 0x86, 0x01],
        ] {
            zl.extend(entry);
        }
        zl.push(0xff);
        let n = zl.len() as u32;
        zl[..4].copy_from_slice(&n.to_le_bytes());
        zl[8..10].copy_from_slice(&5u16.to_le_bytes());
        let got: Vec<String> = ziplist(&zl)
            .expect("reads")
            .into_iter()
            .map(|e| String::from_utf8(e).expect("utf8"))
            .collect();
        assert_eq!(got, ["ab", "12", "-2", "1000", "100000"]);
        zl[8] = 4;
        assert!(ziplist(&zl).is_err(), "a count that disagrees");

        // A listpack of 5 (7-bit), "hi" (6-bit string), -100 (13-bit) and
        // 70000 (int24), each followed by its back length.
        let mut lp = vec![0u8; 6];
        for entry in [
            vec![0x05, 1],
            vec![0x82, b'h', b'i', 3],
            vec![0xdf, 0x9c, 2],
            vec![0xf2, 0x70, 0x11, 0x01, 4],
        ] {
            lp.extend(entry);
        }
        lp.push(0xff);
        let n = lp.len() as u32;
        lp[..4].copy_from_slice(&n.to_le_bytes());
        lp[4..6].copy_from_slice(&4u16.to_le_bytes());
        let got: Vec<String> = listpack(&lp)
            .expect("reads")
            .into_iter()
            .map(|e| String::from_utf8(e).expect("utf8"))
            .collect();
        assert_eq!(got, ["5", "hi", "-100", "70000"]);
        let at = lp.len() - 2;
        lp[at] = 9;
        assert!(listpack(&lp).is_err(), "a back length that disagrees");

        let mut is = vec![2, 0, 0, 0, 3, 0, 0, 0];
        for v in [-2i16, 1, 3] {
            is.extend(v.to_le_bytes());
        }
        assert_eq!(intset(&is).expect("reads"), [b"-2".to_vec(), b"1".to_vec(), b"3".to_vec()]);
        is[8..10].copy_from_slice(&5i16.to_le_bytes());
        assert!(intset(&is).is_err(), "out of order");
    }
}
