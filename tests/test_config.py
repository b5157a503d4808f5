"""TrainConfig, the presets, and `key=value` overrides."""

import pytest

from tinygpt.config import PRESETS, TrainConfig, apply_overrides, get_config, with_length


def test_unknown_preset_raises_value_error_listing_the_presets():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*smoke"):
        get_config("huge")


def test_get_config_returns_a_copy_not_the_preset_itself():
    cfg = get_config("smoke")
    cfg.max_steps = 1
    cfg.model.n_layer = 7
    assert PRESETS["smoke"].max_steps == 250 and PRESETS["smoke"].model.n_layer == 2


def test_train_config_round_trips_through_a_dict():
    cfg = TrainConfig(time_budget=10.0, patience=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_train_config_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match="unknown TrainConfig fields: \\['lr_max'\\]"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "lr_max": 1.0})


@pytest.mark.parametrize("overrides", [dict(lr=0.0), dict(min_lr=1.0, lr=0.1), dict(batch_size=0),
                                       dict(time_budget=0), dict(patience=0), dict(warmup_steps=-1),
                                       dict(beta2=1.0), dict(grad_clip=-1.0), dict(max_steps=True)])
def test_invalid_train_config_raises_value_error(overrides):
    with pytest.raises(ValueError):
        TrainConfig(**overrides)


def test_workshop_preset_follows_the_write_up():
    cfg = PRESETS["workshop"]
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (6, 6, 384, 256, 0.0)
    assert (cfg.lr, cfg.warmup_steps, cfg.max_steps) == (3e-4, 100, 5000)


def test_overrides_are_parsed_as_the_field_types():
    cfg = apply_overrides(get_config("smoke"), ["lr=1e-3", "max_steps=40", "model.n_layer=3",
                                                "fit_schedule=false", "time_budget=12.5", "patience=none"])
    assert cfg.lr == 1e-3 and cfg.max_steps == 40 and cfg.model.n_layer == 3
    assert cfg.fit_schedule is False and cfg.time_budget == 12.5 and cfg.patience is None


def test_overrides_accept_a_dict_of_values():
    assert apply_overrides(get_config("smoke"), {"model.dropout": 0.1}).model.dropout == 0.1


def test_overrides_leave_the_given_config_unchanged():
    cfg = get_config("smoke")
    apply_overrides(cfg, ["lr=1e-3", "model.n_layer=3"])
    assert cfg == PRESETS["smoke"]


def test_an_unknown_override_key_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown setting 'model.n_layers'; known: .*model.n_layer"):
        apply_overrides(get_config("smoke"), ["model.n_layers=8"])


@pytest.mark.parametrize("item, message", [("lr", "expected KEY=VALUE"),
                                           ("lr=fast", "lr='fast': expected a finite number"),
                                           ("max_steps=2.5", "expected a whole number"), ("lr=nan", "finite"),
                                           ("fit_schedule=maybe", "true or false"), ("model=3", "unknown setting")])
def test_malformed_overrides_raise_value_error_naming_the_item(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_config("smoke"), [item])


def test_an_override_the_config_refuses_raises_value_error():
    with pytest.raises(ValueError, match="invalid setting: n_embd .* divisible"):
        apply_overrides(get_config("smoke"), ["model.n_head=5"])


def test_model_vocab_size_cannot_be_overridden_as_the_text_sets_it():
    with pytest.raises(ValueError, match="model.vocab_size cannot be set"):
        apply_overrides(get_config("smoke"), ["model.vocab_size=100"])


def test_with_length_max_steps_replaces_the_time_budget_unless_one_is_given_too():
    laptop = get_config("laptop")
    assert (with_length(laptop, max_steps=4).max_steps, with_length(laptop, max_steps=4).time_budget) == (4, None)
    both = with_length(laptop, max_steps=4, time_budget=9.0)
    assert (both.max_steps, both.time_budget) == (4, 9.0)
    assert with_length(laptop, time_budget=9.0).max_steps == laptop.max_steps
    assert with_length(laptop) == laptop and laptop.time_budget == 600  # a copy; the given config unchanged


@pytest.mark.parametrize("max_steps", [0, -5, True, 2.5])
def test_with_length_refuses_a_max_steps_that_is_not_a_positive_whole_number(max_steps):
    with pytest.raises(ValueError, match="max_steps"):
        with_length(get_config("smoke"), max_steps=max_steps)
