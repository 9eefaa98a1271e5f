//! The status page (`GET /` on serve --http-listen), loaded in headless
//! Chromium (Debian's `chromium`, installed by deploy/test.sh): what the
//! browser built from it (`--dump-dom`) is checked against what the
//! command line reports of the same node (`range list --json`, `views
//! --json`, `job list --json`).

use std::net::SocketAddr;
use std::process::Command;

use monotable_tests::{cli, load_lines, ok, views_json, wait_views_idle, Node, Redis};

/// The DOM Chromium built from `url`.
fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", url])
        .output()
        .expect("chromium (deploy/test.sh installs Debian's chromium)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The part of `dom` from the element with `id` to the end of its table.
fn table<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let end = dom[start..].find("</table>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// The table row whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .split("<tr>")
        .find(|r| cells(r).first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in {table}"))
}

/// The text of each cell of `row`.
fn cells(row: &str) -> Vec<String> {
    row.split("</td>")
        .filter(|c| c.contains("<td"))
        .map(|c| {
            // Strip tags; the text is what is left.
            let mut text = String::new();
            let mut in_tag = false;
            for ch in c.chars() {
                match ch {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    c if !in_tag => text.push(c),
                    _ => {}
                }
            }
            text.trim().to_owned()
        })
        .collect()
}

fn json_lines(out: String) -> Vec<serde_json::Value> {
    out.lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

#[test]
fn chromium_shows_the_nodes_ranges_views_trees_sinks_and_jobs_the_cli_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("n"));
    let http: SocketAddr = node.http_addr.expect("an HTTP listener");
    let redis = Redis::start();

    ok(cli(node.addr, &["range", "create", "events", "--chunk-size", "2KiB"]));
    let lines: Vec<serde_json::Value> = (0..2500)
        .map(|i| serde_json::json!({"key": i, "value": {"city": format!("c{}", i % 40), "n": i}}))
        .collect();
    load_lines(node.addr, "events", &lines);
    ok(cli(node.addr, &["reducer", "create", "total", "--range", "events", "--builtin", "count"]));
    ok(cli(
        node.addr,
        &[
            "mapper", "create", "by_city", "--source", "events", "--target", "cities", "--field",
            "city",
        ],
    ));
    // A Lua mapper whose errors carry markup: shown as text, never run.
    let lua = dir.path().join("bad.lua");
    std::fs::write(
        &lua,
        "function map(k, v)\n  if v.n % 100 == 0 then error('<img id=\"pwned\" src=x>') end\n  emit(v.n, 1)\nend\n",
    )
    .expect("write");
    ok(cli(
        node.addr,
        &[
            "mapper",
            "create",
            "failing",
            "--source",
            "events",
            "--target",
            "nums",
            "--lua",
            &lua.to_string_lossy(),
        ],
    ));
    ok(cli(
        node.addr,
        &["redis", "sink", "create", "mirror", "--range", "cities", "--url", &redis.url(1)],
    ));
    ok(cli(
        node.addr,
        &[
            "job",
            "run",
            "per_city",
            "--input",
            "range:events",
            "--output",
            "range:counts",
            "--map-field",
            "city",
            "--reduce-builtin",
            "count",
        ],
    ));
    wait_views_idle(node.addr, 120);

    let dom = chromium_dom(&format!("http://{http}/"));
    assert!(dom.contains("Monotable node 1"), "{dom}");

    // Nodes: this one, live, leading the meta range.
    let nodes = table(&dom, "nodes");
    let me = cells(row(nodes, "1"));
    assert_eq!(
        (me[1].as_str(), me[2].as_str(), me[3].as_str()),
        (node.addr.to_string().as_str(), "live", "leader")
    );

    // Ranges: chunks and records as `range list` says.
    let ranges = table(&dom, "ranges");
    for r in json_lines(ok(cli(node.addr, &["range", "list", "--json"]))) {
        let name = r["name"].as_str().expect("name");
        let chunks = r["chunks"].as_array().expect("chunks");
        let records: u64 = chunks.iter().map(|c| c["records"].as_u64().expect("records")).sum();
        let shown = cells(row(ranges, name));
        assert_eq!(shown[1], chunks.len().to_string(), "{name}");
        assert_eq!(shown[2], records.to_string(), "{name}");
        assert_eq!(shown[6], "ok", "{name}");
    }

    // Views: lag, rows and errors as `views --json` says; the error text
    // is escaped (no element was made from it).
    let views = table(&dom, "views");
    for v in views_json(node.addr).iter().filter(|v| v["kind"] != "sink") {
        let name = v["name"].as_str().expect("name");
        let shown = cells(row(views, name));
        assert_eq!(shown[1], v["kind"].as_str().expect("kind"));
        assert_eq!(shown[6], "0", "{name} caught up");
        assert_eq!(shown[7], v["rows_written"].to_string(), "{name}");
        assert_eq!(shown[8], v["errors"].to_string(), "{name}");
        assert_eq!(shown[9], "done", "{name}");
    }
    assert_eq!(cells(row(views, "failing"))[8], "25");
    assert!(!dom.contains("<img id=\"pwned\""), "markup from an error became an element");
    assert!(dom.contains("&lt;img id=\"pwned\" src=x&gt;"), "the error is shown as text");

    // The reduce tree: one row of boxes per level, as many boxes as parts
    // (up to 48), the range's chunks at the bottom.
    let total = views_json(node.addr).into_iter().find(|v| v["name"] == "total").expect("total");
    let tree = &total["tree"];
    let levels = tree["levels"].as_u64().expect("levels");
    assert!(levels >= 2, "2500 records in 2 KiB chunks make a tree: {tree}");
    let picture = &dom[dom.find("data-reducer=\"total\"").expect("a picture")..];
    let picture = &picture[..picture[1..].find("class=\"tree\"").map_or(picture.len(), |e| e + 1)];
    assert_eq!(picture.matches("data-level=").count() as u64, levels);
    let chunks = tree["chunks"].as_u64().expect("chunks");
    let bottom = &picture[picture.find("data-level=\"0\"").expect("level 0")..];
    let bottom = &bottom[..bottom.find("</div>").expect("end of level")];
    assert!(bottom.contains(&format!("data-parts=\"{chunks}\"")), "{bottom}");
    assert_eq!(bottom.matches("class=\"part").count() as u64, chunks.min(48));

    // The sink and the job.
    let sink = cells(row(table(&dom, "sinks"), "mirror"));
    assert_eq!((sink[1].as_str(), sink[4].as_str()), ("cities", "0"));
    let jobs = json_lines(ok(cli(node.addr, &["job", "list", "--json"])));
    let job = cells(row(table(&dom, "jobs"), "per_city"));
    assert_eq!(job[1], "done");
    assert_eq!(job[6], jobs[0]["rows_out"].to_string());

    // ?refresh=N reloads; a bad N is ignored.
    assert!(chromium_dom(&format!("http://{http}/?refresh=7"))
        .contains("http-equiv=\"refresh\" content=\"7\""));
    assert!(!chromium_dom(&format!("http://{http}/?refresh=0")).contains("http-equiv=\"refresh\""));
}

/// On a node with a password the page, which asks for none, withholds
/// the data it would show: keys (chunk bounds) and function errors.
#[test]
fn with_a_password_keys_and_error_texts_are_withheld() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").expect("write");
    let node =
        Node::start_with(&dir.path().join("n"), &["--requirepass-file", &pw.to_string_lossy()]);
    let with_pw = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--password-file", pw.to_str().expect("utf-8")]);
        ok(cli(node.addr, &all))
    };
    with_pw(&["range", "create", "people", "--chunk-size", "1KiB"]);
    for i in 0..40 {
        with_pw(&[
            "put",
            "people",
            &format!("alice{i:03}@example.com"),
            &format!("{{\"ssn\":\"123-45-{i:04}\"}}"),
        ]);
    }
    let lua = dir.path().join("leak.lua");
    std::fs::write(&lua, "function map(k, v) error('bad record ' .. v.ssn) end\n").expect("write");
    with_pw(&[
        "mapper",
        "create",
        "leaky",
        "--source",
        "people",
        "--target",
        "out",
        "--lua",
        &lua.to_string_lossy(),
    ]);
    let http = node.http_addr.expect("an HTTP listener");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let dom = loop {
        let dom = chromium_dom(&format!("http://{http}/"));
        if row(table(&dom, "views"), "leaky").contains("40") || std::time::Instant::now() > deadline
        {
            break dom;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(cells(row(table(&dom, "ranges"), "people"))[1].parse::<u32>().expect("chunks") > 1);
    assert!(!dom.contains("example.com"), "a key shows");
    assert!(!dom.contains("123-45-"), "an error's text shows");
    assert!(dom.contains("hidden"));
}
