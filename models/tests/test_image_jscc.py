"""Image DeepJSCC baseline: channel-use bookkeeping, power, learning, and its report rows."""

import argparse
import math

import pytest
import torch

from semclip_models import image_jscc, report

torch.set_num_threads(1)


def test_k_sets_the_latent_channels():
    assert image_jscc.channels_for(32) == 1
    assert image_jscc.channels_for(512) == 16
    for bad in (0, 8, 48):
        with pytest.raises(ValueError, match="multiple of 32"):
            image_jscc.channels_for(bad)


def test_symbols_have_k_uses_at_unit_power_and_images_come_back_in_range():
    model = image_jscc.ImageJscc(64, width=16)
    x = torch.rand(5, 3, 32, 32)
    snr = torch.linspace(-15.0, 20.0, 5).reshape(5, 1)
    symbols = model.encode(x, snr)
    assert symbols.shape == (5, 128)
    assert torch.allclose(symbols.pow(2).sum(1) / 64, torch.ones(5), atol=1e-5)
    x_hat = model(x, snr, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0


def test_training_lowers_the_reconstruction_error():
    gen = torch.Generator().manual_seed(0)
    # Smooth images (a learnable structure): random colours on low-frequency patterns.
    base = torch.rand(64, 3, 4, 4, generator=gen)
    images = (torch.nn.functional.interpolate(base, size=32, mode="bilinear") * 255).to(
        torch.uint8
    )
    args = argparse.Namespace(seed=0, width=16, lr=1e-2, steps=200, batch=32, bf16=False)
    model = image_jscc.ImageJscc(64, width=16)
    x = images[:16].float() / 255
    before = image_jscc.transmit_images(model, x, 20.0, torch.Generator().manual_seed(1))
    trained, meta = image_jscc.train_one(images, images[:16], 64, args, log=lambda *_: None)
    after = image_jscc.transmit_images(trained, x, 20.0, torch.Generator().manual_seed(1))
    psnr_before = float(image_jscc.psnr(before, x).mean())
    psnr_after = float(image_jscc.psnr(after, x).mean())
    assert psnr_after > psnr_before + 2.0, (psnr_before, psnr_after)
    assert set(meta["validation_psnr_db"]) == {"-15.0", "-5.0", "5.0", "15.0"}


def test_savings_table_finds_the_fewest_uses_that_reach_semclips_accuracy():
    rows = [
        dict(method="semclip_no_tapl", k=8, seed=0, snr_db=0.0, draw=0,
             task="acc_new", value=0.80, n=10),
    ]
    result = {
        "default_k": 8,
        "grid": {"snrs": [0.0]},
        # At 0 dB an ideal code carries 1 bit per use.
        "bt_ir": [
            dict(quality=10, bits=400.0, value=0.70, n=10),
            dict(quality=50, bits=1200.0, value=0.82, n=10),
            dict(quality=90, bits=3000.0, value=0.85, n=10),
        ],
        "deepjscc_image": [
            dict(k=128, snr_db=0.0, value=0.60, psnr_db=20.0, n=10),
            dict(k=512, snr_db=0.0, value=0.79, psnr_db=25.0, n=10),
        ],
    }
    summary = report.summarise(rows)
    (row,) = report.channel_use_savings(summary, result)
    assert math.isclose(row["bt_ir_uses"], 1200.0)
    assert row["deepjscc_k"] is None and row["deepjscc_max_k"] == 512
    table = report.savings_table(summary, result)
    assert "1200 (150x)" in table
    assert "> 512 (> 64x)" in table
