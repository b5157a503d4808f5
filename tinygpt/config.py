"""The configs: the model's size (GPTConfig), what a training run is asked to do (TrainConfig),
the presets, and `key=value` overrides. Plain dataclasses, no PyTorch: the command line reads them
before it imports torch.

A TrainConfig is the user's request, saved as given in every checkpoint. What training decides
on its own (a schedule fitted to a time budget) is training state, see state.py.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import asdict, dataclass, field


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    # The two options below are the course's, not the workshop's; their defaults are the workshop's
    # model. dropout acts on the embeddings and on the output of each residual branch.
    dropout: float = 0.0
    bias: bool = True  # biases in the LayerNorms and in every Linear but lm_head (False: none at all)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head dimensions"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainConfig:
    model: GPTConfig = field(default_factory=GPTConfig)
    batch_size: int = 64
    max_steps: int = 5000  # with a time budget: the plan, which the fit lengthens or shortens
    lr: float = 3e-4  # peak learning rate, reached at the end of warm-up
    min_lr: float = 3e-5  # where the cosine decay ends
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 = no clipping
    eval_interval: int = 500
    eval_iters: int = 200  # batches of train text averaged per evaluation; val is exact if that is no dearer
    time_budget: float | None = None  # seconds of wall time, evaluation included
    fit_schedule: bool = True  # with a time budget, fit max_steps so the schedule ends with the budget
    patience: int | None = None  # early stop after this many evaluations without a better val loss

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = GPTConfig.from_dict(self.model)
        for name in ("batch_size", "max_steps", "eval_interval", "eval_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not (0 < self.lr < math.inf) or not (0 <= self.min_lr <= self.lr):
            raise ValueError(f"need 0 < lr and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if not (0 <= self.weight_decay < math.inf) or not (0 <= self.grad_clip < math.inf):
            raise ValueError("weight_decay and grad_clip must be finite numbers >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if self.time_budget is not None and not (0 < self.time_budget < math.inf):
            raise ValueError(f"time_budget must be a positive number of seconds, got {self.time_budget!r}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config saved by to_dict, validated; ValueError names fields this version lacks."""
        if unknown := sorted(set(d) - {f.name for f in dataclasses.fields(cls)}):
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)


PRESETS: dict[str, TrainConfig] = {
    # a few seconds on any CPU: for tests and for trying the pipeline
    "smoke": TrainConfig(
        model=GPTConfig(block_size=32, n_layer=2, n_head=2, n_embd=48, dropout=0.0),
        batch_size=32, max_steps=250, lr=3e-3, min_lr=3e-4, warmup_steps=20,
        eval_interval=50, eval_iters=4,  # evaluation under 10% of the run on a CPU (benchmarks/eval_share.py)
    ),
    # the model a 2-core laptop CPU trains fastest: word-like text within two minutes, 10 minutes in all
    # (chosen by the sweep in benchmarks/SWEEP.md)
    "laptop": TrainConfig(
        model=GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=96, dropout=0.0),
        batch_size=16, max_steps=10800, lr=5e-3, min_lr=5e-4, warmup_steps=30,
        eval_interval=100, eval_iters=8, time_budget=600,
    ),
    # the workshop's model and schedule (its write-up): 6 layers, 6 heads, 384 wide, context 256,
    # no dropout, lr 3e-4, 100 warm-up steps, 5000 steps. A GPU job (about 15 minutes on a T4).
    # The course's choices: batch 64, min_lr 3e-5 (a tenth of the peak), and eval_iters 10
    # (with the validation loss exact over its 435 windows, evaluation stays a few % of the run).
    # Dropout remains an option (the course's, not the workshop's): --set model.dropout=0.2.
    "workshop": TrainConfig(
        model=GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.0),
        batch_size=64, max_steps=5000, lr=3e-4, min_lr=3e-5, warmup_steps=100,
        eval_interval=500, eval_iters=10,
    ),
}

# the presets whose trained model ships inside the package (tinygpt/weights/NAME.safetensors, zoo.py)
PRETRAINED = ("laptop",)


def get_config(preset: str | TrainConfig) -> TrainConfig:
    """A copy of a preset (by name) or of a TrainConfig; ValueError naming the presets otherwise."""
    if isinstance(preset, TrainConfig):
        return TrainConfig.from_dict(preset.to_dict())
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return TrainConfig.from_dict(PRESETS[preset].to_dict())


def with_length(cfg: TrainConfig, *, max_steps: int | None = None, time_budget: float | None = None) -> TrainConfig:
    """A copy of cfg trained for `max_steps` steps and/or `time_budget` seconds (None: as cfg says).
    An explicit max_steps replaces cfg's time budget, unless a time_budget is given too."""
    d = cfg.to_dict()
    if max_steps is not None:
        d.update(max_steps=max_steps, time_budget=time_budget)
    if time_budget is not None:
        d["time_budget"] = time_budget
    return TrainConfig.from_dict(d)

def _parse(value: str, annotation, key: str):
    """`value` read as the type `annotation` (int, float, bool, str, or an Optional of one)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        if value.strip().lower() in ("none", "null", ""):
            return None
        annotation = next(a for a in args if a is not type(None))
    text = value.strip()
    try:
        if annotation is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            v = float(text)
            if not math.isfinite(v):
                raise ValueError
            return v
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a finite number"}[annotation]
        raise ValueError(f"{key}={value!r}: expected {kind}") from None
    return text


def override_items(overrides) -> list[tuple[str, object]]:
    """(key, value) pairs of `overrides` (["lr=1e-3"] or {"lr": 1e-3}); ValueError for a malformed item."""
    items = []
    for item in overrides.items() if isinstance(overrides, dict) else overrides:
        if isinstance(item, str):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{item!r}: expected KEY=VALUE, e.g. lr=1e-3 or model.n_layer=8")
            item = (key.strip(), value)
        items.append(item)
    return items


def apply_overrides(cfg: TrainConfig, overrides) -> TrainConfig:
    """A new TrainConfig with `overrides` applied and validated.

    `overrides`: ["lr=1e-3", "model.n_layer=8"] or {"lr": 1e-3, "model.n_layer": 8}. String values
    are parsed as the field's type ("none" clears an optional field). ValueError names an unknown
    key (and lists the known ones), model.vocab_size (the text's vocabulary sets it), a malformed
    item, or a value the config refuses.
    """
    items = override_items(overrides)
    d = cfg.to_dict()
    hints = {"": typing.get_type_hints(TrainConfig), "model.": typing.get_type_hints(GPTConfig)}
    for key, value in items:
        prefix, name = ("model.", key[len("model."):]) if key.startswith("model.") else ("", key)
        if name not in hints[prefix] or (prefix == "" and name == "model"):
            known = [k for k in hints[""] if k != "model"] + [f"model.{k}" for k in hints["model."]]
            raise ValueError(f"unknown setting {key!r}; known: {', '.join(known)}")
        if key == "model.vocab_size":
            raise ValueError("model.vocab_size cannot be set: it is the tokenizer's (the text's distinct "
                             "characters, or N of --tokenizer bpe:N), which training sets itself")
        if isinstance(value, str):
            value = _parse(value, hints[prefix][name], key)
        (d["model"] if prefix else d)[name] = value
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid setting: {e}") from None
