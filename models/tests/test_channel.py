"""Channel statistics: unit power after normalisation, measured SNR, fading."""

import math

import numpy as np
import pytest
import torch

from semclip_models import channel


def test_power_normalise_gives_unit_energy_per_symbol():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((64, 16), generator=gen) * torch.linspace(0.1, 5.0, 64)[:, None]
    y = channel.power_normalise(x)
    k = x.shape[1] // 2
    energy = y.pow(2).sum(dim=1) / k
    assert torch.allclose(energy, torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("snr_db", [-15.0, 0.0, 20.0])
def test_awgn_measured_snr_matches(snr_db):
    gen = torch.Generator().manual_seed(1)
    x = channel.power_normalise(torch.randn((4000, 64), generator=gen))
    noise = channel.awgn(x, snr_db, gen) - x
    s2 = noise.pow(2).sum(dim=1).mean() / 32  # complex noise variance per symbol
    measured = 10 * math.log10(1.0 / float(s2))
    assert abs(measured - snr_db) < 0.05
    # Noise is split evenly between real and imaginary parts.
    re_var = float(noise[:, 0::2].pow(2).mean())
    im_var = float(noise[:, 1::2].pow(2).mean())
    assert abs(re_var / im_var - 1.0) < 0.03


def test_awgn_per_row_snr_and_seeded():
    x = channel.power_normalise(torch.ones((2, 2000)))
    snr = torch.tensor([[-10.0], [10.0]])
    a = channel.awgn(x, snr, torch.Generator().manual_seed(5))
    b = channel.awgn(x, snr, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    var = (a - x).pow(2).mean(dim=1) * 2
    assert abs(float(var[0]) - 10.0) < 1.0
    assert abs(float(var[1]) - 0.1) < 0.01


def test_rayleigh_equalised_effective_snr():
    gen = torch.Generator().manual_seed(2)
    x = channel.power_normalise(torch.randn((3000, 32), generator=gen))
    y, h = channel.rayleigh_block(x, 10.0, gen)
    assert h.shape == (3000,)
    assert abs(float(h.abs().pow(2).mean()) - 1.0) < 0.08
    eq, snr_eff = channel.equalise(y, h, 10.0)
    assert snr_eff.shape == (3000, 1)
    # Noise after equalisation has variance s2 / |h|^2 per complex symbol.
    err = (eq - x).pow(2).sum(dim=1) / 16
    expect = 0.1 / h.abs().pow(2)
    ratio = float((err / expect).mean())
    assert abs(ratio - 1.0) < 0.1
    assert torch.allclose(
        snr_eff[:, 0], 10.0 + 10 * torch.log10(h.abs().pow(2)), atol=1e-4
    )


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        channel.power_normalise(torch.ones((3, 5)))
    with pytest.raises(ValueError):
        channel.awgn(torch.ones((3, 4)), torch.zeros(2))
    with pytest.raises(ValueError):
        channel.transmit(torch.ones((3, 4)), 0.0, fading="rician")


def test_numpy_awgn_matches_convention():
    rng = np.random.default_rng(0)
    x = np.ones((1000, 40), dtype=np.float32) / np.sqrt(1.0)
    y = channel.awgn_np(x, 3.0, rng)
    s2 = float(((y - x) ** 2).sum(axis=1).mean() / 20)
    assert abs(10 * np.log10(1 / s2) - 3.0) < 0.1
