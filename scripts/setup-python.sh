#!/usr/bin/env bash
# Build (or reuse) the project's Python environment and the regenerable bundle parts.
#
# - Creates a python3.11 venv at $SEMCLIP_CACHE/venv-<12 hex of sha256(requirements.lock)>
#   (SEMCLIP_CACHE defaults to ~/.cache/semclip) when it does not exist yet, installs
#   models/requirements.lock into it and the models package in editable mode.
# - Points <repo>/.venv at it (a symlink).
# - Regenerates bundles/tiny-lit/text_encoder.onnx and token_embedding.f32 when they are
#   missing, do not match the checksums in the bundle's manifest, or were built from a
#   different lock file or export code.
#
# Usage: scripts/setup-python.sh        (PYTHON=/path/to/python3.11 to choose the interpreter)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SEMCLIP_CACHE:-$HOME/.cache/semclip}"
lock="$repo/models/requirements.lock"
python="${PYTHON:-python3.11}"

say() { printf 'setup-python: %s\n' "$*"; }
die() { printf 'setup-python: error: %s\n' "$*" >&2; exit 1; }

[[ -f "$lock" ]] || die "missing $lock"
command -v "$python" >/dev/null || die "$python not found (install CPython 3.11 or set PYTHON)"

lock_hash="$(sha256sum "$lock" | cut -c1-12)"
venv="$cache/venv-$lock_hash"
mkdir -p "$cache"

# 1. The venv, built once per lock file. A venv is only used once its marker exists,
#    so an interrupted install is rebuilt from scratch on the next run.
if [[ ! -f "$venv/.complete" ]]; then
    say "creating $venv from $(basename "$lock") ($lock_hash)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$lock"
    touch "$venv/.complete"
else
    say "reusing $venv"
fi

# 2. The models package (editable, no dependency resolution: the lock has them all).
if ! "$venv/bin/python" -c "import semclip_models, sys; \
sys.exit(0 if semclip_models.__file__.startswith('$repo/models/') else 1)" 2>/dev/null; then
    say "installing the models package (editable)"
    "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$repo/models"
fi

# 3. <repo>/.venv -> the cached venv.
if [[ "$(readlink "$repo/.venv" 2>/dev/null || true)" != "$venv" ]]; then
    [[ -e "$repo/.venv" && ! -L "$repo/.venv" ]] && die "$repo/.venv exists and is not a symlink"
    ln -sfn "$venv" "$repo/.venv"
    say "linked $repo/.venv -> $venv"
fi

# 4. The MiniLM text encoder and token table of bundles/tiny-lit.
bundle="$repo/bundles/tiny-lit"
stamp_inputs=(
    "$lock"
    "$repo/models/semclip_models/text_tower.py"
    "$repo/models/semclip_models/export.py"
    "$repo/models/semclip_models/bundle.py"
)
stamp="$(cat "${stamp_inputs[@]}" | sha256sum | cut -c1-16)"
stamp_file="$venv/.text-export-$stamp"
if "$venv/bin/python" -m semclip_models.export check-text --bundle "$bundle" \
    && [[ -f "$stamp_file" ]]; then
    say "bundles/tiny-lit text encoder is up to date"
else
    say "exporting the MiniLM text encoder to bundles/tiny-lit"
    "$venv/bin/python" -m semclip_models.export text --out "$bundle"
    rm -f "$venv"/.text-export-*
    touch "$stamp_file"
fi

say "done: $repo/.venv ($("$venv/bin/python" --version))"
