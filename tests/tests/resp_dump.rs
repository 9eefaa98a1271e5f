//! DUMP and RESTORE against a real redis-server 7.0 (both started here on
//! free loopback ports): a payload DUMP gives on either restores on the
//! other to the same value, and RESTORE's errors and options answer as
//! Redis's, through hostile payloads, MULTI and a kill -9.

use monotable_tests::{assert_same, assert_same_line, show, RawResp, Twin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;

fn conn(addr: std::net::SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/")).expect("url").get_connection().expect("connect")
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::Int(i) => i.to_string().into_bytes(),
        Value::SimpleString(s) => s.into_bytes(),
        other => panic!("not bytes: {other:?}"),
    }
}

fn list(v: Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(items) => items.into_iter().map(bytes).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

/// A key's type and value in one order whatever the server keeps (set
/// members and hash fields sorted); `None` when it is missing.
fn value_of(c: &mut redis::Connection, key: &[u8]) -> Option<(String, Vec<Vec<u8>>)> {
    let kind: String = redis::cmd("TYPE").arg(key).query(c).expect("TYPE");
    let q = |c: &mut redis::Connection, name: &str, extra: &[&str]| -> Vec<Vec<u8>> {
        list(redis::cmd(name).arg(key).arg(extra).query(c).expect(name))
    };
    let mut items = match kind.as_str() {
        "none" => return None,
        "string" => vec![bytes(redis::cmd("GET").arg(key).query(c).expect("GET"))],
        "list" => q(c, "LRANGE", &["0", "-1"]),
        "set" => q(c, "SMEMBERS", &[]),
        "hash" => {
            let flat = q(c, "HGETALL", &[]);
            flat.chunks(2).map(|p| [p[0].clone(), vec![0], p[1].clone()].concat()).collect()
        }
        "zset" => q(c, "ZRANGE", &["0", "-1", "WITHSCORES"]),
        other => panic!("unexpected type {other}"),
    };
    if matches!(kind.as_str(), "set" | "hash") {
        items.sort();
    }
    Some((kind, items))
}

/// A value drawn to cover Redis's encodings: integers of every width,
/// NUL bytes, empty and long strings (LZF-compressible), many elements.
fn element(rng: &mut StdRng) -> Vec<u8> {
    match rng.gen_range(0..9) {
        0 => rng.gen_range(0..13).to_string().into_bytes(),
        1 => rng.gen::<i8>().to_string().into_bytes(),
        2 => rng.gen::<i16>().to_string().into_bytes(),
        3 => rng.gen_range(-8_388_608..8_388_608).to_string().into_bytes(),
        4 => rng.gen::<i64>().to_string().into_bytes(),
        5 => Vec::new(),
        // Under the 16 KiB a member or field may take in a row key.
        6 => vec![b'z'; rng.gen_range(20..8_000)],
        7 => (0..rng.gen_range(1..40)).map(|_| rng.gen::<u8>()).collect(),
        _ => format!("e{}\0{}", rng.gen_range(0..1000), rng.gen::<u16>()).into_bytes(),
    }
}

/// Postmortem: DUMP and RESTORE were missing.
#[test]
fn payloads_carry_every_type_both_ways() {
    let twin = Twin::start();
    let mut r = conn(twin.redis.addr);
    let mut m = conn(twin.node.resp_addr);
    let mut rng = StdRng::seed_from_u64(0xd0);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..60 {
        let key = format!("k{i}\0").into_bytes();
        // Sizes on both sides of Redis's listpack and intset thresholds.
        let n = if rng.gen_bool(0.3) { rng.gen_range(129..700) } else { rng.gen_range(1..20) };
        let name = ["SET", "RPUSH", "SADD", "HSET", "ZADD", "SET"][i % 6];
        let mut cmd = redis::cmd(name);
        cmd.arg(&key);
        match i % 6 {
            0 => {
                cmd.arg(element(&mut rng));
            }
            1 => {
                for _ in 0..n {
                    cmd.arg(element(&mut rng));
                }
            }
            2 => {
                let ints = rng.gen_bool(0.5);
                for _ in 0..n {
                    if ints {
                        cmd.arg(rng.gen_range(-100_000i64..100_000));
                    } else {
                        cmd.arg(element(&mut rng));
                    }
                }
            }
            3 => {
                for _ in 0..n {
                    cmd.arg(element(&mut rng)).arg(element(&mut rng));
                }
            }
            4 => {
                for j in 0..n {
                    let score = match j % 5 {
                        0 => "-inf".to_owned(),
                        1 => "+inf".to_owned(),
                        2 => format!("{}", rng.gen::<f64>() * 1e300),
                        3 => rng.gen_range(-1000..1000).to_string(),
                        _ => format!("{:e}", rng.gen::<f64>() * 1e-300),
                    };
                    cmd.arg(score).arg(element(&mut rng));
                }
            }
            _ => {
                cmd.arg(rng.gen::<i64>());
            }
        }
        let want: Value = cmd.query(&mut r).expect("redis write");
        let got: Value = cmd.query(&mut m).expect("monotable write");
        assert_eq!(got, want, "key {i}");
        keys.push(key);
    }
    for key in &keys {
        let want = value_of(&mut r, key).expect("on redis");
        assert_eq!(value_of(&mut m, key).as_ref(), Some(&want), "the same data to start");
        let from_redis: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut r).expect("DUMP");
        let from_mono: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut m).expect("DUMP");
        let to = [b"r:".as_slice(), key].concat();
        let () =
            redis::cmd("RESTORE").arg(&to).arg(0).arg(&from_redis).query(&mut m).expect("RESTORE");
        let () =
            redis::cmd("RESTORE").arg(&to).arg(0).arg(&from_mono).query(&mut r).expect("RESTORE");
        assert_eq!(value_of(&mut m, &to).as_ref(), Some(&want), "redis's payload on monotable");
        assert_eq!(value_of(&mut r, &to).as_ref(), Some(&want), "monotable's payload on redis");
    }

    // Durable as any write: after a kill -9 every restored key is back.
    let mut node = twin.node;
    node.restart();
    let mut m = conn(node.resp_addr);
    for key in &keys {
        let to = [b"r:".as_slice(), key].concat();
        assert_eq!(value_of(&mut m, &to), value_of(&mut r, key), "after a restart");
    }
}

