//! PFADD, PFCOUNT, PFMERGE and PFDEBUG: HyperLogLogs stored as Redis string
//! values, byte for byte in Redis 7.0's format (`hyperloglog.c`), so GET
//! and SET move them between Monotable and Redis, and a value imported
//! from Redis counts the same here.
//!
//! The format: a 16-byte header (`HYLL`, the encoding, 3 zero bytes, the
//! cached cardinality in 8 little-endian bytes whose top bit set means
//! "stale"), then 16,384 6-bit registers, either dense (12,288 bytes,
//! packed little-endian) or sparse (run-length opcodes: `00xxxxxx` ZERO of
//! 1-64 registers, `01xxxxxx yyyyyyyy` XZERO of 1-16,384, `1vvvvvxx` VAL
//! of 1-4 registers holding 1-32). A sparse value turns dense once it would
//! pass `hll-sparse-max-bytes` (CONFIG, default 3000) or a register passes
//! 32. Items are hashed with MurmurHash64A (seed `0xadc83b19`); the
//! estimate is Ertl's ("New cardinality estimation algorithms for
//! HyperLogLog sketches", arXiv:1702.01284), as Redis computes it. A
//! damaged value is refused with Redis's `INVALIDOBJ` error (checked as
//! Redis 7.0.15 with the fix of CVE-2025-32023 checks it, the build Debian
//! ships); one that is not an HLL at all with its `WRONGTYPE` one.
//!
//! PFSELFTEST (a test of Redis's own C register macros) is not provided.
//! One difference remains on damaged values: where the damage leaves an
//! XZERO opcode cut short at the value's end, Redis reads the byte past
//! the end of its string (what an earlier edit left there) and Monotable
//! reads 0, so a PFADD there may leave other bytes than Redis's.

use super::args::lower;
use super::errors::WRONGTYPE;
use super::keyspace::{Db, Value, KIND_STRING};
use super::reply::Reply;
use super::state::RespState;
use crate::error::NodeResult;

/// Index bits: 16,384 registers.
const P: u32 = 14;
const REGISTERS: usize = 1 << P;
/// Hash bits left for the run of zeros.
const Q: u32 = 64 - P;
const BITS: usize = 6;
const REGISTER_MAX: u8 = (1 << BITS) - 1;
const HEADER_BYTES: usize = 16;
const DENSE_BYTES: usize = HEADER_BYTES + (REGISTERS * BITS).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
/// 0.5 / ln(2).
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

const INVALID: &str = "INVALIDOBJ Corrupted HLL object detected";
const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";

