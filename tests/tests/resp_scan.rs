//! SCAN, HSCAN, SSCAN and ZSCAN cursors hold no state on the server: a
//! cursor is a position in the keys' (elements') hashed order. Checked
//! through the Redis endpoint: whole iterations under concurrent writes
//! and deletes, chunk splits and a kill -9 between two pages return every
//! key (element) present from the first call to the last and nothing that
//! never existed; 70,000 other SCANs between two pages change nothing;
//! any 64-bit cursor is one; a script's SCAN sees the script's own writes
//! (against a real redis-server).
//!
//! Postmortem: cursors were numbers standing for saved positions, 65,536
//! kept per node, so many concurrent scans restarted each other's
//! iterations and a restart forgot every one.

use std::collections::{BTreeMap, BTreeSet};

use monotable_tests::{show, RawResp, Redis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A SCAN-family call: the next cursor and the items.
fn page(
    c: &mut redis::Connection,
    head: &[&[u8]],
    cursor: &str,
    count: usize,
) -> (String, Vec<Vec<u8>>) {
    let mut cmd = redis::cmd(std::str::from_utf8(head[0]).expect("name"));
    for a in &head[1..] {
        cmd.arg(*a);
    }
    cmd.arg(cursor).arg("COUNT").arg(count);
    cmd.query(c).expect("scan page")
}

fn connect(addr: std::net::SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/")).expect("url").get_connection().expect("connect")
}

/// Keys meant to be awkward: NUL bytes, 0xFF, empty, long, near-twins.
fn hostile_key(rng: &mut StdRng, i: usize) -> Vec<u8> {
    match rng.gen_range(0..6) {
        0 => format!("k:{i}").into_bytes(),
        1 => {
            let mut k = format!("n\0{i}\0").into_bytes();
            k.push(0xff);
            k
        }
        2 => vec![b'L'; 200 + i % 300].into_iter().chain(i.to_string().into_bytes()).collect(),
        3 => format!("k:{i}\0").into_bytes(),
        4 => (0..rng.gen_range(1..12)).map(|_| rng.gen::<u8>()).chain(i.to_le_bytes()).collect(),
        _ => format!("{i}").into_bytes(),
    }
}

fn redis_set(c: &mut redis::Connection, rng: &mut StdRng, key: &[u8]) {
    let value = vec![b'v'; rng.gen_range(1..400)];
    let _: () = match rng.gen_range(0..5) {
        0 => redis::cmd("SET").arg(key).arg(&value).query(c),
        1 => redis::cmd("HSET").arg(key).arg("f").arg(&value).query(c).map(|_: i64| ()),
        2 => redis::cmd("SADD").arg(key).arg(&value).query(c).map(|_: i64| ()),
        3 => redis::cmd("ZADD").arg(key).arg(1.5).arg(&value).query(c).map(|_: i64| ()),
        _ => redis::cmd("RPUSH").arg(key).arg(&value).query(c).map(|_: i64| ()),
    }
    .expect("write");
}

#[test]
fn scan_under_churn_splits_and_kill_9_returns_every_key_present_throughout() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = monotable_tests::small_chunked_redis_node(dir.path());
    let mut rng = StdRng::seed_from_u64(0x5ca9);
    let mut writer = connect(node.resp_addr);
    let mut next_id = 0usize;
    let mut live: BTreeSet<Vec<u8>> = BTreeSet::new();
    for _ in 0..600 {
        let k = hostile_key(&mut rng, next_id);
        next_id += 1;
        redis_set(&mut writer, &mut rng, &k);
        live.insert(k);
    }
    let mut ever = live.clone();
    let mut throughout = live.clone();
    let mut seen = BTreeSet::new();
    let mut reader = connect(node.resp_addr);
    let mut cursor = "0".to_owned();
    let mut pages = 0;
    let mut restarted = false;
    loop {
        let (next, keys) = page(&mut reader, &[b"SCAN"], &cursor, rng.gen_range(1..25));
        for k in keys {
            assert!(ever.contains(&k), "SCAN returned a key never written: {}", show(&k));
            // A key keeps its place in the hashed order, even deleted and
            // written again: an iteration never returns it twice.
            assert!(seen.insert(k.clone()), "SCAN returned a key twice: {}", show(&k));
        }
        pages += 1;
        if next == "0" {
            break;
        }
        cursor = next;
        // Between pages: new keys (splitting chunks), deletes, overwrites.
        for _ in 0..rng.gen_range(0..12) {
            match rng.gen_range(0..3) {
                0 => {
                    let k = hostile_key(&mut rng, next_id);
                    next_id += 1;
                    redis_set(&mut writer, &mut rng, &k);
                    ever.insert(k.clone());
                    live.insert(k);
                }
                1 if !live.is_empty() => {
                    let k = live.iter().nth(rng.gen_range(0..live.len())).expect("in").clone();
                    let _: i64 = redis::cmd("DEL").arg(&k).query(&mut writer).expect("del");
                    live.remove(&k);
                    throughout.remove(&k);
                }
                _ if !live.is_empty() => {
                    // A new value, maybe of another type: still present.
                    let k = live.iter().nth(rng.gen_range(0..live.len())).expect("in").clone();
                    let _: i64 = redis::cmd("DEL").arg(&k).query(&mut writer).expect("del");
                    redis_set(&mut writer, &mut rng, &k);
                    throughout.remove(&k);
                }
                _ => {}
            }
        }
        if pages == 20 && !restarted {
            // The cursor outlives the process that gave it.
            node.restart();
            writer = connect(node.resp_addr);
            reader = connect(node.resp_addr);
            restarted = true;
        }
    }
    assert!(restarted && pages > 25, "the iteration was long enough ({pages} pages)");
    let missed: Vec<String> = throughout.difference(&seen).map(|k| show(k)).collect();
    assert!(missed.is_empty(), "keys present throughout but not returned: {missed:?}");
}

