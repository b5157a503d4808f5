"""Training: the smoke run, checkpoints, run folders, stops, precision, evaluation and notices.
(The schedule and its fit: test_schedule.py; resuming: test_resume.py.)"""

import dataclasses
import itertools
import json
import math

import pytest
import torch

from tinygpt import checkpoint, evaluate
from tinygpt.config import PRESETS, TrainConfig, apply_overrides, get_config, with_length
from tinygpt.data import Corpus, DatasetError, Text
from tinygpt.model import GPT, GPTConfig
from tinygpt.progress import StopRequest
from tinygpt.runs import RunExistsError, TrainingError
from tinygpt.schedule import get_lr
from tinygpt.train import RunOptions, train, train_step

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
    train(cfg, Text(short_text), RunOptions(progress=False))
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
    train(small_config(max_steps=20), Text(short_text),
          RunOptions(progress=False, on_step=lambda step, elapsed, model: step == 10 and stop.set(), stop=stop))
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- the text


def test_train_accepts_a_corpus_and_saves_its_vocabulary(tmp_path):
    corpus = Corpus.from_text("abc def ghi\n" * 4000)
    run = train(small_config(max_steps=4, eval_interval=4), corpus, RunOptions(out_dir=tmp_path, progress=False))
    assert run.tokenizer == corpus.tokenizer and run.model.config.vocab_size == 11
    _, tokenizer, _ = checkpoint.load(tmp_path / "ckpt_last.pt")
    assert tokenizer == corpus.tokenizer


def test_a_text_too_short_for_the_context_is_refused_before_training():
    from tinygpt.data import DatasetError

    with pytest.raises(DatasetError, match="too short"):
        train(small_config(), Text("to be or not to be\n" * 5), RunOptions(progress=False))


# ---------------------------------------------------------------- run folders


