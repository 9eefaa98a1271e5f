#!/usr/bin/env bash
# Installs Monotable as a systemd service on this machine (as root):
# the binary in /usr/local/bin, the user `monotable`, the unit, and
# /etc/monotable/monotable.toml (kept if it exists); then enables and
# starts the service. Builds the release binary if it is missing.
#   sudo deploy/systemd/install.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then
    echo "usage: sudo $0   (no options)"
    [ "$1" = --help ] && exit 0
    exit 2
fi
[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
[ -x target/release/monotable ] || cargo build --release -p monotable-node
install -m 0755 target/release/monotable /usr/local/bin/monotable
id monotable >/dev/null 2>&1 ||
    useradd --system --user-group --home-dir /var/lib/monotable --shell /usr/sbin/nologin monotable
install -d -m 0750 -o root -g monotable /etc/monotable
[ -e /etc/monotable/monotable.toml ] ||
    install -m 0640 -o root -g monotable deploy/systemd/monotable.toml /etc/monotable/monotable.toml
install -m 0644 deploy/systemd/monotable.service /etc/systemd/system/monotable.service
systemctl daemon-reload
systemctl enable --now monotable
systemctl --no-pager status monotable