/// MurmurHash2, 64-bit (Austin Appleby's MurmurHash64A), little-endian
/// reads, as Redis's endian-neutral version.
pub fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut blocks = key.chunks_exact(8);
    for block in &mut blocks {
        let mut k = u64::from_le_bytes(block.try_into().unwrap_or_default());
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u64::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register `item` hashes to and the length of its `00..1` pattern
/// (Redis's `hllPatLen`): 1 to Q + 1.
fn pattern(item: &[u8]) -> (usize, u8) {
    let hash = murmur64a(item, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

fn dense_get(registers: &[u8], i: usize) -> u8 {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let b0 = u16::from(registers[byte]);
    let b1 = u16::from(registers.get(byte + 1).copied().unwrap_or(0));
    (((b0 >> fb) | (b1 << (8 - fb))) & u16::from(REGISTER_MAX)) as u8
}

fn dense_put(registers: &mut [u8], i: usize, value: u8) {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let v = u16::from(value);
    registers[byte] &= !((u16::from(REGISTER_MAX) << fb) as u8);
    registers[byte] |= (v << fb) as u8;
    if let Some(next) = registers.get_mut(byte + 1) {
        *next &= !(u16::from(REGISTER_MAX) >> (8 - fb)) as u8;
        *next |= (v >> (8 - fb)) as u8;
    }
}

/// Raises register `i` to `count`; whether it changed.
fn dense_set(registers: &mut [u8], i: usize, count: u8) -> bool {
    if count > dense_get(registers, i) {
        dense_put(registers, i, count);
        true
    } else {
        false
    }
}

/// One sparse opcode: (registers it covers, their value, its bytes).
fn opcode(bytes: &[u8], at: usize) -> (usize, u8, usize) {
    let b = bytes[at];
    if b & 0xc0 == 0 {
        (usize::from(b & 0x3f) + 1, 0, 1)
    } else if b & 0xc0 == 0x40 {
        let low = bytes.get(at + 1).copied().unwrap_or(0);
        ((usize::from(b & 0x3f) << 8 | usize::from(low)) + 1, 0, 2)
    } else {
        (usize::from(b & 0x3) + 1, ((b >> 2) & 0x1f) + 1, 1)
    }
}

fn val_op(value: u8, len: usize) -> u8 {
    ((value - 1) << 2 | (len as u8 - 1)) | 0x80
}

fn zero_ops(len: usize, out: &mut Vec<u8>) {
    if len > SPARSE_ZERO_MAX_LEN {
        let l = len - 1;
        out.push((l >> 8) as u8 | 0x40);
        out.push((l & 0xff) as u8);
    } else {
        out.push(len as u8 - 1);
    }
}

/// A new, empty HLL: sparse, its registers as XZERO runs.
pub fn create() -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_BYTES + 2);
    v.extend_from_slice(b"HYLL");
    v.push(SPARSE);
    v.extend_from_slice(&[0; 11]);
    let mut left = REGISTERS;
    while left > 0 {
        let run = left.min(SPARSE_XZERO_MAX_LEN);
        let l = run - 1;
        v.push((l >> 8) as u8 | 0x40);
        v.push((l & 0xff) as u8);
        left -= run;
    }
    v
}

/// Whether `v` is an HLL as Redis's `isHLLObjectOrReply` checks it.
fn is_hll(v: &[u8]) -> bool {
    v.len() >= HEADER_BYTES
        && &v[..4] == b"HYLL"
        && v[4] <= SPARSE
        && (v[4] != DENSE || v.len() == DENSE_BYTES)
}

fn invalidate_cache(v: &mut [u8]) {
    v[15] |= 0x80;
}

/// The runs of sparse `v` in register order: (first register, registers,
/// value). `None` when a run passes the last register or the runs do not
/// cover all 16,384, as Redis checks since its fix of CVE-2025-32023 (a
/// run past the end used to write out of bounds).
fn sparse_runs(v: &[u8]) -> Option<Vec<(usize, usize, u8)>> {
    let (mut at, mut index) = (HEADER_BYTES, 0);
    let mut runs = Vec::new();
    while at < v.len() {
        let (run, value, len) = opcode(v, at);
        if index + run > REGISTERS {
            return None;
        }
        runs.push((index, run, value));
        index += run;
        at += len;
    }
    (index == REGISTERS).then_some(runs)
}

/// A sparse HLL made dense (a dense one as it is); `None` if damaged.
fn to_dense(v: &[u8]) -> Option<Vec<u8>> {
    if v[4] == DENSE {
        return Some(v.to_vec());
    }
    let mut dense = vec![0u8; DENSE_BYTES];
    dense[..HEADER_BYTES].copy_from_slice(&v[..HEADER_BYTES]);
    dense[4] = DENSE;
    for (first, run, value) in sparse_runs(v)? {
        for i in (first..first + run).filter(|_| value > 0) {
            dense_put(&mut dense[HEADER_BYTES..], i, value);
        }
    }
    Some(dense)
}

/// Raises register `index` of sparse `v` to `count` (Redis's
/// `hllSparseSet`), turning it dense when the register does not fit the
/// sparse form or it would pass `sparse_max` bytes: whether it changed,
/// `None` for a damaged value.
fn sparse_set(v: &mut Vec<u8>, index: usize, count: u8, sparse_max: usize) -> Option<bool> {
    if count > SPARSE_VAL_MAX_VALUE {
        return promote(v, index, count);
    }
    // Find the opcode covering `index`.
    let (mut at, mut first, mut prev) = (HEADER_BYTES, 0usize, None);
    let mut found = None;
    while at < v.len() {
        let (span, value, len) = opcode(v, at);
        if index < first + span {
            found = Some((span, value, len));
            break;
        }
        prev = Some(at);
        at += len;
        first += span;
    }
    let (span, value, oplen) = found?;
    let is_val = value > 0;
    if is_val && value >= count {
        return Some(false);
    }
    if span == 1 && (is_val || oplen == 1) {
        // A VAL or a ZERO of one register: just replaced.
        v[at] = val_op(count, 1);
    } else {
        let last = first + span - 1;
        let mut seq = Vec::with_capacity(5);
        if is_val {
            if index != first {
                seq.push(val_op(value, index - first));
            }
            seq.push(val_op(count, 1));
            if index != last {
                seq.push(val_op(value, last - index));
            }
        } else {
            if index != first {
                zero_ops(index - first, &mut seq);
            }
            seq.push(val_op(count, 1));
            if index != last {
                zero_ops(last - index, &mut seq);
            }
        }
        if seq.len() > oplen && v.len() + seq.len() - oplen > sparse_max {
            return promote(v, index, count);
        }
        // An XZERO cut short by the end of the value (its second byte
        // missing) is replaced as Redis replaces it: the length grows by
        // the difference of the sequences, dropping what would pass it.
        let new_len = v.len() + seq.len() - oplen;
        let end = (at + oplen).min(v.len());
        v.splice(at..end, seq);
        v.truncate(new_len);
    }
    // Merge adjacent VALs of one value, up to 5 opcodes from the previous.
    let mut p = prev.unwrap_or(HEADER_BYTES);
    let mut scan = 5;
    while p < v.len() && scan > 0 {
        scan -= 1;
        let (run, value, len) = opcode(v, p);
        if value == 0 {
            p += len;
            continue;
        }
        if p + 1 < v.len() && v[p + 1] & 0x80 != 0 {
            let (run2, value2, _) = opcode(v, p + 1);
            if value == value2 && run + run2 <= SPARSE_VAL_MAX_LEN {
                v[p + 1] = val_op(value, run + run2);
                v.remove(p);
                continue;
            }
        }
        p += 1;
    }
    invalidate_cache(v);
    Some(true)
}

/// Makes `v` dense and raises register `index` to `count`.
fn promote(v: &mut Vec<u8>, index: usize, count: u8) -> Option<bool> {
    *v = to_dense(v)?;
    Some(dense_set(&mut v[HEADER_BYTES..], index, count))
}

/// Adds `item` to HLL `v`: whether a register changed; `None` for a
/// damaged value.
fn add(v: &mut Vec<u8>, item: &[u8], sparse_max: usize) -> Option<bool> {
    let (index, count) = pattern(item);
    match v[4] {
        DENSE => Some(dense_set(&mut v[HEADER_BYTES..], index, count)),
        _ => sparse_set(v, index, count, sparse_max),
    }
}

/// Raises `max` (one byte per register) to `v`'s registers; `None` for a
/// damaged sparse value.
fn merge_into(max: &mut [u8; REGISTERS], v: &[u8]) -> Option<()> {
    if v[4] == DENSE {
        for (i, m) in max.iter_mut().enumerate() {
            *m = (*m).max(dense_get(&v[HEADER_BYTES..], i));
        }
        return Some(());
    }
    for (first, run, value) in sparse_runs(v)? {
        for m in &mut max[first..first + run] {
            *m = (*m).max(value);
        }
    }
    Some(())
}

/// Redis's `hllSigma`.
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut y, mut z) = (1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

/// Redis's `hllTau`.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut y, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// The estimate from a histogram of register values.
fn estimate(histogram: &[u64; 64]) -> u64 {
    let m = REGISTERS as f64;
    let mut z = m * tau((m - histogram[Q as usize + 1] as f64) / m);
    for j in (1..=Q as usize).rev() {
        z += histogram[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histogram[0] as f64 / m);
    // As Redis's `(uint64_t) llroundl(...)`: an estimate past 2^63 (all
    // registers 50 or more, only in a crafted value) is i64::MIN.
    super::reply::c_llround(ALPHA_INF * m * m / z) as u64
}

/// The estimate of HLL `v`; `None` for a damaged sparse value.
fn count(v: &[u8]) -> Option<u64> {
    let mut histogram = [0u64; 64];
    if v[4] == DENSE {
        for i in 0..REGISTERS {
            histogram[usize::from(dense_get(&v[HEADER_BYTES..], i))] += 1;
        }
    } else {
        for (_, run, value) in sparse_runs(v)? {
            histogram[usize::from(value)] += run as u64;
        }
    }
    Some(estimate(&histogram))
}

/// The estimate of registers given one byte each.
fn count_raw(max: &[u8; REGISTERS]) -> u64 {
    let mut histogram = [0u64; 64];
    for &r in max.iter() {
        histogram[usize::from(r & 63)] += 1;
    }
    estimate(&histogram)
}

/// The HLL at `key` (a fresh one when `None`), or the error reply.
async fn read(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Value>, Reply>> {
    Ok(match db.get(key).await? {
        None => Ok(None),
        Some(v) if v.kind != KIND_STRING => Err(Reply::err(WRONGTYPE)),
        Some(v) if !is_hll(&v.payload) => Err(Reply::err(NOT_HLL)),
        Some(v) => Ok(Some(v)),
    })
}

/// Runs PFADD, PFCOUNT, PFMERGE or PFDEBUG on database `dbi`.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    let sparse_max = usize::try_from(state.config.int("hll-sparse-max-bytes")).unwrap_or(0);
    macro_rules! hll_or_reply {
        ($key:expr) => {
            match read(db, $key).await? {
                Ok(v) => v,
                Err(reply) => return Ok(reply),
            }
        };
    }
    match name {
        "pfadd" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let (mut v, created) = match hll_or_reply!(&args[1]) {
                Some(v) => (v, false),
                None => (Value::string(create(), None), true),
            };
            let mut changed = false;
            for item in &args[2..] {
                match add(&mut v.payload, item, sparse_max) {
                    Some(c) => changed |= c,
                    None => {
                        // Redis edits the value in place: what the items
                        // before this one changed stays.
                        if changed {
                            db.put(&args[1], &v).await?;
                        }
                        return Ok(Reply::err(INVALID));
                    }
                }
            }
            let updated = created || changed;
            if updated {
                invalidate_cache(&mut v.payload);
                db.put(&args[1], &v).await?;
                db.notify(super::notify::STRING, "pfadd", &args[1]);
            }
            Ok(Reply::Int(i64::from(updated)))
        }
        "pfcount" if args.len() > 2 => {
            let keys: Vec<&[u8]> = args[1..].iter().map(Vec::as_slice).collect();
            let _g = state.lock_reading(dbi, &[], &keys).await;
            let mut max = Box::new([0u8; REGISTERS]);
            for key in &keys {
                let Some(v) = hll_or_reply!(key) else { continue };
                if merge_into(&mut max, &v.payload).is_none() {
                    return Ok(Reply::err(INVALID));
                }
            }
            Ok(Reply::Int(count_raw(&max) as i64))
        }
        "pfcount" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            let Some(mut v) = hll_or_reply!(&args[1]) else { return Ok(Reply::Int(0)) };
            if v.payload[15] & 0x80 == 0 {
                let cached = u64::from_le_bytes(v.payload[8..16].try_into().unwrap_or_default());
                return Ok(Reply::Int(cached as i64));
            }
            let Some(card) = count(&v.payload) else { return Ok(Reply::err(INVALID)) };
            // The cache is part of the value, as in Redis: written back.
            v.payload[8..16].copy_from_slice(&card.to_le_bytes());
            db.put(&args[1], &v).await?;
            Ok(Reply::Int(card as i64))
        }
        "pfmerge" => {
            let sources: Vec<&[u8]> = args[2..].iter().map(Vec::as_slice).collect();
            let _g = state.lock_reading(dbi, &[&args[1]], &sources).await;
            let mut max = Box::new([0u8; REGISTERS]);
            let mut dense = false;
            for key in args[1..].iter() {
                let Some(v) = hll_or_reply!(key) else { continue };
                dense |= v.payload[4] == DENSE;
                if merge_into(&mut max, &v.payload).is_none() {
                    return Ok(Reply::err(INVALID));
                }
            }
            let mut v = match hll_or_reply!(&args[1]) {
                Some(v) => v,
                None => Value::string(create(), None),
            };
            if dense {
                match to_dense(&v.payload) {
                    Some(d) => v.payload = d,
                    None => return Ok(Reply::err(INVALID)),
                }
            }
            for (i, &m) in max.iter().enumerate().filter(|(_, &m)| m > 0) {
                if v.payload[4] == DENSE {
                    dense_set(&mut v.payload[HEADER_BYTES..], i, m);
                } else if sparse_set(&mut v.payload, i, m, sparse_max).is_none() {
                    return Ok(Reply::err(INVALID));
                }
            }
            invalidate_cache(&mut v.payload);
            db.put(&args[1], &v).await?;
            // `pfadd`, as Redis names a merge's event.
            db.notify(super::notify::STRING, "pfadd", &args[1]);
            Ok(Reply::ok())
        }
        "pfdebug" => {
            let _g = state.lock(dbi, &[&args[2]]).await;
            debug(db, args).await
        }
        other => Err(crate::error::NodeError::Internal(format!("{other} is not a PF command"))),
    }
}

