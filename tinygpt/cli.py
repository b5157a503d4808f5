"""Command line: `python -m tinygpt train|sample|bench` (also installed as `tinygpt`).

Bad input gets one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys

from .checkpoint import CheckpointError
from .data import DatasetError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"tinygpt: error: {message}\n")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{s!r} must be at least 1")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{s!r} must be 0 or more")
    return v


def _finite_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .train import PRESETS

    p = _Parser(prog="tinygpt", description="Train and sample a character-level GPT on Tiny Shakespeare.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write checkpoints")
    t.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="model size and schedule (default laptop; with --resume, the run's own)")
    t.add_argument("--out", default=None, help="folder for ckpt_best.pt, ckpt_last.pt and history.json (default runs/PRESET)")
    t.add_argument("--max-steps", type=_positive_int, default=None,
                   help="train this many steps (replaces a preset's time budget; on --resume, extends or shortens the run)")
    t.add_argument("--time-budget", type=_finite_float, default=None,
                   help="train for at most this many seconds; the lr schedule is fitted to end with it")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT from its ckpt_last.pt")
    t.add_argument("--overwrite", action="store_true", help="start over in OUT, replacing the run it holds")
    t.add_argument("--text", default=None, metavar="FILE", help="train on this UTF-8 text file instead of Tiny Shakespeare")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change one setting of the preset, e.g. --set lr=1e-3 --set model.n_layer=8 (repeatable)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto, or $TINYGPT_DEVICE)")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    t.add_argument("--seed", type=_nonneg_int, default=None, help="seed of a new run (default 1337)")
    t.add_argument("--data-dir", default=None, help="where tinyshakespeare.txt is cached (default data/)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="generate text from a checkpoint")
    s.add_argument("--checkpoint", required=True, help="a ckpt_*.pt file written by train")
    s.add_argument("--prompt", default="", help="text to continue (default: start of a line)")
    s.add_argument("--max-new-tokens", type=_nonneg_int, default=500)
    s.add_argument("--temperature", type=_finite_float, default=0.8, help="0 = greedy (default 0.8)")
    s.add_argument("--top-k", type=_positive_int, default=None, help="keep the k likeliest characters")
    s.add_argument("--seed", type=_nonneg_int, default=None)
    s.add_argument("--device", default="cpu")

    b = sub.add_parser("bench", help="measure speed and time to quality on this machine")
    b.add_argument("--quick", action="store_true", help="a short run (seconds) that checks the bench works")
    b.add_argument("--only", default=None, help="comma-separated parts: peak,throughput,generation,memory,quality")
    b.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
    return p


def _resume_command(args, out: str) -> str:
    """The command line that resumes this run exactly (its settings are in its checkpoint)."""
    import shlex

    words = ["python", "-m", "tinygpt", "train", "--resume", "--out", out]
    for flag, value in (("--text", args.text), ("--data-dir", args.data_dir)):
        if value is not None:
            words += [flag, value]
    for flag, value in (("--device", args.device), ("--precision", args.precision)):
        if value != "auto":
            words += [flag, value]
    return shlex.join(words)


def cmd_train(args) -> int:
    from tqdm.auto import tqdm

    from .data import Corpus
    from .train import RunExistsError, TrainingError, pick_device, train

    if args.precision == "fp16" and pick_device(args.device).type != "cuda":
        raise ValueError("fp16 training needs a CUDA GPU; use bf16 or fp32")
    out = args.out or f"runs/{args.preset or 'laptop'}"
    corpus = Corpus.from_file(args.text) if args.text is not None else None
    try:
        run = train(args.preset, out_dir=out, device=args.device, precision=args.precision, seed=args.seed,
                    max_steps=args.max_steps, time_budget=args.time_budget, resume=args.resume,
                    overwrite=args.overwrite, overrides=args.overrides, corpus=corpus, data_dir=args.data_dir,
                    progress=not args.quiet, on_notice=lambda m: tqdm.write(f"tinygpt: {m}", file=sys.stdout))
    except RunExistsError as e:
        at = f" (at step {e.step})" if e.step is not None else ""
        print(f"tinygpt: error: {out} already holds a run{at}: add --resume to continue it, or --overwrite "
              f"to start over and replace it", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"tinygpt: error: {e}", file=sys.stderr)
        return 1
    if run.stopped == "interrupted":
        print(f"tinygpt: interrupted at step {run.step}; resume with: {_resume_command(args, out)}", file=sys.stderr)
        return 130
    last = run.history[-1] if run.history else None
    if last:
        print(f"step {run.step} ({run.stopped}): train loss {last['train_loss']:.4f}, "
              f"val loss {last['val_loss']:.4f}, best val {run.best_val:.4f}; checkpoints in {out}")
    return 0


def cmd_sample(args) -> int:
    from . import checkpoint
    from .sample import generate_text
    from .train import pick_device

    device = pick_device(args.device)
    model, tokenizer, _ = checkpoint.load(args.checkpoint, map_location=device)
    text = generate_text(model, tokenizer, args.prompt, args.max_new_tokens, temperature=args.temperature,
                         top_k=args.top_k, seed=args.seed)
    print(text)
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    return run_bench(quick=args.quick, only=args.only, out_dir=args.out)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "bench": cmd_bench}[args.command](args)
    except (ValueError, DatasetError, CheckpointError) as e:
        print(f"tinygpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinygpt: interrupted", file=sys.stderr)
        return 130
