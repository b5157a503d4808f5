"""Training: the schedule, devices and precision, the smoke run, checkpoints, resume and stops."""

import dataclasses
import json
import math
import signal

import pytest
import torch

import tinygpt.train as train_mod
from tinygpt import checkpoint
from tinygpt.model import GPT, GPTConfig
from tinygpt.train import PRESETS, TrainConfig, get_config, get_lr, pick_device, precision_for, train

HISTORY_KEYS = {"step", "time", "lr", "train_loss", "val_loss"}


def small_config(**overrides) -> TrainConfig:
    """Smaller than the smoke preset: a few milliseconds a step."""
    cfg = dataclasses.replace(
        PRESETS["smoke"],
        model=GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0),
        batch_size=16, max_steps=120, warmup_steps=10, eval_interval=30, eval_iters=2,
    )
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture(scope="module")
def short_text(text):
    return text[:200_000]


# ---------------------------------------------------------------- learning-rate schedule

SCHEDULE = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)


def test_lr_at_step_zero_is_lr_over_warmup_plus_one():
    assert get_lr(0, SCHEDULE) == pytest.approx(1.0 / 11)


def test_lr_rises_linearly_during_warmup():
    lrs = [get_lr(s, SCHEDULE) for s in range(10)]
    assert lrs == pytest.approx([(s + 1) / 11 for s in range(10)])


def test_lr_peaks_at_the_end_of_warmup():
    assert get_lr(10, SCHEDULE) == pytest.approx(1.0)


def test_lr_halfway_through_the_cosine_is_the_midpoint():
    assert get_lr(60, SCHEDULE) == pytest.approx((1.0 + 0.1) / 2)


def test_lr_at_max_steps_and_beyond_is_min_lr():
    assert get_lr(110, SCHEDULE) == pytest.approx(0.1)
    assert get_lr(500, SCHEDULE) == 0.1


def test_lr_decreases_monotonically_after_warmup():
    lrs = [get_lr(s, SCHEDULE) for s in range(10, 111)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_lr_without_warmup_starts_at_the_peak():
    assert get_lr(0, dataclasses.replace(SCHEDULE, warmup_steps=0)) == pytest.approx(1.0)


def test_lr_set_on_the_optimizer_follows_get_lr(monkeypatch, short_text):
    seen = []
    original = GPT.configure_optimizer

    def spying_configure_optimizer(self, *args, **kwargs):
        opt = original(self, *args, **kwargs)
        real_step = opt.step

        def step(*a, **k):
            seen.append({g["lr"] for g in opt.param_groups})
            return real_step(*a, **k)

        opt.step = step
        return opt

    monkeypatch.setattr(GPT, "configure_optimizer", spying_configure_optimizer)
    cfg = small_config(max_steps=40, eval_interval=40)
    train(cfg, text=short_text, progress=False)
    assert seen == [{get_lr(s, cfg)} for s in range(40)]


# ---------------------------------------------------------------- the smoke run


def test_smoke_training_lowers_val_loss_well_below_ln_vocab(smoke_run):
    assert smoke_run.stopped == "finished" and smoke_run.step == PRESETS["smoke"].max_steps
    assert smoke_run.history[0]["val_loss"] == pytest.approx(math.log(65), abs=0.1)
    assert smoke_run.history[-1]["val_loss"] < 2.7
    assert smoke_run.best_val == min(h["val_loss"] for h in smoke_run.history)


def test_history_entries_have_step_time_lr_and_losses(smoke_run):
    assert [h["step"] for h in smoke_run.history] == [0, 50, 100, 150, 200, 250]
    for h in smoke_run.history:
        assert set(h) == HISTORY_KEYS
        assert h["lr"] == get_lr(h["step"], PRESETS["smoke"])
        assert math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"])
    times = [h["time"] for h in smoke_run.history]
    assert times == sorted(times)


def test_training_writes_best_and_last_checkpoints_and_history_json(smoke_run):
    out = smoke_run.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["ckpt_best.pt", "ckpt_last.pt", "history.json"]
    saved = json.loads((out / "history.json").read_text())
    assert saved["history"] == smoke_run.history
    assert saved["train_config"]["max_steps"] == 250 and saved["device"] == "cpu"
    assert smoke_run.best_checkpoint == out / "ckpt_best.pt"


def test_best_checkpoint_holds_the_best_val_step_and_last_holds_the_final_weights(smoke_run):
    best_step = min(smoke_run.history, key=lambda h: h["val_loss"])["step"]
    assert checkpoint.read(smoke_run.out_dir / "ckpt_best.pt")["step"] == best_step
    model, _, info = checkpoint.load(smoke_run.out_dir / "ckpt_last.pt")
    assert info["step"] == 250 and info["history"] == smoke_run.history
    for name, tensor in smoke_run.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_last_checkpoint_optimizer_holds_the_lr_of_the_last_step(smoke_run):
    state = checkpoint.read(smoke_run.out_dir / "ckpt_last.pt")
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [get_lr(249, PRESETS["smoke"])] * 2


# ---------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, short_text):
    """120 steps without a break: what every interrupted-and-resumed run must reproduce."""
    return train(small_config(), out_dir=tmp_path_factory.mktemp("straight"), text=short_text, progress=False)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_sigint_at_an_evaluation_stops_with_a_checkpoint_and_resume_matches_a_straight_run(
    tmp_path, short_text, straight_run
):
    def interrupt_at_60(history):
        if history[-1]["step"] == 60:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C does: a polite request to stop

    first = train(small_config(), out_dir=tmp_path, text=short_text, progress=False, on_eval=interrupt_at_60)
    assert first.stopped == "interrupted" and first.step == 60
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 60

    resumed = train(small_config(), out_dir=tmp_path, text=short_text, progress=False, resume=True)
    assert resumed.stopped == "finished" and resumed.step == 120
    _assert_same_weights(resumed.model, straight_run.model)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight_run.history]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight_run.history]


