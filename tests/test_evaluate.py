"""Scoring a model (tinygpt.evaluate): the losses training reports, and bits per character,
comparable across tokenizers."""

import dataclasses
import math

import pytest
import torch

from tinygpt.config import PRESETS
from tinygpt.data import Corpus
from tinygpt.evaluate import bits_per_char, evaluate, full_loss, token_losses, val_is_exact
from tinygpt.model import GPT, GPTConfig


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
