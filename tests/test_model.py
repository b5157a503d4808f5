"""The GPT: config validation, causality, attention, parameter counts, KV cache, optimizer groups."""

import math

import pytest
import torch
import torch.nn as nn

from tinygpt.data import get_batch
from tinygpt.model import GPT, CausalSelfAttention, Dropout, GPTConfig, KVCache, ln_vocab

WORKSHOP = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)


# ---------------------------------------------------------------- config


def test_config_n_embd_not_divisible_by_n_head_raises():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=6)


@pytest.mark.parametrize("field", ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_config_sizes_must_be_positive_integers(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: value})


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5, float("nan")])
def test_config_dropout_outside_zero_to_one_raises(dropout):
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=dropout)


def test_config_accepts_the_workshop_configuration():
    cfg = GPTConfig(**WORKSHOP)
    assert cfg.n_embd // cfg.n_head == 64


def test_config_to_dict_from_dict_round_trip():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=4, dropout=0.1, bias=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown GPTConfig fields"):
        GPTConfig.from_dict({**GPTConfig().to_dict(), "n_experts": 8})


# ---------------------------------------------------------------- attention


def test_attention_is_causal_changing_a_future_token_leaves_earlier_logits_unchanged(tiny_gpt):
    torch.manual_seed(1)
    idx = torch.randint(65, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 65
    with torch.no_grad():
        a, _ = tiny_gpt(idx)
        b, _ = tiny_gpt(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=0, atol=1e-6)
    # the changed position and every later one see the change
    assert all(not torch.allclose(a[0, t], b[0, t], atol=1e-4) for t in range(10, 16))


def test_fused_attention_equals_explicit_masked_softmax_attention():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32, dropout=0.0)
    attn = CausalSelfAttention(cfg).eval()
    with torch.no_grad():
        attn.c_proj.bias.normal_()  # non-zero biases, so the test would notice one missing
        attn.c_attn.bias.normal_()
    B, T, C, H = 3, 12, 32, 4
    x = torch.randn(B, T, C)

    # attention written out: q k^T / sqrt(d), future masked with -inf, softmax, weighted sum of v
    q, k, v = (x @ attn.c_attn.weight.T + attn.c_attn.bias).split(C, dim=2)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)
    expected = y @ attn.c_proj.weight.T + attn.c_proj.bias

    with torch.no_grad():
        got = attn(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_attention_weights_view_gives_the_same_output_as_the_fused_kernel():
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32)).eval()
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        fused = attn(x)
        explicit, weights = attn(x, need_weights=True)
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn.attention_weights(x), weights)


def test_attention_weights_are_causal_rows_that_sum_to_one():
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32))
    w = attn.attention_weights(torch.randn(2, 12, 32))
    assert w.shape == (2, 4, 12, 12)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 12))
    assert (w.triu(1) == 0).all()


def test_attention_weights_of_a_chunk_after_cached_tokens_see_the_cache(tiny_gpt):
    """The need_weights view uses the same cache and mask as the cached forward pass."""
    torch.manual_seed(5)
    attn = tiny_gpt.blocks[0].attn
    x = torch.randn(1, 10, tiny_gpt.config.n_embd)
    cache = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        attn(x[:, :6], cache, 0)
        cache.length = 6
        _, chunk = attn(x[:, 6:], cache, 0, need_weights=True)
    torch.testing.assert_close(chunk, attn.attention_weights(x)[:, :, 6:, :])


# ---------------------------------------------------------------- parameters
# The workshop's configuration (6 layers, 6 heads, n_embd 384, block_size 256, 65 characters),
# counted by hand: a Linear(i, o) with a bias has i*o + o parameters, a LayerNorm(C) 2C.

C, V, T, L = 384, 65, 256, 6
LAYER_NORM = 2 * C
ATTENTION = (C * 3 * C + 3 * C) + (C * C + C)  # c_attn with a bias, c_proj
MLP_PARAMS = (C * 4 * C + 4 * C) + (4 * C * C + C)  # c_fc, c_proj
BLOCK = ATTENTION + MLP_PARAMS + 2 * LAYER_NORM
TOTAL = V * C + T * C + L * BLOCK + LAYER_NORM + C * V  # tok_emb, pos_emb, blocks, ln_f, lm_head (no bias)


@pytest.fixture(scope="module")
def workshop_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**WORKSHOP))


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_hand_counts_are_the_workshop_figures():
    assert (TOTAL, BLOCK, ATTENTION, MLP_PARAMS) == (10_795_776, 1_774_464, 591_360, 1_181_568)


