"""Generation before and after the forward pass was made one (issue 11.2), interleaved in one run.

    python -m benchmarks.decode_before_after [--reps N] [--threads N] [--out DIR]

"Before" is tinygpt at commit f074b3b, whose generate decoded with a hand-written `Decoder`
beside GPT.forward; it is loaded from `git show` into a temporary folder, so this runs from a git
checkout only. "After" is the checkout's own generate, decoding through GPT.forward. Both get the
same random weights (the old model names its embeddings wte/wpe; its fused c_attn had no bias and
its lm_head had one, zero in both models here) and the same window semantics:
the old generate slid its window by half, so past the window the new one runs with
window="slide"; inside the window both predict every token from all tokens so far. Each case
reports the best of --reps rounds, the two versions taking turns within each round, on --threads
torch threads (default 1: on a shared machine, the steadiest figures); the JSON goes to --out
(default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench import _best_of, machine
from tinygpt.model import GPT, GPTConfig
from tinygpt.sample import generate

BEFORE = "f074b3b"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LAPTOP = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=96)
WORKSHOP = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
# (name, model, prompt tokens, new tokens)
CASES = [
    ("laptop, 58 new tokens inside the window", LAPTOP, 6, 58),
    ("laptop, playground: 300 new tokens (slide)", LAPTOP, 6, 300),
    ("workshop, 100 new tokens inside the window", WORKSHOP, 1, 100),
    ("workshop, 50 new tokens past the window (slide)", WORKSHOP, 256, 50),
]


def load_before(folder: Path):
    """tinygpt's model.py and sample.py at BEFORE, as the package `tinygpt_before`."""
    pkg = folder / "tinygpt_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("model.py", "sample.py"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:tinygpt/{name}"],
                             check=True, capture_output=True, text=True).stdout
        (pkg / name).write_text(src)
    sys.path.insert(0, str(folder))
    return importlib.import_module("tinygpt_before.model"), importlib.import_module("tinygpt_before.sample")


def run(reps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        old_model, old_sample = load_before(Path(tmp))
        results = []
        for name, kw, prompt_len, n_new in CASES:
            torch.manual_seed(0)
            new = GPT(GPTConfig(**kw)).eval()
            old = old_model.GPT(old_model.GPTConfig(dropout=0.0, **kw)).eval()
            state = {k.replace("tok_emb", "wte").replace("pos_emb", "wpe"): v for k, v in new.state_dict().items()}
            # the old c_attn had no bias and the old lm_head had one: both are zero here, so the
            # two models compute the same function
            old.load_state_dict({k: v for k, v in state.items() if not k.endswith("c_attn.bias")}, strict=False)
            idx = torch.randint(kw["vocab_size"], (1, prompt_len), generator=torch.Generator().manual_seed(0))
            window = "slide" if "slide" in name else "exact"
            fns = {
                "before": lambda: old_sample.generate(old, idx, n_new, temperature=0.8, return_probs=True,
                                                      generator=torch.Generator().manual_seed(0)),
                "after": lambda: generate(new, idx, n_new, temperature=0.8, window=window, return_probs=True,
                                          generator=torch.Generator().manual_seed(0)),
            }
            same = torch.equal(fns["before"]()[0], fns["after"]()[0])  # also a warm-up
            best = _best_of(fns, reps)
            row = {"case": name, "window": window, "before_ms": best["before"] * 1000,
                   "after_ms": best["after"] * 1000, "after_over_before": best["after"] / best["before"],
                   "same_tokens": same}
            print(f"{name:<50} before {row['before_ms']:8.1f} ms  after {row['after_ms']:8.1f} ms  "
                  f"after/before {row['after_over_before']:.3f}  same tokens: {same}", flush=True)
            results.append(row)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_before_after", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="rounds; each case reports the best (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="folder for the JSON result (default benchmarks/results/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    rows = run(args.reps)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"decode-before-after-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "before": BEFORE, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "cases": rows}, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
