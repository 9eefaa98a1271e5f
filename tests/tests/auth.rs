//! Security defaults through the public interfaces: the node's password
//! protects the native port as it protects the Redis port, failed
//! passwords are throttled, a password can come from a file or the
//! environment, a client never hangs on something that is not a node, and
//! data files are readable by their owner only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use monotable_client::{Client, Error, ErrorCode, MapFunction, Options, RangeOptions, Scan};
use monotable_client::{SinkSource, HANDSHAKE_TIMEOUT_DEFAULT_MS};
use monotable_tests::{binary, ok, runtime, Node};

const PASSWORD: &str = "correct horse battery staple";

/// The reply delay of an address's first, second and third failed password
/// in a row (`monotable_node::auth::failure_delay`: 100 ms, doubling).
const FIRST_THREE_FAILURE_DELAYS_MS: u64 = 100 + 200 + 400;

/// A node whose password comes from a file (0600, as a user would keep it).
fn protected_node(dir: &Path) -> Node {
    let file = dir.join("requirepass");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("write password file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let data = dir.join("data");
    Node::start_with(&data, &["--requirepass-file", file.to_str().expect("utf-8 path")])
}

fn with_password(password: &str) -> Options {
    Options::new().password(password)
}

/// Runs the CLI against `node` with `env` added; nothing else of the
/// password is passed.
fn cli_env(node: &Node, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("MONOTABLE_ADDR", node.addr.to_string())
        .env_remove("MONOTABLE_PASSWORD")
        .env_remove("MONOTABLE_PASSWORD_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("monotable runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_native_client_without_the_password_can_only_authenticate() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = protected_node(dir.path());
    runtime().block_on(async {
        let admin = Client::connect_with(node.addr, with_password(PASSWORD)).await.expect("auth");
        admin.create_range("users", RangeOptions::default()).await.expect("create");
        admin.put("users", b"ada", b"1815").await.expect("put");

        // Regression: without credentials a native client could read,
        // write and drop every range, and register a sink copying any of
        // them to a Redis of its choosing.
        let stranger = Client::connect(node.addr).await.expect("the handshake needs no password");
        let refusals = [
            ("ping", stranger.ping().await.err()),
            ("get", stranger.get("users", b"ada").await.err()),
            ("put", stranger.put("users", b"eve", b"x").await.err()),
            ("scan", stranger.scan("users", &Scan::all()).await.err()),
            ("list", stranger.list_ranges().await.err()),
            ("create range", stranger.create_range("mine", RangeOptions::default()).await.err()),
            ("drop range", stranger.drop_range("users").await.err()),
            ("compact", stranger.compact_range("users").await.err()),
            (
                "mapper",
                stranger
                    .create_mapper(
                        "m",
                        "users",
                        "idx",
                        MapFunction::Field { key_path: "a".into(), value_path: None },
                    )
                    .await
                    .err(),
            ),
            (
                "sink",
                stranger
                    .create_sink(
                        "s",
                        SinkSource::Range("users".into()),
                        "redis://127.0.0.1:1/0",
                        b"",
                    )
                    .await
                    .err(),
            ),
        ];
        for (what, refusal) in refusals {
            let e = refusal.unwrap_or_else(|| panic!("{what} succeeded without the password"));
            assert_eq!(e.code(), Some(ErrorCode::NoAuth), "{what}: {e}");
            assert!(e.to_string().contains("--password"), "{what}: the message says how: {e}");
        }

        // Nothing the stranger sent took effect.
        let ranges = admin.list_ranges().await.expect("list");
        assert_eq!(ranges.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["users"]);
        assert_eq!(admin.get("users", b"ada").await.expect("get"), Some(b"1815".to_vec()));
        assert_eq!(admin.get("users", b"eve").await.expect("get"), None);
        assert!(admin.list_views().await.expect("views").is_empty());

        // A wrong password fails the connection; the right one works for
        // every kind of request.
        let wrong = Client::connect_with(node.addr, with_password("Tr0ub4dor&3")).await;
        assert_eq!(wrong.err().and_then(|e| e.code()), Some(ErrorCode::AuthFailed));
        let friend = Client::connect_with(node.addr, with_password(PASSWORD)).await.expect("auth");
        friend.ping().await.expect("ping");
        friend.put("users", b"bob", b"1990").await.expect("put");
        assert_eq!(friend.scan("users", &Scan::all()).await.expect("scan").records.len(), 2);
        friend.create_range("scratch", RangeOptions::default()).await.expect("create");
        friend.drop_range("scratch").await.expect("drop");
    });
}

#[test]
fn wrong_passwords_are_throttled_on_both_protocols() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = protected_node(dir.path());
    runtime().block_on(async {
        // Three failures in a row from one address, on the native port:
        // each reply waits longer than the one before.
        let start = Instant::now();
        for _ in 0..3 {
            let e = Client::connect_with(node.addr, with_password("guess")).await.err();
            assert_eq!(e.and_then(|e| e.code()), Some(ErrorCode::AuthFailed));
        }
        let spent = start.elapsed();
        assert!(
            spent >= Duration::from_millis(FIRST_THREE_FAILURE_DELAYS_MS),
            "three failures were answered in {spent:?}"
        );

        // The Redis port counts against the same address, and keeps
        // Redis's words.
        let client = redis::Client::open(format!("redis://{}/0", node.resp_addr)).expect("url");
        // Longer than redis-rs's default of 500 ms: throttled failures are
        // answered late.
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        let mut con =
            client.get_multiplexed_async_connection_with_config(&config).await.expect("connect");
        let start = Instant::now();
        let reply: redis::RedisResult<String> =
            redis::cmd("AUTH").arg("another guess").query_async(&mut con).await;
        let e = reply.expect_err("wrong password");
        assert!(e.to_string().contains("WRONGPASS"), "{e}");
        // The fourth failure in a row waits at least the third's delay.
        assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());

        // The right password is accepted on both, and resets the count.
        let _: () = redis::cmd("AUTH").arg(PASSWORD).query_async(&mut con).await.expect("auth");
        Client::connect_with(node.addr, with_password(PASSWORD)).await.expect("auth");
    });
    assert!(node.log_contains("authentication failed"));
}

