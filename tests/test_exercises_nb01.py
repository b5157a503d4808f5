"""Notebook 01's checks: the reference solutions pass, the scaffolds are not attempted, and typical wrong
answers are refused with their hints."""

import math

import torch.nn.functional as F

from tinygpt.course.exercises import nb01 as check
from tinygpt.data import load_shakespeare

CHARS = sorted(set(load_shakespeare(progress=False)))
STOI = {ch: i for i, ch in enumerate(CHARS)}
ITOS = {i: ch for i, ch in enumerate(CHARS)}


def encode(s):
    return [STOI[c] for c in s]


def decode(ids):
    return "".join(ITOS[i] for i in ids)


def scaffold(*args):
    ...


def step(model, optimizer, xb, yb, zero_grad=True, backward=True, do_step=True, flat=True):
    vocab_size = model.num_embeddings
    logits = model(xb)
    loss = F.cross_entropy(logits.view(-1, vocab_size), yb.reshape(-1) if flat else yb.view(-1))
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    if backward:
        loss.backward()
    if do_step:
        optimizer.step()
    return loss


# --- encode_decode

def test_encode_decode_passes_the_reference():
    assert check.encode_decode(encode, decode).passed is True


def test_encode_decode_scaffold_is_not_attempted():
    assert check.encode_decode(scaffold, scaffold).passed is None


def test_encode_decode_off_by_one_ids_are_named():
    r = check.encode_decode(lambda s: [STOI[c] + 1 for c in s], decode)
    assert r.passed is False and "off by one" in r.message


def test_encode_decode_unsorted_vocabulary_is_refused():
    order = list(dict.fromkeys(load_shakespeare(progress=False)))  # first-seen order, not sorted
    r = check.encode_decode(lambda s: [order.index(c) for c in s], decode)
    assert r.passed is False and "sorted characters" in r.message


def test_decode_returning_a_list_or_joining_with_spaces_is_named():
    r = check.encode_decode(encode, lambda ids: [ITOS[i] for i in ids])
    assert r.passed is False and "''.join" in r.message
    r = check.encode_decode(encode, lambda ids: " ".join(ITOS[i] for i in ids))
    assert r.passed is False and "not with a space" in r.message


def test_encode_returning_a_string_is_named():
    r = check.encode_decode(lambda s: s, decode)
    assert r.passed is False and "list of integers" in r.message


# --- untrained_loss

def test_untrained_loss_a_close_guess_passes_with_the_measured_number():
    measured = check.untrained_val_loss()
    r = check.untrained_loss(math.log(65))
    assert r.passed is True and f"{measured:.2f}" in r.message and "4.17" in r.message


def test_untrained_loss_scaffold_is_not_attempted():
    assert check.untrained_loss(...).passed is None


def test_untrained_loss_a_probability_or_the_perplexity_is_named():
    r = check.untrained_loss(1 / 65)
    assert r.passed is False and "not a probability" in r.message
    r = check.untrained_loss(65)
    assert r.passed is False and "perplexity" in r.message


def test_untrained_loss_a_far_guess_is_refused_with_the_uniform_hint():
    r = check.untrained_loss(2.0)
    assert r.passed is False and "-ln(1/65)" in r.message
    r = check.untrained_loss(8.0)
    assert r.passed is False and "not by that much" in r.message


def test_untrained_loss_leaves_the_global_random_state_alone():
    import torch
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    check.untrained_val_loss()
    assert torch.equal(torch.rand(1), a)


# --- training_step

def test_training_step_passes_the_reference():
    r = check.training_step(step)
    assert r.passed is True and "exactly" in r.message


def test_training_step_scaffold_is_not_attempted():
    assert check.training_step(scaffold).passed is None


def test_training_step_missing_zero_grad_is_named():
    r = check.training_step(lambda *a: step(*a, zero_grad=False))
    assert r.passed is False and "zero_grad" in r.message and "pile up" in r.message


