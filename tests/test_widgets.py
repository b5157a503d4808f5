"""The playground's logic, driven the way the sliders drive it (no browser needed).

A change of a control starts a generation on the playground's thread; `wait()` returns once it is done."""

import re
from html import unescape

import pytest
import torch

from tinygpt.sample import generate
from tinygpt.course.widgets import Playground, prob_colour, render_html

pytest.importorskip("ipywidgets")


@pytest.fixture
def playground(make_tiny_gpt, tokenizer):
    return Playground(make_tiny_gpt(seed=3, block_size=32), tokenizer, prompt="ROMEO:", length=40, temperature=1.0,
                      seed=0)


def generated_chars(html: str) -> str:
    return "".join(re.findall(r'<span title="p = [0-9.]+" style="[^"]*">(.*?)</span>', html, flags=re.S))


def test_playground_generates_on_construction(playground):
    assert len(playground.text) == 40
    assert playground.error is None
    assert "40 characters sampled" in playground.status.value


def test_playground_text_matches_generate_with_the_same_settings(playground, tokenizer):
    idx = torch.tensor([tokenizer.encode("ROMEO:")])
    expected = generate(playground.model, idx, 40, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert playground.text == tokenizer.decode(expected[0, 6:].tolist())


def test_moving_the_temperature_slider_regenerates(playground):
    before = playground.text
    playground.temperature.value = 0.3
    playground.wait()
    assert playground.text != before


def test_top_k_one_is_greedy_and_ignores_the_seed(playground):
    playground.top_k.value = 1
    playground.wait()
    first = playground.text
    playground.seed.value = 99
    playground.wait()
    assert playground.text == first
    assert "greedy" in playground.status.value


def test_temperature_zero_is_greedy(playground):
    playground.top_k.value = 1
    playground.wait()
    greedy_by_top_k = playground.text
    playground.top_k.value = playground.top_k.max
    playground.wait()
    playground.temperature.value = 0.0
    playground.wait()
    assert playground.text == greedy_by_top_k


def test_changing_the_seed_changes_sampled_text(playground):
    before = playground.text
    playground.seed.value = 1
    playground.wait()
    assert playground.text != before


def test_top_k_slider_at_vocabulary_size_means_off(playground, tokenizer):
    assert playground.top_k.max == tokenizer.vocab_size
    playground.top_k.value = tokenizer.vocab_size
    playground.wait()
    assert playground.top_k_value is None


def test_length_slider_sets_the_number_of_characters(playground):
    playground.length.value = 10
    playground.wait()
    assert len(playground.text) == 10


def test_unknown_prompt_character_shows_one_line_message_not_traceback(playground):
    text_before, output_before = playground.text, playground.output.value
    playground.prompt.value = "ROMEO: café"
    playground.wait()
    assert playground.error == "character 'é' at position 10 is not in the vocabulary (65 characters)"
    assert "tinygpt-error" in playground.status.value
    assert "\n" not in playground.status.value and "Traceback" not in playground.status.value
    assert playground.output.value == output_before and playground.text == text_before


def test_fixing_the_prompt_clears_the_message(playground):
    playground.prompt.value = "é"
    playground.wait()
    playground.prompt.value = "JULIET:"
    playground.wait()
    assert playground.error is None
    assert "tinygpt-status" in playground.status.value


def test_empty_prompt_generates_from_the_start_of_a_line(playground):
    playground.prompt.value = ""
    playground.wait()
    assert playground.error is None and len(playground.text) == 40


def test_every_generated_character_is_coloured_by_its_probability(playground):
    html = playground.output.value
    assert unescape(generated_chars(html).replace("↵\n", "\n")) == playground.text
    probs = [float(p) for p in re.findall(r'title="p = ([0-9.]+)"', html)]
    assert len(probs) == 40 and all(0 < p <= 1 for p in probs)


def test_render_html_escapes_markup_and_marks_newlines():
    html = render_html("<b>", "a\n<", [0.5, 1.0, 0.25])
    assert "&lt;b&gt;" in html and "&lt;</span>" in html and "↵\n" in html


def test_prob_colour_runs_from_red_to_green():
    assert prob_colour(0.0).startswith("hsl(0,") and prob_colour(1.0).startswith("hsl(120,")
    assert prob_colour(2.0) == prob_colour(1.0) and prob_colour(-1) == prob_colour(0.0)


def test_a_model_with_a_nan_weight_shows_the_one_line_message(make_tiny_gpt, tokenizer):
    model = make_tiny_gpt(seed=3, block_size=32)
    with torch.no_grad():
        model.ln_f.weight[0] = float("nan")
    pg = Playground(model, tokenizer, prompt="ROMEO:", length=40, temperature=1.0, seed=0)
    assert pg.error.startswith("the model's output is not finite")
    assert "tinygpt-error" in pg.status.value and "\n" not in pg.status.value


def generated_text(model, tokenizer, prompt, n, seed, temperature=1.0):
    idx = torch.tensor([tokenizer.encode(prompt)])
    out = generate(model, idx, n, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    return tokenizer.decode(out[0, idx.size(1):].tolist())


def test_the_output_streams_while_the_text_is_generated(make_tiny_gpt, tokenizer):
    pg = Playground(make_tiny_gpt(seed=3, block_size=32), tokenizer, prompt="ROMEO:", length=100, seed=0, chunk=8)
    shown = []
    pg.output.observe(lambda change: shown.append(generated_chars(change["new"])), names="value")
    pg.seed.value = 1
    pg.wait()
    final = unescape(shown[-1].replace("↵\n", "\n"))
    assert final == pg.text and len(final) == 100
    partial = [unescape(s.replace("↵\n", "\n")) for s in shown[:-1]]
    assert len(partial) >= 3
    assert [len(s) for s in partial] == sorted({len(s) for s in partial}) and len(partial[0]) == 8
    assert all(final.startswith(s) for s in partial)


def test_three_quick_changes_generate_the_last_settings(make_tiny_gpt, tokenizer):
    model = make_tiny_gpt(seed=3, block_size=32)
    pg = Playground(model, tokenizer, prompt="ROMEO:", length=200, temperature=1.0, seed=0)
    pg.seed.value = 5
    pg.temperature.value = 0.5
    pg.seed.value = 7
    pg.wait()
    assert pg.text == generated_text(model, tokenizer, "ROMEO:", 200, seed=7, temperature=0.5)


def test_a_change_while_text_streams_stops_that_generation_at_once(make_tiny_gpt, tokenizer):
    model = make_tiny_gpt(seed=3, block_size=32)
    pg = Playground(model, tokenizer, prompt="ROMEO:", length=200, temperature=1.0, seed=0, chunk=8)
    before, superseded_before = pg.tokens_generated, pg.superseded
    seeds = iter([1, 2, 3])

    def user_moves_the_seed(change):  # at each redraw, while the text streams, until seed 3
        seed = next(seeds, None)
        if seed is not None:
            pg.seed.value = seed

    pg.output.observe(user_moves_the_seed, names="value")
    pg.seed.value = 10
    pg.wait()
    assert pg.text == generated_text(model, tokenizer, "ROMEO:", 200, seed=3)
    assert pg.superseded - superseded_before == 3  # seeds 10, 1 and 2, each at its first redraw
    # each superseded generation drew one token past its first redraw (8 tokens), not 200
    assert pg.tokens_generated - before == 200 + 3 * 9


def test_regenerate_returns_the_text_for_the_current_settings(playground, tokenizer):
    assert playground.regenerate() == playground.text
    assert playground.wait(timeout=0) is True  # nothing left running


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_chunk_must_be_a_positive_whole_number(make_tiny_gpt, tokenizer, chunk):
    with pytest.raises(ValueError, match="chunk"):
        Playground(make_tiny_gpt(seed=3, block_size=32), tokenizer, chunk=chunk)
