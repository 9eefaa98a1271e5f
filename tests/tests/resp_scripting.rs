//! Lua scripting (EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, SCRIPT) against a
//! real `redis-server` 7.0 started here on a free loopback port: the same
//! scripts to both, replies compared byte for byte in RESP2 and RESP3
//! (Lua-to-RESP and RESP-to-Lua conversions, `redis.call`/`pcall` errors,
//! error texts with the script's SHA and line, shebang flags, read-only
//! scripts, MULTI), then what only Monotable can be asked: scripts run
//! atomically under concurrent clients, a script over its instruction
//! budget is stopped with none of its writes applied, and a script's
//! writes survive kill -9 once it has replied.

use monotable_tests::show;
use monotable_tests::{Node, RawResp, Redis};

fn eval(body: &str, keys: &[&str], argv: &[&str]) -> Vec<Vec<u8>> {
    script("EVAL", body, &keys.len().to_string(), keys, argv)
}

/// `name body numkeys keys... argv...`
fn script(name: &str, body: &str, numkeys: &str, keys: &[&str], argv: &[&str]) -> Vec<Vec<u8>> {
    let mut args =
        vec![name.as_bytes().to_vec(), body.as_bytes().to_vec(), numkeys.as_bytes().to_vec()];
    args.extend(keys.iter().map(|k| k.as_bytes().to_vec()));
    args.extend(argv.iter().map(|a| a.as_bytes().to_vec()));
    args
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

fn same(redis: &mut RawResp, mono: &mut RawResp, args: &[Vec<u8>]) {
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    monotable_tests::assert_same(redis, mono, &args);
}

/// Scripts whose replies Redis 7.0 fixes, in both protocols.
fn cases() -> Vec<Vec<Vec<u8>>> {
    let mut c = vec![
        words("FLUSHALL"),
        words("SET s abc"),
        words("RPUSH l a b c"),
        words("HSET h f v"),
        words("ZADD z 1.5 m 2 n"),
        eval("return 1", &[], &[]),
        eval("return {1, 2, 3.99, -3.99, 'a', nil, 4}", &[], &[]),
        eval("return {1, {2, {3, 'x'}}, {ok='fine'}, {err='e1'}}", &[], &[]),
        eval("return true", &[], &[]),
        eval("return false", &[], &[]),
        eval("return nil", &[], &[]),
        eval("return {}", &[], &[]),
        eval("return {err=''}", &[], &[]),
        eval("return {err=5}", &[], &[]),
        eval("return {ok=5}", &[], &[]),
        eval("return {ok='a\\r\\nb'}", &[], &[]),
        eval("return {ok='x', err='y'}", &[], &[]),
        eval("return {double=3.5}", &[], &[]),
        eval(
            "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}",
            &["k1", "k2"],
            &["a1", "a2", "a3"],
        ),
        eval("return redis.error_reply('My Error')", &[], &[]),
        eval("return redis.error_reply('-x')", &[], &[]),
        eval("return redis.error_reply('')", &[], &[]),
        eval("return redis.error_reply(5)", &[], &[]),
        eval("return redis.status_reply('FINE')", &[], &[]),
        eval("return redis.sha1hex('')", &[], &[]),
        eval("return redis.sha1hex('abc')", &[], &[]),
        eval("return redis.REDIS_VERSION", &[], &[]),
        eval("return redis.call('get', KEYS[1])", &["s"], &[]),
        eval("return redis.call('get', 'nokey')", &[], &[]),
        eval("return tostring(redis.call('get', 'nokey'))", &[], &[]),
        eval("return redis.call('lrange', 'l', 0, -1)", &[], &[]),
        eval("return redis.call('hgetall', 'h')", &[], &[]),
        eval("return redis.call('zrange', 'z', 0, -1, 'withscores')", &[], &[]),
        eval("return redis.call('zscore', 'z', 'm')", &[], &[]),
        eval("return redis.call('ping')", &[], &[]),
        eval("return type(redis.call('ping'))", &[], &[]),
        eval("return redis.call('ping').ok", &[], &[]),
        eval("return redis.call('incr', KEYS[1])", &["s"], &[]),
        eval("return redis.pcall('incr', KEYS[1])", &["s"], &[]),
        eval("local ok, e = pcall(redis.call, 'incr', 's') return {tostring(ok), e}", &[], &[]),
        eval("return redis.call('nosuch')", &[], &[]),
        eval("return redis.call('get')", &[], &[]),
        eval("return redis.call('blpop', 'l', 0)", &[], &[]),
        eval("return redis.call('eval', 'return 1', 0)", &[], &[]),
        eval("return redis.call('multi')", &[], &[]),
        eval("return redis.call('subscribe', 'c')", &[], &[]),
        eval("return redis.call('get', {})", &[], &[]),
        eval("return redis.call()", &[], &[]),
        eval("return redis.pcall()", &[], &[]),
        eval("error('boom')", &[], &[]),
        eval("\n\nerror('on line three')", &[], &[]),
        eval("error({err='X custom'})", &[], &[]),
        eval("x = 1", &[], &[]),
        eval("return y", &[], &[]),
        eval("redis.call = nil", &[], &[]),
        eval("return 1", &["only-one-key-but-says-two"], &[]),
        eval("return unpack({1, 2})", &[], &[]),
        eval("redis.call('set', 'a', '1') error('after a write')", &[], &[]),
        words("GET a"),
        eval(
            "redis.call('set', KEYS[1], ARGV[1]) return redis.call('get', KEYS[1])",
            &["k"],
            &["v\u{0}x"],
        ),
        eval("return redis.call('set', 'n', 2.5)", &[], &[]),
        eval("return redis.call('get', 'n')", &[], &[]),
        eval("return redis.call('set', 'n', 10)", &[], &[]),
        eval("return redis.call('incrbyfloat', 'n', 0.1)", &[], &[]),
        eval(
            "redis.call('select', 1) redis.call('set', 'in1', 'x') return redis.call('dbsize')",
            &[],
            &[],
        ),
        words("EXISTS in1"),
        eval("#!lua\nreturn 1", &[], &[]),
        eval("#!lua flags=no-writes\nreturn redis.call('get', 's')", &[], &[]),
        eval("#!lua flags=no-writes\nreturn redis.call('set', 's', 1)", &[], &[]),
        eval("#!lua flags=bogus\nreturn 1", &[], &[]),
        eval("#!lua", &[], &[]),
        eval("#!python\nreturn 1", &[], &[]),
        eval("#!lua nope\nreturn 1", &[], &[]),
        eval("return redis.setresp(4)", &[], &[]),
        eval("redis.setresp(3) return redis.call('hgetall', 'h')", &[], &[]),
        eval("redis.setresp(3) return redis.call('zscore', 'z', 'm')", &[], &[]),
        eval("redis.setresp(3) return redis.call('get', 'nokey')", &[], &[]),
        eval("return redis.log(redis.LOG_WARNING, 'from a script')", &[], &[]),
        eval("return redis.log(99, 'x')", &[], &[]),
        script("EVAL", "return 1", "-1", &[], &[]),
        script("EVAL", "return 1", "abc", &[], &[]),
        script("EVAL", "return 1", "5", &["a"], &[]),
        script("EVAL", "return 1", "99999999999999999999", &[], &[]),
        words("EVAL"),
        words("EVALSHA ffffffffffffffffffffffffffffffffffffffff 0"),
        words("EVALSHA short 0"),
        script("EVAL_RO", "return redis.call('get','s')", "0", &[], &[]),
        script("EVAL_RO", "return redis.call('del','s')", "0", &[], &[]),
        // Postmortem: a read-only script could PUBLISH; Redis refuses what
        // may replicate too.
        script("EVAL_RO", "return redis.call('publish','ch','m')", "0", &[], &[]),
        eval("#!lua flags=no-writes\nreturn redis.call('publish', 'ch', 'm')", &[], &[]),
        words("EVALSHA_RO ffffffffffffffffffffffffffffffffffffffff 0"),
        words("SCRIPT KILL"),
        words("SCRIPT NOSUCH"),
        words("SCRIPT"),
        words("SCRIPT FLUSH BAD"),
        words("SCRIPT EXISTS"),
        words("MULTI"),
        eval("return redis.call('incr', 'counter')", &[], &[]),
        eval("return redis.call('incr', 'counter')", &[], &[]),
        words("EXEC"),
    ];
    // Replies in RESP3 (a script's booleans, maps and doubles).
    c.push(words("HELLO 3"));
    for body in [
        "return true",
        "return false",
        "return nil",
        "return {double=3.5}",
        "return {map={a=1}}",
        "return {set={a=true}}",
        "return {big_number='123456789012345678901234567890'}",
        "redis.setresp(3) return redis.call('hgetall', 'h')",
        "redis.setresp(3) return redis.call('zscore', 'z', 'm')",
        "redis.setresp(3) return redis.call('get', 'nokey')",
        "redis.setresp(3) return {redis.call('get', 'nokey') == nil}",
        "redis.setresp(3) return redis.call('smembers', 'nokey')",
        // The libraries Redis gives scripts: cjson, cmsgpack, bit, loadstring.
        "return cjson.encode({1, 2, 'a', true, false, cjson.null, {}, {x='y'}})",
        "return cjson.encode('a/b\"c\\\\d\\n\\1\\127')",
        "return cjson.encode({0.1, 1e300, 2^53, -0.0, 100, -5.5})",
        "return cjson.encode({1, nil, 3})",
        // Nesting up to decode_max_depth (1000), brackets in strings not
        // counted. Postmortem: serde's own limit refused 129 levels.
        "return #cjson.decode(string.rep('[', 1000) .. string.rep(']', 1000))",
        "return #cjson.decode('[\"[[[\", ' .. string.rep('[', 999) .. string.rep(']', 999) .. ']')",
        // Numbers past a long long convert as C casts them.
        // Postmortem: they saturated (1e30 gave i64::MAX, Redis i64::MIN).
        "return 1e30",
        "return -1e30",
        "return {2^63, -2^63, 2^62, 0/0}",
        "return table.concat(cjson.decode('[0.0, -5e3, -1, 0.3e-3, 1023.2, 0e10]'), ' ')",
        "local t = cjson.decode('{\"a\":[1,2,{\"b\":null}],\"s\":\"\\\\u00e9\"}') return {t.a[1], t.a[3].b == cjson.null, t.s}",
        "return {(pcall(cjson.decode, '{bad')), (pcall(cjson.encode, {[false]=1})), (pcall(cjson.encode, 0/0))}",
        "cjson.encode_max_depth(2) local ok = pcall(cjson.encode, {{{1}}}) cjson.encode_max_depth(1000) return {ok, cjson.encode({{1}})}",
        "local h = '' for _, v in ipairs({cmsgpack.pack(0.1), cmsgpack.pack(-1099511627776), cmsgpack.pack({1,2,3}), cmsgpack.pack({}), cmsgpack.pack('abc', true, false), cmsgpack.pack(300, -33, 1.5), cmsgpack.pack(string.rep('x', 40))}) do for i = 1, #v do h = h .. string.format('%02x', string.byte(v, i)) end h = h .. ' ' end return h",
        "return {cmsgpack.unpack(cmsgpack.pack(1, 'a', {1, 2}, -7, 2.5))}",
        "local p = cmsgpack.pack('a', 'bb', 'ccc') local o1, a = cmsgpack.unpack_limit(p, 1, 0) local o2, b = cmsgpack.unpack_one(p, o1) local o3, c = cmsgpack.unpack_limit(p, 0, o2) return {o1, a, o2, b, o3, c}",
        "return {bit.tobit(0xffffffff), bit.band(0xff, 0x0f), bit.bor(1, 2, 4), bit.bxor(1, 3), bit.lshift(1, 31), bit.rshift(-1, 28), bit.arshift(-256, 4), bit.tohex(255), bit.tohex(-1, -4), bit.bnot(0), bit.rol(1, 33), bit.bswap(0x12345678), bit.tobit(2^32 + 5)}",
        "return {bit.tobit('12'), bit.tobit(1/0), bit.band('7', 3), bit.tobit(0/0)}",
        "return loadstring('return 1 + 1')()",
        "return loadstring(string.dump(function() return 1 end)) == nil",
        // Deep but legal nesting, and nesting past the limits: errors, not
        // a process stack overflow.
        // Postmortem: 600 nested msgpack arrays, 700 nested tables for
        // cjson and nested gsub callbacks aborted the node.
        "return (pcall(cmsgpack.unpack, string.rep('\\145', 2000) .. '\\192'))",
        "return (pcall(cmsgpack.unpack, string.rep('\\145', 100000) .. '\\192'))",
        "local t = {} local c = t for i = 1, 700 do c[1] = {} c = c[1] end return (pcall(cjson.encode, t))",
        "local t = {} t.t = t return (pcall(cjson.encode, t))",
        "local function f(n) if n == 0 then return 'x' end return (string.gsub('a', 'a', function() return f(n - 1) end)) end return f(150)",
        "cjson.encode = 1",
        "bit.lshift = 1",
        "cmsgpack.pack = 1",
    ] {
        c.push(eval(body, &[], &[]));
    }
    c
}

#[test]
fn scripts_answer_as_redis_does() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 10);
    let mut mono = RawResp::connect(node.resp_addr, 10);
    for args in cases() {
        // HELLO's reply names the server: only the protocol switch matters.
        if args[0] == b"HELLO" {
            redis.call(&[b"HELLO", b"3"]);
            mono.call(&[b"HELLO", b"3"]);
            continue;
        }
        same(&mut redis, &mut mono, &args);
    }
}

