"""JSCC shapes, power, initialisation at the linear baseline, and ONNX export parity."""

import numpy as np
import pytest
import torch

from semclip_models import baselines, channel, jscc
from semclip_models.train_jscc import Validation, export_onnx, train_one

torch.set_num_threads(1)


def _embeddings(n=3000, d=64, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)) * np.linspace(2.0, 0.05, d)
    z += 0.5
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def test_linear_code_fit():
    z = _embeddings()
    code = jscc.LinearCode.fit(z, 4)
    assert code.components.shape == (64, 8)
    # Orthonormal components.
    gram = code.components.T @ code.components
    assert np.allclose(gram, np.eye(8), atol=1e-5)
    with pytest.raises(ValueError):
        jscc.LinearCode.fit(z, 40)


def test_shapes_and_power():
    z = torch.from_numpy(_embeddings(200))
    model = jscc.Jscc(jscc.LinearCode.fit(z.numpy(), 8), width=32)
    snr = torch.full((200, 1), 3.0)
    symbols = model.encoder(z, snr)
    assert symbols.shape == (200, 16)
    x = channel.power_normalise(symbols)
    assert torch.allclose(x.pow(2).sum(1) / 8, torch.ones(200), atol=1e-5)
    z_hat = model(z, snr, torch.Generator().manual_seed(0))
    assert z_hat.shape == (200, 64)
    assert torch.allclose(z_hat.norm(dim=1), torch.ones(200), atol=1e-5)


@pytest.mark.parametrize("use_af", [True, False])
def test_initialisation_equals_linear_baseline(use_af):
    z = torch.from_numpy(_embeddings(500))
    code = jscc.LinearCode.fit(z.numpy(), 4)
    model = jscc.Jscc(code, width=32, use_af=use_af)
    linear = baselines.LinearScheme(code)
    for snr in (-15.0, 0.0, 20.0):
        a = model(z, torch.full((500, 1), snr), torch.Generator().manual_seed(3))
        b = linear(z, snr, torch.Generator().manual_seed(3))
        assert torch.allclose(a, b, atol=1e-5)


def test_lmmse_receiver_beats_plain_rescaling_at_low_snr():
    z = torch.from_numpy(_embeddings(2000))
    code = jscc.LinearCode.fit(z.numpy(), 4)
    snr = torch.full((2000, 1), -10.0)
    y, _ = channel.transmit(code.encode(z), snr, torch.Generator().manual_seed(0))
    mmse = torch.nn.functional.cosine_similarity(code.decode(y, snr), z).mean()
    # Zero-forcing: undo the average power normalisation, no shrinkage.
    energy = float(code.encode(z).pow(2).sum(1).mean())
    scale = np.sqrt(code.k / energy)
    comps = torch.from_numpy(code.components)
    naive = torch.from_numpy(code.mean) + (y / scale) @ comps.T
    plain = torch.nn.functional.cosine_similarity(naive, z).mean()
    assert float(mmse) > float(plain)


def test_training_runs_and_exports_with_parity(tmp_path):
    z = _embeddings(4000, d=48)
    rng = np.random.default_rng(1)
    emb = {
        "z_clean": z,
        "z_aug": (z + 0.05 * rng.standard_normal(z.shape)).astype(np.float32)[:, None],
        "labels": rng.integers(0, 5, len(z)),
        "is_val": np.arange(len(z)) >= 3500,
    }
    text = torch.nn.functional.normalize(torch.randn(10, 48), dim=-1)
    model, _, meta = train_one(
        z[:3500],
        Validation(emb, text),
        k=4,
        seed=0,
        steps=60,
        batch=128,
        lr=3e-3,
        width=64,
        temperature=0.1,
        recon_weight=4.0,
        log=lambda *_: None,
    )
    assert set(meta["validation"]) == set(meta["validation_linear"])
    assert set(meta["validation"]["5.0"]) == {"cos", "retrieval", "acc_base"}
    enc, dec, diff = export_onnx(model, tmp_path)
    assert enc.name == "jscc_k4_encoder.onnx" and dec.name == "jscc_k4_decoder.onnx"
    assert diff <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(enc), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == ["z", "snr_db"]
    out = sess.run(None, {"z": z[:3], "snr_db": np.zeros((3, 1), np.float32)})[0]
    assert out.shape == (3, 8)
