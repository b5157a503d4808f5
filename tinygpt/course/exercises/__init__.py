"""Checked exercises: the learner's code run against the package's on fixed seeds, answered in words.

Each notebook's exercises live in a module here (`nb01` ... `nb06`), one small check function per
exercise, registered with `@exercise(notebook)`. A notebook calls a check right after the learner's
cell; the check answers in one line a learner can act on, never with a traceback:

    ✓ causal_mask: every future position masked (T = 8)
    ✗ causal_mask: position 0 may see position 1, which is in its future: mask where column > row
    · causal_mask: not attempted yet (fill in the `...`)

A scaffold still holding `...` (a function whose body is only `...`, or a value left as `...`) is "not
attempted yet", so a notebook runs top to bottom before the learner has written anything.
`status("02")` prints every exercise of notebook 02 and where the learner stands.
"""

from __future__ import annotations

import dis
import functools
import importlib
import inspect
import io
import math
import textwrap
import tokenize
from dataclasses import dataclass

_MARKS = {True: "✓", False: "✗", None: "·"}
_CHECKS: dict[str, dict[str, object]] = {}  # notebook -> exercise name -> its check
_RESULTS: dict[tuple[str, str], Result] = {}  # (notebook, exercise) -> the latest answer's result


@dataclass(frozen=True)
class Result:
    """One check's answer: `passed` is True, False, or None for "not attempted yet"."""

    notebook: str
    exercise: str
    passed: bool | None
    message: str

    def __repr__(self) -> str:
        return f"{_MARKS[self.passed]} {self.exercise}: {self.message}"

    def __bool__(self) -> bool:
        return bool(self.passed)


class Hint(Exception):
    """What is wrong with an answer, in words a learner can act on (raised inside a check)."""


class NotAttempted(Exception):
    """The scaffold is still as committed: its `...` not yet filled in."""


def answer(value):
    """`value`, or NotAttempted when it is still the scaffold's `...` (or None)."""
    if value is Ellipsis or value is None:
        raise NotAttempted
    return value


def number(guess, what: str = "your guess") -> float:
    """A predict exercise's guess as a float: an int, a float, a NumPy or one-element torch number, or a
    string such as "8" or "1_774_464"; NotAttempted for `...`, a Hint for anything else (True, "eight",
    a list, NaN, infinity)."""
    guess = answer(guess)
    if isinstance(guess, bool):
        raise Hint(f"write {what} as a number, got {guess!r}")
    try:
        value = float(guess.replace("_", "") if isinstance(guess, str) else guess)
    except (TypeError, ValueError, RuntimeError):
        raise Hint(f"write {what} as a number, got {guess!r}") from None
    if not math.isfinite(value):
        raise Hint(f"write {what} as a finite number, got {value}")
    return value


def _written(fn) -> bool:
    """Whether `fn`'s body (a module's `forward`) was written: it holds statements and no `...` left
    (looked for in its source when Python can find it, as in a notebook, else in its constants)."""
    fn = getattr(fn, "forward", fn)
    code = getattr(fn, "__code__", None)
    if code is None or Ellipsis in code.co_consts:
        return False
    try:
        tokens = tokenize.generate_tokens(io.StringIO(textwrap.dedent(inspect.getsource(fn))).readline)
        if any(t.type == tokenize.OP and t.string == "..." for t in tokens):
            return False
    except (OSError, TypeError, tokenize.TokenError, SyntaxError):
        pass
    return any(i.opname not in {"RESUME", "NOP", "LOAD_CONST", "RETURN_CONST", "RETURN_VALUE"}
               for i in dis.get_instructions(code))


def call(fn, *args, **kwargs):
    """The learner's function called on `args`: its return value, NotAttempted when it returns
    None or `...` (its body still `...`), a Hint when a body with no `...` left returns None (a
    forgotten `return`), and a Hint naming the error when it raises one."""
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted from None
    except Hint:
        raise
    except Exception as e:  # the learner's code failed: say how, in one line
        raise Hint(f"your code raised {type(e).__name__}: {e}") from None
    if out is None and _written(fn):
        name = getattr(fn, "__name__", "your function")
        raise Hint(f"{name} returned None: is its `return` missing? (print shows a value but does not return it)")
    return answer(out)


def exercise(notebook: str):
    """Register `check` as an exercise of `notebook` ("01" ... "06"), named after the function.

    The wrapped check returns a Result (shown as its one line in a notebook) and never raises:
    `Hint` becomes ✗ with its message, `NotAttempted` becomes "not attempted yet"."""

    def register(check):
        name = check.__name__

        @functools.wraps(check)
        def run(*args, **kwargs) -> Result:
            try:
                result = Result(notebook, name, True, check(*args, **kwargs))
            except NotAttempted:
                result = Result(notebook, name, None, "not attempted yet (fill in the `...`)")
            except Hint as hint:
                result = Result(notebook, name, False, str(hint))
            _RESULTS[(notebook, name)] = result
            return result

        _CHECKS.setdefault(notebook, {})[name] = run
        return run

    return register


def _two_digits(notebook) -> str:
    """1, "1" or "01" -> "01" (anything else as a string)."""
    return f"{int(notebook):02d}" if str(notebook).isdigit() else str(notebook)


def results(notebook: str) -> list[Result]:
    """Every exercise of `notebook` in the order it is taught, with the latest answer checked in this
    session (passed None and "not checked yet" for one never checked). `notebook` may be written 1,
    "1" or "01"; ValueError for a notebook without exercises."""
    notebook = _two_digits(notebook)
    try:
        importlib.import_module(f"{__name__}.nb{notebook}")
    except ModuleNotFoundError:
        raise ValueError(f"no exercises for notebook {notebook!r}: the course's are \"01\" to \"06\"") from None
    return [_RESULTS.get((notebook, name), Result(notebook, name, None, "not checked yet"))
            for name in _CHECKS.get(notebook, {})]


def status(notebook: str) -> None:
    """Print where the learner stands on `notebook`'s exercises: one line each, then a count."""
    rows, notebook = results(notebook), _two_digits(notebook)
    for r in rows:
        print(repr(r))
    print(f"{sum(r.passed is True for r in rows)} of {len(rows)} exercises of notebook {notebook} done")
