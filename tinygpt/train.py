"""Training, as in the workshop, done right.

AdamW with weight decay on matrices only; linear warm-up then cosine decay (schedule.py),
applied to the optimizer at every step; gradient clipping; mixed precision where the machine
gains from it (device.py); evaluations on the same batches every time; best-val and last
checkpoints that are always finite; exact resume from one explicit training state (state.py);
a time budget the schedule is fitted to; early stop; a stop request (Ctrl-C or a notebook's
stop button) honoured at the next step boundary with a checkpoint saved; data-parallel training
over the processes torchrun starts (distributed.py).

`train()` builds or restores a run, loops (evaluate when due, step, stop when asked), and
finishes. It returns a Run and never prints: what the caller should know is in `run.notices`
(and passed to `on_notice` as it happens).

A time budget fits the schedule to the machine, both ways: a tenth of the way into the budget
or into the planned steps, whichever comes first, training measures its pace (evaluations
included) and plans the steps that end the cosine decay with the budget, fewer than asked on a
slow machine, more on a fast one. The plan is
training state, saved in every checkpoint, so resuming is exact. On resume, a new max_steps
continues the schedule from where it is (no second warm-up, no jump), and says so.

Data-parallel (`torchrun --nproc_per_node=N -m tinygpt train ...`): batch_size is per process,
so the global batch is batch_size x N. Every rank seeds its batch generator alike and draws the
global batch's windows, then takes its own rows (rank r: r*batch_size up to (r+1)*batch_size),
as PyTorch's DistributedSampler splits an epoch: one process with batch_size x N sees exactly
the same windows. Dropout's generator (torch's global one) is seeded per rank, so masks differ.
DistributedDataParallel averages the gradients; rank 0 evaluates, writes the checkpoints,
history and bar; every rank's random state is saved, and restored on resume. Clock and stop
decisions are made once for all ranks (distributed.Group.clock and .any).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint, distributed
from .config import PRESETS, TrainConfig, apply_overrides, get_config, override_items  # noqa: F401 (re-exported)
from .data import Corpus, all_windows, get_batch, user_path
from .device import autocast_context, available_devices, pick_device, pick_precision, precision_for  # noqa: F401
from .model import GPT
from .schedule import FIT_POINTS, Schedule, continue_schedule, fit_is_due, fitted_max_steps, get_lr  # noqa: F401
from .state import StateError, TrainState
from .evaluate import bits_per_char
from .tokenizer import CharTokenizer, parse_tokenizer_spec, tokenizer_from_dict, tokenizer_spec

RUN_FILES = ("ckpt_last.pt", "ckpt_best.pt", "history.json")
GPU_JOB_PARAMS = 5e6  # a model this large trains at seconds a step off a GPU
SLOW_DEVICE_EVAL_ITERS = 2  # batches a split for such a model off a GPU: its first step comes within a minute


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a checkpoint that does not fit, ...)."""


class ResumeError(TrainingError, ValueError):
    """The run cannot be resumed as asked: bad input (a setting that cannot change, another text,
    a folder with no ckpt_last.pt), refused before anything is trained or written."""


class RunExistsError(TrainingError):
    """out_dir already holds a run, and neither resume nor overwrite was asked for.
    `resumable`: it holds a ckpt_last.pt to resume from."""

    def __init__(self, out_dir: Path, step: int | None, resumable: bool = True):
        self.out_dir, self.step, self.resumable = out_dir, step, resumable
        at = f" (at step {step})" if step is not None else ""
        how = "resume it with resume=True, or pass " if resumable else "it has no ckpt_last.pt to resume from; pass "
        super().__init__(f"{out_dir} already holds a run{at}; {how}overwrite=True to start over and replace it")


class StopRequest:
    """A request to stop at the next step boundary, with a checkpoint saved. Call `set()` (a
    notebook's stop button, a callback); inside `train`, the first Ctrl-C sets it too, and a
    second one stops at once. Under torchrun, SIGTERM (what torchrun sends its processes when it
    is stopped) counts as a Ctrl-C."""

    def __init__(self):
        self.requested = False

    def set(self):
        self.requested = True

    @contextlib.contextmanager
    def on_sigint(self, sigterm: bool = False):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handle(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        signums = (signal.SIGINT, signal.SIGTERM) if sigterm else (signal.SIGINT,)
        old = {signum: signal.signal(signum, handle) for signum in signums}
        try:
            yield self
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)


@dataclass
class Run:
    """What train() returns. `stopped`: "finished", "time budget", "early stop" or "interrupted"."""

    model: GPT
    tokenizer: CharTokenizer  # or a BPETokenizer
    history: list[dict]
    step: int
    stopped: str
    best_val: float
    out_dir: Path | None
    device: str
    precision: str
    config: TrainConfig  # as asked for (and saved)
    schedule: Schedule  # as run (fitted to a time budget, or extended on resume)
    notices: list[str] = field(default_factory=list)
    # bits per character of the validation text by the final model, comparable across tokenizers (see
    # val_bits_per_char); None after a stop request, or for a GPU-sized model off a GPU (minutes there)
    val_bits_per_char: float | None = None

    @property
    def best_checkpoint(self) -> Path | None:
        return self.out_dir / "ckpt_best.pt" if self.out_dir else None


