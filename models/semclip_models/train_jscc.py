"""Stage 1: train the SNR-adaptive JSCC codes and export them into a bundle.

Training data: embeddings (through the bundle's image-encoder ONNX) of the base-class
images of train/ minus its validation part, each as its clean view and ``--views``
augmented views. Every step draws a batch of embeddings and one SNR per sample, uniform
over ``SNR_TRAIN_RANGE_DB``, sends them through encoder, power normalisation, AWGN and
decoder, and minimises Eq. 7 (symmetric InfoNCE between transmitted ``z`` and received
``z_hat`` of the batch, temperature ``--temperature``) plus ``--recon-weight`` times
``mean(1 - cos(z, z_hat))``.

Why the reconstruction term: InfoNCE only asks each ``z_hat`` to be closer to its own ``z``
than to the other embeddings of the batch; zero-shot classification compares ``z_hat``
with *text* features, which needs ``z_hat`` to point where ``z`` points. The cosine term
pins the absolute direction; InfoNCE keeps the instance detail that tells images apart.

The linear path is the evaluation's linear baseline (:func:`semclip_models.evaluate.fit_embeddings`),
so that "linear" means one code; it stays frozen by default (``--linear-lr-scale 0``) and
only the SNR gains and the residual learn. (Letting the linear path move, at the same
learning rate, made the code worse than its starting point on validation at high SNR.)

Blend schedule. A code fitted to five base classes can pull embeddings of other classes
towards them, which costs accuracy where the linear code was already good (high SNR) or
where the learned code has little to add (very low SNR). For each k, ``DEV_SPLITS``
*development* codes are trained with the same settings, each on three of the five base
classes, so that every base class is held out once. Each is measured on the images of its
two held-out classes (train/ and validation: none of them seen in its training) at each
SNR of ``jscc.BLEND_GRID_DB`` and each blend value alpha in ``BLEND_CHOICES``, with the same
noise for every alpha (:class:`BlendSelection`). The chosen alpha gains at least
``BLEND_MARGIN`` on average and loses on no task, on every split (:func:`choose_blend`);
alpha = 0, the linear code, is the fallback. The selection is cheap and is made again on
every run. The test classes play no part.

Without AF (``--no-af-snrs``) one model is trained per SNR of the list, at that SNR only:
the ablation "SemCLIP w/o TAPL and AF".

Usage::

    python -m semclip_models.train_jscc --bundle bundles/tiny-lit \\
        --data ../shared/data/cifar10 --ks 4,8,16,32 --extra-seeds 1,2 --export
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

from . import bundle as bundle_io
from . import channel, jscc
from .evaluate import RUNS_DIR, fit_embeddings, image_encoder_path, train_embeddings

CKPT_DIR = RUNS_DIR / "jscc"

#: Seed of the order of the base classes from which the development splits are cut.
DEV_SPLIT_SEED = 1

#: Development splits per k: each holds out a different pair of base classes.
DEV_SPLITS = 3

#: Blend values tried at each grid SNR.
BLEND_CHOICES = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Noise draws per SNR and blend value in the selection.
BLEND_DRAWS = 3

#: Smallest mean gain over the linear code (fraction: 0.01 = one point) for which the
#: selection leaves it; smaller gains are within what changes between class splits.
BLEND_MARGIN = 0.01

#: Gallery size of the selection's retrieval task (the evaluation's test gallery size).
RETRIEVAL_GALLERY = 1000


def checkpoint_path(
    bundle_dir: Path,
    k: int,
    seed: int,
    no_af_snr: float | None = None,
    dev: int | None = None,
) -> Path:
    """Checkpoints live under the image encoder's hash: a new encoder never reuses them."""
    sha = bundle_io.sha256_file(image_encoder_path(bundle_dir))[:16]
    if dev is not None:
        name = f"k{k}_dev{dev}_s{seed}.pt" if dev else f"k{k}_dev_s{seed}.pt"
    elif no_af_snr is None:
        name = f"k{k}_s{seed}.pt"
    else:
        name = f"k{k}_noaf_snr{no_af_snr:+.0f}_s{seed}.pt"
    return CKPT_DIR / sha / name


