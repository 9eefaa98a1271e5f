//! Bitmap commands (GETBIT, SETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD,
//! BITFIELD_RO), MOVE and LCS
//! against a real `redis-server` 7.0 started here on a free loopback port:
//! hand-written edge cases and a seeded random sequence over a few keys,
//! replies compared byte for byte.

use monotable_tests::assert_same_line as same;
use monotable_tests::show;
use monotable_tests::Twin;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LINES: &[&str] = &[
    "FLUSHALL",
    "SETBIT b 7 1",
    "SETBIT b 7 1",
    "SETBIT b 7 0",
    "SETBIT b 100 1",
    "GET b",
    "GETBIT b 100",
    "GETBIT b 101",
    "GETBIT b 99999",
    "GETBIT nokey 3",
    "SETBIT b -1 1",
    "SETBIT b 4294967296 1",
    "SETBIT b x 1",
    "SETBIT b 1 2",
    "SETBIT b 1 -1",
    "GETBIT b -1",
    "GETBIT b 4294967295",
    "SET s foobar",
    "BITCOUNT s",
    "BITCOUNT s 0 0",
    "BITCOUNT s 1 1",
    "BITCOUNT s -2 -1",
    "BITCOUNT s -1 -2",
    "BITCOUNT s 5 30 BIT",
    "BITCOUNT s 0 -1 BYTE",
    "BITCOUNT s 1 -100 BIT",
    "BITCOUNT s 0 1 NOPE",
    "BITCOUNT s 0",
    "BITCOUNT s a b",
    "BITCOUNT nokey a b",
    "BITCOUNT nokey",
    "SET z \u{0}\u{0}\u{ff}",
    "BITPOS s 1",
    "BITPOS s 0",
    "BITPOS s 1 2",
    "BITPOS s 0 2 -1",
    "BITPOS s 1 7 15 BIT",
    "BITPOS s 0 7 15 BIT",
    "BITPOS s 1 100",
    "BITPOS s 2",
    "BITPOS s 1 0 1 NOPE",
    "BITPOS s 1 a",
    "BITPOS nokey 1",
    "BITPOS nokey 0",
    "SET ones \u{ff}\u{ff}",
    "BITPOS ones 0",
    "BITPOS ones 0 0 -1",
    "BITPOS ones 0 0",
    "BITPOS ones 0 3 12 BIT",
    "BITPOS ones 1 0 -1 BIT",
    "SET x1 abc",
    "SET x2 ab",
    "BITOP AND d x1 x2",
    "GET d",
    "BITOP OR d x1 x2 nokey",
    "GET d",
    "BITOP XOR d x1 x2",
    "GET d",
    "BITOP NOT d x1",
    "GET d",
    "BITOP NOT d x1 x2",
    "BITOP NOPE d x1",
    "BITOP AND d nokey1 nokey2",
    "EXISTS d",
    "RPUSH l a",
    "BITOP AND d x1 l",
    "GETBIT l 0",
    "SETBIT l 0 1",
    "BITCOUNT l",
    "BITPOS l 1",
    "SET e1 v EX 100",
    "MOVE e1 1",
    "MOVE e1 1",
    "EXISTS e1",
    "SELECT 1",
    "GET e1",
    "TTL e1",
    "MOVE e1 0",
    "SELECT 0",
    "SET e1 here",
    "SELECT 1",
    "SET e1 there",
    "MOVE e1 0",
    "MOVE e1 1",
    "MOVE e1 16",
    "MOVE e1 -1",
    "MOVE e1 x",
    "MOVE nokey 0",
    "HSET h f v",
    "MOVE h 0",
    "SELECT 0",
    "HGETALL h",
    // LCS
    "SET la ohmytext",
    "SET lb mynewtext",
    "LCS la lb",
    "LCS la lb LEN",
    "LCS la lb IDX",
    "LCS la lb IDX MINMATCHLEN 4",
    "LCS la lb IDX MINMATCHLEN 4 WITHMATCHLEN",
    "LCS la lb IDX WITHMATCHLEN MINMATCHLEN -5",
    "LCS la lb LEN IDX",
    "LCS la lb NOPE",
    "LCS la lb MINMATCHLEN x",
    "LCS la nokey",
    "LCS nokey nokey2 IDX",
    "LCS la h",
    "SET lc aaaaa",
    "SET ld aaa",
    "LCS lc ld IDX WITHMATCHLEN",
];

