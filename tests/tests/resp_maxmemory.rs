//! `maxmemory` against a real redis-server 7.0 with `maxmemory 1`: every
//! command that may grow the data is refused with Redis's OOM error, reads
//! and deletes run, MULTI refuses what it would queue (EXEC then aborts),
//! scripts follow Redis's rules (a script without `#!lua` runs and its
//! writing calls fail; with one it is refused whole unless `allow-oom` or
//! `no-writes`), and `maxmemory 0` lifts it all.

use monotable_tests::{assert_same_quoted, RawResp, Twin};

#[test]
fn over_maxmemory_writes_are_refused_as_redis_noeviction() {
    let twin = Twin::start();
    let (mut r, mut m) = twin.connect(10);
    assert_same_quoted(
        &mut r,
        &mut m,
        &[
            "SET x 123",
            "RPUSH l a b",
            "CONFIG SET maxmemory 1",
            "CONFIG GET maxmemory",
            "SET y 1",
            "APPEND x 4",
            "INCR x",
            "RPUSH l c",
            "HSET h f v",
            "SADD s m",
            "ZADD z 1 m",
            "GET x",
            "LRANGE l 0 -1",
            "DEL l",
            "EXISTS l",
            "EXPIRE x 100",
            "PERSIST x",
            "MULTI",
            "GET x",
            "EXEC",
            "MULTI",
            "DISCARD",
            "EVAL \"return redis.call('get','x')\" 1 x",
            "EVAL \"redis.call('set','x',1) return 1\" 1 x",
            "EVAL \"return redis.pcall('set','x',1)\" 1 x",
            "EVAL \"redis.call('del','x') redis.call('set','x',2) return 1\" 1 x",
            "EVAL \"#!lua\nreturn 1\" 0",
            "EVAL \"#!lua flags=allow-oom\nredis.call('set','x',3) return 1\" 1 x",
            "EVAL \"#!lua flags=no-writes\nreturn redis.call('get','x')\" 1 x",
            "GET x",
            "CONFIG SET maxmemory 0",
            "SET y 1",
            "MULTI",
            "SET z 1",
            "CONFIG SET maxmemory 1",
            "EXEC",
            "CONFIG SET maxmemory 0",
            "GET z",
        ],
    );
}

/// INFO's error counts after each script: a call's error counts once,
/// whether the script raises it, returns it or catches it with pcall.
#[test]
fn a_scripts_call_errors_count_once_as_redis() {
    let twin = Twin::start();
    let (mut r, mut m) = twin.connect(10);
    for script in [
        "EVAL \"return redis.call('set','x','y')\" 1 x",
        "EVAL \"return redis.pcall('set','x','y')\" 1 x",
        "EVAL \"local t = redis.pcall('set','x','y') return 1\" 1 x",
        "EVAL \"return redis.call('select',99)\" 0",
        "EVAL \"local t = redis.pcall('select',99) return 1\" 0",
        "EVAL_RO \"return redis.call('set','x','y')\" 1 x",
        "EVAL_RO \"local t = redis.pcall('set','x','y') return 1\" 1 x",
        "EVAL \"return redis.error_reply('MY oops')\" 0",
        "EVAL \"error('plain')\" 0",
    ] {
        assert_same_quoted(
            &mut r,
            &mut m,
            &["CONFIG RESETSTAT", "CONFIG SET maxmemory 1", script, "CONFIG SET maxmemory 0"],
        );
        let errors = |c: &mut RawResp| {
            let info = String::from_utf8_lossy(&c.call(&[b"INFO", b"errorstats"])).into_owned();
            let mut lines: Vec<String> =
                info.lines().filter(|l| l.starts_with("errorstat_")).map(str::to_owned).collect();
            let stats = String::from_utf8_lossy(&c.call(&[b"INFO", b"stats"])).into_owned();
            lines.extend(
                stats.lines().filter(|l| l.starts_with("total_error_replies")).map(str::to_owned),
            );
            lines
        };
        assert_eq!(errors(&mut m), errors(&mut r), "{script}");
    }
}

/// An EXEC refused (over maxmemory, or by ACL) discards its transaction
/// with `EXECABORT ... because of: ...`, as Redis's rejectCommand.
#[test]
fn a_refused_exec_discards_its_transaction_as_redis() {
    let twin = Twin::start();
    let (mut r, mut m) = twin.connect(10);
    let (mut r2, mut m2) = twin.connect(10);
    assert_same_quoted(&mut r, &mut m, &["MULTI", "SET x 1", "GET x"]);
    assert_same_quoted(&mut r2, &mut m2, &["CONFIG SET maxmemory 1"]);
    assert_same_quoted(&mut r, &mut m, &["EXEC", "EXEC", "GET x"]);
    assert_same_quoted(
        &mut r2,
        &mut m2,
        &["CONFIG SET maxmemory 0", "ACL SETUSER u on nopass +@all -exec ~*"],
    );
    assert_same_quoted(
        &mut r,
        &mut m,
        &["AUTH u x", "MULTI", "SET x 1", "EXEC", "DISCARD", "GET x"],
    );
}
