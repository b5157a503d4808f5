"""The command line.

End to end, as a user runs it: `python -m tinygpt ...` in a fresh process. A process spends
seconds importing torch, so those runs are made once per module, several at a time, and the
tests look at their results. Every bad argument is also checked in-process through
`tinygpt.cli.main(argv)`, which is what `python -m tinygpt` runs, and takes milliseconds.
"""

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.cli import SAMPLE_SEPARATOR, main
from tinygpt.data import default_data_dir


@pytest.fixture(scope="module")
def cli_env():
    env = dict(os.environ)
    env.update(TINYGPT_DATA_DIR=str(default_data_dir()), TINYGPT_DEVICE="cpu")
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def run_cli(args, env, cwd, timeout=300):
    return subprocess.run([sys.executable, "-m", "tinygpt", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(workdir, cli_env):
    """`tinygpt train --preset smoke --max-steps 60`, run once for the module."""
    out = workdir / "run"
    proc = run_cli(["train", "--preset", "smoke", "--out", str(out), "--max-steps", "60", "--quiet"],
                   cli_env, workdir)
    return out, proc


SAMPLE = ["--prompt", "ROMEO:", "--max-new-tokens", "50", "--seed", "1"]

BAD_ARGUMENTS = {
    "unknown preset": ["train", "--preset", "huge"],
    "max-steps 0": ["train", "--preset", "smoke", "--max-steps", "0"],
    "train on a tpu": ["train", "--preset", "smoke", "--device", "tpu", "--out", "tpu_run"],
    "temperature -1": ["sample", "--checkpoint", "{best}", "--temperature", "-1"],
    "temperature nan": ["sample", "--checkpoint", "{best}", "--temperature", "nan"],
    "top-k 0": ["sample", "--checkpoint", "{best}", "--top-k", "0"],
    "max-new-tokens -5": ["sample", "--checkpoint", "{best}", "--max-new-tokens", "-5"],
    "max-new-tokens 10**7": ["sample", "--checkpoint", "{best}", "--max-new-tokens", "10000000"],
    "top-k 2.5": ["sample", "--checkpoint", "{best}", "--top-k", "2.5"],
    "temperature inf": ["sample", "--checkpoint", "{best}", "--temperature", "inf"],
    "top-p 0": ["sample", "--checkpoint", "{best}", "--top-p", "0"],
    "top-p 1.5": ["sample", "--checkpoint", "{best}", "--top-p", "1.5"],
    "top-p nan": ["sample", "--checkpoint", "{best}", "--top-p", "nan"],
    "top-p text": ["sample", "--checkpoint", "{best}", "--top-p", "most"],
    "no model": ["sample", "--prompt", "A"],
    "unknown shipped model": ["sample", "--pretrained", "huge"],
    "checkpoint and shipped model": ["sample", "--checkpoint", "{best}", "--pretrained", "laptop"],
    "missing checkpoint": ["sample", "--checkpoint", "no_such_ckpt.pt"],
    "prompt with é": ["sample", "--checkpoint", "{best}", "--prompt", "Roméo"],
    "sample on a tpu": ["sample", "--checkpoint", "{best}", "--device", "tpu"],
    "num-samples 0": ["sample", "--checkpoint", "{best}", "--num-samples", "0"],
    "prompt and prompt-file": ["sample", "--checkpoint", "{best}", "--prompt", "A", "--prompt-file", "p.txt"],
    "missing prompt file": ["sample", "--checkpoint", "{best}", "--prompt-file", "no_such_prompt.txt"],
    "checkpoint is the run folder": ["sample", "--checkpoint", "{run}"],
    "checkpoint is a text file": ["sample", "--checkpoint", "{text}"],
    "weights with a NaN": ["sample", "--checkpoint", "{nan}"],
    "weights with a NaN, greedy": ["sample", "--checkpoint", "{nan}", "--temperature", "0"],
}


# run as subprocesses too: one failing in argparse, one in the package, one on the checkpoint
SUBPROCESS_BAD = ["temperature nan", "prompt with é", "missing checkpoint", "weights with a NaN"]


def _fill(args, best):
    """Put the trained checkpoint's path for {best}, its folder for {run}, a NaN-poisoned copy for {nan},
    a text file for {text}."""
    return [a.replace("{best}", best).replace("{run}", os.path.dirname(best))
             .replace("{nan}", _nan_checkpoint(best)).replace("{text}", _text_file(best)) for a in args]


def _text_file(best):
    path = os.path.join(os.path.dirname(os.path.dirname(best)), "notes.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("my notes: train with --preset smoke\n")
    return path


def _nan_checkpoint(best):
    """A copy of the checkpoint `best` with one NaN in its last parameter, saved beside it as nan.pt."""
    path = os.path.join(os.path.dirname(os.path.dirname(best)), "nan.pt")
    if not os.path.exists(path):
        model, tokenizer, _ = checkpoint.load(best)
        with torch.no_grad():
            list(model.parameters())[-1].view(-1)[0] = float("nan")
        checkpoint.save(path, model=model, tokenizer=tokenizer)
    return path


@pytest.fixture(scope="module")
def runs(trained, workdir, cli_env):
    """The sampling runs and a few bad-argument runs, run concurrently once training is done."""
    out, _ = trained
    best = str(out / "ckpt_best.pt")
    commands = {f"bad: {name}": _fill(BAD_ARGUMENTS[name], best) for name in SUBPROCESS_BAD}
    commands["sample 1"] = ["sample", "--checkpoint", best, *SAMPLE]
    commands["sample 2"] = ["sample", "--checkpoint", best, *SAMPLE]
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cli, args, cli_env, workdir) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def test_train_exits_0_and_writes_checkpoints_and_history(trained):
    out, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ckpt_best.pt", "ckpt_last.pt", "history.json"]
    assert "step 60 (finished)" in proc.stdout


def test_train_quiet_prints_nothing_on_stderr(trained):
    _, proc = trained
    assert proc.stderr == ""


def test_sample_prints_text_starting_with_the_prompt(runs):
    proc = runs["sample 1"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:")
    assert len(proc.stdout) == len("ROMEO:") + 50 + 1  # and print's newline
    assert proc.stderr == ""


def test_sample_with_the_same_seed_prints_the_same_text(runs):
    assert runs["sample 1"].returncode == runs["sample 2"].returncode == 0
    assert runs["sample 1"].stdout == runs["sample 2"].stdout


def _assert_one_error_line(rc, stdout, stderr):
    assert rc == 2, (stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tinygpt: error:")
    assert "Traceback" not in stderr and "Traceback" not in stdout


@pytest.mark.parametrize("case", SUBPROCESS_BAD)
def test_bad_arguments_in_a_process_exit_2_with_one_error_line_and_no_traceback(runs, case):
    proc = runs[f"bad: {case}"]
    _assert_one_error_line(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def best_checkpoint(trained):
    out, proc = trained
    assert proc.returncode == 0, proc.stderr
    return str(out / "ckpt_best.pt")


def run_main(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_one_error_line_and_no_traceback(case, best_checkpoint, capsys, tmp_path,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_main(_fill(BAD_ARGUMENTS[case], best_checkpoint), capsys)
    _assert_one_error_line(rc, out, err)


@pytest.mark.parametrize(
    "case, words",
    [
        ("unknown preset", "'huge'"),
        ("max-steps 0", "--max-steps"),
        ("train on a tpu", "'tpu'"),
        ("temperature -1", "temperature"),
        ("temperature nan", "nan"),
        ("top-k 0", "--top-k"),
        ("max-new-tokens -5", "--max-new-tokens"),
        ("max-new-tokens 10**7", "--max-new-tokens: max_new_tokens must be a whole number from 0 to 1,000,000"),
        ("top-k 2.5", "--top-k: '2.5' is not a whole number"),
        ("temperature inf", "--temperature: 'inf' is not a finite number"),
        ("top-p 0", "--top-p: top_p must be a number in (0, 1] (1 = off), got 0.0"),
        ("top-p 1.5", "--top-p: top_p must be a number in (0, 1]"),
        ("top-p nan", "--top-p: 'nan' is not a finite number"),
        ("top-p text", "--top-p: 'most' is not a number"),
        ("no model", "one of the arguments --checkpoint --pretrained is required"),
        ("unknown shipped model", "no shipped model named 'huge'; the package ships: laptop"),
        ("checkpoint and shipped model", "--pretrained: not allowed with argument --checkpoint"),
        ("missing checkpoint", "no_such_ckpt.pt"),
        ("prompt with é", "'é'"),
        ("sample on a tpu", "'tpu'"),
        ("num-samples 0", "--num-samples"),
        ("prompt and prompt-file", "--prompt-file: not allowed with argument --prompt"),
        ("missing prompt file", "no_such_prompt.txt: no such file"),
        ("checkpoint is the run folder", "is a folder, not a checkpoint file: use "),
        ("checkpoint is a text file", "notes.txt: not a checkpoint: a text file, not a PyTorch file"),
        ("weights with a NaN", "nan.pt: the weights are not finite"),
        ("weights with a NaN, greedy", "nan.pt: the weights are not finite"),
    ],
)
def test_bad_argument_errors_name_what_is_wrong(case, words, best_checkpoint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, _, err = run_main(_fill(BAD_ARGUMENTS[case], best_checkpoint), capsys)
    assert words in err


def test_no_command_is_an_error_listing_the_commands(capsys):
    rc, out, err = run_main([], capsys)
    _assert_one_error_line(rc, out, err)
    assert "choose a command: train, sample" in err


def test_the_run_folder_error_names_the_best_checkpoint_in_it(best_checkpoint, capsys):
    _, _, err = run_main(["sample", "--checkpoint", os.path.dirname(best_checkpoint)], capsys)
    assert f"use {best_checkpoint}" in err


def test_sample_device_defaults_to_tinygpt_device(best_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("TINYGPT_DEVICE", "tpu")  # no --device: the variable decides, and is refused
    rc, _, err = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE], capsys)
    assert rc == 2 and "'tpu'" in err


def sample_texts(stdout: str) -> list[str]:
    return stdout.removesuffix("\n").split(f"\n{SAMPLE_SEPARATOR}\n")


def test_num_samples_prints_that_many_texts_between_separators(best_checkpoint, capsys):
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE, "--num-samples", "3"], capsys)
    assert rc == 0, err
    texts = sample_texts(out)
    assert len(texts) == 3
    assert all(t.startswith("ROMEO:") and len(t) == len("ROMEO:") + 50 for t in texts)


def test_num_samples_draws_different_texts_and_the_first_is_the_single_sample(best_checkpoint, capsys):
    _, one, _ = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE], capsys)
    _, three, _ = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE, "--num-samples", "3"], capsys)
    texts = sample_texts(three)
    assert texts[0] == one.removesuffix("\n")
    assert len(set(texts)) == 3


def test_prompt_file_gives_the_same_text_as_the_same_prompt_given_inline(best_checkpoint, capsys, tmp_path):
    (tmp_path / "prompt.txt").write_text("JULIET:\nO Romeo")
    args = ["sample", "--checkpoint", best_checkpoint, "--max-new-tokens", "40", "--seed", "3"]
    _, from_file, _ = run_main([*args, "--prompt-file", str(tmp_path / "prompt.txt")], capsys)
    _, inline, _ = run_main([*args, "--prompt", "JULIET:\nO Romeo"], capsys)
    assert from_file.startswith("JULIET:\nO Romeo")
    assert from_file == inline


def test_a_utf16_prompt_file_gives_the_same_text_as_the_same_prompt_given_inline(best_checkpoint, capsys, tmp_path):
    # what Notepad's "Unicode" and PowerShell 5.1's `>` write: UTF-16 with a byte-order mark
    (tmp_path / "prompt.txt").write_bytes("JULIET:\r\nO Romeo".encode("utf-16"))
    args = ["sample", "--checkpoint", best_checkpoint, "--max-new-tokens", "40", "--seed", "3"]
    rc, from_file, err = run_main([*args, "--prompt-file", str(tmp_path / "prompt.txt")], capsys)
    assert rc == 0, err
    assert from_file == run_main([*args, "--prompt", "JULIET:\nO Romeo"], capsys)[1]


def test_checkpoint_and_prompt_file_paths_starting_with_a_tilde_are_in_home(best_checkpoint, capsys, tmp_path,
                                                                            monkeypatch):
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(best_checkpoint, tmp_path / "model.pt")
    (tmp_path / "prompt.txt").write_text("ROMEO:")
    rc, out, err = run_main(["sample", "--checkpoint=~/model.pt", "--prompt-file=~/prompt.txt",
                             "--max-new-tokens", "10"], capsys)
    assert rc == 0, err
    assert out.startswith("ROMEO:")


def test_prompt_file_dash_reads_the_prompt_from_stdin(best_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfKING:\r\n")))
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, "--prompt-file", "-",
                             "--max-new-tokens", "20"], capsys)
    assert rc == 0, err
    assert out.startswith("KING:\n") and len(out) == len("KING:\n") + 20 + 1


