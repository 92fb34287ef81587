"""Metrics, baselines and the report's aggregation and criteria."""

import math

import numpy as np
import torch

from semclip_models import baselines, evaluate, report


def test_zero_shot_accuracy_restricts_to_the_class_subset():
    text = torch.eye(10, 16)
    labels = np.array([0, 1, 2, 3])
    # Image 0 looks like class 5 (not in the subset): within {0, 1} it is closest to 0.
    z = torch.zeros(4, 16)
    z[0, 5], z[0, 0] = 1.0, 0.5
    z[1, 1] = 1.0
    z[2, 2] = 1.0
    z[3, 0] = 1.0
    assert evaluate.zero_shot_accuracy(z, labels, text, [0, 1]) == 1.0
    assert evaluate.zero_shot_accuracy(z, labels, text, list(range(10))) == 0.5


def test_retrieval_accuracy():
    g = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    assert evaluate.retrieval_accuracy(g, g) == 1.0
    assert evaluate.retrieval_accuracy(g.flip(0), g) < 0.2


def test_clip_ft_energy_offset_and_power():
    ft = baselines.ClipFt(384, match_energy_k=8)
    assert math.isclose(ft.offset_db, 10 * math.log10(24.0))
    z = torch.nn.functional.normalize(torch.randn(2000, 384), dim=-1)
    same = baselines.ClipFt(384)
    a = same(z, 0.0, torch.Generator().manual_seed(0))
    b = ft(z, 0.0, torch.Generator().manual_seed(0))
    cos_a = torch.nn.functional.cosine_similarity(a, z).mean()
    cos_b = torch.nn.functional.cosine_similarity(b, z).mean()
    assert float(cos_a) > float(cos_b)


def _result(rows, ks=(8,), snrs=(-5.0, 0.0, 10.0)):
    return {
        "bundle": "test",
        "random_init": True,
        "grid": {
            "name": "t",
            "snrs": list(snrs),
            "draws": 2,
            "tapl_images": 10,
            "tapl_draws": 1,
        },
        "default_k": 8,
        "ks": list(ks),
        "image_pixels": 3072,
        "embed_dim": 384,
        "split": {"seed": 0, "base_classes": [], "new_classes": []},
        "template": "{}",
        "test_images": 10,
        "retrieval_gallery": 10,
        "rows": rows,
        "seconds": 1.0,
        "host": "h",
    }


def _row(method, k, seed, snr, draw, task, value):
    return dict(
        method=method,
        k=k,
        seed=seed,
        snr_db=snr,
        draw=draw,
        task=task,
        value=value,
        n=10,
    )


