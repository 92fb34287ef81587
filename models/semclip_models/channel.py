"""Channel models of the link: power normalisation, AWGN and Rayleigh block fading.

Conventions (the same as the Rust channel simulator and docs/bundle.md):

- A frame of k complex channel uses is carried as 2k reals interleaved
  ``(re0, im0, re1, im1, ...)``; tensors here have shape ``[N, 2k]``.
- Power constraint per image: ``(1/k) * sum_i |x_i|^2 = 1`` exactly after
  :func:`power_normalise`.
- AWGN: ``y = x + n`` with ``n ~ CN(0, s2)``, i.e. variance ``s2 / 2`` per real part,
  and ``snr_db = 10 * log10(1 / s2)`` (unit symbol energy ``Es = 1``).
- Rayleigh block fading: ``y = h * x + n`` with one ``h ~ CN(0, 1)`` per frame (per
  row); the receiver is told ``h`` and equalises coherently (:func:`equalise`), which
  leaves an AWGN channel at the effective SNR ``snr_db + 10 * log10(|h|^2)``.

Every random function takes a ``torch.Generator`` (or a numpy ``Generator`` for the
numpy variants) so that a seeded run is reproducible bit for bit on one machine.
"""

from __future__ import annotations

import numpy as np
import torch


def noise_variance(snr_db: torch.Tensor | float) -> torch.Tensor:
    """Complex noise variance ``s2 = 10^(-snr_db/10)`` for unit symbol energy."""
    snr = torch.as_tensor(snr_db, dtype=torch.float32)
    return torch.pow(10.0, -snr / 10.0)


def power_normalise(symbols: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each row of ``[N, 2k]`` interleaved reals to ``(1/k) sum |x_i|^2 = 1``."""
    _check_symbols(symbols)
    k = symbols.shape[1] // 2
    energy = symbols.pow(2).sum(dim=1, keepdim=True)
    return symbols * torch.sqrt(k / energy.clamp_min(eps))


def _check_symbols(symbols: torch.Tensor) -> None:
    if symbols.dim() != 2 or symbols.shape[1] % 2 != 0 or symbols.shape[1] == 0:
        raise ValueError(
            "symbols must have shape [N, 2k] (interleaved re/im), got "
            f"{tuple(symbols.shape)}"
        )


def _snr_column(snr_db: torch.Tensor | float, n: int) -> torch.Tensor:
    """SNR in dB as an ``[N, 1]`` float tensor (a scalar is broadcast to every row)."""
    snr = torch.as_tensor(snr_db, dtype=torch.float32)
    if snr.dim() == 0:
        return snr.expand(n, 1).clone()
    snr = snr.reshape(-1, 1)
    if snr.shape[0] != n:
        raise ValueError(f"snr_db has {snr.shape[0]} rows, symbols have {n}")
    return snr


def awgn(
    symbols: torch.Tensor,
    snr_db: torch.Tensor | float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add complex Gaussian noise ``CN(0, s2)`` at ``snr_db`` (per row or scalar).

    The input is expected to be power-normalised (unit energy per complex symbol);
    the noise does not depend on the actual signal power.
    """
    _check_symbols(symbols)
    snr = _snr_column(snr_db, symbols.shape[0]).to(symbols.device)
    std = torch.sqrt(noise_variance(snr) / 2.0).to(symbols.dtype)
    noise = torch.randn(
        symbols.shape, generator=generator, dtype=symbols.dtype, device=symbols.device
    )
    return symbols + std * noise


def _as_complex(symbols: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(symbols.reshape(symbols.shape[0], -1, 2).contiguous())


def _as_real(symbols: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(symbols).reshape(symbols.shape[0], -1)


def rayleigh_block(
    symbols: torch.Tensor,
    snr_db: torch.Tensor | float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rayleigh block fading plus AWGN: ``y = h * x + n``, one ``h ~ CN(0, 1)`` per row.

    Returns ``(y, h)`` with ``y`` as ``[N, 2k]`` interleaved reals and ``h`` as ``[N]``
    complex (the coherent receiver is told ``h``).
    """
    _check_symbols(symbols)
    n = symbols.shape[0]
    h_parts = torch.randn((n, 2), generator=generator, dtype=symbols.dtype)
    h = torch.view_as_complex((h_parts / np.sqrt(2.0)).contiguous())
    faded = _as_real(_as_complex(symbols) * h[:, None])
    return awgn(faded, snr_db, generator), h


def equalise(
    received: torch.Tensor, h: torch.Tensor, snr_db: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-forcing equalisation ``y / h`` and the effective SNR in dB per row.

    After equalisation the noise is ``CN(0, s2 / |h|^2)``, so the decoder sees an AWGN
    channel at ``snr_db + 10 * log10(|h|^2)``.
    """
    _check_symbols(received)
    snr = _snr_column(snr_db, received.shape[0])
    gain = h.abs().pow(2).clamp_min(1e-12)
    y = _as_real(_as_complex(received) / h[:, None])
    return y, snr + 10.0 * torch.log10(gain).reshape(-1, 1).to(snr.dtype)


def transmit(
    symbols: torch.Tensor,
    snr_db: torch.Tensor | float,
    generator: torch.Generator | None = None,
    fading: str = "awgn",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power-normalise, send over the channel, and (for fading) equalise.

    Returns ``(received [N, 2k], snr_db_at_decoder [N, 1])``; for AWGN the second is the
    channel SNR, for Rayleigh fading the effective SNR after coherent equalisation.
    """
    x = power_normalise(symbols)
    if fading == "awgn":
        return awgn(x, snr_db, generator), _snr_column(snr_db, x.shape[0])
    if fading == "rayleigh":
        y, h = rayleigh_block(x, snr_db, generator)
        return equalise(y, h, snr_db)
    raise ValueError(f"unknown fading model {fading!r}; expected 'awgn' or 'rayleigh'")


def awgn_np(
    symbols: np.ndarray, snr_db: float | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Numpy variant of :func:`awgn` for ``[N, 2k]`` float arrays."""
    if symbols.ndim != 2 or symbols.shape[1] % 2 != 0:
        raise ValueError(f"symbols must have shape [N, 2k], got {symbols.shape}")
    snr = np.broadcast_to(
        np.asarray(snr_db, dtype=np.float64).reshape(-1, 1), (len(symbols), 1)
    )
    std = np.sqrt(10.0 ** (-snr / 10.0) / 2.0)
    return (symbols + std * rng.standard_normal(symbols.shape)).astype(symbols.dtype)
