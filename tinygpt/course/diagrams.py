"""The course's concept diagrams, drawn with matplotlib: boxes, arrows and small grids of cells.

One function per diagram; each returns a matplotlib Figure, so a notebook cell is one line
(`diagrams.attention_shapes()`). Convention: the figure's one-line caption is drawn as its
footer, in italics, and `caption(fig)` reads it back. The figure is closed in pyplot before it
is returned, so Jupyter shows it once (as the cell's value), not twice.

The numbers in the labels come from the package: ids from `CharTokenizer.encode`, shapes from
`GPTConfig` (the workshop's model unless another config is given), cache shapes from `KVCache`,
learning rates from `get_lr`, merges from a trained `BPETokenizer`, a rank's rows as in
`train.rank_batch`. Units of the drawing are inches, so text and boxes keep their sizes.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

from ..bpe import BPETokenizer, merge_pair, split_chunks
from ..config import GPTConfig, get_config
from ..data import load_shakespeare
from ..model import KVCache
from ..schedule import get_lr
from ..tokenizer import CharTokenizer

FONT = 10
EDGE = "#444444"
COLORS = {
    "data": "#cfe2f3",  # tensors: ids, activations, logits
    "op": "#fff2cc",  # computations: layers, functions
    "weights": "#d9ead3",  # parameters and optimizer
    "loss": "#f4cccc",  # loss and gradients
    "muted": "#eeeeee",  # context, masked cells
}
HIGHLIGHT = "#f6b26b"  # the one thing a diagram points at (roadmap's current notebook, a new token, a merge)
CAPTION_BAND = 0.4  # inches at the bottom of each figure for the caption

# The course's notebooks in order: (key, notebook file name without .ipynb, label in the roadmap).
NOTEBOOKS = [
    ("01", "01_tokenizer", "01\ntokenizer"),
    ("02", "02_attention", "02\nattention"),
    ("03", "03_transformer_block", "03\ntransformer\nblock"),
    ("04", "04_training", "04\ntraining"),
    ("05", "05_sampling", "05\nsampling"),
    ("06", "06_going_further", "06\ngoing\nfurther"),
    ("appendix", "appendix_workshop_checked", "appendix\nthe write-up,\nchecked"),
]


# --- drawing helpers -------------------------------------------------------------------------------

def _canvas(width, height, caption_text):
    """A figure of width x height inches whose axes measure inches, with the caption as footer."""
    fig = plt.figure(figsize=(width, height))
    band = CAPTION_BAND / height
    ax = fig.add_axes((0, band, 1, 1 - band))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height - CAPTION_BAND)
    ax.axis("off")
    fig.text(0.5, band / 2, caption_text, ha="center", va="center", fontsize=FONT, style="italic", gid="caption")
    return fig, ax


def _done(fig):
    plt.close(fig)  # Jupyter displays the returned figure; an open pyplot figure would show twice
    return fig


def caption(fig) -> str:
    """The one-line caption of a diagram drawn by this module (its footer text)."""
    return next(t.get_text() for t in fig.texts if t.get_gid() == "caption")


def _box(ax, x, y, w, h, text="", color="op", fontsize=FONT, bold=False, **kw):
    """A rounded box centred at (x, y), w x h inches, with centred text; returns the patch."""
    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                           fc=COLORS.get(color, color), ec=EDGE, lw=1, **kw)
    ax.add_patch(patch)
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, weight="bold" if bold else "normal")
    return patch


def _arrow(ax, start, end, text="", text_offset=(0, 0.12)):
    """An arrow from `start` to `end` (points, or patches: then it starts and stops at their edges),
    with an optional label at its middle, shifted by text_offset inches."""
    def centre(p):
        if isinstance(p, tuple):
            return p
        b = p.get_bbox()
        return (b.x0 + b.width / 2, b.y0 + b.height / 2)

    a, b = centre(start), centre(end)
    props = dict(arrowstyle="-|>", color=EDGE, lw=1.2, shrinkA=2, shrinkB=2, mutation_scale=12)
    if not isinstance(start, tuple):
        props["patchA"] = start
    if not isinstance(end, tuple):
        props["patchB"] = end
    ax.annotate("", xy=b, xytext=a, arrowprops=props)
    if text:
        ax.text((a[0] + b[0]) / 2 + text_offset[0], (a[1] + b[1]) / 2 + text_offset[1], text,
                ha="center", va="center", fontsize=9)


def _grid(ax, x, y, rows, cols, cell, color="data", masked=None, highlight_rows=()):
    """A rows x cols grid of square cells, its top-left corner at (x, y); `masked(r, c)` cells grey,
    `highlight_rows` in the highlight colour."""
    for r in range(rows):
        for c in range(cols):
            fc = COLORS[color]
            if masked is not None and masked(r, c):
                fc = COLORS["muted"]
            elif r in highlight_rows:
                fc = HIGHLIGHT
            ax.add_patch(Rectangle((x + c * cell, y - (r + 1) * cell), cell, cell, fc=fc, ec=EDGE, lw=0.6))


def _show(token: str) -> str:
    return token.replace(" ", "␣").replace("\n", "\\n")


# --- the diagrams ---------------------------------------------------------------------------------

def roadmap(current: str):
    """The course as a row of boxes, `current` highlighted. `current`: a key ("01".."06",
    "appendix") or a notebook's file name ("02_attention", with or without .ipynb).
    ValueError for any other name."""
    name = str(current).removesuffix(".ipynb")
    keys = [key for key, stem, _ in NOTEBOOKS if name in (key, stem)]
    if not keys:
        known = ", ".join(f"{k!r}" for k, _, _ in NOTEBOOKS)
        raise ValueError(f"unknown notebook {current!r}: give one of {known} (or its file name, e.g. '01_tokenizer')")
    current = keys[0]
    label = next(label for key, _, label in NOTEBOOKS if key == current).replace("\n", " ")
    fig, ax = _canvas(9, 1.75, f"Where this notebook sits in the course: {label}.")
    boxes = []
    for i, (key, _, text) in enumerate(NOTEBOOKS):
        x = 0.6 + i * 1.2 + (0.4 if key == "appendix" else 0)
        here = key == current
        box = _box(ax, x, 0.7, 1.0, 0.95, text, color=HIGHLIGHT if here else "muted", bold=here,
                   fontsize=FONT, gid=f"notebook {key}")
        boxes.append(box)
    for a, b in zip(boxes[:5], boxes[1:6]):
        _arrow(ax, a, b)
    ax.plot([7.4, 7.4], [0.2, 1.2], ls="--", color=EDGE, lw=0.8)
    return _done(fig)


def text_to_logits(text: str = "First", tokenizer=None, config: GPTConfig | None = None):
    """Text -> ids -> embeddings -> logits with the real ids and shapes. `tokenizer`: Tiny
    Shakespeare's character tokenizer unless given (loads the text); `config`: the workshop's
    model (GPTConfig()) with the tokenizer's vocabulary unless given. ValueError unless `text` has
    1 to 16 characters (one row each)."""
    if not 1 <= len(text) <= 16:
        raise ValueError(f"text must have 1 to 16 characters to fit the drawing, got {len(text)}")
    tokenizer = tokenizer or CharTokenizer.from_text(load_shakespeare(progress=False))
    config = config or GPTConfig(vocab_size=tokenizer.vocab_size)
    ids = tokenizer.encode(text)
    T, C, V = len(ids), config.n_embd, config.vocab_size
    top, cell = 0.6 + T * 0.26, 0.26
    fig, ax = _canvas(9, top + 0.45 + CAPTION_BAND, f"{T} characters become {T} ids, then {T} vectors of {C} "
                                                     f"numbers, then {T} × {V} scores for the next character.")
    ax.text(0.75, top + 0.22, "text", ha="center", va="center", fontsize=FONT, weight="bold")
    for r, ch in enumerate(text):
        _box(ax, 0.75, top - (r + 0.5) * cell, 0.45, cell * 0.9, _show(ch), color="muted")
    ax.text(2.6, top + 0.22, "ids", ha="center", va="center", fontsize=FONT, weight="bold")
    for r, i in enumerate(ids):
        _box(ax, 2.6, top - (r + 0.5) * cell, 0.55, cell * 0.9, str(i), color="data")
    matrices = [(4.2, 2.0, "embeddings", f"(T, n_embd) = ({T}, {C})"),
                (7.3, 1.3, "logits", f"(T, vocab_size) = ({T}, {V})")]
    for left, width, name, shape in matrices:
        ax.text(left + width / 2, top + 0.22, name, ha="center", va="center", fontsize=FONT, weight="bold")
        _grid(ax, left, top, T, int(width / cell), cell)
        ax.text(left + width / 2, top - T * cell - 0.25, shape, ha="center", va="top", fontsize=FONT)
    mid = top - T * cell / 2
    _arrow(ax, (1.05, mid), (2.25, mid), "encode", text_offset=(0, 0.15))
    _arrow(ax, (2.95, mid), (4.15, mid), "tok_emb\n+ pos_emb", text_offset=(0, 0.3))
    _arrow(ax, (6.25, mid), (7.25, mid), "blocks,\nln_f,\nlm_head", text_offset=(0, 0.42))
    ax.text(2.6, top - T * cell - 0.25, f"(T,) = ({T},)", ha="center", va="top", fontsize=FONT)
    return _done(fig)


def attention_shapes(config: GPTConfig | None = None):
    """One attention layer as shapes: q, k, v per head, the (T, T) scores, the causal mask, the
    softmax weights, weights @ v, and the heads concatenated. `config`: the workshop's model unless given."""
    config = config or GPTConfig()
    C, H = config.n_embd, config.n_head
    hs = C // H
    fig, ax = _canvas(9, 4.6, f"Causal self-attention as shapes: {H} heads, each weighing the values of "
                              f"earlier positions only.")
    ax.text(4.5, 3.95, f"B = batch, T = positions (up to block_size = {config.block_size}), C = n_embd = {C}, "
                       f"n_head = {H}, hs = head_size = C / n_head = {hs}", ha="center", fontsize=FONT)
    x = _box(ax, 0.55, 2.1, 0.85, 0.9, "x\n(B, T, C)", color="data")
    c_attn = _box(ax, 1.75, 2.1, 0.85, 0.9, f"c_attn\nC → 3C\n{C} → {3 * C}")
    _arrow(ax, x, c_attn)
    qkv = {}
    for name, y in (("q", 3.2), ("k", 2.1), ("v", 0.85)):
        qkv[name] = _box(ax, 3.0, y, 0.75, 0.6, f"{name}\n(T, hs)", color="data")
        _arrow(ax, c_attn, qkv[name])
    ax.text(3.0, 0.25, f"each (B, n_head, T, head_size)\n= (B, {H}, T, {hs})", ha="center", fontsize=9)

    n, cell, top = 6, 0.17, 3.0
    grids = [(3.95, "q @ kᵀ / √head_size", "scores (T, T)", None),
             (5.35, "causal mask", "future → −∞", lambda r, c: c > r),
             (6.75, "softmax", "weights (T, T)\nrows sum to 1", lambda r, c: c > r)]
    for i, (left, title, below, masked) in enumerate(grids):
        ax.text(left + n * cell / 2, top + 0.2, title, ha="center", fontsize=9)
        _grid(ax, left, top, n, n, cell, color="op" if i < 2 else "data", masked=masked)
        ax.text(left + n * cell / 2, top - n * cell - 0.1, below, ha="center", va="top", fontsize=9)
        if i:
            _arrow(ax, (left - 0.35, top - n * cell / 2), (left - 0.05, top - n * cell / 2))
    _arrow(ax, qkv["q"], (3.9, 2.55))
    _arrow(ax, qkv["k"], (3.9, 2.3))
    out = _box(ax, 7.25, 0.85, 1.1, 0.6, "weights @ v\n(T, hs)", color="data")
    _arrow(ax, qkv["v"], out)
    _arrow(ax, (7.25, 1.62), out)
    heads = _box(ax, 8.45, 2.1, 0.85, 1.5, f"concat\n{H} heads\n(B, T, C)\n\nc_proj\nC → C", color="data")
    _arrow(ax, out, heads)
    return _done(fig)


