//! CLIENT TRACKING against a real redis-server 7.0 (both started here on
//! free loopback ports): the invalidation messages a tracking client (or
//! its redirect target) receives for the same commands, in the same
//! order, and CLIENT TRACKING's, CACHING's, GETREDIR's and TRACKINGINFO's
//! replies and errors.

use std::net::SocketAddr;

use monotable_tests::{show, RawResp, Twin};

fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

/// Runs `line` on `c`, and reads `replies` replies (a command's reply and
/// the pushes around it); each as a line of text.
fn run(c: &mut RawResp, line: &str, replies: usize) -> Vec<String> {
    c.send(&words(line));
    (0..replies).map(|_| format!("{line} -> {}", show(&c.reply().expect("a reply")))).collect()
}

/// A session of a RESP3 tracking client and a writer on the server at
/// `addr`; the lines each client read.
fn resp3_session(addr: SocketAddr) -> Vec<String> {
    let mut t = RawResp::connect(addr, 10);
    let mut w = RawResp::connect(addr, 10);
    let mut seen = Vec::new();
    w.call_str("FLUSHALL");
    w.call_str("MSET a 1 b 2 c 3 pre:x 1");
    t.call_str("HELLO 3");
    for line in
        ["CLIENT TRACKING on", "CLIENT TRACKINGINFO", "CLIENT GETREDIR", "GET a", "MGET b c"]
    {
        seen.extend(run(&mut t, line, 1));
    }
    // Another client's writes: one invalidation per key read, once.
    w.call_str("SET a 10");
    w.call_str("SET a 11");
    w.call_str("DEL b nothing");
    seen.extend(run(&mut t, "PING", 3));
    // Its own write of a key it read: the invalidation after the reply.
    seen.extend(run(&mut t, "GET c", 1));
    seen.extend(run(&mut t, "SET c 30", 2));
    // A transaction: the reply, then the invalidations.
    seen.extend(run(&mut t, "GET a", 1));
    seen.extend(run(&mut t, "MULTI", 1));
    seen.extend(run(&mut t, "SET a 12", 1));
    seen.extend(run(&mut t, "INCR a", 1));
    seen.extend(run(&mut t, "EXEC", 2));
    // NOLOOP: its own writes are not reported.
    seen.extend(run(&mut t, "CLIENT TRACKING on NOLOOP", 1));
    seen.extend(run(&mut t, "GET a", 1));
    seen.extend(run(&mut t, "SET a 13", 1));
    w.call_str("SET a 14");
    seen.extend(run(&mut t, "PING", 1));
    // OPTIN: only reads after CLIENT CACHING yes.
    seen.extend(run(&mut t, "CLIENT TRACKING off", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on OPTIN", 1));
    seen.extend(run(&mut t, "CLIENT CACHING no", 1));
    seen.extend(run(&mut t, "GET a", 1));
    seen.extend(run(&mut t, "CLIENT CACHING yes", 1));
    seen.extend(run(&mut t, "GET b", 1));
    seen.extend(run(&mut t, "CLIENT TRACKINGINFO", 1));
    w.call_str("SET a 15");
    w.call_str("SET b 15");
    seen.extend(run(&mut t, "PING", 2));
    seen.extend(run(&mut t, "CLIENT TRACKING on OPTOUT", 1));
    // BCAST with prefixes: the keys a command wrote, in one message.
    seen.extend(run(&mut t, "CLIENT TRACKING off", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on BCAST PREFIX pre: PREFIX x", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on BCAST PREFIX p", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on BCAST PREFIX y PREFIX yz", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on PREFIX q", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on", 1));
    seen.extend(run(&mut t, "CLIENT TRACKINGINFO", 1));
    w.call_str("MSET pre:1 a pre:2 b other c");
    w.call_str("SET xkey 1");
    seen.extend(run(&mut t, "PING", 3));
    // A flush: a null invalidation.
    seen.extend(run(&mut t, "CLIENT TRACKING off", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on", 1));
    seen.extend(run(&mut t, "GET a", 1));
    w.call_str("FLUSHALL");
    seen.extend(run(&mut t, "PING", 2));
    seen.extend(run(&mut t, "FLUSHDB", 2));
    // A script that reads has read the keys it declared; one that only
    // writes has not.
    seen.extend(run(&mut t, "CLIENT TRACKING off", 1));
    seen.extend(run(&mut t, "CLIENT TRACKING on", 1));
    for body in ["redis.call('set', 'k3', 'v')", "redis.call('get', 'k3')"] {
        t.send(&[b"EVAL", body.as_bytes(), b"2", b"k1", b"k2"]);
        seen.push(format!("{body} -> {}", show(&t.reply().expect("a reply"))));
        w.call_str("MSET k2 1 k1 1");
    }
    seen.extend(run(&mut t, "PING", 3));
    // Errors.
    for line in [
        "CLIENT TRACKING maybe",
        "CLIENT TRACKING on OPTIN OPTOUT",
        "CLIENT TRACKING on BCAST OPTIN",
        "CLIENT TRACKING on REDIRECT 999999",
        "CLIENT TRACKING on REDIRECT x",
        "CLIENT TRACKING on FOO",
        "CLIENT CACHING maybe",
        "CLIENT CACHING yes",
        "CLIENT TRACKING off",
        "CLIENT CACHING yes",
        "CLIENT GETREDIR",
        "CLIENT TRACKINGINFO",
    ] {
        seen.extend(run(&mut t, line, 1));
    }
    seen
}

/// Postmortem: CLIENT TRACKING was missing (and Redis's tracking unit
/// waited for ever for invalidations).
#[test]
fn a_resp3_tracking_client_is_told_what_redis_tells_it() {
    let twin = Twin::start();
    let want = resp3_session(twin.redis.addr);
    let got = resp3_session(twin.node.resp_addr);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_eq!(got.len(), want.len());
}

/// Redirection to a RESP2 connection subscribed to
/// `__redis__:invalidate`, several clients redirecting to it, and a
/// redirect whose target went away.
fn redirect_session(addr: SocketAddr) -> Vec<String> {
    let mut seen = Vec::new();
    let mut w = RawResp::connect(addr, 10);
    w.call_str("FLUSHALL");
    w.call_str("MSET k1 1 k2 2");
    let mut target = RawResp::connect(addr, 10);
    let id = String::from_utf8_lossy(&target.call_str("CLIENT ID"))
        .trim_start_matches(':')
        .trim()
        .to_owned();
    target.call_str("SUBSCRIBE __redis__:invalidate");
    let mut a = RawResp::connect(addr, 10);
    let mut b = RawResp::connect(addr, 10);
    for c in [&mut a, &mut b] {
        assert_eq!(show(&c.call_str(&format!("CLIENT TRACKING on REDIRECT {id}"))), "+OK\\r\\n");
    }
    let masked = |reply: Vec<u8>| show(&reply).replace(&format!(":{id}\\r\\n"), ":ID\\r\\n");
    seen.push(masked(a.call_str("CLIENT GETREDIR")));
    a.call_str("GET k1");
    b.call_str("GET k1");
    b.call_str("GET k2");
    w.call_str("SET k1 10");
    w.call_str("SET k2 20");
    for _ in 0..3 {
        seen.push(show(&target.reply().expect("an invalidation")));
    }
    // The target goes: a RESP3 client is told its redirect broke.
    a.call_str("HELLO 3");
    a.call_str("GET k1");
    drop(target);
    std::thread::sleep(std::time::Duration::from_millis(200));
    w.call_str("SET k1 11");
    seen.push(masked(a.reply().expect("redirect broken")));
    seen.push(masked(a.call_str("CLIENT TRACKINGINFO")));
    seen
}

#[test]
fn redirected_invalidations_reach_their_target_as_in_redis() {
    let twin = Twin::start();
    assert_eq!(redirect_session(twin.node.resp_addr), redirect_session(twin.redis.addr));
}

/// A blocked BLMOVE that a push serves writes a list its client tracks:
/// the invalidation follows its reply; and a lowered
/// `tracking-table-max-keys` lets go of keys, each with its invalidation.
/// Postmortem: the BLMOVE's invalidation was never sent (kept for after a
/// reply that the blocked path did not look for).
#[test]
fn a_served_blmove_and_a_lowered_table_bound_invalidate_as_in_redis() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let mut seen = Vec::new();
        let mut w = RawResp::connect(addr, 10);
        w.call_str("FLUSHALL");
        w.call_str("RPUSH list2 a");
        let mut c = RawResp::connect(addr, 10);
        c.call_str("HELLO 3");
        c.call_str("CLIENT TRACKING on");
        c.call_str("LRANGE list2 0 -1");
        c.send(&words("BLMOVE list1 list2 LEFT LEFT 0"));
        std::thread::sleep(std::time::Duration::from_millis(200));
        w.call_str("RPUSH list1 foo");
        seen.push(show(&c.reply().expect("served")));
        seen.push(show(&c.reply().expect("invalidated")));
        c.call_str("CLIENT TRACKING off");
        c.call_str("CLIENT TRACKING on");
        c.call_str("MSET k1 1 k2 2");
        c.call_str("MGET k1 k2");
        w.call_str("CONFIG SET tracking-table-max-keys 1");
        let gone = show(&c.reply().expect("one key let go"));
        seen.push(format!("{}", gone.contains("$2\\r\\nk1") || gone.contains("$2\\r\\nk2")));
        w.call_str("CONFIG SET tracking-table-max-keys 1000000");
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}

/// RESET turns tracking off, and CLIENT LIST shows it so (as Redis's
/// `t` flag goes).
#[test]
fn reset_ends_tracking_as_in_redis() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let mut c = RawResp::connect(addr, 10);
        c.call_str("CLIENT TRACKING on");
        let on = String::from_utf8_lossy(&c.call_str("CLIENT INFO")).contains("flags=t ");
        c.call_str("RESET");
        let info = String::from_utf8_lossy(&c.call_str("CLIENT INFO")).into_owned();
        (on, info.contains("flags=N "), show(&c.call_str("CLIENT GETREDIR")))
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}

/// Postmortem: with no tracking client left, writes stopped consulting the
/// tracking table, so keys a closed client had read stayed counted in
/// INFO's `tracking_total_keys` for ever; Redis removes a key from the
/// table when it is next written. Consumer-group commands (which Redis
/// does not count as modifying the key) sent invalidations.
#[test]
fn the_table_forgets_written_keys_after_its_clients_leave_as_in_redis() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let total = |c: &mut RawResp| {
            let info = String::from_utf8_lossy(&c.call_str("INFO stats")).into_owned();
            info.lines()
                .find(|l| l.starts_with("tracking_total_keys:"))
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let mut seen = Vec::new();
        let mut w = RawResp::connect(addr, 10);
        w.call_str("FLUSHALL");
        w.call_str("MSET x 1 y 2");
        w.call_str("XADD s 1-1 f v");
        w.call_str("XGROUP CREATE s g 0");
        let mut t = RawResp::connect(addr, 10);
        t.call_str("HELLO 3");
        t.call_str("CLIENT TRACKING on");
        t.call_str("MGET x y");
        t.call_str("XRANGE s - +");
        // Group reads and changes: no invalidation.
        w.call_str("XREADGROUP GROUP g c STREAMS s >");
        w.call_str("XACK s g 1-1");
        w.call_str("XSETID s 9-9");
        w.call_str("XGROUP CREATECONSUMER s g c2");
        seen.extend(run(&mut t, "PING", 1));
        seen.push(total(&mut w));
        drop(t);
        std::thread::sleep(std::time::Duration::from_millis(200));
        seen.push(total(&mut w));
        w.call_str("SET y 3");
        seen.push(total(&mut w));
        w.call_str("DEL x s");
        seen.push(total(&mut w));
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}

/// Postmortem: RENAME invalidated its destination before its source
/// (keys went in the order their rows were written); Redis signals each
/// multi-key command's keys in its own order.
#[test]
fn multi_key_writes_invalidate_in_redis_order() {
    let twin = Twin::start();
    const KEYS: &str = "a b c s1 s2 l1 l2 x y d z1 z2";
    let run = |addr: SocketAddr| {
        let mut seen = Vec::new();
        let mut w = RawResp::connect(addr, 10);
        let mut t = RawResp::connect(addr, 10);
        t.call_str("HELLO 3");
        for line in [
            "RENAME a b",
            "RENAME b a",
            "SMOVE s1 s2 m",
            "SMOVE s2 s1 m",
            "LMOVE l1 l2 LEFT RIGHT",
            "RPOPLPUSH l2 l1",
            "MSET y 1 x 2",
            "MSETNX d 1 c 2",
            "DEL y x nothing",
            "SUNIONSTORE d s1 s2",
            "SINTERSTORE d s2 s1",
            "ZUNIONSTORE z2 2 z1 z2",
            "COPY a c REPLACE",
            "BITOP OR x a c",
            "MOVE c 1",
        ] {
            // Off while the keys are set up: no flush invalidation.
            t.call_str("CLIENT TRACKING off");
            w.call_str("FLUSHALL");
            w.call_str("MSET a 1 b 2 c 3");
            w.call_str("SADD s1 m n");
            w.call_str("SADD s2 o");
            w.call_str("RPUSH l1 p q");
            w.call_str("RPUSH l2 r");
            w.call_str("ZADD z1 1 m");
            t.call_str("CLIENT TRACKING on");
            t.call_str(&format!("EXISTS {KEYS}"));
            seen.push(show(&w.call_str(line)));
            t.send(&words("PING"));
            loop {
                let message = show(&t.reply().expect("a message"));
                if message.contains("PONG") {
                    break;
                }
                seen.push(format!("{line} -> {message}"));
            }
        }
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}

/// Postmortem: CLIENT INFO said `redir=-1` for a client tracking without
/// REDIRECT (Redis: 0) and never showed flag `R` once the redirect
/// target was gone.
#[test]
fn client_info_shows_tracking_redirection_as_redis() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let field = |c: &mut RawResp, name: &str| {
            let info = String::from_utf8_lossy(&c.call_str("CLIENT INFO")).into_owned();
            let at = info.find(&format!(" {name}=")).expect("the field") + name.len() + 2;
            info[at..].split([' ', '\r']).next().unwrap_or_default().to_owned()
        };
        let mut seen = Vec::new();
        let mut c = RawResp::connect(addr, 10);
        let mut target = RawResp::connect(addr, 10);
        let target_id = String::from_utf8_lossy(&target.call_str("CLIENT ID"))
            .trim_start_matches(':')
            .trim()
            .to_owned();
        seen.push((field(&mut c, "flags"), field(&mut c, "redir")));
        c.call_str("CLIENT TRACKING on");
        seen.push((field(&mut c, "flags"), field(&mut c, "redir")));
        c.call_str(&format!("CLIENT TRACKING on REDIRECT {target_id}"));
        let redir = field(&mut c, "redir");
        seen.push((field(&mut c, "flags"), (redir == target_id).to_string()));
        c.call_str("GET k");
        drop(target);
        std::thread::sleep(std::time::Duration::from_millis(200));
        c.call_str("SET k 1");
        seen.push((field(&mut c, "flags"), (field(&mut c, "redir") == target_id).to_string()));
        c.call_str("CLIENT TRACKING on BCAST");
        c.call_str("CLIENT TRACKING off");
        c.call_str("CLIENT TRACKING on BCAST");
        seen.push((field(&mut c, "flags"), field(&mut c, "redir")));
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}

/// Postmortem: a container command's read-only subcommands (OBJECT
/// ENCODING, MEMORY USAGE, XINFO STREAM) remembered no key: the flags
/// looked at were the container's.
#[test]
fn read_only_subcommands_remember_their_keys_as_in_redis() {
    let twin = Twin::start();
    let run = |addr: SocketAddr| {
        let mut seen = Vec::new();
        let mut w = RawResp::connect(addr, 10);
        w.call_str("FLUSHALL");
        w.call_str("MSET a 1 b 2 c 3");
        w.call_str("XADD s 1-1 f v");
        let mut t = RawResp::connect(addr, 10);
        t.call_str("HELLO 3");
        t.call_str("CLIENT TRACKING on");
        for line in ["OBJECT ENCODING a", "MEMORY USAGE b", "OBJECT REFCOUNT c", "XINFO STREAM s"] {
            t.call_str(line);
        }
        w.call_str("DEL a b c s");
        seen.extend(run(&mut t, "PING", 5));
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}
