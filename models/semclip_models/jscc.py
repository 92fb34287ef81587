"""SNR-adaptive JSCC of image embeddings (SemCLIP stage 1, paper Sec. III-B).

The encoder maps an L2-normalised image embedding ``z`` [N, D] and the channel SNR in dB
to 2k reals, i.e. k complex channel uses interleaved as ``(re, im)``; the link then
power-normalises them to ``(1/k) sum |x_i|^2 = 1`` (see :mod:`semclip_models.channel`).
The decoder maps the received 2k reals and the SNR to ``z_hat`` [N, D], L2-normalised.

Each side is a *linear path plus a learned residual*:

- The linear path is initialised to the linear baseline (:class:`LinearCode`): the
  projection on the first 2k principal components of the centred embeddings, and at the
  receiver the SNR-aware linear MMSE estimate of those components, mapped back to the
  embedding space. At initialisation the JSCC code therefore *is* the linear baseline.
- An SNR-driven per-component gain (:class:`SnrGain`, 1 at initialisation) scales the
  linear path on each side, so the code can re-allocate power across components with
  the SNR.
- The residual is a small MLP with attention-feature (AF) modules (as ADJSCC): the
  features and the SNR are concatenated, a small MLP with a sigmoid produces a
  per-feature scale that multiplies the features. Its last layer starts at zero, so
  training can only move away from the linear baseline when the loss improves.

- An SNR-scheduled blend (:class:`SnrBlend`) mixes the learned code with the *frozen*
  linear baseline on both sides: the encoder sends ``alpha * s_learned + (1 - alpha) *
  s_linear`` and the decoder returns ``normalise(alpha * z_learned + (1 - alpha) *
  z_linear)``, with ``alpha(snr)`` interpolated between values at the grid SNRs. Training
  runs at ``alpha = 1``; afterwards the schedule is chosen on classes the code never saw
  (see :mod:`semclip_models.train_jscc`), so that where the learned code does not
  generalise beyond its training classes the link falls back to the linear code it
  contains.

Without AF (``use_af=False``) the residual ignores the SNR, there is no SNR gain and no
blend; this is the ablation "SemCLIP w/o TAPL and AF", trained at one SNR per model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import channel

#: SNR range (dB) that the SNR-adaptive models are trained on, per-sample uniform.
SNR_TRAIN_RANGE_DB = (-15.0, 20.0)

#: Scale applied to the SNR in dB before it enters a network (keeps inputs near 1).
SNR_INPUT_SCALE = 1.0 / 20.0

#: SNRs (dB) at which the blend schedule takes its values; linear in between, constant
#: outside.
BLEND_GRID_DB = (-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0)


@dataclass
class LinearCode:
    """Linear baseline at k channel uses: PCA projection and SNR-aware LMMSE receiver.

    Transmitter: ``s = (z - mean) @ components`` (2k reals), power-normalised by the link.
    Receiver: the link scales each frame by ``c = sqrt(k / ||s||^2)``, so it receives
    ``y = c * s + n``. The per-component linear MMSE estimate is
    ``s_hat_i = a_i / (b_i + s2 / 2) * y_i`` with ``a_i = E[c s_i^2]`` and
    ``b_i = E[c^2 s_i^2]`` measured on the fitting data (the cross terms vanish to first
    order because the principal components are uncorrelated); then
    ``z_hat = normalise(mean + components @ s_hat)``.
    """

    mean: np.ndarray  # [D]
    components: np.ndarray  # [D, 2k], orthonormal columns, by decreasing variance
    a: np.ndarray  # [2k]
    b: np.ndarray  # [2k]

    @property
    def k(self) -> int:
        return self.components.shape[1] // 2

    @classmethod
    def fit(cls, z: np.ndarray, k: int) -> "LinearCode":
        """Fit on embeddings ``z`` [N, D] (float) for k complex channel uses."""
        if z.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got {z.shape}")
        if 2 * k > z.shape[1]:
            raise ValueError(
                f"2k = {2 * k} exceeds the embedding dimension {z.shape[1]}"
            )
        z = z.astype(np.float64)
        mean = z.mean(axis=0)
        centred = z - mean
        cov = centred.T @ centred / len(z)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1][: 2 * k]
        components = eigvec[:, order]
        s = centred @ components
        c = np.sqrt(k / np.maximum((s**2).sum(axis=1, keepdims=True), 1e-12))
        a = (c * s**2).mean(axis=0)
        b = (c**2 * s**2).mean(axis=0)
        return cls(
            mean.astype(np.float32),
            components.astype(np.float32),
            a.astype(np.float32),
            b.astype(np.float32),
        )

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` -> ``[N, 2k]`` reals, not power-normalised."""
        return linear_encode(
            z, torch.from_numpy(self.mean), torch.from_numpy(self.components)
        )

    def decode(self, y: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """Received ``[N, 2k]`` and SNR ``[N, 1]`` dB -> L2-normalised ``z_hat`` [N, D]."""
        return linear_decode(
            y,
            snr_db,
            *(torch.from_numpy(v) for v in (self.mean, self.components, self.a, self.b)),
        )


def linear_encode(
    z: torch.Tensor, mean: torch.Tensor, components: torch.Tensor
) -> torch.Tensor:
    """The linear code's transmitter: ``(z - mean) @ components``."""
    return (z - mean) @ components


def linear_decode(
    y: torch.Tensor,
    snr_db: torch.Tensor,
    mean: torch.Tensor,
    components: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
) -> torch.Tensor:
    """The linear code's receiver: LMMSE estimate of the components, mapped back."""
    s_hat = lmmse_gain(a, b, snr_db) * y
    return F.normalize(mean + s_hat @ components.T, dim=-1)


def lmmse_gain(a: torch.Tensor, b: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Per-component LMMSE gain ``a / (b + s2/2)`` for SNR ``[N, 1]`` dB -> ``[N, 2k]``."""
    half_var = torch.pow(10.0, -snr_db / 10.0) / 2.0
    return a / (b + half_var)


class AttentionFeature(nn.Module):
    """AF module: features ++ SNR -> MLP -> sigmoid -> per-feature scale of the features."""

    def __init__(self, width: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(16, width // 4)
        self.net = nn.Sequential(
            nn.Linear(width + 1, hidden), nn.ReLU(), nn.Linear(hidden, width)
        )

    def forward(self, features: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(
            self.net(torch.cat([features, snr_db * SNR_INPUT_SCALE], -1))
        )
        return features * scale


class SnrGain(nn.Module):
    """Per-component gain ``2 * sigmoid(MLP(snr))`` on the linear path, 1 at initialisation.

    On the encoder side this lets the code move power between principal components as
    the SNR changes (at low SNR, onto the few strongest ones), which a fixed linear
    projection followed by per-frame power normalisation cannot do; on the decoder side
    it re-scales the LMMSE estimate to match.
    """

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.net(snr_db * SNR_INPUT_SCALE))


class SnrBlend(nn.Module):
    """``alpha(snr)`` [N, 1]: piecewise-linear through ``alphas`` at ``BLEND_GRID_DB``.

    Written as a sum of hat functions over the clamped SNR so that it exports to plain
    ONNX arithmetic. The values are a buffer, not parameters: they are set by selection
    after training, never by gradient descent.
    """

    def __init__(self, grid_db=BLEND_GRID_DB):
        super().__init__()
        grid = torch.tensor(grid_db, dtype=torch.float32)
        steps = grid[1:] - grid[:-1]
        if not bool((steps > 0).all()) or not torch.allclose(steps, steps[0]):
            raise ValueError(f"blend grid must be evenly spaced and rising: {grid_db}")
        self.register_buffer("grid", grid)
        self.register_buffer("alphas", torch.ones_like(grid))
        self.step = float(steps[0])
        self.lo, self.hi = float(grid_db[0]), float(grid_db[-1])

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        snr = snr_db.clamp(self.lo, self.hi)
        hats = F.relu(1.0 - (snr - self.grid).abs() / self.step)  # [N, G]
        return (hats * self.alphas).sum(-1, keepdim=True)

    def set(self, alphas) -> None:
        values = torch.as_tensor(alphas, dtype=torch.float32).reshape(-1)
        if values.shape != self.alphas.shape:
            raise ValueError(
                f"need {self.alphas.numel()} blend values, got {values.numel()}"
            )
        if not bool(((values >= 0) & (values <= 1)).all()):
            raise ValueError(f"blend values must lie in [0, 1], got {values.tolist()}")
        self.alphas.copy_(values)


class ResidualMLP(nn.Module):
    """Two dense layers, each followed by an AF module (or none), and a zero-init output."""

    def __init__(self, d_in: int, width: int, d_out: int, use_af: bool):
        super().__init__()
        self.use_af = use_af
        self.fc1 = nn.Linear(d_in + (1 if use_af else 0), width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if use_af:
            self.af1 = AttentionFeature(width)
            self.af2 = AttentionFeature(width)

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        if self.use_af:
            h = F.gelu(self.fc1(torch.cat([x, snr_db * SNR_INPUT_SCALE], -1)))
            h = self.af1(h, snr_db)
            h = self.af2(F.gelu(self.fc2(h)), snr_db)
        else:
            h = F.gelu(self.fc2(F.gelu(self.fc1(x))))
        return self.out(h)


class JsccEncoder(nn.Module):
    """``z`` [N, D], ``snr_db`` [N, 1] -> ``symbols`` [N, 2k] (before power normalisation)."""

    def __init__(self, linear: LinearCode, width: int = 256, use_af: bool = True):
        super().__init__()
        d, two_k = linear.components.shape
        self.linear = nn.Linear(d, two_k)
        with torch.no_grad():
            w = torch.from_numpy(linear.components)
            self.linear.weight.copy_(w.T)
            self.linear.bias.copy_(-(torch.from_numpy(linear.mean) @ w))
        self.residual = ResidualMLP(d, width, two_k, use_af)
        self.gain = SnrGain(two_k) if use_af else None
        self.blend = SnrBlend() if use_af else None
        # The frozen linear baseline the blend falls back to.
        self.register_buffer("base_mean", torch.from_numpy(linear.mean).clone())
        self.register_buffer("base_components", torch.from_numpy(linear.components).clone())

    def forward(self, z: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        s = self.linear(z)
        if self.gain is not None:
            s = s * self.gain(snr_db)
        s = s + self.residual(z, snr_db)
        if self.blend is None:
            return s
        alpha = self.blend(snr_db)
        base = linear_encode(z, self.base_mean, self.base_components)
        return alpha * s + (1.0 - alpha) * base


class JsccDecoder(nn.Module):
    """Received ``symbols`` [N, 2k], ``snr_db`` [N, 1] -> ``z_hat`` [N, D] L2-normalised."""

    def __init__(self, linear: LinearCode, width: int = 256, use_af: bool = True):
        super().__init__()
        d, two_k = linear.components.shape
        # LMMSE gains a / (b + s2/2), kept positive through a log parameterisation.
        self.log_a = nn.Parameter(torch.from_numpy(np.log(linear.a)).clone())
        self.log_b = nn.Parameter(torch.from_numpy(np.log(linear.b)).clone())
        self.linear = nn.Linear(two_k, d)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(linear.components))
            self.linear.bias.copy_(torch.from_numpy(linear.mean))
        self.residual = ResidualMLP(two_k, width, d, use_af)
        self.gain = SnrGain(two_k) if use_af else None
        self.blend = SnrBlend() if use_af else None
        for name, value in (
            ("base_mean", linear.mean),
            ("base_components", linear.components),
            ("base_a", linear.a),
            ("base_b", linear.b),
        ):
            self.register_buffer(name, torch.from_numpy(value).clone())

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        s_hat = lmmse_gain(self.log_a.exp(), self.log_b.exp(), snr_db) * symbols
        if self.gain is not None:
            s_hat = s_hat * self.gain(snr_db)
        z = F.normalize(self.linear(s_hat) + self.residual(s_hat, snr_db), dim=-1)
        if self.blend is None:
            return z
        alpha = self.blend(snr_db)
        z_base = linear_decode(
            symbols,
            snr_db,
            self.base_mean,
            self.base_components,
            self.base_a,
            self.base_b,
        )
        return F.normalize(alpha * z + (1.0 - alpha) * z_base, dim=-1)


class Jscc(nn.Module):
    """Encoder, channel and decoder of one k, as trained end to end."""

    def __init__(self, linear: LinearCode, width: int = 256, use_af: bool = True):
        super().__init__()
        self.k = linear.k
        self.use_af = use_af
        self.width = width
        self.encoder = JsccEncoder(linear, width, use_af)
        self.decoder = JsccDecoder(linear, width, use_af)

    def set_blend(self, alphas) -> None:
        """Blend values at ``BLEND_GRID_DB`` (1 = learned code, 0 = linear baseline)."""
        if self.encoder.blend is None:
            raise ValueError("a code without AF has no SNR blend")
        self.encoder.blend.set(alphas)
        self.decoder.blend.set(alphas)

    def blend_values(self) -> list[float] | None:
        if self.encoder.blend is None:
            return None
        return [round(float(a), 4) for a in self.encoder.blend.alphas]

    def forward(
        self,
        z: torch.Tensor,
        snr_db: torch.Tensor,
        generator: torch.Generator | None = None,
        fading: str = "awgn",
    ) -> torch.Tensor:
        """Send ``z`` [N, D] at ``snr_db`` [N, 1] and return ``z_hat`` [N, D]."""
        symbols = self.encoder(z, snr_db)
        received, snr_rx = channel.transmit(symbols, snr_db, generator, fading)
        return self.decoder(received, snr_rx)


def info_nce(z: torch.Tensor, z_hat: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 7: symmetric InfoNCE between transmitted and received embeddings of a batch."""
    logits = F.normalize(z_hat, dim=-1) @ F.normalize(z, dim=-1).T / temperature
    labels = torch.arange(len(z), device=z.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def stage1_loss(
    z: torch.Tensor, z_hat: torch.Tensor, temperature: float, recon_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 7 plus ``recon_weight * mean(1 - cos(z, z_hat))``."""
    contrastive = info_nce(z, z_hat, temperature)
    recon = (1.0 - F.cosine_similarity(z, z_hat, dim=-1)).mean()
    total = contrastive + recon_weight * recon
    return total, {
        "info_nce": float(contrastive.detach()),
        "recon": float(recon.detach()),
    }


def save_checkpoint(path, model: Jscc, linear: LinearCode, meta: dict) -> None:
    torch.save(
        {
            "state_dict": model.state_dict(),
            "linear": {
                "mean": linear.mean,
                "components": linear.components,
                "a": linear.a,
                "b": linear.b,
            },
            "width": model.width,
            "use_af": model.use_af,
            "meta": meta,
        },
        path,
    )


def load_checkpoint(path) -> tuple[Jscc, LinearCode, dict]:
    ckpt = torch.load(path, weights_only=False)
    linear = LinearCode(**ckpt["linear"])
    model = Jscc(linear, ckpt["width"], ckpt["use_af"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, linear, ckpt["meta"]