#[test]
fn the_cli_takes_the_password_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = protected_node(dir.path());

    let refused = cli_env(&node, &[], &["range", "create", "notes"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("authentication required"), "{}", stderr(&refused));

    ok(cli_env(&node, &[("MONOTABLE_PASSWORD", PASSWORD)], &["range", "create", "notes"]));
    let file = dir.path().join("client-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("write");
    let file = file.to_str().expect("utf-8 path");
    ok(cli_env(&node, &[], &["put", "notes", "k", "v", "--password-file", file]));
    let got = ok(cli_env(&node, &[("MONOTABLE_PASSWORD_FILE", file)], &["get", "notes", "k"]));
    assert_eq!(got.trim(), r#""v""#);

    let wrong = cli_env(&node, &[("MONOTABLE_PASSWORD", "nope")], &["get", "notes", "k"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("wrong password"), "{}", stderr(&wrong));

    // Regression: the password had to be on the server's command line,
    // where `ps` shows it to every user.
    let pid = node.pid().expect("running");
    for what in ["cmdline", "environ"] {
        let seen = std::fs::read(format!("/proc/{pid}/{what}")).expect("read /proc");
        let seen = String::from_utf8_lossy(&seen);
        assert!(!seen.contains(PASSWORD), "the password shows in /proc/{pid}/{what}");
    }
}

#[test]
fn a_client_pointed_at_the_resp_port_fails_fast_and_says_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = Node::start(dir.path());
    // Regression: the CLI waited for ever, printing nothing. With the
    // default timeouts it gives up after the handshake's.
    let mut cmd = Command::new(binary());
    let out = cmd
        .args(["range", "list"])
        .env("MONOTABLE_ADDR", node.resp_addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("monotable runs");
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(message.contains("did not answer the Monotable handshake"), "{message}");
    assert!(message.contains("is this the RESP port?"), "{message}");
    let waited = format!("no answer within {HANDSHAKE_TIMEOUT_DEFAULT_MS} ms");
    assert!(message.contains(&waited), "{message}");

    // The library: something that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    runtime().block_on(async {
        let options = Options::new().handshake_timeout(Duration::from_millis(200));
        match Client::connect_with(addr, options).await {
            Err(Error::NoHandshake(m)) => assert!(m.contains("no answer within 200 ms"), "{m}"),
            Err(e) => panic!("expected NoHandshake, got {e}"),
            Ok(_) => panic!("a silent listener passed the handshake"),
        }
    });
}

/// Every file and directory under `dir`, with `dir` itself.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn data_files_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    // An existing directory open to everyone is closed too.
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut node = Node::start(&data);
    runtime().block_on(async {
        let c = Client::connect(node.addr).await.expect("connect");
        c.create_range("r", RangeOptions { chunk_size_max_bytes: 4096 }).await.expect("create");
        for i in 0..200u32 {
            c.put("r", format!("k{i:04}"), vec![b'x'; 100]).await.expect("put");
        }
        c.split_chunk("r", b"k0100").await.expect("split");
        for i in 0..200u32 {
            c.delete("r", format!("k{i:04}")).await.expect("delete");
        }
        c.compact_range("r").await.expect("compact");
    });
    assert!(node.stop(), "clean shutdown");
    let mut paths = Vec::new();
    walk(&data, &mut paths);
    assert!(paths.len() > 5, "the node wrote files: {paths:?}");
    for path in paths {
        let meta = std::fs::metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}: open to others", path.display());
    }
}

