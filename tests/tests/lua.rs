//! Lua mappers through the CLI: a real function against an oracle, and
//! hostile ones (endless loop, memory bomb, io/os access, runtime and syntax
//! errors), each a clear error while the node stays healthy.

use std::time::{Duration, Instant};

use monotable_tests::{cli, cli_with_stdin, ok, Node};
use serde_json::Value;

fn views(addr: std::net::SocketAddr) -> Vec<Value> {
    ok(cli(addr, &["views", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// Waits until every mapper has finished its backfill and has no pending changes.
fn settled(addr: std::net::SocketAddr) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = views(addr);
        if v.iter().all(|v| v["backfill"].is_null() && v["pending_changes"] == 0) {
            return v;
        }
        assert!(Instant::now() < deadline, "views never settled: {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lua_mappers_work_and_hostile_ones_are_contained() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let a = node.addr;
    ok(cli(a, &["range", "create", "people", "--chunk-size", "4KiB"]));
    let input: String = (0..200)
        .map(|i| {
            format!("{{\"key\":{i},\"value\":{{\"city\":\"c{}\",\"age\":{}}}}}\n", i % 5, i % 70)
        })
        .collect();
    ok(cli_with_stdin(a, &["load", "people", "-"], Some(input.as_bytes())));

    let write = |name: &str, src: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, src).expect("write lua");
        path.to_string_lossy().into_owned()
    };
    let good = write(
        "good.lua",
        "function map(key, v)\n  if v.age >= 40 then emit({v.city, v.age}, key[1]) end\nend\n",
    );
    ok(cli(
        a,
        &["mapper", "create", "old", "--source", "people", "--target", "old_idx", "--lua", &good],
    ));
    let hostile = [
        ("loop", "function map(k, v) while true do end end", "instruction limit"),
        ("bomb", "function map(k, v) local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 65536) .. i end end", "memory"),
        ("io", "function map(k, v) io.open('/etc/passwd') end", "io"),
        ("os", "function map(k, v) os.execute('true') end", "os"),
        ("boom", "function map(k, v) error('boom at ' .. k[1]) end", "boom at"),
    ];
    for (name, src, _) in hostile {
        let path = write(&format!("{name}.lua"), src);
        ok(cli(
            a,
            &[
                "mapper",
                "create",
                name,
                "--source",
                "people",
                "--target",
                &format!("{name}_idx"),
                "--lua",
                &path,
            ],
        ));
    }
    let syntax = write("syntax.lua", "function map(k, v");
    let refused = cli(
        a,
        &[
            "mapper", "create", "syntax", "--source", "people", "--target", "s_idx", "--lua",
            &syntax,
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not compile"));

    let status = settled(a);
    for (name, _, needle) in hostile {
        let v = status.iter().find(|v| v["name"] == name).expect("listed");
        assert_eq!(v["errors"], 200, "{name}: {v}");
        let err = v["last_error"].as_str().expect("error text").to_lowercase();
        assert!(err.contains(needle), "{name}: {err}");
    }
    let old = status.iter().find(|v| v["name"] == "old").expect("listed");
    assert_eq!(old["errors"], 0);

    // The good mapper's rows equal the oracle: ages 40..69 of 0..200.
    let rows: Vec<Value> = ok(cli(a, &["scan", "old_idx"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let want = (0..200).filter(|i| i % 70 >= 40).count();
    assert_eq!(rows.len(), want);
    for r in &rows {
        // An index row: [emitted key, source key (bytes)].
        let k = r["key"].as_array().expect("an index row");
        let emitted = k[0].as_array().expect("the emitted key");
        let id = r["value"].as_u64().expect("the source id");
        assert_eq!(emitted[0], format!("c{}", id % 5));
        assert_eq!(emitted[1], id % 70);
        assert!(k[1]["$bytes"].is_string(), "{r}");
    }
    // Lua reducers: a sum with rereduce, and one whose output only grows.
    let sum = write(
        "sum.lua",
        "function reduce(keys, values, rereduce)\n  local s = 0\n  for _, v in ipairs(values) do s = s + v end\n  return s\nend\n",
    );
    ok(cli(a, &["reducer", "create", "lua_sum", "--range", "old_idx", "--lua", &sum]));
    let total: u64 = rows.iter().map(|r| r["value"].as_u64().expect("id")).sum();
    assert_eq!(ok(cli(a, &["agg", "lua_sum", "--fresh"])).trim(), total.to_string());
    let grow = write(
        "grow.lua",
        "function reduce(k, values, rereduce)\n  local t = {}\n  for _, v in ipairs(values) do\n    if type(v) == 'table' then for _, x in ipairs(v) do t[#t + 1] = x end\n    else t[#t + 1] = string.rep('y', 200) end\n  end\n  return t\nend\n",
    );
    ok(cli(a, &["reducer", "create", "grow", "--range", "old_idx", "--lua", &grow]));
    let refused = cli(a, &["agg", "grow", "--fresh"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("at most half the size"));

    // The node is healthy: it still reads, writes and answers.
    ok(cli(a, &["put", "people", "9999", r#"{"city":"cx","age":99}"#]));
    assert_eq!(ok(cli(a, &["get", "people", "9999"])).trim(), r#"{"age":99,"city":"cx"}"#);
    assert!(node.stop());
}
