"""JSCC shapes, power, initialisation at the linear baseline, and ONNX export parity."""

import numpy as np
import pytest
import torch

from semclip_models import baselines, channel, jscc
from semclip_models.train_jscc import (
    BLEND_MARGIN,
    BlendSelection,
    Validation,
    choose_blend,
    export_onnx,
    train_one,
)

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
        jscc.LinearCode.fit(z[:3500], 4),
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
    # A schedule that is neither all-learned nor all-linear exports with parity too.
    model.set_blend([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.0])
    _, _, diff = export_onnx(model, tmp_path)
    assert diff <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(enc), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == ["z", "snr_db"]
    out = sess.run(None, {"z": z[:3], "snr_db": np.zeros((3, 1), np.float32)})[0]
    assert out.shape == (3, 8)


def test_blend_interpolates_between_grid_points():
    blend = jscc.SnrBlend()
    blend.set([0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25])
    snr = torch.tensor([[-30.0], [-15.0], [-12.5], [-10.0], [-7.5], [20.0], [17.5], [40.0]])
    want = torch.tensor([[0.0], [0.0], [0.5], [1.0], [0.75], [0.25], [0.375], [0.25]])
    assert torch.allclose(blend(snr), want)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        blend.set([2.0] * 8)
    with pytest.raises(ValueError, match="need 8"):
        blend.set([1.0] * 3)


def test_blend_zero_is_the_linear_baseline_after_training():
    """Once trained, the code differs from the linear baseline; with alpha = 0 at an SNR
    it sends and decodes exactly as the baseline does there."""
    z = _embeddings(1500, d=48)
    code = jscc.LinearCode.fit(z, 4)
    model, _, _ = train_one(
        z, None, code, seed=0, steps=40, batch=128, lr=3e-3, width=32,
        temperature=0.1, recon_weight=4.0, log=lambda *_: None,
    )
    zt = torch.from_numpy(z[:300])
    linear = baselines.LinearScheme(code)
    learned = model(zt, torch.full((300, 1), 0.0), torch.Generator().manual_seed(5))
    want = linear(zt, 0.0, torch.Generator().manual_seed(5))
    assert not torch.allclose(learned, want, atol=1e-3)
    model.set_blend([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    got = model(zt, torch.full((300, 1), 0.0), torch.Generator().manual_seed(5))
    assert torch.allclose(got, want, atol=1e-5)


def test_blend_selection_never_picks_a_loss():
    """On every split, the chosen alpha at each SNR is no worse than alpha = 0 on any task
    and gains at least the margin on average."""
    z = _embeddings(2400, d=48)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, len(z))
    emb = {
        "z_clean": z,
        "z_aug": (z + 0.05 * rng.standard_normal(z.shape)).astype(np.float32)[:, None],
        "labels": labels,
        "is_val": np.arange(len(z)) >= 2000,
    }
    text = torch.nn.functional.normalize(torch.randn(10, 48), dim=-1)
    tables = []
    for held_out in ([3, 4], [0, 1]):
        model, _, _ = train_one(
            z[:2000][~np.isin(labels[:2000], held_out)], None,
            jscc.LinearCode.fit(z[:2000], 4), seed=0, steps=40, batch=128, lr=3e-3,
            width=32, temperature=0.1, recon_weight=4.0, log=lambda *_: None,
        )
        selection = BlendSelection(emb, text, held_out, gallery=200)
        tables.append(selection.table(model))
    alphas, report = choose_blend(tables, log=lambda *_: None)
    assert len(alphas) == len(jscc.BLEND_GRID_DB)
    assert len(report[str(jscc.BLEND_GRID_DB[0])]) == 2
    for snr, a in zip(jscc.BLEND_GRID_DB, alphas):
        for table in tables:
            rows = table[snr]
            gains = [rows[a][t] - rows[0.0][t] for t in rows[a]]
            assert min(gains) >= 0.0
            assert a == 0.0 or np.mean(gains) >= BLEND_MARGIN


def test_blend_selection_rejects_a_gain_on_one_split_only():
    """A value that gains on one split and loses a task on another is not chosen."""
    good = {"acc_new": 0.8, "acc_all": 0.6, "retrieval": 0.5}
    base = {"acc_new": 0.7, "acc_all": 0.5, "retrieval": 0.4}
    worse = {"acc_new": 0.9, "acc_all": 0.4, "retrieval": 0.6}
    one = {snr: {0.0: base, 1.0: good} for snr in jscc.BLEND_GRID_DB}
    two = {snr: {0.0: base, 1.0: worse} for snr in jscc.BLEND_GRID_DB}
    alphas, _ = choose_blend([one], log=lambda *_: None)
    assert alphas == [1.0] * len(jscc.BLEND_GRID_DB)
    alphas, _ = choose_blend([one, two], log=lambda *_: None)
    assert alphas == [0.0] * len(jscc.BLEND_GRID_DB)