/// SCRIPT LOAD, EXISTS, FLUSH and EVALSHA (by the SHA redis-server
/// gives), in both.
#[test]
fn loaded_scripts_run_by_their_sha() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut redis = RawResp::connect(redis_server.addr, 10);
    let mut mono = RawResp::connect(node.resp_addr, 10);
    let body = "return {'loaded', ARGV[1]}";
    let load = vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), body.as_bytes().to_vec()];
    let loaded = redis.call(&[b"SCRIPT", b"LOAD", body.as_bytes()]);
    let sha = String::from_utf8_lossy(&loaded[5..45]).into_owned();
    let upper = sha.to_uppercase();
    let evaled = "return 'evaled'";
    let evaled_sha =
        String::from_utf8_lossy(&redis.call(&[b"SCRIPT", b"LOAD", evaled.as_bytes()])[5..45])
            .into_owned();
    redis.call(&[b"SCRIPT", b"FLUSH"]);
    for args in [
        script("EVALSHA", &sha, "0", &[], &["x"]),
        load.clone(),
        script("EVALSHA", &sha, "0", &[], &["x"]),
        script("EVALSHA", &upper, "0", &[], &["y"]),
        script("EVALSHA_RO", &sha, "0", &[], &["z"]),
        words(&format!(
            "SCRIPT EXISTS {sha} {evaled_sha} ffffffffffffffffffffffffffffffffffffffff"
        )),
        eval(evaled, &[], &[]),
        words(&format!("SCRIPT EXISTS {evaled_sha}")),
        script("EVALSHA", &evaled_sha, "0", &[], &[]),
        vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), b"#!lua flags=bad\nreturn 1".to_vec()],
        words("SCRIPT FLUSH ASYNC"),
        words(&format!("SCRIPT EXISTS {sha} {evaled_sha}")),
        script("EVALSHA", &sha, "0", &[], &["x"]),
        load,
        words("SCRIPT FLUSH"),
        script("EVALSHA", &sha, "0", &[], &["x"]),
    ] {
        same(&mut redis, &mut mono, &args);
    }
    // Lua 5.4 words some syntax errors unlike Redis's 5.1: the prefix is
    // the same.
    let bad = show(&mono.call(&[b"SCRIPT", b"LOAD", b"return 1 +"]));
    assert!(
        bad.starts_with("-ERR Error compiling script (new function): user_script:1: "),
        "{bad}"
    );
}

