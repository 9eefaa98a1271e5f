//! The key order users see through the CLI: numbers sort numerically across
//! integers and floats (an integral float is the integer key), non-finite
//! floats print in `$float` forms that parse back to the same key, tuple
//! prefixes and group levels cover whole elements only, count_distinct
//! follows key equality, and a data directory of the older key format is
//! refused.

use std::fs;

use monotable_tests::{cli, ok, serve_exits, Node};
use serde_json::{json, Value};

fn json_lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

fn scan_keys(node: &Node, range: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["scan", range];
    args.extend_from_slice(extra);
    json_lines(&ok(cli(node.addr, &args))).into_iter().map(|l| l["key"].clone()).collect()
}

fn groups(node: &Node, reducer: &str, extra: &[&str]) -> Vec<(Value, Value)> {
    let mut args = vec!["agg", reducer, "--fresh"];
    args.extend_from_slice(extra);
    json_lines(&ok(cli(node.addr, &args)))
        .into_iter()
        .map(|l| (l["key"].clone(), l["value"].clone()))
        .collect()
}

fn agg(node: &Node, reducer: &str, extra: &[&str]) -> String {
    let mut args = vec!["agg", reducer, "--fresh"];
    args.extend_from_slice(extra);
    ok(cli(node.addr, &args)).trim().to_owned()
}

