"""What every lab of ``course_grader.registry.LABS`` shares, tested once for all of them.

For each lab: its source notebook follows its ``RUBRIC`` (grade ids, points, order; each grade cell
starts with hidden tests that run one criterion), it has one solution cell per graded function, no
committed outputs, and a release that is the source minus solutions and hidden tests. Its checks,
called in a kernel-like namespace (:mod:`tests.labs.support`): the reference solution, and the
rubric's references, pass every cell; the release's stubs fail every cell saying so; each known
mistake in ``tests/fixtures/labs/<topic>/`` fails exactly the cells of its ``FAILS``, with a hint,
and no visible test of another cell, and each visible test prints a confirmation when it passes; at
least three correct variants there (``correct_*.py``,
``FAILS = {}``) differ from the solution and lose nothing; every cell is graded with the references of the lab's other
functions; the checks are reproducible and run on the course's device. What only one lab needs is
in its own ``tests/labs/test_<topic>.py``; the real nbgrader round trips in ``tests/grader/``.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import io
import re

import pytest
import torch

from course_grader.registry import LABS
from course_lib.lab_checks.toolkit import clone_nested
from course_lib.runtime import get_device
from tests.labs.support import (
    cell_source, grade_cells, hidden_and_visible, kernel, nbgrader, run_rubric, stubs, submission, visible_failures,
)
from tests.labtools import lab_files, mistake_fails, nbgrader_course, notebook
from tests.paths import REPO

BY_TOPIC = pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.topic)
MISTAKES = [(lab, path) for lab in LABS for path in lab_files(lab.topic).mistakes]
BY_MISTAKE = pytest.mark.parametrize(("lab", "mistake"), MISTAKES, ids=[f"{lab.topic}-{p.stem}" for lab, p in MISTAKES])

# Graded cells no known mistake covers yet (a fixture for one of them must remove it from here).
CELLS_WITHOUT_A_KNOWN_MISTAKE: dict[str, set[str]] = {}

# Labs whose visible tests do not print a confirmation yet (issue 13): a lab that adds them leaves this set.
VISIBLE_TESTS_WITHOUT_CONFIRMATION: set[str] = set()

# Per lab: pieces of the solution that must appear nowhere in the release (its prose included), and a
# release grade cell with a line of its visible test.
RELEASE_SAMPLES = {
    "attention": (("masked_fill",), ("test_sdpa_distribution", "torch.allclose(weights.sum(dim=-1)")),
    "tokenization": (("(-stats[p], p)", "i += 2"), ("test_get_stats", "{(97, 97): 3}")),
    "seq2seq": (("masked_fill", ".tril()"), ("test_causal_self_attention", "peek at later tokens")),
    "decoding": (("keep_sorted", "k[rows], v[rows]"), ("test_top_p", "top_p_filter(logits, 0.6)")),
    "reformer": (("stable=True).indices", "torch.roll(chunks, 1"), ("test_hash", "[[0, 1, 2, 3]]")),
    "pretraining": (("(u < probability) & (input_ids >= n_special)", "torch.cat([labels[:, 1:], last], dim=1)"),
                    ("test_shift", "[[12, 13, 14, -100], [22, -100, -100, -100]]")),
    "transfer": (("(hidden * weights).sum(dim=1) / weights.sum(dim=1)", "[tag] + [IGNORE_INDEX] * (len(pieces) - 1)",
                  'reduction="batchmean", log_target=True'),
                 ("test_align", "[-100, 5, 0, -100, -100, 7, -100]")),
    "long_range": (("(index[:, None] - index[None, :]).abs() <= window", "layout[k + 1, keys] = True",
                    "torch.exp(running_max - shift)"),
                   ("test_online_update", "(1 + 3 + 14) / 4 = 4.5")),
    "distributed": (("(d + shift - s) % n", "loads.index(min(loads))", "group.broadcast(new_params[i], src=owner)"),
                    ("test_ring", "[11.0, 22.0, 30.0, 40.0]")),
}


@functools.cache
def _solution(topic: str) -> dict:
    """The reference solution's kernel for the lab (shared: the checks leave a kernel as they found it)."""
    return kernel(lab_files(topic))


