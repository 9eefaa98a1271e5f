//! The server and connection commands against a real `redis-server` 7.0:
//! CONFIG, CLIENT, INFO, OBJECT, MEMORY and HELLO. Errors and fixed texts
//! are compared byte for byte (RESP2 and RESP3); replies whose values must
//! differ (pids, addresses, memory, times) by their shape: INFO's sections
//! and field names and the kind of each value, CLIENT LIST's fields.
//! Then, on Monotable alone (with Redis as the oracle where it can be):
//! CLIENT KILL closes an idle, a blocked and a subscribed client at once,
//! CLIENT PAUSE WRITE holds a writer while reads go on, and CONFIG SET
//! timeout closes idle connections.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};

/// A reply's text: a bulk or verbatim string's body.
fn body(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply).into_owned();
    let (_, rest) = text.split_once("\r\n").expect("a header");
    let rest = rest.strip_suffix("\r\n").unwrap_or(rest);
    rest.strip_prefix("txt:").unwrap_or(rest).to_owned()
}

/// INFO's text as (section, [(field, value)]).
fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.split("\r\n") {
        if let Some(header) = line.strip_prefix("# ") {
            out.push((header.to_owned(), Vec::new()));
        } else if let Some((k, v)) = line.split_once(':') {
            out.last_mut().expect("a section first").1.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// What kind of value a field holds: an integer, a decimal, or text.
fn kind(value: &str) -> &'static str {
    if value.parse::<i64>().is_ok() {
        "int"
    } else if value.contains('.') && value.parse::<f64>().is_ok() {
        "float"
    } else {
        "text"
    }
}

fn info(c: &mut RawResp, args: &str) -> Vec<(String, Vec<(String, String)>)> {
    let line = if args.is_empty() { "INFO".to_owned() } else { format!("INFO {args}") };
    sections(&body(&c.call_str(&line)))
}

fn headers(c: &mut RawResp, args: &str) -> Vec<String> {
    info(c, args).into_iter().map(|(h, _)| h).collect()
}

/// CLIENT LIST / INFO line as (field, value) pairs in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn field<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    &pairs.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no {key}")).1
}

