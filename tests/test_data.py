"""Dataset: download (checksum verified, atomic), cache checks, split and batches.

Downloads go to a local HTTP server on 127.0.0.1, never to the internet.
"""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

import tinygpt.data as data_mod
from tinygpt.data import DatasetError, download, get_batch, load_shakespeare, train_val_split

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


def test_unwritable_data_folder_raises_dataset_error(server, tmp_path, monkeypatch):
    # tests run as root, which chmod cannot stop: a folder under a regular file cannot exist at all
    monkeypatch.setattr(data_mod, "DATA_URL", server.url("/input.txt"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="cannot write to the data folder"):
        load_shakespeare(tmp_path / "afile" / "sub", progress=False)


def test_default_data_dir_honours_tinygpt_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGPT_DATA_DIR", str(tmp_path))
    assert data_mod.default_data_dir() == tmp_path


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
