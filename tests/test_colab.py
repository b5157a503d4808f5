"""Colab: notebook 04's model reaches notebook 05 through Google Drive, with a stand-in for
`google.colab` (in sys.modules for one process, or as a package on disk for fresh runtimes)."""

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.course import colab
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent


class FakeDrive:
    """google.colab.drive: mount(mountpoint) makes the learner's Drive appear at mountpoint."""

    def __init__(self, cloud: Path, refuse: Exception | None = None):
        self.cloud, self.refuse, self.mounts = cloud, refuse, []

    def mount(self, mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
        self.mounts.append(mountpoint)
        if self.refuse:
            raise self.refuse
        (self.cloud / "MyDrive").mkdir(parents=True, exist_ok=True)
        Path(mountpoint).symlink_to(self.cloud, target_is_directory=True)


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    drive = FakeDrive(tmp_path / "cloud")
    google, colab_mod = types.ModuleType("google"), types.ModuleType("google.colab")
    colab_mod.drive, google.colab = drive, colab_mod
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_mod)
    monkeypatch.setitem(sys.modules, "google.colab.drive", drive)
    return drive


def test_on_colab_follows_the_google_colab_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not colab.on_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert colab.on_colab()


def test_runs_dir_away_from_colab_is_the_local_folder_even_with_consent(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.runs_dir(consent=True, local=tmp_path / "runs") == tmp_path / "runs"


def test_runs_dir_on_colab_without_consent_never_mounts_drive(fake_colab, tmp_path):
    assert colab.runs_dir(consent=False, local="runs", mount_point=tmp_path / "drive") == Path("runs")
    assert fake_colab.mounts == []


def test_runs_dir_on_colab_with_consent_mounts_drive_and_uses_a_course_folder_on_it(fake_colab, tmp_path):
    folder = colab.runs_dir(consent=True, mount_point=tmp_path / "drive")
    assert fake_colab.mounts == [str(tmp_path / "drive")]
    assert folder == tmp_path / "drive" / "MyDrive" / "tinygpt" / "runs"
    assert (tmp_path / "cloud" / "MyDrive" / "tinygpt" / "runs").is_dir()  # on the Drive itself


def test_a_declined_mount_warns_and_falls_back_to_the_local_folder(monkeypatch, tmp_path, fake_colab):
    fake_colab.refuse = ValueError("mount failed: the user declined")
    with pytest.warns(UserWarning, match="user declined"):
        folder = colab.runs_dir(consent=True, local=tmp_path / "runs", mount_point=tmp_path / "drive")
    assert folder == tmp_path / "runs"


def save_tiny_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4))
    return checkpoint.save(path, model=model, tokenizer=CharTokenizer.from_text("abc"), step=seed)


def test_keep_checkpoint_copies_the_checkpoint_and_replaces_an_older_copy(tmp_path):
    src = save_tiny_checkpoint(tmp_path / "run" / "ckpt_best.pt", seed=2)
    save_tiny_checkpoint(tmp_path / "kept" / "ckpt_best.pt", seed=1)
    dest = colab.keep_checkpoint(src, tmp_path / "kept")
    assert dest == tmp_path / "kept" / "ckpt_best.pt" and checkpoint.read(dest)["step"] == 2
    assert all(torch.equal(v, checkpoint.read(src)["model"][k]) for k, v in checkpoint.read(dest)["model"].items())
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["ckpt_best.pt"]  # no temporary left


def test_keep_checkpoint_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "ckpt_best.pt").write_bytes(b"half a file")
    with pytest.raises(checkpoint.CheckpointError):
        colab.keep_checkpoint(tmp_path / "ckpt_best.pt", tmp_path / "kept")
    assert not (tmp_path / "kept" / "ckpt_best.pt").exists()


def test_keep_checkpoint_onto_itself_leaves_the_file_alone(tmp_path):
    src = save_tiny_checkpoint(tmp_path / "ckpt_best.pt")
    before = src.read_bytes()
    assert colab.keep_checkpoint(src, tmp_path) == src and src.read_bytes() == before


def test_keep_checkpoint_of_a_missing_file_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_best.pt"):
        colab.keep_checkpoint(tmp_path / "ckpt_best.pt", tmp_path / "kept")


