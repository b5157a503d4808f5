"""Variants of the `laptop` preset trained for the full 10 minutes: val loss over the whole
validation split against wall time, measured as `python -m benchmarks.bench --only quality` does.

    python -m benchmarks.sweep_10min [--out benchmarks/results/sweep-10min.jsonl] NAME [NAME ...]

One line of JSON per variant; about 11 minutes each. Results are in benchmarks/SWEEP.md. Run it on
an otherwise idle machine: it measures wall time.
"""

import argparse
import dataclasses
import json
import time

from benchmarks.bench import quality_curve
from tinygpt.data import Corpus
from tinygpt.config import PRESETS

BASE = PRESETS["laptop"]
VARIANTS = {
    "max_steps 9000": dataclasses.replace(BASE, max_steps=9000),
    "max_steps 10800": dataclasses.replace(BASE, max_steps=10800),
    "dropout 0.1": dataclasses.replace(BASE, max_steps=9000, model=dataclasses.replace(BASE.model, dropout=0.1)),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("names", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/sweep-10min.jsonl")
    args = parser.parse_args()
    val = Corpus.shakespeare(progress=False).val
    for name in args.names:
        result = quality_curve(VARIANTS[name], val, quick=False)
        line = {"name": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
        with open(args.out, "a") as f:
            f.write(json.dumps(line) + "\n")
        print(name, {k: v for k, v in result.items() if k != "curve"}, flush=True)


if __name__ == "__main__":
    main()
