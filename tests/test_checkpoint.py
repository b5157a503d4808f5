"""Checkpoints: round trip, atomic saves, and refusal of damaged or hostile files."""

import json
import os
import pickle
import re
import stat
import zipfile

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


def test_a_text_file_is_refused_in_one_line_as_not_a_pytorch_file(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("python -m tinygpt train --preset smoke\n" * 50, encoding="utf-8")
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(bad)
    assert str(e.value) == f"{bad}: not a checkpoint: a text file, not a PyTorch file (torch.save writes a zip archive)"


def test_a_file_that_is_neither_text_nor_pytorch_is_refused_showing_its_first_bytes(tmp_path):
    bad = tmp_path / "image.pt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="image.pt: not a checkpoint: a file starting with the bytes 89 50 4e 47"):
        checkpoint.load(bad)


def test_empty_file_raises_checkpoint_error(tmp_path):
    bad = tmp_path / "empty.pt"
    bad.touch()
    with pytest.raises(CheckpointError, match="empty.pt: the file is empty"):
        checkpoint.load(bad)


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint file"):
        checkpoint.load(tmp_path / "nope.pt")


def test_a_folder_of_other_checkpoints_is_refused_listing_them(tmp_path, tiny_gpt, tokenizer):
    for name in ("step_100.pt", "step_200.pt"):
        checkpoint.save(tmp_path / name, model=tiny_gpt, tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file: use one of its files: "
                                              "step_100.pt, step_200.pt"):
        checkpoint.load(tmp_path)


def test_an_empty_folder_is_refused_saying_it_is_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder with no checkpoint in it"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("name", ["ckpt_best.pt", "ckpt_last.pt"])
def test_a_run_folder_is_refused_naming_the_checkpoint_file_in_it(tmp_path, tiny_gpt, tokenizer, name):
    checkpoint.save(tmp_path / name, model=tiny_gpt, tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match=f"is a folder, not a checkpoint file: use .*{name}"):
        checkpoint.load(tmp_path)


def test_a_torch_file_that_is_not_a_tinygpt_checkpoint_is_refused_naming_its_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"iter_num": 5000, "model_args": {"n_layer": 6}}, path)
    with pytest.raises(CheckpointError, match="other.pt: not a tinygpt checkpoint: a dict of 'iter_num', 'model_args'"):
        checkpoint.load(path)


def test_a_bare_state_dict_is_refused_saying_what_a_checkpoint_needs(tmp_path, tiny_gpt):
    path = tmp_path / "weights.pt"
    torch.save(tiny_gpt.state_dict(), path)  # what a plain training loop saves
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    message = str(e.value)
    assert "weights.pt: not a tinygpt checkpoint" in message
    assert "bare state_dict" in message and "no config or vocabulary" in message
    assert "tinygpt.checkpoint.save(path, model=model, tokenizer=tokenizer)" in message


def rewrite_checkpoint(path, change):
    """Load a saved checkpoint's raw dict, apply `change(obj)` to it, and save it back."""
    obj = torch.load(path, weights_only=True)
    change(obj)
    torch.save(obj, path)


def changed_checkpoint(path, model, tokenizer, change):
    """Save `model` as a checkpoint at `path`, then rewrite it with `change(obj)`; returns the path."""
    checkpoint.save(path, model=model, tokenizer=tokenizer)
    rewrite_checkpoint(path, change)
    return path


def test_a_checkpoint_of_a_newer_format_version_is_refused_asking_for_an_upgrade(tmp_path, tiny_gpt, tokenizer):
    path = changed_checkpoint(tmp_path / "future.pt", tiny_gpt, tokenizer,
                              lambda obj: obj.update(version=checkpoint.VERSION + 1))
    with pytest.raises(CheckpointError, match=f"future.pt: written by a newer tinygpt .*version "
                                              f"{checkpoint.VERSION + 1}.*upgrade tinygpt"):
        checkpoint.load(path)


def test_a_checkpoint_without_a_format_version_is_refused(tmp_path, tiny_gpt, tokenizer):
    path = changed_checkpoint(tmp_path / "unversioned.pt", tiny_gpt, tokenizer, lambda obj: obj.pop("version"))
    with pytest.raises(CheckpointError, match="unversioned.pt: checkpoint format version None"):
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


