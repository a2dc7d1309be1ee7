"""Lab 02 (tokenization): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's references agree with ``course_lib.tokenization`` (and so with HF ``tokenizers``), the
checks draw corpora with runs, ties and two-byte letters and reach their edge cases, any mapping is a
dict, wrong return types, a lost last token and both ways of counting without overlaps are named,
and the visible tests of train and encode run with the course's helpers, so they cannot show another
cell's mistake. The known mistakes
(``tests/fixtures/labs/tokenization/``), the reference solution and the notebooks:
``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import re
from collections import Counter, OrderedDict, defaultdict

import pytest
from hypothesis import given, settings, strategies as st

from course_lib.lab_checks import tokenization as tokenization_checks
from course_lib.lab_checks.tokenization import checks as tokenization_part, references as tokenization_references
from course_lib.lab_checks.toolkit import CheckFailed, trials
from course_lib.tokenization import ByteLevelBPE, merge_pair, train_bpe_naive
from tests.labs.support import kernel, visible_failures
from tests.labtools import lab_files

# --- the references are the library's rules ------------------------------------------------------

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

    tokenization_part.check_train(spy)
    first = list(seen)
    seen.clear()
    tokenization_part.check_train(spy)
    assert first == seen and len(first) == tokenization_part.TRIALS + len(tokenization_part.TRAIN_EDGES)
    drawn = first[:tokenization_part.TRIALS]  # then the edge cases
    assert len({text for text, _ in drawn}) == len(drawn) and len({n for _, n in drawn}) > 1
    corpora = [tokenization_references.random_corpus(trial) for trial in trials(30, seed=0)]
    assert any("ĉ" in text for text in corpora) and any(re.search(r"(.)\1\1", text) for text in corpora)
    tokenization_part.check_train_ties(spy)
    tie_texts = {text for text, _ in seen[len(first):]}
    assert len(tie_texts) == tokenization_part.TRIALS  # enough tied corpora were drawn


@pytest.mark.parametrize(("function", "value", "message"), [
    ("get_stats", None, "should return a dict"),
    ("merge", None, "should return a list of ints"),
    ("train", [[97, 98, 99]], "should return a list of \\(int, int\\) pairs"),
    ("encode", "abc", "should return a list of ints"),
])
def test_wrong_return_types_are_named(function, value, message):
    criterion = next(c for c in tokenization_checks.RUBRIC if c.functions == (function,))
    with pytest.raises(CheckFailed, match=message):
        criterion.check(lambda *args: value)


def test_merge_check_reports_a_lost_last_token_with_the_general_message():
    def drops_the_tail(ids, pair, new_id):
        return merge_pair(ids, pair, new_id)[:-1] if ids else []

    with pytest.raises(CheckFailed, match=r"merge\(\[1, 2, 3, 1, 2\], \(1, 2\), 256\) gave \[256, 3\]") as failure:
        tokenization_part.check_merge(drops_the_tail)
    assert "do not lose the last token" in failure.value.hint


def test_library_tokenizer_agrees_on_the_visible_encode_example():
    vocab = {chr(i): i for i in range(ord("a"), ord("d"))} | {"bc": 256, "ab": 257}
    assert ByteLevelBPE(vocab, [("b", "c"), ("a", "b")]).tokens("abc") == ["a", "bc"]
    assert tokenization_references.reference_encode("abc", [(98, 99), (97, 98)]) == [97, 256]


@pytest.mark.parametrize("kind", [dict, Counter, OrderedDict, lambda counts: defaultdict(int, counts)],
                         ids=["dict", "Counter", "OrderedDict", "defaultdict"])
def test_get_stats_may_return_any_mapping(kind):
    tokenization_part.check_get_stats(lambda ids: kind(Counter(zip(ids, ids[1:]))))


@pytest.mark.parametrize("which", [0, 1], ids=["jumping past a run", "non-overlapping counts"])
def test_both_ways_of_counting_without_overlaps_are_named(which):
    with pytest.raises(CheckFailed, match="get_stats skips overlapping pairs"):
        tokenization_part.check_get_stats(lambda ids: tokenization_references.stats_without_overlaps(ids)[which])


def test_a_get_stats_that_misses_the_first_pair_gets_the_general_message():
    with pytest.raises(CheckFailed, match=r"^get_stats returned got") as failure:
        tokenization_part.check_get_stats(lambda ids: dict(Counter(zip(ids[1:], ids[2:]))))
    assert "range(len(ids) - 1)" in failure.value.hint


def test_the_checks_reach_the_edge_cases():
    """Empty and one-id inputs, runs, the last pair, merges at the end, a text merged into one token."""
    seen = {name: [] for name in ("get_stats", "merge", "train", "encode")}

    def spy(name, reference):
        return lambda *args: seen[name].append(args) or reference(*args)

    references = tokenization_checks.REFERENCES
    for criterion in tokenization_checks.RUBRIC:
        name = criterion.functions[0]
        criterion.check(spy(name, references[name]))
    assert {(): 0, (5,): 0}.keys() <= {tuple(ids) for (ids,) in seen["get_stats"]}
    assert ([3, 1, 2], (1, 2), 256) in seen["merge"] and ([1, 2], (1, 2), 256) in seen["merge"]
    assert {("", 3), ("a", 2), ("aaaa", 3), ("abc", 0)} <= set(seen["train"])
    assert any(references["encode"](text, merges) == [257] for text, merges in seen["encode"])  # all one token


# --- the notebooks ----------------------------------------------------------------------------

def test_visible_tests_of_train_and_encode_do_not_depend_on_the_students_helpers():
    """They run train and encode with the course's get_stats and merge (the set-up's course_helpers):
    with helpers that raise, they still pass; afterwards the student's helpers are back."""
    files = lab_files("tokenization")
    namespace = kernel(files, examples=True)

    def broken(*args):
        raise RuntimeError("the student's helper")

    namespace.update(get_stats=broken, merge=broken)
    assert visible_failures(files, namespace) == {"test_get_stats", "test_merge"}
    assert namespace["get_stats"] is broken and namespace["merge"] is broken
    assert tokenization_references.tie_free_steps("hug hugs pug hug") >= 3  # the training example has no ties