def test_workshop_model_has_the_hand_counted_parameters(workshop_model):
    assert workshop_model.num_params() == TOTAL


def test_one_workshop_block_has_the_hand_counted_parameters(workshop_model):
    block = workshop_model.blocks[0]
    assert count(block) == BLOCK
    assert count(block.attn) == ATTENTION and count(block.mlp) == MLP_PARAMS
    assert count(block.ln_1) == count(block.ln_2) == LAYER_NORM


def test_block_breakdown_counts_each_component(workshop_model):
    assert GPT.block_breakdown(workshop_model.blocks[0]) == {
        "ln_1": LAYER_NORM,
        "attention q,k,v (c_attn)": C * 3 * C + 3 * C,
        "attention projection (c_proj)": C * C + C,
        "ln_2": LAYER_NORM,
        "MLP expand (c_fc)": C * 4 * C + 4 * C,
        "MLP project (c_proj)": 4 * C * C + C,
    }


def test_param_breakdown_counts_each_component_and_sums_to_num_params(workshop_model):
    breakdown = workshop_model.param_breakdown()
    assert breakdown["token embedding (tok_emb)"] == V * C
    assert breakdown["position embedding (pos_emb)"] == T * C
    assert all(breakdown[f"block {i}"] == BLOCK for i in range(L))
    assert breakdown["final LayerNorm (ln_f)"] == LAYER_NORM
    assert breakdown["language-model head (lm_head)"] == C * V
    assert sum(breakdown.values()) == workshop_model.num_params()


def test_the_workshop_names_and_biases(workshop_model):
    block = workshop_model.blocks[0]
    assert isinstance(workshop_model.blocks, nn.ModuleList)
    assert workshop_model.tok_emb.weight.shape == (V, C) and workshop_model.pos_emb.weight.shape == (T, C)
    assert block.attn.c_attn.bias is not None and block.attn.c_proj.bias is not None
    assert block.mlp.c_fc.bias is not None and block.mlp.c_proj.bias is not None
    assert workshop_model.lm_head.bias is None


def test_gelu_is_the_exact_erf_form(workshop_model):
    x = torch.linspace(-4, 4, 101)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(workshop_model.blocks[0].mlp.gelu(x), exact)


def test_config_defaults_are_the_workshop_model():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (V, T, L, 6, C)
    assert cfg.dropout == 0.0 and cfg.bias is True


def test_bias_false_drops_every_bias():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False))
    assert not [name for name, _ in model.named_parameters() if name.endswith("bias")]


