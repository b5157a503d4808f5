"""Training, as in the workshop, done right.

AdamW with weight decay on matrices only; linear warm-up then cosine decay, applied to the
optimizer at every step (an optimizer does not schedule itself); gradient clipping; train and
val loss averaged over many batches (the same batches at every evaluation); a progress bar; a
history of evaluations; best-val and last checkpoints; exact resume; a time budget and early
stop. Ctrl-C (or the notebook's stop button) ends training at the next step boundary with a
checkpoint saved.

A time budget fits the schedule to the machine: a tenth of the way into the budget, training
measures its pace so far (evaluation included) and, if max_steps would not fit in the budget,
shortens it so the learning rate has decayed when time is up. A slow laptop then ends with an
annealed model, not one cut off at a high learning rate. The fitted max_steps is saved in the
checkpoints, so resuming is exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint
from .data import all_windows, get_batch, load_shakespeare, train_val_split
from .model import GPT, GPTConfig
from .tokenizer import CharTokenizer


@dataclass
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    batch_size: int = 64
    max_steps: int = 5000
    lr: float = 3e-4  # peak learning rate, reached at the end of warm-up
    min_lr: float = 3e-5  # where the cosine decay ends
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 500
    eval_iters: int = 200  # batches averaged for each of train and val loss
    time_budget: float | None = None  # seconds of wall time, evaluation included
    fit_schedule: bool = True  # with a time budget, shorten max_steps so the schedule ends with the budget
    patience: int | None = None  # early stop after this many evaluations without a better val loss

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = GPTConfig.from_dict(self.model)
        for name in ("batch_size", "max_steps", "eval_interval", "eval_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not (0 < self.lr < math.inf) or not (0 <= self.min_lr <= self.lr):
            raise ValueError(f"need 0 < lr and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be a positive number of seconds, got {self.time_budget!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


PRESETS: dict[str, TrainConfig] = {
    # a few seconds on any CPU: for tests and for trying the pipeline
    "smoke": TrainConfig(
        model=GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=48, dropout=0.0),
        batch_size=32, max_steps=250, lr=3e-3, min_lr=3e-4, warmup_steps=20,
        eval_interval=50, eval_iters=10,
    ),
    # the model a 2-core laptop CPU trains fastest: word-like text within two minutes, 10 minutes in all
    # (chosen by the sweep in benchmarks/SWEEP.md)
    "laptop": TrainConfig(
        model=GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=96, dropout=0.0),
        batch_size=16, max_steps=10800, lr=5e-3, min_lr=5e-4, warmup_steps=30,
        eval_interval=100, eval_iters=8, time_budget=600,
    ),
    # the workshop model: a GPU / Colab T4 run of about 15 minutes
    "workshop": TrainConfig(
        model=GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        batch_size=64, max_steps=5000, lr=3e-4, min_lr=3e-5, warmup_steps=100,
        eval_interval=500, eval_iters=200,
    ),
}


FIT_AT = 0.1  # fraction of a time budget timed before the schedule is fitted to it (bursts average out)
FIT_MARGIN = 0.97  # plan for 97% of the remaining time: the pace varies, and a final evaluation follows


def fitted_max_steps(cfg: TrainConfig, step: int, elapsed: float, seconds_per_step: float) -> int:
    """The max_steps that ends the schedule with the time budget at this pace (never more than cfg's)."""
    fits = step + int(FIT_MARGIN * (cfg.time_budget - elapsed) / seconds_per_step)
    return max(cfg.warmup_steps + 1, step + 1, min(cfg.max_steps, fits))


def get_config(preset: str | TrainConfig) -> TrainConfig:
    if isinstance(preset, TrainConfig):
        return dataclasses.replace(preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[preset])


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0 to lr over warmup_steps, then cosine decay to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if step >= cfg.max_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# ---------------------------------------------------------------- device and precision

def available_devices() -> list[str]:
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def pick_device(device: str | None = "auto") -> torch.device:
    """`device`, else $TINYGPT_DEVICE, else the first of cuda, mps, cpu that is available."""
    if device in (None, "auto"):
        device = os.environ.get("TINYGPT_DEVICE") or "auto"
    if device == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    if dev.type not in available_devices():
        raise ValueError(f"device {device!r} is not available here; available: {', '.join(available_devices())}")
    return dev


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(n: int = 512, reps: int = 8) -> float:
    """Measured speed of a bf16 matmul relative to fp32 on this CPU (>1: bf16 is faster)."""
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a, b):
        a @ b  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a32, b32) / best(a16, b16)