/// GET-then-SET in a script is atomic: concurrent clients lose no update.
#[test]
fn concurrent_scripts_run_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let (clients, rounds) = (4, 50);
    let body = "local v = tonumber(redis.call('get', KEYS[1]) or '0') \
                redis.call('set', KEYS[1], v + 1) \
                redis.call('rpush', KEYS[2], v) return v";
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let addr = node.resp_addr;
            std::thread::spawn(move || {
                let mut c = RawResp::connect(addr, 30);
                for _ in 0..rounds {
                    let reply = c.call(&[b"EVAL", body.as_bytes(), b"2", b"count", b"seen"]);
                    assert!(reply.starts_with(b":"), "{}", show(&reply));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    let mut c = RawResp::connect(node.resp_addr, 10);
    let total = clients * rounds;
    assert_eq!(
        show(&c.call(&[b"GET", b"count"])),
        show(format!("${}\r\n{total}\r\n", total.to_string().len()).as_bytes())
    );
    // Every value was read exactly once.
    let list = c.call(&[b"LRANGE", b"seen", b"0", b"-1"]);
    let text = String::from_utf8_lossy(&list);
    let mut seen: Vec<u64> = text.split("\r\n").filter_map(|l| l.parse().ok()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..total as u64).collect::<Vec<_>>());
}

/// A script over its instruction budget is stopped with none of its
/// writes applied, pcall cannot catch the stop, and the node goes on.
#[test]
fn a_script_over_its_budget_is_stopped_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start_with(dir.path(), &["--script-instructions-max", "10000000"]);
    let mut c = RawResp::connect(node.resp_addr, 60);
    let body = "redis.call('set', 'written', 'yes') \
                while true do pcall(function() while true do end end) end";
    let reply = show(&c.call(&[b"EVAL", body.as_bytes(), b"0"]));
    assert!(
        reply.starts_with("-ERR Script killed") && reply.contains("instruction limit"),
        "{reply}"
    );
    assert_eq!(show(&c.call(&[b"EXISTS", b"written"])), ":0\\r\\n");
    assert_eq!(
        show(&c.call(&[b"SCRIPT", b"KILL"])),
        "-NOTBUSY No scripts in execution right now.\\r\\n"
    );
    // Inside MULTI, only the stopped script's writes go.
    c.call(&[b"MULTI"]);
    c.call(&[b"SET", b"before", b"1"]);
    c.call(&[b"EVAL", body.as_bytes(), b"0"]);
    c.call(&[b"SET", b"after", b"1"]);
    let exec = show(&c.call(&[b"EXEC"]));
    assert!(exec.starts_with("*3\\r\\n+OK\\r\\n-ERR Script killed"), "{exec}");
    assert_eq!(show(&c.call(&[b"EXISTS", b"before", b"written", b"after"])), ":2\\r\\n");
    // A memory hog fails with an error; the node and its next script live.
    let hog = "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 1000) .. i end";
    let reply = show(&c.call(&[b"EVAL", hog.as_bytes(), b"0"]));
    assert!(reply.starts_with("-"), "{reply}");
    assert_eq!(show(&c.call(&[b"EVAL", b"return 7", b"0"])), ":7\\r\\n");
    // Postmortem: a table holding one subtable four times, 30 levels deep,
    // encoded to 4^30 elements outside the Lua heap: cjson.encode and
    // cmsgpack.pack stop past the string limit with an error.
    for f in ["cjson.encode", "cmsgpack.pack"] {
        let bomb = format!("local t = {{1}} for i = 1, 30 do t = {{t, t, t, t}} end return {f}(t)");
        let reply = show(&c.call(&[b"EVAL", bomb.as_bytes(), b"0"]));
        assert!(reply.starts_with("-") && reply.contains("would exceed"), "{f}: {reply}");
    }
    assert_eq!(show(&c.call(&[b"EVAL", b"return 7", b"0"])), ":7\\r\\n");
}

