"""Generation before and after a change of the decoding code, interleaved in one run.

    python -m benchmarks.decode_before_after [--before REF] [--reps N] [--threads N] [--out DIR]

"Before" is tinygpt's model.py and sample.py at the commit REF, loaded from `git show` into a
temporary folder (so this runs from a git checkout only); "after" is the checkout's own generate.
REF defaults to b9b2e2f, the commit before the leaner decoding step of issue 16 (one copy of the
new keys and values, the cache's transposed weights for every layer, fewer lookups per call).
f074b3b, whose generate decoded with a hand-written `Decoder` beside GPT.forward (issue 11.2),
still works: that model names its embeddings wte/wpe, its fused c_attn had no bias and its
lm_head had one (zero in both models here), and its generate only slid its window by half, so
its cases past the window run with window="slide". Both versions get the same random weights and
the same window semantics. Each case reports the best of --reps rounds, the two versions taking
turns within each round, on --threads torch threads (default 1: on a shared machine, the
steadiest figures), and whether both drew the same tokens; the JSON goes to --out (default
benchmarks/results/).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
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

BEFORE = "b9b2e2f"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LAPTOP = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=96)
WORKSHOP = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
# (name, model, prompt tokens, new tokens)
CASES = [
    ("laptop, 58 new tokens inside the window", LAPTOP, 6, 58),
    ("laptop, playground: 300 new tokens (exact)", LAPTOP, 6, 300),
    ("laptop, playground: 300 new tokens (slide)", LAPTOP, 6, 300),
    ("workshop, 200 new tokens inside the window", WORKSHOP, 1, 200),
    ("workshop, 20 new tokens past the window (exact)", WORKSHOP, 256, 20),
    ("workshop, 50 new tokens past the window (slide)", WORKSHOP, 256, 50),
]


def load_before(folder: Path, ref: str):
    """tinygpt's model.py and sample.py at the commit `ref`, as the package `tinygpt_before`."""
    pkg = folder / "tinygpt_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("model.py", "sample.py"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:tinygpt/{name}"],
                             check=True, capture_output=True, text=True).stdout
        (pkg / name).write_text(src)
    sys.path.insert(0, str(folder))
    return importlib.import_module("tinygpt_before.model"), importlib.import_module("tinygpt_before.sample")


def run(reps: int, ref: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        old_model, old_sample = load_before(Path(tmp), ref)
        has_window = "window" in inspect.signature(old_sample.generate).parameters
        results = []
        for name, kw, prompt_len, n_new in CASES:
            window = "slide" if "slide" in name else "exact"
            if window == "exact" and prompt_len + n_new > kw["block_size"] and not has_window:
                continue  # that generate only slid its window
            torch.manual_seed(0)
            new = GPT(GPTConfig(**kw)).eval()
            old = old_model.GPT(old_model.GPTConfig(dropout=0.0, **kw)).eval()
            if "tok_emb.weight" in old.state_dict():
                old.load_state_dict(new.state_dict())
            else:  # f074b3b: the old c_attn had no bias and the old lm_head had one: both are zero here,
                # so the two models compute the same function
                state = {k.replace("tok_emb", "wte").replace("pos_emb", "wpe"): v for k, v in new.state_dict().items()}
                old.load_state_dict({k: v for k, v in state.items() if not k.endswith("c_attn.bias")}, strict=False)
            idx = torch.randint(kw["vocab_size"], (1, prompt_len), generator=torch.Generator().manual_seed(0))
            old_kw = {"window": window} if has_window else {}
            fns = {
                "before": lambda: old_sample.generate(old, idx, n_new, temperature=0.8, return_probs=True,
                                                      generator=torch.Generator().manual_seed(0), **old_kw),
                "after": lambda: generate(new, idx, n_new, temperature=0.8, window=window, return_probs=True,
                                          generator=torch.Generator().manual_seed(0)),
            }
            same = torch.equal(fns["before"]()[0], fns["after"]()[0])  # also a warm-up
            best = _best_of(fns, reps)
            row = {"case": name, "window": window, "before_ms": best["before"] * 1000,
                   "after_ms": best["after"] * 1000, "after_over_before": best["after"] / best["before"],
                   "same_tokens": same}
            print(f"{name:<52} before {row['before_ms']:8.1f} ms  after {row['after_ms']:8.1f} ms  "
                  f"after/before {row['after_over_before']:.3f}  same tokens: {same}", flush=True)
            results.append(row)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_before_after", description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help=f"the commit to compare with (default {BEFORE})")
    parser.add_argument("--reps", type=int, default=7, help="rounds; each case reports the best (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="folder for the JSON result (default benchmarks/results/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    rows = run(args.reps, args.before)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"decode-before-after-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "before": args.before, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "cases": rows}, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
