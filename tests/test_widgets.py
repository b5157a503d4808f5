"""The playground's logic, driven the way the sliders drive it (no browser needed)."""

import re
from html import unescape

import pytest
import torch

from tinygpt.sample import generate
from tinygpt.widgets import Playground, prob_colour, render_html

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
    assert playground.text != before


def test_top_k_one_is_greedy_and_ignores_the_seed(playground):
    playground.top_k.value = 1
    first = playground.text
    playground.seed.value = 99
    assert playground.text == first
    assert "greedy" in playground.status.value


def test_temperature_zero_is_greedy(playground):
    playground.top_k.value = 1
    greedy_by_top_k = playground.text
    playground.top_k.value = playground.top_k.max
    playground.temperature.value = 0.0
    assert playground.text == greedy_by_top_k


def test_changing_the_seed_changes_sampled_text(playground):
    before = playground.text
    playground.seed.value = 1
    assert playground.text != before


def test_top_k_slider_at_vocabulary_size_means_off(playground, tokenizer):
    assert playground.top_k.max == tokenizer.vocab_size
    playground.top_k.value = tokenizer.vocab_size
    assert playground.top_k_value is None


def test_length_slider_sets_the_number_of_characters(playground):
    playground.length.value = 10
    assert len(playground.text) == 10


def test_unknown_prompt_character_shows_one_line_message_not_traceback(playground):
    text_before, output_before = playground.text, playground.output.value
    playground.prompt.value = "ROMEO: café"
    assert playground.error == "character 'é' at position 10 is not in the vocabulary (65 characters)"
    assert "tinygpt-error" in playground.status.value
    assert "\n" not in playground.status.value and "Traceback" not in playground.status.value
    assert playground.output.value == output_before and playground.text == text_before


def test_fixing_the_prompt_clears_the_message(playground):
    playground.prompt.value = "é"
    playground.prompt.value = "JULIET:"
    assert playground.error is None
    assert "tinygpt-status" in playground.status.value


def test_empty_prompt_generates_from_the_start_of_a_line(playground):
    playground.prompt.value = ""
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
