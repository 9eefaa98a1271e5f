//! Streams against a real redis-server 7.0 (both started here on free
//! loopback ports): scripted sessions and random sequences of stream
//! commands (hostile fields and values, deletions, exact and approximate
//! trims under several node sizes, consumer groups, claims) answered byte
//! for byte as Redis answers them; what depends on the clock (generated
//! IDs, idle times, delivery times) and XINFO's `radix-tree-nodes` (an
//! internal of Redis's radix tree) are masked. Blocking reads are served
//! as Redis serves them.

use std::time::Duration;

use monotable_tests::{assert_same, show, test_seed, RawResp, Twin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A reply with what depends on the clock masked: XINFO's
/// `radix-tree-nodes`, `idle`, `seen-time`, delivery times.
fn masked(reply: &[u8]) -> String {
    let text = show(reply);
    let mut out = String::new();
    let mut mask_next = false;
    for part in text.split("\\r\\n") {
        if mask_next && part.starts_with(':') {
            out.push_str(":<masked>\\r\\n");
            mask_next = false;
            continue;
        }
        mask_next = matches!(part, "radix-tree-nodes" | "idle" | "seen-time");
        out.push_str(part);
        out.push_str("\\r\\n");
    }
    out
}

fn call_masked(redis: &mut RawResp, mono: &mut RawResp, args: &[&[u8]]) {
    let line: Vec<String> = args.iter().map(|a| show(a)).collect();
    let line = line.join(" ");
    let want = masked_pending(&line, &redis.call(args));
    let got = masked_pending(&line, &mono.call(args));
    assert_eq!(got, want, "{line}");
}

fn words(line: &str) -> Vec<&[u8]> {
    line.split(' ').map(str::as_bytes).collect()
}

/// Postmortem: streams were missing (XADD and the rest unknown commands).
#[test]
fn stream_commands_answer_as_redis() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(10);
    let session = [
        "XADD s 1-1 a 1 b 2",
        "XADD s 1-* c 3",
        "XADD s 1-2 x y",
        "XADD s 0-0 x y",
        "XADD s 2 f v",
        "XADD s 3-0 f",
        "XADD s NOMKSTREAM 4-0 f v",
        "XADD nos NOMKSTREAM 4-0 f v",
        "EXISTS nos",
        "XADD nos 0-0 f v",
        "EXISTS nos",
        "XADD s 18446744073709551615-18446744073709551614 f v",
        "XADD s 18446744073709551615-* f v",
        "XADD s 18446744073709551615-* f v",
        "XADD s * f v",
        "DEL s",
        "XADD s 1-18446744073709551615 a b",
        "XADD s 1-* a b",
        "XADD s MAXLEN 1 MINID 1 * a b",
        "XADD s MAXLEN -1 * a b",
        "XADD s LIMIT 10 * a b",
        "XADD s MAXLEN 5 LIMIT 10 * a b",
        "XADD s MAXLEN ~ 5 LIMIT -1 * a b",
        "XADD s MINID + * a b",
        "XADD s 1-x a b",
        "XADD s -1 a b",
        "XADD s 1--01 a b",
        "XADD s + a b",
        "XLEN s",
        "XLEN nos",
        "SET str v",
        "XLEN str",
        "XADD str * a b",
        "XRANGE str - +",
        "DEL s",
        "XADD s 1 a 1",
        "XADD s 2 a 2 a 3",
        "XADD s 3 b \u{0}",
        "XADD s 4 c 4",
        "XADD s 5-5 d 5",
        "XRANGE s - +",
        "XRANGE s 2 4",
        "XRANGE s (2 (4",
        "XRANGE s (2-0 +",
        "XRANGE s - (5-5",
        "XRANGE s (0-0 (0-1",
        "XRANGE s - (0-0",
        "XRANGE s (18446744073709551615-18446744073709551615 +",
        "XRANGE s ( +",
        "XRANGE s - + COUNT 2",
        "XRANGE s - + COUNT 0",
        "XRANGE s - + COUNT -1",
        "XRANGE s - + COUNT x",
        "XRANGE s - + LIMIT 1",
        "XRANGE nos - + COUNT 0",
        "XREVRANGE s + - COUNT 2",
        "XREVRANGE s 4 2",
        "XREVRANGE s (5-5 -",
        "XRANGE s 5 1",
        "XDEL s 2 9 2 x",
        "XDEL s 2 9 2",
        "XDEL s 2",
        "XDEL nos 1",
        "XINFO STREAM s",
        "XINFO STREAM s FULL",
        "XINFO STREAM s FULL COUNT 1",
        "XINFO STREAM s FULL COUNT -5",
        "XINFO STREAM s LITE",
        "XINFO STREAM s FULL COUNT",
        "XINFO STREAM nos",
        "XINFO STREAM str",
        "XINFO HELP",
        "XINFO HELP x",
        "XINFO NOSUCH s",
        "XTRIM s MAXLEN 2",
        "XRANGE s - +",
        "XTRIM s MINID 5-5",
        "XTRIM s",
        "XTRIM s LIMIT 5",
        "XTRIM s MAXLEN 1 LIMIT 5",
        "XTRIM s MAXLEN ~ 1 LIMIT 5",
        "XTRIM s NOSUCH 1",
        "XTRIM nos MAXLEN 1",
        "XINFO STREAM s",
        "XSETID s 1-0",
        "XSETID s 9-0",
        "XSETID s 10-0 ENTRIESADDED 1",
        "XSETID s 10-0 ENTRIESADDED -1",
        "XSETID s 10-0 MAXDELETEDID 11-0",
        "XSETID s 10-0 ENTRIESADDED 100 MAXDELETEDID 6-0",
        "XSETID s 10-0 ENTRIESADDED",
        "XSETID nos 10-0",
        "XINFO STREAM s",
        "XADD s 10-0 a b",
        "XADD s 10-1 a b",
        "XADD s MAXLEN 0 11 a b",
        "XINFO STREAM s",
        "TYPE s",
        "OBJECT ENCODING s",
        "XREAD COUNT 1 STREAMS s 0",
        "XREAD STREAMS s nos 0 0",
        "XREAD STREAMS nos $",
        "XREAD STREAMS s",
        "XREAD STREAMS s nos 0",
        "XREAD GROUP g c STREAMS s 0",
        "XREAD NOACK STREAMS s 0",
        "XREAD STREAMS s >",
        "XREAD STREAMS str 0",
        "XREAD BLOCK -1 STREAMS s 0",
        "XREAD BLOCK x STREAMS s 0",
        "XREAD COUNT x STREAMS s 0",
        "XREAD FOO STREAMS s 0",
        "XREAD COUNT 1",
        "DEL s",
        "XADD s 1 a 1",
        "XADD s 2 a 2",
        "XADD s 3 a 3",
        "XADD s 4 a 4",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s g2 $ ENTRIESREAD 3",
        "XGROUP CREATE s g3 0 ENTRIESREAD -2",
        "XGROUP CREATE s g3 0 FOO",
        "XGROUP CREATE nos g 0",
        "XGROUP CREATE str g 0",
        "XGROUP CREATE s g3 x",
        "XGROUP SETID s nog 0",
        "XGROUP HELP",
        "XINFO GROUPS s",
        "XREADGROUP GROUP g c1 COUNT 2 STREAMS s >",
        "XREADGROUP GROUP g c2 STREAMS s >",
        "XREADGROUP GROUP g c2 STREAMS s >",
        "XREADGROUP GROUP g c1 STREAMS s 0",
        "XREADGROUP GROUP g c1 STREAMS s 1",
        "XREADGROUP GROUP g c3 STREAMS s 0",
        "XREADGROUP GROUP g c1 STREAMS s $",
        "XREADGROUP GROUP nog c1 STREAMS s >",
        "XREADGROUP GROUP g c1 STREAMS nos >",
        "XREADGROUP STREAMS s >",
        "XREADGROUP GROUP g STREAMS s >",
        "XPENDING s g",
        "XPENDING s g - + 10",
        "XPENDING s g - + 10 c2",
        "XPENDING s g - + 10 nobody",
        "XPENDING s g (1 (4 1",
        "XPENDING s g IDLE 0 - + 10",
        "XPENDING s g - +",
        "XPENDING s nog",
        "XPENDING nos g",
        "XACK s g 1 1 9",
        "XACK s g x",
        "XACK s nog 1",
        "XACK nos g 1",
        "XPENDING s g",
        "XINFO GROUPS s",
        "XDEL s 3",
        "XREADGROUP GROUP g c2 STREAMS s 0",
        "XCLAIM s g c9 0 2 3 JUSTID",
        "XCLAIM s g c9 0 4 RETRYCOUNT 7",
        "XPENDING s g - + 10",
        "XCLAIM s g c9 0 1 FORCE JUSTID",
        "XCLAIM s g c9 0 x",
        "XCLAIM s g c9 x 1",
        "XCLAIM s g c9 0 1 IDLE x",
        "XCLAIM s g c9 0 1 BOGUS",
        "XCLAIM s g c9 0 1 LASTID 100-0 JUSTID",
        "XCLAIM s nog c9 0 1",
        "XAUTOCLAIM s g c10 0 0 COUNT 1",
        "XAUTOCLAIM s g c10 0 0 JUSTID",
        "XAUTOCLAIM s g c10 0 0 COUNT 0",
        "XAUTOCLAIM s g c10 x 0",
        "XAUTOCLAIM s nog c10 0 0",
        "XINFO CONSUMERS s g",
        "XINFO CONSUMERS s nog",
        "XINFO GROUPS s",
        "XINFO STREAM s FULL",
        "XGROUP CREATECONSUMER s g c1",
        "XGROUP CREATECONSUMER s g c11",
        "XGROUP DELCONSUMER s g c10",
        "XGROUP DELCONSUMER s g nobody",
        "XGROUP SETID s g $",
        "XGROUP SETID s g 1 ENTRIESREAD 1",
        "XINFO GROUPS s",
        "XGROUP DESTROY s g",
        "XGROUP DESTROY s g",
        "XINFO GROUPS s",
        "XGROUP CREATE mk g $ MKSTREAM",
        "XINFO STREAM mk",
        "XREADGROUP GROUP g c STREAMS mk >",
        "XREADGROUP GROUP g c NOACK STREAMS s >",
    ];
    for line in session {
        call_masked(&mut redis, &mut mono, &words(line));
    }
    // Generated IDs: the next after the last, whatever the clock says.
    for c in [&mut redis, &mut mono] {
        c.call_str("DEL gen");
        c.call_str("XADD gen 99999999999999-5 a b");
    }
    assert_same(&mut redis, &mut mono, &words("XADD gen * a b"));
    // A stream's rows go with it: DEL, RENAME, COPY, MOVE.
    for line in [
        "XGROUP CREATE gen g 0",
        "XREADGROUP GROUP g c STREAMS gen >",
        "COPY gen gen2",
        "RENAME gen gen3",
        "XINFO STREAM gen3 FULL",
        "XINFO STREAM gen2 FULL",
        "DEL gen2",
        "XLEN gen2",
        "MOVE gen3 3",
        "SELECT 3",
        "XINFO STREAM gen3 FULL",
        "SCAN 0 TYPE stream",
        "DEL gen3",
        "DBSIZE",
        "SELECT 0",
    ] {
        call_masked(&mut redis, &mut mono, &words(line));
    }
}

