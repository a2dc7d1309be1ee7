"""The sandboxed autograder (:mod:`course_grader.autograder`): which code a graded part gets, and what is hidden.

Fast tests pin which code a graded part receives: the trusted set-up cell of the *source*
notebook and the student's solution cells that define the part's functions, nothing else (no
test cells, no other solutions); the lab's references stand in for the other functions; and what
the sandbox hides is found by import plus what the caller names, never guessed from a checkout.
The slow test grades every lab's known mistakes through its rubric. The command line that drives
it end to end: ``test_cli.py``; the HTML feedback: ``test_feedback.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import course_grader
import course_lib.lab_checks
from course_grader import autograder, cells, course
from course_grader.registry import LABS, lab as find_lab
from course_grader.sandbox import Limits, Sandbox
from course_lib.lab_checks import attention as attention_checks
from tests.grader import CHECKOUT
from tests.labtools import lab_files, mistake_fails

LAB, SOURCE, RELEASE = lab_files("attention")[:3]


def test_setup_comes_from_the_locked_cell_of_the_source_notebook():
    setup = autograder.setup_source(cells.load_notebook(SOURCE))
    assert "import torch" in setup
    assert "attention_checks" not in setup and "def " not in setup  # no hidden tests, no solutions


def test_a_part_gets_only_the_solution_cells_defining_its_functions():
    notebook = cells.load_notebook(RELEASE)
    code = autograder.part_source(notebook, ["causal_mask"])
    assert code.startswith("def causal_mask(size):") and "def split_heads" not in code
    assert "assert" not in code  # test cells are never sent
    notebook["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": "def causal_mask(size:\n    pass"})  # a later, broken redefinition
    assert autograder.part_source(notebook, ["causal_mask"]).endswith("def causal_mask(size:\n    pass")


def test_a_malformed_solution_cell_is_left_out_not_a_crash_of_the_batch():
    notebook = cells.load_notebook(RELEASE)
    notebook["cells"][:0] = [{"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": ["def causal_mask(size):\n", 1]}, "not a cell", None]
    assert autograder.part_source(notebook, ["causal_mask"]).startswith("def causal_mask(size):")


def test_a_part_runs_set_up_then_the_students_cells_only():
    source, notebook = cells.load_notebook(SOURCE), cells.load_notebook(RELEASE)
    notebook["cells"].append({"cell_type": "code", "metadata": {"nbgrader": {"solution": True}},
                              "source": "def causal_mask(size):\n    return 'mine'"})
    setup, student_cells = autograder.criterion_cells(source, notebook, ["causal_mask"])
    assert "import torch" in setup and "def " not in setup  # the trusted set-up, run first and apart
    assert student_cells[-1] == "def causal_mask(size):\n    return 'mine'"
    code = "\n\n".join(student_cells)
    assert "def split_heads" not in code  # the other functions come from the rubric's references, in the sandbox
    assert code.count("def causal_mask") == 2  # the release stub and the student's: never the reference's
    assert "BEGIN HIDDEN TESTS" not in code + setup and "attention_checks" not in code + setup


def test_a_sandboxed_part_gets_the_references_of_the_other_functions_around_the_students_code():
    import torch

    code = ("import torch\nfirst = merge_heads(torch.ones(1, 1, 2, 2)).shape  # a cell may call one at the top\n"
            "def split_heads(x, num_heads):\n    return merge_heads(x)\n"
            "def merge_heads(x):\n    return 'mine'\n")
    helpers = attention_checks.RUBRIC.helpers("test_split_heads")
    assert set(helpers) == {"scaled_dot_product_attention", "causal_mask", "merge_heads"}
    with Sandbox(Limits(wall_seconds=30), rubric=attention_checks.__name__) as box:
        with box.run(code, ["split_heads"], helpers=helpers) as part:  # merge_heads is the reference's
            assert tuple(part.function("split_heads")(torch.ones(1, 1, 2, 2), 1).shape) == (1, 2, 2)
        with box.run(code.replace("first = ", "# "), ["split_heads"]) as part:  # without helpers: the student's own
            assert part.function("split_heads")(torch.ones(1, 1, 2, 2), 1) == "mine"
        with box.run(code, ["split_heads"], helpers=["no_such_function"]) as part:
            with pytest.raises(LookupError, match="no reference for no_such_function"):
                part.function("split_heads")(torch.ones(1), 1)


def test_what_the_sandbox_hides_is_found_by_import_plus_what_the_caller_names(tmp_path):
    package, checks = Path(course_grader.__file__).parent, Path(course_lib.lab_checks.__file__).parent
    assert autograder.paths_hidden_from_students() == [package.resolve(), checks.resolve()]  # no checkout guessed
    submissions = [tmp_path / "subs" / student / LAB / RELEASE.name for student in ("ada", "bob")]
    hidden = autograder.paths_hidden_from_students(*CHECKOUT.private, tmp_path / "out", submissions=submissions)
    assert hidden[2:] == [p.resolve() for p in CHECKOUT.private] + [tmp_path / "out", tmp_path / "subs"]


@pytest.mark.slow
@pytest.mark.parametrize("lab", [lab.assignment for lab in LABS])
def test_the_sandboxed_grader_serves_every_lab_through_its_rubric(lab, tmp_path):
    """Each lab's solution scores full marks and each known mistake loses exactly its cells."""
    module, files = find_lab(lab).checks, lab_files(lab)
    mistakes = files.mistakes_dir
    source = cells.load_notebook(files.source)
    students = course.write_submissions(lab, mistakes, tmp_path, CHECKOUT.labs)
    hidden = autograder.paths_hidden_from_students(*CHECKOUT.private)
    with Sandbox(Limits(wall_seconds=30), hidden, rubric=module.__name__) as box:
        results = {s: autograder.grade_notebook(box, module, path, source) for s, path in students.items()}
    points = {c.grade_id: float(c.points) for c in module.RUBRIC}
    assert results["solution"].scores == {g: (p, p) for g, p in points.items()}, results["solution"].messages
    assert results["stub"].total == 0
    for mistake in mistakes.glob("*.py"):
        lost = {g for g, (score, _) in results[mistake.stem].scores.items() if score == 0}
        assert lost == set(mistake_fails(mistake)), (mistake.stem, results[mistake.stem].messages)
