//! SLOWLOG against a real redis-server 7.0 (both started here on free
//! loopback ports): with every command logged (`slowlog-log-slower-than`
//! 0), the same commands leave the same entries (arguments, client name;
//! ids, times and addresses differ) and the subcommands answer the same
//! errors, byte for byte.

use monotable_tests::{assert_same_line, RawResp, Twin};
use redis::Value;

/// The arguments and client name of every entry of `SLOWLOG GET -1`, newest
/// first, but those of INFO (polled until a client blocks, as often as it
/// takes).
fn entries(con: &mut redis::Connection) -> Vec<(Vec<String>, String)> {
    let got: Vec<Value> = redis::cmd("SLOWLOG").arg("GET").arg(-1).query(con).expect("slowlog");
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("not a bulk string: {other:?}"),
    };
    got.iter()
        .map(|e| {
            let Value::Array(fields) = e else { panic!("an entry: {e:?}") };
            assert_eq!(fields.len(), 6, "{fields:?}");
            assert!(matches!(fields[0], Value::Int(_)) && matches!(fields[2], Value::Int(_)));
            let Value::Array(args) = &fields[3] else { panic!("arguments: {fields:?}") };
            (args.iter().map(text).collect::<Vec<_>>(), text(&fields[5]))
        })
        .filter(|(args, _)| args[0] != "INFO")
        .collect()
}

fn run(con: &mut redis::Connection, line: &str) {
    let mut cmd = redis::Cmd::new();
    for w in line.split(' ') {
        cmd.arg(w);
    }
    let _: redis::RedisResult<Value> = cmd.query(con);
}

/// Postmortem: SLOWLOG and its two parameters were missing.
#[test]
fn slowlog_keeps_what_redis_keeps() {
    let twin = Twin::start();
    let (mut r, mut m) = twin.connect(10);
    for line in [
        "SLOWLOG LEN",
        "SLOWLOG GET",
        "SLOWLOG GET -2",
        "SLOWLOG GET x",
        "SLOWLOG GET 1 2",
        "SLOWLOG LEN 1",
        "SLOWLOG FOO",
        "SLOWLOG",
        "SLOWLOG HELP",
        "CONFIG GET slowlog-log-slower-than",
        "CONFIG GET slowlog-max-len",
        "CONFIG SET slowlog-log-slower-than -2",
        "CONFIG SET slowlog-max-len -1",
        "CONFIG SET slowlog-max-len x",
    ] {
        assert_same_line(&mut r, &mut m, line);
    }

    let open = |addr: std::net::SocketAddr| {
        let client = redis::Client::open(format!("redis://{addr}/0")).expect("url");
        client.get_connection().expect("connect")
    };
    let (mut rc, mut mc) = (open(twin.redis.addr), open(twin.node.resp_addr));
    let long = "x".repeat(300);
    let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    let sadd_many = format!("SADD many {}", many.join(" "));
    let script = "EVAL return redis.call('incr','n') 0";
    let lines = [
        "CONFIG SET slowlog-log-slower-than 0",
        "SLOWLOG RESET",
        "CLIENT SETNAME logged",
        "SET k v",
        &format!("SET long {long}"),
        &sadd_many,
        "GET nosuch",
        "AUTH secret",
        "AUTH user secret",
        "HELLO 2 AUTH user secret",
        "CONFIG SET requirepass",
        // The script is logged, not the command it calls.
        script,
        "LPUSH l a",
        "NOSUCHCOMMAND x",
        "GET",
    ];
    for line in lines {
        if line == script {
            let _: redis::RedisResult<Value> =
                redis::cmd("EVAL").arg("return redis.call('incr','n')").arg(0).query(&mut rc);
            let _: redis::RedisResult<Value> =
                redis::cmd("EVAL").arg("return redis.call('incr','n')").arg(0).query(&mut mc);
            continue;
        }
        run(&mut rc, line);
        run(&mut mc, line);
    }
    // MULTI and the commands EXEC runs are logged, EXEC is not.
    for con in [&mut rc, &mut mc] {
        let _: () = redis::pipe().atomic().incr("n", 1).set("t", 1).query(con).expect("exec");
    }
    assert_eq!(entries(&mut mc), entries(&mut rc));

    // A blocked command is logged once it is served, with its own words.
    for (addr, con) in [(twin.redis.addr, &mut rc), (twin.node.resp_addr, &mut mc)] {
        run(con, "SLOWLOG RESET");
        let mut blocked = RawResp::connect(addr, 10);
        blocked.send(&[b"BLPOP", b"q", b"0"]);
        wait_blocked(con);
        run(con, "RPUSH q x");
        assert!(blocked.reply().is_some());
    }
    assert_eq!(entries(&mut mc), entries(&mut rc));

    // A blocked command that times out, or that CLIENT UNBLOCK ends, is
    // not logged, however long it waited.
    // Postmortem: it was logged with its whole wait (a BLPOP's timeout
    // filled the slowlog of every worker loop).
    for (addr, con) in [(twin.redis.addr, &mut rc), (twin.node.resp_addr, &mut mc)] {
        run(con, "CONFIG SET slowlog-log-slower-than 100000");
        run(con, "SLOWLOG RESET");
        let mut blocked = RawResp::connect(addr, 10);
        assert_eq!(blocked.call(&[b"BLPOP", b"q", b"0.3"]), b"*-1\r\n");
        assert_eq!(blocked.call(&[b"BZPOPMIN", b"z", b"0.2"]), b"*-1\r\n");
        let id = blocked.call(&[b"CLIENT", b"ID"]);
        let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
        blocked.send(&[b"BLPOP", b"q", b"0"]);
        wait_blocked(con);
        std::thread::sleep(std::time::Duration::from_millis(200));
        run(con, &format!("CLIENT UNBLOCK {id}"));
        assert!(blocked.reply().is_some());
        let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(con).expect("len");
        assert_eq!(len, 0, "{addr}");
        run(con, "CONFIG SET slowlog-log-slower-than 0");
    }

    // The newest `slowlog-max-len` entries are kept; -1 turns logging off.
    for con in [&mut rc, &mut mc] {
        run(con, "CONFIG SET slowlog-max-len 3");
        for i in 0..10 {
            run(con, &format!("SET k{i} v"));
        }
        run(con, "CONFIG SET slowlog-log-slower-than -1");
        run(con, "SET off v");
    }
    assert_eq!(entries(&mut mc), entries(&mut rc));
    assert_eq!(entries(&mut mc).len(), 3);
    for line in ["SLOWLOG LEN", "SLOWLOG GET 0", "SLOWLOG RESET", "SLOWLOG LEN"] {
        assert_same_line(&mut r, &mut m, line);
    }
}

/// Waits until a client of the server `con` talks to is blocked.
fn wait_blocked(con: &mut redis::Connection) {
    for _ in 0..200 {
        let info: String = redis::cmd("INFO").arg("clients").query(con).expect("info");
        if info.contains("blocked_clients:1") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the BLPOP never blocked");
}
