//! MONITOR against a real redis-server 7.0 (both started here on free
//! loopback ports): the lines a monitor receives for the same commands
//! (times and client ports masked), in the same order, and what a monitor
//! may still run.

use std::net::SocketAddr;

use monotable_tests::{show, Node, RawResp, Redis};

/// A monitor line with its time and the client's port masked.
fn masked(reply: &[u8]) -> String {
    let line = show(reply);
    let Some((_, rest)) = line.split_once(" [") else { return line };
    let (client, args) = rest.split_once("] ").unwrap_or((rest, ""));
    let client = match client.split_once(' ') {
        Some((db, peer)) if peer != "lua" => format!("{db} CLIENT"),
        _ => client.to_owned(),
    };
    format!("[{client}] {args}")
}

/// What a monitor sees of one client's session on the server at `addr`.
fn session(addr: SocketAddr) -> Vec<String> {
    let mut monitor = RawResp::connect(addr, 10);
    let mut c = RawResp::connect(addr, 10);
    c.call_str("FLUSHALL");
    c.call_str("FUNCTION FLUSH");
    assert_eq!(show(&monitor.call_str("MONITOR")), "+OK\\r\\n");
    let lib = "#!lua name=m\nredis.register_function('f', function(keys) \
               return redis.call('set', keys[1], 'x') end)";
    // FUNCTION LOAD is shown (not admin); the rest in order.
    c.call(&[b"FUNCTION", b"LOAD", lib.as_bytes()]);
    let lines: &[&[&[u8]]] = &[
        &[b"SET", b"foo", b"bar"],
        &[b"GET", b"foo"],
        &[b"SET", b"bin", b"a\"b\\c\n\r\t\x07\x08\x00\xff"],
        &[b"MULTI"],
        &[b"SET", b"in", b"multi"],
        &[b"INCR", b"n"],
        &[b"EXEC"],
        &[b"MULTI"],
        &[b"NOSUCHCOMMAND"],
        &[b"EXEC"],
        &[
            b"EVAL",
            b"redis.call('set', KEYS[1], ARGV[1]) return redis.pcall('incr', 'x', 'y')",
            b"1",
            b"k",
            b"v",
        ],
        &[b"FCALL", b"f", b"1", b"fk"],
        &[b"CONFIG", b"GET", b"maxmemory"],
        &[b"AUTH", b"not-real"],
        &[b"AUTH", b"user", b"not-a-password"],
        &[b"HELLO", b"2", b"AUTH", b"user", b"not-a-password"],
        &[b"GET"],
        &[b"BLPOP", b"empty", b"0.01"],
        &[b"PING"],
        // Postmortem: RESET dropped its own record and was not shown, nor
        // inside MULTI (taken for a queued command).
        &[b"MULTI"],
        &[b"SET", b"queued", b"1"],
        &[b"RESET"],
    ];
    for args in lines {
        c.call(args);
    }
    // A marker: every line before it has been fed.
    c.call(&[b"ECHO", b"end"]);
    let mut seen = Vec::new();
    loop {
        let line = masked(&monitor.reply().expect("a monitor line"));
        let end =
            line.ends_with("\"echo\" \"end\"\\r\\n") || line.ends_with("\"ECHO\" \"end\"\\r\\n");
        seen.push(line);
        if end {
            break;
        }
    }
    // A monitor may not touch keys, and RESET ends MONITOR.
    for line in ["GET foo", "PING", "RESET", "GET foo"] {
        seen.push(format!("monitor {line}: {}", masked(&monitor.call_str(line))));
    }
    let list = String::from_utf8_lossy(&c.call_str("CLIENT LIST")).into_owned();
    seen.push(format!("a monitor left: {}", list.contains("flags=O")));
    seen
}

/// Postmortem: MONITOR was missing.
#[test]
fn monitors_see_what_redis_monitors_see() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let want = session(redis.addr);
    let got = session(node.resp_addr);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}