def precision_for(device_type: str, capability: tuple[int, int] | None = None,
                  cpu_bf16_speedup_fn=cpu_bf16_speedup) -> str:
    """fp32, bf16 or fp16 for a device: bf16 on CUDA compute capability >= 8.0, fp16 (with a
    GradScaler) below it (a T4 is 7.5), fp32 on MPS, and on CPU bf16 only where it is faster."""
    if device_type == "cuda":
        if capability is None:
            capability = torch.cuda.get_device_capability()
        return "bf16" if tuple(capability) >= (8, 0) else "fp16"
    if device_type == "cpu":
        return "bf16" if cpu_bf16_speedup_fn() >= 1.3 else "fp32"
    return "fp32"


def pick_precision(device: torch.device, precision: str | None = "auto") -> str:
    if precision in (None, "auto"):
        precision = os.environ.get("TINYGPT_PRECISION") or "auto"
    if precision == "auto":
        return precision_for(device.type)
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training needs a CUDA GPU; use bf16 or fp32")
    return precision


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


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


# ---------------------------------------------------------------- training

class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, a checkpoint that does not fit, ...)."""


@dataclass
class TrainResult:
    model: GPT
    tokenizer: CharTokenizer
    history: list[dict]
    step: int
    stopped: str  # "finished", "time budget", "early stop", "interrupted"
    best_val: float
    out_dir: Path | None
    device: str
    precision: str

    @property
    def best_checkpoint(self) -> Path | None:
        return self.out_dir / "ckpt_best.pt" if self.out_dir else None


class _StopFlag:
    """Turns the first SIGINT into a polite request to stop at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _rng_state(data_gen: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, data_gen: torch.Generator, device: torch.device):
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    preset: str | TrainConfig = "laptop",
    *,
    out_dir=None,
    device: str | None = "auto",
    precision: str | None = "auto",
    seed: int = 1337,
    max_steps: int | None = None,
    time_budget: float | None = None,
    resume: bool = False,
    text: str | None = None,
    data_dir=None,
    progress: bool = True,
    on_eval=None,
    on_step=None,
) -> TrainResult:
    """Train a GPT on Tiny Shakespeare (or `text`) and return a TrainResult.

    `on_eval(history)` is called after every evaluation (e.g. to redraw a live loss plot), and
    `on_step(step, elapsed_seconds, model)` after every optimizer step.
    With `out_dir`, ckpt_best.pt, ckpt_last.pt and history.json are written there; with
    `resume=True` training continues exactly from out_dir/ckpt_last.pt if it exists.
    """
    from tqdm.auto import tqdm

    cfg = get_config(preset)
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        cfg.max_steps = max_steps
    if time_budget is not None:
        cfg.time_budget = time_budget
    cfg = TrainConfig.from_dict(cfg.to_dict())  # validates the overrides
    if resume and out_dir is None:
        raise ValueError("resume needs out_dir, the folder holding ckpt_last.pt")
    out_dir = Path(out_dir) if out_dir is not None else None
    dev = pick_device(device)

    text = load_shakespeare(data_dir, progress=progress) if text is None else text
    tokenizer = CharTokenizer.from_text(text)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_data, val_data = train_val_split(data)
    cfg.model = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    if len(val_data) <= cfg.model.block_size:
        raise ValueError(f"the text is too short: the validation split needs more than {cfg.model.block_size} characters")

    torch.manual_seed(seed)
    model = GPT(cfg.model)
    data_gen = torch.Generator().manual_seed(seed + 1)
    history: list[dict] = []
    step, elapsed_before, best_val, evals_since_best = 0, 0.0, math.inf, 0
    prec = None
    state = None
    schedule_fitted = False
    last_path = out_dir / "ckpt_last.pt" if out_dir else None
    if resume and last_path.exists():
        state = checkpoint.read(last_path)
        if state.get("train_config", {}).get("model") != cfg.model.to_dict():
            raise TrainingError(f"{last_path}: its model config differs from the one asked for; "
                                f"use another --out folder or the same preset")
        if state.get("tokenizer") != tokenizer.to_dict():
            raise TrainingError(f"{last_path}: its vocabulary differs from this text's")
        model.load_state_dict(state["model"])
        step, history = state["step"], list(state["history"])
        elapsed_before = history[-1]["time"] if history else 0.0
        best_val = state["best_val"]
        evals_since_best = state.get("evals_since_best", 0)
        prec = state["precision"]
        if state.get("schedule_fitted"):
            cfg.max_steps, schedule_fitted = state["train_config"]["max_steps"], True
    prec = prec or pick_precision(dev, precision)
    model.to(dev)
    optimizer = model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
    scaler = torch.amp.GradScaler(dev.type, enabled=(prec == "fp16"))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], data_gen, dev)
    ctx = autocast_context(dev, prec)
    eval_batch = min(cfg.batch_size, 64)

    def save(path, step):
        checkpoint.save(
            path, model=model, tokenizer=tokenizer, optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if scaler.is_enabled() else None, step=step,
            history=history, rng=_rng_state(data_gen, dev), train_config=cfg.to_dict(),
            precision=prec, best_val=best_val, evals_since_best=evals_since_best, seed=seed,
            schedule_fitted=schedule_fitted,
        )

    def write_history():
        import json

        tmp = out_dir / "history.json.tmp"
        tmp.write_text(json.dumps({"train_config": cfg.to_dict(), "precision": prec, "device": dev.type,
                                   "history": history}, indent=1))
        os.replace(tmp, out_dir / "history.json")

    def evaluate(step):
        nonlocal best_val, evals_since_best
        losses = estimate_loss(model, {"train": train_data, "val": val_data}, batch_size=eval_batch,
                               iters=cfg.eval_iters, device=dev, ctx=ctx, seed=seed)
        history.append({"step": step, "time": round(elapsed_before + time.perf_counter() - t0, 3),
                        "lr": get_lr(step, cfg), "train_loss": losses["train"], "val_loss": losses["val"]})
        improved = losses["val"] < best_val
        if improved:
            best_val, evals_since_best = losses["val"], 0
        else:
            evals_since_best += 1
        if out_dir:
            if improved:
                save(out_dir / "ckpt_best.pt", step)
            save(last_path, step)
            write_history()
        if on_eval is not None:
            on_eval(history)
        return losses

    if out_dir:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the output folder {out_dir}: {e.strerror or e}") from None
    t0 = time.perf_counter()
    stopped = "finished"
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"training on {dev.type} ({prec})", disable=not progress,
               unit="step", dynamic_ncols=True)
    evaluated_at = history[-1]["step"] if history else None
    fit_from = None  # (step, time) where timing for the schedule fit starts
    with _StopFlag() as stop:
        try:
            while True:
                if step % cfg.eval_interval == 0 and evaluated_at != step:
                    losses = evaluate(step)
                    evaluated_at = step
                    bar.set_postfix(train=f"{losses['train']:.3f}", val=f"{losses['val']:.3f}")
                    if cfg.patience is not None and evals_since_best >= cfg.patience:
                        stopped = "early stop"
                        break
                if step >= cfg.max_steps:
                    break
                if stop.requested:
                    stopped = "interrupted"
                    break
                if cfg.time_budget is not None and elapsed_before + time.perf_counter() - t0 >= cfg.time_budget:
                    stopped = "time budget"
                    break
                lr = get_lr(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = get_batch(train_data, cfg.model.block_size, cfg.batch_size, generator=data_gen, device=dev)
                with ctx:
                    _, loss = model(x, y)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    where = f"; the last good checkpoint, {last_path}, is kept" if out_dir and last_path.exists() else ""
                    raise TrainingError(f"the loss became {loss_value} at step {step}{where}. Try a lower learning rate")
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                if cfg.time_budget is not None and cfg.fit_schedule and not schedule_fitted:
                    now = time.perf_counter()
                    if fit_from is None:
                        fit_from = (step, now)  # from the end of the first step: it pays one-off costs
                    elif now - t0 >= FIT_AT * (cfg.time_budget - elapsed_before) and step - fit_from[0] >= 10:
                        pace = (now - fit_from[1]) / (step - fit_from[0])  # evaluations included
                        cfg.max_steps = fitted_max_steps(cfg, step, elapsed_before + now - t0, pace)
                        schedule_fitted = True
                        bar.total = cfg.max_steps
                        bar.refresh()
                if on_step is not None:
                    on_step(step, elapsed_before + time.perf_counter() - t0, model)
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
        except KeyboardInterrupt:  # a second Ctrl-C: the step may be half done, keep the last save
            stopped = "interrupted"
        finally:
            bar.close()
    if stopped == "interrupted":
        if out_dir and stop.requested and evaluated_at != step:
            save(last_path, step)  # a clean step boundary: resuming from here is exact
            write_history()
        cli = f"python -m tinygpt train --preset {preset} --resume --out {out_dir}" if isinstance(preset, str) else ""
        how = (f"resume with train(..., out_dir={str(out_dir)!r}, resume=True)" + (f" or {cli}" if cli else "")
               if out_dir else "no out_dir, so nothing was saved")
        print(f"Training interrupted at step {step}: {how}")
    elif evaluated_at != step:
        evaluate(step)
    return TrainResult(model=model, tokenizer=tokenizer, history=history, step=step, stopped=stopped,
                       best_val=best_val, out_dir=out_dir, device=dev.type, precision=prec)