TrainResult = Run  # the former name


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def estimate_loss(model: GPT, splits: dict, *, batch_size: int, iters: int, device, ctx=None,
                  seed: int = 0) -> dict[str, float]:
    """Mean loss over `iters` random batches of each split (the same batches for a given seed)."""
    was_training = model.training
    model.eval()
    out = {}
    for name, data in splits.items():
        g = torch.Generator().manual_seed(seed)
        losses = torch.empty(iters)
        for i in range(iters):
            x, y = get_batch(data, model.config.block_size, batch_size, generator=g, device=device)
            with ctx or contextlib.nullcontext():
                losses[i] = model(x, y)[1].item()
        out[name] = losses.mean().item()
    model.train(was_training)
    return out


@torch.no_grad()
def full_loss(model: GPT, data: torch.Tensor, *, batch_size: int = 64, device="cpu", ctx=None) -> float:
    """Mean loss over every non-overlapping block_size window of `data` (exact, not sampled)."""
    was_training = model.training
    model.eval()
    x, y = all_windows(data, model.config.block_size)
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with ctx or contextlib.nullcontext():
            total += model(xb, yb)[1].item() * len(xb)
    model.train(was_training)
    return total / len(x)


def eval_batch_size(cfg: TrainConfig) -> int:
    return min(cfg.batch_size, 64)


def val_is_exact(cfg: TrainConfig, corpus: Corpus) -> bool:
    """The validation loss is computed exactly when its windows are no more than the sampled
    estimate would read (eval_iters batches): exact, no noise, and no dearer."""
    windows = (len(corpus.val) - 1) // cfg.model.block_size
    return windows <= cfg.eval_iters * eval_batch_size(cfg)


def eval_config_for(cfg: TrainConfig, device_type: str, n_params: int) -> TrainConfig:
    """cfg, or cfg with SLOW_DEVICE_EVAL_ITERS batches a split for a GPU-sized model off a GPU
    (there, evaluation sized for a GPU would keep the first step waiting for minutes)."""
    if device_type == "cuda" or n_params <= GPU_JOB_PARAMS or cfg.eval_iters <= SLOW_DEVICE_EVAL_ITERS:
        return cfg
    return dataclasses.replace(cfg, eval_iters=SLOW_DEVICE_EVAL_ITERS)


def evaluate(model: GPT, corpus: Corpus, cfg: TrainConfig, *, device, ctx=None, seed: int = 0) -> dict[str, float]:
    """{"train": loss, "val": loss}: train over eval_iters fixed random batches; val exact over
    every window of the split where that is no dearer (see val_is_exact), else sampled alike."""
    kw = dict(batch_size=eval_batch_size(cfg), iters=cfg.eval_iters, device=device, ctx=ctx, seed=seed)
    if not val_is_exact(cfg, corpus):
        return estimate_loss(model, {"train": corpus.train, "val": corpus.val}, **kw)
    out = estimate_loss(model, {"train": corpus.train}, **kw)
    out["val"] = full_loss(model, corpus.val, batch_size=kw["batch_size"], device=device, ctx=ctx)
    return out


def val_bits_per_char(model: GPT, corpus: Corpus, *, batch_size: int = 64, ctx=None) -> float:
    """Bits per character of the whole validation text (tinygpt.evaluate.bits_per_char over
    corpus.val), the figure that compares runs across tokenizers. One forward pass over the split:
    a second or so for the laptop preset's model on a CPU. For a character tokenizer it equals the
    exact validation loss (full_loss) / ln 2 when the split ends on a whole window."""
    lengths = corpus.tokenizer.char_lengths(corpus.val.tolist())
    with ctx or contextlib.nullcontext():
        return bits_per_char(model, corpus.val, lengths, batch_size=batch_size)


# ---------------------------------------------------------------- one step


def train_step(model: GPT, optimizer, scaler, x, y, *, lr: float, ctx=None, grad_clip: float = 0.0,
               group: distributed.Group | None = None) -> float:
    """One optimizer step at learning rate `lr` on the batch (x, y); returns the loss.

    With an fp16 GradScaler, a step whose gradients overflow is skipped and the scale backs off.
    A non-finite loss is returned before any gradient is applied (the caller stops).
    Data-parallel (`model` wrapped in DistributedDataParallel, `group` its processes): the loss
    returned is the mean over the ranks, so a non-finite loss on any rank stops every rank before
    the backward pass (whose gradient all-reduce needs them all)."""
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    with ctx or contextlib.nullcontext():
        _, loss = model(x, y)
    loss_value = loss.item() if group is None else group.mean(loss.item())
    if not math.isfinite(loss_value):
        return loss_value
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_value


