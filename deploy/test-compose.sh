#!/usr/bin/env bash
# End-to-end test of the container deployment: builds the images, brings the compose stack
# up, drives it from the host with the `semclip` CLI, takes the channel away and back, and
# tears everything down again, also on failure.
#
# It runs on a machine without a Docker engine: it installs Debian's docker.io and
# docker-compose when dockerd is absent, and starts a dockerd of its own (own data root,
# socket and state directory; no iptables rules and no default bridge, so that nothing of
# the host's network configuration is changed; published ports go through docker-proxy on
# 127.0.0.1). It must run as root.
#
# Steps:
#   1. engine: install when absent, start our own dockerd, wait for its socket
#   2. binaries: cargo build --release of the daemons and the CLI (skip: --no-cargo-build)
#   3. images: deploy/build-base-image.sh and deploy/build-images.sh
#   4. up: compose up, then wait until all three containers are healthy (time printed)
#   5. drive: send a sample image, set the SNR, classify it with custom labels
#   6. outage: stop channel-sim; a send must fail as unavailable; start it; a send succeeds
#   7. sizes of the images; then teardown (containers, network, images unless
#      --keep-images, the dockerd, its bridges and its data root)
#
# Usage: deploy/test-compose.sh [--no-cargo-build] [--keep-images] [--keep-data]
#                               [--bin-dir DIR] [--sample FILE] [--bundle DIR] [--ort-lib FILE]
#   --bin-dir DIR  take the daemons and the CLI from DIR instead of building them
#   --sample FILE  image to send (default: the first image in samples/)
#   --bundle, --ort-lib are passed to deploy/build-images.sh
# Environment: SEMCLIP_DOCKER_ROOT (state of the test's dockerd, default
# /var/tmp/semclip-docker-test), SEMCLIP_TEST_PORT_BASE (host ports BASE+1..BASE+3 for
# transmitter, channel, receiver and BASE+91..BASE+93 for metrics; default 25000).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cargo_build=1
keep_images=0
keep_data=0
bin="$root/target/release"
image_args=()
sample=""
while [[ $# -gt 0 ]]; do
    arg="$1"
    shift
    case "$arg" in
        --no-cargo-build) cargo_build=0 ;;
        --keep-images) keep_images=1 ;;
        --keep-data) keep_data=1 ;;
        --bin-dir) bin="${1:?--bin-dir needs a value}"; cargo_build=0; shift ;;
        --sample) sample="${1:?--sample needs a value}"; shift ;;
        --bundle | --ort-lib) image_args+=("$arg" "${1:?$arg needs a value}"); shift ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "test-compose.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

state="${SEMCLIP_DOCKER_ROOT:-/var/tmp/semclip-docker-test}"
port_base="${SEMCLIP_TEST_PORT_BASE:-25000}"
project="semclip-test"
compose_file="$root/deploy/docker-compose.yml"
export DOCKER_HOST="unix://$state/docker.sock"
export SEMCLIP_TRANSMITTER_PORT=$((port_base + 1))
export SEMCLIP_CHANNEL_PORT=$((port_base + 2))
export SEMCLIP_RECEIVER_PORT=$((port_base + 3))
export SEMCLIP_TRANSMITTER_METRICS_PORT=$((port_base + 91))
export SEMCLIP_CHANNEL_METRICS_PORT=$((port_base + 92))
export SEMCLIP_RECEIVER_METRICS_PORT=$((port_base + 93))
# The CLI's addresses: the published ports.
export SEMCLIP_TRANSMITTER="127.0.0.1:$SEMCLIP_TRANSMITTER_PORT"
export SEMCLIP_CHANNEL="127.0.0.1:$SEMCLIP_CHANNEL_PORT"
export SEMCLIP_RECEIVER="127.0.0.1:$SEMCLIP_RECEIVER_PORT"

passed=0
failed=0
step() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
die() { echo "test-compose.sh: $*" >&2; exit 1; }
# Seconds since a `date +%s.%N` reading, to a tenth.
since() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }

[[ $(id -u) == 0 ]] || die "must run as root (it starts its own dockerd)"

# ---------------------------------------------------------------------------------------
# Teardown, on every exit.
# ---------------------------------------------------------------------------------------
dockerd_pid=""
links_before=""
bridges() { ip -o link show type bridge | awk -F': ' '{print $2}' | cut -d@ -f1; }
compose=()

