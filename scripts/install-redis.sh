#!/usr/bin/env bash
# Installs redis-server for the receiver's Redis store tests, once: Debian's package when
# `redis-server` is not on PATH, nothing otherwise. The tests start a private redis-server
# per test on a free port, so the system service the package enables is stopped, disabled
# and kept from starting again. Needs root (apt-get) only when it has something to install.
#
# Usage: scripts/install-redis.sh
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server present: $(redis-server --version)"
else
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's post-install step from starting the service where policy-rc.d is
    # honoured (plain Debian containers without systemd).
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    trap 'if [[ $added_policy == 1 ]]; then rm -f "$policy"; fi' EXIT
    apt-get update
    apt-get install -y --no-install-recommends redis-server
    echo "installed: $(redis-server --version)"
fi

# No system redis left running: the tests start their own on ephemeral ports.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi
if command -v service >/dev/null 2>&1 && [[ -x /etc/init.d/redis-server ]]; then
    service redis-server stop >/dev/null 2>&1 || true
fi
pidfile=/run/redis/redis-server.pid
if [[ -s "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
    fi
fi
echo "no system redis-server service running"
