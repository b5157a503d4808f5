"""Byte-level BPE (tinygpt.bpe), loading any tokenizer from its dict (tokenizer_from_dict), naming
one by a spec ("char", "bpe:N"), and training with BPE through train(tokenizer=...)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt import checkpoint
from tinygpt.bpe import BPETokenizer, merge_pair, split_chunks
from tinygpt.config import apply_overrides, get_config
from tinygpt.data import Corpus, Text
from tinygpt.evaluate import bits_per_char, full_loss
from tinygpt.progress import StopRequest
from tinygpt.runs import ResumeError
from tinygpt.tokenizer import CharTokenizer, parse_tokenizer_spec, tokenizer_from_dict, tokenizer_spec
from tinygpt.train import RunOptions, train

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


# ---------------------------------------------------------------- naming a tokenizer: "char", "bpe:N"


@pytest.mark.parametrize("spec, parsed", [("char", ("char", None)), ("bpe:512", ("bpe", 512)),
                                          ("BPE:257", ("bpe", 257))])
def test_a_tokenizer_spec_names_its_kind_and_size(spec, parsed):
    assert parse_tokenizer_spec(spec) == parsed


@pytest.mark.parametrize("spec, message", [("bpe:100", "257 or more"), ("bpe:256", "257 or more"),
                                           ("bpe:abc", "a whole number"), ("bpe:", "a whole number"),
                                           ("bpe:-3", "a whole number"), ("wordpiece", "unknown tokenizer"),
                                           ("char:5", "unknown tokenizer")])
def test_a_bad_tokenizer_spec_is_refused_in_one_line(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_tokenizer_spec(spec)
    assert "\n" not in str(e.value)


def test_tokenizer_spec_names_a_tokenizer_as_the_spec_that_builds_it():
    assert tokenizer_spec(CharTokenizer("abc")) == "char"
    assert tokenizer_spec(BPETokenizer([(97, 98)])) == "bpe:257"


# ---------------------------------------------------------------- training with BPE


def bpe_config(**changes):
    """The smoke preset shrunk to milliseconds a step, with `changes` (setting=value)."""
    tiny = {"model.block_size": 16, "model.n_layer": 1, "model.n_embd": 32, "batch_size": 8, "max_steps": 8,
            "warmup_steps": 2, "eval_interval": 4, "eval_iters": 2}
    return apply_overrides(get_config("smoke"), {**tiny, **changes})


@pytest.fixture(scope="module")
def short(text):
    return text[:60_000]


def test_train_with_a_bpe_spec_learns_it_from_the_training_split_only():
    text = "ab ab ab " * 1000 + "xy" * 500  # the last tenth, the validation text, is all x and y
    run = train(bpe_config(max_steps=1), Text(text, "bpe:270"), RunOptions(progress=False))
    assert isinstance(run.tokenizer, BPETokenizer) and run.model.config.vocab_size == run.tokenizer.vocab_size
    assert run.tokenizer == BPETokenizer.train(text[:int(0.9 * len(text))], 270)
    assert not any(b"x" in token for token in run.tokenizer.vocab[256:])


def test_a_bpe_run_saves_its_tokenizer_in_the_checkpoints(tmp_path, short):
    run = train(bpe_config(), Text(short, "bpe:300"), RunOptions(out_dir=tmp_path, progress=False))
    for name in ("ckpt_best.pt", "ckpt_last.pt"):
        model, tok, _ = checkpoint.load(tmp_path / name)
        assert tok == run.tokenizer and tok.vocab_size == 300 == model.config.vocab_size


def test_a_stopped_bpe_run_resumed_without_a_tokenizer_keeps_its_own_and_equals_a_straight_run(tmp_path, short,
                                                                                              fixed_thread_count):
    straight = train(bpe_config(), Text(short, "bpe:300"), RunOptions(out_dir=tmp_path / "straight", progress=False))
    stop = StopRequest()
    first = train(bpe_config(), Text(short, "bpe:300"),
                   RunOptions(out_dir=tmp_path / "r", progress=False, stop=stop,
                              on_step=lambda step, *_: stop.set() if step == 5 else None))
    assert (first.stopped, first.step) == ("interrupted", 5)
    resumed = train(None, Text(short), RunOptions(out_dir=tmp_path / "r", if_exists="resume", progress=False))
    assert resumed.tokenizer == straight.tokenizer and resumed.step == 8
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert [{k: v for k, v in h.items() if k != "time"} for h in resumed.history] == \
           [{k: v for k, v in h.items() if k != "time"} for h in straight.history]


def test_resuming_a_bpe_run_with_its_own_spec_is_accepted(tmp_path, short):
    train(bpe_config(max_steps=2), Text(short, "bpe:300"), RunOptions(out_dir=tmp_path, progress=False))
    run = train(bpe_config(max_steps=3), Text(short, "bpe:300"),
                RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))
    assert run.step == 3 and run.tokenizer.vocab_size == 300


@pytest.mark.parametrize("asked", ["char", "bpe:400"])
def test_resuming_a_bpe_run_with_another_tokenizer_is_refused_naming_both(tmp_path, short, asked):
    train(bpe_config(max_steps=2), Text(short, "bpe:300"), RunOptions(out_dir=tmp_path, progress=False))
    before = (tmp_path / "ckpt_last.pt").read_bytes()
    with pytest.raises(ResumeError, match=f"the run's tokenizer is bpe:300, not {asked}"):
        train(bpe_config(max_steps=3), Text(short, asked),
              RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))
    assert (tmp_path / "ckpt_last.pt").read_bytes() == before


def test_resuming_a_bpe_run_on_another_text_is_refused(tmp_path, short, text):
    train(bpe_config(max_steps=2), Text(short, "bpe:300"), RunOptions(out_dir=tmp_path, progress=False))
    with pytest.raises(ResumeError, match="vocabulary differs.*--text FILE"):
        train(bpe_config(max_steps=3), Text(text[100_000:160_000]),
              RunOptions(out_dir=tmp_path, if_exists="resume", progress=False))


def test_a_text_with_fewer_pairs_than_asked_says_its_vocabulary_is_smaller():
    run = train(bpe_config(max_steps=1), Text("abcd efgh\n" * 300, "bpe:400"), RunOptions(progress=False))
    assert run.tokenizer.vocab_size < 400
    assert any(f"has {run.tokenizer.vocab_size} tokens, not 400" in n for n in run.notices)


# ---------------------------------------------------------------- bits per character of a run


def test_a_bpe_runs_bits_per_char_scores_the_last_tenth_of_the_text_by_its_characters(short):
    run = train(bpe_config(max_steps=4), Text(short, "bpe:300"), RunOptions(progress=False, precision="fp32"))
    val_text = short[int(0.9 * len(short)):]
    ids = run.tokenizer.encode(val_text)
    assert sum(run.tokenizer.char_lengths(ids)) == len(val_text)
    assert run.val_bits_per_char == pytest.approx(
        bits_per_char(run.model, ids, run.tokenizer.char_lengths(ids), batch_size=8), rel=1e-6)
    assert run.history[-1]["val_loss"] / math.log(2) > run.val_bits_per_char  # a token is several characters


def test_a_char_runs_bits_per_char_is_its_exact_val_loss_over_ln_2(text):
    short = text[:3210]  # the validation tenth: 321 characters, 320 targets = 20 whole windows of 16
    run = train(bpe_config(max_steps=4, eval_iters=4), Text(short), RunOptions(progress=False, precision="fp32"))
    val = Corpus.from_text(short).val
    assert (len(val) - 1) % run.model.config.block_size == 0
    assert run.history[-1]["val_loss"] == pytest.approx(full_loss(run.model, val), rel=1e-6)  # evaluated exactly
    assert run.val_bits_per_char == pytest.approx(run.history[-1]["val_loss"] / math.log(2), rel=1e-5)


def test_a_stopped_run_reports_no_bits_per_char(short):
    stop = StopRequest()
    stop.set()
    run = train(bpe_config(), Text(short), RunOptions(progress=False, stop=stop))
    assert run.stopped == "interrupted" and run.val_bits_per_char is None