/// Whether the server closed `c`: its socket reads end of file (or a
/// reset) within `secs`.
fn closed_within(c: &mut RawResp, secs: u64) -> bool {
    let stream = c.reader.get_mut();
    stream.set_read_timeout(Some(Duration::from_secs(secs))).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The same lines on both servers, every reply byte for byte.
fn same_replies(redis: &mut RawResp, mono: &mut RawResp, lines: &[&str]) {
    for line in lines {
        monotable_tests::assert_same_line(redis, mono, line);
    }
}

#[test]
fn server_commands_answer_as_redis() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 10);
    let mut mono = RawResp::connect(node.resp_addr, 10);

    // Phase 1: errors and fixed texts, byte for byte, RESP2 then RESP3.
    let lines = [
        "CONFIG SET foo bar",
        "CONFIG SET timeout abc",
        "CONFIG SET timeout -1",
        "CONFIG SET timeout 0 timeout 1",
        "CONFIG SET daemonize yes",
        "CONFIG SET databases 3",
        "CONFIG SET maxmemory 10x",
        "CONFIG SET maxmemory-policy bad",
        "CONFIG SET appendonly maybe",
        "CONFIG SET save 3600",
        "CONFIG SET timeout 1 maxmemory",
        "CONFIG SET timeout 5 nosuch 1",
        "CONFIG SET timeout",
        "CONFIG GET",
        "CONFIG GET nosuch",
        "CONFIG GET timeout",
        "CONFIG GET databases",
        "CONFIG GET hash-max-ziplist-entries",
        // Exact names answer as sent; hz is taken into 1..500.
        "CONFIG GET HZ",
        "CONFIG GET Timeout",
        "CONFIG GET HASH-max-ziplist-entries",
        "CONFIG SET hz 0",
        "CONFIG GET hz",
        "CONFIG SET hz 100000",
        "CONFIG GET hz",
        "CONFIG SET HZ 10",
        // Cluster plumbing of a Redis without cluster support.
        "READONLY",
        "READWRITE",
        "ASKING",
        "READONLY x",
        "RESTORE-ASKING k 0 nonsense",
        "COMMAND INFO readonly readwrite asking restore-asking",
        "CONFIG SET timeout 0 maxmemory 1gb",
        "CONFIG GET maxmemory",
        "CONFIG SET maxmemory 0",
        "CONFIG SET client-query-buffer-limit 1",
        "CONFIG SET client-query-buffer-limit invalid",
        "CONFIG SET client-query-buffer-limit 2mb",
        "CONFIG GET client-query-buffer-limit",
        "CONFIG SET repl-backlog-size 0",
        "CONFIG SET repl-backlog-size 10000002 maxmemory 10000001",
        "CONFIG GET repl-backlog-size",
        "CONFIG GET maxmemory",
        "CONFIG SET maxmemory 10000001 maxmemory-clients 200% client-query-buffer-limit invalid",
        "CONFIG SET maxmemory 0 repl-backlog-size 1mb client-query-buffer-limit 1gb",
        "CONFIG GET hll-sparse-max-bytes",
        "CONFIG REWRITE",
        "CONFIG FOO",
        "CONFIG HELP",
        "CONFIG HELP x",
        "CLIENT KILL 1.2.3.4:5",
        "CLIENT KILL id abc",
        "CLIENT KILL id 0",
        "CLIENT KILL id 99999",
        "CLIENT KILL type foo",
        "CLIENT KILL user nosuch",
        "CLIENT KILL skipme maybe",
        "CLIENT KILL addr 1.2.3.4:5 skipme",
        "CLIENT KILL foo bar",
        "CLIENT KILL",
        "CLIENT LIST type foo",
        "CLIENT LIST type master",
        "CLIENT LIST id abc",
        "CLIENT LIST id 1 x",
        "CLIENT LIST id 999999",
        "CLIENT LIST foo",
        "CLIENT PAUSE abc",
        "CLIENT PAUSE -1",
        "CLIENT PAUSE 10 foo",
        "CLIENT UNPAUSE",
        "CLIENT REPLY foo",
        "CLIENT NO-EVICT maybe",
        "CLIENT NO-EVICT on",
        "CLIENT NO-EVICT off",
        "CLIENT NO-TOUCH on",
        "CLIENT SETNAME",
        "OBJECT ENCODING nokey",
        "OBJECT REFCOUNT nokey",
        "OBJECT FOO",
        "OBJECT FREQ nokey",
        "OBJECT HELP",
        "OBJECT ENCODING",
        "MEMORY HELP",
        "MEMORY USAGE nokey",
        "MEMORY USAGE nokey SAMPLES x",
        "MEMORY USAGE nokey SAMPLES -1",
        "MEMORY USAGE nokey foo",
        "MEMORY FOO",
        "MEMORY PURGE",
        "INFO nosuch",
    ];
    for proto in ["2", "3"] {
        for c in [&mut redis, &mut mono] {
            c.call_str(&format!("HELLO {proto}"));
        }
        same_replies(&mut redis, &mut mono, &lines);
    }
    // HELLO names the release whose behaviour is implemented.
    let want = show(&redis.call_str("HELLO 3"));
    let got = show(&mono.call_str("HELLO 3"));
    assert!(want.contains("$7\\r\\nversion\\r\\n$6\\r\\n7.0.15"), "{want}");
    assert!(got.contains("$7\\r\\nversion\\r\\n$6\\r\\n7.0.15"), "{got}");
    for c in [&mut redis, &mut mono] {
        c.call_str("HELLO 2");
    }

    // Phase 2: OBJECT ENCODING and REFCOUNT of the same contents.
    let long = "x".repeat(65);
    let many: Vec<String> = (0..513).map(|i| i.to_string()).collect();
    let mut setup: Vec<String> = vec![
        "SET int 12".into(),
        "SET shared 9999".into(),
        "SET unshared 10000".into(),
        "SET neg -5".into(),
        "SET padded 01".into(),
        "SET huge 12345678901234567890".into(),
        format!("SET e44 {}", "e".repeat(44)),
        format!("SET e45 {}", "e".repeat(45)),
        "HSET hsmall f v".into(),
        format!("HSET hlongvalue f {long}"),
        format!("HSET hlongfield {long} v"),
        "SADD sints 1 2 -3".into(),
        "SADD smixed 1 a".into(),
        "ZADD zsmall 1 a 2 b".into(),
        format!("ZADD zlong 1 {long}"),
        "RPUSH list a b c".into(),
    ];
    setup.push(format!("SADD sbig {}", many.join(" ")));
    setup.push(format!("SADD sfull {}", many[..512].join(" ")));
    let pairs: Vec<String> = many.iter().map(|m| format!("f{m} v")).collect();
    setup.push(format!("HSET hbig {}", pairs.join(" ")));
    setup.push(format!("HSET hfull {}", pairs[..512].join(" ")));
    let scored: Vec<String> = many[..129].iter().map(|m| format!("1 m{m}")).collect();
    setup.push(format!("ZADD zbig {}", scored.join(" ")));
    setup.push(format!("ZADD zfull {}", scored[..128].join(" ")));
    for line in &setup {
        same_replies(&mut redis, &mut mono, &[line]);
    }
    let keys = [
        "int",
        "shared",
        "unshared",
        "neg",
        "padded",
        "huge",
        "e44",
        "e45",
        "hsmall",
        "hlongvalue",
        "hlongfield",
        "sints",
        "smixed",
        "zsmall",
        "zlong",
        "list",
        "sbig",
        "sfull",
        "hbig",
        "hfull",
        "zbig",
        "zfull",
    ];
    for key in keys {
        let lines = [format!("OBJECT ENCODING {key}"), format!("OBJECT REFCOUNT {key}")];
        same_replies(&mut redis, &mut mono, &[&lines[0], &lines[1]]);
    }
    // The thresholds CONFIG holds decide, for what is written after.
    same_replies(
        &mut redis,
        &mut mono,
        &[
            "CONFIG SET hash-max-listpack-entries 1 set-max-intset-entries 2",
            "HSET htwo a 1 b 2",
            "OBJECT ENCODING htwo",
            "SADD sthree 1 2 3",
            "OBJECT ENCODING sthree",
            "CONFIG SET zset-max-ziplist-value 0",
            "ZADD znew 1 a",
            "OBJECT ENCODING znew",
            "CONFIG GET zset-max-listpack-value",
            "CONFIG SET hash-max-listpack-entries 512 set-max-intset-entries 512",
            "CONFIG SET zset-max-listpack-value 64",
        ],
    );
    // MEMORY USAGE is an estimate of Monotable's own: a positive integer
    // for every key, as Redis's is.
    for key in keys {
        let got = show(&mono.call_str(&format!("MEMORY USAGE {key} SAMPLES 0")));
        let n: i64 = got.trim_start_matches(':').trim_end_matches("\\r\\n").parse().expect(&got);
        assert!(n > key.len() as i64, "{key}: {n}");
    }

    // Phase 3: INFO's sections for each way of asking, and every field
    // Redis gives (Monotable adds only `monotable_*` ones), of the same
    // kind of value.
    for args in [
        "",
        "default",
        "all",
        "everything",
        "server clients",
        "KEYSPACE Server",
        "cpu",
        "commandstats",
        "errorstats",
        "nosuch cpu",
    ] {
        assert_eq!(headers(&mut mono, args), headers(&mut redis, args), "INFO {args}");
    }
    let want = info(&mut redis, "everything");
    let got = info(&mut mono, "everything");
    for ((wh, wf), (gh, gf)) in want.iter().zip(&got) {
        assert_eq!(gh, wh);
        if ["Commandstats", "Errorstats", "Keyspace", "Latencystats"].contains(&wh.as_str()) {
            continue;
        }
        let want_fields: BTreeMap<&str, &str> =
            wf.iter().map(|(k, v)| (k.as_str(), kind(v))).collect();
        let got_fields: BTreeMap<&str, &str> = gf
            .iter()
            .filter(|(k, _)| !k.starts_with("monotable_"))
            .map(|(k, v)| (k.as_str(), kind(v)))
            .collect();
        assert_eq!(got_fields, want_fields, "# {wh}");
    }
    let server = &got[0].1;
    let pairs: Vec<(String, String)> = server.to_vec();
    assert_eq!(field(&pairs, "redis_version"), "7.0.15");
    assert_eq!(field(&pairs, "process_id"), node.pid().expect("running").to_string());
    assert_eq!(field(&pairs, "tcp_port"), node.resp_addr.port().to_string());
    let memory = &got[2].1;
    let rss: u64 = field(memory, "used_memory_rss").parse().expect("a number");
    assert!(rss > 1 << 20, "{rss}");

    // Phase 4: keyspace, commandstats and errorstats after the same
    // commands.
    for c in [&mut redis, &mut mono] {
        c.call_str("FLUSHALL");
        c.call_str("SELECT 2");
        c.call_str("SET a 1");
        c.call_str("SET b 2");
        c.call_str("SELECT 0");
        c.call_str("SET c 3");
        c.call_str("SET d 4 EX 1000");
    }
    let keyspace = |c: &mut RawResp| -> Vec<String> {
        let lines = &info(c, "keyspace")[0].1;
        // avg_ttl is an estimate in Redis: compared apart.
        lines
            .iter()
            .map(|(k, v)| format!("{k}:{}", v.split(",avg_ttl").next().unwrap_or(v)))
            .collect()
    };
    assert_eq!(keyspace(&mut mono), keyspace(&mut redis));
    assert_eq!(keyspace(&mut mono), ["db0:keys=2,expires=1", "db2:keys=2,expires=0"]);
    let stats_lines = [
        "CONFIG RESETSTAT",
        "SET k v",
        "GET k",
        "GET k x",
        "LPUSH k x",
        "NOSUCHCMD",
        "OBJECT ENCODING k",
        "CLIENT ID",
        // Errors of the commands EXEC runs count as theirs.
        "MULTI",
        "INCR k",
        "LPUSH k y",
        "EXEC",
    ];
    let stats = |c: &mut RawResp| -> (Vec<String>, Vec<String>) {
        for line in stats_lines {
            c.call_str(line);
        }
        let commands = &info(c, "commandstats")[0].1;
        let mut commands: Vec<String> = commands
            .iter()
            .map(|(k, v)| {
                let v: Vec<&str> = v
                    .split(',')
                    .filter(|f| f.starts_with("calls=") || f.contains("_calls="))
                    .collect();
                format!("{k}:{}", v.join(","))
            })
            .collect();
        commands.sort();
        let errors = info(c, "errorstats")[0].1.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        (commands, errors)
    };
    let (want_commands, want_errors) = stats(&mut redis);
    let (got_commands, got_errors) = stats(&mut mono);
    assert_eq!(got_commands, want_commands);
    assert_eq!(got_errors, want_errors);
    let total = |c: &mut RawResp| -> u64 {
        let s = info(c, "stats");
        field(&s[0].1, "total_commands_processed").parse().expect("a number")
    };
    let before = total(&mut mono);
    mono.call_str("PING");
    assert_eq!(total(&mut mono), before + 2, "the INFO and the PING");

    // Phase 5: CLIENT LIST and CLIENT INFO: Redis's fields in its order;
    // the values a client can know the same.
    let mut named = [RawResp::connect(redis_server.addr, 10), RawResp::connect(node.resp_addr, 10)];
    let mut subscriber =
        [RawResp::connect(redis_server.addr, 10), RawResp::connect(node.resp_addr, 10)];
    let mut in_multi =
        [RawResp::connect(redis_server.addr, 10), RawResp::connect(node.resp_addr, 10)];
    let mut seen = Vec::new();
    for (i, c) in [&mut redis, &mut mono].into_iter().enumerate() {
        assert_eq!(named[i].call_str("CLIENT SETNAME worker"), b"+OK\r\n");
        named[i].call_str("SELECT 3");
        subscriber[i].call_str("SUBSCRIBE ch");
        in_multi[i].call_str("MULTI");
        in_multi[i].call_str("SET x 1");
        in_multi[i].call_str("GET x");
        let own = fields(body(&c.call_str("CLIENT INFO")).trim_end());
        let id = field(&own, "id").to_owned();
        let all = body(&c.call_str("CLIENT LIST"));
        let lines: Vec<Vec<(String, String)>> = all.lines().map(fields).collect();
        assert_eq!(lines.len(), 4, "{all}");
        let by_id = |id: &str| lines.iter().find(|l| field(l, "id") == id).expect("listed").clone();
        let named_id = String::from_utf8_lossy(&named[i].call_str("CLIENT ID"))
            .trim_start_matches(':')
            .trim()
            .to_owned();
        let named_line = by_id(&named_id);
        let pubsub = body(&c.call_str("CLIENT LIST TYPE pubsub"));
        let pubsub = fields(pubsub.trim_end());
        let multi_line =
            lines.iter().find(|l| field(l, "flags") == "x").expect("the client in MULTI").clone();
        let keys: Vec<String> = own.iter().map(|(k, _)| k.clone()).collect();
        let pick = |l: &[(String, String)], ks: &[&str]| {
            ks.iter().map(|k| format!("{k}={}", field(l, k))).collect::<Vec<_>>().join(" ")
        };
        seen.push((
            keys,
            pick(
                &by_id(&id),
                &["name", "flags", "db", "sub", "psub", "multi", "cmd", "user", "resp"],
            ),
            pick(&named_line, &["name", "flags", "db", "cmd"]),
            pick(&pubsub, &["flags", "sub", "psub", "cmd"]),
            pick(&multi_line, &["flags", "multi"]),
            field(&own, "laddr") == c.writer.peer_addr().expect("peer").to_string(),
            field(&own, "addr") == c.writer.local_addr().expect("local").to_string(),
        ));
        in_multi[i].call_str("DISCARD");
    }
    assert_eq!(seen[1], seen[0]);
    assert!(seen[1].5 && seen[1].6, "addr and laddr are the socket's ends");
}

