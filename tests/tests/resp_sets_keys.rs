//! SMOVE, the `S*STORE` commands, SINTERCARD, COPY, TOUCH, EXPIRETIME,
//! PEXPIRETIME, RANDOMKEY and HRANDFIELD against a real `redis-server`
//! 7.0 (started here on a free loopback port): hand-written lines and a
//! seeded random sequence over a few keys and two databases, in RESP2 and
//! RESP3, replies compared byte for byte (unordered ones as sorted sets,
//! random ones by their properties); and the WATCH, FLUSHALL, expiry and
//! float-increment cases Redis's own test suite found.

use std::time::Duration;

use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A parsed reply: a line (its type byte and text) or an aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Line(Vec<u8>),
    Bulk(Vec<u8>),
    Agg(u8, Vec<Value>),
}

fn parse(bytes: &[u8]) -> (Value, &[u8]) {
    let nl = bytes.iter().position(|&b| b == b'\n').expect("a line");
    let line = &bytes[..nl - 1];
    let rest = &bytes[nl + 1..];
    let n = || std::str::from_utf8(&line[1..]).expect("utf-8").parse::<i64>().expect("number");
    match bytes[0] {
        b'$' if n() >= 0 => {
            let len = n() as usize;
            (Value::Bulk(rest[..len].to_vec()), &rest[len + 2..])
        }
        tag @ (b'*' | b'~' | b'%') if n() >= 0 => {
            let count = if tag == b'%' { n() * 2 } else { n() };
            let mut items = Vec::new();
            let mut rest = rest;
            for _ in 0..count {
                let (v, r) = parse(rest);
                items.push(v);
                rest = r;
            }
            (Value::Agg(tag, items), rest)
        }
        _ => (Value::Line(line.to_vec()), rest),
    }
}

fn name_of(args: &[&[u8]]) -> String {
    String::from_utf8_lossy(args[0]).to_ascii_uppercase()
}

/// Replies Redis orders by its hash tables: compared sorted (by pairs for
/// HGETALL).
fn normalized(args: &[&[u8]], reply: &[u8]) -> String {
    let name = name_of(args);
    let unordered = ["HGETALL", "HKEYS", "HVALS", "SMEMBERS", "SINTER", "SUNION", "SDIFF", "KEYS"];
    let (value, rest) = parse(reply);
    assert!(rest.is_empty(), "one reply");
    if !unordered.contains(&name.as_str()) {
        return show(reply);
    }
    match value {
        Value::Agg(tag, items) => {
            let step = if name == "HGETALL" { 2 } else { 1 };
            let mut groups: Vec<Vec<Value>> = items.chunks(step).map(<[Value]>::to_vec).collect();
            groups.sort();
            format!("{} {groups:?}", tag as char)
        }
        other => format!("{other:?}"),
    }
}

/// Sends `args` to both and asserts the replies are the same (see
/// [`normalized`]); random commands are checked by [`random_ok`].
fn same(redis: &mut RawResp, mono: &mut RawResp, args: &[&[u8]]) {
    let want = redis.call(args);
    let got = mono.call(args);
    let cmd: Vec<String> = args.iter().map(|a| show(a)).collect();
    if ["HRANDFIELD", "SRANDMEMBER", "RANDOMKEY"].contains(&name_of(args).as_str()) {
        random_ok(mono, args, &want, &got);
        return;
    }
    assert_eq!(normalized(args, &got), normalized(args, &want), "{cmd:?}");
}