/// Postmortem: floats were a type of their own after every integer (2.5
/// sorted after 1000, 1.0 and 1 were two keys), so `--start 1 --end 2`
/// missed 1.5 and non-finite floats printed as the strings "inf"/"NaN".
#[test]
fn numbers_sort_numerically_and_non_finite_floats_round_trip() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "n"]));
    let keys = [
        r#"{"$float":"nan"}"#,
        r#"{"$float":"inf"}"#,
        "1e300",
        "1.5",
        "2",
        "[-1]",
        "0.5",
        "18446744073709551615",
        "1000",
        "1",
        r#"{"$float":"-inf"}"#,
        "[-1e300]",
        "9007199254740993",
        "9007199254740992.0",
        "inf",
        "NaN",
        r#""1""#,
        "[[1.5]]",
        "[1, \"x\"]",
    ];
    for (i, k) in keys.iter().enumerate() {
        ok(cli(a, &["put", "n", k, &i.to_string()]));
    }
    // The same keys again in another spelling: they overwrite, not add.
    ok(cli(a, &["put", "n", "2.0", "\"two\""]));
    ok(cli(a, &["put", "n", "[1.0, \"x\"]", "\"one-x\""]));
    ok(cli(a, &["put", "n", "--", "-0.0", "\"zero\""]));
    let want = [
        json!({"$float": "-inf"}),
        json!(-1e300),
        json!(-1),
        json!(0),
        json!(0.5),
        json!(1),
        json!([1, "x"]),
        json!(1.5),
        json!(2),
        json!(1000),
        json!(9007199254740992u64),
        json!(9007199254740993u64),
        json!(18446744073709551615u64),
        json!(1e300),
        json!({"$float": "inf"}),
        json!({"$float": "nan"}),
        json!([[1.5]]),
        json!("1"),
        json!("NaN"),
        json!("inf"),
    ];
    let got = scan_keys(&node, "n", &[]);
    // Tuples sort before numbers, strings before tuples: compare the numbers'
    // order, then where the rest went.
    let numbers: Vec<Value> =
        got.iter().filter(|k| !k.is_string() && *k != &json!([[1.5]])).cloned().collect();
    assert_eq!(numbers, want[..16].to_vec(), "{got:?}");
    assert_eq!(got.len(), want.len(), "{got:?}");
    assert_eq!(ok(cli(a, &["get", "n", "2"])).trim(), "\"two\"");
    assert_eq!(ok(cli(a, &["get", "n", "[1, \"x\"]"])).trim(), "\"one-x\"");
    assert_eq!(ok(cli(a, &["get", "n", "0"])).trim(), "\"zero\"");
    // Every printed key parses back to the same record.
    for k in &got {
        let text = k.to_string();
        let value = ok(cli(a, &["get", "n", "--", &text]));
        assert!(!value.trim().is_empty(), "{text}");
    }
    assert_eq!(ok(cli(a, &["get", "n", r#"{"$float":"nan"}"#])).trim(), "0");
    assert_eq!(ok(cli(a, &["get", "n", "inf"])).trim(), "14", "the string stays a string");
    ok(cli(a, &["del", "n", r#"{"$float":"inf"}"#]));
    assert!(!cli(a, &["get", "n", r#"{"$float":"inf"}"#]).status.success());

    ok(cli(a, &["reducer", "create", "c", "--range", "n", "--builtin", "count"]));
    // [1, 2): 1, (1, "x") and 1.5.
    assert_eq!(agg(&node, "c", &["--start", "1", "--end", "2"]), "3");
    assert_eq!(agg(&node, "c", &["--start", "0.5", "--end", "1.5"]), "3");
    assert_eq!(agg(&node, "c", &["--start", "1000", "--end", r#"{"$float":"nan"}"#]), "5");
    // A prefix on (1,) holds 1 and (1, "x"), not 1.5.
    let prefixed = scan_keys(&node, "n", &["--prefix", "[1]"]);
    assert_eq!(prefixed, [json!(1), json!([1, "x"])]);
    assert_eq!(agg(&node, "c", &["--prefix", "[1]"]), "2");
    let level1 = groups(&node, "c", &["--group-level", "1", "--start", "1", "--end", "3"]);
    assert_eq!(
        level1,
        [(json!(1), json!(2)), (json!(1.5), json!(1)), (json!(2), json!(1))],
        "1 and 1.5 are two groups"
    );
}

/// Postmortem: emitted float keys sorted after every integer and `1.0` was
/// another group than `1`, so view groups and sub-ranges split one number.
#[test]
fn emitted_numbers_order_and_group_numerically() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "src"]));
    for (i, n) in ["1", "1.5", "2", "2.0", "1.0", "\"1\"", "0.5", "1e300"].iter().enumerate() {
        ok(cli(a, &["put", "src", &i.to_string(), &format!("{{\"n\": {n}}}")]));
    }
    ok(cli(a, &["mapper", "create", "by_n", "--source", "src", "--target", "idx", "--field", "n"]));
    ok(cli(a, &["reducer", "create", "c", "--range", "idx", "--builtin", "count"]));
    assert_eq!(agg(&node, "c", &["--start", "1", "--end", "2"]), "3");
    assert_eq!(agg(&node, "c", &["--prefix", "[1]"]), "2");
    assert_eq!(
        groups(&node, "c", &["--group-level", "1"]),
        [
            (json!("1"), json!(1)),
            (json!(0.5), json!(1)),
            (json!(1), json!(2)),
            (json!(1.5), json!(1)),
            (json!(2), json!(2)),
            (json!(1e300), json!(1)),
        ]
    );
}

/// Postmortem: an integer key beyond 64 bits was rounded to a float by the
/// JSON parser and stored under another key; `1e400` became a string key.
#[test]
fn out_of_range_numbers_in_keys_are_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "n"]));
    for bad in ["18446744073709551616", "[\"a\", -18446744073709551616]", "1e400"] {
        let out = cli(a, &["put", "n", bad, "1"]);
        assert!(!out.status.success(), "{bad} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("-(2^64-1)..=2^64-1") || err.contains("out of range"), "{bad}: {err}");
    }
    ok(cli(a, &["put", "n", "[-18446744073709551615]", "1"]));
    assert_eq!(scan_keys(&node, "n", &[]).len(), 1);
    let load = "{\"key\": [\"a\", -18446744073709551615], \"value\": 2}\n";
    let out = monotable_tests::cli_with_stdin(a, &["load", "n", "-"], Some(load.as_bytes()));
    ok(out);
    assert_eq!(ok(cli(a, &["get", "n", "[\"a\", -18446744073709551615]"])).trim(), "2");
    let out = monotable_tests::cli_with_stdin(
        a,
        &["load", "n", "-"],
        Some(b"{\"key\": 18446744073709551616, \"value\": 2}\n"),
    );
    assert!(!out.status.success());
}

/// Postmortem: group ends were byte-prefix ends, so group_level 1 merged
/// ("a",) with "a\u0000b" (through the string's 0x00 0xFF escape), and a
/// key shorter than the level swallowed the longer keys after it.
#[test]
fn groups_cover_whole_elements() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "k"]));
    let keys = [
        r#"["a"]"#,
        r#"["a",null]"#,
        r#"["a",null,1]"#,
        r#"["a","x",1]"#,
        r#"["a","x",2]"#,
        r#""a\u0000b""#,
        r#""a\u0000""#,
        "b",
    ];
    for key in keys {
        ok(cli(a, &["put", "k", key, "1"]));
    }
    ok(cli(a, &["reducer", "create", "n", "--range", "k", "--builtin", "count"]));
    assert_eq!(
        groups(&node, "n", &["--group-level", "1"]),
        [
            (json!("a"), json!(5)),
            (json!("a\u{0}"), json!(1)),
            (json!("a\u{0}b"), json!(1)),
            (json!("b"), json!(1)),
        ]
    );
    assert_eq!(
        groups(&node, "n", &["--group-level", "2"]),
        [
            (json!("a"), json!(1)),
            (json!(["a", null]), json!(2)),
            (json!(["a", "x"]), json!(2)),
            (json!("a\u{0}"), json!(1)),
            (json!("a\u{0}b"), json!(1)),
            (json!("b"), json!(1)),
        ]
    );
    assert_eq!(groups(&node, "n", &["--group-level", "0"]), [(json!([]), json!(8))]);
    assert_eq!(
        groups(&node, "n", &["--group-level", "2", "--prefix", "[\"a\"]"]),
        [(json!("a"), json!(1)), (json!(["a", null]), json!(2)), (json!(["a", "x"]), json!(2))]
    );
}

/// Postmortem: count_distinct hashed the stored MessagePack bytes, so 1 and
/// 1.0 counted twice although they are one key.
#[test]
fn count_distinct_follows_key_equality() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "v"]));
    for (i, v) in ["1", "1.0", "\"1\"", "1", "2"].iter().enumerate() {
        ok(cli(a, &["put", "v", &i.to_string(), v]));
    }
    ok(cli(a, &["reducer", "create", "d", "--range", "v", "--builtin", "count_distinct"]));
    assert_eq!(agg(&node, "d", &[]), "3");
}

