//! The `monotable` command line as a contract: names, JSON forms, exit codes.

use monotable_tests::{cli, cli_with_stdin, ok, Node};
use serde_json::{json, Value};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn cli_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let a = node.addr;

    ok(cli(a, &["range", "create", "cities", "--chunk-size", "2KiB"]));
    let dup = cli(a, &["range", "create", "cities"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // KEY and VALUE are JSON; a bare word is a string.
    ok(cli(a, &["put", "cities", r#"["paris",40]"#, r#"{"name":"Paris","pop":2100000}"#]));
    ok(cli(a, &["put", "cities", r#"["paris",31]"#, "31"]));
    ok(cli(a, &["put", "cities", "lyon", "bare words"]));
    assert_eq!(
        ok(cli(a, &["get", "cities", r#"["paris",40]"#])).trim(),
        r#"{"name":"Paris","pop":2100000}"#
    );
    assert_eq!(ok(cli(a, &["get", "cities", "lyon"])).trim(), r#""bare words""#);

    // An absent key: exit 1 and a message on stderr, nothing on stdout.
    let missing = cli(a, &["get", "cities", "nowhere"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stdout(&missing).is_empty());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    // Tuple order: ("paris", 31) before ("paris", 40).
    let lines = json_lines(&ok(cli(a, &["scan", "cities", "--prefix", r#"["paris"]"#])));
    assert_eq!(
        lines,
        vec![
            json!({"key": ["paris", 31], "value": 31}),
            json!({"key": ["paris", 40], "value": {"name": "Paris", "pop": 2100000}}),
        ]
    );

    // load from stdin, then scans with bounds, limit and reverse.
    let input: String =
        (0..300).map(|i| format!("{{\"key\":[\"n\",{i}],\"value\":{{\"i\":{i}}}}}\n")).collect();
    ok(cli_with_stdin(a, &["load", "cities", "-"], Some(input.as_bytes())));
    let lines = json_lines(&ok(cli(
        a,
        &["scan", "cities", "--start", r#"["n",10]"#, "--end", r#"["n",13]"#],
    )));
    assert_eq!(
        lines.iter().map(|l| l["key"].clone()).collect::<Vec<_>>(),
        vec![json!(["n", 10]), json!(["n", 11]), json!(["n", 12])]
    );
    let lines = json_lines(&ok(cli(
        a,
        &["scan", "cities", "--prefix", r#"["n"]"#, "--reverse", "--limit", "2"],
    )));
    assert_eq!(
        lines,
        vec![
            json!({"key": ["n", 299], "value": {"i": 299}}),
            json!({"key": ["n", 298], "value": {"i": 298}})
        ]
    );
    assert_eq!(json_lines(&ok(cli(a, &["scan", "cities"]))).len(), 303);

    // A bad line stops the load with its line number.
    let bad =
        cli_with_stdin(a, &["load", "cities", "-"], Some(b"{\"key\":1,\"value\":2}\nnot json\n"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // del, then the key is gone.
    ok(cli(a, &["del", "cities", "lyon"]));
    assert_eq!(cli(a, &["get", "cities", "lyon"]).status.code(), Some(1));

    // range list shows the splits the 2 KiB chunks caused.
    let list = ok(cli(a, &["range", "list", "--json"]));
    let ranges = json_lines(&list);
    assert_eq!(ranges.len(), 1);
    assert!(ranges[0]["chunks"].as_array().expect("chunks").len() > 4, "{list}");
    let table = ok(cli(a, &["range", "list"]));
    assert!(table.starts_with("NAME"), "{table}");
    ok(cli(a, &["range", "compact", "cities"]));
    // range split cuts the chunk holding the key there; again, the
    // boundary is there already and nothing changes.
    let chunks = |list: &str| json_lines(list)[0]["chunks"].as_array().expect("chunks").len();
    let before = chunks(&ok(cli(a, &["range", "list", "--json"])));
    ok(cli(a, &["range", "split", "cities", "mmm-split-here"]));
    assert_eq!(chunks(&ok(cli(a, &["range", "list", "--json"]))), before + 1);
    ok(cli(a, &["range", "split", "cities", "mmm-split-here"]));
    assert_eq!(chunks(&ok(cli(a, &["range", "list", "--json"]))), before + 1);
    let nowhere = cli(a, &["range", "split", "nosuchrange", "k"]);
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("does not exist"));

    // Errors name the problem; unreachable nodes say where they looked.
    let nope = cli(a, &["get", "nosuchrange", "k"]);
    assert_eq!(nope.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nope.stderr).contains("does not exist"));
    ok(cli(a, &["range", "drop", "cities"]));
    assert!(ok(cli(a, &["range", "list", "--json"])).is_empty());
    assert!(node.stop());
    let down = cli(a, &["range", "list"]);
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach monotable"));
}

#[test]
fn bench_runs_against_a_node() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let out = ok(cli(
        node.addr,
        &["bench", "-c", "4", "-P", "2", "-n", "400", "-r", "100", "-t", "put,get,scan", "--json"],
    ));
    let results = json_lines(&out);
    assert_eq!(results.len(), 3, "{out}");
    for r in &results {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["requests"], 400, "{r}");
    }
    assert!(results[2]["records_per_sec"].as_f64().expect("number") > 0.0);
    assert!(node.stop());
}

// Regression: `--prefix '["a"]'` also matched the key "a\u0000b" (a byte
// prefix through the string's 0x00 0xFF escape), in scans and aggregates.
#[test]
fn a_tuple_prefix_matches_whole_elements_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "k"]));
    for key in [r#"["a"]"#, r#"["a",null]"#, r#"["a","x",1]"#, r#""a\u0000b""#, r#""a\u0000""#, "b"]
    {
        ok(cli(a, &["put", "k", key, "1"]));
    }
    let keys: Vec<Value> = json_lines(&ok(cli(a, &["scan", "k", "--prefix", r#"["a"]"#])))
        .into_iter()
        .map(|l| l["key"].clone())
        .collect();
    assert_eq!(keys, [json!("a"), json!(["a", null]), json!(["a", "x", 1])]);
    let reverse = json_lines(&ok(cli(a, &["scan", "k", "--prefix", r#"["a"]"#, "--reverse"])));
    assert_eq!(reverse.len(), 3);
    // A raw prefix stays a byte prefix.
    let raw = json_lines(&ok(cli(a, &["scan", "k", "--prefix", r#"{"$raw":"026100"}"#])));
    assert_eq!(raw.len(), 5);
    ok(cli(a, &["reducer", "create", "n", "--range", "k", "--builtin", "count"]));
    let count = ok(cli(a, &["agg", "n", "--fresh", "--prefix", r#"["a"]"#]));
    assert_eq!(count.trim(), "3");
    // MT.SCAN and MT.AGG over RESP read PREFIX the same way.
    let mut c = redis::Client::open(format!("redis://{}/0", node.resp_addr).as_str())
        .expect("url")
        .get_connection()
        .expect("connect");
    let rows: Vec<String> =
        redis::cmd("MT.SCAN").arg("k").arg("PREFIX").arg(r#"["a"]"#).query(&mut c).expect("scan");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let total: String = redis::cmd("MT.AGG")
        .arg("n")
        .arg("PREFIX")
        .arg(r#"["a"]"#)
        .arg("FRESH")
        .query(&mut c)
        .expect("agg");
    assert_eq!(total, "3");
}