/// A random reply has Redis's shape and size, distinct elements when the
/// count is positive, and only elements of the key (asked of Monotable
/// after, with a read that changes nothing).
fn random_ok(mono: &mut RawResp, args: &[&[u8]], want: &[u8], got: &[u8]) {
    let cmd: Vec<String> = args.iter().map(|a| show(a)).collect();
    let (w, _) = parse(want);
    let (g, _) = parse(got);
    fn shape(v: &Value) -> String {
        match v {
            Value::Line(l) if l.starts_with(b"-") => show(l),
            Value::Line(l) => format!("line {}", l[0] as char),
            Value::Bulk(_) => "bulk".into(),
            // Its items' shapes too: RESP3 WITHVALUES pairs are arrays.
            Value::Agg(t, items) => {
                let inner: Vec<String> = items.iter().map(shape).collect();
                format!("{} {} {inner:?}", *t as char, items.len())
            }
        }
    }
    assert_eq!(shape(&g), shape(&w), "{cmd:?}: {} vs {}", show(got), show(want));
    let name = name_of(args);
    let elements: Vec<Vec<u8>> = match &g {
        Value::Bulk(b) => vec![b.clone()],
        Value::Agg(_, items) => items
            .iter()
            .flat_map(|i| match i {
                Value::Bulk(b) => vec![b.clone()],
                // RESP3 WITHVALUES: [field, value].
                Value::Agg(_, pair) => match &pair[0] {
                    Value::Bulk(b) => vec![b.clone()],
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            })
            .collect(),
        _ => return,
    };
    let with_values = args.len() == 4;
    let fields: Vec<Vec<u8>> = if with_values && !got.starts_with(b"*0") {
        // RESP2 flat pairs: every other one is a field.
        match &g {
            Value::Agg(_, items) if matches!(items.first(), Some(Value::Bulk(_))) => {
                elements.iter().step_by(2).cloned().collect()
            }
            _ => elements.clone(),
        }
    } else {
        elements.clone()
    };
    for e in &fields {
        let check: Vec<&[u8]> = match name.as_str() {
            "RANDOMKEY" => vec![b"EXISTS", e],
            "HRANDFIELD" => vec![b"HEXISTS", args[1], e],
            _ => vec![b"SISMEMBER", args[1], e],
        };
        assert_eq!(show(&mono.call(&check)), ":1\\r\\n", "{cmd:?} gave {}", show(e));
    }
    let negative = args.get(2).is_some_and(|c| c.starts_with(b"-"));
    if !negative {
        let mut distinct = fields.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), fields.len(), "{cmd:?} repeated: {}", show(got));
    }
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

fn run_line(redis: &mut RawResp, mono: &mut RawResp, line: &str) {
    let args = words(line);
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    same(redis, mono, &refs);
}

