"""Training, as in the workshop, done right: `run = train(config, data, options)`.

AdamW with weight decay on matrices only; warm-up then cosine decay (schedule.py); gradient
clipping; mixed precision where the machine gains from it (device.py); evaluations on the same
batches every time (evaluate.py); best-val and last checkpoints that are always finite; exact
resume from one explicit training state (state.py; the folder's rules in runs.py); a time budget
the schedule is fitted to, both ways (schedule.BudgetFit); early stop; a stop request (Ctrl-C or a
stop button, progress.py) honoured at the next step boundary with a checkpoint saved.

train() builds or restores a run, loops (evaluate when due, step, stop when asked) and finishes.
It returns a Run and never prints: what the caller should know is in run.notices.

Data-parallel (`torchrun --nproc_per_node=N -m tinygpt train ...`, distributed.py): batch_size is
per process. Every rank draws the same global batch and takes its own rows (rank_batch), as
PyTorch's DistributedSampler splits an epoch; dropout is seeded per rank; DistributedDataParallel
averages the gradients; rank 0 evaluates and writes the checkpoints, history and bar; every rank's
random state is saved. Clock and stop decisions are made once for all ranks (Group.clock, .any).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint, distributed, files, runs
from .config import TrainConfig, get_config
from .data import Corpus, Shakespeare, Text, get_batch
from .device import autocast_context, out_of_memory, pick_device, pick_precision
from .evaluate import eval_batch_size, eval_config_for, evaluate, final_bits_per_char
from .model import GPT
from .progress import ProgressBar, StopRequest
from .runs import Lease, TrainingError
from .schedule import BudgetFit, Schedule, get_lr
from .state import TrainState, rng_state, set_rng_state
from .threads import TrainingThreads
from .tokenizer import CharTokenizer, parse_tokenizer_spec

DROPOUT_SEED_STRIDE = 1_000_003  # data-parallel: rank r seeds dropout with seed + stride * (r + 1)


@dataclass(frozen=True)
class RunOptions:
    """How to run a training: everything that is not the TrainConfig (which is saved with the run).

    out_dir: where ckpt_best.pt, ckpt_last.pt and history.json are written (None: nowhere).
    if_exists: what to do with a run already in out_dir: "refuse" (RunExistsError), "resume"
      (continue it exactly from ckpt_last.pt; with none there, a new run starts) or "overwrite".
    device, precision: "auto" picks the machine's best (device.pick_device, pick_precision).
    seed: of a new run (None: 1337); a resumed run keeps its own.
    progress: show a bar (and one while a BPE vocabulary is learned).
    on_eval(history) after each evaluation; on_step(step, elapsed_seconds, model) after each
    optimizer step; on_notice(message) for each line of run.notices.
    stop: a StopRequest to end at the next step boundary (Ctrl-C sets it too).
    clock: seconds, monotonic (a fake one in tests)."""

    out_dir: str | Path | None = None
    if_exists: str = "refuse"
    device: str | None = "auto"
    precision: str | None = "auto"
    seed: int | None = None
    progress: bool = True
    on_eval: Callable | None = None
    on_step: Callable | None = None
    on_notice: Callable | None = None
    stop: StopRequest | None = None
    clock: Callable[[], float] = time.perf_counter


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
    # evaluate.val_bits_per_char); None after a stop request, for a GPU-sized model off a GPU (minutes there),
    # or when scoring the validation text would take longer than the run trained (a notice says so)
    val_bits_per_char: float | None = None

    @property
    def best_checkpoint(self) -> Path | None:
        return self.out_dir / "ckpt_best.pt" if self.out_dir else None


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


# ---------------------------------------------------------------- a run in progress


class _Session:
    """A run in this process: the model, optimizer, scaler and state, and how to save them.

    Data-parallel (`group`, from distributed.current()), every method is called on every rank in
    the same order: saving, evaluating and the clock are collectives; only rank 0 writes files."""

    def __init__(self, cfg: TrainConfig, corpus: Corpus, dev: torch.device, prec: str, options: RunOptions,
                 out_dir: Path | None, notices: list[str], note: Callable[[str], None], lease: Lease | None = None):
        self.cfg, self.corpus, self.dev, self.prec, self.options = cfg, corpus, dev, prec, options
        self.out_dir = out_dir  # options.out_dir with ~ expanded
        self.lease = lease or Lease()  # the hold on out_dir (runs.held)
        self.group = group = distributed.current()
        self.local_clock, self.clock = options.clock, group.clock(options.clock)  # rank 0's, the same on every rank
        self.notices, self.note = notices, note  # note(message): kept in notices, passed to on_notice
        seed = 1337 if options.seed is None else options.seed
        torch.manual_seed(seed)  # the same initial weights on every rank
        self.model = GPT(cfg.model).to(dev)
        self.optimizer = self.model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=(prec == "fp16"))
        self.data_gen = torch.Generator().manual_seed(seed + 1)  # the same on every rank: see step()
        self.ctx = autocast_context(dev, prec)
        self.threads = TrainingThreads(dev.type)  # on a CPU: the free cores, looked at again at each evaluation
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
        runs.check_processes(len(ranks), self.group.world_size, self.cfg.batch_size, self.out_dir / "ckpt_last.pt")
        set_rng_state(ranks[self.group.rank], self.dev, self.data_gen)
        if (st.device, st.precision) != (self.dev.type, self.prec):
            self.note(f"this run was trained on {st.device} in {st.precision}; it continues on {self.dev.type} "
                      f"in {self.prec} (weights and optimizer carry over"
                      + ("; the fp16 loss scale starts afresh)" if self.scaler.is_enabled() and not st.scaler else ")"))
        self.state = st
        self.t0, self.elapsed0 = self.clock(), st.elapsed
        runs.reconcile(self.cfg, saved_cfg, st, self.note)

    # -- saving

    def save(self, name: str):
        """Write the checkpoint `name` (rank 0), with every rank's random state (a collective)."""
        st = self.state
        st.elapsed = self.elapsed()
        rng = rng_state(self.dev, self.data_gen)
        ranks = self.group.gather(rng)
        if not self.group.is_main:
            return
        st.rng = rng if not self.group.parallel else {**rng, "ranks": ranks}
        st.optimizer = self.optimizer.state_dict()
        st.scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        st.precision, st.device = self.prec, self.dev.type
        with self.writing(self.out_dir / name):
            checkpoint.save(self.out_dir / name, model=self.model, tokenizer=self.corpus.tokenizer,
                            train_config=self.cfg.to_dict(), **st.to_dict())

    @contextlib.contextmanager
    def writing(self, path: Path):
        """Writing `path` in the run folder: a full disk becomes one ResourceError (runs.disk_full)."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            needed = runs.checkpoint_bytes(self.out_dir, self.model, self.optimizer)
            if not files.no_space_left(e, self.out_dir, needed):
                raise
            raise runs.disk_full(path, self.out_dir, self.state.step, needed, self.lease) from None

    def write_history(self):
        if self.group.is_main:
            with self.writing(self.out_dir / "history.json"):
                runs.write_history(self.out_dir, self.cfg, self.prec, self.dev.type, self.state.history)

    def fail(self, what: str):
        last = self.out_dir / "ckpt_last.pt" if self.out_dir else None
        kept = ""
        if last is not None and last.exists() and not (self.lease.new_run and not self.lease.stepped):
            kept = f"; the last good checkpoint, {last} (step {checkpoint.read(last)['step']}), is kept"
        raise TrainingError(f"{what} at step {self.state.step}{kept}. Try a lower learning rate")

    # -- the loop's three acts

    def evaluate(self, on_eval):
        self.threads.update()
        t = self.clock()
        st = self.state
        losses = None
        if self.group.is_main:  # the others wait: the weights are the same on every rank
            losses = evaluate(self.model, self.corpus, self.eval_cfg, device=self.dev, ctx=self.ctx, seed=st.seed)
        losses = self.group.from_main(losses)
        if not all(math.isfinite(v) for v in losses.values()):
            self.fail(f"the loss became {losses['val'] if not math.isfinite(losses['val']) else losses['train']}")
        if checkpoint.first_nonfinite(self.model):
            self.fail("the weights became non-finite")
        st.history.append({"step": st.step, "time": round(self.elapsed(), 3), "lr": get_lr(st.step, st.schedule),
                           "train_loss": losses["train"], "val_loss": losses["val"]})
        improved = losses["val"] < st.best_val
        st.best_val, st.evals_since_best = (losses["val"], 0) if improved else (st.best_val, st.evals_since_best + 1)
        if self.out_dir:
            self.save("ckpt_last.pt")
            if improved and self.group.is_main:  # the same state: copied, not serialised a second time
                with self.writing(self.out_dir / "ckpt_best.pt"):
                    files.atomic_copy(self.out_dir / "ckpt_last.pt", self.out_dir / "ckpt_best.pt")
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
        self.lease.stepped = True  # from now on a failure keeps the run's folder (runs.held)
        return loss

    def evaluated_now(self) -> bool:
        return bool(self.state.history) and self.state.history[-1]["step"] == self.state.step


# ---------------------------------------------------------------- building or restoring a run


def _corpus(data: Shakespeare | Text, saved: dict | None, path: Path | None, progress: bool, note) -> Corpus:
    """The text of `data` encoded by its tokenizer, or on resume by the run's (runs.tokenizer_to_use)."""
    tok = runs.tokenizer_to_use(data.tokenizer, saved, path)
    corpus = (Corpus.from_text(data.text, tok, progress=progress) if isinstance(data, Text) else
              Corpus.shakespeare(data.data_dir, progress=progress, tokenizer=tok))
    asked = parse_tokenizer_spec(tok) if isinstance(tok, str) else None
    if saved is None and asked and asked[1] is not None and asked[1] != corpus.tokenizer.vocab_size:
        merges = len(corpus.tokenizer.merges)
        note(f"the training text has no pair of tokens left to merge after {merges} "
             f"merge{'' if merges == 1 else 's'}: the BPE vocabulary has {corpus.tokenizer.vocab_size} "
             f"tokens, not {asked[1]}")
    return corpus


