"""Students work on copies of the labs in the git-ignored work/ folder, and JupyterLab's checkpoints never count.

:mod:`course_grader.workspace` runs on a copy of the checkout's labs (the real ``work/`` is never touched).
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from course_grader import course
from course_lib import notebooks
from course_grader.workspace import LabNotFound, available_labs, find_lab, main, start_lab
from tests.paths import REPO

LAB, NOTEBOOK = "01_attention", "attention.ipynb"
RELEASE = REPO / "labs" / "release" / LAB / NOTEBOOK


@pytest.fixture
def checkout(tmp_path):
    """The checkout's chapters and labs (source and release), copied."""
    root = tmp_path / "course"
    shutil.copytree(REPO / "labs", root / "labs", ignore=shutil.ignore_patterns(
        ".ipynb_checkpoints", "gradebook.db", "submitted", "autograded", "feedback"))
    (root / "chapters").mkdir()
    for chapter in REPO.glob("chapters/*.ipynb"):
        shutil.copy(chapter, root / "chapters")
    return root


def test_a_lab_is_found_by_its_assignment_or_its_topic(checkout):
    assert list(available_labs(checkout)) == sorted(p.name for p in (REPO / "labs" / "release").iterdir()
                                                    if p.is_dir() and not p.name.startswith("."))
    assert find_lab("01_attention", checkout) == find_lab("attention", checkout) == LAB
    assert find_lab("seq2seq", checkout) == "04_seq2seq"
    with pytest.raises(LabNotFound, match=r"no lab 'atention'; the labs are: 01_attention \(attention\), "):
        find_lab("atention", checkout)


def test_starting_a_lab_copies_it_once_and_never_overwrites_the_students_work(checkout):
    first = start_lab("attention", checkout)
    mine = checkout / "work" / LAB / NOTEBOOK
    assert first.notebooks == [mine] and first.copied == [mine] and first.kept == []
    assert mine.read_bytes() == RELEASE.read_bytes()

    mine.write_text("my work")  # the student's edits ...
    release = checkout / "labs" / "release" / LAB
    (release / NOTEBOOK).write_text("a course update")  # ... then a `git pull` changes the release
    (release / "data.txt").write_text("a file the lab gained")
    again = start_lab(LAB, checkout)
    assert mine.read_text() == "my work" and again.kept == [mine]
    assert again.copied == [checkout / "work" / LAB / "data.txt"]
    assert not list((checkout / "work").rglob("*.partial"))


def test_checkpoints_are_not_copied_and_a_file_in_the_way_is_reported(checkout):
    checkpoints = checkout / "labs" / "release" / LAB / ".ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / "attention-checkpoint.ipynb").write_text("{}")
    start_lab(LAB, checkout)
    assert sorted(p.name for p in (checkout / "work" / LAB).iterdir()) == [NOTEBOOK]
    (checkout / "work" / "05_decoding").write_text("not a folder")
    with pytest.raises(FileExistsError, match="is not a folder"):
        start_lab("decoding", checkout)


def test_the_command_prints_the_notebook_and_explains_an_unknown_name(checkout, capsys):
    assert main(["start", "attention"], root=checkout) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(checkout / "work" / LAB / NOTEBOOK)]
    assert f"copied labs/release/{LAB}/ to work/{LAB}/" in err
    assert main(["start", "attention"], root=checkout) == 0
    assert "is kept as it is" in capsys.readouterr().err
    assert main(["start", "nothing"], root=checkout) == 2
    assert "error: there is no lab 'nothing'" in capsys.readouterr().err
    assert main(["list"], root=checkout) == 0
    listing = capsys.readouterr().out
    assert f"{LAB:18} started: work/{LAB}" in listing and "02_tokenization    not started" in listing


def test_work_is_ignored_by_git():
    result = subprocess.run(["git", "check-ignore", "-q", f"work/{LAB}/{NOTEBOOK}"], cwd=REPO)
    assert result.returncode == 0, "work/ must be git-ignored: students' copies never enter the repository"


def test_jupyterlab_checkpoints_are_ignored_by_every_listing_and_comparison(checkout):
    """JupyterLab writes .ipynb_checkpoints/ beside every notebook it opens: chapters, labs, anywhere."""
    before = [p.relative_to(checkout) for p in notebooks.course_notebooks(checkout)]
    folders = [checkout / "chapters", checkout / "labs", *checkout.glob("labs/*"), *checkout.glob("labs/*/*")]
    for folder in [f for f in folders if f.is_dir()]:
        (folder / ".ipynb_checkpoints").mkdir()
        (folder / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text('{"cells": []}')
    assert [p.relative_to(checkout) for p in notebooks.course_notebooks(checkout)] == before
    assert list(available_labs(checkout)) == list(available_labs(REPO))
    for lab in available_labs(REPO):
        assert course.compare_releases(checkout / "labs" / "release" / lab, REPO / "labs" / "release" / lab) == []
    assert notebooks.update_headers(checkout, check=True) == []