def rank_batch(data: torch.Tensor, block_size: int, batch_size: int, *, rank: int, world_size: int,
               generator: torch.Generator, device="cpu"):
    """Rank `rank`'s share of a global batch of batch_size x world_size windows: rows
    rank*batch_size up to (rank+1)*batch_size of get_batch(data, block_size, batch_size * world_size).

    Every rank's generator holds the same state, so the ranks' shares are disjoint and together
    they are exactly the batch one process draws with batch_size x world_size (the idea of
    PyTorch's DistributedSampler). Returns (x, y), each (batch_size, block_size) token ids."""
    x, y = get_batch(data, block_size, batch_size * world_size, generator=generator)
    rows = slice(rank * batch_size, (rank + 1) * batch_size)
    return x[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)


def weights_are_finite(model: torch.nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- a run in progress


class _Session:
    """A run in this process: the model, optimizer, scaler and state, and how to save them.

    Data-parallel (`group`, from distributed.current()), every method is called on every rank in
    the same order: saving, evaluating and the clock are collectives; only rank 0 writes files."""

    def __init__(self, cfg, corpus, dev, prec, seed, out_dir, clock, notices, on_notice):
        self.cfg, self.corpus, self.dev, self.prec, self.out_dir = cfg, corpus, dev, prec, out_dir
        self.group = group = distributed.current()
        self.local_clock, self.clock = clock, group.clock(clock)  # clock: rank 0's, the same on every rank
        self.notices, self.on_notice = notices, on_notice
        torch.manual_seed(seed)  # the same initial weights on every rank
        self.model = GPT(cfg.model).to(dev)
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=(prec == "fp16"))
        self.data_gen = torch.Generator().manual_seed(seed + 1)  # the same on every rank: see step()
        self.ctx = autocast_context(dev, prec)
        self.ddp = None  # the model as DistributedDataParallel wraps it, for training steps only
        if group.parallel:
            torch.manual_seed(seed + DROPOUT_SEED_STRIDE * (group.rank + 1))  # each rank its own dropout masks
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.state = TrainState(step=0, history=[], best_val=math.inf, evals_since_best=0,
                                schedule=Schedule.from_config(cfg), fits_done=0, elapsed=0.0,
                                seed=seed, precision=prec, device=dev.type, optimizer={}, scaler=None, rng={})
        self.t0, self.elapsed0 = self.clock(), 0.0
        self.eval_seconds: list[float] = []
        self.eval_cfg = cfg  # evaluation's settings: cfg's, or fewer batches on a slow device

    def note(self, message: str):
        self.notices.append(message)
        if self.on_notice is not None and self.group.is_main:
            self.on_notice(message)

    def elapsed(self) -> float:
        """Seconds of training so far (a collective when data-parallel: call it on every rank)."""
        return self.elapsed0 + self.clock() - self.t0

    def local_elapsed(self) -> float:
        """elapsed() by this process's own clock, not a collective (for rank 0's progress bar)."""
        return self.elapsed0 + self.local_clock() - self.t0

    def restore(self, saved: dict, saved_cfg: TrainConfig, st: TrainState):
        checkpoint.load_weights(self.model, saved.get("model"), self.out_dir / "ckpt_last.pt")
        self.optimizer.load_state_dict(st.optimizer)  # moves its tensors to the model's device
        if self.scaler.is_enabled() and st.scaler:
            self.scaler.load_state_dict(st.scaler)
        ranks = st.rng.get("ranks", [st.rng])  # one random state per process of the run
        if len(ranks) != self.group.world_size:
            raise ResumeError(f"{self.out_dir / 'ckpt_last.pt'}: the run was trained on {_processes(len(ranks))} "
                              f"(a global batch of {len(ranks) * self.cfg.batch_size}); resume it on "
                              f"{_processes(len(ranks))}" + (f" (torchrun --nproc_per_node={len(ranks)})"
                                                             if len(ranks) > 1 else " (without torchrun)"))
        rng = ranks[self.group.rank]
        torch.set_rng_state(rng["torch"])
        self.data_gen.set_state(rng["data"])
        if self.dev.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.dev)
        if self.dev.type == "mps" and "mps" in rng:  # dropout masks on MPS come from its own generator
            torch.mps.set_rng_state(rng["mps"])
        if (st.device, st.precision) != (self.dev.type, self.prec):
            self.note(f"this run was trained on {st.device} in {st.precision}; it continues on {self.dev.type} "
                      f"in {self.prec} (weights and optimizer carry over"
                      + ("; the fp16 loss scale starts afresh)" if self.scaler.is_enabled() and not st.scaler else ")"))
        self.state = st
        self.t0, self.elapsed0 = self.clock(), st.elapsed
        _reconcile(self, saved_cfg)

    # -- saving

    def save(self, name: str):
        """Write the checkpoint `name` (rank 0), with every rank's random state (a collective)."""
        st = self.state
        st.elapsed = self.elapsed()
        rng = {"torch": torch.get_rng_state(), "data": self.data_gen.get_state()}
        if self.dev.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dev)
        if self.dev.type == "mps":
            rng["mps"] = torch.mps.get_rng_state()
        ranks = self.group.gather(rng)
        if not self.group.is_main:
            return
        st.rng = rng if not self.group.parallel else {**rng, "ranks": ranks}
        st.optimizer = self.optimizer.state_dict()
        st.scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        st.precision, st.device = self.prec, self.dev.type
        checkpoint.save(self.out_dir / name, model=self.model, tokenizer=self.corpus.tokenizer,
                        train_config=self.cfg.to_dict(), **st.to_dict())

    def write_history(self):
        if not self.group.is_main:
            return
        text = json.dumps({"train_config": self.cfg.to_dict(), "precision": self.prec,
                           "device": self.dev.type, "history": self.state.history}, indent=1)
        checkpoint.atomic_write(self.out_dir / "history.json", lambda f: f.write(text.encode()))

    def fail(self, what: str):
        last = self.out_dir / "ckpt_last.pt" if self.out_dir else None
        kept = ""
        if last is not None and last.exists():
            kept = f"; the last good checkpoint, {last} (step {checkpoint.read(last)['step']}), is kept"
        raise TrainingError(f"{what} at step {self.state.step}{kept}. Try a lower learning rate")

    # -- the loop's three acts

    def evaluate(self, on_eval):
        t = self.clock()
        st = self.state
        losses = None
        if self.group.is_main:  # the others wait: the weights are the same on every rank
            losses = evaluate(self.model, self.corpus, self.eval_cfg, device=self.dev, ctx=self.ctx, seed=st.seed)
        losses = self.group.from_main(losses)
        if not all(math.isfinite(v) for v in losses.values()):
            self.fail(f"the loss became {losses['val'] if not math.isfinite(losses['val']) else losses['train']}")
        if not weights_are_finite(self.model):
            self.fail("the weights became non-finite")
        st.history.append({"step": st.step, "time": round(self.elapsed(), 3), "lr": get_lr(st.step, st.schedule),
                           "train_loss": losses["train"], "val_loss": losses["val"]})
        improved = losses["val"] < st.best_val
        st.best_val, st.evals_since_best = (losses["val"], 0) if improved else (st.best_val, st.evals_since_best + 1)
        if self.out_dir:
            self.save("ckpt_last.pt")
            if improved and self.group.is_main:  # the same state: copied, not serialised a second time
                checkpoint.atomic_copy(self.out_dir / "ckpt_last.pt", self.out_dir / "ckpt_best.pt")
            self.write_history()
        if on_eval is not None:
            on_eval(st.history)
        self.eval_seconds.append(self.clock() - t)  # a live plot's redraw included

    def step(self, lr: float) -> float:
        st = self.state
        x, y = rank_batch(self.corpus.train, self.cfg.model.block_size, self.cfg.batch_size,
                          rank=self.group.rank, world_size=self.group.world_size, generator=self.data_gen,
                          device=self.dev)  # alone: rank 0 of 1, get_batch's batch
        loss = train_step(self.ddp or self.model, self.optimizer, self.scaler, x, y, lr=lr, ctx=self.ctx,
                          grad_clip=self.cfg.grad_clip, group=self.group if self.ddp else None)
        if not math.isfinite(loss):
            self.fail(f"the loss became {loss}")
        st.step += 1
        return loss

    def evaluated_now(self) -> bool:
        return bool(self.state.history) and self.state.history[-1]["step"] == self.state.step


