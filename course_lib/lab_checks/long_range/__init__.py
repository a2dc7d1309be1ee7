"""Hidden checks of lab 09, long documents: a sliding-window mask with global tokens, BigBird's block layout,
one step of the online softmax.

``RUBRIC`` lists the graded cells of ``labs/source/09_long_range/long_range.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for: the library's own
(:func:`course_lib.long_range.sliding_window.sliding_window_mask`,
:func:`course_lib.long_range.bigbird.bigbird_block_layout`,
:func:`course_lib.long_range.tiled.online_softmax_update`), which the library's banded, block-sparse and
tiled attentions are pinned with. The checks live in three parts, one per function: :mod:`.window`,
:mod:`.blocks` and :mod:`.online_softmax`; each part's docstring says which classic mistakes it names and
how a function graded in two cells loses only the cell of its mistake.

Everything a check exchanges with student code is tensors, lists of ints and ints, so the sandboxed
grader (:mod:`course_grader.autograder`) can grade the lab too. Not covered: the attentions themselves
(the chapter's business), HF's plan of random blocks, the loop over tiles.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .blocks import check_block_layout, check_random_blocks, reference_bigbird_block_layout
from .online_softmax import check_online_masked, check_online_update, reference_online_softmax_update
from .window import check_global, check_window, reference_sliding_window_mask

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "sliding_window_mask": reference_sliding_window_mask,
    "bigbird_block_layout": reference_bigbird_block_layout,
    "online_softmax_update": reference_online_softmax_update,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_window", 2, check_window, ("sliding_window_mask",),
              "query i sees key j when |i − j| <= window: window keys on each side"),
    Criterion("test_global", 2, check_global, ("sliding_window_mask",),
              "a global position's row and column are all True; repeated or unsorted positions change nothing"),
    Criterion("test_block_layout", 2, check_block_layout, ("bigbird_block_layout",),
              "global first and last blocks (rows and columns), a sliding window of 3 blocks"),
    Criterion("test_random_blocks", 2, check_random_blocks, ("bigbird_block_layout",),
              "row k of the plan: the key blocks query block k + 1 also sees"),
    Criterion("test_online_update", 3, check_online_update, ("online_softmax_update",),
              "new max; the old sum and accumulator rescaled by exp(old − new); the tile added"),
    Criterion("test_online_masked", 2, check_online_masked, ("online_softmax_update",),
              "−inf scores add nothing; an empty row stays (−inf, 0, 0), never NaN"),
))
