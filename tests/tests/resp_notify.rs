//! Keyspace notifications against a real redis-server 7.0 (both started
//! here on free loopback ports): for the same commands under the same
//! `notify-keyspace-events`, a pattern subscriber of each receives the
//! same messages in the same order; CONFIG reads and writes the flags as
//! Redis does.

use std::net::SocketAddr;

use monotable_tests::{assert_same_line, show, Node, RawResp, Redis, Twin};

/// Commands that raise every kind of event Monotable raises, and some
/// that raise none (no-ops, failures, reads).
const SESSION: &[&[&[u8]]] = &[
    // Strings.
    &[b"SET", b"s", b"v"],
    &[b"SET", b"s", b"w", b"EX", b"100"],
    &[b"SET", b"s", b"x", b"KEEPTTL"],
    &[b"SET", b"s", b"y", b"NX"],
    &[b"SETNX", b"s2", b"1"],
    &[b"SETNX", b"s2", b"1"],
    &[b"SETEX", b"s3", b"100", b"v"],
    &[b"PSETEX", b"s3", b"100000", b"v"],
    &[b"GETSET", b"s2", b"2"],
    &[b"MSET", b"m1", b"a", b"m2", b"b", b"m1", b"c"],
    &[b"MSETNX", b"m3", b"a", b"m4", b"b"],
    &[b"MSETNX", b"m3", b"a", b"m5", b"b"],
    &[b"INCR", b"n"],
    &[b"DECRBY", b"n", b"5"],
    &[b"INCRBYFLOAT", b"f", b"1.5"],
    &[b"INCR", b"s"],
    &[b"APPEND", b"s", b"z"],
    &[b"SETRANGE", b"s", b"1", b"ab"],
    &[b"SETRANGE", b"s", b"1", b""],
    &[b"GETDEL", b"m4"],
    &[b"GETDEL", b"m4"],
    &[b"GETEX", b"m3", b"EX", b"100"],
    &[b"GETEX", b"m3", b"PERSIST"],
    &[b"GETEX", b"m3", b"PERSIST"],
    &[b"GETEX", b"m3", b"PXAT", b"1"],
    &[b"SETBIT", b"b", b"7", b"1"],
    &[b"SETBIT", b"b", b"7", b"1"],
    &[b"BITFIELD", b"b", b"INCRBY", b"u8", b"0", b"1"],
    &[b"BITFIELD", b"b", b"GET", b"u8", b"0"],
    &[b"BITOP", b"OR", b"b2", b"b", b"b"],
    &[b"BITOP", b"OR", b"b2", b"nothing"],
    &[b"PFADD", b"h1", b"a", b"b"],
    &[b"PFADD", b"h1", b"a"],
    &[b"PFMERGE", b"h2", b"h1"],
    // Keys.
    &[b"EXPIRE", b"s", b"100"],
    &[b"EXPIRE", b"s", b"100", b"NX"],
    &[b"PERSIST", b"s"],
    &[b"PERSIST", b"s"],
    &[b"PEXPIREAT", b"s2", b"1"],
    &[b"RENAME", b"s", b"r"],
    &[b"RENAMENX", b"r", b"n"],
    &[b"COPY", b"r", b"c"],
    &[b"COPY", b"r", b"c", b"DB", b"1"],
    // Over an existing key: Redis deletes it and adds it anew (`new`).
    &[b"SET", b"s3", b"v"],
    &[b"COPY", b"s3", b"c", b"REPLACE"],
    &[b"RENAME", b"s3", b"c"],
    &[b"DUMP-RESTORE", b"c", b"r"],
    &[b"DUMP-RESTORE", b"c", b"r"],
    &[b"MOVE", b"c", b"2"],
    &[b"DEL", b"r", b"nothing", b"r", b"n"],
    &[b"UNLINK", b"f"],
    &[b"EXISTS", b"b", b"c"],
    // Lists.
    &[b"LPUSH", b"l", b"a", b"b", b"c", b"d"],
    &[b"RPUSH", b"l", b"e"],
    &[b"LPUSHX", b"nolist", b"a"],
    &[b"RPUSHX", b"l", b"f"],
    &[b"LPOP", b"l"],
    &[b"RPOP", b"l", b"2"],
    &[b"LPOP", b"l", b"0"],
    &[b"LSET", b"l", b"0", b"x"],
    &[b"LINSERT", b"l", b"BEFORE", b"x", b"y"],
    &[b"LINSERT", b"l", b"BEFORE", b"nothing", b"y"],
    &[b"LREM", b"l", b"0", b"nothing"],
    &[b"LREM", b"l", b"1", b"y"],
    &[b"LMOVE", b"l", b"l2", b"LEFT", b"RIGHT"],
    &[b"RPOPLPUSH", b"l", b"l"],
    &[b"LMPOP", b"2", b"nolist", b"l", b"LEFT", b"COUNT", b"10"],
    &[b"RPUSH", b"l", b"a", b"b", b"c"],
    &[b"LTRIM", b"l", b"0", b"-1"],
    &[b"LTRIM", b"l", b"5", b"10"],
    &[b"BLPOP", b"l2", b"0"],
    &[b"RPUSH", b"l3", b"a", b"b"],
    &[b"BLMOVE", b"l3", b"l4", b"RIGHT", b"LEFT", b"0"],
    &[b"BRPOP", b"l3", b"0"],
    &[b"BLMPOP", b"0", b"1", b"l4", b"RIGHT"],
    // Sets.
    &[b"SADD", b"st", b"a", b"b", b"c", b"d"],
    &[b"SADD", b"st", b"a"],
    &[b"SREM", b"st", b"nothing"],
    &[b"SREM", b"st", b"a"],
    &[b"SMOVE", b"st", b"st2", b"b"],
    &[b"SMOVE", b"st", b"st2", b"nothing"],
    &[b"SINTERSTORE", b"st3", b"st", b"st2"],
    &[b"SUNIONSTORE", b"st3", b"st", b"st2"],
    &[b"SDIFFSTORE", b"st4", b"st", b"st"],
    &[b"SDIFFSTORE", b"st3", b"st", b"st"],
    &[b"SPOP", b"st2"],
    &[b"SPOP", b"st", b"0"],
    &[b"SPOP", b"st", b"1"],
    &[b"SPOP", b"st", b"10"],
    &[b"SPOP", b"st3", b"10"],
    // Hashes.
    &[b"HSET", b"h", b"a", b"1", b"b", b"2"],
    &[b"HSET", b"h", b"a", b"1"],
    &[b"HMSET", b"h", b"c", b"3"],
    &[b"HSETNX", b"h", b"a", b"9"],
    &[b"HSETNX", b"h", b"d", b"9"],
    &[b"HINCRBY", b"h", b"a", b"1"],
    &[b"HINCRBYFLOAT", b"h", b"a", b"0.5"],
    &[b"HDEL", b"h", b"nothing"],
    &[b"HDEL", b"h", b"a", b"b"],
    &[b"HDEL", b"h", b"c", b"d"],
    // Sorted sets.
    &[b"ZADD", b"z", b"1", b"a", b"2", b"b", b"3", b"c", b"4", b"d"],
    &[b"ZADD", b"z", b"1", b"a"],
    &[b"ZADD", b"z", b"INCR", b"1", b"a"],
    &[b"ZINCRBY", b"z", b"0", b"a"],
    &[b"ZINCRBY", b"z", b"1", b"a"],
    &[b"ZREM", b"z", b"nothing"],
    &[b"ZREM", b"z", b"b"],
    &[b"ZREMRANGEBYSCORE", b"z", b"100", b"200"],
    &[b"ZREMRANGEBYSCORE", b"z", b"3", b"3"],
    &[b"ZADD", b"z", b"5", b"e", b"6", b"f", b"7", b"g"],
    &[b"ZREMRANGEBYRANK", b"z", b"0", b"0"],
    &[b"ZREMRANGEBYLEX", b"z", b"[e", b"[e"],
    &[b"ZPOPMIN", b"z"],
    &[b"ZPOPMAX", b"z", b"0"],
    &[b"ZMPOP", b"1", b"z", b"MAX"],
    &[b"ZADD", b"z", b"1", b"a", b"2", b"b"],
    &[b"ZUNIONSTORE", b"z2", b"1", b"z"],
    &[b"ZINTERSTORE", b"z3", b"2", b"z", b"z2"],
    &[b"ZDIFFSTORE", b"z3", b"2", b"z", b"z2"],
    &[b"ZDIFFSTORE", b"z4", b"2", b"z", b"z2"],
    &[b"ZRANGESTORE", b"z4", b"z", b"0", b"0"],
    &[b"ZRANGESTORE", b"z4", b"z", b"5", b"6"],
    &[b"BZPOPMIN", b"z2", b"0"],
    &[b"BZMPOP", b"0", b"1", b"z2", b"MAX", b"COUNT", b"5"],
    &[b"ZREM", b"z", b"a", b"b"],
    &[b"GEOADD", b"g", b"13.361389", b"38.115556", b"Palermo", b"15.087269", b"37.502669", b"Catania"],
    &[b"GEOSEARCHSTORE", b"g2", b"g", b"FROMLONLAT", b"15", b"37", b"BYRADIUS", b"200", b"km"],
    &[b"GEORADIUS", b"g", b"15", b"37", b"200", b"km", b"STORE", b"g3"],
    &[b"GEOSEARCHSTORE", b"g2", b"g", b"FROMLONLAT", b"0", b"0", b"BYRADIUS", b"1", b"km"],
    // SORT ... STORE.
    &[b"RPUSH", b"sl", b"3", b"1", b"2"],
    &[b"SORT", b"sl", b"STORE", b"sl2"],
    &[b"SORT", b"nothing", b"STORE", b"sl2"],
    // Streams.
    &[b"XADD", b"st", b"1", b"a", b"b"],
    &[b"XADD", b"st", b"MAXLEN", b"0", b"2", b"a", b"b"],
    &[b"XADD", b"st", b"3", b"a", b"b"],
    &[b"XDEL", b"st", b"3", b"9"],
    &[b"XDEL", b"st", b"9"],
    &[b"XSETID", b"st", b"5"],
    &[b"XGROUP", b"CREATE", b"st", b"g", b"0"],
    &[b"XGROUP", b"CREATE", b"st2", b"g", b"0", b"MKSTREAM"],
    &[b"XGROUP", b"CREATECONSUMER", b"st", b"g", b"c"],
    &[b"XADD", b"st", b"6", b"a", b"b"],
    &[b"XREADGROUP", b"GROUP", b"g", b"c2", b"STREAMS", b"st", b">"],
    &[b"XGROUP", b"SETID", b"st", b"g", b"0"],
    &[b"XGROUP", b"DELCONSUMER", b"st", b"g", b"c"],
    &[b"XGROUP", b"DESTROY", b"st", b"g"],
    &[b"XTRIM", b"st", b"MAXLEN", b"0"],
    &[b"XTRIM", b"st", b"MAXLEN", b"0"],
    // Wrong types and failures raise nothing.
    &[b"LPUSH", b"h1", b"a"],
    &[b"INCR", b"sl"],
    &[b"HINCRBY", b"nohash", b"f", b"x"],
    // A transaction's events come in its commands' order; a script's too.
    &[b"MULTI"],
    &[b"SET", b"t1", b"a"],
    &[b"LPUSH", b"t2", b"a"],
    &[b"INCR", b"t1"],
    &[b"DEL", b"t2"],
    &[b"EXEC"],
    &[b"EVAL", b"redis.call('set', KEYS[1], 'v'); redis.call('expire', KEYS[1], 100); return redis.pcall('lpush', KEYS[1], 'x')", b"1", b"e1"],
    &[b"EVAL", b"redis.call('del', KEYS[1])", b"1", b"e1"],
    // Lazy expiry: a read of a key whose time has passed.
    &[b"SET", b"ex", b"v", b"PX", b"1"],
    &[b"DEBUG-SLEEP"],
    &[b"GET", b"ex"],
    // Other databases name theirs.
    &[b"SELECT", b"3"],
    &[b"SET", b"d3", b"v"],
    &[b"DEL", b"d3"],
    &[b"SELECT", b"0"],
    &[b"FLUSHALL"],
];

