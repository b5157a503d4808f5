"""Notebook 03's exercises: the MLP, the block's forward, one block's parameters, and depth against the
scale of the residual stream."""

from __future__ import annotations

import numbers

import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.config import GPTConfig
from tinygpt.model import GPT, MLP, Block

from . import Hint, NotAttempted, answer, call, exercise, number

_SMALL = GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=4, n_embd=48, dropout=0.0)


def _shape(t) -> tuple:
    return tuple(t.shape)


def _close(a, b, atol=1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=1e-4)


def _linear(module, name, n_in, n_out):
    """The learner's Linear layer `name` of `module`, with a hint when it is missing or the wrong size."""
    layer = getattr(module, name, None)
    if layer is None and isinstance(module, nn.Module):
        others = [n for n, m in module.named_children() if isinstance(m, nn.Linear)]
        if others:
            raise Hint(f"your MyMLP has no layer named {name} (its Linear layers are {', '.join(others)}): name "
                       "them c_fc and c_proj, so the check can copy the package's weights into yours")
    if layer is None or layer is Ellipsis:
        raise NotAttempted
    if not isinstance(layer, nn.Linear):
        raise Hint(f"{name} is a {type(layer).__name__}; make it nn.Linear({n_in}, {n_out})")
    if _shape(layer.weight) != (n_out, n_in):
        raise Hint(f"{name} maps {layer.in_features} -> {layer.out_features} features (weight "
                   f"{_shape(layer.weight)}); expected {n_in} -> {n_out} (weight {(n_out, n_in)})"
                   + (": the hidden width is 4 * n_embd" if n_in != n_out else ""))
    return layer


@exercise("03")
def mlp(MyMLP):
    """`MyMLP(n_embd)`, a module with c_fc (n_embd -> 4 n_embd) and c_proj (4 n_embd -> n_embd) whose
    forward is c_proj(GELU(c_fc(x))): given the package MLP's weights, the same output on a fixed input."""
    C = _SMALL.n_embd
    mine = call(MyMLP, C)
    c_fc = _linear(mine, "c_fc", C, 4 * C)
    _linear(mine, "c_proj", 4 * C, C)
    torch.manual_seed(0)
    ref = MLP(_SMALL).eval()
    x = torch.randn(2, 5, C)
    try:
        mine.load_state_dict(ref.state_dict())
    except RuntimeError:
        names = ", ".join(mine.state_dict()) or "none"
        raise Hint(f"your MyMLP's weights are named {names}; expected c_fc.weight, c_fc.bias, c_proj.weight, "
                   "c_proj.bias (two nn.Linear layers with biases, named c_fc and c_proj)") from None
    mine.eval()
    with torch.no_grad():
        out = call(mine, x)
        want = ref(x)
        if not torch.is_tensor(out):
            raise Hint(f"your forward returned a {type(out).__name__}: return the tensor c_proj(GELU(c_fc(x)))")
        again = call(mine, x)
        if torch.is_tensor(again) and not torch.equal(again, out):
            raise Hint("two calls on the same x gave different outputs: remove the dropout or other randomness "
                       "from forward (this MLP has none)")
        if _shape(out) == (2, 5, 4 * C):
            raise Hint(f"output has shape {_shape(out)}, expected {_shape(want)}: project back down to n_embd "
                       "with c_proj after the GELU")
        if _shape(out) != _shape(want):
            raise Hint(f"output has shape {_shape(out)}, expected {_shape(want)} (the input's shape)")
        if _close(out, want):
            return f"same output as tinygpt.model.MLP, largest difference {(out - want).abs().max():.1e}"
        h = c_fc(x)
        if _close(out, ref.c_proj(F.gelu(h, approximate="tanh")), atol=1e-5) and _close(out, want, atol=1e-3):
            return "same output as tinygpt.model.MLP within 1e-3 (you used GELU's tanh approximation, as GPT-2 did)"
        wrong = {"ReLU instead of GELU: the outputs differ where c_fc's values are near or below 0 "
                 "(use nn.GELU() or F.gelu)": ref.c_proj(F.relu(h)),
                 "no non-linearity between c_fc and c_proj: two Linear layers in a row are one Linear "
                 "layer (put a GELU between them)": ref.c_proj(h),
                 "the GELU is applied after c_proj; it goes between c_fc and c_proj": F.gelu(ref.c_proj(h)),
                 "the input is added to the output: the residual connection belongs to the block, "
                 "not to the MLP": x + want}
    for hint, candidate in wrong.items():
        if _close(out, candidate):
            raise Hint(hint)
    raise Hint(f"output differs from tinygpt.model.MLP's by up to {(out - want).abs().max():.3f} with the same "
               "weights: compute c_proj(GELU(c_fc(x)))")


