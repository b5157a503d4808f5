"""The sweep that chose the `laptop` preset: val loss over the whole validation split after 45 s of
training (evaluation included), with the cosine schedule planned for a 10-minute run.

    python -m benchmarks.sweep_laptop [--out benchmarks/results/sweep-laptop.jsonl] [--only NAME,...]

One line of JSON per configuration; about a minute each on a 2-core CPU. Results and the reasoning
are in benchmarks/SWEEP.md. Run it on an otherwise idle machine: it measures wall time.
"""

import argparse
import json
import time

import torch

from tinygpt.data import Corpus, Text, get_batch
from tinygpt.model import GPT, GPTConfig
from tinygpt.config import TrainConfig
from tinygpt.evaluate import full_loss
from tinygpt.train import RunOptions, train

BUDGET, PLAN = 45, 600  # seconds measured, seconds the schedule is planned for
# name: layers, heads, n_embd, block, batch, peak lr, warm-up steps
GRID = {
    "old laptop 6/6/192": (6, 6, 192, 128, 32, 2e-3, 50),
    "4/4/128 T64 B32": (4, 4, 128, 64, 32, 3e-3, 30),
    "4/4/128 T128 B32": (4, 4, 128, 128, 32, 3e-3, 30),
    "4/4/192 T128 B32": (4, 4, 192, 128, 32, 3e-3, 30),
    "usual recipe": (4, 4, 128, 64, 12, 1e-3, 100),
    "4/4/128 T64 B12": (4, 4, 128, 64, 12, 3e-3, 30),
    "4/4/128 T64 B16 5e-3": (4, 4, 128, 64, 16, 5e-3, 30),
    "4/4/128 T64 B8": (4, 4, 128, 64, 8, 3e-3, 30),
    "3/4/128 T64 B16 4e-3": (3, 4, 128, 64, 16, 4e-3, 30),
    "4/4/96 T64 B16 5e-3": (4, 4, 96, 64, 16, 5e-3, 30),
    "4/4/128 T32 B32": (4, 4, 128, 32, 32, 4e-3, 30),
    "6/4/128 T64 B12": (6, 4, 128, 64, 12, 3e-3, 30),
    "4/4/96 T64 B16 8e-3": (4, 4, 96, 64, 16, 8e-3, 30),
    "3/4/96 T64 B16 6e-3": (3, 4, 96, 64, 16, 6e-3, 30),
    "4/4/96 T32 B32": (4, 4, 96, 32, 32, 5e-3, 30),
    "3/4/128 T64 B16 6e-3": (3, 4, 128, 64, 16, 6e-3, 30),
    "4/4/64 T64 B16": (4, 4, 64, 64, 16, 8e-3, 30),
    "4/4/96 T64 B8": (4, 4, 96, 64, 8, 5e-3, 30),
    "4/4/128 T64 B16 4e-3": (4, 4, 128, 64, 16, 4e-3, 30),
}


def seconds_per_step(cfg: TrainConfig, train_data) -> float:
    """Median time of a training step (after two warm-up steps)."""
    torch.manual_seed(0)
    model = GPT(cfg.model).train()
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay)
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(12):
        t = time.perf_counter()
        x, y = get_batch(train_data, cfg.model.block_size, cfg.batch_size, generator=g)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return sorted(times[2:])[len(times[2:]) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/sweep-laptop.jsonl")
    ap.add_argument("--only", default=None, help="comma-separated names from GRID")
    args = ap.parse_args()
    corpus = Corpus.shakespeare(progress=False)
    text, tok, train_data, val_data = corpus.text, corpus.tokenizer, corpus.train, corpus.val
    names = args.only.split(",") if args.only else list(GRID)
    for name in names:
        L, H, C, T, B, lr, warmup = GRID[name]
        cfg = TrainConfig(model=GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=L, n_head=H, n_embd=C,
                                          dropout=0.0),
                          batch_size=B, lr=lr, min_lr=lr / 10, warmup_steps=warmup, eval_interval=100, eval_iters=8,
                          max_steps=10**6, time_budget=BUDGET)
        step_s = seconds_per_step(cfg, train_data)
        # plan the cosine for PLAN seconds; evaluation costs 2 * eval_iters forwards (~1/3 step each) per interval
        cfg.max_steps = int(PLAN / (step_s * (1 + 2 * cfg.eval_iters / 3 / cfg.eval_interval)))
        result = train(cfg, Text(text), RunOptions(device="cpu", progress=False))
        row = {"name": name, "layers": L, "heads": H, "n_embd": C, "block": T, "batch": B, "lr": lr,
               "warmup": warmup, "params": result.model.num_params(), "step_s": round(step_s, 4),
               "planned_steps": cfg.max_steps, "steps_in_budget": result.step,
               "val_loss_full": round(full_loss(result.model, val_data), 4)}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
