"""The labs' nbgrader course (:mod:`course_grader.course`): scratch copies, releases, test submissions.

Fast tests pin what a scratch course holds (the configuration and sources, nothing of the
checkout's releases or outputs), how releases are compared, how test submissions are made from
the release (the solution, the stub, a mistake's functions in their own cells only) and how a
submissions folder is read. The slow ones run the real nbgrader: a failing command raises with its
output, and ``generate`` / ``release_differences`` work on a copy of the labs folder (the
checkout's own is never written). Plain nbgrader grading of every lab: ``test_round_trips.py``.
"""
from __future__ import annotations

import json

import pytest

from course_grader import cells, course
from tests.grader import CHECKOUT, copy_of_labs
from tests.labtools import lab_files, mistake_fails

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES = lab_files("attention")[:5]


def _tree(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_scratch_course_holds_the_configuration_and_sources_only(tmp_path):
    labs = copy_of_labs(tmp_path / "labs")
    (labs / "source" / LAB / ".ipynb_checkpoints").mkdir()
    (labs / "source" / LAB / ".ipynb_checkpoints" / "attention-checkpoint.ipynb").write_text("{}")
    before = _tree(labs)
    made = course.scratch_course(tmp_path / "scratch", labs)
    assert made == tmp_path / "scratch" and _tree(labs) == before  # the labs folder is only read
    assert {p.split("/")[0] for p in _tree(made)} == {"nbgrader_config.py", "source"}  # no release, no gradebook
    assert not any(".ipynb_checkpoints" in p for p in _tree(made))
    assert (made / "source" / LAB / SOURCE.name).read_bytes() == SOURCE.read_bytes()


def test_releases_are_compared_file_by_file_and_notebooks_as_json(tmp_path):
    committed, fresh = tmp_path / "committed" / LAB, tmp_path / "fresh" / LAB
    for folder in (committed, fresh):
        folder.mkdir(parents=True)
        (folder / "same.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
    (fresh / "same.ipynb").write_text(json.dumps({"nbformat": 4, "cells": []}, indent=4))  # same JSON, other text
    (committed / "edited.ipynb").write_text('{"cells": [1]}')
    (fresh / "edited.ipynb").write_text('{"cells": [2]}')
    (committed / "data.txt").write_text("a")
    (fresh / "data.txt").write_text("b")
    (committed / "stale.ipynb").write_text('{"cells": []}')
    (fresh / "new.ipynb").write_text('{"cells": []}')
    assert course.compare_releases(committed, fresh) == [
        f"{LAB}/data.txt: differs from a fresh generation", f"{LAB}/edited.ipynb: differs from a fresh generation",
        f"{LAB}/new.ipynb: not committed", f"{LAB}/stale.ipynb: not generated"]
    assert course.compare_releases(committed, committed) == []
    assert course.compare_releases(tmp_path / "nothing", fresh)[0].endswith("not committed")


def test_jupyterlabs_checkpoints_are_not_part_of_a_release(tmp_path):
    """Opening a release notebook in JupyterLab writes .ipynb_checkpoints/ beside it: no difference."""
    committed = tmp_path / "committed" / LAB
    committed.mkdir(parents=True)
    (committed / RELEASE.name).write_bytes(RELEASE.read_bytes())
    checkpoints = committed / ".ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / f"{RELEASE.stem}-checkpoint.ipynb").write_text('{"cells": ["a student\'s work"]}')
    assert course.compare_releases(committed, RELEASE.parent) == []
    assert course.compare_releases(RELEASE.parent, committed) == []


def test_solution_code_is_every_solution_cell_without_the_markers():
    solutions = course.solution_code(SOURCE)
    assert list(solutions) == list(cells.solution_cells(cells.load_notebook(SOURCE)))
    assert solutions["causal_mask"].startswith("def causal_mask(size")
    assert not any(marker in code for code in solutions.values() for marker in course.SOLUTION_MARKERS)


def test_a_mistake_replaces_the_cells_of_its_functions_and_names_an_unknown_one(tmp_path):
    solutions = course.solution_code(SOURCE)
    mistake = tmp_path / "wrong.py"
    mistake.write_text("FAILS = {}\n\ndef causal_mask(size):\n    return None\n\nhelper = 1\n")
    assert course.mistake_code(mistake, solutions) == {"causal_mask": "def causal_mask(size):\n    return None"}
    mistake.write_text("def no_such_function():\n    pass\n")
    with pytest.raises(ValueError, match=r"wrong.py: no solution cell defines no_such_function\(\)"):
        course.mistake_code(mistake, solutions)


def test_write_submissions_makes_the_solution_the_stub_and_one_per_known_mistake(tmp_path):
    written = course.write_submissions(LAB, MISTAKES_DIR, tmp_path, CHECKOUT.labs)
    assert set(written) == {"solution", "stub", *(m.stem for m in MISTAKES)}
    assert all(path == tmp_path / student / LAB / RELEASE.name for student, path in written.items())
    release = cells.load_notebook(RELEASE)
    assert cells.load_notebook(written["stub"]) == release
    solutions = course.solution_code(SOURCE)
    filled = cells.solution_cells(cells.load_notebook(written["solution"]))
    assert {grade_id: cells.source(cell) for grade_id, cell in filled.items()} == solutions
    for mistake in MISTAKES:
        changed = course.mistake_code(mistake, solutions)
        student = cells.load_notebook(written[mistake.stem])
        assert len(student["cells"]) == len(release["cells"])
        for grade_id, cell in cells.solution_cells(student).items():
            assert cells.source(cell) == changed.get(grade_id, solutions[grade_id]), (mistake.stem, grade_id)
        # every mistake says which cells it must fail; a correct variant (correct_*.py) fails none
        assert bool(mistake_fails(mistake)) != mistake.stem.startswith("correct_"), mistake.stem


def test_fill_solutions_leaves_every_other_cell_as_released():
    release = cells.load_notebook(RELEASE)
    filled = course.fill_solutions(RELEASE, {"causal_mask": "def causal_mask(size):\n    return 'mine'"})
    changed = [i for i, (a, b) in enumerate(zip(release["cells"], filled["cells"])) if a != b]
    assert [cells.grade_id(filled["cells"][i]) for i in changed] == ["causal_mask"]


def test_a_submissions_folder_is_read_by_student_and_registered_lab(tmp_path):
    for path in ("ada/01_attention/attention.ipynb", "bob/05_decoding/decoding.ipynb", "bob/99_unknown/x.ipynb"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    (tmp_path / "cy" / "01_attention").mkdir(parents=True)  # a student folder without its notebook
    (tmp_path / "ada" / "notes.txt").write_text("not a lab")
    assert course.submitted_labs(tmp_path) == ["01_attention", "05_decoding"]  # course order, known labs only
    assert course.submissions_of(tmp_path, "01_attention", "attention") == {
        "ada": tmp_path / "ada" / "01_attention" / "attention.ipynb",
        "cy": tmp_path / "cy" / "01_attention" / "attention.ipynb"}  # cy's missing notebook scores 0 later


@pytest.mark.slow
def test_a_failing_nbgrader_command_raises_with_its_output(tmp_path):
    scratch = course.scratch_course(tmp_path / "course", CHECKOUT.labs)
    assert course.run_nbgrader(scratch, "generate_assignment", "99_nothing").returncode != 0  # judged by the caller
    with pytest.raises(RuntimeError, match="(?s)generate_assignment 99_nothing.*failed.*No notebooks were matched"):
        course.nbgrader(scratch, "generate_assignment", "99_nothing")


@pytest.mark.slow
def test_generate_replaces_a_stale_release_and_release_differences_sees_it(tmp_path):
    labs = copy_of_labs(tmp_path / "labs")
    release = labs / "release" / LAB / RELEASE.name
    notebook = cells.load_notebook(release)
    notebook["cells"][0]["source"] = "edited by hand"
    release.write_text(json.dumps(notebook))
    (release.parent / "stray.txt").write_text("left over")
    assert course.release_differences(LAB, labs) == [f"{LAB}/{RELEASE.name}: differs from a fresh generation",
                                                     f"{LAB}/stray.txt: not generated"]
    assert course.generate([LAB], labs) == [labs / "release" / LAB]
    assert course.compare_releases(RELEASE.parent, labs / "release" / LAB) == []  # the committed one, again
    assert not (labs / "gradebook.db").exists() and not (labs / "submitted").exists()