def block_diagram(config: GPTConfig | None = None):
    """The pre-LayerNorm block: the residual stream runs up; ln_1 -> attn and ln_2 -> mlp branch off
    it and are added back. Names as in tinygpt.model; widths from `config` (the workshop's model)."""
    config = config or GPTConfig()
    C = config.n_embd
    fig, ax = _canvas(9, 4.8, "The pre-LayerNorm block: attention and the MLP each read a normalised x "
                              "and add their result back.")
    stream_x = 1.0
    ax.plot([stream_x, stream_x], [0.35, 4.2], color="#3c78d8", lw=4, solid_capstyle="butt", zorder=0)
    ax.annotate("", xy=(stream_x, 4.35), xytext=(stream_x, 4.0),
                arrowprops=dict(arrowstyle="-|>", color="#3c78d8", lw=3, mutation_scale=18))
    ax.text(stream_x, 0.2, f"x (B, T, C), C = {C}", ha="center", va="center", fontsize=FONT)
    ax.text(stream_x + 0.2, 4.25, "to the next block (or ln_f)", ha="left", va="center", fontsize=FONT)
    ax.text(stream_x - 0.2, 2.3, "residual stream", rotation=90, ha="right", va="center", fontsize=FONT,
            color="#3c78d8")
    rows = [(0.85, 1.85, "ln_1", "attn", ["c_attn\nC → 3C", "causal\nself-attention", "c_proj\nC → C"],
             "x = x + attn(ln_1(x))"),
            (2.45, 3.45, "ln_2", "mlp", [f"c_fc\nC → 4C\n({4 * C})", "GELU", "c_proj\n4C → C"],
             "x = x + mlp(ln_2(x))")]
    for y, y_add, ln, name, parts, formula in rows:
        _arrow(ax, (stream_x, y), (1.65, y))
        norm = _box(ax, 2.1, y, 0.85, 0.55, ln)
        boxes = [_box(ax, 3.55 + 1.15 * i, y, 1.0, 0.7, part, color="data" if i == 1 else "op") for i, part in
                 enumerate(parts)]
        ax.add_patch(FancyBboxPatch((2.9, y - 0.5), 3.3, 1.0, boxstyle="round,pad=0,rounding_size=0.1",
                                    fc="none", ec=EDGE, lw=1, ls="--"))
        ax.text(2.95, y + 0.62, name, ha="left", va="center", fontsize=FONT, weight="bold")
        for a, b in zip([norm] + boxes, boxes):
            _arrow(ax, a, b)
        ax.text(stream_x, y_add, "+", ha="center", va="center", fontsize=14, weight="bold",
                       bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec=EDGE))
        ax.annotate("", xy=(stream_x + 0.17, y_add), xytext=(boxes[-1].get_bbox().x1 - 0.5, y + 0.35),
                    arrowprops=dict(arrowstyle="-|>", color=EDGE, lw=1.2, mutation_scale=12,
                                    connectionstyle="angle,angleA=90,angleB=0,rad=0"))
        ax.text(6.45, y, formula, ha="left", va="center", fontsize=FONT, family="monospace")
    return _done(fig)


