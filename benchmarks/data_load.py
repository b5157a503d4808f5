"""Reading and encoding a big text: peak memory per MB of text and the time to the first training step.

    python benchmarks/data_load.py [MB] [--tokenizer char|bpe:N]

Makes a text of about MB megabytes (default 30) by repeating Tiny Shakespeare, then in a fresh process:
Corpus.from_file (read, vocabulary, encode, split), one get_batch and one forward/backward of the
smoke model (the first step, without the step-0 evaluation). Prints one JSON line: the seconds of
each phase and the peak resident memory above the process's size before reading, per MB of text.
Run it on a quiet machine: the times vary with the load, the memory does not.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinygpt.config import PRESETS
from tinygpt.data import Corpus, get_batch, load_shakespeare
from tinygpt.model import GPT


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rss_mb() -> float:
    """The resident memory now (Linux); elsewhere the peak so far, which may hide a smaller growth."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except OSError:
        return peak_rss_mb()


def measure(path: Path, tokenizer: str) -> dict:
    """In this process, which has read nothing yet: the phases' seconds and the peak memory."""
    torch.set_num_threads(1)
    cfg = PRESETS["smoke"]
    before = rss_mb()
    t0 = time.perf_counter()
    corpus = Corpus.from_file(path, tokenizer)
    t1 = time.perf_counter()
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    model = GPT(cfg.model)
    x, y = get_batch(corpus.train, cfg.model.block_size, cfg.batch_size, generator=torch.Generator().manual_seed(0))
    _, loss = model(x, y)
    loss.backward()
    t2 = time.perf_counter()
    mb = path.stat().st_size / 1e6
    grown = peak_rss_mb() - before
    return {"text_mb": round(mb, 1), "tokenizer": tokenizer, "ids_dtype": str(corpus.ids.dtype),
            "read_and_encode_s": round(t1 - t0, 2), "first_step_s": round(t2 - t0, 2),
            "peak_rss_above_start_mb": round(grown), "peak_per_mb_of_text": round(grown / mb, 2),
            "python": sys.version.split()[0], "torch": torch.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mb", type=float, nargs="?", default=30.0)
    p.add_argument("--tokenizer", default="char")
    p.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child's file
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.tokenizer)))
        return
    one = load_shakespeare(progress=False)
    path = Path(tempfile.mkdtemp()) / "big.txt"
    path.write_text(one * max(1, round(args.mb * 1e6 / len(one))), encoding="utf-8")
    try:
        subprocess.run([sys.executable, __file__, "--measure", str(path), "--tokenizer", args.tokenizer], check=True)
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
