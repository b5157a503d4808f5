"""The package's shape: dependencies flow one way, and nothing in it reaches into the repository."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tinygpt"

# Each module may import only modules of its own layer or the layers before it (README, "Layout").
# The course subpackage (tinygpt/course/: plots, diagrams, widgets, Colab, the exercises) sits on top of
# all of them, and nothing in the library imports it.
LAYERS = [
    {"checks", "config", "files", "threads", "tokenizer", "bpe"},
    {"data"},
    {"model", "fast_decode"},
    {"schedule", "device", "state", "checkpoint", "distributed"},
    {"evaluate", "runs", "progress"},  # the trainer's rooms
    {"train", "sample"},
    {"zoo"},
    {"cli", "__main__", "__init__"},
    {"course"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
COURSE = PACKAGE / "course"
LIBRARY_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
ALL_FILES = sorted(PACKAGE.glob("*.py")) + sorted(COURSE.glob("*.py"))


def package_imports(path: Path) -> set[str]:
    """Names of the tinygpt modules that `path` imports (`from .x import ...`, `from . import x`), anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 2:  # from the course subpackage: ..x
            names.add(node.module.split(".")[0]) if node.module else names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tinygpt":
            parts = node.module.split(".")
            names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
    return names


def test_every_module_of_the_package_has_a_layer():
    assert set(LIBRARY_MODULES) | {"course"} == set(LAYER_OF)


@pytest.mark.parametrize("module", LIBRARY_MODULES)
def test_a_module_imports_nothing_from_a_later_layer(module):
    later = {name for name in package_imports(PACKAGE / f"{module}.py") if LAYER_OF[name] > LAYER_OF[module]}
    assert not later, f"tinygpt.{module} (layer {LAYER_OF[module]}) imports {sorted(later)} from a later layer"


def test_nothing_in_the_library_imports_the_course_subpackage():
    importers = [m for m in LIBRARY_MODULES if "course" in package_imports(PACKAGE / f"{m}.py")]
    assert not importers


def test_the_notebook_only_modules_live_in_the_course_subpackage():
    assert {"plots", "widgets", "colab", "diagrams"} <= {p.stem for p in COURSE.glob("*.py")}
    assert not {"plots", "widgets", "colab", "diagrams", "course"} & set(LIBRARY_MODULES)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_package_never_reaches_into_the_benchmarks_or_tests(path):
    tree = ast.parse(path.read_text())
    imported = {n.module.split(".")[0] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"benchmarks", "tests"}
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings may name a script
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]
    assert not [s for s in strings if "benchmarks/" in s or s.startswith("tests/")]


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_package_never_looks_for_its_own_checkout(path):
    """No module finds files by where it lives (`__file__`) or by a checkout's pyproject.toml."""
    tree = ast.parse(path.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "__file__"]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == "pyproject.toml"]


def test_the_dataset_folder_of_a_package_run_from_a_checkout_is_outside_it(tmp_path):
    """Run from inside a checkout that has data/tinyshakespeare.txt (as an earlier version left it),
    the package still keeps its dataset in the user's cache folder under HOME."""
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    shutil.copytree(PACKAGE, checkout / "tinygpt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE.parent / "pyproject.toml", checkout / "pyproject.toml")
    (checkout / "data").mkdir()
    (checkout / "data" / "tinyshakespeare.txt").write_text("First Citizen:\n")
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TINYGPT_DATA_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA")}
    env.update(HOME=str(home), USERPROFILE=str(home), PYTHONPATH=str(checkout))
    code = "import tinygpt.data as d; print(d.__file__); print(d.default_data_dir())"
    out = subprocess.run([sys.executable, "-c", code],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=120, check=True)
    module_file, data_dir = (Path(line) for line in out.stdout.splitlines())
    assert module_file.is_relative_to(checkout)  # the copy in the checkout was the one imported
    assert data_dir.is_relative_to(home) and not data_dir.is_relative_to(checkout)
