#!/usr/bin/env bash
# The whole test suite on a fresh machine: Python venv and bundle set-up, the fixture bundle
# and the random-init clip-vit-b32 bundle for the Rust tests, redis-server for the Redis
# store tests, Rust lints and tests, the pipeline's tests, a reduced evaluation run end to
# end, the Kubernetes manifests' validation, the health probe's interoperability test and
# the docker-compose deployment test (which installs and starts its own Docker engine when
# none runs, and removes it all afterwards).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$SEMCLIP_ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "python environment and bundle"
scripts/setup-python.sh
py="$SEMCLIP_ROOT/.venv/bin/python"

step "fixture bundle for the Rust tests"
"$py" -m semclip_models.fixture --out "$SEMCLIP_TEST_FIXTURE"

step "clip-vit-b32 at random initialisation, with open_clip's reference outputs"
"$py" -m semclip_models.clip_export --random-init --out target/clip-vit-b32-random --reuse

step "redis-server for the receiver's Redis store tests"
scripts/install-redis.sh

step "rust: format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "rust: tests"
cargo test --locked --workspace

step "rust: the same parity tests against the served bundle, bundles/tiny-lit"
"$py" -m semclip_models.fixture --bundle bundles/tiny-lit --samples samples \
  --out target/semclip-parity-tiny-lit
SEMCLIP_TEST_FIXTURE="$SEMCLIP_ROOT/target/semclip-parity-tiny-lit" \
  cargo test --locked -p semclip-core --test fixture

step "python: tests"
"$py" -m pytest -q models/tests

step "pipeline: reduced evaluation grid, end to end"
"$py" -m semclip_models.evaluate --bundle bundles/tiny-lit --data "$SEMCLIP_DATA" \
  --out target/report-reduced --grid reduced

step "deployment: Kubernetes manifests against the Kubernetes schemas"
deploy/k8s/validate.sh

step "deployment: gRPC health probe"
(cd deploy/health-probe && cargo test --locked)
deploy/health-probe/tests/interop.sh

step "deployment: docker-compose stack, end to end"
deploy/test-compose.sh
