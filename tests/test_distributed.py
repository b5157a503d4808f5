"""Data-parallel training: `torchrun --nproc_per_node=2 -m tinygpt train` on two CPU processes
(gloo) trains what one process trains with the doubled batch, writes only rank 0's files, and
resumes exactly after being killed. Each test starts real torchrun processes (a few seconds)."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tinygpt
from tinygpt import checkpoint
from tinygpt.config import apply_overrides, get_config, with_length
from tinygpt.distributed import Group
from tinygpt.runs import RUN_FILES, ResumeError
from tinygpt.schedule import Schedule
from tinygpt.state import StateError, TrainState
from tinygpt.train import RunOptions, train

BATCH = 8  # a batch of 8 per process: a global batch of 16
STEPS = ["--max-steps", "30", "--set", "eval_interval=10", "--set", "warmup_steps=5"]
# float32 sums in another order (two ranks' means, all-reduced, vs one mean over 16 rows) differ in
# the last bits; Adam's normalised update carries such differences forward, so they grow with the
# steps: measured 2.7e-7 after 3 steps and 2.6e-5 after 40 on the smoke model. Rows given to the
# wrong rank, or another seed, move weights by ~lr = 3e-3 a step: far outside 1e-4.
WEIGHT_ATOL = 1e-4
PACKAGE = Path(tinygpt.__file__).resolve().parent


def torchrun_command(out, *args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "tinygpt", "train", "--preset", "smoke", "--device", "cpu", "--precision", "fp32",
            "--out", str(out), "--quiet",
            "--set", f"batch_size={BATCH}", *STEPS, *args]


def environment():
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: one thread each


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def kill_all(launcher: subprocess.Popen):
    """SIGKILL torchrun and its workers (it starts each in its own session: a group kill misses them)."""
    workers = children(launcher.pid)
    launcher.kill()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    launcher.wait()


def torchrun(out, *args, nproc=2, timeout=120) -> subprocess.CompletedProcess:
    """Run torchrun to the end; a run that hangs fails the test, its processes killed."""
    launcher = subprocess.Popen(torchrun_command(out, *args, nproc=nproc), env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_all(launcher)
        pytest.fail(f"torchrun {' '.join(args)} did not end within {timeout} s")
    return subprocess.CompletedProcess(launcher.args, launcher.returncode, stdout, stderr)


def package_frames(stderr: str) -> list[str]:
    """The files of traceback frames in `stderr` that lie in the package itself (wherever the clone
    lives and whatever its folder is called: a virtual environment inside a clone named `tinygpt`
    puts torchrun's own frames under a `tinygpt/` folder too)."""
    files = re.findall(r'^\s*File "([^"]+)", line \d+', stderr, flags=re.MULTILINE)
    return [f for f in files if Path(f).resolve().is_relative_to(PACKAGE)]


def weights(out) -> dict:
    return checkpoint.read(Path(out) / "ckpt_last.pt")["model"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """An uninterrupted 30-step run on two processes: (its folder, the finished torchrun)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(out)
    assert done.returncode == 0, done.stderr
    return out, done


@pytest.mark.slow
def test_two_processes_train_the_weights_one_process_trains_with_the_doubled_batch(two_processes, tmp_path):
    out, _ = two_processes
    cfg = apply_overrides(get_config("smoke"), [f"batch_size={2 * BATCH}", "eval_interval=10", "warmup_steps=5"])
    one = train(with_length(cfg, max_steps=30),
                options=RunOptions(out_dir=tmp_path, device="cpu", precision="fp32", progress=False))
    two = weights(out)
    for name, w in one.model.state_dict().items():
        assert torch.allclose(two[name], w, rtol=0, atol=WEIGHT_ATOL), name
    history = checkpoint.read(out / "ckpt_last.pt")["history"]
    assert [h["step"] for h in history] == [h["step"] for h in one.history] == [0, 10, 20, 30]
    for h2, h1 in zip(history, one.history):  # rank 0 evaluates on the global batch's size
        assert h2["val_loss"] == pytest.approx(h1["val_loss"], abs=1e-3)


@pytest.mark.slow
def test_only_rank_0_writes_files_and_notices(two_processes):
    out, done = two_processes
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert done.stdout.count("tinygpt: data-parallel over 2 processes (gloo): a batch of 8 each, "
                             "a global batch of 16") == 1


@pytest.mark.slow
def test_only_rank_0_prints_the_final_line(two_processes):
    final = [line for line in two_processes[1].stdout.splitlines() if "step 30 (finished): train loss" in line]
    assert len(final) == 1 and "bits per character" in final[0]


@pytest.mark.slow
def test_the_checkpoint_holds_every_ranks_random_state(two_processes):
    rng = checkpoint.read(two_processes[0] / "ckpt_last.pt")["rng"]
    assert len(rng["ranks"]) == 2
    assert torch.equal(rng["ranks"][0]["torch"], rng["torch"])
    assert not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])  # dropout: each its own
    assert torch.equal(rng["ranks"][0]["data"], rng["ranks"][1]["data"])  # batches: one global draw


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(two_processes, tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(torchrun_command(out), env=environment(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:  # wait for a checkpoint past the first evaluation, then kill everything at once
        while time.monotonic() < deadline and launcher.poll() is None:
            if (out / "history.json").exists() and len(json.loads((out / "history.json").read_text())["history"]) > 1:
                break
            time.sleep(0.01)
    finally:
        kill_all(launcher)
    saved_at = checkpoint.read(out / "ckpt_last.pt")["step"]
    assert 10 <= saved_at < 30, "the run was not killed mid-run"

    resumed = torchrun(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    straight = weights(two_processes[0])
    for name, w in weights(out).items():
        assert torch.equal(w, straight[name]), name


@pytest.mark.slow
def test_resuming_a_two_process_run_in_one_process_is_refused(two_processes, tmp_path):
    shutil.copytree(two_processes[0], tmp_path / "run")
    with pytest.raises(ResumeError, match=r"trained on 2 processes \(a global batch of 16\); resume it on "
                                          r"2 processes \(torchrun --nproc_per_node=2\)"):
        train(None,
               options=RunOptions(out_dir=tmp_path / "run", if_exists="resume", device="cpu", precision="fp32",
                                  progress=False))


@pytest.mark.slow
def test_a_time_budgeted_two_process_run_ends_on_every_rank(tmp_path):
    """The fit to the budget and "time is up" follow rank 0's clock on every rank: no rank waits
    in a step the others never take (which would hang until the timeout)."""
    done = torchrun(tmp_path / "run", "--time-budget", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "schedule fitted to the 2 s budget" in done.stdout


def test_a_state_whose_per_rank_random_state_is_malformed_is_refused():
    rng = {"torch": torch.get_rng_state(), "data": torch.Generator().get_state()}
    d = TrainState(step=0, history=[], best_val=float("inf"), evals_since_best=0,
                   schedule=Schedule(1e-3, 1e-4, 1, 10), fits_done=0, elapsed=0.0, seed=1,
                   precision="fp32", device="cpu", optimizer={}, scaler=None, rng={**rng, "ranks": [rng, {}]}).to_dict()
    with pytest.raises(StateError, match="random-number state is malformed"):
        TrainState.from_dict(d)
    d["rng"]["ranks"] = [rng, rng]
    assert len(TrainState.from_dict(d).rng["ranks"]) == 2


def test_alone_a_process_is_rank_0_of_1_and_its_collectives_are_local():
    alone = Group()
    assert alone.is_main and not alone.parallel
    assert alone.any(True) and not alone.any(False)
    assert alone.mean(2.5) == 2.5 and alone.gather("x") == ["x"] and alone.from_main(7) == 7
    assert alone.clock(lambda: 4.0)() == 4.0


@pytest.mark.slow
def test_a_stop_asked_of_one_rank_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path):
    """SIGTERM (what torchrun sends its processes when it is stopped) to one worker only: had that
    rank stopped alone, the other would wait in the next step's all-reduce and no checkpoint of
    that step would be written."""
    out = tmp_path / "run"
    launcher = subprocess.Popen(torchrun_command(out, "--max-steps", "3000"), env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while launcher.poll() is None and not (
                (out / "history.json").exists() and len(json.loads((out / "history.json").read_text())["history"]) > 1):
            time.sleep(0.01)
        os.kill(children(launcher.pid)[-1], signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_all(launcher)
        pytest.fail("the ranks did not stop together")
    saved = checkpoint.read(out / "ckpt_last.pt")
    assert stderr.count(f"tinygpt: interrupted at step {saved['step']}; resume with: torchrun --standalone "
                        f"--nproc_per_node=2 -m tinygpt train --resume --out {out}") == 1
    # saved at the stop; a stop that lands on an evaluation step is saved by that evaluation
    assert saved["step"] >= saved["history"][-1]["step"] >= 10
    assert len(saved["rng"]["ranks"]) == 2


@pytest.mark.slow
def test_a_run_refused_under_torchrun_ends_every_rank_with_its_one_line_and_no_traceback(two_processes):
    out, _ = two_processes
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    done = torchrun(out)  # the folder holds a run, and neither --resume nor --overwrite is given
    assert done.returncode != 0
    assert done.stderr.count(f"tinygpt: error: {out} already holds a run (at step 30)") == 1  # rank 0's alone
    assert package_frames(done.stderr) == []  # the refusal is a line, not a traceback (torchrun's own is fine)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
