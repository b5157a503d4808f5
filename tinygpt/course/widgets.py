"""The sampling playground: sliders for temperature, top-k and top-p, a seed, a length and a prompt box.

Every change regenerates the text (fast thanks to the KV cache) and colours each generated
token by the probability it was drawn with. Hovering over (or tapping) a generated character
shows why it was drawn: the 10 likeliest tokens at that position and the entropy there, under
the temperature, top-k and top-p in force (a CSS popup in the output's HTML: no custom widget
code, so it works in JupyterLab and Colab alike). A byte-level BPE token shows the characters it
completes (see token_pieces). A prompt character outside the vocabulary
shows a one-line message in the widget, never a traceback. Works with ipywidgets 7.7 and 8.

Generation runs on a background thread and streams into the output as it goes, so the first
characters show within milliseconds of a change and the kernel stays free to take the next
one. Only the latest settings are generated: a change while text is streaming stops that
generation at its next token and starts over with the new settings, so a slider dragged quickly
never leaves a backlog of regenerations. (Widget values set from a thread reach the browser
like any other: ipywidgets sends them over the kernel's comm.)
"""

from __future__ import annotations

import codecs
import html
import threading
import time

import torch

from .. import checks
from ..sample import prompt_ids, stream

TOP_SHOWN = 10  # likeliest tokens listed on hover


def prob_colour(p: float) -> str:
    """Background colour for a character drawn with probability p: red (unlikely) to green (sure)."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 85%)"


def token_pieces(tokenizer, ids) -> list[str]:
    """The text each token of `ids` adds, one string a token, joining to tokenizer.decode(ids).

    A character token is its character. A byte-level BPE token may hold part of a character's
    UTF-8 bytes: the character goes with the token that completes it (an earlier token's piece
    may then be empty), and bytes that never make a character become U+FFFD, as in decode."""
    if not hasattr(tokenizer, "decode_bytes"):
        return [tokenizer.decode([i]) for i in ids]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(tokenizer.decode_bytes([i])) for i in ids]
    if pieces:
        pieces[-1] += decoder.decode(b"", final=True)
    return pieces


def why(dist, tokenizer, k: int = TOP_SHOWN) -> tuple[list[tuple[str, float]], float]:
    """The k likeliest tokens of the distribution `dist` (V,) as (text, probability), likeliest
    first, leaving out those it cannot draw (filtered out by top-k or top-p), and its entropy in
    bits (0 for a sure choice)."""
    dist = dist.float().flatten()
    nonzero = dist[dist > 0]
    top = torch.topk(dist, min(k, nonzero.numel()))
    entropy = max(0.0, -(nonzero * nonzero.log2()).sum().item())
    return [(tokenizer.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)], entropy


def _shown(piece: str) -> str:
    """A piece of text as a list shows it: newline, space and tab made visible."""
    return piece.replace("\n", "↵").replace(" ", "␣").replace("\t", "⇥") or "∅"


def tip_html(p: float, choices=None, entropy: float | None = None) -> str:
    """The hover popup of one token: its probability, and (when given) the entropy there and the
    likeliest tokens."""
    if choices is None:
        return f'<span class="tg-tip">p = {p:.3f}</span>'
    rows = "".join(f'<span class="tg-row"><span class="tg-c">{html.escape(_shown(text))}</span> {q:6.1%}</span>\n'
                   for text, q in choices)
    return (f'<span class="tg-tip">p = {p:.3f}, entropy {entropy:.2f} bits\n'
            f'likeliest {len(choices)}:\n{rows}</span>')


STYLE = """<style>
.tinygpt-text .tg-t{position:relative;cursor:help;outline:none}
.tinygpt-text .tg-tip{display:none;position:absolute;left:0;top:1.4em;z-index:20;min-width:9em;
 background:#fff;color:#000;border:1px solid #888;border-radius:3px;padding:2px 6px;
 box-shadow:0 2px 6px rgba(0,0,0,.25);font-size:12px;line-height:1.3;white-space:pre;font-weight:normal}