def test_an_empty_prompt_on_stdin_is_an_error(best_checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, "--prompt-file", "-"], capsys)
    _assert_one_error_line(rc, out, err)
    assert "the prompt on stdin is empty" in err


def test_sample_piped_into_a_reader_that_stops_early_ends_without_a_traceback(best_checkpoint, cli_env, workdir, text):
    (workdir / "long_prompt.txt").write_text(text[:200_000])  # more than a pipe holds: the write must block
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt", "sample", "--checkpoint", best_checkpoint,
                             "--prompt-file", "long_prompt.txt", "--max-new-tokens", "0"],
                            env=cli_env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(14) == text[:14].encode()  # like `| head -c 14`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert stderr == ""



def test_sample_window_option_chooses_how_generation_goes_past_the_context(best_checkpoint, capsys):
    from tinygpt.sample import generate_text

    model, tok, _ = checkpoint.load(best_checkpoint)
    n = 3 * model.config.block_size
    printed = {}
    for window in ("exact", "slide"):
        args = ["sample", "--checkpoint", best_checkpoint, "--prompt", "ROMEO:", "--temperature", "1",
                "--seed", "1", "--max-new-tokens", str(n), "--window", window]
        rc, out, err = run_main(args, capsys)
        assert rc == 0, err
        printed[window] = out
        assert out == generate_text(model, tok, "ROMEO:", n, temperature=1, seed=1, window=window) + "\n"
    assert printed["exact"] != printed["slide"]


