"""`python -m benchmarks.sweep` (run from a checkout): variants of a preset, each a line of JSON.

Timings depend on the machine, so only the shape of its output and its refusals are checked, on
the smoke preset trained for a few steps.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sweep import main, ms_per_step, variant
from tinygpt.config import PRESETS

ROOT = Path(__file__).resolve().parent.parent


def test_a_variant_is_the_preset_with_its_settings_changed():
    cfg = variant("laptop", "model.n_embd=128, lr=4e-3,min_lr=4e-4")
    assert (cfg.model.n_embd, cfg.lr, cfg.min_lr) == (128, 4e-3, 4e-4)
    assert cfg.batch_size == PRESETS["laptop"].batch_size and PRESETS["laptop"].model.n_embd == 96


def test_the_variant_named_preset_changes_nothing():
    assert variant("smoke", "preset") == PRESETS["smoke"]


def test_fixed_steps_append_one_line_per_variant_with_its_whole_split_loss_and_machine(tmp_path):
    out = tmp_path / "sweep.jsonl"
    assert main(["preset", "lr=2e-3", "--preset", "smoke", "--steps", "3", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["preset", "lr=2e-3"]
    for r in rows:
        assert r["mode"] == "steps" and r["steps"] == 3 and r["machine"]["cores"] >= 1
        assert math.isfinite(r["full_val_loss"]) and 0 < r["full_val_loss"] < 10


def test_the_time_a_step_is_measured_after_the_warm_up_steps():
    assert ms_per_step(PRESETS["smoke"], warm=2, timed=3) > 0


def test_a_run_of_fixed_seconds_on_a_planned_schedule_records_the_plan(tmp_path):
    out = tmp_path / "sweep.jsonl"
    assert main(["preset", "--preset", "smoke", "--seconds", "1", "--plan", "4", "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["mode"] == "seconds" and row["plan"] == 4 and row["ms_per_step"] > 0
    assert row["planned_steps"] >= row["steps"] >= 1 and math.isfinite(row["full_val_loss"])


@pytest.mark.parametrize("args, message", [
    (["model.n_wide=3", "--steps", "3"], "unknown setting 'model.n_wide'"),
    (["preset", "--seconds", "5", "--plan", "0"], "--plan must be positive"),
    (["preset", "--steps", "3", "--plan", "60"], "--plan needs --seconds"),
])
def test_a_bad_variant_or_option_is_one_line_and_exit_status_2(args, message):
    r = subprocess.run([sys.executable, "-m", "benchmarks.sweep", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
