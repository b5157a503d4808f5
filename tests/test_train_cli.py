"""`tinygpt train` on the command line: run folders, --text, --set, resume, and Ctrl-C.

Most runs go through `tinygpt.cli.main(argv)` in this process (what `python -m tinygpt` runs);
the Ctrl-C test starts a real process and interrupts it."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from cli_support import SMOKE, one_error_line

from tinygpt import checkpoint
from tinygpt.cli import main

pytestmark = pytest.mark.usefixtures("in_tmp")  # every test runs in its own empty folder


def test_training_into_a_folder_that_holds_a_run_is_refused_with_one_line(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    before = {p.name: p.read_bytes() for p in (in_tmp / "r").iterdir()}
    capsys.readouterr()
    assert main([*SMOKE, "--out", "r"]) == 2
    line = one_error_line(capsys)
    assert "r already holds a run (at step 4)" in line and "--resume" in line and "--overwrite" in line
    assert {p.name: p.read_bytes() for p in (in_tmp / "r").iterdir()} == before


def test_the_default_folder_is_protected_too(in_tmp, capsys):
    assert main(SMOKE) == 0 and (in_tmp / "runs" / "smoke" / "ckpt_last.pt").exists()
    capsys.readouterr()
    assert main(SMOKE) == 2
    assert "runs/smoke already holds a run" in one_error_line(capsys)


def test_overwrite_starts_over(in_tmp):
    assert main([*SMOKE, "--out", "r"]) == 0
    assert main([*SMOKE, "--out", "r", "--overwrite", "--max-steps", "2"]) == 0
    assert checkpoint.read(in_tmp / "r" / "ckpt_last.pt")["step"] == 2


def test_resume_in_a_folder_without_a_checkpoint_says_so(capsys):
    assert main([*SMOKE, "--out", "typo", "--resume"]) == 0
    assert "no checkpoint in typo" in capsys.readouterr().out


@pytest.mark.slow
def test_extending_a_run_on_resume_says_how_the_schedule_continues(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    assert main(["train", "--out", "r", "--resume", "--max-steps", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "schedule extended from 4 to 8 steps" in out and "step 8 (finished)" in out


def test_text_trains_on_a_users_file_and_sample_uses_its_vocabulary(in_tmp, capsys):
    (in_tmp / "poem.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 400, encoding="utf-8")
    assert main([*SMOKE, "--text", "poem.txt", "--out", "r"]) == 0
    _, tokenizer, _ = checkpoint.load(in_tmp / "r" / "ckpt_last.pt")
    assert set(tokenizer.chars) == set("the quick brown fox jumps over the lazy dog\n")
    capsys.readouterr()
    assert main(["sample", "--checkpoint", "r/ckpt_best.pt", "--prompt", "the", "--max-new-tokens", "20",
                 "--seed", "0"]) == 0
    assert set(capsys.readouterr().out.strip()) <= set(tokenizer.chars)


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b"\x00\x01\x02" * 100, "binary"),
                                              (b"caf\xe9 " * 1000, "not UTF-8"), (b"too short\n", "too short")])
def test_a_text_that_cannot_be_trained_on_is_one_line_and_exit_2(in_tmp, capsys, content, message):
    (in_tmp / "bad.txt").write_bytes(content)
    assert main([*SMOKE, "--text", "bad.txt", "--out", "r"]) == 2
    assert message in one_error_line(capsys)


def test_out_and_text_starting_with_a_tilde_are_in_home(in_tmp, monkeypatch, capsys):
    home = in_tmp / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # a UTF-16 text, as Notepad's "Unicode" and PowerShell 5.1's `>` write it
    (home / "book.txt").write_bytes(("the quick brown fox jumps over the lazy dog\r\n" * 400).encode("utf-16"))
    assert main([*SMOKE, "--text=~/book.txt", "--out=~/runs/t2"]) == 0
    assert (home / "runs" / "t2" / "ckpt_last.pt").is_file()
    assert not (in_tmp / "~").exists()
    assert f"checkpoints in {home / 'runs' / 't2'}" in capsys.readouterr().out
    _, tokenizer, _ = checkpoint.load("~/runs/t2/ckpt_last.pt")
    assert set(tokenizer.chars) == set("the quick brown fox jumps over the lazy dog\n")


def test_the_apis_out_dir_starting_with_a_tilde_is_in_home(in_tmp, monkeypatch):
    from tinygpt.config import get_config, with_length
    from tinygpt.data import default_data_dir
    from tinygpt.train import RunOptions, train

    monkeypatch.setenv("TINYGPT_DATA_DIR", str(default_data_dir()))  # the dataset stays where it is
    monkeypatch.setenv("HOME", str(in_tmp))
    run = train(with_length(get_config("smoke"), max_steps=2), options=RunOptions(out_dir="~/api", progress=False))
    assert run.out_dir == in_tmp / "api" and (in_tmp / "api" / "ckpt_last.pt").is_file()


def test_a_bpe_larger_than_the_text_allows_says_what_it_learned_and_the_same_request_resumes(in_tmp, capsys, text):
    (in_tmp / "short.txt").write_text(text[:3000], encoding="utf-8")
    asked = [*SMOKE, "--text", "short.txt", "--out", "r", "--tokenizer", "bpe:5000", "--set", "model.block_size=8"]
    assert main(asked) == 0
    learned = checkpoint.load(in_tmp / "r" / "ckpt_last.pt")[1].vocab_size
    assert learned < 5000
    assert f"the BPE vocabulary has {learned} tokens, not 5000" in capsys.readouterr().out
    assert main(["train", "--resume", "--out", "r", "--text", "short.txt", "--tokenizer", "bpe:5000",
                 "--max-steps", "6", "--quiet"]) == 0
    assert "step 6 (finished)" in capsys.readouterr().out
    assert checkpoint.load(in_tmp / "r" / "ckpt_last.pt")[1].vocab_size == learned


def test_on_resume_a_bpe_smaller_than_the_runs_is_refused_in_one_line(in_tmp, capsys):
    assert main([*SMOKE, "--tokenizer", "bpe:300", "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--tokenizer", "bpe:280", "--quiet"]) == 2
    assert "the run's tokenizer is bpe:300, not bpe:280" in one_error_line(capsys)


def test_a_missing_text_file_is_one_line_and_exit_2(capsys):
    assert main([*SMOKE, "--text", "nope.txt"]) == 2
    assert "nope.txt: no such file" in one_error_line(capsys)


def test_set_changes_settings_and_they_are_saved(in_tmp):
    assert main([*SMOKE, "--out", "r", "--set", "lr=1e-3", "--set", "model.n_layer=1"]) == 0
    saved = checkpoint.read(in_tmp / "r" / "ckpt_last.pt")["train_config"]
    assert saved["lr"] == 1e-3 and saved["model"]["n_layer"] == 1


@pytest.mark.parametrize("item, message", [("lrate=1", "unknown setting 'lrate'"), ("lr", "expected KEY=VALUE"),
                                           ("model.n_head=5", "divisible")])
def test_a_bad_set_is_one_line_and_exit_2(capsys, item, message):
    assert main([*SMOKE, "--set", item]) == 2
    assert message in one_error_line(capsys)


def test_fp16_off_cuda_is_refused_on_the_command_line(capsys):
    assert main([*SMOKE, "--device", "cpu", "--precision", "fp16"]) == 2
    assert "CUDA" in one_error_line(capsys)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_prints_the_command_that_resumes_that_very_run(in_tmp):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["train", "--preset", "smoke", "--out", "r", "--time-budget", "600", "--set", "eval_interval=5",
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (in_tmp / "r" / "ckpt_last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = err.strip().splitlines()[-1]
    assert line.startswith("tinygpt: interrupted at step ") and "resume with: python -m tinygpt train" in line
    command = shlex.split(line.split("resume with: ")[1])
    assert command[:3] == ["python", "-m", "tinygpt"] and "--resume" in command and "train(" not in line
    step = checkpoint.read(in_tmp / "r" / "ckpt_last.pt")["step"]
    # the printed command, with a stop soon after: it continues the same run, budget and settings kept
    # (the schedule not fitted to the budget, which would lengthen it to fill the 600 s)
    assert main([*command[3:], "--max-steps", str(step + 3), "--time-budget", "600", "--set", "fit_schedule=false",
                 "--quiet"]) == 0
    saved = checkpoint.read(in_tmp / "r" / "ckpt_last.pt")
    assert saved["step"] == step + 3 and saved["train_config"]["eval_interval"] == 5
    assert saved["history"][0]["step"] == 0  # one run, resumed: not a new one


def test_data_dir_with_a_users_text_is_refused(in_tmp, capsys):
    (in_tmp / "poem.txt").write_text("the quick brown fox\n" * 400, encoding="utf-8")
    assert main([*SMOKE, "--text", "poem.txt", "--data-dir", "data"]) == 2
    assert "no use with your own text" in one_error_line(capsys)



def test_resume_and_overwrite_together_are_refused_in_one_line(capsys):
    assert main([*SMOKE, "--out", "r", "--resume", "--overwrite"]) == 2
    assert "contradict" in one_error_line(capsys)


@pytest.mark.parametrize("flag, item", [(["--max-steps", "3"], "max_steps=10"),
                                        (["--time-budget", "5"], "time_budget=9")])
def test_a_setting_given_both_by_its_flag_and_by_set_is_refused(capsys, flag, item):
    assert main(["train", "--preset", "smoke", "--quiet", *flag, "--set", item]) == 2
    assert f"{item.split('=')[0]} is given twice" in one_error_line(capsys)


def test_max_steps_replaces_a_presets_time_budget_and_says_so(in_tmp, capsys):
    assert main(["train", "--preset", "smoke", "--set", "time_budget=600", "--max-steps", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "--max-steps 4 replaces the preset's time budget of 600 s" in out and "step 4 (finished)" in out
    assert checkpoint.read(in_tmp / "runs" / "smoke" / "ckpt_last.pt")["train_config"]["time_budget"] is None


@pytest.mark.parametrize("args, error", [
    (["--set", "nosuch=1"], "nosuch"),  # without a preset: checked against the default one
    (["--preset", "smoke", "--max-steps", "3", "--set", "max_steps=10"], "given twice"),
])
def test_overwrite_with_a_bad_setting_keeps_the_old_run(in_tmp, capsys, args, error):
    assert main([*SMOKE, "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", "r", "--overwrite", "--quiet", *args]) == 2
    assert error in one_error_line(capsys)
    assert checkpoint.read(in_tmp / "r" / "ckpt_last.pt")["step"] == 4 and (in_tmp / "r" / "ckpt_best.pt").exists()

# ---------------------------------------------------------------- bad input on resume: one line, exit 2


def test_a_setting_refused_on_resume_exits_with_status_2(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--set", "lr=1e-2", "--quiet"]) == 2
    assert "cannot change on resume" in one_error_line(capsys)


def test_resuming_a_text_run_without_its_text_exits_2_naming_the_option(in_tmp, capsys):
    (in_tmp / "poem.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 400, encoding="utf-8")
    assert main([*SMOKE, "--text", "poem.txt", "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--quiet"]) == 2
    assert "--text" in one_error_line(capsys)


@pytest.mark.slow
def test_a_folder_with_only_a_history_is_refused_with_advice_that_works(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    for name in ("ckpt_last.pt", "ckpt_best.pt"):
        (in_tmp / "r" / name).unlink()
    capsys.readouterr()
    assert main([*SMOKE, "--out", "r", "--resume"]) == 2
    assert "no ckpt_last.pt to resume from" in one_error_line(capsys)
    assert main([*SMOKE, "--out", "r"]) == 2
    advice = one_error_line(capsys)
    assert "--resume" not in advice and "--overwrite" in advice
    assert main([*SMOKE, "--out", "r", "--overwrite"]) == 0


# ---------------------------------------------------------------- --tokenizer


@pytest.mark.slow
def test_tokenizer_bpe_trains_a_run_whose_checkpoint_holds_that_bpe_and_sample_continues_it(in_tmp, capsys):
    from tinygpt.bpe import BPETokenizer
    from tinygpt.sample import generate_text

    assert main([*SMOKE, "--tokenizer", "bpe:300", "--out", "r"]) == 0
    assert "(per token of a 300-token BPE)" in capsys.readouterr().out
    model, tokenizer, _ = checkpoint.load(in_tmp / "r" / "ckpt_best.pt")
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 300 == model.config.vocab_size
    assert main(["sample", "--checkpoint", "r/ckpt_best.pt", "--prompt", "ROMEO:", "--max-new-tokens", "12",
                 "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out == generate_text(model, tokenizer, "ROMEO:", 12, temperature=0.8, seed=0) + "\n"
    assert out.startswith("ROMEO:")


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--temperature", "0"], ["--window", "slide", "--seed", "1"],
                                     ["--prompt-file", "prompt.txt", "--seed", "1"], ["--seed", "1"]])
def test_sample_from_a_bpe_checkpoint_takes_every_prompt_and_window_option(in_tmp, capsys, options):
    from tinygpt.sample import generate_text

    (in_tmp / "prompt.txt").write_text("JULIET:\nO Romeo", encoding="utf-8")
    assert main([*SMOKE, "--tokenizer", "bpe:300", "--out", "r", "--set", "model.block_size=8"]) == 0
    model, tokenizer, _ = checkpoint.load(in_tmp / "r" / "ckpt_best.pt")
    capsys.readouterr()
    n = 3 * model.config.block_size  # past the context
    assert main(["sample", "--checkpoint", "r/ckpt_best.pt", "--max-new-tokens", str(n), *options]) == 0
    out, err = capsys.readouterr()
    prompt = "JULIET:\nO Romeo" if "--prompt-file" in options else ""
    temperature = 0 if "0" in options else 0.8
    window = "slide" if "slide" in options else "exact"
    start = prompt or "\n"  # no prompt: from a line break, which is not printed
    expected = generate_text(model, tokenizer, start, n, temperature=temperature, seed=1, window=window,
                             include_prompt=bool(prompt))
    assert out == expected + "\n" and err == ""


@pytest.mark.parametrize("spec, message", [("bpe:100", "257 or more"), ("bpe:abc", "a whole number"),
                                           ("sentencepiece", "unknown tokenizer")])
def test_a_bad_tokenizer_spec_is_one_line_and_exit_2(capsys, spec, message):
    with pytest.raises(SystemExit) as e:
        main([*SMOKE, "--tokenizer", spec])
    assert e.value.code == 2
    line = one_error_line(capsys)
    assert line.startswith("tinygpt: error: argument --tokenizer: ") and message in line


@pytest.mark.slow
def test_resuming_a_bpe_run_keeps_its_tokenizer_and_another_is_refused_in_one_line(in_tmp, capsys):
    assert main([*SMOKE, "--tokenizer", "bpe:300", "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--tokenizer", "char", "--quiet"]) == 2
    assert "the run's tokenizer is bpe:300, not char" in one_error_line(capsys)
    assert main(["train", "--resume", "--out", "r", "--max-steps", "6", "--quiet"]) == 0
    assert checkpoint.load(in_tmp / "r" / "ckpt_last.pt")[1].vocab_size == 300


@pytest.mark.parametrize("tokenizer", ["char", pytest.param("bpe:300", marks=pytest.mark.slow)])
def test_train_prints_the_val_bits_per_character_of_the_final_model(in_tmp, capsys, tokenizer):
    assert main([*SMOKE, "--tokenizer", tokenizer, "--out", "r"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("step 4 (finished)") and " bits per character; " in last
    bpc = float(last.split(" bits per character")[0].rsplit(" ", 1)[1])
    assert 1 < bpc < 10


# ---------------------------------------------------------------- what resuming says, in flags


@pytest.mark.slow
def test_resuming_a_finished_run_with_fewer_steps_says_only_that_there_is_nothing_to_train(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--max-steps", "2", "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tinygpt: ")]
    assert notes == ["tinygpt: the run is at step 4, already past the 2 steps asked for: nothing to train "
                     "(a run is not shortened below its step; give a larger --max-steps / max_steps to extend it)"]


def test_settings_added_on_resume_are_said_without_python_names(in_tmp, capsys):
    assert main([*SMOKE, "--out", "r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", "r", "--max-steps", "5", "--time-budget", "600", "--set",
                 "patience=3", "--set", "fit_schedule=false", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "a time budget of 600 s now applies (the run had none)" in out
    assert "early stop after 3 evaluations without a better val loss" in out
    assert "None" not in out
