//! Random writes with hostile arguments — keys and values just over the
//! limits, NUL bytes, extreme integers and offsets — sent to Monotable's
//! Redis endpoint and to a real `redis-server`, with kill -9 and restarts of
//! the node in between, plus native writes checked against a `BTreeMap`.
//!
//! Every reply must equal Redis's, except that Monotable refuses rows over
//! its key and value limits (Redis's own limits are 512 MB): such a command
//! must then change nothing, so it is not sent to Redis. After each restart
//! both databases must hold the same keys with the same contents.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use monotable_client::{Batch, Client, RangeOptions, Scan};
use monotable_proto::limits::{KEY_SIZE_MAX_BYTES, VALUE_SIZE_MAX_BYTES};
use monotable_tests::{runtime, Node, Redis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Commands per round between restarts.
const COMMANDS_PER_ROUND: usize = 120;
const ROUNDS: usize = 4;

fn con(addr: SocketAddr) -> redis::Connection {
    let c = redis::Client::open(format!("redis://{addr}/0").as_str()).expect("url");
    c.get_connection().expect("connect")
}

fn query(c: &mut redis::Connection, args: &[Vec<u8>]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).expect("name"));
    for a in &args[1..] {
        cmd.arg(&a[..]);
    }
    cmd.query(c)
}

/// A reply in a form two servers can be compared by: errors by their first
/// word (the error code) only, since messages may be worded differently.
/// Replies of commands that pick at random (SRANDMEMBER) are compared by
/// their length only.
fn shape(name: &str, r: &redis::RedisResult<redis::Value>) -> String {
    match r {
        Ok(redis::Value::Array(items)) if name == "SRANDMEMBER" => {
            format!("{} random members", items.len())
        }
        Ok(v) => format!("{v:?}"),
        Err(e) => match e.code() {
            Some(code) => format!("error {code}"),
            None => format!("no reply: {e}"),
        },
    }
}

fn over_limits(r: &redis::RedisResult<redis::Value>) -> bool {
    match r {
        Err(e) => {
            let text = e.to_string();
            text.contains("exceeds the limit") || text.contains("maximum allowed size")
        }
        Ok(_) => false,
    }
}

/// Every key with its type and contents (hashes and sets sorted).
fn dump(c: &mut redis::Connection) -> BTreeMap<Vec<u8>, String> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).expect("keys");
    let mut out = BTreeMap::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query(c).expect("type");
        let contents = match kind.as_str() {
            "string" => {
                let v: Vec<u8> = redis::cmd("GET").arg(&k).query(c).expect("get");
                format!("{v:?}")
            }
            "hash" => {
                let mut v: Vec<(Vec<u8>, Vec<u8>)> =
                    redis::cmd("HGETALL").arg(&k).query(c).expect("hgetall");
                v.sort();
                format!("{v:?}")
            }
            "list" => {
                let v: Vec<Vec<u8>> =
                    redis::cmd("LRANGE").arg(&k).arg(0).arg(-1).query(c).expect("lrange");
                format!("{v:?}")
            }
            "set" => {
                let mut v: Vec<Vec<u8>> =
                    redis::cmd("SMEMBERS").arg(&k).query(c).expect("smembers");
                v.sort();
                format!("{v:?}")
            }
            "zset" => {
                let v: Vec<Vec<u8>> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(c)
                    .expect("zrange");
                format!("{v:?}")
            }
            "none" => continue,
            other => panic!("unexpected type {other}"),
        };
        out.insert(k, format!("{kind} {contents}"));
    }
    out
}

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn key(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..20) {
            0 => vec![b'K'; KEY_SIZE_MAX_BYTES + self.rng.gen_range(1..64)],
            1 => b"k\x00nul".to_vec(),
            n => format!("k{}", n % 6).into_bytes(),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..16) {
            0 => vec![b'V'; VALUE_SIZE_MAX_BYTES + self.rng.gen_range(1..64)],
            1 => vec![0; self.rng.gen_range(0..4)],
            2 => Vec::new(),
            _ => format!("v{}", self.rng.gen_range(0..100)).into_bytes(),
        }
    }

    fn int(&mut self) -> Vec<u8> {
        let extremes: [&str; 12] = [
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "0",
            "-0",
            "-1",
            "1",
            "",
            "1e3",
            "abc",
        ];
        if self.rng.gen_bool(0.4) {
            extremes[self.rng.gen_range(0..extremes.len())].as_bytes().to_vec()
        } else {
            self.rng.gen_range(-5i64..20).to_string().into_bytes()
        }
    }

    fn command(&mut self) -> Vec<Vec<u8>> {
        let s = |x: &str| x.as_bytes().to_vec();
        let k = self.key();
        match self.rng.gen_range(0..17) {
            0 => vec![s("SET"), k, self.value()],
            1 => vec![s("APPEND"), k, self.value()],
            2 => vec![s("SETRANGE"), k, self.int(), self.value()],
            3 => vec![s("INCRBY"), k, self.int()],
            4 => vec![s("HSET"), k, self.value(), self.value()],
            5 => vec![s("HINCRBY"), k, s("f"), self.int()],
            6 => vec![s("RPUSH"), k, self.value(), self.value()],
            7 => vec![s("LPUSH"), k, self.value()],
            8 => vec![s("LSET"), k, self.int(), self.value()],
            9 => vec![s("SADD"), k, self.value(), self.value()],
            10 => vec![s("ZADD"), k, self.int(), self.value()],
            11 => vec![s("MSET"), k, self.value(), self.key(), self.value()],
            12 => vec![s("GETRANGE"), k, self.int(), self.int()],
            13 => vec![s("LRANGE"), k, self.int(), self.int()],
            14 => vec![s("SRANDMEMBER"), k, self.int()],
            15 => vec![s("LPOP"), k, self.int()],
            _ => vec![s("DEL"), k],
        }
    }
}

