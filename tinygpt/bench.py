"""`python -m tinygpt bench`: speed and time to quality on this machine, as ratios measured side by side.

Parts (all by default, or `--only a,b`):
- peak:       this machine's matmul peak, fp32 and bf16 (GFLOP/s)
- throughput: training tokens/s of the workshop model (6/6/384, block 256, batch 16), tinygpt vs
              the workshop's fp32 code with explicit masked-softmax attention (benchmarks/reference_gpt.py),
              and achieved FLOP/s as a fraction of the peak
- generation: 1000 new tokens from the workshop model, KV cache vs recomputing the window each step;
              300 characters in the playground with the laptop model
- memory:     peak resident memory training the laptop preset, and the workshop preset at batch 64
- quality:    the laptop preset's val loss (mean over every validation window) against wall time,
              and the same for the usual CPU recipe (4/4/128, block 64, batch 12, lr 1e-3, 2000 steps)

Results print as a table and are written as JSON under --out.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from .data import load_shakespeare, train_val_split
from .model import GPT, GPTConfig
from .sample import generate
from .tokenizer import CharTokenizer
from .train import PRESETS, TrainConfig, autocast_context, full_loss, pick_precision, train

PARTS = ("peak", "throughput", "generation", "memory", "quality")
WORKSHOP = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2)
THRESHOLDS = (1.886, 1.70, 1.60, 1.55, 1.50)
REPORT_AT = (45, 120, 300, 600)


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def load_reference():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "reference_gpt.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("reference_gpt", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def timed(fn, reps: int) -> float:
    """Best wall time of `reps` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ---------------------------------------------------------------- parts

def bench_peak(quick: bool) -> dict:
    n = 512 if quick else 2048
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"{name}_gflops"] = 2 * n**3 / timed(lambda: a @ b, 3 if quick else 10) / 1e9
    out["bf16_over_fp32"] = out["bf16_gflops"] / out["fp32_gflops"]
    return out


def _train_step_fn(model, optimizer, batch, ctx):
    x, y = batch

    def step():
        with ctx:
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_throughput(quick: bool, peak: dict | None) -> dict:
    ref = load_reference()
    cfg = dataclasses.replace(WORKSHOP, n_layer=2, block_size=64) if quick else WORKSHOP
    batch_size = 16
    dev = torch.device("cpu")
    precision = pick_precision(dev)
    torch.manual_seed(0)
    x = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size))
    y = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size))
    ours = GPT(cfg).train()
    ours_step = _train_step_fn(ours, ours.configure_optimizer(3e-4, 0.1), (x, y), autocast_context(dev, precision))
    tokens = batch_size * cfg.block_size
    out = {"config": f"{cfg.n_layer}/{cfg.n_head}/{cfg.n_embd}, block {cfg.block_size}, batch {batch_size}",
           "precision": precision}
    reps = 2 if quick else 8
    ours_times, ref_times = [], []
    if ref is not None:
        theirs = ref.ReferenceGPT(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout).train()
        ref_step = _train_step_fn(theirs, torch.optim.AdamW(theirs.parameters(), lr=3e-4), (x, y), torch.autocast("cpu", enabled=False))
        ref_step()
    ours_step()
    for _ in range(reps):  # interleaved, so both see the same machine
        ours_times.append(timed(ours_step, 1))
        if ref is not None:
            ref_times.append(timed(ref_step, 1))
    # the fastest of each: on a shared machine, noise only ever adds time
    out["tinygpt_tokens_per_s"] = tokens / min(ours_times)
    flops = ours.flops_per_token() * out["tinygpt_tokens_per_s"]
    out["tinygpt_gflops"] = flops / 1e9
    if peak:
        out["fraction_of_peak"] = out["tinygpt_gflops"] / peak[f"{'bf16' if precision == 'bf16' else 'fp32'}_gflops"]
    if ref is not None:
        out["reference_tokens_per_s"] = tokens / min(ref_times)
        out["speedup"] = out["tinygpt_tokens_per_s"] / out["reference_tokens_per_s"]
    return out


def bench_generation(quick: bool) -> dict:
    ref = load_reference()
    n_new = 60 if quick else 1000
    cfg = dataclasses.replace(WORKSHOP, dropout=0.0)
    if quick:
        cfg = dataclasses.replace(cfg, n_layer=2, block_size=32)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    out = {"new_tokens": n_new}
    t = time.perf_counter()
    generate(model, idx, n_new, generator=torch.Generator().manual_seed(0))
    out["kv_cache_s"] = time.perf_counter() - t
    if ref is not None:
        theirs = ref.ReferenceGPT(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd, 0.0).eval()
        t = time.perf_counter()
        theirs.generate(idx, n_new)
        out["recompute_window_s"] = time.perf_counter() - t
        out["speedup"] = out["recompute_window_s"] / out["kv_cache_s"]
    laptop = dataclasses.replace(PRESETS["smoke" if quick else "laptop"].model, vocab_size=65, dropout=0.0)
    small = GPT(laptop).eval()
    prompt = torch.zeros(1, 6, dtype=torch.long)
    times = []
    for seed in range(3 if quick else 7):
        t = time.perf_counter()
        generate(small, prompt, 300, temperature=0.8, generator=torch.Generator().manual_seed(seed), return_probs=True)
        times.append(time.perf_counter() - t)
    out["playground_300_chars_ms"] = statistics.median(times) * 1000
    return out


