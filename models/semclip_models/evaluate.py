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


#: Clean base-class train images on which the evaluation fits the linear baseline.
LINEAR_FIT_IMAGES = 10_000


def _fit_sample(
    bundle_dir: Path, data_root: Path, name: str, classes: list[str] | None, what: str, log
) -> np.ndarray:
    """Clean embeddings of a seeded subsample of ``LINEAR_FIT_IMAGES`` train/ images
    (validation part excluded) of ``classes`` (None: all), cached as ``fit_<name>``."""
    path = _cache_dir(bundle_dir) / f"fit_{name}_{LINEAR_FIT_IMAGES}.npy"
    if path.is_file():
        return np.load(path)
    images, labels = data.load_cifar(Path(data_root), "train")
    pool, _ = data.train_val_indices(len(images))
    if classes is not None:
        pool = pool[np.isin(labels[pool], [data.CLASSES.index(c) for c in classes])]
    pick = np.sort(
        np.random.default_rng(0).choice(pool, LINEAR_FIT_IMAGES, replace=False)
    )
    t0 = time.time()
    z = _embed_uint8(ort_session(image_encoder_path(bundle_dir)), images[pick], None)
    log(f"embedded {len(pick)} train images {what} in {time.time() - t0:.0f} s")
    np.save(path, z)
    return z


def fit_embeddings(bundle_dir: Path, data_root: Path, log=print) -> np.ndarray:
    """Clean embeddings of a seeded subsample of ``LINEAR_FIT_IMAGES`` base-class images
    of train/ (validation part excluded): the data the linear baseline is fitted on."""
    base, _ = data.base_new_split()
    return _fit_sample(bundle_dir, data_root, "base", base, "for the linear fit", log)


def all_class_fit_embeddings(
    bundle_dir: Path, data_root: Path, log=print
) -> np.ndarray:
    """The same for train/ images of all ten classes. Only the subspace diagnostic uses
    them: no code is fitted on images of the new classes."""
    return _fit_sample(bundle_dir, data_root, "all", None, "of all classes", log)


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


# --------------------------------------------------------------------------------------
# Metrics


def zero_shot_accuracy(
    z_hat: torch.Tensor, labels: np.ndarray, text: torch.Tensor, classes: list[int]
) -> float:
    """Top-1 accuracy over the images whose label is in ``classes``, choosing among them.

    ``text`` [10, D] holds the class features of all CIFAR-10 classes (index = label).
    """
    keep = np.isin(labels, classes)
    if not keep.any():
        raise ValueError("no test image belongs to the requested classes")
    logits = F.normalize(z_hat[torch.from_numpy(keep)], dim=-1) @ text[classes].T
    pred = np.asarray(classes)[logits.argmax(1).numpy()]
    return float((pred == labels[keep]).mean())


def retrieval_accuracy(z_hat_query: torch.Tensor, z_gallery: torch.Tensor) -> float:
    """Top-1: query i (a received augmented view) should find gallery item i."""
    sims = F.normalize(z_hat_query, dim=-1) @ F.normalize(z_gallery, dim=-1).T
    return float((sims.argmax(1) == torch.arange(len(z_gallery))).float().mean())


#: Numbers of real dimensions (2k) of the channel-free subspace diagnostic.
SUBSPACE_DIMS = (8, 16, 24, 32, 48, 64)


def _text_share(components: np.ndarray, text: np.ndarray) -> float:
    """Share of the spread of the class features ``text`` [C, D] (centred on their mean,
    which no argmax among them sees) that lies in the span of ``components`` [D, n]."""
    t = text - text.mean(axis=0)
    return float(((t @ components) ** 2).sum() / max((t**2).sum(), 1e-12))


