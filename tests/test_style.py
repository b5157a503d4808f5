"""House style: `ruff check` (its rules in pyproject.toml's [tool.ruff]) finds nothing in the repository:
the package, the tests, the benchmarks and the notebooks."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_to_report_in_the_repository():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: it is in the dev extra (pip install -e '.[dev]')")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"ruff check found problems (`ruff check --fix .` mends the [*] ones):\n{done.stdout}{done.stderr}",
                    pytrace=False)
