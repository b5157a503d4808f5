"""Speed and time to quality on this machine, as ratios measured side by side in one run.

    python -m benchmarks.bench [--quick] [--only peak,busy,...] [--threads N] [--out DIR]

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
- memory:     peak resident memory training the laptop preset, and the workshop preset at batch 64
- busy:       a machine that is not idle: generation (the workshop model, 200 new tokens inside the
              window; the laptop model, 300) and a training step of the laptop preset (batch 16),
              each with 0, 1 and 2 cores kept busy by other processes (a plain Python loop each),
              timed with tinygpt's thread policy (tinygpt/threads.py) and with 1 and 2 fixed
              threads side by side; per busy level, the policy's time over the best fixed one's
              (targets: within 1.3x with one core busy; idle, no slower)
- data:       reading a big text (Tiny Shakespeare repeated: 30 MB with characters, 10 MB with a
              BPE of 512 tokens; 9 MB of 6,005 distinct CJK characters), each in a fresh process:
              peak resident memory per MB of text and the time to the first training step; then
              the final bits-per-character pass: its seconds and its own peak memory (bounded: one
              forward's logits, whatever the text's size), in MB and per MB of text
- quality:    the laptop preset's val loss (mean over every validation window) against wall time,
              and the same for the usual CPU recipe (4/4/128, block 64, batch 12, lr 1e-3, 2000 steps)

Results print as a table and are written as JSON to --out (default benchmarks/results/; a --quick
run, which only checks that the bench works, goes to a temporary folder unless --out is given).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from benchmarks import reference_gpt
from benchmarks.common import RESULTS, machine, write_json
from tinygpt import threads
from tinygpt.config import PRESETS, TrainConfig
from tinygpt.data import Corpus, load_shakespeare
from tinygpt.device import autocast_context, pick_precision
from tinygpt.evaluate import full_loss
from tinygpt.model import GPT, GPTConfig
from tinygpt.sample import generate
from tinygpt.train import RunOptions, train

PARTS = ("peak", "throughput", "generation", "playground", "memory", "busy", "budget", "data", "quality")
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
    ref_step = _train_step_fn(theirs, reference_gpt.make_optimizer(theirs), (x, y),
                              torch.autocast("cpu", enabled=False))
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
    """FLOPs of the arithmetic tinygpt does for one new token past the window: a full forward pass
    over block_size tokens, every layer on every row and lm_head on every row (GPT.forward returns
    logits for all T positions). "weights": the products by weight matrices (c_attn, c_proj, c_fc,
    lm_head); "attention": the causal scores and weighted sums (each query against the keys up to it)."""
    T, C, L = cfg.block_size, cfg.n_embd, cfg.n_layer
    weights = L * T * 2 * 12 * C * C + T * 2 * C * cfg.vocab_size
    attention = L * 2 * 2 * C * T * (T + 1) // 2
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
    from tinygpt.course.widgets import Playground
    from tinygpt.tokenizer import CharTokenizer

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


# ---------------------------------------------------------------- a busy machine

BUSY_LOOP = "while True: pass"  # what keeps a core busy: a plain Python loop in its own process
BUSY_TARGETS = {1: 1.3, 0: 1.05}  # policy / best fixed, by busy cores: within 1.3x; idle, no slower (5% noise)


@contextlib.contextmanager
def busy_cores(n: int, settle: float = 0.5):
    """Within: `n` other processes each keeping a core busy (yields their Popen objects). They are
    killed and reaped on the way out, whatever happens inside. `settle`: seconds to let them start."""
    procs = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL))
        if n:
            time.sleep(settle)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


@contextlib.contextmanager
def _env_threads(n: int | None):
    """Within: TINYGPT_THREADS=n (n None: unset), so the policy is either fixed or its own; restored after."""
    before = os.environ.get(threads.ENV)
    if n is None:
        os.environ.pop(threads.ENV, None)
    else:
        os.environ[threads.ENV] = str(n)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(threads.ENV, None)
        else:
            os.environ[threads.ENV] = before


def _busy_workloads(quick: bool):
    """{name: (description, run(setting))}: generation with the workshop and laptop models and a
    training step of the laptop preset (batch 16); `setting` is "policy" or a fixed thread count."""
    workshop = dataclasses.replace(WORKSHOP, n_layer=2, block_size=32) if quick else WORKSHOP
    preset = PRESETS["smoke" if quick else "laptop"]
    laptop = dataclasses.replace(preset.model, vocab_size=65, dropout=0.0)
    torch.manual_seed(0)
    gen_models = {"workshop": (GPT(workshop).eval(), 20 if quick else 200),  # inside the window
                  "laptop": (GPT(laptop).eval(), 30 if quick else 300)}
    train_model = GPT(laptop).train()
    optimizer = train_model.configure_optimizer(preset.lr, preset.weight_decay)
    batch = 16
    x = torch.randint(laptop.vocab_size, (batch, laptop.block_size), generator=torch.Generator().manual_seed(0))
    y = torch.randint(laptop.vocab_size, (batch, laptop.block_size), generator=torch.Generator().manual_seed(1))
    train_step = _train_step_fn(train_model, optimizer, (x, y), torch.autocast("cpu", enabled=False))
    steps = 3 if quick else 10
    one = torch.zeros(1, 1, dtype=torch.long)

    def generation(model, n):
        def gen():
            generate(model, one, n, temperature=1.0, generator=torch.Generator().manual_seed(0))

        def run(setting, policy=None):  # generate applies the policy (TINYGPT_THREADS: the fixed setting)
            if setting != "policy":
                torch.set_num_threads(setting)
            return _timed_once(gen)
        return run

    def training(setting, policy):
        torch.set_num_threads(policy.update() if setting == "policy" else setting)
        return _timed_once(lambda: [train_step() for _ in range(steps)]) / steps * 1000

    out = {}
    for name, (model, n) in gen_models.items():
        c = model.config
        out[f"generate_{name}_s"] = (f"{c.n_layer}/{c.n_head}/{c.n_embd}, block {c.block_size}: {n} new tokens "
                                     f"from one, inside the window", generation(model, n))
    out["train_step_ms"] = (f"{laptop.n_layer}/{laptop.n_head}/{laptop.n_embd}, block {laptop.block_size}, "
                            f"batch {batch}: ms a step (forward, backward, AdamW), mean of {steps}", training)
    return out


def _timed_once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_busy(quick: bool) -> dict:
    """Each workload with 0, 1 and 2 cores kept busy by other processes, timed with tinygpt's thread
    policy and with 1 and 2 fixed threads, in turn within each round (median of the rounds); per busy
    level, the policy's time over the best fixed setting's."""
    workloads = _busy_workloads(quick)
    settings = ("policy", 1, 2)
    rounds = 1 if quick else 5
    before = torch.get_num_threads()
    out = {"cores": threads.usable_cores(), "threads_before": before, "rounds": rounds,
           "workloads": {name: desc for name, (desc, _) in workloads.items()}}
    try:
        for busy in (0, 1, 2):
            with busy_cores(busy):
                with _env_threads(None):  # the policy's own choice, even where TINYGPT_THREADS is set
                    meter = threads.LoadMeter()  # a first look at this level's load
                    time.sleep(threads.MIN_LOOK)
                    policy = threads.TrainingThreads("cpu", meter=meter)
                level = {name: {s: [] for s in settings} for name in workloads}
                chosen = []
                for r in range(rounds + 1):  # round 0 warms up, untimed
                    for setting in settings:
                        with _env_threads(None if setting == "policy" else setting):
                            for name, (_, run) in workloads.items():
                                t = run(setting, policy)
                                if r:
                                    level[name][setting].append(t)
                            if setting == "policy":
                                chosen.append(torch.get_num_threads())  # the training step ran last
                        torch.set_num_threads(before)
            row = {}
            for name, times in level.items():
                med = {(s if s == "policy" else f"fixed_{s}"): statistics.median(v) for s, v in times.items()}
                best = min(v for k, v in med.items() if k != "policy")
                row[name] = {**med, "policy_over_best_fixed": med["policy"] / best}
            row["policy_training_threads"] = chosen[-1]
            out[f"busy_{busy}"] = row
    finally:
        torch.set_num_threads(before)
    out["targets"] = {f"busy_{b}": limit for b, limit in BUSY_TARGETS.items()}
    out["targets_met"] = {f"busy_{b}": all(out[f"busy_{b}"][name]["policy_over_best_fixed"] <= limit
                                           for name in workloads) for b, limit in BUSY_TARGETS.items()}
    return out


# ---------------------------------------------------------------- reading a big text

DATA_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import torch
    from tinygpt.config import PRESETS
    from tinygpt.data import Corpus, get_batch
    from tinygpt.evaluate import val_bits_per_char
    from tinygpt.model import GPT

    def rss_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    path, tokenizer = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    cfg = PRESETS["smoke"].model
    before = rss_kb("VmRSS")
    t0 = time.perf_counter()
    corpus = Corpus.from_file(path, tokenizer)
    t1 = time.perf_counter()
    model = GPT(type(cfg)(**{**cfg.to_dict(), "vocab_size": corpus.tokenizer.vocab_size}))
    x, y = get_batch(corpus.train, cfg.block_size, 16, generator=torch.Generator().manual_seed(0))
    _, loss = model(x, y)
    loss.backward()
    t2 = time.perf_counter()
    peak = rss_kb("VmHWM")
    # the final bits-per-character pass (train's last act): its own peak, VmHWM reset to the RSS now
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start, t3 = rss_kb("VmRSS"), time.perf_counter()
    with torch.no_grad():
        val_bits_per_char(model, corpus, batch_size=16)
    t4 = time.perf_counter()
    print(json.dumps({"ids_dtype": str(corpus.ids.dtype).removeprefix("torch."), "read_and_encode_s": t1 - t0,
                      "first_step_s": t2 - t0, "peak_above_start_mb": (peak - before) / 1024,
                      "vocab_size": corpus.tokenizer.vocab_size, "final_pass_tokens": len(corpus.val),
                      "final_pass_s": t4 - t3, "final_pass_peak_above_mb": (rss_kb("VmHWM") - start) / 1024}))
    """
)