def test_find_checkpoint_takes_the_first_folder_that_has_one(tmp_path):
    first, second, empty = (tmp_path / n for n in ("first", "second", "empty"))
    for d in (first, second):
        d.mkdir()
        (d / "ckpt_best.pt").write_bytes(b"x")
    assert colab.find_checkpoint(empty, second, first) == second / "ckpt_best.pt"
    assert colab.find_checkpoint(empty) is None
    assert colab.find_checkpoint() is None


# ---------------------------------------------------------------- the 04 -> 05 chain, two runtimes

FAKE_COLAB = '''
import os
from pathlib import Path

def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    cloud = Path(os.environ["FAKE_DRIVE_CLOUD"])  # the learner's Drive, outside every runtime
    (cloud / "MyDrive").mkdir(parents=True, exist_ok=True)
    Path(mountpoint).symlink_to(cloud, target_is_directory=True)
'''

NOTEBOOK_04 = '''
import google.colab  # what Colab's kernel does at start
from pathlib import Path
from tinygpt.course import colab
from tinygpt.config import get_config, with_length
from tinygpt.train import RunOptions, train

RUN_DIR = Path("runs") / "course"
run = train(with_length(get_config("smoke"), max_steps=10), options=RunOptions(out_dir=RUN_DIR, progress=False))
kept = colab.keep_checkpoint(RUN_DIR / "ckpt_best.pt", colab.runs_dir(consent=CONSENT, mount_point="drive") / "course")
print("kept", kept)
'''

NOTEBOOK_05 = '''
import google.colab
from pathlib import Path
from tinygpt import checkpoint
from tinygpt.course import colab
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer

found = colab.find_checkpoint(colab.runs_dir(consent=CONSENT, mount_point="drive") / "course", Path("runs") / "course")
if found is None:
    print("fallback", "pretrained")  # notebook 05 then loads tinygpt.pretrained("laptop")
else:
    model, tokenizer, info = checkpoint.load(found)
    print("found", found.resolve(), info["step"])
'''


def run_in_runtime(runtime: Path, fake: Path, cloud: Path, code: str, consent: bool) -> str:
    """One Colab runtime: a fresh process in its own folder (its /content), google.colab faked."""
    runtime.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]),
           "FAKE_DRIVE_CLOUD": str(cloud), "TINYGPT_DATA_DIR": os.environ.get("TINYGPT_DATA_DIR", "")}
    if not env["TINYGPT_DATA_DIR"]:
        del env["TINYGPT_DATA_DIR"]
    out = subprocess.run([sys.executable, "-c", f"CONSENT = {consent}\n" + textwrap.dedent(code)], cwd=runtime,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def fake_colab_package(tmp_path):
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("from . import drive\n")
    (fake / "google" / "colab" / "drive.py").write_text(FAKE_COLAB)
    return fake


@pytest.mark.slow
def test_notebook_05_in_a_fresh_runtime_loads_the_model_notebook_04_kept_on_drive(tmp_path, fake_colab_package):
    cloud = tmp_path / "cloud"
    out04 = run_in_runtime(tmp_path / "runtime04", fake_colab_package, cloud, NOTEBOOK_04, consent=True)
    kept = cloud / "MyDrive" / "tinygpt" / "runs" / "course" / "ckpt_best.pt"
    assert kept.is_file(), out04
    out05 = run_in_runtime(tmp_path / "runtime05", fake_colab_package, cloud, NOTEBOOK_05, consent=True)
    assert out05.startswith(f"found {kept.resolve()} ")
    saved = checkpoint.read(tmp_path / "runtime04" / "runs" / "course" / "ckpt_best.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in checkpoint.read(kept)["model"].items())


@pytest.mark.slow
def test_without_consent_notebook_05_in_a_fresh_runtime_finds_nothing_and_falls_back(tmp_path, fake_colab_package):
    cloud = tmp_path / "cloud"
    run_in_runtime(tmp_path / "runtime04", fake_colab_package, cloud, NOTEBOOK_04, consent=False)
    assert not cloud.exists()  # Drive was never touched
    out05 = run_in_runtime(tmp_path / "runtime05", fake_colab_package, cloud, NOTEBOOK_05, consent=False)
    assert out05.strip() == "fallback pretrained"
