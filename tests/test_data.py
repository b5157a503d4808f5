"""Dataset: download (checksum verified, atomic), cache checks, split and batches.

Downloads go to a local HTTP server on 127.0.0.1, never to the internet.
"""

import hashlib
import http.server
import os
import stat
import sys
import threading
import tracemalloc
from pathlib import Path

import platformdirs
import platformdirs.macos
import platformdirs.windows
import pytest
import torch

import tinygpt.data as data_mod
from tinygpt.bpe import BPETokenizer
from tinygpt.data import (
    Corpus,
    DatasetError,
    all_windows,
    default_data_dir,
    download,
    encode,
    get_batch,
    load_shakespeare,
    read_text_file,
    train_val_split,
    user_cache_dir,
    user_path,
)
from tinygpt.tokenizer import CharTokenizer

SMALL = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
SMALL_SHA = hashlib.sha256(SMALL).hexdigest()


class _Server:
    """Serves `files` (path -> bytes); /cut announces more bytes than it sends, then hangs up."""

    def __init__(self, files: dict[str, bytes]):
        files = dict(files)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/cut":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(SMALL) * 10))
                    self.end_headers()
                    self.wfile.write(SMALL)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def real_file_bytes(text):
    path = Path(data_mod.default_data_dir()) / data_mod.FILENAME
    return path.read_bytes()


@pytest.fixture
def server(monkeypatch, real_file_bytes):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with _Server({"/small.txt": SMALL, "/input.txt": real_file_bytes}) as s:
        yield s


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- download


def test_download_saves_a_good_file_and_returns_its_path(server, tmp_path):
    dest = tmp_path / "cache" / "small.txt"
    result = download(server.url("/small.txt"), dest, SMALL_SHA, progress=False)
    assert Path(result) == dest
    assert dest.read_bytes() == SMALL
    assert _leftovers(dest.parent) == ["small.txt"]  # no temporary file left next to it


def test_download_with_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "small.txt"
    with pytest.raises(DatasetError, match="SHA-256"):
        download(server.url("/small.txt"), dest, "0" * 64, progress=False)
    assert _leftovers(tmp_path) == []


def test_download_cut_mid_way_raises_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "small.txt"
    with pytest.raises(DatasetError, match="stopped after"):
        download(server.url("/cut"), dest, SMALL_SHA, progress=False)
    assert _leftovers(tmp_path) == []


def test_download_http_error_raises_dataset_error_and_leaves_nothing(server, tmp_path):
    dest = tmp_path / "small.txt"
    with pytest.raises(DatasetError, match="could not download"):
        download(server.url("/missing.txt"), dest, SMALL_SHA, progress=False)
    assert _leftovers(tmp_path) == []