def cjk_text(n: int, distinct: int = 6005) -> str:
    """n characters of `distinct` CJK ideographs (3 UTF-8 bytes each), a line break every 40, seeded."""
    g = torch.Generator().manual_seed(0)
    chars = [chr(0x4E00 + int(i)) for i in torch.randint(distinct, (n,), generator=g)]
    chars[: min(n, distinct)] = [chr(0x4E00 + i) for i in range(min(n, distinct))]  # every one of them appears
    return "\n".join("".join(chars[i : i + 40]) for i in range(0, n, 40))


def bench_data(quick: bool) -> dict:
    """Reading and encoding a big text (Tiny Shakespeare repeated; a text of 6,005 distinct CJK
    characters), in a fresh process each: peak resident memory above the process's size before
    reading, per MB of text, and the time to the first training step (read, encode, split, one
    batch, one forward and backward of the smoke model; no step-0 evaluation). Then the final
    bits-per-character pass over the validation split (evaluate.val_bits_per_char): its seconds
    and its own peak above the resident memory before it (VmHWM reset through /proc/self/clear_refs),
    in MB and per MB of text: bounded, so the per-MB figure falls as the text grows. Linux only."""
    runs = {"char": ("char", 2 if quick else 30), "bpe": ("bpe:512", 1 if quick else 10),
            "cjk": ("char", 0.3 if quick else 9)}
    one = load_shakespeare(progress=False)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (tokenizer, mb) in runs.items():
            path = Path(tmp) / f"{name}.txt"
            text = cjk_text(round(mb * 1e6 / 3)) if name == "cjk" else one * max(1, round(mb * 1e6 / len(one)))
            path.write_text(text, encoding="utf-8")
            r = subprocess.run([sys.executable, "-c", DATA_SCRIPT, str(path), tokenizer], capture_output=True,
                               text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
            row = json.loads(r.stdout.splitlines()[-1])
            text_mb = path.stat().st_size / 1e6
            out[name] = {"tokenizer": tokenizer, "text_mb": text_mb, **row,
                         "peak_per_mb_of_text": row["peak_above_start_mb"] / text_mb,
                         "final_pass_peak_per_mb_of_text": row["final_pass_peak_above_mb"] / text_mb}
            path.unlink()
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


# ---------------------------------------------------------------- a time budget on a machine whose pace changes

LOAD_CHANGES = {"load starts at 20%": (0.2, None), "load stops at 50%": (0.0, 0.5), "no load": (None, None)}


def budget_run(cfg: TrainConfig, start: float | None, stop: float | None) -> dict:
    """One budgeted train() run; one other process keeps a core busy from `start` to `stop` (fractions of
    the budget; None: never starts / never stops). Returns where the training loop ended, as a fraction."""
    from tinygpt.train import RunOptions, train

    budget, last = cfg.time_budget, [0.0, 0]
    with contextlib.ExitStack() as stack:
        load = []

        def on_step(step, elapsed, model):
            last[:] = [elapsed, step]
            due = start is not None and elapsed >= start * budget and (stop is None or elapsed < stop * budget)
            if due and not load:
                load.append(stack.enter_context(busy_cores(1, settle=0)))
            if load and stop is not None and elapsed >= stop * budget:
                stack.close()
                load.clear()

        run = train(cfg, options=RunOptions(progress=False, on_step=on_step))
    return {"ended_at": last[0] / budget, "steps": last[1], "stopped": run.stopped}


def bench_budget(quick: bool) -> dict:
    """The budget fit under a pace that changes mid-run: a real `laptop` run (`smoke` with --quick) with
    a time budget, one core kept busy by another process from 20% of the budget to the end, or from the
    start to 50%, and with no load. Target: the training loop ends at 95% of the budget or later."""
    cfg = dataclasses.replace(PRESETS["smoke"], time_budget=4) if quick else \
        dataclasses.replace(PRESETS["laptop"], time_budget=90)
    out = {"preset": "smoke" if quick else "laptop", "time_budget_s": cfg.time_budget, "target_ended_at": 0.95}
    for name, (start, stop) in LOAD_CHANGES.items():
        out[name] = budget_run(cfg, start, stop)
    out["target_met"] = all(out[name]["ended_at"] >= 0.95 for name in LOAD_CHANGES)
    return out


# ---------------------------------------------------------------- driver

def _fmt(v) -> str:
    if v is None:
        return "not reached"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _print_rows(d: dict, indent: int) -> None:
    """One line per figure, nested dicts indented under their name (curves are left to the JSON)."""
    for k, v in d.items():
        if k.endswith("curve"):
            continue
        if isinstance(v, dict):
            print(f"{' ' * indent}{k}:")
            _print_rows(v, indent + 2)
        else:
            print(f"{' ' * indent}{k:<{30 - indent}} {_fmt(v)}")


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
               "memory": lambda: bench_memory(quick),
               "busy": lambda: bench_busy(quick),
               "budget": lambda: bench_budget(quick),
               "data": lambda: bench_data(quick),
               "quality": lambda: bench_quality(quick)}
    for part in parts:
        t = time.perf_counter()
        results[part] = runners[part]()
        print(f"\n{part} ({time.perf_counter() - t:.0f} s)")
        _print_rows(results[part], indent=2)
    path = write_json(results, out_dir, "bench-quick" if quick else "bench")
    print(f"\nwritten to {path}")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a minute) that checks the bench works")
    parser.add_argument("--only", default=None, help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on both sides, tinygpt's generation included (default: torch's own "
                             "choice, and tinygpt's thread policy)")
    parser.add_argument("--out", default=None, help="folder for the JSON results")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be a positive whole number, got {args.threads}")
        torch.set_num_threads(args.threads)
        os.environ[threads.ENV] = str(args.threads)  # else generate applies the policy (the free cores)
    try:
        run_bench(quick=args.quick, only=args.only, out_dir=args.out)
    except ValueError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
