"""Checkpoints: one file holds everything needed to sample or to resume training exactly.

Written atomically (temporary file, flush, fsync, rename), so a crash or a full disk during a
save leaves the previous checkpoint as it was. Read with `torch.load(weights_only=True)`, which
only rebuilds tensors and plain containers and never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .model import GPT, GPTConfig
from .tokenizer import CharTokenizer

FORMAT = "tinygpt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used; the message names the file and why."""


def atomic_torch_save(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(path, *, model: GPT, tokenizer: CharTokenizer, **info) -> Path:
    """Save the model, its config and tokenizer, and any extra `info` (optimizer, scaler,
    step, history, rng, train_config, ...: tensors, numbers, strings, lists and dicts only)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "model": state,
        "config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        **info,
    }
    return atomic_torch_save(obj, path)


def read(path, map_location="cpu") -> dict:
    """The raw checkpoint dict, or CheckpointError naming the file and the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file asks to run code or build objects a checkpoint never "
                f"holds ({_unsafe_reason(str(e))}); it was not loaded"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupt ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinygpt checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {obj.get('version')!r}, this tinygpt reads {VERSION}")
    return obj


def _unsafe_reason(message: str) -> str:
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            return line.removeprefix("WeightsUnpickler error:").strip()
    return "unsupported content"


def load(path, map_location="cpu"):
    """Load a checkpoint: returns (model, tokenizer, info), `info` being everything else."""
    obj = read(path, map_location)
    try:
        config = GPTConfig.from_dict(obj["config"])
        tokenizer = CharTokenizer.from_dict(obj["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config or vocabulary ({e})") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: the vocabulary has {tokenizer.vocab_size} characters but the model expects "
            f"{config.vocab_size}"
        )
    model = GPT(config)
    try:
        model.load_state_dict(obj["model"])
    except (KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the weights do not fit the config ({first})") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    info = {k: v for k, v in obj.items() if k not in ("model", "config", "tokenizer", "format", "version")}
    return model, tokenizer, info
