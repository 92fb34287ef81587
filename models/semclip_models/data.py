"""CIFAR-10 loading, the base/new class split, augmentation and preprocessing.

The data lives in `<root>/{train,test}.tar.gz` (JPEG files `split/<class>/NNNN.jpg`) or
in already extracted `<root>/{train,test}/` folders. Decoded arrays are cached as .npz
under `$SEMCLIP_CACHE` (default `~/.cache/semclip`), keyed by the source's size and mtime.

Preprocessing (`preprocess_image`) is the one used by the bundle's manifest: decode to
RGB, resize the shortest edge to `resize` with PIL bilinear, centre-crop to `crop`,
scale to [0, 1], subtract MEAN and divide by STD per channel.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES: list[str] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

SPLIT_SEED = 0

MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

IMAGE_SIZE = 32


class DataError(RuntimeError):
    """The data folder is missing or does not hold what is expected."""


def cache_dir() -> Path:
    """The directory for decoded data and other rebuildable files."""
    root = os.environ.get("SEMCLIP_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "semclip"
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_new_split(seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """5 base classes (JSCC and TAPL training) and 5 new classes (zero-shot tests).

    The classes are shuffled with `numpy.random.default_rng(seed)`; each half is
    returned sorted by class index.
    """
    order = np.random.default_rng(seed).permutation(len(CLASSES))
    base = sorted(order[:5].tolist())
    new = sorted(order[5:].tolist())
    return [CLASSES[i] for i in base], [CLASSES[i] for i in new]


def _source(root: Path, split: str) -> Path:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    tarball = root / f"{split}.tar.gz"
    folder = root / split
    if tarball.is_file():
        return tarball
    if folder.is_dir():
        return folder
    raise DataError(
        f"CIFAR-10 {split} data not found under {root.resolve()}: expected "
        f"{tarball.name} (JPEG files {split}/<class>/NNNN.jpg) or an extracted "
        f"{split}/<class>/ folder, with classes {', '.join(CLASSES)}"
    )


def _decode(data: bytes | Path) -> np.ndarray:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_tarball(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    items: list[tuple[str, int, np.ndarray]] = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith(".jpg"):
                continue
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-2] not in CLASSES:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            items.append((member.name, CLASSES.index(parts[-2]), _decode(fh.read())))
    return _stack(items, path, split)


def _read_folder(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    items = []
    for label, name in enumerate(CLASSES):
        for file in sorted((path / name).glob("*.jpg")):
            items.append((str(file.relative_to(path.parent)), label, _decode(file)))
    return _stack(items, path, split)


def _stack(items: list, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not items:
        raise DataError(f"no {split}/<class>/*.jpg images found in {path}")
    items.sort(key=lambda item: item[0])
    shapes = {item[2].shape for item in items}
    if shapes != {(IMAGE_SIZE, IMAGE_SIZE, 3)}:
        raise DataError(f"expected 32x32 RGB images in {path}, found shapes {shapes}")
    images = np.stack([item[2] for item in items])
    labels = np.array([item[1] for item in items], dtype=np.int64)
    return images, labels


def load_cifar(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N,32,32,3] RGB and labels int64 [N] (indices into CLASSES).

    Images are ordered by file path (class folder, then file name). Raises DataError
    naming the path when the data is missing.
    """
    src = _source(Path(root), split)
    stat = src.stat()
    key = f"cifar10-{split}-{src.name}-{stat.st_size}-{int(stat.st_mtime)}.npz"
    cached = cache_dir() / key
    if cached.is_file():
        with np.load(cached) as npz:
            return npz["images"], npz["labels"]

    if src.is_file():
        images, labels = _read_tarball(src, split)
    else:
        images, labels = _read_folder(src, split)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.replace(cached)
    return images, labels


def train_val_indices(
    n: int, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into (train, validation) index arrays."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] (or NHWC numpy) to float in [0, 1] NCHW."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x).permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - MEAN) / STD for float pixels in [0, 1], shape [N,3,H,W]."""
    mean = torch.tensor(MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The tower's training augmentation, per image, on [N,3,32,32] in [0, 1].

    Random resized crop (scale 0.5-1, aspect 3/4-4/3, bilinear back to 32x32),
    horizontal flip, colour jitter (brightness, contrast, saturation +-0.3) and
    grayscale with probability 0.1. uint8 input is converted to [0, 1] first.
    """
    x = to_float(x)
    n, _, h, w = x.shape
    g = generator

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    # Random resized crop through an affine sampling grid (one per image).
    scale = 0.5 + 0.5 * rand(n)
    log_ratio = (rand(n) * 2 - 1) * np.log(4 / 3)
    ratio = torch.exp(log_ratio)
    sw = torch.sqrt(scale * ratio).clamp(max=1.0)
    sh = torch.sqrt(scale / ratio).clamp(max=1.0)
    cx = (rand(n) * 2 - 1) * (1 - sw)
    cy = (rand(n) * 2 - 1) * (1 - sh)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    grid = torch.nn.functional.affine_grid(theta, [n, 3, h, w], align_corners=False)
    x = torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )

    # Colour jitter: brightness, contrast, saturation; then random grayscale.
    gray_w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    b = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.3
    x = x * b
    c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.3
    mean = (x * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * c + mean
    s = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.3
    gray = (x * gray_w).sum(1, keepdim=True)
    x = (x - gray) * s + gray
    to_gray = rand(n, 1, 1, 1) < 0.1
    gray = (x * gray_w).sum(1, keepdim=True).expand_as(x)
    x = torch.where(to_gray, gray, x)
    return x.clamp_(0.0, 1.0)


def preprocess_image(
    image: Image.Image | Path | str,
    resize: int = IMAGE_SIZE,
    crop: int = IMAGE_SIZE,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """The bundle's preprocessing: float32 [3, crop, crop].

    Decode to RGB, resize the shortest edge to `resize` (PIL, `interpolation`), take the
    centre `crop` x `crop` window (offsets floor((size - crop) / 2)), divide by 255,
    subtract `mean` and divide by `std` per channel.
    """
    if not isinstance(image, Image.Image):
        with Image.open(image) as im:
            image = im.convert("RGB")
    else:
        image = image.convert("RGB")
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    w, h = image.size
    if w <= h:
        nw, nh = resize, max(1, int(round(h * resize / w)))
    else:
        nw, nh = max(1, int(round(w * resize / h))), resize
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), resample=resample)
    left = (nw - crop) // 2
    top = (nh - crop) // 2
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


SAMPLE_CLASSES = CLASSES[:8]


def write_samples(root: Path, out: Path, index: int = 0) -> list[Path]:
    """Copy test image `index` (file order) of each of the first 8 classes to
    `out/<class>.jpg`, byte for byte: the demo's sample images."""
    src = _source(Path(root), "test")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SAMPLE_CLASSES:
        if src.is_file():
            with tarfile.open(src, "r:gz") as tar:
                files = sorted(
                    m.name for m in tar.getmembers() if m.name.startswith(f"test/{name}/")
                    and m.name.endswith(".jpg")
                )
                fh = tar.extractfile(files[index])
                assert fh is not None
                blob = fh.read()
        else:
            blob = sorted((src / name).glob("*.jpg"))[index].read_bytes()
        path = out / f"{name}.jpg"
        path.write_bytes(blob)
        written.append(path)
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m semclip_models.data",
        description="Copy one CIFAR-10 test image per class (8 classes) as samples.",
    )
    parser.add_argument("samples", choices=["samples"])
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        for p in write_samples(args.data, args.out):
            print(p)
    except DataError as e:
        raise SystemExit(f"error: {e}")
