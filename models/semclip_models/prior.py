"""Prior correction: the SNR-aware part of the receiver's transmission-aware scoring.

At low SNR the decoder's estimate of an embedding falls back on what it knows before any
symbol arrives: the mean ``mu`` of the embeddings it was trained on. Written as
``z_hat = a * u + r`` with ``u = mu / |mu|``, the share ``a`` of the prior grows as the
noise shrinks the image's own part ``r``. The cosine of ``z_hat`` with a class feature
``t_c`` then carries ``a * (u . t_c)``, a bias towards the classes whose text lies near the
training mean. For the training classes that bias is nearly the same for every class (they
are what the mean is made of), so neither the JSCC nor the prompt learner, both trained
on them, can see it; for classes far from them it decides the top label.

The receiver removes part of it before scoring with the learned prompt:

    z_corr = normalise(z_hat - beta(k, snr) * (z_hat . u) * u)

``beta`` is a table per k over ``jscc.BLEND_GRID_DB`` (linear in dB between the grid
points, clamped at the ends): 0 leaves ``z_hat`` as it is, 1 removes the prior direction.
It is chosen on the development splits of the JSCC blend, which hold two base classes out
(:func:`semclip_models.train_jscc.dev_split`): for each split the development code trained
on the three other base classes, blended with its linear code by the schedule the bundle
serves (so that the correction is chosen for the code it will correct; where the schedule
is 0 that is exactly the linear code fitted to those classes), sends every image of the
held-out pair, and the received embeddings are scored (2-way among the held-out classes;
5-way among all base classes, per class).
At each SNR, the gain of each value over beta = 0 is averaged over the splits, per task;
a value is admissible when no task loses on that average and the mean over the tasks is
at least ``MARGIN``; the admissible value with the largest mean gain wins, else 0. The
rule is looser than the blend's (which asks for no loss on *any* split and a one-point
gain): the correction changes only how the receiver scores, never what is sent, and its
gains on held-out animals are small and steady rather than large (about a point on the
held-out pair at -15 dB). The test classes play no part.

The direction ``u`` is the mean of the clean base-class training embeddings (the linear
code's mean, :func:`semclip_models.evaluate.fit_embeddings`), stored in the bundle as
``tapl_prior.f32``; the table is ``tapl.prior.beta`` in the manifest (docs/bundle.md).

Usage::

    python -m semclip_models.prior --bundle bundles/tiny-lit \\
        --data ../shared/data/cifar10 --export
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from . import bundle as bundle_io
from . import jscc
from . import train_jscc as tj
from .evaluate import fit_embeddings, train_embeddings

#: Correction strengths tried at each grid SNR.
BETA_CHOICES = (0.0, 0.25, 0.5, 0.75, 1.0)

#: Noise draws per split and SNR in the selection.
DRAWS = 3

#: Smallest mean gain over the tasks (fraction: 0.0025 = a quarter point), averaged over
#: the splits, for which a correction is kept.
MARGIN = 0.0025

PRIOR_FILE = "tapl_prior.f32"


def direction(mean: np.ndarray) -> np.ndarray:
    """The unit prior direction ``u`` [D] of a training mean."""
    mean = np.asarray(mean, dtype=np.float32)
    norm = float(np.linalg.norm(mean))
    if not norm > 0:
        raise ValueError("the training mean is zero: no prior direction")
    return mean / norm


def strength(table: list[float], snr_db: torch.Tensor | float) -> torch.Tensor:
    """``beta`` at ``snr_db`` from its values at ``jscc.BLEND_GRID_DB`` (linear in dB,
    clamped outside the grid): the rule the receiver uses."""
    grid = torch.tensor(jscc.BLEND_GRID_DB, dtype=torch.float32)
    values = torch.tensor(table, dtype=torch.float32)
    if len(values) != len(grid):
        raise ValueError(f"beta table has {len(values)} values, the grid {len(grid)}")
    snr = torch.as_tensor(snr_db, dtype=torch.float32).clamp(grid[0], grid[-1])
    idx = torch.searchsorted(grid, snr.reshape(-1), right=True).clamp(1, len(grid) - 1)
    lo, hi = grid[idx - 1], grid[idx]
    w = (snr.reshape(-1) - lo) / (hi - lo)
    return (values[idx - 1] * (1 - w) + values[idx] * w).reshape(snr.shape)


def correct(
    z_hat: torch.Tensor, u: torch.Tensor, beta: torch.Tensor | float
) -> torch.Tensor:
    """``normalise(z_hat - beta * (z_hat . u) * u)``; ``beta`` a scalar or [N]."""
    beta = torch.as_tensor(beta, dtype=z_hat.dtype)
    if beta.dim() == 1:
        beta = beta[:, None]
    a = (z_hat @ u)[:, None]
    return F.normalize(z_hat - beta * a * u[None], dim=-1)


class Correction:
    """The receiver's correction for one k: ``u`` [D] and the beta table."""

    def __init__(self, u: np.ndarray, table: list[float]):
        self.u = torch.from_numpy(np.asarray(u, dtype=np.float32))
        self.table = list(table)

    def __call__(self, z_hat: torch.Tensor, snr_db: float | torch.Tensor) -> torch.Tensor:
        beta = strength(self.table, snr_db)
        if beta.dim() == 0:
            beta = beta.expand(len(z_hat))
        return correct(z_hat, self.u, beta.reshape(-1))


