"""The labs' shared building blocks on their own: :mod:`course_lib.lab_checks.toolkit` and ``.rubric``.

Messages of the comparisons, student calls that cannot touch the check's inputs, reproducible
trials, naming a known mistake (``diagnose``), and the rubric: its validation and how
:meth:`Rubric.run` puts the references around the graded functions only while a cell is graded.
How each lab uses them: ``test_structure.py`` and ``test_<topic>.py``.
"""
from __future__ import annotations

import re

import pytest
import torch

from course_lib.lab_checks.rubric import Criterion, Rubric
from course_lib.lab_checks.toolkit import (
    CheckFailed, call_for_tensor, call_student, clone_nested, close_to_any, diagnose, expect_close, expect_results,
    expect_tensor, trials,
)
from course_lib.lab_checks.inputs import reference_signatures
from course_lib.runtime import get_device

# --- comparing -----------------------------------------------------------------------------------


def test_expect_close_reports_the_largest_difference_and_where():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    with pytest.raises(CheckFailed, match=r"largest difference 0\.5 at index \(1, 2\)"):
        expect_close(actual, expected, name="x")
    expect_close(expected + 1e-7, expected, name="x")  # within tolerance


def test_expect_close_names_a_wrong_shape_and_nan_with_the_context():
    with pytest.raises(CheckFailed, match=r"x has shape \(2,\), expected \(3,\) \(on q \(2,\)\)"):
        expect_close(torch.zeros(2), torch.zeros(3), name="x", context="q (2,)")
    with pytest.raises(CheckFailed, match="x contains NaN") as failure:
        expect_close(torch.tensor([float("nan")]), torch.zeros(1), name="x")
    assert "-inf" in failure.value.hint


def test_expect_tensor_explains_a_missing_return():
    with pytest.raises(CheckFailed) as failure:
        expect_tensor(None, name="weights")
    assert "forget a `return`" in failure.value.hint


def test_expect_tensor_checks_shape_and_dtype():
    with pytest.raises(CheckFailed, match=r"weights has shape \(2, 3\), expected \(3, 2\)"):
        expect_tensor(torch.zeros(2, 3), name="weights", shape=(3, 2))
    with pytest.raises(CheckFailed, match="weights has dtype torch.int64, expected torch.float32"):
        expect_tensor(torch.zeros(2, dtype=torch.long), name="weights", dtype=torch.float32)
    value = torch.zeros(2)
    assert expect_tensor(value, name="weights", shape=(2,), dtype=torch.float32) is value


def test_expect_tensor_takes_any_integer_dtype_for_an_integer_one_and_any_layout():
    indices = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32).t()  # int32 and not contiguous
    assert expect_tensor(indices, name="indices", shape=(2, 2), dtype=torch.long) is indices
    for wrong in (torch.float32, torch.bool):
        with pytest.raises(CheckFailed, match=f"indices has dtype {wrong}, expected torch.int64"):
            expect_tensor(indices.to(wrong), name="indices", dtype=torch.long)
    with pytest.raises(CheckFailed, match="has dtype torch.int64, expected torch.bool"):
        expect_tensor(torch.ones(2, dtype=torch.long), name="mask", dtype=torch.bool)


def test_expect_results_names_the_results_the_lab_asks_for():
    pair = r"^f should return a pair \(output, weights\), got NoneType \(on q\)"
    with pytest.raises(CheckFailed, match=pair) as failure:
        expect_results(None, ("output", "weights"), function="f", context="q")
    assert failure.value.hint == "end the function with `return output, weights`."
    with pytest.raises(CheckFailed, match=r"should return \(a, b, c\), got 2 values"):
        expect_results([1, 2], ("a", "b", "c"), function="f")
    with pytest.raises(CheckFailed, match="y2 should be a torch.Tensor but is int"):
        expect_results((torch.zeros(1), 2), ("y1", "y2"), function="f", tensors=True)
    assert expect_results([1, 2], ("a", "b"), function="f") == (1, 2)


def test_close_to_any():
    assert close_to_any(torch.ones(2), [torch.zeros(2), torch.ones(2)])
    assert not close_to_any(torch.ones(2), [torch.zeros(2), torch.ones(3)])


# --- calling student code ------------------------------------------------------------------------

def test_call_student_gives_the_student_copies_and_keeps_the_originals():
    params = {"attention": {"weight": torch.ones(2)}, "cache": [(torch.ones(1), torch.ones(1))]}
    x = torch.ones(3)
    seen = []

    def reads_its_inputs(x, params, *, scale):
        seen.extend([x, params["attention"]["weight"], params["cache"][0][0], scale])
        return x + scale

    scale = torch.ones(1)
    assert torch.equal(call_student(reads_its_inputs, x, params, scale=scale), torch.full((3,), 2.0))
    originals = [x, params["attention"]["weight"], params["cache"][0][0], scale]
    assert all(copy is not original and torch.equal(copy, original) for copy, original in zip(seen, originals))


