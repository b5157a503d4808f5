"""The state of a training run between two steps: everything a checkpoint holds besides the
weights, the config asked for and the vocabulary, so that resuming continues exactly.

One explicit, versioned type, written and read the same way by save and resume: a checkpoint
that lacks a field, or holds one of the wrong kind, is refused with the field's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .schedule import Schedule

STATE_VERSION = 1


class StateError(ValueError):
    """A checkpoint's training state is missing, of another version, or malformed."""


@dataclass
class TrainState:
    step: int  # optimizer steps done
    history: list  # one dict per evaluation: step, time, lr, train_loss, val_loss
    best_val: float  # lowest val loss so far (inf before the first evaluation)
    evals_since_best: int  # the patience counter
    schedule: Schedule  # the schedule in force: as asked, or as fitted to a time budget or extended
    fits_done: int  # how many of the time budget's fit points (schedule.FIT_POINTS) have been passed
    elapsed: float  # seconds of training so far, over every session of the run
    seed: int
    precision: str  # of the session that saved it (informative: precision belongs to the machine)
    device: str
    optimizer: dict  # optimizer.state_dict()
    scaler: dict | None  # GradScaler.state_dict() when training in fp16, else None
    rng: dict  # "torch", "data" (the batch sampler's generator), "cuda" on a CUDA GPU, "mps" on Apple silicon;
    # a data-parallel run's also holds "ranks": one such dict per process, rank 0's first (its own is rank 0's)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["schedule"] = self.schedule.to_dict()
        d["state_version"] = STATE_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        """Validate and rebuild; StateError names what is wrong."""
        version = d.get("state_version")
        if version is None:
            raise StateError("it holds no training state (written by an older tinygpt, or for sampling only)")
        if version != STATE_VERSION:
            raise StateError(f"training state version {version!r}, this tinygpt reads {STATE_VERSION}")
        kinds = {"step": int, "history": list, "best_val": (int, float), "evals_since_best": int,
                 "schedule": dict, "fits_done": int, "elapsed": (int, float), "seed": int,
                 "precision": str, "device": str, "optimizer": dict, "scaler": (dict, type(None)), "rng": dict}
        for name, kind in kinds.items():
            if name not in d:
                raise StateError(f"the training state lacks {name!r}")
            if not isinstance(d[name], kind) or (kind is int and isinstance(d[name], bool)):
                raise StateError(f"the training state's {name!r} is a {type(d[name]).__name__}")
        if d["step"] < 0 or d["evals_since_best"] < 0 or d["fits_done"] < 0 or not d["elapsed"] >= 0:
            raise StateError("the training state's counters are negative")
        if not all(isinstance(h, dict) and {"step", "val_loss"} <= set(h) for h in d["history"]):
            raise StateError("the training state's history is malformed")
        ranks = d["rng"].get("ranks", [d["rng"]])
        if not isinstance(ranks, list) or not ranks or not all(_is_rng_state(r) for r in [d["rng"], *ranks]):
            raise StateError("the training state's random-number state is malformed")
        if not (math.isfinite(d["best_val"]) or d["best_val"] == math.inf):
            raise StateError(f"the training state's best_val is {d['best_val']}")
        try:
            schedule = Schedule.from_dict(d["schedule"])
        except TypeError as e:
            raise StateError(f"the training state's schedule is malformed ({e})") from None
        return cls(**{**{k: d[k] for k in kinds}, "schedule": schedule})


def rng_state(device: torch.device, data_gen: torch.Generator) -> dict:
    """This process's random state: torch's global generator (dropout, initial weights), the batch
    sampler's `data_gen`, and the GPU's own generator on CUDA or MPS."""
    rng = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        rng["mps"] = torch.mps.get_rng_state()
    return rng


def set_rng_state(rng: dict, device: torch.device, data_gen: torch.Generator) -> None:
    """Restore what rng_state saved, so that the run draws the numbers it would have drawn."""
    torch.set_rng_state(rng["torch"])
    data_gen.set_state(rng["data"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    if device.type == "mps" and "mps" in rng:  # dropout masks on MPS come from its own generator
        torch.mps.set_rng_state(rng["mps"])


def _is_rng_state(rng) -> bool:
    return (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
            and isinstance(rng.get("data"), torch.Tensor))
