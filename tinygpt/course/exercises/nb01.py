"""Notebook 01's exercises: encode/decode, the untrained bigram's loss, one training step.

Each check runs the learner's code against the package's (`CharTokenizer`, a reference step) on fixed
seeds and answers in one line; see `tinygpt.course.exercises` for the machinery.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data import load_shakespeare, train_val_split
from ...tokenizer import CharTokenizer
from . import Hint, call, exercise, number

SEED = 1337  # the notebook seeds its bigram model with this too
SAMPLES = ["First Citizen:\nBefore we proceed", "hii there", "To be, or not to be: that is the question?"]


@functools.lru_cache(maxsize=1)
def _tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(load_shakespeare(progress=False))


@functools.lru_cache(maxsize=1)
def _val_data() -> torch.Tensor:
    tok = _tokenizer()
    data = torch.tensor(tok.encode(load_shakespeare(progress=False)), dtype=torch.long)
    return train_val_split(data)[1]


@exercise("01")
def encode_decode(encode, decode):
    """`encode(str) -> list of ids` and `decode(ids) -> str` built on the notebook's `stoi`/`itos`:
    compared with the package's CharTokenizer on a few lines, and the round trip must give the text back."""
    tok = _tokenizer()
    for s in SAMPLES:
        ids = call(encode, s)
        expected = tok.encode(s)
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, str):
            raise Hint(f"encode({s[:9]!r}) returned a string {ids[:12]!r}: it should return a list of integers, "
                       "one per character (look each one up in stoi)")
        ids = list(ids)
        if len(ids) != len(s):
            raise Hint(f"encode({s!r}) gave {len(ids)} ids for {len(s)} characters: one id per character")
        if ids != expected:
            if [i - 1 for i in ids] == expected:
                raise Hint(f"encode({s[:9]!r}) is off by one ({ids[:4]} instead of {expected[:4]}): "
                           "ids start at 0, as in enumerate(chars)")
            raise Hint(f"encode({s[:9]!r}) gave {ids[:6]}, the package gives {expected[:6]}: "
                       "number the sorted characters (stoi) and look each character up")
        text = call(decode, expected)
        if isinstance(text, list):
            raise Hint(f"decode returned a list {text[:4]}...: join the characters into one string with ''.join(...)")
        if text != s:
            if isinstance(text, str) and text.replace(" ", "") == s.replace(" ", ""):
                raise Hint(f"decode({expected[:4]}...) gave {text[:15]!r}: join with '' (no separator), "
                           "not with a space")
            if isinstance(text, str) and len(text) != len(s):
                raise Hint(f"decode(encode({s[:9]!r}...)) gave {len(text)} characters for the text's {len(s)}: "
                           "the round trip must give the text back, one character (itos) for every id")
            raise Hint(f"decode(encode({s[:9]!r}...)) gave {str(text)[:30]!r} instead of {s[:30]!r}: the round trip "
                       "must give the text back, one character (itos) for every id")
    return f"encode and decode agree with the package's CharTokenizer on {len(SAMPLES)} lines, round trip exact"


def untrained_val_loss() -> float:
    """Validation loss of `nn.Embedding(65, 65)` seeded with SEED, before any training (the global
    random state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = nn.Embedding(_tokenizer().vocab_size, _tokenizer().vocab_size)
    val = _val_data()
    with torch.no_grad():
        return F.cross_entropy(model(val[:-1]), val[1:]).item()


@exercise("01")
def untrained_loss(guess):
    """Predict, then measure: the learner's guess of the untrained bigram model's validation loss, compared
    with the measured one. Passes from uniform guessing's ln 65 - 0.3 up to the measured loss + 0.3."""
    guess = number(guess, "your guess (a loss in nats)")
    measured, uniform = untrained_val_loss(), math.log(_tokenizer().vocab_size)
    said = f"you guessed {guess:.2f}, measured {measured:.2f}" if abs(guess) < 1e4 else \
        f"you guessed {guess:.3g}, measured {measured:.2f}"
    if guess < 0:
        raise Hint(f"{said}: a loss is -log(probability), never negative: a probability is at most 1, so its "
                   f"log is at most 0; for 1 in 65 it is -ln(1/65) = +{uniform:.2f}")
    if 0 < guess <= 1:
        raise Hint(f"{said}: a loss is -log(probability), not a probability; for 1 in 65 it is -ln(1/65)")
    if abs(guess - math.exp(measured)) < abs(guess - measured) and guess > 20:
        raise Hint(f"{said}: {guess:.0f} is close to the perplexity e^loss; the loss is its natural log")
    off = guess - measured
    if guess < uniform - 0.3:
        raise Hint(f"{said} ({off:+.2f}): an untrained model knows nothing, so it does no better than spreading "
                   f"its bets evenly over all 65 characters, -ln(1/65) = {uniform:.2f}")
    if guess > measured + 0.3:
        raise Hint(f"{said} ({off:+.3g} nats): random logits make it worse than uniform guessing "
                   f"(ln 65 = {uniform:.2f}), but not by that much")
    return (f"{said} ({off:+.2f}); uniform guessing would score ln 65 = {uniform:.2f}: random logits of spread 1 "
            f"are not uniform, so the untrained model is {measured - uniform:.2f} worse")