/// RESTORE's checks and options, with the same replies as Redis's.
#[test]
fn restore_errors_and_options_answer_as_redis() {
    let twin = Twin::start();
    let (mut r, mut m) = twin.connect(30);
    for line in [
        "SET s hello",
        "RPUSH l a b",
        "DUMP nosuch",
        "RESTORE",
        "RESTORE k 0",
        "RESTORE s 0 x",
        "RESTORE k -1 x",
        "RESTORE k abc x",
        "RESTORE k 0 x",
        "RESTORE k 0 0123456789",
        "RESTORE k 0 x BADOPT",
        "RESTORE k 0 x IDLETIME",
        "RESTORE k 0 x IDLETIME -1",
        "RESTORE k 0 x IDLETIME abc",
        "RESTORE k 0 x FREQ 256",
        "RESTORE k 0 x FREQ -1",
        "RESTORE k 0 x IDLETIME 10 FREQ 5",
        "RESTORE k 0 x FREQ 5 IDLETIME 10",
        "DUMP",
        "DUMP a b",
    ] {
        assert_same_line(&mut r, &mut m, line);
    }
    let payload = |c: &mut monotable_tests::RawResp, key: &str| -> Vec<u8> {
        let reply = c.call(&[b"DUMP", key.as_bytes()]);
        // `$N\r\n...\r\n`: the payload between the header and the end.
        let start = reply.iter().position(|&b| b == b'\n').expect("header") + 1;
        reply[start..reply.len() - 2].to_vec()
    };
    for key in ["s", "l"] {
        let (pr, pm) = (payload(&mut r, key), payload(&mut m, key));
        for p in [&pr, &pm] {
            for args in [
                vec![&b"RESTORE"[..], b"s", b"0", p],
                vec![b"RESTORE", b"new", b"0", p, b"REPLACE", b"ABSTTL", b"IDLETIME", b"5"],
                vec![b"PTTL", b"new"],
                vec![b"RESTORE", b"s", b"0", p, b"replace", b"FREQ", b"100"],
                vec![b"TYPE", b"s"],
                // An absolute time in the past: nothing is created, and a
                // replaced key is deleted.
                vec![b"RESTORE", b"gone", b"1", p, b"ABSTTL"],
                vec![b"EXISTS", b"gone"],
                vec![b"RESTORE", b"s", b"1", p, b"ABSTTL", b"REPLACE"],
                vec![b"EXISTS", b"s"],
                vec![b"RESTORE", b"s", b"0", p],
                vec![b"RESTORE", b"t", b"2569591501", p],
                vec![b"EXISTS", b"t"],
                // A TTL whose sum with now passes i64: already expired.
                // Postmortem: it was kept as the largest expiry time.
                vec![b"RESTORE", b"huge", b"9223372036854775807", p],
                vec![b"EXISTS", b"huge"],
                vec![b"DEL", b"t", b"new"],
            ] {
                // The TTL in seconds, as both count it down (they may
                // differ by the second that passes between the two).
                if args[0] == b"DEL" {
                    for c in [&mut r, &mut m] {
                        let ttl = show(&c.call_str("TTL t"));
                        let secs: u64 = ttl[1..ttl.len() - 4].parse().expect("seconds");
                        assert!((2_569_590..=2_569_592).contains(&secs), "{ttl}");
                    }
                }
                assert_same(&mut r, &mut m, &args);
            }
            // A flipped byte fails the checksum; a newer RDB version is
            // refused; a payload cut short too.
            let mut flipped = p.clone();
            flipped[1] ^= 0x20;
            let mut newer = p.clone();
            let at = newer.len() - 10;
            newer[at] = 99;
            let cut = p[..p.len() - 3].to_vec();
            for bad in [flipped, newer, cut] {
                assert_same(&mut r, &mut m, &[b"RESTORE", b"bad", b"0", &bad]);
            }
        }
    }
    // Well-framed payloads with a bad object: "Bad data format", and
    // nothing is written.
    let crc = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);
    for body in [
        vec![2u8, 0],                          // an empty set
        vec![2, 2, 1, b'a', 1, b'a'],          // a member twice
        vec![4, 1, 1, b'f'],                   // a field without its value
        vec![1, 0x81, 0, 0, 0, 1, 0, 0, 0, 0], // 2^32 elements claimed
        vec![0, 0xc3, 5, 10, 1, 2, 3, 4, 5],   // LZF that does not inflate
        vec![11, 6, 2, 0, 0, 0, 1, 0],         // an intset cut short
        vec![200],                             // no such type
    ] {
        let mut p = body.clone();
        p.extend_from_slice(&10u16.to_le_bytes());
        let sum = crc.checksum(&p);
        p.extend_from_slice(&sum.to_le_bytes());
        assert_same(&mut r, &mut m, &[b"RESTORE", b"bad", b"0", &p]);
        assert_same(&mut r, &mut m, &[b"EXISTS", b"bad"]);
    }
    // A -0 score restores as 0. Postmortem: it stayed -0.
    let mut p = vec![5u8, 1, 1, b'm'];
    p.extend_from_slice(&(-0.0f64).to_le_bytes());
    p.extend_from_slice(&10u16.to_le_bytes());
    let sum = crc.checksum(&p);
    p.extend_from_slice(&sum.to_le_bytes());
    for args in [
        vec![&b"RESTORE"[..], b"zz", b"0", &p],
        vec![b"ZSCORE", b"zz", b"m"],
        vec![b"ZMSCORE", b"zz", b"m"],
    ] {
        assert_same(&mut r, &mut m, &args);
    }
    // Inside MULTI, applied with the transaction.
    let p = payload(&mut m, "l");
    for args in [
        vec![&b"MULTI"[..]],
        vec![b"RESTORE", b"inmulti", b"0", &p],
        vec![b"LLEN", b"inmulti"],
        vec![b"EXEC"],
        vec![b"LRANGE", b"inmulti", b"0", b"-1"],
    ] {
        assert_same(&mut r, &mut m, &args);
    }
}