@pytest.mark.parametrize("extra, said", [
    (["--num-samples", "3"], "the 3 samples will be identical"),
    (["--top-k", "5"], "--top-k has no effect"),
    (["--seed", "1"], "--seed has no effect"),
])
def test_greedy_sampling_says_in_one_note_what_it_makes_of_the_other_options(best_checkpoint, capsys, extra, said):
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, "--temperature", "0",
                             "--max-new-tokens", "5", *extra], capsys)
    assert rc == 0 and out
    assert err.strip().splitlines() == [err.strip()] and err.startswith("tinygpt: note: --temperature 0 is greedy")
    assert said in err


def test_sample_top_p_option_samples_from_the_nucleus_as_generate_text_does(best_checkpoint, capsys):
    from tinygpt.sample import generate_text

    model, tok, _ = checkpoint.load(best_checkpoint)
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE, "--top-p", "0.6"], capsys)
    assert rc == 0, err
    assert out == generate_text(model, tok, "ROMEO:", 50, temperature=0.8, top_p=0.6, seed=1) + "\n"
    _, unfiltered, _ = run_main(["sample", "--checkpoint", best_checkpoint, *SAMPLE], capsys)
    assert out != unfiltered


def test_sample_from_the_shipped_model_needs_no_checkpoint(capsys):
    import tinygpt
    from tinygpt.sample import generate_text

    rc, out, err = run_main(["sample", "--pretrained", "laptop", *SAMPLE], capsys)
    assert rc == 0, err
    model, tok = tinygpt.pretrained("laptop")
    assert out == generate_text(model, tok, "ROMEO:", 50, temperature=0.8, seed=1) + "\n"


