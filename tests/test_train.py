"""Training: the smoke run, checkpoints, run folders, stops, precision, evaluation and notices.
(The schedule and its fit: test_schedule.py; resuming: test_resume.py.)"""

import dataclasses
import json
import math

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.data import Corpus, DatasetError
from tinygpt.model import GPT, GPTConfig
from tinygpt.train import (PRESETS, RunExistsError, StopRequest, TrainConfig, TrainingError, evaluate, full_loss,
                           get_lr, train, train_step, val_is_exact)

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


def test_the_library_prints_nothing(short_text, capsys):
    stop = StopRequest()
    train(small_config(max_steps=20), text=short_text, progress=False,
          on_step=lambda step, elapsed, model: step == 10 and stop.set(), stop=stop)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- the text


def test_train_accepts_a_corpus_and_saves_its_vocabulary(tmp_path):
    corpus = Corpus.from_text("abc def ghi\n" * 4000)
    run = train(small_config(max_steps=4, eval_interval=4), corpus=corpus, out_dir=tmp_path, progress=False)
    assert run.tokenizer == corpus.tokenizer and run.model.config.vocab_size == 11
    _, tokenizer, _ = checkpoint.load(tmp_path / "ckpt_last.pt")
    assert tokenizer == corpus.tokenizer


def test_a_text_too_short_for_the_context_is_refused_before_training():
    from tinygpt.data import DatasetError

    with pytest.raises(DatasetError, match="too short"):
        train(small_config(), text="to be or not to be\n" * 5, progress=False)


# ---------------------------------------------------------------- run folders


