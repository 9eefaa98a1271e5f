//! `deploy/local-cluster.sh`: three nodes started, one killed with
//! SIGKILL and started again (by running the script again, then with
//! `start-node K`) while the others run, then all stopped; and a cluster
//! grown from one node to five under a write load with views registered,
//! then shrunk by two.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use monotable_tests::binary;
use monotable_tests::cluster::{status, wait_until};

/// The script, the nodes' directory and ports; stops the nodes on drop
/// (a failed test too).
struct Script {
    path: PathBuf,
    dir: tempfile::TempDir,
    base: u16,
    resp_base: u16,
    http_base: u16,
}

impl Script {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(&self.path)
            .args(args)
            .env("MONOTABLE", binary())
            .env("DIR", self.dir.path())
            .env("BASE", self.base.to_string())
            .env("RESP_BASE", self.resp_base.to_string())
            .env("HTTP_BASE", self.http_base.to_string())
            .env("EXTRA", "--raft-heartbeat-ms 50 --raft-election-timeout-ms 400")
            .output()
            .expect("bash runs")
    }

    fn addr(&self, node: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + node))
    }

    fn pid(&self, node: u16) -> u32 {
        let file = self.dir.path().join(format!("node-{node}.pid"));
        std::fs::read_to_string(file).expect("pid file").trim().parse().expect("a pid")
    }

    /// Whether every node of 1..=n is live, as node `through` sees it.
    fn all_live(&self, through: u16, n: u16) -> bool {
        let Some(s) = status(self.addr(through)) else { return false };
        let live: Vec<String> = s["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["live"] == true)
            .filter_map(|n| n["addr"].as_str().map(str::to_owned))
            .collect();
        (1..=n).all(|i| live.contains(&self.addr(i).to_string()))
    }

    fn kill_9(&self, node: u16) {
        let pid = self.pid(node);
        let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
        assert!(killed.success());
        wait_until("the killed node's port is free", 30, || {
            std::net::TcpStream::connect(self.addr(node)).is_err()
        });
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        // A failed test keeps the nodes' logs and data for a look.
        if std::thread::panicking() {
            if let Ok(empty) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, empty).keep();
                eprintln!("the nodes' logs and data are kept in {}", kept.display());
            }
        }
    }
}

