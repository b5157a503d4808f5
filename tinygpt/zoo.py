"""The trained models that ship inside the package, the exporter that makes them, and their cards.

A shipped model is one safetensors file in the package's `weights/` folder: the float32 weights,
with the GPTConfig and the tokenizer's vocabulary as JSON in the file's metadata (safetensors
holds tensors only, so nothing in the file can run code when it is read). It is read through
importlib.resources, so it works from a wheel, a zip or a checkout alike.

    model, tokenizer = tinygpt.pretrained("laptop")          # eval mode, on the CPU
    python -m tinygpt export runs/laptop/ckpt_best.pt tinygpt/weights/laptop.safetensors \\
        --card docs/pretrained-laptop.md --command "python -m tinygpt train --preset laptop"

The card records how the model was made and what it scores: the exact validation loss
(full_loss over every window of Tiny Shakespeare's validation split), bits per character, and
three seeded samples. A test recomputes the loss from the shipped file and compares it with the
card, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import platform
import re
from importlib import resources
from pathlib import Path

import torch

from . import checks
from .checkpoint import CheckpointError, load, load_weights, read
from .config import PRETRAINED, GPTConfig
from .data import Corpus
from .evaluate import full_loss, val_bits_per_char
from .files import atomic_write
from .model import GPT
from .sample import generate_text
from .tokenizer import tokenizer_from_dict

FORMAT = "tinygpt-pretrained"
CARD_SEEDS = (1, 2, 3)
CARD_SAMPLE_CHARS = 300


def pretrained(name: str = "laptop", *, device="cpu"):
    """(model in eval mode, tokenizer) of the model `name` shipped in the package.

    ValueError, one line listing the shipped names, for an unknown name."""
    if name not in PRETRAINED:
        raise ValueError(f"no shipped model named {name!r}; the package ships: {', '.join(PRETRAINED)}")
    ref = resources.files("tinygpt").joinpath("weights", f"{name}.safetensors")
    with resources.as_file(ref) as path:
        model, tokenizer = load_file(path)
    return model.to(device).eval(), tokenizer


def export(checkpoint, dest) -> Path:
    """Write the weights of a training checkpoint (a ckpt_*.pt) as a shipped-model file `dest`
    (float32 safetensors, config and vocabulary in its metadata); returns `dest`.

    CheckpointError for a checkpoint that cannot be loaded."""
    from safetensors.torch import save

    model, tokenizer, _ = load(checkpoint)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(model.config.to_dict()),
                "tokenizer": json.dumps(tokenizer.to_dict())}
    data = save(state, metadata=metadata)
    return atomic_write(dest, lambda f: f.write(data))


def load_file(path):
    """(model in eval mode, tokenizer) from a file written by export; CheckpointError naming the
    file if it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a tinygpt shipped model (its metadata has no format {FORMAT!r})")
    try:
        config = GPTConfig.from_dict(json.loads(metadata["config"]))
        tokenizer = tokenizer_from_dict(json.loads(metadata["tokenizer"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config or vocabulary in its metadata ({e})") from None
    model = GPT(config)
    load_weights(model, state, path)
    return model.eval(), tokenizer


def machine() -> str:
    """The CPU's model name and core count, and the PyTorch version, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores visible, PyTorch {torch.__version__}"


def score(model, tokenizer, data_dir=None) -> dict:
    """{"val_loss": exact validation loss (nats per token, every window of the split),
    "val_bpc": bits per character of the validation text} on Tiny Shakespeare."""
    corpus = Corpus.shakespeare(data_dir, progress=False, tokenizer=tokenizer)
    return {"val_loss": full_loss(model, corpus.val, batch_size=64),
            "val_bpc": val_bits_per_char(model, corpus, batch_size=64)}


def write_card(card, checkpoint, dest, *, command: str | None = None, note: str | None = None,
               data_dir=None) -> Path:
    """Write the Markdown card of the shipped-model file `dest`, exported from `checkpoint`: how it
    was trained (the command, when given, and the run's own settings), the machine this runs on,
    steps and minutes, the exact validation loss, bits per character, and three seeded samples.
    `note`: a sentence about the run (e.g. that the machine was shared), recorded as given."""
    model, tokenizer = load_file(dest)
    info = read(checkpoint)
    scored = score(model, tokenizer, data_dir)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = info.get("train_config", {})
    elapsed = info.get("elapsed")
    minutes = f"{elapsed / 60:.1f}" if isinstance(elapsed, (int, float)) else "not recorded"
    samples = []
    for seed in CARD_SEEDS:
        text = generate_text(model, tokenizer, "", CARD_SAMPLE_CHARS, temperature=checks.SAMPLE_TEMPERATURE,
                             seed=seed)
        samples.append(f"Seed {seed}:\n\n```text\n{text}\n```\n")
    size = Path(dest).stat().st_size
    lines = [
        f"# The shipped `{Path(dest).stem}` model",
        "",
        f"`tinygpt.pretrained({Path(dest).stem!r})` loads it; `python -m tinygpt sample --pretrained "
        f"{Path(dest).stem}` samples from it. This card is written by `python -m tinygpt export "
        f"--card` and checked by a test that recomputes the validation loss from the shipped file.",
        "",
        f"- trained with: `{command}`" if command else "- trained with: (command not recorded)",
        f"- run settings: max_steps {cfg.get('max_steps')}, time_budget {cfg.get('time_budget')}, "
        f"batch_size {cfg.get('batch_size')}, lr {cfg.get('lr')}, min_lr {cfg.get('min_lr')}, "
        f"warmup_steps {cfg.get('warmup_steps')}, seed {info.get('seed')}, precision {info.get('precision')}, "
        f"device {info.get('device')}",
        f"- model: {json.dumps(model.config.to_dict())}; {n_params:,} parameters; "
        f"file {size:,} bytes (float32 safetensors)",
        f"- machine (where the card was written): {machine()}",
        f"- checkpoint: step {info.get('step')}, after {minutes} minutes of training",
        *([f"- note: {note}"] if note else []),
        f"- validation loss (exact, every window of the validation split): **{scored['val_loss']:.6f}** "
        f"nats per token",
        f"- validation bits per character: **{scored['val_bpc']:.6f}**",
        "",
        f"## Samples ({CARD_SAMPLE_CHARS} characters, temperature {checks.SAMPLE_TEMPERATURE}, "
        f"from the start of a line)",
        "",
        f"`python -m tinygpt sample --pretrained {Path(dest).stem} --seed SEED "
        f"--max-new-tokens {CARD_SAMPLE_CHARS}` gives the same text.",
        "",
        *samples,
    ]
    return atomic_write(card, lambda f: f.write("\n".join(lines).encode("utf-8")))


_LOSS = re.compile(r"validation loss \(exact[^)]*\): \*\*([0-9.]+)\*\*")
_BPC = re.compile(r"validation bits per character: \*\*([0-9.]+)\*\*")


def read_card(text: str) -> dict:
    """{"val_loss", "val_bpc"} as written in a card's text; ValueError if either is missing."""
    loss, bpc = _LOSS.search(text), _BPC.search(text)
    if not (loss and bpc):
        raise ValueError("not a shipped-model card: no exact validation loss or bits per character in it")
    return {"val_loss": float(loss.group(1)), "val_bpc": float(bpc.group(1))}