CHANGEABLE_ON_RESUME = ("max_steps", "time_budget", "fit_schedule", "patience")
DROPOUT_SEED_STRIDE = 1_000_003  # data-parallel: rank r seeds dropout with seed + stride * (r + 1)


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def _check_unchangeable(cfg: TrainConfig, saved_cfg: TrainConfig):
    """ResumeError naming each setting that differs from the run's and cannot change mid-run."""
    if cfg.model != saved_cfg.model:
        raise ResumeError("the run's model config differs from the one asked for; resume with the run's own "
                          "settings, or start a new run in another folder (--out / out_dir)")
    fixed = [f"{k} {v!r} (asked for {getattr(cfg, k)!r})" for k, v in saved_cfg.to_dict().items()
             if k not in CHANGEABLE_ON_RESUME + ("model",) and getattr(cfg, k) != getattr(saved_cfg, k)]
    if fixed:
        raise ResumeError(f"the run was trained with {', '.join(fixed)}; these cannot change on resume. "
                            f"Resume with the run's settings, or start a new run")


def _reconcile(s: _Session, saved_cfg: TrainConfig):
    """Apply what the caller changed on resume (CHANGEABLE_ON_RESUME), saying so."""
    cfg, st = s.cfg, s.state
    if cfg.time_budget is None and saved_cfg.time_budget is not None:
        s.note(f"the run's time budget of {saved_cfg.time_budget:g} s no longer applies: it ends at step "
               f"{cfg.max_steps} (give a time budget too to keep one)")
    elif cfg.time_budget != saved_cfg.time_budget:
        s.note((f"a time budget of {cfg.time_budget:g} s now applies (the run had none), for the whole run"
                if saved_cfg.time_budget is None else
                f"time budget changed from {saved_cfg.time_budget} to {cfg.time_budget} s (for the whole run)")
               + ("; the schedule is fitted to it again" if cfg.fit_schedule else ""))
        if cfg.fit_schedule:  # planned as asked until this session's pace is known, then refitted
            st.schedule = continue_schedule(st.schedule, st.step, max(cfg.max_steps, st.step + 1))
            st.fits_done = 0
    if cfg.max_steps != saved_cfg.max_steps and cfg.max_steps <= st.step:
        st.schedule = continue_schedule(st.schedule, st.step, cfg.max_steps)
        s.note(f"the run is at step {st.step}, already past the {cfg.max_steps} steps asked for: nothing to "
               f"train (a run is not shortened below its step; give a larger --max-steps / max_steps to extend it)")
        return
    if cfg.max_steps != saved_cfg.max_steps:
        old = st.schedule
        st.schedule = continue_schedule(old, st.step, cfg.max_steps)
        lr_now = get_lr(st.step, old)
        how = (f"the learning rate stays at min_lr {cfg.min_lr:.3g}, where the old schedule ended"
               if lr_now == cfg.min_lr else
               f"from step {st.step} the learning rate decays from {lr_now:.3g} to min_lr {cfg.min_lr:.3g} by a cosine")
        s.note(f"schedule {'extended' if cfg.max_steps > old.max_steps else 'shortened'} from {old.max_steps} "
               f"to {cfg.max_steps} steps: {how} (no new warm-up)")
    if cfg.patience != saved_cfg.patience:
        was = "none" if saved_cfg.patience is None else saved_cfg.patience
        s.note(f"early stop is off now (the run's patience was {was})" if cfg.patience is None else
               f"early stop after {cfg.patience} evaluations without a better val loss (patience; the run's "
               f"was {was})")
    if st.step >= st.schedule.max_steps:
        s.note(f"the run is at step {st.step}, the end of its {st.schedule.max_steps}-step schedule: "
               f"nothing to train (give a larger --max-steps / max_steps to extend it)")