.tinygpt-text .tg-c{font-weight:bold}
.tinygpt-text .tg-t:hover>.tg-tip,.tinygpt-text .tg-t:focus>.tg-tip{display:block}
</style>"""


def render_html(prompt: str, pieces, probs, tips=None) -> str:
    """The prompt in bold, then each generated token's text (`pieces`: one string a token, or a
    string of characters) on a background coloured by its probability. `tips`: for each token,
    (choices, entropy) as `why` gives them, shown on hover with the token's probability."""
    spans = []
    for n, (piece, p) in enumerate(zip(pieces, probs)):
        shown = html.escape(piece).replace("\n", "↵\n")
        choices, entropy = tips[n] if tips is not None else (None, None)
        spans.append(f'<span class="tg-t" tabindex="0" data-p="{float(p):.3f}" style="background:{prob_colour(p)}">'
                     f'{shown}{tip_html(float(p), choices, entropy)}</span>')
    return (
        f'{STYLE}<div class="tinygpt-text" style="font-family:monospace;white-space:pre-wrap;line-height:1.5;'
        f'padding-bottom:14em">'
        f"<b>{html.escape(prompt)}</b>{''.join(spans)}</div>"
    )


def legend_html() -> str:
    stops = [0.0, 0.25, 0.5, 0.75, 1.0]
    cells = "".join(f'<span style="background:{prob_colour(p)};padding:0 6px">{p:.2f}</span>' for p in stops)
    return f'<div style="font-size:smaller">probability each character was drawn with: {cells}</div>'


