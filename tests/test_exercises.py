"""The exercises' machinery: a check answers in one line, never raises, and knows an untouched scaffold.
Each notebook's own checks and their typical wrong answers: tests/test_exercises_nbNN.py."""

import pytest

from tinygpt.course import exercises
from tinygpt.course.exercises import Hint, answer, call, exercise


@exercise("99")
def double(fn):
    out = call(fn, 2)
    if out != 4:
        raise Hint(f"double(2) gave {out}, expected 4")
    return "double(2) = 4"


@exercise("99")
def guess_of_four(guess):
    return f"you guessed {answer(guess)}; it is 4"


def scaffold(x):
    ...


def test_a_right_answer_passes_with_its_message():
    result = double(lambda x: 2 * x)
    assert result.passed is True and repr(result) == "✓ double: double(2) = 4"


def test_a_wrong_answer_fails_with_the_checks_hint():
    result = double(lambda x: x + 1)
    assert result.passed is False and repr(result) == "✗ double: double(2) gave 3, expected 4"


def test_a_scaffold_whose_body_is_still_ellipsis_is_not_attempted():
    result = double(scaffold)
    assert result.passed is None and "not attempted yet" in repr(result)


def test_a_value_left_as_ellipsis_is_not_attempted():
    assert guess_of_four(...).passed is None


def test_a_written_body_that_returns_none_is_a_forgotten_return_not_unattempted():
    def forgot(x):
        y = 2 * x  # noqa: F841 (the learner's missing return)

    result = double(forgot)
    assert result.passed is False and result.message.startswith("forgot returned None: is its `return` missing?")


def test_a_scaffold_with_statements_and_an_ellipsis_left_is_still_not_attempted():
    def half_done(x):
        y = 2 * x  # noqa: F841
        ...

    assert double(half_done).passed is None


def test_an_error_in_the_learners_code_is_one_line_naming_it_not_a_traceback():
    result = double(lambda x: x / 0)
    assert result.passed is False and result.message == "your code raised ZeroDivisionError: division by zero"


def test_status_lists_every_exercise_of_a_notebook_with_where_the_learner_stands(capsys, monkeypatch):
    monkeypatch.setattr(exercises.importlib, "import_module", lambda name: None)  # notebook 99 has no module
    double(lambda x: 2 * x)
    guess_of_four(...)
    exercises.status("99")
    out = capsys.readouterr().out.splitlines()
    assert out == ["✓ double: double(2) = 4", "· guess_of_four: not attempted yet (fill in the `...`)",
                   "1 of 2 exercises of notebook 99 done"]


@pytest.mark.parametrize("notebook", ["01", "02", "03", "04", "05", "06"])
def test_every_notebook_has_three_or_four_exercises(notebook):
    assert 3 <= len(exercises.results(notebook)) <= 4


def test_a_function_the_learner_wrote_that_returns_none_is_told_to_return_not_left_unattempted():
    def printed(x):
        print(2 * x)

    result = double(printed)
    assert result.passed is False and "printed returned None" in result.message and "return" in result.message


def test_a_scaffold_with_pass_is_still_not_attempted():
    def with_pass(x):
        """A docstring, then pass."""
        pass

    assert double(with_pass).passed is None


def test_status_takes_the_notebook_as_1_or_01(capsys):
    exercises.status(1)
    assert capsys.readouterr().out.splitlines()[-1].endswith("exercises of notebook 01 done")


def test_a_notebook_without_exercises_is_one_clear_error():
    with pytest.raises(ValueError, match='no exercises for notebook \'07\''):
        exercises.results("7")
