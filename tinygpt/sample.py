"""Generating text: temperature, top-k, greedy, with a KV cache.

The context window. Positions are learned and absolute, so the model sees at most block_size
tokens, numbered from 0. While the text fits, each new token reuses the keys and values cached
for the earlier ones. When the window is full it slides: the oldest half is dropped and the
cache is rebuilt from the newest half (one forward pass), so every token is predicted from
between block_size/2 and block_size tokens of context. (Sliding by one token would renumber
every position, and so invalidate the whole cache, at every step.) `use_cache=False` recomputes
the same windows from scratch and gives the same tokens: it exists to check the cache.

Edge cases, defined: an empty prompt starts from a newline (the start of a line), which is
not part of the returned text; a prompt longer than the window keeps its last block_size
tokens as context; temperature 0 is greedy; top_k at or above the vocabulary size filters
nothing.
"""

from __future__ import annotations

import math

import torch

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
    probs_out = []
    try:
        for _ in range(max_new_tokens):
            if seq.size(1) - start > block:
                start = seq.size(1) - half  # window full: slide by half
                if cache is not None:
                    cache.reset()
            if cache is None:
                logits, _ = model(seq[:, start:])
            elif cache.length == 0:
                logits, _ = model(seq[:, start:], cache=cache)
            else:
                logits, _ = model(seq[:, -1:], cache=cache)
            probs = next_token_probs(logits[:, -1, :], temperature, top_k)
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