class Playground:
    """Build with a model and its tokenizer, then display `playground.widget` (or just the object).

    The text for the initial settings is generated before the constructor returns. After that every
    change of a control requests a generation on the background thread (`request()`); `wait()`
    blocks until the latest request is done, and `regenerate()` does both. `text` and `error` hold
    the result of the latest generation that was not superseded. `tokens_generated` counts every
    token drawn, superseded generations included, and `superseded` the generations a newer change
    stopped early. While text streams, the output is redrawn after `chunk` new tokens, then each
    time the text has grown by a quarter (so a long text costs few redraws). temperature, top_k
    and top_p start the sliders (defaults and validation: tinygpt.checks); top_p below 0.05 starts
    its slider at 0.05. Raises ValueError for a chunk below 1 and for sampling values generate refuses.
    """

    def __init__(self, model, tokenizer, *, prompt: str = "ROMEO:", length: int = 300,
                 temperature: float = checks.SAMPLE_TEMPERATURE, top_k: int | None = checks.TOP_K,
                 top_p: float = checks.TOP_P, seed: int = 0, chunk: int = 20):
        import ipywidgets as W

        checks.whole_number("chunk", chunk)
        temperature, top_p = checks.temperature(temperature), checks.top_p(top_p)
        V = tokenizer.vocab_size
        top_k = checks.top_k(top_k, V)
        self.model, self.tokenizer, self.chunk = model, tokenizer, chunk
        style = {"description_width": "initial"}
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         continuous_update=False, readout_format=".2f", style=style)
        self.top_k = W.IntSlider(value=V if top_k is None else min(top_k, V), min=1, max=V, step=1,
                                 description=f"top-k ({V} = off)", continuous_update=False, style=style)
        self.top_p = W.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="top-p (1 = off)",
                                   continuous_update=False, readout_format=".2f", style=style)
        self.seed = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", style=style)
        self.length = W.IntSlider(value=length, min=0, max=2000, step=10, description="length",
                                  continuous_update=False, style=style)
        self.prompt = W.Text(value=prompt, description="prompt", placeholder="text to continue", style=style)
        self.status = W.HTML(value="")
        self.output = W.HTML(value="")
        self.widget = W.VBox([
            W.HBox([self.temperature, self.top_k, self.top_p]),
            W.HBox([self.seed, self.length]),
            self.prompt,
            self.status,
            self.output,
            W.HTML(value=legend_html()),
        ])
        self.text = ""
        self.error: str | None = None
        self.tokens_generated = 0
        self.superseded = 0
        # the latest finished generation, timed from the change that asked for it: to its first
        # redraw of the output (all of it if shorter than chunk), and to the end
        self.first_chars_ms: float | None = None
        self.total_ms: float | None = None
        self._requested_at = time.perf_counter()
        # requests: each change takes the next id; the worker thread runs while an id is not done
        self._cond = threading.Condition()
        self._requested = self._done = 0
        self._worker: threading.Thread | None = None
        self.regenerate()
        for control in (self.temperature, self.top_k, self.top_p, self.seed, self.length, self.prompt):
            control.observe(self._on_change, names="value")

    @property
    def top_k_value(self) -> int | None:
        return None if self.top_k.value >= self.tokenizer.vocab_size else int(self.top_k.value)

    def _on_change(self, change):
        self.request()

    def request(self) -> None:
        """Ask for a generation with the current settings (the controls call this on every change);
        returns at once. A generation still running for older settings stops at its next token."""
        with self._cond:
            self._requested += 1
            self._requested_at = time.perf_counter()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="tinygpt-playground", daemon=True)
                self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest request has been generated; False if `timeout` (s) ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._worker is None, timeout)

    def regenerate(self) -> str:
        """Generate from the current settings and wait for it; returns the generated text (empty on
        bad input). It supersedes any generation in progress."""
        self.request()
        self.wait()
        return self.text if self.error is None else ""

    def _work(self):
        while True:
            with self._cond:
                if self._done >= self._requested:
                    self._worker = None
                    self._cond.notify_all()
                    return
                request = self._requested
            try:
                self._run(request)
            except BaseException as e:  # the thread must never die silently with the widget waiting on it
                self._show_error(f"{type(e).__name__}: {e}")
                with self._cond:
                    self._done = max(self._done, request)

    def _current(self, request: int) -> bool:
        return self._requested == request  # False once a newer change has come in

    def _run(self, request: int):
        """Generate for the settings read now; stop early if a newer request arrives."""
        prompt, length = self.prompt.value, int(self.length.value)
        temperature, top_k, seed = float(self.temperature.value), self.top_k_value, int(self.seed.value)
        top_p = min(float(self.top_p.value), 1.0)
        t0 = self._requested_at
        ids, probs, tips = [], [], []
        first_ms = None
        try:
            prompt_tokens = prompt_ids(self.tokenizer, prompt)
            device = next(self.model.parameters()).device
            idx = torch.tensor([prompt_tokens], dtype=torch.long, device=device)
            g = torch.Generator().manual_seed(seed)
            tokens = stream(self.model, idx, length, temperature=temperature, top_k=top_k, top_p=top_p,
                            generator=g, distributions=True)
            next_redraw = self.chunk
            for token, p, dist in tokens:
                self.tokens_generated += 1
                ids.append(int(token[0]))
                probs.append(float(p[0]))
                tips.append(why(dist[0], self.tokenizer))
                if not self._current(request):
                    tokens.close()
                    self.superseded += 1
                    return
                if len(ids) == next_redraw and len(ids) < length:
                    self.output.value = render_html(prompt, token_pieces(self.tokenizer, ids), probs, tips)
                    if first_ms is None:
                        first_ms = (time.perf_counter() - t0) * 1000
                    self.status.value = self._status(f"{len(ids)} of {length} {self._unit}…")
                    next_redraw = max(len(ids) + self.chunk, len(ids) * 5 // 4)
        except ValueError as e:
            if self._current(request):
                self._show_error(str(e))
            return
        finally:
            with self._cond:
                self._done = max(self._done, request)
        if not self._current(request):
            self.superseded += 1
            return
        self.error = None
        self.text = self.tokenizer.decode(ids)
        mode = "greedy" if temperature == 0 or top_k == 1 else "sampled"
        self.output.value = render_html(prompt, token_pieces(self.tokenizer, ids), probs, tips)
        ms = self.total_ms = (time.perf_counter() - t0) * 1000
        self.first_chars_ms = first_ms if first_ms is not None else ms
        count = f"{len(self.text)} characters" if self.tokenizer.kind == "char" else \
            f"{len(ids)} tokens ({len(self.text)} characters)"
        self.status.value = self._status(f"{count} {mode} in {ms:.0f} ms")

    @property
    def _unit(self) -> str:
        return "characters" if self.tokenizer.kind == "char" else "tokens"

    @staticmethod
    def _status(message: str) -> str:
        return f'<span class="tinygpt-status" style="color:#555">{html.escape(message)}</span>'

    def _show_error(self, message: str):
        self.error = message
        self.status.value = f'<span class="tinygpt-error" style="color:#b00000">⚠ {html.escape(message)}</span>'

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
