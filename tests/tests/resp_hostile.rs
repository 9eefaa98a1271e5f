//! Hostile numbers and lengths from the network, on both protocols: extreme
//! integers in every numeric argument of every RESP command (against a real
//! `redis-server` as oracle), Redis's limits for clients not yet
//! authenticated, a request of a million arguments next to a PING, clients
//! that never read their replies, and native connections that announce
//! large frames and send nothing more. The node must answer, stay up, and
//! keep its memory bounded (its `VmRSS`, read from /proc).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monotable_proto::frame::encode_frame;
use monotable_proto::limits::{FRAME_SIZE_MAX_BYTES, HANDSHAKE_MAGIC, PROTOCOL_VERSION};
use monotable_proto::{Command, Request, ScanRequest};
use monotable_tests::{Node, RawResp, Redis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const MIB: u64 = 1024 * 1024;

/// The most the node's memory grows above `base` over the next 8 seconds
/// (sampled; a node that keeps buffering keeps growing).
fn raw_connect(addr: SocketAddr) -> RawResp {
    RawResp::connect(addr, 60)
}

fn peak_growth(node: &Node, base: u64) -> u64 {
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        peak = peak.max(node.rss_bytes().saturating_sub(base));
        std::thread::sleep(Duration::from_millis(200));
    }
    peak
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// The first word of an error reply (`ERR`, `WRONGTYPE`), None for others.
fn error_class(reply: &[u8]) -> Option<String> {
    let text = reply.strip_prefix(b"-")?;
    Some(String::from_utf8_lossy(text).split_whitespace().next().unwrap_or("").to_owned())
}

/// Integers a client may send where a number is expected: the extremes of
/// 64 bits and past them, huge counts, and things that are not integers.
/// (Not hex or padded floats: Redis reads floats with C's `strtod`, which
/// takes `0x10` and, in score ranges, spaces; that is float syntax, not a
/// bound.)
const EXTREMES: &[&str] = &[
    "-9223372036854775808",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "-18446744073709551616",
    "-9223372036854775807",
    "4294967296",
    "-4294967296",
    "1000000000000",
    "-1000000000000",
    "1000001",
    "-1000001",
    "-0",
    "0",
    "1",
    "-1",
    "",
    "abc",
    "1.5",
    "+1",
    " 1",
    "1e3",
];

/// Every command with a numeric argument; each `#` is replaced by an extreme.
const TEMPLATES: &[&str] = &[
    "SRANDMEMBER s #",
    "SPOP s #",
    "LPOP l #",
    "RPOP l #",
    "LRANGE l # #",
    "LRANGE l 0 #",
    "LINDEX l #",
    "LSET l # x",
    "LTRIM l # #",
    "LREM l # a",
    "GETRANGE str # #",
    "GETRANGE str 0 #",
    "SETRANGE str # x",
    "SETRANGE str # ",
    "APPEND str x",
    "EXPIRE str #",
    "PEXPIRE str #",
    "EXPIREAT str #",
    "PEXPIREAT str #",
    "EXPIRE str # GT",
    "SET k v EX #",
    "SET k v PX #",
    "SET k v EXAT #",
    "SET k v PXAT #",
    "SETEX k # v",
    "PSETEX k # v",
    "GETEX str EX #",
    "GETEX str PXAT #",
    "INCRBY n #",
    "DECRBY n #",
    "INCRBYFLOAT n #",
    "HINCRBY h f #",
    "HINCRBYFLOAT h f #",
    "ZRANGE z # #",
    "ZRANGE z # # REV WITHSCORES",
    "ZRANGE z -inf +inf BYSCORE LIMIT # #",
    "ZRANGE z - + BYLEX LIMIT # #",
    "ZRANGEBYSCORE z -inf +inf LIMIT # #",
    "ZREVRANGE z # #",
    "ZREMRANGEBYRANK z # #",
    "ZINCRBY z # a",
    "ZADD z # a",
    "SCAN #",
    "SCAN 0 COUNT #",
    "SSCAN s 0 COUNT #",
    "HSCAN h #",
    "ZSCAN z 0 COUNT #",
    "SELECT #",
];

/// The same small data in both servers before every command.
const FIXTURE: &[&str] = &[
    "SELECT 0",
    "DEL str n l s h z k",
    "SET str hello",
    "SET n 5",
    "RPUSH l a b c a",
    "SADD s a b c",
    "HSET h f 7 g x",
    "ZADD z 1 a 2 b 3 c",
];

/// What Redis itself cannot bound: a negative SRANDMEMBER count is that
/// many elements, and redis-server streams them until the client leaves.
fn redis_runs_forever(command: &[String]) -> bool {
    command[0] == "SRANDMEMBER"
        && command
            .get(2)
            .and_then(|n| n.strip_prefix('-'))
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 1_000_000))
}

