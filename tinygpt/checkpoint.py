"""Checkpoints: one file holds everything needed to sample or to resume training exactly.

Written atomically (temporary file, flush, fsync, rename), so a crash or a full disk during a
save leaves the previous checkpoint as it was. Read with `torch.load(weights_only=True)`, which
only rebuilds tensors and plain containers and never runs code from the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .config import GPTConfig
from .files import atomic_write, user_path
from .model import GPT
from .tokenizer import CharTokenizer, tokenizer_from_dict

FORMAT = "tinygpt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or used; the message names the file and why."""


def atomic_torch_save(obj, path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside torch.compile's and (Distributed)DataParallel's wrappers, whose state_dict
    keys carry `_orig_mod.` and `module.` in front of the model's own names."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def save(path, *, model: GPT, tokenizer: CharTokenizer, **info) -> Path:
    """Save the model, its config and tokenizer, and any extra `info` (optimizer, scaler,
    step, history, rng, train_config, ...: tensors, numbers, strings, lists and dicts only).

    A compiled or DataParallel-wrapped model is saved under its own parameter names. The file
    gets the mode of an ordinary write (0666 less the umask)."""
    model = unwrap(model)
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


NEEDS = ("a tinygpt checkpoint is a dict written by tinygpt.checkpoint.save(path, model=model, "
         "tokenizer=tokenizer): the weights, the model config and the vocabulary")


def read(path, map_location="cpu") -> dict:
    """The raw checkpoint dict, or CheckpointError naming the file and the reason.

    Tensors saved on a GPU are loaded onto `map_location` (None: the CPU)."""
    path = user_path(path)
    if path.is_dir():
        raise CheckpointError(_folder_message(path))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if _is_safetensors(path):
        raise CheckpointError(f"{path}: not a tinygpt checkpoint: a safetensors file, which holds tensors only, "
                              f"no config or vocabulary; {NEEDS}")
    if (kind := _not_torch(path)) is not None:
        raise CheckpointError(f"{path}: not a checkpoint: {kind}, not a PyTorch file (torch.save writes a zip archive)")
    try:
        obj = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e) and "GLOBAL tinygpt." in str(e):
            raise CheckpointError(
                f"{path}: refused: it holds a whole pickled Python object ({_unsafe_reason(str(e))}, as "
                f"torch.save(model) writes), which only loads by running code from the file; {NEEDS}"
            ) from None
        if "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file asks to run code or build objects a checkpoint never "
                f"holds ({_unsafe_reason(str(e))}); it was not loaded"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    except Exception as e:  # noqa: BLE001 - arbitrary bytes fail in arbitrary ways inside the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: truncated or corrupt ({first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinygpt checkpoint: {_what_it_is(obj)}; {NEEDS}")
    version = obj.get("version")
    if version != VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
            raise CheckpointError(f"{path}: written by a newer tinygpt (checkpoint format version {version}); "
                                  f"this one reads version {VERSION}: upgrade tinygpt to load it")
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, this tinygpt reads {VERSION}")
    return obj


def _folder_message(path: Path) -> str:
    for name in ("ckpt_best.pt", "ckpt_last.pt"):
        if (path / name).is_file():
            return f"{path} is a folder, not a checkpoint file: use {path / name}"
    found = sorted(p.name for p in path.glob("*.pt"))
    if found:
        return f"{path} is a folder, not a checkpoint file: use one of its files: {', '.join(found[:5])}"
    return f"{path} is a folder with no checkpoint in it (train writes ckpt_best.pt and ckpt_last.pt)"


