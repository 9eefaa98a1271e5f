//! Batch map-reduce jobs (`monotable job`) against a recount done here
//! from the records themselves: range and Redis inputs, range and Redis
//! outputs, disk and Redis intermediates, a budget small enough that
//! dozens of runs spill; per-record errors counted as the recount counts
//! them; a job killed or cancelled midway leaves no output and no runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use monotable_client::{Client, Element, RangeOptions, Scan};
use monotable_proto::tuple;
use monotable_tests::{cli, ok, runtime, Node, Redis};
use serde_json::{json, Value as Json};

const RECORDS: usize = 20_000;
/// Distinct `["k", i % KEYS]` keys: enough that a small budget spills.
const KEYS: usize = 8_000;

/// A record: its document, or raw bytes that are not MessagePack.
enum Rec {
    Doc(Json),
    Raw(Vec<u8>),
}

fn groups() -> Vec<Json> {
    vec![json!("paris"), json!("a\u{0}b"), json!("日本"), json!(7), json!([1, "x"]), json!(-3)]
}

/// The records, deterministic: mostly `{"i":i,"g":G,"n":N}`, with numbers
/// that overflow a group's sum, values sum cannot add, documents the map
/// function rejects and bytes that are not MessagePack.
fn records() -> Vec<Rec> {
    let gs = groups();
    (0..RECORDS)
        .map(|i| {
            let g = gs[i % gs.len()].clone();
            match i % 97 {
                0 => Rec::Raw(vec![0xc1, b'x', i as u8]),
                1 => Rec::Doc(json!({"i": i, "g": g, "boom": true})),
                2 => Rec::Doc(json!({"i": i, "g": g, "n": "text"})),
                3 => Rec::Doc(json!({"i": i, "g": g})),
                // Pushes group 7's sum past the 64-bit range (Lua holds
                // integers up to 2^63-1 exactly).
                4 if g == json!(7) => Rec::Doc(json!({"i": i, "g": g, "n": i64::MAX})),
                5 => Rec::Doc(json!({"i": i, "g": g, "n": i64::MIN / 4})),
                _ => Rec::Doc(json!({"i": i, "g": g, "n": (i as i64 % 1000) - 300})),
            }
        })
        .collect()
}

const MAP_LUA: &str = r#"
function map(key, v)
  if type(v) ~= "table" then error("not a document") end
  if v.boom then error("boom") end
  emit(v.g, v.n)
  emit("all", 1)
  emit({"k", v.i % 8000}, v.n)
end
"#;

/// A tuple element of a group or emitted JSON key (an array is a nested
/// tuple).
fn element(j: &Json) -> Element {
    match j {
        Json::String(s) => Element::String(s.clone()),
        Json::Number(n) => Element::Int(i128::from(n.as_i64().expect("small integers"))),
        Json::Array(items) => Element::Tuple(items.iter().map(element).collect()),
        other => panic!("no element for {other}"),
    }
}

/// The output key of an emitted JSON key (an array is a composite key).
fn out_key(j: &Json) -> Vec<u8> {
    let elements = match j {
        Json::Array(items) => items.iter().map(element).collect(),
        other => vec![element(other)],
    };
    tuple::encode(&elements).expect("encodes")
}

/// What the job must produce: sums per output key, and the error counts.
struct Expected {
    sums: BTreeMap<Vec<u8>, i128>,
    /// Output keys with their emitted JSON, for rendering.
    shown: BTreeMap<Vec<u8>, Json>,
    map_errors: u64,
    reduce_errors: u64,
}

