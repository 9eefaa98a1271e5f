//! `GET /metrics` (serve --http-listen): read by the Prometheus client
//! library's strict OpenMetrics parser (Debian's python3-prometheus-client,
//! installed by deploy/test.sh; tests/clients/openmetrics.py), its values
//! checked against known operations through both protocols, and against
//! INFO where the two report the same thing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use monotable_tests::{cli, err, ok, serve_exits, wait_views_idle, Node, RawResp};

/// One sample as the parser read it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, serde_json::Value>,
    value: f64,
}

/// An HTTP/1.1 request on a fresh connection: (status, head, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    (status, head.to_owned(), body.to_owned())
}

/// Scrapes `/metrics` and parses it strictly.
fn scrape(node: &Node) -> Vec<Sample> {
    let (status, head, body) = http(node.http_addr.expect("an HTTP listener"), "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("application/openmetrics-text"), "{head}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/openmetrics.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (deploy/test.sh installs python3-prometheus-client)");
    child.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "not valid OpenMetrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            Sample {
                name: v["name"].as_str().expect("name").to_owned(),
                labels: v["labels"].as_object().expect("labels").clone(),
                value: v["value"].as_f64().expect("value"),
            }
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels.iter().all(|(k, v)| s.labels.get(*k).and_then(|x| x.as_str()) == Some(*v))
        })
        .map(|s| s.value)
}

fn must(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

/// INFO's `cmdstat_NAME:calls=N` for `name`.
fn info_calls(resp: &mut RawResp, section: &str, field: &str) -> Option<String> {
    let reply = resp.call(&[b"INFO", section.as_bytes()]);
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_owned))
}

