"""Lab 02 (byte-pair encoding): its hidden checks and its notebooks.

Fast tests call the checks of ``course_lib.lab_checks.tokenization`` directly: the lab's own solution
passes all of them, the references agree with ``course_lib.tokenization`` (and so with HF
``tokenizers``), and each known mistake in ``tests/fixtures/lab_bpe/`` fails exactly the checks its
``FAILS`` names, with a hint.
The real nbgrader round trips of every lab are in ``tests/test_lab_round_trips.py``.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.lab_checks import tokenization as tokenization_checks
from course_lib.lab_checks import tokenization_references
from tests.labtools import lab_files, labs_script, load_module, notebook
from course_lib.lab_checks.toolkit import CheckFailed, trials
from course_lib.tokenization import ByteLevelBPE, merge_pair, train_bpe_naive

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES, POINTS = lab_files("tokenization")
STUDENT_FUNCTIONS = ("get_stats", "merge", "train", "encode")




def _source(cell) -> str:
    return "".join(cell["source"])


@pytest.fixture(scope="module")
def solution() -> dict:
    """The source notebook's solution functions, defined in one namespace as in a kernel."""
    namespace: dict = {}
    for code in labs_script.solution_code(SOURCE).values():
        exec(compile(code, str(SOURCE), "exec"), namespace)
    return {name: namespace[name] for name in STUDENT_FUNCTIONS}


def _run_rubric(functions: dict) -> dict[str, str]:
    """Run every check; return ``{grade_id: failure message}`` of the checks that failed."""
    failures = {}
    for criterion in tokenization_checks.RUBRIC:
        try:
            tokenization_checks.RUBRIC.run(criterion.grade_id, *(functions[name] for name in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures


# --- the references are the library's rules ------------------------------------------------------

def test_solution_passes_every_check(solution):
    assert _run_rubric(solution) == {}


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="abcd", min_size=1, max_size=40), num_merges=st.integers(1, 10))
def test_reference_train_learns_the_library_merges(text, num_merges):
    """On one word of letters (pre-tokenization keeps it whole), the lab's byte-id trainer and
    course_lib's HF-pinned trainer learn the same merges in the same order."""
    merges = tokenization_references.reference_train(text, num_merges)
    library = train_bpe_naive([text], vocab_size=256 + num_merges, min_frequency=1)
    table = {i: chr(i) for i in range(256)}
    for index, (left, right) in enumerate(merges):
        table[256 + index] = table[left] + table[right]
    assert [(table[a], table[b]) for a, b in merges] == library.merges[: len(merges)]
    assert len(merges) == len(library.merges) or len(library.merges) < num_merges


@settings(max_examples=40, deadline=None)
@given(corpus=st.text(alphabet="abc", min_size=2, max_size=40), text=st.text(alphabet="abc", max_size=20),
       num_merges=st.integers(1, 8))
def test_reference_encode_equals_the_library_tokenizer(corpus, text, num_merges):
    library = train_bpe_naive([corpus], vocab_size=256 + num_merges, min_frequency=1)
    if len(set(map("".join, library.merges))) < len(library.merges):
        return  # a token string made twice: the byte-id version has two ids for it, the library one
    merges = tokenization_references.reference_train(corpus, num_merges)
    tokens = library.tokens(text) if text else []
    table = {i: bytes([i]) for i in range(256)}
    for index, (left, right) in enumerate(merges):
        table[256 + index] = table[left] + table[right]
    assert [table[i].decode() for i in tokenization_references.reference_encode(text, merges)] == tokens


def test_checks_are_reproducible_and_exercise_runs_ties_and_two_byte_letters():
    seen: list = []

    def spy(text, num_merges):
        seen.append((text, num_merges))
        return tokenization_references.reference_train(text, num_merges)

    tokenization_checks.check_train(spy)
    first = list(seen)
    seen.clear()
    tokenization_checks.check_train(spy)
    assert first == seen and len(first) == tokenization_checks.TRIALS
    assert len({text for text, _ in first}) == len(first) and len({n for _, n in first}) > 1
    corpora = [tokenization_references.random_corpus(trial) for trial in trials(30, seed=0)]
    assert any("ĉ" in text for text in corpora) and any(re.search(r"(.)\1\1", text) for text in corpora)
    tokenization_checks.check_train_ties(spy)
    tie_texts = {text for text, _ in seen[len(first):]}
    assert len(tie_texts) == tokenization_checks.TRIALS  # enough tied corpora were drawn


