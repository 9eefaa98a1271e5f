//! Crash test of the Redis protocol endpoint: pipelined clients (raw RESP
//! over a socket, and the `redis` crate) run INCR on a few hot keys and
//! SET/HSET/LPUSH/SADD/ZADD on many keys spread over many chunks of
//! `redis.0`, the node is killed with SIGKILL at random moments and
//! restarted (in turn under each `--fsync` mode, on one data directory), and
//! after each restart everything a reply acknowledged is there: an INCR
//! key's value is at least its highest acknowledged reply and at most the
//! INCRs sent, and every acknowledged SET, HSET field, list element, set
//! member and sorted set member is present with its value.
//! `RESP_CRASH_SEED=N` replays the random choices (not the timing).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use monotable_client::{tuple, Client, Element, RangeOptions};
use monotable_tests::{runtime, Node, RawResp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Commands per flush: each client writes this many, then reads their
/// replies.
const PIPELINE: usize = 16;
/// Clients on raw sockets: each reply is recorded as it arrives.
const RAW_CLIENTS: u64 = 3;
/// Clients of the `redis` crate: a pipeline is acknowledged when all its
/// replies are in.
const CRATE_CLIENTS: u64 = 3;
/// Hot keys every client increments.
const COUNTERS: u64 = 4;
/// Keys of each collection type (and string keys per client).
const KEYS: u64 = 64;
/// Kill rounds; round `r` runs under `MODES[r % 3]`.
const ROUNDS: usize = 6;
const MODES: [&[&str]; 3] = [
    &["--fsync", "always"],
    &["--fsync", "interval", "--fsync-interval-ms", "50"],
    &["--fsync", "never"],
];
/// `redis.0`'s chunk size: small, so that it keeps splitting under the load.
const CHUNK_SIZE_MAX_BYTES: u64 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Incr,
    Set,
    HSet,
    LPush,
    SAdd,
    ZAdd,
}

/// One write command. `seq` is unique per client over the whole test, so
/// every field, element and member written is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Cmd {
    kind: Kind,
    key: u64,
    client: u64,
    seq: u64,
}

impl Cmd {
    fn random(client: u64, seq: u64, rng: &mut StdRng) -> Cmd {
        let kind = match rng.gen_range(0..20) {
            0..=4 => Kind::Incr,
            5..=7 => Kind::Set,
            8..=10 => Kind::HSet,
            11..=13 => Kind::LPush,
            14..=16 => Kind::SAdd,
            _ => Kind::ZAdd,
        };
        let key = rng.gen_range(0..if kind == Kind::Incr { COUNTERS } else { KEYS });
        Cmd { kind, key, client, seq }
    }

    /// The Redis key it writes.
    fn redis_key(&self) -> String {
        let k = self.key;
        match self.kind {
            Kind::Incr => format!("ctr:{k}"),
            // Each client its own string keys: the last acknowledged SET of
            // a key is then the one the key must hold (or a later one).
            Kind::Set => format!("str:{k:03}:{}", self.client),
            Kind::HSet => format!("hash:{k:03}"),
            Kind::LPush => format!("list:{k:03}"),
            Kind::SAdd => format!("set:{k:03}"),
            Kind::ZAdd => format!("zset:{k:03}"),
        }
    }

    /// The field, element or member it adds.
    fn element(&self) -> String {
        format!("e:{}:{}", self.client, self.seq)
    }

    fn string_value(&self) -> String {
        format!("c{}-s{}", self.client, self.seq)
    }

    fn args(&self) -> Vec<Vec<u8>> {
        let key = self.redis_key();
        let seq = self.seq.to_string();
        let e = self.element();
        let w: Vec<&str> = match self.kind {
            Kind::Incr => vec!["INCR", &key],
            Kind::Set => return words(&["SET", &key, &self.string_value()]),
            Kind::HSet => vec!["HSET", &key, &e, &seq],
            Kind::LPush => vec!["LPUSH", &key, &e],
            Kind::SAdd => vec!["SADD", &key, &e],
            Kind::ZAdd => vec!["ZADD", &key, &seq, &e],
        };
        words(&w)
    }
}

fn words(w: &[&str]) -> Vec<Vec<u8>> {
    w.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// A reply as far as these commands go.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok,
    Int(i64),
    Other(String),
}