/// Starts a BLPOP, a SUBSCRIBE and an idle client on `addr`; kills each
/// by ID from another client; each must be closed at once.
fn kill_each(addr: SocketAddr) -> Vec<String> {
    let mut admin = RawResp::connect(addr, 10);
    let mut out = Vec::new();
    for setup in ["", "BLPOP nothing 0", "SUBSCRIBE ch"] {
        let mut victim = RawResp::connect(addr, 10);
        let id = String::from_utf8_lossy(&victim.call_str("CLIENT ID")).trim().to_owned();
        let id = id.trim_start_matches(':').to_owned();
        if !setup.is_empty() {
            let words: Vec<&[u8]> = setup.split(' ').map(str::as_bytes).collect();
            victim.send(&words);
            std::thread::sleep(Duration::from_millis(300));
        }
        let flags = body(&admin.call_str(&format!("CLIENT LIST ID {id}")));
        let flags = field(&fields(flags.trim_end()), "flags").to_owned();
        let reply = show(&admin.call_str(&format!("CLIENT KILL ID {id}")));
        let started = Instant::now();
        // A subscriber reads its confirmation first.
        let closed = closed_within(&mut victim, 5);
        out.push(format!("{setup:?} flags={flags} kill={reply} closed={closed}"));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Unlisted once its task ends, which may be just after the socket
        // closed.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let listed = body(&admin.call_str(&format!("CLIENT LIST ID {id}")));
            if listed.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "still listed: {listed}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The old form by address, and SKIPME NO on its own address.
    let mut victim = RawResp::connect(addr, 10);
    // Once it answered, the server has it (accepting is asynchronous).
    assert_eq!(victim.call_str("PING"), b"+PONG\r\n");
    let victim_addr = victim.writer.local_addr().expect("local").to_string();
    out.push(show(&admin.call_str(&format!("CLIENT KILL {victim_addr}"))));
    out.push(format!("closed={}", closed_within(&mut victim, 5)));
    let own = admin.writer.local_addr().expect("local").to_string();
    out.push(show(&admin.call_str(&format!("CLIENT KILL ADDR {own}"))));
    out.push(show(&admin.call_str(&format!("CLIENT KILL ADDR {own} SKIPME no"))));
    out.push(format!("self closed={}", closed_within(&mut admin, 5)));
    out
}

#[test]
fn client_kill_closes_idle_blocked_and_subscribed_clients_at_once() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let want = kill_each(redis.addr);
    let got = kill_each(node.resp_addr);
    assert_eq!(got, want);
    assert!(got.iter().take(3).all(|l| l.ends_with("kill=:1\\r\\n closed=true")), "{got:?}");
}