def test_a_failed_download_removes_the_folders_it_made_for_the_file(server, tmp_path):
    (tmp_path / "cache").mkdir()
    dest = tmp_path / "cache" / "new" / "deeper" / "small.txt"
    with pytest.raises(DatasetError, match="could not download"):
        download(server.url("/missing.txt"), dest, SMALL_SHA, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # the folder that was there stays


def test_a_folder_name_too_long_is_a_dataset_error_and_leaves_no_folder(server, tmp_path):
    dest = tmp_path / "new" / ("x" * 300) / "small.txt"
    with pytest.raises(DatasetError, match="cannot write to the data folder"):
        download(server.url("/small.txt"), dest, SMALL_SHA, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_to_an_impossible_folder_raises_dataset_error(server, tmp_path):
    (tmp_path / "afile").write_text("a regular file, not a folder")
    dest = tmp_path / "afile" / "sub" / "small.txt"
    with pytest.raises(DatasetError, match="cannot write to the data folder"):
        download(server.url("/small.txt"), dest, SMALL_SHA, progress=False)


# ---------------------------------------------------------------- load_shakespeare


def test_load_shakespeare_downloads_into_an_empty_data_dir(server, tmp_path, monkeypatch, text):
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/input.txt"))
    data_dir = tmp_path / "empty"
    assert load_shakespeare(data_dir, progress=False) == text
    assert _leftovers(data_dir) == [data_mod.FILENAME]
    assert data_mod.sha256_of(data_dir / data_mod.FILENAME) == data_mod.DATA_SHA256


def test_load_shakespeare_uses_the_cached_file_without_downloading(tmp_path, monkeypatch, real_file_bytes, text):
    monkeypatch.setattr(data_mod, "DATA_URL", "http://127.0.0.1:9/unreachable")
    (tmp_path / data_mod.FILENAME).write_bytes(real_file_bytes)
    assert load_shakespeare(tmp_path, progress=False) == text


def test_present_file_with_wrong_checksum_raises_and_is_left_unchanged(server, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/input.txt"))
    path = tmp_path / data_mod.FILENAME
    path.write_bytes(b"not Shakespeare")
    with pytest.raises(DatasetError, match="is not Tiny Shakespeare"):
        load_shakespeare(tmp_path, progress=False)
    assert path.read_bytes() == b"not Shakespeare"
    assert _leftovers(tmp_path) == [data_mod.FILENAME]


# a copy placed by hand, as it comes out of a Windows editor, a browser or another tool
SAME_TEXT_OTHER_BYTES = {
    "Windows line endings": lambda t: t.replace("\n", "\r\n").encode(),
    "a UTF-8 byte-order mark": lambda t: b"\xef\xbb\xbf" + t.encode(),
    "a byte-order mark and Windows line endings": lambda t: b"\xef\xbb\xbf" + t.replace("\n", "\r\n").encode(),
    "old Mac line endings": lambda t: t.replace("\n", "\r").encode(),
    "UTF-16 with its byte-order mark": lambda t: t.encode("utf-16"),
    "no final newline": lambda t: t.rstrip("\n").encode(),
    "extra blank lines at the end": lambda t: (t + "\n\n").encode(),
}


@pytest.mark.parametrize("variant", list(SAME_TEXT_OTHER_BYTES))
def test_a_copy_differing_only_in_encoding_or_line_endings_is_accepted_and_left_unchanged(
        tmp_path, monkeypatch, text, variant):
    monkeypatch.setattr(data_mod, "DATA_URL", "http://127.0.0.1:9/unreachable")  # offline
    path = tmp_path / data_mod.FILENAME
    raw = SAME_TEXT_OTHER_BYTES[variant](text)
    path.write_bytes(raw)
    assert hashlib.sha256(raw).hexdigest() != data_mod.DATA_SHA256
    assert load_shakespeare(tmp_path, progress=False) == text
    assert path.read_bytes() == raw


def _refusal(tmp_path, raw: bytes) -> str:
    (tmp_path / data_mod.FILENAME).write_bytes(raw)
    with pytest.raises(DatasetError, match="is not Tiny Shakespeare") as e:
        load_shakespeare(tmp_path, progress=False)
    assert (tmp_path / data_mod.FILENAME).read_bytes() == raw
    return str(e.value)


def test_a_partial_copy_is_refused_as_shorter_naming_where_it_first_differs(tmp_path, text):
    lines = text.splitlines(keepends=True)
    message = _refusal(tmp_path, "".join(lines[:30_000]).encode())  # copied up to line 30,000
    assert "shorter, a partial copy?" in message
    assert "in lines 28,001 to 32,000" in message
    assert "1,115,394" in message


def test_a_copy_with_one_changed_line_is_refused_naming_the_lines_around_it(tmp_path, text):
    lines = text.splitlines(keepends=True)
    lines[9_999] = lines[9_999].upper()
    message = _refusal(tmp_path, "".join(lines).encode())
    assert "the first difference is in lines 8,001 to 12,000" in message


def test_a_saved_web_page_is_refused_as_html(tmp_path):
    message = _refusal(tmp_path, b"<!DOCTYPE html>\n<html><body>First Citizen:</body></html>\n")
    assert "web page (HTML)" in message and "Raw" in message


def test_a_copy_in_another_encoding_is_refused_as_not_utf8(tmp_path, text):
    message = _refusal(tmp_path, text.replace("Citizen", "Cito\xefen").encode("latin-1"))
    assert "not UTF-8" in message


def test_another_text_is_refused_quoting_its_first_line(tmp_path):
    message = _refusal(tmp_path, b"Call me Ishmael.\n")
    assert "its first line is 'Call me Ishmael.', not 'First Citizen:'" in message


def test_the_refusal_says_where_the_published_file_is(tmp_path):
    assert data_mod.DATA_URL in _refusal(tmp_path, b"Call me Ishmael.\n")


def test_unwritable_data_folder_raises_dataset_error(server, tmp_path, monkeypatch):
    # tests run as root, which chmod cannot stop: a folder under a regular file cannot exist at all
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/input.txt"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="cannot write to the data folder"):
        load_shakespeare(tmp_path / "afile" / "sub", progress=False)


# ---------------------------------------------------------------- where the dataset is kept

unix_only = pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG folders are for Linux and other Unix")


@pytest.fixture
def cache_env(monkeypatch, tmp_path):
    """No TINYGPT_DATA_DIR, no XDG_CACHE_HOME, and HOME a fresh folder: returns that HOME."""
    for var in ("TINYGPT_DATA_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_tinygpt_data_dir_wins_over_the_cache_folder(cache_env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


@unix_only
def test_without_tinygpt_data_dir_the_data_dir_is_xdg_cache_home_tinygpt(cache_env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "tinygpt"


@unix_only
def test_without_xdg_cache_home_the_data_dir_is_dot_cache_tinygpt_in_home(cache_env):
    assert default_data_dir() == cache_env / ".cache" / "tinygpt"


@unix_only
@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(cache_env, monkeypatch, value):
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert default_data_dir() == cache_env / ".cache" / "tinygpt"


def test_an_empty_tinygpt_data_dir_counts_as_unset(cache_env, monkeypatch):
    monkeypatch.setenv("TINYGPT_DATA_DIR", "")
    assert default_data_dir() == user_cache_dir()


def _pretend_platform(monkeypatch, name: str, dirs_class) -> None:
    """sys.platform and platformdirs' class for it (chosen when platformdirs is imported) as on `name`."""
    monkeypatch.setattr(sys, "platform", name)
    monkeypatch.setattr(platformdirs, "PlatformDirs", dirs_class)


def test_on_macos_the_data_dir_is_library_caches_tinygpt(cache_env, monkeypatch):
    _pretend_platform(monkeypatch, "darwin", platformdirs.macos.MacOS)
    assert default_data_dir() == cache_env / "Library" / "Caches" / "tinygpt"


def test_on_windows_the_data_dir_is_localappdata_tinygpt_cache(cache_env, monkeypatch, tmp_path):
    _pretend_platform(monkeypatch, "win32", platformdirs.windows.Windows)
    # Windows' own folder lookup (its shell API) read here from the variable that names the same folder
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", platformdirs.windows.get_win_folder_from_env_vars)
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert default_data_dir() == tmp_path / "Local" / "tinygpt" / "Cache"


def test_first_use_downloads_into_the_user_cache_folder(server, cache_env, monkeypatch, text):
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/input.txt"))
    assert load_shakespeare(progress=False) == text
    assert (user_cache_dir() / data_mod.FILENAME).read_text() == text
    assert user_cache_dir().is_relative_to(cache_env)


def test_offline_the_error_names_the_cache_folder_and_tinygpt_data_dir(server, cache_env, monkeypatch):
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/missing.txt"))
    with pytest.raises(DatasetError) as e:
        load_shakespeare(progress=False)
    message = str(e.value)
    assert f"The folder {user_cache_dir()} is tinygpt's cache" in message
    assert "set TINYGPT_DATA_DIR to its folder" in message
    assert "\n" not in message
    assert _leftovers(user_cache_dir()) == []


def test_offline_with_tinygpt_data_dir_the_error_says_the_folder_is_the_one_it_names(server, cache_env,
                                                                                       monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/missing.txt"))
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(tmp_path / "mine"))
    with pytest.raises(DatasetError, match="is the one TINYGPT_DATA_DIR names") as e:
        load_shakespeare(progress=False)
    assert str(tmp_path / "mine") in str(e.value)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_downloaded_file_gets_the_mode_an_ordinary_write_gives(server, tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "ordinary.txt").write_text("x")
        download(server.url("/small.txt"), tmp_path / "small.txt", SMALL_SHA, progress=False)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "small.txt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "ordinary.txt").stat().st_mode)


# ---------------------------------------------------------------- a user's own text


def test_read_text_file_reads_utf8_text(tmp_path):
    (tmp_path / "t.txt").write_bytes("Roméo, où es-tu ?\n".encode())
    assert read_text_file(tmp_path / "t.txt") == "Roméo, où es-tu ?\n"


def test_read_text_file_drops_a_byte_order_mark(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfHello\n")
    assert read_text_file(tmp_path / "t.txt") == "Hello\n"


def test_read_text_file_turns_windows_line_endings_into_newlines(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"one\r\ntwo\r\n")
    assert read_text_file(tmp_path / "t.txt") == "one\ntwo\n"


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_read_text_file_refuses_an_empty_file(tmp_path, content):
    (tmp_path / "t.txt").write_bytes(content)
    with pytest.raises(DatasetError, match="t.txt is empty"):
        read_text_file(tmp_path / "t.txt")


def test_read_text_file_refuses_a_binary_file(tmp_path):
    (tmp_path / "t.bin").write_bytes(b"PK\x03\x04\x00\x00 a zip file")
    with pytest.raises(DatasetError, match="t.bin looks like a binary file"):
        read_text_file(tmp_path / "t.bin")


def test_read_text_file_refuses_text_that_is_not_utf8_naming_the_byte(tmp_path):
    (tmp_path / "t.txt").write_bytes("Roméo".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"t.txt is not UTF-8 text \(byte 3 is 0xe9\)"):
        read_text_file(tmp_path / "t.txt")


def test_read_text_file_refuses_a_folder(tmp_path):
    with pytest.raises(DatasetError, match="is a folder, not a text file"):
        read_text_file(tmp_path)


def test_read_text_file_refuses_a_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt: no such file"):
        read_text_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_read_text_file_reads_utf16_and_utf32_with_a_byte_order_mark(tmp_path, encoding):
    # what Notepad's "Unicode" and PowerShell 5.1's `>` write: UTF-16 (little-endian) with its mark
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(encoding, "")
    (tmp_path / "t.txt").write_bytes((bom + "Roméo,\r\n où es-tu ?\r\n").encode(encoding))
    assert read_text_file(tmp_path / "t.txt") == "Roméo,\n où es-tu ?\n"


def test_a_utf16_file_of_nothing_but_spaces_is_empty(tmp_path):
    (tmp_path / "t.txt").write_bytes(" \n".encode("utf-16"))
    with pytest.raises(DatasetError, match="t.txt is empty"):
        read_text_file(tmp_path / "t.txt")


def test_a_utf16_byte_order_mark_before_bytes_that_are_not_utf16_is_refused_in_one_line(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate
    with pytest.raises(DatasetError, match="t.txt starts with a UTF-16 byte-order mark but is not UTF-16 text"):
        read_text_file(tmp_path / "t.txt")


def test_a_copy_of_the_dataset_and_a_users_text_in_utf16_read_as_the_same_text(tmp_path, monkeypatch, text):
    monkeypatch.setattr(data_mod, "DATA_URL", "http://127.0.0.1:9/unreachable")  # offline
    (tmp_path / data_mod.FILENAME).write_bytes(text.encode("utf-16"))
    assert read_text_file(tmp_path / data_mod.FILENAME) == load_shakespeare(tmp_path, progress=False) == text


@pytest.fixture
def home(tmp_path, monkeypatch):
    """HOME a fresh folder, so that `~` means it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_user_path_expands_a_leading_tilde_and_leaves_other_paths_as_they_are(home):
    assert user_path("~/runs/t2") == home / "runs" / "t2"
    assert user_path(Path("~")) == home
    assert user_path("runs/~x") == Path("runs/~x")


def test_read_text_file_expands_a_tilde(home):
    (home / "book.txt").write_text("to be\n")
    assert read_text_file("~/book.txt") == "to be\n"


def test_load_shakespeare_and_tinygpt_data_dir_expand_a_tilde(home, monkeypatch, real_file_bytes, text):
    monkeypatch.setattr(data_mod, "DATA_URL", "http://127.0.0.1:9/unreachable")  # offline: the copy is used
    (home / "data").mkdir()
    (home / "data" / data_mod.FILENAME).write_bytes(real_file_bytes)
    assert load_shakespeare("~/data", progress=False) == text
    monkeypatch.setenv("TINYGPT_DATA_DIR", "~/data")
    assert default_data_dir() == home / "data"


def test_download_expands_a_tilde_in_its_destination(server, home):
    download(server.url("/small.txt"), "~/cache/small.txt", SMALL_SHA, progress=False)
    assert (home / "cache" / "small.txt").read_bytes() == SMALL


def test_corpus_from_text_encodes_the_text_and_splits_it_90_10():
    corpus = Corpus.from_text("abcdefghij" * 10)
    assert corpus.tokenizer == CharTokenizer("abcdefghij")
    assert corpus.tokenizer.decode(corpus.ids.tolist()) == corpus.text
    assert (len(corpus.train), len(corpus.val)) == (90, 10)
    assert torch.equal(torch.cat([corpus.train, corpus.val]), corpus.ids)


def test_corpus_from_text_encodes_with_a_given_tokenizer():
    tokenizer = CharTokenizer("abcxyz")
    assert Corpus.from_text("xyz", tokenizer).ids.tolist() == [3, 4, 5]


def test_corpus_from_text_refuses_an_empty_text():
    with pytest.raises(DatasetError, match="empty"):
        Corpus.from_text("")


def test_corpus_from_file_reads_the_file_as_read_text_file_does(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfto be\r\nor not\r\n")
    assert Corpus.from_file(tmp_path / "t.txt").text == "to be\nor not\n"


def test_corpus_from_a_missing_file_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        Corpus.from_file(tmp_path / "nope.txt")


def test_a_text_too_short_for_the_context_is_refused_saying_how_long_it_must_be():
    corpus = Corpus.from_text("abcdefghij" * 30)  # validation tenth: 30 characters
    with pytest.raises(DatasetError, match=r"too short for a context of 32 characters.*at least 340 characters"):
        corpus.check_block_size(32)


def test_a_bpe_text_too_short_for_the_context_is_refused_in_tokens():
    corpus = Corpus.from_text("the cat sat on the mat\n" * 60, "bpe:300")
    with pytest.raises(DatasetError, match=r"too short for a context of 64 tokens: its 1,380 characters make "
                                           r"\d+ tokens .* at least about [\d,]+ characters") as e:
        corpus.check_block_size(64)
    assert "characters and its" not in str(e.value)


def test_a_bpe_corpus_encodes_the_first_90_percent_of_the_characters_and_the_rest_apart(text):
    short = text[:50_000]
    corpus = Corpus.from_text(short, "bpe:300")
    n = int(0.9 * len(short))
    assert corpus.tokenizer == BPETokenizer.train(short[:n], 300)  # learned from the training part only
    assert corpus.train.tolist() == corpus.tokenizer.encode(short[:n])
    assert corpus.val.tolist() == corpus.tokenizer.encode(short[n:])
    assert torch.equal(torch.cat([corpus.train, corpus.val]), corpus.ids)


def test_a_corpus_built_with_a_given_bpe_tokenizer_equals_the_one_that_learned_it(text):
    learned = Corpus.from_text(text[:50_000], "bpe:300")
    again = Corpus.from_text(text[:50_000], learned.tokenizer)
    assert torch.equal(again.train, learned.train) and torch.equal(again.val, learned.val)


def test_a_bad_tokenizer_spec_for_a_corpus_is_a_value_error():
    with pytest.raises(ValueError, match="257 or more"):
        Corpus.from_text("abc", "bpe:12")


def test_a_text_long_enough_for_the_context_passes_the_check():
    corpus = Corpus.from_text("abcdefghij" * 34)  # validation tenth: 34 > 33
    corpus.check_block_size(32)


# ---------------------------------------------------------------- encoding a big text

# chunks of every kind BPE knows (words, contractions, digits, symbols, runs of spaces and of newlines)
VARIED = "First Citizen:\n\nWe're 2 men,  I'll say -- 'tis 1599!\n   \tO  ROMEO\n\n\n" * 40


def test_a_character_corpus_keeps_one_byte_an_id():
    corpus = Corpus.from_text(VARIED)
    assert corpus.ids.dtype == torch.uint8
    assert corpus.ids.tolist() == corpus.tokenizer.encode(VARIED)


def test_a_corpus_of_more_than_256_characters_keeps_two_bytes_an_id():
    text = "".join(chr(0x4E00 + i) for i in range(600)) * 3  # 600 distinct CJK characters
    corpus = Corpus.from_text(text)
    assert corpus.ids.dtype == torch.int16
    assert corpus.ids.tolist() == corpus.tokenizer.encode(text)


def test_a_character_corpus_encodes_any_python_string_lone_surrogates_and_all():
    text = "a\ud800b\U0001f600" * 5
    corpus = Corpus.from_text(text)
    assert corpus.ids.tolist() == corpus.tokenizer.encode(text)


def test_a_bpe_corpus_keeps_two_bytes_an_id():
    assert Corpus.from_text(VARIED, "bpe:300").ids.dtype == torch.int16


@pytest.mark.parametrize("tokenizer", [CharTokenizer.from_text(VARIED), BPETokenizer.train(VARIED, 300)])
@pytest.mark.parametrize("piece_chars", [1, 7, 100])
def test_encoding_piece_by_piece_gives_the_ids_of_encoding_the_whole_text(monkeypatch, tokenizer, piece_chars):
    monkeypatch.setattr(data_mod, "PIECE_CHARS", piece_chars)
    assert encode(tokenizer, VARIED).tolist() == tokenizer.encode(VARIED)


def test_a_character_outside_the_vocabulary_is_named_with_its_position_in_the_whole_text(monkeypatch):
    monkeypatch.setattr(data_mod, "PIECE_CHARS", 10)
    text = "ab " * 20 + "abc"
    with pytest.raises(ValueError, match=r"character 'c' at position 62 is not in the vocabulary \(2 characters\)"):
        encode(CharTokenizer("ab"), text.replace(" ", "a"))


def test_encoding_a_text_holds_no_python_list_of_its_ids(monkeypatch):
    monkeypatch.setattr(data_mod, "PIECE_CHARS", 1 << 16)
    text = VARIED * 2000  # 4.4 MB; a list of its ids alone would take 8 bytes an id
    tracemalloc.start()
    try:
        Corpus.from_text(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(text) / 2


def test_encoding_says_what_it_is_doing_when_progress_is_asked_and_nothing_otherwise(monkeypatch, capsys):
    monkeypatch.setattr(data_mod, "PROGRESS_DELAY_S", 0)  # a bar shows only once a phase has taken that long
    Corpus.from_text(VARIED, progress=False)
    assert capsys.readouterr().err == ""
    Corpus.from_text(VARIED, progress=True)
    err = capsys.readouterr().err
    assert "reading the text" in err and "encoding the text" in err


def test_get_batch_and_all_windows_of_compact_ids_give_int64_windows_of_the_same_ids():
    ids = torch.arange(200) % 50
    compact = ids.to(torch.uint8)
    a = get_batch(compact, 8, 4, generator=torch.Generator().manual_seed(0))
    b = get_batch(ids, 8, 4, generator=torch.Generator().manual_seed(0))
    assert a[0].dtype == a[1].dtype == torch.long
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    pairs = zip(all_windows(compact, 8), all_windows(ids, 8))
    assert all(torch.equal(p, q) and p.dtype == torch.long for p, q in pairs)


# ---------------------------------------------------------------- split and batches


def test_train_val_split_is_90_10_by_position():
    seq = torch.arange(1000)
    train, val = train_val_split(seq)
    assert torch.equal(train, torch.arange(900))
    assert torch.equal(val, torch.arange(900, 1000))


def test_train_val_split_of_the_text_keeps_every_token_in_order(data):
    train, val = train_val_split(data)
    assert len(train) == int(len(data) * 0.9)
    assert torch.equal(torch.cat([train, val]), data)


def test_get_batch_shapes_are_batch_by_block():
    x, y = get_batch(torch.arange(500), block_size=8, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == y.dtype == torch.long


def test_get_batch_inputs_are_contiguous_windows_and_targets_are_shifted_by_one():
    seq = torch.arange(500)  # token i has value i, so a window is a run of consecutive values
    x, y = get_batch(seq, block_size=8, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(16, 7, dtype=torch.long))
    assert torch.equal(y, x + 1)
    assert int(y.max()) < 500


def test_get_batch_with_a_seeded_generator_is_reproducible(data):
    a = get_batch(data, 32, 8, generator=torch.Generator().manual_seed(7))
    b = get_batch(data, 32, 8, generator=torch.Generator().manual_seed(7))
    c = get_batch(data, 32, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_get_batch_on_data_no_longer_than_block_size_raises():
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(8), block_size=8, batch_size=2)
