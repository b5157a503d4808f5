"""A run's folder, and the rules for starting, replacing and resuming a run there.

A folder holds one run: ckpt_last.pt (resume from it), ckpt_best.pt (the lowest val loss) and
history.json. A folder that holds a run is refused unless the caller says what to do with it:
resume it or overwrite it. Every check is made before anything in the folder changes.

One process at a time (`held`): a run holds its folder's lock file, LOCK_FILE, from before its
text is read until it ends; a second run there is refused naming the holder (pid, host, since
when). The lock is an OS file lock (flock; on Windows msvcrt.locking), which the OS releases when
its process dies: a killed run's lock never blocks. A new run that fails before its first
optimizer step (out of memory on its first batch, a full disk at its step-0 save) leaves nothing
behind: its step-0 files are removed, and the folder too if the run created it, so the same
command with a smaller batch_size is not refused as "already holds a run".

On resume, the run's model, data and optimizer settings stay as they were; only its length and
when to stop (CHANGEABLE_ON_RESUME) may change, and each change is said. A run keeps its
tokenizer, learned again from the text to check that the text is the run's.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint, distributed, files
from .config import TrainConfig
from .schedule import continue_schedule, get_lr
from .state import StateError, TrainState
from .tokenizer import parse_tokenizer_spec, tokenizer_from_dict, tokenizer_spec

RUN_FILES = ("ckpt_last.pt", "ckpt_best.pt", "history.json")
LOCK_FILE = ".tinygpt.lock"  # held by the process training in the folder (see held)
IF_EXISTS = ("refuse", "resume", "overwrite")  # what to do with a run already in the folder
CHANGEABLE_ON_RESUME = ("max_steps", "time_budget", "fit_schedule", "patience")


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a checkpoint that does not fit, ...)."""


class ResourceError(TrainingError):
    """The machine said no mid-run (a full disk, memory exhausted); the message names what failed
    and what to do."""


class RunInUseError(TrainingError, ValueError):
    """Another process is training in out_dir (it holds the folder's lock)."""


class ResumeError(TrainingError, ValueError):
    """The run cannot be resumed as asked: bad input (a setting that cannot change, another text,
    a folder with no ckpt_last.pt), refused before anything is trained or written."""


class RunExistsError(TrainingError):
    """out_dir already holds a run, and if_exists is "refuse".
    `resumable`: it holds a ckpt_last.pt to resume from."""

    def __init__(self, out_dir: Path, step: int | None, resumable: bool = True):
        self.out_dir, self.step, self.resumable = out_dir, step, resumable
        at = f" (at step {step})" if step is not None else ""
        how = ('resume it with if_exists="resume", or pass ' if resumable else
               'it has no ckpt_last.pt to resume from; pass ')
        super().__init__(f'{out_dir} already holds a run{at}; {how}if_exists="overwrite" to start over and replace it')


@dataclass
class Lease:
    """A run's hold on its folder. `new_run`: the run starts at step 0 (set once its checks pass);
    `stepped`: this run has taken an optimizer step. A new run that fails before that is removed
    (see held)."""

    new_run: bool = False
    stepped: bool = False


