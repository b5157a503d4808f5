"""Resuming: a run stopped (politely, or killed) and resumed equals a run never stopped, and
what the caller changes on resume is done and said, never ignored."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.checkpoint import CheckpointError
from tinygpt.config import PRESETS, TrainConfig, with_length
from tinygpt.data import Text
from tinygpt.model import GPTConfig
from tinygpt.progress import StopRequest
from tinygpt.runs import TrainingError
from tinygpt.schedule import get_lr
from tinygpt.train import RunOptions, train


def small_config(**overrides) -> TrainConfig:
    cfg = dataclasses.replace(
        PRESETS["smoke"], model=GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0),
        batch_size=16, max_steps=120, warmup_steps=10, eval_interval=30, eval_iters=2)
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(autouse=True, scope="module")
def fixed_thread_count():
    """Exact resume is a promise at a fixed thread count (tinygpt/threads.py: sums split across
    another number of threads round differently), so every run here, in this process or started
    from it, fixes it the documented way (module-wide: the shared straight runs too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def short_text(text):
    return text[:200_000]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, short_text):
    """120 steps without a break: what every stopped-and-resumed run must reproduce."""
    return train(small_config(), Text(short_text),
                 RunOptions(out_dir=tmp_path_factory.mktemp("straight"), progress=False))


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def without_times(history):
    return [{k: v for k, v in h.items() if k != "time"} for h in history]


# ---------------------------------------------------------------- stopped politely, resumed exactly


@pytest.mark.slow
def test_ctrl_c_at_an_evaluation_stops_there_and_resume_matches_a_straight_run(tmp_path, short_text, straight_run):
    def ctrl_c_at_60(history):
        if history[-1]["step"] == 60:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: a polite request to stop

    first = train(small_config(), Text(short_text), RunOptions(out_dir=tmp_path, progress=False, on_eval=ctrl_c_at_60))
    assert first.stopped == "interrupted" and first.step == 60
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 60

    resumed = train(small_config(), Text(short_text), RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))
    assert resumed.stopped == "finished" and resumed.step == 120
    assert_same_weights(resumed.model, straight_run.model)
    assert without_times(resumed.history) == without_times(straight_run.history)


@pytest.mark.slow
def test_ctrl_c_between_evaluations_saves_at_the_step_boundary_and_resume_is_exact(tmp_path, short_text,
                                                                                   straight_run):
    first = train(small_config(), Text(short_text),
                   RunOptions(out_dir=tmp_path, progress=False,
                              on_step=lambda step, elapsed, model: step == 45 and signal.raise_signal(signal.SIGINT)))
    assert first.stopped == "interrupted" and first.step == 45
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 45
    resumed = train(None, Text(short_text), RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))
    assert resumed.step == 120
    assert_same_weights(resumed.model, straight_run.model)


def test_a_stop_request_and_a_resume_with_the_runs_own_settings_is_exact(tmp_path, short_text, straight_run):
    stop = StopRequest()
    train(small_config(), Text(short_text),
           RunOptions(out_dir=tmp_path, progress=False, on_step=lambda step, elapsed, model: step == 77 and stop.set(),
                      stop=stop))
    resumed = train(None, Text(short_text),
                    RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))  # no preset: the run's own
    assert resumed.step == 120 and resumed.notices == []
    assert_same_weights(resumed.model, straight_run.model)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.slow
def test_the_schedule_fitted_to_a_budget_stays_exact_under_resume(tmp_path, short_text):
    cfg = small_config(max_steps=1000, eval_interval=20, time_budget=10.0)

    def run(out, if_exists="refuse", stop=None):
        clock = FakeClock()

        def tick(step, elapsed, model):
            clock.now += 0.125  # exact in binary: the sums of seconds do not depend on where they start
            if step == 40 and stop is not None:
                stop.set()

        options = RunOptions(out_dir=out, if_exists=if_exists, progress=False, clock=clock, on_step=tick, stop=stop)
        return train(cfg, Text(short_text), options)

    straight = run(tmp_path / "a")
    first = run(tmp_path / "b", stop=StopRequest())
    assert first.stopped == "interrupted" and first.step == 40 and first.schedule == straight.schedule
    resumed = run(tmp_path / "b", if_exists="resume")
    assert resumed.step == straight.step == straight.schedule.max_steps
    assert resumed.schedule == straight.schedule
    assert_same_weights(resumed.model, straight.model)


