//! Redis 7.0 functions through the Redis endpoint: FUNCTION LOAD, LIST,
//! DELETE, FLUSH, DUMP/RESTORE, STATS and FCALL/FCALL_RO against a real
//! `redis-server` (replies and errors), libraries kept across a kill -9,
//! and a damaged library file refused at start instead of dropped.

use monotable_tests::assert_same as same;
use monotable_tests::assert_same_lines as same_lines;
use monotable_tests::{show, Node, RawResp, Redis};

const LIB: &str = "#!lua name=mylib\n\
redis.register_function('incr_by', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)\n\
redis.register_function{function_name='peek', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}, description='reads a key'}\n\
redis.register_function{function_name='bad_ro', callback=function(keys) return redis.call('SET', keys[1], 'x') end, flags={'no-writes'}}\n";

#[test]
fn functions_answer_as_redis_does() {
    let redis_server = Redis::start();
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    let mut r = RawResp::connect(redis_server.addr, 30);
    let mut m = RawResp::connect(node.resp_addr, 30);
    let lib = LIB.as_bytes();
    let cases: Vec<Vec<&[u8]>> = vec![
        vec![b"FUNCTION", b"LOAD", lib],
        vec![b"FUNCTION", b"LOAD", lib],
        vec![b"FUNCTION", b"LOAD", b"REPLACE", lib],
        vec![b"FUNCTION", b"LOAD", b"FOO", lib],
        vec![b"FUNCTION", b"LOAD"],
        vec![b"FCALL", b"incr_by", b"1", b"counter", b"5"],
        vec![b"FCALL", b"INCR_BY", b"1", b"counter", b"2"],
        vec![b"FCALL", b"peek", b"1", b"counter"],
        vec![b"FCALL_RO", b"peek", b"1", b"counter"],
        vec![b"FCALL_RO", b"incr_by", b"1", b"counter", b"1"],
        vec![b"FCALL_RO", b"bad_ro", b"1", b"k"],
        vec![b"FCALL", b"nosuch", b"0"],
        vec![b"FCALL", b"peek", b"x"],
        vec![b"FCALL", b"peek", b"3", b"a"],
        vec![b"FCALL", b"peek", b"-1"],
        vec![b"FUNCTION", b"LIST"],
        vec![b"FUNCTION", b"LIST", b"WITHCODE"],
        vec![b"FUNCTION", b"LIST", b"LIBRARYNAME", b"my*"],
        vec![b"FUNCTION", b"LIST", b"LIBRARYNAME", b"other*"],
        vec![b"FUNCTION", b"LIST", b"LIBRARYNAME"],
        vec![b"FUNCTION", b"LIST", b"BOGUS"],
        vec![b"FUNCTION", b"STATS"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.register_function('incr_by', function() return 1 end)"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nreturn 1"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.call('ping')"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nlocal x = math.floor(1)"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.register_function('a b', function() end)"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.register_function('f', function() end)\nredis.register_function('f', function() end)"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.register_function{function_name='f', callback=function() end, flags={'bogus'}}"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=other\nredis.register_function('f')"],
        // The load-time `redis` table is read-only: a library cannot break
        // or hijack the loads after it.
        // Postmortem: assigning redis.register_function succeeded and every
        // later FUNCTION LOAD failed (or ran the attacker's wrapper).
        vec![b"FUNCTION", b"LOAD", b"#!lua name=evil\nredis.register_function('e', function() return 1 end)\nredis.register_function = nil"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=evil\nredis.register_function('e', function() return 1 end)\nredis.log = 1"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=after\nredis.register_function('after', function() return 2 end)"],
        vec![b"FCALL", b"after", b"0"],
        vec![b"FUNCTION", b"DELETE", b"after"],
        vec![b"FUNCTION", b"LOAD", b"return 1"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=a-b\nx"],
        vec![b"FUNCTION", b"LOAD", b"#!nolua name=ab\nx"],
        vec![b"FUNCTION", b"LOAD", b"#!lua\nx"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=ab foo=bar\nx"],
        vec![b"FUNCTION", b"LOAD", b"#!lua name=\"quoted\"\nredis.register_function('q', function() return 'q' end)"],
        vec![b"FCALL", b"q", b"0"],
        vec![b"FUNCTION", b"DELETE", b"quoted"],
        vec![b"FUNCTION", b"DELETE", b"quoted"],
        vec![b"FUNCTION", b"FLUSH", b"BOGUS"],
        vec![b"FUNCTION", b"RESTORE", b"bad payload"],
        vec![b"FUNCTION", b"RESTORE", b"x", b"BOGUS"],
        vec![b"FUNCTION", b"RESTORE", b"a", b"b", b"c"],
        vec![b"FUNCTION", b"KILL"],
        vec![b"FUNCTION", b"BOGUS"],
        vec![b"MULTI"],
        vec![b"FCALL", b"incr_by", b"1", b"counter", b"10"],
        vec![b"FCALL", b"peek", b"1", b"counter"],
        vec![b"EXEC"],
    ];
    for args in &cases {
        if args.len() > 1 && args[1] == b"LIST" {
            // A library's functions come in an order Redis leaves open.
            same_lines(&mut r, &mut m, args);
        } else {
            same(&mut r, &mut m, args);
        }
    }
    // DUMP and RESTORE between servers of one kind (the payloads differ).
    for conn in [&mut r, &mut m] {
        let dump = conn.call(&[b"FUNCTION", b"DUMP"]);
        let payload = bulk(&dump);
        assert_eq!(conn.call(&[b"FUNCTION", b"FLUSH"]), b"+OK\r\n");
        assert_eq!(
            conn.call(&[b"FCALL", b"peek", b"1", b"counter"]),
            b"-ERR Function not found\r\n"
        );
        assert_eq!(conn.call(&[b"FUNCTION", b"RESTORE", &payload]), b"+OK\r\n");
        assert_eq!(conn.call(&[b"FCALL", b"peek", b"1", b"counter"]), b"$2\r\n17\r\n");
        let taken = conn.call(&[b"FUNCTION", b"RESTORE", &payload]);
        assert!(show(&taken).contains("already exists"), "{}", show(&taken));
        assert_eq!(conn.call(&[b"FUNCTION", b"RESTORE", &payload, b"REPLACE"]), b"+OK\r\n");
        assert_eq!(conn.call(&[b"FUNCTION", b"RESTORE", &payload, b"FLUSH"]), b"+OK\r\n");
    }
    same_lines(&mut r, &mut m, &[b"FUNCTION", b"LIST"]);
}

/// The bytes of a bulk reply.
fn bulk(reply: &[u8]) -> Vec<u8> {
    let at = reply.iter().position(|&b| b == b'\n').expect("header") + 1;
    reply[at..reply.len() - 2].to_vec()
}

#[test]
fn libraries_survive_kill_9_and_a_damaged_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut node = Node::start(dir.path());
    let mut c = RawResp::connect(node.resp_addr, 30);
    assert_eq!(c.call(&[b"FUNCTION", b"LOAD", LIB.as_bytes()]), b"$5\r\nmylib\r\n");
    assert_eq!(c.call(&[b"FCALL", b"incr_by", b"1", b"n", b"4"]), b":4\r\n");
    node.restart();
    let mut c = RawResp::connect(node.resp_addr, 30);
    assert_eq!(c.call(&[b"FCALL", b"incr_by", b"1", b"n", b"4"]), b":8\r\n");
    assert_eq!(c.call(&[b"FUNCTION", b"DELETE", b"mylib"]), b"+OK\r\n");
    node.restart();
    let mut c = RawResp::connect(node.resp_addr, 30);
    assert_eq!(c.call(&[b"FCALL", b"incr_by", b"1", b"n", b"4"]), b"-ERR Function not found\r\n");
    assert_eq!(c.call(&[b"FUNCTION", b"LOAD", LIB.as_bytes()]), b"$5\r\nmylib\r\n");
    node.kill();
    // Postmortem: a damaged file must not be read as "no functions".
    let path = dir.path().join("functions");
    let mut bytes = std::fs::read(&path).expect("functions file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let refused = monotable_tests::serve_exits(dir.path(), &[]).expect("the start is refused");
    assert!(refused.contains("damaged"), "{refused}");
}

/// Postmortem: the VM scripts run in kept every library FCALL had loaded
/// (and FUNCTION LOAD validated), deleted ones too, so a loop of LOAD,
/// FCALL and DELETE with fresh names filled the Lua memory until every
/// script failed.
#[test]
fn deleted_libraries_leave_the_script_vm() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start_with(dir.path(), &["--lua-memory-max-bytes", "67108864"]);
    let mut c = RawResp::connect(node.resp_addr, 60);
    // Each library's function holds 2 MB in an upvalue once called: 40 would
    // pass the 64 MiB limit if they stayed.
    for i in 0..40 {
        let lib = format!(
            "#!lua name=big{i}\nlocal big\n\
             redis.register_function('f{i}', function() \
             big = big or string.rep('x', 2000000) return #big end)\n"
        );
        let name = format!("big{i}");
        let loaded = format!("${}\\r\\n{name}\\r\\n", name.len());
        assert_eq!(show(&c.call(&[b"FUNCTION", b"LOAD", lib.as_bytes()])), loaded);
        let f = format!("f{i}");
        assert_eq!(show(&c.call(&[b"FCALL", f.as_bytes(), b"0"])), ":2000000\\r\\n", "library {i}");
        assert_eq!(show(&c.call(&[b"FUNCTION", b"DELETE", name.as_bytes()])), "+OK\\r\\n");
    }
    assert_eq!(show(&c.call(&[b"EVAL", b"return 7", b"0"])), ":7\\r\\n");
    // Postmortem: a library that ran out of memory at load answered an
    // empty reason.
    let hog = b"#!lua name=hog\nlocal t = {} local c = t while true do c[1] = {} c = c[1] end";
    let reply = show(&c.call(&[b"FUNCTION", b"LOAD", hog]));
    assert_eq!(reply, "-ERR Error registering functions: not enough memory\\r\\n");
}