const SCRIPT: &[&str] = &[
    "FLUSHALL",
    "SADD s1 a b c d",
    "SADD s2 c d e",
    "SADD s3 d e f",
    "SET str v",
    "HSET h f1 v1 f2 v2 f3 v3",
    // SINTERSTORE / SUNIONSTORE / SDIFFSTORE
    "SINTERSTORE d s1 s2",
    "SMEMBERS d",
    "SINTERSTORE d s1 s2 s3",
    "SMEMBERS d",
    "SUNIONSTORE d s1 s2 s3",
    "SCARD d",
    "SDIFFSTORE d s1 s2",
    "SMEMBERS d",
    "SDIFFSTORE d s1 s1",
    "EXISTS d",
    "SUNIONSTORE d s1",
    "EXPIRE d 1000",
    "SINTERSTORE d s1 missing",
    "EXISTS d",
    "SUNIONSTORE d s1 missing",
    "TTL d",
    "SINTERSTORE d s1 str",
    "SINTERSTORE d missing str",
    "SUNIONSTORE d s1 str",
    "SDIFFSTORE d missing str",
    "SDIFFSTORE d missing s1",
    "SMEMBERS d",
    "SET d x",
    "SUNIONSTORE d s2",
    "TYPE d",
    "SINTERSTORE s1 s1 s2",
    "SMEMBERS s1",
    "SUNIONSTORE s1 s1 s3",
    "SMEMBERS s1",
    "SDIFFSTORE str s1 s2",
    "TYPE str",
    "SET str v",
    "SINTERSTORE",
    "SINTERSTORE d",
    "SINTER s1 s2 s3",
    "SUNION s1 missing",
    "SDIFF s1 s3",
    "SINTER s1 str",
    // SINTERCARD
    "SINTERCARD 2 s1 s2",
    "SINTERCARD 1 s1",
    "SINTERCARD 3 s1 s2 s3",
    "SINTERCARD 2 s1 missing",
    "SINTERCARD 2 s1 s2 LIMIT 1",
    "SINTERCARD 2 s1 s2 LIMIT 0",
    "SINTERCARD 2 s1 s2 limit 100",
    "SINTERCARD 2 s1 s2 LIMIT -1",
    "SINTERCARD 2 s1 s2 LIMIT x",
    "SINTERCARD 2 s1 s2 LIMIT",
    "SINTERCARD 2 s1 s2 LIMIT 1 LIMIT 2",
    "SINTERCARD 2 s1 s2 BOGUS",
    "SINTERCARD 0 s1",
    "SINTERCARD -1 s1",
    "SINTERCARD x s1",
    "SINTERCARD 3 s1 s2",
    "SINTERCARD 2 s1 str",
    "SINTERCARD 2 missing str",
    "SINTERCARD 1",
    "SINTERCARD 9223372036854775807 s1",
    // SMOVE
    "SMOVE s1 s2 c",
    "SMEMBERS s1",
    "SMEMBERS s2",
    "SMOVE s1 s2 zz",
    "SMOVE missing s2 a",
    "SMOVE missing str a",
    "SMOVE s1 str d",
    "SMOVE str s1 a",
    "SMOVE s1 s1 d",
    "SMOVE s1 s1 zz",
    "SMOVE str str a",
    "SMOVE s3 fresh f",
    "SMEMBERS fresh",
    "SADD one only",
    "SMOVE one fresh only",
    "EXISTS one",
    "SMOVE s2 fresh d",
    "SMOVE s2 fresh d",
    "SMOVE s1",
    // COPY
    "COPY s2 c1",
    "SMEMBERS c1",
    "COPY s2 c1",
    "COPY s2 c1 REPLACE",
    "COPY h c2",
    "HGETALL c2",
    "COPY str c3",
    "GET c3",
    "RPUSH l x y z",
    "COPY l c4",
    "LRANGE c4 0 -1",
    "ZADD z 1 a 2 b",
    "COPY z c5",
    "ZRANGE c5 0 -1 WITHSCORES",
    "COPY missing c6",
    "EXISTS c6",
    "COPY str str",
    "COPY str str DB 0",
    "COPY str str DB 1",
    "COPY str c7 DB 16",
    "COPY str c7 DB -1",
    "COPY str c7 DB x",
    "COPY str c7 DB 2147483648",
    "COPY str c7 DB",
    "COPY str c7 BOGUS",
    "COPY str c7 replace replace",
    "COPY h c2 REPLACE DB 1",
    "SELECT 1",
    "HGETALL c2",
    "TYPE c2",
    "COPY c2 str",
    "SET x1 inone",
    "COPY x1 back DB 0",
    "SELECT 0",
    "GET back",
    "COPY s2 str REPLACE",
    "TYPE str",
    "SMEMBERS str",
    "SET str v",
    "PEXPIREAT str 4000000000123",
    "COPY str ttl1",
    "PEXPIRETIME ttl1",
    "EXPIRETIME ttl1",
    "COPY s1 h REPLACE",
    "TYPE h",
    "COPY",
    "COPY a",
    // TOUCH, EXPIRETIME, PEXPIRETIME
    "TOUCH str s1 missing str",
    "TOUCH missing",
    "TOUCH",
    "EXPIRETIME missing",
    "PEXPIRETIME missing",
    "EXPIRETIME s1",
    "PEXPIRETIME s1",
    "PEXPIREAT s1 4000000000499",
    "EXPIRETIME s1",
    "PEXPIREAT s1 4000000000500",
    "EXPIRETIME s1",
    "PEXPIRETIME s1",
    "EXPIREAT s1 4000000001",
    "EXPIRETIME s1",
    "PEXPIRETIME s1",
    "EXPIRETIME",
    "EXPIRETIME a b",
    "PEXPIRETIME",
    // HRANDFIELD (random: checked by shape and membership)
    "HSET h2 f1 v1 f2 v2 f3 v3",
    "HRANDFIELD h2",
    "HRANDFIELD h2 2",
    "HRANDFIELD h2 3",
    "HRANDFIELD h2 10",
    "HRANDFIELD h2 1",
    "HRANDFIELD h2 0",
    "HRANDFIELD h2 -5",
    "HRANDFIELD h2 -1",
    "HRANDFIELD h2 2 WITHVALUES",
    "HRANDFIELD h2 10 withvalues",
    "HRANDFIELD h2 -5 WITHVALUES",
    "HRANDFIELD h2 0 WITHVALUES",
    "HRANDFIELD h2 2 BOGUS",
    "HRANDFIELD h2 2 WITHVALUES x",
    "HRANDFIELD h2 x",
    "HRANDFIELD h2 x WITHVALUES",
    "HRANDFIELD h2 -9223372036854775808",
    "HRANDFIELD h2 9223372036854775807 WITHVALUES",
    "HRANDFIELD h2 4611686018427387904 WITHVALUES",
    "HRANDFIELD h2 4611686018427387903 WITHVALUES",
    "HRANDFIELD h2 -4611686018427387904 WITHVALUES",
    "HRANDFIELD missing",
    "HRANDFIELD missing 3",
    "HRANDFIELD missing -3 WITHVALUES",
    "HRANDFIELD str",
    "HRANDFIELD str 3",
    "HRANDFIELD str 0",
    "HRANDFIELD",
    "SRANDMEMBER s2 -3",
    // The count is checked before the key's type.
    "SPOP str -1",
    "SPOP str x",
    "SPOP missing -1",
    // RANDOMKEY
    "RANDOMKEY",
    "RANDOMKEY x",
    "SELECT 3",
    "RANDOMKEY",
    "SET only here",
    "RANDOMKEY",
    "SELECT 0",
    // Inside MULTI.
    "MULTI",
    "SADD m1 a b",
    "SMOVE m1 m2 a",
    "SUNIONSTORE m3 m1 m2",
    "SINTERCARD 2 m3 m1",
    "COPY m3 m4",
    "TOUCH m1 m2 m3 m4",
    "PEXPIRETIME m4",
    "EXEC",
    "SMEMBERS m4",
    // COPY to another database inside MULTI: its one write is there.
    "MULTI",
    "COPY m4 m5 DB 1",
    "TOUCH m4",
    "EXEC",
    "SELECT 1",
    "SMEMBERS m5",
    "SELECT 0",
];

