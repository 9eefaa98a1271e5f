//! Pub/sub against a real `redis-server`: the same subscribers and
//! publishers on both, every byte a subscriber receives compared, in RESP2
//! and RESP3; and a subscriber that never reads is cut off without
//! holding up its publisher.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};

/// An array of bulk strings whose order Redis leaves open (its hash
/// table's), with its items sorted.
fn unordered(reply: &[u8]) -> String {
    let text = show(reply);
    let mut parts: Vec<&str> = text.split("\\r\\n").filter(|p| !p.is_empty()).collect();
    let header = parts.remove(0).to_owned();
    let mut items: Vec<String> = parts.chunks(2).map(|c| c.join("|")).collect();
    items.sort();
    format!("{header} {items:?}")
}

fn args(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.replace("<NUL>", "\0").into_bytes()).collect()
}

/// One step of a pub/sub session: a command on connection `0` (the
/// subscriber), `1` (a second subscriber) or `2` (the publisher), and how
/// many replies or messages each of the three then reads.
struct Step(usize, &'static str, [usize; 3]);

/// Runs `steps` against `addr` and returns everything each connection
/// read, in order.
fn session(addr: SocketAddr, resp3: bool, steps: &[Step]) -> Vec<Vec<String>> {
    let mut conns: Vec<RawResp> = (0..3).map(|_| RawResp::connect(addr, 10)).collect();
    if resp3 {
        for c in &mut conns[..2] {
            let hello = c.call(&[b"HELLO", b"3"]);
            assert!(hello.starts_with(b"%"), "{}", show(&hello));
        }
    }
    let mut seen = vec![Vec::new(); 3];
    for Step(on, line, reads) in steps {
        let words = args(line);
        let refs: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        conns[*on].send(&refs);
        for (i, n) in reads.iter().enumerate() {
            for _ in 0..*n {
                let reply = conns[i].reply().unwrap_or_else(|| panic!("{line}: no reply on {i}"));
                seen[i].push(if line.starts_with("PUBSUB CHANNELS") {
                    unordered(&reply)
                } else {
                    show(&reply)
                });
            }
        }
    }
    seen
}

fn steps() -> Vec<Step> {
    vec![
        Step(0, "SUBSCRIBE news sport news", [3, 0, 0]),
        Step(1, "PSUBSCRIBE n* [sx]port", [0, 2, 0]),
        Step(2, "PUBLISH news hello<NUL>world", [1, 1, 1]),
        Step(2, "PUBLISH sport goal", [1, 1, 1]),
        Step(2, "PUBLISH weather rain", [0, 0, 1]),
        Step(2, "PUBSUB CHANNELS", [0, 0, 1]),
        Step(2, "PUBSUB CHANNELS n*", [0, 0, 1]),
        Step(2, "PUBSUB NUMSUB news sport none", [0, 0, 1]),
        Step(2, "PUBSUB NUMPAT", [0, 0, 1]),
        Step(2, "PUBSUB NOPE", [0, 0, 1]),
        Step(2, "PUBSUB NUMPAT x", [0, 0, 1]),
        Step(2, "PUBSUB CHANNELS a b", [0, 0, 1]),
        Step(2, "PUBSUB HELP", [0, 0, 1]),
        Step(2, "PUBSUB SHARDNUMSUB x", [0, 0, 1]),
        Step(0, "PING", [1, 0, 0]),
        Step(0, "PING hi", [1, 0, 0]),
        Step(0, "GET news", [1, 0, 0]),
        Step(0, "UNSUBSCRIBE sport", [1, 0, 0]),
        Step(2, "PUBLISH sport miss", [0, 1, 1]),
        Step(0, "UNSUBSCRIBE", [1, 0, 0]),
        Step(0, "UNSUBSCRIBE", [1, 0, 0]),
        Step(0, "PING", [1, 0, 0]),
        Step(0, "SET k v", [1, 0, 0]),
        Step(1, "PUNSUBSCRIBE nothing-such", [0, 1, 0]),
        Step(1, "PUNSUBSCRIBE", [0, 2, 0]),
        Step(2, "PUBLISH news last", [0, 0, 1]),
        Step(0, "SUBSCRIBE again", [1, 0, 0]),
        Step(0, "RESET", [1, 0, 0]),
        Step(2, "PUBLISH again gone", [0, 0, 1]),
        Step(2, "PUBSUB NUMSUB again", [0, 0, 1]),
        Step(0, "SUBSCRIBE", [1, 0, 0]),
        Step(2, "PUBLISH", [0, 0, 1]),
        // Redis's glob quirks: `*` does not match the empty channel, and
        // `[a-]` is a range to `]` that takes the rest of the pattern.
        // Postmortem: `*` matched "", `[a-]` was the set {a, -}.
        // (One pattern at a time: Redis delivers to several matching
        // patterns in its hash table's order.)
        Step(1, "PSUBSCRIBE *", [0, 1, 0]),
        Step(2, "PUBLISH  empty", [0, 0, 1]),
        Step(2, "PUBLISH a m", [0, 1, 1]),
        Step(1, "PUNSUBSCRIBE *", [0, 1, 0]),
        Step(1, "PSUBSCRIBE x[a-]y]", [0, 1, 0]),
        Step(2, "PUBLISH xy m", [0, 1, 1]),
        Step(2, "PUBLISH x- m", [0, 0, 1]),
        Step(2, "PUBSUB CHANNELS *", [0, 0, 1]),
    ]
}

/// A RESP3 client publishing to a channel it listens to gets the message
/// before PUBLISH's reply, as from redis-server.
/// Postmortem: the reply came first.
#[test]
fn a_resp3_client_hears_its_own_message_before_the_reply() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut seen = Vec::new();
    for addr in [redis.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        assert!(c.call(&[b"HELLO", b"3"]).starts_with(b"%"));
        let mut got = vec![show(&c.call(&[b"SUBSCRIBE", b"self"]))];
        c.send(&[b"PUBLISH", b"self", b"me"]);
        got.push(show(&c.reply().expect("first")));
        got.push(show(&c.reply().expect("second")));
        seen.push(got);
    }
    assert_eq!(seen[1], seen[0]);
}