/// Postmortem: CLIENT PAUSE WRITE let EVAL and EVALSHA (and an EXEC of
/// only those) through, writes and all; Redis holds every command that
/// may replicate, scripts among them, but not EVAL_RO or a script that
/// declares `flags=no-writes`.
#[test]
fn client_pause_write_holds_scripts() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut admin = RawResp::connect(node.resp_addr, 10);
    let mut script = RawResp::connect(node.resp_addr, 10);
    let mut tx = RawResp::connect(node.resp_addr, 10);
    let set = b"return redis.call('SET', KEYS[1], 'script')";
    assert_eq!(admin.call_str("SET k before"), b"+OK\r\n");
    let sha = script.call(&[b"SCRIPT", b"LOAD", set]);
    let sha = sha[sha.len() - 42..sha.len() - 2].to_vec();
    assert_eq!(admin.call_str("CLIENT PAUSE 60000 WRITE"), b"+OK\r\n");
    let get = b"return redis.call('GET', KEYS[1])";
    assert_eq!(admin.call(&[b"EVAL_RO", get, b"1", b"k"]), b"$6\r\nbefore\r\n");
    // Neither is a script that declares it writes nothing.
    let no_writes = b"#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])";
    assert_eq!(admin.call(&[b"EVAL", no_writes, b"1", b"k"]), b"$6\r\nbefore\r\n");
    script.send(&[b"EVALSHA", &sha, b"1", b"k"]);
    assert_eq!(tx.call_str("MULTI"), b"+OK\r\n");
    assert_eq!(tx.call(&[b"EVAL", b"return 1", b"0"]), b"+QUEUED\r\n");
    tx.send(&[b"EXEC"]);
    for held in [&mut script, &mut tx] {
        held.reader.get_mut().set_read_timeout(Some(Duration::from_millis(300))).expect("t");
        assert!(held.reply().is_none(), "a script ran during CLIENT PAUSE WRITE");
    }
    assert_eq!(admin.call_str("GET k"), b"$6\r\nbefore\r\n");
    assert_eq!(admin.call_str("CLIENT UNPAUSE"), b"+OK\r\n");
    for held in [&mut script, &mut tx] {
        held.reader.get_mut().set_read_timeout(Some(Duration::from_secs(10))).expect("t");
    }
    assert_eq!(script.reply().expect("the EVALSHA, once unpaused"), b"+OK\r\n");
    assert_eq!(tx.reply().expect("the EXEC, once unpaused"), b"*1\r\n:1\r\n");
    assert_eq!(admin.call_str("GET k"), b"$6\r\nscript\r\n");
}