# ---------------------------------------------------------------- killed, resumed exactly

TRAIN_SCRIPT = textwrap.dedent(
    """
    import dataclasses, sys
    from tinygpt.config import PRESETS
    from tinygpt.train import RunOptions, train
    cfg = dataclasses.replace(PRESETS["smoke"], max_steps=160, eval_interval=10, eval_iters=2)
    cfg.model = dataclasses.replace(cfg.model, dropout=0.1)  # dropout draws from the RNG too
    train(cfg, options=RunOptions(out_dir=sys.argv[1], if_exists="resume", progress=False, seed=7,
                                  precision=sys.argv[2], device="cpu"))
    """
)


def start_training(out: Path, precision: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(out), precision], env=dict(os.environ))




def saved_step(out: Path) -> int:
    try:
        return checkpoint.read(out / "ckpt_last.pt")["step"]
    except checkpoint.CheckpointError:
        return -1


def kill_after_progress(proc: subprocess.Popen, out: Path, beyond: int, delay: float) -> bool:
    """Wait until a checkpoint past step `beyond` is saved, then SIGKILL after `delay` seconds
    (so the kill lands mid-step or mid-save). False if the process finished first."""
    deadline = time.monotonic() + 300
    while saved_step(out) <= beyond:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def history_without_times(out: Path) -> list[dict]:
    return without_times(json.loads((out / "history.json").read_text())["history"])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: a T4's path, with its GradScaler
def test_training_killed_three_times_resumes_to_bit_identical_weights_and_history(tmp_path, precision):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert start_training(straight, precision).wait(timeout=600) == 0

    rng = random.Random(1234)
    kill_steps = []
    for _ in range(3):
        proc = start_training(killed, precision)
        beyond = max(saved_step(killed), 0) + rng.randrange(0, 40)
        assert kill_after_progress(proc, killed, beyond, delay=rng.uniform(0.0, 0.5))
        kill_steps.append(saved_step(killed))
    assert start_training(killed, precision).wait(timeout=600) == 0
    assert len(set(kill_steps)) == 3 and max(kill_steps) < 160, kill_steps

    a = checkpoint.read(straight / "ckpt_last.pt")
    b = checkpoint.read(killed / "ckpt_last.pt")
    assert a["step"] == b["step"] == 160
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["scaler"] == b["scaler"] and (a["scaler"] is not None) == (precision == "fp16")
    assert history_without_times(straight) == history_without_times(killed)


# ---------------------------------------------------------------- what changes on resume is done and said


def test_resume_on_another_precision_uses_it_and_says_so(tmp_path, short_text):
    stop = StopRequest()
    train(small_config(), Text(short_text),
           RunOptions(out_dir=tmp_path, device="cpu", precision="fp16", progress=False,
                      on_step=lambda step, elapsed, model: step == 40 and stop.set(), stop=stop))
    resumed = train(None, Text(short_text),
                    RunOptions(out_dir=tmp_path, if_exists="resume", precision="fp32", progress=False))
    assert resumed.precision == "fp32" and resumed.step == 120
    assert any("trained on cpu in fp16; it continues on cpu in fp32" in n for n in resumed.notices)
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")
    assert saved["precision"] == "fp32" and saved["scaler"] is None
    assert all(t.dtype == torch.float32 for t in saved["model"].values())


def test_extending_a_finished_run_continues_its_schedule_without_a_jump_and_says_so(tmp_path, short_text):
    cfg = small_config(max_steps=60)
    first = train(cfg, Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    end_lr = get_lr(59, first.schedule)
    resumed = train(with_length(cfg, max_steps=120), Text(short_text),
                    RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))
    assert resumed.step == 120
    assert all(h["lr"] <= end_lr for h in resumed.history if h["step"] >= 60)
    assert any("extended from 60 to 120 steps" in n and "no new warm-up" in n for n in resumed.notices)
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["train_config"]["max_steps"] == 120


def budgeted_run_then_resume(out, text, **resume_kw):
    """A 3-second budget at 0.1 s a step (a fake clock), then a resume with `resume_kw`."""
    clock = FakeClock()

    def tick(step, elapsed, model):
        clock.now += 0.1

    cfg = small_config(max_steps=1000, eval_interval=20, time_budget=3.0)
    first = train(cfg, Text(text), RunOptions(out_dir=out, progress=False, on_step=tick, clock=clock))
    resume = RunOptions(out_dir=out, if_exists="resume", progress=False, on_step=tick, clock=clock)
    return first, train(with_length(cfg, **resume_kw), Text(text), resume)