def test_summary_and_criteria_decide_on_measured_numbers(tmp_path):
    rows = []
    for snr in (-5.0, 0.0, 10.0):
        for task in report.TASKS:
            rows.append(_row("upper_bound", None, None, snr, 0, task, 0.9))
            for d in range(2):
                rows.append(_row("linear", 8, None, snr, d, task, 0.5))
                rows.append(_row("clip_ft", 192, None, snr, d, task, 0.4))
                rows.append(_row("clip_ft_same_energy", 8, None, snr, d, task, 0.3))
                for seed, v in ((0, 0.70), (1, 0.72), (2, 0.68)):
                    rows.append(_row("semclip_no_tapl", 8, seed, snr, d, task, v))
        rows.append(_row("semclip", 8, 0, snr, 0, "acc_new", 0.75))
        rows.append(_row("semclip_no_tapl_sub", 8, 0, snr, 0, "acc_new", 0.70))
    result = _result(rows)
    result["jscc_blend_grid_db"] = [-5.0, 0.0, 10.0]
    result["jscc_blend"] = {"8": [0.0, 0.25, 1.0]}
    summary = report.summarise(rows)
    cell = summary[("semclip_no_tapl", 8, 0.0, "acc_new")]
    assert math.isclose(cell["mean"], 70.0) and math.isclose(cell["spread"], 2.0)
    assert cell["seeds"] == 3
    crit = {c["criterion"][:20]: c for c in report.criteria(summary, result)}
    met = [c["met"] for c in crit.values()]
    assert met[:3] == [True, True, True]
    assert met[3] is False  # 20 points below the upper bound at 10 dB
    report.write(result, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "70.0 ± 2.0" in text
    assert "| 8 | 0 | 0.25 | 1 |" in text  # the blend schedule of k = 8
    assert (tmp_path / "acc_new_vs_snr.png").is_file()


def test_criterion_fails_when_semclip_is_below_linear():
    rows = [_row("linear", 8, None, 0.0, d, "acc_new", 0.6) for d in range(2)]
    rows += [_row("semclip_no_tapl", 8, 0, 0.0, d, "acc_new", 0.5) for d in range(2)]
    summary = report.summarise(rows)
    crit = report.criteria(summary, _result(rows, snrs=(0.0,)))
    assert crit[0]["met"] is False


def test_jpeg_scan_bits_and_ideal_code():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    low, bits_low = baselines.jpeg_roundtrip(images, 10)
    high, bits_high = baselines.jpeg_roundtrip(images, 90)
    assert low.shape == images.shape and low.dtype == np.uint8
    assert (bits_high > bits_low).all() and (bits_low > 0).all()
    err_low = np.abs(low.astype(int) - images).mean()
    err_high = np.abs(high.astype(int) - images).mean()
    assert err_high < err_low
    # 1 bit per channel use at 0 dB, 2 bits at 10*log10(3) dB.
    assert math.isclose(baselines.capacity_channel_uses(100, 0.0), 100.0)
    assert math.isclose(baselines.capacity_channel_uses(100, 10 * math.log10(3)), 50.0)


def test_subspace_rows_find_classes_outside_the_top_components():
    # Dimensions 0-3: large variance shared by every image (instance detail); dimension
    # 4: small variance, the only one in which classes 0 and 1 differ.
    g = torch.Generator().manual_seed(0)
    d = 8
    text = torch.zeros(10, d)
    text[:, 7] = 1.0
    text[0, 4], text[1, 4] = 1.0, -1.0
    text = torch.nn.functional.normalize(text, dim=-1)
    labels = np.repeat([0, 1], 200)
    sign = torch.from_numpy(np.where(labels == 0, 1.0, -1.0)).float()
    z = torch.zeros(400, d)
    z[:, :4] = torch.randn(400, 4, generator=g)
    z[:, 4] = 0.3 * sign
    z[:, 7] = 3.0
    rows = evaluate.subspace_rows(
        {"fit": z.numpy()},
        z,
        labels,
        text,
        {"pair": [0, 1]},
        z[:50],
        z[:50],
        dims=(4, 5),
    )
    by_dims = {r["dims"]: r for r in rows}
    assert by_dims[4]["text_pair"] < 0.02
    assert by_dims[5]["text_pair"] > 0.98
    assert 0.3 < by_dims[4]["acc_pair"] < 0.7  # the projection drops the class signal
    assert by_dims[5]["acc_pair"] == 1.0
    assert by_dims[4]["variance"] < by_dims[5]["variance"] <= 1.0
    assert by_dims[5]["retrieval"] >= by_dims[4]["retrieval"]
    table = report.subspace_table({"subspace": [dict(r, fit="base") for r in rows]})
    assert "k=2 (4 reals)" in table and "100.0" in table


def test_compression_criterion_cites_the_subspace_diagnostic():
    rows = [_row("linear", 8, None, 20.0, 0, "acc_new", 0.25)]
    rows += [_row("semclip_no_tapl", 8, 0, 20.0, 0, "acc_new", 0.30)]
    result = _result(rows, snrs=(20.0,))
    result["subspace"] = [
        {"fit": "all", "dims": 16, "text_new": 0.5, "acc_new": 0.9},
        {"fit": "base", "dims": 16, "text_new": 0.001, "acc_new": 0.247},
        {"fit": "base", "dims": 32, "text_new": 0.56, "acc_new": 0.94},
    ]
    crit = report.criteria(report.summarise(rows), result)
    (c,) = [c for c in crit if c["criterion"].startswith("SemCLIP >= 15")]
    assert c["met"] is False
    assert "+5.0 points at k=8" in c["detail"]
    assert "first 16 principal components" in c["detail"]
    assert "0.1 % of the new classes' text spread" in c["detail"]
    assert "projection 24.7 %" in c["detail"]
