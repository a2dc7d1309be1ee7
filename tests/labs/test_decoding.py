"""Lab 04 (decoding): its hidden checks and its notebooks.

Fast tests call the checks of ``course_lib.lab_checks.decoding`` directly: the lab's own solution
and the library's filters pass all of them, the beam search the checks loop equals
``course_lib.generate(num_beams=K)``, the finished-score formula picks the sequence the library's beam
search returns, and each known mistake in ``tests/fixtures/lab_decoding/`` fails exactly the checks its
``FAILS`` names, with a hint, and no visible test of another cell.
The real nbgrader round trips of every lab are in ``tests/test_lab_round_trips.py``.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from course_lib.decoding import generate
from course_lib.decoding.processors import top_k_filter, top_p_filter
from course_lib.runtime import get_device
from course_lib.lab_checks import decoding as decoding_checks
from course_lib.lab_checks import decoding_beam_search, decoding_sampling
from course_lib.lab_checks.toolkit import trials
from course_lib.lab_checks.toolkit import CheckFailed
from tests.labtools import lab_files, labs_script, load_module, notebook

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES, POINTS = lab_files("decoding")
STUDENT_FUNCTIONS = ("top_k_filter", "top_p_filter", "filtered_distribution", "beam_search_step", "finished_score")


def _source(cell) -> str:
    return "".join(cell["source"])


def _nbgrader(cell) -> dict:
    return cell["metadata"].get("nbgrader", {})


def _kernel(mistake=None) -> dict:
    """A kernel's namespace after the notebook's set-up, solution and example cells (tests and the final
    demo skipped), a ``mistake`` file's functions replacing their solution cells as in a submission."""
    solutions = labs_script.solution_code(SOURCE)
    code_of = {**solutions, **(labs_script.mistake_code(mistake, solutions) if mistake else {})}
    namespace: dict = {}
    for cell in notebook(SOURCE)["cells"]:
        if cell["cell_type"] != "code" or _nbgrader(cell).get("grade") or cell["id"] == "try-it":
            continue
        code = code_of.get(_nbgrader(cell).get("grade_id"), _source(cell))
        exec(compile(code, f"{SOURCE.name}:{cell['id']}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def solution() -> dict:
    namespace = _kernel()
    return {name: namespace[name] for name in STUDENT_FUNCTIONS}


def _run_rubric(functions: dict) -> dict[str, str]:
    """Run every check; return ``{grade_id: failure message}`` of the checks that failed."""
    failures = {}
    for criterion in decoding_checks.RUBRIC:
        try:
            decoding_checks.RUBRIC.run(criterion.grade_id, *(functions[name] for name in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures


def _mistake(path):
    module = load_module(path, f"lab_decoding_mistake_{path.stem}")
    return module, {name: getattr(module, name) for name in STUDENT_FUNCTIONS if hasattr(module, name)}


# --- the references are the library's ---------------------------------------------------------------

def test_solution_passes_every_check(solution):
    assert _run_rubric(solution) == {}


def test_the_library_filters_pass_their_checks():
    decoding_sampling.check_top_k(top_k_filter)
    decoding_sampling.check_top_k_ties(top_k_filter)
    decoding_sampling.check_top_p(top_p_filter)


@pytest.mark.parametrize(("num_beams", "new_tokens", "seed"), [(2, 5, 0), (4, 12, 1), (5, 8, 2)])
def test_the_checks_beam_search_loop_gives_the_library_generate_ids(num_beams, new_tokens, seed):
    model = decoding_beam_search._shakespeare_model()
    prompt = torch.randint(1, model.config.vocab_size, (1, 3 + seed), generator=torch.Generator().manual_seed(seed))
    ours = decoding_beam_search.run_beam_search(decoding_beam_search.reference_beam_step, model, prompt, num_beams, new_tokens)
    library = generate(model, prompt, max_new_tokens=new_tokens, num_beams=num_beams,
                       num_return_sequences=num_beams)
    assert torch.equal(ours, library)


class _Chain(nn.Module):
    """A fake encoder-decoder whose next-token distribution depends on the last token only.

    Tokens: 0 = EOS, 1 = BOS, 2 = a word. After BOS: EOS 0.4, word 0.6; after a word: EOS 0.6, word 0.4.
    Finished sequences (3 new tokens at most): [EOS] 0.4, [w, EOS] 0.36, [w, w, EOS] 0.144, [w, w, w] 0.096.
    """

    TABLE = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.4, 1e-9, 0.6, 1e-9],
                                    [0.6, 1e-9, 0.4, 1e-9], [0.25, 0.25, 0.25, 0.25]]))

    def encode(self, source, source_mask=None):
        return torch.zeros(len(source), 1, 1)

    def decode(self, target, memory, memory_key_padding_mask=None):
        return self.TABLE[target]  # (N, T, V)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_finished_score_ranks_as_the_library_beam_search(length_penalty):
    prompt_length = 2  # a two-token decoder prompt: counting it would change the winner for length_penalty=2
    hypotheses = {(0,): 0.4, (2, 0): 0.36, (2, 2, 0): 0.144, (2, 2, 2): 0.096}
    sums = torch.log(torch.tensor(list(hypotheses.values())))
    lengths = torch.tensor([prompt_length + len(h) for h in hypotheses])
    scores = decoding_beam_search.reference_finished_score(sums, lengths, prompt_length, length_penalty)
    winner = list(hypotheses)[int(scores.argmax())]
    ids = generate(_Chain(), torch.tensor([[1, 1]]), source=torch.zeros(1, 1, dtype=torch.long), max_new_tokens=3,
                   num_beams=2, eos_token_id=0, length_penalty=length_penalty)
    generated = ids[0, prompt_length:].tolist()
    assert generated == list(winner) + [0] * (len(generated) - len(winner))  # padded with EOS
    assert {0.0: (0,), 1.0: (2, 0), 2.0: (2, 2, 0)}[length_penalty] == winner  # three different winners


