"""Image-transmission baseline: DeepJSCC of the image itself (learned, SNR-adaptive).

Instead of an embedding, the transmitter sends the 32x32x3 image through a convolutional
joint source-channel code (after Bourtsoulatze et al., "Deep joint source-channel coding
for wireless image transmission", with ADJSCC's attention-feature modules so that one
model serves every SNR); the receiver reconstructs the image and runs the bundle's image
encoder on it, then answers zero-shot questions as the embedding link does. This is the
"send the image" alternative whose channel uses SemCLIP is compared with.

Encoder: two stride-2 5x5 convolutions (32x32 -> 16x16 -> 8x8), two 3x3 convolutions,
PReLU, an AF module after each hidden layer, output ``c = 2k / 64`` channels at 8x8, i.e.
2k reals = k complex channel uses, power-normalised per image to
``(1/k) sum |x_i|^2 = 1``. AWGN ``CN(0, s2)``, ``SNR_dB = 10 log10(1 / s2)`` (as everywhere
in this package, :mod:`semclip_models.channel`). The decoder mirrors the encoder with
transposed convolutions and ends in a sigmoid (pixels in [0, 1]).

Training: mean squared error of the pixels, every image of train/ minus its validation
part (labels unused: the code is task-agnostic, and seeing all ten classes only makes
this baseline stronger than SemCLIP's base-class-only training), random flips, SNR drawn
per image uniform over the same range as SemCLIP's JSCC. k must be a multiple of 32.

Usage::

    python -m semclip_models.image_jscc train --data ../shared/data/cifar10 \\
        --ks 32,128,512
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import channel
from . import data as D
from .jscc import SNR_INPUT_SCALE, SNR_TRAIN_RANGE_DB
from .train_jscc import _ints

#: Where trained image codes live (rebuildable, ignored by git): k{k}_s{seed}.pt
CKPT_DIR = Path(__file__).resolve().parents[1] / "runs" / "deepjscc_image"

#: Spatial size of the latent: the encoder downsamples 32x32 by 4.
LATENT_SIDE = 8


def channels_for(k: int) -> int:
    """Latent channels c with ``8 * 8 * c = 2k`` reals; k must be a multiple of 32."""
    if k <= 0 or (2 * k) % (LATENT_SIDE * LATENT_SIDE):
        raise ValueError(f"k must be a positive multiple of 32 for a 32x32 image, got {k}")
    return 2 * k // (LATENT_SIDE * LATENT_SIDE)


class AttentionFeature(nn.Module):
    """ADJSCC's AF module: channel means and the SNR -> a sigmoid scale per channel."""

    def __init__(self, c: int, hidden: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(c + 1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c)
        )

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        ctx = torch.cat([x.mean(dim=(2, 3)), snr_db * SNR_INPUT_SCALE], dim=1)
        return x * torch.sigmoid(self.mlp(ctx))[:, :, None, None]


