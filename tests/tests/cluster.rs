//! Clusters of real processes on loopback: founding, joining, status from
//! any node, the meta range's leader killed and restarted, removal.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monotable_tests::{cli, err, ok, serve_exits, Node};
use serde_json::Value as Json;

/// Raft timers short enough for tests on one machine.
const FAST: [&str; 4] = ["--raft-heartbeat-ms", "50", "--raft-election-timeout-ms", "400"];

fn fast_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend_from_slice(extra);
    args
}

fn status(addr: SocketAddr) -> Option<Json> {
    let out = cli(addr, &["cluster", "status", "--json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("status is JSON"))
}

/// Waits until `cluster status` at `addr` satisfies `done`; returns it.
fn wait_status(addr: SocketAddr, what: &str, done: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(addr);
        if let Some(s) = &s {
            if done(s) {
                return s.clone();
            }
        }
        assert!(Instant::now() < deadline, "{what}: never happened; last status {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn nodes(s: &Json) -> Vec<(u64, String, bool, String)> {
    s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_u64().expect("id"),
                n["addr"].as_str().expect("addr").to_owned(),
                n["live"].as_bool().expect("live"),
                n["meta_role"].as_str().expect("role").to_owned(),
            )
        })
        .collect()
}

fn all_live_voters(s: &Json, n: usize) -> bool {
    let nodes = nodes(s);
    nodes.len() == n
        && nodes.iter().all(|(_, _, live, role)| *live && (role == "leader" || role == "voter"))
        && s["meta_leader"].is_u64()
}

#[test]
fn a_single_node_is_a_cluster_of_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start_with(dir.path(), &FAST);
    let s = wait_status(node.addr, "a leader", |s| s["meta_leader"] == 1);
    assert_eq!(nodes(&s), vec![(1, node.addr.to_string(), true, "leader".to_owned())]);
    assert_eq!(s["answered_by"], 1);
    ok(cli(node.addr, &["range", "create", "r"]));
    let s = wait_status(node.addr, "a chunk", |s| s["nodes"][0]["chunk_replicas"] == 1);
    assert_eq!(s["nodes"][0]["chunk_leaders"], 1);
    let table = ok(cli(node.addr, &["cluster", "status"]));
    assert!(table.contains("meta range leader: 1"), "{table}");
    // The last voter cannot be removed; an unknown node is an error.
    assert!(err(cli(node.addr, &["cluster", "remove", "1"])).contains("last voter"));
    assert!(err(cli(node.addr, &["cluster", "remove", "9"])).contains("no node 9"));
    // A restart keeps the identity: still node 1, and it leads again.
    node.restart();
    let s = wait_status(node.addr, "a leader after restart", |s| s["meta_leader"] == 1);
    assert_eq!(nodes(&s).len(), 1);
    assert!(node.stop());
}

#[test]
fn three_nodes_join_elect_fail_over_and_remove() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let n1 = Node::start_pinned(dirs[0].path(), &FAST);
    wait_status(n1.addr, "a founded cluster", |s| s["meta_leader"] == 1);
    let seed = n1.addr.to_string();
    let n2 = Node::start_pinned(dirs[1].path(), &fast_with(&["--join", &seed]));
    // The third node joins through the second: any member is a seed.
    let seed2 = n2.addr.to_string();
    let n3 = Node::start_pinned(dirs[2].path(), &fast_with(&["--join", &seed2]));
    let s = wait_status(n1.addr, "three live voters", |s| all_live_voters(s, 3));
    let ids: Vec<u64> = nodes(&s).iter().map(|n| n.0).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let addrs: Vec<String> = nodes(&s).iter().map(|n| n.1.clone()).collect();
    assert_eq!(addrs, vec![n1.addr.to_string(), n2.addr.to_string(), n3.addr.to_string()]);
    // Every node answers, with the same nodes.
    for n in [&n2, &n3] {
        let other = wait_status(n.addr, "status from another node", |s| all_live_voters(s, 3));
        assert_eq!(nodes(&other).iter().map(|n| n.0).collect::<Vec<_>>(), ids);
    }

    // kill -9 the meta leader: the others elect a new one and see it down.
    let leader = s["meta_leader"].as_u64().expect("leader");
    let mut all = [n1, n2, n3];
    let victim = (leader - 1) as usize;
    all[victim].kill();
    let survivor = all[(victim + 1) % 3].addr;
    let s = wait_status(survivor, "a new leader", |s| {
        s["meta_leader"].as_u64().is_some_and(|l| l != leader)
            && nodes(s).iter().any(|n| n.0 == leader && !n.2)
    });
    assert_eq!(nodes(&s).len(), 3, "a dead node stays a member");

    // Restarted on its address, it rejoins by itself (its --join is
    // ignored: it has an identity).
    all[victim].restart();
    wait_status(survivor, "all live again", |s| all_live_voters(s, 3));
    assert!(all[victim].log_contains("resumed cluster membership"));

    // Remove node 3 through node 1 (forwarded to the leader, wherever).
    ok(cli(all[0].addr, &["cluster", "remove", "3"]));
    let s = wait_status(all[0].addr, "two nodes", |s| all_live_voters(s, 2));
    assert_eq!(nodes(&s).iter().map(|n| n.0).collect::<Vec<_>>(), vec![1, 2]);
    ok(cli(all[1].addr, &["cluster", "remove", "3"])); // again: already removed
    for n in &mut all {
        n.stop();
    }
}

#[test]
fn bad_cluster_options_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = serve_exits(
        dir.path(),
        &["--raft-heartbeat-ms", "500", "--raft-election-timeout-ms", "600"],
    )
    .expect("refused");
    assert!(out.contains("at least twice --raft-heartbeat-ms"), "{out}");
    let out = serve_exits(dir.path(), &["--listen", "0.0.0.0:0", "--join", "127.0.0.1:1"])
        .expect("refused");
    assert!(out.contains("--advertise-addr"), "{out}");
}
