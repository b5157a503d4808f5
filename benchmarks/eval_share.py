"""The share of a default run's time that evaluation takes, per preset, on this machine.

    python -m benchmarks.eval_share [--presets smoke,laptop,workshop] [--steps 5] [--device cpu]

For each preset: the seconds of one training step (median of --steps) and of one evaluation
(as train() makes it on this device; median of --evals), both after a first, cold evaluation
and step, and the share a default run spends evaluating: evals * t_eval / (max_steps * t_step + evals * t_eval), with
evals = max_steps // eval_interval + 1. For a budgeted preset (laptop), the run's length is
its budget; the share is the same per step. Also the seconds to the first training step
(model built, step-0 evaluation, one step), what a user waits for before the bar moves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench import machine
from tinygpt.data import Corpus, get_batch
from tinygpt.device import autocast_context, pick_device, pick_precision
from tinygpt.model import GPT
from tinygpt.config import PRESETS, get_config
from tinygpt.evaluate import eval_config_for, evaluate, val_is_exact
from tinygpt.train import train_step


def measure(preset: str, corpus: Corpus, device: torch.device, steps: int, evals_timed: int) -> dict:
    t_start = time.perf_counter()
    cfg = get_config(preset)
    cfg.model.vocab_size = corpus.tokenizer.vocab_size
    prec = pick_precision(device)
    ctx = autocast_context(device, prec)
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    eval_cfg = eval_config_for(cfg, device.type, model.num_params())  # as train() sizes it here
    optimizer = model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
    g = torch.Generator().manual_seed(0)

    def one_step() -> float:
        x, y = get_batch(corpus.train, cfg.model.block_size, cfg.batch_size, generator=g, device=device)
        t = time.perf_counter()
        train_step(model, optimizer, scaler, x, y, lr=cfg.lr, ctx=ctx, grad_clip=cfg.grad_clip)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def one_eval() -> float:
        t = time.perf_counter()
        evaluate(model, corpus, eval_cfg, device=device, ctx=ctx)
        return time.perf_counter() - t

    one_eval()  # cold: what a user waits for at step 0
    one_step()
    first_step_after = time.perf_counter() - t_start
    t_step = statistics.median(one_step() for _ in range(steps))
    t_eval = statistics.median(one_eval() for _ in range(evals_timed))
    evals = cfg.max_steps // cfg.eval_interval + 1
    share = evals * t_eval / (cfg.max_steps * t_step + evals * t_eval)
    return dict(preset=preset, precision=prec, t_step=t_step, t_eval=t_eval, evals=evals, share=share,
                first_step_after=first_step_after, val_exact=val_is_exact(eval_cfg, corpus))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--steps", type=int, default=5, help="training steps timed (median)")
    p.add_argument("--evals", type=int, default=3, help="evaluations timed (median)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    args = p.parse_args()
    device = pick_device(args.device)
    corpus = Corpus.shakespeare(progress=False)
    print(f"device {device.type}, {torch.get_num_threads()} threads")
    print(f"{'preset':10} {'prec':5} {'step s':>8} {'eval s':>8} {'evals':>6} {'eval share':>10} "
          f"{'first step after s':>18}  val")
    rows = []
    for name in args.presets.split(","):
        r = measure(name, corpus, device, args.steps, args.evals)
        print(f"{r['preset']:10} {r['precision']:5} {r['t_step']:8.3f} {r['t_eval']:8.3f} {r['evals']:6d} "
              f"{100 * r['share']:9.1f}% {r['first_step_after']:18.1f}  {'exact' if r['val_exact'] else 'sampled'}")
        rows.append(r)
    out = Path(args.out) / f"eval-share-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "device": device.type, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                               "presets": rows}, indent=1))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
