"""Character-level tokenizer: every distinct character of the text is one token.

`tokenizer_from_dict` rebuilds any of the package's tokenizers from its `to_dict()` (as stored in a
checkpoint): a character tokenizer, or a byte-pair encoding one (tinygpt.bpe).
"""

from __future__ import annotations


class CharTokenizer:
    """Maps each character of a fixed vocabulary to an integer and back.

    The vocabulary is the sorted set of characters, so the same text always gives the
    same ids. A character outside it raises ValueError naming it and its position.
    """

    kind = "char"

    def __init__(self, chars: str):
        chars = "".join(chars)
        if not chars:
            raise ValueError("the vocabulary is empty: build the tokenizer from a non-empty text")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError:
            pos = next(i for i, ch in enumerate(text) if ch not in stoi)
            raise self.unknown(text[pos], pos) from None

    def unknown(self, ch: str, pos: int) -> ValueError:
        """The error for character `ch`, at position `pos` of a text, outside the vocabulary."""
        return ValueError(f"character {ch!r} at position {pos} is not in the vocabulary ({self.vocab_size} characters)")

    def decode(self, ids) -> str:
        chars, n = self.chars, len(self.chars)
        out = []
        for pos, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} at position {pos} is outside the vocabulary (0..{n - 1})")
            out.append(chars[i])
        return "".join(out)

    def char_lengths(self, ids) -> list[int]:
        """How many characters of the text each token stands for: one each."""
        return [1] * len(ids)

    def check(self, text: str) -> None:
        """Raise the same ValueError as encode() for the first unknown character, if any."""
        self.encode(text)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        if d.get("kind", cls.kind) != cls.kind:
            raise ValueError(f"not a character tokenizer: kind {d.get('kind')!r}")
        return cls(d["chars"])

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def tokenizer_from_dict(d: dict):
    """The tokenizer that `d` (a `to_dict()` result) describes, by its "kind": "char" or "bpe".

    A dict without "kind" is a character tokenizer (checkpoints saved before BPE existed).
    ValueError for an unknown kind."""
    kind = d.get("kind", "char")
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "bpe":
        from .bpe import BPETokenizer  # bpe.py depends on nothing here; imported on demand

        return BPETokenizer.from_dict(d)
    raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'char' or 'bpe')")


def parse_tokenizer_spec(spec: str) -> tuple[str, int | None]:
    """("char", None) for "char"; ("bpe", N) for "bpe:N", a byte-level BPE of N tokens (the 256
    byte values and N - 256 merges, so N >= 257). ValueError, one line, for anything else."""
    if not isinstance(spec, str):
        raise ValueError(f"a tokenizer is 'char' or 'bpe:N', got {spec!r}")
    kind, _, size = spec.strip().lower().partition(":")
    if kind == "char" and not size:
        return "char", None
    if kind == "bpe":
        if not size.isdigit():
            raise ValueError(f"tokenizer {spec!r}: bpe:N needs N, a whole number of tokens (e.g. bpe:512)")
        if int(size) < 257:
            raise ValueError(f"tokenizer {spec!r}: a BPE vocabulary holds the 256 byte values and at least "
                             f"one merge: N must be 257 or more (e.g. bpe:512)")
        return "bpe", int(size)
    raise ValueError(f"unknown tokenizer {spec!r}: use 'char' (one token a character) or 'bpe:N' "
                     f"(byte-level BPE of N tokens, e.g. bpe:512)")


def tokenizer_spec(tokenizer) -> str:
    """The spec that names `tokenizer`'s kind and size: "char" or "bpe:N" (see parse_tokenizer_spec)."""
    return "char" if tokenizer.kind == "char" else f"{tokenizer.kind}:{tokenizer.vocab_size}"
