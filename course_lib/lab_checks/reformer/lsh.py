"""The Reformer lab's LSH checks: hashing into buckets, sorting by bucket, chunks and the look-back.

Students work on one head and one sequence: ``hash_vectors(x (T, d), rotations (d, R, b/2), b) -> (R, T)``
and ``sort_by_bucket(buckets (T,)) -> (order, undo)`` are compared with
:func:`course_lib.reformer.hash_vectors` and :func:`course_lib.reformer.sort_by_bucket`; ``chunk`` and
``look_back`` with the reshape and :func:`course_lib.reformer.look_adjacent` (one chunk before,
wrapping around). The references in the lab's signatures are here too (``reference_*``).

After random trials each check has edge cases: two hash rounds of 2 buckets (one rotation column) and of 8;
one bucket for every position (a stable sort keeps them in order) and a single position; one chunk of the whole
sequence and chunks of one position; a single chunk, its own predecessor.

Each classic mistake costs only its cell: an argmax over ``xR`` alone (no ``-xR``) only reaches half
the buckets and :func:`check_hash` says so; an unstable sort (``torch.argsort``) shuffles positions
inside a bucket and :func:`check_sort` says so, while :func:`check_undo` judges ``undo`` against the
student's *own* order where that order sorts the buckets (else the library's, so an ``(arange, arange)``
answer fails); interleaved chunks (``reshape(c, T // c)`` transposed) and a missing ``ValueError`` are
named by :func:`check_chunk`; a look-back that attaches the next chunk, or puts the chunks the other way
round, by :func:`check_look_back`.

Not covered: the attention inside the chunks (the chapter's business), several heads, the rubric
(:mod:`.reformer`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...reformer import hash_vectors as library_hash_vectors, look_adjacent, sort_by_bucket as library_sort_by_bucket
from ...runtime import get_device
from ..toolkit import (
    Trial, call_for_tensor, call_student, diagnose, expect_close, expect_results, expect_tensor, fail, is_close, trials,
)

__all__ = [
    "check_hash", "check_sort", "check_undo", "check_chunk", "check_look_back",
    "reference_hash", "reference_sort", "reference_chunk", "reference_look_back", "sort_cases",
]

TRIALS = 6
BUCKET_COUNTS = (2, 4, 6, 8, 16)


# --- references ------------------------------------------------------------------------------

def reference_hash(x, rotations, n_buckets):
    """The lab's ``hash_vectors`` for one sequence ``x (T, d)``: :func:`course_lib.reformer.hash_vectors`, ``(R, T)``."""
    return library_hash_vectors(x[None, None], rotations[None], n_buckets)[0, 0]


