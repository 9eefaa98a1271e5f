//! Helpers for tests against real `monotable` processes.
//!
//! [`Node`] starts the real binary on a free loopback port with its own data
//! directory, captures its log, and stops it gracefully (SIGTERM) or not
//! (SIGKILL). Nothing here contacts any address but loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds a node has to start serving before a test gives up.
const START_TIMEOUT_SECS: u64 = 60;

/// The `monotable` binary: `$MONOTABLE_BIN`, or the one cargo built next to
/// this test executable.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MONOTABLE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/monotable
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join("monotable");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p monotable-node --bin monotable` first (the README's test command does)",
        bin.display()
    );
    bin
}

/// The first of `n` consecutive loopback ports that are free now and lie
/// below the kernel's ephemeral range (`ip_local_port_range`), so that no
/// outgoing connection takes one before a server binds it later (a node
/// restarted on its port, a cluster node started minutes after the pick).
/// Ports the kernel hands out for `:0` binds come from the ephemeral range
/// too, so they never meet these. Within this process no port is handed
/// out twice.
pub fn stable_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.max(LOW + 1_000);
    let span = high - LOW - u32::from(n);
    // Spread processes apart: each test binary starts at its own offset.
    let _ = NEXT.compare_exchange(
        0,
        1 + std::process::id() * 7_919 % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let at = NEXT.fetch_add(u32::from(n), Ordering::SeqCst);
        let base = (LOW + at % span) as u16;
        let held: Vec<_> = (0..n)
            .filter_map(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} free consecutive loopback ports below {high}");
}

/// One port as [`stable_ports`] picks them.
pub fn stable_port() -> u16 {
    stable_ports(1)
}

/// Runs a `monotable` client command and returns its output.
pub fn cli(addr: SocketAddr, args: &[&str]) -> Output {
    cli_with_stdin(addr, args, None)
}

/// The stdout of a command that must have succeeded.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a `monotable` client command with `stdin` as its standard input.
pub fn cli_with_stdin(addr: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("MONOTABLE_ADDR", addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn monotable");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("monotable runs")
}

/// A running node process.
pub struct Node {
    pub addr: SocketAddr,
    /// Where the node serves the Redis protocol.
    pub resp_addr: SocketAddr,
    /// Where the node serves HTTP (`/metrics`), unless `--http-listen off`.
    pub http_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// Every line the node logged, shared with the thread that reads them.
    log: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
    /// What `--listen` gets: port 0 (a new free port at every start), or a
    /// fixed address kept across restarts (cluster nodes are known to
    /// their peers by address).
    listen: String,
}

impl Node {
    /// Starts a node on a free loopback port.
    pub fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, &[])
    }

    /// Starts a node with extra `serve` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Node {
        Self::start_listening(data_dir, "127.0.0.1:0".to_owned(), extra)
    }

    /// Starts a node on a free loopback port that it keeps across restarts.
    pub fn start_pinned(data_dir: &Path, extra: &[&str]) -> Node {
        let port = stable_port();
        Self::start_listening(data_dir, format!("127.0.0.1:{port}"), extra)
    }

    /// Starts a node listening on `addr` (kept across restarts).
    pub fn start_listening_at(data_dir: &Path, addr: SocketAddr, extra: &[&str]) -> Node {
        Self::start_listening(data_dir, addr.to_string(), extra)
    }

    fn start_listening(data_dir: &Path, listen: String, extra: &[&str]) -> Node {
        let extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr, resp_addr, http_addr, child) = spawn(data_dir, &listen, &extra_args, &log);
        Node {
            addr,
            resp_addr,
            http_addr,
            data_dir: data_dir.to_owned(),
            child: Some(child),
            log,
            extra_args,
            listen,
        }
    }

    /// Kills the process without warning (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process is still running (not killed, stopped or
    /// exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `secs` seconds for the process to exit by itself;
    /// whether it exited successfully (`None`: still running).
    pub fn wait_exit(&mut self, secs: u64) -> Option<bool> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Asks the process to shut down (SIGTERM) and waits; returns whether it
    /// exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the node again on the same data directory (and a new port,
    /// unless it was started with [`Node::start_pinned`]).
    pub fn restart(&mut self) {
        self.kill();
        let (addr, resp_addr, http_addr, child) =
            spawn(&self.data_dir, &self.listen, &self.extra_args, &self.log);
        self.addr = addr;
        self.resp_addr = resp_addr;
        self.http_addr = http_addr;
        self.child = Some(child);
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log().iter().any(|l| l.contains(needle))
    }

    /// The process's resident memory (`VmRSS` of /proc/PID/status), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("a running node").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("a VmRSS line");
        kib * 1024
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The node's log filter: `$MONOTABLE_TEST_LOG` (e.g.
/// `info,monotable_node::view::mapper=trace` to follow mapper rounds), or
/// `info`.
fn log_filter() -> String {
    std::env::var("MONOTABLE_TEST_LOG").unwrap_or_else(|_| "info".to_owned())
}

fn spawn(
    data_dir: &Path,
    listen: &str,
    extra: &[String],
    log: &Arc<Mutex<Vec<String>>>,
) -> (SocketAddr, SocketAddr, Option<SocketAddr>, Child) {
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen, "--resp-listen", "127.0.0.1:0", "--log", &log_filter()])
        .args(if extra.iter().any(|a| a == "--http-listen") {
            &[][..]
        } else {
            &["--http-listen", "127.0.0.1:0"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn monotable serve");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        // The RESP address is logged before the native one.
        let field = |line: &str, name: &str| -> Option<SocketAddr> {
            let value = line.split(name).nth(1)?;
            value.split_whitespace().next()?.parse().ok()
        };
        let (mut resp, mut http) = (None, None);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            resp = resp.or_else(|| field(&line, " resp="));
            http = http.or_else(|| field(&line, " http="));
            if let (Some(a), Some(r)) = (field(&line, " addr="), resp) {
                let _ = tx.send((a, r, http));
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(START_TIMEOUT_SECS)) {
        Ok((addr, resp, http)) => (addr, resp, http, child),
        Err(_) => {
            let _ = child.kill();
            let lines = log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            panic!("node did not start serving within {START_TIMEOUT_SECS} s; its log:\n{lines}");
        }
    }
}

/// Runs `serve` on `data`; returns its stderr if it exited within 30 s, or
/// `None` if it was still running (then it is killed). Listens on free
/// loopback ports unless `extra` gives `--listen`.
pub fn serve_exits(data: &Path, extra: &[&str]) -> Option<String> {
    let mut cmd = Command::new(binary());
    cmd.arg("serve").arg("--data-dir").arg(data).args(["--resp-listen", "off"]);
    if !extra.contains(&"--http-listen") {
        cmd.args(["--http-listen", "off"]);
    }
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for async test bodies.
/// The seed of a randomized test: `MONOTABLE_TEST_SEED` when set (to
/// replay a failure), otherwise a random one. Printed either way, so a
/// failing run names the seed that replays it.
pub fn test_seed() -> u64 {
    let seed = match std::env::var("MONOTABLE_TEST_SEED") {
        Ok(s) => s.trim().parse().expect("MONOTABLE_TEST_SEED is a u64"),
        Err(_) => rand::random::<u64>(),
    };
    eprintln!("seed {seed} (replay with MONOTABLE_TEST_SEED={seed})");
    seed
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs the futures as concurrent tasks and waits for all of them; a
/// task's panic fails the caller.
pub async fn join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    tasks: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("task");
    }
}

/// MessagePack of a small JSON document (non-negative integers, short
/// strings, small maps), written by hand so that oracles in tests share no
/// code with the node.
pub fn msgpack(doc: &serde_json::Value) -> Vec<u8> {
    fn write(doc: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value::*;
        match doc {
            Null => out.push(0xc0),
            Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Number(n) => {
                let v = n.as_u64().expect("non-negative integers only");
                out.push(0xcf);
                out.extend_from_slice(&v.to_be_bytes());
            }
            String(s) => {
                out.push(0xd9);
                out.push(u8::try_from(s.len()).expect("short strings only"));
                out.extend_from_slice(s.as_bytes());
            }
            Array(_) => unreachable!("no arrays in these tests"),
            Object(m) => {
                out.push(0x80 | u8::try_from(m.len()).expect("small maps only"));
                for (k, v) in m {
                    write(&String(k.clone()), out);
                    write(v, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    write(doc, &mut out);
    out
}

/// A `redis-server` without persistence on a free port, stopped on drop.
pub struct Redis {
    pub addr: SocketAddr,
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments (they override the
    /// defaults: no persistence, loopback only).
    pub fn start_with(extra: &[&str]) -> Redis {
        Self::start_on(stable_port(), extra)
    }

    /// Starts one on `port` (a restart of a stopped one).
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/test.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { addr, port, child }
    }

    /// `redis://127.0.0.1:PORT/DB`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://{}/{db}", self.addr)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RESP connection: sends commands as arrays of bulk strings (or any