fn raw_answer(reply: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(reply);
    if text == "+OK\r\n" {
        return Answer::Ok;
    }
    match text.strip_prefix(':').and_then(|t| t.strip_suffix("\r\n")).map(str::parse) {
        Some(Ok(n)) => Answer::Int(n),
        _ => Answer::Other(text.into_owned()),
    }
}

fn crate_answer(v: &redis::Value) -> Answer {
    match v {
        redis::Value::Okay => Answer::Ok,
        redis::Value::SimpleString(s) if s == "OK" => Answer::Ok,
        redis::Value::Int(n) => Answer::Int(*n),
        other => Answer::Other(format!("{other:?}")),
    }
}

/// What was sent and what was acknowledged, over all rounds.
#[derive(Default)]
struct Ledger {
    incr_sent: BTreeMap<u64, u64>,
    /// Every acknowledged INCR reply, per counter.
    incr_acked: BTreeMap<u64, Vec<i64>>,
    /// Seqs of the SETs sent, per `(key, client)`.
    set_sent: BTreeMap<(u64, u64), BTreeSet<u64>>,
    /// The highest acknowledged SET seq, per `(key, client)`.
    set_acked: BTreeMap<(u64, u64), u64>,
    /// Acknowledged HSET, LPUSH, SADD and ZADD commands.
    added: Vec<Cmd>,
}

impl Ledger {
    fn sent(&mut self, cmds: &[Cmd]) {
        for c in cmds {
            match c.kind {
                Kind::Incr => *self.incr_sent.entry(c.key).or_default() += 1,
                Kind::Set => {
                    self.set_sent.entry((c.key, c.client)).or_default().insert(c.seq);
                }
                _ => {}
            }
        }
    }

    /// Records an acknowledged reply; panics on a reply no such command
    /// gets.
    fn acked(&mut self, c: Cmd, answer: Answer) {
        match (c.kind, answer) {
            (Kind::Incr, Answer::Int(n)) => self.incr_acked.entry(c.key).or_default().push(n),
            (Kind::Set, Answer::Ok) => {
                let last = self.set_acked.entry((c.key, c.client)).or_default();
                *last = (*last).max(c.seq);
            }
            // A new field or member each time: one added.
            (Kind::HSet | Kind::SAdd | Kind::ZAdd, Answer::Int(1)) => self.added.push(c),
            (Kind::LPush, Answer::Int(n)) if n >= 1 => self.added.push(c),
            (_, answer) => panic!("{c:?} answered {answer:?}"),
        }
    }
}

/// A client on a raw socket until the node dies: 16 commands per flush,
/// each reply recorded as it arrives.
fn raw_client(addr: SocketAddr, client: u64, mut seq: u64, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let Ok(stream) = TcpStream::connect(addr) else {
        return; // killed before this client connected
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut c = RawResp { reader, writer: stream };
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let cmds: Vec<Cmd> = (0..PIPELINE)
            .map(|_| {
                seq += 1;
                Cmd::random(client, seq, &mut rng)
            })
            .collect();
        ledger.lock().expect("lock").sent(&cmds);
        let mut wire = Vec::new();
        for cmd in &cmds {
            let args = cmd.args();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            wire.extend(RawResp::encode(&args));
        }
        if c.writer.write_all(&wire).is_err() {
            return;
        }
        for cmd in &cmds {
            let Some(reply) = c.reply() else { return };
            ledger.lock().expect("lock").acked(*cmd, raw_answer(&reply));
        }
    }
}

/// A `redis` crate client until the node dies: pipelines of 16 commands,
/// acknowledged together when the whole pipeline is answered.
async fn crate_client(
    addr: SocketAddr,
    client: u64,
    mut seq: u64,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
) {
    let redis_client = redis::Client::open(format!("redis://{addr}/0")).expect("url");
    // The default response timeout (500 ms) could end a client early when
    // fsyncs are slow; the kill ends it anyway.
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(10)));
    let Ok(mut con) = redis_client.get_multiplexed_async_connection_with_config(&config).await
    else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let cmds: Vec<Cmd> = (0..PIPELINE)
            .map(|_| {
                seq += 1;
                Cmd::random(client, seq, &mut rng)
            })
            .collect();
        ledger.lock().expect("lock").sent(&cmds);
        let mut pipe = redis::pipe();
        for cmd in &cmds {
            let mut c = redis::Cmd::new();
            for a in cmd.args() {
                c.arg(a);
            }
            pipe.add_command(c);
        }
        let replies = match pipe.query_async::<Vec<redis::Value>>(&mut con).await {
            Ok(replies) => replies,
            // An error reply is a bug; the kill shows as a lost connection.
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
                panic!("client {client}: a pipeline failed: {e}")
            }
            Err(_) => return,
        };
        assert_eq!(replies.len(), cmds.len(), "one reply per command");
        let mut ledger = ledger.lock().expect("lock");
        for (cmd, reply) in cmds.iter().zip(&replies) {
            ledger.acked(*cmd, crate_answer(reply));
        }
    }
}

