"""What every benchmark script shares: the machine it ran on, and writing its results as JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """The CPU (and whether it has AVX-512 BF16), cores, torch threads, torch, Python and OS."""
    cpu, avx512_bf16 = platform.processor(), None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = None
    if cpuinfo is not None:
        avx512_bf16 = "avx512_bf16" in cpuinfo
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                   cpu)
    return {"cpu": cpu, "avx512_bf16": avx512_bf16, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def write_json(results: dict, out_dir, name: str) -> Path:
    """Write `results` to OUT_DIR/NAME-YYYYmmdd-HHMMSS.json (the folder made if needed); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def append_jsonl(path, row: dict) -> None:
    """Append `row` to the JSON-lines file `path` (its folder made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