def _setup(lr=0.03):
    """The step's fixed inputs: a seeded Embedding(65, 65), its AdamW and one batch of 4 x 8 ids."""
    g = torch.Generator().manual_seed(SEED)
    V = _tokenizer().vocab_size
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = nn.Embedding(V, V)
    xb = torch.randint(V, (4, 9), generator=g)
    xb, yb = xb[:, :-1], xb[:, 1:]  # yb not contiguous, as get_batch's
    return model, torch.optim.AdamW(model.parameters(), lr=lr), xb, yb


def _reference(steps, zero_grad=True, backward=True, step=True):
    """Losses and final weights of `steps` reference steps (or a typical mistake: a part left out)."""
    model, opt, xb, yb = _setup()
    V = model.num_embeddings
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(xb).view(-1, V), yb.reshape(-1))
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        if backward:
            loss.backward()
        if step:
            opt.step()
        losses.append(loss.item())
    return losses, model.weight.detach().clone()


@exercise("01")
def training_step(training_step):
    """`training_step(model, optimizer, xb, yb) -> loss`: one step of the loop (forward, cross-entropy,
    zero_grad, backward, AdamW step), run 3 times on one fixed batch against the reference step."""
    steps = 3
    model, opt, xb, yb = _setup()
    stepped_without_grad = []  # one entry per optimizer.step() that found no gradient on the weights
    step = opt.step

    def watched_step(*args, **kwargs):
        stepped_without_grad.append(model.weight.grad is None or not model.weight.grad.any())
        return step(*args, **kwargs)

    opt.step = watched_step
    losses = []
    for _ in range(steps):
        try:
            out = call(training_step, model, opt, xb, yb)
        except Hint as hint:
            said = str(hint)
            if "view size is not compatible" in said:
                raise Hint(".view(-1) fails on xb or yb: get_batch's windows are slices, not contiguous in memory; "
                           "use .reshape(-1)") from None
            if "Expected target size" in said:
                raise Hint("F.cross_entropy wants 2-D logits: view the logits (B, T, vocab_size) as "
                           "(B*T, vocab_size) and yb as (B*T,)") from None
            if "does not require grad" in said:
                raise Hint("the loss has no gradient to follow: compute the forward outside torch.no_grad(), "
                           "and call backward on the loss tensor (not on loss.item())") from None
            if "'float' object has no attribute 'backward'" in said:
                raise Hint("loss.item() is a plain number without a gradient: call loss.backward() on the tensor, "
                           "and return loss.item() (or the tensor) afterwards") from None
            raise
        try:
            losses.append(float(out.detach() if isinstance(out, torch.Tensor) else out))
        except (TypeError, ValueError, RuntimeError):
            raise Hint(f"training_step returned {type(out).__name__}: return the loss (a number or a 1-element "
                       "tensor)") from None
    ref_losses, ref_weight = _reference(steps)
    if abs(losses[0] - ref_losses[0]) > 1e-4:
        if abs(losses[0] - ref_losses[1]) < 1e-4:
            raise Hint(f"the first loss is {losses[0]:.4f}, the reference's after one step, expected "
                       f"{ref_losses[0]:.4f}: take one step per call and return the loss of its forward, "
                       "computed before optimizer.step()")
        if abs(losses[0] - ref_losses[0] * xb.numel()) < 1e-2:
            raise Hint(f"the first loss is {losses[0]:.4f} = {xb.numel()} x {ref_losses[0]:.4f}: the loss is summed "
                       "over the B*T positions; F.cross_entropy's default averages them (leave out reduction='sum')")
        if abs(losses[0] - math.log(model.num_embeddings)) < 1e-3:
            raise Hint(f"the first loss is {losses[0]:.4f} = ln 65, expected {ref_losses[0]:.4f}: "
                       "compute the loss from model(xb), the model's own logits")
        raise Hint(f"the first loss is {losses[0]:.4f}, expected {ref_losses[0]:.4f}: F.cross_entropy of the logits "
                   "viewed as (B*T, vocab_size) against yb as (B*T,); cross_entropy applies the softmax itself")
    weight = model.weight.detach()
    if torch.equal(weight, _setup()[0].weight.detach()):
        if not stepped_without_grad:
            raise Hint("the weights never changed: call optimizer.step() after loss.backward()")
        raise Hint("the weights never changed: when optimizer.step() ran there was no gradient; the order is "
                   "zero_grad, loss.backward(), then optimizer.step() (zero_grad between backward and step "
                   "erases the gradient)")
    if not torch.allclose(weight, ref_weight, atol=1e-6):
        if torch.allclose(weight, _reference(steps, zero_grad=False)[1], atol=1e-6):
            raise Hint("the gradients pile up from step to step: call optimizer.zero_grad() before loss.backward()")
        raise Hint(f"after {steps} steps the weights differ from the reference step's by "
                   f"{(weight - ref_weight).abs().max():.2g}: zero_grad, backward, then step, once per call")
    if not all(abs(a - b) < 1e-4 for a, b in zip(losses, ref_losses)):
        raise Hint(f"the losses {[round(x, 4) for x in losses]} differ from {[round(x, 4) for x in ref_losses]}: "
                   "return the loss computed before optimizer.step()")
    return f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {steps} steps on one batch, the reference step's exactly"