/// bytes), reads whole replies as the bytes on the wire.
pub struct RawResp {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl RawResp {
    /// Connects with a read timeout of `read_timeout_secs`.
    pub fn connect(addr: SocketAddr, read_timeout_secs: u64) -> RawResp {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(read_timeout_secs))).expect("timeout");
        RawResp { reader: BufReader::new(s.try_clone().expect("clone")), writer: s }
    }

    /// A command as a RESP array of bulk strings.
    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        assert!(self.try_send(args), "send failed");
    }

    /// Sends a command; false when the connection is gone.
    pub fn try_send(&mut self, args: &[&[u8]]) -> bool {
        self.writer.write_all(&Self::encode(args)).is_ok()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// One whole reply, as the bytes on the wire (None: the connection
    /// closed, also in the middle of a reply).
    pub fn reply(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        if self.reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return None;
        }
        let n: i64 = std::str::from_utf8(&line[1..line.len() - 2]).ok()?.parse().unwrap_or(0);
        match line[0] {
            b'$' | b'=' | b'!' if n >= 0 => {
                let mut body = vec![0; n as usize + 2];
                self.reader.read_exact(&mut body).ok()?;
                line.extend(body);
            }
            b'*' | b'~' | b'>' | b'%' if n > 0 => {
                let items = if line[0] == b'%' { n * 2 } else { n };
                for _ in 0..items {
                    line.extend(self.reply()?);
                }
            }
            _ => {}
        }
        Some(line)
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(args);
        self.reply().expect("a reply")
    }

    /// A command given as words separated by single spaces.
    pub fn call_str(&mut self, line: &str) -> Vec<u8> {
        let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.call(&words)
    }
}