def _try_lock(path: Path) -> int | None:
    """A file descriptor of `path` holding its OS lock, or None while another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if sys.platform == "win32":
                import msvcrt

                os.lseek(fd, 1 << 30, os.SEEK_SET)  # a byte past the holder's line: that line stays readable
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file as we locked it: lock the new one


def _holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']}, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def held(out_dir: Path | None):
    """Hold out_dir for one run (yields a Lease): checks the folder can be written (or created),
    takes its lock (creating the folder), and on leaving releases it. RunInUseError while another
    process holds it; ValueError for a folder that cannot be written, before anything is read.
    If the body raises while the run is new and has taken no optimizer step, the run files it
    wrote are removed, and the folder if this created it. Data-parallel, rank 0 holds the folder;
    every rank raises alike."""
    group = distributed.current()
    lease, fd, created, problem = Lease(), None, False, None
    lock = out_dir / LOCK_FILE if out_dir is not None else None
    if lock is not None and group.is_main:
        try:
            files.check_writable(out_dir)
            created = not out_dir.exists()
            out_dir.mkdir(parents=True, exist_ok=True)
            fd = _try_lock(lock)
            if fd is None:
                problem = RunInUseError(f"{out_dir} is in use by another training run ({_holder(lock)}): wait for it "
                                        f"to end, or train into another folder (--out / out_dir)")
            else:
                since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
                os.write(fd, json.dumps(holder).encode())  # at 0: the lock (Windows) is far past it
        except ValueError as e:
            problem = e
        except OSError as e:
            problem = ValueError(f"cannot create the output folder {out_dir}: {e.strerror or e}")
        if problem is not None and created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    problem = group.from_main(problem)  # every rank stops alike
    if problem is not None:
        raise problem
    try:
        yield lease
    except BaseException:
        if fd is not None and lease.new_run and not lease.stepped:
            for name in RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            if sys.platform == "win32":
                os.close(fd)
                with contextlib.suppress(OSError):
                    lock.unlink()
            else:
                lock.unlink(missing_ok=True)  # removed while still locked: no one locks a stale file
                os.close(fd)
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()  # only if empty: the run wrote nothing, or it was removed


def read_saved(out_dir: Path | None, if_exists: str) -> dict | None:
    """The checkpoint to resume from (None for a new run); refuses to replace a run not asked to.
    Reads only: nothing in the folder changes (see prepare_out_dir)."""
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists must be one of {', '.join(IF_EXISTS)}, got {if_exists!r}")
    if out_dir is None:
        if if_exists == "resume":
            raise ValueError("resume needs out_dir (--out), the folder holding ckpt_last.pt")
        return None
    last = out_dir / "ckpt_last.pt"
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if if_exists == "resume":
        if last.exists():
            return checkpoint.read(last)
        if present:
            raise ResumeError(f'{out_dir} holds {", ".join(present)} but no ckpt_last.pt to resume from; '
                              f'start over there with --overwrite / if_exists="overwrite", or use another folder')
        return None
    if present and if_exists == "refuse":
        step = None
        with contextlib.suppress(Exception):
            step = checkpoint.read(last)["step"]
        raise RunExistsError(out_dir, step, resumable=last.exists())
    return None


def saved_config(saved: dict, path: Path) -> TrainConfig:
    """The TrainConfig a run was asked for, from its checkpoint `saved` (read from `path`)."""
    try:
        return TrainConfig.from_dict(saved["train_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise TrainingError(f"{path}: cannot resume from it: {e}") from None


def prepare_out_dir(out_dir: Path | None, if_exists: str, note) -> None:
    """Empty the folder of its run (overwrite) and create it: only once every check has passed.
    Data-parallel, rank 0 does it, once every rank has made the same checks."""
    if out_dir is None:
        return
    group = distributed.current()
    group.barrier()  # no rank is still reading the folder
    if if_exists == "resume" and not (out_dir / "ckpt_last.pt").exists():
        note(f"no checkpoint in {out_dir}: nothing to resume, so a new run starts there at step 0")
    problem = None
    if group.is_main:
        present = [name for name in RUN_FILES if (out_dir / name).exists()]
        if if_exists == "overwrite" and present:
            for name in present:
                (out_dir / name).unlink()
            note(f"overwrite: the run in {out_dir} was removed; a new run starts there")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problem = f"cannot create the output folder {out_dir}: {e.strerror or e}"
    problem = group.from_main(problem)  # every rank stops alike
    if problem:
        raise ValueError(problem)


def write_history(out_dir: Path, cfg: TrainConfig, precision: str, device: str, history: list[dict]) -> None:
    """history.json: the config asked for, where the run trained, and one dict per evaluation."""
    text = json.dumps({"train_config": cfg.to_dict(), "precision": precision, "device": device,
                       "history": history}, indent=1)
    files.atomic_write(out_dir / "history.json", lambda f: f.write(text.encode()))


def tokenizer_to_use(asked, saved: dict | None, path: Path | None):
    """What encodes the text: `asked` (None: "char") for a new run. On resume, the run's own
    tokenizer: learned again from the text as the run learned it ("char", or "bpe:N" of the run's
    size: the same text gives the same vocabulary, another text is noticed), or `asked` itself when
    it is a tokenizer object equal to the run's; "bpe:N" larger than the run's BPE is the request
    of a run whose text had fewer merges: learned again (resume_state compares the vocabulary).
    ResumeError when `asked` names another tokenizer."""
    if saved is None:
        return asked
    try:
        own = tokenizer_from_dict(saved["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise TrainingError(f"{path}: cannot resume from it: its tokenizer is unreadable ({e})") from None
    if asked is None:
        return tokenizer_spec(own)
    if isinstance(asked, str):
        kind, size = parse_tokenizer_spec(asked)
        same, named = kind == own.kind and (size is None or size >= own.vocab_size), asked
    else:
        same, named = asked == own, tokenizer_spec(asked)
    if not same:
        raise another_tokenizer(path, tokenizer_spec(own), named)
    if not isinstance(asked, str):
        return asked
    return asked if size is not None and size > own.vocab_size else tokenizer_spec(own)


def another_tokenizer(path: Path | None, own: str, named: str) -> ResumeError:
    return ResumeError(f"{path}: the run's tokenizer is {own}, not {named}, and a run keeps "
                       f"its tokenizer: resume without --tokenizer / tokenizer=, or start a new run")


def resume_state(saved: dict, path: Path, cfg: TrainConfig, tokenizer, asked=None) -> TrainState:
    """The run's TrainState, once the text's vocabulary and the settings asked for (`cfg`) are
    found to be the run's (ResumeError otherwise, TrainingError for a damaged state). `asked`: the
    tokenizer asked for (a larger "bpe:N" that learned another vocabulary is named as such)."""
    if saved.get("tokenizer") != tokenizer.to_dict():
        own = tokenizer_spec(tokenizer_from_dict(saved["tokenizer"]))
        if isinstance(asked, str) and parse_tokenizer_spec(asked) != parse_tokenizer_spec(own):
            raise another_tokenizer(path, own, asked)  # a larger bpe:N gave more merges than the run has
        bpe = tokenizer.kind != "char"
        raise ResumeError(f"{path}: its vocabulary differs from the one "
                          + ("learned again from this text's training split" if bpe else "this text gives")
                          + "; resume with the text the run was trained on (--text FILE / Text(...); without "
                          "one, Tiny Shakespeare)" + (", or, in Python, give the run's tokenizer as tokenizer="
                                                        if bpe else ""))
    try:
        st = TrainState.from_dict(saved)
    except StateError as e:
        raise TrainingError(f"{path}: cannot resume from it: {e}") from None
    check_unchangeable(cfg, saved_config(saved, path))
    return st


def check_unchangeable(cfg: TrainConfig, saved_cfg: TrainConfig):
    """ResumeError naming each setting that differs from the run's and cannot change mid-run."""
    if cfg.model != saved_cfg.model:
        raise ResumeError("the run's model config differs from the one asked for; resume with the run's own "
                          "settings, or start a new run in another folder (--out / out_dir)")
    fixed = [f"{k} {v!r} (asked for {getattr(cfg, k)!r})" for k, v in saved_cfg.to_dict().items()
             if k not in CHANGEABLE_ON_RESUME + ("model",) and getattr(cfg, k) != getattr(saved_cfg, k)]
    if fixed:
        raise ResumeError(f"the run was trained with {', '.join(fixed)}; these cannot change on resume. "
                          f"Resume with the run's settings, or start a new run")


