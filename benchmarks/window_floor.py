"""What bounds the playground past the window: one exact-window pass of the laptop model, taken apart.

All in one run.

    python -m benchmarks.window_floor [--threads N] [--no-compile] [--out DIR]

Past the window, every new character of the playground is a fresh forward pass over the last
block_size characters (GPT.forward with last_only). This times, for the laptop preset's model
(random weights, the median of many passes):

- eager:      the pass as tinygpt runs it;
- kernels:    the same pass's arithmetic alone: its layer norms, matrix products, attention and
              GELU called one after another on ready-made tensors of the same shapes, with no
              module, view or Python logic between them (what eager PyTorch cannot go below);
- products:   its matrix products alone;
- compiled:   the pass through torch.compile (Inductor; needs a C++ compiler), and how long the
              compilation took; skipped with --no-compile or where it fails (the reason is kept).

From these, the time 300 characters of the playground would take at each: 241 full windows, plus
59 passes inside the window at the measured decoding step (the prompt's own pass counted as one).
The JSON goes to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench import machine
from tinygpt.config import PRESETS
from tinygpt.model import GPT, KVCache

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT, LENGTH = 6, 300  # the playground's "ROMEO:" and its default length


def median_ms(fn, reps: int) -> float:
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


def run(reps: int, compile_too: bool) -> dict:
    cfg = dataclasses.replace(PRESETS["laptop"].model, vocab_size=65, dropout=0.0)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    T = cfg.block_size
    idx = torch.randint(cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    everything, products = kernel_calls(model, T)
    # generate's passes for 300 characters after a 6-character prompt: the prompt's pass (counted as a
    # decoding step), 58 decoding steps up to a full window, then a full window for each of the rest
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
    if compile_too:
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.window_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, default=300, help="passes timed for each median (default 300)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--out", default=None, help="folder for the JSON result (default benchmarks/results/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), **run(args.reps, not args.no_compile)}
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    out = Path(args.out) if args.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"window-floor-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
