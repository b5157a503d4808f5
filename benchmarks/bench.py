"""Speed and time to quality on this machine, as ratios measured side by side in one run.

    python -m benchmarks.bench [--quick] [--only peak,throughput,...] [--threads N] [--out DIR]

Run from a checkout (the repository root): it compares tinygpt with the workshop's code as its
write-up prints it (benchmarks/reference_gpt.py), which is not part of the installed package.

Parts (all by default, or `--only a,b`):
- peak:       this machine's matmul peak, fp32 and bf16 (GFLOP/s)
- throughput: training tokens/s of the workshop model (6/6/384, block 256, batch 16, no dropout),
              tinygpt vs the reference (fp32, explicit masked softmax, AdamW at its defaults), and
              achieved FLOP/s as a fraction of the peak
- generation: the workshop model (random weights, temperature 1, no top-k) against the reference's
              generate: 200 new tokens inside the window, 600 past it (both predict every token from
              the last block_size tokens); with `peak`, the most any fp32 code could gain past the
              window here (tinygpt's FLOPs a token at the fp32 peak against the reference's time)
- playground: the playground with the laptop model: time from a change to its first characters
              on screen and to 300
- window:     what bounds the playground past the window: one exact-window pass of the laptop model
              (GPT.forward with last_only), as tinygpt runs it, as its kernels alone called back to
              back on ready-made tensors, as its matrix products alone, and through torch.compile
              (skipped in --quick, or where it fails: the reason is kept); and what 300 characters
              would take at each (the passes inside the window at the measured one-token step)
- memory:     peak resident memory training the laptop preset, and the workshop preset at batch 64
- quality:    the laptop preset's val loss (mean over every validation window) against wall time,
              and the same for the usual CPU recipe (4/4/128, block 64, batch 12, lr 1e-3, 2000 steps)

Results print as a table and are written as JSON to --out (default benchmarks/results/; a --quick
run, which only checks that the bench works, goes to a temporary folder unless --out is given).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks import reference_gpt
from benchmarks.common import RESULTS, machine, write_json
from tinygpt.config import PRESETS, TrainConfig
from tinygpt.data import Corpus
from tinygpt.device import autocast_context, pick_precision
from tinygpt.model import GPT, GPTConfig, KVCache
from tinygpt.sample import generate
from tinygpt.config import PRESETS, TrainConfig
from tinygpt.device import autocast_context, pick_precision
from tinygpt.evaluate import full_loss
from tinygpt.train import RunOptions, train

PARTS = ("peak", "throughput", "generation", "playground", "window", "memory", "quality")
WORKSHOP = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)  # the write-up's model
THRESHOLDS = (1.886, 1.70, 1.60, 1.55, 1.50)
REPORT_AT = (45, 120, 300, 600)


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
        # bf16 without AVX-512 BF16 runs ~300x slower (over a minute per product here): one timed call
        reps = 3 if quick else (10 if dtype == torch.float32 else 1)
        out[f"{name}_gflops"] = 2 * n**3 / timed(lambda: a @ b, reps) / 1e9
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
    cfg = dataclasses.replace(WORKSHOP, n_layer=2, block_size=64) if quick else WORKSHOP
    batch_size = 16
    dev = torch.device("cpu")
    precision = pick_precision(dev)
    torch.manual_seed(0)
    x = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size))
    y = torch.randint(cfg.vocab_size, (batch_size, cfg.block_size))
    ours = GPT(cfg).train()
    ours_step = _train_step_fn(ours, ours.configure_optimizer(3e-4, 0.1), (x, y), autocast_context(dev, precision))
    theirs = reference_gpt.GPT(cfg).train()
    ref_step = _train_step_fn(theirs, reference_gpt.make_optimizer(theirs), (x, y), torch.autocast("cpu", enabled=False))
    tokens = batch_size * cfg.block_size
    out = {"config": f"{cfg.n_layer}/{cfg.n_head}/{cfg.n_embd}, block {cfg.block_size}, batch {batch_size}",
           "precision": precision}
    ours_times, ref_times = [], []
    ours_step(), ref_step()
    for _ in range(2 if quick else 8):  # interleaved, so both see the same machine
        ours_times.append(timed(ours_step, 1))
        ref_times.append(timed(ref_step, 1))
    # the fastest of each: on a shared machine, noise only ever adds time
    out["tinygpt_tokens_per_s"] = tokens / min(ours_times)
    out["reference_tokens_per_s"] = tokens / min(ref_times)
    out["speedup"] = out["tinygpt_tokens_per_s"] / out["reference_tokens_per_s"]
    out["tinygpt_gflops"] = ours.flops_per_token() * out["tinygpt_tokens_per_s"] / 1e9
    if peak:
        out["fraction_of_peak"] = out["tinygpt_gflops"] / peak[f"{'bf16' if precision == 'bf16' else 'fp32'}_gflops"]
    return out


def _best_of(fns: dict, reps: int) -> dict:
    """The best wall time (s) of each function over `reps` rounds, run in turn within each round."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def past_window_flops(cfg: GPTConfig) -> dict:
    """FLOPs of the arithmetic tinygpt does for one new token past the window: a forward pass over
    block_size tokens whose last layer computes the last position alone (GPT.forward, last_only).
    "weights": the products by weight matrices (c_attn, c_proj, c_fc, lm_head); "attention": the
    causal scores and weighted sums."""
    T, C, L = cfg.block_size, cfg.n_embd, cfg.n_layer
    weights = (L - 1) * T * 2 * 12 * C * C + T * 2 * 2 * C * C + 2 * 10 * C * C + 2 * C * cfg.vocab_size
    attention = (L - 1) * 2 * 2 * C * T * (T + 1) // 2 + 2 * 2 * C * T  # the last layer: one query
    return {"weights": weights, "attention": attention}


