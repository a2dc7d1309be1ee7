"""Hidden checks of lab 01, attention: scaled dot-product attention, causal mask, head split/merge.

One ``check_*`` function per graded cell of ``labs/source/01_attention/attention.ipynb``, in three
parts: :mod:`.sdpa` (the weights are distributions, the 1/√d scale, the output), :mod:`.masks` (the
boolean mask, ``causal_mask``) and :mod:`.heads` (``split_heads``, ``merge_heads``). ``RUBRIC``
lists them with their points and ``REFERENCES`` the course's own version of each function
(:mod:`course_lib.attention`). The checks are built so that one mistake costs the points of one
aspect only: the softmax axis, the 1/√d scale, the weighted sum of values and the mask are each
tested in a way the other three mistakes cannot disturb; each part's docstring says which mistake
costs which cell. The exceptions: a function that modifies its inputs in place, and ``(weights,
output)`` returned swapped, fail every cell that calls it.

Each check runs seeded random trials and edge cases (a single key or query, ``d = 1``, more queries
than keys, a query that may attend to nothing) on :func:`course_lib.get_device` in fp32 and raises
:class:`~course_lib.lab_checks.toolkit.CheckFailed` saying what is wrong and hinting why; the
classic mistakes are named by :func:`~course_lib.lab_checks.toolkit.diagnose`.
Not covered: the chapters' exercises (ungraded) and performance.
"""
from __future__ import annotations

from ...attention.masks import causal_mask
from ...attention.multi_head import merge_heads, split_heads
from ...attention.scaled_dot_product import scaled_dot_product_attention
from ..rubric import Criterion, Rubric
from .heads import check_merge_heads, check_split_heads
from .masks import check_causal_mask, check_mask
from .sdpa import check_output, check_scaling, check_weights_are_distributions

__all__ = [
    "check_weights_are_distributions", "check_scaling", "check_output", "check_mask",
    "check_causal_mask", "check_split_heads", "check_merge_heads", "REFERENCES", "RUBRIC",
]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "scaled_dot_product_attention": scaled_dot_product_attention,
    "causal_mask": causal_mask,
    "split_heads": split_heads,
    "merge_heads": merge_heads,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_sdpa_distribution", 2, check_weights_are_distributions, ("scaled_dot_product_attention",),
              "attention weights: each query's weights are a distribution over the keys"),
    Criterion("test_sdpa_scaling", 2, check_scaling, ("scaled_dot_product_attention",),
              "scores scaled by 1/√d before the softmax"),
    Criterion("test_sdpa_output", 2, check_output, ("scaled_dot_product_attention",),
              "output = weights @ values, with the right shape, dtype and device"),
    Criterion("test_sdpa_mask", 2, check_mask, ("scaled_dot_product_attention",),
              "boolean mask: True = may attend, False gets weight 0, a query with no allowed key gets 0"),
    Criterion("test_causal_mask", 1, check_causal_mask, ("causal_mask",),
              "causal mask: lower triangular, diagonal included, boolean"),
    Criterion("test_split_heads", 2, check_split_heads, ("split_heads",),
              "split_heads: (B, T, D) -> (B, H, T, D/H)"),
    Criterion("test_merge_heads", 1, check_merge_heads, ("merge_heads",),
              "merge_heads: (B, H, T, D/H) -> (B, T, D), the inverse of split_heads"),
))