def test_sigint_between_evaluations_saves_at_the_step_boundary_and_resume_is_exact(
    tmp_path, short_text, straight_run, monkeypatch
):
    real_get_lr = train_mod.get_lr

    def get_lr_that_interrupts(step, cfg):
        if step == 45:
            signal.raise_signal(signal.SIGINT)
        return real_get_lr(step, cfg)

    monkeypatch.setattr(train_mod, "get_lr", get_lr_that_interrupts)
    first = train(small_config(), out_dir=tmp_path, text=short_text, progress=False)
    monkeypatch.setattr(train_mod, "get_lr", real_get_lr)
    assert first.stopped == "interrupted" and first.step == 46  # step 45 was finished first
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 46

    resumed = train(small_config(), out_dir=tmp_path, text=short_text, progress=False, resume=True)
    assert resumed.step == 120
    _assert_same_weights(resumed.model, straight_run.model)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path, short_text):
    result = train(small_config(max_steps=5, eval_interval=5), out_dir=tmp_path, text=short_text,
                   progress=False, resume=True)
    assert result.step == 5 and [h["step"] for h in result.history] == [0, 5]


def test_resume_with_a_different_model_config_raises(tmp_path, short_text):
    train(small_config(max_steps=2, eval_interval=2), out_dir=tmp_path, text=short_text, progress=False)
    other = small_config(max_steps=4, model=GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    with pytest.raises(train_mod.TrainingError, match="model config differs"):
        train(other, out_dir=tmp_path, text=short_text, progress=False, resume=True)


def test_resume_without_out_dir_raises_value_error(short_text):
    with pytest.raises(ValueError, match="resume needs out_dir"):
        train(small_config(), text=short_text, progress=False, resume=True)


# ---------------------------------------------------------------- stopping early


def test_time_budget_stops_early_with_a_final_evaluation(short_text):
    result = train(small_config(max_steps=1_000_000, eval_interval=1_000_000, fit_schedule=False), text=short_text,
                   progress=False, time_budget=1.5)
    assert result.stopped == "time budget"
    assert result.step < 1_000_000
    assert result.history[-1]["step"] == result.step
    assert result.history[-1]["time"] >= 1.5


def test_fitted_max_steps_ends_the_schedule_with_the_budget_at_the_measured_pace():
    cfg = small_config(max_steps=1000, warmup_steps=10, time_budget=100.0)
    # 90 s left at 0.5 s a step, planning for 97% of it: 174 more steps
    assert train_mod.fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=0.5) == 20 + 174


def test_fitted_max_steps_never_lengthens_the_schedule():
    cfg = small_config(max_steps=1000, time_budget=100.0)
    assert train_mod.fitted_max_steps(cfg, step=20, elapsed=10.0, seconds_per_step=0.001) == 1000


def test_fitted_max_steps_keeps_at_least_the_warm_up_and_the_steps_done():
    cfg = small_config(max_steps=1000, warmup_steps=50, time_budget=100.0)
    assert train_mod.fitted_max_steps(cfg, step=20, elapsed=99.0, seconds_per_step=1.0) == 51
    assert train_mod.fitted_max_steps(cfg, step=80, elapsed=99.0, seconds_per_step=1.0) == 81


def test_a_time_budget_fits_the_schedule_so_the_learning_rate_has_decayed_at_the_end(tmp_path, short_text):
    cfg = small_config(max_steps=1_000_000, eval_interval=1_000_000, lr=1e-3, min_lr=1e-4)
    result = train(cfg, out_dir=tmp_path, text=short_text, progress=False, time_budget=2.0)
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")
    fitted = saved["train_config"]["max_steps"]
    assert saved["schedule_fitted"] and 20 < fitted < 1_000_000
    # it ends at (or, if the machine slowed down, just before) the end of the fitted schedule
    assert result.stopped in ("finished", "time budget") and result.step >= 0.8 * fitted
    assert result.history[-1]["lr"] < 1e-4 + 0.1 * (1e-3 - 1e-4)


