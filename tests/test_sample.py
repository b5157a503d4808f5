"""Sampling: the KV cache, seeds, temperature, top-k, argument checks and the text interface."""

import math
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygpt.bpe import BPETokenizer
from tinygpt.checks import MAX_NEW_TOKENS
from tinygpt.model import GPT, GPTConfig
from tinygpt.sample import generate, generate_text, next_token_probs, prompt_ids, stream
from tinygpt.tokenizer import CharTokenizer


def _gen(seed):
    return torch.Generator().manual_seed(seed)


PROMPT = torch.tensor([[5, 17, 40]])


# ---------------------------------------------------------------- the window, and the KV cache


def _windowed_greedy(model, idx, n):
    """Greedy decoding the plain way: every token from the last block_size tokens, no cache."""
    seq = idx
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(seq[:, -model.config.block_size :])
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


def test_greedy_generation_predicts_every_token_from_the_last_block_size_tokens(tiny_gpt):
    out = generate(tiny_gpt, PROMPT, 60, temperature=0)  # block_size 16: mostly past the window
    assert torch.equal(out, _windowed_greedy(tiny_gpt, PROMPT, 60))


@pytest.mark.parametrize("window", ["exact", "slide"])
def test_cached_greedy_generation_equals_uncached_past_block_size(tiny_gpt, window):
    cached = generate(tiny_gpt, PROMPT, 100, temperature=0, window=window)
    uncached = generate(tiny_gpt, PROMPT, 100, temperature=0, window=window, use_cache=False)
    assert cached.shape == (1, 103)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("window", ["exact", "slide"])
def test_cached_seeded_sampling_equals_uncached_past_block_size(tiny_gpt, window):
    prompt = torch.tensor([[5, 17, 40], [1, 2, 3]])
    cached = generate(tiny_gpt, prompt, 100, temperature=1.0, generator=_gen(11), window=window)
    uncached = generate(tiny_gpt, prompt, 100, temperature=1.0, generator=_gen(11), window=window, use_cache=False)
    assert torch.equal(cached, uncached)


def test_cached_top_k_sampling_equals_uncached(tiny_gpt):
    cached = generate(tiny_gpt, PROMPT, 100, temperature=0.8, top_k=5, generator=_gen(3))
    uncached = generate(tiny_gpt, PROMPT, 100, temperature=0.8, top_k=5, generator=_gen(3), use_cache=False)
    assert torch.equal(cached, uncached)


def test_slide_window_predicts_from_the_newest_half_after_the_window_fills(tiny_gpt):
    """block_size 16: token 17 is predicted from tokens 9..16 (the newest half), not 2..16."""
    seq = generate(tiny_gpt, PROMPT, 14, temperature=0)  # 17 tokens: the window is full
    slide = generate(tiny_gpt, PROMPT, 15, temperature=0, window="slide")
    with torch.no_grad():
        from_half = tiny_gpt(seq[:, -8:])[0][:, -1].argmax(-1)
    assert torch.equal(slide[:, :17], seq) and slide[0, 17] == from_half[0]


def test_an_unknown_window_raises_value_error_naming_the_choices(tiny_gpt):
    with pytest.raises(ValueError, match="window must be one of 'exact', 'slide'"):
        generate(tiny_gpt, PROMPT, 5, window="half")


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_a_model_with_a_nan_weight_raises_a_clear_value_error(make_tiny_gpt, temperature):
    model = make_tiny_gpt()
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="the model's output is not finite"):
        generate(model, PROMPT, 5, temperature=temperature, generator=_gen(0))


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


def test_top_p_keeps_the_fewest_likeliest_tokens_whose_probabilities_reach_it():
    logits = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]).log()
    probs = next_token_probs(logits, temperature=1.0, top_p=0.8)  # 0.5 + 0.2 = 0.7 < 0.8 <= 0.85
    assert (probs[0, 3:] == 0).all()
    torch.testing.assert_close(probs[0, :3], torch.tensor([0.5, 0.2, 0.15]) / 0.85)


