"""Lab 03 (encoder-decoders): its hidden checks and its notebooks.

Fast tests call the checks of ``course_lib.lab_checks.seq2seq`` directly: the lab's own solution
passes all of them and equals PyTorch's ``nn.TransformerDecoderLayer`` and ``course_lib``'s modules,
and each known mistake in ``tests/fixtures/lab_seq2seq/`` fails exactly the checks its ``FAILS``
names, with a hint, when spliced into the notebook's cells (so the decoder layer's checks really run
next to a wrong ``masked_self_attention``). The real nbgrader round trips of every lab are in
``tests/test_lab_round_trips.py``; the sandboxed grader's in ``tests/test_autograder.py``.
"""
from __future__ import annotations

import re

import pytest
import torch
from tests.labtools import lab_files, labs_script, mistake_fails, notebook

import course_lib
from course_lib.lab_checks import seq2seq as seq2seq_checks
from course_lib.lab_checks import seq2seq_decoder, seq2seq_references
from course_lib.lab_checks.toolkit import trials
from course_lib.lab_checks.toolkit import CheckFailed

LAB, SOURCE, RELEASE, MISTAKES_DIR, MISTAKES, POINTS = lab_files("seq2seq")
STUDENT_FUNCTIONS = ("additive_attention", "masked_self_attention", "cross_attention", "decoder_layer")


def _source(cell) -> str:
    return "".join(cell["source"])


def _cell(cell_id: str) -> str:
    """The source of the source notebook's cell ``cell_id`` (graded and solution cells: id = grade_id)."""
    return next(_source(c) for c in notebook(SOURCE)["cells"] if c.get("id") == cell_id)


def _kernel(replacements: dict[str, str] | None = None) -> dict:
    """The set-up cell and the solution cells (``replacements``: grade_id -> code) run in one namespace,
    as in a student's kernel: every function sees the others by their notebook names."""
    namespace: dict = {}
    exec(compile(_cell("setup"), str(SOURCE), "exec"), namespace)  # noqa: S102 (the lab's own cells)
    for grade_id, code in {**labs_script.solution_code(SOURCE), **(replacements or {})}.items():
        exec(compile(code, f"{SOURCE}:{grade_id}", "exec"), namespace)  # noqa: S102
    return namespace


@pytest.fixture(scope="module")
def kernel() -> dict:
    return _kernel()


def _run_rubric(namespace: dict) -> dict[str, str]:
    """Run every check; return ``{grade_id: failure message}`` of the checks that failed."""
    failures = {}
    for criterion in seq2seq_checks.RUBRIC:
        try:
            seq2seq_checks.RUBRIC.run(criterion.grade_id, *(namespace[name] for name in criterion.functions))
        except AssertionError as error:
            failures[criterion.grade_id] = str(error)
    return failures


# --- the solution is the library's and PyTorch's ------------------------------------------------

def test_solution_passes_every_check(kernel):
    assert _run_rubric(kernel) == {}


def test_setup_attention_is_course_lib_multi_head_attention(kernel):
    torch.manual_seed(0)
    mha = course_lib.MultiHeadAttention(12, 3)
    x, memory = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    keep = course_lib.padding_mask([6, 3])  # (B, S)
    with torch.no_grad():
        expected, _ = mha(x, memory, memory, key_padding_mask=keep)
    got = kernel["multi_head_attention"](x, memory, seq2seq_references.attention_params(mha), 3, keep[:, None, None, :])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_solution_decoder_layer_equals_torch_decoder_layer_with_padding(kernel, norm_first):
    torch.manual_seed(1)
    reference = torch.nn.TransformerDecoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True,
                                                 norm_first=norm_first).eval()
    with torch.no_grad():  # norms that are not the identity, so their place matters
        for norm in (reference.norm1, reference.norm2, reference.norm3):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0.0, 0.3)
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    tgt_keep, src_keep = course_lib.padding_mask([5, 2, 4]), course_lib.padding_mask([7, 7, 3])
    with torch.no_grad():  # torch's masks are the other way round: True = blocked
        expected = reference(x, memory, tgt_mask=~course_lib.causal_mask(5), tgt_key_padding_mask=~tgt_keep,
                             memory_key_padding_mask=~src_keep)
    params = seq2seq_references.decoder_params(course_lib.TransformerDecoderLayer.from_torch(reference))
    got = kernel["decoder_layer"](x, memory, params, 4, norm_first, tgt_keep, src_keep)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_solution_additive_attention_equals_course_lib(kernel):
    torch.manual_seed(2)
    module = course_lib.AdditiveAttention(query_dim=3, key_dim=5, attention_dim=7)
    query, keys, keep = torch.randn(2, 3), torch.randn(2, 4, 5), course_lib.padding_mask([4, 2])
    with torch.no_grad():
        expected = module(query, keys, keep)
    got = kernel["additive_attention"](query, keys, module.W_q.weight, module.W_k.weight, module.v.weight[0], keep)
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("norm_first, rule", [(False, "post"), (True, "pre")])
def test_the_checks_residual_rules_rebuild_the_library_layer(norm_first, rule):
    """The rules the placement checks use to name a wrong order are right for the right order."""
    trial = next(trials(1, seed=5))
    layer, params, heads, x, memory = seq2seq_references.random_layer(trial, norm_first)
    with torch.no_grad():
        expected = layer(x, memory, tgt_mask=course_lib.causal_mask(x.shape[1], device=x.device))
    torch.testing.assert_close(seq2seq_decoder._layer_with_rule(rule, x, memory, params, heads), expected,
                               atol=1e-5, rtol=1e-4)


