# Sourced by the project's scripts: the paths every step agrees on.
# ONNX Runtime comes from the pinned onnxruntime wheel in the project's Python venv.
SEMCLIP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SEMCLIP_ROOT
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$SEMCLIP_ROOT/.venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1}"
export SEMCLIP_TEST_FIXTURE="${SEMCLIP_TEST_FIXTURE:-$SEMCLIP_ROOT/target/semclip-fixture}"
export SEMCLIP_DATA="${SEMCLIP_DATA:-$SEMCLIP_ROOT/../shared/data/cifar10}"