/// Random sequences of stream commands on a few keys, under changing
/// node sizes (so approximate trims and XINFO's `radix-tree-keys` follow
/// Redis's nodes), with fields and values that are empty, binary, long or
/// integers of every listpack encoding.
#[test]
fn random_stream_sequences_answer_as_redis() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(20);
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: [&[u8]; 3] = [b"s1", b"s2", b"s\0x"];
    let mut next_ms = [1u64; 3];
    for step in 0..1500 {
        let k = rng.gen_range(0..keys.len());
        let key = keys[k].to_vec();
        let mut args: Vec<Vec<u8>> = Vec::new();
        let value = |rng: &mut StdRng| -> Vec<u8> {
            match rng.gen_range(0..7) {
                0 => Vec::new(),
                1 => vec![0u8; rng.gen_range(1..4)],
                2 => rng.gen_range(-5000i64..5000).to_string().into_bytes(),
                3 => rng.gen::<i64>().to_string().into_bytes(),
                4 => vec![b'v'; rng.gen_range(60..300)],
                5 => format!("0{}", rng.gen_range(0..100)).into_bytes(),
                _ => format!("f{}", rng.gen_range(0..4)).into_bytes(),
            }
        };
        match rng.gen_range(0..100) {
            0..=44 => {
                args.push(b"XADD".to_vec());
                args.push(key.clone());
                if rng.gen_bool(0.2) {
                    let (what, n) = if rng.gen_bool(0.5) {
                        (b"MAXLEN".to_vec(), rng.gen_range(0..40u64).to_string())
                    } else {
                        (
                            b"MINID".to_vec(),
                            format!("{}", next_ms[k].saturating_sub(rng.gen_range(0..40))),
                        )
                    };
                    args.push(what);
                    let approx = rng.gen_bool(0.5);
                    args.push(if approx { b"~".to_vec() } else { b"=".to_vec() });
                    args.push(n.into_bytes());
                    if approx && rng.gen_bool(0.5) {
                        args.push(b"LIMIT".to_vec());
                        args.push(rng.gen_range(0..30u64).to_string().into_bytes());
                    }
                }
                next_ms[k] += rng.gen_range(0..3);
                args.push(if rng.gen_bool(0.3) {
                    format!("{}-*", next_ms[k]).into_bytes()
                } else {
                    next_ms[k] += 1;
                    format!("{}-{}", next_ms[k], rng.gen_range(0..3)).into_bytes()
                });
                // The same fields often, so entries share their node's.
                let fields = if rng.gen_bool(0.7) { 1 } else { rng.gen_range(1..4) };
                for f in 0..fields {
                    args.push(if rng.gen_bool(0.8) {
                        format!("f{f}").into_bytes()
                    } else {
                        value(&mut rng)
                    });
                    args.push(value(&mut rng));
                }
            }
            45..=54 => {
                args.push(b"XDEL".to_vec());
                args.push(key.clone());
                for _ in 0..rng.gen_range(1..4) {
                    args.push(
                        format!("{}-{}", rng.gen_range(0..=next_ms[k]), rng.gen_range(0..3))
                            .into_bytes(),
                    );
                }
            }
            55..=61 => {
                args.push(b"XTRIM".to_vec());
                args.push(key.clone());
                if rng.gen_bool(0.5) {
                    args.push(b"MAXLEN".to_vec());
                } else {
                    args.push(b"MINID".to_vec());
                }
                let approx = rng.gen_bool(0.5);
                if approx {
                    args.push(b"~".to_vec());
                }
                if args[2] == b"MAXLEN" {
                    args.push(rng.gen_range(0..60u64).to_string().into_bytes());
                } else {
                    args.push(rng.gen_range(0..=next_ms[k]).to_string().into_bytes());
                }
                if approx && rng.gen_bool(0.3) {
                    args.push(b"LIMIT".to_vec());
                    args.push(rng.gen_range(0..50u64).to_string().into_bytes());
                }
            }
            62..=71 => {
                let rev = rng.gen_bool(0.5);
                args.push(if rev { b"XREVRANGE".to_vec() } else { b"XRANGE".to_vec() });
                args.push(key.clone());
                let bound = |rng: &mut StdRng| -> Vec<u8> {
                    match rng.gen_range(0..5) {
                        0 => b"-".to_vec(),
                        1 => b"+".to_vec(),
                        2 => format!("({}", rng.gen_range(0..=next_ms[k])).into_bytes(),
                        _ => format!("{}-{}", rng.gen_range(0..=next_ms[k]), rng.gen_range(0..3))
                            .into_bytes(),
                    }
                };
                args.push(bound(&mut rng));
                args.push(bound(&mut rng));
                if rng.gen_bool(0.5) {
                    args.push(b"COUNT".to_vec());
                    args.push(rng.gen_range(0..20u64).to_string().into_bytes());
                }
            }
            72..=77 => {
                args.push(b"XINFO".to_vec());
                args.push(b"STREAM".to_vec());
                args.push(key.clone());
                if rng.gen_bool(0.3) {
                    args.push(b"FULL".to_vec());
                }
            }
            78..=81 => {
                args.push(b"XREAD".to_vec());
                args.push(b"COUNT".to_vec());
                args.push(rng.gen_range(1..10u64).to_string().into_bytes());
                args.push(b"STREAMS".to_vec());
                args.push(key.clone());
                args.push(keys[(k + 1) % keys.len()].to_vec());
                args.push(rng.gen_range(0..=next_ms[k]).to_string().into_bytes());
                args.push(b"0".to_vec());
            }
            82..=85 => {
                args.push(b"CONFIG".to_vec());
                args.push(b"SET".to_vec());
                if rng.gen_bool(0.7) {
                    args.push(b"stream-node-max-entries".to_vec());
                    args.push(
                        [0u64, 1, 2, 5, 10, 100][rng.gen_range(0..6)].to_string().into_bytes(),
                    );
                } else {
                    // No limit below 500 bytes: redis-server 7.0 corrupts a
                    // node's listpack (and aborts on a later XDEL or XRANGE)
                    // when the limit drops under what a node preallocated
                    // (seed 16503053613821893531: a limit of 100, then 30,
                    // then XADD and XDEL), so it cannot be the oracle there.
                    args.push(b"stream-node-max-bytes".to_vec());
                    args.push(
                        [0u64, 500, 1000, 4096][rng.gen_range(0..4)].to_string().into_bytes(),
                    );
                }
            }
            86..=87 => {
                args.push(b"DEL".to_vec());
                args.push(key.clone());
                next_ms[k] = 1;
            }
            _ => {
                args.push(b"XLEN".to_vec());
                args.push(key.clone());
            }
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let want = masked(&redis.call(&refs));
        let got = masked(&mono.call(&refs));
        let line: Vec<String> = refs.iter().map(|a| show(a)).collect();
        assert_eq!(got, want, "seed {seed} step {step}: {}", line.join(" "));
    }
}

