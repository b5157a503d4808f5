"""A time-budgeted run before and after the budget fit went both ways (issue 16.1), one after the other.

    python -m benchmarks.budget_before_after [--preset laptop] [--budget 600] [--max-steps N] [--out DIR]

"Before" is tinygpt at commit BEFORE, whose fit to the time budget could only shorten the
schedule: on a machine that does the planned steps inside the budget it stopped early. "After" is
the checkout's train(), which also lengthens the schedule to use the budget. Each runs in its own
Python process on the same preset, budget, seed, device (cpu) and threads: the old package is
extracted with `git archive` into a temporary folder, so this runs from a git checkout only.

Reported for each: the steps done, the seconds the run took (as train() returned, evaluation
included) and the full validation loss (the mean over every block_size window of the validation
split, as `tinygpt.evaluate.full_loss` computes it, on the same split for both). Run it on an idle
machine: it measures wall time. The JSON goes to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench import machine
from tinygpt.data import Corpus, default_data_dir

BEFORE = "46648a2^"  # the last commit whose time-budget fit only shortened the schedule
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# Run in a child process by both versions: only names both have (train, full_loss).
CHILD = """
import json, sys, time, torch
preset, budget, max_steps, val_path = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
steps = None if max_steps == "-" else int(max_steps)
try:  # this checkout: train(config, data, options)
    from tinygpt.config import get_config, with_length
    from tinygpt.evaluate import full_loss
    from tinygpt.train import RunOptions, train
    t = time.perf_counter()
    run = train(with_length(get_config(preset), max_steps=steps, time_budget=budget),
                options=RunOptions(device="cpu", precision="fp32", progress=False))
except ImportError:  # before: train(preset, **keywords)
    from tinygpt.train import train, full_loss
    kw = dict(time_budget=budget, device="cpu", precision="fp32", progress=False)
    if steps is not None:
        kw["max_steps"] = steps
    t = time.perf_counter()
    run = train(preset, **kw)
seconds = time.perf_counter() - t
val = torch.load(val_path)
print("RESULT " + json.dumps({"steps": run.step, "seconds": seconds, "last_eval_time": run.history[-1]["time"],
                              "val_loss": full_loss(run.model, val, batch_size=64)}))
"""


def extract_before(folder: Path) -> Path:
    """The tinygpt package at BEFORE, unpacked into `folder`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "tinygpt"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_child(package_root: Path, preset: str, budget: float, max_steps: int | None, val_path: Path) -> dict:
    # the old package looked for the dataset beside itself: both read the folder this one uses
    env = {**os.environ, "PYTHONPATH": str(package_root), "TINYGPT_DATA_DIR": str(default_data_dir())}
    out = subprocess.run([sys.executable, "-c", CHILD, preset, str(budget), str(max_steps or "-"), str(val_path)],
                         env=env, cwd=package_root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the run under {package_root} failed:\n{out.stderr[-2000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.budget_before_after",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--max-steps", type=int, default=None, help="the planned steps (default: the preset's)")
    parser.add_argument("--out", default=None, help="folder for the JSON result (default benchmarks/results/)")
    args = parser.parse_args(argv)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()), flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val_path = tmp / "val.pt"
        torch.save(Corpus.shakespeare(progress=False).val, val_path)
        (tmp / "before").mkdir()
        before_root = extract_before(tmp / "before")
        for name, root in (("before", before_root), ("after", ROOT)):
            rows[name] = run_child(root, args.preset, args.budget, args.max_steps, val_path)
            r = rows[name]
            print(f"{name:6}: {r['steps']:6d} steps in {r['seconds']:6.1f} s of {args.budget:g} "
                  f"({100 * r['seconds'] / args.budget:5.1f}%), full validation loss {r['val_loss']:.4f}", flush=True)
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"budget-before-after-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "before": BEFORE, "preset": args.preset, "budget_s": args.budget,
                                "max_steps": args.max_steps, "date": time.strftime("%Y-%m-%d %H:%M:%S"), **rows},
                               indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