/// PFDEBUG GETREG|DECODE|ENCODING|TODENSE key.
async fn debug(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let Some(mut v) = (match read(db, &args[2]).await? {
        Ok(v) => v,
        Err(reply) => return Ok(reply),
    }) else {
        return Ok(Reply::err("ERR The specified key does not exist"));
    };
    Ok(match lower(&args[1]).as_str() {
        "getreg" => {
            if v.payload[4] == SPARSE {
                let Some(d) = to_dense(&v.payload) else { return Ok(Reply::err(INVALID)) };
                v.payload = d;
                db.put(&args[2], &v).await?;
            }
            let registers = &v.payload[HEADER_BYTES..];
            Reply::Array(
                (0..REGISTERS).map(|i| Reply::Int(i64::from(dense_get(registers, i)))).collect(),
            )
        }
        "decode" => {
            if v.payload[4] != SPARSE {
                return Ok(Reply::err("ERR HLL encoding is not sparse"));
            }
            let mut words = Vec::new();
            let mut at = HEADER_BYTES;
            while at < v.payload.len() {
                let (run, value, len) = opcode(&v.payload, at);
                words.push(match (value, len) {
                    (0, 1) => format!("z:{run}"),
                    (0, _) => format!("Z:{run}"),
                    _ => format!("v:{value},{run}"),
                });
                at += len;
            }
            Reply::bulk(words.join(" "))
        }
        "encoding" => Reply::Simple(if v.payload[4] == DENSE { "dense" } else { "sparse" }),
        "todense" => {
            let converted = v.payload[4] == SPARSE;
            if converted {
                let Some(d) = to_dense(&v.payload) else { return Ok(Reply::err(INVALID)) };
                v.payload = d;
                db.put(&args[2], &v).await?;
            }
            Reply::Int(i64::from(converted))
        }
        _ => Reply::err(format!(
            "ERR Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(&args[1])
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_matches_the_reference() {
        // Values of the reference MurmurHash64A with seed 0xadc83b19.
        assert_eq!(pattern(b"").0, (murmur64a(b"", 0xadc8_3b19) & 16383) as usize);
        assert_ne!(murmur64a(b"a", 0), murmur64a(b"b", 0));
        assert_eq!(murmur64a(b"abcdefgh", 7), murmur64a(b"abcdefgh", 7));
    }

    #[test]
    fn sparse_and_dense_agree_and_estimates_are_close() {
        let mut sparse = create();
        let mut dense = to_dense(&create()).expect("dense");
        for i in 0..20_000u32 {
            let item = i.to_string();
            add(&mut sparse, item.as_bytes(), usize::MAX).expect("valid");
            add(&mut dense, item.as_bytes(), usize::MAX).expect("valid");
            if i % 997 == 0 {
                assert_eq!(to_dense(&sparse).map(|d| d[16..].to_vec()), Some(dense[16..].to_vec()));
            }
        }
        let n = count(&dense).expect("count");
        assert_eq!(count(&sparse), Some(n));
        let error = (n as f64 - 20_000.0).abs() / 20_000.0;
        assert!(error < 0.03, "{n}");
    }

    #[test]
    fn registers_pack_six_bits_each() {
        let mut r = vec![0u8; DENSE_BYTES - HEADER_BYTES];
        for i in 0..REGISTERS {
            dense_put(&mut r, i, (i % 64) as u8);
        }
        for i in 0..REGISTERS {
            assert_eq!(dense_get(&r, i), (i % 64) as u8, "register {i}");
        }
    }

    #[test]
    fn damaged_values_are_found() {
        let mut v = create();
        v.push(0x00);
        assert_eq!(count(&v), None, "a ZERO past the last register");
        assert!(!is_hll(b"HYLL"));
        let mut dense = to_dense(&create()).expect("dense");
        dense.pop();
        assert!(!is_hll(&dense));
    }
}