#[test]
fn subscribers_receive_what_redis_sends_in_resp2_and_resp3() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for resp3 in [false, true] {
        let want = session(redis.addr, resp3, &steps());
        let got = session(node.resp_addr, resp3, &steps());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            for (j, (g, w)) in g.iter().zip(w).enumerate() {
                assert_eq!(g, w, "resp3 {resp3}, connection {i}, read {j}");
            }
            assert_eq!(g.len(), w.len());
        }
    }
}

/// Inside MULTI, SUBSCRIBE is refused (EXEC runs the queue for the
/// transaction, not on the connection) and the EXEC aborts; PUBLISH runs.
#[test]
fn subscribe_inside_multi_is_refused_and_publish_works_there() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut sub = RawResp::connect(node.resp_addr, 10);
    assert!(sub.call(&[b"SUBSCRIBE", b"c"]).starts_with(b"*3"));
    let mut c = RawResp::connect(node.resp_addr, 10);
    assert_eq!(c.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"PUBLISH", b"c", b"m"]), b"+QUEUED\r\n");
    assert!(c
        .call(&[b"SUBSCRIBE", b"x"])
        .starts_with(b"-ERR SUBSCRIBE is not allowed inside MULTI"));
    assert!(c.call(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(c.call(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(c.call(&[b"PUBLISH", b"c", b"m"]), b"+QUEUED\r\n");
    assert_eq!(c.call(&[b"EXEC"]), b"*1\r\n:1\r\n");
    assert_eq!(sub.reply().expect("message"), b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
}

/// A subscriber that never reads is disconnected once 32 MiB of messages
/// pile up for it (Redis's pubsub output limit); its publisher goes on, and
/// another subscriber gets everything.
#[test]
fn a_subscriber_that_never_reads_is_cut_off() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut stuck = RawResp::connect(node.resp_addr, 10);
    assert!(stuck.call(&[b"SUBSCRIBE", b"flood"]).starts_with(b"*3"));
    let mut reader = RawResp::connect(node.resp_addr, 30);
    assert!(reader.call(&[b"SUBSCRIBE", b"flood"]).starts_with(b"*3"));
    let mut publisher = RawResp::connect(node.resp_addr, 30);
    let payload = vec![b'x'; 1 << 20];
    // The reading subscriber keeps up (the publisher waits for it to be
    // within 8 messages): only the stuck one piles up.
    let (read_tx, read_rx) = std::sync::mpsc::channel::<usize>();
    let reader_thread = std::thread::spawn(move || {
        for got in 1..=60 {
            let m = reader.reply().expect("a message");
            assert!(m.len() > 1 << 20);
            read_tx.send(got).expect("the test waits");
        }
        reader
    });
    let (mut reached, mut read) = (Vec::new(), 0);
    for i in 0..60 {
        while read + 8 < i {
            read = read_rx.recv().expect("the reader goes on");
        }
        let r = publisher.call(&[b"PUBLISH", b"flood", &payload]);
        let n = std::str::from_utf8(&r[1..r.len() - 2]).ok().and_then(|n| n.parse::<u32>().ok());
        reached.push(n.expect("an integer reply"));
    }
    assert_eq!(reached.last(), Some(&1), "the stuck subscriber was let go: {reached:?}");
    reader_thread.join().expect("the reading subscriber got all 100");
    // The stuck connection is closed once it runs again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match stuck.reply() {
            None => break,
            Some(_) => assert!(Instant::now() < deadline, "never closed"),
        }
    }
}
