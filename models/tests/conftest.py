"""Shared fixtures: a small slice of CIFAR-10 in the on-disk layout, and the fixture bundle."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semclip_models import data as D

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Decoded-data caches go to a temporary directory, never the user's cache."""
    monkeypatch.setenv("SEMCLIP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _write_tarball(root: Path, split: str, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(root / f"{split}.tar.gz", "w:gz") as tar:
        for name in D.CLASSES:
            for i in range(per_class):
                buf = io.BytesIO()
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CIFAR-10-shaped folder: train.tar.gz (3 per class) and test.tar.gz (2 per class)."""
    root = tmp_path_factory.mktemp("cifar10")
    _write_tarball(root, "train", 3, seed=1)
    _write_tarball(root, "test", 2, seed=2)
    return root


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Rust-test fixture (bundle + reference), built once per session."""
    from semclip_models import fixture

    out = tmp_path_factory.mktemp("fixture")
    os.environ.setdefault("SEMCLIP_CACHE", str(out / "cache"))
    fixture.build(out, seed=0)
    return out