/// The messages a subscriber to every keyspace and keyevent channel
/// receives while a client runs [`SESSION`] on the server at `addr`, with
/// `notify-keyspace-events` set to `flags`.
fn session(addr: SocketAddr, flags: &str) -> Vec<String> {
    let mut c = RawResp::connect(addr, 10);
    c.call_str("FLUSHALL");
    assert_eq!(
        show(&c.call_str(&format!("CONFIG SET notify-keyspace-events {flags}"))),
        "+OK\\r\\n"
    );
    let mut sub = RawResp::connect(addr, 10);
    sub.call_str("PSUBSCRIBE __key*__:*");
    for args in SESSION {
        if args[0] == b"DEBUG-SLEEP" {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        if args[0] == b"DUMP-RESTORE" {
            // DUMP args[1], RESTORE args[2] from it (REPLACE).
            let dumped = c.call(&[b"DUMP", args[1]]);
            let at = dumped.iter().position(|&b| b == b'\n').expect("a bulk string");
            let payload = &dumped[at + 1..dumped.len() - 2];
            c.call(&[b"RESTORE", args[2], b"0", payload, b"REPLACE"]);
            continue;
        }
        c.call(args);
    }
    // A marker the pattern matches: every event before it was published.
    c.call_str("PUBLISH __keyend__:marker end");
    c.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    let mut seen = Vec::new();
    loop {
        let message = show(&sub.reply().expect("a message"));
        if message.contains("__keyend__:marker") {
            break;
        }
        seen.push(message);
    }
    seen
}

/// Postmortem: keyspace notifications were missing (CONFIG SET
/// notify-keyspace-events was an unknown option).
#[test]
fn subscribers_receive_the_events_redis_publishes() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for flags in ["KEA", "Kl", "E$", "Kgx", "KEAn", "En", "Kt"] {
        let want = session(redis.addr, flags);
        let got = session(node.resp_addr, flags);
        assert!(!want.is_empty(), "{flags}: Redis published nothing");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{flags}: message {i}");
        }
        assert_eq!(got.len(), want.len(), "{flags}: {got:#?}");
    }
}