def dev_split(index: int = 0) -> tuple[list[int], list[int]]:
    """CIFAR label indices of (3 development-training, 2 held-out) base classes of the
    development split ``index``: the held-out pairs of splits 0, 1, 2 are positions
    (3, 4), (0, 1), (2, 3) of a seeded order of the five, so every class is held out once."""
    from . import data

    base, _ = data.base_new_split()
    order = np.random.default_rng(DEV_SPLIT_SEED).permutation(len(base))
    ids = [data.CLASSES.index(base[i]) for i in order]
    held = {(2 * index + 3) % len(ids), (2 * index + 4) % len(ids)}
    return (
        sorted(c for i, c in enumerate(ids) if i not in held),
        sorted(c for i, c in enumerate(ids) if i in held),
    )


def split_training_set(
    emb: dict[str, np.ndarray], classes: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train inputs [M,D]: clean + augmented views, validation clean [V,D]); only the
    images of ``classes`` (CIFAR label indices) in the training inputs when given."""
    train = ~emb["is_val"]
    if classes is not None:
        train &= np.isin(emb["labels"], classes)
    z_train = np.concatenate(
        [emb["z_clean"][train], emb["z_aug"][train].reshape(-1, emb["z_aug"].shape[-1])]
    )
    return z_train.astype(np.float32), emb["z_clean"][emb["is_val"]].astype(np.float32)


class Validation:
    """Held-out base-class images of train/: zero-shot accuracy (5-way, base classes, the
    default template) and retrieval (received augmented view -> clean original among the
    validation images) after the channel, for model selection without touching test/."""

    def __init__(self, emb: dict[str, np.ndarray], text_features: torch.Tensor | None):
        val = emb["is_val"]
        self.z = torch.from_numpy(emb["z_clean"][val].astype(np.float32))
        self.z_query = torch.from_numpy(emb["z_aug"][val][:, 0].astype(np.float32))
        labels = emb["labels"][val]
        #: CIFAR label indices of the validation classes; ``labels`` index into them.
        self.classes = np.unique(labels)
        self.labels = torch.from_numpy(np.searchsorted(self.classes, labels))
        self.text = None if text_features is None else text_features[self.classes]

    @torch.no_grad()
    def __call__(self, send, snrs: list[float], seed: int = 99) -> dict[float, dict]:
        """``send(z, snr_col, gen) -> z_hat``; metrics per SNR (one noise draw)."""
        out = {}
        for snr in snrs:
            gen = torch.Generator().manual_seed(seed)
            z_hat = send(self.z, torch.full((len(self.z), 1), snr), gen)
            q_hat = send(self.z_query, torch.full((len(self.z), 1), snr), gen)
            sims = F.normalize(q_hat, dim=-1) @ self.z.T
            m = {
                "cos": float(F.cosine_similarity(self.z, z_hat).mean()),
                "retrieval": float(
                    (sims.argmax(1) == torch.arange(len(self.z))).float().mean()
                ),
            }
            if self.text is not None:
                pred = (z_hat @ self.text.T).argmax(1)
                m["acc_base"] = float((pred == self.labels).float().mean())
            out[snr] = m
        return out


class BlendSelection:
    """Measures a development code, trained without the ``held_out`` base classes, against
    the linear code at every blend value and grid SNR.

    Every image of a held-out class, in train/ as well as in its validation part, is one
    the development code never saw, so all of them measure how the learned code does on
    classes outside its training set (about 10,000 images, so that a gain of a point is
    well above the noise):

    - ``acc_new``: zero-shot accuracy among the held-out classes only;
    - ``acc_all``: zero-shot accuracy among all five base classes, per class and then
      averaged, on the held-out images and the validation images of the training
      classes (does the code pull unseen images towards the classes it knows?);
    - ``retrieval``: a received augmented view against the clean held-out images, in
      galleries of ``gallery`` images, as the evaluation's.
    """

    def __init__(
        self,
        emb: dict[str, np.ndarray],
        text_features: torch.Tensor,
        held_out: list[int],
        gallery: int = RETRIEVAL_GALLERY,
    ):
        labels = emb["labels"]
        held = np.isin(labels, held_out)
        keep = held | emb["is_val"]
        self.classes = np.unique(labels)
        self.z = torch.from_numpy(emb["z_clean"][keep].astype(np.float32))
        self.labels = torch.from_numpy(np.searchsorted(self.classes, labels[keep]))
        self.text = text_features[self.classes]
        self.held_mask = torch.from_numpy(held[keep])
        self.held_cols = torch.from_numpy(np.flatnonzero(np.isin(self.classes, held_out)))
        order = np.random.default_rng(DEV_SPLIT_SEED).permutation(np.flatnonzero(held))
        if len(order) < gallery:
            raise ValueError(
                f"{len(order)} images of the held-out classes {held_out}: the retrieval "
                f"task needs at least one gallery of {gallery}"
            )
        self.galleries = order[: len(order) // gallery * gallery].reshape(-1, gallery)
        self.z_gallery = torch.from_numpy(emb["z_clean"][self.galleries].astype(np.float32))
        self.z_query = torch.from_numpy(emb["z_aug"][self.galleries, 0].astype(np.float32))

    @torch.no_grad()
    def metrics(self, model: jscc.Jscc, snr: float, alpha: float) -> dict[str, float]:
        model.set_blend([alpha] * len(jscc.BLEND_GRID_DB))
        sums = {"acc_new": 0.0, "acc_all": 0.0, "retrieval": 0.0}
        n = len(self.z)
        g, m = self.z_gallery.shape[:2]
        for draw in range(BLEND_DRAWS):
            gen = torch.Generator().manual_seed(1000 + draw)
            z_hat = model(self.z, torch.full((n, 1), snr), gen)
            q = self.z_query.reshape(g * m, -1)
            q_hat = model(q, torch.full((g * m, 1), snr), gen).reshape(g, m, -1)
            logits = z_hat @ self.text.T
            right = logits.argmax(1) == self.labels
            per_class = [
                right[self.labels == c].float().mean() for c in range(len(self.classes))
            ]
            sums["acc_all"] += float(torch.stack(per_class).mean())
            sub = logits[self.held_mask][:, self.held_cols]
            want = self.labels[self.held_mask]
            sums["acc_new"] += float(
                (self.held_cols[sub.argmax(1)] == want).float().mean()
            )
            sims = torch.einsum("gqd,gkd->gqk", q_hat, self.z_gallery)
            hits = sims.argmax(-1) == torch.arange(m)
            sums["retrieval"] += float(hits.float().mean())
        return {t: v / BLEND_DRAWS for t, v in sums.items()}

    def table(self, model: jscc.Jscc) -> dict[float, dict[float, dict[str, float]]]:
        """``{snr: {alpha: metrics}}`` over ``BLEND_GRID_DB`` and ``BLEND_CHOICES``."""
        return {
            snr: {a: self.metrics(model, snr, a) for a in BLEND_CHOICES}
            for snr in jscc.BLEND_GRID_DB
        }


def choose_blend(tables: list[dict], log=print) -> tuple[list[float], dict]:
    """Blend values at ``BLEND_GRID_DB`` from the tables of several development splits.

    At each SNR a value alpha is admissible when, on *every* split, no task is below the
    linear code (alpha = 0) and the mean gain over the tasks is at least ``BLEND_MARGIN``;
    among those, the one with the largest smallest-over-splits mean gain is chosen, and
    alpha = 0 when none is. A gain that shows on one pair of held-out classes but not on
    another says more about those classes than about the code, so it does not count.
    """
    chosen, report = [], {}
    for snr in jscc.BLEND_GRID_DB:
        rows = [t[snr] for t in tables]
        best, best_gain = 0.0, BLEND_MARGIN
        for a in rows[0]:
            if a == 0.0:
                continue
            gains = [[r[a][t] - r[0.0][t] for t in r[a]] for r in rows]
            worst = min(float(np.mean(g)) for g in gains)
            if min(min(g) for g in gains) >= 0.0 and worst >= best_gain:
                best, best_gain = a, worst
        chosen.append(best)
        for i, r in enumerate(rows):
            log(
                f"  {snr:+.0f} dB, split {i}: "
                + "; ".join(
                    f"alpha {a}: " + " ".join(f"{100 * v:.1f}" for v in m.values())
                    for a, m in r.items()
                )
                + " (acc_new acc_all retrieval)"
            )
        gain = 0.0 if best == 0.0 else best_gain
        log(
            f"blend at {snr:+.0f} dB: alpha {best} (smallest mean gain over the splits "
            f"{100 * gain:+.1f} points)"
        )
        report[str(snr)] = [{str(a): m for a, m in r.items()} for r in rows]
    return chosen, report


def emb_clean_of(emb: dict[str, np.ndarray], classes: list[int]) -> np.ndarray:
    """Clean training (non-validation) embeddings of ``classes``: the development code's
    linear fit, as the evaluation's is fitted on clean base-class embeddings."""
    keep = ~emb["is_val"] & np.isin(emb["labels"], classes)
    return emb["z_clean"][keep].astype(np.float32)