#[test]
fn client_pause_write_holds_writers_while_reads_go_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut admin = RawResp::connect(node.resp_addr, 10);
    let mut writer = RawResp::connect(node.resp_addr, 10);
    let mut reader = RawResp::connect(node.resp_addr, 10);
    assert_eq!(writer.call_str("SET k before"), b"+OK\r\n");
    assert_eq!(admin.call_str("CLIENT PAUSE 60000 WRITE"), b"+OK\r\n");
    writer.send(&[b"SET", b"k", b"after"]);
    // The write waits; reads of other clients (of the same key) go on.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(reader.call_str("GET k"), b"$6\r\nbefore\r\n");
    }
    writer.reader.get_mut().set_read_timeout(Some(Duration::from_millis(300))).expect("t");
    assert!(writer.reply().is_none(), "a write ran during CLIENT PAUSE WRITE");
    // Postmortem: a paused writer did not count as blocked, as Redis counts
    // it (its suite waits for `blocked_clients` to rise).
    let clients = info(&mut reader, "clients");
    assert_eq!(field(&clients[0].1, "blocked_clients"), "1");
    // A transaction that only reads is not held; one that writes is.
    let mut tx = RawResp::connect(node.resp_addr, 10);
    for line in ["MULTI", "GET k", "PING"] {
        tx.call_str(line);
    }
    assert_eq!(tx.call_str("EXEC"), b"*2\r\n$6\r\nbefore\r\n+PONG\r\n");
    for line in ["MULTI", "SET k tx"] {
        tx.call_str(line);
    }
    tx.send(&[b"EXEC"]);
    assert_eq!(admin.call_str("CLIENT UNPAUSE"), b"+OK\r\n");
    writer.reader.get_mut().set_read_timeout(Some(Duration::from_secs(10))).expect("t");
    assert_eq!(writer.reply().expect("the write, once unpaused"), b"+OK\r\n");
    assert_eq!(tx.reply().expect("the EXEC, once unpaused"), b"*1\r\n+OK\r\n");
    assert_eq!(reader.call_str("SET k after"), b"+OK\r\n");
    assert_eq!(reader.call_str("GET k"), b"$5\r\nafter\r\n");

    // ALL holds reads too, until the pause ends by itself.
    assert_eq!(admin.call_str("CLIENT PAUSE 500 ALL"), b"+OK\r\n");
    let started = Instant::now();
    assert_eq!(reader.call_str("GET k"), b"$5\r\nafter\r\n");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());

    // CLIENT REPLY SKIP: neither its reply nor the next command's; OFF:
    // none until ON, which answers.
    for line in ["CLIENT REPLY SKIP", "PING", "ECHO shown"] {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        writer.send(&words);
    }
    assert_eq!(writer.reply().expect("echo"), b"$5\r\nshown\r\n");
    for line in ["CLIENT REPLY OFF", "PING", "SET k off", "CLIENT REPLY ON"] {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        writer.send(&words);
    }
    assert_eq!(writer.reply().expect("ON answers"), b"+OK\r\n");
    assert_eq!(writer.call_str("GET k"), b"$3\r\noff\r\n");
}

