//! `COMMAND` against a real `redis-server` 7.0: for every command Monotable
//! runs, COMMAND INFO (arity, flags, key positions, ACL categories, tips,
//! key specs, the subcommands both have) and the COMMAND DOCS fields it
//! gives are Redis's; COMMAND COUNT is the number of commands COMMAND
//! lists; GETKEYS, GETKEYSANDFLAGS, the errors and HELP match byte for
//! byte on a sample. Both servers are started here on free loopback ports.

use monotable_tests::{Node, RawResp, Redis};

/// A parsed RESP2 or RESP3 reply (sets and maps kept apart from arrays).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(String),
    Null,
    Array(Vec<Value>),
    Set(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

fn parse(bytes: &[u8]) -> Value {
    let (value, rest) = parse_one(bytes);
    assert!(rest.is_empty(), "trailing bytes after a reply");
    value
}

fn parse_one(bytes: &[u8]) -> (Value, &[u8]) {
    let nl = bytes.iter().position(|&b| b == b'\n').expect("a line");
    let line = std::str::from_utf8(&bytes[1..nl - 1]).expect("utf-8 header");
    let mut rest = &bytes[nl + 1..];
    let n = || line.parse::<i64>().expect("a number");
    let value = match bytes[0] {
        b'+' => Value::Simple(line.to_owned()),
        b'-' => Value::Error(line.to_owned()),
        b':' => Value::Int(n()),
        b'_' => Value::Null,
        b'$' if n() < 0 => Value::Null,
        b'*' if n() < 0 => Value::Null,
        b'$' => {
            let len = n() as usize;
            let body = String::from_utf8_lossy(&rest[..len]).into_owned();
            rest = &rest[len + 2..];
            Value::Bulk(body)
        }
        tag @ (b'*' | b'~') => {
            let mut items = Vec::new();
            for _ in 0..n() {
                let (v, r) = parse_one(rest);
                items.push(v);
                rest = r;
            }
            if tag == b'~' {
                Value::Set(items)
            } else {
                Value::Array(items)
            }
        }
        b'%' => {
            let mut pairs = Vec::new();
            for _ in 0..n() {
                let (k, r) = parse_one(rest);
                let (v, r) = parse_one(r);
                pairs.push((k, v));
                rest = r;
            }
            Value::Map(pairs)
        }
        other => panic!("unexpected reply type {}", other as char),
    };
    (value, rest)
}

fn call(c: &mut RawResp, line: &str) -> Value {
    parse(&c.call_str(line))
}

fn text(v: &Value) -> String {
    match v {
        Value::Bulk(b) => b.clone(),
        Value::Simple(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

/// A RESP3 map's value for `key`.
fn field<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Map(pairs) = map else { panic!("not a map: {map:?}") };
    pairs.iter().find(|(k, _)| text(k) == key).map(|(_, v)| v)
}

/// A COMMAND INFO entry with its subcommands cut to those named in `keep`
/// and sorted (Redis lists them in its hash table's order).
fn normalized(entry: &Value, keep: &[String]) -> Value {
    let mut e = items(entry).to_vec();
    let mut subs: Vec<Value> =
        items(&e[9]).iter().filter(|s| keep.contains(&text(&items(s)[0]))).cloned().collect();
    subs.sort_by_key(|s| text(&items(s)[0]));
    e[9] = match e[9] {
        Value::Set(_) => Value::Set(subs),
        _ => Value::Array(subs),
    };
    Value::Array(e)
}

#[test]
fn command_introspection_matches_redis() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 10);
    let mut mono = RawResp::connect(node.resp_addr, 10);
    for c in [&mut redis, &mut mono] {
        assert!(matches!(call(c, "HELLO 3"), Value::Map(_)));
    }

    // Phase 1: COMMAND lists every command once; COUNT counts them.
    let all = call(&mut mono, "COMMAND");
    let names: Vec<String> = items(&all).iter().map(|e| text(&items(e)[0])).collect();
    assert_eq!(call(&mut mono, "COMMAND COUNT"), Value::Int(names.len() as i64));
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "COMMAND lists a command twice");
    assert!(names.len() >= 110, "{} commands", names.len());
    let listed = call(&mut mono, "COMMAND LIST");
    let listed: Vec<String> = items(&listed).iter().map(text).collect();
    assert_eq!(listed.iter().filter(|n| !n.contains('|')).count(), names.len());

    // Phase 2: every command Redis also has: the whole COMMAND INFO entry
    // (arity, flags, first/last key, step, ACL categories, tips, key
    // specs; of the subcommands, those Monotable has) is Redis's.
    let own: Vec<&String> = names.iter().filter(|n| n.starts_with("mt.")).collect();
    assert_eq!(own.len(), 3, "{own:?}");
    for name in names.iter().filter(|n| !n.starts_with("mt.")) {
        let want = call(&mut redis, &format!("COMMAND INFO {name}"));
        let got = call(&mut mono, &format!("COMMAND INFO {name}"));
        let (want, got) = (&items(&want)[0], &items(&got)[0]);
        assert_ne!(want, &Value::Null, "redis-server has no {name}");
        let subs: Vec<String> = items(&items(got)[9]).iter().map(|s| text(&items(s)[0])).collect();
        assert_eq!(normalized(got, &subs), normalized(want, &subs), "COMMAND INFO {name}");
        for sub in &subs {
            let want = call(&mut redis, &format!("COMMAND INFO {sub}"));
            assert_eq!(call(&mut mono, &format!("COMMAND INFO {sub}")), want, "{sub}");
        }

        // Phase 3: COMMAND DOCS: the fields Monotable gives are Redis's.
        let want = call(&mut redis, &format!("COMMAND DOCS {name}"));
        let got = call(&mut mono, &format!("COMMAND DOCS {name}"));
        let (want, got) = (field(&want, name).expect(name), field(&got, name).expect(name));
        let Value::Map(got_fields) = got else { panic!("docs of {name} are a map") };
        for (key, value) in got_fields {
            let key = text(key);
            if key == "subcommands" {
                continue;
            }
            assert_eq!(Some(value), field(want, &key), "COMMAND DOCS {name}: {key}");
        }
        for key in ["summary", "since", "group", "complexity", "deprecated_since"] {
            assert_eq!(field(got, key).is_some(), field(want, key).is_some(), "{name}: {key}");
        }
    }

    // Phase 4: GETKEYS and GETKEYSANDFLAGS on a sample, and the errors and
    // HELP, byte for byte (RESP2, then RESP3).
    let lines = [
        "COMMAND GETKEYS get a",
        "COMMAND GETKEYS set k v",
        "COMMAND GETKEYS set k v GET EX 5",
        "COMMAND GETKEYS mset a 1 b 2 c 3",
        "COMMAND GETKEYS mset a 1 b",
        "COMMAND GETKEYS msetnx a 1 b 2",
        "COMMAND GETKEYS mget a b c",
        "COMMAND GETKEYS del a b c",
        "COMMAND GETKEYS exists a a",
        "COMMAND GETKEYS rename a b",
        "COMMAND GETKEYS renamenx a b",
        "COMMAND GETKEYS hset h f v f2 v2",
        "COMMAND GETKEYS sinter a b c",
        "COMMAND GETKEYS zrange z 0 -1 WITHSCORES",
        "COMMAND GETKEYS linsert l BEFORE p x",
        "COMMAND GETKEYS expire k 10 NX",
        "COMMAND GETKEYS getex k PERSIST",
        "COMMAND GETKEYS hscan h 0 MATCH *",
        "COMMAND GETKEYS watch a b",
        "COMMAND GETKEYSANDFLAGS set k v",
        "COMMAND GETKEYSANDFLAGS set k v get",
        "COMMAND GETKEYSANDFLAGS rename a b",
        "COMMAND GETKEYSANDFLAGS getdel a",
        "COMMAND GETKEYSANDFLAGS lpush l a b",
        "COMMAND GETKEYSANDFLAGS del a b",
        "COMMAND GETKEYSANDFLAGS mset a 1 b 2",
        "COMMAND GETKEYSANDFLAGS migrate 127.0.0.1 1 k 0 5 COPY",
        "COMMAND GETKEYS migrate 127.0.0.1 1 k 0 5 KEYS a b",
        "COMMAND GETKEYS nosuch a",
        "COMMAND GETKEYS ping x",
        "COMMAND GETKEYS get a b",
        "COMMAND GETKEYS mset a",
        "COMMAND GETKEYS client id",
        "COMMAND GETKEYS client nosuch",
        "COMMAND GETKEYS GET|x a",
        "COMMAND GETKEYS get",
        "COMMAND GETKEYS",
        "COMMAND INFO nosuch",
        "COMMAND INFO get nosuch CLIENT|ID client|nosuch",
        "COMMAND DOCS nosuch",
        "COMMAND COUNT x",
        "COMMAND HELP",
        "COMMAND HELP x",
        "CLUSTER INFO",
        "CLUSTER HELP",
        "CLUSTER SLOTS",
        "CLUSTER nosuch",
        "CLUSTER SLOTS x",
        "CLUSTER",
        "COMMAND FOO",
        "COMMAND foo bar",
        "COMMAND LIST FILTERBY",
        "COMMAND LIST FILTERBY x y",
        "COMMAND LIST x",
        "COMMAND LIST FILTERBY ACLCAT nosuchcat",
        "COMMAND LIST FILTERBY MODULE x",
    ];
    for proto in ["2", "3"] {
        for c in [&mut redis, &mut mono] {
            c.call_str(&format!("HELLO {proto}"));
        }
        for line in lines {
            let want = String::from_utf8_lossy(&redis.call_str(line)).into_owned();
            let got = String::from_utf8_lossy(&mono.call_str(line)).into_owned();
            assert_eq!(got, want, "{line} (RESP{proto})");
        }
    }

    // Phase 5: LIST's filters give Redis's names, of the commands here.
    let mine: Vec<String> = listed.clone();
    for filter in ["ACLCAT hash", "ACLCAT KEYSPACE", "ACLCAT fast", "PATTERN z*", "PATTERN CLIENT*"]
    {
        let line = format!("COMMAND LIST FILTERBY {filter}");
        let want = call(&mut redis, &line);
        let mut want: Vec<String> =
            items(&want).iter().map(text).filter(|n| mine.contains(n)).collect();
        let got = call(&mut mono, &line);
        let mut got: Vec<String> =
            items(&got).iter().map(text).filter(|n| !n.starts_with("mt.")).collect();
        want.sort();
        got.sort();
        assert!(!got.is_empty(), "{line}");
        assert_eq!(got, want, "{line}");
    }
}