def test_top_p_reached_exactly_keeps_no_more_tokens():
    logits = torch.tensor([[0.5, 0.25, 0.25]]).log()
    probs = next_token_probs(logits, temperature=1.0, top_p=0.5)
    torch.testing.assert_close(probs, torch.tensor([[1.0, 0.0, 0.0]]))


def test_top_p_below_the_likeliest_probability_still_keeps_that_one_token():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    probs = next_token_probs(logits, temperature=1.0, top_p=0.01)
    torch.testing.assert_close(probs, torch.tensor([[0.0, 1.0, 0.0]]))


def test_top_p_applies_after_top_k_to_the_renormalised_distribution():
    # top_k=2 leaves 0.5 and 0.3, renormalised to 0.625 and 0.375: top_p=0.6 keeps only the first.
    # Without top_k first, 0.5 < 0.6 would keep the second too.
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    assert (next_token_probs(logits, 1.0, top_p=0.6) > 0).sum() == 2
    probs = next_token_probs(logits, 1.0, top_k=2, top_p=0.6)
    torch.testing.assert_close(probs, torch.tensor([[1.0, 0.0, 0.0]]))


def test_top_p_applies_after_the_temperature():
    logits = torch.tensor([[0.6, 0.4]]).log()
    assert (next_token_probs(logits, 1.0, top_p=0.55) > 0).sum() == 1
    assert (next_token_probs(logits, 10.0, top_p=0.55) > 0).sum() == 2  # flattened: 0.6 is no longer enough


def test_top_p_one_is_the_identity(tiny_gpt):
    logits = torch.randn(3, 65, generator=_gen(2))
    torch.testing.assert_close(next_token_probs(logits, 0.9, top_p=1.0), next_token_probs(logits, 0.9))
    assert torch.equal(generate(tiny_gpt, PROMPT, 40, top_p=1.0, generator=_gen(3)),
                       generate(tiny_gpt, PROMPT, 40, generator=_gen(3)))


def test_top_p_sampling_draws_only_from_the_nucleus(tiny_gpt):
    seq = generate(tiny_gpt, PROMPT, 12, top_p=0.5, generator=_gen(6))  # inside the 16-token window
    cached = generate(tiny_gpt, PROMPT, 12, top_p=0.5, generator=_gen(6), use_cache=False)
    assert torch.equal(seq, cached)
    for n in range(12):  # each drawn token was inside the nucleus of its own step
        with torch.no_grad():
            logits = tiny_gpt.eval()(seq[:, : PROMPT.size(1) + n])[0][:, -1]
        nucleus = next_token_probs(logits, 1.0, top_p=0.5)
        assert nucleus[0, seq[0, PROMPT.size(1) + n]] > 0


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
    assert tiny_gpt.tok_emb.weight.grad is not None


def test_generate_leaves_the_training_mode_as_it_was(tiny_gpt):
    tiny_gpt.train()
    generate(tiny_gpt, PROMPT, 3, generator=_gen(0))
    assert tiny_gpt.training


# ---------------------------------------------------------------- stream


@pytest.mark.parametrize("window", ["exact", "slide"])
def test_stream_yields_the_tokens_and_probabilities_generate_returns(tiny_gpt, window):
    prompt = torch.tensor([[5, 17, 40], [1, 2, 3]])
    seq, probs = generate(tiny_gpt, prompt, 40, temperature=0.9, top_k=20, generator=_gen(4), window=window,
                          return_probs=True)
    steps = list(stream(tiny_gpt, prompt, 40, temperature=0.9, top_k=20, generator=_gen(4), window=window))
    assert len(steps) == 40  # block_size 16: past the window
    assert torch.equal(torch.stack([token for token, _ in steps], dim=1), seq[:, 3:])
    assert torch.equal(torch.stack([p for _, p in steps], dim=1), probs)


