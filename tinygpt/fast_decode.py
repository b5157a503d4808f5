"""Generating on a CPU: a copy of the model whose weights are laid out for one token at a time.

A KV-cache step multiplies a single row by every weight matrix, so its time is that of reading the
weights from memory (42.5 MB a token for the workshop model, more than a laptop's L3 cache holds).
nn.Linear keeps its weight as (out_features, in_features); PyTorch's CPU matrix product (MKL) reads
the same matrix about 1.6x faster stored the other way round, (in_features, out_features), when
multiplying one row by it (the six layers of the workshop model: 1.7 ms against 2.8 ms a token, one
thread of an AMD EPYC with AVX-512, PyTorch 2.13).

`decoding_copy` returns a copy of a model whose Linear weights are stored that way, as the transposed
view of an (in, out) tensor: the same shapes and values, and the model's own modules and forward,
unchanged (model.py knows nothing of it). Only the order in which a product adds its terms can change,
so the logits agree to float rounding (about 1e-7) and the tests check that generation draws the same
tokens from both. generate and stream use it on a CPU when `worth_copying`; a change of the model's
weights after the copy is not seen by it, so each generation makes its own.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

MIN_BYTES = 4 * 2**20  # smaller weights stay in the CPU's caches, where both layouts read alike


def worth_copying(model: nn.Module) -> bool:
    """Whether generating with `model` on a CPU should run a decoding copy: when its Linear weights are
    float32 (the kernel measured; other dtypes run others) and take at least MIN_BYTES (the laptop
    model's 1.8 MB gain nothing, and the copy would delay the first token by a few ms), and no module
    has a forward hook or pre-hook of its own (a copy would run copies of them: a bound method's
    object is deep-copied with it; such a model decodes as it is)."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    big = sum(w.numel() * w.element_size() for w in weights) >= MIN_BYTES
    fp32 = all(w.dtype == torch.float32 for w in weights)
    return big and fp32 and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@torch.no_grad()
def decoding_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode, without gradients, whose nn.Linear weights (out, in) are views of
    contiguous (in, out) tensors. Costs two copies of the weights (about 10-20 ms for the workshop model)."""
    fast = copy.deepcopy(model).requires_grad_(False).eval()
    for m in fast.modules():
        if isinstance(m, nn.Linear):
            m.weight = nn.Parameter(m.weight.t().contiguous().t(), requires_grad=False)
    return fast