def check_processes(saved_ranks: int, world_size: int, batch_size: int, path: Path):
    """ResumeError unless the run resumes on as many processes as it was trained on."""
    if saved_ranks == world_size:
        return
    n = "1 process" if saved_ranks == 1 else f"{saved_ranks} processes"
    raise ResumeError(f"{path}: the run was trained on {n} (a global batch of {saved_ranks * batch_size}); "
                      f"resume it on {n}" + (f" (torchrun --nproc_per_node={saved_ranks})"
                                             if saved_ranks > 1 else " (without torchrun)"))


def reconcile(cfg: TrainConfig, saved_cfg: TrainConfig, st: TrainState, note):
    """Apply to the resumed state `st` what the caller changed (CHANGEABLE_ON_RESUME), saying so."""
    if cfg.time_budget is None and saved_cfg.time_budget is not None:
        note(f"the run's time budget of {saved_cfg.time_budget:g} s no longer applies: it ends at step "
             f"{cfg.max_steps} (give a time budget too to keep one)")
    elif cfg.time_budget != saved_cfg.time_budget:
        note((f"a time budget of {cfg.time_budget:g} s now applies (the run had none), for the whole run"
              if saved_cfg.time_budget is None else
              f"time budget changed from {saved_cfg.time_budget} to {cfg.time_budget} s (for the whole run)")
             + ("; the schedule is fitted to it again" if cfg.fit_schedule else ""))
        if cfg.fit_schedule:  # planned as asked until this session's pace is known, then refitted
            st.schedule = continue_schedule(st.schedule, st.step, max(cfg.max_steps, st.step + 1))
            st.fits_done = 0
    if cfg.max_steps != saved_cfg.max_steps and cfg.max_steps <= st.step:
        st.schedule = continue_schedule(st.schedule, st.step, cfg.max_steps)
        note(f"the run is at step {st.step}, already past the {cfg.max_steps} steps asked for: nothing to "
             f"train (a run is not shortened below its step; give a larger --max-steps / max_steps to extend it)")
        return
    if cfg.max_steps != saved_cfg.max_steps:
        old = st.schedule
        st.schedule = continue_schedule(old, st.step, cfg.max_steps)
        lr_now = get_lr(st.step, old)
        how = (f"the learning rate stays at min_lr {cfg.min_lr:.3g}, where the old schedule ended"
               if lr_now == cfg.min_lr else
               f"from step {st.step} the learning rate decays from {lr_now:.3g} to min_lr {cfg.min_lr:.3g} by a cosine")
        note(f"schedule {'extended' if cfg.max_steps > old.max_steps else 'shortened'} from {old.max_steps} "
             f"to {cfg.max_steps} steps: {how} (no new warm-up)")
    if cfg.patience != saved_cfg.patience:
        was = "none" if saved_cfg.patience is None else saved_cfg.patience
        note(f"early stop is off now (the run's patience was {was})" if cfg.patience is None else
             f"early stop after {cfg.patience} evaluations without a better val loss (patience; the run's "
             f"was {was})")
    if st.step >= st.schedule.max_steps:
        note(f"the run is at step {st.step}, the end of its {st.schedule.max_steps}-step schedule: "
             f"nothing to train (give a larger --max-steps / max_steps to extend it)")