def _build(config: TrainConfig | None, data, options: RunOptions, lease: Lease | None = None) -> _Session:
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (get_config({config!r}) for a preset) or None")
    if not isinstance(data, (Shakespeare, Text, Corpus)):
        raise TypeError(f"data must be Shakespeare(), Text(text) or a Corpus, got {type(data).__name__}")
    notices: list[str] = []

    def note(m):  # under torchrun, on_notice is rank 0's only (see train)
        notices.append(m)
        if options.on_notice is not None:
            options.on_notice(m)

    out_dir = files.user_path(options.out_dir) if options.out_dir is not None else None
    last = out_dir / "ckpt_last.pt" if out_dir is not None else None
    if not isinstance(data, Corpus) and isinstance(data.tokenizer, str):
        parse_tokenizer_spec(data.tokenizer)  # a bad spec is refused before anything is read
    # every check comes before the folder is touched (overwrite empties it; a new run creates it)
    saved = runs.read_saved(out_dir, options.if_exists)
    saved_cfg = runs.saved_config(saved, last) if saved else None
    if config is None:
        cfg = get_config(saved_cfg) if saved_cfg else get_config("laptop")
    else:
        cfg = get_config(config)  # a copy: the caller's config stays as it was
    dev = pick_device(options.device)
    prec = pick_precision(dev, options.precision)
    corpus = data if isinstance(data, Corpus) else _corpus(data, saved, last, options.progress, note)
    corpus.check_block_size(cfg.model.block_size)
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    asked = None if isinstance(data, Corpus) else data.tokenizer
    st = runs.resume_state(saved, last, cfg, corpus.tokenizer, asked) if saved is not None else None
    runs.prepare_out_dir(out_dir, options.if_exists, note)
    s = _Session(cfg, corpus, dev, prec, options, out_dir, notices, note, lease)
    s.lease.new_run = st is None
    if prec == "fp16" and dev.type == "cpu":
        s.note("fp16 on a CPU is slow: it is there so tests reach a T4's code path (use fp32 or bf16)")
    if st is not None:
        if options.seed is not None and options.seed != st.seed:
            s.note(f"the run's seed {st.seed} is kept (its random state resumes where it stopped); "
                   f"seed {options.seed} applies to new runs only")
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


