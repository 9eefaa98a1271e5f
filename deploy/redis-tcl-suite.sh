#!/usr/bin/env bash
# Runs Redis's own TCL test suite (Redis 7.0.15) in external-server mode
# against Monotable's Redis endpoint, or against a real redis-server 7.0.15
# as the oracle, and compares the failures with
# deploy/redis-tcl-expected-failures.txt.
#
#   deploy/redis-tcl-suite.sh [--target monotable|redis] [--single UNIT]...
#                             [--results DIR] [--help]
#
# The suite comes from the Debian source package of redis 7.0.15 (its
# upstream tarball, BSD-3-Clause; COPYING is kept next to it) and is cached
# in target/redis-7.0.15-tests/: only the first run downloads it, the tests
# themselves never fetch anything. Every server the script starts listens on
# a free loopback port and is stopped on exit.
#
# Each unit runs on its own (`--single`), with `--durable` so a test that
# hits an unknown command fails alone instead of aborting its unit. Tests
# tagged external:skip, needs:debug, needs:repl, needs:pfdebug and needs:save
# are skipped, as are encoding and digest checks
# (--ignore-encoding, --ignore-digest). The run copy of the suite gets a few
# harness shims, no-ops on redis-server (see "Shims" below). Exit 0 only
# when the failures are exactly the expected ones (for --target redis: none).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
Usage: deploy/redis-tcl-suite.sh [OPTIONS]

Runs Redis 7.0.15's TCL test suite in external-server mode and compares the
failures with deploy/redis-tcl-expected-failures.txt.

Options:
  --target monotable|redis  server to test (default monotable): `monotable
                            serve` (MT=path/to/monotable to skip the build)
                            or redis-server 7.0.15, the oracle, each started
                            on a free loopback port with a scratch directory
  --single UNIT             run only this unit (e.g. unit/type/list); may be
                            repeated; only these units' expected failures
                            are compared
  --results DIR             where unit logs and the failure list go
                            (default target/redis-tcl-results/TARGET)
  --unit-timeout SECONDS    kill a unit that runs longer (default 1200)
  --help                    this text

Output: a table of passed / failed / skipped tests per unit, aborted units,
then the failures that are not expected (regressions) and the expected
failures that now pass. DIR/failures.tsv lists every failure as
`unit<TAB>test<TAB>first line of the error`.
EOF
}

TARGET=monotable
UNITS=()
RESULTS=""
UNIT_TIMEOUT=1200
while (($#)); do
    case "$1" in
        --target) TARGET="$2"; shift 2 ;;
        --single) UNITS+=("$2"); shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        --unit-timeout) UNIT_TIMEOUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$TARGET" in monotable|redis) ;; *) echo "--target must be monotable or redis" >&2; exit 2 ;; esac
RESULTS="${RESULTS:-target/redis-tcl-results/$TARGET}"
EXPECTED=deploy/redis-tcl-expected-failures.txt
SUITE=target/redis-7.0.15-tests
VERSION=7.0.15

. deploy/lib.sh

# --- packages --------------------------------------------------------------
# redis-tools: unit integration/redis-cli runs redis-cli 7.0.15 against the
# server under test.
need_packages=(tcl redis-tools)
[ "$TARGET" = redis ] && need_packages+=(redis-server)
apt_install "${need_packages[@]}"

# --- the suite, downloaded once --------------------------------------------
# From the Debian source package through a throwaway apt configuration, so
# the machine's own sources and package lists are left untouched.
if [ ! -f "$SUITE/tests/test_helper.tcl" ]; then
    echo "Fetching the Redis $VERSION test suite (Debian source package redis)..."
    apt_dir="$(mktemp -d)"
    chmod 755 "$apt_dir"
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl"
    found_src=0
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt_dir/sources.list.d/$(basename "$f")"
        found_src=1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" >>"$apt_dir/sources.list.d/src.list"
        found_src=1
    done
    [ "$found_src" = 1 ] || { echo "no apt sources found to derive deb-src entries from" >&2; exit 1; }
    cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc::sourcelist "/dev/null";
