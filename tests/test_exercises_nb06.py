"""Notebook 06's exercise checks: the reference solutions pass, the scaffolds are not attempted, and
typical wrong answers are refused with a hint that names the mistake."""

from collections import Counter

import pytest

from tinygpt.bpe import BPETokenizer, merge_pair
from tinygpt.course.exercises import nb06


def scaffold(*args):
    ...


# --- most_frequent_pair ---------------------------------------------------------------------------

def most_frequent_pair(ids):
    return Counter(zip(ids, ids[1:])).most_common(1)[0][0]


def test_most_frequent_pair_reference_passes():
    assert nb06.most_frequent_pair(most_frequent_pair).passed is True


def test_most_frequent_pair_scaffold_is_not_attempted():
    assert nb06.most_frequent_pair(scaffold).passed is None


@pytest.mark.parametrize("wrong, words", [
    (lambda ids: Counter(zip(ids, ids[1:])).most_common(1)[0], "a pair and its count"),
    (lambda ids: Counter(zip(ids[1:], ids)).most_common(1)[0][0], "order swapped"),
    (lambda ids: Counter(zip(ids, ids[1:])).most_common()[-1][0], "largest count"),
    (lambda ids: Counter(zip(ids, ids)).most_common(1)[0][0], "never occurs side by side"),
    (lambda ids: Counter(ids).most_common(1)[0][0], "a pair of two ids"),
])
def test_most_frequent_pair_wrong_answers_get_their_hint(wrong, words):
    result = nb06.most_frequent_pair(wrong)
    assert result.passed is False and words in result.message


# --- merge ----------------------------------------------------------------------------------------

def merge_overlapping(ids, pair, new_id):
    """Merges wherever the pair starts and drops an id that ends a pair, so "aaa" merges twice."""
    out = []
    for i, x in enumerate(ids):
        if i + 1 < len(ids) and (x, ids[i + 1]) == pair:
            out.append(new_id)
        elif i == 0 or (ids[i - 1], x) != pair:
            out.append(x)
    return out


def merge_no_skip(ids, pair, new_id):
    """Moves on by one id after a merge, so the pair's second id stays."""
    out = []
    for i, x in enumerate(ids):
        out.append(new_id if i + 1 < len(ids) and (x, ids[i + 1]) == pair else x)
    return out


def merge_loses_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def merge_in_place(ids, pair, new_id):
    ids[:] = merge_pair(ids, pair, new_id)
    return ids


def test_merge_reference_passes():
    assert nb06.merge(merge_pair).passed is True


def test_merge_scaffold_is_not_attempted():
    assert nb06.merge(scaffold).passed is None


@pytest.mark.parametrize("wrong, words", [
    (lambda ids, pair, new_id: merge_pair(ids, pair[::-1], new_id), "order swapped"),
    (merge_overlapping, "overlapping occurrences merged twice"),
    (merge_no_skip, "second id is still there"),
    (merge_first_only, "only the first occurrence"),
    (merge_loses_last, "the last id is missing"),
    (merge_in_place, "changed the list it was given"),
    (lambda ids, pair, new_id: tuple(merge_pair(ids, pair, new_id)), "return a list"),
])
def test_merge_wrong_answers_get_their_hint(wrong, words):
    result = nb06.merge(wrong)
    assert result.passed is False and words in result.message


# --- chars_per_token ------------------------------------------------------------------------------

TEXT = "the cat sat on the mat, and the rat sat on the hat.\n" * 40


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(TEXT, 300)


def test_chars_per_token_reports_the_measurement_and_how_far_off(tokenizer):
    measured = len(TEXT) / len(tokenizer.encode(TEXT))
    result = nb06.chars_per_token(2.0, tokenizer, TEXT)
    assert result.passed is True and f"measured {measured:.2f} characters per token" in result.message
    assert f"{(2.0 - measured) / measured:+.0%} off" in result.message


def test_chars_per_token_scaffold_is_not_attempted(tokenizer):
    assert nb06.chars_per_token(..., tokenizer, TEXT).passed is None


@pytest.mark.parametrize("wrong, words", [(0.5, "tokens per character?"), ("about two", "as a number")])
def test_chars_per_token_wrong_answers_get_their_hint(tokenizer, wrong, words):
    result = nb06.chars_per_token(wrong, tokenizer, TEXT)
    assert result.passed is False and words in result.message


# --- what a learner-adversary found (issue 25)

def test_most_frequent_pair_counting_without_overlaps_is_told_overlaps_count():
    def no_overlaps(ids):
        counts, i = Counter(), 0
        while i < len(ids) - 1:
            counts[ids[i], ids[i + 1]] += 1
            i += 2 if ids[i] == ids[i + 1] else 1
        return counts.most_common(1)[0][0]

    r = nb06.most_frequent_pair(no_overlaps)
    assert r.passed is False and "overlaps count" in r.message


def test_merge_comparing_a_list_with_the_pair_tuple_is_named():
    def list_vs_tuple(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids):
            if i < len(ids) - 1 and [ids[i], ids[i + 1]] == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    r = nb06.merge(list_vs_tuple)
    assert r.passed is False and "nothing was merged" in r.message


def test_merge_from_the_right_is_named():
    r = nb06.merge(lambda ids, pair, new_id: merge_pair(ids[::-1], pair[::-1], new_id)[::-1])
    assert r.passed is False and "merged from the right" in r.message


@pytest.fixture(scope="module")
def small_bpe():
    text = "to be or not to be, that is the question " * 20
    return BPETokenizer.train(text, 300), text


@pytest.mark.parametrize("guess", [float("nan"), float("inf"), -2, 0, True])
def test_chars_per_token_non_guesses_are_refused_not_ticked(small_bpe, guess):
    r = nb06.chars_per_token(guess, *small_bpe)
    assert r.passed is False and "1/" not in r.message


def test_chars_per_token_the_vocabulary_size_is_refused(small_bpe):
    bpe, text = small_bpe
    r = nb06.chars_per_token(bpe.vocab_size, bpe, text)
    assert r.passed is False and "longest token" in r.message and f"vocabulary size ({bpe.vocab_size})" in r.message
