"""Notebook 03's checks: the reference solution passes, the scaffold is not attempted yet, and typical wrong
answers are refused with a hint that names the mistake."""

import matplotlib
import pytest
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
