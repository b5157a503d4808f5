"""The shared validators (tinygpt.checks): what each accepts, and its one-line refusal."""

import math

import pytest

from tinygpt import checks


@pytest.mark.parametrize("value", [1, 7, 10**9])
def test_a_whole_number_at_or_above_the_minimum_is_accepted(value):
    assert checks.whole_number("n", value) == value


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
def test_a_bool_a_float_text_or_a_number_below_the_minimum_is_not_a_whole_number(value):
    with pytest.raises(ValueError, match=r"^n must be a whole number >= 1, got "):
        checks.whole_number("n", value)


def test_a_whole_number_above_the_maximum_is_refused_naming_the_range():
    with pytest.raises(ValueError, match=r"^n must be a whole number from 0 to 1,000, got 1001$"):
        checks.whole_number("n", 1001, min=0, max=1000)


def test_top_k_is_clamped_to_the_vocabulary_and_none_is_off():
    assert checks.top_k(100, 65) == 65 and checks.top_k(5, 65) == 5 and checks.top_k(None, 65) is None


@pytest.mark.parametrize("value", [1, 1.0, 0.5, 1e-9])
def test_top_p_in_zero_one_is_accepted_as_a_float(value):
    assert checks.top_p(value) == float(value) and isinstance(checks.top_p(value), float)


@pytest.mark.parametrize("value", [0, -0.5, 1.0001, math.nan, math.inf, True, "0.9", None])
def test_top_p_outside_zero_one_or_not_a_number_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match=r"^top_p must be a number in \(0, 1\] \(1 = off\), got .*$"):
        checks.top_p(value)


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, "hot", False])
def test_temperature_must_be_a_finite_number_at_least_zero(value):
    with pytest.raises(ValueError, match="^temperature must be a"):
        checks.temperature(value)


def test_the_sampling_defaults_are_hugging_faces_and_the_cli_and_playground_start_at_0_8():
    assert (checks.TEMPERATURE, checks.TOP_K, checks.TOP_P) == (1.0, None, 1.0)
    assert checks.SAMPLE_TEMPERATURE == 0.8
