"""Notebook 04's checks: references pass, scaffolds are not attempted, typical mistakes get their hint."""

import math

import pytest
import torch

from tinygpt.config import PRESETS
from tinygpt.course.exercises import nb04 as check
from tinygpt.schedule import get_lr as reference_lr

LAPTOP = PRESETS["laptop"]
W, N, LR, MIN = LAPTOP.warmup_steps, LAPTOP.max_steps, LAPTOP.lr, LAPTOP.min_lr


def scaffold(*args):
    ...


def cosine(step, lo=MIN):
    progress = min(1.0, (step - W) / (N - W))
    return lo + 0.5 * (1 + math.cos(math.pi * progress)) * (LR - lo)


def with_warmup(warmup, decay=cosine):
    return lambda step: warmup(step) if step < W else decay(step)


def test_get_lr_reference_passes():
    assert check.get_lr(lambda step: reference_lr(step, LAPTOP)).passed is True


def test_get_lr_scaffold_is_not_attempted():
    assert check.get_lr(scaffold).passed is None


@pytest.mark.parametrize("fn, words", [
    (cosine, "there is no warm-up"),
    (with_warmup(lambda s: LR * s / W), "step 0 gives lr 0"),
    (with_warmup(lambda s: LR * (s + 1) / W), "warm-up is off at step"),
    (with_warmup(lambda s: LR * (s + 1) / (W + 1), lambda s: cosine(s, lo=0.0)), "not at min_lr"),
    (with_warmup(lambda s: LR * (s + 1) / (W + 1), lambda s: LR - min(1, (s - W) / (N - W)) * (LR - MIN)),
     "straight line"),
])
def test_get_lr_typical_mistakes_get_their_hint(fn, words):
    result = check.get_lr(fn)
    assert result.passed is False and words in result.message


def good_step(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def no_zero_grad(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def clip_after_step(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def no_clip(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def lr_never_set(model, optimizer, x, y, lr, grad_clip):
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def test_train_step_reference_passes():
    assert check.train_step(good_step).passed is True


def test_train_step_scaffold_is_not_attempted():
    assert check.train_step(scaffold).passed is None


@pytest.mark.slow
@pytest.mark.parametrize("fn, words", [
    (no_zero_grad, "gradients accumulate"),
    (clip_after_step, "without clipping"),
    (no_clip, "without clipping"),
    (lr_never_set, "the lr it was built with"),
])
def test_train_step_typical_mistakes_get_their_hint(fn, words):
    result = check.train_step(fn)
    assert result.passed is False and words in result.message


@pytest.mark.slow
def test_loss_at_start_near_ln_65_passes_and_far_is_refused():
    assert check.loss_at_start(4.17).passed is True
    far = check.loss_at_start(1.0)
    assert far.passed is False and "ln 65" in far.message


def test_loss_at_start_left_as_ellipsis_is_not_attempted():
    assert check.loss_at_start(...).passed is None


# --- what a learner-adversary found (issue 25)

def test_loss_at_start_nan_is_refused_not_ticked():
    r = check.loss_at_start(float("nan"))
    assert r.passed is False and "finite number" in r.message


def test_loss_at_start_leaves_the_learners_random_state_alone():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    check.loss_at_start(4.2)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("guess, words", [
    (4.72, "notebook 01's bigram started at 4.72"),
    (65, "perplexity"),
    (1 / 65, "that is a probability"),
    (-4.17, "never negative"),
])
def test_loss_at_start_typical_guesses_get_their_reason(guess, words):
    r = check.loss_at_start(guess)
    assert r.passed is False and words in r.message


def test_get_lr_past_max_steps_shows_digits_that_differ():
    r = check.get_lr(lambda s: LR * (s + 1) / (W + 1) if s < W else
                     MIN + 0.5 * (1 + math.cos(math.pi * (s - W) / (N - W))) * (LR - MIN))
    assert r.passed is False and "5.002393e-04" in r.message and "5.000000e-04" in r.message


def test_get_lr_cosine_factor_without_half_is_named():
    r = check.get_lr(with_warmup(lambda s: LR * (s + 1) / (W + 1),
                                 lambda s: MIN + (1 + math.cos(math.pi * min(1, (s - W) / (N - W)))) * (LR - MIN)))
    assert r.passed is False and "above the peak lr" in r.message


def test_get_lr_unnamed_mistake_gets_the_formula():
    r = check.get_lr(with_warmup(lambda s: LR * (s + 1) / (W + 1),
                                 lambda s: MIN + 0.5 * (1 + math.cos(min(1, (s - W) / (N - W)))) * (LR - MIN)))
    assert r.passed is False and "progress = (step - warmup_steps) / (max_steps - warmup_steps)" in r.message


def lr_in_first_group_only(model, optimizer, x, y, lr, grad_clip):
    optimizer.param_groups[0]["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def zero_grad_before_step(model, optimizer, x, y, lr, grad_clip):
    for group in optimizer.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    return loss.item()


def test_train_step_lr_set_in_one_group_only_is_named():
    r = check.train_step(lr_in_first_group_only)
    assert r.passed is False and "param group 1 still has lr" in r.message


def test_train_step_zero_grad_between_backward_and_step_is_named():
    r = check.train_step(zero_grad_before_step)
    assert r.passed is False and "erases the gradient" in r.message


def test_train_step_returning_the_loss_tensor_passes_without_a_warning(recwarn):
    def tensor_loss(model, optimizer, x, y, lr, grad_clip):
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    assert check.train_step(tensor_loss).passed is True
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]