/// `template` with each `#` word replaced by what `pick` chooses.
fn instantiate(template: &str, mut pick: impl FnMut() -> &'static str) -> Vec<String> {
    template.split(' ').map(|w| if w == "#" { pick().to_owned() } else { w.to_owned() }).collect()
}

#[test]
fn extreme_integers_in_every_command_get_redis_errors_and_cost_no_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let redis = Redis::start();
    let mut mono = raw_connect(node.resp_addr);
    let mut oracle = raw_connect(redis.addr);
    let rss_before = node.rss_bytes();
    let mut rng = StdRng::seed_from_u64(9);
    let mut commands: Vec<Vec<String>> = Vec::new();
    // Every template with every extreme once, then random combinations.
    for t in TEMPLATES {
        for e in EXTREMES {
            commands.push(instantiate(t, || e));
        }
    }
    for _ in 0..300 {
        let t = TEMPLATES.choose(&mut rng).expect("templates");
        commands.push(instantiate(t, || EXTREMES.choose(&mut rng).expect("extremes")));
    }
    let mut mismatches = Vec::new();
    for command in &commands {
        for f in FIXTURE {
            assert_eq!(error_class(&mono.call_str(f)), None, "fixture {f}");
            oracle.call_str(f);
        }
        let args: Vec<&[u8]> = command.iter().map(|a| a.as_bytes()).collect();
        let command = command.join(" ");
        // Regression: SRANDMEMBER -2^63 grew the node to 24 GB; SETRANGE at
        // 2^63-1 panicked. Every command must get a reply.
        let mine = mono.call(&args);
        if redis_runs_forever(&args_owned(&args)) {
            assert!(error_class(&mine).is_some(), "{command}: {}", show(&mine));
            continue;
        }
        let theirs = oracle.call(&args);
        if let Some(class) = error_class(&theirs) {
            if error_class(&mine).as_deref() != Some(class.as_str()) {
                mismatches.push(format!(
                    "{command}: redis {} / monotable {}",
                    show(&theirs),
                    show(&mine)
                ));
            }
        } else if error_class(&mine).is_some() {
            mismatches.push(format!(
                "{command}: redis {} / monotable {}",
                show(&theirs),
                show(&mine)
            ));
        }
    }
    assert!(mismatches.is_empty(), "{} differ:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(node.alive(), "the node is still running");
    assert_eq!(mono.call_str("PING"), b"+PONG\r\n");
    let grown = node.rss_bytes().saturating_sub(rss_before);
    eprintln!("grown by {} MiB", grown / MIB);
    assert!(grown < 256 * MIB, "the node grew by {} MiB", grown / MIB);
}

#[test]
fn strings_past_the_value_limit_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut c = raw_connect(node.resp_addr);
    let too_long = b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n";
    assert_eq!(c.call_str("SETRANGE k 9223372036854775807 A"), too_long);
    assert_eq!(c.call_str("SETRANGE k 8388600 A"), too_long);
    let seven = vec![b'x'; 7 * MIB as usize];
    assert_eq!(c.call(&[b"SET", b"k", &seven]), b"+OK\r\n");
    assert_eq!(c.call(&[b"APPEND", b"k", &seven[..2 * MIB as usize]]), too_long);
    // An argument over the value limit is read and dropped: the command is
    // refused, the connection goes on.
    let nine = vec![b'y'; 9 * MIB as usize];
    let reply = c.call(&[b"SET", b"k", &nine]);
    assert!(
        reply.starts_with(b"-ERR argument of 9437184 bytes exceeds the limit"),
        "{}",
        show(&reply)
    );
    // A key over the key limit, in a command that writes several rows:
    // nothing is written, the other key's old value is kept.
    assert_eq!(c.call_str("HSET h f v"), b":1\r\n");
    let long_key = vec![b'k'; 20 * 1024];
    let reply = c.call(&[b"MSET", b"h", b"new", &long_key, b"v"]);
    assert!(reply.starts_with(b"-ERR key or element too long: key of"), "{}", show(&reply));
    assert_eq!(c.call_str("TYPE h"), b"+hash\r\n");
    // A field over the key limit: none of the command's fields is written.
    let reply = c.call(&[b"HSET", b"h", b"f2", b"v2", &long_key, b"v"]);
    assert!(reply.starts_with(b"-ERR key or element too long: key of"), "{}", show(&reply));
    assert_eq!(c.call_str("HEXISTS h f2"), b":0\r\n");
    let reply = c.call(&[b"GET", b"k"]);
    assert_eq!(reply.len(), 7 * MIB as usize + format!("${}\r\n\r\n", 7 * MIB).len());
}

