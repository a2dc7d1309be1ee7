"""Lab 03 (the Reformer): its hidden checks and its notebooks.

Fast tests call the checks of ``course_lib.lab_checks.reformer`` directly: the lab's own solution
passes all of them, its references agree with ``course_lib.reformer`` (and so with HF's Reformer),
and each known mistake in ``tests/fixtures/lab_reformer/`` fails exactly the checks its ``FAILS``
names, with a hint.
The real nbgrader round trips of every lab are in ``tests/test_lab_round_trips.py``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from course_lib.lab_checks import reformer as reformer_checks
from course_lib.lab_checks import reformer_lsh, reformer_reversible
from tests.labtools import lab_files, labs_script, mistake_fails, notebook
from course_lib.lab_checks.toolkit import CheckFailed
from course_lib.reformer import ReversibleBlock

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES, POINTS = lab_files("reformer")
STUDENT_FUNCTIONS = ("hash_vectors", "sort_by_bucket", "chunk", "look_back", "reversible_forward",
                     "reversible_inverse", "reversible_backward")




def _source(cell) -> str:
    return "".join(cell["source"])


def _setup_code() -> str:
    return next(_source(c) for c in notebook(SOURCE)["cells"]
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "setup")


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a kernel."""
    namespace: dict = {}
    exec(compile(_setup_code(), str(SOURCE), "exec"), namespace)  # noqa: S102 (the lab's own cells)
    for code in labs_script.solution_code(SOURCE).values():
        exec(compile(code, str(SOURCE), "exec"), namespace)  # noqa: S102
    return namespace


def _with_mistake(kernel: dict, mistake: Path) -> dict:
    """A fresh kernel where the mistake file's functions replace the solution's (as a spliced notebook)."""
    namespace = dict(kernel)
    exec(compile(mistake.read_text(encoding="utf-8"), str(mistake), "exec"), namespace)  # noqa: S102
    return namespace


