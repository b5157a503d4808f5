"""Notebook 05's checks: the reference solutions pass, the scaffolds are not attempted, and the typical
wrong answers are refused with their hints."""

import math

import pytest
import torch

from tinygpt.course.exercises import nb05 as check

# --- temperature and top-k ------------------------------------------------------------------------------

def sampling_probs(logits, temperature, top_k):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(), logits.numel()).float()
    logits = logits / temperature
    kth = logits.topk(top_k).values[-1]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, -1)


def sampling_scaffold(logits, temperature, top_k):
    ...


def divided_after_softmax(logits, temperature, top_k):
    return torch.softmax(logits, -1) / temperature


def not_renormalised(logits, temperature, top_k):
    p = torch.softmax(logits / temperature, -1)
    return torch.where(p >= p.topk(top_k).values[-1], p, 0.0)


def keeps_k_plus_one(logits, temperature, top_k):
    logits = logits / temperature
    kth = logits.sort(descending=True).values[top_k] if top_k < logits.numel() else logits.min()
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)


def keeps_smallest_k(logits, temperature, top_k):
    logits = logits / temperature
    kth = logits.topk(top_k, largest=False).values[-1]
    return torch.softmax(logits.masked_fill(logits > kth, float("-inf")), -1)


def no_temperature_zero(logits, temperature, top_k):
    logits = logits / temperature
    kth = logits.topk(top_k).values[-1]
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)


def inverse_temperature(logits, temperature, top_k):
    logits = logits * (1 / temperature)  # a Python number: 1 / 0 raises
    kth = logits.topk(top_k).values[-1]
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)


def test_the_reference_solution_passes():
    result = check.sampling_probs(sampling_probs)
    assert result.passed is True, result


def test_the_scaffold_is_not_attempted():
    assert check.sampling_probs(sampling_scaffold).passed is None


@pytest.mark.parametrize("wrong, words", [
    (divided_after_softmax, "divided the probabilities by the temperature"),
    (not_renormalised, "renormalise"),
    (keeps_k_plus_one, "keep exactly k"),
    (keeps_smallest_k, "least* likely"),
    (no_temperature_zero, "temperature 0 is not handled"),
    (inverse_temperature, "temperature 0 divides by zero"),
])
def test_typical_wrong_answers_get_their_hint(wrong, words):
    result = check.sampling_probs(wrong)
    assert result.passed is False and words in result.message, result


def test_a_wrong_shape_names_both_shapes():
    result = check.sampling_probs(lambda logits, t, k: sampling_probs(logits, t, k)[None])
    assert result.passed is False and "(1, 65)" in result.message and "(65,)" in result.message


# --- predict: top-k = 5 ---------------------------------------------------------------------------------

PROBS = torch.softmax(torch.randn(100, 65, generator=torch.Generator().manual_seed(0)) * 3, -1)


def test_a_guess_is_answered_with_the_measurement():
    measured = PROBS.sort(-1, descending=True).values[:, 5:].sum(-1).mean().item()
    result = check.top5_removed(0.1, PROBS)
    assert result.passed is True and f"{measured:.3f}" in result.message and "100 positions" in result.message


def test_no_guess_yet_is_not_attempted():
    assert check.top5_removed(..., PROBS).passed is None


@pytest.mark.parametrize("guess, words", [(20, "write 0.2 for 20%"), (-0.1, "between 0 and 1"),
                                          ("10%", "as a number")])
def test_a_guess_that_is_not_a_share_gets_its_hint(guess, words):
    result = check.top5_removed(guess, PROBS)
    assert result.passed is False and words in result.message, result


# --- one KV-cache step ----------------------------------------------------------------------------------

def kv_step(q, k_new, v_new, k_cache, v_cache):
    k = torch.cat([k_cache, k_new], dim=1)
    v = torch.cat([v_cache, v_new], dim=1)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    return weights @ v


def kv_scaffold(q, k_new, v_new, k_cache, v_cache):
    ...


def not_appended(q, k_new, v_new, k_cache, v_cache):
    weights = torch.softmax(q @ k_cache.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    return weights @ v_cache


def scaled_by_head_size(q, k_new, v_new, k_cache, v_cache):
    k, v = torch.cat([k_cache, k_new], 1), torch.cat([v_cache, v_new], 1)
    return torch.softmax(q @ k.transpose(-2, -1) / q.size(-1), dim=-1) @ v


def masked_with_one_row_tril(q, k_new, v_new, k_cache, v_cache):
    k, v = torch.cat([k_cache, k_new], 1), torch.cat([v_cache, v_new], 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.ones(1, k.size(1), dtype=torch.bool).tril()  # the triangle of a (1, S) block: only key 0
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


def softmax_over_queries(q, k_new, v_new, k_cache, v_cache):
    k, v = torch.cat([k_cache, k_new], 1), torch.cat([v_cache, v_new], 1)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-2) @ v


def test_the_kv_reference_solution_passes():
    result = check.kv_step(kv_step)
    assert result.passed is True, result


def test_the_kv_scaffold_is_not_attempted():
    assert check.kv_step(kv_scaffold).passed is None


@pytest.mark.parametrize("wrong, words", [
    (not_appended, "append k_new and v_new"),
    (scaled_by_head_size, "divided by head_size = 16"),
    (masked_with_one_row_tril, "attends only to position 0"),
    (softmax_over_queries, "wrong dimension"),
    (lambda *a: kv_step(*a)[0], "expected (4, 1, 16)"),
])
def test_typical_kv_mistakes_get_their_hint(wrong, words):
    result = check.kv_step(wrong)
    assert result.passed is False and words in result.message, result
