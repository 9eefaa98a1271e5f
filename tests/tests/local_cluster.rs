//! `deploy/local-cluster.sh`: three nodes started, one killed with
//! SIGKILL and started again (by running the script again, then with
//! `start-node K`) while the others run, then all stopped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use monotable_tests::binary;
use monotable_tests::cluster::{status, wait_until};

/// The script, the nodes' directory and ports; stops the nodes on drop
/// (a failed test too).
struct Script {
    path: PathBuf,
    dir: tempfile::TempDir,
    base: u16,
    resp_base: u16,
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
    }
}

/// A base such that BASE+1..=BASE+3 are free loopback ports (as far as
/// can be told before the script binds them).
fn free_base() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let base = l.local_addr().expect("addr").port();
        if base > 60_000 {
            continue;
        }
        let held: Vec<_> =
            (1..=3).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == 3 {
            return base;
        }
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Postmortem: a killed node could not be started again while the others
/// ran: the script refused ("node 1 already runs; stop first").
#[test]
fn a_killed_node_of_a_local_cluster_starts_again_alone() {
    let base = free_base();
    let resp_base = loop {
        let b = free_base();
        if b.abs_diff(base) > 3 {
            break b;
        }
    };
    let script = Script {
        path: Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster.sh"),
        dir: tempfile::tempdir().expect("tmp"),
        base,
        resp_base,
    };
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