Dir::Etc::sourceparts "$apt_dir/sources.list.d";
Dir::State::lists "$apt_dir/lists";
Dir::Cache "$apt_dir/cache";
EOF
    APT_CONFIG="$apt_dir/apt.conf" $sudo_cmd apt-get update -qq
    (cd "$apt_dir/dl" && APT_CONFIG="$apt_dir/apt.conf" $sudo_cmd apt-get source --download-only -qq redis)
    orig="$(ls "$apt_dir"/dl/redis_"$VERSION".orig.tar.* 2>/dev/null | head -1)"
    if [ -z "$orig" ]; then
        echo "the source package of redis is not $VERSION:" >&2
        ls "$apt_dir/dl" >&2
        $sudo_cmd rm -rf "$apt_dir"
        exit 1
    fi
    got="$(tar xaf "$orig" -O "redis-$VERSION/src/version.h" | sed -n 's/^#define REDIS_VERSION "\(.*\)"/\1/p')"
    if [ "$got" != "$VERSION" ]; then
        echo "$orig holds Redis '$got', not $VERSION" >&2
        $sudo_cmd rm -rf "$apt_dir"
        exit 1
    fi
    rm -rf "$SUITE.tmp"
    mkdir -p "$SUITE.tmp"
    tar xaf "$orig" -C "$SUITE.tmp" --strip-components=1 \
        "redis-$VERSION/tests" "redis-$VERSION/COPYING" "redis-$VERSION/src/version.h"
    mv "$SUITE.tmp/src/version.h" "$SUITE.tmp/version.h"
    rmdir "$SUITE.tmp/src"
    echo "Redis $VERSION tests/ from $(basename "$orig") (Debian source package redis); licence: COPYING" \
        >"$SUITE.tmp/SOURCE"
    $sudo_cmd rm -rf "$apt_dir"
    mv "$SUITE.tmp" "$SUITE"
fi

# --- scratch directory, servers ----------------------------------------------
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Servers get ports from 50000 up; the suite's own test server listens on
# one of the 32 ports below its --baseport, picked per run from 22000-39000
# so that two runs side by side do not collide (it also probes port+10000).
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((50000 + RANDOM % 10000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
    done
    echo "no free port found" >&2; exit 1
}
wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "port $1 never opened" >&2; exit 1
}

if [ "$TARGET" = monotable ] && [ -z "${MT:-}" ]; then
    cargo build -j1 --release -p monotable-node >/dev/null
    MT=target/release/monotable
fi
if [ "$TARGET" = redis ]; then
    v="$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
    [ "$v" = "$VERSION" ] || echo "warning: redis-server is $v, the suite is $VERSION" >&2
fi

start_server() {
    PORT=$(free_port)
    rm -rf "$work/data"
    mkdir -p "$work/data"
    if [ "$TARGET" = redis ]; then
        # DEBUG is allowed so that tests using it without the needs:debug tag
        # are a valid oracle; they fail on Monotable as `debug`.
        redis-server --port "$PORT" --bind 127.0.0.1 --dir "$work/data" --save '' --appendonly no \
            --daemonize no --enable-debug-command yes >"$work/server.log" 2>&1 &
    else
        # --fsync never: the suite writes a lot and checks no durability.
        "$MT" serve --http-listen off --data-dir "$work/data" --listen "127.0.0.1:$(free_port)" \
            --resp-listen "127.0.0.1:$PORT" --fsync never --log warn >"$work/server.log" 2>&1 &
    fi
    server_pid=$!
    wait_port "$PORT"
}

# --- the tests to run ----------------------------------------------------------
# Tests that fail on redis-server 7.0.15 itself in this mode are no oracle:
# skipped, each with why. (name<TAB>why)
SKIP_TESTS=(
)
# Tests that hang on a server without the command they need, holding up
# the rest of their unit until the suite's no-progress timeout, or that
# leave the server set up so that the rest of their unit fails when they
# fail: skipped on Monotable only, each with why. (name<TAB>why)
HANG_TESTS=(
    "BRPOPLPUSH with multiple blocked clients	sends two blocking pops on two connections without waiting for either to block and expects them served in the order sent; Monotable runs connections in parallel and sometimes registers the second first, and the test then waits forever"
    "Keyspace notifications: evicted events	waits for the event of a key evicted by maxmemory; Monotable evicts nothing (maxmemory refuses writes, as noeviction), so the test waits forever"
    "Tracking invalidation message of eviction keys should be before response	needs a key evicted by maxmemory-policy volatile-random; Monotable evicts nothing (maxmemory refuses writes, as noeviction), so the test fails with maxmemory still set and tracking on, and every later test of its unit fails with it"
)
# Units that cannot run against an external server at all.
SKIP_UNITS=(
)
TAGS="-needs:debug -needs:repl -needs:pfdebug -needs:save"