/// Random consumer-group traffic (reads by several consumers, history
/// reads, acknowledgements, claims, deletions, trims) against Redis; the
/// pending lists compared through XPENDING and XINFO STREAM FULL with the
/// clock masked.
#[test]
fn random_consumer_group_sequences_answer_as_redis() {
    let twin = Twin::start();
    let (mut redis, mut mono) = twin.connect(20);
    let seed = test_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    for c in [&mut redis, &mut mono] {
        c.call_str("XGROUP CREATE q g1 $ MKSTREAM");
        c.call_str("XGROUP CREATE q g2 0");
    }
    let mut next = 1u64;
    for step in 0..1200 {
        let group = if rng.gen_bool(0.7) { "g1" } else { "g2" };
        let consumer = format!("c{}", rng.gen_range(0..4));
        let id = |rng: &mut StdRng| format!("{}-0", rng.gen_range(1..=next.max(1)));
        let line = match rng.gen_range(0..100) {
            0..=29 => {
                next += 1;
                format!("XADD q {next}-0 f {}", rng.gen_range(0..1000))
            }
            30..=44 => {
                let count = rng.gen_range(1..5);
                let from = if rng.gen_bool(0.8) { ">".to_string() } else { id(&mut rng) };
                let noack = if rng.gen_bool(0.1) { " NOACK" } else { "" };
                format!("XREADGROUP GROUP {group} {consumer} COUNT {count}{noack} STREAMS q {from}")
            }
            45..=56 => format!("XACK q {group} {} {}", id(&mut rng), id(&mut rng)),
            57..=64 => {
                format!("XCLAIM q {group} {consumer} 0 {} {} JUSTID", id(&mut rng), id(&mut rng))
            }
            65..=68 => format!("XCLAIM q {group} {consumer} 0 {} RETRYCOUNT 5", id(&mut rng)),
            69..=72 => format!(
                "XAUTOCLAIM q {group} {consumer} 0 {} COUNT {}",
                id(&mut rng),
                rng.gen_range(1..5)
            ),
            73..=77 => format!("XDEL q {}", id(&mut rng)),
            78..=79 => format!("XTRIM q MAXLEN {}", rng.gen_range(5..20)),
            80..=84 => format!("XPENDING q {group} - + 100"),
            85..=87 => format!("XPENDING q {group}"),
            88..=89 => format!("XPENDING q {group} - + 100 {consumer}"),
            90..=92 => "XINFO GROUPS q".to_string(),
            93..=94 => format!("XINFO CONSUMERS q {group}"),
            95 => format!("XGROUP DELCONSUMER q {group} {consumer}"),
            96 => format!("XGROUP SETID q {group} {}", id(&mut rng)),
            97 => format!("XGROUP CREATECONSUMER q {group} {consumer}"),
            _ => "XINFO STREAM q FULL COUNT 0".to_string(),
        };
        let args = words(&line);
        let want = masked_pending(&line, &redis.call(&args));
        let got = masked_pending(&line, &mono.call(&args));
        assert_eq!(got, want, "seed {seed} step {step}: {line}");
    }
}