/// `line`'s words (split at spaces), `<empty>` as an empty argument.
fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(|w| if w == "<empty>" { &b""[..] } else { w.as_bytes() }).collect()
}

/// The replies of `line` run from `source` (after `setup` there and a
/// FLUSHALL of the target at `target`), then the target's and the
/// source's value of every key named in `keys`.
fn migrate_case(
    source: &mut RawResp,
    target: std::net::SocketAddr,
    setup: &[&str],
    line: &str,
    keys: &[&str],
) -> Vec<String> {
    let mut t = RawResp::connect(target, 10);
    t.call_str("FLUSHALL");
    t.call_str("SET busy there");
    source.call_str("FLUSHALL");
    for s in setup {
        source.call_str(s);
    }
    let mut seen = vec![format!("{line} -> {}", show(&source.call(&words(line))))];
    for k in keys {
        for (who, c) in [("target", &mut t), ("source", &mut *source)] {
            let v = show(&c.call_str(&format!("DUMP {k}"))) != "$-1\\r\\n";
            let ttl = show(&c.call_str(&format!("TTL {k}")));
            seen.push(format!("{who} {k}: exists {v}, ttl {ttl}"));
        }
    }
    seen
}

/// Postmortem: MIGRATE was missing. From Monotable and from redis-server
/// to the same third server (a redis-server), the same commands give the
/// same replies and move the same keys; then keys of every type move
/// between Monotable and redis-server both ways.
#[test]
fn migrate_moves_keys_as_redis_does() {
    let twin = Twin::start();
    let third = monotable_tests::Redis::start();
    let (port, closed) = (third.addr.port().to_string(), free_port().to_string());
    let mut r = RawResp::connect(twin.redis.addr, 30);
    let mut m = RawResp::connect(twin.node.resp_addr, 30);
    let setup = ["SET a 1", "RPUSH l x y", "SET t v EX 1000", "SET busy here"];
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} nosuch 0 5000"), vec!["nosuch"]),
        (format!("MIGRATE 127.0.0.1 {port} <empty> 0 5000 KEYS a l t nosuch"), vec!["a", "l", "t"]),
        (format!("MIGRATE 127.0.0.1 {port} a 3 5000 COPY"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} busy 0 5000"), vec!["busy"]),
        (format!("MIGRATE 127.0.0.1 {port} <empty> 0 5000 KEYS a busy l"), vec!["a", "busy", "l"]),
        (format!("MIGRATE 127.0.0.1 {port} busy 0 5000 REPLACE"), vec!["busy"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000 AUTH secret"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000 AUTH2 user secret"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 99 5000"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {closed} a 0 200"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000 KEYS b"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000 BADOPT"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 soon"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a zero 5000"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0 5000 AUTH"), vec!["a"]),
        (format!("MIGRATE 127.0.0.1 {port} a 0"), vec![]),
    ];
    for (line, keys) in &cases {
        let want = migrate_case(&mut r, third.addr, &setup, line, keys);
        let got = migrate_case(&mut m, third.addr, &setup, line, keys);
        assert_eq!(got, want, "{line}");
    }
    // Every type, both ways, with the values compared.
    let mut rc = conn(twin.redis.addr);
    let mut mc = conn(twin.node.resp_addr);
    for (from, to, to_addr) in
        [(&mut m, &mut rc, twin.redis.addr), (&mut r, &mut mc, twin.node.resp_addr)]
    {
        from.call_str("FLUSHALL");
        for line in [
            "SET s hello",
            "SET n 12345",
            "RPUSH l a b c",
            "SADD set x 1 2",
            "HSET h f v g w",
            "ZADD z 1 a 2.5 b",
            "SET ttl v PX 100000",
        ] {
            from.call_str(line);
        }
        let mut want = Vec::new();
        let mut from_conn = conn(if to_addr == twin.node.resp_addr {
            twin.redis.addr
        } else {
            twin.node.resp_addr
        });
        let keys = ["s", "n", "l", "set", "h", "z", "ttl"];
        for k in keys {
            want.push(value_of(&mut from_conn, k.as_bytes()));
        }
        redis::cmd("FLUSHALL").query::<()>(to).expect("FLUSHALL");
        let line =
            format!("MIGRATE 127.0.0.1 {} <empty> 0 5000 KEYS {}", to_addr.port(), keys.join(" "));
        assert_eq!(show(&from.call(&words(&line))), "+OK\\r\\n", "{line}");
        let got: Vec<_> = keys.iter().map(|k| value_of(to, k.as_bytes())).collect();
        assert_eq!(got, want);
        let pttl: i64 = redis::cmd("PTTL").arg("ttl").query(to).expect("PTTL");
        assert!(pttl > 90_000 && pttl <= 100_000, "{pttl}");
        assert_eq!(show(&from.call_str("DBSIZE")), ":0\\r\\n");
    }
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    monotable_tests::stable_port()
}