def bench_generation(quick: bool, peak: dict | None = None) -> dict:
    """tinygpt's generate against the reference's, same weights, same window semantics. With this
    run's fp32 peak: the largest speedup past the window any fp32 code could reach on this CPU,
    tinygpt's arithmetic done at the peak against the reference's measured time."""
    cfg = dataclasses.replace(WORKSHOP, n_layer=2, block_size=32) if quick else WORKSHOP
    inside, past = (20, 40) if quick else (200, 600)
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    theirs = reference_gpt.GPT(cfg).eval()
    theirs.load_state_dict(reference_state_dict(ours))
    one = torch.zeros(1, 1, dtype=torch.long)
    full = torch.randint(cfg.vocab_size, (1, cfg.block_size), generator=torch.Generator().manual_seed(0))

    def run(fn, idx, n):
        return lambda: fn(idx, n)

    ours_gen = lambda idx, n: generate(ours, idx, n, temperature=1.0, generator=torch.Generator().manual_seed(0))  # noqa: E731
    ours_slide = lambda idx, n: generate(ours, idx, n, temperature=1.0, window="slide",  # noqa: E731
                                         generator=torch.Generator().manual_seed(0))
    ref_gen = lambda idx, n: reference_gpt.generate(theirs, idx, n, temperature=1.0,  # noqa: E731
                                                    generator=torch.Generator().manual_seed(0))
    out = {"config": f"{cfg.n_layer}/{cfg.n_head}/{cfg.n_embd}, block {cfg.block_size}, random weights, "
                     f"temperature 1, no top-k", "inside_new_tokens": inside, "past_new_tokens": past}
    t = _best_of({"ours": run(ours_gen, one, inside), "ref": run(ref_gen, one, inside)}, 1 if quick else 3)
    out["inside_window_s"], out["inside_window_reference_s"] = t["ours"], t["ref"]
    out["inside_window_speedup"] = t["ref"] / t["ours"]
    t = _best_of({"ours": run(ours_gen, full, past), "ref": run(ref_gen, full, past),
                  "slide": run(ours_slide, full, past)}, 1 if quick else 2)
    out["past_window_s"], out["past_window_reference_s"] = t["ours"], t["ref"]
    out["past_window_speedup"] = t["ref"] / t["ours"]
    out["past_window_slide_s"] = t["slide"]  # the approximation (window="slide"), for comparison
    flops = sum(past_window_flops(cfg).values())
    out["past_window_gflop_per_token"] = flops / 1e9
    if peak:
        at_peak = flops / (peak["fp32_gflops"] * 1e9)
        out["past_window_ms_per_token_at_fp32_peak"] = at_peak * 1000
        out["past_window_speedup_bound_fp32"] = t["ref"] / past / at_peak
    return out


