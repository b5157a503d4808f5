"""Scoring a model on a whole text, in units that compare across tokenizers: bits per character.

A loss per token is not comparable between vocabularies: a BPE token stands for several characters,
so predicting it is harder and its loss is larger, yet the model may still predict the *text*
better. Summing the losses over the text and dividing by its characters removes the unit:
bits per character = (sum of -ln p over the tokens) / (characters they stand for) / ln 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
