"""Notebook 02's exercises: the causal mask, the size of raw attention scores, one head's forward.

Each check runs the learner's code on fixed seeds against PyTorch's own attention
(`F.scaled_dot_product_attention`, what the package's `CausalSelfAttention` uses) and names the
typical mistakes: a masked diagonal, the triangles swapped, scores not divided by √head_size,
softmax over the wrong dimension, the future not masked.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import Hint, call, exercise, number

_HIDDEN = -1e4  # in a float mask, −∞ or a large negative number such as -1e9 hides: softmax gives it weight 0


def _allowed(mask, T: int, additive: bool = False) -> torch.Tensor:
    """The learner's mask as bool, True where a query may look: a bool mask as it is, a 0/1 mask
    with 1 = may look, a float mask with 0 = may look and −∞ (or a number below -1e4) = hidden
    (`additive`: read it so even where it holds no −∞, as for T = 1)."""
    if not isinstance(mask, torch.Tensor):
        raise Hint(f"causal_mask({T}) returned a {type(mask).__name__}; return a torch tensor of shape ({T}, {T})")
    if tuple(mask.shape) != (T, T):
        raise Hint(f"causal_mask({T}) has shape {tuple(mask.shape)}, expected ({T}, {T})")
    if mask.dtype == torch.bool:
        return mask
    m = mask.detach().double()
    if additive or (m <= _HIDDEN).any():
        if not ((m == 0) | (m <= _HIDDEN)).all():
            raise Hint("a float mask holds only 0 (may look) and -inf (hidden)")
        return m == 0
    if not ((m == 0) | (m == 1)).all():
        if ((m >= 0) & (m <= 1)).all() and ((m > 0) & (m < 1)).any():
            raise Hint("your values lie between 0 and 1, like section 2's averaging weights: the mask only says "
                       "where position t may look (True, or 1), not how much")
        raise Hint("return a bool tensor (True where position t may look) or a float mask of 0 and -inf")
    return m == 1


@exercise("02")
def causal_mask(fn):
    """`fn(T)` -> a (T, T) mask, True (or 1, or a 0 in a 0/−∞ mask) where query t may look at key s,
    that is s <= t. Checked for T = 8, 4, 1."""
    additive = False
    for T in (8, 4, 1):
        mask = call(fn, T)
        got = _allowed(mask, T, additive)
        additive = additive or (isinstance(mask, torch.Tensor) and bool((mask.double() <= _HIDDEN).any()))
        want = torch.ones(T, T, dtype=torch.bool).tril()
        if torch.equal(got, want):
            continue
        if torch.equal(got, ~want):
            raise Hint("your mask is inverted: it lets position t see the future (above the diagonal) and hides "
                       "the past; the allowed part is key <= query (True, 1 or 0 in a -inf mask); invert it")
        if torch.equal(got, want.tril(-1)):
            raise Hint("the diagonal is masked: position t must see itself, or row 0 sees nothing and "
                       "softmax gives NaN; use torch.tril(...), not tril(..., diagonal=-1)")
        if torch.equal(got, want.T):
            raise Hint("upper and lower triangle swapped: position 0 may see position 1, in its future; "
                       "the allowed part is column <= row (torch.tril)")
        r, c = (got != want).nonzero()[0].tolist()
        if c > r:
            raise Hint(f"position {r} may see position {c}, which is in its future: hide column > row")
        raise Hint(f"position {r} may not see position {c}, which is in its past: allow column <= row")
    return "True on and below the diagonal for T = 8, 4 and 1: position t sees 0..t"


@exercise("02")
def score_std(guess):
    """Predict, then measure: the standard deviation of q · k for q and k of 64 independent
    unit-variance numbers each (head_size 64, no scaling). Within 25% of the measurement passes."""
    guess = number(guess)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(100_000, 64, generator=g), torch.randn(100_000, 64, generator=g)
    std = (q * k).sum(dim=-1).std().item()
    said = f"you guessed {guess:g}; measured {std:.2f} (√64 = 8)"
    if guess < 0:
        raise Hint(f"{said}: a standard deviation is never negative (it is the square root of a variance)")
    if abs(guess - std) <= 0.25 * std:
        return f"{said}: off by {abs(guess - std) / std:.0%}"
    if abs(guess - 64) <= 0.25 * 64:
        raise Hint(f"{said}: 64 is the variance (a sum of 64 terms of variance 1); the std is its square root")
    raise Hint(f"{said}: off by {abs(guess - std) / std:.0%}; q · k is a sum of 64 products of variance 1, "
               "so its variance is 64")


def _variant(x, key, query, value, scale, dim=-1, causal=True, scores="q@kT", mix="v"):
    """One head's output computed with one deliberate change, to recognise a learner's mistake."""
    q, k, v = query(x), key(x), value(x)
    s = (q @ k.transpose(-2, -1) if scores == "q@kT" else k @ q.transpose(-2, -1)) * scale
    T = x.shape[1]
    if causal:
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return F.softmax(s, dim=dim) @ (v if mix == "v" else k)


def _head_once(fn, B: int, T: int, C: int, hs: int, seed: int) -> None:
    """Run `fn` on x (B, T, C) with three seeded nn.Linear(C, hs) layers; a Hint naming the mistake
    unless its output is PyTorch's causal attention."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        key, query, value = (nn.Linear(C, hs, bias=False) for _ in range(3))
        x = torch.randn(B, T, C)
        x_changed = x.clone()
        x_changed[:, min(5, T - 1)] = torch.randn(B, C)
    with torch.no_grad():
        out = call(fn, x.clone(), key, query, value)
        if not isinstance(out, torch.Tensor):
            raise Hint(f"return a tensor (B, T, head_size), got a {type(out).__name__}")
        if tuple(out.shape) == (B, T, T):
            raise Hint(f"you returned the weights {tuple(out.shape)}: the head's output is weights @ v, "
                       f"shape (B, T, head_size) = {(B, T, hs)}")
        if tuple(out.shape) != (B, T, hs):
            raise Hint(f"wrong shape: got {tuple(out.shape)}, expected (B, T, head_size) = {(B, T, hs)}")
        if torch.isnan(out).any():
            raise Hint("your output holds NaN: some row of scores is all -inf before the softmax. Is the diagonal "
                       "masked or the mask inverted (position t must see 0..t), or the softmax over the wrong "
                       "dim (dim=-1, the keys)?")
        out = out.float()
        again = call(fn, x.clone(), key, query, value)
        if isinstance(again, torch.Tensor) and not torch.equal(again.float(), out):
            raise Hint("two calls on the same x gave different outputs: remove the dropout or other randomness "
                       "from your head (this exercise has none)")
        want = F.scaled_dot_product_attention(query(x), key(x), value(x), is_causal=True)
        if torch.allclose(out, want, atol=1e-5):
            return

        def same(**change):
            return torch.allclose(out, _variant(x, key, query, value, **{"scale": hs ** -0.5, **change}), atol=1e-5)

        for scale, what in [(1.0, "not divided at all"), (1 / hs, f"divided by head_size = {hs}"),
                            (C ** -0.5, f"divided by √C = √{C}"), (hs ** 0.5, f"multiplied by √{hs}")]:
            if same(scale=scale):
                raise Hint(f"scores off by a factor: yours are {what}; multiply q @ kᵀ by head_size**-0.5 "
                           f"(1/√{hs} = {hs ** -0.5:g})")
        if same(dim=-2) or same(dim=1):
            raise Hint("softmax over the wrong dim: your weights' columns sum to 1, not their rows; use "
                       "F.softmax(scores, dim=-1) so each query's weights over the keys sum to 1")
        if same(scores="k@qT"):
            raise Hint("scores are k @ qᵀ: row t must hold q_t · k_s, that is q @ k.transpose(-2, -1)")
        if same(mix="k"):
            raise Hint("your output mixes the keys: multiply the weights by v = value(x)")
        t = min(5, T - 1)  # the position changed
        moved = (call(fn, x_changed, key, query, value).float() - out).abs().amax(dim=-1)[:, :t]
        if (moved > 0).any():
            raise Hint(f"future positions not masked: changing position {t} of x moved your outputs at positions "
                       f"0-{t - 1}; set the scores of key > query to -inf before the softmax")
        gap = (out - want).abs().max().item()
        raise Hint(f"shape and causality right, but the output is off by up to {gap:.3g}: check the steps "
                   f"q @ kᵀ, times 1/√head_size, mask, softmax(dim=-1), @ v")


@exercise("02")
def head_forward(fn):
    """`fn(x, key, query, value)` -> one causal attention head's output (B, T, head_size) for x
    (B, T, C) and three bias-free nn.Linear(C, head_size) layers; compared with
    F.scaled_dot_product_attention(q, k, v, is_causal=True) on x (2, 8, 32), head_size 16, then on
    x (3, 5, 24), head_size 8 (an answer that takes T or head_size from the notebook fails there)."""
    _head_once(fn, 2, 8, 32, 16, seed=0)
    try:
        _head_once(fn, 3, 5, 24, 8, seed=1)
    except Hint as hint:
        raise Hint(f"right for x (2, 8, 32) and head_size 16, not for x (3, 5, 24) and head_size 8: {hint} "
                   "(take T and head_size from the tensors, x.shape[1] and k.shape[-1], not from the notebook)"
                   ) from None
    return "matches PyTorch's causal attention: x (2, 8, 32) -> (2, 8, 16), scores times 1/√16"