/// A node whose Redis database 0 splits into chunks of 4 KiB (the range
/// made before any Redis write), so a few thousand keys span many chunks.
pub fn small_chunked_redis_node(data_dir: &Path) -> Node {
    let node = Node::start(data_dir);
    ok(cli(node.addr, &["range", "create", "redis.0", "--chunk-size", "4KiB"]));
    node
}

/// A redis-server and a Monotable node side by side, each on free
/// loopback ports: the differential tests' oracle and subject. Both stop
/// when it is dropped.
pub struct Twin {
    pub redis: Redis,
    pub node: Node,
    _dir: tempfile::TempDir,
}

impl Twin {
    /// A redis-server and a node with the default options.
    pub fn start() -> Twin {
        let dir = tempfile::tempdir().expect("tmp");
        Twin { redis: Redis::start(), node: Node::start(dir.path()), _dir: dir }
    }

    /// A redis-server and a [`small_chunked_redis_node`].
    pub fn small_chunked() -> Twin {
        let dir = tempfile::tempdir().expect("tmp");
        Twin { redis: Redis::start(), node: small_chunked_redis_node(dir.path()), _dir: dir }
    }

    /// A new connection to each: (redis-server, Monotable).
    pub fn connect(&self, read_timeout_secs: u64) -> (RawResp, RawResp) {
        (
            RawResp::connect(self.redis.addr, read_timeout_secs),
            RawResp::connect(self.node.resp_addr, read_timeout_secs),
        )
    }
}

/// Asserts that redis-server and Monotable answer `args` with the same
/// bytes (the differential tests' one check).
pub fn assert_same(redis: &mut RawResp, mono: &mut RawResp, args: &[&[u8]]) {
    let want = redis.call(args);
    let got = mono.call(args);
    let line: Vec<String> = args.iter().map(|a| show(a)).collect();
    assert_eq!(show(&got), show(&want), "{}", line.join(" "));
}

/// [`assert_same`] for a command given as words separated by single
/// spaces.
pub fn assert_same_line(redis: &mut RawResp, mono: &mut RawResp, line: &str) {
    let words: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    assert_same(redis, mono, &words);
}