#[test]
fn metrics_count_what_both_protocols_did_and_agree_with_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("n"));
    let before = scrape(&node);
    let native = |c: &str| {
        value(&before, "monotable_requests_total", &[("protocol", "native"), ("command", c)])
    };
    assert_eq!(native("Write"), None, "nothing written yet");

    ok(cli(node.addr, &["range", "create", "r", "--chunk-size", "4KiB"]));
    for i in 0..7 {
        ok(cli(
            node.addr,
            &[
                "put",
                "r",
                &i.to_string(),
                &format!("{{\"a\":{},\"pad\":\"{}\"}}", i % 3, "x".repeat(900)),
            ],
        ));
    }
    for i in 0..4 {
        ok(cli(node.addr, &["get", "r", &i.to_string()]));
    }
    err(cli(node.addr, &["get", "missing", "1"]));
    ok(cli(
        node.addr,
        &["mapper", "create", "by_a", "--source", "r", "--target", "r_by_a", "--field", "a"],
    ));
    ok(cli(node.addr, &["reducer", "create", "n", "--range", "r_by_a", "--builtin", "count"]));
    wait_views_idle(node.addr, 60);
    ok(cli(node.addr, &["range", "compact", "r"]));

    let mut resp = RawResp::connect(node.resp_addr, 30);
    for k in ["a", "b", "c"] {
        resp.call(&[b"SET", k.as_bytes(), b"text"]);
    }
    resp.call(&[b"GET", b"a"]);
    resp.call(&[b"GET", b"zz"]);
    let incr = resp.call(&[b"INCR", b"a"]);
    assert!(incr.starts_with(b"-ERR"), "{}", String::from_utf8_lossy(&incr));
    // An error whose first word a script chose: quotes and backslashes
    // must be escaped in the label, or the whole scrape is unreadable.
    let odd = resp.call(&[b"EVAL", br#"return redis.error_reply('Q"\\x{ yes')"#, b"0"]);
    assert!(odd.starts_with(b"-Q\"\\x{"), "{}", String::from_utf8_lossy(&odd));
    let cmdstat_set = info_calls(&mut resp, "commandstats", "cmdstat_set").expect("cmdstat_set");
    let errorstat = info_calls(&mut resp, "errorstats", "errorstat_ERR").expect("errorstat_ERR");

    let after = scrape(&node);
    let req = |p: &str, c: &str| {
        must(&after, "monotable_requests_total", &[("protocol", p), ("command", c)])
    };
    let errs = |p: &str, c: &str| {
        must(&after, "monotable_request_errors_total", &[("protocol", p), ("command", c)])
    };
    assert_eq!(req("native", "Write"), 7.0);
    assert_eq!(errs("native", "Write"), 0.0);
    assert_eq!(req("native", "Get"), 5.0);
    assert_eq!(errs("native", "Get"), 1.0, "the get of a missing range");
    assert_eq!(req("resp", "set"), 3.0);
    assert_eq!(req("resp", "get"), 2.0);
    assert_eq!((req("resp", "incr"), errs("resp", "incr")), (1.0, 1.0));
    // Every request lands in one bucket of its histogram.
    for (p, c) in [("native", "Write"), ("native", "Get"), ("resp", "set")] {
        let l = [("protocol", p), ("command", c)];
        assert_eq!(must(&after, "monotable_request_duration_seconds_count", &l), req(p, c));
        assert_eq!(
            must(
                &after,
                "monotable_request_duration_seconds_bucket",
                &[l[0], l[1], ("le", "+Inf")]
            ),
            req(p, c)
        );
        assert!(must(&after, "monotable_request_duration_seconds_sum", &l) > 0.0);
    }
    // INFO reads the same counters.
    assert!(cmdstat_set.starts_with("calls=3,"), "{cmdstat_set}");
    assert_eq!(
        errorstat,
        format!(
            "count={}",
            must(&after, "monotable_resp_error_replies_total", &[("prefix", "ERR")])
        )
    );

    // Storage: the writes were synced, the range split and was compacted.
    let grew = |name: &str| must(&after, name, &[]) - value(&before, name, &[]).unwrap_or(0.0);
    assert!(grew("monotable_fsyncs_total") >= 1.0);
    assert!(grew("monotable_log_written_bytes_total") >= 7.0 * 900.0);
    assert!(grew("monotable_splits_total") >= 1.0, "7 KB of records in 4 KiB chunks");
    assert!(grew("monotable_compactions_total") >= 1.0);
    let chunks = must(&after, "monotable_chunks", &[("range", "r")]);
    assert!(chunks >= 2.0, "{chunks} chunks");
    assert!(must(&after, "monotable_range_live_bytes", &[("range", "r")]) >= 7.0 * 900.0);
    assert_eq!(must(&after, "monotable_chunks_unavailable", &[("range", "r")]), 0.0);
    assert!(must(&after, "monotable_group_commit_chunks_count", &[]) >= 1.0);
    assert!(must(&after, "monotable_resident_memory_bytes", &[]) > 1e6);

    // Views: caught up, the mapper wrote a row per record, the tree has a level.
    let m = [("view", "by_a"), ("kind", "mapper")];
    assert_eq!(must(&after, "monotable_view_pending_changes", &m), 0.0);
    assert_eq!(must(&after, "monotable_view_rows", &m), 7.0);
    assert_eq!(must(&after, "monotable_view_errors", &m), 0.0);
    assert_eq!(must(&after, "monotable_view_backfilling", &m), 0.0);
    assert!(
        must(&after, "monotable_reduce_tree_levels", &[("view", "n"), ("kind", "reducer")]) >= 1.0
    );

    // Connections: the RESP one is open; the CLI's came and went.
    assert_eq!(must(&after, "monotable_connections", &[("protocol", "resp")]), 1.0);
    assert!(
        must(&after, "monotable_connections_received_total", &[("protocol", "native")]) >= 14.0
    );
}

#[test]
fn other_paths_and_methods_are_refused_and_the_listener_is_configurable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("n"));
    let http_addr = node.http_addr.expect("an HTTP listener");
    let (status, _, body) = http(http_addr, "GET", "/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");
    let (status, head, _) = http(http_addr, "POST", "/metrics");
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get, head"), "{head}");
    let (status, _, body) = http(http_addr, "HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""));

    // A listener that cannot be had stops the start, saying which flag.
    let taken = serve_exits(&dir.path().join("b"), &["--http-listen", &http_addr.to_string()])
        .expect("exits");
    assert!(taken.contains("--http-listen") && taken.contains(&http_addr.to_string()), "{taken}");
    let bad = serve_exits(&dir.path().join("c"), &["--http-listen", "nowhere"]).expect("exits");
    assert!(bad.contains("--http-listen \"nowhere\"") && bad.contains("or off"), "{bad}");
    // off: no listener, and the node serves.
    let quiet = Node::start_with(&dir.path().join("d"), &["--http-listen", "off"]);
    assert_eq!(quiet.http_addr, None);
    assert!(quiet.log().iter().all(|l| !l.contains("serving HTTP")));
}

