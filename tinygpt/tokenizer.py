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
    def from_text(cls, text: str) -> "CharTokenizer":
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
            raise ValueError(
                f"character {text[pos]!r} at position {pos} is not in the vocabulary "
                f"({self.vocab_size} characters)"
            ) from None

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
    def from_dict(cls, d: dict) -> "CharTokenizer":
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