def test_resume_keeps_the_fitted_schedule(tmp_path, short_text):
    def interrupt_after_a_second(step, elapsed, model):  # after the fit, at a tenth of the budget
        if elapsed >= 1.0 and not interrupted:
            interrupted.append(step)
            signal.raise_signal(signal.SIGINT)

    interrupted = []
    cfg = small_config(max_steps=1_000_000, eval_interval=1_000_000)
    first = train(cfg, out_dir=tmp_path, text=short_text, progress=False, time_budget=4.0,
                  on_step=interrupt_after_a_second)
    assert first.stopped == "interrupted" and first.step == interrupted[0]
    fitted = checkpoint.read(tmp_path / "ckpt_last.pt")["train_config"]["max_steps"]
    resumed = train(cfg, out_dir=tmp_path, text=short_text, progress=False, time_budget=1000.0, resume=True)
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["train_config"]["max_steps"] == fitted
    assert resumed.stopped == "finished" and resumed.step == fitted


def test_patience_stops_after_that_many_evaluations_without_improvement(short_text, monkeypatch):
    monkeypatch.setattr(train_mod, "estimate_loss", lambda *a, **k: {"train": 3.0, "val": 3.0})
    result = train(small_config(max_steps=1000, eval_interval=5, patience=2), text=short_text, progress=False)
    assert result.stopped == "early stop"
    assert result.step == 10  # step 0 sets the best; steps 5 and 10 do not beat it
    assert [h["step"] for h in result.history] == [0, 5, 10]
    assert result.best_val == 3.0


def test_nonfinite_loss_raises_training_error(short_text):
    with pytest.raises(train_mod.TrainingError, match="the loss became"):
        train(small_config(lr=1e30, min_lr=1e29, warmup_steps=0, grad_clip=0.0), text=short_text, progress=False)


# ---------------------------------------------------------------- presets and arguments


def test_unknown_preset_raises_value_error_listing_the_presets():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*smoke"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown preset"):
        train("huge", progress=False)


def test_get_config_returns_a_copy_not_the_preset_itself():
    cfg = get_config("smoke")
    cfg.max_steps = 1
    assert PRESETS["smoke"].max_steps == 250


@pytest.mark.parametrize("max_steps", [0, -5, True, 2.5])
def test_invalid_max_steps_override_raises_value_error(max_steps, short_text):
    with pytest.raises(ValueError, match="max_steps"):
        train(small_config(), text=short_text, progress=False, max_steps=max_steps)


def test_train_config_round_trips_through_a_dict():
    cfg = small_config(time_budget=10.0, patience=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides", [dict(lr=0.0), dict(min_lr=1.0, lr=0.1), dict(batch_size=0),
                                       dict(time_budget=0), dict(patience=0), dict(warmup_steps=-1)])
def test_invalid_train_config_raises_value_error(overrides):
    with pytest.raises(ValueError):
        TrainConfig(**overrides)


# ---------------------------------------------------------------- device and precision


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"), ((7, 5), "fp16")])
def test_precision_on_cuda_follows_compute_capability(capability, expected):
    assert precision_for("cuda", capability) == expected


def test_precision_on_mps_is_fp32():
    assert precision_for("mps") == "fp32"


@pytest.mark.parametrize("speedup, expected", [(1.3, "bf16"), (2.0, "bf16"), (1.29, "fp32"), (0.5, "fp32")])
def test_precision_on_cpu_is_bf16_only_where_measured_faster(speedup, expected):
    assert precision_for("cpu", cpu_bf16_speedup_fn=lambda: speedup) == expected


def test_pick_device_auto_honours_tinygpt_device(monkeypatch):
    monkeypatch.setattr(train_mod, "available_devices", lambda: ["cuda", "cpu"])
    monkeypatch.setenv("TINYGPT_DEVICE", "cpu")
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device(None) == torch.device("cpu")
    monkeypatch.delenv("TINYGPT_DEVICE")
    assert pick_device("auto") == torch.device("cuda")  # the first available one


def test_pick_device_from_tinygpt_device_is_checked_too(monkeypatch):
    monkeypatch.setattr(train_mod, "available_devices", lambda: ["cpu"])
    monkeypatch.setenv("TINYGPT_DEVICE", "mps")
    with pytest.raises(ValueError, match="'mps' is not available"):
        pick_device("auto")


def test_pick_device_explicit_device_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("TINYGPT_DEVICE", "tpu")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("device", ["tpu", "gpu", "xla", "meta", ""])
def test_pick_device_unknown_device_raises_value_error(device):
    with pytest.raises(ValueError, match="unknown device"):
        pick_device(device)


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_pick_device_unavailable_device_raises_value_error(device, monkeypatch):
    monkeypatch.setattr(train_mod, "available_devices", lambda: ["cpu"])
    with pytest.raises(ValueError, match="not available here"):
        pick_device(device)


def test_fp16_off_cuda_is_refused():
    with pytest.raises(ValueError, match="CUDA"):
        train_mod.pick_precision(torch.device("cpu"), "fp16")