#[test]
fn logs_as_json_lines_and_slow_requests_are_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    // JSON lines: every line one object with the standard fields.
    let mut child = Command::new(monotable_tests::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--resp-listen", "off", "--http-listen", "off"])
        .args(["--log-format", "json", "--log-level", "info"])
        .arg("--data-dir")
        .arg(dir.path().join("j"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut serving = None;
    for line in std::io::BufRead::lines(stderr) {
        let line = line.expect("a line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        if v["message"] == "monotable is serving" {
            serving = Some(v);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let serving = serving.expect("the node said it serves");
    assert_eq!(serving["level"], "INFO");
    assert!(serving["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{serving}");

    let bad = serve_exits(&dir.path().join("b"), &["--log-level", "info,=="]).expect("exits");
    assert!(bad.contains("--log-level"), "{bad}");

    // A script that runs millions of instructions takes more than 1 ms.
    let busy = br"local t = 0 for i = 1, 3000000 do t = t + i end return t";
    let node = Node::start_with(&dir.path().join("s"), &["--slow-request-ms", "1"]);
    let mut resp = RawResp::connect(node.resp_addr, 60);
    assert!(resp.call(&[b"EVAL", busy, b"0"]).starts_with(b":"));
    let slow = |node: &Node| -> Vec<String> {
        node.log().into_iter().filter(|l| l.contains("slow request")).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while slow(&node).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = slow(&node);
    let line = lines.iter().find(|l| l.contains("command=\"eval\"")).expect("the script logged");
    assert!(line.contains("protocol=\"resp\"") && line.contains("WARN"), "{line}");
    assert!(!line.contains("3000000"), "arguments are not logged: {line}");
    // 0: nothing is logged, however slow.
    let quiet = Node::start_with(&dir.path().join("q"), &["--slow-request-ms", "0"]);
    let mut resp = RawResp::connect(quiet.resp_addr, 60);
    assert!(resp.call(&[b"EVAL", busy, b"0"]).starts_with(b":"));
    ok(cli(quiet.addr, &["range", "create", "r"]));
    assert!(slow(&quiet).is_empty(), "{:?}", slow(&quiet));
}

/// On a cluster of three, every Raft group (the meta range's and the
/// chunk's) has one leader among the nodes' figures, all agree on its
/// term, and the leader reports each follower's lag.
#[test]
fn raft_figures_of_a_cluster_agree_across_nodes() {
    use monotable_tests::cluster::start_cluster;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let nodes = start_cluster(&dirs);
    ok(cli(nodes[0].addr, &["range", "create", "r"]));
    for i in 0..20 {
        ok(cli(nodes[i % 3].addr, &["put", "r", &i.to_string(), "1"]));
    }
    // Each group (the meta range's and the chunk's): one leader, one term.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let scrapes: Vec<Vec<Sample>> = nodes.iter().map(scrape).collect();
        let groups: std::collections::BTreeSet<String> = scrapes
            .iter()
            .flatten()
            .filter(|s| s.name == "monotable_raft_term")
            .map(|s| s.labels["group"].as_str().unwrap_or_default().to_owned())
            .collect();
        let agreed = groups.len() >= 2
            && groups.iter().all(|g| {
                let l = [("group", g.as_str())];
                let terms: Vec<f64> =
                    scrapes.iter().filter_map(|s| value(s, "monotable_raft_term", &l)).collect();
                let leaders: f64 =
                    scrapes.iter().filter_map(|s| value(s, "monotable_raft_leader", &l)).sum();
                let lags: Vec<f64> = scrapes
                    .iter()
                    .flatten()
                    .filter(|s| {
                        s.name == "monotable_raft_follower_lag" && s.labels["group"] == g.as_str()
                    })
                    .map(|s| s.value)
                    .collect();
                terms.len() == 3
                    && terms.iter().all(|t| *t == terms[0] && *t >= 1.0)
                    && leaders == 1.0
                    && lags.len() == 2
                    && lags.iter().all(|l| *l == 0.0)
            });
        if agreed {
            break;
        }
        if std::time::Instant::now() > deadline {
            let raft: Vec<String> = scrapes
                .iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    s.iter().filter(|s| s.name.starts_with("monotable_raft")).map(move |s| {
                        format!("node {}: {} {:?} {}", i + 1, s.name, s.labels, s.value)
                    })
                })
                .collect();
            panic!("Raft figures never agreed:\n{}", raft.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = scrape(&nodes[0]);
    let groups: f64 =
        first.iter().filter(|s| s.name == "monotable_raft_groups").map(|s| s.value).sum();
    assert_eq!(groups, 2.0, "the meta range's group and the chunk's");
    assert!(value(&first, "monotable_raft_term", &[("kind", "meta")]).is_some());
}

/// Postmortem: 64 clients that sent requests and never read the replies
/// held every HTTP connection for good, and no scrape got through. A
/// connection now lives 30 s at most (5 more to finish what is under way).
#[test]
fn clients_that_never_read_do_not_hold_the_listener_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&dir.path().join("n"));
    let addr = node.http_addr.expect("an HTTP listener");
    let mut stuck = Vec::new();
    for _ in 0..64 {
        let s = TcpStream::connect(addr).expect("connect");
        let s2 = small_receive_buffer(s);
        let mut w = &s2;
        for _ in 0..2000 {
            if w.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                break;
            }
        }
        stuck.push(s2);
    }
    // A scrape gets through once the stuck connections are closed.
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let got = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out.starts_with("HTTP/1.1 200"))
        })
        .join()
        .expect("joined");
        if got == Some(true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no scrape got through in 120 s");
    }
    eprintln!("a scrape got through after {:?}", started.elapsed());
    drop(stuck);
}

/// `s` with a 2 KiB receive buffer, as a client that reads nothing holds
/// it: the server's replies soon fill it, and the server's writes stall.
fn small_receive_buffer(s: TcpStream) -> TcpStream {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 2048;
    // SAFETY: a valid socket and an option of the size given.
    let set = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt");
    s.set_write_timeout(Some(Duration::from_millis(200))).expect("timeout");
    s
}
