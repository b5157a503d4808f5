"""tinygpt.course.diagrams: every concept diagram draws, with a caption, and its labels are the package's numbers."""

import re

import matplotlib.colors as mcolors
import pytest
import torch
from matplotlib.figure import Figure

from tinygpt.bpe import BPETokenizer
from tinygpt.config import get_config
from tinygpt.course import diagrams
from tinygpt.data import get_batch
from tinygpt.model import GPT, GPTConfig, KVCache
from tinygpt.schedule import get_lr
from tinygpt.train import rank_batch


@pytest.fixture(scope="module")
def bpe(text) -> BPETokenizer:
    return BPETokenizer.train(text[:20_000], 280)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def highlighted(fig) -> list:
    highlight = mcolors.to_rgba(diagrams.HIGHLIGHT)
    return [p for p in fig.axes[0].patches if p.get_facecolor() == highlight]


@pytest.fixture(params=["roadmap", "text_to_logits", "attention_shapes", "block_diagram", "training_step",
                        "kv_cache", "bpe_merges", "data_parallel"])
def drawn(request, tokenizer, bpe):
    args = {"roadmap": dict(current="03"), "text_to_logits": dict(tokenizer=tokenizer),
            "bpe_merges": dict(tokenizer=bpe)}.get(request.param, {})
    return getattr(diagrams, request.param)(**args)


def test_every_diagram_is_a_figure_of_boxes_and_labels(drawn):
    assert isinstance(drawn, Figure)
    assert drawn.axes[0].patches
    assert any(t.strip() for t in texts(drawn))


def test_every_diagram_has_a_one_line_caption(drawn):
    caption = diagrams.caption(drawn)
    assert caption.strip() and "\n" not in caption


def test_a_diagram_is_not_left_open_in_pyplot(drawn):
    import matplotlib.pyplot as plt

    assert drawn.number not in plt.get_fignums()  # so Jupyter shows it once, as the cell's value


@pytest.mark.parametrize("key", [key for key, _, _ in diagrams.NOTEBOOKS])
def test_the_roadmap_highlights_exactly_the_current_notebook(key):
    marked = highlighted(diagrams.roadmap(key))
    assert [p.get_gid() for p in marked] == [f"notebook {key}"]


def test_the_roadmap_knows_a_notebook_by_its_file_name_too():
    assert [p.get_gid() for p in highlighted(diagrams.roadmap("05_sampling.ipynb"))] == ["notebook 05"]
    assert [p.get_gid() for p in highlighted(diagrams.roadmap("appendix_workshop_checked"))] == ["notebook appendix"]


def test_the_roadmap_refuses_an_unknown_notebook_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown notebook '07'.*'01'.*'appendix'"):
        diagrams.roadmap("07")


def test_text_to_logits_shows_the_tokenizers_ids(tokenizer):
    fig = diagrams.text_to_logits("First", tokenizer=tokenizer)
    ids = tokenizer.encode("First")
    assert ids == [18, 47, 56, 57, 58]
    shown = texts(fig)
    assert [int(t) for t in shown if t.isdigit()] == ids


def test_text_to_logits_shows_the_shapes_a_model_computes(tokenizer):
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=32)
    ids = torch.tensor([tokenizer.encode("Hello")])
    model = GPT(config)
    emb, logits = model.tok_emb(ids)[0].shape, model(ids)[0][0].shape
    shown = texts(diagrams.text_to_logits("Hello", tokenizer=tokenizer, config=config))
    assert f"(T, n_embd) = {tuple(emb)}" in shown
    assert f"(T, vocab_size) = {tuple(logits)}" in shown


@pytest.mark.parametrize("line", ["", "x" * 17])
def test_text_to_logits_refuses_a_text_it_cannot_draw(tokenizer, line):
    with pytest.raises(ValueError, match="1 to 16 characters"):
        diagrams.text_to_logits(line, tokenizer=tokenizer)


def test_attention_shapes_labels_the_head_size_of_the_config():
    shown = " ".join(texts(diagrams.attention_shapes(GPTConfig(n_embd=96, n_head=4))))
    assert "n_head = 4" in shown and "head_size = C / n_head = 24" in shown and "(B, 4, T, 24)" in shown


def test_block_diagram_names_the_modules_of_a_block():
    shown = " ".join(texts(diagrams.block_diagram()))
    block = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2, block_size=8)).blocks[0]
    names = {name.split(".")[-1] for name, _ in block.named_modules() if name} - {"dropout", "resid_dropout", "gelu"}
    assert names == {"ln_1", "attn", "c_attn", "c_proj", "ln_2", "mlp", "c_fc"}
    assert all(name in shown for name in names)


def test_training_step_marks_the_learning_rate_get_lr_gives():
    cfg = get_config("workshop")
    shown = " ".join(texts(diagrams.training_step("workshop", step=40)))
    assert f"lr = {get_lr(40, cfg):.2g}" in shown and f"warm-up {cfg.warmup_steps} steps" in shown


def test_kv_cache_labels_the_shape_of_a_layers_cache():
    config = GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=16)
    shown = " ".join(texts(diagrams.kv_cache(config, cached="abc", new="d")))
    assert str(tuple(KVCache(config, 1).k[0].shape)) in shown
    assert "keys (4, 4, 8)" in shown and "values (4, 4, 8)" in shown


def test_bpe_merges_ends_with_the_tokenizers_encoding(bpe):
    fig = diagrams.bpe_merges(" citizen", tokenizer=bpe)
    shown = texts(fig)
    n_tokens = [int(t.split()[0]) for t in shown if re.fullmatch(r"\d+ tokens", t)]
    assert n_tokens[0] == len(b" citizen") and n_tokens[-1] == len(bpe.encode(" citizen"))
    for label in (t for t in shown if t.startswith("merge ")):
        n, a, b, new_id = re.fullmatch(r"merge (\d+): (.+) \+ (.+) → id (\d+)", label).groups()
        assert int(new_id) == 256 + int(n) - 1
        first, second = bpe.merges[int(n) - 1]
        assert (bpe.vocab[first].decode().replace(" ", "␣"), bpe.vocab[second].decode().replace(" ", "␣")) == (a, b)


def test_bpe_merges_refuses_more_than_one_chunk(bpe):
    with pytest.raises(ValueError, match="not one chunk"):
        diagrams.bpe_merges(" two words", tokenizer=bpe)


def test_data_parallel_gives_each_rank_the_rows_rank_batch_takes():
    data, n, batch_size = torch.arange(1000), 3, 4
    shown = texts(diagrams.data_parallel(n, batch_size=batch_size))
    spans = [tuple(map(int, m.groups())) for t in shown if (m := re.fullmatch(r"rows (\d+)–(\d+)", t))]
    assert len(spans) == n
    whole, _ = get_batch(data, 8, batch_size * n, generator=torch.Generator().manual_seed(0))
    for rank, (first, last) in enumerate(spans):
        x, _ = rank_batch(data, 8, batch_size, rank=rank, world_size=n, generator=torch.Generator().manual_seed(0))
        assert torch.equal(x, whole[first:last + 1])


@pytest.mark.parametrize("n", [0, 1, 5, 2.0, True])
def test_data_parallel_refuses_a_number_of_processes_it_cannot_draw(n):
    with pytest.raises(ValueError, match="from 2 to 4"):
        diagrams.data_parallel(n)