def train(config: TrainConfig | None = None, data: Shakespeare | Text | Corpus = Shakespeare(),
          options: RunOptions = RunOptions()) -> Run:
    """Train a GPT on `data` as `config` asks, run as `options` say, and return a Run.

    config: a TrainConfig (config.get_config("laptop"), changed by dataclasses.replace,
    config.apply_overrides or config.with_length), or None: "laptop" for a new run, the run's own
    on resume, where only its length and patience may change (runs.CHANGEABLE_ON_RESUME).
    data: Shakespeare(data_dir, tokenizer), Text(text, tokenizer) (data.py) or a Corpus. With BPE
    the losses are per token: run.val_bits_per_char compares runs across tokenizers.
    Raises ValueError for bad arguments (TypeError for the wrong kind), DatasetError for the text,
    TrainingError (a non-finite loss, a run that exists or does not fit; RunInUseError while another
    process trains in out_dir; ResourceError for a full disk or memory exhausted, in one line saying
    what to do). out_dir is checked writable before the text is read. Under torchrun, only
    rank 0 writes files, shows the bar and calls on_notice; every rank returns the same Run."""
    with distributed.process_group(pick_device(options.device)) as (group, dev):
        if group.parallel:
            options = dataclasses.replace(options, device=str(dev), progress=options.progress and group.is_main,
                                          on_notice=options.on_notice if group.is_main else None)
        with runs.held(files.user_path(options.out_dir) if options.out_dir is not None else None) as lease:
            return _run_loop(_build(config, data, options, lease))


