"""The course's figures. Each function draws on `ax` (a new figure if None) and returns the axes.

Every figure has a title and labelled axes; the notebooks add one sentence on what to see.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from ..config import TrainConfig
from ..schedule import get_lr

# "What the loss tells you": rough bands of validation loss (nats per character) on Tiny Shakespeare.
LOSS_BANDS = [
    (3.3, 4.4, "random guessing (ln 65 = 4.17) to letter frequencies", "#f4cccc"),
    (2.5, 3.3, "letter frequencies (~3.3): vowels, spaces", "#fce5cd"),
    (2.0, 2.5, "word pieces (~2.5): common syllables", "#fff2cc"),
    (1.5, 2.0, "words: spelling right, grammar loose", "#d9ead3"),
    (1.0, 1.5, "names, phrases, the shape of a play", "#cfe2f3"),
    (0.0, 1.0, "memorising the training text", "#d9d2e9"),
]


def _ax(ax, figsize=(7, 4)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def display_char(ch: str) -> str:
    return {"\n": "\\n", " ": "␣", "\t": "\\t"}.get(ch, ch)


def char_frequency(text: str, ax=None, top: int | None = None):
    """Bar chart of how often each character occurs, most frequent first."""
    chars, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
    order = np.argsort(-counts)[:top]
    ax = _ax(ax, (12, 3.5))
    ax.bar(range(len(order)), counts[order] / len(text) * 100, color="#3c78d8")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([display_char(chr(chars[i])) for i in order], fontsize=8)
    ax.set_title("How often each character occurs in Tiny Shakespeare")
    ax.set_xlabel("character (␣ is a space, \\n a line break)")
    ax.set_ylabel("share of the text (%)")
    return ax


def bigram_heatmap(counts, chars: str, ax=None):
    """Heatmap of bigram counts (row: this character, column: the next), on a log scale."""
    counts = np.asarray(counts, dtype=float)
    ax = _ax(ax, (9, 8))
    im = ax.imshow(np.log10(counts + 1), cmap="Blues")
    labels = [display_char(c) for c in chars]
    ax.set_xticks(range(len(chars)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_yticks(range(len(chars)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.set_title(f"Bigram counts: {len(chars)} x {len(chars)} = {len(chars) ** 2:,} pairs")
    ax.set_xlabel("next character")
    ax.set_ylabel("current character")
    plt.colorbar(im, ax=ax, fraction=0.046, label="log10(count + 1)")
    return ax


def heatmap(matrix, ax=None, title="", xlabel="", ylabel="", labels=None, cmap="viridis", annotate=False,
            colorbar=True):
    """A labelled heatmap of a small matrix (masks, attention weights)."""
    m = np.asarray(matrix, dtype=float)
    ax = _ax(ax, (5, 4.5))
    im = ax.imshow(m, cmap=cmap)
    if labels is not None:
        shown = [display_char(c) for c in labels]
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(shown)
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels(shown)
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < (m.max() + m.min()) / 2 else "black")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if colorbar:
        plt.colorbar(im, ax=ax, fraction=0.046)
    return ax


def attention_heatmaps(weights, tokens, title="Attention weights", ncols: int = 3):
    """One heatmap per head: weights (n_head, T, T), rows are queries, columns keys."""
    w = np.asarray(weights, dtype=float)
    n = w.shape[0]
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, min(n, ncols), figsize=(4 * min(n, ncols), 4 * nrows), squeeze=False)
    for h in range(nrows * min(n, ncols)):
        ax = axes.flat[h]
        if h >= n:
            ax.axis("off")
            continue
        heatmap(w[h], ax=ax, title=f"head {h}", xlabel="key (attended to)", ylabel="query (attending)",
                labels=tokens, colorbar=False)
    fig.suptitle(title)
    fig.tight_layout()
    return axes


def activation_scale(scales: dict, ax=None):
    """Standard deviation of activations layer by layer, one line per variant (log scale)."""
    ax = _ax(ax)
    for name, values in scales.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_yscale("log")
    ax.set_title("Activation scale through a deep stack")
    ax.set_xlabel("layer")
    ax.set_ylabel("std of activations (log scale)")
    ax.set_xticks(range(1, max(len(v) for v in scales.values()) + 1))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return ax


def lr_schedule(cfg: TrainConfig, ax=None):
    """The learning rate at every step: linear warm-up, then cosine decay to min_lr."""
    steps = np.arange(cfg.max_steps + 1)
    ax = _ax(ax)
    ax.plot(steps, [get_lr(int(s), cfg) for s in steps], color="#3c78d8")
    ax.axvline(cfg.warmup_steps, color="grey", ls="--", lw=1)
    ax.text(cfg.warmup_steps, cfg.lr, f" end of warm-up (step {cfg.warmup_steps})", va="top", fontsize=8)
    ax.set_title(f"Learning-rate schedule: warm-up {cfg.warmup_steps} steps, cosine decay to step {cfg.max_steps}")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    return ax


def loss_curve(history: list[dict], ax=None, bigram_baseline: float | None = None, vocab_size: int = 65,
               x: str = "step", bands: bool = True, title: str = "Training and validation loss"):
    """Train and val loss per evaluation, over the "what the loss tells you" bands."""
    ax = _ax(ax, (9, 5))
    # the y range: 0.8 to 4.4, extended down if a curve goes lower (an overfitting run's train loss)
    y_lo = min([0.8] + [min(h["train_loss"], h["val_loss"]) - 0.1 for h in history or []])
    y_lo, y_hi = max(0.0, y_lo), 4.4
    if bands:
        for lo, hi, label, colour in LOSS_BANDS:
            ax.axhspan(lo, hi, color=colour, alpha=0.6, lw=0)
            shown_lo, shown_hi = max(lo, y_lo), min(hi, y_hi)  # label the visible part of the band
            if shown_hi > shown_lo:
                ax.text(1.01, (shown_lo + shown_hi) / 2, label, transform=ax.get_yaxis_transform(), fontsize=7,
                        va="center")
    ax.axhline(math.log(vocab_size), color="black", ls=":", lw=1,
               label=f"random: ln {vocab_size} = {math.log(vocab_size):.2f}")
    if bigram_baseline is not None:
        ax.axhline(bigram_baseline, color="#cc0000", ls="--", lw=1, label=f"bigram baseline {bigram_baseline:.2f}")
    if history:
        xs = [h[x] for h in history]
        ax.plot(xs, [h["train_loss"] for h in history], marker=".", label="train")
        ax.plot(xs, [h["val_loss"] for h in history], marker=".", label="val")
        best = min(history, key=lambda h: h["val_loss"])
        ax.scatter([best[x]], [best["val_loss"]], s=80, facecolors="none", edgecolors="black", zorder=5,
                   label=f"best val {best['val_loss']:.3f} (step {best['step']})")
    ax.set_ylim(y_lo, y_hi)
    ax.set_title(title)
    ax.set_xlabel("step" if x == "step" else "seconds")
    ax.set_ylabel("loss (nats per character)")
    ax.legend(loc="upper right", fontsize=8)
    return ax


class LiveLossPlot:
    """An `on_eval` callback for train() that redraws the loss curve in place in a notebook."""

    def __init__(self, bigram_baseline: float | None = None, vocab_size: int = 65):
        self.bigram_baseline, self.vocab_size = bigram_baseline, vocab_size
        self.handle = None

    def __call__(self, history):
        from IPython.display import display

        fig, ax = plt.subplots(figsize=(9, 5))
        loss_curve(history, ax=ax, bigram_baseline=self.bigram_baseline, vocab_size=self.vocab_size)
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)


def next_token_bars(probs, chars: str, ax=None, top: int = 20, title: str = "Next-character probabilities"):
    """The `top` likeliest next characters and their probabilities."""
    p = np.asarray(probs, dtype=float)
    order = np.argsort(-p)[:top]
    ax = _ax(ax, (8, 3.5))
    ax.bar(range(len(order)), p[order], color="#6aa84f")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([display_char(chars[i]) for i in order])
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.set_xlabel("next character")
    ax.set_ylabel("probability")
    return ax


def removed_mass(probs, ks, ax=None, label=None):
    """Probability mass that top-k filtering removes, for each k (`label`: the curve's, for a legend)."""
    p = np.sort(np.asarray(probs, dtype=float))[::-1]
    removed = [p[k:].sum() for k in ks]
    ax = _ax(ax)
    ax.plot(list(ks), removed, marker="o", label=label)
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_title("Probability mass removed by top-k")
    ax.set_xlabel("k (characters kept)")
    ax.set_ylabel("mass removed (log scale)")
    return ax