#[test]
fn the_flags_read_and_write_as_redis_keeps_them() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(10);
    for flags in
        ["KEA", "AKE", "Ag$lshzxeKEtmdn", "xK", "E$lg", "nK", "g$lshzxetd", "m", "Kz?", "a"]
    {
        assert_same_line(
            &mut redis,
            &mut mono,
            &format!("CONFIG SET notify-keyspace-events {flags}"),
        );
        assert_same_line(&mut redis, &mut mono, "CONFIG GET notify-keyspace-events");
    }
    assert_same_line(&mut redis, &mut mono, "CONFIG SET notify-keyspace-events");
    redis.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    mono.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b""]);
    assert_same_line(&mut redis, &mut mono, "CONFIG GET notify-keyspace-events");
}

/// A RESP3 client subscribed to its own keys gets each event before the
/// reply of the command that raised it, as Redis writes them.
#[test]
fn a_resp3_client_gets_its_own_events_before_the_reply() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(10);
    for c in [&mut redis, &mut mono] {
        c.call_str("CONFIG SET notify-keyspace-events KA");
        c.call_str("HELLO 3");
        c.call_str("SUBSCRIBE __keyspace@0__:k");
    }
    for line in ["SET k v", "GET k", "LPUSH other x", "DEL k"] {
        redis.send(&line.split(' ').map(str::as_bytes).collect::<Vec<_>>());
        mono.send(&line.split(' ').map(str::as_bytes).collect::<Vec<_>>());
        let replies = |c: &mut RawResp, n| {
            (0..n).map(|_| show(&c.reply().expect("reply"))).collect::<Vec<_>>()
        };
        let n = if line.starts_with("SET") || line.starts_with("DEL") { 2 } else { 1 };
        assert_eq!(replies(&mut mono, n), replies(&mut redis, n), "{line}");
    }
}

