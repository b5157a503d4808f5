"""TrainState: one versioned, validated type for what a checkpoint holds to resume."""

import math

import pytest
import torch

from tinygpt.schedule import Schedule
from tinygpt.state import STATE_VERSION, StateError, TrainState


def a_state(**changes) -> TrainState:
    kw = dict(step=7, history=[{"step": 0, "time": 0.1, "lr": 1e-3, "train_loss": 4.0, "val_loss": 4.1}],
              best_val=4.1, evals_since_best=0, schedule=Schedule(1e-3, 1e-4, 2, 100, ((50, 5e-4, 80),)),
              fits_done=1, elapsed=3.5, seed=1, precision="fp16", device="cpu",
              optimizer={"state": {}, "param_groups": []}, scaler={"scale": 1024.0},
              rng={"torch": torch.get_rng_state(), "data": torch.Generator().get_state()})
    kw.update(changes)
    return TrainState(**kw)


def test_state_round_trips_through_a_dict_with_its_version():
    st = a_state()
    d = st.to_dict()
    assert d["state_version"] == STATE_VERSION and isinstance(d["schedule"], dict)
    back = TrainState.from_dict(d)
    assert back.schedule == st.schedule and back.step == 7 and back.scaler == {"scale": 1024.0}
    assert torch.equal(back.rng["torch"], st.rng["torch"])


def test_a_dict_without_training_state_is_refused():
    with pytest.raises(StateError, match="holds no training state"):
        TrainState.from_dict({"step": 3, "history": []})


def test_another_state_version_is_refused():
    with pytest.raises(StateError, match="version 99"):
        TrainState.from_dict({**a_state().to_dict(), "state_version": 99})


@pytest.mark.parametrize("name", ["step", "rng", "schedule", "evals_since_best"])
def test_a_missing_field_is_named(name):
    d = a_state().to_dict()
    del d[name]
    with pytest.raises(StateError, match=f"lacks '{name}'"):
        TrainState.from_dict(d)


@pytest.mark.parametrize("name, value", [("step", "7"), ("step", True), ("scaler", [1]), ("history", {})])
def test_a_field_of_the_wrong_kind_is_named(name, value):
    with pytest.raises(StateError, match=f"'{name}'"):
        TrainState.from_dict({**a_state().to_dict(), name: value})


def test_a_non_finite_best_val_is_refused_but_inf_before_any_evaluation_is_not():
    with pytest.raises(StateError, match="best_val is nan"):
        TrainState.from_dict({**a_state().to_dict(), "best_val": math.nan})
    assert TrainState.from_dict({**a_state().to_dict(), "best_val": math.inf}).best_val == math.inf