def _run_rubric(namespace: dict) -> dict[str, str]:
    """Run every check; return ``{grade_id: failure message}`` of the checks that failed."""
    failures = {}
    for criterion in reformer_checks.RUBRIC:
        try:
            reformer_checks.RUBRIC.run(criterion.grade_id, *(namespace[name] for name in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures



# --- the references are the library's ----------------------------------------------------------

def test_solution_passes_every_check(kernel):
    assert _run_rubric(kernel) == {}


def test_setup_cell_sub_layers_are_the_checks_references(kernel):
    x, w = torch.randn(5, 4), torch.randn(4, 4)
    assert torch.equal(kernel["F"](x, w), reformer_reversible.sublayer_f(x, w))
    assert torch.equal(kernel["G"](x, w), reformer_reversible.sublayer_g(x, w))


def test_reference_block_is_the_library_reversible_block():
    """The lab's forward, inverse and gradients are course_lib's ReversibleBlock (pinned to HF's)."""
    torch.manual_seed(0)
    wf, wg = torch.randn(6, 6) / 2, torch.randn(6, 6) / 2
    block = ReversibleBlock(lambda x: reformer_reversible.sublayer_f(x, wf), lambda x: reformer_reversible.sublayer_g(x, wg))
    x1, x2, dy1, dy2 = (torch.randn(4, 6) for _ in range(4))
    y = block(x1, x2)
    for ours, theirs in zip(reformer_reversible.reference_forward(x1, x2, wf, wg), y):
        torch.testing.assert_close(ours, theirs)
    for ours, theirs in zip(reformer_reversible.reference_inverse(*y, wf, wg), block.inverse(*y)):
        torch.testing.assert_close(ours, theirs)
    rebuilt1, rebuilt2, dx1, dx2 = block.backward_pass(y[0], y[1], dy1, dy2)
    expected = reformer_reversible.reference_gradients(x1, x2, wf, wg, dy1, dy2)
    torch.testing.assert_close(dx1, expected[0])
    torch.testing.assert_close(dx2, expected[1])
    torch.testing.assert_close(rebuilt1, x1, atol=1e-5, rtol=0)
    torch.testing.assert_close(rebuilt2, x2, atol=1e-5, rtol=0)


def test_unstable_sort_really_mixes_positions_on_the_checks_inputs():
    """Otherwise the unstable-sort mistake could pass by luck."""
    mixed = 0
    for buckets in reformer_lsh.sort_cases()[1:]:
        order = torch.argsort(buckets)
        mixed += not torch.equal(order, torch.sort(buckets, stable=True).indices)
    assert mixed >= 3


def test_reference_inverse_is_swapped_in_only_during_the_backward_checks(kernel):
    namespace = dict(kernel)
    namespace["reversible_inverse"] = "student's"
    reformer_checks.RUBRIC.run("test_backward", namespace["reversible_forward"], namespace["reversible_backward"])
    assert namespace["reversible_inverse"] == "student's"


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_exactly_its_checks_with_a_hint(kernel, mistake):
    failures = _run_rubric(_with_mistake(kernel, mistake))
    expected = mistake_fails(mistake)
    assert set(failures) == set(expected), failures
    for grade_id, phrase in expected.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def test_unimplemented_functions_fail_every_check_and_say_so(kernel):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    failures = _run_rubric({**kernel, **{name: stub for name in STUDENT_FUNCTIONS}})
    assert set(failures) == set(POINTS)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values()), failures


@pytest.mark.parametrize(("function", "value", "message"), [
    ("hash_vectors", None, "should be a torch.Tensor"),
    ("chunk", None, "should be a torch.Tensor"),
    ("reversible_inverse", None, r"should return a pair \(x1, x2\)"),
])
def test_wrong_return_types_are_named(function, value, message):
    criterion = next(c for c in reformer_checks.RUBRIC if c.functions == (function,))
    with pytest.raises(CheckFailed, match=message):
        criterion.check(lambda *args: value)


def test_chunk_without_its_value_error_loses_the_chunk_cell_only(kernel):
    def chunk(x, chunk_len):
        return x.reshape(-1, chunk_len, *x.shape[1:])  # RuntimeError from reshape on a bad length

    with pytest.raises(CheckFailed, match="raised RuntimeError .* expected a ValueError"):
        reformer_lsh.check_chunk(chunk)


def test_backward_without_the_path_through_g_is_explained(kernel):
    def reversible_backward(y1, y2, dy1, dy2, f_weight, g_weight):
        out = kernel["reversible_backward"](y1, y2, dy1, dy2, f_weight, g_weight)
        return out[0], out[1], dy1, *out[3:]

    with pytest.raises(CheckFailed, match="the path from y1 through G into y2 is missing"):
        reformer_reversible.check_backward(kernel["reversible_forward"], reversible_backward)


# --- the notebooks ----------------------------------------------------------------------------

def test_source_notebook_grade_cells_follow_the_rubric():
    cells = [c for c in notebook(SOURCE)["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in cells} == POINTS
    by_id = {c.grade_id: c for c in reformer_checks.RUBRIC}
    for cell in cells:
        criterion = by_id[cell["metadata"]["nbgrader"]["grade_id"]]
        hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", _source(cell), re.DOTALL)
        assert hidden, f"{criterion.grade_id} has no hidden tests"
        call = f'reformer_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})'
        assert call in hidden.group(1), f"{criterion.grade_id} should call {call}"


def test_every_graded_function_has_a_solution_cell():
    solutions = labs_script.solution_code(SOURCE)
    defined = {name for code in solutions.values() for name in re.findall(r"^def (\w+)\(", code, re.MULTILINE)}
    assert defined == {name for c in reformer_checks.RUBRIC for name in c.functions} | {"reversible_inverse"}
    assert defined == set(STUDENT_FUNCTIONS)


@pytest.mark.parametrize("path", [SOURCE, RELEASE], ids=["source", "release"])
def test_committed_notebooks_have_no_outputs(path):
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests():
    text = RELEASE.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "reformer_checks.check" not in text
    assert "stable=True).indices" not in text and "torch.roll(chunks, 1" not in text  # no piece of the solution
    release_cells = {c["id"]: _source(c) for c in notebook(RELEASE)["cells"]}
    for name in STUDENT_FUNCTIONS:
        assert release_cells[name].count("raise NotImplementedError()") == 1
    assert "[[0, 1, 2, 3]]" in release_cells["test_hash"]
