//! `monotable serve --config FILE` (TOML) and `--print-config`: every
//! option from the file, a flag or an environment variable winning over
//! it, bad files refused with the reason, and the printed settings read
//! back as the same settings.

use std::path::Path;
use std::process::{Command, Output};

use monotable_tests::{binary, Node};

fn serve(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.arg("serve").args(args).env_remove("RUST_LOG").env_remove("MONOTABLE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run monotable serve")
}

fn printed(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = serve(&[args, &["--print-config"]].concat(), env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The line of `--print-config` output for option `name`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} = ")) || l.starts_with(&format!("# {name}:")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "node.toml",
        "listen = \"127.0.0.1:47999\"\nresp_listen = \"off\"\nslow-request-ms = 250\n\
         log-level = \"warn\"\nrecover-catalog = true\nfsync = \"interval\"\nfsync-interval-ms = 7\n",
    );
    let text = printed(&["--config", &file, "--slow-request-ms", "9"], &[("RUST_LOG", "debug")]);
    assert_eq!(line(&text, "slow-request-ms"), "slow-request-ms = 9  # command line");
    assert_eq!(line(&text, "log-level"), "log-level = \"debug\"  # environment (RUST_LOG)");
    assert_eq!(line(&text, "listen"), "listen = \"127.0.0.1:47999\"  # config file");
    assert_eq!(line(&text, "resp-listen"), "resp-listen = \"off\"  # config file");
    assert_eq!(line(&text, "recover-catalog"), "recover-catalog = true  # config file");
    assert_eq!(line(&text, "fsync-interval-ms"), "fsync-interval-ms = 7  # config file");
    assert_eq!(line(&text, "http-listen"), "http-listen = \"127.0.0.1:7080\"  # default");
    assert_eq!(line(&text, "join"), "# join: not set");

    // What it printed is a config file that gives the same settings.
    let again = write(dir.path(), "printed.toml", &text);
    let text2 = printed(&["--config", &again], &[]);
    for name in
        ["slow-request-ms", "log-level", "listen", "resp-listen", "recover-catalog", "fsync"]
    {
        let value = |t: &str| line(t, name).split("  #").next().unwrap_or_default().to_owned();
        assert_eq!(value(&text2), value(&text), "{name}");
    }

    // A password never prints; MONOTABLE_CONFIG names the file too.
    let text = printed(&[], &[("MONOTABLE_CONFIG", &file), ("MONOTABLE_REQUIREPASS", "s3cret")]);
    assert!(!text.contains("s3cret"), "{text}");
    assert!(line(&text, "requirepass").contains("hidden"), "{text}");
    assert_eq!(line(&text, "slow-request-ms"), "slow-request-ms = 250  # config file");
}

#[test]
fn a_node_runs_with_its_file_and_bad_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "node.toml", "fsync = \"never\"\nslow_request_ms = 1\n");
    let node = Node::start_with(&dir.path().join("n"), &["--config", &file]);
    let log = node.log().join("\n");
    assert!(log.contains("fsync=Never"), "{log}");

    let refused = |text: &str, wanted: &[&str]| {
        let bad = write(dir.path(), "bad.toml", text);
        let out =
            serve(&["--config", &bad, "--data-dir", &dir.path().join("x").to_string_lossy()], &[]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in wanted {
            assert!(stderr.contains(w), "{text}: {stderr}");
        }
        assert!(!dir.path().join("x").exists(), "nothing started");
    };
    refused("nope = 1\n", &["\"nope\" is not an option of `monotable serve`"]);
    refused("listen = [1]\n", &["\"listen\" takes a string or a number, not array"]);
    refused("recover-catalog = \"yes\"\n", &["\"recover-catalog\" takes true or false"]);
    refused("listen = \n", &["is not TOML at line 1, column 10"]);
    // The line of a TOML error is not quoted: it may hold the password.
    let bad = write(dir.path(), "secret.toml", "requirepass = \"s3cr3t-unterminated\n");
    let out = serve(&["--config", &bad], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not TOML") && !stderr.contains("s3cr3t"), "{stderr}");
    refused("fsync = \"sometimes\"\n", &["sometimes", "--fsync", "read as flags"]);
    refused("print-config = true\n", &["\"print-config\" is not an option"]);
    let out = serve(&["--config", &dir.path().join("none.toml").to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

/// `--print-config` checks the settings as serve does (without binding or
/// starting anything): it prints them, then fails with serve's reason when
/// serve would refuse them.
/// Postmortem: it printed settings serve then refused (a bad log filter,
/// Raft timing, an address, a missing password file) and exited 0.
#[test]
fn print_config_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("x");
    let data = data.to_string_lossy();
    let missing = dir.path().join("no-such-password");
    let missing = missing.to_string_lossy();
    let cases: [(&[&str], &str); 10] = [
        (&["--log-level", "warning"], "--log-level"),
        (&["--advertise-addr", "garbage"], "--advertise-addr \"garbage\": not a HOST:PORT"),
        (&["--advertise-addr", "127.0.0.1:0"], "port 0"),
        (&["--join", "127.0.0.1:0"], "port 0 names no node"),
        (&["--listen", "127.0.0.1:27123", "--resp-listen", "127.0.0.1:27123"], "same port"),
        (&["--listen", "127.0.0.1:27123", "--http-listen", "0.0.0.0:27123"], "same port"),
        (
            &["--raft-heartbeat-ms", "500", "--raft-election-timeout-ms", "100"],
            "--raft-heartbeat-ms",
        ),
        (&["--resp-listen", "nowhere"], "--resp-listen \"nowhere\""),
        (&["--http-listen", "1.2.3"], "--http-listen"),
        (&["--requirepass-file", &missing], "cannot read the password file"),
    ];
    for (args, says) in cases {
        let out = serve(&[args, &["--data-dir", &data, "--print-config"]].concat(), &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!out.stdout.is_empty(), "{args:?}: the settings are printed first");
    }
    assert!(!dir.path().join("x").exists(), "nothing started");
    // A password given by a flag beats a password file the config file
    // names (one setting, two options); an empty one shows as none.
    let pw = write(dir.path(), "pw", "s3cret\n");
    let file = write(dir.path(), "pw.toml", &format!("requirepass-file = \"{pw}\"\n"));
    let shown = printed(&["--config", &file, "--requirepass", "zz", "--data-dir", &data], &[]);
    assert!(line(&shown, "requirepass").contains("set (hidden)  # command line"), "{shown}");
    assert!(line(&shown, "requirepass-file").contains("not set"), "{shown}");
    let shown = printed(&["--data-dir", &data], &[("MONOTABLE_REQUIREPASS", "")]);
    assert!(line(&shown, "requirepass").contains("empty (none)"), "{shown}");
    // Settings serve takes print and exit 0, even while another node holds
    // the addresses (nothing is bound).
    let node = Node::start(&dir.path().join("n"));
    let taken = node.addr.to_string();
    let out = serve(&["--listen", &taken, "--data-dir", &data, "--print-config"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
