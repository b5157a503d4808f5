"""Tiny Shakespeare: download once (checksum verified, written atomically), split, batch."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import CharTokenizer

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"


class DatasetError(RuntimeError):
    """The dataset could not be found, fetched or trusted; the message says what to do."""


def default_data_dir() -> Path:
    """`TINYGPT_DATA_DIR`, else `data/` of the checkout the package lives in, else ./data."""
    env = os.environ.get("TINYGPT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "tinygpt").is_dir():
        return repo / "data"
    return Path.cwd() / "data"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, *, timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch `url` into `dest`, verifying its SHA-256. Nothing is left at `dest` on failure."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DatasetError(f"cannot write to the data folder {dest.parent}: {e.strerror or e}") from None
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    total = int(r.headers.get("Content-Length") or 0) or None
                    received = 0  # counted here: a disabled tqdm bar does not count
                    with tqdm(total=total, unit="B", unit_scale=True, desc="Tiny Shakespeare",
                              disable=not progress) as bar:
                        while chunk := r.read(1 << 16):
                            f.write(chunk)
                            h.update(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                    if total is not None and received != total:
                        raise DatasetError(f"the download from {url} stopped after {received} of {total} bytes")
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DatasetError(
                    f"could not download Tiny Shakespeare from {url} ({reason}). Download it by hand "
                    f"and save it as {dest} (SHA-256 {sha256})"
                ) from None
            f.flush()
            os.fsync(f.fileno())
        if h.hexdigest() != sha256:
            raise DatasetError(
                f"the file downloaded from {url} has SHA-256 {h.hexdigest()}, expected {sha256}: "
                f"not saved. Download it by hand and save it as {dest}"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def load_shakespeare(data_dir=None, *, progress: bool = True) -> str:
    """Return the Tiny Shakespeare text, downloading it into the cache on first use."""
    path = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = path / FILENAME
    if not path.exists():
        download(DATA_URL, path, DATA_SHA256, progress=progress)
    try:
        raw = path.read_bytes()  # read once: hashed, then decoded
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DATA_SHA256:
        raise DatasetError(
            f"{path} ({len(raw)} bytes) is not Tiny Shakespeare: SHA-256 {digest}, expected {DATA_SHA256}. "
            f"It was left as it is; move it away and run again to download a fresh copy"
        )
    return raw.decode("utf-8")


@dataclass
class Corpus:
    """A text made ready for a language model: its tokenizer, the text as ids, and the split.

    `train` is the first 90% of `ids`, `val` the last 10% (see train_val_split). Built by
    `Corpus.shakespeare()` (the course's data set), `Corpus.from_file(path)` (your own UTF-8 text)
    or `Corpus.from_text(text)`. Pass `tokenizer` to encode with a given vocabulary (a checkpoint's)
    instead of building one from the text.
    """

    text: str
    tokenizer: CharTokenizer
    ids: torch.Tensor  # (N,) int64, N = len(text) for a character tokenizer
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def from_text(cls, text: str, tokenizer: CharTokenizer | None = None, val_fraction: float = 0.1) -> "Corpus":
        if not text:
            raise DatasetError("the text is empty")
        tokenizer = tokenizer or CharTokenizer.from_text(text)
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        train, val = train_val_split(ids, val_fraction)
        return cls(text=text, tokenizer=tokenizer, ids=ids, train=train, val=val)

    @classmethod
    def shakespeare(cls, data_dir=None, *, progress: bool = True) -> "Corpus":
        """Tiny Shakespeare (downloaded and checked on first use, see load_shakespeare)."""
        return cls.from_text(load_shakespeare(data_dir, progress=progress))

    @classmethod
    def from_file(cls, path, tokenizer: CharTokenizer | None = None) -> "Corpus":
        """Any UTF-8 text file. DatasetError (one line) for a missing, empty, binary or non-UTF-8 file."""
        return cls.from_text(read_text_file(path), tokenizer)

    def check_block_size(self, block_size: int) -> None:
        """DatasetError unless both splits hold more than one window of block_size + 1 tokens."""
        need = block_size + 1
        if len(self.val) <= need or len(self.train) <= need:
            raise DatasetError(
                f"the text is too short for a context of {block_size} characters: it has {len(self.ids):,} "
                f"and its validation tenth ({len(self.val):,}) needs more than {need}; "
                f"use a text of at least {10 * (need + 1):,} characters"
            )


def read_text_file(path) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped, Windows line endings become \\n).

    DatasetError naming the file for: missing, a folder, empty, binary (a NUL byte), not UTF-8."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a text file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    if not raw.strip():
        raise DatasetError(f"{path} is empty")
    if b"\x00" in raw:
        raise DatasetError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path} is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x}); "
                           f"save it as UTF-8 and try again") from None
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
