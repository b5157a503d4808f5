"""tinygpt.course: one switch between the full notebooks and the test suite's quick ones."""

import os
import subprocess
import sys

from tinygpt import course


def run_size_in_fresh_python(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TINYGPT_QUICK"}
    if env_value is not None:
        env["TINYGPT_QUICK"] = env_value
    code = "from tinygpt.course import size; print(size('full', quick='quick'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_test_suite_gets_the_quick_value():
    assert course.QUICK is True  # the root conftest.py sets TINYGPT_QUICK=1
    assert course.size(200, quick=40) == 40


def test_a_learner_gets_the_full_value():
    assert run_size_in_fresh_python(None) == "full"


def test_only_the_value_1_means_quick():
    assert run_size_in_fresh_python("1") == "quick"
    assert run_size_in_fresh_python("0") == "full"
    assert run_size_in_fresh_python("yes") == "full"