# ---------------------------------------------------------------- the machine says no, in one line


def checkpoint_bytes(out_dir: Path, model, optimizer) -> int:
    """About the size of a checkpoint of this run: the last one's, else its tensors' bytes."""
    last = out_dir / "ckpt_last.pt"
    if last.exists():
        return last.stat().st_size
    tensors = list(model.state_dict().values()) + [
        t for s in optimizer.state.values() for t in s.values() if hasattr(t, "element_size")]
    return sum(t.numel() * t.element_size() for t in tensors)


def disk_full(path: Path, out_dir: Path, step: int, needed: int, lease: Lease) -> ResourceError:
    """The one line for a full disk writing `path` at `step`: the space it needs and what is kept
    (the write itself is atomic: files.atomic_write)."""
    last = out_dir / "ckpt_last.pt"
    kept = ("this new run, which had taken no step, is removed from the folder" if lease.new_run and not lease.stepped
            else f"the previous checkpoint, {last} (step {checkpoint.read(last)['step']}), is kept" if last.exists()
            else "no checkpoint of this run was kept")
    return ResourceError(f"no space left on the disk writing {path} at step {step}: it needs about "
                         f"{needed / 1e6:,.1f} MB free; {kept}. Free some space, then resume "
                         f"(--resume / if_exists=\"resume\")")


def out_of_memory(step: int, device: str, batch_size: int, out_dir: Path | None, lease: Lease) -> ResourceError:
    """The one line for memory exhausted at `step`, and what to do."""
    left = ("this new run left nothing in the folder, so the same command with a smaller batch_size starts afresh"
            if out_dir is not None and lease.new_run and not lease.stepped else
            f"the last checkpoint in {out_dir} is kept" if out_dir is not None else "nothing was saved")
    return ResourceError(f"out of memory at step {step} on {device} with batch_size {batch_size}: use "
                         f"a smaller batch_size (e.g. --set batch_size={max(1, batch_size // 4)}); {left}")
