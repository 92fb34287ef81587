"""Reading and writing bundle manifests (docs/bundle.md, format version 1).

`write_manifest` recomputes the "files" table: the sha256 of every file that the
manifest references and that is present in the bundle directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(RuntimeError):
    """A bundle directory or manifest is missing or malformed."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The parsed manifest.json of a bundle; raises BundleError when absent or wrong."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"no {MANIFEST} in bundle directory {Path(bundle_dir).resolve()}")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    return manifest


def referenced_files(manifest: dict[str, Any]) -> list[str]:
    """File names that the manifest points at (image, text, JSCC, TAPL parts)."""
    names: list[str] = []
    image = manifest.get("image") or {}
    text = manifest.get("text") or {}
    names += [image.get("onnx")]
    names += [text.get("onnx"), text.get("tokenizer"), text.get("token_embedding")]
    for entry in manifest.get("jscc") or []:
        names += [entry.get("encoder"), entry.get("decoder")]
    tapl = manifest.get("tapl") or {}
    names += [tapl.get("meta_net"), tapl.get("context")]
    names += [(tapl.get("prior") or {}).get("direction")]
    return [n for n in names if n]


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write manifest.json with a recomputed "files" table; returns what was written.

    Hashes of referenced files that are absent are kept from the given manifest (a
    bundle whose regenerable parts are not built yet keeps their expected checksums).
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    old = manifest.get("files") or {}
    files: dict[str, str] = {}
    for name in referenced_files(manifest):
        path = bundle_dir / name
        if path.is_file():
            files[name] = sha256_file(path)
        elif name in old:
            files[name] = old[name]
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = dict(sorted(files.items()))
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(bundle_dir / MANIFEST)
    return manifest


def set_jscc(bundle_dir: Path, entries: list[dict[str, Any]], default_k: int) -> None:
    """Replace the manifest's "jscc" list and "default_k".

    Each entry: {"k", "encoder", "decoder", "snr_train_range_db"}; the files must exist.
    """
    manifest = read_manifest(bundle_dir)
    ks = [int(e["k"]) for e in entries]
    if default_k not in ks:
        raise BundleError(f"default_k {default_k} is not among the JSCC entries {ks}")
    for e in entries:
        for key in ("encoder", "decoder"):
            if not (Path(bundle_dir) / e[key]).is_file():
                raise BundleError(f"JSCC file {e[key]} missing in {bundle_dir}")
    manifest["jscc"] = sorted(entries, key=lambda e: int(e["k"]))
    manifest["default_k"] = int(default_k)
    write_manifest(bundle_dir, manifest)


def set_tapl(bundle_dir: Path, tapl: dict[str, Any] | None) -> None:
    """Set (or with None remove) the manifest's "tapl" section."""
    manifest = read_manifest(bundle_dir)
    if tapl is None:
        manifest.pop("tapl", None)
    else:
        names = [tapl["meta_net"], tapl["context"]]
        if tapl.get("prior"):
            names.append(tapl["prior"]["direction"])
        for name in names:
            if not (Path(bundle_dir) / name).is_file():
                raise BundleError(f"TAPL file {name} missing in {bundle_dir}")
        manifest["tapl"] = tapl
    write_manifest(bundle_dir, manifest)


def add_provenance(bundle_dir: Path, key: str, value: Any) -> None:
    """Set manifest["provenance"][key] = value (commands are appended if key is
    "commands" and value is a string)."""
    manifest = read_manifest(bundle_dir)
    prov = manifest.setdefault("provenance", {})
    if key == "commands" and isinstance(value, str):
        prov.setdefault("commands", [])
        if value not in prov["commands"]:
            prov["commands"].append(value)
    else:
        prov[key] = value
    write_manifest(bundle_dir, manifest)


def jscc_provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    """How the JSCC codes were trained (``provenance.jscc``: seed, blend schedules per k,
    ...); empty when the manifest records none."""
    return (manifest.get("provenance") or {}).get("jscc") or {}


def write_f32(path: Path, array: np.ndarray) -> None:
    """Write an array as little-endian f32, row-major (token tables, context vectors)."""
    np.ascontiguousarray(array, dtype="<f4").tofile(path)


def read_f32(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read a little-endian f32 file of the given shape."""
    data = np.fromfile(path, dtype="<f4")
    if data.size != int(np.prod(shape)):
        raise BundleError(f"{path}: {data.size} floats, expected shape {shape}")
    return data.reshape(shape)