def test_weights_missing_a_layer_are_refused_naming_the_missing_parameters(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "misfit.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj["config"].update(n_layer=3))  # the file has 2 layers
    with pytest.raises(CheckpointError, match=r"misfit.pt: the weights do not fit the config: "
                                              r"missing blocks\.2\.\S+, blocks\.2\.\S+, blocks\.2\.\S+ and \d+ more"):
        checkpoint.load(path)


def test_an_unexpected_parameter_is_refused_by_name(tmp_path, tiny_gpt, tokenizer):
    path = changed_checkpoint(tmp_path / "extra.pt", tiny_gpt, tokenizer,
                              lambda obj: obj["model"].update({"adapter.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="extra.pt: the weights do not fit the config: unexpected adapter.weight"):
        checkpoint.load(path)


def test_a_parameter_of_the_wrong_shape_is_refused_naming_it_and_both_shapes(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "shape.pt"
    name, tensor = list(tiny_gpt.state_dict().items())[-1]
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj["model"].update({name: torch.zeros(3)}))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    assert f"{name} has shape (3,), the config needs {tuple(tensor.shape)}" in str(e.value)


def test_checkpoint_with_an_invalid_config_is_refused(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "badconfig.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    rewrite_checkpoint(path, lambda obj: obj["config"].update(n_head=3))  # 16 is not divisible by 3
    with pytest.raises(CheckpointError, match="badconfig.pt: invalid config"):
        checkpoint.load(path)


# ---------------------------------------------------------------- checkpoints from elsewhere in PyTorch


def _data_parallel(model):
    return torch.nn.DataParallel(model)  # on a CPU-only machine it just holds the model as .module


TORCH_COMPILE_IMPORT_WARNING = "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"  # torch's own

WRAPPERS = {
    "torch.compile": torch.compile,
    "DataParallel": _data_parallel,
    "DataParallel of torch.compile": lambda m: _data_parallel(torch.compile(m)),
}


@pytest.mark.filterwarnings(TORCH_COMPILE_IMPORT_WARNING)
@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_a_wrapped_model_is_saved_under_its_plain_parameter_names(tmp_path, tiny_gpt, tokenizer, wrap):
    path = tmp_path / "wrapped.pt"
    checkpoint.save(path, model=WRAPPERS[wrap](tiny_gpt), tokenizer=tokenizer)
    assert list(checkpoint.read(path)["model"]) == list(tiny_gpt.state_dict())
    model, _, _ = checkpoint.load(path)
    assert torch.equal(_logits(model), _logits(tiny_gpt))


@pytest.mark.filterwarnings(TORCH_COMPILE_IMPORT_WARNING)
@pytest.mark.parametrize("wrap", list(WRAPPERS))
def test_weights_saved_with_a_wrappers_prefixed_names_load(tmp_path, tiny_gpt, tokenizer, wrap):
    path = tmp_path / "prefixed.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    prefixed = WRAPPERS[wrap](tiny_gpt).state_dict()  # keys like '_orig_mod.…' or 'module._orig_mod.…'
    assert set(prefixed) != set(tiny_gpt.state_dict())
    rewrite_checkpoint(path, lambda obj: obj.update(model=prefixed))
    model, _, _ = checkpoint.load(path)
    assert torch.equal(_logits(model), _logits(tiny_gpt))


def test_a_whole_pickled_model_is_refused_saying_what_it_is_and_what_a_checkpoint_needs(tmp_path, tiny_gpt):
    path = tmp_path / "model.pt"
    torch.save(tiny_gpt, path)  # the whole object, not its state_dict
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(path)
    message = str(e.value)
    assert "model.pt: refused: it holds a whole pickled Python object (GLOBAL tinygpt.model.GPT" in message
    assert "tinygpt.checkpoint.save(" in message
    assert "add_safe_globals" not in message  # torch's advice would have it run code from the file


def test_a_safetensors_file_is_refused_saying_it_holds_tensors_only(tmp_path):
    header = json.dumps({"weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "model.safetensors"  # the format: header length (8 bytes, little-endian), JSON, data
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with pytest.raises(CheckpointError, match="model.safetensors: not a tinygpt checkpoint: a safetensors file"):
        checkpoint.load(path)


@pytest.mark.parametrize("part", ["model", "config", "tokenizer"])
def test_a_checkpoint_missing_a_part_is_refused_naming_it(tmp_path, tiny_gpt, tokenizer, part):
    path = changed_checkpoint(tmp_path / "part.pt", tiny_gpt, tokenizer, lambda obj: obj.pop(part))
    with pytest.raises(CheckpointError, match=f"part.pt: incomplete checkpoint: no '{part}'"):
        checkpoint.load(path)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_load_as_float32(tmp_path, tiny_gpt, tokenizer, dtype):
    path = changed_checkpoint(tmp_path / "half.pt", tiny_gpt, tokenizer,
                              lambda obj: obj.update(model={k: v.to(dtype) for k, v in obj["model"].items()}))
    model, _, _ = checkpoint.load(path)
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, tiny_gpt.state_dict()[name].to(dtype).float())


def saved_on_a_gpu(path):
    """Rewrite a checkpoint as a CUDA machine writes it: every tensor's storage tagged 'cuda:0'."""
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            z.writestr(info, data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a checkpoint from a GPU only fails to load without one")
def test_a_checkpoint_saved_on_a_gpu_loads_on_a_machine_without_one(saved, tiny_gpt):
    saved_on_a_gpu(saved)
    with pytest.raises(RuntimeError, match="CUDA"):  # the control: torch.load's own default fails
        torch.load(saved, weights_only=True)
    model, _, _ = checkpoint.load(saved)
    assert torch.equal(_logits(model), _logits(tiny_gpt))


# ---------------------------------------------------------------- broken weights


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_that_are_not_finite_are_refused_naming_the_file_and_the_tensor(tmp_path, tiny_gpt, tokenizer, value):
    path = tmp_path / "nan.pt"
    name = list(tiny_gpt.state_dict())[-1]
    with torch.no_grad():
        tiny_gpt.state_dict()[name].view(-1)[0] = value
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    with pytest.raises(CheckpointError, match=rf"nan.pt: the weights are not finite: {re.escape(name)} \(1 of "):
        checkpoint.load(path)


def test_integer_weights_are_refused_naming_the_tensor_not_loaded_rounded(tmp_path, tiny_gpt, tokenizer):
    path = tmp_path / "int.pt"
    checkpoint.save(path, model=tiny_gpt, tokenizer=tokenizer)
    obj = torch.load(path, weights_only=True)
    obj["model"]["lm_head.weight"] = (obj["model"]["lm_head.weight"] * 100).round().to(torch.int64)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=r"int.pt: the weights do not fit the config: lm_head.weight holds "
                                              r"int64 values, not floating-point weights"):
        checkpoint.load(path)


# ---------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_checkpoint_gets_the_mode_an_ordinary_write_gives(tmp_path, tiny_gpt, tokenizer, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "ordinary.txt").write_text("x")
        checkpoint.save(tmp_path / "ckpt.pt", model=tiny_gpt, tokenizer=tokenizer)
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "ckpt.pt").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "ordinary.txt").stat().st_mode)
