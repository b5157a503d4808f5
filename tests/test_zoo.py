"""The model shipped inside the package (tinygpt.pretrained), its file and its card."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import tinygpt
from tinygpt.checkpoint import CheckpointError
from tinygpt.sample import generate_text
from tinygpt.zoo import CARD_SAMPLE_CHARS, CARD_SEEDS, load_file, read_card, score

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "docs" / "pretrained-laptop.md"
SHIPPED = ROOT / "tinygpt" / "weights" / "laptop.safetensors"


@pytest.fixture(scope="module")
def laptop():
    return tinygpt.pretrained("laptop")


def test_the_shipped_laptop_model_loads_in_eval_mode_with_its_vocabulary(laptop):
    model, tokenizer = laptop
    assert not model.training
    assert tokenizer.kind == "char" and tokenizer.vocab_size == model.config.vocab_size == 65
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd, model.config.block_size) == (4, 4, 96, 64)


def test_the_shipped_file_is_at_most_about_two_megabytes():
    assert SHIPPED.stat().st_size <= 2_100_000


def test_the_shipped_models_exact_validation_loss_is_the_one_in_its_card(laptop):
    card = read_card(CARD.read_text(encoding="utf-8"))
    scored = score(*laptop)
    assert abs(scored["val_loss"] - card["val_loss"]) < 5e-4  # the same to three decimals
    assert abs(scored["val_bpc"] - card["val_bpc"]) < 5e-4


def test_the_cards_samples_are_what_their_seeds_give(laptop):
    text = CARD.read_text(encoding="utf-8")
    samples = re.findall(r"Seed (\d+):\n\n```text\n(.*?)\n```", text, flags=re.S)
    assert [int(seed) for seed, _ in samples] == list(CARD_SEEDS)
    seed, sample = samples[0]
    assert sample == generate_text(*laptop, "", CARD_SAMPLE_CHARS, temperature=0.8, seed=int(seed))


def test_an_unknown_shipped_model_is_refused_in_one_line_listing_the_known_ones():
    with pytest.raises(ValueError, match=r"^no shipped model named 'huge'; the package ships: laptop$"):
        tinygpt.pretrained("huge")


def test_a_file_that_is_not_a_shipped_model_is_refused_naming_it(tmp_path):
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="bare.safetensors: not a tinygpt shipped model"):
        load_file(bare)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not tensors")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors file"):
        load_file(junk)


def test_a_card_without_its_figures_is_refused():
    with pytest.raises(ValueError, match="not a shipped-model card"):
        read_card("# a model\n")


def test_importing_tinygpt_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, tinygpt; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_the_built_wheel_ships_the_model(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("tinygpt-*.whl")
    assert "tinygpt/weights/laptop.safetensors" in zipfile.ZipFile(wheel).namelist()


def test_export_with_a_card_records_the_run_and_the_scores_the_file_gets(smoke_run, tmp_path):
    from tinygpt.zoo import export, write_card

    ckpt = smoke_run.out_dir / "ckpt_best.pt"
    dest = export(ckpt, tmp_path / "smoke.safetensors")
    card = write_card(tmp_path / "card.md", ckpt, dest, command="python -m tinygpt train --preset smoke",
                      note="a test run")
    text = card.read_text(encoding="utf-8")
    scored = score(*load_file(dest))
    assert read_card(text) == pytest.approx({k: round(v, 6) for k, v in scored.items()}, abs=1e-6)
    assert "- trained with: `python -m tinygpt train --preset smoke`" in text and "- note: a test run" in text
    assert len(re.findall(r"Seed \d+:\n\n```text\n", text)) == 3
