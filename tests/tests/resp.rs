//! The Redis protocol endpoint against a real `redis-server`: the same
//! command sequences, hand-written and random, sent to both (each started
//! here on a free loopback port), replies compared byte for byte; bad
//! protocol input; and the `redis` crate as a real client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use monotable_tests::Node;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A `redis-server` without persistence on a free port, stopped on drop.
struct Redis {
    addr: SocketAddr,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/test.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { addr, child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RESP connection: sends commands, reads whole replies as bytes.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Raw { reader: BufReader::new(s.try_clone().expect("clone")), writer: s }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("send");
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// One whole reply, as the bytes on the wire (None: connection closed).
    fn reply(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&line[1..line.len() - 2]).ok()?.parse().unwrap_or(0);
        match line[0] {
            b'$' | b'=' | b'!' if n >= 0 => {
                let mut body = vec![0; n as usize + 2];
                self.reader.read_exact(&mut body).ok()?;
                line.extend(body);
            }
            b'*' | b'~' | b'>' | b'%' if n > 0 => {
                let items = if line[0] == b'%' { n * 2 } else { n };
                for _ in 0..items {
                    line.extend(self.reply()?);
                }
            }
            _ => {}
        }
        Some(line)
    }

    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.reply().expect("a reply")
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\\r\\n")
}

/// Sends `args` to both and asserts the replies are the same bytes.
fn same(redis: &mut Raw, mono: &mut Raw, args: &[&[u8]]) {
    let want = redis.call(args);
    let got = mono.call(args);
    let cmd: Vec<String> = args.iter().map(|a| show(a)).collect();
    assert_eq!(show(&got), show(&want), "{cmd:?}");
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

#[test]
fn replies_match_redis_for_hand_written_and_random_commands() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut redis = Raw::connect(redis_server.addr);
    let mut mono = Raw::connect(node.resp_addr);
    let script = [
        "PING",
        "PING hello",
        "ECHO hi",
        "GET nothing",
        "SET a 1",
        "GET a",
        "SET a 2 NX",
        "SET a 2 XX",
        "SET b 2 XX",
        "SET a 3 GET",
        "SET a 4 NX GET",
        "SET a 5 NX XX",
        "SET a 5 EX",
        "SET a 5 EX 0",
        "SET a 5 EX -3",
        "SET a 5 EX ten",
        "SET a 5 PX 100000 EX 10",
        "SET a 5 BOGUS",
        "SET a",
        "GET",
        "GET a b",
        "INCR a",
        "INCR a",
        "INCRBY a 10",
        "INCRBY a ten",
        "DECRBY a 3",
        "DECR a",
        "SET big 9223372036854775807",
        "INCR big",
        "DECRBY big -1",
        "SET neg -9223372036854775808",
        "DECR neg",
        "DECRBY neg -9223372036854775808",
        "SET s hello",
        "INCR s",
        "APPEND s _world",
        "STRLEN s",
        "STRLEN nothing",
        "APPEND fresh x",
        "GETSET s bye",
        "GETDEL s",
        "GETDEL s",
        "SETNX n 1",
        "SETNX n 2",
        "SETEX t 100 v",
        "SETEX t 0 v",
        "PSETEX t notanumber v",
        "TTL n",
        "TTL missing",
        "PTTL missing",
        "PERSIST n",
        "EXPIRE missing 10",
        "MSET k1 v1 k2 v2 k1 v3",
        "MGET k1 k2 k3 a",
        "MSET k1",
        "MSETNX k1 x k9 y",
        "MSETNX k8 x k9 y",
        "EXISTS k1 k2 k1 nope",
        "TYPE k1",
        "TYPE nope",
        "DEL k1 k1 k2 nope",
        "UNLINK k8 k9",
        "EXISTS k1 k8",
        "SELECT 1",
        "GET a",
        "SET a other",
        "SELECT 0",
        "GET a",
        "SELECT 16",
        "SELECT x",
        "SELECT -1",
        "CLIENT SETNAME me",
        "CLIENT GETNAME",
        "CLIENT SETNAME has\nnewline",
        "CLIENT NOPE",
        "NOSUCHCOMMAND a b",
        "nosuchcommand",
        "HELLO 4",
        "HELLO x",
        "get A",
        "Set a mixedcase",
        "gEt a",
    ];
    for line in script {
        let args = words(line);
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        same(&mut redis, &mut mono, &args);
    }
    // Random sequences over a few keys, good and bad arguments alike.
    let mut rng = StdRng::seed_from_u64(7);
    let keys = ["x", "y", "z", "n"];
    let values = ["0", "1", "-5", "abc", "", "9223372036854775806", "3.5", "007"];
    for _ in 0..2000 {
        let k = keys[rng.gen_range(0..keys.len())];
        let k2 = keys[rng.gen_range(0..keys.len())];
        let v = values[rng.gen_range(0..values.len())];
        let cmd: Vec<&str> = match rng.gen_range(0..16) {
            0 => vec!["SET", k, v],
            1 => vec!["GET", k],
            2 => vec!["INCR", k],
            3 => vec!["INCRBY", k, v],
            4 => vec!["DECRBY", k, v],
            5 => vec!["APPEND", k, v],
            6 => vec!["DEL", k, k2],
            7 => vec!["EXISTS", k, k2],
            8 => vec!["MSET", k, v, k2, v],
            9 => vec!["MGET", k, k2],
            10 => vec!["GETSET", k, v],
            11 => vec!["SETNX", k, v],
            12 => vec!["STRLEN", k],
            13 => vec!["TYPE", k],
            14 => vec!["SET", k, v, if rng.gen_bool(0.5) { "NX" } else { "XX" }, "GET"],
            _ => vec!["GETDEL", k],
        };
        let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
        same(&mut redis, &mut mono, &args);
    }
}