class _BudgetFit:
    """Times the steps of this session and fits the schedule to the time budget at its FIT_POINTS."""

    def __init__(self, s: _Session):
        self.active = s.cfg.time_budget is not None and s.cfg.fit_schedule
        self.prev_end, self.steps, self.seconds, self.evals_seen = None, 0, 0.0, len(s.eval_seconds)

    def after_step(self, s: _Session):
        if not self.active or s.state.fits_done >= len(FIT_POINTS):
            return
        now = s.clock()
        eval_time = sum(s.eval_seconds[self.evals_seen:])
        self.evals_seen = len(s.eval_seconds)
        if self.prev_end is not None:  # the first step of a session pays one-off costs: not timed
            self.seconds += now - self.prev_end - eval_time
            self.steps += 1
        self.prev_end = now
        st = s.state
        if fit_is_due(s.cfg, s.elapsed(), st.fits_done, self.steps, st.step, st.schedule.max_steps):
            warm = s.eval_seconds[1:] or s.eval_seconds  # the first evaluation of a session is slower
            per_eval = sum(warm) / len(warm) if warm else 0.0
            pace = self.seconds / self.steps + per_eval / s.cfg.eval_interval
            old = s.state.schedule.max_steps
            planned = fitted_max_steps(s.cfg, s.state.step, s.elapsed(), pace, reserve=per_eval)
            s.state.schedule = continue_schedule(s.state.schedule, s.state.step, planned)
            s.state.fits_done += 1
            self.steps, self.seconds = 0, 0.0  # the next fit uses the pace from here on
            if s.state.fits_done == 1 or abs(planned - old) > 0.02 * old:
                s.note(f"schedule {'fitted' if s.state.fits_done == 1 else 'refitted'} to the "
                       f"{s.cfg.time_budget:g} s budget at {pace * 1000:.3g} ms a step: {planned} steps "
                       f"(planned {old})")


class _Progress:
    """A tqdm bar: seconds of the budget for a budgeted run, else steps; always loss, val and lr."""

    def __init__(self, s: _Session, enabled: bool):
        from tqdm.auto import tqdm

        self.budget = s.cfg.time_budget
        total, unit = (self.budget, "s") if self.budget else (s.state.schedule.max_steps, "step")
        # initial: a resumed run's steps (or seconds) done before, so the rate and time left are this session's
        initial = min(s.local_elapsed(), self.budget) if self.budget else s.state.step
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=f"training on {s.dev.type} ({s.prec})",
                        disable=not enabled,
                        dynamic_ncols=True, bar_format=None if not self.budget else
                        "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        self.enabled, self.loss, self.val = enabled, math.nan, math.nan
        self.update(s)

    def update(self, s: _Session, loss: float | None = None):
        if not self.enabled:
            return
        if loss is not None:
            self.loss = loss
        if s.state.history:
            self.val = s.state.history[-1]["val_loss"]
        self.bar.n = min(s.local_elapsed(), self.budget) if self.budget else s.state.step
        if not self.budget:
            self.bar.total = s.state.schedule.max_steps
        def fmt(x):  # "-" until there is a figure (a nan here would look like a diverged run)
            return f"{x:.3f}" if math.isfinite(x) else "-"

        self.bar.set_postfix(step=s.state.step, loss=fmt(self.loss), val=fmt(self.val),
                             lr=f"{get_lr(s.state.step, s.state.schedule):.2e}", refresh=False)
        self.bar.update(0)  # redraws at most every tqdm.mininterval

    def close(self, s: _Session):
        """Show where the run ended (the real elapsed seconds or steps, the last evaluation), and close."""
        if self.enabled:
            self.update(s)
            self.bar.refresh()
        self.bar.close()


