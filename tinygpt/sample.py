"""Generating text: temperature, top-k, greedy, with a KV cache.

The context window. Positions are learned and absolute, so the model sees at most block_size
tokens, numbered from 0. While the text fits, each new token reuses the keys and values cached
for the earlier ones. When the window is full it slides: the oldest half is dropped and the
cache is rebuilt from the newest half (one forward pass), so every token is predicted from
between block_size/2 and block_size tokens of context. (Sliding by one token would renumber
every position, and so invalidate the whole cache, at every step.) `use_cache=False` recomputes
the same windows from scratch and gives the same tokens: it exists to check the cache. With the
cache, each new token goes through `Decoder.step`, the model's forward pass for one token written
without module calls (see its docstring).

Edge cases, defined: an empty prompt starts from a newline (the start of a line), which is
not part of the returned text; a prompt longer than the window keeps its last block_size
tokens as context; temperature 0 is greedy; top_k at or above the vocabulary size filters
nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import GPT, KVCache

MAX_NEW_TOKENS = 1_000_000


def check_sampling_args(temperature, top_k, max_new_tokens, vocab_size: int):
    """Validate the sampling arguments; returns top_k clamped to the vocabulary (None: off)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, or None for no filtering; got {top_k!r}")
        top_k = min(top_k, vocab_size)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be a whole number from 0 to {MAX_NEW_TOKENS:,}, got {max_new_tokens!r}")
    return top_k


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """The distribution the next token is drawn from, given the last position's logits (B, V)."""
    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    # shifted so the largest logit is 0: a tiny temperature then sends the others to -inf,
    # never inf - inf = nan (and a temperature below float32's smallest normal would round to 0)
    logits = logits - logits.max(-1, keepdim=True).values
    logits = logits / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits, dim=-1)


class Decoder:
    """GPT.forward for one new token with a KV cache, written as plain tensor operations.

    Why a second path: on a CPU every module call and every operation costs microseconds however
    small its tensors, and a token through the laptop model is about a hundred of them. This is
    the same computation in about seventy, and it multiplies by weight matrices transposed once
    per `generate` call: a (1, C) x (C, N) product runs about 2x faster from a contiguous (C, N)
    matrix than from nn.Linear's (N, C) one. Inference only (no dropout); built afresh by each
    `generate` call, so it always has the model's current weights. Tests check it against GPT.forward.
    """

    def __init__(self, model: GPT):
        def t(linear):  # (in, out), contiguous, and its bias (or None)
            return linear.weight.t().contiguous(), linear.bias

        c = model.config
        self.n_embd, self.n_head, self.block_size = c.n_embd, c.n_head, c.block_size
        self.wte, self.wpe = model.wte.weight, model.wpe.weight
        self.blocks = [
            (b.ln_1, t(b.attn.c_attn), t(b.attn.c_proj), b.ln_2, t(b.mlp.c_fc), t(b.mlp.c_proj))
            for b in model.blocks
        ]
        self.ln_f, self.lm_head = model.ln_f, t(model.lm_head)

    def step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, vocab) for the tokens idx (B,) at position cache.length; caches their k, v."""
        pos, C, nh = cache.length, self.n_embd, self.n_head
        if pos >= self.block_size:
            raise ValueError(f"sequence of {pos + 1} tokens is longer than block_size {self.block_size}")
        B = idx.size(0)
        x = F.embedding(idx, self.wte) + self.wpe[pos]
        for layer, (ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj) in enumerate(self.blocks):
            qkv = _linear(_layer_norm(x, ln_1), c_attn).view(B, 3, nh, 1, C // nh)
            cache.k[layer].narrow(2, pos, 1).copy_(qkv[:, 1])
            cache.v[layer].narrow(2, pos, 1).copy_(qkv[:, 2])
            k, v = cache.k[layer].narrow(2, 0, pos + 1), cache.v[layer].narrow(2, 0, pos + 1)
            y = F.scaled_dot_product_attention(qkv[:, 0], k, v)  # one query: nothing to mask
            x = x + _linear(y.reshape(B, C), c_proj)  # reshape: other devices may lay y out differently
            x = x + _linear(F.gelu(_linear(_layer_norm(x, ln_2), c_fc)), mlp_proj)
        cache.length += 1
        return _linear(_layer_norm(x, self.ln_f), self.lm_head)


def _linear(x, weight_t_and_bias):
    w, b = weight_t_and_bias
    return x @ w if b is None else torch.addmm(b, x, w)


def _layer_norm(x, ln: torch.nn.LayerNorm):
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    return_probs: bool = False,
):
    """Append `max_new_tokens` sampled tokens to `idx` (B, T) and return the whole sequence.

    With `return_probs`, also return the probability each new token was drawn with (B, N).
    """
    # inference mode: no autograd bookkeeping at all, ~10% faster per token than no_grad
    with torch.inference_mode():
        seq, probs = _generate(model, idx, max_new_tokens, temperature, top_k, generator, use_cache)
    seq, probs = seq.clone(), probs.clone()  # ordinary tensors again, usable anywhere
    return (seq, probs) if return_probs else seq


def _generate(model, idx, max_new_tokens, temperature, top_k, generator, use_cache):
    cfg = model.config
    top_k = check_sampling_args(temperature, top_k, max_new_tokens, cfg.vocab_size)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("idx must be a (batch, time) tensor with at least one token")
    was_training = model.training
    model.eval()
    device = idx.device
    block, half = cfg.block_size, max(1, cfg.block_size // 2)
    seq = idx
    start = max(0, idx.size(1) - block)  # first token of the current window
    cache = KVCache(cfg, idx.size(0), device=device, dtype=model.wte.weight.dtype) if use_cache else None
    decoder = Decoder(model) if use_cache else None
    probs_out = []
    try:
        for _ in range(max_new_tokens):
            if seq.size(1) - start > block:
                start = seq.size(1) - half  # window full: slide by half
                if cache is not None:
                    cache.reset()
            if cache is None:
                logits = model(seq[:, start:])[0][:, -1]
            elif cache.length == 0:  # the prompt, or the newest half after a slide, in one pass
                logits = model(seq[:, start:], cache=cache)[0][:, -1]
            else:
                logits = decoder.step(seq[:, -1], cache)
            probs = next_token_probs(logits, temperature, top_k)
            if temperature == 0:
                nxt = probs.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
            probs_out.append(probs.gather(1, nxt))
            seq = torch.cat([seq, nxt], dim=1)
    finally:
        model.train(was_training)
    probs = torch.cat(probs_out, dim=1) if probs_out else torch.empty(idx.size(0), 0)
    return seq, probs


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Encode a prompt; an empty prompt becomes a single newline (see the module docstring)."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    if prompt == "":
        if "\n" in tokenizer.stoi:
            return [tokenizer.stoi["\n"]]
        return [0]
    return tokenizer.encode(prompt)


def generate_text(
    model: GPT,
    tokenizer,
    prompt: str = "",
    max_new_tokens: int = 500,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    include_prompt: bool = True,
) -> str:
    """Continue `prompt` and return the text (the prompt first, unless include_prompt=False)."""
    ids = prompt_ids(tokenizer, prompt)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    text = tokenizer.decode(out[0, len(ids):].tolist())
    return prompt + text if include_prompt else text
