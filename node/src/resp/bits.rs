//! Bitmap commands on strings: GETBIT, SETBIT, BITCOUNT, BITPOS, BITOP,
//! BITFIELD and BITFIELD_RO, as Redis 7.0's `bitops.c` (bit 0 is the most
//! significant bit of the
//! first byte; BIT and BYTE ranges; its argument checks, errors and their
//! order). A string grows only up to the node's value limit
//! ([`super::args::string_end`]): SETBIT past it answers Redis's
//! `string exceeds maximum allowed size`, as SETRANGE does.

use super::args::{integer, lower, parse_i64, NOT_INTEGER};
use super::errors::{misrouted, SYNTAX, WRONGTYPE};
use super::keyspace::{Db, Value, KIND_STRING};
use super::reply::Reply;
use super::state::RespState;
use crate::error::NodeResult;

const BIT_OFFSET_ERR: &str = "ERR bit offset is not an integer or out of range";

/// Runs one of this module's commands, its arity checked.
pub async fn run(
    state: &RespState,
    dbi: u32,
    db: &Db<'_>,
    name: &str,
    args: &[Vec<u8>],
) -> NodeResult<Reply> {
    match name {
        "getbit" => getbit(db, args).await,
        "setbit" => {
            let _g = state.lock(dbi, &[&args[1]]).await;
            setbit(db, args).await
        }
        "bitfield" | "bitfield_ro" => {
            let ops = or_reply!(bitfield_ops(args));
            let writes = ops.iter().any(|o| o.op != FieldOp::Get);
            if writes && name == "bitfield_ro" {
                return Ok(Reply::err("ERR BITFIELD_RO only supports the GET subcommand"));
            }
            let _g = if writes { Some(state.lock(dbi, &[&args[1]]).await) } else { None };
            bitfield(db, &args[1], &ops).await
        }
        "bitcount" => bitcount(db, args).await,
        "bitpos" => bitpos(db, args).await,
        "bitop" => {
            let sources: Vec<&[u8]> = args[3..].iter().map(Vec::as_slice).collect();
            let _g = state.lock_reading(dbi, &[&args[2]], &sources).await;
            bitop(db, args).await
        }
        other => Err(misrouted(other)),
    }
}

/// A bit offset as Redis reads it: an integer from 0 below 2^32 (Redis's
/// `proto-max-bulk-len` of 512 MB, in bits).
fn bit_offset(arg: &[u8]) -> Result<u64, Reply> {
    match parse_i64(arg) {
        Some(n) if n >= 0 && (n >> 3) < 512 << 20 => Ok(n as u64),
        _ => Err(Reply::err(BIT_OFFSET_ERR)),
    }
}

/// The string at `key`: `Ok(None)` when missing, WRONGTYPE for another type.
async fn string(db: &Db<'_>, key: &[u8]) -> NodeResult<Result<Option<Value>, Reply>> {
    Ok(match db.get(key).await? {
        Some(v) if v.kind != KIND_STRING => Err(Reply::err(WRONGTYPE)),
        other => Ok(other),
    })
}