# ---------------------------------------------------------------- building or restoring a run


def _read_saved(out_dir: Path | None, resume: bool, overwrite: bool) -> dict | None:
    """The saved checkpoint to resume from (or None); refuses to replace a run not asked to.
    Reads only: nothing in the folder changes (see _prepare_out_dir)."""
    if out_dir is None:
        if resume:
            raise ValueError("resume needs out_dir (--out), the folder holding ckpt_last.pt")
        return None
    if resume and overwrite:
        raise ValueError("resume and overwrite (--resume, --overwrite) contradict each other: choose one")
    last = out_dir / "ckpt_last.pt"
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if resume:
        if last.exists():
            return checkpoint.read(last)
        if present:
            raise ResumeError(f"{out_dir} holds {', '.join(present)} but no ckpt_last.pt to resume from; "
                              f"start over there with --overwrite / overwrite=True, or use another folder")
        return None
    if present and not overwrite:
        step = None
        with contextlib.suppress(Exception):
            step = checkpoint.read(last)["step"]
        raise RunExistsError(out_dir, step, resumable=last.exists())
    return None


def _prepare_out_dir(out_dir: Path | None, resume: bool, overwrite: bool, note) -> None:
    """Empty the folder of its run (overwrite) and create it: only once every check has passed.
    Data-parallel, rank 0 does it, once every rank has made the same checks."""
    if out_dir is None:
        return
    group = distributed.current()
    group.barrier()  # no rank is still reading the folder
    if resume and not (out_dir / "ckpt_last.pt").exists():
        note(f"no checkpoint in {out_dir}: nothing to resume, so a new run starts there at step 0")
    problem = None
    if group.is_main:
        present = [name for name in RUN_FILES if (out_dir / name).exists()]
        if overwrite and present:
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


def _asked_config(preset, saved, max_steps, time_budget, overrides) -> TrainConfig:
    if preset is None:
        base = TrainConfig.from_dict(saved["train_config"]) if saved else get_config("laptop")
    else:
        base = get_config(preset)
    for key, _ in override_items(overrides or []):
        for name, given in (("max_steps", max_steps), ("time_budget", time_budget)):
            if key == name and given is not None:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} is given twice, by {flag} ({name}={given!r}) and by --set {key}: "
                                 f"give it once")
    cfg = apply_overrides(base, overrides or [])
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        cfg.max_steps = max_steps
        if time_budget is None and cfg.time_budget is not None:
            cfg.time_budget = None  # an explicit length replaces the preset's or the run's budget (said)
    if time_budget is not None:
        cfg.time_budget = time_budget
    return TrainConfig.from_dict(cfg.to_dict())  # validates the overrides


def _tokenizer_to_use(asked, saved: dict | None, out_dir: Path | None):
    """What encodes the text: `asked` (None: "char") for a new run. On resume, the run's own
    tokenizer: learned again from the text as the run learned it ("char", or "bpe:N" of the run's
    size: the same text gives the same vocabulary, another text is noticed), or `asked` itself when
    it is a tokenizer object equal to the run's; "bpe:N" larger than the run's BPE is the request
    of a run whose text had fewer merges: learned again (the vocabulary check compares). ResumeError
    when `asked` names another tokenizer."""
    if saved is None:
        return asked
    path = out_dir / "ckpt_last.pt"
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
        raise _another_tokenizer(path, tokenizer_spec(own), named)
    if not isinstance(asked, str):
        return asked
    return asked if size is not None and size > own.vocab_size else tokenizer_spec(own)


def _another_tokenizer(path: Path, own: str, named: str) -> ResumeError:
    return ResumeError(f"{path}: the run's tokenizer is {own}, not {named}, and a run keeps "
                       f"its tokenizer: resume without --tokenizer / tokenizer=, or start a new run")


