"""benchmarks/gpu_check.py in its CPU mode: the same checks on a tiny model, so the GPU check cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (path,) = out.glob("gpu-check-*.json")
    return json.loads(path.read_text()), run.stdout, path


@pytest.mark.slow
def test_cpu_mode_writes_json_named_for_the_device(report):
    data, stdout, path = report
    assert data["mode"] == "cpu-smoke" and data["device"] == "cpu" and data["gpu"].startswith("cpu")
    assert path.name.startswith("gpu-check-cpu-") and str(path) in stdout


@pytest.mark.slow
def test_throughput_is_measured_for_each_precision_with_flops(report):
    data = report[0]
    assert set(data["throughput"]) == {"fp32", "bf16"}  # on CUDA: bf16 (capability >= 8) and fp16
    for prec, t in data["throughput"].items():
        assert t["precision"] == prec
        assert t["tokens_per_s"] > 0 and t["seconds_per_step"] > 0 and t["flops_per_token"] > 0
        assert t["mfu"] is None and t["peak_tflops"] is None  # no published peak for a CPU


@pytest.mark.slow
def test_resume_on_the_device_is_exact(report):
    r = report[0]["resume"]
    assert r["checkpoint_step"] == r["steps"]
    assert r["bit_identical"] and r["max_abs_diff"] == 0.0 and r["same_val_curve"]


@pytest.mark.slow
def test_generation_is_timed_with_and_without_the_kv_cache(report):
    g = report[0]["generation"]
    assert g["tokens_per_s_kv_cache"] > 0 and g["tokens_per_s_no_cache"] > 0
    assert g["speedup"] == pytest.approx(g["tokens_per_s_kv_cache"] / g["tokens_per_s_no_cache"])


@pytest.mark.slow
def test_validation_curves_without_and_with_dropout_say_where_the_minimum_is(report):
    curves = report[0]["val_curves"]
    assert [c["dropout"] for c in curves] == [0.0, 0.2]
    for c in curves:
        vals = [h["val_loss"] for h in c["history"]]
        assert len(vals) >= 2 and c["best_val"] == min(vals) and c["final_val"] == vals[-1]
        assert c["stopped"] in ("time budget", "finished")
        if c["turns_upward_at"] is not None:
            assert c["turns_upward_at"] > c["best_step"]


def test_peak_table_knows_the_t4_and_the_h100():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    assert gpu_check.peak_for("Tesla T4") == {"fp16": 65.0}
    assert gpu_check.peak_for("NVIDIA H100 80GB HBM3")["bf16"] == 989.0
    assert gpu_check.peak_for("NVIDIA H100 PCIe")["bf16"] == 756.0
    assert gpu_check.peak_for("Some Future GPU") == {}