def training_step(preset: str = "workshop", step: int | None = None):
    """One training step as a loop: batch, forward, logits, loss, backward, the learning rate of
    this step (warm-up, then cosine decay, from get_lr on `preset`'s schedule), AdamW, new weights."""
    cfg = get_config(preset)
    step = cfg.max_steps // 4 if step is None else step
    V = cfg.model.vocab_size
    fig, ax = _canvas(9, 4.6, "One training step, repeated: forward, loss, backward, then AdamW moves the "
                              "weights by this step's lr.")
    top, low = 3.55, 1.85
    batch = _box(ax, 0.8, top, 1.3, 0.75, f"batch x, y\n(B, T) ids\nB = {cfg.batch_size}, T = {cfg.model.block_size}",
                 color="data", fontsize=9)
    forward = _box(ax, 2.95, top, 1.4, 0.7, "forward\nlogits = model(x)")
    logits = _box(ax, 5.15, top, 1.9, 0.7, f"logits (B, T, vocab_size)\nvocab_size = {V}", color="data",
                  fontsize=9)
    loss = _box(ax, 7.6, top, 1.9, 0.7, "loss = cross_entropy\n(logits, y)", color="loss")
    backward = _box(ax, 7.6, low, 1.9, 0.7, "loss.backward()\na gradient per weight", color="loss")
    adamw = _box(ax, 4.8, low, 1.9, 0.7, "AdamW step\nw ← w − lr · update", color="weights")
    weights = _box(ax, 2.95, low, 1.4, 0.7, "weights\n(the model)", color="weights")
    _arrow(ax, batch, forward)
    _arrow(ax, forward, logits)
    _arrow(ax, logits, loss)
    _arrow(ax, loss, backward)
    _arrow(ax, backward, adamw)
    _arrow(ax, adamw, weights)
    _arrow(ax, weights, forward, "next step", text_offset=(-0.5, 0))

    # the schedule, drawn small from get_lr, with this step's rate marked
    left, bottom, width, height = 3.9, 0.15, 1.8, 0.8
    steps = range(0, cfg.max_steps, max(1, cfg.max_steps // 200))
    xs = [left + width * s / cfg.max_steps for s in steps]
    ys = [bottom + height * get_lr(s, cfg) / cfg.lr for s in steps]
    ax.plot(xs, ys, color="#3c78d8", lw=1.5)
    ax.plot([left, left + width], [bottom, bottom], color=EDGE, lw=0.8)
    here = (left + width * step / cfg.max_steps, bottom + height * get_lr(step, cfg) / cfg.lr)
    ax.plot(*here, "o", color=HIGHLIGHT, mec=EDGE, ms=7)
    ax.text(left + width + 0.15, bottom + height / 2,
            f"lr = get_lr(step): warm-up {cfg.warmup_steps} steps,\ncosine decay to min_lr at step {cfg.max_steps}\n"
            f"(here step {step}: lr = {get_lr(step, cfg):.2g})", ha="left", va="center", fontsize=9)
    _arrow(ax, (here[0], here[1] + 0.1), adamw)
    return _done(fig)


def kv_cache(config: GPTConfig | None = None, cached: str = "Firs", new: str = "t"):
    """What the KV cache keeps per layer (keys and values of the tokens so far) and what one new token
    computes: its q, k, v; k and v appended; q against every cached key. Shapes from KVCache on `config`."""
    config = config or GPTConfig()
    H, hs = config.n_head, config.n_embd // config.n_head
    shape = tuple(KVCache(config, batch_size=1).k[0].shape)
    T = len(cached)
    fig, ax = _canvas(9, 5.0, f"With a KV cache, the new token {new!r} computes only its own q, k, v; "
                              f"its q reads all {T + 1} keys.")
    ax.text(4.5, 4.3, f"KVCache.k[layer] and .v[layer], one pair per layer (n_layer = {config.n_layer}): (B, n_head, "
                      f"block_size, head_size)\n= {shape} each, hs = head_size; filled up to length = {T} "
                      f"before {new!r}",
            ha="center", va="center", fontsize=FONT)
    x_new = _box(ax, 0.6, 2.3, 0.95, 0.8, f"new token\n{new!r}\n(B, 1, C)", color=HIGHLIGHT)
    c_attn = _box(ax, 1.9, 2.3, 0.8, 0.6, "c_attn")
    _arrow(ax, x_new, c_attn)
    q = _box(ax, 3.1, 3.6, 0.75, 0.5, "q (1, hs)", color=HIGHLIGHT, fontsize=9)
    k = _box(ax, 3.1, 2.3, 0.75, 0.5, "k (1, hs)", color=HIGHLIGHT, fontsize=9)
    v = _box(ax, 3.1, 0.85, 0.75, 0.5, "v (1, hs)", color=HIGHLIGHT, fontsize=9)
    for b in (q, k, v):
        _arrow(ax, c_attn, b)

    scores = _box(ax, 7.5, 3.6, 2.2, 0.55, f"q · keysᵀ / √hs → softmax\nweights ({H}, 1, {T + 1})", fontsize=9)
    out = _box(ax, 7.5, 1.2, 2.2, 0.75, "weights @ values\n→ concat, c_proj\n(B, 1, C)", color="data", fontsize=9)
    _arrow(ax, q, scores, "q", text_offset=(0, 0.12))
    _arrow(ax, scores, out)
    cell, cols, left = 0.2, 8, 4.2
    for name, top, new_row, reader in (("keys", 3.0, k, scores), ("values", 1.55, v, out)):
        _grid(ax, left, top, T + 1, cols, cell, highlight_rows=(T,))
        for r, ch in enumerate(cached + new):
            ax.text(left - 0.1, top - (r + 0.5) * cell, _show(ch), ha="right", va="center", fontsize=9)
        ax.text(left + cols * cell / 2, top + 0.15, f"{name} ({H}, {T + 1}, {hs})", ha="center", fontsize=9)
        _arrow(ax, new_row, (left - 0.3, top - (T + 0.5) * cell), "append", text_offset=(0, -0.18))
        _arrow(ax, (left + cols * cell + 0.05, top - (T + 1) * cell / 2), reader)
    return _done(fig)


def bpe_merges(word: str = " citizen", tokenizer: BPETokenizer | None = None):
    """`word` (one chunk: a word with its leading space) as bytes, then after each learned merge that
    applies to it, in the order encoding applies them ("merge n": the n-th merge learned).
    `tokenizer`: a BPETokenizer; unless given, one trained to 300 tokens on the first 100,000
    characters of Tiny Shakespeare (about a second). ValueError if `word` is not one chunk
    (merges never cross chunks: see tinygpt.bpe.split_chunks)."""
    if split_chunks(word) != [word]:
        raise ValueError(f"{word!r} is not one chunk but {split_chunks(word)}: give one word, e.g. ' citizen'")
    tokenizer = tokenizer or BPETokenizer.train(load_shakespeare(progress=False)[:100_000], 300)

    def text_of(i):
        return _show(tokenizer.vocab[i].decode("utf-8", "replace"))

    ids = list(word.encode("utf-8"))
    steps = [("UTF-8 bytes", ids, None)]
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: tokenizer.ranks.get(p, math.inf))
        if pair not in tokenizer.ranks:
            break
        new_id = tokenizer.ranks[pair]
        ids = merge_pair(ids, pair, new_id)
        label = f"merge {new_id - 256 + 1}: {text_of(pair[0])} + {text_of(pair[1])} → id {new_id}"
        steps.append((label, ids, new_id))

    fig, ax = _canvas(9, 0.6 + 0.48 * len(steps) + CAPTION_BAND,
                      f"Byte-pair encoding of {word!r}: {len(word.encode())} bytes become {len(ids)} tokens, "
                      f"one learned merge of a frequent pair at a time.")
    unit = 0.18
    for row, (label, row_ids, new_id) in enumerate(steps):
        y = 0.45 + 0.48 * (len(steps) - 1 - row)
        ax.text(2.2, y, label, ha="right", va="center", fontsize=FONT)
        x = 2.4
        for i in row_ids:
            w = unit * len(text_of(i)) + 0.22
            _box(ax, x + w / 2, y, w, 0.36, text_of(i), color=HIGHLIGHT if i == new_id else "data",
                 fontsize=FONT)
            x += w + 0.06
        ax.text(x + 0.15, y, f"{len(row_ids)} tokens", ha="left", va="center", fontsize=FONT)
    return _done(fig)


def data_parallel(n: int = 2, batch_size: int | None = None):
    """Data-parallel training on n processes: each holds a copy of the model and its rows of the global
    batch; the gradients are all-reduced (averaged), so the weights stay identical. `batch_size`: rows
    per process (the workshop preset's unless given). ValueError unless 2 <= n <= 4."""
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 4:
        raise ValueError(f"n must be a number of processes from 2 to 4 (to fit the drawing), got {n!r}")
    batch_size = batch_size or get_config("workshop").batch_size
    fig, ax = _canvas(9, 4.6, f"Data parallel on {n} processes: each its own rows, one averaged gradient, "
                              f"the same weights after every step.")
    ax.text(4.5, 3.95, f"global batch: batch_size × N = {batch_size} × {n} = {batch_size * n} windows",
            ha="center", fontsize=FONT)
    width = 8.4 / n
    lanes = [0.3 + width * (r + 0.5) for r in range(n)]
    grads = [f"g{r}".translate(str.maketrans("0123", "₀₁₂₃")) for r in range(n)]
    for r, x in enumerate(lanes):
        rows = _box(ax, x, 3.45, width - 0.15, 0.45, f"rows {r * batch_size}–{(r + 1) * batch_size - 1}",
                    color="data")
        model = _box(ax, x, 2.55, min(width - 0.3, 2.6), 0.85,
                     f"rank {r}\na copy of the model\nforward, backward → {grads[r]}", color="op")
        _arrow(ax, rows, model)
        _arrow(ax, model, (x, 1.75))
        step = _box(ax, x, 0.45, min(width - 0.3, 2.6), 0.6, "AdamW step with g\n→ identical weights",
                    color="weights")
        _arrow(ax, (x, 1.2), step)
    mean = " + ".join(grads)
    _box(ax, 4.5, 1.48, 8.4, 0.5, f"all-reduce: every rank receives g = ({mean}) / {n}", color="loss")
    return _done(fig)