fn resp3(c: &mut RawResp) {
    let reply = c.call(&[b"HELLO", b"3"]);
    assert!(reply.starts_with(b"%"), "{}", show(&reply));
}

#[test]
fn hand_written_lines_match_redis_in_resp2_and_resp3() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for proto in [2, 3] {
        let mut redis = RawResp::connect(redis_server.addr, 10);
        let mut mono = RawResp::connect(node.resp_addr, 10);
        if proto == 3 {
            resp3(&mut redis);
            resp3(&mut mono);
        }
        for line in SCRIPT {
            run_line(&mut redis, &mut mono, line);
        }
    }
}

/// Members and fields with NUL, CRLF, empty and numeric ones.
const ELEMENTS: &[&[u8]] = &[b"a", b"b", b"x\0y", b"cr\r\nlf", b"", b"7", b"-1"];
const KEYS: &[&[u8]] = &[b"k1", b"k2", b"k3", b"k\r\n4"];

fn random_step(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let key = |rng: &mut StdRng| KEYS[rng.gen_range(0..KEYS.len())].to_vec();
    let el = |rng: &mut StdRng| ELEMENTS[rng.gen_range(0..ELEMENTS.len())].to_vec();
    let s = |w: &str| w.as_bytes().to_vec();
    match rng.gen_range(0..26) {
        0..=2 => vec![s("SADD"), key(rng), el(rng), el(rng)],
        3 => vec![s("SREM"), key(rng), el(rng)],
        4 => vec![s("HSET"), key(rng), el(rng), el(rng)],
        5 => vec![s("SET"), key(rng), el(rng)],
        6 => vec![s("DEL"), key(rng)],
        7 => vec![
            s("EXPIREAT"),
            key(rng),
            s(&rng.gen_range(4_000_000_000u64..4_000_000_009).to_string()),
        ],
        8 => vec![s("SMOVE"), key(rng), key(rng), el(rng)],
        9 => vec![s("SINTERSTORE"), key(rng), key(rng), key(rng)],
        10 => vec![s("SUNIONSTORE"), key(rng), key(rng), key(rng)],
        11 => vec![s("SDIFFSTORE"), key(rng), key(rng), key(rng)],
        12 => {
            let mut v = vec![s("SINTERCARD"), s("2"), key(rng), key(rng)];
            if rng.gen_bool(0.5) {
                v.extend([s("LIMIT"), s(&rng.gen_range(0..3).to_string())]);
            }
            v
        }
        13 => {
            let mut v = vec![s("COPY"), key(rng), key(rng)];
            if rng.gen_bool(0.5) {
                v.extend([s("DB"), s(&rng.gen_range(0..2).to_string())]);
            }
            if rng.gen_bool(0.5) {
                v.push(s("REPLACE"));
            }
            v
        }
        14 => vec![s("TOUCH"), key(rng), key(rng)],
        15 => vec![s("EXPIRETIME"), key(rng)],
        16 => vec![s("PEXPIRETIME"), key(rng)],
        17 => vec![s("RANDOMKEY")],
        18 => {
            let mut v = vec![s("HRANDFIELD"), key(rng)];
            if rng.gen_bool(0.7) {
                v.push(s(&rng.gen_range(-4i64..5).to_string()));
                if rng.gen_bool(0.5) {
                    v.push(s("WITHVALUES"));
                }
            }
            v
        }
        19 => vec![s("SMEMBERS"), key(rng)],
        20 => vec![s("HGETALL"), key(rng)],
        21 => vec![s("TYPE"), key(rng)],
        22 => vec![s("SCARD"), key(rng)],
        23 => vec![s("SELECT"), s(&rng.gen_range(0..2).to_string())],
        24 => vec![s("SINTER"), key(rng), key(rng)],
        _ => vec![s("SRANDMEMBER"), key(rng), s(&rng.gen_range(-3i64..4).to_string())],
    }
}