/// Postmortem: a script's writes were held in memory without a bound
/// until it ended, so a loop of large SETs made the node hold gigabytes;
/// past 64 MiB a write now fails with an error the script can catch.
#[test]
fn a_scripts_held_writes_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path());
    let mut c = RawResp::connect(node.resp_addr, 120);
    let body = "local v = string.rep('x', 1000000) \
                for i = 1, 1000 do \
                  local ok, e = pcall(redis.call, 'set', 'big' .. i, v) \
                  if not ok then return {i, e} end \
                end \
                return 'all written'";
    let reply = show(&c.call(&[b"EVAL", body.as_bytes(), b"0"]));
    // 1,000,000-byte values plus keys: the 68th would pass 64 MiB.
    assert!(reply.starts_with("*2\\r\\n:68\\r\\n"), "{reply}");
    assert!(reply.contains("may write 67108864 bytes"), "{reply}");
    // What the script wrote before the refused one is applied, as after
    // any error a script catches.
    assert_eq!(show(&c.call(&[b"EXISTS", b"big1", b"big67", b"big68"])), ":2\\r\\n");
    assert!(node.rss_bytes() < 1 << 30, "RSS {} bytes", node.rss_bytes());
}

/// Once a script has replied its writes are durable: kill -9 and restart.
#[test]
fn a_scripts_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path());
    let mut c = RawResp::connect(node.resp_addr, 10);
    let body = "for i = 1, 200 do redis.call('hset', KEYS[1], 'f' .. i, ARGV[1] .. i) end \
                return redis.call('hlen', KEYS[1])";
    assert_eq!(show(&c.call(&[b"EVAL", body.as_bytes(), b"1", b"h\0key", b"v\0"])), ":200\\r\\n");
    node.kill();
    node.restart();
    let mut c = RawResp::connect(node.resp_addr, 10);
    assert_eq!(show(&c.call(&[b"HLEN", b"h\0key"])), ":200\\r\\n");
    assert_eq!(show(&c.call(&[b"HGET", b"h\0key", b"f17"])), "$4\\r\\nv\u{0}17\\r\\n");
}

