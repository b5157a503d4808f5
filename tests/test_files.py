"""Atomic writes (tinygpt.files): a file is replaced whole or not at all, used by data and checkpoints."""

import os
import stat

import pytest

from tinygpt.files import atomic_copy, atomic_write, temporary_file_beside


def test_atomic_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "history.json"
    path.write_bytes(b"old")
    assert atomic_write(path, lambda f: f.write(b"new")) == path
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "history.json"
    path.write_bytes(b"old")

    def fills_the_disk(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, fills_the_disk)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_atomic_write_creates_the_missing_folders(tmp_path):
    assert atomic_write(tmp_path / "a" / "b.txt", lambda f: f.write(b"x")).read_bytes() == b"x"


def test_atomic_copy_copies_the_bytes(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"\x00checkpoint")
    assert atomic_copy(tmp_path / "last.pt", tmp_path / "best.pt").read_bytes() == b"\x00checkpoint"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_temporary_file_is_hidden_beside_its_destination_with_an_ordinary_files_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        fd, tmp = temporary_file_beside(tmp_path / "input.txt", ".part")
    finally:
        os.umask(old)
    os.close(fd)
    name = os.path.basename(tmp)
    assert os.path.dirname(tmp) == str(tmp_path) and name.startswith(".input.txt.") and name.endswith(".part")
    assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o666 & ~umask
