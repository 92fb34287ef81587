"""Transmission-aware prompt learning (TAPL, paper Sec. III-C, Eq. 6).

A meta-net (``D -> D/16 -> W``, ReLU) maps the received embedding ``z_hat`` to a bias that
is added to each of ``n_ctx = 4`` learnable context vectors, initialised from the token
embeddings of "a photo of a". The prompt of class ``c`` is the token sequence of
``"X X X X {c}."`` with the tokenizer's special tokens ([CLS] ... [SEP] for MiniLM); the
embeddings at positions ``context_start .. context_start + n_ctx`` (1..4) are replaced by
``context + bias(z_hat)``, the others are rows of the frozen token-embedding table. The
frozen text encoder turns the sequence into the class feature ``t_c``, and Eq. 5 gives
``softmax_c(logit_scale * cos(z_hat, t_c))``.

This is exactly how the Rust receiver builds the prompts from the bundle (docs/bundle.md:
``tapl.placeholder = "X"``, ``tapl.context_start = 1``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .text_tower import MiniLMText

N_CTX = 4
CONTEXT_INIT = "a photo of a"
PLACEHOLDER = "X"
CONTEXT_START = 1


def prompt_text(label: str, n_ctx: int = N_CTX) -> str:
    """The prompt text whose placeholder tokens are replaced: ``"X X X X {label}."``."""
    return " ".join([PLACEHOLDER] * n_ctx) + f" {label}."


class MetaNet(nn.Module):
    """``z_hat`` [N, D] -> context bias [N, W]: Linear(D, D/16), ReLU, Linear(D/16, W).

    The output layer starts at zero, so an untrained TAPL equals the plain template
    "a photo of a {label}.".
    """

    def __init__(self, embed_dim: int, width: int):
        super().__init__()
        hidden = max(1, embed_dim // 16)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(z_hat)))


class PromptTokens:
    """Token ids and attention masks of the class prompts, padded to the longest."""

    def __init__(self, text: MiniLMText, labels: list[str], n_ctx: int = N_CTX):
        ids, mask = text.tokenize([prompt_text(c, n_ctx) for c in labels])
        placeholder = text.tokenizer.encode(PLACEHOLDER, add_special_tokens=False).ids
        if len(placeholder) != 1:
            raise ValueError(f"placeholder {PLACEHOLDER!r} is not a single token")
        ctx = ids[:, CONTEXT_START : CONTEXT_START + n_ctx]
        if not bool((ctx == placeholder[0]).all()):
            raise ValueError(
                f"prompt tokens at positions {CONTEXT_START}..{CONTEXT_START + n_ctx - 1} "
                f"are not the placeholder: {ids.tolist()}"
            )
        self.labels = list(labels)
        self.ids = ids
        self.mask = mask


class Tapl(nn.Module):
    """Meta-net + context vectors on top of a frozen text encoder."""

    def __init__(
        self, text: MiniLMText, embed_dim: int, logit_scale: float, n_ctx=N_CTX
    ):
        super().__init__()
        self.text = text
        self.n_ctx = n_ctx
        self.logit_scale = float(logit_scale)
        init_ids = text.tokenizer.encode(CONTEXT_INIT, add_special_tokens=False).ids
        if len(init_ids) != n_ctx:
            raise ValueError(
                f"{CONTEXT_INIT!r} is {len(init_ids)} tokens, n_ctx is {n_ctx}"
            )
        with torch.no_grad():
            init = text.token_embedding[torch.tensor(init_ids)].clone()
        self.context = nn.Parameter(init)
        self.meta_net = MetaNet(embed_dim, text.width)

    def prompt_embeddings(
        self,
        z_hat: torch.Tensor,
        prompts: PromptTokens,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings [N*C, L, W] and mask [N*C, L] of every (image, class) pair.

        ``bias`` [N, W] replaces the meta-net's output when given (e.g. computed by the
        exported meta-net ONNX).
        """
        n, c = len(z_hat), len(prompts.labels)
        base = self.text.token_embedding[prompts.ids]  # [C, L, W]
        if bias is None:
            bias = self.meta_net(z_hat)
        ctx = self.context[None] + bias[:, None]  # [N, n_ctx, W]
        start, end = CONTEXT_START, CONTEXT_START + self.n_ctx
        embeds = torch.cat(
            [
                base[None, :, :start].expand(n, -1, -1, -1),
                ctx[:, None].expand(-1, c, -1, -1),
                base[None, :, end:].expand(n, -1, -1, -1),
            ],
            dim=2,
        )
        mask = prompts.mask[None].expand(n, -1, -1)
        return embeds.reshape(n * c, *embeds.shape[2:]), mask.reshape(n * c, -1)

    def class_features(
        self,
        z_hat: torch.Tensor,
        prompts: PromptTokens,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Transmission-aware text features ``t_c`` [N, C, W] (L2-normalised)."""
        embeds, mask = self.prompt_embeddings(z_hat, prompts, bias)
        return self.text(embeds, mask).reshape(len(z_hat), len(prompts.labels), -1)

    def logits(
        self,
        z_hat: torch.Tensor,
        prompts: PromptTokens,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 5 logits ``logit_scale * cos(z_hat, t_c)`` [N, C]."""
        t = self.class_features(z_hat, prompts, bias)
        return self.logit_scale * torch.einsum(
            "nd,ncd->nc", F.normalize(z_hat, dim=-1), t
        )


def context_array(model: Tapl) -> np.ndarray:
    return model.context.detach().cpu().numpy().astype(np.float32)
