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


def _is_stub(fn) -> bool:
    """Whether `fn`'s body does nothing but return None (a docstring and `...`, or `pass`): the
    scaffold as committed. A callable without Python code of its own counts as one."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    ops = [(i.opname, i.argval) for i in dis.get_instructions(code) if i.opname not in ("RESUME", "NOP", "CACHE")]
    return ops in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])


def call(fn, *args, **kwargs):
    """The learner's function called on `args`: its return value, NotAttempted when it returns
    None or `...` with its body still the scaffold's `...`, a Hint when a body the learner wrote
    returns None (a missing `return`), and a Hint naming the error when it raises one."""
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted from None
    except Exception as e:  # the learner's code failed: say how, in one line
        raise Hint(f"your code raised {type(e).__name__}: {e}") from None
    if out is None and not _is_stub(fn):
        name = getattr(fn, "__name__", "your function")
        raise Hint(f"{name} returned None: end it with `return` and the result (print shows a value "
                   "but does not return it)")
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


def results(notebook: str) -> list[Result]:
    """Every exercise of `notebook` in the order it is taught, with the latest answer checked in this
    session (passed None and "not checked yet" for one never checked)."""
    importlib.import_module(f"{__name__}.nb{notebook}")
    return [_RESULTS.get((notebook, name), Result(notebook, name, None, "not checked yet"))
            for name in _CHECKS.get(notebook, {})]


def status(notebook: str) -> None:
    """Print where the learner stands on `notebook`'s exercises: one line each, then a count."""
    rows = results(notebook)
    for r in rows:
        print(repr(r))
    print(f"{sum(r.passed is True for r in rows)} of {len(rows)} exercises of notebook {notebook} done")
