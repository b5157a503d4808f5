"""Notebook 02's checks: the reference answers pass, the scaffolds are not attempted, and the typical
wrong answers are refused with the hint that names the mistake."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinygpt.course.exercises import nb02 as check


def mask_ref(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def head(scale=None, causal=True, diagonal=0, dim=-1, weights=False):
    """One head's forward, right by default, with one mistake when asked."""

    def forward(x, key, query, value):
        q, k, v = query(x), key(x), value(x)
        T = x.shape[1]
        s = q @ k.transpose(-2, -1) * (k.shape[-1] ** -0.5 if scale is None else scale)
        if causal:
            s = s.masked_fill(torch.tril(torch.ones(T, T), diagonal) == 0, float("-inf"))
        w = F.softmax(s, dim=dim)
        return w if weights else w @ v

    return forward


def scaffold(*args):
    ...


def test_the_reference_answers_pass():
    assert check.causal_mask(mask_ref).passed
    assert check.causal_mask(lambda T: torch.tril(torch.ones(T, T))).passed  # 1 = may look
    assert check.causal_mask(lambda T: torch.zeros(T, T).masked_fill(~mask_ref(T), float("-inf"))).passed
    assert check.head_forward(head()).passed
    assert check.score_std(8).passed


def test_the_scaffolds_are_not_attempted_yet():
    assert check.causal_mask(scaffold).passed is None
    assert check.head_forward(scaffold).passed is None
    assert check.score_std(...).passed is None


def test_a_mask_with_its_diagonal_masked_is_refused():
    r = check.causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1))
    assert r.passed is False and "the diagonal is masked" in r.message


def test_a_mask_with_the_triangles_swapped_is_refused():
    r = check.causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).triu())
    assert r.passed is False and "upper and lower triangle swapped" in r.message
    r = check.causal_mask(lambda T: ~mask_ref(T))
    assert r.passed is False and "inverted" in r.message


def test_a_mask_of_the_wrong_shape_names_both_shapes():
    r = check.causal_mask(lambda T: torch.ones(T, dtype=torch.bool))
    assert r.passed is False and "shape (8,), expected (8, 8)" in r.message


def test_unscaled_scores_are_refused_with_the_factor():
    r = check.head_forward(head(scale=1.0))
    assert r.passed is False and "not divided at all" in r.message and "1/√16" in r.message
    r = check.head_forward(head(scale=1 / 16))
    assert r.passed is False and "divided by head_size = 16" in r.message


def test_an_unmasked_head_is_refused_as_seeing_the_future():
    r = check.head_forward(head(causal=False))
    assert r.passed is False and "future positions not masked" in r.message


def test_softmax_over_the_wrong_dim_is_refused():
    r = check.head_forward(head(dim=-2))
    assert r.passed is False and "columns sum to 1, not their rows" in r.message


def test_a_head_of_the_wrong_shape_names_both_shapes():
    r = check.head_forward(lambda x, key, query, value: x)
    assert r.passed is False and "got (2, 8, 32), expected (B, T, head_size) = (2, 8, 16)" in r.message
    r = check.head_forward(head(weights=True))
    assert r.passed is False and "you returned the weights" in r.message


def test_a_masked_diagonal_in_the_head_is_named():
    r = check.head_forward(head(diagonal=-1))
    assert r.passed is False and "NaN" in r.message and "diagonal" in r.message


def test_a_guess_far_off_is_refused_and_the_variance_is_told_apart():
    r = check.score_std(1)
    assert r.passed is False and "variance is 64" in r.message
    r = check.score_std(64)
    assert r.passed is False and "64 is the variance" in r.message


def test_the_check_leaves_the_learners_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check.head_forward(head())
    assert torch.equal(torch.rand(3), expected)


# What a learner who did not write the checks found by doing the exercises (issue 25).


def test_a_mask_function_that_forgets_to_return_is_told_so_not_called_unattempted():
    def causal_mask(T):
        m = torch.tril(torch.ones(T, T, dtype=torch.bool))  # noqa: F841 (the learner's missing return)

    r = check.causal_mask(causal_mask)
    assert r.passed is False and "`return` missing" in r.message


def test_a_float_mask_hiding_with_a_large_negative_number_passes():
    assert check.causal_mask(lambda T: torch.zeros(T, T).masked_fill(~mask_ref(T), -1e9)).passed is True
    big = torch.finfo(torch.float32).min
    assert check.causal_mask(lambda T: torch.zeros(T, T).masked_fill(~mask_ref(T), big)).passed is True


def test_averaging_weights_instead_of_a_mask_are_named():
    r = check.causal_mask(lambda T: mask_ref(T).float() / mask_ref(T).float().sum(1, keepdim=True))
    assert r.passed is False and "averaging weights" in r.message


@pytest.mark.parametrize("guess", ["8", np.float64(8.0), np.int64(8), torch.tensor(8.0)])
def test_a_right_guess_written_as_a_string_or_numpy_or_torch_number_passes(guess):
    assert check.score_std(guess).passed is True


def test_a_negative_standard_deviation_is_refused_as_never_negative():
    r = check.score_std(-8)
    assert r.passed is False and "never negative" in r.message


@pytest.mark.parametrize("guess", [float("nan"), float("inf"), True, "eight", [8]])
def test_a_guess_that_is_not_a_finite_number_is_refused_in_words(guess):
    r = check.score_std(guess)
    assert r.passed is False and ("as a number" in r.message or "finite number" in r.message)


def test_a_head_using_the_notebooks_8_by_8_tril_is_refused_at_another_length():
    tril8 = torch.tril(torch.ones(8, 8))

    def forward(x, key, query, value):
        q, k, v = query(x), key(x), value(x)
        s = (q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5).masked_fill(tril8 == 0, float("-inf"))
        return F.softmax(s, dim=-1) @ v

    r = check.head_forward(forward)
    assert r.passed is False and "not for x (3, 5, 24)" in r.message and "x.shape[1]" in r.message


def test_a_head_with_head_size_16_written_in_is_refused_at_another_head_size():
    r = check.head_forward(head(scale=16 ** -0.5))
    assert r.passed is False and "head_size 8" in r.message


def test_a_head_with_dropout_is_told_its_output_is_random_not_unmasked():
    def forward(x, key, query, value):
        return F.dropout(head()(x, key, query, value), 0.5)

    r = check.head_forward(forward)
    assert r.passed is False and "different outputs" in r.message and "not masked" not in r.message


def test_softmax_over_the_batch_dim_is_named_among_the_causes_of_nan():
    r = check.head_forward(head(dim=0))
    assert r.passed is False and "NaN" in r.message and "wrong dim" in r.message


@pytest.mark.parametrize("forward", [
    lambda x, key, query, value: F.scaled_dot_product_attention(query(x), key(x), value(x), is_causal=True),
    lambda x, key, query, value: torch.einsum(
        "bts,bsd->btd",
        (torch.einsum("btd,bsd->bts", query(x), key(x)) / key(x).shape[-1] ** 0.5
         + torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)).softmax(-1),
        value(x)),
    head(scale=None),
], ids=["sdpa", "einsum-additive-mask", "masked_fill"])
def test_a_head_written_in_another_legitimate_style_passes(forward):
    assert check.head_forward(forward).passed is True
