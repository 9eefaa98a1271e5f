//! Positions and counts answered by the index's order statistics (ZRANK,
//! ZCOUNT, ZRANGE by index, ZRANGEBYSCORE ... LIMIT, DBSIZE) against a
//! real `redis-server` 7.0, on sorted sets large enough to span many
//! chunks (database 0 made with 4 KiB chunks), through random writes,
//! deletes and MULTI/EXEC (whose held-back writes are counted too); and
//! the random picks (SPOP, SRANDMEMBER, HRANDFIELD, RANDOMKEY) by their
//! properties.

use std::collections::{HashMap, HashSet};

use monotable_tests::assert_same_line as same;
use monotable_tests::{RawResp, Twin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Postmortem: ZRANK, ZCOUNT and ranges with an offset walked every row
/// before the answer (O(rank)), and DBSIZE read every key.
#[test]
fn positions_and_counts_match_redis_across_chunks() {
    let twin = Twin::small_chunked();
    let (mut redis, mut mono) = twin.connect(30);
    let mut rng = StdRng::seed_from_u64(0x5a_7a11);
    let member = |rng: &mut StdRng| format!("m{:04}", rng.gen_range(0..1500));
    let score = |rng: &mut StdRng| match rng.gen_range(0..4) {
        0 => rng.gen_range(-5..5).to_string(),
        1 => format!("{:.3}", rng.gen_range(-1e6..1e6)),
        2 => ["-inf", "+inf", "0", "1e300"][rng.gen_range(0..4)].to_owned(),
        _ => rng.gen_range(0..100_000).to_string(),
    };
    // Loads in bulk first, so the sets span many chunks.
    for z in ["z1", "z2"] {
        for chunk in 0..6 {
            let mut line = format!("ZADD {z}");
            for _ in 0..200 {
                line += &format!(" {} {}", score(&mut rng), member(&mut rng));
            }
            let _ = chunk;
            same(&mut redis, &mut mono, &line);
        }
    }
    for i in 0..1500 {
        same(&mut redis, &mut mono, &format!("SET k{i} v"));
    }
    // One score for all: what lex ranges are for.
    for chunk in 0..5 {
        let mut line = "ZADD zl".to_owned();
        for i in 0..200 {
            line += &format!(" 0 {}", member(&mut rng));
            let _ = (chunk, i);
        }
        same(&mut redis, &mut mono, &line);
    }
    let lex = |rng: &mut StdRng| match rng.gen_range(0..5) {
        0 => "-".to_owned(),
        1 => "+".to_owned(),
        2 => format!("(m{:04}", rng.gen_range(0..1500)),
        3 => format!("[m{:03}", rng.gen_range(0..150)),
        _ => format!("[m{:04}", rng.gen_range(0..1500)),
    };
    for _ in 0..300 {
        let (a, b) = (lex(&mut rng), lex(&mut rng));
        let line = match rng.gen_range(0..5) {
            0 => format!("ZLEXCOUNT zl {a} {b}"),
            1 => format!("ZRANGEBYLEX zl {a} {b}"),
            2 => format!(
                "ZREVRANGEBYLEX zl {b} {a} LIMIT {} {}",
                rng.gen_range(0..50),
                rng.gen_range(-1..9)
            ),
            3 => format!("ZRANGEBYLEX zl {a} {b} LIMIT {} 5", rng.gen_range(0..900)),
            _ => format!("ZADD zl 0 {}", member(&mut rng)),
        };
        same(&mut redis, &mut mono, &line);
    }
    same(&mut redis, &mut mono, "ZREMRANGEBYLEX zl [m0100 (m0900");
    same(&mut redis, &mut mono, "ZRANGEBYLEX zl - +");
    let bound = |rng: &mut StdRng| match rng.gen_range(0..4) {
        0 => "-inf".to_owned(),
        1 => "+inf".to_owned(),
        2 => format!("({}", rng.gen_range(-100_000..100_000)),
        _ => rng.gen_range(-100_000..100_000).to_string(),
    };
    for step in 0..1500 {
        let z = ["z1", "z2", "zmissing"][rng.gen_range(0..3)];
        let (a, b) = (rng.gen_range(-1300i64..1300), rng.gen_range(-1300i64..1300));
        let line = match rng.gen_range(0..14) {
            0 => format!("ZADD {z} {} {}", score(&mut rng), member(&mut rng)),
            1 => format!("ZREM {z} {} {}", member(&mut rng), member(&mut rng)),
            2 | 3 => format!("ZRANK {z} {}", member(&mut rng)),
            4 => format!("ZREVRANK {z} {}", member(&mut rng)),
            5 => format!("ZCOUNT {z} {} {}", bound(&mut rng), bound(&mut rng)),
            6 => format!("ZRANGE {z} {a} {b} WITHSCORES"),
            7 => format!("ZREVRANGE {z} {a} {b}"),
            8 => format!(
                "ZRANGEBYSCORE {z} {} {} LIMIT {} {}",
                bound(&mut rng),
                bound(&mut rng),
                a.abs(),
                b
            ),
            9 => format!(
                "ZREVRANGEBYSCORE {z} {} {} WITHSCORES LIMIT {} {}",
                bound(&mut rng),
                bound(&mut rng),
                a.abs(),
                b.abs() % 7
            ),
            10 => format!(
                "ZRANGE {z} {} {} BYSCORE LIMIT {} 3",
                bound(&mut rng),
                bound(&mut rng),
                a.abs()
            ),
            11 => format!("DEL k{}", rng.gen_range(0..1500)),
            12 => "DBSIZE".to_owned(),
            _ if step % 50 == 13 => format!("ZREMRANGEBYRANK {z} {a} {}", a + 3),
            _ => format!("ZCARD {z}"),
        };
        same(&mut redis, &mut mono, &line);
    }
    // Inside MULTI the transaction's own writes count, before EXEC (in
    // database 1, of default chunks: a transaction is atomic in one chunk).
    same(&mut redis, &mut mono, "SELECT 1");
    for _ in 0..3 {
        let mut line = "ZADD z1".to_owned();
        for _ in 0..100 {
            line += &format!(" {} {}", score(&mut rng), member(&mut rng));
        }
        same(&mut redis, &mut mono, &line);
    }
    for i in 0..20 {
        same(&mut redis, &mut mono, &format!("SET k{i} v"));
    }
    let tx = [
        "MULTI",
        "ZADD z1 -1e308 aaa-first",
        "ZREM z1 m0001 m0002 m0003",
        "ZRANK z1 aaa-first",
        "ZCOUNT z1 -inf +inf",
        "ZRANGE z1 5 9",
        "ZREVRANGE z1 5 9 WITHSCORES",
        "ZRANGEBYSCORE z1 -inf +inf LIMIT 100 4",
        "SET newkey 1",
        "DEL k1 k2 k3",
        "DBSIZE",
        "EXEC",
    ];
    for line in tx {
        same(&mut redis, &mut mono, line);
    }
}

/// Random picks come from the collection, distinct when asked to be, and
/// every element is picked now and then (no element is out of reach).
#[test]
fn random_picks_reach_every_element() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = monotable_tests::small_chunked_redis_node(dir.path());
    let mut c = RawResp::connect(node.resp_addr, 30);
    let members: Vec<String> =
        (0..60).map(|i| format!("member-{i:03}-{}", "x".repeat(40))).collect();
    let mut sadd = vec!["SADD".to_owned(), "s".to_owned()];
    sadd.extend(members.iter().cloned());
    let mut hset = vec!["HSET".to_owned(), "h".to_owned()];
    for m in &members {
        hset.push(m.clone());
        hset.push(format!("value-of-{m}"));
    }
    let mut zadd = vec!["ZADD".to_owned(), "z".to_owned()];
    for (i, m) in members.iter().enumerate() {
        zadd.push(i.to_string());
        zadd.push(m.clone());
    }
    for cmd in [&sadd, &hset, &zadd] {
        let words: Vec<&[u8]> = cmd.iter().map(|w| w.as_bytes()).collect();
        c.call(&words);
    }
    for m in &members {
        c.call(&[b"SET", format!("key-{m}").as_bytes(), b"v"]);
    }
    let all: HashSet<&str> = members.iter().map(String::as_str).collect();
    let bulks = |reply: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(reply).to_string();
        text.split("\r\n")
            .filter(|l| {
                l.starts_with("member-") || l.starts_with("key-") || l.starts_with("value-of-")
            })
            .map(str::to_owned)
            .collect()
    };
    let mut seen: HashMap<&str, HashSet<String>> = HashMap::new();
    // 1,500 single picks miss a given one of 60 with odds of e^-25.
    for _ in 0..1500 {
        for (what, line) in [
            ("srandmember", "SRANDMEMBER s"),
            ("srandmember 5", "SRANDMEMBER s 5"),
            ("srandmember -7", "SRANDMEMBER s -7"),
            ("hrandfield", "HRANDFIELD h 3 WITHVALUES"),
            ("randomkey", "RANDOMKEY"),
            ("zrandmember", "ZRANDMEMBER z"),
            ("zrandmember 4", "ZRANDMEMBER z 4"),
        ] {
            let reply = c.call_str(line);
            let got = if what == "randomkey" {
                let text = String::from_utf8_lossy(&reply).to_string();
                text.split("\r\n").nth(1).map(str::to_owned).into_iter().collect()
            } else {
                bulks(&reply)
            };
            match what {
                "srandmember 5" => {
                    assert_eq!(got.len(), 5, "{line}");
                    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 5, "distinct: {got:?}");
                }
                "srandmember -7" => assert_eq!(got.len(), 7, "{line}"),
                "zrandmember 4" => {
                    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 4, "distinct: {got:?}")
                }
                "hrandfield" => {
                    assert_eq!(got.len(), 6, "{line}");
                    for pair in got.chunks(2) {
                        assert_eq!(pair[1], format!("value-of-{}", pair[0]));
                    }
                }
                _ => assert_eq!(got.len(), 1, "{line}: {got:?}"),
            }
            for g in got {
                let m = g.trim_start_matches("key-").trim_start_matches("value-of-").to_owned();
                if what != "randomkey" || g.starts_with("key-") {
                    assert!(all.contains(m.as_str()), "{line} picked {g}");
                }
                seen.entry(what).or_default().insert(m);
            }
        }
    }
    for (what, got) in &seen {
        if *what != "randomkey" {
            assert_eq!(got.len(), members.len(), "{what} never picked some members");
        }
    }
    // RANDOMKEY picks among the 63 keys (s, h, z and the 60 strings).
    assert!(seen["randomkey"].len() >= 50, "{:?}", seen["randomkey"].len());
    // SPOP takes distinct members out until the set is gone.
    let mut popped = HashSet::new();
    for _ in 0..15 {
        for g in bulks(&c.call_str("SPOP s 4")) {
            assert!(all.contains(g.as_str()), "{g}");
            assert!(popped.insert(g.clone()), "popped twice: {g}");
        }
    }
    assert_eq!(popped.len(), 60);
    assert_eq!(c.call_str("EXISTS s"), b":0\r\n");
}