def test_max_steps_on_resume_of_a_budgeted_run_is_obeyed_and_replaces_the_budget(tmp_path, short_text):
    first, resumed = budgeted_run_then_resume(tmp_path, short_text, max_steps=70)
    assert first.step < 70 and resumed.stopped == "finished" and resumed.step == 70
    assert any("time budget of 3 s no longer applies" in n for n in resumed.notices)


def test_a_changed_time_budget_on_resume_refits_the_schedule_and_says_so(tmp_path, short_text):
    first, resumed = budgeted_run_then_resume(tmp_path, short_text, time_budget=6.0)
    assert resumed.step > first.step + 20 and resumed.history[-1]["time"] <= 6.0
    assert any("time budget changed from 3.0 to 6.0" in n for n in resumed.notices)


def test_a_setting_that_cannot_change_mid_run_is_refused_by_name(tmp_path, short_text):
    train(small_config(max_steps=2, eval_interval=2), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    with pytest.raises(TrainingError, match="trained with lr 0.003 \\(asked for 0.001\\)"):
        train(small_config(lr=1e-3), Text(short_text), RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))


def test_resume_with_a_different_model_config_raises(tmp_path, short_text):
    train(small_config(max_steps=2, eval_interval=2), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    other = small_config(max_steps=4, model=GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    with pytest.raises(TrainingError, match="model config differs"):
        train(other, Text(short_text), RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))


def test_resume_on_another_text_is_refused(tmp_path, short_text):
    train(small_config(max_steps=2, eval_interval=2), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    with pytest.raises(TrainingError, match="vocabulary differs"):
        train(None, Text("abc\n" * 20_000), RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))


def test_a_seed_given_on_resume_is_not_silently_ignored(tmp_path, short_text):
    train(small_config(max_steps=2, eval_interval=2), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    resumed = train(small_config(max_steps=4, eval_interval=2), Text(short_text),
                    RunOptions(out_dir=tmp_path, if_exists="resume", progress=False, seed=5))
    assert any("seed 1337 is kept" in n for n in resumed.notices)


# ---------------------------------------------------------------- resuming from what checkpoint.load accepts


@pytest.fixture
def a_run(tmp_path, short_text) -> Path:
    """A folder holding a finished 20-step run."""
    out = tmp_path / "run"
    train(small_config(max_steps=20, warmup_steps=5, eval_interval=10), Text(short_text),
          RunOptions(out_dir=out, progress=False))
    return out


def rewrite_last_weights(out: Path, change):
    path = out / "ckpt_last.pt"
    obj = torch.load(path, weights_only=True)
    obj["model"] = change(obj["model"])
    torch.save(obj, path)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module."])
def test_resume_accepts_a_last_checkpoint_saved_from_a_wrapped_model(a_run, short_text, prefix):
    rewrite_last_weights(a_run, lambda state: {prefix + k: v for k, v in state.items()})
    run = train(small_config(max_steps=25, warmup_steps=5, eval_interval=10), Text(short_text),
                RunOptions(out_dir=a_run, if_exists="resume", progress=False))
    assert run.step == 25


def test_resume_from_weights_that_do_not_fit_is_refused_by_name_as_checkpoint_load_does(a_run, short_text):
    rewrite_last_weights(a_run, lambda state: {k: v for k, v in state.items() if k != "ln_f.bias"})
    with pytest.raises(CheckpointError, match=r"ckpt_last.pt: the weights do not fit the config: missing ln_f.bias"):
        train(small_config(max_steps=25, warmup_steps=5, eval_interval=10), Text(short_text),
              RunOptions(out_dir=a_run, if_exists="resume", progress=False))


def test_resume_from_a_last_checkpoint_with_a_nan_weight_is_refused_as_not_finite(a_run, short_text):
    def poison(state):
        state["ln_f.weight"][0] = float("nan")
        return state

    rewrite_last_weights(a_run, poison)
    with pytest.raises(CheckpointError, match=r"ckpt_last.pt: the weights are not finite: ln_f.weight \(1 of"):
        train(small_config(max_steps=25, warmup_steps=5, eval_interval=10), Text(short_text),
              RunOptions(out_dir=a_run, if_exists="resume", progress=False))
