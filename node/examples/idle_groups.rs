//! CPU and messages of idle Raft groups: three in-process nodes, each with
//! a replica of G groups (three voters each, production timing), on an
//! in-memory Raft log (thousands of file-backed logs would hold more open
//! files than a process may) and a trivial state machine.
//!
//! ```sh
//! cargo run --release -j1 -p monotable-node --example idle_groups -- 1000 20
//! cargo run --release -j1 -p monotable-node --example idle_groups -- 1000 20 quiet
//! ```
//!
//! Arguments: groups per node, seconds measured, and `quiet` to let the
//! groups quiesce. Prints process CPU (user + system) over the window as a
//! percentage of one core, per 1,000 groups, and messages per second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use monotable_node::consensus::local_net::LocalNet;
use monotable_node::consensus::machine_store::MachineStore;
use monotable_node::consensus::mem_log::MemLogStore;
use monotable_node::consensus::{Group, GroupConfig, Machine, Quiescence, Timing};

struct Nop;

impl Machine for Nop {
    fn apply(&mut self, _: u64, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let groups: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let window: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let quiet = args.get(3).is_some_and(|a| a == "quiet");
    let timing = Timing::PRODUCTION;
    let nodes = [1u64, 2, 3];
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let net = LocalNet::new();
    let members: BTreeMap<u64, String> = nodes.iter().map(|n| (*n, format!("node-{n}"))).collect();
    let quiescences: Vec<Quiescence> = nodes
        .iter()
        .map(|n| {
            let q = Quiescence::start(*n, timing, net.transport(*n));
            net.set_quiescence(*n, q.clone());
            q
        })
        .collect();

    let start = Instant::now();
    let mut all: Vec<Vec<Group>> = vec![Vec::new(); nodes.len()];
    for g in 1..=groups {
        for (i, n) in nodes.iter().enumerate() {
            let config = GroupConfig {
                group: g,
                node: *n,
                timing,
                snapshot_every_entries: u64::MAX / 2,
                snapshot_gate: None,
            };
            let machine = MachineStore::open(&dir.path().join(format!("{n}/{g}")), Box::new(Nop))
                .expect("a machine store");
            let group = Group::start(&config, MemLogStore::new(), machine, net.transport(*n))
                .await
                .expect("a raft group starts");
            if quiet {
                group.join_quiescence(&quiescences[i]);
            }
            net.add_group(*n, group.clone());
            all[i].push(group);
        }
        // Leaders spread over the nodes.
        let first = all[(g % 3) as usize].last().expect("the replica just started");
        first.initialize(members.clone()).await.expect("the group initializes");
    }
    eprintln!("started {} replicas in {:.1}s", groups * 3, start.elapsed().as_secs_f64());

    loop {
        let led = all.iter().flatten().filter(|g| g.status().state == "leader").count() as u64;
        let known = all.iter().flatten().filter(|g| g.status().leader.is_some()).count() as u64;
        if led == groups && known == groups * 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("leaders elected after {:.1}s", start.elapsed().as_secs_f64());
    // Let the groups settle (and, with `quiet`, quiesce).
    tokio::time::sleep(Duration::from_millis(timing.election_max_ms)).await;

    let (cpu0, msg0, t0) = (cpu_seconds(), net.messages(), Instant::now());
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (cpu1, msg1, secs) = (cpu_seconds(), net.messages(), t0.elapsed().as_secs_f64());
    let cpu_pct = (cpu1 - cpu0) / secs * 100.0;
    let quiet_now: usize = quiescences.iter().map(|q| q.quiet_groups()).sum();
    println!(
        "groups/node={groups} replicas={} quiet={quiet} quiet_replicas={quiet_now} window={secs:.1}s \
         cpu={cpu_pct:.1}% of a core ({:.2}% per 1,000 groups) messages/s={:.0}",
        groups * 3,
        cpu_pct / (groups as f64 / 1000.0),
        (msg1 - msg0) as f64 / secs,
    );
}