MEMORY_SCRIPT = textwrap.dedent(
    """
    import dataclasses, resource, sys
    from tinygpt.train import PRESETS, train
    preset, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = dataclasses.replace(PRESETS[preset], max_steps=steps, batch_size=batch, eval_iters=2, eval_interval=10**6)
    train(cfg, progress=False, device="cpu")
    try:  # this process's own peak; ru_maxrss would include the parent's size at fork time
        status = open("/proc/self/status").read()
        print(int(status.split("VmHWM:")[1].split()[0]))
    except (OSError, IndexError):
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def bench_memory(quick: bool) -> dict:
    runs = {"laptop": ("laptop", 3 if quick else 20, PRESETS["laptop"].batch_size),
            "workshop_batch64": ("workshop", 1 if quick else 3, 64)}
    if quick:
        runs = {"smoke": ("smoke", 3, PRESETS["smoke"].batch_size)}
    out = {}
    for name, (preset, steps, batch) in runs.items():
        r = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, preset, str(steps), str(batch)],
                           capture_output=True, text=True, check=True)
        out[f"{name}_peak_rss_mb"] = int(r.stdout.split()[-1]) / 1024
    return out


# The usual CPU recipe for this task (nanoGPT's shakespeare_char on a CPU), trained by the same code
USUAL_RECIPE = TrainConfig(
    model=GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0),
    batch_size=12, max_steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, eval_interval=250, eval_iters=20,
)


def _quality_curve(cfg: TrainConfig, val: torch.Tensor, quick: bool) -> dict:
    """Train `cfg`, snapshot the weights on a time grid, then measure each snapshot's val loss over the
    whole validation split (outside the timed run)."""
    end = cfg.time_budget or 10**9
    if quick:  # runs of a few seconds: a snapshot every half second
        marks = [m / 2 for m in range(1, 121)]
    else:
        marks = sorted(set(list(range(5, 61, 5)) + list(range(75, min(int(end), 3600) + 1, 15)) + list(REPORT_AT)))
    marks = [m for m in marks if m <= end]
    snapshots = []

    def on_step(step, elapsed, model):
        while marks and elapsed >= marks[0]:
            snapshots.append((marks.pop(0), step, {k: v.detach().clone() for k, v in model.state_dict().items()}))

    result = train(cfg, on_step=on_step, progress=not quick, device="cpu")
    model = GPT(result.model.config)
    final_state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    end_time = result.history[-1]["time"]
    curve = []
    for t, step, state in snapshots + [(end_time, result.step, final_state)]:
        model.load_state_dict(state)
        curve.append({"time_s": t, "step": step, "val_loss": full_loss(model, val, batch_size=64)})
    out = {"precision": result.precision, "steps": result.step, "seconds": end_time}
    return {**out, **summarise_curve(curve, cfg.time_budget), "curve": curve}


def summarise_curve(curve: list[dict], time_budget: float | None) -> dict:
    """Val loss at the REPORT_AT times, when each threshold was first reached, and the best.

    A run that finished inside its time budget still has its final model at the later times; without
    a budget, times after the end are not reported."""
    horizon = max(curve[-1]["time_s"], time_budget or 0)
    out = {}
    for mark in REPORT_AT:
        at = [c for c in curve if c["time_s"] <= mark]
        if at and mark <= horizon:
            out[f"val_loss_at_{mark}s"] = at[-1]["val_loss"]
    for thr in THRESHOLDS:
        first = next((c for c in curve if c["val_loss"] <= thr), None)
        out[f"first_reached_{thr}"] = first["time_s"] if first else None
    out["best_val_loss"] = min(c["val_loss"] for c in curve)
    return out


def bench_quality(quick: bool) -> dict:
    """The laptop preset's val loss against wall time, and the usual recipe's, run one after the other."""
    if quick:
        ours = dataclasses.replace(PRESETS["smoke"], time_budget=8)
        usual = dataclasses.replace(USUAL_RECIPE, max_steps=60, warmup_steps=10, eval_interval=30, eval_iters=2)
    else:
        ours, usual = PRESETS["laptop"], USUAL_RECIPE
    text = load_shakespeare(progress=False)
    _, val = train_val_split(torch.tensor(CharTokenizer.from_text(text).encode(text), dtype=torch.long))
    out = {"preset": "smoke" if quick else "laptop", **_quality_curve(ours, val, quick)}
    ref = _quality_curve(usual, val, quick)
    out["usual_recipe"] = {k: v for k, v in ref.items() if k != "curve"}
    out["usual_recipe_curve"] = ref["curve"]
    t_ours, t_usual = out["first_reached_1.886"], ref["first_reached_1.886"]
    if t_ours and t_usual:
        out["time_to_1.886_speedup"] = t_usual / t_ours
    return out


# ---------------------------------------------------------------- driver

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def run_bench(quick: bool = False, only: str | None = None, out_dir="benchmarks/results") -> int:
    parts = PARTS if not only else tuple(p.strip() for p in only.split(","))
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    results = {"machine": machine(), "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    for part in parts:
        t = time.perf_counter()
        if part == "peak":
            results[part] = bench_peak(quick)
        elif part == "throughput":
            results[part] = bench_throughput(quick, results.get("peak"))
        elif part == "generation":
            results[part] = bench_generation(quick)
        elif part == "memory":
            results[part] = bench_memory(quick)
        elif part == "quality":
            results[part] = bench_quality(quick)
        print(f"\n{part} ({time.perf_counter() - t:.0f} s)")
        for k, v in results[part].items():
            if k.endswith("curve"):
                continue
            if isinstance(v, dict):
                print(f"  {k}:")
                for k2, v2 in v.items():
                    print(f"    {k2:<26} {_fmt(v2)}")
            else:
                print(f"  {k:<28} {_fmt(v)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"bench-{'quick-' if quick else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    (out / name).write_text(json.dumps(results, indent=1))
    print(f"\nwritten to {out / name}")
    return 0
