"""Scoring a model: the losses training reports, and bits per character.

Training evaluates the same batches every time (estimate_loss with a fixed seed), and the
validation loss exactly, over every window of the split, where that is no dearer (full_loss,
val_is_exact). A GPU-sized model off a GPU reads fewer batches (eval_config_for).

A loss per token is not comparable between vocabularies: a BPE token stands for several characters,
so predicting it is harder and its loss is larger, yet the model may still predict the *text*
better. Summing the losses over the text and dividing by its characters removes the unit:
bits per character = (sum of -ln p over the tokens) / (characters they stand for) / ln 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import PROGRESS_DELAY_S, Corpus, all_windows, get_batch

GPU_JOB_PARAMS = 5e6  # a model this large trains at seconds a step off a GPU
SLOW_DEVICE_EVAL_ITERS = 2  # batches a split for such a model off a GPU: its first step comes within a minute


@torch.no_grad()
def estimate_loss(model, splits: dict, *, batch_size: int, iters: int, device, ctx=None,
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
def full_loss(model, data: torch.Tensor, *, batch_size: int = 64, device="cpu", ctx=None) -> float:
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


def evaluate(model, corpus: Corpus, cfg: TrainConfig, *, device, ctx=None, seed: int = 0) -> dict[str, float]:
    """{"train": loss, "val": loss}: train over eval_iters fixed random batches; val exact over
    every window of the split where that is no dearer (see val_is_exact), else sampled alike."""
    kw = dict(batch_size=eval_batch_size(cfg), iters=cfg.eval_iters, device=device, ctx=ctx, seed=seed)
    if not val_is_exact(cfg, corpus):
        return estimate_loss(model, {"train": corpus.train, "val": corpus.val}, **kw)
    out = estimate_loss(model, {"train": corpus.train}, **kw)
    out["val"] = full_loss(model, corpus.val, batch_size=kw["batch_size"], device=device, ctx=ctx)
    return out


# ---------------------------------------------------------------- bits per character


LOGITS_BUDGET_BYTES = 64 * 2**20  # the largest (rows, T, vocab) float32 logits a pass builds at once


class PassTooLong(RuntimeError):
    """A scoring pass stopped after its first batch: it would take about `seconds` (more than
    `limit` seconds) for its `tokens` tokens."""

    def __init__(self, seconds: float, limit: float, tokens: int):
        self.seconds, self.limit, self.tokens = seconds, limit, tokens
        super().__init__(f"scoring {tokens:,} tokens would take about {seconds:.0f} s, more than {limit:.0f} s")


def rows_per_forward(block_size: int, vocab_size: int, batch_size: int) -> int:
    """How many windows one forward pass scores: batch_size, fewer where their float32 logits
    (rows x block_size x vocab_size x 4 bytes) would pass LOGITS_BUDGET_BYTES (a large vocabulary);
    at least one."""
    return max(1, min(batch_size, LOGITS_BUDGET_BYTES // (4 * block_size * vocab_size)))


def _scored(model, ids: torch.Tensor, batch_size: int, *, progress: bool = False, max_seconds: float | None = None,
            clock=time.perf_counter):
    """Yields (offset, losses) for consecutive runs of the tokens of `ids` after the first: the
    (k,) losses in nats of targets offset+1 ... offset+k. Windows as token_losses says; the model
    in eval mode meanwhile. Memory is bounded whatever len(ids): one forward's logits at a time
    (rows_per_forward), the windows' ids made long batch by batch. A bar (`progress`) once the
    pass has taken 2 s; PassTooLong after the first forward if the whole would take more than
    `max_seconds`."""
    from tqdm.auto import tqdm

    block, vocab = model.config.block_size, model.config.vocab_size
    device = next(model.parameters()).device
    n = (len(ids) - 1) // block  # full windows
    rows = rows_per_forward(block, vocab, batch_size)
    t0 = clock()
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(ids) - 1, desc="bits per character of the validation text", unit="tok",
                  unit_scale=True, disable=not progress, delay=PROGRESS_DELAY_S, leave=False) as bar:
            for start in range(0, n, rows):
                at = torch.arange(start, min(start + rows, n))[:, None] * block + torch.arange(block)
                x, y = ids[at].to(device, torch.long), ids[at + 1].to(device, torch.long)
                yield start * block, _losses(model, x, y)
                bar.update(x.numel())
                if start == 0 and max_seconds is not None:
                    estimate = (clock() - t0) * (len(ids) - 1) / x.numel()
                    if estimate > max_seconds:
                        raise PassTooLong(estimate, max_seconds, len(ids) - 1)
            if n * block < len(ids) - 1:  # the tail: one shorter window
                x, y = ids[n * block : -1], ids[n * block + 1 :]
                yield n * block, _losses(model, x[None].to(device, torch.long), y[None].to(device, torch.long))
                bar.update(len(x))
    finally:
        model.train(was_training)


def _as_ids(ids) -> torch.Tensor:
    """`ids` as a flat tensor of its own integer dtype (a compact uint8/int16 split is not copied)."""
    ids = torch.as_tensor(ids).flatten()
    if ids.is_floating_point() or ids.is_complex():
        ids = ids.long()
    if len(ids) < 2:
        raise ValueError(f"need at least two tokens to score a prediction, got {len(ids)}")
    return ids


@torch.no_grad()
def token_losses(model, ids, *, batch_size: int = 16) -> torch.Tensor:
    """The loss (-ln p, in nats) of every token of `ids` but the first, as a (len(ids) - 1,) tensor.

    `ids` is cut into consecutive, non-overlapping windows of `model.config.block_size` targets
    (the last one shorter); each token is predicted from the tokens before it in its window, so
    every token after the first is scored exactly once. At most `batch_size` windows a forward pass,
    fewer for a large vocabulary (rows_per_forward). The model is put in eval mode (no dropout)
    and returned to its previous mode. ValueError if `ids` has fewer than two tokens.
    """
    ids = _as_ids(ids)
    out = torch.empty(len(ids) - 1)
    for offset, losses in _scored(model, ids, batch_size):
        out[offset : offset + len(losses)] = losses.cpu()
    return out


def _losses(model, x, y):
    logits, _ = model(x)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")


def _loss_sum(model, ids, batch_size, **scoring) -> float:
    """The sum of token_losses(model, ids), in nats, streamed: no per-token result is kept."""
    total = 0.0
    with torch.no_grad():
        for _, losses in _scored(model, ids, batch_size, **scoring):
            total += losses.double().sum().item()
    return total


def bits_per_char(model, ids, char_lengths, *, batch_size: int = 16) -> float:
    """Bits per character of the text that `ids` encodes, as scored by token_losses.

    `char_lengths[i]` is how many characters token i stands for (a tokenizer's `char_lengths(ids)`);
    the denominator is the characters of the scored tokens (all but the first), not their count.
    For a character tokenizer this is the mean token loss / ln 2. Memory: one forward pass's
    logits, whatever the length of `ids`.
    """
    lengths = torch.as_tensor(char_lengths, dtype=torch.float64).flatten()
    if len(lengths) != len(ids):
        raise ValueError(f"char_lengths has {len(lengths)} entries for {len(ids)} tokens")
    ids = _as_ids(ids)
    return _loss_sum(model, ids, batch_size) / lengths[1:].sum().item() / math.log(2)


def characters(tokenizer, ids: torch.Tensor, chunk: int = 2**20) -> int:
    """How many characters the tokens `ids` stand for (sum of tokenizer.char_lengths), counted a
    chunk of tokens at a time: no Python list as long as the text."""
    if tokenizer.kind == "char":
        return len(ids)
    table = torch.tensor(tokenizer.char_lengths(range(tokenizer.vocab_size)), dtype=torch.int64)
    return sum(int(table[ids[i : i + chunk].long()].sum()) for i in range(0, len(ids), chunk))


def val_bits_per_char(model, corpus: Corpus, *, batch_size: int = 64, ctx=None, progress: bool = False,
                      max_seconds: float | None = None, clock=time.perf_counter) -> float:
    """Bits per character of the whole validation text (bits_per_char over corpus.val), the
    figure that compares runs across tokenizers. One forward pass over the split: a second or so
    for the laptop preset's model on a CPU; memory one forward's logits (at most
    LOGITS_BUDGET_BYTES), whatever the text's length. For a character tokenizer it equals the exact
    validation loss (full_loss) / ln 2 when the split ends on a whole window.

    `progress`: a bar once it has taken 2 s. `max_seconds`: PassTooLong after the first forward
    pass if the whole would take longer (measured by `clock`, in seconds)."""
    ids = _as_ids(corpus.val)
    with ctx or contextlib.nullcontext():
        nats = _loss_sum(model, ids, batch_size, progress=progress, max_seconds=max_seconds, clock=clock)
    return nats / characters(corpus.tokenizer, ids[1:]) / math.log(2)


FINAL_PASS_MIN_SECONDS = 10.0  # the final bits-per-character pass may always take this long, else as long as the run


def final_bits_per_char(model, corpus: Corpus, *, batch_size: int, ctx=None, progress: bool = False,
                        trained_s: float, clock=time.perf_counter, note=print) -> float | None:
    """Bits per character of the validation text by a run's final model, or None, said through
    `note(message)`, for a run too short for it: the pass stops after its first forward if the whole
    would take longer than the run trained (`trained_s` seconds, at least FINAL_PASS_MIN_SECONDS):
    a 5-step run on a 200 MB text does not spend minutes scoring it."""
    try:
        return val_bits_per_char(model, corpus, batch_size=batch_size, ctx=ctx, progress=progress,
                                 max_seconds=max(FINAL_PASS_MIN_SECONDS, trained_s), clock=clock)
    except PassTooLong as e:
        note(f"bits per character not computed: scoring the {e.tokens:,} tokens of the validation text would take "
             f"about {e.seconds:,.0f} s, longer than this run trained ({trained_s:,.0f} s); compute it later with "
             f"tinygpt.evaluate.val_bits_per_char(model, corpus)")
        return None