/// [`masked`], and XPENDING's idle times and XINFO STREAM FULL's delivery
/// times (the integers after an ID and a consumer name).
fn masked_pending(line: &str, reply: &[u8]) -> String {
    let text = masked(reply);
    if !(line.starts_with("XPENDING") || line.starts_with("XINFO STREAM")) {
        return text;
    }
    let parts: Vec<&str> = text.split("\\r\\n").collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        // An entry of a PEL: *4 $len id $len name :time :count, or
        // *3 $len id :time :count (a consumer's own).
        let after_name = i >= 5 && parts[i - 5].starts_with("*4") && p.starts_with(':');
        let after_id = i >= 3
            && parts[i - 3].starts_with("*3")
            && parts[i - 1].contains('-')
            && p.starts_with(':');
        out.push(if after_name || after_id { ":<time>" } else { p });
    }
    out.join("\\r\\n")
}

/// Blocked XREAD and XREADGROUP are served as Redis serves them: new
/// entries wake every reader, `$` means what was last when it blocked,
/// a deleted stream or a destroyed group ends an XREADGROUP with Redis's
/// errors, and a timeout answers a null.
#[test]
fn blocked_stream_reads_are_served_as_redis_serves_them() {
    let twin = Twin::start();
    let run = |addr: std::net::SocketAddr| -> Vec<String> {
        let mut c = RawResp::connect(addr, 10);
        let mut seen = Vec::new();
        c.call_str("FLUSHALL");
        c.call_str("XADD s 1 old v");
        // Two readers of `$`, one of 0: each gets what it asked for.
        let mut readers: Vec<RawResp> = (0..3).map(|_| RawResp::connect(addr, 10)).collect();
        readers[0].send(&words("XREAD BLOCK 5000 STREAMS s $"));
        readers[1].send(&words("XREAD BLOCK 0 STREAMS nos s $ $"));
        readers[2].send(&words("XREAD BLOCK 5000 COUNT 1 STREAMS s 0"));
        seen.push(show(&readers[2].reply().expect("served at once")));
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("XADD s 2 new v");
        for r in &mut readers[..2] {
            seen.push(show(&r.reply().expect("woken")));
        }
        // XADD then DEL in one transaction wakes no one for good.
        readers[0].send(&words("XREAD BLOCK 5000 STREAMS s2 $"));
        std::thread::sleep(Duration::from_millis(200));
        for line in ["MULTI", "XADD s2 1 a b", "DEL s2", "EXEC"] {
            c.call_str(line);
        }
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("XADD s2 5 c d");
        seen.push(show(&readers[0].reply().expect("woken by the second XADD")));
        // Nor does a key that comes to hold a list (then deleted).
        readers[0].send(&words("XREAD BLOCK 5000 STREAMS s3 $"));
        std::thread::sleep(Duration::from_millis(200));
        for line in ["MULTI", "XADD s3 1 a b", "DEL s3", "LPUSH s3 x", "EXEC", "DEL s3"] {
            c.call_str(line);
        }
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("XADD s3 5 c d");
        seen.push(show(&readers[0].reply().expect("woken by the XADD after the list")));
        // A timeout.
        readers[0].send(&words("XREAD BLOCK 100 STREAMS s $"));
        seen.push(show(&readers[0].reply().expect("timed out")));
        // Groups: new entries, a deleted key, a destroyed group.
        c.call_str("XGROUP CREATE s g $");
        readers[0].send(&words("XREADGROUP GROUP g alice BLOCK 0 STREAMS s >"));
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("XADD s 3 x y");
        seen.push(show(&readers[0].reply().expect("group read woken")));
        readers[0].send(&words("XREADGROUP GROUP g alice BLOCK 0 STREAMS s >"));
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("CONFIG RESETSTAT");
        c.call_str("XGROUP DESTROY s g");
        seen.push(show(&readers[0].reply().expect("group destroyed")));
        // Counted once, as failed (Redis's `updateStatsOnUnblock`).
        let stats = String::from_utf8_lossy(&c.call_str("INFO commandstats")).into_owned();
        let xreadgroup = stats.lines().find(|l| l.starts_with("cmdstat_xreadgroup"));
        let counts = xreadgroup.map(|l| {
            l.split(',')
                .filter(|f| f.starts_with("cmdstat") || f.contains("_calls"))
                .collect::<Vec<_>>()
                .join(",")
        });
        seen.push(format!("{counts:?}"));
        c.call_str("XGROUP CREATE s g $");
        readers[0].send(&words("XREADGROUP GROUP g alice BLOCK 0 STREAMS s >"));
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("DEL s");
        seen.push(show(&readers[0].reply().expect("stream deleted")));
        c.call_str("XGROUP CREATE s g $ MKSTREAM");
        readers[0].send(&words("XREADGROUP GROUP g alice BLOCK 0 STREAMS s >"));
        std::thread::sleep(Duration::from_millis(200));
        c.call_str("FLUSHALL");
        seen.push(show(&readers[0].reply().expect("flushed")));
        // Not blocking inside MULTI; an error in a script.
        for line in ["MULTI", "XREAD BLOCK 0 STREAMS nos $", "EXEC"] {
            seen.push(show(&c.call_str(line)));
        }
        seen.push(show(&c.call(&[
            b"EVAL",
            b"return redis.pcall('XREAD', 'BLOCK', '0', 'STREAMS', 'nos', '$')",
            b"0",
        ])));
        seen
    };
    let want = run(twin.redis.addr);
    let got = run(twin.node.resp_addr);
    assert_eq!(got, want);
}