// Regression: an unauthenticated native client could make the node buffer
// 32 MiB frames; about 36 such connections aborted it on a 4 GB limit.
#[test]
fn an_unauthenticated_native_client_cannot_send_large_frames() {
    use monotable_proto::frame::decode_payload;
    use monotable_proto::limits::{
        HANDSHAKE_MAGIC, PROTOCOL_VERSION, UNAUTHENTICATED_FRAME_SIZE_MAX_BYTES,
    };
    use monotable_proto::{ErrorInfo, Response, ServerHello};
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().expect("tempdir");
    let node = protected_node(dir.path());
    let read_frame = |s: &mut std::net::TcpStream| -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let mut s = std::net::TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut hello = HANDSHAKE_MAGIC.to_vec();
    hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    s.write_all(&hello).expect("hello");
    let reply: Result<ServerHello, ErrorInfo> =
        decode_payload(&read_frame(&mut s).expect("hello reply")).expect("decode");
    reply.expect("handshake accepted");
    // A header announcing one byte more than the limit is refused at once,
    // before any of the body is sent.
    let len = (UNAUTHENTICATED_FRAME_SIZE_MAX_BYTES + 1) as u32;
    s.write_all(&len.to_be_bytes()).expect("header");
    let response: Response =
        decode_payload(&read_frame(&mut s).expect("an error reply")).expect("decode");
    let error = response.result.expect_err("refused");
    assert_eq!(error.code, ErrorCode::FrameTooLarge, "{error:?}");
    assert!(read_frame(&mut s).is_none(), "the connection is closed");
    // With the password, the usual limit applies.
    let rt = runtime();
    let client = rt
        .block_on(Client::connect_with(&node.addr.to_string(), with_password(PASSWORD)))
        .expect("connect");
    rt.block_on(client.create_range("r", RangeOptions::default())).expect("range");
    rt.block_on(client.put("r", b"k", vec![b'v'; 1024 * 1024])).expect("a 1 MiB value");
}
