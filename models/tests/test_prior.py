import numpy as np
import pytest
import torch

from semclip_models import bundle as bundle_io
from semclip_models import jscc, prior


def test_strength_is_linear_in_db_and_clamped():
    table = [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    grid = np.asarray(jscc.BLEND_GRID_DB)
    for snr in (-30.0, -15.0, -2.5, 0.0, 3.0, 7.5, 12.0, 20.0, 35.0):
        want = float(np.interp(snr, grid, table))
        assert float(prior.strength(table, snr)) == pytest.approx(want, abs=1e-6)
    many = prior.strength(table, torch.tensor([-20.0, 2.5, 40.0]))
    assert many.tolist() == pytest.approx([1.0, 0.625, 0.0])
    with pytest.raises(ValueError, match="8"):
        prior.strength([0.0, 1.0], 0.0)


def test_correction_removes_the_prior_share():
    u = torch.tensor([0.6, 0.8, 0.0])
    z = torch.tensor([[0.6, 0.0, 0.8], [0.0, 0.0, 1.0]])
    full = prior.correct(z, u, 1.0)
    assert torch.allclose(full @ u, torch.zeros(2), atol=1e-6)
    assert torch.allclose(full.norm(dim=1), torch.ones(2))
    assert torch.allclose(prior.correct(z, u, 0.0), z)
    # Per-image strengths: the first row untouched, the second already orthogonal to u.
    mixed = prior.correct(z, u, torch.tensor([0.0, 1.0]))
    assert torch.allclose(mixed, z)


def test_direction_of_a_zero_mean_is_an_error():
    with pytest.raises(ValueError, match="zero"):
        prior.direction(np.zeros(4))


def _tables(gains_new, gains_all):
    """Three splits whose beta = 1 gains are given per split; beta < 1 gain nothing."""
    out = []
    for g_new, g_all in zip(gains_new, gains_all):
        t = {}
        for snr in jscc.BLEND_GRID_DB:
            row = {b: {"acc_new": 0.5, "acc_all": 0.4} for b in prior.BETA_CHOICES}
            row[1.0] = {"acc_new": 0.5 + g_new, "acc_all": 0.4 + g_all}
            t[float(snr)] = row
        out.append(t)
    return out


def test_choice_needs_a_mean_gain_and_no_task_losing_on_average():
    log = []
    chosen, _ = prior.choose_table(_tables([0.02, 0.01, 0.0], [0.0] * 3), log=log.append)
    assert chosen == [1.0] * len(jscc.BLEND_GRID_DB)
    assert "beta 1.0" in log[0]
    # A loss on one task, on average over the splits, rules the value out.
    chosen, _ = prior.choose_table(_tables([0.03] * 3, [-0.001] * 3), log=lambda _: None)
    assert chosen == [0.0] * len(jscc.BLEND_GRID_DB)
    # A gain below the margin is not worth a change.
    chosen, _ = prior.choose_table(_tables([0.002] * 3, [0.0] * 3), log=lambda _: None)
    assert chosen == [0.0] * len(jscc.BLEND_GRID_DB)


def test_from_manifest_reads_the_bundle(tmp_path):
    u = np.array([0.0, 0.6, 0.8], dtype=np.float32)
    bundle_io.write_f32(tmp_path / "tapl_prior.f32", u)
    table = [1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    manifest = {
        "embed_dim": 3,
        "tapl": {
            "prior": {
                "direction": "tapl_prior.f32",
                "grid_db": list(jscc.BLEND_GRID_DB),
                "beta": {"8": table},
            }
        },
    }
    c = prior.from_manifest(tmp_path, manifest, 8)
    z = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(c(z, 20.0), z)
    assert float(c(z, -15.0)[0] @ torch.from_numpy(u)) == pytest.approx(0.0, abs=1e-6)
    assert prior.from_manifest(tmp_path, manifest, 16) is None
    assert prior.from_manifest(tmp_path, {"embed_dim": 3, "tapl": {}}, 8) is None
    manifest["tapl"]["prior"]["grid_db"] = [0.0, 10.0]
    with pytest.raises(bundle_io.BundleError, match="grid_db"):
        prior.from_manifest(tmp_path, manifest, 8)


def _embeddings(n: int = 600, dim: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Stage-1 embeddings of base-class images, as train_jscc caches them."""
    from semclip_models import data

    rng = np.random.default_rng(seed)
    base, _ = data.base_new_split()
    z = rng.standard_normal((n, dim)).astype(np.float32)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return {
        "z_clean": z,
        "z_aug": z[:, None, :],
        "labels": rng.choice([data.CLASSES.index(c) for c in base], n),
        "is_val": rng.random(n) < 0.1,
    }


def test_development_split_scores_the_code_it_is_given():
    from semclip_models import train_jscc as tj

    emb = _embeddings()
    text = torch.nn.functional.normalize(torch.randn(10, 32), dim=-1)
    linear_only = prior.DevSplit(emb, text, 0, 4).table(snrs=[0.0])
    trained, _ = tj.dev_split(0)
    linear = jscc.LinearCode.fit(tj.emb_clean_of(emb, trained), 4)
    torch.manual_seed(0)
    code = jscc.Jscc(linear, width=16).eval()
    # Give the residual something to say, so that the learned code differs from linear.
    for layer in code.modules():
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=0.5)
    code.set_blend([0.0] * len(jscc.BLEND_GRID_DB))
    blended_off = prior.DevSplit(emb, text, 0, 4, code).table(snrs=[0.0])
    assert blended_off == linear_only  # alpha = 0 is exactly the linear code
    code.set_blend([1.0] * len(jscc.BLEND_GRID_DB))
    learned = prior.DevSplit(emb, text, 0, 4, code).table(snrs=[0.0])
    assert learned != linear_only


def test_development_codes_follow_the_bundle(tmp_path, monkeypatch):
    from semclip_models import train_jscc as tj

    monkeypatch.setattr(tj, "checkpoint_path", lambda *a: tmp_path / "k4_dev_s0.pt")
    manifest = {"provenance": {"jscc": {"seed": 0, "blend": {"4": [0.0] * 8}}}}
    assert prior.dev_codes(tmp_path, manifest, 4) is None  # linear everywhere
    with pytest.raises(bundle_io.BundleError, match="k=8"):
        prior.dev_codes(tmp_path, manifest, 8)
    manifest["provenance"]["jscc"]["blend"]["4"][5] = 0.25
    with pytest.raises(FileNotFoundError, match="train_jscc"):
        prior.dev_codes(tmp_path, manifest, 4)