def _functions(lab) -> set[str]:
    return {name for criterion in lab.checks.RUBRIC for name in criterion.functions}


# --- the notebooks ---------------------------------------------------------------------------------

@BY_TOPIC
def test_grade_cells_follow_the_rubric(lab):
    cells = grade_cells(lab_files(lab.topic).source)
    assert [(nbgrader(c)["grade_id"], nbgrader(c)["points"]) for c in cells] == list(lab.checks.RUBRIC.points.items())


@BY_TOPIC
def test_each_grade_cell_runs_its_criterion_in_hidden_tests_first(lab):
    """First, so that grading reports the check's message; nothing else hidden, so the cell grades one criterion."""
    for cell in grade_cells(lab_files(lab.topic).source):
        criterion = lab.checks.RUBRIC[nbgrader(cell)["grade_id"]]
        hidden, visible = hidden_and_visible(cell)
        assert hidden == (f"from course_lib.lab_checks import {lab.topic} as {lab.topic}_checks\n"
                          f'{lab.topic}_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})\n')
        assert "assert" in visible, f"{criterion.grade_id} has no visible test"


@BY_TOPIC
def test_one_solution_cell_per_graded_function_and_nothing_else_graded(lab):
    files = lab_files(lab.topic)
    defined = []
    for cell in notebook(files.source)["cells"]:
        if nbgrader(cell).get("solution"):
            assert not nbgrader(cell).get("grade"), f"{cell['id']}: a solution cell is not graded itself"
            tree = ast.parse(nbgrader_course.solution_code(files.source)[nbgrader(cell)["grade_id"]])
            functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
            assert len(functions) == 1, f"{cell['id']} defines {functions}"
            defined += functions
    assert sorted(defined) == sorted(_functions(lab)) == sorted(lab.checks.RUBRIC.references)
    assert not any("BEGIN SOLUTION" in code for code in nbgrader_course.solution_code(files.source).values())


@BY_TOPIC
@pytest.mark.parametrize("which", ["source", "release"])
def test_committed_notebooks_have_no_outputs(lab, which):
    for cell in notebook(getattr(lab_files(lab.topic), which))["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


@BY_TOPIC
def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests(lab):
    """Cell by cell the release is the source with each solution replaced by the stub and each grade
    cell cut to its visible test; nothing else changes."""
    files = lab_files(lab.topic)
    source, release = notebook(files.source)["cells"], notebook(files.release)["cells"]
    assert [(c["id"], c["cell_type"]) for c in release] == [(c["id"], c["cell_type"]) for c in source]
    for ours, theirs in zip(source, release):
        text = cell_source(ours)
        solution = re.search(r"^([ \t]*)### BEGIN SOLUTION\n.*?### END SOLUTION", text, re.DOTALL | re.MULTILINE)
        if nbgrader(ours).get("grade"):
            text = hidden_and_visible(ours)[1]
        elif solution:
            indent = solution.group(1)
            text = text[:solution.start()] + f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()" \
                + text[solution.end():]
        assert cell_source(theirs) == text, ours["id"]
    released = files.release.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in released and "HIDDEN TESTS" not in released and f"{lab.topic}_checks" not in released
    pieces, (grade_id, visible_line) = RELEASE_SAMPLES[lab.topic]
    assert not [piece for piece in pieces if piece in released]  # no piece of the solution leaked
    assert visible_line in next(cell_source(c) for c in release if c["id"] == grade_id)


def test_every_lab_has_release_samples():
    assert set(RELEASE_SAMPLES) == {lab.topic for lab in LABS}


def test_the_labs_readme_gives_each_labs_points():
    readme = (REPO / "labs" / "README.md").read_text(encoding="utf-8")
    stated = dict(re.findall(r"`(\d\d_\w+)` \((?:[^()]|\([^()]*\))*?; (\d+) points\)", readme))
    assert stated == {lab.assignment: f"{sum(lab.checks.RUBRIC.points.values()):g}" for lab in LABS}


# --- the checks ------------------------------------------------------------------------------------

@BY_TOPIC
def test_the_reference_solution_passes_every_check(lab):
    assert run_rubric(lab.checks.RUBRIC, _solution(lab.topic)) == {}


@BY_TOPIC
def test_the_rubric_references_pass_every_check(lab):
    assert run_rubric(lab.checks.RUBRIC, lab.checks.RUBRIC.references) == {}


@BY_TOPIC
def test_the_stub_fails_every_check_and_says_so(lab):
    files = lab_files(lab.topic)
    failures = run_rubric(lab.checks.RUBRIC, kernel(files, stubs(files)))
    assert set(failures) == set(lab.checks.RUBRIC.points)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values()), failures