/// The script over a new directory and free ports.
fn script() -> Script {
    // Node i listens on BASE+i: each base is one below five ports picked
    // outside the ephemeral range (nodes start minutes apart, while
    // outgoing connections take ephemeral ports).
    let [base, resp_base, http_base] = [(); 3].map(|()| monotable_tests::stable_ports(5) - 1);
    Script {
        path: Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh"),
        dir: tempfile::tempdir().expect("tmp"),
        base,
        resp_base,
        http_base,
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Postmortem: a killed node could not be started again while the others
/// ran: the script refused ("node 1 already runs; stop first").
#[test]
fn a_killed_node_of_a_local_cluster_starts_again_alone() {
    let script = script();
    let out = script.run(&["3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(script.all_live(1, 3), "{}", text(&out));

    // Node 2 killed: running the script again starts it alone.
    let survivors = [script.pid(1), script.pid(3)];
    script.kill_9(2);
    let out = script.run(&["3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("started 1 node(s) (2) of 3"), "{}", text(&out));
    assert_eq!([script.pid(1), script.pid(3)], survivors, "the running nodes were left alone");
    wait_until("node 2 live again", 60, || script.all_live(1, 3));

    // Node 1 (the founder) killed: `start-node 1` starts it on its data.
    script.kill_9(1);
    let out = script.run(&["start-node", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until("node 1 live again", 60, || script.all_live(2, 3) && script.all_live(1, 3));
    let out = script.run(&["start-node", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("node 1 already runs"), "{}", text(&out));
    let out = script.run(&["status"]);
    assert!(out.status.success(), "{}", text(&out));

    // All running: nothing to start; `stop` stops every one.
    let out = script.run(&["3"]);
    assert!(text(&out).contains("all 3 node(s) already run"), "{}", text(&out));
    let out = script.run(&["stop"]);
    assert!(text(&out).contains("stopped 3 node(s)"), "{}", text(&out));
    assert!((1..=3).all(|i| std::net::TcpStream::connect(script.addr(i)).is_err()));
}

/// Each chunk of `range` through `addr`: its replicas and its Raft
/// voters, sorted; empty if the range cannot be described.
fn chunks(addr: SocketAddr, range: &str) -> Vec<(Vec<u64>, Vec<u64>)> {
    let out = monotable_tests::cli(addr, &["range", "describe", range]);
    if !out.status.success() {
        return Vec::new();
    }
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ids = |v: &serde_json::Value| {
        let mut ids: Vec<u64> =
            v.as_array().into_iter().flatten().filter_map(serde_json::Value::as_u64).collect();
        ids.sort_unstable();
        ids
    };
    d["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (ids(&c["replicas"]), ids(&c["voters"])))
        .collect()
}

const RANGES: [&str; 6] = ["r", "a", "b", "c", "d", "e"];

/// The last warnings, errors and panics of every node's log, for a
/// failure's message (the nodes and their logs go with the test).
fn warnings(script: &Script) -> String {
    let mut out = String::new();
    for node in 1..=5 {
        let Ok(log) = std::fs::read_to_string(script.dir.path().join(format!("node-{node}.log")))
        else {
            continue;
        };
        let all: Vec<&str> = log.lines().collect();
        // Every panic, with the message on the lines after it.
        for (i, _) in all.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
            for line in &all[i..(i + 3).min(all.len())] {
                out.push_str(&format!("node {node}: {line}\n"));
            }
        }
        let lines: Vec<&str> = all
            .iter()
            .copied()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .filter(|l| !l.contains("openraft::replication"))
            .filter(|l| !l.contains("openraft::network::snapshot_transport"))
            .collect();
        for line in &lines[lines.len().saturating_sub(8)..] {
            out.push_str(&format!("node {node}: {line}\n"));
        }
    }
    out
}

/// Whether every chunk of every range has 3 replicas among `nodes`, with
/// its voters the same, and the chunk replicas per node are within one
/// range's chunks of each other; the loads when so.
fn placed(addr: SocketAddr, nodes: &[u64]) -> Option<std::collections::BTreeMap<u64, usize>> {
    let mut load: std::collections::BTreeMap<u64, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    let mut widest = 0;
    for range in RANGES {
        let chunks = chunks(addr, range);
        if chunks.is_empty() {
            return None;
        }
        widest = widest.max(chunks.len());
        for (replicas, voters) in chunks {
            if replicas.len() != 3 || replicas != voters {
                return None;
            }
            for id in replicas {
                *load.get_mut(&id)? += 1;
            }
        }
    }
    let (max, min) = (load.values().max()?, load.values().min()?);
    (max - min <= widest).then_some(load)
}

/// A cluster grows from one node to five under writes to six ranges (one
/// with a mapper and reducers), one `deploy/local-cluster.sh N` at a time:
/// replicas spread to the new nodes (each range short of its three
/// replicas takes the first joiners; then leaders move replicas until
/// the chunk replicas per node are even), each new replica copying the
/// chunks' segments. Two nodes are then removed (drained: their replicas
/// move first). Every acknowledged write is there, the views are exact,
/// and every chunk has its three replicas as voters.
#[test]
fn a_cluster_grows_to_five_nodes_and_shrinks_by_two_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let script = script();
    let out = script.run(&["1"]);
    assert!(out.status.success(), "{}", text(&out));
    let first = script.addr(1);
    for range in RANGES {
        monotable_tests::ok(monotable_tests::cli(
            first,
            &["range", "create", range, "--replicas", "3"],
        ));
    }
    let views = [
        "mapper create by_city --source r --target idx --field city --value-field amount",
        "reducer create n --range r --builtin count",
        "reducer create total --range idx --builtin sum",
    ];
    for v in views {
        let args: Vec<&str> = v.split(' ').collect();
        monotable_tests::ok(monotable_tests::cli(first, &args));
    }
    // Writes through every node up, each key once: an acknowledged key
    // must be there with its value; one whose answer was lost may be.
    let rt = monotable_tests::runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let addrs: Vec<SocketAddr> = (1..=5).map(|i| script.addr(i)).collect();
    let loader = {
        let (stop, acked, addrs) = (stop.clone(), acked.clone(), addrs.clone());
        rt.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let addr = addrs[(i % 5) as usize];
                let Ok(Ok(c)) = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    monotable_client::Client::connect(addr),
                )
                .await
                else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                for _ in 0..20 {
                    i += 1;
                    let range = RANGES[(i % 6) as usize];
                    let key = format!("k{i:06}");
                    let amount = (i % 97) as i64;
                    let city = ["paris", "oslo"][(i % 2) as usize];
                    let doc = serde_json::json!({"city": city, "amount": amount});
                    let put = c.put(range, &key, monotable_tests::msgpack(&doc));
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(std::time::Duration::from_secs(5), put).await
                    {
                        acked.lock().expect("acked").push((range.to_owned(), key, amount));
                    } else {
                        break;
                    }
                }
            }
        })
    };
    let count = || acked.lock().expect("acked").len();
    wait_until("writes on one node", 60, || count() > 200);
    for n in 2..=5u16 {
        let out = script.run(&[&n.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        let before = count();
        wait_until("writes go on as the cluster grows", 60, || count() > before + 100);
    }
    wait_until("replicas spread evenly over five nodes", 180, || {
        placed(first, &[1, 2, 3, 4, 5]).is_some()
    });
    let load = placed(first, &[1, 2, 3, 4, 5]).expect("placed");
    assert!(load[&4] > 0 && load[&5] > 0, "the last nodes to join hold replicas: {load:?}");
    let log4 = std::fs::read_to_string(script.dir.path().join("node-4.log")).expect("node 4's log");
    assert!(log4.contains("copied a snapshot's segments"), "node 4 copied segments");

    // Two nodes removed: drained first, then gone.
    for node in ["2", "4"] {
        let out = monotable_tests::cli(first, &["cluster", "remove", node]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let members: Vec<u64> = status(first)
            .and_then(|s| s["nodes"].as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|n| n["id"].as_u64())
            .collect();
        if members == [1, 3, 5] && placed(first, &[1, 3, 5]).is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let chunks: Vec<_> = RANGES.iter().map(|r| (r, chunks(first, r))).collect();
            panic!(
                "nodes 2 and 4 never drained and left: members {members:?}, chunks {chunks:?}; \
                 the nodes' last warnings:\n{}",
                warnings(&script)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The removed nodes, still running, stop their Raft groups (left
    // running, they campaigned for ever, refused by every member), each
    // once its replica was moved away.
    // Postmortem: a removed node stopped every chunk group at once, also
    // those that still counted it a voter, one copy fewer meanwhile.
    for node in [2, 4] {
        wait_until("a removed node stops its groups", 30, || {
            std::fs::read_to_string(script.dir.path().join(format!("node-{node}.log")))
                .is_ok_and(|log| log.contains("every Raft group of this removed node has stopped"))
        });
    }
    let before = count();
    wait_until("writes go on on three nodes", 60, || count() > before + 100);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(loader).expect("the loader");

    // Every acknowledged write, through a node that was there all along.
    let via = script.addr(3);
    let acked = acked.lock().expect("acked").clone();
    let mut want: std::collections::BTreeMap<&str, Vec<(String, i64)>> = Default::default();
    for (range, key, amount) in &acked {
        want.entry(range.as_str()).or_default().push((key.clone(), *amount));
    }
    let mut records_r = 0usize;
    let mut sum_r = 0i64;
    rt.block_on(async {
        let c = monotable_client::Client::connect(via).await.expect("connect");
        for range in RANGES {
            let mut stream = c.scan_stream(range, monotable_client::Scan::all());
            let mut got = std::collections::BTreeMap::new();
            while let Some(r) = stream.next().await {
                let r = r.unwrap_or_else(|e| panic!("a page: {e}\n{}", warnings(&script)));
                let doc: serde_json::Value = rmp_serde::from_slice(&r.value).expect("msgpack");
                got.insert(
                    String::from_utf8(r.key.to_vec()).expect("utf-8"),
                    doc["amount"].as_i64().expect("amount"),
                );
            }
            for (key, amount) in want.get(range).into_iter().flatten() {
                assert_eq!(got.get(key), Some(amount), "range {range}: acknowledged {key} lost");
            }
            if range == "r" {
                records_r = got.len();
                sum_r = got.values().sum();
            }
        }
    });
    let agg = |reducer: &str| {
        monotable_tests::ok(monotable_tests::cli(
            via,
            &["agg", reducer, "--fresh", "--timeout-ms", "30000"],
        ))
        .trim()
        .to_owned()
    };
    assert_eq!(agg("n"), records_r.to_string(), "count over r");
    assert_eq!(agg("total"), sum_r.to_string(), "sum over idx");
    let idx_rows =
        monotable_tests::ok(monotable_tests::cli(via, &["scan", "idx", "--limit", "1000000"]))
            .lines()
            .count();
    assert_eq!(idx_rows, records_r, "one idx row per record of r");
    // Each node's own replica of the target comes to hold every row (a
    // replica read there serves it after a leader change); a follower may
    // apply the last entries a moment after the leader.
    for node in [1u16, 3, 5] {
        let held = || {
            let out = monotable_tests::ok(monotable_tests::cli(
                script.addr(node),
                &["range", "describe", "idx"],
            ));
            let d: serde_json::Value = serde_json::from_str(&out).expect("json");
            d["chunks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["records"].as_u64())
                .sum::<u64>()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = held();
        while last != records_r as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            last = held();
        }
        assert_eq!(last, records_r as u64, "node {node}'s replica of idx\n{}", warnings(&script));
    }
    for node in 1..=5 {
        let log = std::fs::read_to_string(script.dir.path().join(format!("node-{node}.log")))
            .expect("a node's log");
        assert!(!log.contains("panicked at"), "node {node} panicked:\n{}", warnings(&script));
    }
}
