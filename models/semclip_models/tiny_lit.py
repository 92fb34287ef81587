"""tiny-lit: a small CNN image tower aligned with the frozen MiniLM text tower.

The image tower is a half-width ResNet-9 (about 1.7 M parameters) mapping 32x32 CIFAR
images to a 384-d L2-normalised embedding z. It is trained on CIFAR-10 train/ (10 % held
out for validation) with two terms:

- locked-text alignment: cross-entropy of `logit_scale * cos(z, t_c)` against the label,
  where t_c are the frozen MiniLM features of the class names averaged over several
  prompt templates (the text tower never changes);
- instance contrast: InfoNCE between two augmented views of each image, both
  directions, so that z keeps the detail of each instance instead of collapsing onto
  ten class directions.

Commands (from the repository root):
    python -m semclip_models.tiny_lit train --data ../shared/data/cifar10 \
        --out models/runs/tiny-lit --seed 0
    python -m semclip_models.tiny_lit report --data ../shared/data/cifar10 \
        --checkpoint models/runs/tiny-lit/tower.pt
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import compute
from . import data as D
from .text_tower import TEMPLATES, MiniLMText, class_features

EMBED_DIM = 384


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyTower(nn.Module):
    """Half-width ResNet-9: pixels [N,3,32,32] (normalised) -> z [N,384], unit norm."""

    def __init__(self, width: int = 32, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, pool=True),
            _Residual(2 * w),
            _conv_bn(2 * w, 4 * w, pool=True),
            _conv_bn(4 * w, 8 * w, pool=True),
            _Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.proj = nn.Linear(8 * w, embed_dim)
        self.config = {"width": width, "embed_dim": embed_dim}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.features(pixels)).float(), dim=-1)


def build_tower(config: dict | None = None) -> TinyTower:
    return TinyTower(**(config or {}))


def load_checkpoint(path: Path) -> tuple[TinyTower, dict]:
    """The trained tower (eval mode, fp32) and the checkpoint's metadata."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tower checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    tower = build_tower(ckpt["config"])
    tower.load_state_dict(ckpt["state_dict"])
    tower.eval()
    return tower, ckpt


# ---------------------------------------------------------------- metrics


@torch.no_grad()
def embed(tower: nn.Module, images: np.ndarray | torch.Tensor, batch: int = 500) -> torch.Tensor:
    """z [N,384] of uint8 NHWC images (or float [0,1] NCHW), fp32, eval mode, on the CPU
    (the batches go through the tower on its own device)."""
    was_training = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    x = D.to_float(images)
    out = [
        tower(D.normalise(x[i : i + batch]).to(device)).float().cpu()
        for i in range(0, len(x), batch)
    ]
    tower.train(was_training)
    return torch.cat(out)


def zero_shot_accuracy(z: torch.Tensor, labels: np.ndarray, text_feats: torch.Tensor) -> float:
    """Top-1 accuracy of argmax_c cos(z, t_c) (the logit scale does not change it)."""
    pred = (z @ text_feats.T).argmax(1).numpy()
    return float((pred == np.asarray(labels)).mean())


def participation_ratio(z: torch.Tensor) -> float:
    """(sum lambda)^2 / sum lambda^2 of the embeddings' covariance eigenvalues.

    1 for embeddings on a line, D for isotropic ones: the effective dimensionality.
    """
    zc = z.double() - z.double().mean(0, keepdim=True)
    cov = zc.T @ zc / max(1, len(z) - 1)
    lam = torch.linalg.eigvalsh(cov).clamp(min=0)
    return float(lam.sum() ** 2 / (lam**2).sum())


def retrieval_top1(z_query: torch.Tensor, z_gallery: torch.Tensor) -> float:
    """Share of queries i whose nearest gallery item (cosine) is gallery item i."""
    nearest = (z_query @ z_gallery.T).argmax(1)
    return float((nearest == torch.arange(len(z_query))).float().mean())


@torch.no_grad()
def retrieval_accuracy(tower: nn.Module, images: np.ndarray, seed: int = 0) -> float:
    """Augmented view (data.augment, seeded) -> its clean original among `images`."""
    gen = torch.Generator().manual_seed(seed)
    x = D.to_float(images)
    views = D.augment(x, gen)
    return retrieval_top1(embed(tower, views), embed(tower, x))


