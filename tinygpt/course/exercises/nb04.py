"""Notebook 04's exercises: the learning-rate schedule, one training step, the steps a time budget buys."""

from __future__ import annotations

import math

import torch

from ...config import PRESETS
from ...data import get_batch
from ...model import GPT
from ...schedule import get_lr as reference_lr
from . import Hint, call, exercise, number

LAPTOP = PRESETS["laptop"]


@exercise("04")
def loss_at_start(guess):
    """The loss of the untrained laptop-preset GPT (seed 1337) on 8 fixed batches of the text, against `guess`."""
    from ...data import load_shakespeare
    from ...tokenizer import CharTokenizer

    guess = number(guess, "the loss")
    cfg = LAPTOP
    text = load_shakespeare(progress=False)
    data = torch.tensor(CharTokenizer.from_text(text).encode(text), dtype=torch.long)
    with torch.random.fork_rng():  # the learner's random state is left as it was
        torch.manual_seed(1337)
        model = GPT(cfg.model).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        losses = [model(*get_batch(data, cfg.model.block_size, cfg.batch_size, generator=g))[1].item()
                  for _ in range(8)]
    measured = sum(losses) / len(losses)
    said = (f"measured {measured:.3f} (ln 65 = {math.log(65):.3f}); "
            f"your guess {guess:.2f} is {abs(guess - measured):.2f} off")
    if guess > 20 and abs(guess - 65) < 15:
        raise Hint(f"{said}: {guess:g} is the perplexity e^loss of uniform guessing; the loss is its natural log")
    if guess < 0:
        raise Hint(f"{said}: a loss is -log(probability), never negative; probability 1/65 gives -ln(1/65) = ln 65")
    if 0 < guess < 0.1:
        raise Hint(f"{said}: that is a probability; the loss is -log of it: -ln(1/65) = ln 65")
    if measured + 0.25 < guess < 6:
        raise Hint(f"{said}: notebook 01's bigram started at 4.72 because its logits were random with spread 1; the "
                   "GPT starts its weights small (std 0.02), so its logits are near 0 and its probabilities near "
                   "1/65 each: -ln(1/65) = ln 65")
    if abs(guess - measured) > 0.25:
        raise Hint(f"{said}: an untrained model spreads its probability about evenly over the 65 characters, "
                   "and the loss of probability 1/65 is -ln(1/65) = ln 65")
    return said


def _lr_at(fn, step):
    value = call(fn, step)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Hint(f"get_lr({step}) returned {type(value).__name__}, not a number") from None