/// The recount: every record mapped as MAP_LUA maps it, summed with the
/// rules of the built-in `sum` (integers only; a sum past -2^63..2^64-1
/// writes no row and is one reduce error).
fn expected(recs: &[Rec], emit_all: bool) -> Expected {
    let mut sums: BTreeMap<Vec<u8>, i128> = BTreeMap::new();
    let mut shown = BTreeMap::new();
    let (mut map_errors, mut reduce_errors) = (0, 0);
    for r in recs {
        let doc = match r {
            Rec::Raw(_) => {
                map_errors += 1;
                continue;
            }
            Rec::Doc(d) => d,
        };
        if doc.get("boom").is_some() {
            map_errors += 1;
            continue;
        }
        let n = doc.get("n");
        let i = doc["i"].as_u64().expect("i") as usize;
        let mut rows = vec![(doc["g"].clone(), n.cloned()), (json!(["k", i % KEYS]), n.cloned())];
        if emit_all {
            rows.push((json!("all"), Some(json!(1))));
        }
        for (k, v) in rows {
            let key = out_key(&k);
            let num =
                v.as_ref().and_then(|v| v.as_i64().map(i128::from).or(v.as_u64().map(i128::from)));
            match num {
                Some(x) => {
                    *sums.entry(key.clone()).or_default() += x;
                    shown.insert(key, k);
                }
                None => reduce_errors += 1,
            }
        }
    }
    let range = i128::from(i64::MIN)..=i128::from(u64::MAX);
    let before = sums.len();
    sums.retain(|_, s| range.contains(s));
    reduce_errors += (before - sums.len()) as u64;
    Expected { sums, shown, map_errors, reduce_errors }
}

fn msgpack_int(bytes: &[u8]) -> i128 {
    match rmpv::decode::read_value(&mut &bytes[..]).expect("msgpack") {
        rmpv::Value::Integer(i) => {
            i.as_i64().map(i128::from).or(i.as_u64().map(i128::from)).expect("int")
        }
        other => panic!("not an integer: {other}"),
    }
}

fn load(rt: &tokio::runtime::Runtime, client: &Client, range: &str, recs: &[Rec]) {
    rt.block_on(async {
        client
            .create_range(range, RangeOptions { chunk_size_max_bytes: 64 * 1024 })
            .await
            .expect("create");
        let mut batch = monotable_client::Batch::new();
        for (i, r) in recs.iter().enumerate() {
            let key = if i % 10 == 0 {
                tuple::encode(&[
                    Element::String(format!("h\u{0}{i}")),
                    Element::Bytes(vec![0, 255]),
                ])
            } else {
                tuple::encode(&[Element::Int(i as i128)])
            }
            .expect("key");
            let value = match r {
                Rec::Doc(d) => rmp_serde::to_vec_named(d).expect("msgpack"),
                Rec::Raw(b) => b.clone(),
            };
            batch = batch.put(&key, &value);
            if i % 1000 == 999 {
                client.write(range, std::mem::take(&mut batch)).await.expect("write");
            }
        }
        client.write(range, batch).await.expect("write");
    });
}

fn scan_all(rt: &tokio::runtime::Runtime, client: &Client, range: &str) -> BTreeMap<Vec<u8>, i128> {
    rt.block_on(async {
        let mut out = BTreeMap::new();
        let mut s = client.scan_stream(range, Scan::all());
        while let Some(r) = s.next().await {
            let r = r.expect("scan");
            out.insert(r.key, msgpack_int(&r.value));
        }
        out
    })
}

/// Runs a job to its end through the CLI; returns its final status.
fn run_job(addr: SocketAddr, args: &[&str]) -> Json {
    let out = ok(cli(addr, &[&["job", "run"], args].concat()));
    assert!(out.contains(" done: "), "{out}");
    status(addr, args[0]).expect("the job is listed")
}

fn status(addr: SocketAddr, name: &str) -> Option<Json> {
    let out = ok(cli(addr, &["job", "list", "--json"]));
    out.lines().map(|l| serde_json::from_str::<Json>(l).expect("json")).find(|j| j["name"] == name)
}