/// Postmortem: a record keyed by raw (non-tuple) bytes had its index rows
/// grouped by the row key bytes, so each such record was a group of its own.
#[test]
fn raw_keyed_records_group_by_their_emitted_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "src"]));
    let records = [
        (r#"{"$raw":"ff01"}"#, "paris"),
        (r#"{"$raw":"ff02"}"#, "paris"),
        (r#"{"$raw":"00"}"#, "lyon"),
        (r#"{"$raw":"0200"}"#, "paris"),
        (r#"["t", 1]"#, "lyon"),
    ];
    for (key, city) in records {
        ok(cli(a, &["put", "src", key, &json!({"city": city}).to_string()]));
    }
    ok(cli(
        a,
        &["mapper", "create", "by_city", "--source", "src", "--target", "idx", "--field", "city"],
    ));
    ok(cli(a, &["reducer", "create", "per_city", "--range", "idx", "--builtin", "count"]));
    assert_eq!(
        groups(&node, "per_city", &["--group-level", "1"]),
        [(json!("lyon"), json!(2)), (json!("paris"), json!(3))]
    );
}

/// Postmortem: the numeric key order changed the bytes of float keys; a
/// data directory written before would have been misread, not refused.
#[test]
fn a_data_directory_of_the_older_key_format_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    ok(cli(node.addr, &["range", "create", "n"]));
    ok(cli(node.addr, &["put", "n", "1.5", "1"]));
    assert!(node.stop());
    // Rewrite every descriptor's format field (bytes 8..12) to format 1.
    let mut patched = 0;
    for entry in fs::read_dir(dir.path().join("chunks")).expect("chunks") {
        let path = entry.expect("entry").path().join("DESCRIPTOR");
        let Ok(mut bytes) = fs::read(&path) else { continue };
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes(), "the current format is 2");
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        fs::write(&path, bytes).expect("write");
        patched += 1;
    }
    assert!(patched > 0);
    let err = serve_exits(dir.path(), &[]).expect("the node refuses to start");
    assert!(err.contains("format 1") && err.contains("monotable load"), "{err}");
    // Nothing was touched: restoring the format lets it start again.
    for entry in fs::read_dir(dir.path().join("chunks")).expect("chunks") {
        let path = entry.expect("entry").path().join("DESCRIPTOR");
        let Ok(mut bytes) = fs::read(&path) else { continue };
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        fs::write(&path, bytes).expect("write");
    }
    let node = Node::start(dir.path());
    assert_eq!(ok(cli(node.addr, &["get", "n", "1.5"])).trim(), "1");
}