# Shims in the run copy of the suite (the cache stays as shipped), all
# no-ops on redis-server, where the commands they catch succeed:
# - the harness runs FUNCTION FLUSH before every server block, and CONFIG
#   GET/SET for the block's `overrides` (mostly encoding thresholds and
#   `save ""`); on a server without these commands every unit would abort
#   there, so their "unknown command" is ignored, and an override of a
#   parameter CONFIG GET does not list is skipped (the block runs on the
#   server's defaults);
# - `r config set` of an encoding threshold (list-max-ziplist-size,
#   set-max-intset-entries, ...) answers OK, and `r config get` of one an
#   empty value, on a server without CONFIG or without that parameter
#   ("Unknown option", or "immutable" for a value it cannot take): a server
#   without encodings has nothing to set, and the tests go on to check
#   replies (encodings themselves are not checked: --ignore-encoding). So do
#   proto-max-bulk-len and client-query-buffer-limit, which only gate
#   --large-memory tests;
# - the suite's memory_usage helper answers 1 without MEMORY USAGE, as it
#   does itself on an allocator other than jemalloc.
cp -a "$SUITE/tests" "$work/tests"
patch_line() { # file old new: replace one exact line, or fail
    local file=$1 old=$2 new=$3
    grep -qxF -- "$old" "$file" || { echo "harness patch failed: $file: $old" >&2; exit 1; }
    awk -v old="$old" -v new="$new" '$0 == old { print new; next } { print }' "$file" >"$file.new"
    mv "$file.new" "$file"
}
# Without a build tree, unit integration/redis-cli runs the installed one.
mkdir -p "$work/src"
ln -s "$(command -v redis-cli)" "$work/src/redis-cli"
server_tcl="$work/tests/support/server.tcl"
patch_line "$server_tcl" '    r function flush' '    unknown_command_ok {r function flush}'
patch_line "$server_tcl" '        dict set saved_config $param [lindex [r config get $param] 1]' \
    '        if {![unknown_command_ok {set known [r config get $param]}] || [llength $known] == 0} continue; dict set saved_config $param [lindex $known 1]'
patch_line "$work/tests/test_helper.tcl" 'proc r {args} {' 'proc r_unshimmed {args} {'
# A test that fails half-way (a command unknown to the server) can leave its
# connection in MULTI (every later test would get QUEUED), in RESP3 after
# HELLO 3, or in the client's raw mode with replies unread: after a failed
# test the connection is replaced by a fresh one on database 9, as at the
# start of a server block.
test_tcl="$work/tests/support/test.tcl"
awk '!done && $0 == "            send_data_packet $::test_server_fd err [join $details \"\\n\"]" {
        print; print "            catch {reconnect}"; done = 1; next } { print }' "$test_tcl" >"$test_tcl.new"
mv "$test_tcl.new" "$test_tcl"
grep -qxF '            catch {reconnect}' "$test_tcl" || { echo "harness patch failed: $test_tcl" >&2; exit 1; }
cat >>"$work/tests/support/util.tcl" <<'EOF'

# Added by deploy/redis-tcl-suite.sh (see there): tolerate commands the
# server under test does not have where the harness, not a test, needs them.
proc unknown_command_ok {script} {
    if {[catch {uplevel 1 $script} res opts]} {
        if {[string match "*unknown command*" $res]} { return 0 }
        return -options $opts $res
    }
    return 1
}
# MEMORY USAGE: the suite itself answers 1 on allocators it cannot trust.
rename memory_usage memory_usage_unshimmed
proc memory_usage {key} {
    if {[catch {memory_usage_unshimmed $key} res opts]} {
        if {[string match "*unknown command*" $res]} { return 1 }
        return -options $opts $res
    }
    return $res
}
proc r {args} {
    if {[catch {uplevel 1 [list r_unshimmed {*}$args]} res opts]} {
        set cmd $args
        if {[string is integer [lindex $cmd 0]]} { set cmd [lrange $cmd 1 end] }
        set sub [string tolower [lindex $cmd 1]]
        if {[string tolower [lindex $cmd 0]] eq "config" && ($sub eq "set" || $sub eq "get") &&
            ([string match "*unknown command*" $res] || [string match "*Unknown option*" $res] ||
             [string match "*immutable config*" $res]) &&
            [regexp {^(list-max-(ziplist|listpack)-size|list-compress-depth|(hash|zset|set)-max-(ziplist|listpack|intset)-(entries|value)|stream-node-max-(bytes|entries)|proto-max-bulk-len|client-query-buffer-limit)$} [lindex $cmd 2]]} {
            if {$sub eq "get"} { return [list [lindex $cmd 2] ""] }
            return OK
        }
        return -options $opts $res
    }
    return $res
}
EOF

