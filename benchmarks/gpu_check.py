"""The GPU check: what the workshop model does on one CUDA GPU, in at most about 8 minutes.

    python benchmarks/gpu_check.py                 # on a CUDA machine (or python -m benchmarks.gpu_check)
    python benchmarks/gpu_check.py --cpu-smoke     # the same checks on a tiny model, in seconds
                                                   # (also automatic without CUDA)

Measures, through tinygpt's public API only (train, generate, GPT, PRESETS, checkpoint):
- training throughput of the workshop preset (6/6/384, block 256, batch 64) in bf16 (compute
  capability >= 8.0) and in fp16 with a GradScaler (the T4's path, forced on any GPU): tokens per
  second, seconds per step, model FLOPs utilisation (MFU) against the GPU's published dense peak,
  peak GPU memory. Each is the difference of two runs (N and N + k steps), so start-up, data loading
  and the evaluations cancel out;
- exact resume on CUDA: 2 x half a run with resume against one whole run (bit-identical weights?);
- generation speed with and without the KV cache (tokens per second, the same model and prompt);
- the validation curve of a time-budgeted workshop run without dropout (the workshop's own setting)
  and with dropout 0.2 (the course's option, nanoGPT's value for this data set): where val loss is lowest,
  and whether (and where) it turns upwards.
Writes JSON with the GPU's name into benchmarks/results/ (or --out).

On a machine without CUDA it runs all of this on a tiny model on the CPU in seconds, with fp32 and
bf16 in place of bf16 and fp16 (fp16 training needs CUDA): tests/test_gpu_check.py runs that
mode, so the script cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

if not __package__:  # run as a script (python benchmarks/gpu_check.py): the checkout's root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine, write_json  # noqa: E402
from tinygpt import checkpoint  # noqa: E402
from tinygpt.config import PRESETS, TrainConfig, with_length  # noqa: E402
from tinygpt.model import GPT, GPTConfig  # noqa: E402
from tinygpt.sample import generate  # noqa: E402
from tinygpt.train import RunOptions, train  # noqa: E402

# Published dense (no structured sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's datasheets:
# T4 65 fp16 (no bf16); V100 SXM2 125 fp16; A100 312 bf16/fp16; L4 121 bf16/fp16 (242 "with sparsity");
# H100 SXM 989 bf16/fp16 (1979 with sparsity), H100 PCIe 756; H200 989 (the H100 SXM's compute).
PEAK_TFLOPS = [  # (substring of torch.cuda.get_device_name(), {precision: TFLOP/s}); first match wins
    ("T4", {"fp16": 65.0}),
    ("V100", {"fp16": 125.0}),
    ("A100", {"bf16": 312.0, "fp16": 312.0}),
    ("L4", {"bf16": 121.0, "fp16": 121.0}),
    ("H100 PCIe", {"bf16": 756.0, "fp16": 756.0}),
    ("H100", {"bf16": 989.0, "fp16": 989.0}),
    ("H200", {"bf16": 989.0, "fp16": 989.0}),
]
RISE = 0.01  # nats above the lowest val loss that count as "turned upwards"


def peak_for(gpu_name: str) -> dict[str, float]:
    for key, peaks in PEAK_TFLOPS:
        if key in gpu_name:
            return peaks
    return {}


def plan(cuda: bool) -> dict:
    """The model and the sizes of each check: the workshop preset on a GPU, a tiny model on a CPU."""
    if cuda:
        base = PRESETS["workshop"]
        return {"cfg": base, "steps": (20, 120), "resume_steps": 60, "gen_tokens": 500, "curve_seconds": 120,
                "curve_eval": (250, 40)}
    tiny = TrainConfig(model=GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.2),
                       batch_size=8, max_steps=100, lr=3e-3, min_lr=3e-4, warmup_steps=5)
    return {"cfg": tiny, "steps": (5, 45), "resume_steps": 12, "gen_tokens": 40, "curve_seconds": 1.5,
            "curve_eval": (10, 2)}


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def timed_train(cfg, device, precision, steps, seconds_budget=None):
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    options = RunOptions(device=device, precision=precision, progress=False)
    result = train(with_length(cfg, max_steps=steps, time_budget=seconds_budget), options=options)
    sync(device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return result, time.perf_counter() - t, peak


def throughput(cfg, device, precision, steps, peaks) -> dict:
    """Tokens per second of train(), from the difference of a short and a longer run. Each run's
    history records seconds since its loop started (after loading data and building the model), and
    evaluates only at its ends, with one batch: the difference is (steps[1] - steps[0]) steps alone."""
    fast = dataclasses.replace(cfg, eval_interval=10**6, eval_iters=1, time_budget=None)
    (r1, _, _), (r2, _, peak_mb) = (timed_train(fast, device, precision, n) for n in steps)
    seconds_per_step = (r2.history[-1]["time"] - r1.history[-1]["time"]) / (steps[1] - steps[0])
    tokens_per_s = fast.batch_size * fast.model.block_size / seconds_per_step
    flops_per_token = r2.model.flops_per_token()
    achieved = tokens_per_s * flops_per_token / 1e12
    peak = peaks.get(precision)
    return {"precision": r2.precision, "seconds_per_step": seconds_per_step, "tokens_per_s": tokens_per_s,
            "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None,
            "peak_memory_mb": peak_mb, "flops_per_token": flops_per_token,
            "final_train_loss": r2.history[-1]["train_loss"]}


def exact_resume(cfg, device, precision, steps) -> dict:
    """Half the steps, then resume to the end, against one run of all the steps (constant lr after no
    warm-up, so stopping early does not change the schedule; dropout on, so RNG state matters)."""
    flat = dataclasses.replace(cfg, lr=cfg.lr, min_lr=cfg.lr, warmup_steps=0, eval_interval=max(1, steps // 4),
                               eval_iters=2, time_budget=None)
    with tempfile.TemporaryDirectory() as d:
        options = RunOptions(out_dir=d, device=device, precision=precision, progress=False)
        train(with_length(flat, max_steps=steps // 2), options=options)
        resumed = train(with_length(flat, max_steps=steps), options=dataclasses.replace(options, if_exists="resume"))
        saved = checkpoint.read(Path(d) / "ckpt_last.pt")
    whole = train(with_length(flat, max_steps=steps), options=dataclasses.replace(options, out_dir=None))
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    return {"steps": steps, "precision": whole.precision, "resumed_from_step": steps // 2,
            "checkpoint_step": saved["step"],
            "bit_identical": all(torch.equal(a[k], b[k]) for k in a),
            "max_abs_diff": max((a[k].float() - b[k].float()).abs().max().item() for k in a),
            "same_val_curve": [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]}


def generation(cfg, device, n_tokens) -> dict:
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(cfg.model, dropout=0.0)).to(device).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    out = {}
    for use_cache in (True, False):
        generate(model, prompt, 8, use_cache=use_cache, generator=torch.Generator().manual_seed(0))  # warm-up
        sync(device)
        t = time.perf_counter()
        generate(model, prompt, n_tokens, use_cache=use_cache, generator=torch.Generator().manual_seed(0))
        sync(device)
        out["kv_cache" if use_cache else "no_cache"] = n_tokens / (time.perf_counter() - t)
    return {"new_tokens": n_tokens, "tokens_per_s_kv_cache": out["kv_cache"], "tokens_per_s_no_cache": out["no_cache"],
            "speedup": out["kv_cache"] / out["no_cache"]}


COURSE_DROPOUT = 0.2  # the course's option; the workshop trains without dropout


def val_curve(cfg, device, seconds, dropout, every, iters) -> dict:
    run_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=dropout),
                                  eval_interval=every, eval_iters=iters)
    result, wall, _ = timed_train(run_cfg, device, "auto", None, seconds_budget=seconds)
    hist = result.history
    best = min(hist, key=lambda h: h["val_loss"])
    rising = [h for h in hist if h["step"] > best["step"] and h["val_loss"] > best["val_loss"] + RISE]
    return {"dropout": dropout, "time_budget_s": seconds, "wall_s": wall, "steps": result.step,
            "stopped": result.stopped, "precision": result.precision,
            "best_step": best["step"], "best_val": best["val_loss"], "final_val": hist[-1]["val_loss"],
            "turns_upward_at": rising[0]["step"] if rising else None,
            "history": [{k: h[k] for k in ("step", "time", "train_loss", "val_loss")} for h in hist]}


def run(cpu_smoke: bool) -> dict:
    cuda = torch.cuda.is_available() and not cpu_smoke
    device = "cuda" if cuda else "cpu"
    p = plan(cuda)
    cfg = p["cfg"]
    t0 = time.perf_counter()
    if cuda:
        name, capability = torch.cuda.get_device_name(), list(torch.cuda.get_device_capability())
        precisions = (["bf16"] if tuple(capability) >= (8, 0) else []) + ["fp16"]  # fp16 + GradScaler: the T4 path
    else:
        name, capability, precisions = "cpu (smoke mode: tiny model)", None, ["fp32", "bf16"]
    peaks = peak_for(name) if cuda else {}
    report = {"gpu": name, "device": device, "mode": "cuda" if cuda else "cpu-smoke", "capability": capability,
              "torch": torch.__version__, "machine": machine(), "model": cfg.model.to_dict(),
              "batch_size": cfg.batch_size,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["throughput"] = {prec: throughput(cfg, device, prec, p["steps"], peaks) for prec in precisions}
    report["resume"] = exact_resume(cfg, device, precisions[0], p["resume_steps"])
    report["generation"] = generation(cfg, device, p["gen_tokens"])
    every, iters = p["curve_eval"]
    report["val_curves"] = [val_curve(cfg, device, p["curve_seconds"], dropout, every, iters)
                            for dropout in (0.0, COURSE_DROPOUT)]
    report["elapsed_s"] = time.perf_counter() - t0
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny model on the CPU, in seconds (automatic without CUDA)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the JSON (default benchmarks/results/)")
    args = ap.parse_args(argv)
    report = run(args.cpu_smoke)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", report["gpu"]).strip("-").lower()
    path = write_json(report, args.out, f"gpu-check-{slug}")
    for prec, t in report["throughput"].items():
        mfu = f", MFU {t['mfu']:.1%}" if t["mfu"] is not None else ""
        mem = f", peak memory {t['peak_memory_mb']:.0f} MB" if t["peak_memory_mb"] is not None else ""
        print(f"{prec}: {t['tokens_per_s']:,.0f} tokens/s, {t['seconds_per_step'] * 1000:.1f} ms/step{mfu}{mem}")
    r = report["resume"]
    print(f"resume: bit-identical {r['bit_identical']} (max |diff| {r['max_abs_diff']:.2e})")
    g = report["generation"]
    print(f"generation: {g['tokens_per_s_kv_cache']:,.0f} tokens/s with the KV cache, "
          f"{g['tokens_per_s_no_cache']:,.0f} without ({g['speedup']:.1f}x)")
    for c in report["val_curves"]:
        turn = (f"turns upwards at step {c['turns_upward_at']}" if c["turns_upward_at"] is not None
                else "does not turn upwards")
        print(f"dropout {c['dropout']}: {c['steps']} steps in {c['time_budget_s']:g} s, best val {c['best_val']:.3f} "
              f"at step {c['best_step']}, final {c['final_val']:.3f}; {turn}")
    print(f"{report['elapsed_s']:.0f} s in all; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