def _run_loop(s: _Session) -> Run:
    """The loop of train(): evaluate, step, stop; then the final evaluation and checkpoints."""
    group, on_eval, on_step = s.group, s.options.on_eval, s.options.on_step
    cfg, st, stop = s.cfg, s.state, s.options.stop or StopRequest()
    if group.parallel:  # rank 0 evaluates on batches of the global batch's size, as one process would
        s.eval_cfg = dataclasses.replace(s.eval_cfg, batch_size=cfg.batch_size * group.world_size)
        s.note(f"data-parallel over {group.world_size} processes ({torch.distributed.get_backend()}): a batch of "
               f"{cfg.batch_size} each, a global batch of {cfg.batch_size * group.world_size}")
    fit, stopped, clean = BudgetFit(cfg, len(s.eval_seconds)), "finished", True
    bar = ProgressBar(st, s.local_elapsed(), time_budget=cfg.time_budget, desc=f"training on {s.dev.type} ({s.prec})",
                      enabled=s.options.progress)
    try:
        with stop.on_sigint(sigterm=group.parallel):
            try:
                while True:  # out of memory: one ResourceError saying what to do (see below)
                    if st.step % cfg.eval_interval == 0 and not s.evaluated_now():
                        s.evaluate(on_eval)
                        bar.update(st, s.local_elapsed())
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
                    if fit.wanted(st) and (notice := fit.after_step(st, s.clock(), s.elapsed(), s.eval_seconds)):
                        s.note(notice)
                    if on_step is not None:
                        on_step(st.step, s.elapsed(), s.model)
                    bar.update(st, s.local_elapsed(), loss)
            except KeyboardInterrupt:  # a second Ctrl-C: the step may be half done, keep the last save
                stopped, clean = "interrupted", False
            except (MemoryError, RuntimeError) as e:
                if not out_of_memory(e):
                    raise
                raise runs.out_of_memory(st.step, s.dev.type, cfg.batch_size, s.out_dir, s.lease) from None
        _finish(s, stopped, clean, on_eval)
    finally:
        bar.close(st, s.local_elapsed())
    gpu_job_off_gpu = eval_config_for(cfg, s.dev.type, s.model.num_params()) is not cfg  # minutes there
    bpc = None
    if stopped != "interrupted" and not gpu_job_off_gpu and group.is_main:  # the weights are the same on every rank
        bpc = final_bits_per_char(s.model, s.corpus, batch_size=eval_batch_size(cfg), ctx=s.ctx,
                                  progress=s.options.progress, trained_s=s.local_elapsed(), clock=s.local_clock,
                                  note=s.note)
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
        if checkpoint.first_nonfinite(s.model) is None:
            s.save("ckpt_last.pt")  # a clean step boundary: resuming from here is exact
            s.write_history()
        else:
            s.note(f"interrupted at step {s.state.step} with non-finite weights, which were not saved; "
                   f"{s.out_dir / 'ckpt_last.pt'} holds the last good ones")