def reference_sort(buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab's ``sort_by_bucket`` for one sequence: :func:`course_lib.reformer.sort_by_bucket`'s ``(order, undo)``."""
    order, undo = library_sort_by_bucket(buckets[None, None, None], int(buckets.max()) + 1)
    return order[0, 0], undo[0, 0]


def reference_chunk(x, chunk_len):
    """The lab's ``chunk``: ``(T, ...) -> (T / c, c, ...)``, a ValueError when ``c`` does not divide ``T``."""
    if x.shape[0] % chunk_len:
        raise ValueError(f"sequence length {x.shape[0]} is not a multiple of chunk_len {chunk_len}: pad it first")
    return x.reshape(x.shape[0] // chunk_len, chunk_len, *x.shape[1:])


def reference_look_back(chunks):
    """The lab's ``look_back``: :func:`course_lib.reformer.look_adjacent` one chunk back, for one sequence."""
    return look_adjacent(chunks[None, None], 1, 0)[0, 0]


def _reference_rotated(x, rotations):
    return torch.einsum("td,drb->rtb", x, rotations)  # (R, T, b/2)


# --- the checks ------------------------------------------------------------------------------

def _hash_cases():
    """``(x, rotations, n_buckets)``: TRIALS random ones, then two hash rounds of 2 buckets (one rotation
    column each) and two rounds of 8 buckets on the same vectors."""
    for trial in trials(TRIALS, seed=100):
        seq_len, dim, rounds = trial.randint(4, 40), (4, 8, 16)[trial.randint(0, 2)], trial.randint(1, 3)
        n_buckets = BUCKET_COUNTS[trial.randint(0, len(BUCKET_COUNTS) - 1)]
        yield trial.randn(seq_len, dim), trial.randn(dim, rounds, n_buckets // 2), n_buckets
    for trial in trials(1, seed=150):
        x = trial.randn(24, 8)
        yield x, trial.randn(8, 2, 1), 2
        yield x, trial.randn(8, 2, 4), 8


def check_hash(hash_vectors: Callable) -> None:
    """``hash_vectors(x, rotations, n_buckets)``: argmax over ``[xR, -xR]``, one row per hash round."""
    for x, rotations, n_buckets in _hash_cases():
        seq_len, rounds = x.shape[0], rotations.shape[1]
        context = f"x {tuple(x.shape)}, rotations {tuple(rotations.shape)}, n_buckets={n_buckets}"
        got = call_for_tensor(hash_vectors, x, rotations, n_buckets, name="hash_vectors", label="hash_vectors' result",
                              shape=(rounds, seq_len), context=context)
        expected = reference_hash(x, rotations, n_buckets)  # (R, T)
        rotated = _reference_rotated(x, rotations)
        both = torch.cat([rotated, -rotated], dim=-1).sort(dim=-1, descending=True).values
        clear = (both[..., 0] - both[..., 1]) > 1e-4  # near-ties may fall either way in fp32
        got = got.to(expected.device).long()
        if torch.equal(got[clear], expected[clear]):
            continue
        diagnose(got[clear], [
            (rotated.argmax(-1)[clear],
             f"hash_vectors takes the argmax over xR only, so it never uses buckets {n_buckets // 2} to "
             f"{n_buckets - 1} ({context})",
             "R has n_buckets/2 columns; the bucket is the argmax over the concatenation [xR, -xR] "
             "(n_buckets candidates): torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1). A vector and "
             "its opposite must land in different buckets."),
            (torch.cat([-rotated, rotated], dim=-1).argmax(-1)[clear],
             f"hash_vectors concatenates [-xR, xR]; the library's order is [xR, -xR] ({context})",
             "torch.cat([rotated, -rotated], dim=-1): bucket i < n_buckets/2 means column i is the largest."),
        ], matches=torch.equal)
        fail(f"hash_vectors gives other buckets than the library ({context}): got {got[0, :8].tolist()}..., "
             f"expected {expected[0, :8].tolist()}...",
             "rotate with torch.einsum('td,drb->rtb', x, rotations) (one row per hash round r), then take "
             "the argmax over [xR, -xR] along the last axis.")


def _random_buckets(trial: Trial) -> torch.Tensor:
    """(T,) bucket ids with many repeats, so the order inside a bucket matters."""
    seq_len, n_buckets = trial.randint(64, 200), trial.randint(2, 8)
    return torch.randint(0, n_buckets, (seq_len,), generator=trial.generator).to(trial.device)


def sort_cases() -> list[torch.Tensor]:
    """The bucket lists :func:`check_sort` and :func:`check_undo` sort: a small one, random long ones, then one
    bucket for every position (a stable sort leaves the order as it is) and a single position."""
    device = next(trials(1)).device
    return ([torch.tensor([1, 0, 1, 0], device=device)] + [_random_buckets(t) for t in trials(TRIALS, seed=200)]
            + [torch.full((40,), 3, device=device), torch.tensor([5], device=device)])


def _call_sort(sort_by_bucket, buckets, context):
    result = call_student(sort_by_bucket, buckets, name="sort_by_bucket")
    order, undo = expect_results(result, ("order", "undo"), function="sort_by_bucket", context=context)
    shape = tuple(buckets.shape)
    return (expect_tensor(order, name="order", shape=shape, context=context).to(buckets.device).long(),
            expect_tensor(undo, name="undo", shape=shape, context=context).to(buckets.device).long())


def check_sort(sort_by_bucket: Callable) -> None:
    """``order`` lists the positions sorted by bucket, and by position inside a bucket (a stable sort)."""
    for buckets in sort_cases():
        context = f"buckets {tuple(buckets.shape)} with {len(torch.unique(buckets))} distinct ids"
        order, _ = _call_sort(sort_by_bucket, buckets, context)
        expected, _ = reference_sort(buckets)
        if torch.equal(order, expected):
            continue
        is_permutation = torch.equal(order.sort().values, torch.arange(len(buckets), device=order.device))
        if is_permutation and bool((buckets[order][1:] >= buckets[order][:-1]).all()):
            bucket = int(buckets[order][torch.nonzero(order != expected)[0, 0]])
            fail(f"order groups the buckets correctly but mixes up the positions inside bucket {bucket}: "
                 f"{order[buckets[order] == bucket][:8].tolist()}... instead of "
                 f"{expected[buckets[expected] == bucket][:8].tolist()}... ({context})",
                 "torch.argsort is not stable: equal keys come out in any order. Use "
                 "torch.sort(buckets, stable=True) (or sort the key bucket * T + position): chunks and causal "
                 "masks need positions in increasing order inside a bucket.")
        fail(f"order {order[:10].tolist()}... does not sort the positions by bucket; expected "
             f"{expected[:10].tolist()}... ({context})",
             "order[k] is the position that comes k-th: torch.sort(buckets, stable=True).indices.")


def check_undo(sort_by_bucket: Callable) -> None:
    """``undo`` puts sorted things back: ``sorted[undo] == original``, i.e. ``order[undo] == arange(T)``, for the
    student's own order where it sorts the buckets (an unstable sort costs only test_sort), else for the
    library's: an ``(arange, arange)`` answer, which sorts nothing, fails."""
    for buckets in sort_cases():
        context = f"buckets {tuple(buckets.shape)}"
        order, undo = _call_sort(sort_by_bucket, buckets, context)
        positions = torch.arange(len(buckets), device=buckets.device)
        if not (torch.equal(order.sort().values, positions) and bool((buckets[order][1:] >= buckets[order][:-1]).all())):
            order, _ = reference_sort(buckets)  # no sort of these buckets (graded by test_sort): judge undo by ours
        if torch.equal(undo.sort().values, positions) and torch.equal(order[undo], positions):
            continue
        if torch.equal(undo, order):
            fail(f"undo equals order ({context})",
                 "undo is the inverse permutation: undo[order[k]] = k, e.g. undo = torch.argsort(order) or "
                 "undo = torch.empty_like(order); undo[order] = torch.arange(T).")
        fail(f"order[undo] should be 0, 1, ..., T-1 but is {order[undo][:10].tolist()}... ({context})",
             "undo[order[k]] = k: scatter the positions 0..T-1 to the places order names (or torch.argsort(order)).")


def _chunk_cases():
    """``(x, chunk_len)``: TRIALS random ones (one to six chunks), then one chunk of the whole sequence and
    chunks of one position."""
    for trial in trials(TRIALS, seed=300):
        num_chunks, length = trial.randint(1, 6), trial.randint(1, 5)
        yield trial.randn(*(num_chunks * length,) + ((trial.randint(1, 4),) if trial.index % 2 else ())), length
    for trial in trials(1, seed=350):
        yield trial.randn(6, 2), 6
        yield trial.randn(5, 3), 1


def _outcome(chunk: Callable) -> Callable:
    """``chunk`` returning ``(None, its result)``, ``("ValueError", None)`` for a ValueError (or a subclass) or
    ``(the exception's type name, None)`` instead of raising, so that ``call_student`` can call it where an
    exception is the expected answer."""
    def outcome(x, chunk_len):
        try:
            return None, chunk(x, chunk_len)
        except ValueError:
            return "ValueError", None
        except Exception as error:  # noqa: BLE001 (which exception it is, is the answer graded)
            return type(error).__name__, None

    outcome.__name__ = getattr(chunk, "__name__", "chunk")
    return outcome


def check_chunk(chunk: Callable) -> None:
    """``chunk(x, c)``: ``(T, ...) -> (T/c, c, ...)`` in order; a ``ValueError`` when ``c`` does not divide ``T``."""
    for x, length in _chunk_cases():
        num_chunks, rest = x.shape[0] // length, tuple(x.shape[1:])
        context = f"x {tuple(x.shape)}, chunk_len={length}"
        got = call_for_tensor(chunk, x, length, name="chunk", shape=(num_chunks, length, *rest), context=context)
        expected = x.reshape(num_chunks, length, *rest)
        if is_close(got, expected):
            continue
        diagnose(got, [
            (x.reshape(length, num_chunks, *rest).transpose(0, 1),
             f"chunk n holds every {num_chunks}-th position (n, n + {num_chunks}, ...) instead of {length} "
             f"consecutive ones ({context})",
             "reshape(c, T // c) then transposing interleaves the sequence; the first axis counts chunks and the "
             "second the positions inside one: x.reshape(T // c, c, *x.shape[1:])."),
        ])
        expect_close(got, expected, name="chunk's result", context=context,
                     hint="chunk n holds positions n*c ... n*c + c - 1: x.reshape(T // c, c, *x.shape[1:]).")
    for seq_len, length in ((10, 4), (7, 2), (5, 3)):
        context = f"x ({seq_len}, 3), chunk_len={length}"
        raised, result = call_student(_outcome(chunk), torch.zeros(seq_len, 3, device=get_device()), length,
                                      name="chunk")
        if raised == "ValueError":
            continue
        if raised is not None:
            fail(f"chunk raised {raised} on {context}; expected a ValueError",
                 f"check `T % chunk_len` first and raise ValueError with a message saying to pad to a multiple "
                 f"of chunk_len ({raised} is what reshape says, not a message for a user).")
        fail(f"chunk returned {type(result).__name__} on {context}, where {length} does not divide {seq_len}; "
             "expected a ValueError",
             "dropping or padding tokens silently changes the model's input: raise ValueError instead.")


def _look_back_cases():
    """Chunks ``(N, c, ...)``: TRIALS random ones (two to six chunks), then a single chunk (its own predecessor)."""
    for trial in trials(TRIALS, seed=400):
        num_chunks, length = trial.randint(2, 6), trial.randint(1, 4)
        yield trial.randn(*(num_chunks, length) + ((trial.randint(1, 3),) if trial.index % 2 else ()))
    yield next(trials(1, seed=450)).randn(1, 3, 2)


def check_look_back(look_back: Callable) -> None:
    """``look_back(chunks (N, c, ...)) -> (N, 2c, ...)``: the previous chunk (the last one for chunk 0), then its own."""
    for chunks in _look_back_cases():
        num_chunks, length, shape = chunks.shape[0], chunks.shape[1], tuple(chunks.shape)
        context = f"chunks {tuple(chunks.shape)}"
        got = call_for_tensor(look_back, chunks, name="look_back", shape=(num_chunks, 2 * length, *shape[2:]),
                              context=context).to(chunks.device)
        expected = reference_look_back(chunks)
        if is_close(got, expected):
            continue
        previous, following = torch.roll(chunks, 1, dims=0), torch.roll(chunks, -1, dims=0)
        diagnose(got, [
            (torch.cat([chunks, previous], dim=1),
             f"look_back puts the chunk first and its predecessor second ({context})",
             "the keys are [previous chunk, own chunk], in sequence order: torch.cat([previous, chunks], dim=1)."),
            (torch.cat([following, chunks], dim=1),
             f"look_back attaches the *next* chunk, not the previous one ({context})",
             "torch.roll(chunks, 1, dims=0) moves chunk n - 1 to place n (roll by +1, not -1)."),
        ])
        if is_close(got[1:], expected[1:]):
            fail(f"look_back gets every chunk right except the first ({context})",
                 "the first chunk looks back at the last one (wrapping around, as in the Reformer): "
                 "torch.roll(chunks, 1, dims=0) does that for you.")
        expect_close(got, expected, name="look_back's result", context=context,
                     hint="previous = torch.roll(chunks, 1, dims=0); return torch.cat([previous, chunks], dim=1).")