/// A blocked XREADGROUP whose client was killed, or unblocked, is not
/// served by an XADD that follows: the entry goes to the next reader.
/// Postmortem: an XADD right after CLIENT KILL delivered its entry to the
/// killed consumer (with NOACK, lost to the group).
#[test]
fn a_killed_or_unblocked_group_reader_takes_no_entry() {
    let twin = Twin::start();
    let run = |addr: std::net::SocketAddr| -> Vec<String> {
        let mut seen = Vec::new();
        for (round, end) in ["CLIENT KILL ID", "CLIENT UNBLOCK"].iter().enumerate() {
            let mut a = RawResp::connect(addr, 10);
            a.call_str("FLUSHALL");
            a.call_str("XGROUP CREATE s g $ MKSTREAM");
            let mut b = RawResp::connect(addr, 10);
            let id = String::from_utf8_lossy(&b.call_str("CLIENT ID"))
                .trim_start_matches(':')
                .trim()
                .to_owned();
            b.send(&words("XREADGROUP GROUP g dead NOACK BLOCK 0 STREAMS s >"));
            std::thread::sleep(Duration::from_millis(200));
            seen.push(show(&a.call_str(&format!("{end} {id}"))));
            a.call_str(&format!("XADD s {}-0 f v", round + 1));
            seen.push(show(&a.call_str("XREADGROUP GROUP g live STREAMS s >")));
            seen.push(show(&a.call_str("XPENDING s g")));
        }
        seen
    };
    assert_eq!(run(twin.node.resp_addr), run(twin.redis.addr));
}