#[test]
fn random_sequences_match_redis_in_resp2_and_resp3() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for (proto, seed) in [(2, 7u64), (3, 8)] {
        let mut redis = RawResp::connect(redis_server.addr, 10);
        let mut mono = RawResp::connect(node.resp_addr, 10);
        if proto == 3 {
            resp3(&mut redis);
            resp3(&mut mono);
        }
        run_line(&mut redis, &mut mono, "FLUSHALL");
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..2500 {
            let args = random_step(&mut rng);
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            same(&mut redis, &mut mono, &refs);
        }
        // Both end with the same data in both databases.
        for db in ["0", "1"] {
            run_line(&mut redis, &mut mono, &format!("SELECT {db}"));
            run_line(&mut redis, &mut mono, "KEYS *");
            for k in KEYS {
                for cmd in ["TYPE", "SMEMBERS", "HGETALL", "PEXPIRETIME"] {
                    let args: Vec<&[u8]> = vec![cmd.as_bytes(), k];
                    if cmd == "TYPE" || !redis.call(&[b"TYPE", k]).starts_with(b"+string") {
                        same(&mut redis, &mut mono, &args);
                    }
                }
            }
        }
    }
}

/// Runs `body` against both servers with two connections each.
fn on_both(body: impl Fn(&mut RawResp, &mut RawResp, &str)) {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for (addr, who) in [(redis_server.addr, "redis"), (node.resp_addr, "monotable")] {
        let mut a = RawResp::connect(addr, 10);
        let mut b = RawResp::connect(addr, 10);
        body(&mut a, &mut b, who);
    }
}