def _spends(where):
    """A student function that zeroes one of its inputs in place (``where`` picks which), and returns 'done'."""
    def spends_its_inputs(x, params, *, scale):
        target = {"x": x, "weight": params["attention"]["weight"], "cache": params["cache"][0][1], "scale": scale}
        target[where].zero_()
        return "done"
    return spends_its_inputs


@pytest.mark.parametrize(("where", "named"), [
    ("x", "x (shape (3,))"),
    ("weight", "params['attention']['weight'] (shape (2,))"),
    ("cache", "params['cache'][0][1] (shape (1,))"),
    ("scale", "scale (shape (1,))"),
])
def test_call_student_fails_a_function_that_modifies_an_input_in_place_and_names_it(where, named):
    params = {"attention": {"weight": torch.ones(2)}, "cache": [(torch.ones(1), torch.ones(1))]}
    x, scale = torch.ones(3), torch.ones(1)
    with pytest.raises(CheckFailed, match=rf"^f modified its input {re.escape(named)} in place") as failure:
        call_student(_spends(where), x, params, scale=scale, name="f")
    assert "x = x.clone()" in failure.value.hint and "work on a copy" in failure.value.hint
    assert x.sum() == 3 and params["attention"]["weight"].sum() == 2 and scale.item() == 1  # the check's own: intact


@pytest.mark.parametrize("student", [
    lambda q: q.div_(2),  # an in-place method
    lambda q: q.__setitem__((0, 0), 5.0),  # item assignment
    lambda q: q.masked_fill_(q > 0, float("-inf")),
    lambda q: q.unsqueeze_(0),  # the values stay, the shape changes
])
def test_every_kind_of_in_place_change_is_seen(student):
    with pytest.raises(CheckFailed, match="modified its input q"):
        call_student(student, torch.arange(1.0, 7.0).view(2, 3), name="f")


def test_unchanged_inputs_pass_also_with_nan_and_results_that_are_views_of_the_inputs():
    q = torch.tensor([[float("nan"), 1.0], [float("-inf"), 2.0]])
    assert call_student(lambda q: q.transpose(0, 1), q).shape == (2, 2)  # returns a view: fine
    assert call_student(lambda q, mask: q.masked_fill(~mask, 0.0), q, torch.eye(2, dtype=torch.bool)) is not None


def test_stand_ins_without_parameter_names_borrow_the_references_names_while_a_cell_is_graded():
    def stand_in(*args, **kwargs):  # like the sandbox's: the student's function behind *args
        args[1].zero_()

    def reference(q, k, v, mask=None):
        return q

    with pytest.raises(CheckFailed, match=r"modified its input argument 2 \(shape"):
        call_student(stand_in, torch.ones(1), torch.ones(1), name="attention")
    with reference_signatures({"attention": reference}):
        with pytest.raises(CheckFailed, match=r"modified its input k \(shape"):
            call_student(stand_in, torch.ones(1), torch.ones(1), name="attention")
    rubric = Rubric(references={"attention": reference},
                    criteria=[Criterion("test_a", 1, lambda f: call_student(f, torch.ones(1), torch.ones(1),
                                                                            name="attention"), ("attention",), "a")])
    with pytest.raises(CheckFailed, match=r"modified its input k \(shape"):
        rubric.run("test_a", stand_in)


def test_clone_nested_keeps_the_containers_types_and_shares_the_rest():
    from collections import namedtuple

    Pair = namedtuple("Pair", "k v")
    label = object()
    value = {"pair": Pair(torch.ones(1), label), "list": [torch.ones(1)], "size": torch.Size([2, 3])}
    copy = clone_nested(value)
    assert isinstance(copy["pair"], Pair) and copy["pair"].v is label and copy["size"] == torch.Size([2, 3])
    assert copy["pair"].k is not value["pair"].k and copy["list"][0] is not value["list"][0]


