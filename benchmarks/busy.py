"""Busy machine: tinygpt's thread policy against fixed thread counts, with 0, 1, 2 cores kept busy.

A learner's laptop is not idle: other processes here keep cores busy with a plain Python loop while
generation (the workshop and laptop models) and a training step (the laptop preset) are timed with
tinygpt's policy (tinygpt/threads.py) and with 1 and 2 threads, side by side.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import torch

from tinygpt.config import PRESETS
from tinygpt.model import GPT, GPTConfig
from tinygpt.sample import generate
from tinygpt import threads

WORKSHOP = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def busy_cores(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _median(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _with_threads(n, fn):
    """fn under a fixed torch thread count (n an int), or tinygpt's own policy (n == "policy")."""
    def run():
        if n == "policy":
            return fn()
        with_env = {"TINYGPT_THREADS": str(n)}
        import os
        old = {k: os.environ.get(k) for k in with_env}
        os.environ.update(with_env)
        try:
            torch.set_num_threads(n)
            return fn()
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return run


def bench_busy(quick: bool) -> dict:
    torch.manual_seed(0)
    laptop_cfg = PRESETS["laptop"]
    models = {"workshop": GPT(WORKSHOP).eval(), "laptop": GPT(laptop_cfg.model).eval()}
    gen_tokens = {"workshop": 20 if quick else 200, "laptop": 30 if quick else 300}
    train_model = GPT(laptop_cfg.model)
    opt = train_model.configure_optimizer(laptop_cfg.lr, laptop_cfg.weight_decay)
    x = torch.randint(65, (laptop_cfg.batch_size, laptop_cfg.model.block_size))
    settings = ("policy", 1, 2)
    reps = 1 if quick else 5
    out = {"cores": threads.usable_cores(), "rows": []}
    before = torch.get_num_threads()
    for busy in (0, 1, 2):
        with busy_cores(busy):
            for setting in settings:
                row = {"busy_cores": busy, "threads": setting}
                for name, model in models.items():
                    idx = torch.zeros(1, 1, dtype=torch.long)
                    gen = _with_threads(setting, lambda m=model, n=gen_tokens[name]: generate(m, idx, n, generator=torch.Generator().manual_seed(0)))
                    row[f"generate_{name}_{gen_tokens[name]}_s"] = _median(gen, reps)

                def step():
                    _, loss = train_model(x, x)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                if setting == "policy":
                    tt = threads.TrainingThreads("cpu")
                    row["policy_training_threads"] = tt.update()
                    row["train_step_ms"] = 1000 * _median(lambda: [step() for _ in range(3 if quick else 10)], reps) / (3 if quick else 10)
                else:
                    row["train_step_ms"] = 1000 * _median(_with_threads(setting, lambda: [step() for _ in range(3 if quick else 10)]), reps) / (3 if quick else 10)
                torch.set_num_threads(before)
                out["rows"].append(row)
                print(row, flush=True)
    return out


if __name__ == "__main__":
    import json
    print(json.dumps(bench_busy("--quick" in sys.argv), indent=1))
