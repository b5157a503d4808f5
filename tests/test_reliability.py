"""Nothing lost: training killed at random moments resumes exactly; a NaN loss keeps the last good save."""

import json
import math
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
from tinygpt.train import PRESETS, TrainConfig, TrainingError, train

TRAIN_SCRIPT = textwrap.dedent(
    """
    import dataclasses, sys
    import torch
    from tinygpt.train import PRESETS, train
    torch.set_num_threads(1)
    cfg = dataclasses.replace(PRESETS["smoke"], max_steps=160, eval_interval=10, eval_iters=2)
    cfg.model = dataclasses.replace(cfg.model, dropout=0.1)  # dropout draws from the RNG too
    train(cfg, out_dir=sys.argv[1], resume=True, progress=False, seed=7)
    """
)


def start_training(out: Path, text_file: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYGPT_DATA_DIR": str(text_file.parent)}
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(out)], env=env)


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
    hist = json.loads((out / "history.json").read_text())["history"]
    return [{k: v for k, v in h.items() if k != "time"} for h in hist]


@pytest.fixture(scope="module")
def shared_text_file(tmp_path_factory):
    from tinygpt.data import FILENAME, default_data_dir

    return default_data_dir() / FILENAME


def test_training_killed_three_times_resumes_to_bit_identical_weights_and_history(tmp_path, shared_text_file):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert start_training(straight, shared_text_file).wait(timeout=600) == 0

    rng = random.Random(1234)
    kill_steps = []
    for _ in range(3):
        proc = start_training(killed, shared_text_file)
        beyond = max(saved_step(killed), 0) + rng.randrange(0, 40)
        assert kill_after_progress(proc, killed, beyond, delay=rng.uniform(0.0, 0.5))
        kill_steps.append(saved_step(killed))
    assert start_training(killed, shared_text_file).wait(timeout=600) == 0
    assert len(set(kill_steps)) == 3 and max(kill_steps) < 160, kill_steps

    a = checkpoint.read(straight / "ckpt_last.pt")
    b = checkpoint.read(killed / "ckpt_last.pt")
    assert a["step"] == b["step"] == 160
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert history_without_times(straight) == history_without_times(killed)


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, text):
    cfg = TrainConfig.from_dict({**PRESETS["smoke"].to_dict(), "max_steps": 100, "eval_interval": 20, "eval_iters": 2})

    def poison(history):
        if history[-1]["step"] == 40:
            model_holder[0].lm_head.weight.data.fill_(math.nan)

    model_holder = []
    import tinygpt.train as T

    original_gpt = T.GPT

    def capturing_gpt(config):
        model = original_gpt(config)
        model_holder.append(model)
        return model

    T.GPT = capturing_gpt
    try:
        with pytest.raises(TrainingError, match=r"nan at step 40"):
            train(cfg, out_dir=tmp_path, progress=False, text=text, on_eval=poison)
    finally:
        T.GPT = original_gpt
    model, _, info = checkpoint.load(tmp_path / "ckpt_last.pt")
    assert info["step"] == 40
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_interrupted_training_saves_a_checkpoint_and_returns_the_history_so_far(tmp_path, text, capsys):
    cfg = TrainConfig.from_dict({**PRESETS["smoke"].to_dict(), "max_steps": 100, "eval_interval": 20, "eval_iters": 2})

    def press_ctrl_c(history):
        if history[-1]["step"] == 40:
            signal.raise_signal(signal.SIGINT)

    result = train(cfg, out_dir=tmp_path, progress=False, text=text, on_eval=press_ctrl_c)
    assert result.stopped == "interrupted"
    assert result.step == 40  # the next step boundary
    assert [h["step"] for h in result.history] == [0, 20, 40]
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 40
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "resume" in out[0]


def test_interrupted_then_resumed_training_equals_an_uninterrupted_run(tmp_path, text):
    cfg = TrainConfig.from_dict({**PRESETS["smoke"].to_dict(), "max_steps": 60, "eval_interval": 20, "eval_iters": 2})
    straight = train(cfg, out_dir=tmp_path / "a", progress=False, text=text)

    def press_ctrl_c(history):
        if history[-1]["step"] == 20:
            signal.raise_signal(signal.SIGINT)

    train(cfg, out_dir=tmp_path / "b", progress=False, text=text, on_eval=press_ctrl_c)
    resumed = train(cfg, out_dir=tmp_path / "b", progress=False, text=text, resume=True)
    assert resumed.step == straight.step == 60
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