def from_manifest(bundle_dir: Path, manifest: dict, k: int) -> Correction | None:
    """The bundle's correction for k, or None when its TAPL has none for k."""
    spec = (manifest.get("tapl") or {}).get("prior")
    if not spec or str(k) not in spec["beta"]:
        return None
    if [float(x) for x in spec["grid_db"]] != list(jscc.BLEND_GRID_DB):
        raise bundle_io.BundleError(
            f"tapl.prior.grid_db {spec['grid_db']} is not {list(jscc.BLEND_GRID_DB)}"
        )
    dim = int(manifest["embed_dim"])
    u = bundle_io.read_f32(Path(bundle_dir) / spec["direction"], (dim,))
    return Correction(u, spec["beta"][str(k)])


def dev_codes(bundle_dir: Path, manifest: dict, k: int) -> list[jscc.Jscc] | None:
    """The development codes of k (one per split) with the blend schedule the bundle
    serves, or None when that schedule is 0 everywhere (the blended code is then exactly
    the linear code). They are the checkpoints ``train_jscc`` keeps under models/runs."""
    provenance = bundle_io.jscc_provenance(manifest)
    schedule = (provenance.get("blend") or {}).get(str(k))
    if schedule is None:
        raise bundle_io.BundleError(
            f"{bundle_dir} records no blend schedule for k={k} (provenance.jscc.blend)"
        )
    if not any(float(a) for a in schedule):
        return None
    codes = []
    for index in range(tj.DEV_SPLITS):
        path = tj.Job(k, int(provenance.get("seed", 0)), dev=index).path(bundle_dir)
        if not path.is_file():
            raise FileNotFoundError(
                f"development code {path} is missing: run semclip_models.train_jscc "
                f"--ks {k} --skip-existing for this bundle first (it keeps them)"
            )
        model, _, _ = jscc.load_checkpoint(path)
        model.set_blend([float(a) for a in schedule])
        codes.append(model.eval())
    return codes


class DevSplit:
    """One development split: the code sent through (the development code trained on
    three base classes, or their linear code), and the images of the two held out
    (train/ and its validation part) with the labels to score them."""

    def __init__(
        self,
        emb: dict[str, np.ndarray],
        text: torch.Tensor,
        index: int,
        k: int,
        code: jscc.Jscc | None = None,
    ):
        trained, held = tj.dev_split(index)
        self.linear = jscc.LinearCode.fit(tj.emb_clean_of(emb, trained), k)
        self.u = torch.from_numpy(direction(self.linear.mean))
        # The split's development code (its linear path is this same fit) or, without
        # one, the linear code alone.
        self.send = tj.linear_sender(self.linear) if code is None else tj.model_sender(code)
        labels = emb["labels"]
        keep = np.isin(labels, held) | emb["is_val"]
        self.classes = np.unique(labels)
        self.z = torch.from_numpy(emb["z_clean"][keep].astype(np.float32))
        self.labels = torch.from_numpy(np.searchsorted(self.classes, labels[keep]))
        self.text = text[self.classes]
        self.held_mask = torch.from_numpy(np.isin(labels[keep], held))
        self.held_cols = torch.from_numpy(np.flatnonzero(np.isin(self.classes, held)))

    @torch.no_grad()
    def table(self, snrs=jscc.BLEND_GRID_DB) -> dict[float, dict[float, dict[str, float]]]:
        """``{snr: {beta: {"acc_new", "acc_all"}}}``, the same noise for every beta."""
        out = {}
        n = len(self.z)
        for snr in snrs:
            sums = {b: {"acc_new": 0.0, "acc_all": 0.0} for b in BETA_CHOICES}
            for draw in range(DRAWS):
                gen = torch.Generator().manual_seed(2000 + draw)
                z_hat = self.send(self.z, torch.full((n, 1), float(snr)), gen)
                for b in BETA_CHOICES:
                    logits = correct(z_hat, self.u, b) @ self.text.T
                    right = logits.argmax(1) == self.labels
                    per_class = [
                        right[self.labels == c].float().mean()
                        for c in range(len(self.classes))
                    ]
                    sums[b]["acc_all"] += float(torch.stack(per_class).mean())
                    sub = logits[self.held_mask][:, self.held_cols]
                    want = self.labels[self.held_mask]
                    hit = self.held_cols[sub.argmax(1)] == want
                    sums[b]["acc_new"] += float(hit.float().mean())
            out[float(snr)] = {
                b: {t: v / DRAWS for t, v in m.items()} for b, m in sums.items()
            }
        return out


