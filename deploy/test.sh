#!/usr/bin/env bash
# Runs Monotable's whole test suite on a fresh Debian machine with Rust.
# Installs what the tests need first, builds the `monotable` binary the
# integration tests start, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
    echo "Usage: deploy/test.sh   (no options: installs redis-server, redis-tools and"
    echo "python3-redis if missing, builds the binaries, runs every test)"
    [ "$1" = --help ] && exit 0
    exit 2
fi

# The RESP tests compare Monotable with a real redis-server and drive it
# with redis-cli, redis-benchmark and redis-py.
. deploy/lib.sh
apt_install redis-server redis-tools python3-redis

cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
