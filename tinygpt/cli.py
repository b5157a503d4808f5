"""Command line: `python -m tinygpt train|sample|export` (also installed as `tinygpt`).

Bad input gets one line on stderr and exit status 2, never a traceback, and so does the operating
system saying no (a read-only or full disk, memory exhausted, a folder another run holds); Ctrl-C,
one line and 130, even while torch is still being imported (this module imports it only when a
command runs). Text the console cannot encode is written as \\uXXXX escapes, never an error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"tinygpt: error: {message}\n")


def number(kind=int, *, min=None, max=None, finite=True):
    """An argparse `type` for a number of `kind` (int or float) from `min` to `max`, finite by default.

    The one validator behind every numeric option; its errors name the value and the rule, and
    argparse puts the option's name in front of them."""
    noun = "a whole number" if kind is int else "a number"

    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not {noun}") from None
        if finite and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
        if min is not None and v < min:
            raise argparse.ArgumentTypeError(f"{s!r} must be {min} or more")
        if max is not None and v > max:
            raise argparse.ArgumentTypeError(f"{s!r} must be at most {max:,}")
        return v

    return parse


def checked(kind, check):
    """An argparse `type`: a number of `kind` (see `number`), then the library's own validator
    `check` (tinygpt.checks), whose one-line ValueError becomes argparse's error."""
    parse = number(kind)

    def parse_and_check(s: str):
        try:
            return check(parse(s))
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse_and_check


def _tokenizer_arg(s: str) -> str:
    """An argparse `type` for --tokenizer: "char" or "bpe:N" (see tokenizer.parse_tokenizer_spec)."""
    from .tokenizer import parse_tokenizer_spec

    try:
        parse_tokenizer_spec(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


_positive_int = number(int, min=1)
_nonneg_int = number(int, min=0)
_finite_float = number(float)


def build_parser() -> argparse.ArgumentParser:
    from . import checks
    from .config import PRESETS, PRETRAINED

    p = _Parser(prog="tinygpt", description="Train and sample a small GPT (character-level or byte-level BPE) "
                                            "on Tiny Shakespeare or your own text.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and write checkpoints")
    t.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="model size and schedule (default laptop; with --resume, the run's own)")
    t.add_argument("--out", default=None,
                   help="folder for ckpt_best.pt, ckpt_last.pt and history.json (default runs/PRESET)")
    t.add_argument("--max-steps", type=_positive_int, default=None,
                   help="train this many steps (replaces a preset's time budget; "
                        "on --resume, extends or shortens the run)")
    t.add_argument("--time-budget", type=_finite_float, default=None,
                   help="train for at most this many seconds; the lr schedule is fitted to end with it")
    t.add_argument("--resume", action="store_true", help="continue the run in OUT from its ckpt_last.pt")
    t.add_argument("--overwrite", action="store_true", help="start over in OUT, replacing the run it holds")
    t.add_argument("--text", default=None, metavar="FILE",
                   help="train on this UTF-8 text file instead of Tiny Shakespeare")
    t.add_argument("--tokenizer", type=_tokenizer_arg, default=None, metavar="SPEC",
                   help="char (default): one token a character; bpe:N: a byte-level BPE of N tokens (256 bytes + "
                        "N-256 merges, N >= 257, e.g. bpe:512) learned from the training split only. Saved in the "
                        "checkpoint; with --resume, the run's own. Losses are then per token: compare runs by the "
                        "bits per character printed at the end")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change one setting of the preset, e.g. --set lr=1e-3 --set model.n_layer=8 (repeatable)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto, or $TINYGPT_DEVICE)")
    t.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    t.add_argument("--seed", type=_nonneg_int, default=None, help="seed of a new run (default 1337)")
    t.add_argument("--data-dir", default=None, help="where tinyshakespeare.txt is cached "
                   "(default $TINYGPT_DATA_DIR, else this user's cache folder)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="generate text from a checkpoint or a shipped model")
    model = s.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", metavar="PATH", help="a ckpt_*.pt file written by train")
    model.add_argument("--pretrained", metavar="NAME",
                       help=f"a model shipped in the package: {', '.join(PRETRAINED)}")
    prompt = s.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="text to continue (default: start of a line)")
    prompt.add_argument("--prompt-file", default=None, metavar="PATH",
                        help="read the prompt from a UTF-8 file, or from stdin with -")
    s.add_argument("--num-samples", type=number(int, min=1), default=1, metavar="N",
                   help="how many texts (default 1)")
    s.add_argument("--max-new-tokens", type=checked(int, checks.max_new_tokens), default=500, metavar="N",
                   help="tokens to generate (default 500): characters for a character-level model, a few "
                        "characters each for a BPE one")
    s.add_argument("--temperature", type=checked(float, checks.temperature), default=checks.SAMPLE_TEMPERATURE,
                   metavar="T", help=f"0 = greedy (default {checks.SAMPLE_TEMPERATURE})")
    s.add_argument("--top-k", type=checked(int, checks.top_k), default=checks.TOP_K, metavar="K",
                   help="keep the k likeliest tokens")
    s.add_argument("--top-p", type=checked(float, checks.top_p), default=checks.TOP_P, metavar="P",
                   help="then keep the fewest likeliest tokens whose probabilities sum to at least P "
                        f"(nucleus sampling; default {checks.TOP_P:g} = off)")
    s.add_argument("--seed", type=number(int, min=0), default=None)
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto, or $TINYGPT_DEVICE)")
    s.add_argument("--window", choices=["exact", "slide"], default="exact",
                   help="past the context: exact = the last block_size tokens for every new one, as the "
                        "workshop's generate (default); slide = drop the older half when full, faster")

    e = sub.add_parser("export", help="write a training checkpoint's weights as a shipped-model file")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a ckpt_*.pt file written by train")
    e.add_argument("dest", metavar="DEST", help="the .safetensors file to write (weights, config, vocabulary)")
    e.add_argument("--card", default=None, metavar="PATH",
                   help="also write the model's Markdown card: exact validation loss, bits per character "
                        "and three seeded samples (reads Tiny Shakespeare)")
    e.add_argument("--command", default=None, dest="trained_with", metavar="TEXT",
                   help="the command that trained the checkpoint, recorded in the card")
    e.add_argument("--note", default=None, metavar="TEXT", help="a sentence about the run, recorded in the card")
    e.add_argument("--data-dir", default=None, help="where tinyshakespeare.txt is cached (for --card)")

    return p


