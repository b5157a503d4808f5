"""Notebook 05's exercises: temperature and top-k by hand, a guess at what top-k=5 removes, one KV-cache step.

Each check runs the learner's code on fixed seeds against the package (`tinygpt.sample.next_token_probs`,
causal attention recomputed in full) and names the typical mistakes it recognises.
"""

from __future__ import annotations

import math

import torch

from ...sample import next_token_probs
from . import Hint, NotAttempted, call, exercise, number

VOCAB = 65


def _tensor(out, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise Hint(f"{what} should be a torch tensor, got {type(out).__name__}")
    return out.detach().float()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.allclose(a, b, atol=tol, rtol=1e-4)


# --- temperature and top-k ------------------------------------------------------------------------------

def _sampling_hint(out: torch.Tensor, logits: torch.Tensor, temperature: float, top_k: int) -> str | None:
    """What a wrong distribution `out` most likely did, or None when no typical mistake fits."""
    setting = f"temperature {temperature}, top_k {top_k}"
    if temperature > 0 and _close(out, torch.softmax(logits, -1) / temperature):
        return (f"you divided the probabilities by the temperature ({setting}): divide the logits, "
                "before the softmax")
    if bool((out < 0).any()):
        return (f"your result has negative values (down to {out.min().item():.3g}) ({setting}): probabilities are "
                "never negative; return the softmax of the masked logits, not logits or log-probabilities")
    total = out.sum().item()
    if not math.isclose(total, 1.0, abs_tol=1e-4):
        return (f"your probabilities sum to {total:.3f}, not 1 ({setting}): after zeroing the characters "
                "outside the top k, renormalise (or set their logits to -inf before the softmax)")
    kept = int((out > 0).sum())
    if kept == top_k - 1:
        return (f"you kept {kept} characters for top_k={top_k}: keep exactly k, the k-th largest included "
                "(compare with >= the k-th largest, not >)")
    if top_k < VOCAB:
        if kept == top_k + 1:
            return f"you kept {kept} characters for top_k={top_k}: keep exactly k (the k-th largest included)"
        if kept > top_k:
            return (f"you kept {kept} characters for top_k={top_k} ({setting}): the {kept - top_k} outside the "
                    f"{top_k} likeliest must get probability 0; give them the logit -inf before the softmax "
                    "(a logit of 0 still has a probability), or zero their probabilities and renormalise")
    for wrong, what in [(1.0, "those of temperature 1: the temperature was lost (dividing the probabilities by it "
                               "and renormalising undoes it); divide the logits by it, before the softmax"),
                        (1 / temperature if temperature else 0.0,
                         "those of temperature 1/T: divide the logits by the temperature, do not multiply")]:
        if wrong and not math.isclose(wrong, temperature) and _close(
                out, next_token_probs(logits[None], temperature=wrong, top_k=top_k)[0]):
            return f"your probabilities ({setting}) are {what}"
        smallest = set(logits.argsort()[:top_k].tolist())
        if kept == top_k and set(out.nonzero().flatten().tolist()) == smallest:
            return (f"you kept the {top_k} *least* likely characters: keep the largest "
                    "(torch.topk returns the largest; a sort must be descending)")
    return None


@exercise("05")
def sampling_probs(fn):
    """fn(logits (vocab,), temperature, top_k) -> probabilities (vocab,): softmax(logits / temperature)
    restricted to the top_k likeliest characters and renormalised; temperature 0 is greedy (the argmax
    gets probability 1); top_k = vocab keeps every character. Checked against next_token_probs."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(VOCAB, generator=g) * 2
    settings = [(1.0, VOCAB), (0.5, 5), (2.0, 10), (0.8, 1)]
    for temperature, top_k in settings:
        given = logits.clone()
        out = _tensor(call(fn, given, temperature, top_k), "your function's result")
        if not torch.equal(given, logits):
            raise Hint(f"your function changed the logits it was given (temperature {temperature}, top_k {top_k}): "
                       "an in-place operation such as `logits /= temperature` or `logits[...] = ...` changes the "
                       "caller's tensor; work on a new one (`logits = logits / temperature`, masked_fill, clone)")
        if out.shape != (VOCAB,):
            raise Hint(f"your probabilities have shape {tuple(out.shape)}, expected ({VOCAB},): one per character")
        expected = next_token_probs(logits[None], temperature=temperature, top_k=top_k)[0]
        if not _close(out, expected):
            hint = _sampling_hint(out, logits, temperature, top_k)
            if hint:
                raise Hint(hint)
            worst = (out - expected).abs().max().item()
            raise Hint(f"for temperature {temperature}, top_k {top_k} your probabilities differ from the package's "
                       f"by up to {worst:.3g}")
    try:
        out = call(fn, logits.clone(), 0, VOCAB)
    except NotAttempted:
        raise Hint("with temperature 0 your function returned None: is a `return` missing on that path?") from None
    except Hint as hint:
        if "ZeroDivisionError" in str(hint):
            raise Hint("temperature 0 divides by zero: treat it as greedy (probability 1 on the argmax, 0 elsewhere)") \
                from None
        raise Hint(f"with temperature 0 {hint}") from None
    out = _tensor(out, "with temperature 0, your function's result")
    if out.shape != (VOCAB,):
        raise Hint(f"with temperature 0 your result has shape {tuple(out.shape)}, expected ({VOCAB},): "
                   "probability 1 on the argmax, 0 on the other characters")
    if not _close(out, next_token_probs(logits[None], temperature=0)[0]):
        if not bool(torch.isfinite(out).all()):
            raise Hint("temperature 0 is not handled: it should be greedy, probability 1 on the argmax "
                       "(dividing by 0 gives inf and nan)")
        raise Hint(f"temperature 0 is not handled: it should be greedy, probability 1 on the argmax and 0 elsewhere "
                   f"(yours gives {int((out > 0).sum())} characters a probability above 0, "
                   f"{out[logits.argmax()].item():.3g} to the argmax)")
    return (f"matches next_token_probs for {len(settings) + 1} settings "
            "(temperature 0, 0.5, 0.8, 1, 2; top_k 1, 5, 10, 65)")


# --- predict: the mass top-k=5 removes -------------------------------------------------------------------

@exercise("05")
def top5_removed(guess, probs):
    """The guess (a share between 0 and 1) of the probability top_k=5 removes on average, against the
    measurement on `probs` (positions, vocab): the mean over positions of the mass outside the 5 likeliest."""
    if isinstance(guess, str) and guess.strip().endswith("%"):
        try:
            percent = float(guess.strip()[:-1].replace("_", ""))
        except ValueError:
            percent = 20.0
        raise Hint(f"write your guess as a number, e.g. {percent / 100:g} for {percent:g}%, not {guess!r}")
    try:
        guess = number(guess)
    except Hint:
        raise Hint(f"write your guess as a number, e.g. 0.2 for 20%, not {guess!r}") from None
    if 1 < guess <= 100:
        raise Hint(f"give a share between 0 and 1: write {guess / 100:g} for {guess:g}%")
    if not 0 <= guess <= 1:
        raise Hint(f"a share of the probability is between 0 and 1, got {guess}")
    ranked = probs.detach().float().reshape(-1, probs.size(-1)).sort(-1, descending=True).values
    measured = ranked[:, 5:].sum(-1).mean().item()
    off = guess - measured
    verdict = "close" if abs(off) < 0.05 else ("too high" if off > 0 else "too low")
    return (f"you guessed {guess:.3g}; measured {measured:.3f} over {ranked.size(0):,} positions "
            f"(off by {off:+.3f}, {verdict})")


# --- one KV-cache step ------------------------------------------------------------------------------------

def _attend(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v


def _kv_hint(out, q, k_new, v_new, k_cache, v_cache) -> str | None:
    hs = q.size(-1)
    n_head = q.size(0)
    k_all, v_all = torch.cat([k_cache, k_new], 1), torch.cat([v_cache, v_new], 1)
    right = 1 / math.sqrt(hs)
    if k_cache.size(1) > 0 and _close(out, _attend(q, k_cache, v_cache, right)):
        return ("the new token did not attend to its own key and value: append k_new and v_new to the cache "
                "(torch.cat on the position dimension, dim=1) before attending")
    for name, scale in [("not scaled at all", 1.0), (f"divided by head_size = {hs}", 1 / hs),
                        (f"divided by sqrt(n_embd) = sqrt({n_head * hs})", 1 / math.sqrt(n_head * hs)),
                        (f"divided by sqrt(n_head) = sqrt({n_head})", 1 / math.sqrt(n_head)),
                        (f"multiplied by sqrt(head_size) = {math.sqrt(hs):g}", math.sqrt(hs))]:
        if _close(out, _attend(q, k_all, v_all, scale)):
            return f"your scores are {name}: divide q·kᵀ by sqrt(head_size) = sqrt({hs}) = {math.sqrt(hs):g}"
    if k_all.size(1) > 1 and _close(out, v_all[:, :1]):
        return ("your new token attends only to position 0, as if masked: it is the newest token, so every "
                "cached position is in its past; a one-row causal mask hides nothing here")
    if k_all.size(1) > 1 and _close(out, v_new):
        return ("your new token attends only to itself: the cached positions are in its past and must be "
                "visible (no mask is needed for the newest token)")
    if _close(out, v_all.sum(1, keepdim=True)):
        return "your softmax runs over the wrong dimension: normalise the scores over the keys (dim=-1)"
    scores = q @ k_all.transpose(-2, -1) * right
    if n_head > 1 and _close(out, scores.softmax(0) @ v_all):
        return ("your softmax runs over the heads (dim=0): normalise each head's scores over the keys (dim=-1)")
    positions = k_all.size(1)
    if positions > 1 and _close(out, _attend(q, k_all, v_all, 1 / math.sqrt(positions))):
        return (f"your scores are divided by sqrt({positions}), the number of positions: divide q·kᵀ by "
                f"sqrt(head_size) = sqrt({hs}) = {math.sqrt(hs):g}, the size of one head's vectors")
    if _close(out, _attend(q, v_all, k_all, right)):
        return "you swapped keys and values: the scores are q·kᵀ, and the weights average the values v"
    if positions > 2 and (_close(out, _attend(q, k_all[:, 1:], v_all[:, 1:], right))
                          or _close(out, _attend(q, k_all[:, -2:], v_all[:, -2:], right))):
        return (f"your new token does not attend to all {positions - 1} cached positions: use the whole cache "
                "(k_cache and v_cache as given, every position) plus the new key and value")
    return None


@exercise("05")
def kv_step(fn):
    """fn(q, k_new, v_new, k_cache, v_cache) -> the new token's attention output (n_head, 1, head_size);
    q, k_new, v_new are (n_head, 1, head_size), the caches (n_head, t, head_size). Checked against the
    last row of causal attention recomputed over all t + 1 tokens, for t = 9 and for an empty cache."""
    n_head, hs = 4, 16
    g = torch.Generator().manual_seed(5)
    for T in (10, 1):
        q, k, v = (torch.randn(n_head, T, hs, generator=g) for _ in range(3))
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(hs)).masked_fill(~causal, float("-inf"))
        full = (scores.softmax(-1) @ v)[:, -1:]  # the whole sequence recomputed; the new token's row
        args = (q[:, -1:], k[:, -1:], v[:, -1:], k[:, :-1], v[:, :-1])
        given = tuple(a.clone() for a in args)
        try:
            out = _tensor(call(fn, *given), "your attention output")
        except Hint as hint:
            if "must match except in dimension" in str(hint):
                hint = Hint(f"{hint} (concatenate the cache and the new token on the position dimension, dim=1)")
            if T == 1:
                raise Hint(f"with an empty cache (the first token): {hint}") from None
            raise hint from None
        if out.shape != full.shape:
            raise Hint(f"your output has shape {tuple(out.shape)}, expected {tuple(full.shape)} "
                       "(n_head, 1, head_size): one row, the new token's")
        changed = [name for name, a, b in zip(("k_cache", "v_cache"), given[3:], args[3:]) if not torch.equal(a, b)]
        if changed:
            raise Hint(f"your code changed {' and '.join(changed)} in place: the cache holds the earlier positions' "
                       "keys and values, which must not change; build the longer tensors with torch.cat instead")
        if not _close(out, full):
            hint = _kv_hint(out, *args)
            if hint:
                raise Hint(hint)
            worst = (out - full).abs().max().item()
            where = f"with {T - 1} cached tokens" if T > 1 else "with an empty cache (the first token)"
            raise Hint(f"{where}, your output differs from the full recomputation by up to {worst:.3g}")
    return f"equals the last row of full causal attention over {n_head} heads (9 cached tokens, and an empty cache)"

