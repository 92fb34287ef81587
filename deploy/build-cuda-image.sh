#!/usr/bin/env bash
# Builds semclip-transmitter-cuda: the transmitter with ONNX Runtime's CUDA execution
# provider, on a base of exactly the libraries it needs (deploy/build-base-image.sh).
#
# The CUDA libraries come from PyPI wheels (deploy/cuda/requirements.txt; a large download,
# made once, into a venv under ${XDG_CACHE_HOME:-~/.cache}/semclip); only their
# shared libraries go into the image. Running the image needs an NVIDIA driver for CUDA 13
# on the host and the NVIDIA container toolkit (docker run --gpus all ...).
#
# Usage: deploy/build-cuda-image.sh [--tag TAG] [--bin-dir DIR] [--bundle DIR]
# Environment: DOCKER (client command, default docker), DOCKER_HOST as usual.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
docker_cmd=(${DOCKER:-docker})
tag="local"
bin_dir="$root/target/release"
bundle="$root/bundles/tiny-lit"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/semclip"
venv="$cache/cuda-venv"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --bin-dir) bin_dir="${2:?--bin-dir needs a value}"; shift 2 ;;
        --bundle) bundle="${2:?--bundle needs a value}"; shift 2 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "build-cuda-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

die() {
    echo "build-cuda-image.sh: $*" >&2
    exit 1
}

[[ -x "$bin_dir/semclip-transmitter" ]] ||
    die "missing $bin_dir/semclip-transmitter; build it with cargo build --release"
[[ -f "$bundle/manifest.json" ]] || die "$bundle is not a model bundle (no manifest.json)"
probe="$root/target/health-probe/release/semclip-health-probe"
if [[ ! -x "$probe" ]]; then
    CARGO_TARGET_DIR="$root/target/health-probe" nice -n 10 cargo build --release \
        --manifest-path "$root/deploy/health-probe/Cargo.toml"
fi

stamp="$venv/.requirements"
if ! cmp -s "$root/deploy/cuda/requirements.txt" "$stamp"; then
    mkdir -p "$cache"
    python3 -m venv "$venv"
    # --no-deps: only the pinned wheels; their Python dependencies are never used.
    "$venv/bin/pip" install --quiet --no-deps -r "$root/deploy/cuda/requirements.txt"
    cp "$root/deploy/cuda/requirements.txt" "$stamp"
fi
site="$(echo "$venv"/lib/python3*/site-packages)"
capi="$site/onnxruntime/capi"
ort_lib="$(cd "$capi" && ls libonnxruntime.so.* | head -1)"
[[ -f "$capi/libonnxruntime_providers_cuda.so" ]] ||
    die "onnxruntime-gpu has no CUDA provider in $capi"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib/cuda"
cp "$bin_dir/semclip-transmitter" "$probe" "$stage/bin/"
# Debug sections off (symbols stay), as in build-images.sh.
strip --strip-debug "$stage/bin/semclip-transmitter"
cp -L "$capi/$ort_lib" "$capi/libonnxruntime_providers_shared.so" \
    "$capi/libonnxruntime_providers_cuda.so" "$stage/lib/"
# Every shared library of the nvidia-* wheels, flattened into one directory.
find "$site/nvidia" -name 'lib*.so*' -type f -print0 | xargs -0 -I{} cp -L {} "$stage/lib/cuda/"
cp -rL "$bundle" "$stage/bundle"
chmod -R a+rX "$stage"
echo "staged $(du -sh "$stage" | cut -f1): $(ls "$stage/lib/cuda" | wc -l) CUDA libraries"

"$root/deploy/build-base-image.sh" --tag semclip-base-cuda:local \
    --provided "$stage/lib" --provided "$stage/lib/cuda" \
    --from-runtime libcuda.so.1 --from-runtime libnvidia-ml.so.1 \
    "$stage"/bin/* "$stage"/lib/*.so* "$stage"/lib/cuda/*.so*

DOCKER_BUILDKIT=0 "${docker_cmd[@]}" build --quiet \
    --file "$root/deploy/Dockerfile.cuda" \
    --build-arg BASE_IMAGE=semclip-base-cuda:local \
    --build-arg "ORT_LIB=$ort_lib" \
    --tag "semclip-transmitter-cuda:$tag" "$stage" >/dev/null 2>"$stage/build.log" || {
    cat "$stage/build.log" >&2
    die "building semclip-transmitter-cuda:$tag failed"
}
"${docker_cmd[@]}" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
    "semclip-transmitter-cuda:$tag"