if ((${#UNITS[@]} == 0)); then
    mapfile -t UNITS < <(cd "$work" && tclsh tests/test_helper.tcl --list-tests)
fi
skip_args=()
for s in "${SKIP_TESTS[@]}"; do skip_args+=(--skiptest "${s%%	*}"); done
if [ "$TARGET" = monotable ]; then
    for s in "${HANG_TESTS[@]}"; do skip_args+=(--skiptest "${s%%	*}"); done
fi

BASEPORT=$((22000 + (RANDOM % 500) * 34))

rm -rf "$RESULTS"
mkdir -p "$RESULTS/units"
: >"$RESULTS/failures.tsv"
: >"$RESULTS/aborted.tsv"
summary="$RESULTS/summary.tsv"
printf 'unit\tpassed\tfailed\tskipped\tnote\n' >"$summary"

start_server
echo "Testing $TARGET on 127.0.0.1:$PORT, ${#UNITS[@]} units (logs in $RESULTS/units)"
for unit in "${UNITS[@]}"; do
    skip_unit=""
    for s in "${SKIP_UNITS[@]}"; do [ "${s%%	*}" = "$unit" ] && skip_unit="${s#*	}"; done
    if [ -n "$skip_unit" ]; then
        printf '%s\t0\t0\t0\tnot run: %s\n' "$unit" "$skip_unit" >>"$summary"
        continue
    fi
    log="$RESULTS/units/${unit//\//_}.log"
    set +e
    (cd "$work" && timeout "$UNIT_TIMEOUT" tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$PORT" \
        --single "$unit" --baseport "$BASEPORT" --durable --clients 1 --timeout 300 --tags "$TAGS" \
        --ignore-encoding --ignore-digest "${skip_args[@]}") 2>&1 |
        sed 's/\x1b\[[0-9;]*m//g' >"$log"
    rc=${PIPESTATUS[0]}
    # A unit whose test failed before undoing its settings leaves them to
    # the next unit: back to the defaults (no-ops on a server where every
    # test passed).
    redis-cli -h 127.0.0.1 -p "$PORT" CONFIG SET maxmemory 0 maxmemory-policy noeviction >/dev/null 2>&1
    set -e
    # A test's failure: "[err]: NAME in tests/UNIT.tcl" then its message.
    # A failure outside any test ("[err]: MESSAGE") cut the rest of its
    # server block short; an "[exception]" or a missing "done" line, the
    # rest of the unit. With --durable the suite prints an error that is not
    # an assertion without its first 10 characters, then the whole error as
    # the first line of its stack trace: the whole one is kept.
    awk -v unit="$unit" -v failures="$RESULTS/failures.tsv" -v aborted="$RESULTS/aborted.tsv" \
        -v summary="$summary" -v rc="$rc" '
        function flush_err() {
            if (pending != "") {
                printf "%s\t%s\t%s\n", unit, pending, substr(msg, 1, 300) >> (pending_setup ? aborted : failures)
                pending = ""
            }
        }
        want_msg == 2 { if (length($0) == length(msg) + 10 && substr($0, 11) == msg) msg = $0; want_msg = 0; flush_err() }
        want_msg == 1 { msg = $0; want_msg = 2; next }
        /^\[err\]: / {
            flush_err()
            line = substr($0, 8)
            if (match(line, / in tests\/[^ ]*\.tcl$/)) {
                pending = substr(line, 1, RSTART - 1); pending_setup = 0; failed++; want_msg = 1
            } else {
                pending = "setup error"; pending_setup = 1; msg = line; want_msg = 2; setup++
            }
            next
        }
        /^\[ok\]: / { ok++; next }
        /^\[(skip|ignore)\]: / { skipped++; next }
        /^\[exception\]: / { exc = 1; printf "%s\texception\t%s\n", unit, substr($0, 14) >> aborted; next }
        /^\[TIMEOUT\]/ { exc = 1; printf "%s\ttimeout\tno progress for 300 s\n", unit >> aborted; next }
        /^\[[0-9]+\/[0-9]+ done\]: / { done = 1 }
        END {
            flush_err()
            note = ""
            if (setup) note = setup " setup error(s)"
            if (!done && !exc) {
                printf "%s\tno end\texit status %s (124: --unit-timeout)\n", unit, rc >> aborted
                exc = 1
            }
            if (exc) note = note (note == "" ? "" : ", ") "ABORTED"
            printf "%s\t%d\t%d\t%d\t%s\n", unit, ok, failed, skipped, note >> summary
        }' "$log"
    tail -1 "$summary" | awk -F'\t' '{ printf "  %-34s passed %4d  failed %4d  skipped %4d  %s\n", $1, $2, $3, $4, $5 }'
    if ! kill -0 "$server_pid" 2>/dev/null; then
        printf '%s\tserver exited\t%s\n' "$unit" "$(tail -1 "$work/server.log")" >>"$RESULTS/aborted.tsv"
        echo "  the server exited during $unit; restarting it" >&2
        cp "$work/server.log" "$RESULTS/units/${unit//\//_}.server.log"
        start_server
    fi
done

# --- summary and comparison -----------------------------------------------------
echo
awk -F'\t' 'NR > 1 { p += $2; f += $3; s += $4; if ($5 ~ /ABORTED/) a++; if ($5 ~ /setup/) e++ }
    END { printf "Total: %d passed, %d failed, %d skipped; %d units aborted, %d units with setup errors\n", p, f, s, a, e }' "$summary"
if [ -s "$RESULTS/aborted.tsv" ]; then
    echo "Aborted units and server blocks cut short:"
    sed 's/^/  /' "$RESULTS/aborted.tsv"
fi

# Failures are compared as unit<TAB>test (a test name may repeat); a setup
# error or an aborted unit as unit<TAB>(setup error), (exception), ...
ran="$work/ran-units"
printf '%s\n' "${UNITS[@]}" | sort -u >"$ran"
actual="$work/actual"
{
    cut -f1,2 "$RESULTS/failures.tsv"
    awk -F'\t' '{ printf "%s\t(%s)\n", $1, $2 }' "$RESULTS/aborted.tsv"
} | LC_ALL=C sort >"$actual"
expected="$work/expected"
if [ "$TARGET" = redis ]; then
    : >"$expected"
else
    awk -F'\t' 'NR == FNR { ran[$1] = 1; next } /^#/ || /^$/ { next } ($1 in ran) { print $1 "\t" $2 }' \
        "$ran" "$EXPECTED" | LC_ALL=C sort >"$expected"
fi
new="$(LC_ALL=C comm -23 "$actual" "$expected")"
# Failures listed as "flaky:" may pass too.
may_pass="$work/may-pass"
awk -F'\t' '/^#/ || /^$/ { next } $3 ~ /^flaky:/ { print $1 "\t" $2 }' "$EXPECTED" | LC_ALL=C sort >"$may_pass"
fixed="$(LC_ALL=C comm -13 "$actual" "$expected" | LC_ALL=C comm -23 - "$may_pass")"
status=0
if [ -n "$new" ]; then
    echo
    echo "New failures (not in $EXPECTED):"
    while IFS=$'\t' read -r u t; do
        m="$(awk -F'\t' -v u="$u" -v t="$t" '$1 == u && ($2 == t || "(" $2 ")" == t) { print $3; exit }' \
            "$RESULTS/failures.tsv" "$RESULTS/aborted.tsv")"
        printf '  %s\t%s\t%s\n' "$u" "$t" "$m"
    done <<<"$new"
    status=1
fi
if [ -n "$fixed" ]; then
    echo
    echo "Listed in $EXPECTED but passed (remove them):"
    sed 's/^/  /' <<<"$fixed"
    status=1
fi
if [ "$status" = 0 ]; then
    echo
    echo "The failures are exactly the expected ones ($(wc -l <"$actual"))."
fi
exit "$status"
