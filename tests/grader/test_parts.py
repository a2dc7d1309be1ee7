"""A graded part's life in the sandbox (:mod:`course_grader.sandbox_process`, :mod:`course_grader.sandbox_part`).

* **Calls** mirror what a student function does to its arguments onto the caller's own tensors,
  lists and dicts, so a check sees ``x.mul_(2)`` exactly as in nbgrader's kernel, and a function
  that changes nothing leaves them bit for bit as they were.
* **Loading** says what went wrong: ``sys.exit()``, ``exit()``, ``SystemExit`` or
  ``KeyboardInterrupt`` at import is named as such; a cell that hangs or crashes at import is
  named, and the grader runs it once: every part needing it fails at once, the others are graded;
  a call that hangs fails its part and is remembered (``NotebookResult.hung``).
* **Plain data in other types** (a ``Counter`` from ``get_stats``) scores full marks end to end.
"""
from __future__ import annotations

import json
import sys
import time

import pytest
import torch

from course_grader import autograder, cells, course
from course_grader.protocol import SandboxCrashed, SandboxTimeout, StudentExit
from course_grader.registry import lab as find_lab
from course_grader.sandbox import Limits, Sandbox
from tests.grader import CHECKOUT
from tests.labtools import lab_files

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")


@pytest.fixture(scope="module")
def box():
    with Sandbox(Limits(wall_seconds=10)) as sandbox:
        yield sandbox


# --- calls: in-place changes of the arguments come back ------------------------------------------

EDITS = """
def doubles(x):
    x.mul_(2)
    return x.sum()

def reads(x, ids, params):
    return x * 2

def edits_everything(x, ids, params):
    x[0] = -1.0
    ids.append(7)
    params["weight"].zero_()
    params["new"] = 1
    return None

def reshapes(x):
    x.t_()
"""


def test_a_function_that_edits_its_input_in_place_edits_the_callers_tensor(box):
    with box.run(EDITS, ["doubles"]) as part:
        x = torch.arange(4.0)
        storage = x.data_ptr()
        total = part.function("doubles")(x)
    assert torch.equal(x, torch.tensor([0.0, 2.0, 4.0, 6.0])) and x.data_ptr() == storage and total.item() == 12


def test_a_function_that_changes_nothing_leaves_its_inputs_bit_for_bit(box):
    x = torch.tensor([float("nan"), -0.0, 1.5, float("inf")])
    ids, params = [1, 2, 3], {"weight": torch.ones(2, 2)}
    before = (x.clone(), list(ids), params["weight"].clone())
    with box.run(EDITS, ["reads"]) as part:
        part.function("reads")(x, ids, params)
    assert x.numpy().tobytes() == before[0].numpy().tobytes() and ids == before[1]
    assert torch.equal(params["weight"], before[2]) and set(params) == {"weight"}


def test_changes_inside_lists_and_dicts_and_of_shape_come_back_too(box):
    x, ids, weight = torch.zeros(3), [1, 2], torch.ones(2, 2)
    params = {"weight": weight}
    with box.run(EDITS, ["edits_everything", "reshapes"]) as part:
        assert part.function("edits_everything")(x, ids, params=params) is None
        square = torch.arange(6.0).view(2, 3)
        part.function("reshapes")(square)
    assert x.tolist() == [-1.0, 0.0, 0.0] and ids == [1, 2, 7]
    assert params["weight"] is weight and weight.abs().sum() == 0 and params["new"] == 1
    assert square.shape == (3, 2) and torch.equal(square, torch.arange(6.0).view(2, 3).t())


# --- loading: what stopped it, said plainly ---------------------------------------------------------

@pytest.mark.parametrize("line, said", [
    ("import sys\nsys.exit(0)", "your notebook calls sys.exit() (or exit()) at import, in your cell defining f"),
    ("exit()", "calls sys.exit() (or exit()) at import"),
    ("raise SystemExit('bye')", "(SystemExit: bye)"),
    ("raise KeyboardInterrupt", "your notebook raises KeyboardInterrupt at import, in your cell defining f"),
])
def test_an_exit_at_import_is_said_as_such(box, line, said):
    with box.run(f"def f():\n    return 1\n{line}\n", ["f"]) as part:
        assert isinstance(part.load_error, StudentExit) and said in str(part.load_error)
        with pytest.raises(StudentExit):
            part.function("f")()


