#!/usr/bin/env bash
# The main job on a fresh machine: set up, build, and run the end-to-end demo on the offline
# default bundle (three services in one process, sample images at 20, 0 and -10 dB).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$SEMCLIP_ROOT"

scripts/setup-python.sh
cargo build --release --locked -p semclip-cli
exec target/release/semclip demo "$@"
