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
LAYERS = [
    {"tokenizer", "bpe", "course", "evaluate"},
    {"data"},
    {"model"},
    {"config", "schedule", "device", "state", "checkpoint", "distributed"},
    {"train", "sample"},
    {"plots", "widgets", "colab", "cli", "__main__", "__init__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def package_imports(path: Path) -> set[str]:
    """Names of the tinygpt modules that `path` imports (`from .x import ...`, `from . import x`), anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tinygpt":
            parts = node.module.split(".")
            names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
    return names


def test_every_module_of_the_package_has_a_layer():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_a_module_imports_nothing_from_a_later_layer(module):
    later = {name for name in package_imports(PACKAGE / f"{module}.py") if LAYER_OF[name] > LAYER_OF[module]}
    assert not later, f"tinygpt.{module} (layer {LAYER_OF[module]}) imports {sorted(later)} from a later layer"


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_the_package_never_reaches_into_the_benchmarks_or_tests(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {"benchmarks", "tests"}
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # docstrings may name a script
    strings = [n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]
    assert not [s for s in strings if "benchmarks/" in s or s.startswith("tests/")]


@pytest.mark.parametrize("module", sorted(p.stem for p in PACKAGE.glob("*.py")))
def test_the_package_never_looks_for_its_own_checkout(module):
    """No module finds files by where it lives (`__file__`) or by a checkout's pyproject.toml."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
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
    out = subprocess.run([sys.executable, "-c", "import tinygpt.data as d; print(d.__file__); print(d.default_data_dir())"],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=120, check=True)
    module_file, data_dir = (Path(line) for line in out.stdout.splitlines())
    assert module_file.is_relative_to(checkout)  # the copy in the checkout was the one imported
    assert data_dir.is_relative_to(home) and not data_dir.is_relative_to(checkout)