# --- known mistakes -----------------------------------------------------------------------------

@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda p: p.stem)
def test_each_mistake_fails_exactly_its_checks_with_a_hint(mistake):
    spliced = labs_script.mistake_code(mistake, labs_script.solution_code(SOURCE))
    failures = _run_rubric(_kernel(spliced))
    expected = mistake_fails(mistake)
    assert set(failures) == set(expected), failures
    for grade_id, phrase in expected.items():
        assert phrase in failures[grade_id], failures[grade_id]
        assert "\nHint: " in failures[grade_id], failures[grade_id]


def test_every_graded_cell_has_a_known_mistake():
    covered = {grade_id for mistake in MISTAKES for grade_id in mistake_fails(mistake)}
    assert covered == set(POINTS)


def test_unimplemented_functions_fail_every_check_and_say_so():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    failures = _run_rubric({name: stub for name in STUDENT_FUNCTIONS})
    assert set(failures) == set(POINTS)
    assert all("raised NotImplementedError" in m and "replace the `raise NotImplementedError()`" in m
               for m in failures.values())


def test_decoder_checks_use_the_reference_sub_layers_and_put_the_students_back():
    namespace = _kernel({"masked_self_attention": "def masked_self_attention(*args, **kwargs):\n    raise RuntimeError()",
                         "cross_attention": "def cross_attention(*args, **kwargs):\n    raise RuntimeError()"})
    seq2seq_checks.RUBRIC.run("test_post_norm", namespace["decoder_layer"])
    seq2seq_checks.RUBRIC.run("test_decoder_padding", namespace["decoder_layer"])
    for name in ("masked_self_attention", "cross_attention"):  # the student's own functions are back afterwards
        with pytest.raises(RuntimeError):
            namespace[name]()


def test_code_that_edits_its_inputs_in_place_is_still_graded_correctly(kernel):
    solution = kernel["decoder_layer"]

    def spends_its_parameters(x, memory, params, num_heads, norm_first=False, tgt_key_padding_mask=None,
                              memory_key_padding_mask=None):
        out = solution(x, memory, params, num_heads, norm_first, tgt_key_padding_mask, memory_key_padding_mask)
        for group in params.values():  # legal for the student: these are their copies
            for tensor in group.values():
                tensor.zero_()
        x.zero_()
        return out

    seq2seq_decoder.check_post_norm(spends_its_parameters)
    seq2seq_decoder.check_decoder_padding(spends_its_parameters)


def test_checks_run_on_the_course_device_and_are_reproducible(kernel):
    seen = []

    def spy(x, p, num_heads, key_padding_mask=None):
        seen.append((x.device, x.clone().cpu()))
        return kernel["masked_self_attention"](x, p, num_heads, key_padding_mask)

    seq2seq_decoder.check_self_attention_padding(spy)
    first = list(seen)
    seen.clear()
    seq2seq_decoder.check_self_attention_padding(spy)
    assert {device.type for device, _ in first} == {course_lib.get_device().type}
    assert len(first) == len(seen) == seq2seq_decoder.TRIALS
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, seen))
    assert len({tuple(x.shape) for _, x in first}) > 1  # the trials do vary the shapes


