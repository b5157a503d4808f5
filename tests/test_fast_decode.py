"""The decoding copy (tinygpt/fast_decode.py): generate on a CPU runs it, and draws the tokens the
teaching model's own forward draws."""

import pytest
import torch
import torch.nn as nn

from tinygpt.fast_decode import MIN_BYTES, decoding_copy, worth_copying
from tinygpt.model import KVCache
from tinygpt.sample import generate, next_token_probs

PROMPT = torch.tensor([[5, 17, 40]])


def _wide_gpt(make_tiny_gpt, seed=3):
    """The workshop's width (384, where the copy's layout is faster), one layer: 7 MB of weights, copied."""
    return make_tiny_gpt(seed=seed, n_layer=1, n_head=6, n_embd=384, block_size=64)


def _models_run(model, *args, **kwargs):
    """The GPT modules generate(model, ...) called forward on (a global hook sees a copy's modules too)."""
    called = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: called.append(module) if type(module) is type(model) else None)
    try:
        generate(model, *args, **kwargs)
    finally:
        handle.remove()
    return called


def _own_forward(model, idx, n, temperature, top_k=None, seed=0):
    """The teaching model itself, the plain way: prefill into a KV cache, then one forward a token."""
    generator = torch.Generator().manual_seed(seed)
    cache = KVCache(model.config, idx.size(0))
    seq = idx
    with torch.inference_mode():
        logits = model(idx, cache=cache)[0][:, -1]
        for _ in range(n):
            probs = next_token_probs(logits, temperature, top_k)
            if temperature == 0:
                nxt = probs.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(probs, 1, generator=generator)
            seq = torch.cat([seq, nxt], dim=1)
            logits = model(nxt, cache=cache)[0][:, -1]
    return seq


def test_the_copy_holds_the_same_weights_stored_in_out_and_leaves_the_model_as_it_was(make_tiny_gpt):
    model = make_tiny_gpt().train()
    fast = decoding_copy(model)
    assert not fast.training and model.training
    assert all(p.requires_grad for p in model.parameters()) and not any(p.requires_grad for p in fast.parameters())
    for (name, p), q in zip(model.named_parameters(), fast.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name
        assert p.is_contiguous(), name  # the model's own storage is untouched
    linears = [m for m in fast.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.weight.t().is_contiguous() for m in linears)  # (in, out) in memory


@pytest.mark.parametrize("temperature, top_k", [(0, None), (1.0, None), (0.8, 10)])
def test_generate_draws_the_tokens_of_the_teaching_models_own_forward(make_tiny_gpt, temperature, top_k):
    model = _wide_gpt(make_tiny_gpt)  # 60 tokens inside its window
    for seed in range(2):
        out = generate(model, PROMPT, 60, temperature=temperature, top_k=top_k,
                       generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out, _own_forward(model, PROMPT, 60, temperature, top_k, seed))


def test_a_change_of_the_weights_between_two_generations_is_seen(make_tiny_gpt):
    model = _wide_gpt(make_tiny_gpt, seed=1)
    before = generate(model, PROMPT, 12, temperature=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1)  # the likeliest token becomes the least likely
    after = generate(model, PROMPT, 12, temperature=0)
    assert not torch.equal(after, before)
    assert torch.equal(after, _own_forward(model, PROMPT, 12, temperature=0))


def test_generate_runs_a_copy_of_a_model_past_min_bytes_and_a_smaller_model_itself(make_tiny_gpt):
    wide, tiny = _wide_gpt(make_tiny_gpt), make_tiny_gpt()
    assert worth_copying(wide) and not worth_copying(tiny)
    two_layers = make_tiny_gpt(n_layer=2, n_head=6, n_embd=384, block_size=64)
    assert worth_copying(two_layers) and not worth_copying(two_layers.to(torch.bfloat16))  # 7 MB, not float32
    assert sum(m.weight.numel() * 4 for m in wide.modules() if isinstance(m, nn.Linear)) >= MIN_BYTES
    called = _models_run(wide, PROMPT, 4, temperature=0)
    assert len(called) == 4 and all(m is not wide for m in called) and len({id(m) for m in called}) == 1
    assert _models_run(tiny, PROMPT, 4, temperature=0) == [tiny] * 4
    wide.train()  # a model in training mode (perhaps training in another thread) keeps it: the copy is in eval
    generate(wide, PROMPT, 4, temperature=0)
    assert all(m.training for m in wide.modules())


class _Recorder:
    def __init__(self):
        self.sizes = []

    def hook(self, module, args, out):
        self.sizes.append(out.size(1))


def test_a_model_with_hooks_generates_as_itself_so_a_bound_method_hook_sees_every_token(make_tiny_gpt):
    model = _wide_gpt(make_tiny_gpt)
    recorder = _Recorder()  # a copy of the model would deep-copy the recorder with its bound method
    handle = model.blocks[0].mlp.register_forward_hook(recorder.hook)
    try:
        assert not worth_copying(model)
        generate(model, PROMPT, 5, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert recorder.sizes == [3, 1, 1, 1, 1] and worth_copying(model)