async fn getbit(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let offset = match bit_offset(&args[2]) {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let Some(v) = or_reply!(string(db, &args[1]).await?) else { return Ok(Reply::Int(0)) };
    let byte = usize::try_from(offset >> 3).unwrap_or(usize::MAX);
    let bit = v.payload.get(byte).map_or(0, |b| (b >> (7 - (offset & 7))) & 1);
    Ok(Reply::Int(i64::from(bit)))
}

async fn setbit(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let offset = match bit_offset(&args[2]) {
        Ok(o) => o,
        Err(reply) => return Ok(reply),
    };
    let on = match parse_i64(&args[3]) {
        Some(b @ 0..=1) => b as u8,
        _ => return Ok(Reply::err("ERR bit is not an integer or out of range")),
    };
    let found = or_reply!(string(db, &args[1]).await?);
    let created = found.is_none();
    let mut v = found.unwrap_or_else(|| Value::string(Vec::new(), None));
    let byte = match super::args::string_end(offset >> 3, 1) {
        Ok(end) => end - 1,
        Err(reply) => return Ok(reply),
    };
    let grows = v.payload.len() <= byte;
    if grows {
        v.payload.resize(byte + 1, 0);
    }
    let shift = 7 - (offset & 7);
    let old = (v.payload[byte] >> shift) & 1;
    // Written only when something changes, as Redis signals it.
    if created || grows || old != on {
        v.payload[byte] = (v.payload[byte] & !(1 << shift)) | (on << shift);
        db.put(&args[1], &v).await?;
        db.notify(super::notify::STRING, "setbit", &args[1]);
    }
    Ok(Reply::Int(i64::from(old)))
}

/// Redis's range arguments of BITCOUNT and BITPOS, over a string of `len`
/// bytes: the first and last byte (inclusive) and, for a BIT range, the
/// masks of the bits of those bytes outside it (`first_mask`: the high
/// bits before the start; `last_mask`: the low bits after the end).
struct Span {
    start: i64,
    end: i64,
    first_mask: u8,
    last_mask: u8,
}

/// Converts `start`/`end` (negative from the end) as Redis does.
fn span(len: usize, mut start: i64, mut end: i64, bits: bool) -> Span {
    let mut total = len as i64;
    if bits {
        total <<= 3;
    }
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_mask, mut last_mask) = (0, 0);
    if bits && start <= end {
        first_mask = !((1u16 << (8 - (start & 7))) - 1) as u8;
        last_mask = ((1u16 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    Span { start, end, first_mask, last_mask }
}

/// BIT or BYTE (or an error) for the unit argument at `i`, when given.
fn unit(args: &[Vec<u8>], i: usize) -> Result<bool, Reply> {
    match args.get(i).map(|a| lower(a)) {
        None => Ok(false),
        Some(u) if u == "bit" => Ok(true),
        Some(u) if u == "byte" => Ok(false),
        Some(_) => Err(Reply::err(SYNTAX)),
    }
}

async fn bitcount(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    // The key first: a missing one counts 0 whatever the other arguments.
    let Some(v) = or_reply!(string(db, &args[1]).await?) else { return Ok(Reply::Int(0)) };
    let p = &v.payload;
    let s = match args.len() {
        2 => Span { start: 0, end: p.len() as i64 - 1, first_mask: 0, last_mask: 0 },
        4 | 5 => {
            let start = or_reply!(integer(&args[2]));
            let end = or_reply!(integer(&args[3]));
            if start < 0 && end < 0 && start > end {
                return Ok(Reply::Int(0));
            }
            let bits = or_reply!(unit(args, 4));
            span(p.len(), start, end, bits)
        }
        _ => return Ok(Reply::err(SYNTAX)),
    };
    if s.start > s.end {
        return Ok(Reply::Int(0));
    }
    let (a, b) = (s.start as usize, s.end as usize);
    let mut count: i64 = p[a..=b].iter().map(|x| i64::from(x.count_ones())).sum();
    count -= i64::from((p[a] & s.first_mask).count_ones());
    count -= i64::from((p[b] & s.last_mask).count_ones());
    Ok(Reply::Int(count))
}

/// Redis's `redisBitpos`: the first bit equal to `bit` in `bytes`; for 1
/// none is -1, for 0 none is the bit just past them.
fn first_bit(bytes: &[u8], bit: bool) -> i64 {
    for (i, &b) in bytes.iter().enumerate() {
        let found = if bit { b.leading_zeros() } else { b.leading_ones() };
        if found < 8 {
            return i as i64 * 8 + i64::from(found);
        }
    }
    if bit {
        -1
    } else {
        bytes.len() as i64 * 8
    }
}

async fn bitpos(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let bit = match parse_i64(&args[2]) {
        Some(b @ 0..=1) => b == 1,
        Some(_) => return Ok(Reply::err("ERR The bit argument must be 1 or 0.")),
        None => return Ok(Reply::err(NOT_INTEGER)),
    };
    // A missing key is an endless run of zeros.
    let Some(v) = or_reply!(string(db, &args[1]).await?) else {
        return Ok(Reply::Int(if bit { -1 } else { 0 }));
    };
    let p = &v.payload;
    let mut end_given = false;
    let s = match args.len() {
        3 => Span { start: 0, end: p.len() as i64 - 1, first_mask: 0, last_mask: 0 },
        4..=6 => {
            let start = or_reply!(integer(&args[3]));
            let bits = or_reply!(unit(args, 5));
            let end = if args.len() >= 5 {
                end_given = true;
                or_reply!(integer(&args[4]))
            } else if bits {
                ((p.len() as i64) << 3) + 7
            } else {
                p.len() as i64 - 1
            };
            span(p.len(), start, end, bits)
        }
        _ => return Ok(Reply::err(SYNTAX)),
    };
    if s.start > s.end {
        return Ok(Reply::Int(-1));
    }
    // The range's bytes, the bits outside it set to what is not sought.
    let (a, b) = (s.start as usize, s.end as usize);
    let mut bytes = p[a..=b].to_vec();
    let n = bytes.len();
    let hide = |x: u8, mask: u8| if bit { x & !mask } else { x | mask };
    bytes[0] = hide(bytes[0], s.first_mask);
    bytes[n - 1] = hide(bytes[n - 1], s.last_mask);
    let pos = first_bit(&bytes, bit);
    // With an explicit end, the bits right of the range are not zeros.
    if end_given && !bit && pos == (n as i64) << 3 {
        return Ok(Reply::Int(-1));
    }
    Ok(Reply::Int(if pos == -1 { -1 } else { pos + ((a as i64) << 3) }))
}

async fn bitop(db: &Db<'_>, args: &[Vec<u8>]) -> NodeResult<Reply> {
    let op = lower(&args[1]);
    if !matches!(op.as_str(), "and" | "or" | "xor" | "not") {
        return Ok(Reply::err(SYNTAX));
    }
    if op == "not" && args.len() != 4 {
        return Ok(Reply::err("ERR BITOP NOT must be called with a single source key."));
    }
    let mut sources = Vec::with_capacity(args.len() - 3);
    for key in &args[3..] {
        sources.push(or_reply!(string(db, key).await?).map(|v| v.payload).unwrap_or_default());
    }
    let len = sources.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![0u8; len];
    for (j, o) in out.iter_mut().enumerate() {
        let byte = |s: &Vec<u8>| s.get(j).copied().unwrap_or(0);
        *o = match op.as_str() {
            "not" => !byte(&sources[0]),
            "and" => sources.iter().map(byte).fold(0xff, |a, b| a & b),
            "or" => sources.iter().map(byte).fold(0, |a, b| a | b),
            _ => sources.iter().map(byte).fold(0, |a, b| a ^ b),
        };
    }
    let dest = &args[2];
    if len == 0 {
        if let Some(old) = db.get(dest).await? {
            db.remove(dest, &old).await?;
            db.notify(super::notify::GENERIC, "del", dest);
        }
    } else {
        // Replaces whatever `dest` held, its expiry too.
        let ops = match db.get(dest).await? {
            Some(old) => db.remove_ops(dest, &old).await?,
            None => Vec::new(),
        };
        let mut ops = ops;
        ops.extend(super::keyspace::put_ops(&[(dest.clone(), Value::string(out, None))]));
        db.write(super::keyspace::last_op_per_row(ops)).await?;
        db.notify(super::notify::STRING, "set", dest);
    }
    Ok(Reply::Int(len as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bits_follow_redis_bitpos() {
        assert_eq!(first_bit(&[0x00, 0x10], true), 11);
        assert_eq!(first_bit(&[0x00], true), -1);
        assert_eq!(first_bit(&[0xff, 0xf0], false), 12);
        assert_eq!(first_bit(&[0xff], false), 8);
    }

    #[test]
    fn bit_ranges_mask_their_edges() {
        let s = span(2, 3, 12, true);
        assert_eq!((s.start, s.end, s.first_mask, s.last_mask), (0, 1, 0b1110_0000, 0b0000_0111));
        let s = span(3, -2, -1, false);
        assert_eq!((s.start, s.end), (1, 2));
    }
}

/// What a BITFIELD operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Get,
    Set,
    IncrBy,
}

/// BITFIELD's OVERFLOW behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

/// One BITFIELD operation: its type (`signed`, `bits`), bit offset, value
/// (SET, INCRBY) and the OVERFLOW in force.
#[derive(Debug, Clone, Copy)]
struct Field {
    op: FieldOp,
    signed: bool,
    bits: u32,
    offset: u64,
    value: i64,
    overflow: Overflow,
}

/// Parses BITFIELD's operations as `bitfieldGeneric` (errors in its order).
fn bitfield_ops(args: &[Vec<u8>]) -> Result<Vec<Field>, Reply> {
    const TYPE_ERR: &str = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut j = 2;
    while j < args.len() {
        let left = args.len() - j - 1;
        let op = match lower(&args[j]).as_str() {
            "get" if left >= 2 => FieldOp::Get,
            "set" if left >= 3 => FieldOp::Set,
            "incrby" if left >= 3 => FieldOp::IncrBy,
            "overflow" if left >= 1 => {
                overflow = match lower(&args[j + 1]).as_str() {
                    "wrap" => Overflow::Wrap,
                    "sat" => Overflow::Sat,
                    "fail" => Overflow::Fail,
                    _ => return Err(Reply::err("ERR Invalid OVERFLOW type specified")),
                };
                j += 2;
                continue;
            }
            _ => return Err(Reply::err(SYNTAX)),
        };
        let ty = &args[j + 1];
        let signed = match ty.first() {
            Some(b'i') => true,
            Some(b'u') => false,
            _ => return Err(Reply::err(TYPE_ERR)),
        };
        let bits = match parse_i64(&ty[1..]) {
            Some(n) if n >= 1 && n <= if signed { 64 } else { 63 } => n as u32,
            _ => return Err(Reply::err(TYPE_ERR)),
        };
        let raw = &args[j + 2];
        let hash = raw.first() == Some(&b'#');
        let offset = match parse_i64(&raw[usize::from(hash)..]) {
            Some(n) if hash => n.checked_mul(i64::from(bits)),
            other => other,
        };
        let offset = match offset {
            Some(n) if n >= 0 && (n >> 3) < 512 << 20 => n as u64,
            _ => return Err(Reply::err(BIT_OFFSET_ERR)),
        };
        let value = if op == FieldOp::Get { 0 } else { integer(&args[j + 3])? };
        ops.push(Field { op, signed, bits, offset, value, overflow });
        j += if op == FieldOp::Get { 3 } else { 4 };
    }
    Ok(ops)
}

/// The `bits`-bit unsigned field at bit `offset` of `p` (missing bytes 0).
fn get_field(p: &[u8], offset: u64, bits: u32) -> u64 {
    let mut value = 0u64;
    for j in 0..u64::from(bits) {
        let at = offset + j;
        let byte = p.get(usize::try_from(at >> 3).unwrap_or(usize::MAX)).copied().unwrap_or(0);
        value = (value << 1) | u64::from((byte >> (7 - (at & 7))) & 1);
    }
    value
}

fn get_signed(p: &[u8], offset: u64, bits: u32) -> i64 {
    let mut value = get_field(p, offset, bits) as i64;
    if bits < 64 && value & (1i64 << (bits - 1)) != 0 {
        value |= -1i64 << bits;
    }
    value
}

fn set_field(p: &mut [u8], offset: u64, bits: u32, value: u64) {
    for j in 0..u64::from(bits) {
        let bit = (value >> (u64::from(bits) - 1 - j)) & 1;
        let at = offset + j;
        let byte = &mut p[(at >> 3) as usize];
        let shift = 7 - (at & 7);
        *byte = (*byte & !(1 << shift)) | ((bit as u8) << shift);
    }
}

/// `checkUnsignedBitfieldOverflow`: 0, or 1/-1 on overflow with what
/// WRAP or SAT makes of it.
fn unsigned_overflow(value: u64, incr: i64, bits: u32, ow: Overflow) -> (i32, u64) {
    let max = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX << bits);
    if value > max || (incr > 0 && incr > maxincr) {
        (1, if ow == Overflow::Wrap { wrap() } else { max })
    } else if incr < 0 && incr < minincr {
        (-1, if ow == Overflow::Wrap { wrap() } else { 0 })
    } else {
        (0, 0)
    }
}

/// `checkSignedBitfieldOverflow`.
fn signed_overflow(value: i64, incr: i64, bits: u32, ow: Overflow) -> (i32, i64) {
    let max = if bits == 64 { i64::MAX } else { (1i64 << (bits - 1)) - 1 };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let mut c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                c |= mask;
            } else {
                c &= !mask;
            }
        }
        c as i64
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        (1, if ow == Overflow::Wrap { wrap() } else { max })
    } else if value < min
        || (bits != 64 && incr < minincr)
        || (value < 0 && incr < 0 && incr < minincr)
    {
        (-1, if ow == Overflow::Wrap { wrap() } else { min })
    } else {
        (0, 0)
    }
}