/// The messages `sub` receives until the marker published after them.
fn until_marker(c: &mut RawResp, sub: &mut RawResp) -> Vec<String> {
    c.call_str("PUBLISH __keyend__:marker end");
    let mut seen = Vec::new();
    loop {
        let message = show(&sub.reply().expect("a message"));
        if message.contains("__keyend__:marker") {
            return seen;
        }
        seen.push(message);
    }
}

/// A key whose time passes with no client reading it is removed by the
/// background expirer, which raises `expired` as Redis's active expiry
/// does; writes that are not applied (a discarded transaction, an EXEC
/// whose WATCH failed) raise nothing.
#[test]
fn background_expiry_raises_expired_and_unapplied_writes_raise_nothing() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let mut c = RawResp::connect(addr, 10);
        let mut other = RawResp::connect(addr, 10);
        c.call_str("CONFIG SET notify-keyspace-events KEA");
        let mut sub = RawResp::connect(addr, 10);
        sub.call_str("PSUBSCRIBE __key*__:*");
        c.call_str("SET gone v PX 50");
        // No command until the expirer raised it.
        let mut seen = vec![show(&sub.reply().expect("set")), show(&sub.reply().expect("set"))];
        seen.push(show(&sub.reply().expect("expire")));
        seen.push(show(&sub.reply().expect("expire")));
        seen.push(show(&sub.reply().expect("expired")));
        seen.push(show(&sub.reply().expect("expired")));
        for line in ["MULTI", "SET a 1", "NOSUCHCOMMAND", "EXEC", "WATCH w", "MULTI", "SET b 1"] {
            c.call_str(line);
        }
        other.call_str("SET w 1");
        c.call_str("EXEC");
        seen.extend(until_marker(&mut c, &mut sub));
        seen
    };
    let want = run(twin.redis.addr);
    let got = run(twin.node.resp_addr);
    assert_eq!(got, want);
    assert_eq!(want.len(), 8, "{want:#?}");
}

