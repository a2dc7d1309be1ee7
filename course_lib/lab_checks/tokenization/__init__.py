"""Hidden checks of lab 02, tokenization (byte-pair encoding): pair counts, a merge step, training, encoding.

One ``check_*`` function per graded cell of ``labs/source/02_tokenization/tokenization.ipynb``;
``RUBRIC`` lists them with their points and ``REFERENCES`` the course's version of each function.
Students work on plain lists of ints: a text's UTF-8 bytes (ids 0-255), and merge ``i`` creates
id ``256 + i``. The references (:mod:`.references`) are built from the library's own
building blocks (:func:`course_lib.tokenization.get_stats`, :func:`~course_lib.tokenization.best_pair`,
:func:`~course_lib.tokenization.merge_pair`), which follow HF ``tokenizers``' rules: overlapping
pairs all count ("aaaa" holds ``(a, a)`` three times), merging scans left to right without overlaps,
ties go to the smallest pair, and encoding applies merges in rank order.

Each classic mistake costs only its own cell:

* ``train`` and ``encode`` are graded with the reference ``get_stats`` and ``merge`` in the
  student's namespace for the duration of the check (:meth:`~course_lib.lab_checks.rubric.Rubric.run`),
  so a wrong helper does not sink them;
* :func:`check_train` uses corpora whose best pair is unique at every step (the tie rule cannot
  matter), and :func:`check_train_ties` asks for one merge on corpora with a tie (stale counts
  cannot matter);
* the mistakes written out in :mod:`.references` are named by
  :func:`~course_lib.lab_checks.toolkit.diagnose`.

Trials are seeded (:func:`~course_lib.lab_checks.toolkit.trials`); the corpora are random words
over a small random alphabet, sometimes with a two-byte letter, so runs, ties and partial
characters all occur. Not covered: pre-tokenization and the byte-to-character mapping (the chapter's business).
"""
from __future__ import annotations

from ...tokenization import merge_pair
from ..rubric import Criterion, Rubric
from .checks import check_encode, check_get_stats, check_merge, check_train, check_train_ties
from .references import reference_encode, reference_get_stats, reference_train

__all__ = ["REFERENCES", "RUBRIC"]

# The course's own implementations, in the lab's signatures (see course_lib.lab_checks.rubric).
REFERENCES = {"get_stats": reference_get_stats, "merge": merge_pair, "train": reference_train, "encode": reference_encode}

RUBRIC = Rubric(references=REFERENCES, criteria=(
    Criterion("test_get_stats", 2, check_get_stats, ("get_stats",),
              "pair counts: every adjacent pair, overlaps included"),
    Criterion("test_merge", 2, check_merge, ("merge",),
              "merge step: non-overlapping, left to right"),
    Criterion("test_train", 3, check_train, ("train",),
              "training loop: recount after every merge, new ids 256, 257, ..."),
    Criterion("test_train_ties", 1, check_train_ties, ("train",),
              "ties go to the smallest pair, as in HF tokenizers"),
    Criterion("test_encode", 3, check_encode, ("encode",),
              "encoding: merges applied in rank order"),
))
