"""The GPT: config validation, causality, attention, parameter counts, KV cache, optimizer groups."""

import math

import pytest
import torch
import torch.nn as nn

from tinygpt.data import get_batch
from tinygpt.model import GPT, CausalSelfAttention, GPTConfig, KVCache, ln_vocab
from tinygpt.sample import generate

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


def test_attention_weights_applied_to_the_values_reproduce_forwards_output():
    """attention_weights (for plots) recomputes the softmax the fused kernel applies in forward."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32)).eval()
    with torch.no_grad():
        attn.c_attn.bias.normal_()
    B, T, C, H = 2, 12, 32, 4
    x = torch.randn(B, T, C)
    weights = attn.attention_weights(x)
    with torch.no_grad():
        v = attn.c_attn(x)[..., 2 * C :].view(B, T, H, C // H).transpose(1, 2)
        y = attn.c_proj((weights @ v).transpose(1, 2).reshape(B, T, C))
        torch.testing.assert_close(y, attn(x), rtol=1e-5, atol=1e-5)


def test_attention_weights_are_causal_rows_that_sum_to_one():
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=4, n_embd=32))
    w = attn.attention_weights(torch.randn(2, 12, 32))
    assert w.shape == (2, 4, 12, 12)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 12))
    assert (w.triu(1) == 0).all()


def test_attention_of_a_chunk_after_cached_tokens_sees_the_cache(tiny_gpt):
    """A chunk after cached tokens gets the rows the whole sequence's causal attention gives it."""
    torch.manual_seed(5)
    attn = tiny_gpt.blocks[0].attn
    x = torch.randn(1, 10, tiny_gpt.config.n_embd)
    cache = KVCache(tiny_gpt.config, batch_size=1)
    with torch.no_grad():
        attn(x[:, :6], cache)
        cache.length = 6  # GPT.forward advances it once every layer has its keys and values
        chunk = attn(x[:, 6:], cache)
        torch.testing.assert_close(chunk, attn(x)[:, 6:], rtol=1e-5, atol=1e-5)


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
def test_a_blocks_one_token_step_through_the_cache_gives_its_full_forwards_last_row(make_tiny_gpt, bias):
    model = make_tiny_gpt(bias=bias)
    x = torch.randn(2, 7, model.config.n_embd, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        for block in model.blocks:
            cache = KVCache(model.config, batch_size=2)
            block(x[:, :6], cache)
            cache.length = 6
            step = block(x[:, 6:], cache)
            torch.testing.assert_close(step, block(x)[:, 6:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ["tiny", "workshop"])
def test_one_token_steps_through_the_cache_give_the_full_forwards_last_logits(make_tiny_gpt, workshop_model, config):
    model = workshop_model if config == "workshop" else make_tiny_gpt()
    T = model.config.block_size
    idx = torch.randint(65, (1, T), generator=torch.Generator().manual_seed(10))
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model(idx[:, : T - 3], cache=cache)
        for t in range(T - 3, T):
            last = model(idx[:, t : t + 1], cache=cache)[0]
    assert last.shape == (1, 1, 65)
    torch.testing.assert_close(last, _full_logits(model, idx)[:, -1:], rtol=1e-5, atol=1e-5)


def test_forward_hooks_on_a_block_run_for_every_token_of_cached_generation(make_tiny_gpt):
    model = make_tiny_gpt()
    tokens_seen = []
    handle = model.blocks[1].register_forward_hook(lambda module, args, out: tokens_seen.append(out.size(1)))
    try:
        generate(model, torch.zeros(1, 4, dtype=torch.long), 6, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert tokens_seen == [4, 1, 1, 1, 1, 1]  # the prompt in one pass, then one token per step


def test_the_cache_holds_only_the_keys_and_values(tiny_gpt):
    cfg = tiny_gpt.config
    x = torch.randint(65, (2, 5), generator=torch.Generator().manual_seed(16))
    cache = KVCache(cfg, batch_size=2)
    with torch.no_grad():
        tiny_gpt(x, cache=cache)
        block = tiny_gpt.blocks[0]
        h = block.ln_1(tiny_gpt.tok_emb(x) + tiny_gpt.pos_emb.weight[:5])
        _, k, v = block.attn.c_attn(h).split(cfg.n_embd, dim=2)
    assert set(vars(cache)) == {"k", "v", "length"} and cache.length == 5
    shape = (2, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    assert len(cache.k) == len(cache.v) == cfg.n_layer
    assert all(t.shape == shape for t in cache.k + cache.v)
    heads = lambda t: t.view(2, 5, cfg.n_head, -1).transpose(1, 2)  # noqa: E731
    torch.testing.assert_close(cache.k[0][:, :, :5], heads(k))
    torch.testing.assert_close(cache.v[0][:, :, :5], heads(v))


def test_decoding_in_training_mode_applies_every_dropout_as_forward_does(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.5)
    idx = torch.randint(65, (1, 5), generator=torch.Generator().manual_seed(14))
    cache = KVCache(model.config, batch_size=1)
    with torch.no_grad():
        model.eval()(idx[:, :4], cache=cache)
    model.train()
    steps = []
    for grad in (False, True):  # the same dropout masks, with autograd on or off
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


def test_every_dropout_is_nn_dropout_with_the_configured_p(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.2)
    dropouts = [m for m in model.modules() if "dropout" in type(m).__name__.lower()]
    assert all(type(m) is nn.Dropout and m.p == 0.2 for m in dropouts)
    assert len(dropouts) == 1 + 2 * model.config.n_layer  # embeddings, then each attention and MLP output


def test_training_mode_applies_dropout_and_eval_mode_does_not(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.5)
    idx = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(17))
    with torch.no_grad():
        model.train()
        a, b = model(idx)[0], model(idx)[0]
        model.eval()
        c, d = model(idx)[0], model(idx)[0]
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)


def test_dropout_draws_from_the_global_seed_so_training_is_reproducible(make_tiny_gpt):
    model = make_tiny_gpt(dropout=0.3).train()
    idx = torch.randint(65, (1, 16), generator=torch.Generator().manual_seed(18))
    torch.manual_seed(7)
    a = model(idx)[0]
    torch.manual_seed(7)
    b = model(idx)[0]
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


@pytest.mark.parametrize("device_type", ["cpu", "cuda", "mps"])
def test_adamw_is_fused_where_pytorch_has_a_fused_kernel(device_type):
    model = GPT(GPTConfig(vocab_size=65, block_size=8, n_layer=1, n_head=1, n_embd=8))
    assert model.configure_optimizer(1e-3, 0.1, device_type=device_type).defaults["fused"] is True