/// BITFIELD's operations on `key`, in order: GET's value, SET's old
/// value, INCRBY's new one, nil for a FAIL overflow (nothing written).
async fn bitfield(db: &Db<'_>, key: &[u8], ops: &[Field]) -> NodeResult<Reply> {
    let found = or_reply!(string(db, key).await?);
    let created = found.is_none();
    let mut v = found.unwrap_or_else(|| Value::string(Vec::new(), None));
    let highest =
        ops.iter().filter(|o| o.op != FieldOp::Get).map(|o| o.offset + u64::from(o.bits) - 1).max();
    let mut grown = false;
    if let Some(highest) = highest {
        let end = match super::args::string_end(highest >> 3, 1) {
            Ok(end) => end,
            Err(reply) => return Ok(reply),
        };
        if v.payload.len() < end {
            v.payload.resize(end, 0);
            grown = true;
        }
    }
    let mut changed = false;
    let mut out = Vec::with_capacity(ops.len());
    for o in ops {
        if o.op == FieldOp::Get {
            out.push(Reply::Int(if o.signed {
                get_signed(&v.payload, o.offset, o.bits)
            } else {
                get_field(&v.payload, o.offset, o.bits) as i64
            }));
            continue;
        }
        let (fail, reply, new, old) = if o.signed {
            let old = get_signed(&v.payload, o.offset, o.bits);
            let (overflow, wrapped, new, reply) = if o.op == FieldOp::IncrBy {
                let (ov, w) = signed_overflow(old, o.value, o.bits, o.overflow);
                let new = if ov != 0 { w } else { old.wrapping_add(o.value) };
                (ov, w, new, new)
            } else {
                let (ov, w) = signed_overflow(o.value, 0, o.bits, o.overflow);
                (ov, w, if ov != 0 { w } else { o.value }, old)
            };
            let _ = wrapped;
            (overflow != 0 && o.overflow == Overflow::Fail, reply, new as u64, old as u64)
        } else {
            let old = get_field(&v.payload, o.offset, o.bits);
            let (ov, new, reply) = if o.op == FieldOp::IncrBy {
                let (ov, w) = unsigned_overflow(old, o.value, o.bits, o.overflow);
                let new = if ov != 0 { w } else { old.wrapping_add(o.value as u64) };
                (ov, new, new as i64)
            } else {
                let (ov, w) = unsigned_overflow(o.value as u64, 0, o.bits, o.overflow);
                (ov, if ov != 0 { w } else { o.value as u64 }, old as i64)
            };
            (ov != 0 && o.overflow == Overflow::Fail, reply, new, old)
        };
        if fail {
            out.push(Reply::Null);
            continue;
        }
        out.push(Reply::Int(reply));
        let mask = if o.bits == 64 { u64::MAX } else { (1u64 << o.bits) - 1 };
        set_field(&mut v.payload, o.offset, o.bits, new & mask);
        changed |= old & mask != new & mask;
    }
    // Written only when something changed, as Redis signals it.
    if created && highest.is_some() || grown || changed {
        db.put(key, &v).await?;
        db.notify(super::notify::STRING, "setbit", key);
    }
    Ok(Reply::Array(out))
}
