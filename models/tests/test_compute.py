"""Device and precision selection, and the tower's training on the chosen ones."""

from pathlib import Path

import pytest
import torch

from semclip_models import compute
from semclip_models import tiny_lit


def test_device_choice():
    assert compute.pick_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert compute.pick_device("auto").type == want
    with pytest.raises(compute.ComputeError, match="expected one of auto, cpu, cuda"):
        compute.pick_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(compute.ComputeError, match="no CUDA device"):
        compute.pick_device("cuda")


def test_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(compute, "cpu_has_bf16", lambda: True)
    assert compute.pick_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(compute, "cpu_has_bf16", lambda: False)
    assert compute.pick_precision("auto", cpu) == "fp32"
    assert compute.pick_precision("bf16", cpu) == "bf16"  # forced, even if emulated
    assert compute.pick_precision("fp32", cpu) == "fp32"
    with pytest.raises(compute.ComputeError, match="expected one of auto, bf16, fp32"):
        compute.pick_precision("fp16", cpu)


def test_autocast_computes_in_the_chosen_precision():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    cpu = torch.device("cpu")
    with compute.autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with compute.autocast(cpu, "fp32"):
        assert layer(x).dtype == torch.float32


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(out), "--batch", "8",
        "--steps", "2", "--threads", "1", *extra,
    ]  # fmt: skip


def test_tower_training_records_device_and_precision(tiny_cifar: Path, tmp_path: Path):
    tiny_lit.main(_train_args(tiny_cifar, tmp_path, "--device", "cpu", "--precision", "fp32"))
    ckpt = torch.load(tmp_path / "tower.pt", map_location="cpu", weights_only=False)
    assert ckpt["device"] == "cpu" and ckpt["precision"] == "fp32"
    assert ckpt["total_steps"] == 2
    tower, _ = tiny_lit.load_checkpoint(tmp_path / "tower.pt")
    assert tiny_lit.embed(tower, torch.rand(3, 3, 32, 32)).shape == (3, tiny_lit.EMBED_DIM)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_tower_training_on_a_missing_gpu_exits_with_the_reason(
    tiny_cifar: Path, tmp_path: Path
):
    with pytest.raises(SystemExit, match="no CUDA device"):
        tiny_lit.main(_train_args(tiny_cifar, tmp_path, "--device", "cuda"))