class ImageJscc(nn.Module):
    """Pixels in [0, 1] [N,3,32,32] + SNR [N,1] (dB) -> reconstructed pixels, via k uses."""

    def __init__(self, k: int, width: int = 64) -> None:
        super().__init__()
        c = channels_for(k)
        w = width
        self.k = k
        self.config = {"k": k, "width": width}
        self.enc = nn.ModuleList(
            [
                nn.Conv2d(3, w // 2, 5, stride=2, padding=2),
                nn.Conv2d(w // 2, w, 5, stride=2, padding=2),
                nn.Conv2d(w, w, 3, padding=1),
                nn.Conv2d(w, c, 3, padding=1),
            ]
        )
        self.enc_act = nn.ModuleList([nn.PReLU(n) for n in (w // 2, w, w)])
        self.enc_af = nn.ModuleList([AttentionFeature(n) for n in (w // 2, w, w)])
        self.dec = nn.ModuleList(
            [
                nn.Conv2d(c, w, 3, padding=1),
                nn.Conv2d(w, w, 3, padding=1),
                nn.ConvTranspose2d(w, w // 2, 5, stride=2, padding=2, output_padding=1),
                nn.ConvTranspose2d(w // 2, 3, 5, stride=2, padding=2, output_padding=1),
            ]
        )
        self.dec_act = nn.ModuleList([nn.PReLU(n) for n in (w, w, w // 2)])
        self.dec_af = nn.ModuleList([AttentionFeature(n) for n in (w, w, w // 2)])

    def encode(self, pixels: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """[N,3,32,32] in [0, 1] -> power-normalised symbols [N, 2k] (interleaved re/im)."""
        x = D.normalise(pixels)
        for conv, act, af in zip(self.enc[:-1], self.enc_act, self.enc_af):
            x = af(act(conv(x)), snr_db)
        return channel.power_normalise(self.enc[-1](x).flatten(1).float())

    def decode(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """Received symbols [N, 2k] -> pixels [N,3,32,32] in [0, 1]."""
        x = symbols.reshape(len(symbols), -1, LATENT_SIDE, LATENT_SIDE)
        for conv, act, af in zip(self.dec[:-1], self.dec_act, self.dec_af):
            x = af(act(conv(x)), snr_db)
        return torch.sigmoid(self.dec[-1](x).float())

    def forward(
        self, pixels: torch.Tensor, snr_db: torch.Tensor, gen: torch.Generator | None
    ) -> torch.Tensor:
        y = channel.awgn(self.encode(pixels, snr_db), snr_db, gen)
        return self.decode(y, snr_db)


def checkpoint_path(k: int, seed: int = 0) -> Path:
    return CKPT_DIR / f"k{k}_s{seed}.pt"


def load_checkpoint(path: Path) -> tuple[ImageJscc, dict]:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    model = ImageJscc(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt["meta"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of pixels in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def transmit_images(
    model: ImageJscc, pixels: torch.Tensor, snr_db: float, gen: torch.Generator, batch=500
) -> torch.Tensor:
    """Received images of float pixels [N,3,32,32] in [0, 1] at one SNR."""
    out = []
    for i in range(0, len(pixels), batch):
        x = pixels[i : i + batch]
        out.append(model(x, torch.full((len(x), 1), float(snr_db)), gen))
    return torch.cat(out)


def train_one(
    x_train: torch.Tensor, x_val: torch.Tensor, k: int, args: argparse.Namespace, log=print
) -> tuple[ImageJscc, dict]:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = ImageJscc(k, args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    lo, hi = SNR_TRAIN_RANGE_DB
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        x = D.to_float(x_train[idx])
        flip = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        snr = lo + (hi - lo) * torch.rand((len(x), 1), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            x_hat = model(x, snr, gen)
        loss = F.mse_loss(x_hat.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            log(
                f"k={k} step {step}/{args.steps} mse {float(loss.detach()):.5f} "
                f"({(time.time() - t0) / (step + 1) * 1000:.0f} ms/step)"
            )
    model.eval()
    val = {}
    xv = D.to_float(x_val)
    for snr in (-15.0, -5.0, 5.0, 15.0):
        x_hat = transmit_images(model, xv, snr, torch.Generator().manual_seed(99))
        val[str(snr)] = float(psnr(x_hat, xv).mean())
    log(f"k={k} validation PSNR: " + ", ".join(f"{s} dB: {p:.2f}" for s, p in val.items()))
    meta = {
        "k": k,
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "width": args.width,
        "snr_train_range_db": list(SNR_TRAIN_RANGE_DB),
        "train_seconds": round(time.time() - t0, 1),
        "validation_psnr_db": val,
        "training_set": "train/ minus its validation part, all classes, random flips",
    }
    return model, meta


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    images, _ = D.load_cifar(Path(args.data), "train")
    tr_idx, va_idx = D.train_val_indices(len(images))
    x_train = torch.from_numpy(images[tr_idx]).permute(0, 3, 1, 2).contiguous()
    x_val = torch.from_numpy(images[va_idx[:1000]]).permute(0, 3, 1, 2).contiguous()
    command = "python -m semclip_models.image_jscc " + shlex.join(sys.argv[1:])
    CKPT_DIR.mkdir(parents=True, exist_ok=True)
    for k in args.ks:
        path = checkpoint_path(k, args.seed)
        if args.skip_existing and path.is_file():
            print(f"reusing {path}")
            continue
        model, meta = train_one(x_train, x_val, k, args)
        meta["command"] = command
        tmp = path.with_suffix(".tmp")
        torch.save({"config": model.config, "state_dict": model.state_dict(), "meta": meta}, tmp)
        tmp.replace(path)
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m semclip_models.image_jscc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one image code per k")
    t.add_argument("--data", type=Path, required=True, help="CIFAR-10 folder")
    t.add_argument(
        "--ks",
        type=_ints,
        default=[32, 128, 512],
        help="channel uses per image, multiples of 32",
    )
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--width", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in fp32")
    t.add_argument("--skip-existing", action="store_true", help="keep trained codes")
    args = p.parse_args(argv)
    for k in args.ks:
        try:
            channels_for(k)
        except ValueError as e:
            p.error(str(e))
    try:
        train(args)
    except (D.DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
