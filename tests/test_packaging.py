"""The install story: pyproject and environment.yml agree, the notebooks' Colab setup is right."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip"}


def split_requirement(line: str) -> tuple[str, str]:
    """'ipywidgets >= 7.7' -> ('ipywidgets', '>=7.7')"""
    name, spec = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", line).groups()
    return name.lower(), spec.replace(" ", "")


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def repo_url() -> str:
    return pyproject()["project"]["urls"]["Repository"]


def expected_setup_cell() -> str:
    return (
        "# Setup: on Colab, install tinygpt from its repository and fetch the data. Locally this does nothing.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    import os, subprocess\n"
        f'    REPO = os.environ.get("TINYGPT_REPO", "git+{repo_url()}")\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", REPO], check=True)\n'
        "    from tinygpt.data import load_shakespeare\n"
        "    load_shakespeare()"
    )


def first_code_cell(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def test_environment_yml_installs_the_same_packages_as_pyproject():
    project = pyproject()["project"]
    pip_reqs = {}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name, spec = split_requirement(line)
        pip_reqs[name] = spec
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda_reqs, pip_section = {}, None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section = dep["pip"]
            continue
        name, spec = split_requirement(dep)
        if name not in CONDA_ONLY:
            conda_reqs[CONDA_NAMES.get(name, name)] = spec
    assert conda_reqs == pip_reqs
    assert pip_section == ["-e .[dev]"]


def test_environment_yml_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert f"python{pyproject()['project']['requires-python']}" in env["dependencies"]


def test_torch_requirement_is_a_loose_lower_bound():
    specs = dict(split_requirement(r) for r in pyproject()["project"]["dependencies"])
    assert specs["torch"].startswith(">=") and "," not in specs["torch"]


def test_there_are_five_numbered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS][:5] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_setup_cell_installs_from_the_projects_repository(nb_path):
    assert first_code_cell(nb_path).strip() == expected_setup_cell()


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_colab_badge_points_at_this_notebook_in_the_repository(nb_path):
    owner_repo = repo_url().removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{nb_path.name}"
    nb = json.loads(nb_path.read_text())
    first_markdown = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
    assert "https://colab.research.google.com/assets/colab-badge.svg" in first_markdown
    assert link in first_markdown


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_outputs_of_a_full_run(nb_path):
    nb = json.loads(nb_path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code if c.get("outputs")), "outputs without execution count"
    assert sum(bool(c.get("outputs")) for c in code) >= len(code) // 2, "most code cells have no output"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not [e for e in errors if "NBVAL_RAISES_EXCEPTION" not in "".join(
        next(c for c in code if e in c.get("outputs", []))["source"])], "error outputs committed"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_at_least_five_checked_cells(nb_path):
    nb = json.loads(nb_path.read_text())
    checked = [c for c in nb["cells"] if c["cell_type"] == "code"
               and "".join(c["source"]).lstrip().startswith("# NBVAL_CHECK_OUTPUT")]
    assert len(checked) >= 5


def test_colab_setup_cell_installs_tinygpt_from_a_clone_into_a_fresh_environment(tmp_path):
    """Run the setup cell's Colab branch for real: google.colab faked, the repository URL pointed
    at a local clone, a fresh virtual environment that (like Colab) already has torch."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)  # Colab ships torch
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(ROOT / "data" / "tinyshakespeare.txt" if (ROOT / "data" / "tinyshakespeare.txt").exists()
                else ROOT.parent / "shared" / "data" / "tinyshakespeare.txt", data / "tinyshakespeare.txt")
    runner = tmp_path / "run_setup.py"
    runner.write_text("import google.colab\n" + first_code_cell(NOTEBOOKS[0]) + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(fake), "HOME": str(Path.home()),
           "TINYGPT_REPO": f"git+file://{clone}", "TINYGPT_DATA_DIR": str(data)}
    subprocess.run([str(py), str(runner)], check=True, env=env, cwd=tmp_path, timeout=900)
    out = subprocess.run([str(py), "-c", "import tinygpt, tinygpt.model; print(tinygpt.__file__)"],
                         check=True, env={**env, "PYTHONPATH": ""}, cwd=tmp_path, capture_output=True, text=True)
    assert str(venv) in out.stdout