def test_stream_with_distributions_yields_the_filtered_distribution_each_token_was_drawn_from(tiny_gpt):
    plain = list(stream(tiny_gpt, PROMPT, 12, top_k=5, top_p=0.8, generator=_gen(8)))
    detailed = list(stream(tiny_gpt, PROMPT, 12, top_k=5, top_p=0.8, generator=_gen(8), distributions=True))
    for (token, p), (token_d, p_d, dist) in zip(plain, detailed, strict=True):
        assert torch.equal(token, token_d) and torch.equal(p, p_d)
        assert dist.shape == (1, 65) and 1 <= (dist > 0).sum() <= 5
        torch.testing.assert_close(dist.sum(-1), torch.ones(1))
        assert dist[0, token[0]] == p[0]


def test_stream_checks_its_arguments_before_the_first_token(tiny_gpt):
    with pytest.raises(ValueError, match="temperature"):
        stream(tiny_gpt, PROMPT, 5, temperature=-1)


@pytest.mark.parametrize("option", ["return_probs", "temprature"])
def test_stream_rejects_an_option_generate_does_not_stream(tiny_gpt, option):
    with pytest.raises(TypeError, match=option):
        stream(tiny_gpt, PROMPT, 5, **{option: True})


def test_the_caller_runs_outside_inference_mode_between_streamed_tokens(tiny_gpt):
    for token, p in stream(tiny_gpt, PROMPT, 3, generator=_gen(0)):
        assert not torch.is_inference_mode_enabled()
        assert not token.is_inference() and not p.is_inference()


def test_a_stream_never_changes_the_models_mode(tiny_gpt):
    tiny_gpt.train()
    tokens = stream(tiny_gpt, PROMPT, 50, generator=_gen(0))
    next(tokens)
    assert tiny_gpt.training and all(m.training for m in tiny_gpt.modules())
    tokens.close()
    assert tiny_gpt.training


def test_a_model_in_training_mode_generates_without_dropout_as_in_eval_mode(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.5).train()
    trained = generate(model, PROMPT, 30, temperature=0.8, generator=_gen(3))
    assert model.training
    assert torch.equal(trained, generate(model.eval(), PROMPT, 30, temperature=0.8, generator=_gen(3)))


def test_generating_in_another_thread_never_turns_dropout_off_for_training(make_tiny_gpt):
    """A playground streaming from the model (one token drawn, the rest pending) while the
    training thread takes steps: every training forward ran with dropout on (training mode)."""
    model = make_tiny_gpt(dropout=0.2).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    seen, trainer = [], threading.get_ident()
    model.drop.register_forward_pre_hook(
        lambda module, args: seen.append(module.training) if threading.get_ident() == trainer else None)
    drawn, trained = threading.Event(), threading.Event()

    def playground():
        tokens = stream(model, PROMPT, 20, generator=_gen(1))
        next(tokens)
        drawn.set()
        trained.wait(timeout=60)
        for _ in tokens:
            pass

    other = threading.Thread(target=playground)
    other.start()
    assert drawn.wait(timeout=60)
    for _ in range(20):
        x = torch.randint(65, (4, 16))
        model(x, x)[1].backward()
        optimizer.step()
        optimizer.zero_grad()
    trained.set()
    other.join()
    assert seen == [True] * 20


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
        (dict(top_p=0), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=float("nan")), "top_p"),
        (dict(top_p=True), "top_p"),
        (dict(top_p="0.9"), "top_p"),
        (dict(top_p=None), "top_p"),
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


def test_an_empty_prompt_for_a_bpe_model_starts_from_the_newline_byte():
    bpe = BPETokenizer.train("to be or not to be\nthat is the question\n" * 20, 270)
    assert prompt_ids(bpe, "") == [ord("\n")]
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    out = generate_text(model, bpe, "", 12, seed=0)
    # the same as continuing an explicit newline, minus that newline
    assert out == bpe.decode(generate(model, torch.tensor([[ord("\n")]]), 12, generator=_gen(0))[0, 1:].tolist())


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