def test_export_writes_a_shipped_model_file_that_samples_as_its_checkpoint(best_checkpoint, capsys, tmp_path):
    from tinygpt.sample import generate_text
    from tinygpt.zoo import load_file

    rc, out, err = run_main(["export", best_checkpoint, str(tmp_path / "mine.safetensors")], capsys)
    assert rc == 0, err
    assert f"wrote {tmp_path / 'mine.safetensors'}" in out
    shipped, shipped_tok = load_file(tmp_path / "mine.safetensors")
    model, tok, _ = checkpoint.load(best_checkpoint)
    assert shipped_tok.to_dict() == tok.to_dict() and shipped.config == model.config
    assert generate_text(shipped, shipped_tok, "A", 40, seed=2) == generate_text(model, tok, "A", 40, seed=2)


def test_export_of_a_missing_checkpoint_is_one_error_line(capsys, tmp_path):
    rc, out, err = run_main(["export", str(tmp_path / "nope.pt"), str(tmp_path / "x.safetensors")], capsys)
    _assert_one_error_line(rc, out, err)
    assert "nope.pt: no such checkpoint file" in err and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("extra, said", [
    (["--top-p", "0.5"], "--top-p has no effect"),
    (["--top-k", "5", "--top-p", "0.5", "--seed", "1"], "--top-k and --top-p and --seed have no effect"),
])
def test_greedy_sampling_notes_the_top_p_it_ignores(best_checkpoint, capsys, extra, said):
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, "--temperature", "0",
                             "--max-new-tokens", "5", *extra], capsys)
    assert rc == 0 and out and said in err


