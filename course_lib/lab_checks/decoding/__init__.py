"""Hidden checks of lab 05, decoding: top-k and top-p filters, the sampling distribution, one beam search step.

``RUBRIC`` lists the graded cells of ``labs/source/05_decoding/decoding.ipynb`` with their points and
checks, ``REFERENCES`` the course's version of every function the lab asks for. The checks live in
parts: :mod:`.sampling` (``top_k_filter``, ``filtered_distribution``), :mod:`.top_p` (``top_p_filter``, its
boundary at exactly p), both reading filters through :mod:`.filter_results`; :mod:`.beam_search`
(``beam_search_step``) on the steps of :mod:`.beam_steps` and the whole search of :mod:`.beam_loop`;
:mod:`.finished_score` (``finished_score``). Each part's docstring says how its classic mistakes cost
only their own cell.

Trials are seeded (:func:`~course_lib.lab_checks.toolkit.trials`) and run on :func:`course_lib.get_device`.
Not covered: EOS handling and the finished list (``course_lib.decoding.beam_search``), sampling itself.
"""
from __future__ import annotations

from ..rubric import Criterion, Rubric
from .beam_search import check_beam_cache, check_beam_rows, check_beam_scores
from .beam_steps import reference_beam_step
from .finished_score import check_finished_score, reference_finished_score
from .sampling import (
    check_distribution_filters, check_distribution_sums_to_one, check_top_k, check_top_k_ties, reference_distribution,
    top_k_filter, top_p_filter,
)
from .top_p import check_top_p

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {
    "top_k_filter": top_k_filter,
    "top_p_filter": top_p_filter,
    "filtered_distribution": reference_distribution,
    "beam_search_step": reference_beam_step,
    "finished_score": reference_finished_score,
}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_top_k", 2, check_top_k, ("top_k_filter",),
              "top-k: keep the k highest scores of each row, -inf elsewhere"),
    Criterion("test_top_k_ties", 1, check_top_k_ties, ("top_k_filter",),
              "top-k: scores tied with the k-th are kept"),
    Criterion("test_top_p", 3, check_top_p, ("top_p_filter",),
              "top-p: smallest set of most likely tokens reaching p, the crossing token included"),
    Criterion("test_distribution_sums_to_one", 1, check_distribution_sums_to_one, ("filtered_distribution",),
              "sampling distribution: renormalized, each row sums to 1"),
    Criterion("test_distribution_filters", 2, check_distribution_filters, ("filtered_distribution",),
              "sampling distribution: temperature, then top-k, then top-p"),
    Criterion("test_beam_scores", 3, check_beam_scores, ("beam_search_step",),
              "beam step: K best continuations per prompt over all beams, with their scores"),
    Criterion("test_beam_rows", 1, check_beam_rows, ("beam_search_step",),
              "beam step: source rows of the new beams in the whole batch"),
    Criterion("test_beam_cache", 2, check_beam_cache, ("beam_search_step",),
              "beam step: the cache reordered with the beams"),
    Criterion("test_finished_score", 2, check_finished_score, ("finished_score",),
              "finished hypotheses: sum log p / generated_length ** length_penalty"),
))
