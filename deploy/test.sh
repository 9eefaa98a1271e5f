#!/usr/bin/env bash
# Runs Monotable's whole test suite on a fresh Debian machine with Rust.
# Installs what the tests need first, builds the `monotable` binary the
# integration tests start, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# The RESP tests compare Monotable with a real redis-server and drive it
# with redis-cli.
need_packages=(redis-server redis-tools)
if ((${#need_packages[@]})); then
    missing=()
    for p in "${need_packages[@]}"; do
        # `dpkg -s` also succeeds for a removed package that left its
        # configuration behind: ask for the installed state itself.
        status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
        [ "$status" = "install ok installed" ] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        sudo_cmd=""
        [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
    fi
fi

cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