/// The client of the probe writes.
const PROBE_CLIENT: u64 = 1000;

/// One more SET just before the kill, which must be acknowledged (it is
/// checked like the others after the restart): the node still commits
/// under the load, so a commit that stalls fails the test instead of
/// passing unseen behind the kill.
fn probe_write(addr: SocketAddr, round: u64, ledger: &Mutex<Ledger>) {
    let cmd = Cmd { kind: Kind::Set, key: round, client: PROBE_CLIENT, seq: round };
    ledger.lock().expect("lock").sent(&[cmd]);
    let mut c = RawResp::connect(addr, 30);
    let args = cmd.args();
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    c.send(&args);
    let reply = c.reply().expect("a SET under the load was not answered within 30 s");
    ledger.lock().expect("lock").acked(cmd, raw_answer(&reply));
}

/// Sends commands in pipelines of 256 and returns their replies.
fn call_all(c: &mut RawResp, cmds: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(cmds.len());
    for group in cmds.chunks(256) {
        let mut wire = Vec::new();
        for cmd in group {
            let args: Vec<&[u8]> = cmd.iter().map(Vec::as_slice).collect();
            wire.extend(RawResp::encode(&args));
        }
        c.send_raw(&wire);
        for _ in group {
            out.push(c.reply().expect("a reply from the restarted node"));
        }
    }
    out
}

/// A bulk string reply's text (None: nil).
fn bulk(reply: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    if text == "$-1\r\n" {
        return None;
    }
    let body = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")).map(|(_, b)| b);
    let body = body.and_then(|b| b.strip_suffix("\r\n"));
    Some(body.unwrap_or_else(|| panic!("not a bulk string: {text:?}")).to_owned())
}