def subspace_rows(
    fits: dict[str, np.ndarray],
    z_test: torch.Tensor,
    labels: np.ndarray,
    text: torch.Tensor,
    class_sets: dict[str, list[int]],
    z_query: torch.Tensor,
    z_gallery: torch.Tensor,
    dims=SUBSPACE_DIMS,
) -> list[dict]:
    """What the first ``n`` principal components of each fitting set keep, without a
    channel: the linear code at infinite SNR sends exactly that projection.

    For every fitting set (name -> embeddings [M, D]) and ``n`` in ``dims``: zero-shot
    accuracy of the projected test embeddings on each class set of ``class_sets``,
    retrieval of projected queries, the share of the image variance of the fitting set
    inside the subspace, and for each class set the share of its class features' spread
    inside it (``text_<name>``).
    """
    rows = []
    t_np = text.numpy().astype(np.float64)
    for fit_name, z_fit in fits.items():
        z_fit = z_fit.astype(np.float64)
        mean = z_fit.mean(axis=0)
        centred = z_fit - mean
        eigval, eigvec = np.linalg.eigh(centred.T @ centred / len(z_fit))
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = eigval[order], eigvec[:, order]
        mean_t = torch.from_numpy(mean.astype(np.float32))
        for n in dims:
            if n > len(mean):
                continue
            comps = eigvec[:, :n]
            comps_t = torch.from_numpy(comps.astype(np.float32))

            def project(z: torch.Tensor) -> torch.Tensor:
                return F.normalize(mean_t + (z - mean_t) @ comps_t @ comps_t.T, dim=-1)

            row = {
                "fit": fit_name,
                "dims": int(n),
                "variance": float(eigval[:n].sum() / eigval.sum()),
                "retrieval": retrieval_accuracy(project(z_query), z_gallery),
            }
            z_proj = project(z_test)
            for name, classes in class_sets.items():
                row[f"acc_{name}"] = zero_shot_accuracy(z_proj, labels, text, classes)
                row[f"text_{name}"] = _text_share(comps, t_np[classes])
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# The grid


@dataclass
class Grid:
    name: str
    snrs: list[float]
    draws: int
    test_images: int | None  # None: all 10,000
    tapl_images: int  # new-class test images for the TAPL rows, per SNR
    tapl_images_all: int  # test images for the 10-way TAPL rows, per SNR
    tapl_draws: int
    extra_seeds: bool  # include JSCC checkpoints of more seeds and the no-AF models


GRIDS = {
    "full": Grid("full", SNR_GRID_FULL, 3, None, 1000, 300, 2, True),
    "reduced": Grid("reduced", SNR_GRID_REDUCED, 1, 2000, 100, 50, 1, False),
}


