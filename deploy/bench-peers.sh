# Sourced by the benchmarks that compare Monotable with Redis: installs
# redis-server and redis-benchmark if missing, builds the release binary,
# makes a scratch directory removed on exit (stopping every server started
# in it), and defines free_port, wait_port and start_redis.
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools
fi
# MT=path/to/monotable runs that binary instead (e.g. an older build, to
# compare in the same conditions) and skips the build.
if [ -z "${MT:-}" ]; then
    cargo build -j1 --release -p monotable-node >/dev/null
    MT=target/release/monotable
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

start_redis() { # name port args...
    local name=$1 port=$2; shift 2
    mkdir -p "$work/$name"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/$name" --save '' --daemonize no "$@" \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
}

# A Monotable node on data directory $work/NAME with its Redis endpoint on
# RESP-PORT (its native listener on a free port), stopped with the peers.
resp_monotable() { # name resp-port args...
    local name=$1 port=$2; shift 2
    "$MT" serve --http-listen off --data-dir "$work/$name" --listen 127.0.0.1:0 --resp-listen "127.0.0.1:$port" \
        --log warn "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
}