def test_training_into_a_folder_that_holds_a_run_is_refused_and_leaves_it_intact(tmp_path, short_text):
    train(small_config(max_steps=4, eval_interval=4), out_dir=tmp_path, text=short_text, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunExistsError, match="already holds a run \\(at step 4\\).*resume=True.*overwrite=True"):
        train(small_config(max_steps=8), out_dir=tmp_path, text=short_text, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_overwrite_starts_a_new_run_in_place_of_the_old(tmp_path, short_text):
    train(small_config(max_steps=8, eval_interval=4), out_dir=tmp_path, text=short_text, progress=False)
    run = train(small_config(max_steps=4, eval_interval=4), out_dir=tmp_path, text=short_text, progress=False,
                overwrite=True)
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 4
    assert checkpoint.read(tmp_path / "ckpt_best.pt")["step"] <= 4
    assert any("overwrite" in n for n in run.notices)


def test_resume_in_a_folder_without_a_checkpoint_says_so_and_starts_at_step_0(tmp_path, short_text):
    heard = []
    run = train(small_config(max_steps=5, eval_interval=5), out_dir=tmp_path / "typo", text=short_text,
                progress=False, resume=True, on_notice=heard.append)
    assert run.step == 5 and [h["step"] for h in run.history] == [0, 5]
    assert heard == run.notices and "no checkpoint in" in heard[0] and "step 0" in heard[0]


def test_resume_and_overwrite_together_are_refused(tmp_path, short_text):
    with pytest.raises(ValueError, match="contradict"):
        train(small_config(), out_dir=tmp_path, text=short_text, progress=False, resume=True, overwrite=True)


def test_resume_without_out_dir_raises_value_error(short_text):
    with pytest.raises(ValueError, match="resume needs out_dir"):
        train(small_config(), text=short_text, progress=False, resume=True)


# ---------------------------------------------------------------- stopping


def test_a_stop_request_ends_training_at_the_next_step_boundary(short_text):
    stop = StopRequest()
    run = train(small_config(), text=short_text, progress=False, stop=stop,
                on_step=lambda step, elapsed, model: step == 45 and stop.set())
    assert run.stopped == "interrupted" and run.step == 45


def test_patience_stops_after_that_many_evaluations_without_improvement(short_text):
    # a learning rate of (almost) zero keeps the weights, and so the val loss, where they are
    cfg = small_config(max_steps=1000, eval_interval=5, patience=2, lr=1e-30, min_lr=0.0, weight_decay=0.0)
    result = train(cfg, text=short_text, progress=False)
    assert result.stopped == "early stop"
    assert result.step == 10  # step 0 sets the best; steps 5 and 10 do not beat it
    assert [h["step"] for h in result.history] == [0, 5, 10]
    assert result.best_val == result.history[0]["val_loss"]


def test_nonfinite_loss_raises_training_error(short_text):
    with pytest.raises(TrainingError, match="the loss became"):
        train(small_config(lr=1e30, min_lr=1e29, warmup_steps=0, grad_clip=0.0), text=short_text, progress=False)


# ---------------------------------------------------------------- the config asked for, and what was said


def test_unknown_preset_raises_value_error():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train("huge", progress=False)


@pytest.mark.parametrize("max_steps", [0, -5, True, 2.5])
def test_invalid_max_steps_raises_value_error(max_steps, short_text):
    with pytest.raises(ValueError, match="max_steps"):
        train(small_config(), text=short_text, progress=False, max_steps=max_steps)


def test_overrides_change_the_config_and_the_config_asked_for_is_saved(tmp_path, short_text):
    run = train(small_config(max_steps=4, eval_interval=4), out_dir=tmp_path, text=short_text, progress=False,
                overrides=["lr=2e-3", "model.n_embd=16"])
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")["train_config"]
    assert saved["lr"] == 2e-3 and saved["model"]["n_embd"] == 16 and run.model.config.n_embd == 16


def test_an_unknown_override_raises_value_error_naming_it(short_text):
    with pytest.raises(ValueError, match="unknown setting 'lrate'"):
        train(small_config(), text=short_text, progress=False, overrides=["lrate=1"])


def test_max_steps_replaces_a_presets_time_budget_and_says_so(short_text):
    run = train(small_config(time_budget=600.0), text=short_text, progress=False, max_steps=4)
    assert run.step == 4 and run.config.time_budget is None
    assert any("replaces the preset's time budget of 600 s" in n for n in run.notices)


def test_a_budgeted_run_saves_its_fitted_schedule_as_state_not_as_config(tmp_path, short_text):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.1

    train(small_config(max_steps=500, eval_interval=1000, time_budget=5.0), out_dir=tmp_path, text=short_text,
          progress=False, clock=lambda: clock[0], on_step=tick)
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")
    assert saved["train_config"]["max_steps"] == 500
    assert saved["fits_done"] == 3 and saved["schedule"]["max_steps"] == saved["step"] < 500


def test_a_large_model_off_a_gpu_is_announced_as_a_gpu_job_before_the_first_step(short_text):
    stop, heard = StopRequest(), []

    def hear(message):
        heard.append(message)
        stop.set()

    run = train("workshop", text=short_text, progress=False, device="cpu", stop=stop, on_notice=hear,
                overrides=["batch_size=1"])
    assert run.step == 0 and "GPU job" in heard[0] and "laptop preset" in heard[0]
    assert "only 2 batches a split" in heard[0] and run.config.eval_iters == 10  # the config asked for is kept



def test_the_gpu_job_notice_counts_the_planned_steps_without_a_false_estimate(short_text):
    stop, heard = StopRequest(), []

    def hear(message):
        heard.append(message)
        stop.set()

    train("workshop", text=short_text, progress=False, device="cpu", stop=stop, on_notice=hear, max_steps=1,
          overrides=["batch_size=1"])
    assert "GPU job" in heard[0] and "(1 to go" in heard[0] and "hours" not in heard[0]

# ---------------------------------------------------------------- precision


def test_training_in_fp16_with_a_grad_scaler_lowers_the_loss_on_a_cpu(short_text):
    run = train(small_config(max_steps=60), text=short_text, progress=False, precision="fp16", device="cpu")
    assert run.precision == "fp16" and any("fp16 on a CPU" in n for n in run.notices)
    assert run.history[-1]["val_loss"] < run.history[0]["val_loss"] - 0.5


def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_the_scale_backs_off():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    optimizer = model.configure_optimizer(1e-3, 0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # scaled gradients overflow
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(65, (4, 8))
    loss = train_step(model, optimizer, scaler, x, x, lr=1e-3,
                      ctx=torch.autocast("cpu", dtype=torch.float16), grad_clip=1.0)
    assert math.isfinite(loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scaler.get_scale() == 2.0**126
    train_step(model, optimizer, torch.amp.GradScaler("cpu"), x, x, lr=1e-3,
               ctx=torch.autocast("cpu", dtype=torch.float16), grad_clip=1.0)
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- evaluation


def test_val_loss_is_exact_where_its_windows_cost_no_more_than_the_sampled_batches(short_text):
    corpus = Corpus.from_text(short_text)
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(small_config().model, vocab_size=corpus.tokenizer.vocab_size))
    windows = (len(corpus.val) - 1) // 16
    exact = small_config(eval_iters=-(-windows // 16))
    assert val_is_exact(exact, corpus) and not val_is_exact(small_config(eval_iters=2), corpus)
    assert evaluate(model, corpus, exact, device="cpu")["val"] == pytest.approx(
        full_loss(model, corpus.val, batch_size=16), rel=1e-6)


def test_the_workshop_preset_evaluates_val_exactly_on_tiny_shakespeare(text):
    assert val_is_exact(PRESETS["workshop"], Corpus.from_text(text))


# ---------------------------------------------------------------- the progress bar


def test_a_budgeted_runs_bar_counts_seconds_ends_full_and_always_shows_the_same_figures(short_text, capsys):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.25

    train(small_config(max_steps=10_000, eval_interval=10, time_budget=5.0, fit_schedule=False), text=short_text,
          progress=True, clock=lambda: clock[0], on_step=tick)
    frames = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if "training on" in f]
    assert "5/5 s" in frames[-1] and "100%" in frames[-1]
    assert all("/5 s" in f for f in frames)
    with_figures = [f for f in frames if "loss=" in f]
    assert with_figures and all(("val=" in f and "lr=" in f) for f in with_figures)



def test_a_bar_ends_at_the_real_elapsed_time_and_shows_the_final_evaluation(short_text, capsys):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.25

    run = train(small_config(max_steps=8, eval_interval=10, time_budget=5.0, fit_schedule=False), text=short_text,
                progress=True, clock=lambda: clock[0], on_step=tick)
    last = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if "training on" in f][-1]
    assert run.history[-1]["step"] == 8 and len(run.history) == 2
    assert "2/5 s" in last and f"val={run.history[-1]['val_loss']:.3f}" in last

@pytest.mark.parametrize("kw", [dict(corpus=Corpus.from_text("ab\n" * 5000), text="ab\n" * 5000),
                                dict(text="ab\n" * 5000, data_dir="data")])
def test_arguments_that_would_be_ignored_are_refused(kw):
    with pytest.raises(ValueError, match="not both|no use"):
        train(small_config(), progress=False, **kw)


def test_overwrite_with_a_bad_argument_leaves_the_old_run_in_place(tmp_path, short_text):
    train(small_config(max_steps=4, eval_interval=4), out_dir=tmp_path, text=short_text, progress=False)
    with pytest.raises(ValueError, match="unknown device"):
        train(small_config(), out_dir=tmp_path, text=short_text, progress=False, overwrite=True, device="tpu")
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 4


# ---------------------------------------------------------------- every check before the folder is touched


@pytest.fixture
def a_run(tmp_path, short_text):
    """A folder holding a finished 4-step run."""
    out = tmp_path / "run"
    train(small_config(max_steps=4, eval_interval=4), out_dir=out, text=short_text, progress=False)
    return out


@pytest.mark.parametrize("kw, error", [
    (dict(overrides=["nosuch=1"]), "nosuch"),  # without a preset: checked against the default one
    (dict(text="to be or not to be " * 3), "too short"),
    (dict(preset=small_config(), overrides=["model.block_size=60000"]), "too short"),
    (dict(preset=small_config(), max_steps=3, overrides=["max_steps=10"]), "given twice"),
])
def test_overwrite_with_a_bad_argument_keeps_the_old_run(a_run, short_text, kw, error):
    kw = {"text": short_text, **kw}
    with pytest.raises((ValueError, DatasetError), match=error):
        train(out_dir=a_run, overwrite=True, progress=False, **kw)
    assert checkpoint.read(a_run / "ckpt_last.pt")["step"] == 4 and (a_run / "ckpt_best.pt").exists()


def test_a_text_refused_as_too_short_leaves_no_output_folder_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(DatasetError):
        train(small_config(), out_dir=out, text="to be or not to be " * 3, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- no setting silently replaced


def test_a_model_vocab_size_override_is_refused_as_set_by_the_text(short_text):
    with pytest.raises(ValueError, match="model.vocab_size cannot be set: it is the tokenizer's"):
        train(small_config(max_steps=1), text=short_text, progress=False, overrides=["model.vocab_size=100"])


@pytest.mark.parametrize("kw, key", [(dict(max_steps=3), "max_steps=10"), (dict(time_budget=5.0), "time_budget=9")])
def test_a_setting_given_both_as_an_argument_and_as_an_override_is_refused(short_text, kw, key):
    with pytest.raises(ValueError, match=f"{key.split('=')[0]} is given twice"):
        train(small_config(), text=short_text, progress=False, overrides=[key], **kw)


# ---------------------------------------------------------------- a time budget is never ignored


@pytest.mark.slow
def test_a_time_budget_much_longer_than_the_planned_steps_lengthens_the_schedule(tmp_path, short_text):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.01  # 20 planned steps take 0.2 s of a 3 s budget

    run = train(small_config(max_steps=20, warmup_steps=5, eval_interval=10, time_budget=3.0), out_dir=tmp_path,
                text=short_text, progress=False, clock=lambda: clock[0], on_step=tick)
    assert run.step > 20 * 10 and run.stopped in ("finished", "time budget")
    assert run.history[-1]["time"] >= 0.95 * 3.0