/// The `calls=` and `failed_calls=` of each `cmdstat_` line of INFO
/// commandstats, sorted (times differ between servers).
fn command_calls(c: &mut RawResp) -> Vec<String> {
    let info = String::from_utf8_lossy(&c.call(&[b"INFO", b"commandstats"])).into_owned();
    let mut lines: Vec<String> = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .map(|l| {
            let (name, fields) = l.split_once(':').unwrap_or((l, ""));
            let kept: Vec<&str> = fields
                .split(',')
                .filter(|f| f.starts_with("calls=") || f.starts_with("failed_calls="))
                .collect();
            format!("{name}:{}", kept.join(","))
        })
        .collect();
    lines.sort();
    lines
}

/// Postmortem: the commands a script called were not counted in INFO
/// commandstats (Redis counts each as a call of its own).
#[test]
fn commands_scripts_call_count_in_commandstats() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let script = "redis.call('set', KEYS[1], 0) redis.call('expire', KEYS[1], 0) \
                  redis.call('geoadd', KEYS[1], 0, 0, 'bar') pcall(redis.call, 'incr', 'x', 'y')";
    let mut got = Vec::new();
    for addr in [redis_server.addr, node.resp_addr] {
        let mut c = RawResp::connect(addr, 10);
        c.call(&[b"CONFIG", b"RESETSTAT"]);
        c.call(&[b"SET", b"mykey", b"myval"]);
        c.call(&[b"EVAL", script.as_bytes(), b"1", b"mykey"]);
        got.push(command_calls(&mut c));
    }
    assert_eq!(got[1], got[0]);
}
