"""Test-suite settings shared by the unit tests and the notebooks run by nbval (and the notebooks' `slow` mark).

nbval reads every notebook with its quick sizes in force (tests/notebook_sizes.py), so each one
does a small, fast version of its work. The kernels nbval starts inherit this process's environment.
"""

import os
import sys
from pathlib import Path

import nbformat
import nbval.plugin
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from notebook_sizes import with_quick_sizes  # noqa: E402


class _NotebooksAtQuickSize:
    """nbformat as nbval uses it, except that a notebook read is given its quick sizes."""

    def __getattr__(self, name):
        return getattr(nbformat, name)

    def read(self, *args, **kwargs):
        return with_quick_sizes(nbformat.read(*args, **kwargs))


nbval.plugin.nbformat = _NotebooksAtQuickSize()
# No thread settings here: the tests run with the package's own thread policy (tinygpt/threads.py).
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TINYGPT_DEVICE", "cpu")

# The tests read Tiny Shakespeare where the package looks for it (TINYGPT_DATA_DIR, else this user's
# cache folder). A machine that has no copy there but one in ../shared/data beside the checkout
# (the project's development machines) is pointed at that copy rather than the internet.
from tinygpt.data import FILENAME, default_data_dir  # noqa: E402 (after the settings torch reads)

_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if not os.environ.get("TINYGPT_DATA_DIR") and not (default_data_dir() / FILENAME).exists() \
        and (_shared / FILENAME).exists():
    os.environ["TINYGPT_DATA_DIR"] = str(_shared)


def pytest_collection_modifyitems(config, items):
    """Every notebook cell nbval collects is `slow` (each notebook starts a kernel and trains a model):
    `-m "not slow"` leaves whole notebooks out, never some of their cells."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
