"""The playground's logic, driven the way the sliders drive it (no browser needed).

A change of a control starts a generation on the playground's thread; `wait()` returns once it is done."""

import math
import re
from html import unescape

import pytest
import torch

from tinygpt.bpe import BPETokenizer
from tinygpt.course.widgets import Playground, prob_colour, render_html, token_pieces, why
from tinygpt.sample import generate, next_token_probs

pytest.importorskip("ipywidgets")


@pytest.fixture
def playground(make_tiny_gpt, tokenizer):
    return Playground(make_tiny_gpt(seed=3, block_size=32), tokenizer, prompt="ROMEO:", length=40, temperature=1.0,
                      seed=0)


def generated_chars(html: str) -> str:
    """The generated text shown in the output (the hover popups left out)."""
    return "".join(re.findall(r'<span class="tg-t"[^>]*>(.*?)<span class="tg-tip">', html, flags=re.S))


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
    probs = [float(p) for p in re.findall(r'data-p="([0-9.]+)"', html)]
    assert len(probs) == 40 and all(0 < p <= 1 for p in probs)


def test_render_html_escapes_markup_and_marks_newlines():
    html = render_html("<b>", "a\n<", [0.5, 1.0, 0.25])
    assert "&lt;b&gt;" in html and generated_chars(html) == "a↵\n&lt;"


def test_render_html_without_details_shows_each_probability_on_hover():
    html = render_html("", "ab", [0.5, 0.25])
    assert tips(html) == ["p = 0.500", "p = 0.250"]


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


# ---------------------------------------------------------------- why: the hover details


def tips(html: str) -> list[str]:
    """The text of each generated token's hover popup."""
    return [unescape(t) for t in re.findall(r'<span class="tg-tip">(.*?)</span></span>', html, flags=re.S)]


def tip_rows(tip: str) -> list[tuple[str, float]]:
    return [(text, float(pct) / 100) for text, pct in
            re.findall(r'<span class="tg-row"><span class="tg-c">(.*?)</span>\s+([0-9.]+)%</span>', tip)]


def tip_entropy(tip: str) -> float:
    return float(re.search(r"entropy ([0-9.]+) bits", tip).group(1))


def test_why_lists_the_likeliest_tokens_first_and_the_entropy_in_bits(tokenizer):
    dist = torch.zeros(tokenizer.vocab_size)
    dist[tokenizer.encode("abc")] = torch.tensor([0.25, 0.5, 0.25])
    choices, entropy = why(dist, tokenizer)
    assert choices[0] == ("b", 0.5) and sorted(choices[1:]) == [("a", 0.25), ("c", 0.25)]
    assert entropy == pytest.approx(1.5)


def test_why_lists_at_most_ten_tokens(tokenizer):
    choices, entropy = why(torch.full((tokenizer.vocab_size,), 1 / tokenizer.vocab_size), tokenizer)
    assert len(choices) == 10 and entropy == pytest.approx(math.log2(tokenizer.vocab_size), abs=1e-4)


def test_hovering_a_character_shows_the_ten_likeliest_at_its_position_and_the_entropy(playground, tokenizer):
    html = playground.output.value
    assert len(tips(html)) == 40
    idx = torch.tensor([tokenizer.encode("ROMEO:")])
    with torch.no_grad():
        dist = next_token_probs(playground.model(idx)[0][:, -1], temperature=1.0)[0]
    first = tips(html)[0]
    rows = tip_rows(first)
    expected, entropy = why(dist, tokenizer)
    assert len(rows) == 10
    assert [t for t, _ in rows] == [t.replace("\n", "↵").replace(" ", "␣") for t, _ in expected]
    assert [q for _, q in rows] == pytest.approx([q for _, q in expected], abs=6e-4)
    assert tip_entropy(first) == pytest.approx(entropy, abs=0.006)
    drawn = float(re.search(r"p = ([0-9.]+)", first).group(1))
    assert drawn == pytest.approx(dist[tokenizer.encode(playground.text[0])[0]].item(), abs=6e-4)


def test_the_hover_details_follow_the_top_k_in_force(playground):
    playground.top_k.value = 3
    playground.wait()
    assert all(1 <= len(tip_rows(t)) <= 3 for t in tips(playground.output.value))
    assert all(tip_entropy(t) <= math.log2(3) + 0.005 for t in tips(playground.output.value))


def test_greedy_hover_details_are_one_sure_choice(playground):
    playground.temperature.value = 0.0
    playground.wait()
    for tip in tips(playground.output.value):
        assert len(tip_rows(tip)) == 1 and tip_rows(tip)[0][1] == 1.0 and tip_entropy(tip) == 0.0


def test_the_top_p_slider_samples_from_the_nucleus(playground, tokenizer):
    assert playground.top_p.value == 1.0 and "top-p" in playground.top_p.description
    unfiltered = [tip_entropy(t) for t in tips(playground.output.value)]
    playground.top_p.value = 0.5
    playground.wait()
    idx = torch.tensor([tokenizer.encode("ROMEO:")])
    expected = generate(playground.model, idx, 40, temperature=1.0, top_p=0.5,
                        generator=torch.Generator().manual_seed(0))
    assert playground.text == tokenizer.decode(expected[0, 6:].tolist())
    assert tip_entropy(tips(playground.output.value)[0]) < unfiltered[0]  # the same first position, filtered


def test_the_playground_refuses_a_top_p_outside_zero_one(make_tiny_gpt, tokenizer):
    with pytest.raises(ValueError, match="top_p must be a number in"):
        Playground(make_tiny_gpt(seed=3, block_size=32), tokenizer, top_p=1.5)


# ---------------------------------------------------------------- a BPE model


def test_token_pieces_put_a_character_split_across_tokens_with_the_token_completing_it():
    bpe = BPETokenizer([])  # bytes only: "é" is two tokens
    ids = bpe.encode("aé!")
    assert token_pieces(bpe, ids) == ["a", "", "é", "!"]
    assert token_pieces(bpe, bpe.encode("a")[:1] + [0xC3]) == ["a", "\ufffd"]  # a cut character: as decode shows it


def test_a_bpe_playground_shows_every_character_and_colours_each_token(make_tiny_gpt, text):
    bpe = BPETokenizer.train(text[:20_000], 300)
    pg = Playground(make_tiny_gpt(seed=3, block_size=32, vocab_size=bpe.vocab_size), bpe, prompt="ROMEO:",
                    length=30, temperature=1.0, seed=0)
    html = pg.output.value
    assert unescape(generated_chars(html).replace("↵\n", "\n")) == pg.text
    assert len(re.findall(r'data-p="', html)) == 30 == len(tips(html))
    assert "30 tokens (" in pg.status.value
