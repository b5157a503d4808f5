"""How large the course notebooks run: full size for a learner, quick for the test suite.

The test suite (the repository's conftest.py) sets the environment variable TINYGPT_QUICK=1
before it runs the notebooks, so that each one finishes in seconds to a minute: fewer batches,
fewer training steps, a smaller preset. A learner never sets it and gets the full run. The
notebooks ask for every size through `size(full, quick=...)`, so the switch sits in one place
instead of in `if` branches between the lessons.

The variable is read once, when this module is first imported; a value other than "1" means
full size.
"""

from __future__ import annotations

import os

QUICK: bool = os.environ.get("TINYGPT_QUICK") == "1"


def size(full, quick):
    """`quick` when TINYGPT_QUICK=1 was set at import time (the test suite), else `full`.

    Any values work (numbers, strings, paths, configs); nothing is copied or checked.
    """
    return quick if QUICK else full