def test_training_into_a_folder_that_holds_a_run_is_refused_and_leaves_it_intact(tmp_path, short_text):
    train(small_config(max_steps=4, eval_interval=4), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunExistsError,
                       match='already holds a run \\(at step 4\\).*if_exists="resume".*if_exists="overwrite"'):
        train(small_config(max_steps=8), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_overwrite_starts_a_new_run_in_place_of_the_old(tmp_path, short_text):
    train(small_config(max_steps=8, eval_interval=4), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    run = train(small_config(max_steps=4, eval_interval=4), Text(short_text),
                RunOptions(out_dir=tmp_path, if_exists="overwrite", progress=False))
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 4
    assert checkpoint.read(tmp_path / "ckpt_best.pt")["step"] <= 4
    assert any("overwrite" in n for n in run.notices)


def test_resume_in_a_folder_without_a_checkpoint_says_so_and_starts_at_step_0(tmp_path, short_text):
    heard = []
    run = train(small_config(max_steps=5, eval_interval=5), Text(short_text),
                RunOptions(out_dir=tmp_path / "typo", if_exists="resume", progress=False, on_notice=heard.append))
    assert run.step == 5 and [h["step"] for h in run.history] == [0, 5]
    assert heard == run.notices and "no checkpoint in" in heard[0] and "step 0" in heard[0]


def test_an_unknown_if_exists_is_refused_naming_the_choices(tmp_path, short_text):
    with pytest.raises(ValueError, match="if_exists must be one of refuse, resume, overwrite"):
        train(small_config(), Text(short_text), RunOptions(out_dir=tmp_path, if_exists="append", progress=False))
    assert not any(tmp_path.iterdir())


def test_resume_without_out_dir_raises_value_error(short_text):
    with pytest.raises(ValueError, match="resume needs out_dir"):
        train(small_config(), Text(short_text), RunOptions(progress=False, if_exists="resume"))


# ---------------------------------------------------------------- stopping


def test_a_stop_request_ends_training_at_the_next_step_boundary(short_text):
    stop = StopRequest()
    run = train(small_config(), Text(short_text),
                RunOptions(progress=False, on_step=lambda step, elapsed, model: step == 45 and stop.set(), stop=stop))
    assert run.stopped == "interrupted" and run.step == 45


def test_patience_stops_after_that_many_evaluations_without_improvement(short_text):
    # a learning rate of (almost) zero keeps the weights, and so the val loss, where they are
    cfg = small_config(max_steps=1000, eval_interval=5, patience=2, lr=1e-30, min_lr=0.0, weight_decay=0.0)
    result = train(cfg, Text(short_text), RunOptions(progress=False))
    assert result.stopped == "early stop"
    assert result.step == 10  # step 0 sets the best; steps 5 and 10 do not beat it
    assert [h["step"] for h in result.history] == [0, 5, 10]
    assert result.best_val == result.history[0]["val_loss"]


def test_nonfinite_loss_raises_training_error(short_text):
    with pytest.raises(TrainingError, match="the loss became"):
        train(small_config(lr=1e30, min_lr=1e29, warmup_steps=0, grad_clip=0.0), Text(short_text),
              RunOptions(progress=False))


# ---------------------------------------------------------------- the config asked for, and what was said


@pytest.mark.parametrize("config, data, message", [
    ("smoke", Text("ab\n" * 5000), "config must be a TrainConfig \\(get_config\\('smoke'\\) for a preset\\)"),
    (None, "ab\n" * 5000, "data must be Shakespeare\\(\\), Text\\(text\\) or a Corpus, got str"),
])
def test_arguments_of_the_wrong_kind_are_refused_saying_what_to_give(config, data, message):
    with pytest.raises(TypeError, match=message):
        train(config, data, RunOptions(progress=False))


def test_overrides_change_the_config_and_the_config_asked_for_is_saved(tmp_path, short_text):
    cfg = apply_overrides(small_config(max_steps=4, eval_interval=4), ["lr=2e-3", "model.n_embd=16"])
    run = train(cfg, Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")["train_config"]
    assert saved["lr"] == 2e-3 and saved["model"]["n_embd"] == 16 and run.model.config.n_embd == 16


def test_an_unknown_override_raises_value_error_naming_it(short_text):
    with pytest.raises(ValueError, match="unknown setting 'lrate'"):
        train(apply_overrides(small_config(), ["lrate=1"]), Text(short_text), RunOptions(progress=False))


def test_max_steps_replaces_a_presets_time_budget(short_text):
    run = train(with_length(small_config(time_budget=600.0), max_steps=4), Text(short_text), RunOptions(progress=False))
    assert run.step == 4 and run.config.time_budget is None and run.stopped == "finished"


def test_a_budgeted_run_saves_its_fitted_schedule_as_state_not_as_config(tmp_path, short_text):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.1

    train(small_config(max_steps=500, eval_interval=1000, time_budget=5.0), Text(short_text),
          RunOptions(out_dir=tmp_path, progress=False, on_step=tick, clock=lambda: clock[0]))
    saved = checkpoint.read(tmp_path / "ckpt_last.pt")
    assert saved["train_config"]["max_steps"] == 500
    assert saved["fits_done"] >= 1 and saved["schedule"]["max_steps"] == saved["step"] < 500


def test_a_large_model_off_a_gpu_is_announced_as_a_gpu_job_before_the_first_step(short_text):
    stop, heard = StopRequest(), []

    def hear(message):
        heard.append(message)
        stop.set()

    run = train(apply_overrides(get_config("workshop"), ["batch_size=1"]), Text(short_text),
                RunOptions(device="cpu", progress=False, on_notice=hear, stop=stop))
    assert run.step == 0 and "GPU job" in heard[0] and "laptop preset" in heard[0]
    assert "only 2 batches a split" in heard[0] and run.config.eval_iters == 10  # the config asked for is kept



def test_the_gpu_job_notice_counts_the_planned_steps_without_a_false_estimate(short_text):
    stop, heard = StopRequest(), []

    def hear(message):
        heard.append(message)
        stop.set()

    train(with_length(apply_overrides(get_config("workshop"), ["batch_size=1"]), max_steps=1), Text(short_text),
          RunOptions(device="cpu", progress=False, on_notice=hear, stop=stop))
    assert "GPU job" in heard[0] and "(1 to go" in heard[0] and "hours" not in heard[0]

# ---------------------------------------------------------------- precision


def test_training_in_fp16_with_a_grad_scaler_lowers_the_loss_on_a_cpu(short_text):
    run = train(small_config(max_steps=60), Text(short_text),
                RunOptions(device="cpu", precision="fp16", progress=False))
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


# ---------------------------------------------------------------- the progress bar


def test_a_budgeted_runs_bar_counts_seconds_ends_full_and_always_shows_the_same_figures(short_text, capsys):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.25

    train(small_config(max_steps=10_000, eval_interval=10, time_budget=5.0, fit_schedule=False), Text(short_text),
          RunOptions(progress=True, on_step=tick, clock=lambda: clock[0]))
    frames = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if "training on" in f]
    assert "5/5 s" in frames[-1] and "100%" in frames[-1]
    assert all("/5 s" in f for f in frames)
    with_figures = [f for f in frames if "loss=" in f]
    assert with_figures and all(("val=" in f and "lr=" in f) for f in with_figures)



def test_a_bar_ends_at_the_real_elapsed_time_and_shows_the_final_evaluation(short_text, capsys):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.25

    run = train(small_config(max_steps=8, eval_interval=10, time_budget=5.0, fit_schedule=False), Text(short_text),
                RunOptions(progress=True, on_step=tick, clock=lambda: clock[0]))
    last = [f for f in capsys.readouterr().err.replace("\r", "\n").splitlines() if "training on" in f][-1]
    assert run.history[-1]["step"] == 8 and len(run.history) == 2
    assert "2/5 s" in last and f"val={run.history[-1]['val_loss']:.3f}" in last

# ---------------------------------------------------------------- the final bits-per-character pass


def test_a_run_too_short_for_its_final_pass_skips_it_and_says_so(monkeypatch, text):
    """A clock that moves one second a reading: the pass's first forward takes a second, so the
    whole (hundreds of forwards) would take far longer than the run's few readings."""
    monkeypatch.setattr(evaluate, "FINAL_PASS_MIN_SECONDS", 0.0)
    readings = itertools.count()
    run = train(small_config(max_steps=1), Text(text), RunOptions(progress=False, clock=lambda: next(readings)))
    assert run.val_bits_per_char is None
    assert any(n.startswith("bits per character not computed: scoring the 111,539 tokens") for n in run.notices)


def test_overwrite_with_a_bad_argument_leaves_the_old_run_in_place(tmp_path, short_text):
    train(small_config(max_steps=4, eval_interval=4), Text(short_text), RunOptions(out_dir=tmp_path, progress=False))
    with pytest.raises(ValueError, match="unknown device"):
        train(small_config(), Text(short_text),
              RunOptions(out_dir=tmp_path, if_exists="overwrite", device="tpu", progress=False))
    assert checkpoint.read(tmp_path / "ckpt_last.pt")["step"] == 4


# ---------------------------------------------------------------- every check before the folder is touched


@pytest.fixture
def a_run(tmp_path, short_text):
    """A folder holding a finished 4-step run."""
    out = tmp_path / "run"
    train(small_config(max_steps=4, eval_interval=4), Text(short_text), RunOptions(out_dir=out, progress=False))
    return out


@pytest.mark.parametrize("config, own_text, error", [
    (None, "to be or not to be " * 3, "too short"),
    (apply_overrides(small_config(), ["model.block_size=60000"]), None, "too short"),
    (None, None, "if_exists"),
])
def test_overwrite_with_a_bad_argument_keeps_the_old_run(a_run, short_text, config, own_text, error):
    if_exists = "replace" if error == "if_exists" else "overwrite"
    with pytest.raises((ValueError, DatasetError), match=error):
        train(config, Text(own_text or short_text), RunOptions(out_dir=a_run, if_exists=if_exists, progress=False))
    assert checkpoint.read(a_run / "ckpt_last.pt")["step"] == 4 and (a_run / "ckpt_best.pt").exists()


def test_a_text_refused_as_too_short_leaves_no_output_folder_behind(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(DatasetError):
        train(small_config(), Text("to be or not to be " * 3), RunOptions(out_dir=out, progress=False))
    assert not out.exists()


# ---------------------------------------------------------------- no setting silently replaced


def test_a_model_vocab_size_override_is_refused_as_set_by_the_text(short_text):
    with pytest.raises(ValueError, match="model.vocab_size cannot be set: it is the tokenizer's"):
        train(apply_overrides(small_config(max_steps=1), ["model.vocab_size=100"]), Text(short_text),
              RunOptions(progress=False))


# ---------------------------------------------------------------- a time budget is never ignored


@pytest.mark.slow
def test_a_time_budget_much_longer_than_the_planned_steps_lengthens_the_schedule(tmp_path, short_text):
    clock = [0.0]

    def tick(step, elapsed, model):
        clock[0] += 0.01  # 20 planned steps take 0.2 s of a 3 s budget

    run = train(small_config(max_steps=20, warmup_steps=5, eval_interval=10, time_budget=3.0), Text(short_text),
                RunOptions(out_dir=tmp_path, progress=False, on_step=tick, clock=lambda: clock[0]))
    assert run.step > 20 * 10 and run.stopped in ("finished", "time budget")
    assert run.history[-1]["time"] >= 0.95 * 3.0
