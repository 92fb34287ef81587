"""Data loading, the class and validation splits, augmentation and preprocessing."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semclip_models import data as D


def test_missing_folder_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(D.DataError) as err:
        D.load_cifar(missing, "train")
    msg = str(err.value)
    assert str(missing) in msg and "train.tar.gz" in msg


def test_bad_split_name(tiny_cifar: Path) -> None:
    with pytest.raises(ValueError):
        D.load_cifar(tiny_cifar, "validation")


def test_load_tarball_and_folder_agree(tiny_cifar: Path, tmp_path: Path) -> None:
    x, y = D.load_cifar(tiny_cifar, "train")
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == [c for c in range(10) for _ in range(3)]

    # The cached copy and an extracted folder give the same arrays.
    x2, y2 = D.load_cifar(tiny_cifar, "train")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    with tarfile.open(tiny_cifar / "train.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    x3, y3 = D.load_cifar(tmp_path, "train")
    assert np.array_equal(x, x3) and np.array_equal(y, y3)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    with pytest.raises(D.DataError, match="no test"):
        D.load_cifar(tmp_path, "test")


def test_train_val_split_is_deterministic_and_disjoint() -> None:
    a_tr, a_va = D.train_val_indices(1000, 0.1, seed=0)
    b_tr, b_va = D.train_val_indices(1000, 0.1, seed=0)
    assert np.array_equal(a_tr, b_tr) and np.array_equal(a_va, b_va)
    assert len(a_va) == 100 and len(a_tr) == 900
    assert set(a_tr).isdisjoint(a_va)
    assert sorted(np.concatenate([a_tr, a_va]).tolist()) == list(range(1000))
    _, c_va = D.train_val_indices(1000, 0.1, seed=1)
    assert not np.array_equal(a_va, c_va)


def test_base_new_split() -> None:
    base, new = D.base_new_split()
    assert base == D.base_new_split(D.SPLIT_SEED)[0]
    assert len(base) == len(new) == 5
    assert sorted(base + new) == sorted(D.CLASSES)
    assert D.base_new_split(1) != (base, new)


def test_augment_is_seeded_and_in_range() -> None:
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = D.augment(x, torch.Generator().manual_seed(3))
    b = D.augment(x, torch.Generator().manual_seed(3))
    c = D.augment(x, torch.Generator().manual_seed(4))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_preprocess_resizes_shortest_edge_and_centre_crops(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    im.save(tmp_path / "wide.png")
    got = D.preprocess_image(tmp_path / "wide.png", resize=32, crop=32)

    # Shortest edge 40 -> 32, so 50 -> 40 wide; centre 32 columns start at 4.
    ref = np.asarray(im.resize((40, 32), Image.BILINEAR), dtype=np.float32)[:, 4:36] / 255
    ref = (ref - np.array(D.MEAN, np.float32)) / np.array(D.STD, np.float32)
    assert got.shape == (3, 32, 32)
    np.testing.assert_allclose(got, ref.transpose(2, 0, 1), atol=1e-6)


def test_normalise_matches_constants() -> None:
    x = torch.ones(1, 3, 2, 2) * 0.5
    y = D.normalise(x)
    want = (0.5 - torch.tensor(D.MEAN)) / torch.tensor(D.STD)
    assert torch.allclose(y[0, :, 0, 0], want)
