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


# --- cases found by a learner-adversary pass ------------------------------------------------------------

def _greedy_or(fn):
    """`fn` for temperature > 0, the reference's greedy answer at temperature 0."""
    def wrapped(logits, temperature, top_k):
        return sampling_probs(logits, temperature, top_k) if temperature == 0 else fn(logits, temperature, top_k)
    return wrapped


def modifies_logits_in_place(logits, temperature, top_k):
    if temperature == 0:
        return sampling_probs(logits, temperature, top_k)
    logits /= temperature
    logits[logits < logits.topk(top_k).values[-1]] = float("-inf")
    return torch.softmax(logits, -1)


def test_modifying_the_callers_logits_in_place_is_refused():
    result = check.sampling_probs(modifies_logits_in_place)
    assert result.passed is False and "changed the logits it was given" in result.message, result


def test_keeping_k_minus_one_names_the_count():
    def strict(logits, temperature, top_k):
        logits = logits / temperature
        kth = logits.sort(descending=True).values[top_k - 1]
        return torch.softmax(logits.masked_fill(logits <= kth, float("-inf")), -1)
    result = check.sampling_probs(_greedy_or(strict))
    assert result.passed is False and "you kept 64 characters for top_k=65" in result.message, result


def test_masking_with_logit_zero_says_the_others_must_get_zero():
    def zero_logits(logits, temperature, top_k):
        logits = logits / temperature
        return torch.softmax(logits.masked_fill(logits < logits.topk(top_k).values[-1], 0.0), -1)
    result = check.sampling_probs(_greedy_or(zero_logits))
    assert result.passed is False and "you kept 65 characters for top_k=5" in result.message, result
    assert "-inf" in result.message


def test_returning_logits_is_not_told_to_renormalise():
    def logits_back(logits, temperature, top_k):
        logits = logits / temperature
        return logits.masked_fill(logits < logits.topk(top_k).values[-1], float("-inf"))
    result = check.sampling_probs(_greedy_or(logits_back))
    assert result.passed is False and "negative values" in result.message, result
    assert "renormalise" not in result.message


def test_returning_log_probabilities_is_refused_as_negative():
    result = check.sampling_probs(_greedy_or(lambda x, t, k: torch.log(sampling_probs(x, t, k).clamp_min(1e-30))))
    assert result.passed is False and "negative values" in result.message, result


def test_a_lost_temperature_says_so():
    result = check.sampling_probs(_greedy_or(lambda x, t, k: sampling_probs(x, 1.0, k)))
    assert result.passed is False and "those of temperature 1" in result.message, result


def test_multiplying_by_the_temperature_says_so():
    result = check.sampling_probs(_greedy_or(lambda x, t, k: sampling_probs(x, 1 / t, k)))
    assert result.passed is False and "do not multiply" in result.message, result


def test_a_missing_return_at_temperature_zero_is_not_called_unattempted():
    def no_return_at_zero(logits, temperature, top_k):
        if temperature == 0:
            probs = torch.zeros_like(logits)
            probs[logits.argmax()] = 1.0
        else:
            return sampling_probs(logits, temperature, top_k)
    result = check.sampling_probs(no_return_at_zero)
    assert result.passed is False and "with temperature 0" in result.message and "return" in result.message, result


def test_an_argmax_index_at_temperature_zero_names_the_shape():
    def index_at_zero(logits, temperature, top_k):
        return logits.argmax() if temperature == 0 else sampling_probs(logits, temperature, top_k)
    result = check.sampling_probs(index_at_zero)
    assert result.passed is False and "shape ()" in result.message, result


def test_a_finite_wrong_greedy_does_not_blame_division_by_zero():
    def uniform_at_zero(logits, temperature, top_k):
        if temperature == 0:
            return torch.full_like(logits, 1 / logits.numel())
        return sampling_probs(logits, temperature, top_k)
    result = check.sampling_probs(uniform_at_zero)
    assert result.passed is False and "temperature 0 is not handled" in result.message, result
    assert "inf and nan" not in result.message and "65 characters" in result.message


def batched_sort_minus_1e9(logits, temperature, top_k):
    x = logits[None]  # written for (batch, vocab): sort instead of topk, -1e9 instead of -inf
    if temperature == 0:
        return torch.nn.functional.one_hot(x.argmax(-1), x.size(-1)).float()[0]
    x = x / temperature
    kth = x.sort(-1, descending=True).values[:, top_k - 1 : top_k]
    return torch.softmax(torch.where(x < kth, torch.tensor(-1e9), x), -1)[0]