#[test]
fn element_scans_under_churn_return_every_element_present_throughout() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = monotable_tests::small_chunked_redis_node(dir.path());
    let mut rng = StdRng::seed_from_u64(0xe1e5);
    let mut c = connect(node.resp_addr);
    let mut w = connect(node.resp_addr);
    for (kind, key) in [("HSCAN", "h"), ("SSCAN", "s"), ("ZSCAN", "z")] {
        // member -> its value or score now
        let mut model: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        let add = |w: &mut redis::Connection, m: &[u8], v: &str| {
            let _: i64 = match kind {
                "HSCAN" => redis::cmd("HSET").arg(key).arg(m).arg(v).query(w),
                "SSCAN" => redis::cmd("SADD").arg(key).arg(m).query(w),
                _ => redis::cmd("ZADD").arg(key).arg(v).arg(m).query(w),
            }
            .expect("add");
        };
        let remove = |w: &mut redis::Connection, m: &[u8]| {
            let cmd = match kind {
                "HSCAN" => "HDEL",
                "SSCAN" => "SREM",
                _ => "ZREM",
            };
            let _: i64 = redis::cmd(cmd).arg(key).arg(m).query(w).expect("remove");
        };
        let value = |rng: &mut StdRng| match kind {
            "SSCAN" => String::new(),
            "ZSCAN" => ["-inf", "0", "1.5", "-2.25", "3"][rng.gen_range(0..5)].to_owned(),
            _ => "x".repeat(rng.gen_range(0..100)),
        };
        for i in 0..1500usize {
            let m = hostile_key(&mut rng, i);
            let v = value(&mut rng);
            add(&mut w, &m, &v);
            model.insert(m, v);
        }
        let mut ever: BTreeSet<Vec<u8>> = model.keys().cloned().collect();
        let mut untouched = ever.clone();
        let mut seen = BTreeSet::new();
        let mut cursor = "0".to_owned();
        let mut next_id = 1500;
        loop {
            let (next, items) =
                page(&mut c, &[kind.as_bytes(), key.as_bytes()], &cursor, rng.gen_range(1..60));
            let per = if kind == "SSCAN" { 1 } else { 2 };
            for item in items.chunks(per) {
                assert!(ever.contains(&item[0]), "{kind} returned {}", show(&item[0]));
                assert!(!seen.contains(&item[0]), "{kind} returned {} twice", show(&item[0]));
                if per == 2 && untouched.contains(&item[0]) {
                    assert_eq!(String::from_utf8_lossy(&item[1]), model[&item[0]], "{kind}");
                }
                seen.insert(item[0].clone());
            }
            if next == "0" {
                break;
            }
            cursor = next;
            for _ in 0..rng.gen_range(0..10) {
                if rng.gen_bool(0.5) {
                    let m = hostile_key(&mut rng, next_id);
                    next_id += 1;
                    let v = value(&mut rng);
                    add(&mut w, &m, &v);
                    ever.insert(m.clone());
                    model.insert(m, v);
                } else if let Some(m) = model.keys().nth(rng.gen_range(0..model.len())).cloned() {
                    remove(&mut w, &m);
                    model.remove(&m);
                    untouched.remove(&m);
                }
            }
        }
        let missed = untouched.difference(&seen).count();
        assert_eq!(missed, 0, "{kind}: elements present throughout but not returned");
    }
}