def _resume_command(args, out: str) -> str:
    """The command line that resumes this run exactly (its settings are in its checkpoint)."""
    import shlex

    from .distributed import launched_world_size

    n = launched_world_size()  # a run of N processes resumes on N (train refuses another number)
    launcher = ["torchrun", "--standalone", f"--nproc_per_node={n}"] if n > 1 else ["python"]
    words = launcher + ["-m", "tinygpt", "train", "--resume", "--out", out]
    for flag, value in (("--text", args.text), ("--data-dir", args.data_dir)):
        if value is not None:
            words += [flag, value]
    for flag, value in (("--device", args.device), ("--precision", args.precision)):
        if value != "auto":
            words += [flag, value]
    return shlex.join(words)


def _summary(run, out: str) -> str:
    """The last line of a training run: where it stopped, its losses (per token) and bits per character."""
    last = run.history[-1]
    per = "" if run.tokenizer.kind == "char" else f" (per token of a {run.tokenizer.vocab_size}-token BPE)"
    bpc = f"; val {run.val_bits_per_char:.4f} bits per character" if run.val_bits_per_char is not None else ""
    return (f"step {run.step} ({run.stopped}): train loss {last['train_loss']:.4f}, val loss {last['val_loss']:.4f}, "
            f"best val {run.best_val:.4f}{per}{bpc}; checkpoints in {out}")


def _train_config(args, out: str, note):
    """The TrainConfig the flags ask for: --preset (default laptop; with --resume, the run's own),
    changed by --set, --max-steps and --time-budget; None for the run's own config unchanged."""
    from pathlib import Path

    from . import checkpoint
    from .config import apply_overrides, get_config, override_items, with_length
    from .runs import saved_config

    for key, _ in override_items(args.overrides):
        for name in ("max_steps", "time_budget"):
            if key == name and getattr(args, name) is not None:
                raise ValueError(f"{name} is given twice, by --{name.replace('_', '-')} ({name}="
                                 f"{getattr(args, name)!r}) and by --set {key}: give it once")
    last = Path(out) / "ckpt_last.pt"
    resuming = args.resume and last.exists()
    changed = args.overrides or args.max_steps is not None or args.time_budget is not None
    if resuming and args.preset is None and not changed:
        return None  # train() reads the run's own
    base = saved_config(checkpoint.read(last), last) if resuming and args.preset is None else \
        get_config(args.preset or "laptop")
    cfg = apply_overrides(base, args.overrides)
    if not resuming and args.max_steps is not None and args.time_budget is None and cfg.time_budget is not None:
        note(f"--max-steps {args.max_steps} replaces the preset's time budget of {cfg.time_budget:g} s "
             f"(give a time budget too to keep one)")
    return with_length(cfg, max_steps=args.max_steps, time_budget=args.time_budget)


