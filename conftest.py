"""Test-suite settings shared by the unit tests and the notebooks run by nbval.

TINYGPT_QUICK=1 makes every notebook do a small, fast version of its work. The kernels nbval
starts inherit this process's environment, so setting it here reaches them.
"""

import os
from pathlib import Path

os.environ["TINYGPT_QUICK"] = "1"
# PyTorch's OpenMP threads spin while they wait; when the browser, a notebook kernel and a training
# subprocess share two cores, spinning threads steal each other's time (10x slowdowns seen here).
# Set before torch is imported, and inherited by every kernel and subprocess the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TINYGPT_DEVICE", "cpu")
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
if not (Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt").exists() and (_shared / "tinyshakespeare.txt").exists():
    os.environ.setdefault("TINYGPT_DATA_DIR", str(_shared))
