"""Atomic writes: a file is replaced whole or not at all, so a crash or a full disk mid-write
leaves the previous version (a checkpoint, a downloaded text, a history) as it was.

The pattern: write a temporary file in the same folder, flush and fsync it, then os.replace it
onto the destination (a rename, atomic within one file system).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path


def user_path(path) -> Path:
    """`path` (a str or Path, as a user wrote it) with a leading `~` or `~user` expanded.

    A shell expands `~` only at the start of a word, so `--out=~/runs` and a Python argument
    arrive with it; every path the package takes from a user goes through here."""
    return Path(path).expanduser()


def temporary_file_beside(dest, suffix: str = ".tmp") -> tuple[int, str]:
    """Create a new, empty, hidden file in dest's folder for an atomic write (fill it, then
    os.replace it onto dest); returns (file descriptor, path).

    Unlike tempfile.mkstemp, whose files are private (0600), the file gets the mode an ordinary
    write would give (0666 less the umask), so the file it becomes can be read by whoever could
    read a file written the ordinary way."""
    dest = Path(dest)
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {dest}")


def atomic_write(path, write) -> Path:
    """Write `path` atomically: `write(f)` fills a temporary file beside it, which is flushed,
    fsynced and renamed onto `path`. A crash or a full disk leaves the previous file as it was."""
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_copy(src, dest) -> Path:
    """Copy the file `src` to `dest` atomically (a second checkpoint of the same state, without
    serialising it again)."""
    with open(src, "rb") as source:
        return atomic_write(dest, lambda f: shutil.copyfileobj(source, f))
