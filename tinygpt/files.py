"""Atomic writes: a file is replaced whole or not at all, so a crash or a full disk mid-write
leaves the previous version (a checkpoint, a downloaded text, a history) as it was.

The pattern: write a temporary file in the same folder, flush and fsync it, then os.replace it
onto the destination (a rename, atomic within one file system).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from pathlib import Path

NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a full disk, a full quota


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


def check_writable(folder) -> Path:
    """The folder a run will write in, or its nearest existing parent (where it will be created),
    shown to accept a new file: a probe file is created and removed there. ValueError in one line
    (a read-only file system, no permission, a file in the way), before anything is read or trained."""
    folder = user_path(folder)
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ValueError(f"cannot create the output folder {folder}: {probe_in} is a file, not a folder")
    try:
        fd, tmp = temporary_file_beside(probe_in / "write-probe", ".probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        why = {errno.EROFS: "a read-only file system", errno.EACCES: "no permission to write there",
               errno.EPERM: "no permission to write there"}.get(e.errno, e.strerror or str(e))
        where = folder if probe_in == folder else f"{probe_in} (where {folder} would be created)"
        raise ValueError(f"cannot write in {where}: {why}; choose another output folder (--out / out_dir)") from None
    return probe_in


def no_space_left(exc: BaseException, folder, needed: int) -> bool:
    """Whether `exc`, raised while writing in `folder`, means the disk (or quota) is full: an
    OSError ENOSPC/EDQUOT anywhere in its chain (torch.save wraps it in a RuntimeError such as
    "unexpected pos ..."), or any OSError/RuntimeError while `folder` has less than `needed` bytes free."""
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False