def _build(preset, out_dir, device, precision, seed, max_steps, time_budget, resume, overwrite, overrides,
           corpus, text, data_dir, tokenizer, progress, clock, on_notice) -> _Session:
    notices: list[str] = []

    def note(m):
        notices.append(m)
        if on_notice is not None:
            on_notice(m)

    out_dir = user_path(out_dir) if out_dir is not None else None
    if corpus is not None and text is not None:
        raise ValueError("give corpus or text, not both")
    if corpus is not None and tokenizer is not None:
        raise ValueError("give corpus or tokenizer, not both: a Corpus brings its own tokenizer")
    if data_dir is not None and (corpus is not None or text is not None):
        raise ValueError("--data-dir / data_dir is where Tiny Shakespeare is kept; it has no use with your own text")
    if isinstance(tokenizer, str):
        parse_tokenizer_spec(tokenizer)  # a bad spec is refused before anything is read
    # every check comes before the folder is touched (overwrite empties it; a new run creates it)
    saved = _read_saved(out_dir, resume, overwrite)
    cfg = _asked_config(preset, saved, max_steps, time_budget, overrides)
    base_budget = _asked_config(preset, saved, None, None, overrides).time_budget
    dev = pick_device(device)
    prec = pick_precision(dev, precision)
    if corpus is None:
        tok = _tokenizer_to_use(tokenizer, saved, out_dir)
        corpus = (Corpus.from_text(text, tok, progress=progress) if text is not None else
                  Corpus.shakespeare(data_dir, progress=progress, tokenizer=tok))
        asked = parse_tokenizer_spec(tok) if isinstance(tok, str) else None
        if saved is None and asked and asked[1] is not None and asked[1] != corpus.tokenizer.vocab_size:
            merges = len(corpus.tokenizer.merges)
            note(f"the training text has no pair of tokens left to merge after {merges} "
                 f"merge{'' if merges == 1 else 's'}: the BPE vocabulary has {corpus.tokenizer.vocab_size} "
                 f"tokens, not {asked[1]}")
    corpus.check_block_size(cfg.model.block_size)
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    if saved is not None:
        if saved.get("tokenizer") != corpus.tokenizer.to_dict():
            own = tokenizer_spec(tokenizer_from_dict(saved["tokenizer"]))
            if isinstance(tokenizer, str) and parse_tokenizer_spec(tokenizer) != parse_tokenizer_spec(own):
                raise _another_tokenizer(out_dir / "ckpt_last.pt", own, tokenizer)  # a larger bpe:N, more merges
            bpe = corpus.tokenizer.kind != "char"
            raise ResumeError(f"{out_dir / 'ckpt_last.pt'}: its vocabulary differs from the one "
                              + ("learned again from this text's training split" if bpe else "this text gives")
                              + "; resume with the text the run was trained on (--text FILE / text=; without "
                              "one, Tiny Shakespeare)" + (", or, in Python, give the run's tokenizer as tokenizer="
                                                            if bpe else ""))
        try:
            st = TrainState.from_dict(saved)
            saved_cfg = TrainConfig.from_dict(saved["train_config"])
        except (StateError, KeyError, TypeError, ValueError) as e:
            raise TrainingError(f"{out_dir / 'ckpt_last.pt'}: cannot resume from it: {e}") from None
        _check_unchangeable(cfg, saved_cfg)
    _prepare_out_dir(out_dir, resume, overwrite, note)
    s = _Session(cfg, corpus, dev, prec, 1337 if seed is None else seed, out_dir, clock, notices, on_notice)
    if prec == "fp16" and dev.type == "cpu":
        s.note("fp16 on a CPU is slow: it is there so tests reach a T4's code path (use fp32 or bf16)")
    if saved is None and max_steps is not None and time_budget is None and base_budget is not None:
        s.note(f"--max-steps / max_steps {max_steps} replaces the preset's time budget of {base_budget:g} s "
               f"(give a time budget too to keep one)")
    if saved is not None:
        if seed is not None and seed != st.seed:
            s.note(f"the run's seed {st.seed} is kept (its random state resumes where it stopped); "
                   f"seed {seed} applies to new runs only")
        s.restore(saved, saved_cfg, st)
    s.eval_cfg = eval_config_for(cfg, dev.type, s.model.num_params())
    if s.eval_cfg is not cfg:
        left = max(0, s.state.schedule.max_steps - s.state.step)
        s.note(f"a {s.model.num_params() / 1e6:.1f}M-parameter model is a GPU job (about 15 minutes on a "
               f"T4); on {dev.type} each step takes seconds ({left:,} to go: the bar shows the time they "
               f"take), and each evaluation reads only {s.eval_cfg.eval_iters} batches a split. The laptop preset "
               f"is made for a CPU")
    return s


# ---------------------------------------------------------------- train