#[test]
fn bitmaps_and_move_answer_as_redis() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(10);
    for line in LINES {
        same(&mut redis, &mut mono, line);
    }
    // A random sequence: bits set and cleared, counted and searched in
    // random ranges, combined.
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..1500 {
        let key = ["r1", "r2", "r3"][rng.gen_range(0..3)];
        let (a, b) = (rng.gen_range(-40i64..200), rng.gen_range(-40i64..200));
        let unit = ["", " BIT", " BYTE"][rng.gen_range(0..3)];
        let line = match rng.gen_range(0..8) {
            0 | 1 => format!("SETBIT {key} {} {}", rng.gen_range(0..300), rng.gen_range(0..2)),
            2 => format!("GETBIT {key} {}", rng.gen_range(0..320)),
            3 => format!("BITCOUNT {key} {a} {b}{unit}"),
            4 => format!("BITPOS {key} {} {a} {b}{unit}", rng.gen_range(0..2)),
            5 => format!("BITPOS {key} {} {a}", rng.gen_range(0..2)),
            6 if rng.gen_range(0..3) == 0 => format!("LCS r1 {key} IDX WITHMATCHLEN"),
            _ => {
                let op = ["AND", "OR", "XOR"][rng.gen_range(0..3)];
                format!("BITOP {op} {key} r1 r2 r3")
            }
        };
        same(&mut redis, &mut mono, &line);
    }
    for key in ["r1", "r2", "r3"] {
        same(&mut redis, &mut mono, &format!("GET {key}"));
    }
}

/// BITFIELD's types, offsets, overflows and errors, and a random sequence
/// of its operations, as redis-server answers them.
#[test]
fn bitfield_answers_as_redis() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(10);
    for line in [
        "BITFIELD f GET u8 0",
        "EXISTS f",
        "BITFIELD f SET i8 0 -100 GET u8 0 INCRBY i8 0 -100",
        "BITFIELD f OVERFLOW SAT INCRBY i8 0 -100 OVERFLOW FAIL INCRBY i8 0 -100 GET i8 0",
        "BITFIELD f OVERFLOW WRAP INCRBY u2 100 7 SET u63 #3 9223372036854775807 GET i64 #3",
        "BITFIELD f SET i64 0 -9223372036854775808 INCRBY i64 0 -1 OVERFLOW SAT INCRBY i64 0 -1",
        "BITFIELD f GET u64 0",
        "BITFIELD f GET i65 0",
        "BITFIELD f GET x8 0",
        "BITFIELD f GET u0 0",
        "BITFIELD f GET u8 -1",
        "BITFIELD f GET u8 #-1",
        "BITFIELD f GET u8 4294967296",
        "BITFIELD f SET u8 0 x",
        "BITFIELD f OVERFLOW BOGUS GET u8 0",
        "BITFIELD f GET u8",
        "BITFIELD f BOGUS",
        "BITFIELD_RO f GET u8 0 GET i4 #1",
        "BITFIELD_RO f SET u8 0 1",
        "BITFIELD_RO nokey GET u8 0",
        "SET s x",
        "RPUSH notastring a",
        "BITFIELD notastring GET u8 0",
        "BITFIELD notastring SET u8 0 1",
        "BITFIELD g OVERFLOW FAIL INCRBY u8 0 300",
        "GET g",
        "COMMAND GETKEYSANDFLAGS BITFIELD f GET u8 0 OVERFLOW SAT",
        "COMMAND GETKEYSANDFLAGS BITFIELD f GET u8 0 SET u8 0 1",
        "GET f",
    ] {
        same(&mut redis, &mut mono, line);
    }
    // Past the node's value limit (Redis allows 512 MB): refused whole.
    assert_eq!(
        show(&mono.call_str("BITFIELD f SET u8 67108863 1")),
        "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\\r\\n"
    );
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..800 {
        let mut line = "BITFIELD rf".to_owned();
        for _ in 0..rng.gen_range(1..4) {
            let signed = rng.gen_bool(0.5);
            let bits = rng.gen_range(1..if signed { 65 } else { 64 });
            let ty = format!("{}{bits}", if signed { 'i' } else { 'u' });
            let offset = if rng.gen_bool(0.3) {
                format!("#{}", rng.gen_range(0..6))
            } else {
                rng.gen_range(0..200).to_string()
            };
            let value = match rng.gen_range(0..4) {
                0 => i64::MAX.to_string(),
                1 => i64::MIN.to_string(),
                _ => rng.gen_range(-300i64..300).to_string(),
            };
            line += &match rng.gen_range(0..5) {
                0 => format!(" OVERFLOW {}", ["WRAP", "SAT", "FAIL"][rng.gen_range(0..3)]),
                1 | 2 => format!(" GET {ty} {offset}"),
                3 => format!(" SET {ty} {offset} {value}"),
                _ => format!(" INCRBY {ty} {offset} {value}"),
            };
        }
        same(&mut redis, &mut mono, &line);
    }
    same(&mut redis, &mut mono, "GET rf");
}
