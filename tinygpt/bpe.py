"""Byte-level byte-pair encoding (BPE), the tokenizer family of GPT-2, built from scratch.

Every text is first UTF-8 bytes, so the 256 byte values are the starting vocabulary and no text
is ever unknown. Training repeats one step: count every adjacent pair of tokens in the training
text, and merge the most frequent pair into a new token. Encoding replays the merges in the order
they were learned. As in GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners", section 2.2), the text is first cut into chunks (a word with its leading space, a run
of digits, of punctuation or of whitespace) and merges never cross a chunk boundary, so a token
never glues the end of one word to the start of the next.

Training counts pairs inside each *distinct* chunk once, weighted by how often the chunk occurs,
and after a merge updates only the counts of the chunks that held the merged pair: 1,000 tokens
on the 1 MB Tiny Shakespeare training split take seconds, not the minutes a full recount would.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter

# A chunk is: an English contraction suffix, an optional space + letters, an optional space + digits,
# an optional space + other symbols (underscore included), or whitespace. The alternatives together
# match every character, so joining the chunks gives back the text. GPT-2's pattern is the same idea
# written with the `regex` module's \p{L} / \p{N} classes.
CHUNK_PATTERN = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def split_chunks(text: str) -> list[str]:
    """The chunks of `text` that merges may not cross; "".join(split_chunks(t)) == t."""
    return CHUNK_PATTERN.findall(text)


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`ids` with every non-overlapping occurrence of `pair`, left to right, replaced by `new_id`."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _pairs(ids: list[int]) -> Counter:
    return Counter(zip(ids, ids[1:]))


class BPETokenizer:
    """Byte-level BPE: ids 0..255 are the bytes, id 256 + i is the i-th learned merge.

    `merges[i] = (a, b)` means token 256 + i is token a followed by token b. `vocab_size` is
    256 + len(merges). Any text encodes (it is bytes first); `decode` turns the bytes back into
    text, replacing an incomplete UTF-8 sequence (possible in sampled ids, never in a round trip)
    with U+FFFD.
    """

    kind = "bpe"

    def __init__(self, merges):
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.vocab = [bytes([i]) for i in range(256)]  # id -> the bytes it stands for
        self.ranks = {}  # pair -> the id it merges into (lower id = learned earlier)
        for i, (a, b) in enumerate(self.merges):
            new_id = 256 + i
            if not (0 <= a < new_id and 0 <= b < new_id):
                raise ValueError(f"merge {i} ({a}, {b}) uses a token that does not exist yet")
            if (a, b) in self.ranks:
                raise ValueError(f"merge {i} ({a}, {b}) repeats an earlier merge")
            self.ranks[(a, b)] = new_id
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, *, progress=None) -> BPETokenizer:
        """Learn vocab_size - 256 merges from `text`.

        Ties between equally frequent pairs go to the smaller pair (by its two ids), so the same
        text always gives the same merges. Stops early, with a smaller vocabulary, if no pair occurs
        twice any more. ValueError if vocab_size < 256. `progress(n_merges_done)` is called after
        every merge, if given.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an integer of at least 256 (the bytes), got {vocab_size!r}")
        chunk_counts = Counter(m[0] for m in CHUNK_PATTERN.finditer(text))  # no list of every chunk of a big text
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # each distinct chunk once
        freqs = list(chunk_counts.values())

        pair_counts = Counter()  # pair -> occurrences in the whole text
        where = {}  # pair -> indices of the words that contain it (may hold stale entries)
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair, n in _pairs(ids).items():
                pair_counts[pair] += n * f
                where.setdefault(pair, set()).add(w)

        # a max-heap of (-count, pair); an entry whose count is out of date is skipped when popped
        heap = [(-n, pair) for pair, n in pair_counts.items()]
        heapq.heapify(heap)
        merges = []
        while len(merges) < vocab_size - 256 and heap:
            neg, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg:
                continue  # stale
            if -neg < 2:
                break  # merging a pair seen once compresses nothing
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for w in where.pop(pair):
                old = words[w]
                if len(old) < 2:
                    continue
                new = merge_pair(old, pair, new_id)
                if len(new) == len(old):
                    continue  # a stale index: this word no longer holds the pair
                f = freqs[w]
                for p, n in _pairs(old).items():
                    pair_counts[p] -= n * f
                    changed.add(p)
                for p, n in _pairs(new).items():
                    pair_counts[p] += n * f
                    where.setdefault(p, set()).add(w)
                    changed.add(p)
                words[w] = new
            for p in changed:
                n = pair_counts[p]
                if n > 0:
                    heapq.heappush(heap, (-n, p))
                else:
                    del pair_counts[p]
            if progress is not None:
                progress(len(merges))
        return cls(merges)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8"))
        while len(ids) > 1:
            # the pair learned earliest is merged first, as during training
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, self.ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        out = []
        cache = self._cache
        for chunk in split_chunks(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = cache[chunk] = self._encode_chunk(chunk)
            out.extend(ids)
        return out

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids) -> bytes:
        n = len(self.vocab)
        parts = []
        for pos, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < n:
                raise ValueError(f"token id {i} at position {pos} is outside the vocabulary (0..{n - 1})")
            parts.append(self.vocab[i])
        return b"".join(parts)

    def char_lengths(self, ids) -> list[int]:
        """How many characters of the text each token stands for. A character counts for the token
        holding its first UTF-8 byte, so the lengths of a whole text's tokens add up to len(text)."""
        return [sum(1 for byte in self.vocab[int(i)] if byte & 0xC0 != 0x80) for i in ids]

    def check(self, text: str) -> None:
        """Every text can be encoded by a byte-level tokenizer: never raises."""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "merges": [list(p) for p in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        if d.get("kind") != cls.kind:
            raise ValueError(f"not a BPE tokenizer: kind {d.get('kind')!r}")
        return cls(d["merges"])

    def __eq__(self, other) -> bool:
        return isinstance(other, BPETokenizer) and other.merges == self.merges

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"