@BY_MISTAKE
def test_each_known_mistake_fails_exactly_its_cells_with_a_hint(lab, mistake):
    failures = run_rubric(lab.checks.RUBRIC, kernel(lab_files(lab.topic), submission(lab_files(lab.topic), mistake)))
    expected = mistake_fails(mistake)
    assert set(failures) == set(expected), failures
    for grade_id, phrase in expected.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def _without_docstring(code: str) -> str:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@BY_TOPIC
def test_each_lab_has_three_correct_variants_that_differ_from_the_solution_and_score_full_marks(lab):
    """No false alarm on correct code written differently (issue 12): ``correct_<what>.py`` fixtures with
    ``FAILS = {}`` go through every mistake test (structure, nbgrader round trips, sandbox) losing nothing."""
    files = lab_files(lab.topic)
    variants = [path for path in files.mistakes if path.stem.startswith("correct_")]
    assert len(variants) >= 3, (
        f"lab {lab.topic} has {len(variants)} correct variant(s) in {files.mistakes_dir.relative_to(REPO)}; it needs "
        "at least 3: correct solutions written differently from the reference (another data type, another torch "
        "idiom, another loop), each a correct_<what>.py with FAILS = {} (see labs/README.md, 'Correct variants')")
    solutions = nbgrader_course.solution_code(files.source)
    for variant in variants:
        assert mistake_fails(variant) == {}, f"{variant.name}: a correct variant fails nothing, FAILS = {{}}"
        replaced = nbgrader_course.mistake_code(variant, solutions)
        copies = [grade_id for grade_id, code in replaced.items()
                  if _without_docstring(code) == _without_docstring(solutions[grade_id])]
        assert replaced and not copies, f"{variant.name}: {copies or 'nothing'} is the solution itself, not a variant"
        assert run_rubric(lab.checks.RUBRIC, kernel(files, submission(files, variant))) == {}, variant.name


@BY_MISTAKE
def test_mistake_files_replace_only_the_cells_of_their_functions(lab, mistake):
    """A mistake file's functions replace exactly the solution cells defining them, and it may fail only
    cells that grade one of them."""
    solutions = nbgrader_course.solution_code(lab_files(lab.topic).source)
    text = mistake.read_text(encoding="utf-8")
    functions = {node.name: ast.get_source_segment(text, node) for node in ast.parse(text).body
                 if isinstance(node, ast.FunctionDef)}
    cell_of = {name: grade_id for grade_id, code in solutions.items()
               for name in re.findall(r"^def (\w+)\(", code, re.MULTILINE)}
    assert nbgrader_course.mistake_code(mistake, solutions) == {cell_of[name]: code for name, code in functions.items()}
    graded_by_them = {c.grade_id for c in lab.checks.RUBRIC if set(c.functions) & set(functions)}
    assert set(mistake_fails(mistake)) <= graded_by_them


@BY_TOPIC
def test_every_graded_cell_has_a_known_mistake(lab):
    covered = {grade_id for mistake in lab_files(lab.topic).mistakes for grade_id in mistake_fails(mistake)}
    assert set(lab.checks.RUBRIC.points) - covered == CELLS_WITHOUT_A_KNOWN_MISTAKE.get(lab.topic, set())


@BY_TOPIC
def test_visible_tests_pass_with_the_solution_and_fail_only_for_the_mistakes_own_cells(lab):
    files = lab_files(lab.topic)
    assert visible_failures(files, kernel(files, examples=True)) == set()
    for mistake in files.mistakes:
        failed = visible_failures(files, kernel(files, submission(files, mistake), examples=True))
        assert failed <= set(mistake_fails(mistake)), mistake.stem


def _confirmation(grade_id: str) -> str:
    return f"✓ {grade_id}: visible checks passed (hidden checks run at grading)"