# --- the checks, called directly -----------------------------------------------------------------------

@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_exactly_its_checks_with_a_hint(solution, mistake):
    module, functions = _mistake(mistake)
    failures = _run_rubric({**solution, **functions})
    assert set(failures) == set(module.FAILS), failures
    for grade_id, phrase in module.FAILS.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def test_known_mistakes_cover_the_issue():
    stems = {path.stem for path in MISTAKES}
    assert {"top_p_drops_crossing_token", "no_renormalization", "cache_not_reordered",
            "score_not_normalized", "score_normalized_by_total_length", "two_mistakes"} <= stems


def test_unimplemented_functions_fail_every_check_and_say_so():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    failures = _run_rubric({name: stub for name in STUDENT_FUNCTIONS})
    assert set(failures) == set(POINTS)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values())


def test_checks_run_on_the_course_device_and_are_reproducible(solution):
    seen = []

    def spy(logits, p):
        seen.append((logits.device, logits.clone().cpu(), p))
        return solution["top_p_filter"](logits, p)

    decoding_sampling.check_top_p(spy)
    first = list(seen)
    seen.clear()
    decoding_sampling.check_top_p(spy)
    assert {device.type for device, _, _ in first} == {get_device().type}
    assert len(first) == len(seen) == decoding_sampling.TRIALS
    assert all(torch.equal(a, b) and p == q for (_, a, p), (_, b, q) in zip(first, seen))
    assert len({tuple(logits.shape) for _, logits, _ in first}) > 1 and len({p for *_, p in first}) > 1


def test_filters_are_swapped_in_only_during_the_distribution_checks(solution):
    namespace = {"top_k_filter": "student's", "top_p_filter": "student's", "torch": torch}
    code = ("def filtered_distribution(logits, temperature=1.0, top_k=None, top_p=None):\n"
            "    scores = logits / temperature\n"
            "    if top_k is not None:\n        scores = top_k_filter(scores, top_k)\n"
            "    if top_p is not None:\n        scores = top_p_filter(scores, top_p)\n"
            "    return torch.softmax(scores, dim=-1)\n")
    exec(code, namespace)
    for grade_id in ("test_distribution_sums_to_one", "test_distribution_filters"):  # with the library's filters
        decoding_checks.RUBRIC.run(grade_id, namespace["filtered_distribution"])
    assert namespace["top_k_filter"] == namespace["top_p_filter"] == "student's"


