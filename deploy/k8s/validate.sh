#!/usr/bin/env bash
# Validates the Kubernetes manifests offline: against the Kubernetes JSON schemas with the
# PyPI package kubernetes-validate (strict: unknown fields are errors), for the oldest
# supported and the newest schema version, then with cross-object checks
# (check_consistency.py). A deliberately broken manifest must fail too, so that a
# validator that accepts everything is noticed.
#
# Usage: deploy/k8s/validate.sh
# Installs kubernetes-validate (pinned) into a venv under ${XDG_CACHE_HOME:-~/.cache}/semclip
# on first use; needs PyPI then, nothing afterwards.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/semclip"
venv="$cache/k8s-validate-venv"
pin="kubernetes-validate==1.37.0"
# gRPC probes are GA from 1.27; 1.37 is the newest schema set the pinned package carries.
versions=(1.27.0 1.37.0)

if ! "$venv/bin/pip" show kubernetes-validate 2>/dev/null | grep -qx "Version: ${pin#*==}"
then
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "$pin"
fi

manifests=()
for f in "$here"/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] && continue
    manifests+=("$f")
done

for v in "${versions[@]}"; do
    echo "== schemas of Kubernetes $v"
    "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$v" "${manifests[@]}"
done

echo "== cross-object checks"
"$venv/bin/python" "$here/check_consistency.py" "${manifests[@]}"

echo "== kustomization lists every manifest"
for f in "${manifests[@]}"; do
    grep -qx "  - $(basename "$f")" "$here/kustomization.yaml" ||
        { echo "FAIL kustomization.yaml does not list $(basename "$f")"; exit 1; }
done
echo "kustomization: ${#manifests[@]} manifests listed"

echo "== a broken manifest is rejected"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# A misspelt probe field ("prot") must fail strict schema validation.
sed 's/^\(  *\)port: 50053$/\1prot: 50053/' "$here/receiver.yaml" >"$tmp/broken.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet "$tmp/broken.yaml" >"$tmp/out" 2>&1; then
    echo "FAIL the schema validator accepted a misspelt probe field"
    exit 1
fi
# A probe on a port the container does not declare must fail the cross-object checks.
sed 's/^\(  *\)port: 50053$/\1port: 50099/' "$here/receiver.yaml" >"$tmp/wrong-port.yaml"
if "$venv/bin/python" "$here/check_consistency.py" "$here/configmap.yaml" \
    "$tmp/wrong-port.yaml" >"$tmp/out" 2>&1; then
    echo "FAIL the consistency check accepted a probe on an undeclared port"
    exit 1
fi
echo "broken manifests rejected"
echo "k8s manifests: all checks passed"
