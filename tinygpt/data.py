"""Tiny Shakespeare: download once (checksum verified, written atomically), split, batch."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch

from .bpe import BPETokenizer
from .files import temporary_file_beside, user_path
from .tokenizer import CharTokenizer, parse_tokenizer_spec

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"


class DatasetError(RuntimeError):
    """The dataset could not be found, fetched or trusted; the message says what to do."""


def default_data_dir() -> Path:
    """Where Tiny Shakespeare is kept: `TINYGPT_DATA_DIR` if set, else `user_cache_dir()`."""
    env = os.environ.get("TINYGPT_DATA_DIR")
    return user_path(env) if env else user_cache_dir()


def user_cache_dir() -> Path:
    """This user's cache folder for tinygpt, as platformdirs names it: Linux and other Unix
    `$XDG_CACHE_HOME/tinygpt` (default `~/.cache/tinygpt`; a relative XDG_CACHE_HOME is ignored),
    macOS `~/Library/Caches/tinygpt`, Windows `%LOCALAPPDATA%\\tinygpt\\Cache`. Never a folder of
    the repository; not created here."""
    return platformdirs.user_cache_path("tinygpt", appauthor=False)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch `url` into `dest` through pooch, which checks its SHA-256 before moving it into place.
    Nothing is left at `dest` on failure, nor the folders made for it; every failure is a one-line
    DatasetError."""
    import pooch
    import requests
    from tqdm.auto import tqdm

    dest = user_path(dest)
    made = []  # the folders this call makes for the file, deepest first
    try:
        made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = temporary_file_beside(dest, ".probe")  # can a file be written there?
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        _remove_empty(made)
        raise DatasetError(f"cannot write to the data folder {dest.parent}: {e.strerror or e}") from None

    # pooch sets the bar's total from Content-Length (a bar of total None would not be truthy to it);
    # the delay keeps the placeholder total from being drawn
    bar = tqdm(total=1, unit="B", unit_scale=True, desc="Tiny Shakespeare", delay=0.5) if progress else False
    fetch = pooch.HTTPDownloader(progressbar=bar, timeout=timeout)

    def fetch_counting(url, output_file, pooch_instance, check_only=False):
        try:
            return fetch(url, output_file, pooch_instance, check_only=check_only)
        except requests.exceptions.ChunkedEncodingError:  # the server sent less than it announced
            received = os.path.getsize(output_file) if os.path.exists(output_file) else 0
            raise DatasetError(f"the download from {url} stopped after {received:,} bytes") from None

    logger = pooch.get_logger()
    level = logger.level
    try:
        if not progress:
            logger.setLevel("WARNING")  # pooch says "Downloading data from ..." at INFO
        pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=dest.name, path=dest.parent,
                       downloader=fetch_counting)
        mask = os.umask(0)  # pooch's temporary file is private (0600): give the mode a plain write gives
        os.umask(mask)
        os.chmod(dest, 0o666 & ~mask)
    except BaseException as e:
        _remove_empty(made)
        if isinstance(e, DatasetError):
            raise
        if isinstance(e, ValueError) and "hash" in str(e):  # pooch removed the file
            got = re.search(r"\(([0-9a-f]{64})\)", str(e))
            raise DatasetError(
                f"the file downloaded from {url} has SHA-256 {got[1] if got else 'another'}, expected {sha256}: "
                f"not saved. Download it by hand and save it as {dest}"
            ) from None
        if isinstance(e, OSError):  # requests' errors are OSErrors too
            raise DatasetError(
                f"could not download Tiny Shakespeare from {url} ({_reason(e)}). Download it by hand "
                f"and save it as {dest} (SHA-256 {sha256})"
            ) from None
        raise
    finally:
        logger.setLevel(level)
        if bar is not False:
            bar.close()
    return dest


