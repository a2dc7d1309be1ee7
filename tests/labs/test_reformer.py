"""Lab 06 (the Reformer): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's set-up sub-layers are the checks', its references agree with ``course_lib.reformer``
(and so with HF's Reformer), the sort check's inputs really expose an unstable sort, the checks reach
their edge cases (two hash rounds of two buckets, one bucket, one chunk, a zero F or G), an undo is judged
against the student's order only where that order sorts the buckets, and mistakes no fixture holds
(wrong return types, a chunk without its ValueError, a backward without the path through G) get their
own message. The known mistakes (``tests/fixtures/labs/reformer/``), the
reference solution and the notebooks: ``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import pytest
import torch

from course_lib.lab_checks import reformer as reformer_checks
from course_lib.lab_checks.reformer import lsh as reformer_lsh, reversible as reformer_reversible
from course_lib.lab_checks.toolkit import CheckFailed
from course_lib.reformer import ReversibleBlock
from tests.labs.support import kernel as lab_kernel
from tests.labtools import lab_files


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a kernel."""
    return lab_kernel(lab_files("reformer"))


# --- the references are the library's ----------------------------------------------------------

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


# --- mistakes the checks name ---------------------------------------------------------------------

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


# --- edge cases and answers the checks must not be fooled by ------------------------------------------

def test_the_checks_reach_their_edge_cases():
    """Two hash rounds of 2 buckets, one bucket everywhere, a single position, one chunk, chunks of one, a single
    chunk to look back from, and blocks whose F or G is zero are among the inputs."""
    hashes = [(rotations.shape[1], n_buckets) for _, rotations, n_buckets in reformer_lsh._hash_cases()]
    assert (2, 2) in hashes and (2, 8) in hashes
    sorts = reformer_lsh.sort_cases()
    assert any(len(b) > 1 and len(torch.unique(b)) == 1 for b in sorts) and any(len(b) == 1 for b in sorts)
    chunks = [(len(x), length) for x, length in reformer_lsh._chunk_cases()]
    assert any(t == length for t, length in chunks) and any(length == 1 for _, length in chunks)
    assert any(len(c) == 1 for c in reformer_lsh._look_back_cases())
    blocks = list(reformer_reversible._blocks(700))
    assert any(not wf.any() for _, _, wf, _, _, _ in blocks) and any(not wg.any() for _, _, _, wg, _, _ in blocks)


def test_undo_of_an_order_that_sorts_nothing_is_judged_by_the_library_order():
    """(arange, arange) sorts nothing: its undo is judged against the library's order and fails, while undo of the
    student's own unstable (but sorting) order passes the undo cell."""
    def identity(buckets):
        positions = torch.arange(len(buckets), device=buckets.device)
        return positions, positions

    with pytest.raises(CheckFailed, match=r"order\[undo\] should be 0, 1, \.\.\., T-1"):
        reformer_lsh.check_undo(identity)

    def unstable(buckets):
        order = torch.argsort(buckets)
        return order, torch.argsort(order)

    reformer_lsh.check_undo(unstable)


@pytest.mark.parametrize(("function", "message"), [
    (lambda x, c: torch.stack(torch.split(x, c)) if len(x) % c == 0 else torch.zeros(0)[len(x)],
     r"chunk raised IndexError on x \(10, 3\), chunk_len=4; expected a ValueError"),
    (lambda x, c: x.reshape(c, -1, *x.shape[1:]).transpose(0, 1), "instead of"),
])
def test_chunk_mistakes_are_named(function, message):
    with pytest.raises(CheckFailed, match=message) as failure:
        reformer_lsh.check_chunk(function)
    assert failure.value.hint


def test_a_chunk_raising_a_value_error_subclass_passes():
    class PaddingError(ValueError):
        pass

    def chunk(x, chunk_len):
        if len(x) % chunk_len:
            raise PaddingError(f"pad the sequence to a multiple of {chunk_len}")
        return x.unflatten(0, (-1, chunk_len))

    reformer_lsh.check_chunk(chunk)
