"""Generating text: temperature, top-k, top-p (nucleus), greedy, with a KV cache.

The context window. Positions are learned and absolute, so the model sees at most block_size
tokens, numbered from 0. By default (window="exact", the workshop's generate) every new token is
predicted from the last min(length, block_size) tokens. While the text fits in the window, each
new token goes through GPT.forward alone, reusing the keys and values cached for the earlier
ones. Past the window every token sits one position earlier at each step, so nothing cached
stays valid: each new token is a fresh forward pass over the last block_size tokens.

window="slide" is a faster approximation: when the window is full, the oldest half is dropped
and the cache is rebuilt from the newest half (one forward pass), so every token is predicted
from between block_size/2 and block_size tokens of context, almost always from the cache.

`stream` is generate one token at a time (the playground shows the text as it is drawn); both
drive the same loop, so they draw the same tokens.

Edge cases, defined: an empty prompt starts from a newline (the start of a line), which is
not part of the returned text; a prompt longer than the window keeps its last block_size
tokens as context; temperature 0 is greedy; top_k at or above the vocabulary size filters
nothing; top_p 1.0 filters nothing; a model whose output is not finite raises ValueError.

The filters apply in Hugging Face generate's order: temperature, then top-k, then top-p (the
smallest set of the likeliest tokens whose probabilities sum to at least top_p, never empty).
The defaults and validators are tinygpt.checks', shared with the command line and the playground.
"""

from __future__ import annotations

import copy

import torch

from . import checks
from .fast_decode import decoding_copy, worth_copying
from .model import GPT, KVCache
from .threads import generation_threads, using_threads


def eval_view(model: GPT) -> GPT:
    """`model` as generation needs it, in eval mode (no dropout), without changing `model`'s mode.

    A model already in eval mode throughout is returned as it is. Otherwise (it is training,
    perhaps in another thread: a playground open during train()), a copy of its modules in eval
    mode that shares its parameters and buffers: no weight is copied, and the flags the training
    reads (`module.training`) are never touched, so its dropout stays on. Costs a copy of the
    module objects (about a millisecond for the laptop model) per generate or stream call."""
    if not any(m.training for m in model.modules()):
        return model
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared).eval()


def check_sampling_args(temperature, top_k, max_new_tokens, vocab_size: int, top_p=checks.TOP_P):
    """Validate the sampling arguments (tinygpt.checks); returns (top_k clamped to the vocabulary or
    None, top_p as a float)."""
    checks.temperature(temperature)
    top_k = checks.top_k(top_k, vocab_size)
    top_p = checks.top_p(top_p)
    checks.max_new_tokens(max_new_tokens)
    return top_k, top_p


def next_token_probs(logits: torch.Tensor, temperature: float = checks.TEMPERATURE, top_k: int | None = checks.TOP_K,
                     top_p: float = checks.TOP_P) -> torch.Tensor:
    """The distribution the next token is drawn from, given the last position's logits (B, V):
    softmax(logits / temperature), keeping only the top_k likeliest tokens, then only the smallest
    set of the likeliest whose probabilities sum to at least top_p (at least one), renormalised."""
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
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the likelier ones already reach top_p; the likeliest is always kept
        drop_sorted = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        drop_sorted[:, 0] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


WINDOWS = ("exact", "slide")


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = checks.TEMPERATURE,
    top_k: int | None = checks.TOP_K,
    top_p: float = checks.TOP_P,
    generator: torch.Generator | None = None,
    window: str = "exact",
    use_cache: bool = True,
    return_probs: bool = False,
):
    """Append `max_new_tokens` sampled tokens to `idx` (B, T) and return the whole sequence (B, T + N).

    temperature, top_k and top_p filter the distribution as next_token_probs does (top_p=1.0: off).
    window="exact" (the default) predicts every token from the last min(length, block_size) tokens,
    as the workshop's generate does; window="slide" is the faster approximation described in the
    module docstring. `use_cache=False` computes the same windows without the KV cache (it exists
    to check the cache). The model runs in eval mode (no dropout) without its mode being changed
    (a model in training mode runs through eval_view; on a CPU a model with 4 MB of weights or more
    runs as a decoding copy, fast_decode.py, the same forward, faster). With `return_probs`, also return the
    probability each new token was drawn with (B, N). Raises ValueError for bad arguments and when
    the model's output is not finite (a NaN or infinite weight).
    """
    steps = _steps(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   generator=generator, window=window, use_cache=use_cache)
    # inference mode: no autograd bookkeeping at all, ~10% faster per token than no_grad; on a CPU
    # the free cores (threads.py: threads that wait for a busy core stall every token)
    with torch.inference_mode(), using_threads(generation_threads(idx.device.type)):
        seq, probs, _ = next(steps)
        for _ in steps:
            pass
    seq, probs = seq.clone(), probs.clone()  # ordinary tensors again, usable anywhere
    return (seq, probs) if return_probs else seq


