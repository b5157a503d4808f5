"""`python -m benchmarks.bench` (run from a checkout): it runs, and its report is complete and self-consistent.

Its figures are timings, which depend on the machine, so no test asserts a speed: the quick
bench (tiny models, seconds) is run once in a fresh process and its JSON is checked for shape.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import bench
from benchmarks.bench import PARTS, THRESHOLDS, busy_cores, past_window_flops, run_bench, summarise_curve
from tinygpt import threads
from tinygpt.data import default_data_dir
from tinygpt.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, TINYGPT_DATA_DIR=str(default_data_dir()))
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--quick", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = out.glob("bench-quick-*.json")
    return json.loads(path.read_text()), r.stdout


@pytest.mark.slow
def test_quick_bench_reports_every_part_and_the_machine(report):
    results, stdout = report
    assert set(PARTS) <= set(results)
    assert results["quick"] is True
    assert results["machine"]["cores"] >= 1 and results["machine"]["torch"]
    assert "fp32_gflops" in stdout and "written to" in stdout


@pytest.mark.slow
def test_throughput_is_compared_with_the_reference_as_a_ratio(report):
    t = report[0]["throughput"]
    assert t["speedup"] == pytest.approx(t["tinygpt_tokens_per_s"] / t["reference_tokens_per_s"])
    assert t["fraction_of_peak"] > 0 and t["precision"] in ("fp32", "bf16")


@pytest.mark.slow
def test_generation_is_compared_with_the_reference_inside_and_past_the_window(report):
    g = report[0]["generation"]
    assert g["inside_window_speedup"] == pytest.approx(g["inside_window_reference_s"] / g["inside_window_s"])
    assert g["past_window_speedup"] == pytest.approx(g["past_window_reference_s"] / g["past_window_s"])
    assert g["past_window_slide_s"] > 0


@pytest.mark.slow
def test_the_past_window_bound_is_the_reference_time_against_tinygpt_flops_at_the_peak(report):
    results = report[0]
    g, peak = results["generation"], results["peak"]
    ms_at_peak = g["past_window_gflop_per_token"] / peak["fp32_gflops"] * 1000
    assert g["past_window_ms_per_token_at_fp32_peak"] == pytest.approx(ms_at_peak)
    ref_ms = g["past_window_reference_s"] / g["past_new_tokens"] * 1000
    assert g["past_window_speedup_bound_fp32"] == pytest.approx(ref_ms / ms_at_peak)


def test_past_window_weight_flops_are_those_pytorch_counts_in_a_full_window_forward():
    cfg = GPTConfig(vocab_size=65, block_size=16, n_layer=3, n_head=2, n_embd=32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        GPT(cfg).eval()(torch.zeros(1, 16, dtype=torch.long))
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    matrix_products = sum(n for op, n in counts.items() if op in ("aten.addmm", "aten.mm"))
    assert past_window_flops(cfg)["weights"] == matrix_products


@pytest.mark.slow
def test_the_playground_is_timed_from_a_change_to_its_first_and_last_characters(report):
    p = report[0]["playground"]
    assert 0 < p["playground_first_20_chars_ms"] <= p["playground_300_chars_ms"]


@pytest.mark.slow
def test_thresholds_not_reached_print_as_not_reached(report):
    results, stdout = report
    assert any(results["quality"][f"first_reached_{thr}"] is None for thr in THRESHOLDS)  # 8 s of training
    assert "not reached" in stdout and "None" not in stdout


def test_a_quick_run_writes_to_a_temporary_folder_by_default():
    path = run_bench(quick=True, only="peak")
    try:
        assert path.parent == Path(tempfile.gettempdir()) / "tinygpt-bench"
    finally:
        path.unlink()


def test_the_package_has_no_bench_module():
    import tinygpt

    assert not (Path(tinygpt.__file__).parent / "bench.py").exists()


@pytest.mark.slow
def test_quality_curve_is_in_time_order_with_finite_whole_split_losses(report):
    q = report[0]["quality"]
    for curve in (q["curve"], q["usual_recipe_curve"]):
        times = [c["time_s"] for c in curve]
        assert times == sorted(times) and len(curve) >= 2
        assert all(math.isfinite(c["val_loss"]) and 0 < c["val_loss"] < 5 for c in curve)
    assert q["best_val_loss"] == min(c["val_loss"] for c in q["curve"])


@pytest.mark.slow
def test_first_reached_is_the_first_snapshot_at_or_below_each_threshold(report):
    q = report[0]["quality"]
    for thr in THRESHOLDS:
        expected = next((c["time_s"] for c in q["curve"] if c["val_loss"] <= thr), None)
        assert q[f"first_reached_{thr}"] == expected


def test_unknown_bench_part_is_refused_naming_the_parts(tmp_path):
    with pytest.raises(ValueError, match="unknown bench part.*throughput"):
        run_bench(quick=True, only="speed", out_dir=tmp_path)


def test_an_unknown_part_on_the_command_line_is_one_line_and_exit_status_2():
    r = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--only", "speed"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "unknown bench part" in r.stderr and "Traceback" not in r.stderr


def test_threads_on_the_command_line_fix_tinygpts_generation_threads_too(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")  # restored after the test
    before = torch.get_num_threads()
    try:
        assert bench.main(["--threads", "1", "--only", "nothing"]) == 2
        assert torch.get_num_threads() == 1 and threads.generation_threads("cpu") == 1
    finally:
        torch.set_num_threads(before)


def test_the_busy_part_times_the_policy_beside_fixed_threads_at_each_busy_level(report):
    b = report[0]["busy"]
    assert set(b["workloads"]) == {"generate_workshop_s", "generate_laptop_s", "train_step_ms"}
    for level in ("busy_0", "busy_1", "busy_2"):
        row = b[level]
        for name in b["workloads"]:
            t = row[name]
            assert min(t["policy"], t["fixed_1"], t["fixed_2"]) > 0
            assert t["policy_over_best_fixed"] == pytest.approx(t["policy"] / min(t["fixed_1"], t["fixed_2"]))
        assert 1 <= row["policy_training_threads"] <= b["cores"]


def test_the_busy_targets_are_met_only_when_every_workload_is_within_its_limit(report):
    b = report[0]["busy"]
    assert set(b["targets"]) == set(b["targets_met"]) == {"busy_0", "busy_1"}
    for level, limit in b["targets"].items():
        within = all(b[level][name]["policy_over_best_fixed"] <= limit for name in b["workloads"])
        assert b["targets_met"][level] is within


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_busy_cores_keep_processes_running_inside_and_leave_none_behind():
    with busy_cores(2, settle=0.1) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert {p.pid for p in procs} <= _children()
    assert all(p.returncode is not None for p in procs)
    assert not {p.pid for p in procs} & _children()


def test_busy_cores_leave_no_process_behind_when_the_work_inside_fails():
    with pytest.raises(RuntimeError, match="inside"):
        with busy_cores(2, settle=0.1) as procs:
            raise RuntimeError("inside")
    assert len(procs) == 2 and all(p.returncode is not None for p in procs)
    assert not {p.pid for p in procs} & _children()


def test_the_data_part_reports_memory_per_mb_and_time_to_first_step_for_a_char_and_a_bpe_text(report):
    d = report[0]["data"]
    assert {row["tokenizer"].split(":")[0] for row in d.values()} == {"char", "bpe"}
    for row in d.values():
        assert row["text_mb"] > 0 and row["peak_above_start_mb"] > 0
        assert row["peak_per_mb_of_text"] == pytest.approx(row["peak_above_start_mb"] / row["text_mb"])
        assert 0 < row["read_and_encode_s"] <= row["first_step_s"]
    assert d["char"]["ids_dtype"] == "uint8"  # Tiny Shakespeare's 65 characters: one byte an id


# ---------------------------------------------------------------- summarising a quality curve

CURVE = [{"time_s": 45, "val_loss": 2.1}, {"time_s": 120, "val_loss": 1.88}, {"time_s": 548, "val_loss": 1.549}]


def test_a_run_that_ends_inside_its_budget_reports_its_final_loss_at_the_later_times():
    summary = summarise_curve(CURVE, time_budget=600)
    assert summary["val_loss_at_300s"] == 1.88
    assert summary["val_loss_at_600s"] == 1.549


def test_a_run_without_a_budget_reports_no_time_after_its_end():
    summary = summarise_curve(CURVE[:2], time_budget=None)
    assert summary["val_loss_at_120s"] == 1.88
    assert "val_loss_at_300s" not in summary


def test_thresholds_are_reached_at_the_first_time_at_or_below_them():
    summary = summarise_curve(CURVE, time_budget=600)
    assert summary["first_reached_1.886"] == 120
    assert summary["first_reached_1.55"] == 548
    assert summary["first_reached_1.5"] is None
    assert summary["best_val_loss"] == 1.549


def test_the_scripts_share_only_benchmarks_common():
    """No script imports another's private helpers: each imports at most common and the reference."""
    allowed = {"common", "reference_gpt"}
    for path in (ROOT / "benchmarks").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("from benchmarks", "import benchmarks")):
                module = line.split()[1].removeprefix("benchmarks").lstrip(".") or line.split()[3]
                assert module in allowed, f"{path.name}: {line.strip()}"


def test_the_budget_part_runs_a_real_budget_with_load_starting_stopping_and_none(report):
    b = report[0]["budget"]
    assert b["time_budget_s"] > 0
    for name in ("load starts at 20%", "load stops at 50%", "no load"):
        assert b[name]["stopped"] in ("time budget", "finished") and b[name]["steps"] > 0
        assert b[name]["ended_at"] > 0
    assert b["target_met"] is all(b[name]["ended_at"] >= b["target_ended_at"]
                                  for name in ("load starts at 20%", "load stops at 50%", "no load"))
