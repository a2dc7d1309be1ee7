"""Hidden checks of lab 06, the Reformer: LSH hashing, sorting and chunking; a reversible layer's backward.

``RUBRIC`` lists the graded cells of ``labs/source/06_reformer/reformer.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for. The checks live in
two parts: :mod:`.lsh` (``hash_vectors``, ``sort_by_bucket``, ``chunk``, ``look_back``) and
:mod:`.reversible` (``reversible_forward``, ``reversible_inverse``, ``reversible_backward``);
each part's docstring says how its classic mistakes cost only their own cell.

Everything a check exchanges with student code is tensors, ints and tuples of one head and one
sequence, so the sandboxed grader (:mod:`course_grader.autograder`) can grade the lab too.
Not covered: the attention itself inside the chunks (the chapter's business), several heads, causal masks.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .lsh import (
    check_chunk, check_hash, check_look_back, check_sort, check_undo, reference_chunk, reference_hash,
    reference_look_back, reference_sort,
)
from .reversible import (
    check_backward, check_backward_recomputes, check_forward, check_inverse, reference_backward, reference_forward,
    reference_inverse,
)

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "hash_vectors": reference_hash,
    "sort_by_bucket": reference_sort,
    "chunk": reference_chunk,
    "look_back": reference_look_back,
    "reversible_forward": reference_forward,
    "reversible_inverse": reference_inverse,
    "reversible_backward": reference_backward,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_hash", 3, check_hash, ("hash_vectors",), "LSH buckets: argmax over [xR, -xR] per hash round"),
    Criterion("test_sort", 2, check_sort, ("sort_by_bucket",), "sort by bucket, stable inside a bucket"),
    Criterion("test_undo", 1, check_undo, ("sort_by_bucket",), "the inverse permutation"),
    Criterion("test_chunk", 1, check_chunk, ("chunk",), "chunks in order; ValueError when c does not divide T"),
    Criterion("test_look_back", 2, check_look_back, ("look_back",), "previous chunk (wrapping) then own chunk"),
    Criterion("test_forward", 1, check_forward, ("reversible_forward",), "y1 = x1 + F(x2), y2 = x2 + G(y1)"),
    Criterion("test_inverse", 2, check_inverse, ("reversible_inverse",), "x2 = y2 - G(y1) first, then x1"),
    Criterion("test_backward", 3, check_backward, ("reversible_forward", "reversible_backward"),
              "gradients by recomputation equal autograd's"),
    Criterion("test_backward_recomputes", 2, check_backward_recomputes, ("reversible_forward", "reversible_backward"),
              "the backward rebuilds its inputs instead of using stored activations"),
))
