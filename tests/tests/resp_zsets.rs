//! Sorted set commands against a real `redis-server`: ZPOPMIN, ZPOPMAX,
//! ZMPOP, the lex ranges, ZRANDMEMBER, ZUNION, ZINTER, ZDIFF and their
//! *STORE forms, ZINTERCARD and ZRANGESTORE. The same hand-written lines,
//! then a seeded random sequence, go to both in RESP2 and again in RESP3,
//! and the replies are compared byte for byte; ZRANDMEMBER's replies are
//! random, so they are checked for their properties instead.

use std::collections::HashSet;
use std::net::SocketAddr;

use monotable_tests::assert_same as same;
use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn raw_connect(addr: SocketAddr) -> RawResp {
    RawResp::connect(addr, 10)
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

/// One RESP2/RESP3 reply, parsed enough to compare random replies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Val {
    /// A bulk, simple, integer, double or error: its text, with its type byte.
    Scalar(u8, Vec<u8>),
    Null,
    Array(Vec<Val>),
}

/// Parses one reply at the start of `b`; returns it and the rest.
fn parse(b: &[u8]) -> (Val, &[u8]) {
    let nl = b.windows(2).position(|w| w == b"\r\n").expect("a line");
    let (tag, line, rest) = (b[0], &b[1..nl], &b[nl + 2..]);
    let n = || std::str::from_utf8(line).expect("utf8").parse::<i64>().expect("a length");
    match tag {
        b'$' if n() < 0 => (Val::Null, rest),
        b'$' => {
            let len = n() as usize;
            (Val::Scalar(b'$', rest[..len].to_vec()), &rest[len + 2..])
        }
        b'*' if n() < 0 => (Val::Null, rest),
        b'*' => {
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..n() {
                let (v, r) = parse(rest);
                items.push(v);
                rest = r;
            }
            (Val::Array(items), rest)
        }
        b'_' => (Val::Null, rest),
        other => (Val::Scalar(other, line.to_vec()), rest),
    }
}

/// ZRANDMEMBER key [count [WITHSCORES]]: errors and empty replies the same
/// bytes as Redis; otherwise as many items as Redis gave, each one of the
/// set's (with its score), distinct for a non-negative count.
fn random_members_fit(redis: &mut RawResp, mono: &mut RawResp, args: &[&[u8]]) {
    let want = redis.call(args);
    let got = mono.call(args);
    let cmd: Vec<String> = args.iter().map(|a| show(a)).collect();
    let (w, g) = (parse(&want).0, parse(&got).0);
    match (&w, &g) {
        (Val::Array(wi), Val::Array(gi)) if !wi.is_empty() => {
            assert_eq!(gi.len(), wi.len(), "{cmd:?}: {}", show(&got));
            // Every member (with score), in this connection's shape: a
            // count past any size returns the whole set.
            let mut all_args: Vec<&[u8]> = vec![b"ZRANDMEMBER", args[1], b"1000000"];
            all_args.extend(args.get(3).copied());
            let Val::Array(all) = parse(&redis.call(&all_args)).0 else { panic!("{cmd:?}") };
            let scores = args.len() == 4;
            // RESP2 WITHSCORES is flat: pair it up.
            let group = |items: &[Val]| -> Vec<Val> {
                if scores && !items.iter().any(|i| matches!(i, Val::Array(_))) {
                    items.chunks(2).map(|c| Val::Array(c.to_vec())).collect()
                } else {
                    items.to_vec()
                }
            };
            let all: HashSet<Val> = group(&all).into_iter().collect();
            let got_items = group(gi);
            for item in &got_items {
                assert!(all.contains(item), "{cmd:?}: {item:?} not in {all:?}");
            }
            let count = std::str::from_utf8(args[2]).ok().and_then(|c| c.parse::<i64>().ok());
            if count.is_some_and(|c| c > 0) {
                let distinct: HashSet<&Val> = got_items.iter().collect();
                assert_eq!(distinct.len(), got_items.len(), "{cmd:?}: repeats");
            }
        }
        (Val::Scalar(b'$', m), Val::Scalar(b'$', got_m)) if args.len() == 2 => {
            let _ = m;
            let score = redis.call(&[b"ZSCORE", args[1], got_m]);
            assert!(!matches!(parse(&score).0, Val::Null), "{cmd:?}: {}", show(&got));
        }
        _ => assert_eq!(show(&got), show(&want), "{cmd:?}"),
    }
}

