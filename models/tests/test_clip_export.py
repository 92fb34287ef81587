"""The clip-vit-b32 export at random initialisation: ONNX parity with open_clip, the
tokenizer's equivalence with open_clip's, and the bundle's manifest.

The export runs once per session (about a minute on two cores) into a temporary
directory; afterwards it is moved to `<repo>/target/clip-vit-b32-random` (with its
cache key) unless that directory already holds an export of the same code and lock
file, so that the Rust test `core/tests/clip_vit_b32.rs` can serve it.
Select these tests alone with `-m clip`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from semclip_models import bundle as B
from semclip_models import clip_export as C
from semclip_models import export as E
from semclip_models.text_tower import TEMPLATES

pytestmark = pytest.mark.clip

CACHE = Path(__file__).resolve().parents[2] / "target" / "clip-vit-b32-random"


@pytest.fixture(scope="module")
def clip_bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(bundle dir, measured diffs, the open_clip model it was exported from)."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("clip") / "bundle"
    diffs = C.export(
        out, seed=0, ks=[8], command="pytest models/tests/test_clip_export.py"
    )
    model, _ = C.build_model(seed=0)
    yield out, diffs, model

    key = C.cache_key()
    if not C.is_up_to_date(CACHE, key):
        if CACHE.exists():
            shutil.rmtree(CACHE)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(CACHE))
        (CACHE / C.KEY_FILE).write_text(key + "\n")


def test_clip_onnx_matches_open_clip(clip_bundle: Any) -> None:
    out, diffs, _ = clip_bundle
    for name in [
        "image_random_pixels",
        "image_sample",
        "text_prompts_batch",
        "text_prompts_single",
    ]:
        assert diffs[name] <= C.TOLERANCE, (name, diffs[name])
    assert diffs["preprocess_vs_open_clip_transform"] <= 1e-5
    m = B.read_manifest(out)
    assert (
        m["provenance"]["figures"]["parity_max_abs_diff"]["text_prompts_batch"] <= 1e-4
    )


def test_clip_text_at_full_length_matches_open_clip(clip_bundle: Any) -> None:
    """A 77-token prompt (the longest CLIP accepts), next to a short one in a batch."""
    import open_clip

    out, _, model = clip_bundle
    rt = C.BundleRuntime(out)
    prompts = [" ".join(["a"] * 75), "a photo of a frog."]
    ids = [rt.ids(p) for p in prompts]
    assert len(ids[0]) == C.MAX_LEN
    got = rt.encode_ids(ids)
    with torch.no_grad():
        want = model.encode_text(open_clip.get_tokenizer(C.MODEL)(prompts), True)
    assert np.abs(got - want.numpy()).max() <= C.TOLERANCE


def test_clip_parity_check_detects_another_model(clip_bundle: Any) -> None:
    out, _, _ = clip_bundle
    other, _ = C.build_model(seed=1)
    with pytest.raises(C.ParityError):
        C.verify_bundle(other, out)


def test_clip_tokenizer_matches_open_clip(clip_bundle: Any) -> None:
    out, _, _ = clip_bundle
    text = (out / E.TOKENIZER).read_text()
    prompts = C.TOKENIZER_PROMPTS + [
        t.format(label)
        for t in TEMPLATES
        for label in ["airplane", "automobile", "pickup truck", "Sea-Turtle"]
    ]
    assert C.check_tokenizer(text, prompts) == len(prompts)

    data = json.loads(text)
    assert data["padding"] is None and data["truncation"] is None
    assert data["post_processor"]["cls"] == [C.SOT, 49406]
    assert data["post_processor"]["sep"] == [C.EOT, 49407]

    # Without lower-casing the tokenizer no longer matches, and the check says so.
    data["normalizer"]["normalizers"] = [
        n for n in data["normalizer"]["normalizers"] if n["type"] != "Lowercase"
    ]
    with pytest.raises(C.ParityError):
        C.check_tokenizer(json.dumps(data), ["A Photo of a Cat."])


def test_clip_tapl_placeholder_is_one_token(clip_bundle: Any) -> None:
    out, _, _ = clip_bundle
    text = (out / E.TOKENIZER).read_text()
    ids = C.check_placeholder(text, "X", 4)
    assert ids[0] == 49406 and ids[-1] == 49407 and len(set(ids[1:5])) == 1
    with pytest.raises(C.ParityError):
        C.check_placeholder(text, "xylophonist", 4)


def test_clip_manifest(clip_bundle: Any) -> None:
    out, _, _ = clip_bundle
    m = B.read_manifest(out)
    assert m["id"] == "clip-vit-b32" and m["random_init"] is True
    assert m["embed_dim"] == 512
    assert m["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's init
    assert m["image"]["preprocess"]["resize"] == 224
    assert m["image"]["preprocess"]["interpolation"] == "bicubic"
    t = m["text"]
    assert (t["vocab_size"], t["width"], t["max_len"], t["pooling"]) == (
        49408,
        512,
        77,
        "eot",
    )
    assert [e["k"] for e in m["jscc"]] == [8] and m["default_k"] == 8
    assert m["tapl"]["placeholder"] == "X" and m["tapl"]["context_start"] == 1
    assert "random initialisation" in m["provenance"]["image_text_towers"]["weights"]
    for name in B.referenced_files(m):
        assert m["files"][name] == B.sha256_file(out / name), name
    table = B.read_f32(out / E.TOKEN_TABLE, (49408, 512))
    assert np.isfinite(table).all()
    ref = json.loads((out / C.REFERENCE).read_text())
    assert len(ref["image"]["pixels"]) == 3 * 224 * 224
    assert (out / ref["image"]["file"]).is_file()
