#!/usr/bin/env bash
# Builds the images semclip-transmitter, semclip-channel-sim and semclip-receiver from
# host-built release binaries (nothing is compiled inside Docker).
#
# Usage: deploy/build-images.sh [options]
#   --base-image IMG  image to build on (default semclip-base:local, remade by
#                     deploy/build-base-image.sh from the staged files; with a registry, e.g.
#                     debian:bookworm-slim)
#   --tag TAG         tag of the three images (default local)
#   --bin-dir DIR     where the daemon binaries are (default target/release)
#   --bundle DIR      model bundle to bake in at /opt/semclip/bundle (default
#                     bundles/tiny-lit; the compose file can mount another one over it)
#   --ort-lib FILE    libonnxruntime to bake in (default: the one in .venv's onnxruntime)
#   --cargo-build     run `cargo build --release` for the three daemons first
# Environment: DOCKER (client command, default docker), DOCKER_HOST as usual.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
docker_cmd=(${DOCKER:-docker})
base_image="semclip-base:local"
tag="local"
bin_dir="$root/target/release"
bundle="$root/bundles/tiny-lit"
ort_lib=""
cargo_build=0
daemons=(transmitter channel-sim receiver)

while [[ $# -gt 0 ]]; do
    case "$1" in
        --base-image) base_image="${2:?--base-image needs a value}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --bin-dir) bin_dir="${2:?--bin-dir needs a value}"; shift 2 ;;
        --bundle) bundle="${2:?--bundle needs a value}"; shift 2 ;;
        --ort-lib) ort_lib="${2:?--ort-lib needs a value}"; shift 2 ;;
        --cargo-build) cargo_build=1; shift ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

die() {
    echo "build-images.sh: $*" >&2
    exit 1
}

if [[ $cargo_build == 1 ]]; then
    (cd "$root" && nice -n 10 cargo build --release \
        -p semclip-transmitter -p semclip-channel-sim -p semclip-receiver)
fi

probe="$root/target/health-probe/release/semclip-health-probe"
if [[ ! -x "$probe" ]]; then
    CARGO_TARGET_DIR="$root/target/health-probe" nice -n 10 cargo build --release \
        --manifest-path "$root/deploy/health-probe/Cargo.toml"
fi

if [[ -z "$ort_lib" ]]; then
    ort_lib="$(ls "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* \
        2>/dev/null | head -1 || true)"
    [[ -n "$ort_lib" ]] || die "no libonnxruntime in .venv; run scripts/setup-python.sh" \
        "or pass --ort-lib"
fi
[[ -f "$ort_lib" ]] || die "no such file: $ort_lib"
[[ -f "$bundle/manifest.json" ]] || die "$bundle is not a model bundle (no manifest.json)"
for d in "${daemons[@]}"; do
    [[ -x "$bin_dir/semclip-$d" ]] ||
        die "missing $bin_dir/semclip-$d; build it with cargo build --release" \
            "(or pass --cargo-build)"
done

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for d in "${daemons[@]}"; do
    cp "$bin_dir/semclip-$d" "$stage/bin/"
done
cp "$probe" "$stage/bin/"
cp -L "$ort_lib" "$stage/lib/"
# Follow symbolic links so that a bundle assembled from links is copied whole.
cp -rL "$bundle" "$stage/bundle"
chmod -R a+rX "$stage"

# The local base is remade every time from the staged files (a fraction of a second), so
# that it always holds the libraries of the binaries being packaged.
if [[ "$base_image" == "semclip-base:local" ]]; then
    "$root/deploy/build-base-image.sh" --tag "$base_image" \
        "$stage"/bin/* "$stage/lib/$(basename "$ort_lib")"
fi

# The legacy builder needs no buildx plugin and no registry; every stage only copies files.
for d in "${daemons[@]}"; do
    DOCKER_BUILDKIT=0 "${docker_cmd[@]}" build --quiet \
        --file "$root/deploy/Dockerfile" \
        --build-arg "BASE_IMAGE=$base_image" \
        --build-arg "ORT_LIB=$(basename "$ort_lib")" \
        --target "$d" --tag "semclip-$d:$tag" \
        "$stage" >/dev/null 2>"$stage/build.log" || {
        cat "$stage/build.log" >&2
        die "building semclip-$d:$tag failed"
    }
done
"${docker_cmd[@]}" image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
    grep -E "^semclip-(base|transmitter|channel-sim|receiver):" || true
