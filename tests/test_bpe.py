"""Byte-level BPE (tinygpt.bpe) and loading any tokenizer from its dict (tokenizer_from_dict)."""

import pytest
from hypothesis import given, settings, strategies as st

from tinygpt.bpe import BPETokenizer, merge_pair, split_chunks
from tinygpt.tokenizer import CharTokenizer, tokenizer_from_dict

TINY = "the cat sat on the mat; the hat is that hat"


@pytest.fixture(scope="module")
def shakespeare_bpe(text):
    return BPETokenizer.train(text[:100_000], 400)


def test_the_first_merge_is_the_most_frequent_pair_of_the_text():
    # By hand, inside the chunks "the", " cat", " sat", " on", " the", " mat", ";", " the", " hat", " is",
    # " that", " hat": ('a','t') occurs 6 times (cat sat mat hat that hat), ('t','h') 4, (' ','t') 3, ('h','a') 3.
    counts = {}
    for chunk in split_chunks(TINY):
        b = chunk.encode()
        for pair in zip(b, b[1:]):
            counts[pair] = counts.get(pair, 0) + 1
    assert counts[(ord("a"), ord("t"))] == 6 == max(counts.values())
    tok = BPETokenizer.train(TINY, 257)
    assert tok.merges == [(ord("a"), ord("t"))]
    assert tok.vocab[256] == b"at"


def test_merges_never_cross_a_word_boundary():
    tok = BPETokenizer.train("ab ab ab ab", 300)
    assert all(b" " not in token[1:] for token in tok.vocab[256:])


def test_ties_go_to_the_smaller_pair_so_training_is_deterministic():
    tok = BPETokenizer.train("ba cd", 257)  # every pair occurs once: nothing worth merging
    assert tok.merges == []
    tok = BPETokenizer.train("zy\nab\nzy\nab", 257)  # (a, b) and (z, y) both occur twice
    assert tok.merges == [(ord("a"), ord("b"))]


def test_training_twice_gives_the_same_merges(text):
    assert BPETokenizer.train(text[:30_000], 320).merges == BPETokenizer.train(text[:30_000], 320).merges


def test_vocab_size_counts_bytes_and_merges(shakespeare_bpe):
    assert shakespeare_bpe.vocab_size == 400 == 256 + len(shakespeare_bpe.merges)


def test_merges_reduce_the_token_count(text):
    sample = text[200_000:210_000]
    counts = [len(BPETokenizer.train(text[:100_000], v).encode(sample)) for v in (256, 300, 500)]
    assert counts[0] == len(sample.encode("utf-8"))
    assert counts[0] > counts[1] > counts[2]


def test_round_trip_on_shakespeare_validation_text(text, shakespeare_bpe):
    val = text[int(0.9 * len(text)):]
    assert shakespeare_bpe.decode(shakespeare_bpe.encode(val)) == val


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_on_any_text(shakespeare_bpe, s):
    assert shakespeare_bpe.decode(shakespeare_bpe.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_chunks_join_back_to_the_text(s):
    assert "".join(split_chunks(s)) == s


def test_text_never_seen_in_training_still_encodes():
    tok = BPETokenizer.train(TINY, 300)
    for s in ["Café ☕ 東京", "\x00\x7f", "💡" * 3]:
        ids = tok.encode(s)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == s
        tok.check(s)  # never raises


def test_char_lengths_add_up_to_the_characters_of_the_text(shakespeare_bpe):
    s = "ROMEO: But, soft! what light through yonder window breaks? é東💡"
    ids = shakespeare_bpe.encode(s)
    lengths = shakespeare_bpe.char_lengths(ids)
    assert sum(lengths) == len(s)
    assert max(lengths) > 1


def test_decode_rejects_an_id_outside_the_vocabulary(shakespeare_bpe):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        shakespeare_bpe.decode([65, 400])


def test_train_rejects_a_vocabulary_smaller_than_the_bytes():
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train(TINY, 100)


def test_merge_pair_replaces_non_overlapping_occurrences_left_to_right():
    assert merge_pair([1, 1, 1, 2, 1, 1], (1, 1), 9) == [9, 1, 2, 9]


def test_to_dict_from_dict_round_trip(shakespeare_bpe):
    d = shakespeare_bpe.to_dict()
    assert d["kind"] == "bpe"
    restored = BPETokenizer.from_dict(d)
    assert restored == shakespeare_bpe
    assert restored.encode("To be, or not to be") == shakespeare_bpe.encode("To be, or not to be")


def test_from_dict_rejects_a_merge_of_tokens_that_do_not_exist_yet():
    with pytest.raises(ValueError, match="does not exist yet"):
        BPETokenizer.from_dict({"kind": "bpe", "merges": [[256, 1]]})


def test_tokenizer_from_dict_dispatches_on_kind(shakespeare_bpe):
    char = CharTokenizer.from_text("hello")
    assert char.to_dict()["kind"] == "char"
    assert tokenizer_from_dict(char.to_dict()) == char
    assert tokenizer_from_dict(shakespeare_bpe.to_dict()) == shakespeare_bpe


def test_a_dict_without_kind_is_a_character_tokenizer():
    assert tokenizer_from_dict({"chars": "abc"}) == CharTokenizer("abc")


def test_tokenizer_from_dict_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        tokenizer_from_dict({"kind": "wordpiece"})
