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
import sys
if "google.colab" in sys.modules:  # on Colab: install tinygpt (elsewhere this cell does nothing)
    %pip install -q git+{url}"""

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


def colab_setup_as_python(url: str) -> str:
    """The setup cell as IPython runs it (its %pip line made a call), the repository URL swapped for `url`,
    and IPython's %pip itself: `python -m pip LINE` in the kernel's own Python (IPython.core.magics.packaging)."""
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(expected_setup_cell()).replace(f"git+{repo_url()}", url)
    assert "run_line_magic('pip', 'install -q " in code
    shim = ("import shlex, subprocess\n"
            "class _Shell:\n"
            "    def run_line_magic(self, name, line):\n"
            "        assert name == 'pip'\n"
            "        subprocess.run([sys.executable, '-m', 'pip', *shlex.split(line)])\n"
            "def get_ipython():\n"
            "    return _Shell()\n")
    return "import sys\nimport google.colab\n" + shim + code + "\n"


def fake_colab_module(tmp_path: Path) -> Path:
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    return fake


def test_colab_setup_cell_does_nothing_away_from_colab():
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(expected_setup_cell())
    calls = []
    exec(code, {"get_ipython": lambda: calls.append("called")})
    assert calls == [] and "google.colab" not in sys.modules


@pytest.mark.slow
def test_colab_setup_cell_installs_tinygpt_from_a_clone_into_a_fresh_environment(tmp_path):
    """Run the setup cell's Colab branch for real: google.colab faked, the repository URL pointed
    at a local clone, a fresh virtual environment that (like Colab) already has torch; the data
    comes with the first notebook's first load."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)  # Colab ships torch
    runner = tmp_path / "run_setup.py"
    runner.write_text(colab_setup_as_python(f"git+file://{clone}"))
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(fake_colab_module(tmp_path)),
           "HOME": str(Path.home())}
    subprocess.run([str(py), str(runner)], check=True, env=env, cwd=tmp_path, timeout=900)
    out = subprocess.run([str(py), "-c", "import tinygpt, tinygpt.model; print(tinygpt.__file__)"],
                         check=True, env={**env, "PYTHONPATH": ""}, cwd=tmp_path, capture_output=True, text=True)
    assert str(venv) in out.stdout


@pytest.mark.slow
def test_colab_setup_cell_shows_gits_reason_when_the_repository_cannot_be_reached(tmp_path):
    """pip -q prints only the failure, and git's own line saying why is in it."""
    runner = tmp_path / "run_setup.py"
    missing = tmp_path / "no-such-repository"
    runner.write_text(colab_setup_as_python(f"git+file://{missing}"))
    env = {**os.environ, "PYTHONPATH": str(fake_colab_module(tmp_path))}
    out = subprocess.run([sys.executable, str(runner)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert f"fatal: '{missing}' does not appear to be a git repository" in out.stdout + out.stderr


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


# ------------------------------------------------------------ sizes: full for the learner, quick for the tests
from notebook_sizes import assigned_names, quick_sizes, with_quick_sizes  # noqa: E402

COURSE_NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
HARNESS_WORDS = re.compile(r"TINYGPT_QUICK|(?<![.\w])size\(|\bquick (mode|size|run|version)|nbval", re.IGNORECASE)


@pytest.mark.parametrize("nb_path", [p for p in COURSE_NOTEBOOKS if "runs" not in p.parts], ids=lambda p: p.name)
def test_the_notebook_never_mentions_the_test_sizes(nb_path):
    nb = json.loads(nb_path.read_text())
    assert not [c for c in nb["cells"] if HARNESS_WORDS.search("".join(c["source"]))]


@pytest.mark.parametrize("nb_path", [p for p in COURSE_NOTEBOOKS if "runs" not in p.parts], ids=lambda p: p.name)
def test_the_notebooks_quick_sizes_set_only_what_its_parameters_cell_sets(nb_path):
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    n = len(nb.cells)
    with_quick_sizes(nb)  # raises when the two disagree
    assert len(nb.cells) == n + bool(quick_sizes(nb))


def test_the_quick_sizes_come_right_after_the_parameters_cell():
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"tinygpt": {"quick": "max_steps = 6"}})
    nb.cells = [nbformat.v4.new_code_cell("import math"),
                nbformat.v4.new_code_cell("max_steps = 2000\nbatch = 64", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(max_steps)")]
    sources = [c.source for c in with_quick_sizes(nb).cells]
    assert sources == ["import math", "max_steps = 2000\nbatch = 64", "max_steps = 6", "print(max_steps)"]


def test_a_quick_size_the_parameters_cell_does_not_set_is_refused():
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"tinygpt": {"quick": "max_step = 6"}})
    nb.cells = [nbformat.v4.new_code_cell("max_steps = 2000", metadata={"tags": ["parameters"]})]
    with pytest.raises(ValueError, match="max_step"):
        with_quick_sizes(nb)


def test_assigned_names_reads_plain_tuple_and_annotated_assignments():
    assert assigned_names("a = 1\nb, c = 2, 3\nd: int = 4\nprint(a)") == {"a", "b", "c", "d"}


# ------------------------------------------------------------ the prose a learner reads
def markdown_words(nb_path: Path) -> int:
    nb = json.loads(nb_path.read_text())
    return sum(len(re.findall(r"\S+", "".join(c["source"]))) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_is_read_in_a_sitting(nb_path):
    """At most about 2,500 words of markdown (notebook 06: 3,000), exercises included."""
    assert markdown_words(nb_path) <= (3000 if nb_path.name.startswith("06") else 2500)


def test_the_course_is_under_14000_words():
    assert sum(markdown_words(p) for p in NOTEBOOKS) < 14000


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_paragraph_runs_past_about_120_words(nb_path):
    nb = json.loads(nb_path.read_text())
    paragraphs = [p for c in nb["cells"] if c["cell_type"] == "markdown" for p in "".join(c["source"]).split("\n\n")]
    assert max(len(p.split()) for p in paragraphs) <= 130


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_draws_its_place_on_the_roadmap_and_a_diagram_of_its_idea(nb_path):
    nb = json.loads(nb_path.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    drawn = set(re.findall(r"diagrams\.(\w+)\(", code))
    assert f'diagrams.roadmap("{nb_path.name[:2]}")' in code and len(drawn - {"roadmap"}) >= 1


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_ends_by_showing_where_the_learner_stands_on_its_exercises(nb_path):
    nb = json.loads(nb_path.read_text())
    last = "".join([c for c in nb["cells"] if c["cell_type"] == "code"][-1]["source"])
    assert f'status("{nb_path.name[:2]}")' in last


def test_the_readme_says_what_it_is_and_how_to_start_in_a_few_screens():
    assert len((ROOT / "README.md").read_text()) <= 12000
