"""The operating system says no, and two at once (issue 21, kinds 2 and 3): a read-only folder, a
full disk, memory exhausted, a console that cannot encode the text, and a run folder another
process holds. Each gets one line and exit status 2; nothing of the user's is lost.

Runs go through `tinygpt.cli.main(argv)` in this process; the folder's other holder is a real process."""

import errno
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from cli_support import SMOKE, one_error_line

from tinygpt import checkpoint, data, files
from tinygpt import train as train_module
from tinygpt.cli import main
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer

pytestmark = pytest.mark.usefixtures("in_tmp")  # every test runs in its own empty folder


# ---------------------------------------------------------------- a folder that cannot be written


def test_a_read_only_run_folder_is_refused_in_one_line_before_the_text_is_read(in_tmp, capsys, monkeypatch):
    (in_tmp / "existing").mkdir()
    (in_tmp / "book.txt").write_text("to be or not to be\n" * 200)

    def read_only(dest, suffix=".tmp"):
        raise OSError(errno.EROFS, "Read-only file system", str(dest))

    read = []
    monkeypatch.setattr(files, "temporary_file_beside", read_only)
    monkeypatch.setattr(data, "read_text_file", lambda *a, **k: read.append(a) or "")
    assert main([*SMOKE, "--out", "existing", "--text", "book.txt"]) == 2
    line = one_error_line(capsys)
    assert "cannot write in existing: a read-only file system" in line and "--out" in line
    assert read == []


def test_the_api_checks_the_folder_before_encoding_the_text(in_tmp, monkeypatch):
    def no_permission(dest, suffix=".tmp"):
        raise OSError(errno.EACCES, "Permission denied", str(dest))

    encoded = []
    monkeypatch.setattr(files, "temporary_file_beside", no_permission)
    monkeypatch.setattr(train_module, "_corpus", lambda *a, **k: encoded.append(a))
    with pytest.raises(ValueError, match="cannot write in .*new/run would be created.*no permission"):
        train_module.train(None, data.Text("abc\n" * 500), train_module.RunOptions(out_dir=in_tmp / "new" / "run"))
    assert encoded == [] and not (in_tmp / "new").exists()


# ---------------------------------------------------------------- a full disk


def test_a_disk_that_fills_during_a_save_gets_one_line_naming_the_file_the_space_and_the_kept_checkpoint(
        in_tmp, capsys, monkeypatch):
    real_save, saves = torch.save, []

    def save_on_a_filling_disk(obj, f, *args, **kwargs):  # the third save fails as torch reports it
        saves.append(obj.get("step"))
        if len(saves) < 3:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 606848 vs 606736") from None

    monkeypatch.setattr(torch, "save", save_on_a_filling_disk)
    assert main([*SMOKE, "--set", "eval_interval=2", "--out", "r"]) == 2
    line = one_error_line(capsys)
    assert saves == [0, 2, 4]
    assert f"no space left on the disk writing {os.path.join('r', 'ckpt_last.pt')} at step 4" in line
    assert " MB free" in line and "ckpt_last.pt (step 2), is kept" in line
    monkeypatch.undo()
    assert checkpoint.read(in_tmp / "r" / "ckpt_last.pt")["step"] == 2
    assert sorted(p.name for p in (in_tmp / "r").iterdir()) == ["ckpt_best.pt", "ckpt_last.pt", "history.json"]


# ---------------------------------------------------------------- memory exhausted


def test_out_of_memory_is_one_line_and_the_retry_with_a_smaller_batch_is_not_blocked(in_tmp, capsys, monkeypatch):
    real_step = train_module.train_step

    def step_that_runs_out_of_memory(model, optimizer, scaler, x, y, **kwargs):
        if len(x) > 1000:
            torch.empty(1 << 60)  # torch's own allocator error: "can't allocate memory"
        return real_step(model, optimizer, scaler, x, y, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step_that_runs_out_of_memory)
    assert main([*SMOKE, "--set", "batch_size=100000", "--out", "big"]) == 2
    line = one_error_line(capsys)
    assert "out of memory at step 0 on cpu with batch_size 100000: use a smaller batch_size" in line
    assert not (in_tmp / "big").exists()  # this run created the folder and left nothing
    assert main([*SMOKE, "--set", "batch_size=8", "--out", "big"]) == 0


def test_a_new_run_failing_in_a_folder_it_did_not_create_leaves_the_folder_empty(in_tmp, capsys, monkeypatch):
    (in_tmp / "mine").mkdir()
    monkeypatch.setattr(train_module, "train_step", lambda *a, **k: torch.empty(1 << 60))
    assert main([*SMOKE, "--out", "mine"]) == 2
    assert "out of memory at step 0" in one_error_line(capsys)
    assert (in_tmp / "mine").is_dir() and list((in_tmp / "mine").iterdir()) == []


# ---------------------------------------------------------------- a console that cannot encode the text


@pytest.fixture
def cp1252_console(monkeypatch):
    """Call it in the test (pytest sets its own streams for the test's body): stdout and stderr
    become what a Windows console (or PYTHONIOENCODING=cp1252) makes them; returns stdout."""

    def console():
        out, err = (io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="strict") for _ in range(2))
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        return out

    return console


def han_checkpoint(path):
    torch.manual_seed(0)
    chars = "\n" + "".join(chr(0x4E00 + i) for i in range(40))
    model = GPT(GPTConfig(vocab_size=len(chars), block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    return checkpoint.save(path, model=model, tokenizer=CharTokenizer(chars))


def test_a_cjk_sample_on_a_cp1252_console_is_printed_escaped_not_lost(in_tmp, cp1252_console):
    han_checkpoint(in_tmp / "han.pt")
    console = cp1252_console()
    assert main(["sample", "--checkpoint", "han.pt", "--max-new-tokens", "20", "--seed", "0"]) == 0
    console.flush()
    printed = console.buffer.getvalue().decode("cp1252")
    assert printed.count("\\u4e") == 20


def test_training_into_a_cjk_folder_on_a_cp1252_console_ends_with_its_summary(in_tmp, cp1252_console):
    console = cp1252_console()
    assert main([*SMOKE, "--out", "训练"]) == 0
    console.flush()
    last = console.buffer.getvalue().decode("cp1252").strip().splitlines()[-1]
    assert last.startswith("step 4 (finished)") and last.endswith("checkpoints in \\u8bad\\u7ec3")


# ---------------------------------------------------------------- two at once


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tinygpt.runs import held
    with held(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def holder(in_tmp):
    """Another process holding the run folder `race` (as a training run there does)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(files.Path(__file__).parent.parent),
                                                                       os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(in_tmp / "race")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_into_a_held_folder_is_refused_naming_the_holder(in_tmp, capsys, holder):
    assert main([*SMOKE, "--out", "race"]) == 2
    line = one_error_line(capsys)
    assert f"race is in use by another training run (pid {holder.pid} on {socket.gethostname()}, since " in line
    assert not (in_tmp / "race" / "ckpt_last.pt").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX's")
def test_the_lock_of_a_killed_run_does_not_block(in_tmp, capsys, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (in_tmp / "race" / ".tinygpt.lock").exists()  # left behind, with the dead holder's pid
    assert main([*SMOKE, "--out", "race"]) == 0
    assert sorted(p.name for p in (in_tmp / "race").iterdir()) == ["ckpt_best.pt", "ckpt_last.pt", "history.json"]
