"""Notebook 03's checks: the reference solution passes, the scaffold is not attempted yet, and typical wrong
answers are refused with a hint that names the mistake."""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinygpt.course.exercises import nb03 as check

matplotlib.use("Agg")


def make_mlp(act=F.gelu, hidden=4, project=True, gelu_last=False):
    class MyMLP(nn.Module):
        def __init__(self, n_embd):
            super().__init__()
            self.c_fc = nn.Linear(n_embd, hidden * n_embd)
            self.c_proj = nn.Linear(hidden * n_embd, n_embd)

        def forward(self, x):
            h = self.c_fc(x)
            if gelu_last:
                return act(self.c_proj(h))
            return self.c_proj(act(h)) if project else act(h)

    return MyMLP


class ScaffoldMLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = ...
        self.c_proj = ...

    def forward(self, x):
        ...


def test_mlp_solution_passes():
    assert check.mlp(make_mlp()).passed is True


def test_mlp_scaffold_is_not_attempted():
    assert check.mlp(ScaffoldMLP).passed is None


@pytest.mark.parametrize("wrong, words", [
    (dict(hidden=1), "expected 48 -> 192 (weight (192, 48))"),
    (dict(act=F.relu), "ReLU instead of GELU"),
    (dict(project=False), "output has shape (2, 5, 192), expected (2, 5, 48)"),
    (dict(act=lambda h: h), "no non-linearity"),
    (dict(gelu_last=True), "GELU is applied after c_proj"),
])
def test_mlp_typical_mistakes_get_their_hint(wrong, words):
    result = check.mlp(make_mlp(**wrong))
    assert result.passed is False and words in result.message


def block_solution(block, x):
    x = x + block.attn(block.ln_1(x))
    return x + block.mlp(block.ln_2(x))


def post_norm(block, x):
    x = block.ln_1(x + block.attn(x))
    return block.ln_2(x + block.mlp(x))


def test_block_forward_solution_passes():
    assert check.block_forward(block_solution).passed is True


def test_block_forward_scaffold_is_not_attempted():
    def block_forward(block, x):
        ...

    assert check.block_forward(block_forward).passed is None


@pytest.mark.parametrize("wrong, words", [
    (post_norm, "post-norm"),
    (lambda b, x: b.mlp(b.ln_2(b.attn(b.ln_1(x)))), "no residual connections"),
    (lambda b, x: b.mlp(b.ln_2(x + b.attn(b.ln_1(x)))), "the MLP's residual is missing"),
    (lambda b, x: x + b.attn(b.ln_1(x)) + b.mlp(b.ln_2(x)), "the MLP reads the block's input"),
])
def test_block_forward_typical_mistakes_get_their_hint(wrong, words):
    result = check.block_forward(wrong)
    assert result.passed is False and words in result.message


def test_block_params_close_guess_passes_and_scaffold_is_not_attempted():
    assert check.block_params(12 * 384**2).passed is True
    assert check.block_params(...).passed is None


@pytest.mark.parametrize("guess, words", [
    (1_181_568, "the MLP alone"),
    (10_795_776, "the whole model"),
    (300_000, "Count the four matrices"),
    ("1.8M", "guess a number"),
])
def test_block_params_far_guesses_are_refused_with_what_was_left_out(guess, words):
    result = check.block_params(guess)
    assert result.passed is False and words in result.message


@pytest.mark.slow
def test_depth_one_depth_draws_but_is_not_attempted_two_compare():
    assert check.depth([1]).passed is None
    result = check.depth([1, 2])
    assert result.passed is True and "by n_layer: 1:" in result.message


def test_depth_too_deep_is_refused():
    result = check.depth([6, 100])
    assert result.passed is False and "from 1 to 48" in result.message


# What a learner who did not write the checks found by doing the exercises (issue 25).


class NumpyMLP(make_mlp()):
    def forward(self, x):
        return super().forward(x).detach().numpy()


class RenamedMLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.fc1 = nn.Linear(n_embd, 4 * n_embd)
        self.fc2 = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class NarrowProjMLP(make_mlp()):
    def __init__(self, n_embd):
        super().__init__(n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)


class NoReturnMLP(make_mlp()):
    def forward(self, x):
        y = self.c_proj(F.gelu(self.c_fc(x)))  # noqa: F841 (the learner's missing return)


class DropoutMLP(make_mlp()):
    def forward(self, x):
        return F.dropout(super().forward(x), 0.2)


def test_mlp_returning_numpy_is_a_hint_not_a_traceback():
    result = check.mlp(NumpyMLP)
    assert result.passed is False and "returned a ndarray" in result.message


def test_mlp_with_other_layer_names_is_told_to_rename_them_not_called_unattempted():
    result = check.mlp(RenamedMLP)
    assert result.passed is False and "no layer named c_fc" in result.message and "fc1, fc2" in result.message


def test_mlp_c_proj_of_the_wrong_size_names_c_projs_shapes():
    result = check.mlp(NarrowProjMLP)
    assert result.passed is False and "c_proj maps 48 -> 48" in result.message
    assert "expected 192 -> 48" in result.message


def test_mlp_forward_that_forgets_to_return_is_told_so():
    result = check.mlp(NoReturnMLP)
    assert result.passed is False and "`return` missing" in result.message


def test_mlp_with_dropout_always_on_is_told_its_output_is_random():
    result = check.mlp(DropoutMLP)
    assert result.passed is False and "different outputs" in result.message


def test_block_forward_calling_the_packages_block_is_refused():
    result = check.block_forward(lambda block, x: block(x))
    assert result.passed is False and "you called block(x)" in result.message


def test_block_forward_adding_in_place_is_refused_as_breaking_training():
    def in_place(block, x):
        x += block.attn(block.ln_1(x))
        x += block.mlp(block.ln_2(x))
        return x

    result = check.block_forward(in_place)
    assert result.passed is False and "in place" in result.message and "x = x + ..." in result.message


@pytest.mark.parametrize("wrong, words", [
    (lambda b, x: (lambda h: h + b.attn(b.ln_1(h)))(x + b.mlp(b.ln_2(x))), "the MLP runs before the attention"),
    (lambda b, x: (lambda h: h + b.mlp(h))(x + b.attn(x)), "no LayerNorm"),
    (lambda b, x: x + b.attn(b.ln_1(x)), "the MLP is missing"),
    (lambda b, x: (lambda h: h + b.mlp(b.ln_1(h)))(x + b.attn(b.ln_1(x))), "ln_1 is used twice"),
], ids=["mlp-first", "no-layernorm", "attn-only", "ln_1-twice"])
def test_block_forward_more_mistakes_get_their_own_hint(wrong, words):
    result = check.block_forward(wrong)
    assert result.passed is False and words in result.message


@pytest.mark.parametrize("guess", ["1774464", np.int64(1_774_464), torch.tensor(1_774_464)])
def test_block_params_right_guess_as_string_numpy_or_torch_passes(guess):
    assert check.block_params(guess).passed is True


@pytest.mark.parametrize("guess", [float("nan"), float("inf"), True])
def test_block_params_guess_that_is_not_a_finite_number_is_refused(guess):
    result = check.block_params(guess)
    assert result.passed is False and "guess a number" in result.message


def test_depth_with_one_depth_repeated_is_told_to_add_a_different_one():
    result = check.depth([1, 1])
    assert result.passed is False and "all the same" in result.message


@pytest.mark.slow
def test_depth_accepts_a_range_and_numpy_integers():
    assert check.depth(range(1, 3)).passed is True
    assert check.depth([np.int64(1), 2]).passed is True
