"""The package's shape: dependencies flow one way, and nothing in it reaches into the repository."""

import ast
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