teardown() {
    local rc=$?
    set +e
    step "teardown"
    if [[ -n "$dockerd_pid" ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
        if [[ ${#compose[@]} -gt 0 ]]; then
            "${compose[@]}" down --volumes --remove-orphans --timeout 10 2>&1 | tail -n 3
        fi
        if [[ $keep_images == 0 ]]; then
            docker image rm semclip-transmitter:test semclip-channel-sim:test \
                semclip-receiver:test semclip-base:local >/dev/null 2>&1
        fi
        kill "$dockerd_pid"
        for _ in $(seq 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$dockerd_pid" 2>/dev/null
        echo "dockerd stopped"
    fi
    # Mounts the engine left behind (overlay layers, netns files), innermost first.
    findmnt -rn -o TARGET | grep "^$state/" | sort -r | xargs -r -n1 umount -l
    # Bridges the engine made and did not remove (compose's network on a hard stop).
    if [[ -n "$links_before" ]]; then
        for link in $(bridges); do
            [[ "$link" =~ ^br-[0-9a-f]{12}$ ]] || continue
            if ! grep -qx "$link" <<<"$links_before"; then
                ip link delete "$link" && echo "removed $link"
            fi
        done
    fi
    if [[ $rc != 0 && -f "$state/dockerd.log" ]]; then
        echo "errors in the dockerd log (last 10):"
        grep -E 'level=(error|fatal)' "$state/dockerd.log" | tail -n 10
    fi
    # Only a directory this script made (it holds the marker) is ever removed.
    if [[ $keep_data == 0 && -f "$state/.semclip-docker-test" ]]; then
        rm -rf "$state"
    fi
    echo "exit status $rc"
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
step "1. Docker engine"
# ---------------------------------------------------------------------------------------
need_install=0
command -v dockerd >/dev/null || need_install=1
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
    need_install=1
fi
if [[ $need_install == 1 ]]; then
    echo "installing Debian's docker.io and docker-compose"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io docker-compose iptables >/dev/null
fi
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
echo "engine: $(dockerd --version); compose: $("${compose[@]}" version 2>/dev/null | head -1)"
compose+=(-p "$project" -f "$compose_file")

links_before="$(bridges)"
if [[ -S "$state/docker.sock" ]] && docker version >/dev/null 2>&1; then
    keep_data=1
    die "a dockerd already serves $state/docker.sock; stop it or set SEMCLIP_DOCKER_ROOT"
fi
if [[ -e "$state" && ! -f "$state/.semclip-docker-test" ]]; then
    keep_data=1
    die "$state exists and was not made by this test; set SEMCLIP_DOCKER_ROOT elsewhere"
fi
mkdir -p "$state"
touch "$state/.semclip-docker-test"
# No iptables rules and no default bridge: compose's own network and docker-proxy for the
# published ports are all the test needs, and nothing is left in the host's firewall.
dockerd --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid" \
    --host "$DOCKER_HOST" --iptables=false --ip-masq=false --bridge=none --log-level warn \
    >"$state/dockerd.log" 2>&1 &
dockerd_pid=$!
t_engine=$(date +%s.%N)
until docker version >/dev/null 2>&1; do
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -n 20 "$state/dockerd.log"; die "dockerd exited"; }
    (($(date +%s) - ${t_engine%.*} < 60)) || die "dockerd did not answer within 60 s"
    sleep 0.5
done
echo "dockerd (pid $dockerd_pid) answered after $(since "$t_engine") s"

# ---------------------------------------------------------------------------------------
step "2. binaries"
# ---------------------------------------------------------------------------------------
if [[ $cargo_build == 1 ]]; then
    nice -n 10 cargo build --release --quiet \
        -p semclip-transmitter -p semclip-channel-sim -p semclip-receiver -p semclip-cli
fi
for b in semclip-transmitter semclip-channel-sim semclip-receiver semclip; do
    [[ -x "$bin/$b" ]] || die "missing $bin/$b (cargo build --release)"
done
if [[ " ${image_args[*]} " != *" --ort-lib "* ]]; then
    ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* >/dev/null 2>&1 ||
        die "no ONNX Runtime in .venv: run scripts/setup-python.sh"
fi
if [[ -z "$sample" ]]; then
    sample="$(ls samples/*.png samples/*.jpg samples/*.jpeg samples/*.webp 2>/dev/null |
        head -1 || true)"
fi
[[ -f "$sample" ]] || die "no sample image (samples/ is empty; pass --sample FILE)"

# ---------------------------------------------------------------------------------------
step "3. images"
# ---------------------------------------------------------------------------------------
deploy/build-images.sh --tag test --bin-dir "$bin" "${image_args[@]}"
export SEMCLIP_TAG=test

# ---------------------------------------------------------------------------------------
step "4. up"
# ---------------------------------------------------------------------------------------
health() {
    docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
        "$1" 2>/dev/null || echo missing
}
cid() { "${compose[@]}" ps -q "$1"; }

t_up=$(date +%s.%N)
"${compose[@]}" up -d 2>&1 | tail -n 5
deadline=$(($(date +%s) + 180))
while :; do
    states=""
    all=1
    for s in receiver channel-sim transmitter; do
        h="$(health "$(cid "$s")")"
        states+="${states:+ }$s=$h"
        [[ "$h" == healthy ]] || all=0
    done
    [[ $all == 1 ]] && break
    if (($(date +%s) > deadline)); then
        "${compose[@]}" ps
        "${compose[@]}" logs --tail 30
        die "not all healthy after 180 s: $states"
    fi
    sleep 0.5
done
up_s="$(since "$t_up")"
echo "all three healthy $up_s s after compose up ($states)"
ok "stack healthy"

for pair in transmitter:$SEMCLIP_TRANSMITTER_METRICS_PORT \
    channel-sim:$SEMCLIP_CHANNEL_METRICS_PORT receiver:$SEMCLIP_RECEIVER_METRICS_PORT; do
    if curl -fsS --max-time 5 "http://127.0.0.1:${pair#*:}/metrics" >"$state/metrics.txt" &&
        grep -q '^# TYPE ' "$state/metrics.txt"; then
        ok "${pair%%:*} serves Prometheus metrics on 127.0.0.1:${pair#*:}"
    else
        fail "${pair%%:*}: no Prometheus metrics on 127.0.0.1:${pair#*:}"
    fi
done

# ---------------------------------------------------------------------------------------
step "5. drive the link with the semclip CLI"
# ---------------------------------------------------------------------------------------
tmp="$state/cli"
mkdir -p "$tmp"
if "$bin/semclip" send --json "$sample" >"$tmp/send.json" 2>"$tmp/send.err"; then
    id="$(python3 -c 'import json, sys
print(json.loads(open(sys.argv[1]).readline())["message_id"])' "$tmp/send.json")"
    ok "send $sample -> message $id"
else
    fail "send: $(cat "$tmp/send.err")"
    id=""
fi

if "$bin/semclip" channel set --snr-db 5 --json >"$tmp/set.json" 2>"$tmp/set.err" &&
    python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))
assert abs(c["snr_db"] - 5) < 1e-6, c' "$tmp/set.json"; then
    ok "channel set --snr-db 5 -> $(cat "$tmp/set.json")"
else
    fail "channel set: $(cat "$tmp/set.err" "$tmp/set.json" 2>/dev/null)"
fi

labels="sailboat,kitten,fire truck,horse"
if [[ -n "$id" ]] && "$bin/semclip" classify "$id" --labels "$labels" --top-k 0 --json \
    >"$tmp/classify.json" 2>"$tmp/classify.err"; then
    if python3 - "$tmp/classify.json" "$labels" <<'EOF'; then
import json, math, sys
reply = json.load(open(sys.argv[1]))
want = set(sys.argv[2].split(","))
got = [l["label"] for l in reply["labels"]]
assert set(got) == want, f"labels {got} are not {sorted(want)}"
p = [l["probability"] for l in reply["labels"]]
assert all(0.0 <= x <= 1.0 for x in p), p
assert math.isclose(sum(p), 1.0, abs_tol=1e-3), f"probabilities sum to {sum(p)}"
print("top label:", got[0], "p =", round(p[0], 3))
EOF
        ok "classify with custom labels"
    else
        fail "classify reply: $(cat "$tmp/classify.json")"
    fi
else
    fail "classify: $(cat "$tmp/classify.err" 2>/dev/null)"
fi

# ---------------------------------------------------------------------------------------
step "6. channel outage and recovery"
# ---------------------------------------------------------------------------------------
"${compose[@]}" stop --timeout 5 channel-sim 2>&1 | tail -n 1
if "$bin/semclip" send "$sample" >"$tmp/out.txt" 2>"$tmp/out.err"; then
    fail "a send succeeded while the channel was down: $(cat "$tmp/out.txt")"
elif grep -qi "unavailable" "$tmp/out.err"; then
    ok "send during the outage fails as unavailable:" \
        "$(grep -i unavailable "$tmp/out.err" | head -1)"
else
    fail "send during the outage failed without saying unavailable: $(cat "$tmp/out.err")"
fi

"${compose[@]}" start channel-sim 2>&1 | tail -n 1
t_back=$(date +%s)
recovered=0
while (($(date +%s) - t_back < 60)); do
    if "$bin/semclip" send "$sample" >"$tmp/back.txt" 2>"$tmp/back.err"; then
        recovered=1
        break
    fi
    sleep 1
done
if [[ $recovered == 1 ]]; then
    ok "send succeeds again $(($(date +%s) - t_back)) s after the channel restarted"
else
    fail "no send succeeded within 60 s of the channel's restart: $(cat "$tmp/back.err")"
fi

# ---------------------------------------------------------------------------------------
step "7. image sizes"
# ---------------------------------------------------------------------------------------
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E '^semclip-(base|transmitter|channel-sim|receiver):' | sort

echo
echo "compose: up to all healthy $up_s s"
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