def train(
    preset: str | TrainConfig | None = None,
    *,
    out_dir=None,
    device: str | None = "auto",
    precision: str | None = "auto",
    seed: int | None = None,
    max_steps: int | None = None,
    time_budget: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    overrides=None,
    corpus: Corpus | None = None,
    text: str | None = None,
    data_dir=None,
    tokenizer=None,
    progress: bool = True,
    on_eval=None,
    on_step=None,
    on_notice=None,
    stop: StopRequest | None = None,
    clock=time.perf_counter,
) -> Run:
    """Train a GPT on Tiny Shakespeare (or `corpus` / `text`) and return a Run.

    preset: a name in PRESETS or a TrainConfig (default: "laptop", or on resume the run's own);
    `overrides` (["lr=1e-3", "model.n_layer=8"], see config.apply_overrides), `max_steps` and
    `time_budget` (seconds) change it. With `out_dir`, ckpt_best.pt, ckpt_last.pt and history.json
    are written there; a folder that holds a run is refused unless `resume=True` (continue it
    exactly from ckpt_last.pt) or `overwrite=True` (replace it). Callbacks: `on_eval(history)`
    after each evaluation, `on_step(step, elapsed_seconds, model)` after each optimizer step,
    `on_notice(message)` for each line in run.notices. `stop`: a StopRequest to end at the next
    step boundary (Ctrl-C sets it too). `seed` (default 1337) seeds a new run; a resumed run
    keeps its own. `clock`: seconds, monotonic (a fake one in tests).
    tokenizer: "char" (the default: one token a character), "bpe:N" (a byte-level BPE of N >= 257
    tokens learned from the training split only, in about a second a MB, a bar shown if `progress`)
    or a tokenizer object; saved in the checkpoints. On resume the run's own is used (learned again
    from the text, to check that it is the run's text); another is refused. With BPE the losses are
    per token: run.val_bits_per_char compares runs across tokenizers (see val_bits_per_char).
    Raises ValueError for bad arguments, DatasetError for the text, TrainingError (a non-finite
    loss, a run that exists or does not fit).

    Started by torchrun with more than one process, each process trains its slice of every batch
    and DistributedDataParallel averages the gradients (see the module's docstring): batch_size
    is per process; only rank 0 writes files, shows the bar and calls on_notice; every rank
    returns the same Run.
    """
    with distributed.process_group(pick_device(device)) as (group, dev):
        if group.parallel:
            device = str(dev)
            progress, on_notice = progress and group.is_main, on_notice if group.is_main else None
        s = _build(preset, out_dir, device, precision, seed, max_steps, time_budget, resume, overwrite, overrides,
                   corpus, text, data_dir, tokenizer, progress, clock, on_notice)
        return _run_loop(s, progress, on_eval, on_step, stop)


def _run_loop(s: _Session, progress: bool, on_eval, on_step, stop: StopRequest | None) -> Run:
    """The loop of train(): evaluate, step, stop; then the final evaluation and checkpoints."""
    group = s.group
    cfg, st, stop = s.cfg, s.state, stop or StopRequest()
    if group.parallel:  # rank 0 evaluates on batches of the global batch's size, as one process would
        s.eval_cfg = dataclasses.replace(s.eval_cfg, batch_size=cfg.batch_size * group.world_size)
        s.note(f"data-parallel over {group.world_size} processes ({torch.distributed.get_backend()}): a batch of "
               f"{cfg.batch_size} each, a global batch of {cfg.batch_size * group.world_size}")
    fit, bar, stopped, clean = _BudgetFit(s), _Progress(s, progress), "finished", True
    try:
        with stop.on_sigint(sigterm=group.parallel):
            try:
                while True:
                    if st.step % cfg.eval_interval == 0 and not s.evaluated_now():
                        s.evaluate(on_eval)
                        bar.update(s)
                        if cfg.patience is not None and st.evals_since_best >= cfg.patience:
                            stopped = "early stop"
                            break
                    if st.step >= st.schedule.max_steps:
                        break
                    if group.any(stop.requested):  # a request on any rank stops them all
                        stopped = "interrupted"
                        break
                    if cfg.time_budget is not None and s.elapsed() >= cfg.time_budget:
                        stopped = "time budget"
                        break
                    loss = s.step(lr=get_lr(st.step, st.schedule))
                    fit.after_step(s)
                    if on_step is not None:
                        on_step(st.step, s.elapsed(), s.model)
                    bar.update(s, loss)
            except KeyboardInterrupt:  # a second Ctrl-C: the step may be half done, keep the last save
                stopped, clean = "interrupted", False
        _finish(s, stopped, clean, on_eval)
    finally:
        bar.close(s)
    gpu_job_off_gpu = eval_config_for(cfg, s.dev.type, s.model.num_params()) is not cfg  # minutes there
    bpc = None
    if stopped != "interrupted" and not gpu_job_off_gpu and group.is_main:  # the weights are the same on every rank
        bpc = val_bits_per_char(s.model, s.corpus, batch_size=eval_batch_size(cfg), ctx=s.ctx)
    return Run(model=s.model, tokenizer=s.corpus.tokenizer, history=st.history, step=st.step, stopped=stopped,
               best_val=st.best_val, out_dir=s.out_dir, device=s.dev.type, precision=s.prec, config=cfg,
               schedule=st.schedule, notices=s.notices, val_bits_per_char=group.from_main(bpc))


def _finish(s: _Session, stopped: str, clean: bool, on_eval):
    if stopped != "interrupted":
        if not s.evaluated_now():
            s.evaluate(on_eval)  # the final evaluation, and the final checkpoints
        return
    if s.out_dir is None:
        s.note(f"interrupted at step {s.state.step}; no out_dir, so nothing was saved")
    elif clean and not s.evaluated_now():
        if weights_are_finite(s.model):
            s.save("ckpt_last.pt")  # a clean step boundary: resuming from here is exact
            s.write_history()
        else:
            s.note(f"interrupted at step {s.state.step} with non-finite weights, which were not saved; "
                   f"{s.out_dir / 'ckpt_last.pt'} holds the last good ones")
