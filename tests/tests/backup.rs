//! `monotable backup` and `monotable restore`, through the CLI against real
//! nodes: a backup taken while writes go on is one snapshot (atomic pairs
//! are whole), a restore into a fresh node gives back every record
//! byte-for-byte (hostile keys and values, Redis types, TTLs) and views
//! whose answers equal the source's, and a damaged or incomplete backup is
//! refused before anything is written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use monotable_client::{Batch, Client, RangeOptions, Scan};
use monotable_tests::{cli, err, msgpack, ok, runtime, wait_views_idle, Node, RawResp, Redis};

/// Every record of `range`, read through the client.
fn records(addr: SocketAddr, range: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        let mut s = c.scan_stream(range, Scan::all());
        let mut out = BTreeMap::new();
        while let Some(r) = s.next().await {
            let r = r.expect("scan");
            out.insert(r.key, r.value);
        }
        out
    })
}

fn range_names(addr: SocketAddr) -> Vec<String> {
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        c.list_ranges().await.expect("ranges").into_iter().map(|r| r.name).collect()
    })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Fills node `addr`: hostile records, JSON documents with views on them
/// (field and Lua mappers, a chain, reducers, a sink), Redis types.
fn fill(node: &Node, redis: &Redis) {
    let addr = node.addr;
    ok(cli(addr, &["range", "create", "r", "--chunk-size", "4KiB"]));
    ok(cli(addr, &["range", "create", "odd"]));
    runtime().block_on(async {
        let c = Client::connect(addr).await.expect("connect");
        let mut batch = Batch::new();
        for i in 0..600u32 {
            let city = ["paris", "oslo", "lima"][i as usize % 3];
            let doc = serde_json::json!({"city": city, "amount": i % 97});
            batch = batch.put(format!("doc{i:05}"), msgpack(&doc));
        }
        // A record a mapper fails on: the error is the view's, as before.
        batch = batch.put("doc_bad", b"\xc1 not msgpack");
        c.write("r", batch).await.expect("docs");
        let hostile = Batch::new()
            .put(b"\x00", b"")
            .put(b"nul\x00inside\x00", b"\x00\x00\x00")
            .put(vec![0xff; 16 * 1024], vec![0xfe; 1024 * 1024])
            .put(b"\xff\xff\xff\xff", (0..=255u8).collect::<Vec<u8>>())
            .put("plain", "value");
        c.write("odd", hostile).await.expect("hostile");
    });
    let views = [
        "mapper create by_city --source r --target idx --field city --value-field amount",
        "reducer create total --range idx --builtin sum",
        "reducer create n --range r --builtin count",
        "reducer create spread --range idx --builtin stats",
    ];
    for v in views {
        ok(cli(addr, &v.split(' ').collect::<Vec<_>>()));
    }
    // A chain: a Lua mapper reading another mapper's target.
    let lua = "function map(k, v) emit({v}, 1) end";
    let file = node.data_dir.parent().expect("parent").join("amounts.lua");
    std::fs::write(&file, lua).expect("lua");
    let args = ["mapper", "create", "by_amount", "--source", "idx", "--target", "amounts"];
    ok(cli(addr, &[&args[..], &["--lua", path(&file)]].concat()));
    ok(cli(addr, &["reducer", "create", "per_amount", "--range", "amounts", "--builtin", "count"]));
    let url = format!("redis://{}/0", redis.addr);
    ok(cli(addr, &["redis", "sink", "create", "mirror", "--range", "odd", "--url", &url]));
    let mut m = RawResp::connect(node.resp_addr, 30);
    for line in [
        "SET s hello EX 100000",
        "HSET h f1 v1 f2 v2",
        "ZADD z 1.5 a -2 b",
        "RPUSH l x y z",
        "SADD set m1 m2",
        "SET plain 42",
    ] {
        let reply = m.call_str(line);
        assert!(!reply.starts_with(b"-"), "{line}: {}", String::from_utf8_lossy(&reply));
    }
    wait_views_idle(addr, 120);
}

/// What the Redis endpoint answers for the keys `fill` made.
fn redis_view(addr: SocketAddr) -> Vec<Vec<u8>> {
    let mut m = RawResp::connect(addr, 30);
    ["GET s", "HGETALL h", "ZRANGE z 0 -1 WITHSCORES", "LRANGE l 0 -1", "SMEMBERS set", "GET plain"]
        .iter()
        .map(|l| m.call_str(l))
        .collect()
}

fn agg(addr: SocketAddr, reducer: &str, extra: &[&str]) -> String {
    ok(cli(addr, &[&["agg", reducer][..], extra].concat()))
}

