"""Checkpoints: round trip, atomic saves, and refusal of damaged or hostile files."""

import os
import pickle

import pytest
import torch

from tinygpt import checkpoint
from tinygpt.checkpoint import CheckpointError
from tinygpt.tokenizer import CharTokenizer


@pytest.fixture
def saved(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer, step=42,
                    history=[{"step": 0, "val_loss": 4.2}, {"step": 42, "val_loss": 3.1}])
    return path


def _logits(model):
    idx = torch.arange(16).remainder(65)[None]
    with torch.no_grad():
        return model.eval()(idx)[0]


# ---------------------------------------------------------------- round trip


def test_save_load_round_trip_gives_identical_logits_and_tokenizer(saved, tiny_gpt, tokenizer):
    model, tok, _ = checkpoint.load(saved)
    assert torch.equal(_logits(model), _logits(tiny_gpt))
    assert tok == tokenizer
    assert model.config == tiny_gpt.config


def test_load_returns_the_extra_info_with_step_and_history(saved):
    _, _, info = checkpoint.load(saved)
    assert info["step"] == 42
    assert info["history"] == [{"step": 0, "val_loss": 4.2}, {"step": 42, "val_loss": 3.1}]
    assert not {"model", "config", "tokenizer", "format", "version"} & set(info)


def test_save_leaves_no_temporary_file(saved):
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt.pt"]


# ---------------------------------------------------------------- damaged files


def test_truncated_file_raises_checkpoint_error_naming_the_file(saved, tmp_path):
    bad = tmp_path / "truncated.pt"
    data = saved.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        checkpoint.load(bad)


def test_garbage_file_raises_checkpoint_error_naming_the_file(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        checkpoint.load(bad)


def test_empty_file_raises_checkpoint_error(tmp_path):
    bad = tmp_path / "empty.pt"
    bad.touch()
    with pytest.raises(CheckpointError, match="empty.pt: the file is empty"):
        checkpoint.load(bad)


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint file"):
        checkpoint.load(tmp_path / "nope.pt")


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        checkpoint.load(tmp_path)


def test_a_torch_file_that_is_not_a_tinygpt_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a tinygpt checkpoint"):
        checkpoint.load(path)


def rewrite_checkpoint(path, change):
    """Load a saved checkpoint's raw dict, apply `change(obj)` to it, and save it back."""
    obj = torch.load(path, weights_only=True)
    change(obj)
    torch.save(obj, path)


def test_a_checkpoint_of_another_version_is_refused(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "future.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj.update(version=99))
    with pytest.raises(CheckpointError, match="version 99"):
        checkpoint.load(path)


# ---------------------------------------------------------------- hostile files


class _Evil:
    """Unpickling this runs open(marker, 'w'): the file appears if code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_evil_payload_would_run_under_plain_pickle(tmp_path):
    # the control for the two tests below: without weights_only, loading does run the code
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(_Evil(marker))).close()
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_raw_pickle_payload_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "tinygpt-checkpoint", "x": _Evil(marker)}, protocol=protocol))
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        checkpoint.load(path)
    assert not marker.exists()


def test_pickle_payload_inside_a_torch_zip_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "tinygpt-checkpoint", "version": 1, "x": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        checkpoint.load(path)
    assert not marker.exists()


# ---------------------------------------------------------------- failed saves


def test_failed_save_leaves_the_previous_checkpoint_intact_and_no_temporary_file(
    saved, tiny_gpt, tokenizer, make_tiny_gpt, monkeypatch
):
    before = saved.read_bytes()

    def torch_save_that_fills_the_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", torch_save_that_fills_the_disk)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(saved, model=make_tiny_gpt(seed=1), tokenizer=tokenizer, step=99)
    monkeypatch.undo()

    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt.pt"]
    model, _, info = checkpoint.load(saved)
    assert info["step"] == 42
    assert torch.equal(_logits(model), _logits(tiny_gpt))


def test_interrupted_save_leaves_no_temporary_file(saved, tiny_gpt, tokenizer, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(saved, model=tiny_gpt, tokenizer=tokenizer)
    assert [p.name for p in saved.parent.iterdir()] == ["ckpt.pt"]


# ---------------------------------------------------------------- inconsistent contents


def test_checkpoint_whose_vocabulary_does_not_match_its_config_is_refused(tmp_path, tiny_gpt):
    path = tmp_path / "mismatch.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=CharTokenizer("abcdefghij"))  # 10 chars, model has 65
    with pytest.raises(CheckpointError, match="mismatch.pt: the vocabulary has 10 characters but the model expects 65"):
        checkpoint.load(path)


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "misfit.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj["config"].update(n_layer=3))
    with pytest.raises(CheckpointError, match="misfit.pt: the weights do not fit the config"):
        checkpoint.load(path)


def test_checkpoint_with_an_invalid_config_is_refused(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "badconfig.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj["config"].update(n_head=3))  # 16 is not divisible by 3
    with pytest.raises(CheckpointError, match="badconfig.pt: invalid config"):
        checkpoint.load(path)