def test_training_step_missing_backward_or_step_is_named():
    r = check.training_step(lambda *a: step(*a, backward=False))
    assert r.passed is False and "loss.backward()" in r.message
    r = check.training_step(lambda *a: step(*a, do_step=False))
    assert r.passed is False and "optimizer.step()" in r.message


def test_training_step_yb_view_is_named():
    r = check.training_step(lambda *a: step(*a, flat=False))
    assert r.passed is False and "reshape" in r.message


def test_training_step_a_wrong_loss_is_named():
    def mse_step(model, optimizer, xb, yb):
        loss = F.mse_loss(model(xb), F.one_hot(yb, 65).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss
    r = check.training_step(mse_step)
    assert r.passed is False and "cross_entropy" in r.message


# --- what a learner-adversary found (issue 25)

def test_encode_decode_decode_that_prints_instead_of_returning_is_told_to_return():
    def decode_printing(ids):
        print("".join(ITOS[i] for i in ids))

    r = check.encode_decode(encode, decode_printing)
    assert r.passed is False and "returned None" in r.message


def test_encode_decode_decode_dropping_the_last_id_names_the_lengths():
    r = check.encode_decode(encode, lambda ids: decode(ids[:-1]))
    assert r.passed is False and "gave 31 characters for the text's 32" in r.message


def test_untrained_loss_nan_is_refused_not_ticked():
    r = check.untrained_loss(float("nan"))
    assert r.passed is False and "finite number" in r.message


def test_untrained_loss_a_bool_is_not_a_guess():
    assert check.untrained_loss(True).passed is False


def test_untrained_loss_negative_guess_is_told_a_loss_is_never_negative():
    r = check.untrained_loss(-math.log(65))
    assert r.passed is False and "never negative" in r.message


def test_training_step_view_on_xb_is_not_blamed_on_yb():
    def view_x(model, optimizer, xb, yb):  # x and y swapped, xb.view(-1) fails first
        loss = F.cross_entropy(model(yb).view(-1, model.num_embeddings), xb.view(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    r = check.training_step(view_x)
    assert r.passed is False and r.message.startswith(".view(-1) fails on xb or yb")


def test_training_step_3d_logits_into_cross_entropy_get_the_reshape_hint():
    def three_d(model, optimizer, xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    r = check.training_step(three_d)
    assert r.passed is False and "(B*T, vocab_size)" in r.message and "raised" not in r.message


def test_training_step_zero_grad_between_backward_and_step_is_named():
    def zero_between(model, optimizer, xb, yb):
        loss = F.cross_entropy(model(xb).view(-1, model.num_embeddings), yb.reshape(-1))
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        return loss

    r = check.training_step(zero_between)
    assert r.passed is False and "no gradient" in r.message and "erases the gradient" in r.message


def test_training_step_returning_the_loss_after_the_step_is_named():
    def two_steps(model, optimizer, xb, yb):
        for _ in range(2):
            loss = step(model, optimizer, xb, yb)
        return loss

    r = check.training_step(two_steps)
    assert r.passed is False and "one step per call" in r.message


def test_training_step_summed_loss_is_named():
    def summed(model, optimizer, xb, yb):
        loss = F.cross_entropy(model(xb).view(-1, model.num_embeddings), yb.reshape(-1), reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    r = check.training_step(summed)
    assert r.passed is False and "summed" in r.message


def test_training_step_backward_on_item_gets_a_hint_not_an_attribute_error():
    def item_backward(model, optimizer, xb, yb):
        loss = F.cross_entropy(model(xb).view(-1, model.num_embeddings), yb.reshape(-1)).item()
        loss.backward()

    r = check.training_step(item_backward)
    assert r.passed is False and "loss.item() is a plain number" in r.message


def test_training_step_without_return_is_told_to_return():
    def no_return(model, optimizer, xb, yb):
        step(model, optimizer, xb, yb)

    r = check.training_step(no_return)
    assert r.passed is False and "returned None" in r.message