#[test]
fn config_set_timeout_closes_idle_connections() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut admin = RawResp::connect(node.resp_addr, 10);
    let mut idle = RawResp::connect(node.resp_addr, 10);
    let mut subscriber = RawResp::connect(node.resp_addr, 10);
    subscriber.call_str("SUBSCRIBE ch");
    assert_eq!(idle.call_str("PING"), b"+PONG\r\n");
    assert_eq!(admin.call_str("CONFIG SET timeout 1"), b"+OK\r\n");
    assert!(closed_within(&mut idle, 5), "an idle client outlived the timeout");
    // The admin idled as long: closed too. A subscriber is spared, as in
    // Redis.
    assert!(closed_within(&mut admin, 1));
    let mut admin = RawResp::connect(node.resp_addr, 10);
    assert_eq!(admin.call_str("CONFIG SET timeout 0"), b"+OK\r\n");
    assert_eq!(
        subscriber.call_str("PING"),
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n".to_vec(),
        "the subscriber is still there"
    );
}

/// Postmortem: CLIENT REPLY OFF dropped RESP3 subscribe confirmations,
/// which Redis sends (they are pushes), and a subscriber waited for good.
#[test]
fn client_reply_off_keeps_resp3_pushes() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut seen = Vec::new();
    for addr in [redis.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        let mut publisher = RawResp::connect(addr, 10);
        c.call_str("HELLO 3");
        c.send(&[b"CLIENT", b"REPLY", b"OFF"]);
        c.send(&[b"SUBSCRIBE", b"ch"]);
        let confirmation = show(&c.reply().expect("the push"));
        assert_eq!(publisher.call_str("PUBLISH ch hi"), b":1\r\n");
        let message = show(&c.reply().expect("the message"));
        seen.push((confirmation, message));
    }
    assert_eq!(seen[1], seen[0]);
}

