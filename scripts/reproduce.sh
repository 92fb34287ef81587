#!/usr/bin/env bash
# Rebuild the offline default bundle from the data and write the full evaluation report:
#
#   1. the tiny-lit image tower (wall-clock budget TOWER_MINUTES, default 40) and its report;
#   2. its export into bundles/tiny-lit (image encoder, MiniLM text encoder, manifest);
#   3. stage 1: the SNR-adaptive JSCC codes for k = 4, 8, 16, 32 (seed 0), two more seeds
#      of the default k, three development codes per k (each on three base classes, two
#      held out) that choose each code's blend with the linear code, and the per-SNR
#      ablation without AF, exported for every k (two training processes);
#   4. stage 2: TAPL (meta-net and context vectors) on the default k, exported, and the
#      prior correction of its scores for every k (chosen on the development splits);
#   5. the image-transmission baseline: DeepJSCC of the image for k = 32, 128, 512;
#   6. the full evaluation grid into reports/tiny-lit (results.json, README.md, PNG plots).
#
# Checkpoints go to models/runs/ (ignored by git). Every step prints what it measures. On a
# 2-core CPU the whole run from a fresh clone took 101 minutes: 40 for the tower, 49 for
# stage 1, 7 for TAPL and the image baseline, 5 for the report (the prior correction,
# added since, takes under a minute). The tower trains for a
# wall-clock budget, so a rerun gives a close but not identical bundle.
#
# Usage: scripts/reproduce.sh [--skip-tower]    (--skip-tower: keep bundles/tiny-lit's tower)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$SEMCLIP_ROOT"

skip_tower=0
for arg in "$@"; do
    case "$arg" in
        --skip-tower) skip_tower=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
        *) echo "reproduce: unknown argument '$arg' (accepted: --skip-tower)" >&2; exit 2 ;;
    esac
done

data="$SEMCLIP_DATA"
[[ -f "$data/train.tar.gz" && -f "$data/test.tar.gz" ]] || {
    echo "reproduce: CIFAR-10 not found at $data (expected train.tar.gz and test.tar.gz;" \
        "set SEMCLIP_DATA)" >&2
    exit 1
}
data="$(cd "$data" && pwd)"
bundle="$SEMCLIP_ROOT/bundles/tiny-lit"
runs="$SEMCLIP_ROOT/models/runs"

step() { printf '\n==> %s\n' "$*"; }

step "python environment"
scripts/setup-python.sh
py="$SEMCLIP_ROOT/.venv/bin/python"

if [[ $skip_tower == 0 ]]; then
    step "tiny-lit image tower (${TOWER_MINUTES:-40} min)"
    "$py" -m semclip_models.tiny_lit train --data "$data" --out "$runs/tiny-lit" --seed 0 \
        --minutes "${TOWER_MINUTES:-40}"
    "$py" -m semclip_models.tiny_lit report --data "$data" \
        --checkpoint "$runs/tiny-lit/tower.pt"
    "$py" -m semclip_models.export tiny-lit --checkpoint "$runs/tiny-lit/tower.pt" \
        --out "$bundle" --data "$data"
fi

step "stage 1: JSCC"
"$py" -m semclip_models.train_jscc --bundle "$bundle" --data "$data" --ks 4,8,16,32 \
    --default-k 16 --extra-seeds 1,2 --no-af-snrs=-15,-10,-5,0,5,10,15,20 --export \
    --skip-existing

step "stage 2: TAPL"
"$py" -m semclip_models.train_tapl --bundle "$bundle" --data "$data" --export
"$py" -m semclip_models.prior --bundle "$bundle" --data "$data" --export

step "image transmission baseline: DeepJSCC of the image"
"$py" -m semclip_models.image_jscc train --data "$data" --ks 32,128,512 --steps 1500 \
    --skip-existing

step "evaluation, full grid"
"$py" -m semclip_models.evaluate --bundle "$bundle" --data "$data" \
    --out reports/tiny-lit --grid full

step "done: bundles/tiny-lit, reports/tiny-lit/README.md"