def _what_it_is(obj) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        first = next(iter(obj))
        return (f"it holds only {len(obj)} tensors (a bare state_dict, such as "
                f"torch.save(model.state_dict(), path) writes, starting with {first!r}) and no config or vocabulary")
    if isinstance(obj, dict):
        keys = ", ".join(repr(k) for k in list(obj)[:6]) + (", ..." if len(obj) > 6 else "")
        return f"a dict of {keys}" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def _unsafe_reason(message: str) -> str:
    """torch's reason, without its advice to allow the class (that would run the file's code)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            reason = line.removeprefix("WeightsUnpickler error:").strip()
            return reason.split(" was not an allowed global")[0].removeprefix("Unsupported global: ")
    return "unsupported content"


def _not_torch(path: Path) -> str | None:
    """None for a file torch.save may have written (a zip archive, or the older format, a pickle);
    otherwise what the file looks like: "a text file", or its first bytes."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return None
    try:
        head.decode("utf-8")  # a text file, unless a character was cut at the 4096th byte
        text = b"\x00" not in head
    except UnicodeDecodeError as e:
        text = e.start >= len(head) - 3 and b"\x00" not in head
    return "a text file" if text else f"a file starting with the bytes {head[:4].hex(' ')}"


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its JSON header's length (8 bytes, little-endian), then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < path.stat().st_size


WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, (Distributed)DataParallel


def plain_names(state: dict) -> dict:
    """`state` with the prefixes that torch.compile and DataParallel put in front of every key removed."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _misfit(state: dict, expected: dict) -> str | None:
    """What keeps `state` from loading into a model whose state_dict is `expected` (None: it fits)."""

    def some(names):
        names = sorted(names)
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    problems = []
    if missing := expected.keys() - state.keys():
        problems.append(f"missing {some(missing)}")
    if unexpected := state.keys() - expected.keys():
        problems.append(f"unexpected {some(unexpected)}")
    for name in expected.keys() & state.keys():
        value = state[name]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.shape != expected[name].shape:
            problems.append(f"{name} has shape {tuple(value.shape)}, the config needs {tuple(expected[name].shape)}")
        elif expected[name].is_floating_point() and not value.is_floating_point():
            kind = str(value.dtype).removeprefix("torch.")
            problems.append(f"{name} holds {kind} values, not floating-point weights")
        if len(problems) >= 4:
            break
    return "; ".join(problems) or None


def first_nonfinite(model: torch.nn.Module) -> str | None:
    """'name (k of n values are NaN or infinite)' for the model's first tensor that is not all finite, else None."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            return f"{name} ({bad:,} of {t.numel():,} values are NaN or infinite)"
    return None


def load_weights(model: torch.nn.Module, state, path) -> None:
    """Copy the saved `state` (a checkpoint's "model") into `model`, or raise CheckpointError naming
    `path`: for names or shapes that do not fit (torch.compile's and DataParallel's prefixes are
    fine), for integer weights where the model has floating-point ones, and for weights that are
    not all finite (NaN or infinite). Saved bf16 and fp16 weights are converted to the model's dtype."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: it holds no weights ('model' is {type(state).__name__}, not a state_dict)")
    state = plain_names(state)
    problem = _misfit(state, model.state_dict())
    if problem:
        raise CheckpointError(f"{path}: the weights do not fit the config: {problem}")
    model.load_state_dict(state)  # copies into the model's parameters, converting the dtype
    bad = first_nonfinite(model)
    if bad:
        raise CheckpointError(f"{path}: the weights are not finite: {bad}; nothing can be generated or "
                              f"trained from them")


def load(path, map_location="cpu"):
    """Load a checkpoint: returns (model, tokenizer, info), `info` being everything else.

    The model is float32 whatever the saved dtype (bf16 and fp16 weights are converted), and its
    parameter names may carry torch.compile's or DataParallel's prefixes. CheckpointError, naming
    the file, for anything that does not fit the config (the missing and unexpected names and the
    wrong shapes) and for weights that are not all finite (NaN or infinite)."""
    obj = read(path, map_location)
    if absent := [k for k in ("model", "config", "tokenizer") if k not in obj]:
        raise CheckpointError(f"{path}: incomplete checkpoint: no {', '.join(map(repr, absent))}")
    try:
        config = GPTConfig.from_dict(obj["config"])
        tokenizer = tokenizer_from_dict(obj["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config or vocabulary ({e})") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: the vocabulary has {tokenizer.vocab_size} characters but the model expects "
            f"{config.vocab_size}"
        )
    model = GPT(config)
    load_weights(model, obj.get("model"), path)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    info = {k: v for k, v in obj.items() if k not in ("model", "config", "tokenizer", "format", "version")}
    return model, tokenizer, info