def _noise_gen(draw: int, snr: float, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(100_000 * draw + 1_000 * salt + int(snr + 100))


def _stratified(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a class-balanced random subset of n images (all when n is None)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = n // len(classes)
    idx = [rng.choice(np.flatnonzero(labels == c), per, replace=False) for c in classes]
    return np.sort(np.concatenate(idx))


def _schemes(bundle_dir: Path, manifest: dict, z_fit: np.ndarray, grid: Grid, log):
    """(scheme, seed, only_snr) triples to evaluate; only_snr for per-SNR models."""
    from . import baselines, jscc
    from .train_jscc import checkpoint_path

    d = int(manifest["embed_dim"])
    out: list[tuple[baselines.Scheme, int | None, float | None]] = [
        (baselines.UpperBound(), None, None),
        (baselines.ClipFt(d), None, None),
    ]
    default_k = int(manifest.get("default_k", 8))
    for entry in manifest.get("jscc") or []:
        k = int(entry["k"])
        out.append((baselines.ClipFt(d, match_energy_k=k), None, None))
        out.append((baselines.LinearScheme(jscc.LinearCode.fit(z_fit, k)), None, None))
        onnx = baselines.OnnxJscc(
            Path(bundle_dir) / entry["encoder"], Path(bundle_dir) / entry["decoder"], k
        )
        out.append((onnx, 0, None))
        if not grid.extra_seeds or k != default_k:
            continue
        for seed in (1, 2):
            path = checkpoint_path(bundle_dir, k, seed)
            if path.is_file():
                out.append((baselines.TorchJscc(path), seed, None))
            else:
                log(f"note: no checkpoint {path}; seed {seed} left out")
        for snr in grid.snrs:
            path = checkpoint_path(bundle_dir, k, 0, snr)
            if path.is_file():
                out.append((baselines.TorchJscc(path, "semclip_no_tapl_no_af"), 0, snr))
            else:
                log(
                    f"note: no checkpoint {path}; no-AF model at {snr:+.0f} dB left out"
                )
    return out


def _tapl_rows(
    bundle_dir, manifest, test, text_model, text: torch.Tensor, grid: Grid, log
) -> list[dict]:
    """SemCLIP with TAPL (and, on the same images and noise, without it and with each of
    its two parts alone), default k."""
    from . import prior, tapl
    from .train_tapl import bundle_jscc

    info = manifest.get("tapl")
    if not info:
        log("note: the bundle has no TAPL; SemCLIP (with TAPL) rows left out")
        return []
    model = tapl.Tapl(
        text_model, int(manifest["embed_dim"]), float(manifest["logit_scale"])
    )
    context = bundle_io.read_f32(
        Path(bundle_dir) / info["context"], (int(info["n_ctx"]), text_model.width)
    )
    with torch.no_grad():
        model.context.copy_(torch.from_numpy(context))
    meta_net = ort_session(Path(bundle_dir) / info["meta_net"])
    link = bundle_jscc(bundle_dir)
    correction = prior.from_manifest(bundle_dir, manifest, link.k)
    if correction is None:
        log("note: the bundle's TAPL has no prior correction for this k")
    base, new = data.base_new_split()
    rows = []
    tasks = {
        "acc_new": [data.CLASSES.index(c) for c in new],
        "acc_all": list(range(len(data.CLASSES))),
    }
    for task, classes in tasks.items():
        pool = np.flatnonzero(np.isin(test["labels"], classes))
        n_img = grid.tapl_images if task == "acc_new" else grid.tapl_images_all
        idx = pool[_stratified(test["labels"][pool], n_img, seed=5)]
        z = torch.from_numpy(test["z"][idx])
        labels = test["labels"][idx]
        prompts = tapl.PromptTokens(text_model, [data.CLASSES[c] for c in classes])
        for snr in grid.snrs:
            for draw in range(grid.tapl_draws):
                z_hat = link(z, snr, _noise_gen(draw, snr, salt=7))
                bias = torch.from_numpy(
                    meta_net.run(None, {"z_hat": z_hat.numpy().astype(np.float32)})[0]
                )
                with torch.no_grad():
                    learned = torch.cat(
                        [
                            model.class_features(
                                z_hat[i : i + 100], prompts, bias[i : i + 100]
                            )
                            for i in range(0, len(z_hat), 100)
                        ]
                    )
                # The meta-net sees z_hat as decoded; the prior correction changes only
                # the vector that is scored against the class features.
                z_plain = F.normalize(z_hat, dim=-1)
                z_corr = z_plain if correction is None else correction(z_plain, snr)
                # Without TAPL: the fixed template features (an untrained TAPL equals
                # them exactly), on the same images and noise.
                template = text[classes]
                scored = [
                    ("semclip", torch.einsum("nd,ncd->nc", z_corr, learned)),
                    ("semclip_no_tapl_sub", z_hat @ template.T),
                ]
                if correction is not None:
                    scored += [
                        (
                            "semclip_tapl_no_prior",
                            torch.einsum("nd,ncd->nc", z_plain, learned),
                        ),
                        ("semclip_prior_only", z_corr @ template.T),
                    ]
                for name, logits in scored:
                    pred = np.asarray(classes)[logits.argmax(1).numpy()]
                    rows.append(
                        dict(
                            method=name,
                            k=link.k,
                            seed=0,
                            snr_db=snr,
                            draw=draw,
                            task=task,
                            value=float((pred == labels).mean()),
                            n=len(z_hat),
                        )
                    )
        log(f"TAPL rows for {task} done ({len(idx)} images)")
    return rows


#: JPEG qualities of the compression + ideal-code (BT-IR) baseline.
JPEG_QUALITIES = [5, 10, 20, 35, 50, 75, 90]
BT_IR_IMAGES = 1000


@dataclass
class ImageSubset:
    """The new-class test images on which the image-transmission baselines are measured:
    a class-balanced subsample of ``BT_IR_IMAGES``, the same for every such baseline."""

    images: np.ndarray  # uint8 NHWC
    labels: np.ndarray  # CIFAR-10 label indices
    new_idx: list[int]  # label indices of the new classes

    @classmethod
    def load(cls, data_root: Path) -> "ImageSubset":
        images, labels = data.load_cifar(Path(data_root), "test")
        _, new = data.base_new_split()
        new_idx = [data.CLASSES.index(c) for c in new]
        pool = np.flatnonzero(np.isin(labels, new_idx))
        pick = pool[_stratified(labels[pool], BT_IR_IMAGES, seed=11)]
        return cls(images[pick], labels[pick], new_idx)


def bt_ir_rows(
    bundle_dir: Path, subset: ImageSubset, text: torch.Tensor, log
) -> list[dict]:
    """Image transmission by JPEG + an ideal capacity-achieving code (error-free).

    For each JPEG quality: the mean scan bits per image, the channel uses an ideal code
    needs for them at each SNR (``baselines.capacity_channel_uses``), and the zero-shot
    accuracy (new classes) of the decoded images' embeddings. Class-balanced subsample
    of ``BT_IR_IMAGES`` new-class test images.
    """
    from . import baselines

    session = ort_session(image_encoder_path(bundle_dir))
    rows = []
    for q in JPEG_QUALITIES:
        decoded, bits = baselines.jpeg_roundtrip(subset.images, q)
        z = torch.from_numpy(_embed_uint8(session, decoded, None))
        acc = zero_shot_accuracy(z, subset.labels, text, subset.new_idx)
        rows.append(
            dict(
                method="bt_ir",
                quality=q,
                bits=float(bits.mean()),
                task="acc_new",
                value=acc,
                n=len(subset.labels),
            )
        )
    log(f"BT-IR (JPEG + ideal code) rows done for qualities {JPEG_QUALITIES}")
    return rows


def deepjscc_image_rows(
    bundle_dir: Path, subset: ImageSubset, text: torch.Tensor, grid: Grid, log
) -> list[dict]:
    """Image transmission by DeepJSCC of the image (:mod:`semclip_models.image_jscc`).

    For every trained image code (one per k) and grid SNR: the new-class test images
    of the BT-IR subsample are sent through encoder, power normalisation, AWGN and
    decoder; the reconstructions go through the bundle's image encoder and are
    classified zero-shot (5-way). Rows carry the mean PSNR of the reconstructions too.
    """
    from . import image_jscc

    paths = sorted(
        image_jscc.CKPT_DIR.glob("k*_s0.pt"),
        key=lambda p: int(p.stem[1:].split("_")[0]),
    )
    if not paths:
        log(
            f"note: no image DeepJSCC checkpoints in {image_jscc.CKPT_DIR}; "
            "run `python -m semclip_models.image_jscc train` to include that baseline"
        )
        return []
    x = data.to_float(subset.images)
    session = ort_session(image_encoder_path(bundle_dir))
    rows = []
    for path in paths:
        model, meta = image_jscc.load_checkpoint(path)
        for snr in grid.snrs:
            x_hat = image_jscc.transmit_images(model, x, snr, _noise_gen(0, snr, salt=3))
            z = torch.from_numpy(embed_pixels(session, data.normalise(x_hat)))
            rows.append(
                dict(
                    method="deepjscc_image",
                    k=model.k,
                    snr_db=snr,
                    task="acc_new",
                    value=zero_shot_accuracy(z, subset.labels, text, subset.new_idx),
                    psnr_db=float(image_jscc.psnr(x_hat, x).mean()),
                    n=len(subset.labels),
                )
            )
        log(f"DeepJSCC (image) k={model.k} rows done")
    return rows


def run(bundle_dir: Path, data_root: Path, grid: Grid, log=print) -> dict:
    from .text_tower import MiniLMText

    t_start = time.time()
    torch.set_num_threads(1)
    manifest = bundle_io.read_manifest(bundle_dir)
    if not manifest.get("jscc"):
        raise bundle_io.BundleError(
            f"{bundle_dir} has no JSCC entries; run train_jscc first"
        )
    base, new = data.base_new_split()
    test = test_embeddings(bundle_dir, data_root, log)
    z_fit = fit_embeddings(bundle_dir, data_root, log)

    text_model = MiniLMText()
    template = manifest["text"].get("default_template", "a photo of a {}.")
    text = text_model.encode_texts([template.format(c) for c in data.CLASSES])
    new_idx = [data.CLASSES.index(c) for c in new]
    all_idx = list(range(len(data.CLASSES)))

    sub = _stratified(test["labels"], grid.test_images, seed=3)
    z_test = torch.from_numpy(test["z"][sub])
    labels = test["labels"][sub]
    z_query = torch.from_numpy(test["z_query"])
    z_gallery = torch.from_numpy(test["z"][test["gallery"]])

    rows: list[dict] = []
    schemes = _schemes(bundle_dir, manifest, z_fit, grid, log)
    for scheme, seed, only_snr in schemes:
        for snr in grid.snrs:
            if only_snr is not None and snr != only_snr:
                continue
            draws = 1 if scheme.name == "upper_bound" else grid.draws
            for draw in range(draws):
                z_hat = scheme(z_test, snr, _noise_gen(draw, snr))
                z_hat_q = scheme(z_query, snr, _noise_gen(draw, snr, salt=1))
                values = {
                    "acc_new": zero_shot_accuracy(z_hat, labels, text, new_idx),
                    "acc_all": zero_shot_accuracy(z_hat, labels, text, all_idx),
                    "retrieval": retrieval_accuracy(z_hat_q, z_gallery),
                }
                for task, value in values.items():
                    rows.append(
                        dict(
                            method=scheme.name,
                            k=scheme.k,
                            seed=seed,
                            snr_db=snr,
                            draw=draw,
                            task=task,
                            value=value,
                            n=len(z_hat),
                        )
                    )
        log(
            f"{scheme.name} k={scheme.k} seed={seed} done ({time.time() - t_start:.0f} s)"
        )
    rows += _tapl_rows(bundle_dir, manifest, test, text_model, text, grid, log)
    base_idx = [data.CLASSES.index(c) for c in base]
    subspace = subspace_rows(
        {"base": z_fit, "all": all_class_fit_embeddings(bundle_dir, data_root, log)},
        z_test,
        labels,
        text,
        {"new": new_idx, "base": base_idx},
        z_query,
        z_gallery,
    )
    bt_ir, deepjscc = [], []
    if grid.extra_seeds:
        subset = ImageSubset.load(data_root)
        bt_ir = bt_ir_rows(bundle_dir, subset, text, log)
        deepjscc = deepjscc_image_rows(bundle_dir, subset, text, grid, log)

    return {
        "bundle": manifest["id"],
        "bundle_version": manifest.get("version"),
        "random_init": manifest.get("random_init", False),
        "image_encoder_sha256": bundle_io.sha256_file(image_encoder_path(bundle_dir)),
        "grid": grid.__dict__,
        "split": {"seed": data.SPLIT_SEED, "base_classes": base, "new_classes": new},
        "default_k": int(manifest.get("default_k", 8)),
        "ks": [int(e["k"]) for e in manifest["jscc"]],
        "tapl_prior": ((manifest.get("tapl") or {}).get("prior") or {}).get("beta"),
        "tapl_prior_grid_db": ((manifest.get("tapl") or {}).get("prior") or {}).get(
            "grid_db"
        ),
        "jscc_blend": bundle_io.jscc_provenance(manifest).get("blend"),
        "jscc_blend_grid_db": bundle_io.jscc_provenance(manifest).get("blend_grid_db"),
        "embed_dim": int(manifest["embed_dim"]),
        "image_pixels": 32 * 32 * 3,
        "template": template,
        "test_images": len(sub),
        "retrieval_gallery": int(len(z_gallery)),
        "rows": rows,
        "bt_ir": bt_ir,
        "deepjscc_image": deepjscc,
        "subspace": subspace,
        "seconds": round(time.time() - t_start, 1),
        "host": platform.platform(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Evaluate a bundle's link on CIFAR-10 test/."
    )
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--grid", choices=sorted(GRIDS), default="full")
    args = p.parse_args(argv)

    command = "python -m semclip_models.evaluate " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    result = run(args.bundle, args.data, GRIDS[args.grid])
    result["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    name = "results.json" if args.grid == "full" else f"results_{args.grid}.json"
    (args.out / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / name} in {result['seconds']} s")

    from . import report

    report.write(
        result, args.out, suffix="" if args.grid == "full" else f"_{args.grid}"
    )


if __name__ == "__main__":
    main()