@BY_TOPIC
def test_each_visible_test_says_so_when_it_passes(lab):
    """Its last line prints a confirmation, reached only when every assert before it held."""
    if lab.topic in VISIBLE_TESTS_WITHOUT_CONFIRMATION:
        pytest.skip(f"{lab.topic}'s visible tests do not confirm yet (VISIBLE_TESTS_WITHOUT_CONFIRMATION)")
    files = lab_files(lab.topic)
    solution = kernel(files, examples=True)
    stub = kernel(files, stubs(files), examples=True, failing_examples_go_on=True)  # reformer's demo calls stubs
    for cell in grade_cells(files.source):
        grade_id = nbgrader(cell)["grade_id"]
        visible = hidden_and_visible(cell)[1]
        assert visible.rstrip().splitlines()[-1] == f'print("{_confirmation(grade_id)}")', grade_id
        printed, printed_by_stub = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(visible, grade_id, "exec"), dict(solution))  # noqa: S102 (the lab's own test)
        with contextlib.redirect_stdout(printed_by_stub), pytest.raises(Exception):  # the stub fails ...
            exec(compile(visible, grade_id, "exec"), dict(stub))  # noqa: S102
        # ... before the confirmation, which the solution prints once, last (a test may say more before it)
        assert printed.getvalue().splitlines()[-1:] == [_confirmation(grade_id)], grade_id
        assert printed.getvalue().count(_confirmation(grade_id)) == 1, grade_id
        assert _confirmation(grade_id) not in printed_by_stub.getvalue(), grade_id


@BY_TOPIC
def test_each_cell_is_graded_with_the_references_of_the_other_functions(lab):
    """While a cell is graded the lab's other functions are the references, whatever the student's are
    (here: functions that raise); afterwards the student's are back."""
    def broken(name):
        def function(*args, **kwargs):
            raise RuntimeError(f"the student's {name}")
        return function

    rubric = lab.checks.RUBRIC
    for criterion in rubric:
        namespace = kernel(lab_files(lab.topic))
        others = {name: broken(name) for name in rubric.references if name not in criterion.functions}
        namespace.update(others)
        rubric.run(criterion.grade_id, *(namespace[name] for name in criterion.functions))
        assert all(namespace[name] is function for name, function in others.items()), criterion.grade_id


def _same(a, b) -> bool:
    if hasattr(a, "all_reduce"):  # a process group (the distributed lab): the same rank of a world of the same size
        return type(a) is type(b) and (a.rank, a.world_size) == (b.rank, b.world_size)
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return [tensor for item in items for tensor in _tensors(item)]


def _shapes(value) -> tuple:
    return tuple(tuple(tensor.shape) for tensor in _tensors(value))


@BY_TOPIC
def test_checks_are_reproducible_vary_their_inputs_and_run_on_the_course_device(lab):
    references = lab.checks.RUBRIC.references

    def spying(calls, name):
        def spy(*args, **kwargs):
            calls.append(clone_nested((name, args, kwargs)))
            return references[name](*args, **kwargs)
        return spy

    for criterion in lab.checks.RUBRIC:
        runs = []
        for _ in range(2):
            calls: list = []
            criterion.check(*(spying(calls, name) for name in criterion.functions))
            runs.append(calls)
        first, second = runs
        if any(hasattr(item, "all_reduce") for call in first for item in call[1]):
            # The ranks are threads (the distributed lab): within one trial their calls come in any order, each
            # rank's in trial order. A stable sort by rank lines the two runs up.
            def by_rank(call):
                return next(item.rank for item in call[1] if hasattr(item, "all_reduce"))

            first, second = sorted(first, key=by_rank), sorted(second, key=by_rank)
        assert len(first) == len(second) and all(map(_same, first, second)), criterion.grade_id
        if _tensors(first):  # tensor inputs: the trials vary their shapes, not only their numbers
            assert len({_shapes(call) for call in first}) > 1, f"{criterion.grade_id}: every trial has the same shapes"
        assert any(not _same(call, first[0]) for call in first), f"{criterion.grade_id}: every trial is the same"
        assert {t.device.type for call in first for t in _tensors(call)} <= {get_device().type}, criterion.grade_id