def stream(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, distributions: bool = False, **options):
    """generate, one token at a time: yields (token (B,), probability it was drawn with (B,)) for
    each new token as soon as it is drawn, the same tokens generate returns with the same arguments.
    With `distributions`, also the whole distribution it was drawn from (B, V), after temperature,
    top-k and top-p (what the playground shows on hover).
    `options` are generate's keyword arguments but return_probs (temperature, top_k, top_p, generator,
    window, use_cache); any other raises TypeError.

    Stop early with .close() (or by dropping the iterator). Like generate, it never changes the model's mode
    (see eval_view): a model training in another thread keeps its dropout.
    Bad arguments raise ValueError here, before the first token; a model whose output is not finite
    raises ValueError from the iteration.
    """
    steps = _steps(model, idx, max_new_tokens, **options)
    with torch.inference_mode():
        seq, probs, _ = next(steps)  # checks the arguments now
    return _yield_tokens(steps, seq, probs, idx.size(1), distributions, generation_threads(idx.device.type))


def _yield_tokens(steps, seq, probs, T0, distributions, n_threads):
    # the thread count set once for the whole stream (setting it at every token costs more than a token)
    with using_threads(n_threads):
        try:
            for n in range(probs.size(1)):
                with torch.inference_mode():  # only around the work: the caller's code between tokens runs normally
                    _, _, dist = next(steps)
                # clones made outside inference mode: ordinary tensors
                if distributions:
                    yield seq[:, T0 + n].clone(), probs[:, n].clone(), dist.clone()
                else:
                    yield seq[:, T0 + n].clone(), probs[:, n].clone()
        finally:
            steps.close()


def _steps(model, idx, max_new_tokens, *, temperature=checks.TEMPERATURE, top_k=checks.TOP_K, top_p=checks.TOP_P,
           generator=None, window="exact", use_cache=True):
    """Yields the (B, T0 + N) sequence and (B, N) probabilities buffers (and None), then once more
    after each new token is written into them, with the (B, V) distribution it was drawn from.
    The only generation loop: generate and stream drive it."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(map(repr, WINDOWS))}, got {window!r}")
    cfg = model.config
    top_k, top_p = check_sampling_args(temperature, top_k, max_new_tokens, cfg.vocab_size, top_p)
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError("idx must be a (batch, time) tensor with at least one token")
    B, T0 = idx.shape
    block, half = cfg.block_size, max(1, cfg.block_size // 2)
    seq = torch.empty(B, T0 + max_new_tokens, dtype=idx.dtype, device=idx.device)
    seq[:, :T0] = idx
    probs_out = torch.empty(B, max_new_tokens, device=idx.device)
    yield seq, probs_out, None
    start = max(0, T0 - block)  # first token of the current window (slide)
    cache = KVCache(cfg, B, device=idx.device, dtype=model.tok_emb.weight.dtype) if use_cache else None
    # on a CPU, a copy in eval mode whose weights read faster one token at a time (fast_decode.py)
    model = decoding_copy(model) if idx.device.type == "cpu" and worth_copying(model) else eval_view(model)
    for n in range(T0, T0 + max_new_tokens):  # n: tokens so far
        if window == "slide" and n - start > block:
            start = n - half  # window full: keep its newest half
            if cache is not None:
                cache.reset()
        if window == "exact":
            start = max(0, n - block)
        if cache is None or (window == "exact" and start > 0):
            # past the window every position moves by one at each step: a fresh window per token
            logits = model(seq[:, start:n])[0][:, -1]
        elif cache.length == 0:  # the prompt, or the newest half after a slide, in one pass
            logits = model(seq[:, start:n], cache=cache)[0][:, -1]
        else:
            logits = model(seq[:, n - 1 : n], cache=cache)[0][:, -1]
        if not torch.isfinite(logits).all():
            raise ValueError(
                "the model's output is not finite (NaN or infinite logits): "
                "its weights hold NaN or infinite values, e.g. after a diverged training run"
            )
        probs = next_token_probs(logits, temperature, top_k, top_p)
        if temperature == 0:
            nxt = probs.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(seq.device)
        seq[:, n : n + 1] = nxt
        probs_out[:, n - T0 : n - T0 + 1] = probs.gather(1, nxt)
        yield seq, probs_out, probs


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Encode a prompt; an empty prompt becomes a single newline (see the module docstring)."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    if prompt == "":
        if tokenizer.kind != "char":  # a byte-level BPE encodes any text
            return tokenizer.encode("\n")
        return [tokenizer.stoi["\n"]] if "\n" in tokenizer.stoi else [0]
    return tokenizer.encode(prompt)


def generate_text(
    model: GPT,
    tokenizer,
    prompt: str = "",
    max_new_tokens: int = 500,
    *,
    temperature: float = checks.TEMPERATURE,
    top_k: int | None = checks.TOP_K,
    top_p: float = checks.TOP_P,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    window: str = "exact",
    include_prompt: bool = True,
) -> str:
    """Continue `prompt` and return the text (the prompt first, unless include_prompt=False).

    seed (or generator) makes sampling reproducible; window is generate's. Raises ValueError for an
    unknown prompt character or bad sampling arguments."""
    ids = prompt_ids(tokenizer, prompt)
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   generator=generator, window=window)
    text = tokenizer.decode(out[0, len(ids):].tolist())
    return prompt + text if include_prompt else text