def bench_playground(quick: bool) -> dict:
    """The playground with the laptop model (random weights), as a learner drives it: a new seed, then
    the time from that change to the first characters shown and to all 300 (median of 7 changes).
    The text is the workshop's exact window, so past 64 characters every one is a fresh forward pass
    over the last 64; generate with window="slide" for the same length is given for comparison."""
    from tinygpt.tokenizer import CharTokenizer
    from tinygpt.course.widgets import Playground

    laptop = dataclasses.replace(PRESETS["smoke" if quick else "laptop"].model, vocab_size=65, dropout=0.0)
    torch.manual_seed(0)
    small = GPT(laptop).eval()
    tokenizer = CharTokenizer("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    pg = Playground(small, tokenizer, prompt="ROMEO:", length=300, temperature=0.8)
    firsts, totals, slides = [], [], []
    for seed in range(1, 4 if quick else 8):
        pg.seed.value = seed
        pg.wait()
        firsts.append(pg.first_chars_ms)
        totals.append(pg.total_ms)
        idx = torch.tensor([tokenizer.encode("ROMEO:")])
        t0 = time.perf_counter()
        generate(small, idx, 300, temperature=0.8, window="slide", generator=torch.Generator().manual_seed(seed))
        slides.append((time.perf_counter() - t0) * 1000)
    return {"playground_model": f"{laptop.n_layer}/{laptop.n_head}/{laptop.n_embd}, block {laptop.block_size}",
            f"playground_first_{pg.chunk}_chars_ms": statistics.median(firsts),
            "playground_300_chars_ms": statistics.median(totals),
            "generate_300_chars_slide_ms": statistics.median(slides)}


PROMPT, LENGTH = 6, 300  # the playground's "ROMEO:" and its default length


def median_ms(fn, reps: int) -> float:
    """Median wall time of `reps` calls in ms (after a few warm-up calls)."""
    for _ in range(max(3, reps // 10)):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def kernel_calls(model: GPT, T: int):
    """Two functions doing a last_only window's arithmetic on ready-made tensors: all of it, and
    its matrix products alone."""
    cfg = model.config
    C, H = cfg.n_embd, cfg.n_head
    x = torch.randn(T, C)
    q = torch.randn(1, H, T, C // H)
    q_last = torch.randn(1, H, 1, C // H)
    hidden = torch.randn(T, 4 * C)
    layers = []
    for i, block in enumerate(model.blocks):
        rows = 1 if i == cfg.n_layer - 1 else T  # the last layer computes the last row alone
        a, m = block.attn, block.mlp
        layers.append((block.ln_1, a.c_attn, a.c_proj, block.ln_2, m.c_fc, m.c_proj, rows))

    def qkv(c_attn, rows):
        if rows == T:
            return F.linear(x, c_attn.weight, c_attn.bias)
        w, b = c_attn.weight, c_attn.bias  # the last layer: keys and values of every row, one query
        return F.linear(x[:1], w[:C], None if b is None else b[:C]), F.linear(x, w[C:], None if b is None else b[C:])

    def products():
        for _, c_attn, c_proj, _, c_fc, c_proj2, rows in layers:
            qkv(c_attn, rows)
            F.linear(x[:rows], c_proj.weight, c_proj.bias)
            F.linear(x[:rows], c_fc.weight, c_fc.bias)
            F.linear(hidden[:rows], c_proj2.weight, c_proj2.bias)
        F.linear(x[:1], model.lm_head.weight)

    def everything():
        for ln_1, c_attn, c_proj, ln_2, c_fc, c_proj2, rows in layers:
            F.layer_norm(x, (C,), ln_1.weight, ln_1.bias)
            qkv(c_attn, rows)
            if rows == 1:
                F.scaled_dot_product_attention(q_last, q, q)
            else:
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
            F.linear(x[:rows], c_proj.weight, c_proj.bias)
            F.layer_norm(x[:rows], (C,), ln_2.weight, ln_2.bias)
            F.gelu(F.linear(x[:rows], c_fc.weight, c_fc.bias))
            F.linear(hidden[:rows], c_proj2.weight, c_proj2.bias)
        F.linear(F.layer_norm(x[:1], (C,), model.ln_f.weight, model.ln_f.bias), model.lm_head.weight)

    return everything, products


def bench_window(quick: bool) -> dict:
    """One exact-window pass of the laptop model taken apart (see the module docstring), and the time
    300 characters of the playground would take at each speed: 241 full windows after a 6-character
    prompt, plus 59 passes inside the window (the prompt's own pass counted as one) at the measured
    one-token step."""
    cfg = dataclasses.replace(PRESETS["laptop"].model, vocab_size=65, dropout=0.0)
    reps = 5 if quick else 300
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    T = cfg.block_size
    idx = torch.randint(cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    everything, products = kernel_calls(model, T)
    out = {"model": f"{cfg.n_layer}/{cfg.n_head}/{cfg.n_embd}, block {T}, random weights",
           "windows_in_300_chars": PROMPT + LENGTH - T - 1, "decode_steps_in_300_chars": T - PROMPT + 1}
    with torch.inference_mode():
        cache = KVCache(cfg, 1)
        model(idx[:, : T // 2], cache=cache)

        def decode_step():
            cache.length = T // 2
            model(idx[:, :1], cache=cache)

        out["decode_step_ms"] = median_ms(decode_step, reps)
        ms = {"eager": median_ms(lambda: model(idx, last_only=True), reps),
              "kernels": median_ms(everything, reps), "products": median_ms(products, reps)}
    if not quick:
        try:
            t = time.perf_counter()
            compiled = torch.compile(lambda i: model(i, last_only=True)[0], dynamic=False)
            with torch.inference_mode():
                compiled(idx)
                out["compile_s"] = time.perf_counter() - t
                ms["compiled"] = median_ms(lambda: compiled(idx), reps)
                out["compiled_max_abs_diff"] = (compiled(idx) - model(idx, last_only=True)[0]).abs().max().item()
        except Exception as e:  # no C++ compiler, or an Inductor limitation: say so, keep the rest
            out["compiled_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    out["window_ms"] = ms
    inside = out["decode_steps_in_300_chars"] * out["decode_step_ms"]
    out["300_chars_ms_at"] = {k: inside + out["windows_in_300_chars"] * v for k, v in ms.items()}
    return out


def reference_state_dict(model: GPT) -> dict:
    """tinygpt's weights under the reference's names (its blocks live under `blocks.h`), with the
    reference's causal-mask buffers."""
    cfg = model.config
    tril = torch.tril(torch.ones(cfg.block_size, cfg.block_size)).view(1, 1, cfg.block_size, cfg.block_size)
    out = {}
    for name, value in model.state_dict().items():
        if name.startswith("blocks."):
            name = "blocks.h." + name[len("blocks."):]
        out[name] = value
    for i in range(cfg.n_layer):
        out[f"blocks.h.{i}.attn.bias"] = tril
    return out


MEMORY_SCRIPT = textwrap.dedent(
    """
    import dataclasses, resource, sys
    from tinygpt.config import PRESETS
    from tinygpt.train import RunOptions, train
    preset, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = dataclasses.replace(PRESETS[preset], max_steps=steps, batch_size=batch, eval_iters=2, eval_interval=10**6)
    train(cfg, options=RunOptions(device="cpu", progress=False))
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


def quality_curve(cfg: TrainConfig, val: torch.Tensor, quick: bool) -> dict:
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

    result = train(cfg, options=RunOptions(device="cpu", progress=not quick, on_step=on_step))
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
    val = Corpus.shakespeare(progress=False).val
    out = {"preset": "smoke" if quick else "laptop", **quality_curve(ours, val, quick)}
    ref = quality_curve(usual, val, quick)
    out["usual_recipe"] = {k: v for k, v in ref.items() if k != "curve"}
    out["usual_recipe_curve"] = ref["curve"]
    t_ours, t_usual = out["first_reached_1.886"], ref["first_reached_1.886"]
    if t_ours and t_usual:
        out["time_to_1.886_speedup"] = t_usual / t_ours
    return out


# ---------------------------------------------------------------- driver

def _fmt(v) -> str:
    if v is None:
        return "not reached"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def run_bench(quick: bool = False, only: str | None = None, out_dir=None) -> Path:
    """Run the parts, print the table, write the JSON; returns its path. ValueError for an unknown part."""
    parts = PARTS if not only else tuple(p.strip() for p in only.split(","))
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    if out_dir is None:
        out_dir = Path(tempfile.gettempdir()) / "tinygpt-bench" if quick else RESULTS
    results = {"machine": machine(), "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()))
    runners = {"peak": lambda: bench_peak(quick), "throughput": lambda: bench_throughput(quick, results.get("peak")),
               "generation": lambda: bench_generation(quick, results.get("peak")),
               "playground": lambda: bench_playground(quick),
               "window": lambda: bench_window(quick),
               "memory": lambda: bench_memory(quick),
               "quality": lambda: bench_quality(quick)}
    for part in parts:
        t = time.perf_counter()
        results[part] = runners[part]()
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
    path = write_json(results, out_dir, "bench-quick" if quick else "bench")
    print(f"\nwritten to {path}")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a minute) that checks the bench works")
    parser.add_argument("--only", default=None, help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=None, help="folder for the JSON results")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive whole number, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        run_bench(quick=args.quick, only=args.only, out_dir=args.out)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