/// Checks, on the restarted node, everything the ledger says was
/// acknowledged.
fn check(addr: SocketAddr, ledger: &Ledger, round: usize) {
    let mut c = RawResp::connect(addr, 60);
    // Counters: at least the highest acknowledged reply, at most the INCRs
    // sent; no reply was given twice (INCR is atomic among clients, and an
    // acknowledged INCR is never lost, so its value is never handed out
    // again after a restart).
    let counters: Vec<u64> = ledger.incr_sent.keys().copied().collect();
    let cmds: Vec<_> = counters.iter().map(|k| words(&["GET", &format!("ctr:{k}")])).collect();
    for (k, reply) in counters.iter().zip(call_all(&mut c, &cmds)) {
        let value: i64 = bulk(&reply).map_or(0, |v| v.parse().expect("a counter"));
        let acked = ledger.incr_acked.get(k).map(Vec::as_slice).unwrap_or_default();
        let highest = acked.iter().copied().max().unwrap_or(0);
        let sent = ledger.incr_sent[k] as i64;
        assert!(
            highest <= value && value <= sent,
            "round {round}: ctr:{k} is {value}; acknowledged up to {highest}, {sent} sent"
        );
        let distinct: BTreeSet<i64> = acked.iter().copied().collect();
        assert_eq!(distinct.len(), acked.len(), "round {round}: ctr:{k} gave a reply twice");
    }
    // Strings: the last acknowledged SET of the key, or a later one sent.
    let keys: Vec<(u64, u64)> = ledger.set_acked.keys().copied().collect();
    let cmds: Vec<_> = keys
        .iter()
        .map(|&(key, client)| {
            let cmd = Cmd { kind: Kind::Set, key, client, seq: 0 };
            words(&["GET", &cmd.redis_key()])
        })
        .collect();
    for (&(key, client), reply) in keys.iter().zip(call_all(&mut c, &cmds)) {
        let acked = ledger.set_acked[&(key, client)];
        let value = bulk(&reply);
        let seq = value
            .as_deref()
            .and_then(|v| v.strip_prefix(&format!("c{client}-s")))
            .and_then(|s| s.parse::<u64>().ok());
        let ok = seq.is_some_and(|s| s >= acked && ledger.set_sent[&(key, client)].contains(&s));
        assert!(
            ok,
            "round {round}: str:{key:03}:{client} is {value:?}; SET c{client}-s{acked} was acknowledged"
        );
    }
    // Hash fields, set and sorted set members: each one read.
    let singles: Vec<&Cmd> = ledger.added.iter().filter(|c| c.kind != Kind::LPush).collect();
    let cmds: Vec<_> = singles
        .iter()
        .map(|cmd| {
            let (key, e) = (cmd.redis_key(), cmd.element());
            match cmd.kind {
                Kind::HSet => words(&["HGET", &key, &e]),
                Kind::SAdd => words(&["SISMEMBER", &key, &e]),
                Kind::ZAdd => words(&["ZSCORE", &key, &e]),
                _ => unreachable!(),
            }
        })
        .collect();
    for (cmd, reply) in singles.iter().zip(call_all(&mut c, &cmds)) {
        let ok = match cmd.kind {
            Kind::SAdd => reply == b":1\r\n",
            _ => bulk(&reply) == Some(cmd.seq.to_string()),
        };
        assert!(
            ok,
            "round {round}: acknowledged {cmd:?} ({:?}) reads back as {:?}",
            cmd.args().iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
            String::from_utf8_lossy(&reply)
        );
    }
    // Lists: each whole list read once; every acknowledged element is in
    // it, and one client's elements are in the reverse order of its pushes.
    let mut pushed: BTreeMap<u64, Vec<&Cmd>> = BTreeMap::new();
    for cmd in ledger.added.iter().filter(|c| c.kind == Kind::LPush) {
        pushed.entry(cmd.key).or_default().push(cmd);
    }
    let lists: Vec<u64> = pushed.keys().copied().collect();
    let cmds: Vec<_> =
        lists.iter().map(|k| words(&["LRANGE", &format!("list:{k:03}"), "0", "-1"])).collect();
    for (k, reply) in lists.iter().zip(call_all(&mut c, &cmds)) {
        let elements = list_items(&reply);
        let present: BTreeSet<&str> = elements.iter().map(String::as_str).collect();
        for cmd in &pushed[k] {
            assert!(
                present.contains(cmd.element().as_str()),
                "round {round}: acknowledged {cmd:?} is not in list:{k:03} ({} elements)",
                elements.len()
            );
        }
        let mut last_seq: BTreeMap<u64, u64> = BTreeMap::new();
        for e in &elements {
            let (client, seq) = e
                .strip_prefix("e:")
                .and_then(|e| e.split_once(':'))
                .and_then(|(c, s)| Some((c.parse::<u64>().ok()?, s.parse::<u64>().ok()?)))
                .unwrap_or_else(|| panic!("list:{k:03} holds {e:?}"));
            if let Some(&prev) = last_seq.get(&client) {
                assert!(seq < prev, "round {round}: list:{k:03} is out of push order at {e}");
            }
            last_seq.insert(client, seq);
        }
    }
}

/// The items of an array reply of bulk strings.
fn list_items(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply);
    let mut lines = text.split("\r\n");
    let head = lines.next().expect("a reply");
    let n: usize = head
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an array: {text:?}"));
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let _len = lines.next().expect("a bulk header");
        items.push(lines.next().expect("a bulk body").to_owned());
    }
    items
}

/// Row keys where `redis.0` is split before the load: between counters,
/// between string keys, and inside each collection's key and element rows.
fn split_points() -> Vec<Vec<u8>> {
    let row = |tag: &str, key: String| {
        tuple::encode(&[Element::String(tag.into()), Element::Bytes(key.into_bytes())])
            .expect("a row key")
    };
    let mut points = Vec::new();
    for k in 1..COUNTERS {
        points.push(row("k", format!("ctr:{k}")));
    }
    for i in (0..KEYS).step_by(16) {
        for name in ["hash", "list", "set", "str", "zset"] {
            points.push(row("k", format!("{name}:{i:03}")));
        }
    }
    for i in (0..KEYS).step_by(32) {
        for (tag, name) in
            [("h", "hash"), ("l", "list"), ("s", "set"), ("z", "zset"), ("Z", "zset")]
        {
            points.push(row(tag, format!("{name}:{i:03}")));
        }
    }
    points
}

