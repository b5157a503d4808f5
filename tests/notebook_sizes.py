"""The notebooks' sizes: full as a learner runs them, quick under the test suite.

A notebook that trains or measures at a size that matters has one code cell tagged `parameters`
(papermill's name for it) holding its sizes as plain assignments, full size, as the learner reads
and runs them. The quick sizes live in the notebook's metadata, out of the learner's view:

    "metadata": {"tinygpt": {"quick": "max_steps = 60\\neval_batches = 4"}}

Under the test suite, nbval reads each notebook through `with_quick_sizes`, which puts a cell holding
those assignments right after the `parameters` cell, so every later cell sees the quick sizes.
"""

from __future__ import annotations

import ast

import nbformat

TAG = "parameters"


def quick_sizes(nb) -> str:
    """The quick assignments in the notebook's metadata ('' when it has none)."""
    return nb.metadata.get("tinygpt", {}).get("quick", "")


def assigned_names(source: str) -> set[str]:
    """Names a cell's source assigns at its top level."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            for t in ast.walk(target) if target is not None else ():
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return names


def with_quick_sizes(nb):
    """The notebook with its quick sizes set right after its `parameters` cell (unchanged without one).

    Raises ValueError when the quick sizes name something the `parameters` cell does not assign (a
    renamed size would otherwise silently run at full size)."""
    quick = quick_sizes(nb)
    at = [i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])]
    if not quick and not at:
        return nb
    if len(at) != 1 or not quick:
        raise ValueError("a notebook needs both one cell tagged 'parameters' and metadata tinygpt.quick, or neither")
    unknown = assigned_names(quick) - assigned_names(nb.cells[at[0]].source)
    if unknown:
        raise ValueError(f"quick sizes {sorted(unknown)} are not assigned in the parameters cell")
    cell = nbformat.v4.new_code_cell(quick, metadata={"tags": ["nbval-ignore-output"]})
    nb.cells.insert(at[0] + 1, cell)
    return nb
