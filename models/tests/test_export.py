"""ONNX export parity, the bundle manifest, and the Rust-test fixture's reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from semclip_models import bundle as B
from semclip_models import data as D
from semclip_models import export as E
from semclip_models.tiny_lit import build_tower


def test_image_export_matches_torch_and_detects_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tower = build_tower().eval()
    diff = E.export_image_tower(tower, tmp_path)
    assert diff <= E.TOLERANCE

    # A different model against the same file must fail verification.
    torch.manual_seed(1)
    other = build_tower().eval()
    pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with pytest.raises(E.ExportError):
        E.verify(other, tmp_path / E.IMAGE_ONNX, {"pixels": pixels})


def test_manifest_files_and_text_check(fixture_dir: Path, tmp_path: Path) -> None:
    bdir = tmp_path / "bundle"
    shutil.copytree(fixture_dir / "bundle", bdir)
    m = B.read_manifest(bdir)
    assert m["random_init"] is True and m["embed_dim"] == 384
    for name in B.referenced_files(m):
        assert m["files"][name] == B.sha256_file(bdir / name), name
    assert E.check_text(bdir)

    # A changed token table no longer matches its manifest checksum.
    with open(bdir / E.TOKEN_TABLE, "r+b") as fh:
        fh.write(b"\0\0\0\0")
    assert not E.check_text(bdir)

    with pytest.raises(B.BundleError):
        B.set_jscc(bdir, m["jscc"], default_k=16)
    B.add_provenance(bdir, "commands", "echo test")
    assert "echo test" in B.read_manifest(bdir)["provenance"]["commands"]


def test_reference_agrees_with_torch(fixture_dir: Path) -> None:
    from semclip_models.text_tower import MiniLMText

    ref = json.loads((fixture_dir / "reference" / "reference.json").read_text())
    assert ref["bundle"] == "../bundle"
    assert {"images", "text", "tapl", "jscc", "classify"} <= ref.keys()
    img_names = {i["file"] for i in ref["images"]}
    assert {"img0.png", "img1.jpg", "img2.png"} == img_names

    # Preprocessing: the stored pixels are what data.preprocess_image gives.
    for item in ref["images"]:
        px = D.preprocess_image(fixture_dir / "reference" / item["file"])
        np.testing.assert_allclose(px.ravel(), item["pixels"], atol=1e-6)
        assert abs(np.linalg.norm(item["z_from_file"]) - 1) < 1e-5

    # Text features from ONNX Runtime agree with the torch text tower.
    text = MiniLMText()
    case = ref["text"][0]
    prompts = [case["template"].format(label) for label in case["labels"]]
    want = text.encode_texts(prompts).numpy()
    np.testing.assert_allclose(np.array(case["features"]), want, atol=1e-4)

    # JSCC power normalisation: (1/k) sum |x|^2 = 1.
    for j in ref["jscc"]:
        sym = np.array(j["symbols_normalised"], dtype=np.float64)
        assert len(sym) == 2 * j["k"]
        assert abs(np.sum(sym**2) / j["k"] - 1) < 1e-5

    for c in ref["classify"]:
        p = np.array(c["probabilities"])
        assert len(p) == len(c["labels"]) and abs(p.sum() - 1) < 1e-5
    assert ref["classify"][-1]["templates"] is None
