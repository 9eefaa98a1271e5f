# Sourced by the single-node benchmark scripts: builds the release binary,
# makes a scratch directory removed on exit (stopping the node started in
# it), picks a free loopback address, and defines `start`, which starts a
# node on "$work/data" and waits until it serves.
cargo build --release -p monotable-node >/dev/null
MT=target/release/monotable
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="127.0.0.1:$port"

start() {
    "$MT" serve --http-listen off --data-dir "$work/data" --listen "$addr" --resp-listen off --log warn >>"$work/node.log" 2>&1 &
    pid=$!
    until "$MT" range list --addr "$addr" >/dev/null 2>&1; do sleep 0.01; done
}