# ---------------------------------------------------------------- training


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of a matches row i of b, all other rows are negatives."""
    logits = scale * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = compute.pick_device(args.device)
    precision = compute.pick_precision(args.precision, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = D.load_cifar(Path(args.data), "train")
    tr_idx, va_idx = D.train_val_indices(len(images), 0.1, seed=args.seed)
    if args.limit:
        rng = np.random.default_rng(args.seed)
        tr_idx = np.sort(rng.choice(tr_idx, args.limit, replace=False))
        va_idx = np.sort(rng.choice(va_idx, max(500, args.limit // 10), replace=False))
    x_tr = torch.from_numpy(images[tr_idx]).permute(0, 3, 1, 2).contiguous()
    y_tr = torch.from_numpy(labels[tr_idx])
    x_va, y_va = images[va_idx], labels[va_idx]

    text = MiniLMText()
    t_c = class_features(text, D.CLASSES, TEMPLATES)
    t_dev = t_c.to(device)
    del text

    tower = build_tower({"width": args.width}).to(
        device, memory_format=torch.channels_last
    )
    n_params = sum(p.numel() for p in tower.parameters())
    # Both scales are fixed: learned log-scales diverge under the SGD learning rate.
    log_scale = torch.tensor(math.log(args.logit_scale), device=device)
    log_tau = torch.tensor(math.log(args.instance_scale), device=device)
    decay = [p for p in tower.parameters() if p.dim() > 1]
    no_decay = [p for p in tower.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = len(x_tr) // args.batch
    gen = torch.Generator().manual_seed(args.seed)
    if args.minutes:
        # Wall-clock schedule: the learning rate follows the elapsed share of --minutes
        # and training stops when it is spent (for a shared machine with a deadline; the
        # step count depends on the machine's load, so such a run is not bit-reproducible).
        total = 10**9
    else:
        total = args.steps or steps_per_epoch * args.epochs
    epochs = math.ceil(total / steps_per_epoch)
    warm_share = 0.15

    def lr_at(step: int, elapsed: float) -> float:
        share = elapsed / (args.minutes * 60) if args.minutes else step / total
        if share < warm_share:
            return args.lr * max(share, 1e-3) / warm_share
        share = min(1.0, (share - warm_share) / (1 - warm_share))
        return args.lr * 0.5 * (1 + math.cos(math.pi * share))

    print(
        f"tiny-lit: {n_params / 1e6:.2f} M params, {len(x_tr)} train / {len(va_idx)} val, "
        f"{f'{args.minutes} min' if args.minutes else f'{total} steps'} "
        f"(epochs of {steps_per_epoch} steps), batch {args.batch}, "
        f"{args.threads} threads, {device.type}, {precision}",
        flush=True,
    )
    train_seconds = 0.0
    cpu0 = time.process_time()
    step = 0
    history = []
    for epoch in range(epochs):
        t0 = time.time()
        tower.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        sums = np.zeros(3)
        done = False
        for i in range(min(steps_per_epoch, total - step)):
            elapsed = train_seconds + time.time() - t0
            if args.minutes and elapsed >= args.minutes * 60:
                done = True
                break
            idx = perm[i * args.batch : (i + 1) * args.batch]
            xb, yb = x_tr[idx], y_tr[idx].to(device)
            # Augmentation stays on the CPU with the seeded generator.
            v = torch.cat([D.augment(xb, gen), D.augment(xb, gen)])
            v = D.normalise(v).to(device).contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, elapsed)
            with compute.autocast(device, precision):
                z = tower(v)
            z1, z2 = z.float().chunk(2)
            scale = log_scale.exp().clamp(max=100.0)
            logits = scale * torch.cat([z1, z2]) @ t_dev.T
            loss_text = F.cross_entropy(
                logits, torch.cat([yb, yb]), label_smoothing=args.label_smoothing
            )
            loss_inst = info_nce(z1, z2, log_tau.exp().clamp(max=100.0))
            loss = loss_text + args.instance_weight * loss_inst
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sums += [loss.item(), loss_text.item(), loss_inst.item()]
            if args.limit_steps and i + 1 >= args.limit_steps:
                break
        train_seconds += time.time() - t0

        z_va = embed(tower, x_va)
        acc = zero_shot_accuracy(z_va, y_va, t_c)
        pr = participation_ratio(z_va)
        n = max(1, i + (0 if done else 1))
        row = {
            "epoch": epoch + 1,
            "loss": sums[0] / n,
            "loss_text": sums[1] / n,
            "loss_instance": sums[2] / n,
            "val_zero_shot": acc,
            "val_participation_ratio": pr,
            "logit_scale": float(log_scale.detach().exp()),
            "instance_scale": float(log_tau.detach().exp()),
            "train_minutes": train_seconds / 60,
            "cpu_minutes": (time.process_time() - cpu0) / 60,
            "steps": step,
        }
        history.append(row)
        print(
            f"epoch {epoch + 1:3d}  loss {row['loss']:.3f} (text {row['loss_text']:.3f}, "
            f"inst {row['loss_instance']:.3f})  val acc {acc:.4f}  val PR {pr:.1f}  "
            f"scale {row['logit_scale']:.1f}/{row['instance_scale']:.1f}  "
            f"{time.time() - t0:.0f} s  total {train_seconds / 60:.1f} min "
            f"(cpu {row['cpu_minutes']:.1f} min)",
            flush=True,
        )
        _save(
            out / "tower.pt", tower, log_scale, args, history, train_seconds, n_params,
            precision,
        )
        if done or step >= total:
            break

    val_retrieval = retrieval_accuracy(tower, x_va[:1000], seed=args.seed)
    history[-1]["val_retrieval_top1"] = val_retrieval
    _save(
        out / "tower.pt", tower, log_scale, args, history, train_seconds, n_params,
        precision,
    )
    print(
        f"done: {train_seconds / 60:.1f} min, val zero-shot {history[-1]['val_zero_shot']:.4f},"
        f" val retrieval top-1 {val_retrieval:.4f}, checkpoint {out / 'tower.pt'}",
        flush=True,
    )


def _save(
    path, tower, log_scale, args, history, train_seconds, n_params, precision
) -> None:
    state = {k: v.contiguous().cpu() for k, v in tower.state_dict().items()}
    ckpt = {
        "config": tower.config,
        "state_dict": state,
        "logit_scale": float(log_scale.detach().exp().clamp(max=100.0)),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": "python -m semclip_models.tiny_lit " + " ".join(sys.argv[1:]),
        "history": history,
        "train_minutes": train_seconds / 60,
        "cpu_minutes": history[-1]["cpu_minutes"] if history else 0.0,
        "total_steps": history[-1]["steps"] if history else 0,
        "threads": args.threads,
        "device": str(next(tower.parameters()).device),
        "precision": precision,
        "params": n_params,
        "split_seed": args.seed,
        "val_fraction": 0.1,
        "torch": torch.__version__,
    }
    tmp = Path(str(path) + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------- report


def report(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    tower, ckpt = load_checkpoint(Path(args.checkpoint))
    images, labels = D.load_cifar(Path(args.data), "test")
    text = MiniLMText()
    z = embed(tower, images)
    t_ens = class_features(text, D.CLASSES, TEMPLATES)
    t_one = class_features(text, D.CLASSES, ["a photo of a {}."])

    # Retrieval among 1,000 test images: 100 per class, the first of each class folder.
    pick = np.concatenate([np.flatnonzero(labels == c)[:100] for c in range(len(D.CLASSES))])
    figures = {
        "zero_shot_top1": zero_shot_accuracy(z, labels, t_ens),
        "zero_shot_top1_default_template": zero_shot_accuracy(z, labels, t_one),
        "participation_ratio": participation_ratio(z),
        "retrieval_top1": retrieval_accuracy(tower, images[pick], seed=0),
        "train_minutes": ckpt["train_minutes"],
        "train_threads": ckpt["threads"],
        "params": ckpt["params"],
        "logit_scale": ckpt["logit_scale"],
        "test_images": int(len(images)),
        "retrieval_gallery": int(len(pick)),
        "checkpoint": str(args.checkpoint),
        "command": "python -m semclip_models.tiny_lit " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("report.json")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m semclip_models.tiny_lit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the image tower on CIFAR-10 train/")
    t.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder")
    t.add_argument("--out", type=Path, required=True, help="run directory (tower.pt)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=14)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--lr", type=float, default=0.2)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--instance-weight", type=float, default=0.6)
    t.add_argument("--logit-scale", type=float, default=40.0, help="text alignment")
    t.add_argument("--instance-scale", type=float, default=10.0, help="1 / InfoNCE tau")
    t.add_argument("--steps", type=int, default=0, help="total steps (overrides --epochs)")
    t.add_argument("--minutes", type=float, default=0.0, help="set the steps from speed")
    t.add_argument("--threads", type=int, default=2, help="CPU threads")
    t.add_argument(
        "--device",
        choices=compute.DEVICES,
        default="auto",
        help="CUDA when torch sees a GPU, else the CPU (default: auto)",
    )
    t.add_argument(
        "--precision",
        choices=compute.PRECISIONS,
        default="auto",
        help="bf16 autocast where the CPU or GPU computes bf16 natively, else fp32",
    )
    t.add_argument("--limit", type=int, default=0, help="use only this many train images")
    t.add_argument("--limit-steps", type=int, default=0, help="stop each epoch early")
    r = sub.add_parser("report", help="the tower's figures on CIFAR-10 test/")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--checkpoint", type=Path, required=True)
    r.add_argument("--out", type=Path, default=None, help="JSON (default: report.json)")
    r.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        if args.cmd == "train":
            train(args)
        else:
            report(args)
    except (D.DataError, FileNotFoundError, compute.ComputeError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