@pytest.mark.parametrize("style", [lambda x, t, k: sampling_probs(x.double(), t, k), batched_sort_minus_1e9])
def test_other_correct_styles_pass(style):
    result = check.sampling_probs(style)
    assert result.passed is True, result


@pytest.mark.parametrize("guess", ["0.13", torch.tensor(0.13), torch.tensor(0.13, dtype=torch.float64)])
def test_a_number_as_a_string_or_a_0d_tensor_is_accepted(guess):
    result = check.top5_removed(guess, PROBS)
    assert result.passed is True and "you guessed 0.13" in result.message, result


def test_a_percent_string_gets_its_own_share():
    result = check.top5_removed("13%", PROBS)
    assert result.passed is False and "0.13 for 13%" in result.message, result


def test_nan_is_refused():
    result = check.top5_removed(float("nan"), PROBS)
    assert result.passed is False and "as a number" in result.message, result


def test_a_small_guess_is_not_printed_as_zero():
    assert "you guessed 0.001;" in check.top5_removed(0.001, PROBS).message


def _kv_with(scores_of, attend_keys=None):
    """A KV step built from `kv_step`'s pieces with one part changed."""
    def step(q, k_new, v_new, k_cache, v_cache):
        k, v = torch.cat([k_cache, k_new], 1), torch.cat([v_cache, v_new], 1)
        if attend_keys is not None:
            k, v = attend_keys(k), attend_keys(v)
        return scores_of(q, k) @ v
    return step


def test_scaling_by_the_number_of_positions_says_so():
    wrong = _kv_with(lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(k.size(1)), -1))
    result = check.kv_step(wrong)
    assert result.passed is False and "the number of positions" in result.message, result


def test_a_softmax_over_the_heads_says_so():
    wrong = _kv_with(lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), 0))
    result = check.kv_step(wrong)
    assert result.passed is False and "over the heads (dim=0)" in result.message, result


def test_swapped_keys_and_values_say_so():
    def swapped(q, k_new, v_new, k_cache, v_cache):
        return kv_step(q, v_new, k_new, v_cache, k_cache)
    result = check.kv_step(swapped)
    assert result.passed is False and "swapped keys and values" in result.message, result


@pytest.mark.parametrize("cut", [lambda t: t[:, 1:], lambda t: t[:, -2:]])
def test_a_partial_cache_slice_says_so(cut):
    wrong = _kv_with(lambda q, k: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1), cut)
    result = check.kv_step(wrong)
    assert result.passed is False and "does not attend to all 9 cached positions" in result.message, result


def test_writing_into_the_cache_is_refused():
    def overwrites(q, k_new, v_new, k_cache, v_cache):
        k_cache[:, -1:] = k_new
        v_cache[:, -1:] = v_new
        return torch.softmax(q @ k_cache.transpose(-2, -1) / math.sqrt(q.size(-1)), -1) @ v_cache
    result = check.kv_step(overwrites)
    assert result.passed is False and "changed k_cache and v_cache in place" in result.message, result


def test_concatenating_on_the_wrong_dimension_names_the_right_one():
    def wrong_dim(q, k_new, v_new, k_cache, v_cache):
        return kv_step(q, k_new, v_new, k_cache, v_cache) + torch.cat([k_cache, k_new], 2).sum()
    result = check.kv_step(wrong_dim)
    assert result.passed is False and "dim=1" in result.message and "raised" in result.message, result


def test_other_correct_kv_styles_pass():
    def sdpa(q, k_new, v_new, k_cache, v_cache):
        k, v = torch.cat((k_cache, k_new), -2), torch.cat((v_cache, v_new), -2)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def einsum64(q, k_new, v_new, k_cache, v_cache):
        q, k, v = q.double(), torch.cat([k_cache, k_new], 1).double(), torch.cat([v_cache, v_new], 1).double()
        return torch.einsum("hqk,hkd->hqd", torch.einsum("hqd,hkd->hqk", q, k).mul(q.size(-1) ** -0.5).softmax(-1), v)

    for style in (sdpa, einsum64):
        result = check.kv_step(style)
        assert result.passed is True, result
