"""Lab 01 (attention): its hidden checks and its notebooks.

Fast tests call the checks of ``course_lib.lab_checks.attention`` directly: the ``course_lib``
reference passes all of them, and each known mistake in ``tests/fixtures/lab_attention/`` fails
exactly the checks its ``FAILS`` names, with a message that says why.
The real nbgrader round trips of every lab are in ``tests/test_lab_round_trips.py``.
"""
from __future__ import annotations

import math
import re

import pytest
import torch

import course_lib
from course_lib.lab_checks import attention as attention_checks
from course_lib.lab_checks import toolkit as checks
from tests.labtools import lab_files, labs_script, load_module, notebook
from course_lib.lab_checks.toolkit import CheckFailed

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES, POINTS = lab_files("attention")



def _run_rubric(functions: dict) -> dict[str, str]:
    """Run every check with ``functions`` (name -> callable, course_lib's for missing names);
    return ``{grade_id: failure message}`` of the checks that failed."""
    failures = {}
    for criterion in attention_checks.RUBRIC:
        try:
            attention_checks.RUBRIC.run(criterion.grade_id, *(functions.get(n, getattr(course_lib, n)) for n in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures



def _source(cell) -> str:
    return "".join(cell["source"])


# --- the checks, called directly -------------------------------------------------------------

def test_reference_implementation_passes_every_check():
    assert _run_rubric({}) == {}


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_exactly_its_checks_with_a_hint(mistake):
    module = load_module(mistake, f"lab_attention_mistake_{mistake.stem}")
    functions = {name: getattr(module, name) for name in dir(module) if callable(getattr(module, name))}
    failures = _run_rubric(functions)
    assert set(failures) == set(module.FAILS), failures
    for grade_id, phrase in module.FAILS.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def test_unimplemented_function_fails_every_check_and_says_so():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    failures = _run_rubric({c.functions[0]: stub for c in attention_checks.RUBRIC})
    assert set(failures) == set(POINTS)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values())


def test_checks_run_on_the_course_device_and_are_reproducible():
    seen = []

    def spy(q, k, v, mask=None):
        seen.append((q.device, q.clone().cpu()))
        return course_lib.scaled_dot_product_attention(q, k, v, mask)

    attention_checks.check_scaling(spy)
    first = list(seen)
    seen.clear()
    attention_checks.check_scaling(spy)
    assert {device.type for device, _ in first} == {course_lib.get_device().type}
    assert len(first) == len(seen) == attention_checks.TRIALS
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, seen))
    assert len({tuple(q.shape) for _, q in first}) > 1  # the trials do vary the shapes


def test_student_code_that_edits_its_inputs_in_place_is_still_graded_correctly():
    def scales_q_in_place(q, k, v, mask=None):
        q /= math.sqrt(q.shape[-1])  # legal for the student: q is their copy
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        return weights @ v, weights

    attention_checks.check_scaling(scales_q_in_place)


def test_mask_check_reports_a_mask_that_leaks_as_nonzero_blocked_weights():
    def additive_minus_one(q, k, v, mask=None):  # -1 instead of -inf: blocked keys keep some weight
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        weights = torch.softmax(scores.masked_fill(~mask, -1.0) if mask is not None else scores, dim=-1)
        return weights @ v, weights

    with pytest.raises(CheckFailed, match="weights where mask is False should be 0") as failure:
        attention_checks.check_mask(additive_minus_one)
    assert "-inf" in failure.value.hint


def test_output_check_names_the_values_when_the_output_uses_the_keys():
    def returns_weights_times_keys(q, k, v, mask=None):
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return weights @ k, weights

    with pytest.raises(CheckFailed, match=r"output has shape .* expected \(\.\.\., T_q, d_v\)"):
        attention_checks.check_output(returns_weights_times_keys)


def test_expect_close_reports_the_largest_difference_and_where():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    with pytest.raises(CheckFailed, match=r"largest difference 0\.5 at index \(1, 2\)"):
        checks.expect_close(actual, expected, name="x")
    checks.expect_close(expected + 1e-7, expected, name="x")  # within tolerance


def test_expect_tensor_explains_a_missing_return():
    with pytest.raises(CheckFailed) as failure:
        checks.expect_tensor(None, name="weights")
    assert "forget a `return`" in failure.value.hint


# --- the notebooks ----------------------------------------------------------------------------

def test_source_notebook_grade_cells_follow_the_rubric():
    cells = [c for c in notebook(SOURCE)["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in cells} == POINTS
    by_id = {c.grade_id: c for c in attention_checks.RUBRIC}
    for cell in cells:
        criterion = by_id[cell["metadata"]["nbgrader"]["grade_id"]]
        hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", _source(cell), re.S)
        assert hidden, f"{criterion.grade_id} has no hidden tests"
        call = f'attention_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})'
        assert call in hidden.group(1), f"{criterion.grade_id} should call {call}"


def test_every_graded_function_has_a_solution_cell():
    solutions = labs_script.solution_code(SOURCE)
    defined = {name for code in solutions.values() for name in re.findall(r"^def (\w+)\(", code, re.M)}
    assert defined == {name for c in attention_checks.RUBRIC for name in c.functions}
    assert not any("BEGIN SOLUTION" in code for code in solutions.values())


@pytest.mark.parametrize("path", [SOURCE, RELEASE], ids=["source", "release"])
def test_committed_notebooks_have_no_outputs(path):
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests():
    text = RELEASE.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "attention_checks.check" not in text
    assert "masked_fill" not in text  # no piece of the solution leaked
    release_cells = {c["id"]: _source(c) for c in notebook(RELEASE)["cells"]}
    assert release_cells["sdpa"].count("raise NotImplementedError()") == 1
    assert "torch.allclose(weights.sum(dim=-1)" in release_cells["test_sdpa_distribution"]


def test_mistake_files_replace_only_the_cells_of_their_functions():
    solutions = labs_script.solution_code(SOURCE)
    replaced = labs_script.mistake_code(MISTAKES_DIR / "two_mistakes.py", solutions)
    assert set(replaced) == {"sdpa", "causal_mask"}
    assert replaced["causal_mask"].startswith("def causal_mask(size):") and ".tril(-1)" in replaced["causal_mask"]
