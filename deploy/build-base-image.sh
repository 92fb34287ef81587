#!/usr/bin/env bash
# Builds the local base image of the SemCLIP daemons without any container registry.
#
# The image is a root filesystem made of exactly the shared libraries that the given ELF
# files need (their `ldd` closure: glibc, libgcc_s, libstdc++ for ONNX Runtime, ...),
# copied from this machine, plus /etc/passwd and /etc/group with an unprivileged user
# `semclip` (uid and gid 10001), /etc/nsswitch.conf and a world-writable /tmp. It has no
# shell and no package manager. `docker import` turns it into an image.
#
# The daemons are built on this machine and copied into the images, so the libraries they
# were linked against here are the ones they get there: the closure is right by
# construction, and the image is a few MiB. A user who can pull from a registry can skip
# this script and build the daemon images on an ordinary image instead:
#     deploy/build-images.sh --base-image debian:bookworm-slim
# (any glibc distribution at least as new as the build machine's, with libstdc++).
#
# Usage: deploy/build-base-image.sh [--tag TAG] [--provided DIR]... [--from-runtime SONAME]...
#                                   [ELF...]
#   --tag TAG   image name (default semclip-base:local)
#   --provided DIR
#               libraries in DIR are shipped by the image built on this base (the CUDA
#               image's staged libraries): ldd finds them there, and they are not copied
#   --from-runtime SONAME
#               a library the container runtime mounts at run time (libcuda.so.1, by the
#               NVIDIA container toolkit): may be missing here, and is not copied
#   ELF...      files whose libraries to include; default: the release binaries of the
#               three daemons and the health probe, and libonnxruntime from the venv
#               (those that exist; at least one must).
# Environment: DOCKER (client command, default docker), DOCKER_HOST as usual.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
docker_cmd=(${DOCKER:-docker})
tag="semclip-base:local"
provided=()
from_runtime=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag)
            tag="${2:?--tag needs a value}"
            shift 2
            ;;
        --provided)
            provided+=("$(cd "${2:?--provided needs a directory}" && pwd)")
            shift 2
            ;;
        --from-runtime)
            from_runtime+=("${2:?--from-runtime needs a soname}")
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        --*)
            echo "build-base-image.sh: unknown option $1" >&2
            exit 2
            ;;
        *) break ;;
    esac
done

elfs=("$@")
if [[ ${#elfs[@]} -eq 0 ]]; then
    for f in \
        "$root/target/release/semclip-transmitter" \
        "$root/target/release/semclip-channel-sim" \
        "$root/target/release/semclip-receiver" \
        "$root/target/health-probe/release/semclip-health-probe" \
        "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
        if [[ -e "$f" ]]; then elfs+=("$f"); fi
    done
fi
if [[ ${#elfs[@]} -eq 0 ]]; then
    echo "build-base-image.sh: no ELF files given and none of the defaults exist;" \
        "build the daemons first (cargo build --release)" >&2
    exit 1
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
rootfs="$stage/rootfs"
mkdir -p "$rootfs"/{etc,tmp,usr/local/bin,opt/semclip}
chmod 1777 "$rootfs/tmp"

# Every library an ELF file loads, by the path the dynamic loader resolves it to here.
# `ldd` prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
libs="$stage/libs"
: >"$libs"
search_path="$(IFS=:; echo "${provided[*]}")"
for elf in "${elfs[@]}"; do
    [[ -f "$elf" ]] || { echo "build-base-image.sh: no such file: $elf" >&2; exit 1; }
    if ! out="$(LD_LIBRARY_PATH="$search_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ldd "$elf" 2>&1)"; then
        echo "build-base-image.sh: ldd failed on $elf: $out" >&2
        exit 1
    fi
    missing="$(grep "not found" <<<"$out" || true)"
    for soname in "${from_runtime[@]}"; do
        missing="$(grep -v "^[[:space:]]*$soname => not found" <<<"$missing" || true)"
    done
    if [[ -n "$missing" ]]; then
        echo "build-base-image.sh: $elf needs libraries that are missing here:" >&2
        echo "$missing" >&2
        exit 1
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out" >>"$libs"
done
for dir in "${provided[@]}"; do
    grep -v "^$dir/" "$libs" >"$libs.kept" || true
    mv "$libs.kept" "$libs"
done

# ONNX Runtime is opened with dlopen at run time, so it is never in a binary's ldd output;
# its own dependencies come in through its entry among the ELF files. Add the C++ runtime
# and the loader in any case so that the image serves an ONNX Runtime given later too.
# The dynamic loader of this machine (which every binary built here names as its
# interpreter), in case only shared libraries were given.
ldd "$(type -P true)" | awk '$1 ~ /^\// { print $1 }' >>"$libs"
cache="$(ldconfig -p)"
for extra in libstdc++.so.6 libgcc_s.so.1 libm.so.6 libc.so.6; do
    path="$(awk -v n="$extra" '$1 == n && /x86-64|x86_64|64bit/ { print $NF; exit }' <<<"$cache")"
    if [[ -n "$path" ]]; then echo "$path" >>"$libs"; fi
done

sort -u "$libs" | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    # Copy the file a soname link points to, under the soname.
    cp -L "$lib" "$rootfs$lib"
done

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
semclip:x:10001:10001:SemCLIP daemons:/tmp:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
semclip:x:10001:
nogroup:x:65534:
EOF
# Container names resolve through Docker's embedded DNS; /etc/hosts and /etc/resolv.conf
# are mounted by the runtime. glibc 2.34+ has the files and dns modules built in.
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

echo "base image $tag: $(sort -u "$libs" | wc -l) libraries from ${#elfs[@]} ELF files"
sort -u "$libs" | sed 's/^/  /'

tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -c . |
    "${docker_cmd[@]}" import \
        --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
        --change 'USER 10001:10001' \
        --change 'WORKDIR /tmp' \
        --message "SemCLIP base: shared libraries of the daemons, no shell" \
        - "$tag" >/dev/null
"${docker_cmd[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$tag"
