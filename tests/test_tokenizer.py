"""CharTokenizer: one token per character of the text's sorted vocabulary."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.tokenizer import CharTokenizer


def test_round_trip_on_the_whole_text(text, tokenizer):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_vocabulary_of_tiny_shakespeare_has_65_characters(tokenizer):
    assert tokenizer.vocab_size == 65
    assert len(set(tokenizer.chars)) == 65


def test_vocabulary_is_sorted_so_ids_are_stable():
    tok = CharTokenizer.from_text("cabbage")
    assert tok.chars == "abceg"
    assert tok.encode("abc") == [0, 1, 2]
    assert CharTokenizer.from_text("gabbec") == tok


def test_unknown_character_raises_value_error_naming_it_and_its_position(tokenizer):
    with pytest.raises(ValueError, match=re.escape("'é' at position 3")):
        tokenizer.encode("Roméo")


def test_check_raises_like_encode_for_an_unknown_character(tokenizer):
    tokenizer.check("ROMEO:")
    with pytest.raises(ValueError, match=re.escape("'~' at position 0")):
        tokenizer.check("~x")


def test_decoding_an_id_outside_the_vocabulary_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="token id 65 at position 1"):
        tokenizer.decode([0, 65])
    with pytest.raises(ValueError, match="token id -1"):
        tokenizer.decode([-1])


def test_empty_vocabulary_is_refused():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")


def test_repeated_characters_in_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match="repeated"):
        CharTokenizer("aab")


def test_to_dict_from_dict_round_trip(tokenizer, text):
    restored = CharTokenizer.from_dict(tokenizer.to_dict())
    assert restored == tokenizer
    assert restored.stoi == tokenizer.stoi
    sample = text[:1000]
    assert restored.encode(sample) == tokenizer.encode(sample)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_property_decode_encode_is_identity_over_the_vocabulary(tokenizer, data):
    t = data.draw(st.text(alphabet=tokenizer.chars))
    assert tokenizer.decode(tokenizer.encode(t)) == t


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_property_any_character_outside_the_vocabulary_raises_value_error(tokenizer, data):
    before = data.draw(st.text(alphabet=tokenizer.chars), label="before")
    after = data.draw(st.text(alphabet=tokenizer.chars), label="after")
    bad = data.draw(st.characters().filter(lambda c: c not in tokenizer.stoi), label="bad")
    with pytest.raises(ValueError) as excinfo:
        tokenizer.encode(before + bad + after)
    assert f"{bad!r} at position {len(before)}" in str(excinfo.value)
