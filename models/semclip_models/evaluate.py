"""Evaluation of the link on CIFAR-10: zero-shot classification and instance retrieval.

Embeddings are computed with the bundle's image-encoder ONNX through ONNX Runtime
(batched), so that every figure depends on the bundle, not on the tower's training code,
and cached under ``models/runs/emb/<sha256 of the encoder>/``.

Tasks (after the channel, for every method, SNR, k and noise draw):

- zero-shot classification of the *new* classes (5-way, test images of new classes) and
  of all classes (10-way), with the manifest's default template (``"a photo of a {}."``)
  or, for SemCLIP with TAPL, the transmission-aware prompts;
- instance retrieval: the received embedding of an augmented view of a test image is
  matched (cosine) against the clean embeddings of a fixed gallery of 1,000 test images
  (100 per class, seeded); top-1 accuracy of finding its own original.

Usage::

    python -m semclip_models.evaluate --bundle bundles/tiny-lit \\
        --data ../shared/data/cifar10 --out reports/tiny-lit [--grid full|reduced]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

from . import bundle as bundle_io
from . import channel, data

#: Root of cached, rebuildable run artefacts (embeddings, checkpoints).
RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"

#: Seed of the retrieval gallery and of the augmented query views of the test set.
RETRIEVAL_SEED = 1234
RETRIEVAL_PER_CLASS = 100

SNR_GRID_FULL = [-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0]
SNR_GRID_REDUCED = [-15.0, -5.0, 5.0, 15.0]


# --------------------------------------------------------------------------------------
# Embeddings through the bundle's image-encoder ONNX


def ort_session(path: Path) -> ort.InferenceSession:
    """A single-threaded CPU session (the pipeline shares a small machine)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def image_encoder_path(bundle_dir: Path) -> Path:
    manifest = bundle_io.read_manifest(bundle_dir)
    path = Path(bundle_dir) / manifest["image"]["onnx"]
    if not path.is_file():
        raise FileNotFoundError(f"image encoder {path} missing from the bundle")
    return path


def embed_pixels(session: ort.InferenceSession, pixels: torch.Tensor, batch: int = 500):
    """Normalised pixels [N,3,32,32] -> embeddings [N,D] float32 (numpy)."""
    name = session.get_inputs()[0].name
    out = []
    for i in range(0, len(pixels), batch):
        x = pixels[i : i + batch].numpy().astype(np.float32)
        out.append(session.run(None, {name: x})[0])
    return np.concatenate(out).astype(np.float32)


def _embed_uint8(session, images: np.ndarray, gen: torch.Generator | None, batch=500):
    """uint8 NHWC images -> embeddings of clean (gen None) or augmented views."""
    out = []
    for i in range(0, len(images), batch):
        x = data.to_float(images[i : i + batch])
        if gen is not None:
            x = data.augment(x, gen)
        out.append(embed_pixels(session, data.normalise(x), batch))
    return np.concatenate(out)


def _cache_dir(bundle_dir: Path) -> Path:
    sha = bundle_io.sha256_file(image_encoder_path(bundle_dir))[:16]
    path = RUNS_DIR / "emb" / sha
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_embeddings(
    bundle_dir: Path, data_root: Path, views: int = 4, seed: int = 0, log=print
) -> dict[str, np.ndarray]:
    """Embeddings of the base-class images of train/: clean and ``views`` augmented views.

    Returns ``z_clean`` [N,D], ``z_aug`` [N,views,D], ``labels`` [N] and ``is_val`` [N]
    (the validation part of train/, from ``data.train_val_indices``). Cached.
    """
    path = _cache_dir(bundle_dir) / f"train_base_v{views}_s{seed}.npz"
    if path.is_file():
        with np.load(path) as f:
            return dict(f)
    images, labels = data.load_cifar(Path(data_root), "train")
    _, val_idx = data.train_val_indices(len(images))
    is_val = np.zeros(len(images), dtype=bool)
    is_val[val_idx] = True
    base, _ = data.base_new_split()
    keep = np.isin(labels, [data.CLASSES.index(c) for c in base])
    images, labels, is_val = images[keep], labels[keep], is_val[keep]
    session = ort_session(image_encoder_path(bundle_dir))
    t0 = time.time()
    z_clean = _embed_uint8(session, images, None)
    gen = torch.Generator().manual_seed(seed)
    z_aug = np.stack([_embed_uint8(session, images, gen) for _ in range(views)], axis=1)
    log(
        f"embedded {len(images)} base-class train images x {1 + views} views "
        f"in {time.time() - t0:.0f} s"
    )
    out = {"z_clean": z_clean, "z_aug": z_aug, "labels": labels, "is_val": is_val}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def test_embeddings(
    bundle_dir: Path, data_root: Path, log=print
) -> dict[str, np.ndarray]:
    """Embeddings of test/: ``z`` [10000,D] clean, ``labels``, the retrieval ``gallery``
    indices [1000] and ``z_query`` [1000,D], one augmented view of each gallery image.
    """
    path = _cache_dir(bundle_dir) / "test.npz"
    if path.is_file():
        with np.load(path) as f:
            return dict(f)
    images, labels = data.load_cifar(Path(data_root), "test")
    session = ort_session(image_encoder_path(bundle_dir))
    t0 = time.time()
    z = _embed_uint8(session, images, None)
    rng = np.random.default_rng(RETRIEVAL_SEED)
    gallery = np.sort(
        np.concatenate(
            [
                rng.choice(
                    np.flatnonzero(labels == c), RETRIEVAL_PER_CLASS, replace=False
                )
                for c in range(len(data.CLASSES))
            ]
        )
    )
    gen = torch.Generator().manual_seed(RETRIEVAL_SEED)
    z_query = _embed_uint8(session, images[gallery], gen)
    log(
        f"embedded {len(images)} test images (+{len(gallery)} views) "
        f"in {time.time() - t0:.0f} s"
    )
    out = {"z": z, "labels": labels, "gallery": gallery, "z_query": z_query}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out