def test_initial_loss_of_an_untrained_model_is_close_to_ln_vocab(data):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0)).eval()
    x, y = get_batch(data, 64, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, loss = model(x, y)
    assert ln_vocab(65) == pytest.approx(math.log(65))
    assert abs(loss.item() - math.log(65)) < 0.1


def test_forward_without_targets_returns_logits_and_no_loss(tiny_gpt):
    logits, loss = tiny_gpt(torch.zeros(2, 5, dtype=torch.long))
    assert logits.shape == (2, 5, 65)
    assert loss is None


# ---------------------------------------------------------------- KV cache


def _full_logits(model, idx):
    with torch.no_grad():
        return model(idx)[0]


def test_kv_cache_prefill_then_one_token_at_a_time_equals_full_forward(tiny_gpt):
    torch.manual_seed(2)
    idx = torch.randint(65, (2, 16))
    full = _full_logits(tiny_gpt, idx)
    cache = KVCache(tiny_gpt.config, batch_size=2)
    pieces = []
    with torch.no_grad():
        pieces.append(tiny_gpt(idx[:, :5], cache=cache)[0])
        for t in range(5, 16):
            pieces.append(tiny_gpt(idx[:, t : t + 1], cache=cache)[0])
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_multi_token_chunk_after_prefill_equals_full_forward(tiny_gpt):
    torch.manual_seed(3)
    idx = torch.randint(65, (2, 16))
    full = _full_logits(tiny_gpt, idx)
    cache = KVCache(tiny_gpt.config, batch_size=2)
    with torch.no_grad():
        a = tiny_gpt(idx[:, :4], cache=cache)[0]
        b = tiny_gpt(idx[:, 4:10], cache=cache)[0]  # a chunk of 6: needs its own causal mask
        c = tiny_gpt(idx[:, 10:11], cache=cache)[0]
        d = tiny_gpt(idx[:, 11:], cache=cache)[0]
    torch.testing.assert_close(torch.cat([a, b, c, d], dim=1), full, rtol=1e-5, atol=1e-5)


def test_kv_cache_decoding_without_biases_equals_full_forward(make_tiny_gpt):
    model = make_tiny_gpt(bias=False)
    idx = torch.randint(65, (1, 10), generator=torch.Generator().manual_seed(11))
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        pieces = [model(idx[:, :3], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(3, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), _full_logits(model, idx), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_block_decode_gives_what_the_blocks_forward_gives_for_one_new_token(make_tiny_gpt, bias):
    model = make_tiny_gpt(bias=bias)
    x = torch.randn(2, 7, model.config.n_embd, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            caches = [KVCache(model.config, batch_size=2) for _ in range(2)]
            for cache in caches:  # the same six tokens cached in both
                block(x[:, :6], cache, layer)
                cache.length = 6
            decoded = block.decode(x[:, 6], caches[0], layer)
            forwarded = block(x[:, 6:], caches[1], layer)[:, 0]
            torch.testing.assert_close(decoded, forwarded, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(caches[0].kv[layer], caches[1].kv[layer])


def test_generation_without_autograd_on_a_cpu_decodes_through_block_decode(make_tiny_gpt, monkeypatch):
    model = make_tiny_gpt()
    calls = []
    block_decode = type(model.blocks[0]).decode
    monkeypatch.setattr(type(model.blocks[0]), "decode", lambda *a: calls.append(1) or block_decode(*a))
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    assert len(calls) == model.config.n_layer  # the one new token, through every block


def test_decoding_in_training_mode_applies_every_dropout_as_forward_does(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.5)
    idx = torch.randint(65, (1, 5), generator=torch.Generator().manual_seed(14))
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model.eval()(idx[:, :4], cache=cache)
    model.train()
    steps = []
    for grad in (False, True):  # without autograd a CPU decode could take Block.decode, which has no dropout
        cache.length = 4
        torch.manual_seed(15)
        with torch.set_grad_enabled(grad):
            steps.append(model(idx[:, 4:], cache=cache)[0].detach())
    torch.testing.assert_close(steps[0], steps[1])


def test_kv_cache_decoding_with_autograd_on_gives_every_weight_a_gradient(make_tiny_gpt):
    model = make_tiny_gpt()
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
    model(torch.ones(1, 1, dtype=torch.long), cache=cache)[0].sum().backward()
    for name in ("blocks.1.attn.c_attn.weight", "blocks.1.mlp.c_fc.weight", "blocks.1.mlp.c_proj.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_a_new_cache_decodes_with_the_weights_as_they_are_now(make_tiny_gpt):
    model = make_tiny_gpt()
    idx = torch.randint(65, (1, 6), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        cache = KVCache(model.config, batch_size=1)
        model(idx[:, :5], cache=cache), model(idx[:, 5:], cache=cache)
        for p in model.parameters():
            p.mul_(1.5)
        cache = KVCache(model.config, batch_size=1)
        model(idx[:, :5], cache=cache)
        last = model(idx[:, 5:], cache=cache)[0]
    torch.testing.assert_close(last, _full_logits(model, idx)[:, 5:], rtol=1e-5, atol=1e-5)


def test_kv_cache_reset_starts_again_from_position_zero(tiny_gpt):
    idx = torch.randint(65, (1, 6), generator=torch.Generator().manual_seed(4))
    cache = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        tiny_gpt(torch.zeros(1, 9, dtype=torch.long), cache=cache)
        cache.reset()
        again = tiny_gpt(idx, cache=cache)[0]
    torch.testing.assert_close(again, _full_logits(tiny_gpt, idx), rtol=1e-5, atol=1e-5)


def test_sequence_longer_than_block_size_raises_value_error(tiny_gpt):
    with pytest.raises(ValueError, match="longer than block_size 16"):
        tiny_gpt(torch.zeros(1, 17, dtype=torch.long))


def test_cached_tokens_count_towards_block_size(tiny_gpt):
    cache = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        tiny_gpt(torch.zeros(1, 15, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="17 tokens"):
            tiny_gpt(torch.zeros(1, 2, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------- dropout


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest_by_one_over_one_minus_p():
    torch.manual_seed(0)
    x = torch.rand(256, 1000) + 0.5  # never zero, so every zero is a dropped element
    y = Dropout(0.2).train()(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.2) < 0.005  # 256,000 draws: sd 0.0008
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.8)


def test_dropout_masks_are_independent_draws_per_element_and_per_call():
    torch.manual_seed(0)
    x = torch.ones(64, 1001)  # an odd size: the last random word is only partly used
    d = Dropout(0.5).train()
    a, b = d(x) == 0, d(x) == 0
    assert not torch.equal(a, b)
    # neighbouring elements (which share a 64-bit random word) are uncorrelated
    first, second = a.flatten()[0::2].float(), a.flatten()[1::2].float()
    corr = torch.corrcoef(torch.stack([first[:32000], second[:32000]]))[0, 1]
    assert abs(corr.item()) < 0.03


def test_dropout_is_the_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(8, 32)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_dropout_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(16, 64, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    kept = (y != 0).float()
    torch.testing.assert_close(x.grad, kept / 0.75)


def test_dropout_draws_from_the_global_seed_so_training_is_reproducible():
    x = torch.ones(4, 100)
    torch.manual_seed(7)
    a = Dropout(0.3).train()(x)
    torch.manual_seed(7)
    b = Dropout(0.3).train()(x)
    assert torch.equal(a, b)


def test_attention_weights_are_not_dropped_in_training():
    """Only the attention output (resid_dropout) is dropped, so the fused kernel can run."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32, dropout=0.5)
    attn = CausalSelfAttention(cfg)
    attn.resid_dropout.p = 0.0
    x = torch.randn(2, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn.train()(x), attn.eval()(x))


# ---------------------------------------------------------------- optimizer


def test_weight_decay_applies_to_linear_weights_only(tiny_gpt):
    opt = tiny_gpt.configure_optimizer(lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    not_decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    linear_weights = {id(m.weight) for m in tiny_gpt.modules() if isinstance(m, nn.Linear)}
    everything = {id(p) for p in tiny_gpt.parameters()}
    assert decayed == linear_weights
    assert not_decayed == everything - linear_weights
    assert id(tiny_gpt.tok_emb.weight) in not_decayed and id(tiny_gpt.ln_f.weight) in not_decayed
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(tiny_gpt.parameters()))


def test_optimizer_on_cpu_uses_the_fused_adamw_kernel(tiny_gpt):
    opt = tiny_gpt.configure_optimizer(lr=1e-3, weight_decay=0.1, device_type="cpu")
    assert opt.defaults["fused"] is True


# ---------------------------------------------------------------- last_only (generation)


def test_last_only_gives_the_logits_of_the_last_position(tiny_gpt):
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        full = tiny_gpt(idx)[0]
        last = tiny_gpt(idx, last_only=True)[0]
    assert last.shape == (2, 1, 65)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)


def test_last_only_with_a_cache_gives_the_logits_of_the_last_position(tiny_gpt):
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(9))
    cache = KVCache(tiny_gpt.config, batch_size=2)
    with torch.no_grad():
        last = tiny_gpt(idx, cache=cache, last_only=True)[0]
    assert last.shape == (2, 1, 65)
    torch.testing.assert_close(last, _full_logits(tiny_gpt, idx)[:, -1:], rtol=1e-5, atol=1e-5)


def test_last_only_at_the_workshop_size_gives_the_logits_of_the_last_position(workshop_model):
    idx = torch.randint(65, (1, 256), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        last = workshop_model(idx, last_only=True)[0]
    torch.testing.assert_close(last, _full_logits(workshop_model, idx)[:, -1:], rtol=1e-5, atol=1e-5)


def test_last_only_prefill_still_caches_every_position(tiny_gpt):
    idx = torch.randint(65, (1, 12), generator=torch.Generator().manual_seed(7))
    cache = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        tiny_gpt(idx[:, :8], cache=cache, last_only=True)
        rest = torch.cat([tiny_gpt(idx[:, t : t + 1], cache=cache)[0] for t in range(8, 12)], dim=1)
    torch.testing.assert_close(rest, _full_logits(tiny_gpt, idx)[:, 8:], rtol=1e-5, atol=1e-5)


def test_last_only_attention_weights_are_the_last_row(tiny_gpt):
    attn = tiny_gpt.blocks[0].attn
    x = torch.randn(1, 9, tiny_gpt.config.n_embd, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        _, last = attn(x, need_weights=True, last_only=True)
    torch.testing.assert_close(last, attn.attention_weights(x)[:, :, -1:])


def test_last_only_with_targets_raises_value_error(tiny_gpt):
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="last_only is for generation"):
        tiny_gpt(idx, idx, last_only=True)


@pytest.mark.parametrize("device_type", ["cpu", "cuda", "mps"])
def test_adamw_is_fused_where_pytorch_has_a_fused_kernel(device_type):
    model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=1, n_embd=8))
    assert model.configure_optimizer(1e-3, 0.1, device_type=device_type).defaults["fused"] is True
