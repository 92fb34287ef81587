"""The transmission schemes that the evaluation compares, behind one interface.

A scheme maps transmitted embeddings ``z`` [N, D] (L2-normalised), a channel SNR in dB
(per-symbol, ``snr_db = 10 log10(1 / s2)`` with unit symbol energy) and a noise generator
to received embeddings ``z_hat`` [N, D]. All of them power-normalise every frame to
``(1/k) sum |x_i|^2 = 1`` and add ``CN(0, s2)`` noise (:mod:`semclip_models.channel`).

- :class:`UpperBound`: no channel, ``z_hat = z``.
- :class:`ClipFt`: the embedding sent uncoded as ``D/2`` complex symbols (paper's CLIP-FT);
  the receiver re-normalises ``y``. With ``match_energy_k`` the per-symbol SNR is lowered
  by ``10 log10(D / (2k))``, so that the *energy per image* equals that of a k-symbol code.
- :class:`LinearScheme`: the first 2k principal components, power-normalised, and the
  SNR-aware linear MMSE receiver (:class:`semclip_models.jscc.LinearCode`).
- :class:`TorchJscc`: a trained JSCC checkpoint (SemCLIP w/o TAPL, or w/o TAPL and AF).
- :class:`OnnxJscc`: the JSCC encoder/decoder ONNX pair of a bundle (what the link runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch.nn import functional as F

from . import channel, jscc


class Scheme:
    """``z`` [N, D] float tensor, SNR (dB), generator -> ``z_hat`` [N, D]."""

    name: str = "scheme"
    #: complex channel uses per image (None: no channel)
    k: int | None = None

    def __call__(
        self, z: torch.Tensor, snr_db: float, gen: torch.Generator
    ) -> torch.Tensor:
        raise NotImplementedError


class UpperBound(Scheme):
    name = "upper_bound"

    def __call__(self, z, snr_db, gen):
        return z


class ClipFt(Scheme):
    """Uncoded embedding, ``D/2`` channel uses, optionally at the energy of k uses."""

    def __init__(self, embed_dim: int, match_energy_k: int | None = None):
        if embed_dim % 2:
            raise ValueError(f"embedding dimension {embed_dim} is odd")
        # Rows are reported under the k they are compared with: D/2 for the plain
        # CLIP-FT, the matched code's k for the same-energy variant (which still uses
        # D/2 channel uses, each at a lower SNR).
        self.k = embed_dim // 2 if match_energy_k is None else match_energy_k
        self.channel_uses = embed_dim // 2
        self.match_energy_k = match_energy_k
        self.offset_db = 0.0
        if match_energy_k is not None:
            self.offset_db = 10.0 * math.log10(embed_dim / (2.0 * match_energy_k))
        self.name = "clip_ft" if match_energy_k is None else "clip_ft_same_energy"

    def __call__(self, z, snr_db, gen):
        x = channel.power_normalise(z)
        y = channel.awgn(x, snr_db - self.offset_db, gen)
        return F.normalize(y, dim=-1)


class LinearScheme(Scheme):
    name = "linear"

    def __init__(self, code: jscc.LinearCode):
        self.code = code
        self.k = code.k

    def __call__(self, z, snr_db, gen):
        snr = torch.full((len(z), 1), float(snr_db))
        y, _ = channel.transmit(self.code.encode(z), snr, gen)
        return self.code.decode(y, snr)


class TorchJscc(Scheme):
    def __init__(self, path: Path, name: str = "semclip_no_tapl"):
        self.model, _, self.meta = jscc.load_checkpoint(path)
        self.k = self.model.k
        self.name = name

    @torch.no_grad()
    def __call__(self, z, snr_db, gen):
        return self.model(z, torch.full((len(z), 1), float(snr_db)), gen)


class OnnxJscc(Scheme):
    """The bundle's ONNX encoder, the link's power normalisation and AWGN, the decoder."""

    def __init__(
        self, encoder: Path, decoder: Path, k: int, name: str = "semclip_no_tapl"
    ):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        cpu = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder), opts, providers=cpu)
        self.decoder = ort.InferenceSession(str(decoder), opts, providers=cpu)
        self.k = k
        self.name = name

    def encode(self, z: np.ndarray, snr: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"z": z, "snr_db": snr})[0]

    def decode(self, y: np.ndarray, snr: np.ndarray) -> np.ndarray:
        return self.decoder.run(None, {"symbols": y, "snr_db": snr})[0]

    def __call__(self, z, snr_db, gen):
        snr = np.full((len(z), 1), float(snr_db), dtype=np.float32)
        symbols = torch.from_numpy(self.encode(z.numpy().astype(np.float32), snr))
        y = channel.awgn(channel.power_normalise(symbols), snr_db, gen)
        return torch.from_numpy(self.decode(y.numpy().astype(np.float32), snr))


def jpeg_scan_bits(encoded: bytes) -> int:
    """Bits of a baseline JPEG's entropy-coded scan (the part after the SOS header).

    The headers (quantisation and Huffman tables, frame size) are fixed by the quality
    setting and the image size, so both ends can know them in advance; only the scan has
    to cross the channel.
    """
    sos = encoded.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no start-of-scan marker in JPEG data")
    header_len = int.from_bytes(encoded[sos + 2 : sos + 4], "big")
    end = encoded.rfind(b"\xff\xd9")
    return 8 * (end - (sos + 2 + header_len))


def jpeg_roundtrip(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """JPEG-compress uint8 NHWC images; return (decoded images, scan bits per image)."""
    import io

    from PIL import Image

    out = np.empty_like(images)
    bits = np.empty(len(images), dtype=np.int64)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        data = buf.getvalue()
        bits[i] = jpeg_scan_bits(data)
        with Image.open(io.BytesIO(data)) as im:
            out[i] = np.asarray(im.convert("RGB"))
    return out, bits


def capacity_channel_uses(bits: float, snr_db: float) -> float:
    """Channel uses an ideal capacity-achieving code needs for ``bits`` at ``snr_db``:
    ``bits / log2(1 + 10^(snr_db/10))`` (AWGN, unit symbol energy)."""
    return bits / math.log2(1.0 + 10.0 ** (snr_db / 10.0))