@exercise("04")
def get_lr(fn):
    """`fn(step)`: the laptop preset's learning rate (warm-up to lr, cosine decay to min_lr at max_steps),
    compared with tinygpt.schedule.get_lr at every step of the warm-up and at many steps of the decay."""
    cfg = LAPTOP
    w, n = cfg.warmup_steps, cfg.max_steps
    steps = list(range(w + 2)) + list(range(w + 2, n, 97)) + [n - 1, n, n + 50]
    mine = {s: _lr_at(fn, s) for s in steps}
    ref = {s: reference_lr(s, cfg) for s in steps}
    wrong = [s for s in steps if not math.isclose(mine[s], ref[s], rel_tol=1e-6, abs_tol=1e-12)]
    if not wrong:
        return f"matches tinygpt's schedule at all {len(steps)} steps checked (peak {cfg.lr:g} at step {w})"
    s = wrong[0]
    if math.isclose(mine[0], cfg.lr, rel_tol=1e-3):
        raise Hint(f"step 0 gives the peak lr {mine[0]:.2e}: there is no warm-up (rise linearly to lr over "
                   f"the first {w} steps)")
    if mine[0] == 0:
        raise Hint("step 0 gives lr 0, a wasted step (the write-up's off-by-one): the warm-up is "
                   "lr * (step + 1) / (warmup_steps + 1)")
    if all(math.isclose(mine[t], ref[t], rel_tol=1e-6) for t in steps if t > w) and s <= w:
        raise Hint(f"the warm-up is off at step {s}: {mine[s]:.4e} instead of {ref[s]:.4e}; tinygpt's "
                   "warm-up is lr * (step + 1) / (warmup_steps + 1), reaching the peak at step warmup_steps")
    if abs(mine[n]) < 1e-9 or abs(mine[n - 1]) < 0.5 * cfg.min_lr:
        raise Hint(f"the decay ends at {mine[n]:.2e}, not at min_lr = {cfg.min_lr:g}: decay from lr down to "
                   "min_lr (min_lr + coeff * (lr - min_lr))")
    quarter = min((t for t in steps if t > w), key=lambda t: abs(t - (w + (n - w) // 4)))
    linear_q = cfg.lr - (quarter - w) / (n - w) * (cfg.lr - cfg.min_lr)
    if math.isclose(mine[quarter], linear_q, rel_tol=1e-3) and not math.isclose(ref[quarter], linear_q, rel_tol=1e-3):
        raise Hint(f"at step {quarter} you give {mine[quarter]:.3e}, a straight line from lr to min_lr; the decay "
                   f"is half a cosine: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr) = {ref[quarter]:.3e}")
    if s >= n:
        raise Hint(f"after the last step (step {s}) you give {mine[s]:.6e}: it should stay at min_lr = "
                   f"{cfg.min_lr:.6e} (past max_steps the cosine turns back up: return min_lr there)")
    if max(mine.values()) > cfg.lr * (1 + 1e-6):
        top = max(mine, key=mine.get)
        raise Hint(f"at step {top} you give {mine[top]:.4e}, above the peak lr = {cfg.lr:g}: the cosine factor "
                   "0.5 * (1 + cos(pi * progress)) goes from 1 down to 0")
    raise Hint(f"at step {s} you give {mine[s]:.4e}, tinygpt's schedule gives {ref[s]:.4e}: after the warm-up, "
               "min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (lr - min_lr), with progress = "
               "(step - warmup_steps) / (max_steps - warmup_steps)")


def _setup(seed=0, opt_lr=1e-3):
    cfg = PRESETS["smoke"]
    torch.manual_seed(seed)
    model = GPT(cfg.model)
    optimizer = model.configure_optimizer(opt_lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    return cfg, model, optimizer


def _batches(cfg, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(cfg.model.vocab_size, (5_000,), generator=g)
    return [get_batch(data, cfg.model.block_size, cfg.batch_size, generator=g) for _ in range(n)]


def _reference_steps(batches, lrs, grad_clip, *, clip=True, zero=True, set_lr=True):
    from ...train import train_step as package_step

    cfg, model, optimizer = _setup()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = []
    for (x, y), lr in zip(batches, lrs):
        if zero and set_lr and clip:
            losses.append(package_step(model, optimizer, scaler, x, y, lr=lr, grad_clip=grad_clip))
            continue
        # a typical mistake, replayed by hand to name it when a learner's weights match it
        if set_lr:
            for group in optimizer.param_groups:
                group["lr"] = lr
        _, loss = model(x, y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if zero:
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return model, losses


def _same(a, b, tol=1e-6):
    pairs = zip(a.state_dict().values(), b.state_dict().values())
    return all(torch.allclose(p, q, rtol=tol, atol=tol) for p, q in pairs)


@exercise("04")
def train_step(fn):
    """`fn(model, optimizer, x, y, lr, grad_clip)`: one step (lr into every param group, forward, loss,
    backward, clip, optimizer step, zero the gradients), returning the loss as a float. Three steps on a
    seeded small model must give tinygpt.train.train_step's weights and losses."""
    batches, lrs, clip = _batches(PRESETS["smoke"], 3), [3e-3, 2e-3, 1e-3], 0.1  # clip: below the norm at init
    _, model, optimizer = _setup()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    stepped_without_grad = []  # one entry per optimizer.step() that found no gradient at all
    step = optimizer.step

    def watched_step(*args, **kwargs):
        stepped_without_grad.append(all(p.grad is None or not p.grad.any() for p in model.parameters()))
        return step(*args, **kwargs)

    optimizer.step = watched_step
    losses = []
    for (x, y), lr in zip(batches, lrs):
        out = call(fn, model, optimizer, x, y, lr, clip)
        try:
            losses.append(float(out.detach() if isinstance(out, torch.Tensor) else out))
        except (TypeError, ValueError, RuntimeError):
            raise Hint(f"your train_step returned {type(out).__name__}: return the loss as a float (loss.item())") \
                from None
        missed = [i for i, group in enumerate(optimizer.param_groups) if group["lr"] != lr]
        if missed and len(missed) < len(optimizer.param_groups):
            raise Hint(f"param group {missed[0]} still has lr {optimizer.param_groups[missed[0]]['lr']:g}, not {lr:g}: "
                       f"set group['lr'] = lr in every group of optimizer.param_groups (there are "
                       f"{len(optimizer.param_groups)}: with and without weight decay)")
    ref_model, ref_losses = _reference_steps(batches, lrs, clip)
    if _same(model, ref_model):
        if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(losses, ref_losses)):
            raise Hint(f"the weights are right but the losses returned, {losses[0]:.4f}..., are not the batches' "
                       f"losses {ref_losses[0]:.4f}...: return the loss computed before the update")
        return "3 steps equal tinygpt's train_step: the same weights and losses"
    if all(torch.equal(v, start[k]) for k, v in model.state_dict().items()):
        if stepped_without_grad and all(stepped_without_grad):
            raise Hint("the weights did not move: when optimizer.step() ran there was no gradient; the order is "
                       "loss.backward(), clip, optimizer.step(), then zero_grad (zero_grad between backward and "
                       "step erases the gradient)")
        raise Hint("the weights did not move: call optimizer.step() after loss.backward()")
    if _same(model, _reference_steps(batches, lrs, clip, zero=False)[0]):
        raise Hint("gradients accumulate from one step to the next: call optimizer.zero_grad() every step "
                   "(PyTorch adds new gradients to the old ones)")
    if _same(model, _reference_steps(batches, lrs, clip, clip=False)[0]):
        raise Hint("your steps equal steps without clipping: call clip_grad_norm_(model.parameters(), grad_clip) "
                   "after loss.backward() and before optimizer.step() (before backward there is no gradient to clip; "
                   "after the step it is too late)")
    if _same(model, _reference_steps(batches, lrs, clip, set_lr=False)[0]):
        raise Hint("the optimizer stepped at the lr it was built with: set group['lr'] = lr for every group in "
                   "optimizer.param_groups before optimizer.step()")
    raise Hint("after 3 steps your weights differ from tinygpt's train_step: model(x, y) gives (logits, loss); "
               "then loss.backward(), clip_grad_norm_(model.parameters(), grad_clip), step, zero_grad")