#[test]
fn a_flush_fails_only_the_watches_of_keys_that_existed() {
    // Postmortem: FLUSHALL/FLUSHDB bumped an epoch that failed every WATCH;
    // Redis fails only those of keys the flush removed.
    on_both(|a, b, who| {
        for flush in ["FLUSHALL", "FLUSHDB"] {
            a.call_str("DEL w");
            assert_eq!(a.call_str("WATCH nokey"), b"+OK\r\n", "{who}");
            assert_eq!(b.call_str(flush), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
            assert_eq!(a.call_str("EXEC"), b"*1\r\n+PONG\r\n", "{who} {flush}: missing key");
            assert_eq!(a.call_str("SET w 1"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("WATCH w"), b"+OK\r\n", "{who}");
            assert_eq!(b.call_str(flush), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
            assert_eq!(a.call_str("EXEC"), b"*-1\r\n", "{who} {flush}: existing key");
        }
    });
}

#[test]
fn an_expired_watched_key_aborts_exec() {
    // Postmortem: a watched key removed by expiry (in the background, or
    // lazily by a read) before EXEC let the transaction run; Redis aborts.
    on_both(|a, b, who| {
        for read_it in [false, true] {
            assert_eq!(a.call_str("SET e 1 PX 100"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("WATCH e"), b"+OK\r\n", "{who}");
            std::thread::sleep(Duration::from_millis(300));
            if read_it {
                assert_eq!(b.call_str("GET e"), b"$-1\r\n", "{who}");
            }
            assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
            assert_eq!(a.call_str("EXEC"), b"*-1\r\n", "{who} read={read_it}");
        }
        // A key already expired at WATCH is no change.
        assert_eq!(a.call_str("SET e 1 PX 1"), b"+OK\r\n", "{who}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(a.call_str("WATCH e"), b"+OK\r\n", "{who}");
        assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
        assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
        assert_eq!(a.call_str("EXEC"), b"*1\r\n+PONG\r\n", "{who}: expired at WATCH");
    });
}

#[test]
fn float_increments_answer_as_redis() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 10);
    let mut mono = RawResp::connect(node.resp_addr, 10);
    // Postmortem: HINCRBYFLOAT by an infinity said "increment would
    // produce NaN or Infinity"; Redis refuses the increment itself.
    let third = format!("{}", 1.0f64 / 41.0);
    let minus = format!("{}", -1.0f64 / 41.0);
    let lines = [
        "HSET h f 1".to_owned(),
        "HINCRBYFLOAT h f +inf".into(),
        "HINCRBYFLOAT h f -inf".into(),
        "HINCRBYFLOAT h f inf".into(),
        "HINCRBYFLOAT h f nan".into(),
        "SET str v".into(),
        "HINCRBYFLOAT str f +inf".into(),
        "HINCRBYFLOAT str f 1".into(),
        "HINCRBYFLOAT h f 1.5e5".into(),
        "HINCRBYFLOAT h f 1e308".into(),
        "HINCRBYFLOAT h g 0x10".into(),
        "HINCRBYFLOAT h g 1.7976931348623157e308".into(),
        "HINCRBYFLOAT h g 1e4932".into(),
        "HINCRBYFLOAT h g 1e4931".into(),
        "HINCRBYFLOAT h g 1e4931".into(),
        "HINCRBYFLOAT h g 1e4931".into(),
        "HINCRBYFLOAT h g -1e4931".into(),
        "HSET h bad x".into(),
        "HINCRBYFLOAT h bad 1".into(),
        "HINCRBYFLOAT h bad +inf".into(),
        "HINCRBYFLOAT h bad x".into(),
        "HINCRBYFLOAT h f -0.25".into(),
        "SET foo 0".into(),
        "INCRBYFLOAT foo +inf".into(),
        "INCRBYFLOAT foo -inf".into(),
        "INCRBYFLOAT foo nan".into(),
        "INCRBYFLOAT foo 1e308".into(),
        "INCRBYFLOAT foo 0.1".into(),
        "INCRBYFLOAT foo 1e4931".into(),
        "INCRBYFLOAT foo 1e4931".into(),
        "INCRBYFLOAT foo 0x1p3".into(),
        "SET foo x".into(),
        "INCRBYFLOAT foo +inf".into(),
        "INCRBYFLOAT foo 1".into(),
        // Redis's "No negative zero" (tests/unit/type/incr.tcl).
        "DEL foo".into(),
        format!("INCRBYFLOAT foo {third}"),
        format!("INCRBYFLOAT foo {minus}"),
        "GET foo".into(),
        "HINCRBYFLOAT hz f 0.1".into(),
        "HINCRBYFLOAT hz f -0.1".into(),
        "SET foo 1".into(),
        "INCRBYFLOAT foo -1.1".into(),
        "INCRBYFLOAT foo 0.1".into(),
    ];
    for line in &lines {
        run_line(&mut redis, &mut mono, line);
    }
}

#[test]
fn a_key_only_read_keeps_its_watch_and_a_written_one_fails_it() {
    on_both(|a, b, who| {
        for (watched, command, runs) in [
            ("src", "SUNIONSTORE dst src", true),
            ("src", "COPY src dst REPLACE", true),
            ("src", "SINTERCARD 1 src", true),
            ("dst", "SUNIONSTORE dst src", false),
            ("dst", "SINTERSTORE dst src missing", true),
            ("dst", "COPY missing dst", true),
            ("dst", "COPY src dst REPLACE", false),
            ("src", "SMOVE src dst a", false),
            ("dst", "SMOVE src dst a", false),
            ("src", "SMOVE src dst zz", true),
            ("src", "SMOVE src src a", true),
        ] {
            a.call_str("DEL src dst");
            a.call_str("SADD src a b");
            if command == "SMOVE src dst a" && watched == "dst" {
                // The destination has the member: SMOVE leaves it unchanged.
                a.call_str("SADD dst a");
                assert_eq!(a.call_str("WATCH dst"), b"+OK\r\n", "{who}");
                assert_eq!(b.call_str(command), b":1\r\n", "{who}");
                assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
                assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
                assert_eq!(a.call_str("EXEC"), b"*1\r\n+PONG\r\n", "{who}: SMOVE to a member");
                continue;
            }
            assert_eq!(a.call_str(&format!("WATCH {watched}")), b"+OK\r\n", "{who}");
            assert!(!b.call_str(command).starts_with(b"-"), "{who} {command}");
            assert_eq!(a.call_str("MULTI"), b"+OK\r\n", "{who}");
            assert_eq!(a.call_str("PING"), b"+QUEUED\r\n", "{who}");
            let want: &[u8] = if runs { b"*1\r\n+PONG\r\n" } else { b"*-1\r\n" };
            assert_eq!(a.call_str("EXEC"), want, "{who}: WATCH {watched}, {command}");
        }
    });
}
