"""Nothing lost: a NaN never reaches a checkpoint, and the checkpoint an error names resumes.
(Killed and resumed runs: test_resume.py.)"""

import math
import signal

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.config import PRESETS, TrainConfig
from tinygpt.data import Text
from tinygpt.runs import TrainingError
from tinygpt.train import RunOptions, train

SMOKE_100 = TrainConfig.from_dict({**PRESETS["smoke"].to_dict(), "max_steps": 100})  # evaluates at 0, 50, 100


def poison_at(step_to_poison):
    def poison(step, elapsed, model):
        if step == step_to_poison:
            with torch.no_grad():
                model.lm_head.weight[0, 0] = math.nan
    return poison


def test_nan_weights_after_the_step_that_ends_at_an_evaluation_are_never_saved(tmp_path, text):
    with pytest.raises(TrainingError, match=r"the loss became nan at step 50; the last good checkpoint, "
                                            r".*ckpt_last.pt \(step 0\), is kept"):
        train(SMOKE_100, Text(text),
              RunOptions(out_dir=tmp_path, precision="fp32", progress=False, on_step=poison_at(50)))
    for name in ("ckpt_last.pt", "ckpt_best.pt"):
        model, _, info = checkpoint.load(tmp_path / name)
        assert info["step"] == 0 and math.isfinite(info["best_val"])
        assert all(torch.isfinite(p).all() for p in model.parameters())
        assert all(math.isfinite(h["val_loss"]) for h in info["history"])


@pytest.mark.slow
def test_the_checkpoint_kept_after_a_nan_resumes(tmp_path, text):
    with pytest.raises(TrainingError):
        train(SMOKE_100, Text(text),
              RunOptions(out_dir=tmp_path, precision="fp32", progress=False, on_step=poison_at(50)))
    resumed = train(None, Text(text),
                    RunOptions(out_dir=tmp_path, if_exists="resume", precision="fp32", progress=False))
    assert resumed.stopped == "finished" and resumed.step == 100
    assert all(math.isfinite(h["val_loss"]) for h in resumed.history)


def test_nan_weights_between_evaluations_stop_at_the_next_step_naming_it(tmp_path, text):
    with pytest.raises(TrainingError, match=r"the loss became nan at step 21; .*ckpt_last.pt \(step 0\)"):
        train(SMOKE_100, Text(text),
              RunOptions(out_dir=tmp_path, precision="fp32", progress=False, on_step=poison_at(21)))
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 0


@pytest.mark.slow
def test_nan_weights_are_not_saved_by_a_ctrl_c(tmp_path, text):
    def poison_then_ctrl_c(step, elapsed, model):
        if step == 30:
            poison_at(30)(step, elapsed, model)
            signal.raise_signal(signal.SIGINT)

    result = train(SMOKE_100, Text(text),
                   RunOptions(out_dir=tmp_path, precision="fp32", progress=False, on_step=poison_then_ctrl_c))
    assert result.stopped == "interrupted"
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 0


@pytest.mark.slow
def test_interrupted_training_saves_a_checkpoint_and_returns_the_history_so_far(tmp_path, text):
    cfg = TrainConfig.from_dict({**SMOKE_100.to_dict(), "eval_interval": 20, "eval_iters": 2})

    def press_ctrl_c(history):
        if history[-1]["step"] == 40:
            signal.raise_signal(signal.SIGINT)

    result = train(cfg, Text(text), RunOptions(out_dir=tmp_path, progress=False, on_eval=press_ctrl_c))
    assert result.stopped == "interrupted"
    assert result.step == 40  # the next step boundary
    assert [h["step"] for h in result.history] == [0, 20, 40]
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 40