@pytest.mark.parametrize("attention", ["setup", "course_lib"])
def test_a_causal_mask_without_its_diagonal_is_named(kernel, attention):
    """torch's fused kernel gives NaN for a query that may attend to nothing, course_lib's gives 0: both are named."""
    attend = kernel["multi_head_attention"] if attention == "setup" else seq2seq_references.reference_attention

    def no_diagonal(x, p, num_heads, key_padding_mask=None):
        size = x.shape[1]
        return attend(x, x, p, num_heads, torch.ones(size, size, dtype=torch.bool, device=x.device).tril(-1))

    with pytest.raises(CheckFailed) as failure:
        seq2seq_decoder.check_causal_self_attention(no_diagonal)
    assert ".tril()" in failure.value.hint and "diagonal" in failure.value.hint


def test_swapped_padding_masks_are_reported_with_a_hint(kernel):
    solution = kernel["decoder_layer"]

    def swapped(x, memory, params, num_heads, norm_first=False, tgt_key_padding_mask=None,
                memory_key_padding_mask=None):
        return solution(x, memory, params, num_heads, norm_first, memory_key_padding_mask, tgt_key_padding_mask)

    with pytest.raises(CheckFailed) as failure:
        seq2seq_decoder.check_decoder_padding(swapped)
    assert failure.value.hint


# --- the notebooks ----------------------------------------------------------------------------

def test_source_notebook_grade_cells_follow_the_rubric():
    cells = [c for c in notebook(SOURCE)["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
    assert {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"]["points"] for c in cells} == POINTS
    by_id = {c.grade_id: c for c in seq2seq_checks.RUBRIC}
    for cell in cells:
        criterion = by_id[cell["metadata"]["nbgrader"]["grade_id"]]
        hidden = re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", _source(cell), re.DOTALL)
        assert hidden, f"{criterion.grade_id} has no hidden tests"
        assert _source(cell).startswith("### BEGIN HIDDEN TESTS")  # hidden first: grading reports its message
        call = f'seq2seq_checks.RUBRIC.run("{criterion.grade_id}", {", ".join(criterion.functions)})'
        assert call in hidden.group(1), f"{criterion.grade_id} should call {call}"


def test_every_graded_function_has_a_solution_cell():
    solutions = labs_script.solution_code(SOURCE)
    defined = {name for code in solutions.values() for name in re.findall(r"^def (\w+)\(", code, re.MULTILINE)}
    assert defined == {name for c in seq2seq_checks.RUBRIC for name in c.functions} == set(STUDENT_FUNCTIONS)


@pytest.mark.parametrize("path", [SOURCE, RELEASE], ids=["source", "release"])
def test_committed_notebooks_have_no_outputs(path):
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]


def test_release_hides_solutions_and_hidden_tests_but_keeps_visible_tests():
    text = RELEASE.read_text(encoding="utf-8")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "seq2seq_checks.check" not in text
    assert "masked_fill" not in text and ".tril()" not in text  # no piece of the solution leaked
    release_cells = {c["id"]: _source(c) for c in notebook(RELEASE)["cells"]}
    for name in STUDENT_FUNCTIONS:
        assert release_cells[name].count("raise NotImplementedError()") == 1
    assert "peek at later tokens" in release_cells["test_causal_self_attention"]


def test_mistake_files_replace_only_the_cells_of_their_functions():
    solutions = labs_script.solution_code(SOURCE)
    replaced = labs_script.mistake_code(MISTAKES_DIR / "two_mistakes.py", solutions)
    assert set(replaced) == {"additive_attention", "masked_self_attention"}
    assert "dim=0" in replaced["additive_attention"] and ".tril()" not in replaced["masked_self_attention"]


@pytest.mark.slow
def test_the_students_layers_translate_like_the_shipped_model(kernel):
    """The notebook's last cell: the solution's decoder_layer inside the Multi30k Transformer changes nothing."""
    namespace = dict(kernel)
    code = _cell("try-it").replace("print(", "outputs.append((")  # collect both translations instead of printing
    code = code.replace("translate(model, sentences))", "translate(model, sentences)))")
    namespace["outputs"] = []
    exec(compile(code, f"{SOURCE}:try-it", "exec"), namespace)  # noqa: S102
    (_, library), (_, yours) = namespace["outputs"]
    assert yours == library and all(library)