fn check(label: &str, st: &Json, got: &BTreeMap<Vec<u8>, i128>, want: &Expected) {
    assert_eq!(st["map_errors"], want.map_errors, "{label}: map errors: {st}");
    assert_eq!(st["reduce_errors"], want.reduce_errors, "{label}: reduce errors: {st}");
    assert_eq!(got.len(), want.sums.len(), "{label}: keys");
    for (k, v) in &want.sums {
        assert_eq!(got.get(k), Some(v), "{label}: key {:?}", want.shown.get(k));
    }
    assert_eq!(st["rows_out"], want.sums.len() as u64, "{label}");
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

fn jobs_dir_is_empty(data: &Path) -> bool {
    std::fs::read_dir(data.join("jobs")).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn jobs_match_a_recount_over_ranges_and_redis_with_disk_and_redis_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(&dir.path().join("data"));
    let intermediate = Redis::start_with(&["--databases", "4"]);
    let data = Redis::start();
    let rt = runtime();
    let client = rt.block_on(Client::connect(node.addr)).expect("connect");
    let recs = records();
    load(&rt, &client, "src", &recs);
    let want = expected(&recs, true);
    let map = write_file(dir.path(), "map.lua", MAP_LUA);
    let addr = node.addr;

    // The whole budget in memory: nothing spills. The output range is
    // built in chunks of its chunk size (64 KiB here), written in order.
    ok(cli(addr, &["range", "create", "out1", "--chunk-size", "64KiB"]));
    ok(cli(addr, &["put", "out1", "old", "1"]));
    let plain = ["plain", "--input", "range:src", "--output", "range:out1", "--map-lua", &map];
    let plain = [&plain[..], &["--reduce-builtin", "sum"]].concat();
    let refused = cli(addr, &[&["job", "run"][..], &plain].concat());
    let err = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(err.contains("holds 1 records: pass --replace"), "{err}");
    let st = run_job(addr, &[&plain[..], &["--replace"]].concat());
    check("in memory", &st, &scan_all(&rt, &client, "out1"), &want);
    let st_plain = st.clone();
    assert_eq!(st["spills"], 0, "{st}");
    assert!(st["tasks"].as_u64() >= Some(2), "one task per chunk: {st}");
    let described = ok(cli(addr, &["range", "describe", "out1"]));
    assert!(described.matches("\n").count() > 4, "several chunks: {described}");

    // 64 KiB per task: dozens of runs spill, on disk and in Redis.
    let url = format!("redis://{}", intermediate.addr);
    for (label, extra) in
        [("disk runs", vec![]), ("redis runs", vec!["--intermediate", url.as_str()])]
    {
        let name = label.replace(' ', "-");
        let output = format!("range:{name}");
        let args = [
            &[name.as_str(), "--input", "range:src", "--output", &output, "--map-lua", &map][..],
            &["--reduce-builtin", "sum", "--memory-budget", "128KiB", "--tasks", "2"],
            &extra,
        ]
        .concat();
        let st = run_job(addr, &args);
        check(label, &st, &scan_all(&rt, &client, &name), &want);
        assert!(st["spills"].as_u64() >= Some(24), "{label}: {st}");
    }
    // The runs are gone: from disk, and from the intermediate Redis.
    assert!(jobs_dir_is_empty(&node.data_dir));
    let mut con = redis::Client::open(intermediate.url(0).as_str())
        .expect("url")
        .get_connection()
        .expect("con");
    for db in 0..4 {
        redis::cmd("SELECT").arg(db).query::<()>(&mut con).expect("select");
        assert_eq!(redis::cmd("DBSIZE").query::<u64>(&mut con).expect("dbsize"), 0, "db {db}");
    }

    // Redis in, a Redis hash out: the same records as JSON strings.
    let mut dcon =
        redis::Client::open(data.url(0).as_str()).expect("url").get_connection().expect("con");
    let mut pipe = redis::pipe();
    for (i, r) in recs.iter().enumerate() {
        match r {
            Rec::Doc(d) => pipe.set(format!("r:{i}"), d.to_string()).ignore(),
            Rec::Raw(b) => pipe.set(format!("r:{i}"), b.clone()).ignore(),
        };
    }
    pipe.set("other", "{\"g\":\"nope\"}").ignore();
    pipe.query::<()>(&mut dcon).expect("load redis");
    let input = format!("{}?match=r:*", data.url(0));
    let output = format!("{}?hash=sums&prefix=job:", data.url(1));
    let st = run_job(
        addr,
        &[
            "fromredis",
            "--input",
            &input,
            "--output",
            &output,
            "--map-lua",
            &map,
            "--reduce-builtin",
            "sum",
            "--memory-budget",
            "128KiB",
            "--tasks",
            "2",
        ],
    );
    assert!(st["spills"].as_u64() >= Some(24), "{st}");
    redis::cmd("SELECT").arg(1).query::<()>(&mut dcon).expect("select");
    let hash: BTreeMap<Vec<u8>, String> =
        redis::cmd("HGETALL").arg("job:sums").query(&mut dcon).expect("hgetall");
    let rendered: BTreeMap<Vec<u8>, i128> =
        hash.into_iter().map(|(k, v)| (k, v.parse::<i128>().expect("an integer"))).collect();
    let want_rendered: BTreeMap<Vec<u8>, i128> = want
        .sums
        .iter()
        .map(|(k, v)| {
            let shown = match &want.shown[k] {
                Json::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (shown, *v)
        })
        .collect();
    assert_eq!(st["map_errors"], want.map_errors);
    assert_eq!(st["reduce_errors"], want.reduce_errors);
    assert_eq!(rendered, want_rendered);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut dcon).expect("keys");
    assert_eq!(keys, vec!["job:sums".to_owned()], "the staging hash is renamed into place");

    // A Lua reducer (CouchDB's signature) counting each group's rows.
    let reduce = write_file(
        dir.path(),
        "count.lua",
        "function reduce(keys, values, rereduce)\n  if rereduce then local t = 0 for _, v in ipairs(values) do t = t + v end return t end\n  return #values\nend\n",
    );
    let st = run_job(
        addr,
        &[
            "luacount",
            "--input",
            "range:src",
            "--output",
            "range:counts",
            "--map-field",
            "g",
            "--value-field",
            "i",
            "--reduce-lua",
            &reduce,
            "--memory-budget",
            "128KiB",
            "--tasks",
            "2",
        ],
    );
    let mut counts: BTreeMap<Vec<u8>, i128> = BTreeMap::new();
    for r in &recs {
        if let Rec::Doc(d) = r {
            // The field mapper emits the field as one element: an array
            // is a nested tuple, not a composite key.
            let key = tuple::encode(&[element(&d["g"])]).expect("encodes");
            *counts.entry(key).or_default() += 1;
        }
    }
    assert_eq!(scan_all(&rt, &client, "counts"), counts, "{st}");
    assert_eq!(st["map_errors"], (RECORDS / 97 + 1) as u64, "the raw records: {st}");

    // The outputs are ranges like any other: they survive a restart.
    drop(client);
    node.restart();
    let client = rt.block_on(Client::connect(node.addr)).expect("connect");
    check("after a restart", &st_plain, &scan_all(&rt, &client, "out1"), &want);
}

#[test]
fn a_killed_or_cancelled_job_leaves_no_output_and_no_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(&dir.path().join("data"));
    let rt = runtime();
    let client = rt.block_on(Client::connect(node.addr)).expect("connect");
    let recs = records();
    load(&rt, &client, "src", &recs);
    // The output holds rows already: a job that does not finish keeps them.
    rt.block_on(client.create_range("out", RangeOptions::default())).expect("create");
    ok(cli(node.addr, &["put", "out", "kept", "1"]));
    // Slow on purpose: each record spins, so the job is caught midway.
    let slow = write_file(
        dir.path(),
        "slow.lua",
        "function map(key, v)\n  if type(v) ~= 'table' then return end\n  for _ = 1, 20000 do end\n  emit({'k', v.i}, 1)\nend\n",
    );
    let intermediate = Redis::start_with(&["--databases", "2"]);
    let url = format!("redis://{}", intermediate.addr);
    let mut con = redis::Client::open(intermediate.url(0).as_str())
        .expect("url")
        .get_connection()
        .expect("con");
    let runs_in_redis = |con: &mut redis::Connection| -> u64 {
        (0..2)
            .map(|db| {
                redis::cmd("SELECT").arg(db).query::<()>(con).expect("select");
                redis::cmd("DBSIZE").query::<u64>(con).expect("dbsize")
            })
            .sum()
    };
    for how in ["kill", "cancel", "kill-redis"] {
        let addr = node.addr;
        let in_redis: &[&str] = if how == "kill-redis" { &["--intermediate", &url] } else { &[] };
        let args = [
            "job",
            "run",
            how,
            "--input",
            "range:src",
            "--output",
            "range:out",
            "--map-lua",
            &slow,
            "--replace",
        ];
        ok(cli(
            addr,
            &[
                &args[..],
                &[
                    "--reduce-builtin",
                    "count",
                    "--memory-budget",
                    "128KiB",
                    "--tasks",
                    "2",
                    "--detach",
                ],
                in_redis,
            ]
            .concat(),
        ));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let st = status(addr, how).expect("listed");
            assert_eq!(st["state"], "running", "finished before it was stopped: {st}");
            if st["spills"].as_u64() >= Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "no spill: {st}");
            std::thread::sleep(Duration::from_millis(50));
        }
        if in_redis.is_empty() {
            assert!(!jobs_dir_is_empty(&node.data_dir), "runs spill under DATA_DIR/jobs");
        } else {
            assert!(runs_in_redis(&mut con) > 0, "runs spill into the intermediate Redis");
        }
        if how.starts_with("kill") {
            node.kill();
            node.restart();
        } else {
            ok(cli(addr, &["job", "cancel", how]));
            let deadline = Instant::now() + Duration::from_secs(60);
            while status(node.addr, how).expect("listed")["state"] == "running" {
                assert!(Instant::now() < deadline, "the cancel did not stop the job");
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(status(node.addr, how).expect("listed")["state"], "cancelled");
            let err = cli(node.addr, &["job", "cancel", how]);
            assert!(String::from_utf8_lossy(&err.stderr).contains("has ended already"));
        }
        let addr = node.addr;
        let out = ok(cli(addr, &["scan", "out"]));
        assert_eq!(out.trim(), r#"{"key":"kept","value":1}"#, "{how}");
        let ranges = ok(cli(addr, &["range", "list"]));
        assert!(!ranges.contains("staging"), "{how}: {ranges}");
        assert!(jobs_dir_is_empty(&node.data_dir), "{how}: runs left");
        assert_eq!(runs_in_redis(&mut con), 0, "{how}: runs left in Redis");
    }
    // Ctrl-C of a `job run` that follows its job cancels the job.
    let child = std::process::Command::new(monotable_tests::binary())
        .args(["job", "run", "ctrlc", "--input", "range:src", "--output", "range:out", "--replace"])
        .args(["--map-lua", &slow, "--reduce-builtin", "count", "--memory-budget", "128KiB"])
        .env("MONOTABLE_ADDR", node.addr.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(node.addr, "ctrlc").is_none_or(|st| st["spills"].as_u64() < Some(2)) {
        assert!(Instant::now() < deadline, "the job never spilled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("job ctrlc cancelled"), "{stdout}");
    assert_eq!(status(node.addr, "ctrlc").expect("listed")["state"], "cancelled");
    assert_eq!(ok(cli(node.addr, &["scan", "out"])).trim(), r#"{"key":"kept","value":1}"#);
}

#[test]
fn bad_jobs_are_refused_with_a_reason_and_touch_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let two = Redis::start_with(&["--databases", "2"]);
    let addr = node.addr;
    ok(cli(addr, &["range", "create", "src"]));
    ok(cli(addr, &["put", "src", "a", r#"{"g":"x"}"#]));
    ok(cli(addr, &["range", "create", "viewed"]));
    ok(cli(addr, &["reducer", "create", "r", "--range", "viewed", "--builtin", "count"]));
    let bad_lua = write_file(dir.path(), "bad.lua", "function map(k, v) emit(\n");
    let spins = write_file(dir.path(), "spin.lua", "while true do end\n");
    let base =
        ["job", "run", "j", "--input", "range:src", "--output", "range:o", "--map-field", "g"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--reduce-builtin", "median"], "unknown built-in reducer"),
        (vec!["--reduce-builtin", "count", "--memory-budget", "1000"], "too small"),
        (vec!["--reduce-builtin", "count", "--tasks", "1000"], "at most 256"),
        (vec!["--reduce-builtin", "count", "--map-lua", &bad_lua], "cannot be used with"),
        (vec!["--reduce-lua", &spins], "reduce function"),
        (vec!["--reduce-builtin", "count", "--spill-dir", "rel"], "absolute path"),
        (
            vec!["--reduce-builtin", "count", "--spill-dir", "/nonexistent/dir"],
            "existing directory",
        ),
        (vec!["--reduce-builtin", "count", "--memory-budget", "18446744073709551615"], "memory"),
    ];
    for (extra, want) in cases {
        let o = cli(addr, &[&base[..], &extra].concat());
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let intermediate = format!("redis://{}", two.addr);
    let refusals: Vec<(Vec<String>, &str)> = vec![
        (vec!["--input".into(), "range:nope".into()], "nope"),
        (vec!["--output".into(), "range:viewed".into()], "view \"r\""),
        // A job's own staging name used to be taken as the output, which
        // the commit then dropped: "done", and no output.
        (vec!["--output".into(), "range:job.j.staging".into()], "staging ranges"),
        (vec!["--map-lua".into(), bad_lua.clone()], "map function"),
        (
            vec![
                "--input".into(),
                two.url(1),
                "--intermediate".into(),
                intermediate.clone(),
                "--tasks".into(),
                "3".into(),
            ],
            "this job needs 3",
        ),
        (
            vec![
                "--input".into(),
                format!("{}?match=*", two.url(0)),
                "--intermediate".into(),
                intermediate.clone(),
                "--tasks".into(),
                "2".into(),
            ],
            "use another Redis server",
        ),
        (
            vec!["--input".into(), two.url(1), "--output".into(), two.url(1)],
            "is the input database",
        ),
        (vec!["--input".into(), "redis://127.0.0.1:1/0".into()], "127.0.0.1:1"),
    ];
    for (extra, want) in refusals {
        let mut args: Vec<String> = vec!["job", "run", "j", "--reduce-builtin", "count"]
            .into_iter()
            .map(String::from)
            .collect();
        let has = |flag: &str| extra.iter().any(|e| e == flag);
        if !has("--input") {
            args.extend(["--input".into(), "range:src".into()]);
        }
        if !has("--output") {
            args.extend(["--output".into(), "range:o".into()]);
        }
        if !has("--map-lua") {
            args.extend(["--map-field".into(), "g".into()]);
        }
        args.extend(extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cli(addr, &refs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // Nothing was written anywhere, and the reducer's range is untouched.
    let ranges = ok(cli(addr, &["range", "list"]));
    assert!(!ranges.contains("\no ") && !ranges.contains("staging"), "{ranges}");
    assert!(ok(cli(addr, &["job", "list", "--json"])).trim().is_empty());
    // Two jobs of one name at once: the second is refused.
    ok(cli(addr, &["range", "create", "many"]));
    for i in 0..100 {
        ok(cli(addr, &["put", "many", &i.to_string(), "1"]));
    }
    let slow = write_file(
        dir.path(),
        "slow.lua",
        "function map(k, v) for _ = 1, 2000000 do end emit(1, 1) end\n",
    );
    ok(cli(
        addr,
        &[
            "job",
            "run",
            "twice",
            "--input",
            "range:many",
            "--output",
            "range:o",
            "--map-lua",
            &slow,
            "--reduce-builtin",
            "count",
            "--detach",
        ],
    ));
    let o = cli(
        addr,
        &[
            "job",
            "run",
            "twice",
            "--input",
            "range:src",
            "--output",
            "range:o2",
            "--map-field",
            "g",
            "--reduce-builtin",
            "count",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("JobExists"), "{o:?}");
    let o = cli(addr, &["job", "cancel", "nosuch"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("JobNotFound"), "{o:?}");
    ok(cli(addr, &["job", "cancel", "twice"]));
}

/// Polls a job until it ends; returns its final status.
fn wait_end(addr: SocketAddr, name: &str) -> Json {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(addr, name).expect("listed");
        if st["state"] != "running" {
            return st;
        }
        assert!(Instant::now() < deadline, "job {name} never ended: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression guards for jobs that meet each other or a failing Redis:
/// postmortems in each step.
#[test]
fn jobs_that_would_clash_are_refused_or_kept_whole_and_failures_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("data"));
    let addr = node.addr;
    let rt = runtime();
    let client = rt.block_on(Client::connect(addr)).expect("connect");
    let recs = records();
    load(&rt, &client, "src", &recs);
    let map = write_file(dir.path(), "map.lua", MAP_LUA);
    let slow = write_file(
        dir.path(),
        "slow.lua",
        "function map(key, v)\n  if type(v) ~= 'table' then return end\n  for _ = 1, 20000 do end\n  emit({'k', v.i}, 1)\nend\n",
    );
    let out = Redis::start();
    let mut oc =
        redis::Client::open(out.url(3).as_str()).expect("url").get_connection().expect("con");

    // Two jobs on one intermediate server: the second is refused while the
    // first holds it. (Both used to write `run:N` lists into the same
    // databases: the second ended "done" with wrong counts.)
    let inter = Redis::start_with(&["--databases", "4"]);
    let url = format!("redis://{}", inter.addr);
    let base = ["--input", "range:src", "--map-lua", &slow, "--reduce-builtin", "count"];
    let spill = ["--memory-budget", "128KiB", "--tasks", "2", "--intermediate", &url];
    ok(cli(
        addr,
        &[&["job", "run", "first", "--output", "range:first"][..], &base, &spill, &["--detach"]]
            .concat(),
    ));
    let o = cli(
        addr,
        &[&["job", "run", "second", "--output", "range:second"][..], &base, &spill].concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("is in use by job first@"), "{err}");

    // The intermediate server dies under the first job: it fails, saying
    // why. (Every failure used to end as "cancelled", with no error.)
    while status(addr, "first").expect("listed")["spills"].as_u64() < Some(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(inter);
    let st = wait_end(addr, "first");
    assert_eq!(st["state"], "failed", "{st}");
    assert!(st["error"].as_str().is_some_and(|e| !e.is_empty()), "{st}");
    assert!(!ok(cli(addr, &["range", "list"])).contains("first"), "no output is left");

    // Two jobs writing one Redis hash at once: each writes its own staging
    // hash and the last rename wins, whole. (They shared one staging key:
    // both said "done" and the hash held about 30% of the rows.)
    let want = expected(&recs, true);
    let output = format!("{}?hash=h", out.url(3));
    for name in ["h1", "h2"] {
        ok(cli(
            addr,
            &[
                "job",
                "run",
                name,
                "--input",
                "range:src",
                "--output",
                &output,
                "--map-lua",
                &map,
                "--reduce-builtin",
                "sum",
                "--replace",
                "--detach",
            ],
        ));
    }
    for name in ["h1", "h2"] {
        assert_eq!(wait_end(addr, name)["state"], "done");
    }
    let fields: u64 = redis::cmd("HLEN").arg("h").query(&mut oc).expect("hlen");
    assert_eq!(fields, want.sums.len() as u64);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut oc).expect("keys");
    assert_eq!(keys, vec!["h".to_owned()], "no staging hash is left");
    // An output hash that exists is replaced only when asked.
    let o = cli(
        addr,
        &[
            "job",
            "run",
            "h3",
            "--input",
            "range:src",
            "--output",
            &output,
            "--map-lua",
            &map,
            "--reduce-builtin",
            "sum",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --replace"), "{o:?}");

    // Keys that render as one Redis key: the later row is not written and
    // is counted. (`"1"` and `1` both became the key 1, one overwriting
    // the other, while the job reported every row written.)
    ok(cli(addr, &["range", "create", "coll"]));
    for (i, g) in
        [r#"{"g":null}"#, r#"{"g":"1"}"#, r#"{"g":"null"}"#, r#"{"g":"paris"}"#, r#"{"g":1}"#]
            .iter()
            .enumerate()
    {
        ok(cli(addr, &["put", "coll", &i.to_string(), g]));
    }
    let st = run_job(
        addr,
        &[
            "coll",
            "--input",
            "range:coll",
            "--output",
            &out.url(4),
            "--map-field",
            "g",
            "--reduce-builtin",
            "count",
        ],
    );
    assert_eq!(st["rows_out"], 3, "{st}");
    assert_eq!(st["reduce_errors"], 2, "{st}");
    let mut c4 =
        redis::Client::open(out.url(4).as_str()).expect("url").get_connection().expect("con");
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c4).expect("keys");
    keys.sort();
    assert_eq!(keys, ["1", "null", "paris"]);

    // A cancel stops a job waiting on a Redis output that does not answer.
    // (It waited for Redis, up to its 60 s timeout.)
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(120_000)
        .arg("WRITE")
        .query::<()>(&mut c4)
        .expect("pause");
    ok(cli(
        addr,
        &[
            "job",
            "run",
            "paused",
            "--input",
            "range:coll",
            "--output",
            &out.url(5),
            "--map-field",
            "g",
            "--reduce-builtin",
            "count",
            "--detach",
        ],
    ));
    std::thread::sleep(Duration::from_millis(500));
    ok(cli(addr, &["job", "cancel", "paused"]));
    let st = wait_end(addr, "paused");
    assert_eq!(st["state"], "cancelled", "{st}");
    // Redis is still paused: a write of ours does not get through.
    let mut probe = redis::Client::open(out.url(5).as_str())
        .expect("url")
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("con");
    probe.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    assert!(
        redis::cmd("SET").arg("probe").arg(1).query::<()>(&mut probe).is_err(),
        "the cancel waited for Redis"
    );
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut c4).expect("unpause");
}
