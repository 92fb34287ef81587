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

Without AF (``--no-af-snrs``) one model is trained per SNR of the list, at that SNR only:
the ablation "SemCLIP w/o TAPL and AF".

Usage::

    python -m semclip_models.train_jscc --bundle bundles/tiny-lit \\
        --data ../shared/data/cifar10 --ks 4,8,16,32 --extra-seeds 1,2 --export
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

from . import bundle as bundle_io
from . import channel, jscc
from .evaluate import RUNS_DIR, image_encoder_path, train_embeddings

CKPT_DIR = RUNS_DIR / "jscc"


def checkpoint_path(
    bundle_dir: Path, k: int, seed: int, no_af_snr: float | None = None
) -> Path:
    """Checkpoints live under the image encoder's hash: a new encoder never reuses them."""
    sha = bundle_io.sha256_file(image_encoder_path(bundle_dir))[:16]
    name = (
        f"k{k}_s{seed}.pt"
        if no_af_snr is None
        else f"k{k}_noaf_snr{no_af_snr:+.0f}_s{seed}.pt"
    )
    return CKPT_DIR / sha / name


def split_training_set(emb: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(train inputs [M,D]: clean + augmented views, validation clean [V,D])."""
    train = ~emb["is_val"]
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
        classes = np.unique(labels)
        self.labels = torch.from_numpy(np.searchsorted(classes, labels))
        self.text = None if text_features is None else text_features[classes]

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
    k: int,
    seed: int,
    steps: int,
    batch: int,
    lr: float,
    width: int,
    temperature: float,
    recon_weight: float,
    use_af: bool = True,
    fixed_snr: float | None = None,
    log=print,
) -> tuple[jscc.Jscc, jscc.LinearCode, dict]:
    """Train one JSCC code; the linear path starts at the PCA/LMMSE baseline."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    linear = jscc.LinearCode.fit(z_train, k)
    model = jscc.Jscc(linear, width, use_af)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=0.05
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
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--no-af-steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--recon-weight", type=float, default=4.0)
    p.add_argument(
        "--export", action="store_true", help="write ONNX + manifest entries"
    )
    p.add_argument(
        "--skip-existing", action="store_true", help="reuse trained checkpoints"
    )
    p.add_argument(
        "--skip-main",
        action="store_true",
        help="train only --extra-seeds and --no-af-snrs (the main models exist)",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    command = "python -m semclip_models.train_jscc " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.default_k not in args.ks:
        p.error(f"--default-k {args.default_k} must be one of --ks {args.ks}")
    emb = train_embeddings(args.bundle, args.data, args.views, seed=0)
    z_train, z_val = split_training_set(emb)
    print(f"training set {len(z_train)} embeddings, validation {len(z_val)}")
    validation = Validation(emb, base_text_features(args.bundle))
    hyper = dict(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        width=args.width,
        temperature=args.temperature,
        recon_weight=args.recon_weight,
    )

    jobs: list[tuple[int, int, float | None]] = []
    if not args.skip_main:
        jobs += [(k, args.seed, None) for k in args.ks]
    jobs += [(args.default_k, s, None) for s in args.extra_seeds]
    jobs += [(args.default_k, args.seed, snr) for snr in args.no_af_snrs]
    for k, seed, snr in jobs:
        path = checkpoint_path(args.bundle, k, seed, snr)
        path.parent.mkdir(parents=True, exist_ok=True)
        if args.skip_existing and path.is_file():
            print(f"reusing {path}")
            continue
        kw = dict(hyper)
        if snr is not None:
            kw["steps"] = args.no_af_steps
        model, linear, meta = train_one(
            z_train, validation, k, seed, use_af=snr is None, fixed_snr=snr, **kw
        )
        meta["command"] = command
        jscc.save_checkpoint(path, model, linear, meta)

    if args.export:
        entries = []
        for k in args.ks:
            model, _, meta = jscc.load_checkpoint(
                checkpoint_path(args.bundle, k, args.seed)
            )
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
            },
        )
        print(json.dumps(entries, indent=2))


if __name__ == "__main__":
    main()
