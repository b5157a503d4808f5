"""Faults found by trying the package as a new user would (issue 15, issue 11.4).

Each test states one expected behaviour that the code did not have when it was written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tinygpt import cli
from tinygpt.checkpoint import CheckpointError
from tinygpt.data import DatasetError
from tinygpt.model import GPTConfig
from tinygpt.train import PRESETS, TrainConfig, TrainingError, train


def small_config(**overrides) -> TrainConfig:
    cfg = dataclasses.replace(
        PRESETS["smoke"], model=GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0),
        batch_size=16, max_steps=20, warmup_steps=5, eval_interval=10, eval_iters=2)
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(scope="module")
def short_text(text):
    return text[:200_000]


@pytest.fixture
def a_run(tmp_path, short_text) -> Path:
    """A folder holding a finished 20-step run."""
    out = tmp_path / "run"
    train(small_config(), out_dir=out, text=short_text, progress=False)
    return out


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def rewrite_last(out: Path, change):
    path = out / "ckpt_last.pt"
    obj = torch.load(path, weights_only=True)
    obj["model"] = change(obj["model"])
    torch.save(obj, path)


# ---------------------------------------------------------------- nothing lost


def test_overwrite_with_an_unknown_setting_keeps_the_old_run(a_run, short_text):
    with pytest.raises(ValueError, match="nosuch"):
        train(out_dir=a_run, overwrite=True, overrides=["nosuch=1"], text=short_text, progress=False)
    assert (a_run / "ckpt_last.pt").exists() and (a_run / "ckpt_best.pt").exists()


def test_overwrite_with_a_text_too_short_for_the_context_keeps_the_old_run(a_run):
    with pytest.raises(DatasetError):
        train(small_config(), out_dir=a_run, overwrite=True, text="to be or not to be " * 3, progress=False)
    assert (a_run / "ckpt_last.pt").exists() and (a_run / "ckpt_best.pt").exists()


def test_a_text_refused_as_too_short_leaves_no_output_folder_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(DatasetError):
        train(small_config(), out_dir=out, text="to be or not to be " * 3, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- resuming from what checkpoint.load accepts


def test_resume_accepts_a_last_checkpoint_saved_from_a_compiled_model(a_run, short_text):
    rewrite_last(a_run, lambda state: {"_orig_mod." + k: v for k, v in state.items()})
    run = train(small_config(max_steps=25), out_dir=a_run, resume=True, text=short_text, progress=False)
    assert run.step == 25


def test_resume_from_a_last_checkpoint_with_a_nan_weight_is_refused_as_not_finite(a_run, short_text):
    def poison(state):
        state["ln_f.weight"][0] = float("nan")
        return state

    rewrite_last(a_run, poison)
    with pytest.raises((TrainingError, CheckpointError), match="not finite"):
        train(small_config(max_steps=25), out_dir=a_run, resume=True, text=short_text, progress=False)


# ---------------------------------------------------------------- no option silently ignored


def test_a_time_budget_much_longer_than_the_planned_steps_lengthens_the_schedule(tmp_path, short_text):
    clock = FakeClock()

    def tick(step, elapsed, model):
        clock.now += 0.01  # 20 planned steps take 0.2 s of a 3 s budget

    run = train(small_config(time_budget=3.0), out_dir=tmp_path, text=short_text, progress=False,
                clock=clock, on_step=tick)
    assert run.step > 20


def test_a_model_vocab_size_override_is_refused_or_said(tmp_path, short_text):
    try:
        run = train(small_config(max_steps=1), out_dir=tmp_path, text=short_text, progress=False,
                    overrides=["model.vocab_size=100"])
    except ValueError:
        return
    assert any("vocab_size" in notice for notice in run.notices)


def test_sample_says_when_several_greedy_samples_are_all_the_same(a_run, capsys):
    rc = cli.main(["sample", "--checkpoint", str(a_run / "ckpt_best.pt"), "--num-samples", "3",
                   "--temperature", "0", "--max-new-tokens", "5", "--device", "cpu"])
    assert rc == 0 and capsys.readouterr().err.strip()


def test_a_setting_refused_on_resume_exits_with_status_2(a_run, short_text, tmp_path):
    (tmp_path / "text.txt").write_text(short_text, encoding="utf-8")
    rc = cli.main(["train", "--resume", "--out", str(a_run), "--text", str(tmp_path / "text.txt"),
                   "--set", "lr=1e-2", "--quiet", "--device", "cpu"])
    assert rc == 2