def test_greedy_sampling_of_one_sample_says_nothing(best_checkpoint, capsys):
    rc, out, err = run_main(["sample", "--checkpoint", best_checkpoint, "--temperature", "0",
                             "--max-new-tokens", "5"], capsys)
    assert rc == 0 and out and err == ""


# `python -m tinygpt`, with Ctrl-C (a real SIGINT, raised in the process itself) the moment torch imports its
# first submodule: always in the middle of torch's import, wherever the scheduler runs the process
CTRL_C_WHILE_TORCH_IMPORTS = """
import runpy, signal, sys

class CtrlCAtTorchsFirstSubmodule:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("torch."):
            sys.meta_path.remove(self)
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlCAtTorchsFirstSubmodule())
runpy.run_module("tinygpt", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_torch_is_still_importing_exits_130_with_one_line(cli_env, workdir):
    assert "torch" not in subprocess.run([sys.executable, "-c", "import sys, tinygpt.cli; print(*sys.modules)"],
                                         env=cli_env, capture_output=True, text=True, check=True).stdout.split()
    proc = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_TORCH_IMPORTS, "train", "--preset", "smoke", "--out",
                           "ctrl_c"], env=cli_env, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130
    assert proc.stderr.splitlines() == ["tinygpt: interrupted"]
    assert not (workdir / "ctrl_c").exists()


def test_help_of_train_explains_the_tokenizer_option(capsys):
    rc, out, _ = run_main(["train", "--help"], capsys)
    assert rc == 0
    words = " ".join(out.split())
    assert "--tokenizer SPEC" in words and "bpe:N" in words and "training split only" in words


def test_help_of_sample_counts_new_tokens_in_tokens(capsys):
    rc, out, _ = run_main(["sample", "--help"], capsys)
    assert rc == 0
    assert "tokens to generate (default 500): characters for a character-level model" in " ".join(out.split())


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sample", "--help"], ["export", "--help"],
                                  ["train", "--max-steps", "zero"], ["sample", "--top-p", "2"], ["sample"]])
def test_help_and_argument_errors_answer_before_torch_is_imported(argv):
    """`--help` and a bad argument need no PyTorch: they answer in a fraction of a second."""
    code = ("import sys\nfrom tinygpt.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "no torch", out.stdout + out.stderr
