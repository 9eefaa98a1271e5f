//! SAVE, BGSAVE, LASTSAVE and SHUTDOWN against a real redis-server 7.0
//! (started here on a free loopback port with a scratch directory for its
//! dump file): their replies and errors, in MULTI and scripts, INFO's
//! persistence figures; then SHUTDOWN stopping a node whose data a restart
//! finds whole.

use monotable_tests::{show, Node, RawResp, Redis};

/// INFO persistence's `field` as a number.
fn info_field(c: &mut RawResp, field: &str) -> i64 {
    let text = String::from_utf8_lossy(&c.call_str("INFO persistence")).into_owned();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).expect(field);
    line[field.len() + 1..].trim().parse().expect("a number")
}

/// The replies of one session that the two servers must give alike.
fn session(c: &mut RawResp) -> Vec<String> {
    let mut seen = Vec::new();
    let mut run =
        |c: &mut RawResp, line: &str| seen.push(format!("{line} -> {}", show(&c.call_str(line))));
    c.call_str("FLUSHALL");
    for line in [
        "MULTI",
        "SET foo bar",
        "SAVE",
        "EXEC",
        "GET foo",
        "MULTI",
        "SET foo bar",
        "SHUTDOWN",
        "EXEC",
        "GET foo",
        "SAVE",
        "BGSAVE x",
        "BGSAVE SCHEDULE x",
        "SHUTDOWN ABORT",
        "SHUTDOWN NOSAVE SAVE",
        "SHUTDOWN ABORT NOW",
        "SHUTDOWN sometimes",
        "LASTSAVE x",
        "SAVE x",
        "EVAL \"return redis.call('save')\" 0",
        "EVAL \"return redis.pcall('shutdown')\" 0",
        "EVAL \"return redis.pcall('lastsave') > 0\" 0",
        "EVAL \"return redis.pcall('cluster', 'reset')\" 0",
        "COMMAND INFO save shutdown lastsave bgsave",
    ] {
        run(c, line);
    }
    // Changes since the last save: one per key a write modified.
    let mut counts = vec![info_field(c, "rdb_changes_since_last_save")];
    for line in [
        "SET a 1",
        "SET a 1",
        "MSET b 1 c 2",
        "DEL nothing",
        "SETNX a 2",
        "DEL a b",
        "HSET h f 1 g 2",
        "HSET h f 2",
        "HINCRBY h g 5",
        "RPUSH l a b",
        "LSET l 0 z",
        "ZADD z 1 a 2 b",
        "ZADD z 5 a",
        "ZINCRBY z 1 a",
        "MULTI;SET y 2;INCR y;SET w 1;EXEC",
        "FLUSHDB",
        // Commands whose rows say more than Redis counts: LINSERT and LREM
        // rewrite the list's positions, removals that empty the key count
        // their elements.
        "RPUSH big 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19",
        "LINSERT big BEFORE 10 x",
        "LINSERT big BEFORE nosuch x",
        "LREM big 0 x",
        "LTRIM big 0 -1",
        "LTRIM big 2 5",
        "LTRIM big 5 1",
        "RPUSH l 1 2",
        "LPOP l 10",
        "SADD s a b c",
        "SREM s a b c",
        "SADD s a b c",
        "SPOP s 5",
        "HSET h2 f 1 g 2",
        "HDEL h2 f g",
        "ZADD z2 1 a 2 b 3 c",
        "ZREMRANGEBYRANK z2 0 -1",
        "ZADD z2 0 a 0 b",
        "ZREMRANGEBYLEX z2 - +",
    ] {
        for part in line.split(';') {
            c.call_str(part);
        }
        counts.push(info_field(c, "rdb_changes_since_last_save"));
    }
    c.call_str("SAVE");
    counts.push(info_field(c, "rdb_changes_since_last_save"));
    seen.push(format!("{counts:?}"));
    // Last: Redis forks a child for it, which SAVE would wait for.
    for line in ["MULTI", "BGSAVE", "EXEC"] {
        seen.push(format!("{line} -> {}", show(&c.call_str(line))));
    }
    seen
}

#[test]
fn save_commands_answer_as_redis() {
    let dump_dir = tempfile::tempdir().expect("tmp");
    let redis = Redis::start_with(&["--dir", dump_dir.path().to_str().expect("utf-8")]);
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut r = RawResp::connect(redis.addr, 10);
    let mut m = RawResp::connect(node.resp_addr, 10);
    let want = session(&mut r);
    let got = session(&mut m);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(got.len(), want.len());
    // LASTSAVE moves to the last save's time; BGSAVE reports it ran.
    let before = show(&m.call_str("LASTSAVE"));
    assert!(before.starts_with(':'), "{before}");
    let bgsave_ends = |m: &mut RawResp| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while info_field(m, "rdb_bgsave_in_progress") != 0 {
            assert!(std::time::Instant::now() < deadline, "BGSAVE did not end");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    bgsave_ends(&mut m);
    assert_eq!(show(&m.call_str("BGSAVE")), "+Background saving started\\r\\n");
    bgsave_ends(&mut m);
    let text = String::from_utf8_lossy(&m.call_str("INFO persistence")).into_owned();
    assert!(text.contains("rdb_last_bgsave_status:ok"), "{text}");
    assert_eq!(info_field(&mut m, "rdb_last_bgsave_time_sec"), 0, "{text}");
    m.call_str("CONFIG RESETSTAT");
    assert_eq!(info_field(&mut m, "rdb_saves"), 0);
}

/// SHUTDOWN closes the connection without a reply and stops the node
/// cleanly (exit status 0); what was written is there after a restart.
#[test]
fn shutdown_stops_the_node_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), &["--fsync", "never"]);
    let mut c = RawResp::connect(node.resp_addr, 10);
    assert_eq!(c.call_str("SET kept v"), b"+OK\r\n");
    assert_eq!(c.call_str("RPUSH list a b c"), b":3\r\n");
    c.send(&[b"SHUTDOWN"]);
    assert_eq!(c.reply(), None, "the connection closes without a reply");
    assert_eq!(node.wait_exit(60), Some(true), "the node exits cleanly");
    assert!(node.log_contains("SHUTDOWN asked by a Redis client"));
    node.restart();
    let mut c = RawResp::connect(node.resp_addr, 10);
    assert_eq!(c.call_str("GET kept"), b"$1\r\nv\r\n");
    assert_eq!(c.call_str("LLEN list"), b":3\r\n");
}