def test_helpers_are_swapped_in_only_during_the_check(solution):
    namespace = {"get_stats": "student's", "merge": "student's"}
    code = "def train(text, num_merges):\n    return [max(get_stats(list(text.encode())).items())[0]][:num_merges]"
    exec(code, namespace)
    with pytest.raises(CheckFailed):
        tokenization_checks.RUBRIC.run("test_train", namespace["train"])  # wrong, ran with the reference get_stats ...
    assert namespace["get_stats"] == namespace["merge"] == "student's"  # ... and the student's came back


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_exactly_its_checks_with_a_hint(solution, mistake):
    module = load_module(mistake, f"lab_bpe_mistake_{mistake.stem}")
    functions = {**solution, **{name: getattr(module, name) for name in STUDENT_FUNCTIONS if hasattr(module, name)}}
    failures = _run_rubric(functions)
    assert set(failures) == set(module.FAILS), failures
    for grade_id, phrase in module.FAILS.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def test_unimplemented_functions_fail_every_check_and_say_so():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    failures = _run_rubric({name: stub for name in STUDENT_FUNCTIONS})
    assert set(failures) == set(POINTS)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values())


@pytest.mark.parametrize(("function", "value", "message"), [
    ("get_stats", None, "should return a dict"),
    ("merge", None, "should return a list of ints"),
    ("train", [[97, 98, 99]], "should return a list of \\(int, int\\) pairs"),
    ("encode", "abc", "should return a list of ints"),
])
def test_wrong_return_types_are_named(solution, function, value, message):
    criterion = next(c for c in tokenization_checks.RUBRIC if c.functions == (function,))
    with pytest.raises(CheckFailed, match=message):
        criterion.check(lambda *args: value)


def test_merge_check_reports_a_lost_last_token_with_the_general_message():
    def drops_the_tail(ids, pair, new_id):
        return merge_pair(ids, pair, new_id)[:-1] if ids else []

    with pytest.raises(CheckFailed, match=r"merge\(\[1, 2, 3, 1, 2\], \(1, 2\), 256\) gave \[256, 3\]") as failure:
        tokenization_checks.check_merge(drops_the_tail)
    assert "do not lose the last token" in failure.value.hint


def test_library_tokenizer_agrees_on_the_visible_encode_example():
    vocab = {chr(i): i for i in range(ord("a"), ord("d"))} | {"bc": 256, "ab": 257}
    assert ByteLevelBPE(vocab, [("b", "c"), ("a", "b")]).tokens("abc") == ["a", "bc"]
    assert tokenization_references.reference_encode("abc", [(98, 99), (97, 98)]) == [97, 256]


# --- the notebooks ----------------------------------------------------------------------------

def test_source_notebook_grade_cells_follow_the_rubric():
    cells = [c for c in notebook(SOURCE)["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in cells} == POINTS
    by_id = {c.grade_id: c for c in tokenization_checks.RUBRIC}
    for cell in cells:
        criterion = by_id[cell["metadata"]["nbgrader"]["grade_id"]]
        hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", _source(cell), re.S)
        assert hidden, f"{criterion.grade_id} has no hidden tests"
        call = f'tokenization_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})'
        assert call in hidden.group(1), f"{criterion.grade_id} should call {call}"


def test_every_graded_function_has_a_solution_cell():
    solutions = labs_script.solution_code(SOURCE)
    defined = {name for code in solutions.values() for name in re.findall(r"^def (\w+)\(", code, re.M)}
    assert defined == {name for c in tokenization_checks.RUBRIC for name in c.functions} == set(STUDENT_FUNCTIONS)


@pytest.mark.parametrize("path", [SOURCE, RELEASE], ids=["source", "release"])
def test_committed_notebooks_have_no_outputs(path):
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests():
    text = RELEASE.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "tokenization_checks.check" not in text
    assert "(-stats[p], p)" not in text and "i += 2" not in text  # no piece of the solution leaked
    release_cells = {c["id"]: _source(c) for c in notebook(RELEASE)["cells"]}
    for name in ("get_stats", "merge", "train", "encode"):
        assert release_cells[name].count("raise NotImplementedError()") == 1
    assert "{(97, 97): 3}" in release_cells["test_get_stats"]


def test_visible_tests_of_train_and_encode_do_not_depend_on_the_helpers_mistakes():
    """Their examples hold no run of one symbol, so the overlap mistakes of get_stats/merge cannot show."""
    for text in ["hug hugs pug hug", "xyab xyab", "abcab"]:
        assert not re.search(r"(.)\1", text)
    assert tokenization_references.tie_free_steps("hug hugs pug hug") >= 3  # the training example has no ties
