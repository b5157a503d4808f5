"""Fixtures shared by the unit tests.

The root conftest.py has already set TINYGPT_DEVICE=cpu and TINYGPT_DATA_DIR (when this user's cache
lacks the text). Here: the text, a tiny random GPT, and one smoke-preset training run shared by
every test that needs a trained model or its checkpoints.
"""

from __future__ import annotations

import pytest
import torch

from tinygpt.data import load_shakespeare
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer


@pytest.fixture(scope="session")
def text() -> str:
    """The whole of Tiny Shakespeare."""
    return load_shakespeare(progress=False)


@pytest.fixture(scope="session")
def tokenizer(text) -> CharTokenizer:
    return CharTokenizer.from_text(text)


@pytest.fixture(scope="session")
def data(text, tokenizer) -> torch.Tensor:
    """The whole text as token ids."""
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def tiny_config(**overrides) -> GPTConfig:
    kw = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    kw.update(overrides)
    return GPTConfig(**kw)


def make_tiny_gpt(seed: int = 0, **overrides) -> GPT:
    """A tiny random GPT in eval mode, its head scaled up so the next-token distributions are
    peaked (an untrained model is nearly uniform, and near-ties make token comparisons fragile)."""
    torch.manual_seed(seed)
    model = GPT(tiny_config(**overrides))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model.eval()


@pytest.fixture(name="make_tiny_gpt", scope="session")
def _make_tiny_gpt_fixture():
    """The factory itself: make_tiny_gpt(seed=0, **GPTConfig overrides)."""
    return make_tiny_gpt


@pytest.fixture
def tiny_gpt() -> GPT:
    """A fresh tiny GPT (block_size 16, vocabulary 65) for one test."""
    return make_tiny_gpt()


@pytest.fixture(scope="session")
def shared_tiny_gpt() -> GPT:
    """The same tiny GPT, shared across tests (hypothesis needs a non-function fixture): do not modify."""
    return make_tiny_gpt()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One full `smoke` training run with checkpoints (about 10 s), trained once per session."""
    from tinygpt.config import get_config
    from tinygpt.train import RunOptions, train

    out = tmp_path_factory.mktemp("smoke_run")
    return train(get_config("smoke"), options=RunOptions(out_dir=out, progress=False))


@pytest.fixture
def fixed_thread_count(monkeypatch):
    """For a test that compares two runs bit for bit: the promise holds at a fixed thread count
    (tinygpt/threads.py), fixed here the documented way."""
    monkeypatch.setenv("TINYGPT_THREADS", "1")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The test runs with an empty temporary folder as its working directory (returned)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
