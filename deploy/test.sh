#!/usr/bin/env bash
# Runs Monotable's whole test suite on a fresh Debian machine with Rust.
# Installs what the tests need first, builds the `monotable` binary the
# integration tests start, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
    echo "Usage: deploy/test.sh   (no options: installs redis-server, redis-tools,"
    echo "python3-redis, python3-prometheus-client, chromium, cmake and clang if missing, builds the binaries and the RDMA"
    echo "transport, runs every test)"
    [ "$1" = --help ] && exit 0
    exit 2
fi

# The RESP tests compare Monotable with a real redis-server and drive it
# with redis-cli, redis-benchmark and redis-py; /metrics is read by the
# Prometheus client library's OpenMetrics parser, the status page by
# headless Chromium; the RDMA transport's
# verbs bindings are made with cmake and bindgen (libclang).
. deploy/lib.sh
apt_install redis-server redis-tools python3-redis python3-prometheus-client chromium cmake clang libclang-dev

cargo build --workspace --bins --locked
# The RDMA transport (cargo feature `rdma`) is built and linted on every
# run; no machine here has a device to run it on, and a node built with it
# falls back to TCP (the tests below run the default build).
cargo build -p monotable-node --lib --features rdma --locked
cargo clippy -p monotable-node --features rdma --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