def cmd_train(args) -> int:
    from tqdm.auto import tqdm

    from .data import Shakespeare, Text, read_text_file
    from .device import pick_device
    from .distributed import launched_rank
    from .files import check_writable
    from .runs import ResourceError, RunExistsError, TrainingError
    from .train import RunOptions, train

    # Under torchrun every rank runs this command; rank 0 speaks for all (train() keeps the ranks in
    # step, so they stop and fail alike). A crash's traceback still comes from whichever rank it hit.
    say = print if launched_rank() == 0 else (lambda *a, **k: None)

    def note(m):
        if launched_rank() == 0:
            tqdm.write(f"tinygpt: {m}", file=sys.stdout)

    if args.precision == "fp16" and pick_device(args.device).type != "cuda":
        raise ValueError("fp16 training needs a CUDA GPU; use bf16 or fp32")
    if args.resume and args.overwrite:
        raise ValueError("resume and overwrite (--resume, --overwrite) contradict each other: choose one")
    if args.text is not None and args.data_dir is not None:
        raise ValueError("--data-dir / data_dir is where Tiny Shakespeare is kept; it has no use with your own text")
    out = args.out or f"runs/{args.preset or 'laptop'}"
    if launched_rank() == 0:
        check_writable(out)  # a read-only folder is refused before a big text is read
    data = (Text(read_text_file(args.text), args.tokenizer) if args.text is not None else
            Shakespeare(args.data_dir, args.tokenizer))
    if_exists = "resume" if args.resume else "overwrite" if args.overwrite else "refuse"
    options = RunOptions(out_dir=out, if_exists=if_exists, device=args.device, precision=args.precision,
                         seed=args.seed, progress=not args.quiet, on_notice=note)
    try:
        run = train(_train_config(args, out, note), data, options)
    except RunExistsError as e:
        at = f" (at step {e.step})" if e.step is not None else ""
        how = ("add --resume to continue it, or --overwrite" if e.resumable else
               "it has no ckpt_last.pt to resume from: add --overwrite")
        say(f"tinygpt: error: {out} already holds a run{at}: {how} to start over and replace it", file=sys.stderr)
        return 2
    except TrainingError as e:  # bad input (a ResumeError is also a ValueError) or the machine saying no: 2;
        say(f"tinygpt: error: {e}", file=sys.stderr)  # a failure in training (a non-finite loss): 1
        return 2 if isinstance(e, (ValueError, ResourceError)) else 1
    if run.stopped == "interrupted":
        say(f"tinygpt: interrupted at step {run.step}; resume with: {_resume_command(args, out)}", file=sys.stderr)
        return 130
    if run.history:
        say(_summary(run, out))
    return 0


SAMPLE_SEPARATOR = "-" * 15  # printed between samples, as nanoGPT's sample.py does


def read_prompt(args) -> str:
    """--prompt, or the text of --prompt-file (`-` is stdin), used exactly as it is, final newline included."""
    if args.prompt_file is None:
        return args.prompt or ""
    from .data import decode_text, read_text_file

    if args.prompt_file == "-":
        stdin = sys.stdin
        raw = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode("utf-8")
        return decode_text(raw, "the prompt on stdin")
    return read_text_file(args.prompt_file)


def _greedy_note(args) -> str | None:
    """What greedy decoding makes of the other sampling options, or None when nothing is lost."""
    said = []
    if args.num_samples > 1:
        said.append(f"the {args.num_samples} samples will be identical")
    unused = [flag for flag, value in (("--top-k", args.top_k), ("--seed", args.seed)) if value is not None]
    if args.top_p < 1:
        unused.insert(1 if args.top_k is not None else 0, "--top-p")
    if unused:
        said.append(f"{' and '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect")
    return "; ".join(said) or None


def cmd_sample(args) -> int:
    import torch

    from . import checkpoint
    from .device import pick_device
    from .sample import generate_text
    from .zoo import pretrained

    prompt = read_prompt(args)
    device = pick_device(args.device)
    if args.pretrained is not None:
        model, tokenizer = pretrained(args.pretrained, device=device)
    else:
        model, tokenizer, _ = checkpoint.load(args.checkpoint, map_location=device)
    if args.temperature == 0 and (note := _greedy_note(args)):
        print(f"tinygpt: note: --temperature 0 is greedy decoding: {note}", file=sys.stderr)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    for i in range(args.num_samples):
        text = generate_text(model, tokenizer, prompt, args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, generator=generator, window=args.window)
        if i:
            print(SAMPLE_SEPARATOR)
        print(text, flush=True)
    return 0


def cmd_export(args) -> int:
    from .zoo import export, write_card

    dest = export(args.checkpoint, args.dest)
    print(f"wrote {dest} ({dest.stat().st_size:,} bytes)")
    if args.card is not None:
        card = write_card(args.card, args.checkpoint, dest, command=args.trained_with, note=args.note,
                          data_dir=args.data_dir)
        print(f"wrote {card}")
    return 0


def _tolerant_console():
    """stdout and stderr that never fail on a character their encoding lacks (a cp1252 console,
    PYTHONIOENCODING): it is written as a \\uXXXX escape, so a CJK sample or path is never lost."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", None) == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv=None) -> int:
    _tolerant_console()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while torch is imported, or in a command outside training's own handler
        print("tinygpt: interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"train": cmd_train, "sample": cmd_sample, "export": cmd_export}
    if args.command is None:
        parser.error(f"choose a command: {', '.join(commands)} (tinygpt COMMAND --help for its options)")
    from .checkpoint import CheckpointError
    from .data import DatasetError
    from .files import user_path

    for name in ("out", "text", "data_dir", "checkpoint", "prompt_file"):  # `--out=~/runs`: no shell expands it
        if getattr(args, name, None) not in (None, "-"):
            setattr(args, name, str(user_path(getattr(args, name))))
    try:
        return commands[args.command](args)
    except (ValueError, DatasetError, CheckpointError) as e:
        from .distributed import launched_rank

        if launched_rank() == 0:  # under torchrun, every rank meets the same bad input: one line, not N
            print(f"tinygpt: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`tinygpt sample ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return 1