const SCRIPT: &[&str] = &[
    "ZADD z 1 a 2 b 3 c 4 d 5 e",
    // ZPOPMIN, ZPOPMAX
    "ZPOPMIN z",
    "ZPOPMAX z",
    "ZPOPMIN z 2",
    "ZPOPMAX z 0",
    "ZPOPMIN z 10",
    "EXISTS z",
    "ZPOPMIN z",
    "ZPOPMIN z 3",
    "ZPOPMIN z -1",
    "ZPOPMIN z x",
    "ZPOPMIN z 1 2",
    "SET str v",
    "ZPOPMIN str",
    "ZPOPMAX str 0",
    "ZPOPMAX str -1",
    // ZMPOP
    "ZADD m1 1 a 2 b 3 c",
    "ZADD m2 10 x",
    "ZMPOP 2 nokey m1 MIN",
    "ZMPOP 2 nokey m1 MAX COUNT 5",
    "ZMPOP 2 m1 m2 min count 1",
    "ZMPOP 1 nokey MIN",
    "ZMPOP 2 str m2 MIN",
    "ZMPOP 2 m2 str MIN",
    "ZMPOP 0 m2 MIN",
    "ZMPOP -1 m2 MIN",
    "ZMPOP x m2 MIN",
    "ZMPOP 3 m2 MIN",
    "ZMPOP 1 m2 MIDDLE",
    "ZMPOP 1 m2 MIN COUNT 0",
    "ZMPOP 1 m2 MIN COUNT -2",
    "ZMPOP 1 m2 MIN COUNT x",
    "ZMPOP 1 m2 MIN COUNT 1 COUNT 1",
    "ZMPOP 1 m2 MIN COUNT",
    "ZMPOP 1 m2 MIN BOGUS",
    "ZMPOP 2 m2 m2 MAX",
    "EXISTS m2",
    // Lex ranges
    "ZADD lx 0 a 0 b 0 c 0 d 0 e 0 ee 0 f",
    "ZRANGEBYLEX lx - +",
    "ZRANGEBYLEX lx [b (e",
    "ZRANGEBYLEX lx (b [e",
    "ZRANGEBYLEX lx [e +",
    "ZRANGEBYLEX lx - + LIMIT 1 3",
    "ZRANGEBYLEX lx - + LIMIT -1 3",
    "ZRANGEBYLEX lx - + LIMIT 2 -1",
    "ZRANGEBYLEX lx - + LIMIT 0 0",
    "ZRANGEBYLEX lx - + LIMIT x 1",
    "ZRANGEBYLEX lx - + LIMIT 1",
    "ZRANGEBYLEX lx - + WITHSCORES",
    "ZRANGEBYLEX lx b d",
    "ZRANGEBYLEX lx -a +",
    "ZRANGEBYLEX lx + -",
    "ZRANGEBYLEX lx [z [a",
    "ZRANGEBYLEX nokey - +",
    "ZRANGEBYLEX str - +",
    "ZRANGEBYLEX str x +",
    "ZRANGEBYLEX lx - + BYLEX",
    "ZRANGEBYLEX lx - + REV",
    "ZREVRANGEBYLEX lx + -",
    "ZREVRANGEBYLEX lx (e [b",
    "ZREVRANGEBYLEX lx + - LIMIT 1 2",
    "ZREVRANGEBYLEX lx - +",
    "ZLEXCOUNT lx - +",
    "ZLEXCOUNT lx [b (ee",
    "ZLEXCOUNT lx (a (a",
    "ZLEXCOUNT lx a b",
    "ZLEXCOUNT nokey - +",
    "ZLEXCOUNT str - +",
    "ZLEXCOUNT str a b",
    "ZREMRANGEBYLEX lx [b [c",
    "ZRANGE lx 0 -1",
    "ZREMRANGEBYLEX lx x +",
    "ZREMRANGEBYLEX nokey - +",
    "ZREMRANGEBYLEX str - +",
    "ZREMRANGEBYLEX lx - +",
    "EXISTS lx",
    // ZRANGE's own checks, as ZRANGESTORE shares them.
    "ZADD r 1 a 2 b 3 c 4 d",
    // Postmortem: LIMIT with a count of -1 (Redis's "no LIMIT") was
    // refused for a range by index.
    "ZRANGE r 0 -1 LIMIT 1 -1",
    "ZRANGE r 0 -1 LIMIT 5 -1",
    "ZRANGE r 0 -1 LIMIT 0 2",
    // Postmortem: REV, BYSCORE and BYLEX were taken twice.
    "ZRANGE r 0 -1 REV REV",
    "ZRANGE r 1 3 BYSCORE BYSCORE",
    "ZRANGE r 1 3 BYSCORE BYLEX",
    "ZRANGE r [a [c BYLEX BYSCORE",
    "ZRANGE r 1 3 BYSCORE LIMIT -1 2",
    // Postmortem: a negative LIMIT offset answered empty before the
    // range was checked.
    "ZRANGE r x 3 BYSCORE LIMIT -1 2",
    "ZRANGE r a c BYLEX LIMIT -1 2",
    "ZRANGEBYSCORE r 1 3 BYSCORE",
    // ZRANGESTORE
    "ZRANGESTORE dst r 0 -1",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r 1 2",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r (1 +inf BYSCORE LIMIT 1 5",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r +inf (1 BYSCORE REV LIMIT 0 2",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r [b + BYLEX",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r 0 -1 REV",
    "ZRANGE dst 0 -1 WITHSCORES",
    "ZRANGESTORE dst r 0 -1 WITHSCORES",
    "ZRANGESTORE dst r 0 -1 LIMIT 0 1",
    "ZRANGESTORE dst r x 1",
    "ZRANGESTORE dst r a 1 BYSCORE",
    "ZRANGESTORE dst r a 1 BYLEX",
    "ZRANGESTORE dst str 0 -1",
    "ZRANGESTORE dst r 5 10",
    "EXISTS dst",
    "SET dst2 v",
    "EXPIRE dst2 1000",
    "ZRANGESTORE dst2 r 0 0",
    "TTL dst2",
    "TYPE dst2",
    "ZRANGESTORE dst2 nokey 0 -1",
    "EXISTS dst2",
    "ZRANGESTORE r r 1 2",
    "ZRANGE r 0 -1 WITHSCORES",
    "ZRANGESTORE dst r 0",
    // ZRANDMEMBER (random replies: see `random_members_fit`) and its errors.
    "ZRANDMEMBER nokey",
    "ZRANDMEMBER nokey 5",
    "ZRANDMEMBER nokey -5 WITHSCORES",
    "ZRANDMEMBER str",
    "ZRANDMEMBER str 1",
    "ZRANDMEMBER r 0",
    "ZRANDMEMBER r x",
    "ZRANDMEMBER r 1 BOGUS",
    "ZRANDMEMBER r 1 WITHSCORES x",
    "ZRANDMEMBER r -9223372036854775808",
    "ZRANDMEMBER r 9223372036854775807 WITHSCORES",
    "ZRANDMEMBER r -4611686018427387904 WITHSCORES",
    "ZRANDMEMBER nokey -9223372036854775807",
    // ZUNION, ZINTER, ZDIFF and their *STORE forms
    "ZADD u1 1 a 2 b 3 c",
    "ZADD u2 10 b 20 c 30 d",
    "SADD us b d e",
    "ZUNION 2 u1 u2",
    "ZUNION 2 u1 u2 WITHSCORES",
    "ZUNION 2 u1 u2 WEIGHTS 2 -1 WITHSCORES",
    "ZUNION 2 u1 u2 AGGREGATE MIN WITHSCORES",
    "ZUNION 2 u1 u2 AGGREGATE max WITHSCORES",
    "ZUNION 3 u1 u2 us WITHSCORES",
    "ZUNION 3 u1 nokey us WEIGHTS 1 1 0.5 WITHSCORES",
    "ZUNION 1 u1 WEIGHTS 0 WITHSCORES",
    "ZUNION 1 u1 WEIGHTS -1 WITHSCORES",
    "ZUNION 1 u1 WEIGHTS inf WITHSCORES",
    "ZUNION 2 u1 u2 WEIGHTS 1 WITHSCORES",
    "ZUNION 2 u1 u2 WEIGHTS 1 x",
    "ZUNION 2 u1 u2 AGGREGATE AVG",
    "ZUNION 2 u1 u2 AGGREGATE",
    "ZUNION 2 u1 u2 BOGUS",
    "ZUNION 2 u1 u2 WITHSCORES WITHSCORES",
    "ZUNION 2 u1 str",
    "ZUNION 2 str u1 BOGUS",
    "ZUNION 0 u1",
    "ZUNION -1 u1",
    "ZUNION x u1",
    "ZUNION 3 u1 u2",
    "ZUNION 2 nokey nokey2",
    "ZINTER 2 u1 u2 WITHSCORES",
    "ZINTER 2 u1 us WITHSCORES",
    "ZINTER 3 u1 u2 us",
    "ZINTER 2 u1 u2 WEIGHTS 2 3 AGGREGATE MIN WITHSCORES",
    "ZINTER 2 u1 u1 WITHSCORES",
    "ZINTER 2 u1 nokey",
    "ZINTER 2 u1 str",
    "ZINTER 0 u1",
    "ZDIFF 2 u1 u2",
    "ZDIFF 2 u1 us WITHSCORES",
    "ZDIFF 3 u2 u1 us WITHSCORES",
    "ZDIFF 1 nokey",
    "ZDIFF 2 u1 u2 WEIGHTS 1 1",
    "ZDIFF 2 u1 u2 AGGREGATE SUM",
    "ZDIFF 2 u1 str",
    "ZDIFF 0 u1",
    "ZINTERCARD 2 u1 u2",
    "ZINTERCARD 2 u1 us",
    "ZINTERCARD 2 u1 u2 LIMIT 1",
    "ZINTERCARD 2 u1 u2 LIMIT 0",
    "ZINTERCARD 2 u1 u2 LIMIT -1",
    "ZINTERCARD 2 u1 u2 LIMIT x",
    "ZINTERCARD 2 u1 u2 LIMIT",
    "ZINTERCARD 2 u1 u2 WITHSCORES",
    "ZINTERCARD 2 u1 u2 WEIGHTS 1 1",
    "ZINTERCARD 2 u1 str",
    "ZINTERCARD 0 u1",
    "ZINTERCARD 3 u1 u2",
    "ZINTERCARD 1 nokey",
    "ZUNIONSTORE out 2 u1 u2",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZUNIONSTORE out 2 u1 u2 WEIGHTS 1 2 AGGREGATE MAX",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZUNIONSTORE out 2 u1 u2 WITHSCORES",
    "ZUNIONSTORE out 0 u1",
    "ZINTERSTORE out 2 u1 u2",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZINTERSTORE out 2 u1 nokey",
    "EXISTS out",
    "ZDIFFSTORE out 2 u1 us",
    "ZRANGE out 0 -1 WITHSCORES",
    "ZDIFFSTORE out 2 u1 u1",
    "EXISTS out",
    "ZDIFFSTORE out 1 u1 WITHSCORES",
    "SET out2 v",
    "EXPIRE out2 1000",
    "ZUNIONSTORE out2 1 us",
    "TYPE out2",
    "TTL out2",
    "ZRANGE out2 0 -1 WITHSCORES",
    "ZUNIONSTORE u1 2 u1 u2",
    "ZRANGE u1 0 -1 WITHSCORES",
    "ZINTERSTORE us 2 us u2",
    "TYPE us",
    "ZRANGE us 0 -1 WITHSCORES",
    "ZUNIONSTORE str 1 str",
    "GET str",
    "ZUNIONSTORE out 1",
    "ZUNION 1",
    // Scores at the edges: -0 from a weight (printed -0, stored 0), inf - inf.
    "ZADD e1 0 zero 1e300 big -inf lo inf hi 0.1 tenth",
    "ZADD e2 0 zero 1e300 big inf lo -inf hi",
    "ZUNION 1 e1 WEIGHTS -1 WITHSCORES",
    "ZUNION 2 e1 e2 WITHSCORES",
    "ZUNION 2 e1 e2 WEIGHTS 1e300 1e10 WITHSCORES",
    "ZINTER 2 e1 e2 WEIGHTS 0 1 AGGREGATE MIN WITHSCORES",
    "ZINTER 2 e1 e2 WEIGHTS 1 0 AGGREGATE MAX WITHSCORES",
    "ZUNIONSTORE e3 1 e1 WEIGHTS -1",
    "ZRANGE e3 0 -1 WITHSCORES",
    "ZSCORE e3 zero",
    // Postmortem: a lex range over members of different scores was
    // filtered, where Redis walks the members in score order and stops.
    "ZADD mixed 1 b 2 a 3 c 3 d",
    "ZRANGEBYLEX mixed [b [c",
    "ZRANGEBYLEX mixed - (b",
    "ZREVRANGEBYLEX mixed + [c",
    "ZRANGEBYLEX mixed - + LIMIT 1 2",
    "ZLEXCOUNT mixed [b [c",
    "ZRANGE mixed [a [c BYLEX",
    "ZRANGESTORE mixed2 mixed [b + BYLEX",
    "ZRANGE mixed2 0 -1 WITHSCORES",
    "ZREMRANGEBYLEX mixed [b [c",
    "ZRANGE mixed 0 -1 WITHSCORES",
    // Keys as COMMAND finds them.
    "COMMAND GETKEYS ZUNIONSTORE out 2 u1 u2 WEIGHTS 1 2",
    "COMMAND GETKEYS ZMPOP 2 a b MIN",
    "COMMAND GETKEYS ZRANGESTORE d s 0 1",
    "COMMAND GETKEYSANDFLAGS ZINTER 2 a b",
    "COMMAND GETKEYSANDFLAGS ZDIFFSTORE d 1 a",
    // Reading sources is not a change a WATCH sees; storing is.
    "WATCH e1 e2",
    "ZUNION 2 e1 e2",
    "ZINTERSTORE e4 2 e1 e2",
    "MULTI",
    "PING",
    "EXEC",
    "WATCH e4",
    "ZINTERSTORE e4 2 e1 e2",
    "MULTI",
    "PING",
    "EXEC",
    // In a transaction
    "MULTI",
    "ZADD tz 1 a 2 b",
    "ZPOPMIN tz",
    "ZUNIONSTORE tz2 1 tz",
    "ZMPOP 2 tz tz2 MAX COUNT 2",
    "ZRANGESTORE tz3 tz2 0 -1",
    "ZINTERCARD 2 tz2 tz3",
    "EXEC",
];

fn script_matches(redis: &mut RawResp, mono: &mut RawResp) {
    for line in SCRIPT {
        let args = words(line);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        if args[0] == b"ZRANDMEMBER" {
            random_members_fit(redis, mono, &args);
        } else {
            same(redis, mono, &args);
        }
    }
    for line in ["ZRANDMEMBER r", "ZRANDMEMBER r 2", "ZRANDMEMBER r 10 WITHSCORES"] {
        let args = words(line);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        random_members_fit(redis, mono, &args);
    }
    // Floats as Redis's strtod reads them: hex floats, overflow and
    // underflow, leading and trailing spaces, NUL bytes, bare `(` bounds.
    // Postmortem: scores were read with Rust's parser, which refuses
    // `0x10` and takes `1e400` as inf.
    for args in [
        &[&b"ZADD"[..], b"fl", b"0x10", b"hex"][..],
        &[b"ZADD", b"fl", b"0x1p-3", b"hexexp"],
        &[b"ZADD", b"fl", b"1e400", b"over"],
        &[b"ZADD", b"fl", b"-1e400", b"over"],
        &[b"ZADD", b"fl", b"1e-400", b"under"],
        &[b"ZADD", b"fl", b"4e-320", b"subnormal"],
        &[b"ZADD", b"fl", b" 5", b"lead"],
        &[b"ZADD", b"fl", b"5 ", b"trail"],
        &[b"ZADD", b"fl", b"5\x005", b"nul"],
        &[b"ZADD", b"fl", b"nan", b"nan"],
        &[b"ZADD", b"fl", b"-Infinity", b"minf"],
        &[b"ZADD", b"fl", b"+.5", b"half"],
        &[b"ZADD", b"fl", b"", b"empty"],
        &[b"ZINCRBY", b"fl", b"0X1P3", b"hex"],
        &[b"ZRANGE", b"fl", b"0", b"-1", b"WITHSCORES"],
        &[b"ZRANGEBYSCORE", b"fl", b"(", b"+inf"],
        &[b"ZRANGEBYSCORE", b"fl", b"( 5", b"1e400"],
        &[b"ZCOUNT", b"fl", b"-1e400", b"0x10"],
        &[b"ZCOUNT", b"fl", b" 0", b"16\0junk"],
        &[b"ZCOUNT", b"fl", b"nan", b"1"],
        &[b"ZCOUNT", b"fl", b"1 ", b"2"],
        &[b"ZUNIONSTORE", b"fl2", b"1", b"fl", b"WEIGHTS", b"0x2"],
        &[b"ZUNIONSTORE", b"fl2", b"1", b"fl", b"WEIGHTS", b"1e400"],
        &[b"ZRANGE", b"fl2", b"0", b"-1", b"WITHSCORES"],
        &[b"BLPOP", b"nolist", b"0x0.1p-4"],
        &[b"BLPOP", b"nolist", b"1e400"],
    ] {
        same(redis, mono, args);
    }
    // Members with NUL and CRLF bytes.
    let odd: &[&[u8]] = &[b"ZADD", b"odd", b"1", b"a\0b", b"1", b"a", b"2", b"x\r\ny", b"0", b""];
    same(redis, mono, odd);
    for args in [
        &[&b"ZRANGEBYLEX"[..], b"odd", b"[a", b"+"][..],
        &[b"ZRANGEBYLEX", b"odd", b"(a\0", b"[x\r\nz"],
        &[b"ZUNION", b"1", b"odd", b"WITHSCORES"],
        &[b"ZPOPMAX", b"odd", b"2"],
        &[b"ZMPOP", b"1", b"odd", b"MIN", b"COUNT", b"9"],
    ] {
        same(redis, mono, args);
    }
}

/// A random sequence over a few keys: these commands mixed with ZADD,
/// ZREM, SADD, SET and DEL, so type errors and set sources occur.
fn random_steps_match(redis: &mut RawResp, mono: &mut RawResp, seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: [&[u8]; 4] = [b"ka", b"kb", b"kc", b"kd"];
    let members: [&[u8]; 7] = [b"a", b"b", b"c", b"d\0e", b"x\r\ny", b"", b"m"];
    let scores: [&[u8]; 12] = [
        b"0", b"-0", b"1", b"2.5", b"-1", b"inf", b"-inf", b"1e300", b"-1e300", b"0.1", b"1e-300",
        b"3",
    ];
    let bounds: [&[u8]; 8] = [b"(1", b"1", b"-inf", b"+inf", b"(0", b"0", b"2.5", b"x"];
    let lex: [&[u8]; 8] = [b"-", b"+", b"[a", b"(b", b"[c", b"(m", b"[", b"a"];
    let weights: [&[u8]; 7] = [b"1", b"0", b"-1", b"2", b"1e300", b"inf", b"0.5"];
    let counts: [&[u8]; 7] = [b"0", b"1", b"2", b"5", b"-1", b"-3", b"x"];
    for _ in 0..steps {
        let pick = |rng: &mut StdRng, from: &[&'static [u8]]| from[rng.gen_range(0..from.len())];
        let k = pick(&mut rng, &keys);
        let k2 = pick(&mut rng, &keys);
        let k3 = pick(&mut rng, &keys);
        let m = pick(&mut rng, &members);
        let s = pick(&mut rng, &scores);
        let c = pick(&mut rng, &counts);
        let n = rng.gen_range(1..=3usize);
        let srcs = [k, k2, k3];
        let algebra = |rng: &mut StdRng, name: &'static [u8], store: bool| {
            let mut a: Vec<&[u8]> = vec![name];
            if store {
                a.push(pick(rng, &keys));
            }
            let nk: &[u8] = [b"1".as_slice(), b"2", b"3"][n - 1];
            a.push(nk);
            a.extend(&srcs[..n]);
            let diff = name.starts_with(b"ZDIFF");
            if !diff && rng.gen_bool(0.5) {
                a.push(b"WEIGHTS");
                for _ in 0..n {
                    a.push(pick(rng, &weights));
                }
            }
            if !diff && rng.gen_bool(0.4) {
                a.push(b"AGGREGATE");
                a.push([b"SUM".as_slice(), b"MIN", b"MAX"][rng.gen_range(0..3)]);
            }
            if !store && rng.gen_bool(0.6) {
                a.push(b"WITHSCORES");
            }
            a
        };
        let cmd: Vec<&[u8]> = match rng.gen_range(0..30) {
            0..=3 => vec![b"ZADD", k, s, m, pick(&mut rng, &scores), pick(&mut rng, &members)],
            4 => vec![b"ZREM", k, m],
            5 => vec![b"SADD", k, m],
            // Rarely: a string stays until DEL, and every command on it fails.
            6 if rng.gen_bool(0.3) => vec![b"SET", k, b"v"],
            6 => vec![b"ZADD", k, b"GT", s, m],
            7 => vec![b"DEL", k],
            8 => vec![b"ZPOPMIN", k, c],
            9 => vec![b"ZPOPMAX", k],
            10 => vec![
                b"ZMPOP",
                b"2",
                k,
                k2,
                if rng.gen_bool(0.5) { b"MIN" } else { b"MAX" },
                b"COUNT",
                c,
            ],
            11 => vec![b"ZRANGEBYLEX", k, pick(&mut rng, &lex), pick(&mut rng, &lex)],
            12 => vec![
                b"ZREVRANGEBYLEX",
                k,
                pick(&mut rng, &lex),
                pick(&mut rng, &lex),
                b"LIMIT",
                b"1",
                c,
            ],
            13 => vec![b"ZLEXCOUNT", k, pick(&mut rng, &lex), pick(&mut rng, &lex)],
            14 => vec![b"ZREMRANGEBYLEX", k, pick(&mut rng, &lex), pick(&mut rng, &lex)],
            15 => vec![b"ZRANDMEMBER", k, c, b"WITHSCORES"],
            16 => vec![b"ZRANDMEMBER", k],
            17 => algebra(&mut rng, b"ZUNION", false),
            18 => algebra(&mut rng, b"ZINTER", false),
            19 => algebra(&mut rng, b"ZDIFF", false),
            20 => algebra(&mut rng, b"ZUNIONSTORE", true),
            21 => algebra(&mut rng, b"ZINTERSTORE", true),
            22 => algebra(&mut rng, b"ZDIFFSTORE", true),
            23 => vec![b"ZINTERCARD", b"2", k, k2, b"LIMIT", c],
            24 => vec![
                b"ZRANGESTORE",
                k,
                k2,
                pick(&mut rng, &bounds),
                pick(&mut rng, &bounds),
                b"BYSCORE",
            ],
            25 => vec![b"ZRANGESTORE", k, k2, b"0", c, b"REV"],
            26 => vec![
                b"ZRANGESTORE",
                k,
                k2,
                pick(&mut rng, &lex),
                pick(&mut rng, &lex),
                b"BYLEX",
                b"LIMIT",
                b"0",
                c,
            ],
            27 => vec![b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"],
            28 => vec![b"TYPE", k],
            _ => vec![b"ZRANGE", k, pick(&mut rng, &bounds), b"+inf", b"BYSCORE", b"WITHSCORES"],
        };
        if cmd[0] == b"ZRANDMEMBER" {
            random_members_fit(redis, mono, &cmd);
        } else {
            same(redis, mono, &cmd);
        }
    }
    // The end state is the same too.
    for k in keys {
        same(redis, mono, &[b"TYPE", k]);
        same(redis, mono, &[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]);
    }
}

#[test]
fn sorted_set_commands_match_redis_in_resp2_and_resp3() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for proto in [b"2", b"3"] {
        let mut redis = raw_connect(redis_server.addr);
        let mut mono = raw_connect(node.resp_addr);
        for c in [&mut redis, &mut mono] {
            let hello = c.call(&[b"HELLO", proto]);
            assert!(!hello.starts_with(b"-"), "{}", show(&hello));
        }
        same(&mut redis, &mut mono, &[b"FLUSHALL"]);
        script_matches(&mut redis, &mut mono);
        same(&mut redis, &mut mono, &[b"FLUSHALL"]);
        random_steps_match(&mut redis, &mut mono, 11, 4000);
    }
}