fn seed() -> u64 {
    match std::env::var("RESP_CRASH_SEED") {
        Ok(s) => s.parse().expect("RESP_CRASH_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}

async fn chunk_count(addr: SocketAddr) -> usize {
    let c = Client::connect(addr).await.expect("connect");
    let info = c.describe_range("redis.0").await.expect("describe");
    for chunk in &info.chunks {
        assert_eq!(chunk.unavailable, None, "chunk {} is unavailable", chunk.id);
    }
    info.chunks.len()
}

#[test]
fn acknowledged_resp_writes_over_many_chunks_survive_sigkill() {
    let seed = seed();
    eprintln!("seed {seed} (RESP_CRASH_SEED={seed} replays its choices; timing still varies)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), MODES[0]);
    let rt = runtime();
    // `redis.0` is created here, before any Redis write, so that its chunks
    // are small; then split so the keys are spread over many chunks.
    let chunks_before = rt.block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("redis.0", RangeOptions { chunk_size_max_bytes: CHUNK_SIZE_MAX_BYTES })
            .await
            .expect("create redis.0");
        for point in split_points() {
            c.split_chunk("redis.0", point).await.expect("split");
        }
        chunk_count(node.addr).await
    });
    assert!(chunks_before >= 16, "{chunks_before} chunks before the load");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut chunks_after = chunks_before;
    // Every process's log lines.
    let mut node_log = Vec::new();
    for round in 0..ROUNDS {
        let run_ms = rng.gen_range(50..1500);
        let round_seed: u64 = rng.gen();
        let first_seq = round as u64 * 1_000_000_000;
        let addr = node.resp_addr;
        let raw: Vec<_> = (0..RAW_CLIENTS)
            .map(|client| {
                let ledger = ledger.clone();
                let seed = round_seed ^ client;
                std::thread::spawn(move || raw_client(addr, client, first_seq, seed, ledger))
            })
            .collect();
        rt.block_on(async {
            let tasks: Vec<_> = (RAW_CLIENTS..RAW_CLIENTS + CRATE_CLIENTS)
                .map(|client| {
                    let task =
                        crate_client(addr, client, first_seq, round_seed ^ client, ledger.clone());
                    tokio::spawn(task)
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            let ledger = ledger.clone();
            tokio::task::spawn_blocking(move || probe_write(addr, round as u64, &ledger))
                .await
                .expect("the probe write panicked");
            node.kill();
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("a client went on after the kill")
                    .expect("a client panicked");
            }
        });
        for t in raw {
            t.join().expect("a client panicked");
        }
        // The next round's mode, on the same data directory.
        node_log.extend(node.log());
        drop(node);
        node = Node::start_with(dir.path(), MODES[(round + 1) % MODES.len()]);
        let ledger = ledger.lock().expect("lock");
        check(node.resp_addr, &ledger, round);
        let chunks = rt.block_on(chunk_count(node.addr));
        assert!(chunks >= chunks_after, "round {round}: chunks merged? {chunks_after} -> {chunks}");
        chunks_after = chunks;
    }
    let ledger = ledger.lock().expect("lock");
    let acked_incrs: usize = ledger.incr_acked.values().map(Vec::len).sum();
    eprintln!(
        "{ROUNDS} kills: {acked_incrs} INCRs, {} SET keys and {} HSET/LPUSH/SADD/ZADD acknowledged; \
         {chunks_before} chunks before the load, {chunks_after} after",
        ledger.set_acked.len(),
        ledger.added.len()
    );
    let by_crate = ledger.added.iter().filter(|c| c.client >= RAW_CLIENTS).count();
    eprintln!("{by_crate} of the HSET/LPUSH/SADD/ZADD acknowledged went through the redis crate");
    assert!(acked_incrs > 0 && !ledger.added.is_empty(), "the load made no progress");
    assert!(by_crate > 0 && by_crate < ledger.added.len(), "a kind of client made no progress");
    node_log.extend(node.log());
    let count = |needle: &str| node_log.iter().filter(|l| l.contains(needle)).count();
    eprintln!(
        "the kills cut {} log tails and interrupted {} splits",
        count("truncated a torn write"),
        count("an interrupted split")
    );
    assert_eq!(count("panicked"), 0, "{node_log:#?}");
    assert!(node.stop(), "clean shutdown after the crash rounds");
}
