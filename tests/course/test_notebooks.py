"""Every course notebook: valid, committed without outputs, with the Colab badge and set-up cell."""
from __future__ import annotations

import re
import subprocess
import sys
import types

import nbformat
import pytest
import yaml

from course_lib import notebooks as notebook_header
from tests.paths import REPO

NOTEBOOKS = notebook_header.course_notebooks(REPO)
IDS = [str(p.relative_to(REPO)) for p in NOTEBOOKS]


def test_the_course_has_its_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_attention.ipynb", "attention.ipynb", "02_tokenization.ipynb", "tokenization.ipynb",
            "03_rnn_attention.ipynb", "04_transformer.ipynb", "seq2seq.ipynb", "05_decoding.ipynb",
            "decoding.ipynb", "06_efficient_attention.ipynb", "reformer.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_and_has_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs are committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_starts_with_badge_pointing_at_its_path_and_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    badge, setup = nb.cells[0], nb.cells[1]
    link = re.search(r"\]\((https://colab\.research\.google\.com/github/[^)]+)\)", badge.source).group(1)
    repo_path = notebook_header.repository_path(path, REPO)
    assert link.endswith("/blob/main/" + repo_path)
    assert (REPO / repo_path).exists(), f"the badge points at {repo_path}, which does not exist"
    assert setup.cell_type == "code" and setup.source == notebook_header.SETUP_SOURCE


def test_headers_are_up_to_date():
    script = REPO / "scripts" / "notebook_header.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _run_setup_cell(monkeypatch, on_colab: bool) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    exec(compile(notebook_header.SETUP_SOURCE, "setup-cell", "exec"), {})
    return calls


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    assert _run_setup_cell(monkeypatch, on_colab=False) == []


def test_setup_cell_installs_this_repository_on_colab(monkeypatch):
    (args, kwargs), = _run_setup_cell(monkeypatch, on_colab=True)
    command = args[0]
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[-1] == f"course-lib[viz] @ git+https://github.com/{notebook_header.REPOSITORY}@main"
    assert kwargs.get("check") is True


def test_repository_is_named_once(repo_root):
    config = yaml.safe_load((repo_root / "book" / "_config.yml").read_text())
    assert config["repository"]["url"] == f"https://github.com/{notebook_header.REPOSITORY}"
    assert config["repository"]["branch"] == notebook_header.BRANCH
    readme = (repo_root / "README.md").read_text()
    assert f"github.com/{notebook_header.REPOSITORY}" in readme
