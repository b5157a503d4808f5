"""Variants of a preset, trained and measured on the whole validation split: how a preset is chosen.

    python -m benchmarks.sweep VARIANT ... --speed                    # ms a training step
    python -m benchmarks.sweep VARIANT ... --steps N                  # exactly N steps each
    python -m benchmarks.sweep VARIANT ... --seconds S [--plan P]     # S seconds of wall time each

A VARIANT is the preset (`--preset`, default laptop) with settings changed, written as
`tinygpt train --set` takes them, comma-separated: "model.n_embd=128,lr=4e-3,min_lr=4e-4";
"preset" is the preset itself. Modes:

- --speed: the mean time of a training step over 300 steps after 150 to warm up
  (no evaluation), so step counts can be sized to one machine. Needs an otherwise idle machine.
- --steps N: N steps with the cosine schedule planned for them and no time budget. A run of fixed
  steps gives the same loss however busy the machine is, so several can share it (one thread each).
- --seconds S: a run of S seconds of wall time, evaluation included. Without --plan, the preset's
  own budget fit plans the schedule (as `tinygpt train --time-budget S` does); with --plan P the
  schedule is planned for P seconds from the measured time a step and not fitted, so the run stops
  S seconds into a P-second schedule (the method that chose the laptop preset: S=45, P=600).
  Needs an otherwise idle machine: it measures wall time.

After a run, its loss over every window of the validation split is measured (outside the timing).
One line of JSON per variant goes to --out (appended; default
benchmarks/results/sweep-YYYYmmdd.jsonl), each with the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch

from benchmarks.common import RESULTS, append_jsonl, machine
from tinygpt.config import PRESETS, TrainConfig, apply_overrides
from tinygpt.data import Corpus
from tinygpt.evaluate import full_loss
from tinygpt.train import RunOptions, train


def variant(preset: str, spec: str) -> TrainConfig:
    """The preset with the comma-separated KEY=VALUE settings of `spec` ("preset": none) applied;
    ValueError (from config.apply_overrides) for an unknown key or a bad value."""
    items = [] if spec.strip() in ("", "preset") else [item.strip() for item in spec.split(",")]
    return apply_overrides(PRESETS[preset], items)


def ms_per_step(cfg: TrainConfig, warm: int = 150, timed: int = 300) -> float:
    """Mean ms of a training step: `timed` steps after `warm` ones, in one run without evaluations
    (the times train() passes to on_step count from the start of its loop)."""
    run = dataclasses.replace(cfg, max_steps=warm + timed, time_budget=None, eval_interval=10**6, eval_iters=1,
                              warmup_steps=min(cfg.warmup_steps, warm))
    at = {}

    def on_step(step, elapsed, model):
        at[step] = elapsed

    train(run, options=RunOptions(progress=False, device="cpu", on_step=on_step))
    last = max(at)
    return (at[last] - at[last - timed]) / timed * 1000


def run_variant(cfg: TrainConfig, val: torch.Tensor, steps: int | None, seconds: float | None,
                plan: float | None) -> dict:
    """Train `cfg` as the mode asks and measure the result on the whole validation split."""
    row = {}
    if steps is not None:
        cfg = dataclasses.replace(cfg, max_steps=steps, time_budget=None)
    elif plan is not None:
        row["ms_per_step"] = ms_per_step(cfg, warm=20, timed=40)
        evals_per_step = 2 * cfg.eval_iters / 3 / cfg.eval_interval  # an eval batch costs about a third of a step
        planned = max(1, int(plan * 1000 / (row["ms_per_step"] * (1 + evals_per_step))))
        cfg = dataclasses.replace(cfg, max_steps=planned, time_budget=seconds, fit_schedule=False)
        row["planned_steps"] = planned
    else:
        cfg = dataclasses.replace(cfg, time_budget=seconds)
    result = train(cfg, options=RunOptions(progress=False, device="cpu"))
    return {**row, "params": result.model.num_params(), "steps": result.step, "seconds": result.history[-1]["time"],
            "full_val_loss": full_loss(result.model, val, batch_size=64)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="VARIANT",
                        help='comma-separated KEY=VALUE settings, e.g. "model.n_embd=128,lr=4e-3", or "preset"')
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--speed", action="store_true", help="time a training step of each variant")
    mode.add_argument("--steps", type=int, help="train each variant for exactly this many steps")
    mode.add_argument("--seconds", type=float, help="train each variant for this many seconds of wall time")
    parser.add_argument("--plan", type=float, default=None,
                        help="with --seconds: plan the schedule for this many seconds (not fitted)")
    parser.add_argument("--preset", default="laptop", choices=sorted(PRESETS), help="the base (default laptop)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: --steps 1, else 2)")
    parser.add_argument("--out", default=None, help="JSON-lines file to append to")
    args = parser.parse_args(argv)
    if args.plan is not None and args.seconds is None:
        parser.error("--plan needs --seconds")
    for name in ("steps", "seconds", "plan", "threads"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name} must be positive, got {value}")
    try:
        configs = {spec: variant(args.preset, spec) for spec in args.variants}
    except ValueError as e:
        parser.error(str(e))
    torch.set_num_threads(args.threads or (1 if args.steps else 2))
    out = args.out or RESULTS / f"sweep-{time.strftime('%Y%m%d')}.jsonl"
    val = None if args.speed else Corpus.shakespeare(progress=False).val
    for spec, cfg in configs.items():
        row = {"variant": spec, "preset": args.preset, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        if args.speed:
            row["ms_per_step"] = ms_per_step(cfg)
        else:
            row.update(mode="steps" if args.steps else "seconds", asked=args.steps or args.seconds, plan=args.plan,
                       **run_variant(cfg, val, args.steps, args.seconds, args.plan))
        row["machine"] = machine()
        append_jsonl(out, row)
        print({k: v for k, v in row.items() if k != "machine"}, flush=True)
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