#[test]
fn unauthenticated_clients_get_redis_limits_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_with(dir.path(), &["--requirepass", "secret"]);
    let redis = Redis::start_with(&["--requirepass", "secret"]);
    for request in [&b"*100\r\n"[..], b"*1\r\n$100000000\r\n", b"*11\r\n$4\r\nPING\r\n"] {
        let mut replies = Vec::new();
        for addr in [redis.addr, node.resp_addr] {
            let mut c = raw_connect(addr);
            c.writer.write_all(request).expect("send");
            let reply = c.reply();
            // Then the connection is closed.
            let after = c.reply();
            replies.push((reply, after));
        }
        assert_eq!(replies[0], replies[1], "{}", show(request));
        assert!(replies[1].0.as_ref().is_some_and(|r| r.starts_with(b"-ERR Protocol error")));
    }
    // Once authenticated the usual limits apply.
    let mut c = raw_connect(node.resp_addr);
    assert_eq!(c.call_str("AUTH secret"), b"+OK\r\n");
    let mut args: Vec<&[u8]> = vec![b"DEL"];
    args.extend(std::iter::repeat_n(&b"k"[..], 100));
    assert_eq!(c.call(&args), b":0\r\n");
}

#[test]
fn a_million_arguments_do_not_stall_other_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let n = 1_000_000;
    let mut request = format!("*{}\r\n$3\r\nDEL\r\n", n + 1).into_bytes();
    for i in 0..n {
        let key = format!("key{}", i % 1000);
        request.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    let sending = Arc::new(AtomicBool::new(true));
    let mut big = raw_connect(node.resp_addr);
    let sender = {
        let mut writer = big.writer.try_clone().expect("clone");
        let sending = sending.clone();
        std::thread::spawn(move || {
            // Sent in pieces over a while, as a slow client would.
            for piece in request.chunks(request.len() / 200 + 1) {
                writer.write_all(piece).expect("send");
                std::thread::sleep(Duration::from_millis(10));
            }
            sending.store(false, Ordering::SeqCst);
        })
    };
    let mut other = raw_connect(node.resp_addr);
    let mut answered_while_sending = 0;
    while sending.load(Ordering::SeqCst) {
        assert_eq!(other.call_str("PING"), b"+PONG\r\n");
        if sending.load(Ordering::SeqCst) {
            answered_while_sending += 1;
        }
    }
    sender.join().expect("sender");
    assert!(answered_while_sending > 0, "no PING was answered while the request came in");
    // The big command itself completes.
    assert_eq!(big.reply().as_deref(), Some(&b":0\r\n"[..]));
    assert_eq!(other.call_str("PING"), b"+PONG\r\n");
}

#[test]
fn a_client_that_never_reads_does_not_grow_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut c = raw_connect(node.resp_addr);
    let value = vec![b'v'; MIB as usize];
    assert_eq!(c.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    let rss_before = node.rss_bytes();
    // Regression: 1,000 pipelined GETs of a 1 MiB value, never read, cost
    // the node 1.1 GB.
    let mut lazy = raw_connect(node.resp_addr);
    let gets = 1000;
    let pipeline = RawResp::encode(&[b"GET", b"big"]).repeat(gets);
    let mut writer = lazy.writer.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&pipeline).is_ok());
    let grown = peak_growth(&node, rss_before);
    eprintln!("grown by {} MiB", grown / MIB);
    assert!(grown < 100 * MIB, "the node grew by {} MiB for an unread pipeline", grown / MIB);
    assert_eq!(c.call_str("PING"), b"+PONG\r\n");
    // Once the client reads, every reply comes, whole and in order.
    let expected = {
        let mut e = format!("${}\r\n", value.len()).into_bytes();
        e.extend_from_slice(&value);
        e.extend_from_slice(b"\r\n");
        e
    };
    for i in 0..gets {
        assert!(lazy.reply().as_ref() == Some(&expected), "reply {i}");
    }
    assert!(sender.join().expect("sender"));
}

/// A native connection past the handshake.
fn native(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut hello = HANDSHAKE_MAGIC.to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    s.write_all(&hello).expect("handshake");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("server hello");
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("server hello");
    s
}