/// The words of `line` split at single spaces, a `"..."` being one word
/// (its quotes dropped): a script body in one line of a test.
pub fn quoted_words(line: &str) -> Vec<Vec<u8>> {
    let (mut out, mut word, mut quoted) = (Vec::new(), Vec::new(), false);
    for b in line.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b' ' if !quoted => out.push(std::mem::take(&mut word)),
            _ => word.push(b),
        }
    }
    out.push(word);
    out
}

/// [`assert_same`] for each of `lines`, split by [`quoted_words`].
pub fn assert_same_quoted(redis: &mut RawResp, mono: &mut RawResp, lines: &[&str]) {
    for line in lines {
        let words = quoted_words(line);
        let args: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        assert_same(redis, mono, &args);
    }
}

/// [`assert_same`] for replies whose order Redis leaves open: the same
/// RESP lines, in any order.
pub fn assert_same_lines(redis: &mut RawResp, mono: &mut RawResp, args: &[&[u8]]) {
    let lines = |reply: Vec<u8>| {
        let mut l: Vec<String> = show(&reply).split("\\r\\n").map(str::to_owned).collect();
        l.sort();
        l
    };
    let line: Vec<String> = args.iter().map(|a| show(a)).collect();
    assert_eq!(lines(mono.call(args)), lines(redis.call(args)), "{}", line.join(" "));
}

/// Bytes of a RESP reply as one line (CR LF shown as `\\r\\n`), for
/// assertions and their messages.
pub fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", "\\r\\n")
}

