"""Test-suite settings shared by the unit tests and the notebooks run by nbval.

TINYGPT_QUICK=1 makes every notebook do a small, fast version of its work. The kernels nbval
starts inherit this process's environment, so setting it here reaches them.
"""

import os
from pathlib import Path

os.environ["TINYGPT_QUICK"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TINYGPT_DEVICE", "cpu")
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if not (Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt").exists() and (_shared / "tinyshakespeare.txt").exists():
    os.environ.setdefault("TINYGPT_DATA_DIR", str(_shared))