#[test]
fn cursors_are_numbers_and_other_scans_change_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = monotable_tests::Node::start(dir.path());
    let mut c = connect(node.resp_addr);
    for i in 0..300 {
        let _: () = redis::cmd("SET").arg(format!("key:{i}")).arg(i).query(&mut c).expect("set");
    }
    let (cursor, first) = page(&mut c, &[b"SCAN"], "0", 100);
    // More SCANs between two pages than a table of saved cursors held.
    let mut other = RawResp::connect(node.resp_addr, 60);
    let mut batch = Vec::new();
    for _ in 0..70_000 {
        batch.extend(RawResp::encode(&[b"SCAN", b"0", b"COUNT", b"1"]));
    }
    let mut sender = other.writer.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        use std::io::Write;
        sender.write_all(&batch).expect("send");
    });
    for _ in 0..70_000 {
        assert!(other.reply().expect("reply").starts_with(b"*2\r\n"));
    }
    sending.join().expect("sent");
    let mut seen: Vec<Vec<u8>> = first;
    let mut cursor = cursor;
    while cursor != "0" {
        let (next, keys) = page(&mut c, &[b"SCAN"], &cursor, 100);
        seen.extend(keys);
        cursor = next;
    }
    assert_eq!(seen.len(), 300, "the iteration went on where it was, not from the start");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 300);

    // Every 64-bit number is a cursor; -1 is 2^64 - 1, as Redis's strtoull.
    let mut raw = RawResp::connect(node.resp_addr, 30);
    let top = raw.call(&[b"SCAN", b"18446744073709551615"]);
    assert_eq!(raw.call(&[b"SCAN", b"-1"]), top);
    for cursor in [&b"9223372036854775808"[..], b"1", b"12345678901234567890"] {
        assert!(raw.call(&[b"SCAN", cursor]).starts_with(b"*2\r\n$"), "{}", show(cursor));
    }
    assert_eq!(show(&raw.call(&[b"SCAN", b"18446744073709551616"])), "-ERR invalid cursor\\r\\n");
    // Any cursor reads on from its position: from each, the keys of a
    // whole iteration whose hash lies past it.
    let mut tail = BTreeSet::new();
    let mut cursor = "9223372036854775808".to_owned();
    while cursor != "0" {
        let (next, keys) = page(&mut c, &[b"SCAN"], &cursor, 50);
        tail.extend(keys);
        cursor = next;
    }
    assert!(!tail.is_empty() && tail.len() < 300, "about half the keys: {}", tail.len());
}

/// A script's SCAN (writes held back until it ends) sees what the script
/// wrote and not what it deleted, as redis-server's does.
#[test]
fn a_scripts_scan_sees_its_own_writes_as_redis() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = monotable_tests::small_chunked_redis_node(dir.path());
    let script = r#"
        for i = 1, 40 do redis.call('DEL', 'k' .. i) end
        for i = 1, 60 do redis.call('SET', 'new' .. i, string.rep('x', 100)) end
        redis.call('HSET', 'h', 'added', '1')
        redis.call('HDEL', 'h', 'f3')
        local out, seen = {}, {}
        local function keep(k)
            if not seen[k] then seen[k] = true; out[#out + 1] = k end
        end
        local c = '0'
        repeat
            local r = redis.call('SCAN', c, 'COUNT', '7')
            c = r[1]
            for _, k in ipairs(r[2]) do keep(k) end
        until c == '0'
        repeat
            local r = redis.call('HSCAN', 'h', c, 'COUNT', '7')
            c = r[1]
            for i = 1, #r[2], 2 do keep('field:' .. r[2][i] .. '=' .. r[2][i + 1]) end
        until c == '0'
        table.sort(out)
        return out
    "#;
    for addr in [redis_server.addr, node.resp_addr] {
        let mut c = connect(addr);
        for i in 0..200 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg("v".repeat(100))
                .query(&mut c)
                .expect("set");
            let _: i64 = redis::cmd("HSET")
                .arg("h")
                .arg(format!("f{i}"))
                .arg(i)
                .query(&mut c)
                .expect("hset");
        }
    }
    let mut r = connect(redis_server.addr);
    let mut m = connect(node.resp_addr);
    let want: Vec<Vec<u8>> = redis::cmd("EVAL").arg(script).arg(0).query(&mut r).expect("redis");
    let got: Vec<Vec<u8>> = redis::cmd("EVAL").arg(script).arg(0).query(&mut m).expect("monotable");
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}