def test_a_cell_that_hangs_or_crashes_at_import_is_named(box):
    with Sandbox(Limits(wall_seconds=1.5)) as quick:
        quick.run("", []).close()  # the zygote's start-up is not part of the deadline
        with quick.run(["def g():\n    pass\n", "def f():\n    pass\nwhile True:\n    pass\n"], ["f", "g"]) as part:
            assert isinstance(part.load_error, SandboxTimeout) and part.stuck_cell == 1
            assert str(part.load_error).startswith("your cell defining f did not finish loading within 1.5 s")
    with box.run(["import os\ndef f():\n    pass\nos._exit(3)\n"], ["f"]) as part:
        assert isinstance(part.load_error, SandboxCrashed) and part.stuck_cell == 0
        assert "while your cell defining f loaded" in str(part.load_error)


def _attention_with(tmp_path, code: dict[str, str]):
    source, release = lab_files("attention").source, lab_files("attention").release
    path = tmp_path / "student" / "01_attention" / release.name
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(course.fill_solutions(release, {**course.solution_code(source), **code})))
    return path, cells.load_notebook(source)


@pytest.mark.slow
def test_a_cell_that_hangs_at_import_costs_one_time_limit_not_one_per_part(tmp_path):
    """The attention cell feeds four graded parts: it is run once, the four fail at once, the others pass."""
    hanging = "import math\nimport torch\ndef scaled_dot_product_attention(q, k, v, mask=None):\n    pass\n" \
              "while True:\n    pass\n"
    path, source = _attention_with(tmp_path, {"sdpa": hanging})
    module = find_lab("attention").checks
    limit = 4.0
    with Sandbox(Limits(wall_seconds=limit), autograder.paths_hidden_from_students(*CHECKOUT.private),
                 rubric=module.__name__) as sandbox:
        sandbox.run("", []).close()
        start = time.monotonic()
        result = autograder.grade_notebook(sandbox, module, path, source)
        elapsed = time.monotonic() - start
    sdpa = {c.grade_id for c in module.RUBRIC if c.functions == ("scaled_dot_product_attention",)}
    assert {g for g, (score, _) in result.scores.items() if score == 0} == sdpa and len(sdpa) == 4
    assert all(result.messages[g].startswith("your cell defining scaled_dot_product_attention did not finish "
                                             f"loading within {limit:g} s") for g in sdpa)
    assert result.stopped == result.messages[min(sdpa)]
    assert elapsed < 2 * limit, elapsed  # one time limit, not four


@pytest.mark.slow
def test_a_call_that_hangs_fails_its_part_only_and_is_remembered_so_feedback_does_not_rerun_it(tmp_path):
    """merge_heads loops on every call: its part fails at the time limit, the other six pass, and the
    result says so (``hung``: feedback does not run that notebook again, a time limit per cell)."""
    looping = "import torch\ndef merge_heads(x):\n    while True:\n        pass\n"
    path, source = _attention_with(tmp_path, {"merge_heads": looping})
    module = find_lab("attention").checks
    with Sandbox(Limits(wall_seconds=3.0), autograder.paths_hidden_from_students(*CHECKOUT.private),
                 rubric=module.__name__) as sandbox:
        result = autograder.grade_notebook(sandbox, module, path, source)
    merge = {c.grade_id for c in module.RUBRIC if "merge_heads" in c.functions}
    assert {g for g, (score, _) in result.scores.items() if score == 0} == merge, result.messages
    assert result.hung is not None and result.hung == result.messages[min(merge)] and result.stopped is None


# --- plain data in other types, end to end ----------------------------------------------------------

COUNTER_GET_STATS = '''from collections import Counter


def get_stats(ids):
    """A Counter is a dict: as good an answer as any."""
    return Counter(zip(ids, ids[1:]))
'''


@pytest.mark.slow
def test_a_counter_from_get_stats_scores_full_marks_through_the_sandbox(tmp_path):
    files = lab_files("tokenization")
    path = tmp_path / "counter" / files.assignment / files.release.name
    path.parent.mkdir(parents=True)
    notebook = course.fill_solutions(files.release, {**course.solution_code(files.source), "get_stats": COUNTER_GET_STATS})
    path.write_text(json.dumps(notebook))
    module = find_lab("tokenization").checks
    with Sandbox(Limits(wall_seconds=30), autograder.paths_hidden_from_students(*CHECKOUT.private),
                 rubric=module.__name__) as sandbox:
        result = autograder.grade_notebook(sandbox, module, path, cells.load_notebook(files.source))
    assert result.scores == {g: (p, p) for g, p in files.points.items()}, result.messages
