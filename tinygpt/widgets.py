"""The sampling playground: sliders for temperature and top-k, a seed, a length and a prompt box.

Every change regenerates the text (fast thanks to the KV cache) and colours each generated
character by the probability it was drawn with. A prompt character outside the vocabulary
shows a one-line message in the widget, never a traceback. Works with ipywidgets 7.7 and 8.
"""

from __future__ import annotations

import html
import time

import torch

from .sample import generate, prompt_ids


def prob_colour(p: float) -> str:
    """Background colour for a character drawn with probability p: red (unlikely) to green (sure)."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 85%)"


def render_html(prompt: str, generated: str, probs) -> str:
    """The prompt in bold, then each generated character on a background coloured by its probability."""
    spans = []
    for ch, p in zip(generated, probs):
        shown = "↵\n" if ch == "\n" else html.escape(ch)
        spans.append(f'<span title="p = {float(p):.3f}" style="background:{prob_colour(p)}">{shown}</span>')
    return (
        '<div class="tinygpt-text" style="font-family:monospace;white-space:pre-wrap;line-height:1.5">'
        f"<b>{html.escape(prompt)}</b>{''.join(spans)}</div>"
    )


def legend_html() -> str:
    stops = [0.0, 0.25, 0.5, 0.75, 1.0]
    cells = "".join(f'<span style="background:{prob_colour(p)};padding:0 6px">{p:.2f}</span>' for p in stops)
    return f'<div style="font-size:smaller">probability each character was drawn with: {cells}</div>'


class Playground:
    """Build with a model and its tokenizer, then display `playground.widget` (or just the object)."""

    def __init__(self, model, tokenizer, *, prompt: str = "ROMEO:", length: int = 300, temperature: float = 0.8,
                 top_k: int | None = None, seed: int = 0):
        import ipywidgets as W

        self.model, self.tokenizer = model, tokenizer
        V = tokenizer.vocab_size
        style = {"description_width": "initial"}
        self.temperature = W.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05, description="temperature",
                                         continuous_update=False, readout_format=".2f", style=style)
        self.top_k = W.IntSlider(value=V if top_k is None else min(top_k, V), min=1, max=V, step=1,
                                 description=f"top-k ({V} = off)", continuous_update=False, style=style)
        self.seed = W.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed", style=style)
        self.length = W.IntSlider(value=length, min=0, max=2000, step=10, description="length",
                                  continuous_update=False, style=style)
        self.prompt = W.Text(value=prompt, description="prompt", placeholder="text to continue", style=style)
        self.status = W.HTML(value="")
        self.output = W.HTML(value="")
        self.widget = W.VBox([
            W.HBox([self.temperature, self.top_k]),
            W.HBox([self.seed, self.length]),
            self.prompt,
            self.status,
            self.output,
            W.HTML(value=legend_html()),
        ])
        for control in (self.temperature, self.top_k, self.seed, self.length, self.prompt):
            control.observe(self._on_change, names="value")
        self.text = ""
        self.error: str | None = None
        self.regenerate()

    def _on_change(self, change):
        self.regenerate()

    @property
    def top_k_value(self) -> int | None:
        return None if self.top_k.value >= self.tokenizer.vocab_size else int(self.top_k.value)

    def regenerate(self) -> str:
        """Generate from the current settings; returns the generated text (empty on bad input)."""
        prompt = self.prompt.value
        t0 = time.perf_counter()
        try:
            ids = prompt_ids(self.tokenizer, prompt)
            device = next(self.model.parameters()).device
            idx = torch.tensor([ids], dtype=torch.long, device=device)
            g = torch.Generator().manual_seed(int(self.seed.value))
            seq, probs = generate(self.model, idx, int(self.length.value), temperature=float(self.temperature.value),
                                  top_k=self.top_k_value, generator=g, return_probs=True)
        except ValueError as e:
            self.error = str(e)
            self.status.value = f'<span class="tinygpt-error" style="color:#b00000">⚠ {html.escape(self.error)}</span>'
            return ""
        ms = (time.perf_counter() - t0) * 1000
        self.error = None
        self.text = self.tokenizer.decode(seq[0, len(ids):].tolist())
        mode = "greedy" if self.temperature.value == 0 or self.top_k_value == 1 else "sampled"
        self.status.value = (f'<span class="tinygpt-status" style="color:#555">{len(self.text)} characters '
                             f"{mode} in {ms:.0f} ms</span>")
        self.output.value = render_html(prompt, self.text, probs[0].tolist())
        return self.text

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
