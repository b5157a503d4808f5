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

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import Corpus, all_windows, get_batch

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


@torch.no_grad()
def token_losses(model, ids, *, batch_size: int = 16) -> torch.Tensor:
    """The loss (-ln p, in nats) of every token of `ids` but the first, as a (len(ids) - 1,) tensor.

    `ids` is cut into consecutive, non-overlapping windows of `model.config.block_size` targets
    (the last one shorter); each token is predicted from the tokens before it in its window, so
    every token after the first is scored exactly once. The model is put in eval mode (no dropout)
    and returned to its previous mode. ValueError if `ids` has fewer than two tokens.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if len(ids) < 2:
        raise ValueError(f"need at least two tokens to score a prediction, got {len(ids)}")
    block = model.config.block_size
    device = next(model.parameters()).device
    n = (len(ids) - 1) // block  # full windows
    pieces = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(start + batch_size, n))[:, None] * block + torch.arange(block)
            pieces.append(_losses(model, ids[rows].to(device), ids[rows + 1].to(device)))
        if n * block < len(ids) - 1:  # the tail: one shorter window
            x, y = ids[n * block : -1], ids[n * block + 1 :]
            pieces.append(_losses(model, x[None].to(device), y[None].to(device)))
    finally:
        model.train(was_training)
    return torch.cat(pieces).cpu()


def _losses(model, x, y):
    logits, _ = model(x)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")


def bits_per_char(model, ids, char_lengths, *, batch_size: int = 16) -> float:
    """Bits per character of the text that `ids` encodes, as scored by token_losses.

    `char_lengths[i]` is how many characters token i stands for (a tokenizer's `char_lengths(ids)`);
    the denominator is the characters of the scored tokens (all but the first), not their count.
    For a character tokenizer this is the mean token loss / ln 2.
    """
    lengths = torch.as_tensor(char_lengths, dtype=torch.float64).flatten()
    if len(lengths) != len(ids):
        raise ValueError(f"char_lengths has {len(lengths)} entries for {len(ids)} tokens")
    losses = token_losses(model, ids, batch_size=batch_size)
    return losses.double().sum().item() / lengths[1:].sum().item() / math.log(2)


def val_bits_per_char(model, corpus: Corpus, *, batch_size: int = 64, ctx=None) -> float:
    """Bits per character of the whole validation text (bits_per_char over corpus.val), the
    figure that compares runs across tokenizers. One forward pass over the split: a second or so
    for the laptop preset's model on a CPU. For a character tokenizer it equals the exact
    validation loss (full_loss) / ln 2 when the split ends on a whole window."""
    lengths = corpus.tokenizer.char_lengths(corpus.val.tolist())
    with ctx or contextlib.nullcontext():
        return bits_per_char(model, corpus.val, lengths, batch_size=batch_size)
