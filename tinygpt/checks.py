"""Validators shared by the library, the command line and the playground: one definition each.

Each returns the value it accepts (top_k clamped, top_p as a float) or raises ValueError with one
line that names the argument, the rule and the value. The sampling defaults live here too, so
`generate`, `tinygpt sample` and the playground cannot disagree on them.
"""

from __future__ import annotations

import math

# Sampling defaults (Hugging Face's generate: temperature 1.0, no top-k, top_p 1.0 = off). The
# command line and the playground start cooler, as nanoGPT's sample.py does: 0.8.
TEMPERATURE = 1.0
SAMPLE_TEMPERATURE = 0.8
TOP_K = None
TOP_P = 1.0
MAX_NEW_TOKENS = 1_000_000


def whole_number(name: str, value, *, min: int = 1, max: int | None = None) -> int:
    """`value` if it is an int (not a bool) from `min` to `max` (None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < min or (max is not None and value > max):
        rule = f"from {min:,} to {max:,}" if max is not None else f">= {min}"
        raise ValueError(f"{name} must be a whole number {rule}, got {value!r}")
    return value


def temperature(value) -> float:
    """A finite number >= 0 (0 = greedy)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"temperature must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {value!r}")
    return float(value)


def top_k(value, vocab_size: int | None = None) -> int | None:
    """None (no filtering) or a whole number >= 1, clamped to `vocab_size` when given."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"top_k must be a whole number >= 1, or None for no filtering; got {value!r}")
    return value if vocab_size is None else min(value, vocab_size)


def top_p(value) -> float:
    """A number in (0, 1]; 1.0 keeps every token (off), as in Hugging Face's generate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"top_p must be a number in (0, 1] (1 = off), got {value!r}")
    return float(value)


def max_new_tokens(value) -> int:
    return whole_number("max_new_tokens", value, min=0, max=MAX_NEW_TOKENS)
