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
