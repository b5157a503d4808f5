"""Variants of the `laptop` preset for a fast machine, each trained for the number of steps it
would do in the 10-minute budget there, then measured on the whole validation split.

    python -m benchmarks.sweep_steps speed [NAME ...]            # ms a step, 2 threads, idle machine
    python -m benchmarks.sweep_steps run NAME STEPS [--threads N] [--out FILE]

`speed` times 300 steps of each variant (after 150 to warm up), so the step counts below can be
sized to one machine: STEPS = the preset's own steps in a 600 s run there x its ms a step / the
variant's. `run` trains one variant for exactly STEPS steps (the cosine schedule planned for
them, no time budget) and appends its full validation loss to --out as one line of JSON. A run
of fixed steps gives the same loss however busy the machine is, so several can share it (one
thread each); only `speed` needs it idle. Results: benchmarks/SWEEP.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from tinygpt.data import Corpus
from tinygpt.config import PRESETS
from tinygpt.evaluate import full_loss
from tinygpt.train import RunOptions, train

BASE = PRESETS["laptop"]


def variant(n_layer=4, n_head=4, n_embd=96, block=64, batch=16, lr=5e-3, dropout=0.0, weight_decay=0.1):
    model = dataclasses.replace(BASE.model, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block,
                                dropout=dropout)
    return dataclasses.replace(BASE, batch_size=batch, lr=lr, min_lr=lr / 10, weight_decay=weight_decay, model=model)


VARIANTS = {
    "4/4/96 b64": variant(),  # the preset
    "4/4/128 b64 lr4e-3": variant(n_embd=128, lr=4e-3),
    "6/4/96 b64": variant(n_layer=6),
    "4/4/96 b128 bs8": variant(block=128, batch=8),
    "4/4/128 b128 lr4e-3": variant(n_embd=128, block=128, lr=4e-3),
    "6/6/120 b64 lr4e-3": variant(n_layer=6, n_head=6, n_embd=120, lr=4e-3),
    "4/4/96 b64 drop0.1": variant(dropout=0.1),
    "4/4/128 b64 lr4e-3 drop0.1": variant(n_embd=128, lr=4e-3, dropout=0.1),
    "4/4/96 b64 wd0.5": variant(weight_decay=0.5),
    "4/4/96 b64 bs32 lr7e-3": variant(batch=32, lr=7e-3),
}


def ms_per_step(cfg) -> float:
    short = dataclasses.replace(cfg, max_steps=150, time_budget=None, eval_interval=10**6, warmup_steps=10)
    t = time.perf_counter()
    train(short, options=RunOptions(device="cpu", progress=False))
    warm = time.perf_counter() - t
    t = time.perf_counter()
    train(dataclasses.replace(short, max_steps=450), options=RunOptions(device="cpu", progress=False))
    return (time.perf_counter() - t - warm) / 300 * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_steps", description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("speed", "run"))
    parser.add_argument("args", nargs="*", help="speed: variant names (default all); run: NAME STEPS")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (speed: 2; run: 1)")
    parser.add_argument("--out", default="benchmarks/results/sweep-steps.jsonl")
    a = parser.parse_args(argv)
    if a.mode == "speed":
        torch.set_num_threads(a.threads or 2)
        for name in a.args or VARIANTS:
            print(json.dumps({"name": name, "ms_per_step": ms_per_step(VARIANTS[name])}), flush=True)
        return 0
    name, steps = a.args[0], int(a.args[1])
    torch.set_num_threads(a.threads or 1)
    result = train(dataclasses.replace(VARIANTS[name], max_steps=steps, time_budget=None),
                   options=RunOptions(device="cpu", progress=False))
    val = Corpus.shakespeare(progress=False).val
    line = {"name": name, "steps": steps, "full_val": full_loss(result.model, val, batch_size=64),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    with open(a.out, "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