def linear_sender(linear: jscc.LinearCode):
    def send(z, snr_col, gen):
        y, _ = channel.transmit(linear.encode(z), snr_col, gen)
        return linear.decode(y, snr_col)

    return send


def model_sender(model: jscc.Jscc):
    def send(z, snr_col, gen):
        return model(z, snr_col, gen)

    return send


def base_text_features(bundle_dir: Path) -> torch.Tensor:
    """Default-template features of all CIFAR-10 classes [10, D] (index = label)."""
    from . import data
    from .text_tower import MiniLMText

    template = bundle_io.read_manifest(bundle_dir)["text"].get(
        "default_template", "a photo of a {}."
    )
    return MiniLMText().encode_texts([template.format(c) for c in data.CLASSES])


def _fmt_val(val: dict, lin: dict) -> str:
    parts = []
    for s in val:
        parts.append(
            f"{s:+.0f}dB "
            + " ".join(f"{m} {val[s][m]:.3f}/{lin[s][m]:.3f}" for m in val[s])
        )
    return "; ".join(parts)


def train_one(
    z_train: np.ndarray,
    validation: "Validation | None",
    linear: jscc.LinearCode,
    seed: int,
    steps: int,
    batch: int,
    lr: float,
    width: int,
    temperature: float,
    recon_weight: float,
    use_af: bool = True,
    fixed_snr: float | None = None,
    linear_lr_scale: float = 0.0,
    log=print,
) -> tuple[jscc.Jscc, jscc.LinearCode, dict]:
    """Train one JSCC code; the linear path starts at ``linear`` (the baseline)."""
    k = linear.k
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = jscc.Jscc(linear, width, use_af)
    linear_params = [
        model.encoder.linear.weight,
        model.encoder.linear.bias,
        model.decoder.linear.weight,
        model.decoder.linear.bias,
        model.decoder.log_a,
        model.decoder.log_b,
    ]
    ids = {id(q) for q in linear_params}
    rest = [q for q in model.parameters() if id(q) not in ids]
    groups = [{"params": rest, "lr": lr}]
    if linear_lr_scale > 0:
        groups.append({"params": linear_params, "lr": lr * linear_lr_scale})
    else:
        for q in linear_params:
            q.requires_grad_(False)
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.05
    )
    zt = torch.from_numpy(z_train)
    lo, hi = jscc.SNR_TRAIN_RANGE_DB
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(zt), (batch,), generator=gen)
        if fixed_snr is None:
            snr = lo + (hi - lo) * torch.rand((batch, 1), generator=gen)
        else:
            snr = torch.full((batch, 1), float(fixed_snr))
        z = zt[idx]
        z_hat = model(z, snr, gen)
        loss, parts = jscc.stage1_loss(z, z_hat, temperature, recon_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            log(
                f"k={k} seed={seed} step {step}/{steps} loss {float(loss.detach()):.4f} "
                f"infonce {parts['info_nce']:.4f} recon {parts['recon']:.4f} "
                f"({(time.time() - t0) / (step + 1) * 1000:.0f} ms/step)"
            )
    model.eval()
    snrs = [fixed_snr] if fixed_snr is not None else [-15.0, -5.0, 5.0, 15.0]
    val, val_lin = {}, {}
    if validation is not None:
        val = validation(model_sender(model), snrs)
        val_lin = validation(linear_sender(linear), snrs)
        log(f"k={k} seed={seed} validation (JSCC/linear): {_fmt_val(val, val_lin)}")
    meta = {
        "k": k,
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "width": width,
        "temperature": temperature,
        "recon_weight": recon_weight,
        "linear_lr_scale": linear_lr_scale,
        "use_af": use_af,
        "fixed_snr_db": fixed_snr,
        "snr_train_range_db": (
            list(jscc.SNR_TRAIN_RANGE_DB) if fixed_snr is None else None
        ),
        "train_seconds": round(time.time() - t0, 1),
        "validation": {str(s): v for s, v in val.items()},
        "validation_linear": {str(s): v for s, v in val_lin.items()},
    }
    return model, linear, meta


# --------------------------------------------------------------------------------------
# Training jobs, run in worker processes (one thread each)


@dataclass(frozen=True)
class Job:
    """One code to train: the main code of (k, seed), one of its development codes (``dev``,
    the split index), or the per-SNR model without AF (``no_af_snr``)."""

    k: int
    seed: int
    no_af_snr: float | None = None
    dev: int | None = None

    def path(self, bundle_dir: Path) -> Path:
        return checkpoint_path(bundle_dir, self.k, self.seed, self.no_af_snr, self.dev)


_WORKER: dict = {}


def _worker_init(bundle_dir: Path, data_root: Path, views: int) -> None:
    """Load once per worker what every job reads: the embeddings (from the cache the
    parent filled), the training inputs, the validation set and the linear fit data."""
    torch.set_num_threads(1)
    quiet = lambda *_: None  # noqa: E731 (the parent has printed these already)
    emb = train_embeddings(bundle_dir, data_root, views, seed=0, log=quiet)
    _WORKER["emb"] = emb
    _WORKER["z_train"] = split_training_set(emb)[0]
    _WORKER["validation"] = Validation(emb, base_text_features(bundle_dir))
    _WORKER["z_fit"] = fit_embeddings(bundle_dir, data_root, log=quiet)


def _run_job(
    job: Job, hyper: dict, no_af_steps: int, command: str, bundle: Path
) -> Path:
    """Train ``job`` and save its checkpoint (a development code with its chosen blend)."""
    emb, validation = _WORKER["emb"], _WORKER["validation"]
    dev = "" if job.dev is None else f" dev {job.dev}"
    name = f"[k={job.k} seed={job.seed}{dev}" + (
        f" no-AF {job.no_af_snr:+.0f} dB]" if job.no_af_snr is not None else "]"
    )

    def log(*parts):
        print(name, *parts, flush=True)

    kw = dict(hyper)
    if job.dev is not None:
        dev_train, held_out = dev_split(job.dev)
        z_dev, _ = split_training_set(emb, dev_train)
        linear = jscc.LinearCode.fit(emb_clean_of(emb, dev_train), job.k)
        model, linear, meta = train_one(z_dev, None, linear, job.seed, **kw, log=log)
        meta.update(dev_classes=dev_train, held_out_classes=held_out)
    else:
        if job.no_af_snr is not None:
            kw["steps"] = no_af_steps
        model, linear, meta = train_one(
            _WORKER["z_train"],
            validation,
            jscc.LinearCode.fit(_WORKER["z_fit"], job.k),
            job.seed,
            use_af=job.no_af_snr is None,
            fixed_snr=job.no_af_snr,
            **kw,
            log=log,
        )
    meta["command"] = command
    path = job.path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    jscc.save_checkpoint(tmp, model, linear, meta)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------
# ONNX export


class _Decoder(torch.nn.Module):
    def __init__(self, decoder: jscc.JsccDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return self.decoder(symbols, snr_db)


def _export(module, args, path: Path, input_names, output_names) -> None:
    dynamic = {name: {0: "N"} for name in input_names + output_names}
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )


def export_onnx(
    model: jscc.Jscc, out_dir: Path, seed: int = 0
) -> tuple[Path, Path, float]:
    """Write jscc_k{k}_encoder.onnx / jscc_k{k}_decoder.onnx; return the max abs
    difference between ONNX Runtime and torch on random inputs (checked <= 1e-4)."""
    model.eval()
    k = model.k
    d = model.encoder.linear.in_features
    enc_path = Path(out_dir) / f"jscc_k{k}_encoder.onnx"
    dec_path = Path(out_dir) / f"jscc_k{k}_decoder.onnx"
    gen = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn((7, d), generator=gen), dim=-1)
    snr = torch.linspace(-20.0, 25.0, 7).reshape(7, 1)
    sym = channel.power_normalise(torch.randn((7, 2 * k), generator=gen))
    with torch.no_grad():
        _export(model.encoder, (z, snr), enc_path, ["z", "snr_db"], ["symbols"])
        _export(
            _Decoder(model.decoder),
            (sym, snr),
            dec_path,
            ["symbols", "snr_db"],
            ["z_hat"],
        )
        want_enc = model.encoder(z, snr).numpy()
        want_dec = model.decoder(sym, snr).numpy()
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_path), providers=["CPUExecutionProvider"])
    got_enc = enc.run(None, {"z": z.numpy(), "snr_db": snr.numpy()})[0]
    got_dec = dec.run(None, {"symbols": sym.numpy(), "snr_db": snr.numpy()})[0]
    diff = max(
        float(np.abs(got_enc - want_enc).max()), float(np.abs(got_dec - want_dec).max())
    )
    if not diff <= 1e-4:
        raise RuntimeError(f"JSCC k={k} ONNX export differs from torch by {diff:.2e}")
    return enc_path, dec_path, diff