#[test]
fn hostile_writes_match_redis_and_survive_kill_9() {
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("HOSTILE_SEED={seed}");
    let trace = std::env::var_os("HOSTILE_TRACE").is_some();
    let mut gen = Gen { rng: StdRng::seed_from_u64(seed) };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let redis = Redis::start();
    let mut theirs = con(redis.addr);
    let rt = runtime();
    let mut native: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    {
        let client = rt.block_on(Client::connect(&node.addr.to_string())).expect("connect");
        rt.block_on(client.create_range("docs", RangeOptions::default())).expect("range");
    }

    for round in 0..ROUNDS {
        let mut ours = con(node.resp_addr);
        for _ in 0..COMMANDS_PER_ROUND {
            let args = gen.command();
            let mine = query(&mut ours, &args);
            let name = String::from_utf8_lossy(&args[0]).into_owned();
            if trace {
                let shown: Vec<_> = args
                    .iter()
                    .map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned())
                    .collect();
                eprintln!("{shown:?} -> {}", shape(&name, &mine));
            }
            if over_limits(&mine) {
                continue;
            }
            let redis_reply = query(&mut theirs, &args);
            assert_eq!(
                shape(&name, &mine),
                shape(&name, &redis_reply),
                "seed {seed}: {name} {:?}",
                args[1..]
                    .iter()
                    .map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]))
                    .collect::<Vec<_>>()
            );
        }

        // Native writes of the same kinds of rows, with a BTreeMap oracle.
        let client = rt.block_on(Client::connect(&node.addr.to_string())).expect("connect");
        for _ in 0..40 {
            let (k, v) = (gen.key(), gen.value());
            let batch = Batch::new().put(&k, &v).put(b"neighbour", b"n");
            match rt.block_on(client.write("docs", batch)) {
                Ok(_) => {
                    native.insert(k, v);
                    native.insert(b"neighbour".to_vec(), b"n".to_vec());
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains("exceeds the limit"), "seed {seed}: {text}");
                }
            }
        }
        drop(client);

        // Kill -9 and restart: every key reads back as acknowledged.
        node.kill();
        node.restart();
        let mut ours = con(node.resp_addr);
        let (a, b) = (dump(&mut ours), dump(&mut theirs));
        assert_eq!(a, b, "seed {seed}: round {round}: databases differ after restart");

        let client = rt.block_on(Client::connect(&node.addr.to_string())).expect("connect");
        let page = rt.block_on(client.scan("docs", &Scan::all())).expect("scan");
        let got: BTreeMap<Vec<u8>, Vec<u8>> =
            page.records.into_iter().map(|r| (r.key.to_vec(), r.value.to_vec())).collect();
        assert_eq!(got, native, "seed {seed}: round {round}: native rows differ");
    }
}
