"""Where a training job runs: the device and the precision of its forward passes.

- Device ``auto`` (the default) takes the first CUDA device when torch sees one, the CPU
  otherwise; ``cuda`` and ``cpu`` force it (``cuda`` without a visible device is an error).
- Precision ``auto`` uses bfloat16 autocast where the hardware computes in bfloat16
  natively: a CUDA device that supports it, or a CPU with AVX512-BF16 or AMX (oneDNN's own
  check). On other CPUs bfloat16 is emulated and slower than float32, so ``auto`` keeps
  float32 there; ``bf16`` and ``fp32`` force either.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


class ComputeError(RuntimeError):
    """A requested device or precision is not available here."""


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise ComputeError(f"device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ComputeError(
            "device 'cuda': torch sees no CUDA device (use --device cpu or auto)"
        )
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for ``name`` (one of ``PRECISIONS``) on ``device``."""
    if name not in PRECISIONS:
        raise ComputeError(
            f"precision {name!r}: expected one of {', '.join(PRECISIONS)}"
        )
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