# --------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory")
    p.add_argument(
        "--data", type=Path, required=True, help="CIFAR-10 folder (train.tar.gz)"
    )
    p.add_argument(
        "--ks", type=_ints, default=[4, 8, 16, 32], help="channel uses, e.g. 4,8"
    )
    p.add_argument("--default-k", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the exported models")
    p.add_argument(
        "--extra-seeds", type=_ints, default=[], help="more seeds, default k"
    )
    p.add_argument(
        "--no-af-snrs",
        type=_floats,
        default=[],
        help="SNRs (dB) of the per-SNR models without AF, default k (ablation)",
    )
    p.add_argument(
        "--views", type=int, default=4, help="augmented views per train image"
    )
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--no-af-steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--recon-weight", type=float, default=4.0)
    p.add_argument(
        "--linear-lr-scale",
        type=float,
        default=0.0,
        help="learning rate of the linear path relative to --lr (0 freezes it)",
    )
    p.add_argument(
        "--export", action="store_true", help="write ONNX + manifest entries"
    )
    p.add_argument(
        "--skip-existing", action="store_true", help="reuse trained checkpoints"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="training processes, one thread each (default: 2, or 1 on one core)",
    )
    p.add_argument(
        "--no-blend",
        action="store_true",
        help="keep the learned code at every SNR (no development code, no fallback)",
    )
    p.add_argument(
        "--skip-main",
        action="store_true",
        help="train only --extra-seeds and --no-af-snrs (the main models exist); the "
        "extra seeds take the blend schedule of the bundle's default-k code",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    command = "python -m semclip_models.train_jscc " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.default_k not in args.ks:
        p.error(f"--default-k {args.default_k} must be one of --ks {args.ks}")
    # With --skip-main the extra seeds measure the spread over training seeds of the
    # code the bundle serves, so they take its schedule rather than one chosen again
    # from development codes retrained here (floating-point differences between CPUs
    # can tip a choice that is close to the margin).
    deployed = None
    if args.skip_main and not args.no_blend:
        provenance = bundle_io.jscc_provenance(bundle_io.read_manifest(args.bundle))
        deployed = (provenance.get("blend") or {}).get(str(args.default_k))
        if deployed is None:
            p.error(
                f"--skip-main: {args.bundle} records no blend schedule for "
                f"k={args.default_k}; train and export the main codes first"
            )
    # Embed once here (cached on disk) so that the workers only load the cache.
    emb = train_embeddings(args.bundle, args.data, args.views, seed=0)
    fit_embeddings(args.bundle, args.data)
    z_train, z_val = split_training_set(emb)
    print(f"training set {len(z_train)} embeddings, validation {len(z_val)}")
    del emb, z_train, z_val
    hyper = dict(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        width=args.width,
        temperature=args.temperature,
        recon_weight=args.recon_weight,
        linear_lr_scale=args.linear_lr_scale,
    )

    blended = [] if args.skip_main else [Job(k, args.seed) for k in args.ks]
    blended += [Job(args.default_k, s) for s in args.extra_seeds]
    jobs = list(blended)
    if not args.no_blend and deployed is None:
        jobs += [
            Job(k, args.seed, dev=i)
            for k in sorted({j.k for j in blended})
            for i in range(DEV_SPLITS)
        ]
    jobs += [Job(args.default_k, args.seed, snr) for snr in args.no_af_snrs]
    todo = []
    for job in jobs:
        path = job.path(args.bundle)
        if args.skip_existing and path.is_file():
            print(f"reusing {path}")
        else:
            todo.append(job)
    todo.sort(key=lambda j: j.no_af_snr is not None)  # the long jobs first
    run = functools.partial(
        _run_job,
        hyper=hyper,
        no_af_steps=args.no_af_steps,
        command=command,
        bundle=args.bundle,
    )
    init_args = (args.bundle, args.data, args.views)
    workers = max(1, min(args.workers, len(todo)))
    if workers == 1:
        _worker_init(*init_args)
        for job in todo:
            run(job)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, ctx, _worker_init, init_args) as pool:
            for path in pool.map(run, todo):
                print(f"wrote {path}", flush=True)

    # The blend schedules: chosen on each k's development codes (cheap, so always chosen
    # again), then set on the trained codes of that k.
    schedules: dict[int, list[float]] = {}
    if deployed is not None:
        schedules[args.default_k] = [float(a) for a in deployed]
    elif not args.no_blend:
        emb = train_embeddings(args.bundle, args.data, args.views, seed=0, log=print)
        text = base_text_features(args.bundle)
        selections = [
            BlendSelection(emb, text, dev_split(i)[1]) for i in range(DEV_SPLITS)
        ]
        del emb
        for k in sorted({j.k for j in blended}):
            paths = [Job(k, args.seed, dev=i).path(args.bundle) for i in range(DEV_SPLITS)]
            tables = []
            for selection, path in zip(selections, paths):
                tables.append(selection.table(jscc.load_checkpoint(path)[0]))
            print(f"blend selection, k={k} ({', '.join(p.name for p in paths)}):")
            alphas, report = choose_blend(tables)
            schedules[k] = alphas
            for path, table_report in zip(paths, zip(*report.values())):
                model, linear, meta = jscc.load_checkpoint(path)
                model.set_blend(alphas)
                meta.update(
                    blend=alphas, blend_selection=dict(zip(report, table_report))
                )
                jscc.save_checkpoint(path, model, linear, meta)
    for job in blended:
        path = job.path(args.bundle)
        model, linear, meta = jscc.load_checkpoint(path)
        if args.no_blend:
            alphas, source = [1.0] * len(jscc.BLEND_GRID_DB), None
        else:
            alphas = schedules[job.k]
            source = (
                f"{DEV_SPLITS} development codes of k={job.k}"
                if deployed is None
                else f"the schedule of {args.bundle}'s k={job.k} code"
            )
        model.set_blend(alphas)
        meta.update(blend=alphas, blend_from=source)
        jscc.save_checkpoint(path, model, linear, meta)
        print(f"k={job.k} seed={job.seed}: blend {alphas} ({source or 'none'})")

    if args.export:
        entries, blends = [], {}
        for k in args.ks:
            model, _, meta = jscc.load_checkpoint(
                checkpoint_path(args.bundle, k, args.seed)
            )
            blends[str(k)] = model.blend_values()
            enc, dec, diff = export_onnx(model, args.bundle)
            print(
                f"exported {enc.name}, {dec.name} (ONNX vs torch max |diff| {diff:.1e})"
            )
            entries.append(
                {
                    "k": k,
                    "encoder": enc.name,
                    "decoder": dec.name,
                    "snr_train_range_db": list(jscc.SNR_TRAIN_RANGE_DB),
                }
            )
        bundle_io.set_jscc(args.bundle, entries, args.default_k)
        bundle_io.add_provenance(args.bundle, "commands", command)
        bundle_io.add_provenance(
            args.bundle,
            "jscc",
            {
                "seed": args.seed,
                "views": args.views,
                "training_set": "base classes of train/ minus validation, clean + "
                f"{args.views} augmented views",
                "loss": f"InfoNCE (Eq. 7, T={args.temperature}) + "
                f"{args.recon_weight} * (1 - cos)",
                **{k: v for k, v in hyper.items()},
                "blend_grid_db": list(jscc.BLEND_GRID_DB),
                "blend": blends,
                "blend_selection": f"{DEV_SPLITS} development codes per k, each "
                "trained on three base classes of train/ and measured on the images of "
                "the other two: " + "; ".join(
                    f"held out {dev_split(i)[1]}" for i in range(DEV_SPLITS)
                ),
            },
        )
        print(json.dumps(entries, indent=2))


if __name__ == "__main__":
    main()
