"""Device and precision selection."""

import pytest
import torch

from tinygpt.device import autocast_context, pick_device, pick_precision, precision_for


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp16")])
def test_precision_on_cuda_follows_compute_capability(capability, expected):
    assert precision_for("cuda", capability) == expected


def test_precision_on_mps_is_fp32():
    assert precision_for("mps") == "fp32"


@pytest.mark.parametrize("speedup, expected", [(1.3, "bf16"), (2.0, "bf16"), (1.29, "fp32"), (0.5, "fp32")])
def test_precision_on_cpu_is_bf16_only_where_measured_faster(speedup, expected):
    assert precision_for("cpu", cpu_bf16_speedup_fn=lambda: speedup) == expected


def test_pick_device_auto_honours_tinygpt_device(monkeypatch):
    monkeypatch.setenv("TINYGPT_DEVICE", "cpu")
    assert pick_device("auto", available=["cuda", "cpu"]) == torch.device("cpu")
    assert pick_device(None, available=["cuda", "cpu"]) == torch.device("cpu")
    monkeypatch.delenv("TINYGPT_DEVICE")
    assert pick_device("auto", available=["cuda", "cpu"]) == torch.device("cuda")  # the first available one


def test_pick_device_from_tinygpt_device_is_checked_too(monkeypatch):
    monkeypatch.setenv("TINYGPT_DEVICE", "mps")
    with pytest.raises(ValueError, match="'mps' is not available"):
        pick_device("auto", available=["cpu"])


def test_pick_device_explicit_device_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("TINYGPT_DEVICE", "tpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["tpu", "gpu", "xla", "meta", ""])
def test_pick_device_unknown_device_raises_value_error(device):
    with pytest.raises(ValueError, match="unknown device"):
        pick_device(device)


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_pick_device_unavailable_device_raises_value_error(device):
    with pytest.raises(ValueError, match="not available here"):
        pick_device(device, available=["cpu"])


def test_fp16_on_mps_is_refused():
    with pytest.raises(ValueError, match="CUDA"):
        pick_precision(torch.device("mps"), "fp16")


def test_fp16_on_a_cpu_is_allowed_for_the_test_suite():
    assert pick_precision(torch.device("cpu"), "fp16") == "fp16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        pick_precision(torch.device("cpu"), "fp8")


def test_autocast_context_runs_matmuls_in_the_asked_for_type():
    a = torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast_context(torch.device("cpu"), "fp32"):
        assert (a @ a).dtype == torch.float32


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mps_trains_in_fp32_only(precision):
    with pytest.raises(ValueError, match="MPS|fp16"):
        pick_precision(torch.device("mps"), precision)