#[test]
fn pipelines_inline_commands_and_resp3() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    for addr in [redis_server.addr, node.resp_addr] {
        let mut c = Raw::connect(addr);
        // A pipeline of 100 commands in one write, answered in order.
        let mut batch = Vec::new();
        for i in 0..100 {
            let key = format!("p{i}");
            batch.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n{}\r\n", key.len(), i % 10)
                    .as_bytes(),
            );
        }
        batch.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\np42\r\n");
        c.send_raw(&batch);
        for _ in 0..100 {
            assert_eq!(c.reply().expect("reply"), b"+OK\r\n");
        }
        assert_eq!(c.reply().expect("reply"), b"$1\r\n2\r\n");
        // Inline commands, as telnet users type them.
        c.send_raw(b"PING\r\nset il \"a b\"\r\nget il\r\n");
        assert_eq!(c.reply().expect("reply"), b"+PONG\r\n");
        assert_eq!(c.reply().expect("reply"), b"+OK\r\n");
        assert_eq!(c.reply().expect("reply"), b"$3\r\na b\r\n");
        // RESP3: nulls change shape.
        let hello = c.call(&[b"HELLO", b"3"]);
        assert!(hello.starts_with(b"%7\r\n"), "{}", show(&hello));
        assert_eq!(c.call(&[b"GET", b"missing"]), b"_\r\n");
        assert_eq!(c.call(&[b"HELLO", b"2"]).first(), Some(&b'*'));
        assert_eq!(c.call(&[b"GET", b"missing"]), b"$-1\r\n");
    }
}

#[test]
fn bad_protocol_input_gets_redis_errors_and_harms_no_one() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let cases: [&[u8]; 4] = [
        b"*1\r\n$99999999999\r\n",
        b"*99999999999\r\n",
        b"*1\r\n:5\r\n",
        b"set k \"unbalanced\r\n",
    ];
    for case in cases {
        let mut replies = Vec::new();
        for addr in [redis_server.addr, node.resp_addr] {
            let mut c = Raw::connect(addr);
            c.send_raw(case);
            let reply = c.reply().expect("an error reply");
            // Then the server closes the connection.
            assert_eq!(c.reply(), None, "{} left the connection open", show(case));
            replies.push(reply);
        }
        assert_eq!(show(&replies[1]), show(&replies[0]), "{}", show(case));
    }
    // A client that drops mid-command leaves the others unaffected.
    let mut half = Raw::connect(node.resp_addr);
    half.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly part");
    drop(half);
    let mut other = Raw::connect(node.resp_addr);
    assert_eq!(other.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(other.call(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}