def test_the_beam_step_checks_see_moved_beams_and_several_prompts():
    for check_seed, equal in ((1600, False), (1650, True), (1700, False)):
        steps = [decoding_beam_search._random_step(trial, equal_beam_scores=equal)
                 for trial in trials(decoding_beam_search.TRIALS, seed=check_seed)]
        assert all(not torch.equal(rows.cpu(), torch.arange(len(rows))) for _, (_, _, rows, _) in steps)
        assert max(len(inputs[0]) // inputs[3] for inputs, _ in steps) > 1  # some trials batch several prompts


def test_the_cache_check_judges_the_cache_by_the_students_own_rows(solution):
    def reverses_rows_and_cache(log_probs, beam_scores, cache, num_beams):
        scores, tokens, rows, _ = solution["beam_search_step"](log_probs, beam_scores, cache, num_beams)
        rows = rows.flip(0)  # wrong rows ...
        return scores, tokens, rows, tuple((k[rows], v[rows]) for k, v in cache)  # ... but a cache that follows them

    decoding_beam_search.check_beam_cache(reverses_rows_and_cache)
    with pytest.raises(CheckFailed):
        decoding_beam_search.check_beam_rows(reverses_rows_and_cache)


@pytest.mark.parametrize(("check", "wrong", "message"), [
    (decoding_sampling.check_top_k, lambda logits, k: logits.masked_fill(logits < logits.topk(k).values[..., -1:], 0.0),
     "sets removed tokens to 0 instead of -inf"),
    (decoding_sampling.check_top_k, lambda logits, k: logits.masked_fill(logits < logits.topk(k).values[..., -1:], -torch.inf),
     "k may exceed the vocabulary size"),
    (decoding_sampling.check_top_p, lambda logits, p: logits.masked_fill(top_p_filter(-logits, p).isinf(), -torch.inf),
     "keeps the least likely tokens"),
    (decoding_sampling.check_distribution_filters,
     lambda logits, t, k, p: decoding_sampling.reference_distribution(logits * t * t, t, k, p),
     "the logits are multiplied by the temperature"),
    (decoding_beam_search.check_beam_scores, lambda lp, s, c, k: (s, s, s, c), "has dtype torch.float32"),
    (decoding_beam_search.check_finished_score, lambda s, n, p, lp: s / (n - p - 1) ** lp, "without the EOS token"),
])
def test_other_mistakes_get_their_own_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=re.escape(message)) as failure:
        check(wrong)
    assert failure.value.hint


# --- the notebooks ---------------------------------------------------------------------------------

def _visible_failures(namespace: dict) -> set[str]:
    """Grade ids whose *visible* test (the part after the hidden tests) fails in ``namespace``."""
    failed = set()
    for cell in notebook(SOURCE)["cells"]:
        if _nbgrader(cell).get("grade"):
            visible = _source(cell).split("### END HIDDEN TESTS\n", 1)[1]
            try:
                exec(compile(visible, cell["id"], "exec"), dict(namespace))
            except Exception:
                failed.add(_nbgrader(cell)["grade_id"])
    return failed


def test_visible_tests_pass_with_the_solution_and_fail_only_the_mistakes_own_cells():
    assert _visible_failures(_kernel()) == set()
    for path in MISTAKES:
        module, _ = _mistake(path)
        assert _visible_failures(_kernel(path)) <= set(module.FAILS), path.stem


def test_source_notebook_grade_cells_follow_the_rubric():
    cells = [c for c in notebook(SOURCE)["cells"] if _nbgrader(c).get("grade")]
    assert {_nbgrader(c)["grade_id"]: _nbgrader(c)["points"] for c in cells} == POINTS
    assert sum(POINTS.values()) == 17
    by_id = {c.grade_id: c for c in decoding_checks.RUBRIC}
    for cell in cells:
        criterion = by_id[_nbgrader(cell)["grade_id"]]
        hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", _source(cell), re.S)
        assert hidden, f"{criterion.grade_id} has no hidden tests"
        call = f'decoding_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})'
        assert call in hidden.group(1), f"{criterion.grade_id} should call {call}"


def test_every_graded_function_has_a_solution_cell():
    solutions = labs_script.solution_code(SOURCE)
    defined = {name for code in solutions.values() for name in re.findall(r"^def (\w+)\(", code, re.M)}
    assert defined == {name for c in decoding_checks.RUBRIC for name in c.functions} == set(STUDENT_FUNCTIONS)
    assert not any("BEGIN SOLUTION" in code for code in solutions.values())


@pytest.mark.parametrize("path", [SOURCE, RELEASE], ids=["source", "release"])
def test_committed_notebooks_have_no_outputs(path):
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests():
    text = RELEASE.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "decoding_checks.check" not in text
    assert "keep_sorted" not in text and "k[rows], v[rows]" not in text  # no piece of the solutions leaked
    cells = {c["id"]: _source(c) for c in notebook(RELEASE)["cells"]}
    for name in STUDENT_FUNCTIONS:
        assert cells[name].count("raise NotImplementedError()") == 1
    assert "top_p_filter(logits, 0.6)" in cells["test_top_p"]