/// Postmortem: commands a client pipelines to a replicated database's
/// leader skip the dispatcher, so CLIENT PAUSE WRITE did not hold them and
/// commandstats did not count them.
#[test]
fn pipelined_writes_on_a_replicated_database_wait_out_a_pause() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let nodes = monotable_tests::cluster::start_cluster(&dirs);
    let addr = nodes[1].resp_addr;
    let mut admin = RawResp::connect(addr, 30);
    // The first write makes database 0 a replicated range.
    assert_eq!(admin.call_str("SET made 1"), b"+OK\r\n");
    assert_eq!(admin.call_str("CONFIG RESETSTAT"), b"+OK\r\n");
    assert_eq!(admin.call_str("CLIENT PAUSE 60000 WRITE"), b"+OK\r\n");
    let mut writer = RawResp::connect(addr, 30);
    let mut pipeline = RawResp::encode(&[b"SET", b"k", b"1"]);
    pipeline.extend(RawResp::encode(&[b"INCR", b"k"]));
    writer.send_raw(&pipeline);
    writer.reader.get_mut().set_read_timeout(Some(Duration::from_millis(500))).expect("t");
    assert!(writer.reply().is_none(), "a pipelined write ran during CLIENT PAUSE WRITE");
    assert_eq!(admin.call_str("GET made"), b"$1\r\n1\r\n", "reads go on");
    assert_eq!(admin.call_str("CLIENT UNPAUSE"), b"+OK\r\n");
    writer.reader.get_mut().set_read_timeout(Some(Duration::from_secs(30))).expect("t");
    assert_eq!(writer.reply().expect("SET"), b"+OK\r\n");
    assert_eq!(writer.reply().expect("INCR"), b":2\r\n");
    let stats = info(&mut admin, "commandstats");
    let calls = |name: &str| {
        let line = field(&stats[0].1, &format!("cmdstat_{name}")).to_owned();
        line.split(',').next().unwrap_or_default().to_owned()
    };
    assert_eq!(calls("set"), "calls=1");
    assert_eq!(calls("incr"), "calls=1");
}