def choose_table(tables: list[dict], log=print, label: str = "") -> tuple[list[float], dict]:
    """The beta table from the development tables ``[{snr: {beta: {task: acc}}}]``."""
    chosen, report = [], {}
    for snr in jscc.BLEND_GRID_DB:
        rows = [t[float(snr)] for t in tables]
        tasks = list(rows[0][0.0])
        best, best_gain = 0.0, MARGIN
        gains = {}
        for b in BETA_CHOICES[1:]:
            per_task = [float(np.mean([r[b][t] - r[0.0][t] for r in rows])) for t in tasks]
            gains[b] = per_task
            if min(per_task) >= 0.0 and float(np.mean(per_task)) >= best_gain:
                best, best_gain = b, float(np.mean(per_task))
        chosen.append(best)
        log(
            f"{label}{snr:+.0f} dB: beta {best}; gain over beta 0 averaged over the splits "
            f"({'/'.join(tasks)}, points): "
            + ", ".join(
                f"{b}: " + "/".join(f"{100 * g:+.1f}" for g in v) for b, v in gains.items()
            )
        )
        report[str(snr)] = [{str(b): m for b, m in r.items()} for r in rows]
    return chosen, report


def choose(
    emb: dict[str, np.ndarray],
    text: torch.Tensor,
    k: int,
    codes: list[jscc.Jscc] | None = None,
    log=print,
) -> tuple[list[float], dict]:
    """The beta table of k from the development splits (``codes``: one per split; None:
    the linear codes)."""
    tables = [
        DevSplit(emb, text, i, k, None if codes is None else codes[i]).table()
        for i in range(tj.DEV_SPLITS)
    ]
    return choose_table(tables, log=log, label=f"k={k}, ")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--views", type=int, default=4)
    p.add_argument(
        "--export",
        action="store_true",
        help="write tapl_prior.f32 and the tables into the bundle (it needs a TAPL)",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(2)
    command = "python -m semclip_models.prior " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    manifest = bundle_io.read_manifest(args.bundle)
    if args.export and not manifest.get("tapl"):
        raise SystemExit(
            f"error: {args.bundle} has no TAPL; run semclip_models.train_tapl --export first"
        )
    t0 = time.time()
    emb = train_embeddings(args.bundle, args.data, args.views, seed=0)
    text = tj.base_text_features(args.bundle)
    u = direction(fit_embeddings(args.bundle, args.data).mean(axis=0))
    tables = {}
    for entry in manifest.get("jscc") or []:
        k = int(entry["k"])
        try:
            codes = dev_codes(args.bundle, manifest, k)
        except (bundle_io.BundleError, FileNotFoundError) as e:
            raise SystemExit(f"error: {e}") from None
        tables[str(k)], _ = choose(emb, text, k, codes)
        print(f"k={k}: beta {tables[str(k)]} at {list(jscc.BLEND_GRID_DB)} dB", flush=True)
    if not tables:
        raise SystemExit(f"error: {args.bundle} has no JSCC entries; run train_jscc first")
    print(f"prior correction chosen in {time.time() - t0:.0f} s")
    if args.export:
        bundle_io.write_f32(Path(args.bundle) / PRIOR_FILE, u[None])
        tapl_entry = dict(manifest["tapl"])
        tapl_entry["prior"] = {
            "direction": PRIOR_FILE,
            "grid_db": list(jscc.BLEND_GRID_DB),
            "beta": tables,
        }
        bundle_io.set_tapl(args.bundle, tapl_entry)
        bundle_io.add_provenance(args.bundle, "commands", command)
        bundle_io.add_provenance(
            args.bundle,
            "prior_correction",
            {
                "command": command,
                "rule": "development splits (two base classes held out; the development "
                "codes trained on the other three, blended by the bundle's schedule), "
                "tasks acc_new and acc_all; gains over beta 0 "
                "averaged over the splits: no task below 0, mean over the tasks at least "
                f"{MARGIN}, the largest mean wins",
                "choices": list(BETA_CHOICES),
                "draws": DRAWS,
                "beta": tables,
            },
        )
        print(f"wrote {PRIOR_FILE} and tapl.prior into {args.bundle}")


if __name__ == "__main__":
    main()