/// The stderr of a command that must have failed with the error exit code
/// (2).
pub fn err(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stdout: {}; stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each line of a command's output parsed as JSON.
pub fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `monotable views --json`, one document per view.
pub fn views_json(addr: SocketAddr) -> Vec<serde_json::Value> {
    json_lines(&ok(cli(addr, &["views", "--json"])))
}

/// Waits (up to `secs`) until no view has a backfill under way or changes
/// pending: with no writes going on, every view then reflects its source.
pub fn wait_views_idle(addr: SocketAddr, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let views = views_json(addr);
        let idle = views.iter().all(|v| {
            v["backfill"].is_null() && v["pending_changes"].as_u64().unwrap_or(u64::MAX) == 0
        });
        if idle {
            return;
        }
        assert!(Instant::now() < deadline, "views still busy after {secs} s: {views:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Loads JSON lines `{"key":..,"value":..}` into `range` with `monotable
/// load` from standard input.
pub fn load_lines(addr: SocketAddr, range: &str, lines: &[serde_json::Value]) {
    let mut input = Vec::new();
    for l in lines {
        input.extend_from_slice(l.to_string().as_bytes());
        input.push(b'\n');
    }
    ok(cli_with_stdin(addr, &["load", range, "-"], Some(&input)));
}

/// An aggregate reply taken apart: the total, or the groups (key,
/// reduction) and whether the reply says more groups follow.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregateParts {
    Total(Vec<u8>),
    Groups { groups: Vec<(Vec<u8>, Vec<u8>)>, more: bool },
}

/// Takes an aggregate reply apart through its serde form (`{"Total": bytes}`
/// or `{"Groups": [[key, value], ..]}`, also as `{"Groups": {"groups": ..,
/// "cursor": ..}}` for a page of groups).
pub fn aggregate_parts(reply: &monotable_client::AggregateReply) -> AggregateParts {
    use serde_json::Value as J;
    let bytes = |j: &J| -> Vec<u8> {
        j.as_array()
            .expect("bytes as an array")
            .iter()
            .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
            .collect()
    };
    let pairs = |j: &J| -> Vec<(Vec<u8>, Vec<u8>)> {
        j.as_array()
            .expect("groups as an array")
            .iter()
            .map(|p| (bytes(&p[0]), bytes(&p[1])))
            .collect()
    };
    let j = serde_json::to_value(reply).expect("a reply serializes");
    if let Some(total) = j.get("Total") {
        return AggregateParts::Total(bytes(total));
    }
    let groups = j.get("Groups").expect("Total or Groups");
    match groups {
        J::Array(_) => AggregateParts::Groups { groups: pairs(groups), more: false },
        J::Object(page) => AggregateParts::Groups {
            groups: pairs(&page["groups"]),
            more: !page.get("cursor").is_none_or(J::is_null),
        },
        other => panic!("an unknown reply shape: {other}"),
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct SmallFs {
    pub mount: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a tmpfs of `size_mib`; `None` (saying so) where mounting is
    /// not permitted.
    pub fn mount(size_mib: u64) -> Option<SmallFs> {
        let parent = tempfile::tempdir().expect("tmp");
        let mount = parent.path().join("fs");
        std::fs::create_dir(&mount).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallFs { mount, _parent: parent }),
            other => {
                println!(
                    "SKIPPED: cannot mount a tmpfs here ({other:?}); run as root where mounting is permitted"
                );
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// Fills the file system, leaving about `leave_bytes` free.
pub fn fill(dir: &Path, leave_bytes: u64) -> PathBuf {
    let filler = dir.join("filler");
    let stat = Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output().expect("df");
    let avail: u64 = String::from_utf8_lossy(&stat.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output");
    let size = avail.saturating_sub(leave_bytes);
    let chunk = vec![0xabu8; 1 << 20];
    let mut f = std::fs::File::create(&filler).expect("filler");
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    filler
}

/// Clusters of nodes on loopback for tests: short Raft timers, status,
/// waiting, and starting a cluster.
pub mod cluster {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use serde_json::Value as Json;

    use super::{cli, Node};

    /// Raft timers short enough for tests on one machine.
    pub const FAST: [&str; 4] = ["--raft-heartbeat-ms", "50", "--raft-election-timeout-ms", "400"];

    /// [`FAST`] and `extra`.
    pub fn fast_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args: Vec<&str> = FAST.to_vec();
        args.extend_from_slice(extra);
        args
    }

    /// `cluster status --json` through `addr`, if it answered.
    pub fn status(addr: SocketAddr) -> Option<Json> {
        let out = cli(addr, &["cluster", "status", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("status is JSON"))
    }

    /// Waits up to `secs` until `done`; panics naming `what` if it never is.
    pub fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: never happened");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether `s` (a status) lists `n` nodes, every one live and a voter
    /// (or the leader) of the meta range, which has a leader.
    pub fn all_live_voters(s: &Json, n: usize) -> bool {
        let Some(all) = s["nodes"].as_array() else { return false };
        all.len() == n
            && all.iter().all(|node| {
                node["live"] == true
                    && matches!(node["meta_role"].as_str(), Some("leader" | "voter"))
            })
            && s["meta_leader"].is_u64()
    }

    /// Starts a founder and one node joining it per further directory, all
    /// on fixed ports with [`FAST`] timers, and waits until every one is a
    /// live voter of the meta range.
    pub fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Node> {
        start_cluster_with(dirs, &[])
    }

    /// [`start_cluster`], every node with `extra` arguments too.
    pub fn start_cluster_with(dirs: &[tempfile::TempDir], extra: &[&str]) -> Vec<Node> {
        let first = Node::start_pinned(dirs[0].path(), &fast_with(extra));
        wait_until("a founded cluster", 60, || {
            status(first.addr).is_some_and(|s| s["meta_leader"] == 1)
        });
        let seed = first.addr.to_string();
        let mut nodes = vec![first];
        for dir in &dirs[1..] {
            let mut args = fast_with(extra);
            args.extend(["--join", seed.as_str()]);
            nodes.push(Node::start_pinned(dir.path(), &args));
        }
        wait_until("live voters", 60, || {
            status(nodes[0].addr).is_some_and(|s| all_live_voters(&s, dirs.len()))
        });
        nodes
    }
}

/// Waits until every view in `names` has no backfill left and reflects
/// `seq`; panics after `secs` seconds with the views' statuses.
pub async fn views_caught_up(c: &monotable_client::Client, names: &[&str], seq: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let views = c.list_views().await.expect("views");
        let done = names.iter().all(|n| {
            views.iter().any(|v| &v.name == n && v.backfill.is_none() && v.watermark >= seq)
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "views stuck: {views:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record of `range`, scanned with the client's stream.
pub async fn all_records(
    c: &monotable_client::Client,
    range: &str,
) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut stream = c.scan_stream(range, monotable_client::Scan::all());
    let mut out = std::collections::BTreeMap::new();
    while let Some(r) = stream.next().await {
        let r = r.expect("scan");
        out.insert(r.key, r.value);
    }
    out
}
