"""Scoring a model (tinygpt.evaluate): the losses training reports, and bits per character,
comparable across tokenizers."""

import dataclasses
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tinygpt import evaluate as evaluate_module
from tinygpt.config import PRESETS
from tinygpt.data import Corpus
from tinygpt.evaluate import (
    LOGITS_BUDGET_BYTES,
    PassTooLong,
    bits_per_char,
    evaluate,
    full_loss,
    token_losses,
    val_bits_per_char,
    val_is_exact,
)
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer


def tiny_model(vocab_size=65, block_size=8):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16, dropout=0.0))


def test_every_token_but_the_first_is_scored_once_including_a_short_tail():
    model = tiny_model(block_size=8)
    ids = torch.randint(65, (8 * 3 + 5,))
    assert token_losses(model, ids).shape == (len(ids) - 1,)


def test_token_losses_match_the_models_own_loss_on_full_windows():
    model = tiny_model(block_size=8)
    ids = torch.randint(65, (8 * 4 + 1,))
    x, y = ids[:-1].view(4, 8), ids[1:].view(4, 8)
    model.eval()
    _, loss = model(x, y)
    assert token_losses(model, ids).mean().item() == pytest.approx(loss.item(), rel=1e-5)


def test_for_a_character_tokenizer_bits_per_char_is_mean_loss_over_ln2():
    model = tiny_model()
    ids = torch.randint(65, (50,))
    bpc = bits_per_char(model, ids, [1] * len(ids))
    assert bpc == pytest.approx(token_losses(model, ids).mean().item() / math.log(2), rel=1e-6)


def test_for_multi_character_tokens_the_denominator_is_characters_not_tokens():
    model = tiny_model()
    ids = torch.randint(65, (50,))
    lengths = [3] * len(ids)  # every token stands for three characters
    losses = token_losses(model, ids)
    bpc = bits_per_char(model, ids, lengths)
    assert bpc == pytest.approx(losses.sum().item() / (3 * (len(ids) - 1)) / math.log(2), rel=1e-6)
    assert bpc == pytest.approx(losses.mean().item() / math.log(2) / 3, rel=1e-6)


def test_the_first_tokens_characters_are_not_counted():
    model = tiny_model()
    ids = torch.randint(65, (20,))
    assert bits_per_char(model, ids, [100] + [1] * 19) == pytest.approx(bits_per_char(model, ids, [1] * 20))


def test_the_model_is_returned_to_training_mode():
    model = tiny_model()
    model.train()
    token_losses(model, torch.randint(65, (20,)))
    assert model.training


def test_lengths_must_match_the_ids():
    with pytest.raises(ValueError, match="char_lengths has 3 entries for 20 tokens"):
        bits_per_char(tiny_model(), torch.randint(65, (20,)), [1, 1, 1])


def test_fewer_than_two_tokens_is_an_error():
    with pytest.raises(ValueError, match="at least two tokens"):
        token_losses(tiny_model(), torch.tensor([3]))


# ---------------------------------------------------------------- bits per character of a big text


def han_corpus(n_tokens: int, vocab_size: int) -> types.SimpleNamespace:
    """What val_bits_per_char reads of a Corpus: a validation split of n random ids (uint8 or int16,
    as data.py keeps them) and a character tokenizer of vocab_size CJK characters."""
    chars = "".join(chr(0x4E00 + i) for i in range(vocab_size))
    dtype = torch.uint8 if vocab_size <= 256 else torch.int16
    val = torch.randint(vocab_size, (n_tokens,), dtype=dtype)
    return types.SimpleNamespace(val=val, tokenizer=CharTokenizer(chars))


def test_a_large_vocabulary_never_builds_logits_larger_than_the_budget():
    model = tiny_model(vocab_size=6005, block_size=64)  # 64 windows would be 98 MB of logits
    largest = []
    model.lm_head.register_forward_hook(lambda m, args, out: largest.append(out.numel() * 4))
    val_bits_per_char(model, han_corpus(64 * 64 + 1, 6005), batch_size=64)
    assert max(largest) <= LOGITS_BUDGET_BYTES


def test_streaming_gives_the_per_token_losses_sum():
    model = tiny_model(vocab_size=6005, block_size=16)
    corpus = han_corpus(16 * 300 + 7, 6005)
    expected = token_losses(model, corpus.val, batch_size=64).double().sum().item() / (len(corpus.val) - 1)
    assert val_bits_per_char(model, corpus) == pytest.approx(expected / math.log(2), rel=1e-9)


def test_the_windows_a_forward_shrink_with_the_vocabulary_and_results_stay_the_same(monkeypatch):
    model = tiny_model(vocab_size=300, block_size=16)
    ids = torch.randint(300, (16 * 40 + 3,))
    whole = token_losses(model, ids, batch_size=64)
    monkeypatch.setattr(evaluate_module, "LOGITS_BUDGET_BYTES", 4 * 16 * 300 * 3)  # 3 windows a forward
    assert torch.allclose(token_losses(model, ids, batch_size=64), whole, rtol=1e-5, atol=1e-6)


def test_a_pass_that_would_take_longer_than_allowed_stops_after_its_first_forward():
    model = tiny_model(block_size=8)
    ticks = iter(range(0, 10**6, 1))  # every read of the clock: one second later
    with pytest.raises(PassTooLong) as stopped:
        val_bits_per_char(model, han_corpus(8 * 1000 + 1, 65), batch_size=10, max_seconds=60,
                          clock=lambda: next(ticks))
    assert stopped.value.seconds > 60 and stopped.value.tokens == 8 * 1000


PEAK_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {tests!r})
from test_evaluate import han_corpus, tiny_model
from tinygpt.evaluate import val_bits_per_char
torch.set_num_threads(1)
model = tiny_model(vocab_size=200, block_size=64)
corpus = han_corpus(int(sys.argv[1]), 200)
val_bits_per_char(model, han_corpus(20_000, 200))  # the allocator warmed up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
val_bits_per_char(model, corpus)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)  # KiB (Linux)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB is Linux's")
def test_the_peak_memory_of_bits_per_char_does_not_grow_with_the_text():
    """The peak resident memory the pass adds, for 250,000 and 1,000,000 tokens: the same within
    8 MB (the pass kept 30 bytes a token before: a long copy, a list of lengths, every batch's losses)."""
    script = PEAK_SCRIPT.format(tests=str(Path(__file__).parent))
    grown = [int(subprocess.run([sys.executable, "-c", script, str(n)], capture_output=True, text=True,
                                check=True).stdout) for n in (250_000, 1_000_000)]
    assert grown[1] - grown[0] < 8 * 1024, grown


# ---------------------------------------------------------------- the losses training reports


def test_val_loss_is_exact_where_its_windows_cost_no_more_than_the_sampled_batches(text):
    corpus = Corpus.from_text(text[:200_000])
    model = tiny_model(vocab_size=corpus.tokenizer.vocab_size, block_size=16)
    small = dataclasses.replace(PRESETS["smoke"], model=model.config, batch_size=16, eval_iters=2)
    windows = (len(corpus.val) - 1) // 16
    exact = dataclasses.replace(small, eval_iters=-(-windows // 16))
    assert val_is_exact(exact, corpus) and not val_is_exact(small, corpus)
    assert evaluate(model, corpus, exact, device="cpu")["val"] == pytest.approx(
        full_loss(model, corpus.val, batch_size=16), rel=1e-6)


def test_the_workshop_preset_evaluates_val_exactly_on_tiny_shakespeare(text):
    assert val_is_exact(PRESETS["workshop"], Corpus.from_text(text))