def _seeded_block(seed=0):
    """The package's Block with random LayerNorm gains and shifts (fresh ones are 1 and 0, which would hide
    a LayerNorm used in the wrong place)."""
    torch.manual_seed(seed)
    block = Block(_SMALL).eval()
    with torch.no_grad():
        for ln in (block.ln_1, block.ln_2):
            ln.weight.copy_(1 + 0.3 * torch.randn_like(ln.weight))
            ln.bias.copy_(0.3 * torch.randn_like(ln.bias))
    return block


@exercise("03")
def block_forward(fn):
    """`fn(block, x)`: the pre-norm block's forward from its submodules, x + attn(ln_1(x)) then
    x + mlp(ln_2(x)); checked against tinygpt.model.Block on a fixed input."""
    block = _seeded_block()
    x = 3.0 * torch.randn(2, 6, _SMALL.n_embd, generator=torch.Generator().manual_seed(1))

    def shortcut(*args, **kwargs):
        raise Hint("you called block(x), which runs the package's forward: write it yourself from block.ln_1, "
                   "block.attn, block.ln_2 and block.mlp")

    block.forward = shortcut  # the learner's code must not call it; the check uses Block.forward
    with torch.no_grad():
        out = call(fn, block, x.clone())
        want = Block.forward(block, x)
        if not torch.is_tensor(out) or _shape(out) != _shape(want):
            got = _shape(out) if torch.is_tensor(out) else type(out).__name__
            raise Hint(f"your block returned {got}, expected a tensor of shape {_shape(want)} (the input's shape)")
        if _close(out, want):
            return _trainable(fn, block, x, f"same output as tinygpt.model.Block, largest difference "
                                            f"{(out - want).abs().max():.1e}")
        a, m, ln_1, ln_2 = block.attn, block.mlp, block.ln_1, block.ln_2
        h = x + a(ln_1(x))
        post = ln_1(x + a(x))
        wrong = {
            "post-norm: you normalise after adding (LayerNorm(x + sublayer(x))); pre-norm normalises the "
            "sub-layer's input: x + attn(ln_1(x))": ln_2(post + m(post)),
            "no residual connections: add each sub-layer's output to x (x = x + ...), don't replace x":
                m(ln_2(a(ln_1(x)))),
            "the attention's residual is missing: x = x + attn(ln_1(x))": a(ln_1(x)) + m(ln_2(a(ln_1(x)))),
            "the MLP's residual is missing: x = x + mlp(ln_2(x))": m(ln_2(h)),
            "the residual stream carries the normalised x: keep x itself and normalise only the copy that goes "
            "into attn and mlp": (lambda y: y + m(ln_2(y)))(ln_1(x) + a(ln_1(x))),
            "the MLP reads the block's input: it should read x after the attention's residual, "
            "x + mlp(ln_2(x)) with the updated x": h + m(ln_2(x)),
            "ln_1 and ln_2 are swapped: ln_1 goes before attn, ln_2 before mlp":
                (lambda y: y + m(ln_1(y)))(x + a(ln_2(x))),
            "the residual stream carries the normalised x: keep x itself and normalise only the copy that goes "
            "into attn and mlp ": (lambda y: y + m(y))(ln_2(ln_1(x) + a(ln_1(x)))),
            "ln_1 is used twice: the MLP reads ln_2(x), its own LayerNorm": h + m(ln_1(h)),
            "no LayerNorm: attn and mlp each read a normalised copy, attn(ln_1(x)) and mlp(ln_2(x))":
                (lambda y: y + m(y))(x + a(x)),
            "the MLP runs before the attention: first x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))":
                (lambda y: y + a(ln_1(y)))(x + m(ln_2(x))),
            "the MLP is missing: after the attention's residual, x = x + mlp(ln_2(x))": h,
        }
    for hint, candidate in wrong.items():
        if _close(out, candidate):
            raise Hint(hint)
    raise Hint(f"output differs from tinygpt.model.Block's by up to {(out - want).abs().max():.3f}: "
               "x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))")


def _trainable(fn, block, x, passed: str) -> str:
    """`passed` when backpropagation runs through `fn(block, x)`; a Hint when an in-place `x += ...`
    breaks it (LayerNorm keeps its input for the gradient)."""
    try:
        with torch.enable_grad():
            inp = x.clone().requires_grad_(True) * 1.0  # not a leaf, as the stream is inside a GPT
            call(fn, block, inp).sum().backward()
    except (Hint, RuntimeError) as e:
        if "inplace" not in str(e).replace("-", ""):
            raise Hint(f"right output, but backpropagation through it failed: {e}") from None
        raise Hint("right output, but x += ... changes x in place, which breaks training (the LayerNorm kept "
                   "x to compute its gradient): write x = x + ...") from None
    finally:
        block.zero_grad(set_to_none=True)
    return passed