/// A backup taken while atomic pairs are written holds each pair whole;
/// restored into a fresh node, every range, view answer and Redis key
/// equals the source's; a second restore into the same node is refused
/// with nothing written.
#[test]
fn a_backup_is_one_snapshot_and_restores_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = Redis::start();
    let a = Node::start(&tmp.path().join("a"));
    fill(&a, &redis);

    // Pairs written atomically across two chunks while the backup runs.
    ok(cli(a.addr, &["range", "create", "pairs"]));
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (stop.clone(), a.addr);
        rt.spawn(async move {
            let c = Client::connect(addr).await.expect("connect");
            c.split_chunk("pairs", "m").await.expect("split");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) || i < 200 {
                let batch = Batch::new().put(format!("a{i:08}"), "1").put(format!("z{i:08}"), "1");
                c.write_atomic("pairs", batch).await.expect("pair");
                i += 1;
            }
            i
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dir = tmp.path().join("backup");
    let said = String::from_utf8_lossy(&cli(a.addr, &["backup", path(&dir)]).stderr).into_owned();
    stop.store(true, Ordering::Relaxed);
    let written = rt.block_on(writer).expect("writer");
    assert!(said.contains("backed up"), "{said}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let backed: Vec<&str> = manifest["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    // Derived ranges (mapper targets, reduce-tree levels) are rebuilt, not copied.
    assert_eq!(backed, ["odd", "pairs", "r", "redis.0"], "{manifest}");
    assert_eq!(manifest["views"].as_array().expect("views").len(), 7, "{manifest}");

    let b = Node::start(&tmp.path().join("b"));
    let out = cli(b.addr, &["restore", path(&dir)]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 sinks not created"), "{said}");

    // The pairs: whole, and as many as the writer had done at some moment.
    let pairs = records(b.addr, "pairs");
    let (firsts, lasts): (Vec<_>, Vec<_>) = pairs.keys().partition(|k| k[0] == b'a');
    assert_eq!(firsts.len(), lasts.len(), "a pair was cut by the backup");
    for (f, l) in firsts.iter().zip(&lasts) {
        assert_eq!(f[1..], l[1..], "pairs differ");
    }
    assert!(
        !firsts.is_empty() && (firsts.len() as u64) <= written,
        "{} of {written}",
        firsts.len()
    );

    for range in ["r", "odd", "redis.0"] {
        assert!(records(a.addr, range) == records(b.addr, range), "range {range} differs");
    }
    wait_views_idle(b.addr, 120);
    for range in ["idx", "amounts"] {
        assert!(records(a.addr, range) == records(b.addr, range), "view rows of {range} differ");
    }
    for (reducer, extra) in [
        ("total", &[][..]),
        ("n", &[][..]),
        ("spread", &["--group-level", "1"][..]),
        ("per_amount", &["--group-level", "1"][..]),
    ] {
        assert_eq!(agg(a.addr, reducer, extra), agg(b.addr, reducer, extra), "{reducer}");
    }
    assert_eq!(redis_view(a.resp_addr), redis_view(b.resp_addr));
    let mut m = RawResp::connect(b.resp_addr, 30);
    let ttl = String::from_utf8_lossy(&m.call_str("TTL s")).into_owned();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().expect("a TTL");
    assert!(ttl > 90_000, "the expiry came back: {ttl}");
    let errors = |addr| {
        monotable_tests::views_json(addr)
            .into_iter()
            .find(|v| v["name"] == "by_city")
            .map(|v| v["errors"].clone())
    };
    assert_eq!(errors(a.addr), errors(b.addr), "the failing record fails again");
    let views = monotable_tests::views_json(b.addr);
    assert!(views.iter().all(|v| v["kind"] != "sink"), "{views:?}");

    // Again into the same node: refused, nothing written.
    let before = records(b.addr, "r");
    let refused = err(cli(b.addr, &["restore", path(&dir)]));
    assert!(
        refused.contains("already has") && refused.contains("nothing was written"),
        "{refused}"
    );
    assert!(records(b.addr, "r") == before);

    // A backup is never written over another.
    let again = err(cli(a.addr, &["backup", path(&dir)]));
    assert!(again.contains("not empty"), "{again}");
}

/// Copies the backup in `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("ranges")).expect("mkdir");
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).expect("inside");
        std::fs::copy(&entry, to.join(rel)).expect("copy");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every kind of damage is found by `restore --check` and by `restore`,
/// before the node is touched: a flipped byte, a cut file, a lost file, a
/// missing or edited manifest, a file path out of the backup.
#[test]
fn a_damaged_backup_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let a = Node::start(&tmp.path().join("a"));
    ok(cli(a.addr, &["range", "create", "r", "--chunk-size", "4KiB"]));
    runtime().block_on(async {
        let c = Client::connect(a.addr).await.expect("connect");
        c.create_range("second", RangeOptions::default()).await.expect("range");
        let mut batch = Batch::new();
        for i in 0..2000u32 {
            batch = batch.put(format!("k{i:06}"), vec![i as u8; 100]);
        }
        c.write("r", batch.clone()).await.expect("write");
        c.write("second", batch).await.expect("write");
    });
    let good = tmp.path().join("good");
    ok(cli(a.addr, &["backup", path(&good)]));
    let listed = ok(cli(a.addr, &["restore", "--check", path(&good)]));
    assert!(
        listed.contains("range \"r\": 2000 records") && listed.contains("is whole"),
        "{listed}"
    );

    let manifest = std::fs::read_to_string(good.join("manifest.json")).expect("manifest");
    let file_of = |range: &str| {
        let m: serde_json::Value = serde_json::from_str(&manifest).expect("json");
        let entry =
            m["ranges"].as_array().expect("ranges").iter().find(|r| r["name"] == range).cloned();
        entry.expect("range")["file"].as_str().expect("file").to_owned()
    };
    let r_file = file_of("r");
    type Damage = Box<dyn Fn(&Path)>;
    let mut cases: Vec<(&str, Damage, &str)> = vec![
        (
            "a flipped byte",
            Box::new({
                let f = r_file.clone();
                move |d: &Path| {
                    let p = d.join(&f);
                    let mut bytes = std::fs::read(&p).expect("read");
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0x40;
                    std::fs::write(&p, bytes).expect("write");
                }
            }),
            "CRC",
        ),
        (
            "a cut file",
            Box::new({
                let f = r_file.clone();
                move |d: &Path| {
                    let p = d.join(&f);
                    let len = std::fs::metadata(&p).expect("meta").len();
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .expect("open")
                        .set_len(len - 20)
                        .expect("cut");
                }
            }),
            "bytes, the manifest says",
        ),
        (
            "a lost file",
            Box::new({
                let f = r_file.clone();
                move |d: &Path| std::fs::remove_file(d.join(&f)).expect("rm")
            }),
            "cannot read",
        ),
        (
            "no manifest",
            Box::new(|d: &Path| std::fs::remove_file(d.join("manifest.json")).expect("rm")),
            "incomplete",
        ),
        (
            "a record count edited",
            Box::new({
                let m = manifest.clone();
                move |d: &Path| {
                    std::fs::write(
                        d.join("manifest.json"),
                        m.replacen("\"records\": 2000", "\"records\": 1999", 1),
                    )
                    .expect("write")
                }
            }),
            "records, the manifest says",
        ),
        (
            "a path out of the backup",
            Box::new({
                let (m, f) = (manifest.clone(), r_file.clone());
                move |d: &Path| {
                    std::fs::write(d.join("manifest.json"), m.replacen(&f, "../../etc/passwd", 1))
                        .expect("write")
                }
            }),
            "not a path inside the backup",
        ),
        (
            "not a manifest",
            Box::new(|d: &Path| {
                std::fs::write(d.join("manifest.json"), "{\"format\": 7}").expect("write")
            }),
            "not a backup manifest",
        ),
    ];
    cases.push((
        "bytes after the footer",
        Box::new({
            let (m, f) = (manifest.clone(), r_file.clone());
            move |d: &Path| {
                let p = d.join(&f);
                let mut bytes = std::fs::read(&p).expect("read");
                let size = bytes.len();
                bytes.extend_from_slice(b"tail");
                std::fs::write(&p, bytes).expect("write");
                let edited = m.replacen(
                    &format!("\"bytes\": {size}"),
                    &format!("\"bytes\": {}", size + 4),
                    1,
                );
                std::fs::write(d.join("manifest.json"), edited).expect("write");
            }
        }),
        "bytes follow its footer",
    ));
    cases.push((
        "a symbolic link out of the backup",
        Box::new({
            let f = r_file.clone();
            move |d: &Path| {
                let p = d.join(&f);
                let outside = d
                    .parent()
                    .expect("parent")
                    .join(format!("outside-{}", d.display().to_string().len()));
                std::fs::rename(&p, &outside).expect("move");
                std::os::unix::fs::symlink(&outside, &p).expect("link");
            }
        }),
        "is not a plain file",
    ));
    let fresh = Node::start(&tmp.path().join("fresh"));
    for (i, (what, damage, says)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("damaged{i}"));
        copy_dir(&good, &dir);
        damage(&dir);
        let checked = err(cli(fresh.addr, &["restore", "--check", path(&dir)]));
        assert!(checked.contains(says), "{what}: {checked}");
        let refused = err(cli(fresh.addr, &["restore", path(&dir)]));
        assert!(refused.contains(says), "{what}: {refused}");
        assert!(range_names(fresh.addr).is_empty(), "{what}: the node was written to");
    }
    // What only the node can refuse (a view's function) is found before
    // any record is written, and what restore made is dropped again.
    let dir = tmp.path().join("refused");
    copy_dir(&good, &dir);
    let mut m: serde_json::Value = serde_json::from_str(&manifest).expect("json");
    let median = serde_json::json!({"Reducer": {"name": "mid", "range": "r", "function": {"Builtin": "median"}}});
    // A mapper made before the refused reducer: its target goes too.
    let mapper = serde_json::json!({"Mapper": {"name": "m", "source": "r", "target": "m_idx",
        "function": {"Field": {"key_path": "a", "value_path": null}}}});
    m["views"].as_array_mut().expect("views").extend([mapper, median]);
    std::fs::write(dir.join("manifest.json"), m.to_string()).expect("write");
    ok(cli(fresh.addr, &["restore", "--check", path(&dir)]));
    let refused = err(cli(fresh.addr, &["restore", path(&dir)]));
    assert!(refused.contains("median") && refused.contains("nothing was kept"), "{refused}");
    assert!(range_names(fresh.addr).is_empty(), "the node kept what restore made");

    // The good one still restores, into the node the others left alone.
    ok(cli(fresh.addr, &["restore", path(&good)]));
    assert!(records(a.addr, "r") == records(fresh.addr, "r"));
    assert!(records(a.addr, "second") == records(fresh.addr, "second"));
}