/// The `expired_keys` line of INFO stats.
fn expired_keys(c: &mut RawResp) -> String {
    let info = String::from_utf8_lossy(&c.call(&[b"INFO", b"stats"])).into_owned();
    info.lines().find(|l| l.starts_with("expired_keys:")).unwrap_or("none").to_owned()
}

/// Postmortem: INFO's `expired_keys` stayed 0, and keys expired while
/// CLIENT PAUSE held writes.
#[test]
fn expired_keys_are_counted_as_redis_counts_them() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for addr in [redis_server.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        c.call_str("CONFIG RESETSTAT");
        for k in ["a", "b", "c"] {
            c.call(&[b"SET", k.as_bytes(), b"v", b"PX", b"20"]);
        }
        c.call_str("SET kept v");
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Read past its TTL: removed, counted.
        assert_eq!(show(&c.call_str("GET a")), "$-1\\r\\n");
        // The others go when read or by the expirer, whichever comes first.
        for _ in 0..100 {
            c.call_str("EXISTS b c");
            if expired_keys(&mut c) == "expired_keys:3" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(expired_keys(&mut c), "expired_keys:3", "{addr}");
        // A write pause stops expiry: the key reads as gone but stays
        // (not counted) until the pause ends.
        c.call_str("MULTI");
        c.call_str("SET p v PX 10");
        c.call_str("CLIENT PAUSE 50000 WRITE");
        c.call_str("EXEC");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(show(&c.call_str("GET p")), "$-1\\r\\n");
        assert_eq!(expired_keys(&mut c), "expired_keys:3", "{addr} while paused");
        c.call_str("CLIENT UNPAUSE");
        c.call_str("GET p");
        assert_eq!(expired_keys(&mut c), "expired_keys:4", "{addr} after the pause");
    }
}

/// Postmortem: INFO keyspace summed the TTLs in a u64, so three keys
/// expiring near i64::MAX overflowed it (a panic in a debug build, a
/// wrong `avg_ttl` otherwise); the sum is 128 bits now.
#[test]
fn info_keyspace_survives_the_largest_ttls() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for addr in [redis.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        c.call_str("SELECT 5");
        for k in ["a", "b", "c"] {
            c.call_str(&format!("SET {k} 1"));
            assert_eq!(c.call_str(&format!("PEXPIREAT {k} 9223372036854775807")), b":1\r\n");
        }
        let info = String::from_utf8_lossy(&c.call_str("INFO keyspace")).into_owned();
        let line = info.lines().find(|l| l.starts_with("db5:")).expect("db5").to_owned();
        let avg: u64 = line.rsplit("avg_ttl=").next().and_then(|v| v.parse().ok()).expect("avg");
        assert!(line.starts_with("db5:keys=3,expires=3,"), "{line}");
        // Redis's figure is a sampled estimate (0 until its expire cycle
        // looked); Monotable's is exact.
        if addr == node.resp_addr {
            assert!(avg > 9_000_000_000_000_000_000, "{line}");
        }
        c.call_str("FLUSHDB");
    }
}

/// INFO's `hz` and `configured_hz` follow CONFIG SET hz, as Redis's.
#[test]
fn info_reports_the_configured_hz() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for addr in [redis_server.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        c.call_str("CONFIG SET hz 77");
        let server = info(&mut c, "server");
        let fields = &server[0].1;
        assert_eq!((field(fields, "hz"), field(fields, "configured_hz")), ("77", "77"), "{addr}");
    }
}
