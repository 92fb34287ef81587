#!/usr/bin/env bash
# Checks semclip-health-probe against grpcio's reference grpc.health.v1 server: exit 0 for
# SERVING, 4 for NOT_SERVING or an unknown service, 2 for a closed port.
#
# Usage: deploy/health-probe/tests/interop.sh [PROBE_BINARY]
# Installs grpcio (pinned) into a venv under ${XDG_CACHE_HOME:-~/.cache}/semclip once.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
probe="${1:-$root/target/health-probe/release/semclip-health-probe}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/semclip"
venv="$cache/grpc-test-venv"

if [[ ! -x "$probe" ]]; then
    CARGO_TARGET_DIR="$root/target/health-probe" nice -n 10 cargo build --release \
        --manifest-path "$root/deploy/health-probe/Cargo.toml"
fi
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import grpc_health" 2>/dev/null
then
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q grpcio==1.85.1 grpcio-health-checking==1.85.1
fi

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$venv/bin/python" "$here/grpcio_health_server.py" "$tmp/port" &
server_pid=$!
for _ in $(seq 100); do [[ -s "$tmp/port" ]] && break; sleep 0.1; done
port="$(cat "$tmp/port")"

passed=0
failed=0
expect() {
    local want="$1"
    shift
    local got=0
    "$probe" "$@" >"$tmp/out" 2>&1 || got=$?
    if [[ "$got" == "$want" ]]; then
        passed=$((passed + 1))
        echo "ok   exit $got: $* -> $(head -1 "$tmp/out")"
    else
        failed=$((failed + 1))
        echo "FAIL exit $got (wanted $want): $* -> $(cat "$tmp/out")"
    fi
}

expect 0 "127.0.0.1:$port"
expect 0 --service up "127.0.0.1:$port"
expect 4 --service down "127.0.0.1:$port"
# grpcio answers NOT_FOUND with an empty message, which reads as UNKNOWN.
expect 4 --service nosuch "127.0.0.1:$port"
expect 0 "localhost:$port"
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
expect 2 --timeout 1 "127.0.0.1:$port"

echo "$passed passed, $failed failed"
[[ "$failed" == 0 ]]