/// A cluster's replicated range and its views, backed up through one node
/// (which holds a replica of every chunk), restore into a single node and,
/// once dropped, back into the cluster as a replicated range again.
#[test]
fn a_clusters_replicated_range_round_trips() {
    use monotable_tests::cluster::{start_cluster, wait_until};
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let nodes = start_cluster(&dirs);
    let (first, second, third) = (nodes[0].addr, nodes[1].addr, nodes[2].addr);
    ok(cli(first, &["range", "create", "r", "--replicas", "3"]));
    let by_city = "mapper create by_city --source r --target idx --field city --value-field amount";
    ok(cli(first, &by_city.split(' ').collect::<Vec<_>>()));
    ok(cli(first, &["reducer", "create", "total", "--range", "idx", "--builtin", "sum"]));
    runtime().block_on(async {
        let c = Client::connect(third).await.expect("connect");
        for i in 0..300u32 {
            let city = ["paris", "oslo", "lima"][i as usize % 3];
            let doc = serde_json::json!({"city": city, "amount": i});
            c.put("r", format!("k{i:04}"), msgpack(&doc)).await.expect("put");
        }
    });
    let mut m = RawResp::connect(nodes[1].resp_addr, 30);
    for line in ["SET s hello", "HSET h f1 v1 f2 v2", "RPUSH l x y z"] {
        let reply = m.call_str(line);
        assert!(!reply.starts_with(b"-"), "{line}: {}", String::from_utf8_lossy(&reply));
    }
    wait_views_idle(first, 120);
    let expected = agg(first, "total", &["--group-level", "1"]);
    let source = records(first, "r");
    let redis_data = redis_view(nodes[2].resp_addr);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("backup");
    ok(cli(second, &["backup", path(&dir)]));
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
    assert!(manifest.contains("\"replicas\": 3"), "{manifest}");

    let single = Node::start(&tmp.path().join("single"));
    ok(cli(single.addr, &["restore", path(&dir)]));
    assert!(records(single.addr, "r") == source);
    assert_eq!(agg(single.addr, "total", &["--group-level", "1"]), expected);
    assert_eq!(redis_view(single.resp_addr), redis_data);
    // And a single node's backup into the cluster: its Redis database
    // becomes the cluster's (replicated, written through any node).
    let dir1 = tmp.path().join("single-backup");
    ok(cli(single.addr, &["backup", path(&dir1)]));

    ok(cli(first, &["reducer", "drop", "total"]));
    ok(cli(first, &["mapper", "drop", "by_city"]));
    ok(cli(first, &["range", "drop", "r"]));
    ok(cli(first, &["range", "drop", "redis.0"]));
    wait_until("the ranges gone", 60, || range_names(third).is_empty());
    ok(cli(third, &["restore", path(&dir1), "--replicas", "3"]));
    assert!(records(first, "r") == source);
    wait_views_idle(third, 120);
    wait_views_idle(first, 120);
    assert_eq!(agg(first, "total", &["--group-level", "1"]), expected);
    for node in &nodes {
        assert_eq!(redis_view(node.resp_addr), redis_data, "through {}", node.addr);
    }
    let mut m = RawResp::connect(nodes[0].resp_addr, 30);
    let set = m.call_str("SET after restore");
    assert_eq!(set, b"+OK\r\n", "{}", String::from_utf8_lossy(&set));
    let replicas = runtime().block_on(async {
        let c = Client::connect(first).await.expect("connect");
        let r = c.describe_range("r").await.expect("describe");
        r.chunks.iter().map(|c| c.replicas.len()).min()
    });
    assert_eq!(replicas, Some(3), "restored as a replicated range");
}
