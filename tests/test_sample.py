"""Sampling: the KV cache, seeds, temperature, top-k, argument checks and the text interface."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.model import GPT, GPTConfig, KVCache
from tinygpt.sample import MAX_NEW_TOKENS, Decoder, generate, generate_text, next_token_probs, prompt_ids
from tinygpt.tokenizer import CharTokenizer


def _gen(seed):
    return torch.Generator().manual_seed(seed)


PROMPT = torch.tensor([[5, 17, 40]])


# ---------------------------------------------------------------- KV cache


def test_cached_greedy_generation_equals_uncached_past_block_size(tiny_gpt):
    cached = generate(tiny_gpt, PROMPT, 100, temperature=0)
    uncached = generate(tiny_gpt, PROMPT, 100, temperature=0, use_cache=False)
    assert cached.shape == (1, 103)  # far past block_size 16: the window slides several times
    assert torch.equal(cached, uncached)


def test_cached_seeded_sampling_equals_uncached_past_block_size(tiny_gpt):
    prompt = torch.tensor([[5, 17, 40], [1, 2, 3]])
    cached = generate(tiny_gpt, prompt, 100, temperature=1.0, generator=_gen(11))
    uncached = generate(tiny_gpt, prompt, 100, temperature=1.0, generator=_gen(11), use_cache=False)
    assert torch.equal(cached, uncached)


def test_cached_top_k_sampling_equals_uncached(tiny_gpt):
    cached = generate(tiny_gpt, PROMPT, 100, temperature=0.8, top_k=5, generator=_gen(3))
    uncached = generate(tiny_gpt, PROMPT, 100, temperature=0.8, top_k=5, generator=_gen(3), use_cache=False)
    assert torch.equal(cached, uncached)


def _decode_one_at_a_time(model, idx, prefill):
    """Logits of every position after the prefill, one Decoder step per token, and the cache."""
    cache = KVCache(model.config, batch_size=idx.size(0))
    decoder = Decoder(model)
    with torch.no_grad():
        model(idx[:, :prefill], cache=cache)
        logits = [decoder.step(idx[:, t], cache) for t in range(prefill, idx.size(1))]
    return torch.stack(logits, dim=1), cache


@pytest.mark.parametrize("bias", [True, False])
def test_decoder_steps_give_the_logits_of_a_full_forward(bias):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=bias)).eval()
    idx = torch.randint(65, (2, 16))
    stepped, cache = _decode_one_at_a_time(model, idx, prefill=3)
    with torch.no_grad():
        full = model(idx)[0]
    assert cache.length == 16
    torch.testing.assert_close(stepped, full[:, 3:], rtol=1e-5, atol=1e-5)


def test_decoder_steps_fill_the_cache_as_a_full_forward_does(tiny_gpt):
    tiny_gpt.eval()
    idx = torch.randint(65, (1, 16), generator=_gen(1))
    _, stepped = _decode_one_at_a_time(tiny_gpt, idx, prefill=1)
    full = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        tiny_gpt(idx, cache=full)
    for layer in range(tiny_gpt.config.n_layer):
        torch.testing.assert_close(stepped.k[layer], full.k[layer], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stepped.v[layer], full.v[layer], rtol=1e-5, atol=1e-6)


def test_decoder_step_past_block_size_raises_value_error(tiny_gpt):
    cache = KVCache(tiny_gpt.config, batch_size=1)
    cache.length = tiny_gpt.config.block_size
    with pytest.raises(ValueError, match="17 tokens is longer than block_size 16"):
        Decoder(tiny_gpt).step(torch.zeros(1, dtype=torch.long), cache)


# ---------------------------------------------------------------- seeds, temperature, top-k


def test_seeded_generation_is_reproducible(tiny_gpt):
    a = generate(tiny_gpt, PROMPT, 50, generator=_gen(1))
    b = generate(tiny_gpt, PROMPT, 50, generator=_gen(1))
    assert torch.equal(a, b)


def test_different_seeds_give_different_samples(tiny_gpt):
    a = generate(tiny_gpt, PROMPT, 50, generator=_gen(1))
    b = generate(tiny_gpt, PROMPT, 50, generator=_gen(2))
    assert not torch.equal(a, b)


def test_generation_keeps_the_prompt_as_the_start_of_the_sequence(tiny_gpt):
    out = generate(tiny_gpt, PROMPT, 7, generator=_gen(0))
    assert torch.equal(out[:, :3], PROMPT)


def test_temperature_zero_equals_argmax_decoding(tiny_gpt):
    seq = PROMPT.clone()
    with torch.no_grad():
        for _ in range(12):  # stays within block_size, so the whole sequence is the context
            logits, _ = tiny_gpt(seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(tiny_gpt, PROMPT, 12, temperature=0), seq)


@pytest.mark.parametrize("temperature", [1e-3, 1.2e-38, 5e-324])
def test_a_tiny_positive_temperature_is_greedy_not_nan(tiny_gpt, temperature):
    # logits / 1e-38 overflows float32: inf - inf would make the distribution nan
    greedy = generate(tiny_gpt, PROMPT, 30, temperature=0)
    assert torch.equal(generate(tiny_gpt, PROMPT, 30, temperature=temperature, generator=_gen(0)), greedy)


def test_top_k_one_equals_greedy(tiny_gpt):
    greedy = generate(tiny_gpt, PROMPT, 60, temperature=0)
    top1 = generate(tiny_gpt, PROMPT, 60, temperature=1.3, top_k=1, generator=_gen(5))
    assert torch.equal(top1, greedy)


def test_top_k_above_the_vocabulary_is_clamped_and_filters_nothing(tiny_gpt):
    big = generate(tiny_gpt, PROMPT, 60, top_k=1000, generator=_gen(9))
    none = generate(tiny_gpt, PROMPT, 60, top_k=None, generator=_gen(9))
    assert torch.equal(big, none)


def test_top_k_keeps_only_the_k_likeliest_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    probs = next_token_probs(logits, temperature=1.0, top_k=2)
    assert (probs[0, [0, 2, 4]] == 0).all()
    torch.testing.assert_close(probs[0, [1, 3]], torch.softmax(torch.tensor([3.0, 2.0]), 0))


def test_temperature_sharpens_and_flattens_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    cold, warm = next_token_probs(logits, 0.5), next_token_probs(logits, 2.0)
    assert cold[0, 2] > next_token_probs(logits, 1.0)[0, 2] > warm[0, 2]


def test_return_probs_gives_a_probability_in_zero_one_for_each_new_token(tiny_gpt):
    seq, probs = generate(tiny_gpt, PROMPT, 40, top_k=10, generator=_gen(4), return_probs=True)
    assert seq.shape == (1, 43) and probs.shape == (1, 40)
    assert ((probs > 0) & (probs <= 1)).all()


def test_return_probs_of_greedy_decoding_are_all_one(tiny_gpt):
    _, probs = generate(tiny_gpt, PROMPT, 20, temperature=0, return_probs=True)
    assert torch.equal(probs, torch.ones(1, 20))


def test_return_probs_with_no_new_tokens_is_empty(tiny_gpt):
    seq, probs = generate(tiny_gpt, PROMPT, 0, return_probs=True)
    assert torch.equal(seq, PROMPT) and probs.shape == (1, 0)


def test_generated_tensors_can_feed_a_training_step(tiny_gpt):
    """generate runs in inference mode, but hands back ordinary tensors."""
    seq, probs = generate(tiny_gpt, torch.zeros(1, 1, dtype=torch.long), 8, return_probs=True,
                          generator=torch.Generator().manual_seed(0))
    assert not seq.is_inference() and not probs.is_inference()
    _, loss = tiny_gpt(seq[:, :-1], seq[:, 1:])
    loss.backward()
    assert tiny_gpt.wte.weight.grad is not None


def test_generate_restores_the_training_mode(tiny_gpt):
    tiny_gpt.train()
    generate(tiny_gpt, PROMPT, 3, generator=_gen(0))
    assert tiny_gpt.training


# ---------------------------------------------------------------- hostile arguments


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(temperature=-0.5), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature="hot"), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=-3), "top_k"),
        (dict(top_k=True), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=MAX_NEW_TOKENS + 1), "max_new_tokens"),
        (dict(max_new_tokens=10**12), "max_new_tokens"),
        (dict(max_new_tokens=True), "max_new_tokens"),
        (dict(max_new_tokens=3.0), "max_new_tokens"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
def test_hostile_sampling_arguments_raise_value_error_naming_the_argument(tiny_gpt, kwargs, name):
    kwargs = {"max_new_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate(tiny_gpt, PROMPT, **kwargs, generator=_gen(0))


def test_empty_idx_raises_value_error(tiny_gpt):
    with pytest.raises(ValueError, match="at least one token"):
        generate(tiny_gpt, torch.zeros(1, 0, dtype=torch.long), 5)


# ---------------------------------------------------------------- generate_text


@pytest.fixture(scope="module")
def small_tokenizer(tokenizer):
    return tokenizer  # the 65-character Shakespeare vocabulary, matching tiny_gpt


def test_generate_text_starts_with_the_prompt_and_adds_max_new_tokens_characters(tiny_gpt, small_tokenizer):
    out = generate_text(tiny_gpt, small_tokenizer, "ROMEO:", 30, seed=1)
    assert out.startswith("ROMEO:") and len(out) == 6 + 30


def test_generate_text_without_the_prompt_returns_only_the_continuation(tiny_gpt, small_tokenizer):
    with_prompt = generate_text(tiny_gpt, small_tokenizer, "ROMEO:", 30, seed=1)
    without = generate_text(tiny_gpt, small_tokenizer, "ROMEO:", 30, seed=1, include_prompt=False)
    assert with_prompt == "ROMEO:" + without


def test_generate_text_with_an_empty_prompt_omits_the_implicit_newline(tiny_gpt, small_tokenizer):
    out = generate_text(tiny_gpt, small_tokenizer, "", 25, seed=3)
    assert len(out) == 25
    # the same as continuing an explicit newline, minus that newline
    nl = small_tokenizer.stoi["\n"]
    ids = generate(tiny_gpt, torch.tensor([[nl]]), 25, generator=_gen(3))
    assert out == small_tokenizer.decode(ids[0, 1:].tolist())


def test_empty_prompt_without_a_newline_in_the_vocabulary_starts_from_token_zero():
    assert prompt_ids(CharTokenizer("abc"), "") == [0]


def test_generate_text_with_a_prompt_longer_than_block_size_works(tiny_gpt, small_tokenizer, text):
    prompt = text[:40]  # block_size is 16
    out = generate_text(tiny_gpt, small_tokenizer, prompt, 20, seed=2)
    assert out.startswith(prompt) and len(out) == 60


def test_generate_text_with_an_unknown_prompt_character_raises_naming_it(tiny_gpt, small_tokenizer):
    with pytest.raises(ValueError, match="'é'"):
        generate_text(tiny_gpt, small_tokenizer, "Roméo", 5)


def test_generate_text_with_a_non_text_prompt_raises_value_error(tiny_gpt, small_tokenizer):
    with pytest.raises(ValueError, match="prompt must be text"):
        generate_text(tiny_gpt, small_tokenizer, 42, 5)


def test_generate_text_seed_is_reproducible(tiny_gpt, small_tokenizer):
    a = generate_text(tiny_gpt, small_tokenizer, "KING:", 40, seed=7)
    assert a == generate_text(tiny_gpt, small_tokenizer, "KING:", 40, seed=7)


# ---------------------------------------------------------------- property


@settings(max_examples=40, deadline=None)
@given(
    temperature=st.floats(min_value=0.0, max_value=3.0),
    top_k=st.one_of(st.none(), st.integers(min_value=1, max_value=65)),
    max_new_tokens=st.integers(min_value=0, max_value=20),
    prompt=st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=20),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_property_output_has_prompt_plus_n_tokens_all_in_the_vocabulary(
    shared_tiny_gpt, temperature, top_k, max_new_tokens, prompt, seed
):
    idx = torch.tensor([prompt])
    out = generate(shared_tiny_gpt, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                   generator=_gen(seed))
    assert out.shape == (1, len(prompt) + max_new_tokens)
    assert torch.equal(out[:, : len(prompt)], idx)
    assert int(out.min()) >= 0 and int(out.max()) < 65
    assert math.isfinite(float(out.float().sum()))