@exercise("03")
def block_params(guess):
    """A guess of one block's parameter count at n_embd = 384 (the workshop's width), against the count
    of tinygpt.model.Block: within 10% passes; far off, a hint names what was left out."""
    try:
        guess = number(guess)
    except Hint:
        raise Hint(f"guess a number of parameters, like 1_000_000 (got {guess!r})") from None
    if guess <= 0:
        raise Hint(f"guess a number of parameters above 0, like 1_000_000 (got {guess:g})")
    C = 384
    block = Block(GPTConfig(n_embd=C, n_head=6))
    n = sum(p.numel() for p in block.parameters())
    off = guess / n - 1
    said = f"you guessed {guess:,.0f}; one block has {n:,} (12 × 384² = {12 * C * C:,} in its matrices, " \
           f"{n - 12 * C * C:,} in biases and LayerNorms)"
    if abs(off) <= 0.10:
        return f"{said}: off by {off:+.1%}"
    known = {8 * C * C: "the MLP alone (8C²): attention adds c_attn (3C²) and its c_proj (C²)",
             4 * C * C: "attention alone (4C²): the MLP adds c_fc (4C²) and c_proj (4C²)",
             6 * C * C: "C×C + C×3C + C×C + C×C: the MLP's hidden layer is 4C wide, so its matrices are 4C² each",
             10_795_776: "the whole model: a block is about a sixth of it",
             5 * C * C: "the MLP's matrices are 4C² each (C -> 4C and 4C -> C), not C²"}
    for value, why in known.items():
        if abs(guess / value - 1) <= 0.05:
            raise Hint(f"{said}; your guess is {why}")
    raise Hint(f"{said}: off by {off:+.0%}. Count the four matrices: c_attn C×3C, attn.c_proj C×C, "
               "c_fc C×4C, mlp.c_proj 4C×C")


def stream_scales(n_layer: int, config: GPTConfig | None = None, seed: int = 0) -> list[float]:
    """The standard deviation of the residual stream of a freshly initialised GPT (std 0.02 everywhere, as
    tinygpt's GPT), on 4 random windows of 64 characters: after the embeddings, then after each block."""
    base = config or GPTConfig(vocab_size=65, block_size=64, n_head=6, n_embd=384, dropout=0.0)
    cfg = GPTConfig(**{**base.__dict__, "n_layer": n_layer, "block_size": 64})
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (4, 64), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x = model.tok_emb(idx) + model.pos_emb(torch.arange(64))
        scales = [x.std().item()]
        for block in model.blocks:
            x = block(x)
            scales.append(x.std().item())
    return scales


@exercise("03")
def depth(depths, ax=None):
    """Explore: the residual stream's scale block by block for fresh GPTs of each depth in `depths` (1 to 5
    depths from 1 to 48), drawn on `ax` (a new figure when None). With one depth it draws it and is not
    attempted yet; with two or more the answer names the scale after each model's last block."""
    depths = answer(depths)
    if not isinstance(depths, (list, tuple, range)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in depths):
        raise Hint(f"depths is a list of whole numbers of blocks, like [6, 24] (got {depths!r})")
    depths = [int(d) for d in depths]
    if not 1 <= len(depths) <= 5 or not all(1 <= d <= 48 for d in depths):
        raise Hint(f"give 2 to 5 depths from 1 to 48 blocks (got {list(depths)}): deeper ones take long to build")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    ends = {}
    for d in sorted(set(depths)):
        s = stream_scales(d)
        ends[d] = s[-1]
        ax.plot(range(len(s)), s, marker="o" if d <= 12 else None, label=f"n_layer = {d}")
    ax.set(title="The residual stream of a fresh GPT, block by block", xlabel="blocks passed (0: the embeddings)",
           ylabel="std of the stream x")
    ax.legend()
    plt.show()
    if len(ends) < 2:
        if len(depths) > 1:
            raise Hint(f"your depths {depths} are all the same: add a different one, like [6, 24]")
        raise NotAttempted
    listed = ", ".join(f"{d}: {s:.2f}" for d, s in ends.items())
    return (f"std of the stream after the last block, by n_layer: {listed}. It grows with depth, roughly like "
            "√n_layer: every block adds its output to the stream, and variances add")