/// A script stopped at its instruction budget applies none of its writes
/// and raises none of their events; inside MULTI, the other commands'
/// events stay.
#[test]
fn a_stopped_script_raises_no_events() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start_with(dir.path(), &["--script-instructions-max", "10000000"]);
    let mut c = RawResp::connect(node.resp_addr, 60);
    c.call_str("CONFIG SET notify-keyspace-events E$");
    let mut sub = RawResp::connect(node.resp_addr, 60);
    sub.call_str("PSUBSCRIBE __key*__:*");
    let body = "redis.call('set', 'written', 'yes') while true do end";
    let reply = show(&c.call(&[b"EVAL", body.as_bytes(), b"0"]));
    assert!(reply.starts_with("-ERR Script killed"), "{reply}");
    c.call_str("MULTI");
    c.call_str("SET before 1");
    c.call(&[b"EVAL", body.as_bytes(), b"0"]);
    c.call_str("SET after 1");
    c.call_str("EXEC");
    let seen = until_marker(&mut c, &mut sub);
    let keys: Vec<&str> = seen.iter().map(|m| m.rsplit("\\r\\n").nth(1).unwrap_or("")).collect();
    assert_eq!(keys, ["before", "after"], "{seen:#?}");
}

/// Subscription confirmations are sent whatever CLIENT REPLY says, as
/// Redis pushes them; the messages after them too.
/// Postmortem: under CLIENT REPLY OFF or SKIP a PSUBSCRIBE's confirmation
/// was held back, and a client waiting for it waited for ever.
#[test]
fn confirmations_and_events_reach_a_client_whose_replies_are_off() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let mut c = RawResp::connect(addr, 10);
        c.call_str("CONFIG SET notify-keyspace-events KA");
        let mut seen = Vec::new();
        for mode in ["OFF", "SKIP"] {
            let mut sub = RawResp::connect(addr, 10);
            sub.send(&[b"CLIENT", b"REPLY", mode.as_bytes()]);
            sub.send(&[b"PSUBSCRIBE", b"*"]);
            seen.push(show(&sub.reply().expect("confirmation")));
            c.call_str("SET foo bar");
            seen.push(show(&sub.reply().expect("event")));
            sub.send(&[b"PUNSUBSCRIBE"]);
            seen.push(show(&sub.reply().expect("unsubscribed")));
        }
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}