def _reason(e: BaseException) -> str:
    """The innermost cause of a failed download, in a few words."""
    response = getattr(e, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason}"
    while True:  # requests wraps urllib3's error, which wraps the socket's
        inner = getattr(e, "reason", None)
        inner = inner if isinstance(inner, BaseException) else (e.args[0] if e.args else None)
        if not isinstance(inner, BaseException):
            break
        e = inner
    # without urllib3's "HTTPSConnection(host=..., port=...): " (or "<... object at 0x...>: ") in front
    return re.sub(r"^(<[^>]*>|\w+\([^)]*\)): ", "", str(e)) or type(e).__name__


def _remove_empty(folders):
    """Remove each of `folders` (deepest first) that exists and is empty; stop at one that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENAMETOOLONG):  # one never made goes on upward
                break


def load_shakespeare(data_dir=None, *, progress: bool = True) -> str:
    """Return the Tiny Shakespeare text, downloading it on first use into `data_dir` (default:
    `default_data_dir()`, this user's cache folder unless TINYGPT_DATA_DIR says otherwise).

    A copy placed by hand that differs from the published file only in its encoding (a UTF-8
    or UTF-16 byte-order mark), its line endings (\\r\\n or \\r) or its final newlines is
    accepted: the text is normalised, then checked against the published checksum. Any other
    copy raises DatasetError saying how it differs; the file is never changed."""
    folder = user_path(data_dir) if data_dir is not None else default_data_dir()
    path = folder / FILENAME
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; the dataset must be a file of that name")
    if not path.exists():
        try:
            download(DATA_URL, path, DATA_SHA256, progress=progress)
        except DatasetError as e:
            if data_dir is not None:
                raise
            if os.environ.get("TINYGPT_DATA_DIR"):
                raise DatasetError(f"{e}. The folder {folder} is the one TINYGPT_DATA_DIR names") from None
            raise DatasetError(f"{e}. The folder {folder} is tinygpt's cache; to use a copy kept elsewhere "
                               f"(an older checkout's data/, say), set TINYGPT_DATA_DIR to its folder") from None
    try:
        raw = path.read_bytes()  # read once: hashed, then decoded
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    if hashlib.sha256(raw).hexdigest() == DATA_SHA256:
        return raw.decode("utf-8")
    text = _normalise(raw)
    if text is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() == DATA_SHA256:
        return text
    raise DatasetError(
        f"{path} is not Tiny Shakespeare: {_how_it_differs(raw, text)}. It was left as it is: "
        f"replace it with the file from {DATA_URL} (or move it away and run again to download it)"
    )


# The published text: 1,115,394 characters (all ASCII) in 40,000 lines, and the first 16 hex
# digits of the SHA-256 of each run of 4,000 lines, to say where a copy first differs.
DATA_CHARS, DATA_LINES, DATA_FIRST_LINE = 1_115_394, 40_000, "First Citizen:"
DATA_BLOCK_LINES = 4000
DATA_BLOCK_SHA256 = ("f75595b045dcdb44", "22bd3238e49bdd95", "ee67f7edc8ef50a9", "a60b30f7893e0c7a",
                     "a59a8960436d9009", "deba1b266b317119", "797f159e7d1ddee9", "5b00cd26416cbcd6",
                     "d17b33dc4fc65070", "134871f445b99bf6")


def _normalise(raw: bytes) -> str | None:
    """The text with its byte-order mark, \\r\\n / \\r line endings and extra final newlines
    undone (None if it does not decode)."""
    try:
        text = raw.decode(text_encoding(raw))
    except UnicodeDecodeError:
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n" if text.strip() else text


def _how_it_differs(raw: bytes, text: str | None) -> str:
    """One phrase saying how a copy differs from the published text."""
    if not raw:
        return "the file is empty"
    if raw.lstrip()[:100].lower().startswith((b"<!doctype html", b"<html")):
        return "it is a web page (HTML), not the text itself: save the file behind the page's Raw link"
    if text is None:
        return "it is not UTF-8 text"
    lines = text.splitlines(keepends=True)
    size = f"{len(text):,} characters in {len(lines):,} lines, the published text {DATA_CHARS:,} in {DATA_LINES:,}"
    if not lines or lines[0].rstrip("\n") != DATA_FIRST_LINE:
        first = lines[0].rstrip("\n")[:40] if lines else ""
        return f"its first line is {first!r}, not {DATA_FIRST_LINE!r} ({size})"
    for i, expected in enumerate(DATA_BLOCK_SHA256):
        block = "".join(lines[i * DATA_BLOCK_LINES:(i + 1) * DATA_BLOCK_LINES])
        if hashlib.sha256(block.encode("utf-8")).hexdigest()[:16] != expected:
            start = i * DATA_BLOCK_LINES + 1
            where = f"the first difference is in lines {start:,} to {start + DATA_BLOCK_LINES - 1:,}"
            if len(text) < DATA_CHARS:
                return f"it is shorter, a partial copy? ({size}); {where}"
            return f"{where} ({size})"
    return f"it has text after the published end ({size})"


@dataclass
class Corpus:
    """A text made ready for a language model: its tokenizer, the text as ids, and the split.

    The text is split by position, its first 90% of characters for training and the last 10% for
    validation (see train_val_split), and each part is encoded on its own: `train` and `val` are
    their ids, `ids` the two joined. Built by `Corpus.shakespeare()` (the course's data set),
    `Corpus.from_file(path)` (your own UTF-8 text) or `Corpus.from_text(text)`. `tokenizer`:
    "char" (default: one token for each distinct character of the text), "bpe:N" (a byte-level BPE
    of N tokens learned from the training part only, so no validation text shapes the vocabulary),
    or a tokenizer object, e.g. a checkpoint's, to encode with its vocabulary.

    The ids are kept in the smallest dtype that holds them (see id_dtype): one byte a character for
    up to 256 distinct characters. Memory while a file is read and encoded: about 3x its size with
    characters (its bytes, its text, its ids), about 6x with a BPE (benchmarks/data_load.py).
    """

    text: str
    tokenizer: CharTokenizer | BPETokenizer
    ids: torch.Tensor  # (N,) in id_dtype(vocab_size): uint8, int16 or int32; N = len(text) for characters
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_text(cls, text: str, tokenizer=None, val_fraction: float = 0.1, *, progress: bool = False) -> Corpus:
        """ValueError for a bad tokenizer spec or a character outside a given character vocabulary;
        DatasetError for an empty text. `progress`: bars while the text is read and encoded (shown
        once a phase has taken 2 s) and while BPE merges are learned."""
        if not text:
            raise DatasetError("the text is empty")
        if tokenizer is None or isinstance(tokenizer, str):
            kind, vocab_size = parse_tokenizer_spec(tokenizer or "char")
            if kind == "char":
                tokenizer = CharTokenizer(_characters(text, progress))
            else:
                tokenizer = learn_bpe(train_val_split(text, val_fraction)[0], vocab_size, progress)
        if tokenizer.kind == "char":  # one id a character: split the ids where the text splits
            ids = encode(tokenizer, text, progress=progress)
            n = len(train_val_split(range(len(text)), val_fraction)[0])
        else:
            train_text, val_text = train_val_split(text, val_fraction)
            train = encode(tokenizer, train_text, progress=progress)
            ids, n = torch.cat([train, encode(tokenizer, val_text, progress=progress)]), len(train)
        return cls(text=text, tokenizer=tokenizer, ids=ids, train=ids[:n], val=ids[n:])

    @classmethod
    def shakespeare(cls, data_dir=None, *, progress: bool = True, tokenizer=None) -> Corpus:
        """Tiny Shakespeare (downloaded and checked on first use, see load_shakespeare)."""
        return cls.from_text(load_shakespeare(data_dir, progress=progress), tokenizer, progress=progress)

    @classmethod
    def from_file(cls, path, tokenizer=None, *, progress: bool = False) -> Corpus:
        """Any UTF-8 text file. DatasetError (one line) for a missing, empty, binary or non-UTF-8 file."""
        return cls.from_text(read_text_file(path), tokenizer, progress=progress)

    @property
    def unit(self) -> str:
        """What a token is, in words for messages: "characters" or "tokens" (several characters each)."""
        return "characters" if self.tokenizer.kind == "char" else "tokens"

    def check_block_size(self, block_size: int) -> None:
        """DatasetError unless both splits hold more than one window of block_size + 1 tokens."""
        need = block_size + 1
        if len(self.val) <= need or len(self.train) <= need:
            if self.tokenizer.kind == "char":
                has, enough = f"it has {len(self.ids):,}", f"{10 * (need + 1):,} characters"
            else:
                chars_per_token = len(self.text) / max(1, len(self.ids))
                has = f"its {len(self.text):,} characters make {len(self.ids):,} tokens"
                enough = f"about {math.ceil(10 * (need + 1) * chars_per_token):,} characters"
            raise DatasetError(
                f"the text is too short for a context of {block_size} {self.unit}: {has} and its validation "
                f"tenth ({len(self.val):,}) needs more than {need}; use a text of at least {enough}"
            )


def id_dtype(vocab_size: int) -> torch.dtype:
    """The smallest dtype that holds every id of a vocabulary: uint8 up to 256 tokens, then
    int16, then int32 (get_batch and all_windows hand the model int64 windows)."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 1 << 15 else torch.int32


PIECE_CHARS = 1 << 20  # a text is encoded in pieces of about this many characters
_PIECE_END = re.compile(r"\S(?=\s)")


def _pieces(text: str):
    """(start, end) of consecutive pieces of `text` of about PIECE_CHARS characters, each cut just
    before a space that follows a non-space: a chunk of bpe.split_chunks never spans such a place,
    so encoding piece by piece gives exactly the ids of encoding the whole text."""
    start = 0
    while start < len(text):
        m = _PIECE_END.search(text, start + PIECE_CHARS) if start + PIECE_CHARS < len(text) else None
        end = m.end() if m else len(text)
        yield start, end
        start = end


PROGRESS_DELAY_S = 2.0  # a phase that ends sooner shows no bar


def _bar(text: str, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=len(text), desc=desc, unit="char", unit_scale=True, disable=not progress,
                delay=PROGRESS_DELAY_S, leave=False)


def _characters(text: str, progress: bool = False) -> str:
    """The sorted distinct characters of `text` (CharTokenizer.from_text's vocabulary), read piece by piece."""
    chars = set()
    with _bar(text, "reading the text", progress) as bar:
        for start, end in _pieces(text):
            chars.update(text[start:end])
            bar.update(end - start)
    return "".join(sorted(chars))


def encode(tokenizer, text: str, *, progress: bool = False) -> torch.Tensor:
    """The ids of `text` as a (N,) tensor of id_dtype(tokenizer.vocab_size), the same ids as
    tokenizer.encode(text) without a Python list of the whole text's ids: a character
    tokenizer's lookups are vectorised, a BPE encodes piece by piece. Memory: the ids plus a few
    MB; a bar (`progress`) once it has taken 2 s. ValueError for a character outside a character
    tokenizer's vocabulary, naming it and its position in `text`."""
    dtype = id_dtype(tokenizer.vocab_size)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if tokenizer.kind == "char":
        codes = np.array([ord(c) for c in tokenizer.chars])
        table = np.full(int(codes.max()) + 2, -1, dtype=np.int32)  # code point -> id; the last: unknown
        table[codes] = np.arange(len(codes))
        ids = torch.empty(len(text), dtype=dtype)
    else:
        parts = []
    with _bar(text, "encoding the text", progress) as bar:
        for start, end in _pieces(text):
            if tokenizer.kind == "char":
                points = np.frombuffer(text[start:end].encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
                piece = table[np.minimum(points, len(table) - 1)]
                if (unknown := np.flatnonzero(piece < 0)).size:
                    pos = start + int(unknown[0])
                    raise tokenizer.unknown(text[pos], pos)
                ids[start:end] = torch.from_numpy(piece.astype(np_dtype))
            else:
                parts.append(np.array(tokenizer.encode(text[start:end]), dtype=np_dtype))
            bar.update(end - start)
    if tokenizer.kind == "char":
        return ids
    return torch.from_numpy(np.concatenate(parts) if parts else np.empty(0, dtype=np_dtype))


@dataclass(frozen=True)
class Shakespeare:
    """What to train on (train.train's `data`): Tiny Shakespeare, kept in `data_dir` (default:
    default_data_dir()), encoded by `tokenizer`: "char", "bpe:N" (a byte-level BPE of N >= 257
    tokens learned from the training split only, in about a second a MB) or a tokenizer object;
    None: "char" for a new run, the run's own on resume (learned again from the text, to check
    that it is the run's text)."""

    data_dir: str | Path | None = None
    tokenizer: object = None


@dataclass(frozen=True)
class Text:
    """What to train on: your own text (the first 90% trains, the rest validates); `tokenizer` as for Shakespeare."""

    text: str
    tokenizer: object = None


def learn_bpe(text: str, vocab_size: int, progress: bool = False) -> BPETokenizer:
    """BPETokenizer.train(text, vocab_size), with a bar of the merges learned if `progress`."""
    from tqdm.auto import tqdm

    with tqdm(total=vocab_size - 256, desc=f"learning a {vocab_size}-token BPE", unit="merge",
              disable=not progress, leave=False) as bar:
        return BPETokenizer.train(text, vocab_size, progress=lambda done: bar.update(done - bar.n))


def read_text_file(path) -> str:
    """The text of a user's text file: UTF-8, or UTF-16 / UTF-32 with a byte-order mark (what
    Notepad's "Unicode" and PowerShell 5.1's `>` write); the mark is dropped and Windows line
    endings become \\n. `~` is expanded.

    DatasetError naming the file for: missing, a folder, empty, binary (a NUL byte), not UTF-8."""
    path = user_path(path)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a text file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    return decode_text(raw, str(path))


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def text_encoding(raw: bytes) -> str:
    """The encoding a text file's bytes are read with: the one its UTF-16 or UTF-32 byte-order mark
    names, else "utf-8-sig" (UTF-8, a UTF-8 byte-order mark dropped). The one rule for every text."""
    return next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8-sig")


def decode_text(raw: bytes, name: str) -> str:
    """`raw` as text, as read_text_file reads a file; `name` (a path, "stdin") goes in the errors."""
    encoding = text_encoding(raw)
    if encoding == "utf-8-sig" and b"\x00" in raw:
        raise DatasetError(f"{name} looks like a binary file (it contains NUL bytes), not text")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding != "utf-8-sig":
            raise DatasetError(f"{name} starts with a {encoding.upper()} byte-order mark but is not "
                               f"{encoding.upper()} text; save it as UTF-8 and try again") from None
        raise DatasetError(f"{name} is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}); "
                           f"save it as UTF-8 and try again") from None
    if not text.strip():
        raise DatasetError(f"{name} is empty")
    if "\x00" in text:
        raise DatasetError(f"{name} looks like a binary file (it contains NUL characters), not text")
    return text.replace("\r\n", "\n")


def train_val_split(data, val_fraction: float = 0.1):
    """First 90% for training, last 10% for validation: split by position, never shuffled,
    so no validation text leaks into training through overlapping windows."""
    n = int(len(data) * (1 - val_fraction))
    return data[:n], data[n:]


def get_batch(data: torch.Tensor, block_size: int, batch_size: int, *, generator=None, device="cpu"):
    """`batch_size` random windows of `block_size` tokens and the same windows shifted by one."""
    if len(data) <= block_size:
        raise ValueError(f"the data has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}")
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    window = data[ix[:, None] + torch.arange(block_size + 1)].long()
    x, y = window[:, :-1], window[:, 1:]
    if torch.device(device).type != "cpu":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return x, y


def all_windows(data: torch.Tensor, block_size: int):
    """Every non-overlapping block_size window of `data` and its targets (for a full evaluation)."""
    n = (len(data) - 1) // block_size
    x = data[: n * block_size].long().view(n, block_size)
    y = data[1 : n * block_size + 1].long().view(n, block_size)
    return x, y