@pytest.mark.parametrize(("error", "hint"), [
    (NotImplementedError(), "replace the `raise NotImplementedError()` line"),
    (RuntimeError("view size is not compatible with input tensor's size and stride"), ".reshape()"),
    (RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu"), "device=x.device"),
])
def test_call_student_turns_an_exception_into_a_failed_check_with_a_hint(error, hint):
    def raises(*args):
        raise error

    with pytest.raises(CheckFailed, match=f"merge raised {type(error).__name__}") as failure:
        call_student(raises, 1, name="merge")
    assert hint in failure.value.hint


def test_call_for_tensor_labels_the_result():
    with pytest.raises(CheckFailed, match=r"chunk's result has shape \(2,\), expected \(3,\) \(on x\)"):
        call_for_tensor(lambda x: x, torch.zeros(2), name="chunk", shape=(3,), context="x")
    with pytest.raises(CheckFailed, match="hash_vectors' result should be a torch.Tensor"):
        call_for_tensor(lambda: None, name="hash_vectors", label="hash_vectors' result")


def test_trials_are_reproducible_and_on_the_course_device():
    first = [trial.randn(3) for trial in trials(3, seed=7)]
    again = [trial.randn(3) for trial in trials(3, seed=7)]
    other = [trial.randn(3) for trial in trials(3, seed=8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], other[0])
    assert {trial.device.type for trial in trials(2)} == {get_device().type}
    assert [trial.randint(0, 9) for trial in trials(3, seed=7)] == [trial.randint(0, 9) for trial in trials(3, seed=7)]


# --- naming a known mistake ----------------------------------------------------------------------

def test_diagnose_fails_with_the_first_diagnosis_that_matches():
    computed = []

    def later():
        computed.append("later")
        return torch.zeros(2)

    diagnoses = [(torch.zeros(3), "wrong shape", "a"), (torch.ones(2), "ones", "b"), (torch.ones(2), "ones again", "c"),
                 (later, "never reached", "d")]
    with pytest.raises(CheckFailed) as failure:
        diagnose(torch.ones(2), diagnoses, context="x (2,)")
    assert (failure.value.problem, failure.value.hint) == ("ones (on x (2,))", "b")
    assert computed == []  # a diagnosis given as a function is computed only when it is reached


def test_diagnose_returns_when_no_diagnosis_matches_and_takes_other_comparisons():
    twos = lambda: torch.full((2,), 2.0)  # noqa: E731
    assert diagnose(torch.ones(2), [(torch.zeros(2), "zeros", "a"), (twos, "twos", "b")]) is None
    with pytest.raises(CheckFailed) as failure:  # without a context the problem is the whole message
        diagnose([1, 2], [([[3], [1, 2]], "merged leftmost first", "hint")], matches=lambda got, ways: got in ways)
    assert str(failure.value) == "merged leftmost first\nHint: hint"


# --- the rubric ----------------------------------------------------------------------------------

def _rubric(check) -> Rubric:
    return Rubric(references={"train": lambda: "reference train", "helper": lambda: "reference helper"},
                  criteria=[Criterion("test_train", 2, check, ("train",), "training")])


STUDENT = "def helper():\n    return 'student helper'\ndef train():\n    return helper()\n"


def test_rubric_run_puts_the_references_around_the_graded_function_only_while_it_is_graded():
    namespace: dict = {}
    exec(STUDENT, namespace)  # noqa: S102 (a student's cells)
    seen = []
    _rubric(lambda train: seen.append(train())).run("test_train", namespace["train"])
    assert seen == ["reference helper"]  # the other function was the reference during the check ...
    assert namespace["train"]() == "student helper"  # ... and the student's own afterwards


def test_rubric_run_restores_the_students_names_even_when_the_check_fails():
    namespace: dict = {}
    exec(STUDENT, namespace)  # noqa: S102

    def failing_check(train):
        assert train() == "reference helper"
        raise CheckFailed("train is wrong", "hint")

    with pytest.raises(CheckFailed, match="train is wrong"):
        _rubric(failing_check).run("test_train", namespace["train"])
    assert namespace["train"]() == "student helper"
    del namespace["helper"]  # a name the student never defined is removed again afterwards
    with pytest.raises(CheckFailed):
        _rubric(failing_check).run("test_train", namespace["train"])
    assert "helper" not in namespace


def test_rubric_run_leaves_the_graded_function_itself_alone():
    namespace: dict = {}
    exec("def train():\n    return 'mine'", namespace)  # noqa: S102
    _rubric(lambda train: None).run("test_train", namespace["train"])
    assert namespace["train"]() == "mine"


def test_rubric_validation():
    criterion = Criterion("test_a", 1, lambda f: None, ("f",), "a")
    with pytest.raises(ValueError, match="grade ids repeat"):
        Rubric([criterion, criterion], {"f": print})
    with pytest.raises(ValueError, match=r"grades \['f'\] but has no reference"):
        Rubric([criterion], {})
    rubric = Rubric([criterion], {"f": print, "g": len})
    with pytest.raises(KeyError, match="no graded cell 'test_b'"):
        rubric.run("test_b", print)
    with pytest.raises(TypeError, match=r"test_a grades f: give 1 function\(s\), got 2"):
        rubric.run("test_a", print, print)
    assert rubric.points == {"test_a": 1} and rubric.helpers("test_a") == {"g": len} and len(rubric) == 1
