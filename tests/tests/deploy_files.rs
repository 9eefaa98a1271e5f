//! The files of deploy/ that install and package Monotable: the systemd
//! unit passes `systemd-analyze verify` (with no warning), its example
//! config is one `serve` reads, and the container image builds and runs
//! where a docker daemon answers (skipped, saying so, where none does).

use std::path::{Path, PathBuf};
use std::process::Command;

use monotable_tests::binary;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_systemd_unit_verifies_and_its_config_is_read() {
    let unit = std::fs::read_to_string(deploy().join("systemd/monotable.service")).expect("unit");
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/monotable serve --config /etc/monotable/monotable.toml"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("monotable.service");
    let here = binary().to_string_lossy().into_owned();
    std::fs::write(&copy, unit.replace("/usr/local/bin/monotable", &here)).expect("write");
    match Command::new("systemd-analyze").arg("verify").arg(&copy).output() {
        Err(e) => eprintln!("skipped systemd-analyze verify: not available ({e})"),
        Ok(out) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{said}");
            let about_unit: Vec<&str> =
                said.lines().filter(|l| l.contains("monotable.service")).collect();
            assert!(about_unit.is_empty(), "systemd-analyze warns: {about_unit:?}");
        }
    }
    let out = Command::new(binary())
        .args(["serve", "--print-config", "--config"])
        .arg(deploy().join("systemd/monotable.toml"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("log-format = \"json\"  # config file"), "{text}");
}

#[test]
fn the_container_image_builds_and_runs_where_docker_answers() {
    let daemon = Command::new("docker").arg("info").output();
    if !daemon.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped the container build: no docker daemon answers here (`docker info` fails)"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tag = format!("monotable-test:{}", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-q", "-f", "deploy/container/Containerfile", "-t", &tag, "."])
        .current_dir(&root)
        .output()
        .expect("docker build");
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let run = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "/usr/local/bin/monotable", &tag, "--version"])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("monotable "));
}