#[test]
fn native_headers_alone_and_unread_replies_do_not_grow_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut c = raw_connect(node.resp_addr);
    for i in 0..4 {
        let value = vec![b'a' + i; MIB as usize];
        assert_eq!(c.call(&[b"SET", format!("k{i}").as_bytes(), &value]), b"+OK\r\n");
    }
    let rss_before = node.rss_bytes();
    // Regression: each header announcing 32 MiB allocated it up front (40
    // such connections held 1.3 GB).
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut s = native(node.addr);
        s.write_all(&(FRAME_SIZE_MAX_BYTES as u32).to_be_bytes()).expect("header");
        s.write_all(b"a few bytes").expect("body start");
        idle.push(s);
    }
    let grown = peak_growth(&node, rss_before);
    eprintln!("grown by {} MiB", grown / MIB);
    assert!(grown < 100 * MIB, "40 frame headers grew the node by {} MiB", grown / MIB);
    // Regression: 250 scans never read cost 625 MB.
    let mut lazy = native(node.addr);
    let mut pipeline = Vec::new();
    for id in 0..250 {
        let scan = ScanRequest { range: "redis.0".into(), ..Default::default() };
        encode_frame(&Request { id, command: Command::Scan(scan) }, &mut pipeline).expect("frame");
    }
    let mut writer = lazy.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&pipeline).is_ok());
    let grown = peak_growth(&node, rss_before);
    eprintln!("grown by {} MiB", grown / MIB);
    assert!(grown < 150 * MIB, "unread scans grew the node by {} MiB", grown / MIB);
    assert_eq!(c.call_str("PING"), b"+PONG\r\n");
    // Reading now drains every reply.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut total = 0;
    for _ in 0..250 {
        let mut len = [0u8; 4];
        lazy.read_exact(&mut len).expect("a reply");
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        lazy.read_exact(&mut body).expect("a reply");
        total += body.len() as u64;
        assert!(Instant::now() < deadline);
    }
    // What the node would have held had it kept reading.
    assert!(total > 250 * 3 * MIB, "the scans returned only {} MiB", total / MIB);
    assert!(sender.join().expect("sender"));
}

fn args_owned(args: &[&[u8]]) -> Vec<String> {
    args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

#[test]
fn monotable_commands_take_extreme_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let mut r = raw_connect(node.resp_addr);
    assert_eq!(r.call_str("HSET user:1 city lyon"), b":1\r\n");
    monotable_tests::runtime().block_on(async {
        let c = monotable_client::Client::connect(node.addr).await.expect("connect");
        let lua = "function map(key, value)
            if key[1] == 'h' and key[3] == 'city' then emit(value, 1) end
        end";
        let map = monotable_client::MapFunction::Lua { source: lua.into() };
        c.create_mapper("by_city", "redis.0", "users_by_city", map).await.expect("mapper");
        c.create_reducer("city_count", "users_by_city", "count").await.expect("reducer");
    });
    let huge = "18446744073709551615";
    // Regression: a TIMEOUT of 2^64-1 ms overflowed the deadline and panicked.
    let reply = r.call_str(&format!("MT.AGG city_count FRESH TIMEOUT {huge}"));
    assert_eq!(reply, b"$1\r\n1\r\n");
    let reply = r.call_str(&format!("MT.AGG city_count GROUPLEVEL {huge} FRESH"));
    assert!(reply.starts_with(b"*"), "{}", show(&reply));
    let reply = r.call_str(&format!("MT.SCAN users_by_city COUNT {huge}"));
    assert!(reply.starts_with(b"*1\r\n"), "{}", show(&reply));
    for bad in ["-1", "18446744073709551616", "x"] {
        let reply = r.call_str(&format!("MT.SCAN users_by_city COUNT {bad}"));
        assert_eq!(reply, b"-ERR value is not an integer or out of range\r\n");
    }
    assert!(node.alive());
}

#[test]
fn a_transaction_queue_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut c = raw_connect(node.resp_addr);
    assert_eq!(c.call_str("MULTI"), b"+OK\r\n");
    let value = vec![b'v'; 4 * MIB as usize];
    let mut refused = None;
    for i in 0..20 {
        let reply = c.call(&[b"SET", format!("k{i}").as_bytes(), &value]);
        if reply != b"+QUEUED\r\n" {
            refused = Some((i, reply));
            break;
        }
    }
    let (i, reply) = refused.expect("the queue stops growing");
    assert!(i > 10, "refused at {i}");
    assert!(reply.starts_with(b"-ERR a transaction may queue"), "{}", show(&reply));
    assert!(c.call_str("EXEC").starts_with(b"-EXECABORT"));
    assert_eq!(c.call_str("EXISTS k0"), b":0\r\n");
}
