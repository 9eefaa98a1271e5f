//! A script that runs past `lua-time-limit`, against a real redis-server
//! 7.0: other clients get BUSY (and the commands Redis lets through still
//! run), SCRIPT KILL stops a script that has not written and answers
//! UNKILLABLE for one that has, FUNCTION KILL and SCRIPT KILL refuse each
//! other's kind, and the node answers again once the script ends.

use std::time::{Duration, Instant};

use monotable_tests::{show, RawResp, Twin};

/// Waits until `c` answers PING with BUSY.
fn wait_busy(c: &mut RawResp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !show(&c.call(&[b"PING"])).starts_with("-BUSY") {
        assert!(Instant::now() < deadline, "the script never turned busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the same steps on a server: a looping script killed, then one that
/// wrote and cannot be; returns what each step answered.
fn steps(addr: std::net::SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    let mut admin = RawResp::connect(addr, 30);
    let mut script = RawResp::connect(addr, 30);
    out.push(show(&admin.call_str("CONFIG SET lua-time-limit 10")));
    out.push(show(&admin.call(&[b"CONFIG", b"GET", b"lua-time-limit"])));
    out.push(show(&admin.call(&[b"SCRIPT", b"KILL"])));
    script.send(&[b"EVAL", b"local i = 0 while true do i = i + 1 end", b"0"]);
    wait_busy(&mut admin);
    // SHUTDOWN without NOSAVE is refused while a script is busy.
    for line in
        ["GET k", "SET k v", "MULTI", "DISCARD", "FUNCTION STATS", "FUNCTION KILL", "SHUTDOWN"]
    {
        out.push(show(&admin.call_str(line)));
    }
    out.push(show(&admin.call_str("SCRIPT KILL")));
    let killed = show(&script.reply().expect("the script's reply"));
    // Redis adds where the script was (" script: SHA, on @user_script:N.").
    out.push(
        killed.split(" script:").next().unwrap_or_default().trim_end_matches("\\r\\n").to_owned(),
    );
    out.push(show(&admin.call_str("PING")));
    out.push(show(&admin.call_str("SCRIPT KILL")));
    // A script that wrote cannot be killed; it ends on its own here.
    script.send(&[
        b"EVAL",
        b"redis.call('set', KEYS[1], 'v') local t = redis.call('time')[1] \
          while redis.call('time')[1] - t < 2 do end return 'done'",
        b"1",
        b"k",
    ]);
    wait_busy(&mut admin);
    out.push(show(&admin.call_str("SCRIPT KILL")));
    out.push(show(&script.reply().expect("the script's reply")));
    out.push(show(&admin.call_str("GET k")));
    out.push(show(&admin.call_str("CONFIG SET lua-time-limit 5000")));
    out
}

#[test]
fn a_busy_script_answers_as_redis() {
    let twin = Twin::start();
    assert_eq!(steps(twin.node.resp_addr), steps(twin.redis.addr));
}
