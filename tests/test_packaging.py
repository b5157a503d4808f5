"""The install story: pyproject and environment.yml agree, the notebooks' Colab setup is right."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the dev extra installs tomli
    import tomli as tomllib

import pytest
import yaml

from tinygpt.data import FILENAME, default_data_dir

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name
CONDA_ONLY = {"python", "pip"}


def split_requirement(line: str) -> tuple[str, str]:
    """'ipywidgets >= 7.7' -> ('ipywidgets', '>=7.7') (an environment marker after ';' is dropped)"""
    name, spec = re.match(r"\s*([A-Za-z0-9_.-]+)\s*([^;]*)", line).groups()
    return name.lower(), spec.replace(" ", "")


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def repo_url() -> str:
    return pyproject()["project"]["urls"]["Repository"]


SETUP_CELL = """\
# Setup: on Colab, install tinygpt from its repository and fetch the data. Locally this does nothing.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess
    REPO = os.environ.get("TINYGPT_REPO", "git+{url}")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", REPO], capture_output=True, text=True,
                         env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})  # fail, never wait for a password
    if pip.returncode != 0:
        lines = [line.strip() for line in pip.stderr.splitlines()] + [f"pip exit status {{pip.returncode}}"]
        why = next(line for line in lines if line.startswith(("fatal:", "ERROR:", "pip exit status")))
        raise RuntimeError(f"could not install tinygpt from {{REPO}}: {{why}}") from None
    from tinygpt.data import Corpus
    Corpus.shakespeare()"""

def expected_setup_cell() -> str:
    return SETUP_CELL.format(url=repo_url())


def first_code_cell(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def test_environment_yml_installs_the_same_packages_as_pyproject():
    project = pyproject()["project"]
    pip_reqs = {}
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        if ";" in line:  # only for some Pythons (tomli before 3.11): the pip line installs it where needed
            continue
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
    assert not [e for e in errors if "raises-exception" not in
                next(c for c in code if e in c.get("outputs", [])).get("metadata", {}).get("tags", [])], \
        "error outputs committed"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_at_least_five_checked_cells(nb_path):
    nb = json.loads(nb_path.read_text())
    checked = [c for c in nb["cells"] if c["cell_type"] == "code"
               and "nbval-check-output" in c.get("metadata", {}).get("tags", [])]
    assert len(checked) >= 5


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_test_harness_stays_out_of_the_learners_view(nb_path):
    """nbval's markers are cell tags, never comments in the code a learner reads."""
    nb = json.loads(nb_path.read_text())
    assert not [c for c in nb["cells"] if "NBVAL_" in "".join(c["source"])]


@pytest.mark.slow
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
    shutil.copy(default_data_dir() / FILENAME, data / FILENAME)  # the copy the tests read (root conftest.py)
    runner = tmp_path / "run_setup.py"
    runner.write_text("import google.colab\n" + expected_setup_cell() + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(fake), "HOME": str(Path.home()),
           "TINYGPT_REPO": f"git+file://{clone}", "TINYGPT_DATA_DIR": str(data)}
    subprocess.run([str(py), str(runner)], check=True, env=env, cwd=tmp_path, timeout=900)
    out = subprocess.run([str(py), "-c", "import tinygpt, tinygpt.model; print(tinygpt.__file__)"],
                         check=True, env={**env, "PYTHONPATH": ""}, cwd=tmp_path, capture_output=True, text=True)
    assert str(venv) in out.stdout


@pytest.mark.slow
def test_colab_setup_cell_says_in_one_line_when_the_repository_cannot_be_reached(tmp_path):
    """pip's own output is hidden; what the learner sees is one line naming the address and why."""
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    runner = tmp_path / "run_setup.py"
    runner.write_text("import google.colab\n" + expected_setup_cell() + "\n")
    missing = f"git+file://{tmp_path / 'no-such-repository'}"
    env = {**os.environ, "PYTHONPATH": str(fake), "TINYGPT_REPO": missing}
    out = subprocess.run([sys.executable, str(runner)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"RuntimeError: could not install tinygpt from {missing}: fatal:"), out.stderr
    assert "subprocess-exited-with-error" not in out.stderr  # none of pip's noise


def test_uv_takes_pytorchs_cpu_build_on_linux_only_from_an_explicit_index():
    uv = pyproject()["tool"]["uv"]
    (index,) = uv["index"]
    assert index == {"name": "pytorch-cpu", "url": "https://download.pytorch.org/whl/cpu", "explicit": True}
    assert uv["sources"] == {"torch": [{"index": "pytorch-cpu", "marker": "sys_platform == 'linux'"}]}


def test_uv_sync_installs_the_dev_extra_by_default():
    name = pyproject()["project"]["name"]
    assert pyproject()["dependency-groups"]["dev"] == [f"{name}[dev]"]


def test_readme_pip_commands_install_cpu_torch_from_the_index_uv_uses():
    readme = (ROOT / "README.md").read_text()
    cpu_index = pyproject()["tool"]["uv"]["index"][0]["url"]
    quick_start = readme[readme.index("## Quick start"):readme.index("## The command line")]
    linux_cpu = next(line for line in quick_start.splitlines() if "pip install" in line and "--index-url" in line)
    assert f"--index-url {cpu_index}" in linux_cpu and "torch" in linux_cpu
    assert linux_cpu.index("--index-url") < linux_cpu.index('-e ".[dev]"')  # CPU torch first, then the project
    assert "uv sync" in quick_start and "uv run jupyter lab" in quick_start


def test_readme_says_how_to_start_jupyter_as_root_where_the_command_is_given():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme[readme.index("## Quick start"):readme.index("## The command line")]
    assert "--allow-root" in quick_start


def test_readme_torch_lower_bound_matches_pyproject():
    spec = dict(split_requirement(r) for r in pyproject()["project"]["dependencies"])["torch"]
    assert f"PyTorch {spec.removeprefix('>=')}" in (ROOT / "README.md").read_text()


def test_package_source_parses_as_the_oldest_python_it_declares():
    """ast with feature_version rejects syntax newer than the declared minimum (e.g. except*)."""
    import ast

    oldest = tuple(int(x) for x in pyproject()["project"]["requires-python"].removeprefix(">=").split("."))
    for path in sorted((ROOT / "tinygpt").glob("*.py")) + sorted((ROOT / "tests").glob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=oldest)
