"""Notebook 06's exercises: the two steps of byte-pair encoding, and how much one token holds.

- `most_frequent_pair`: the learner's count of adjacent pairs against a plain Counter;
- `merge`: the learner's merge step against `tinygpt.bpe.merge_pair`;
- `chars_per_token`: a guess, then the measured characters per token of a BPE tokenizer.
"""

from __future__ import annotations

import random
from collections import Counter

from ...bpe import merge_pair
from . import Hint, call, exercise, number

CLASSIC = list(b"aaabdaaabac")  # the example string of BPE's explanations


def _pair_cases():
    """Lists of ids with one most frequent adjacent pair (no ties), the classic string first."""
    cases = [CLASSIC]
    rng = random.Random(6)
    while len(cases) < 6:
        ids = [rng.randrange(5) for _ in range(rng.randrange(8, 40))]
        top = Counter(zip(ids, ids[1:])).most_common(2)
        if len(top) == 2 and top[0][1] > top[1][1]:
            cases.append(ids)
    return cases


@exercise("06")
def most_frequent_pair(fn):
    """`fn(ids)` must return the adjacent pair (a, b) that occurs most often in `ids` (overlapping
    occurrences count: b"aaa" holds the pair (97, 97) twice)."""
    for ids in _pair_cases():
        counts = Counter(zip(ids, ids[1:]))
        expected, best = counts.most_common(1)[0]
        out = call(fn, list(ids))
        if isinstance(out, (list, tuple)) and len(out) == 1 and isinstance(out[0], tuple):
            out = out[0]  # most_common(1) -> [((a, b), n)]: diagnosed just below
        if isinstance(out, (list, tuple)) and len(out) == 2 and isinstance(out[0], (tuple, list)):
            raise Hint(f"you returned {out!r}, a pair and its count (Counter.most_common gives both): "
                       f"return only the pair, {tuple(out[0])!r}")
        try:
            got = tuple(int(x) for x in out)
        except TypeError:
            raise Hint(f"return a pair of two ids (a, b), not {out!r}") from None
        if len(got) != 2:
            raise Hint(f"return a pair of two ids (a, b), not {len(got)} values: {out!r}")
        if got == expected:
            continue
        if got == expected[::-1]:
            raise Hint(f"in {ids} the pair is {expected} (left id, right id); you returned {got}, the order "
                       f"swapped: pair each id with the one after it, zip(ids, ids[1:])")
        if got not in counts:
            raise Hint(f"{got} never occurs side by side in {ids}: pair each id with the one after it, "
                       f"zip(ids, ids[1:])")
        times = "once" if counts[got] == 1 else f"{counts[got]} times"
        overlap = (f" (overlaps count: {expected[0]}, {expected[0]}, {expected[0]} holds {expected} twice)"
                   if expected[0] == expected[1] else "")
        raise Hint(f"in {ids}, {got} occurs {times} but {expected} occurs {best} times{overlap}: "
                   f"return the pair with the largest count, counting every id with the one after it")
    return "the most frequent pair of b'aaabdaaabac' is (97, 97), b'aa', 4 times (6 lists checked)"


def _merge_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def _merge_right_to_left(ids, pair, new_id):
    return merge_pair(ids[::-1], pair[::-1], new_id)[::-1]


@exercise("06")
def merge(fn):
    """`fn(ids, pair, new_id)` must return a new list: `ids` with every occurrence of `pair`, read left to
    right and not overlapping, replaced by `new_id`, as `tinygpt.bpe.merge_pair` does."""
    rng = random.Random(6)
    cases = [([1, 2, 3, 2, 1], (1, 2), 9), (list(b"aaa"), (97, 97), 256), (CLASSIC, (97, 97), 256),
             ([4, 5], (4, 5), 6), ([4, 5, 4], (5, 6), 7)]
    cases += [([rng.randrange(3) for _ in range(30)], (rng.randrange(3), rng.randrange(3)), 300) for _ in range(5)]
    for ids, pair, new_id in cases:
        given = list(ids)
        out = call(fn, given, pair, new_id)
        expected = merge_pair(ids, pair, new_id)
        if given != ids:
            raise Hint("your merge changed the list it was given: build and return a new list")
        if not isinstance(out, list):
            raise Hint(f"return a list of ids, not {type(out).__name__} ({out!r})")
        if out == expected:
            continue
        shown = f"merge({ids}, {pair}, {new_id})"
        if out.count(new_id) > expected.count(new_id):
            raise Hint(f"{shown} gave {out}, expected {expected}: overlapping occurrences merged twice; in "
                       f"b'aaa' the pair (97, 97) occurs twice, overlapping, and only the first can merge: "
                       f"after a merge, skip both of its ids")
        if out.count(new_id) == expected.count(new_id) and len(out) > len(expected):
            raise Hint(f"{shown} gave {out}, expected {expected}: the pair's second id is still there; after a "
                       f"merge, skip both of its ids")
        if pair[0] != pair[1] and out == merge_pair(ids, pair[::-1], new_id):
            raise Hint(f"{shown} gave {out}, expected {expected}: you merged {pair[::-1]}, the pair's order "
                       f"swapped; a is the left id and b the right one")
        if out == _merge_first_only(ids, pair, new_id):
            raise Hint(f"{shown} gave {out}, expected {expected}: only the first occurrence was merged; "
                       f"replace every occurrence")
        if out == ids and expected != ids:
            raise Hint(f"{shown} gave {out}, expected {expected}: nothing was merged, although {pair} occurs; compare "
                       f"ids[i] == pair[0] and ids[i + 1] == pair[1] (a list [a, b] never equals the tuple (a, b))")
        if out == _merge_right_to_left(ids, pair, new_id):
            raise Hint(f"{shown} gave {out}, expected {expected}: you merged from the right; read left to right, "
                       f"so in b'aaa' the first two ids merge")
        if out == expected[:-1]:
            raise Hint(f"{shown} gave {out}, expected {expected}: the last id is missing; when the loop "
                       f"stops one short of the end, append the last id too")
        raise Hint(f"{shown} gave {out}, expected {expected}")
    return f"b'aaabdaaabac' -> {merge_pair(CLASSIC, (97, 97), 256)} and b'aaa' -> [256, 97], " \
           f"as tinygpt.bpe.merge_pair ({len(cases)} cases)"


@exercise("06")
def chars_per_token(guess, tokenizer, text):
    """Your guess of the characters per token of `tokenizer` on `text`, then the measurement."""
    g = number(guess, "your guess (characters per token, e.g. 1.5)")
    if g <= 0:
        raise Hint(f"write your guess as a positive number of characters per token, e.g. 1.5, not {g:g}")
    measured = len(text) / len(tokenizer.encode(text))
    if g < 1:
        raise Hint(f"{g:g} is below 1, but every token here holds at least one character (each is at least one "
                   f"byte, and these characters are one byte each); tokens per character? 1/{g:g} = {1 / g:.2f}")
    longest = max(len(tokenizer.decode([i])) for i in range(tokenizer.vocab_size))
    if g > longest:
        vocab = f", not the vocabulary size ({tokenizer.vocab_size})" if g > 100 else ""
        raise Hint(f"{g:g} characters per token on average, but this tokenizer's longest token holds {longest}: "
                   f"most tokens are much shorter; the guess is the average characters per token{vocab}")
    off = (g - measured) / measured
    return (f"you guessed {g:g}; measured {measured:.2f} characters per token "
            f"({len(text):,} characters -> {len(text) / measured:,.0f} tokens): {off:+.0%} off")
