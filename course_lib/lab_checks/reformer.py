"""Hidden checks of lab 05, the Reformer: LSH hashing, sorting and chunking; a reversible layer's backward.

One ``check_*`` function per graded cell of ``labs/source/05_reformer/reformer_lab.ipynb``; ``RUBRIC``
lists them with their points. Students work on plain tensors of one head and one sequence:

* ``hash_vectors(x (T, d), rotations (d, R, b/2), b) -> (R, T)`` and ``sort_by_bucket(buckets (T,))
  -> (order, undo)`` are compared with :func:`course_lib.reformer.hash_vectors` and
  :func:`course_lib.reformer.sort_by_bucket`; ``chunk`` and ``look_back`` with the reshape and
  :func:`course_lib.reformer.look_adjacent` (one chunk before, wrapping around);
* the reversible block is ``y1 = x1 + F(x2, wf)``, ``y2 = x2 + G(y1, wg)`` with the fixed sub-layers
  :func:`sublayer_f` / :func:`sublayer_g` (the notebook's locked set-up cell defines the same ``F``
  and ``G``), as in :class:`course_lib.reformer.ReversibleBlock`; gradients are compared with autograd.

Everything a check exchanges with student code is tensors, ints and tuples, so the sandboxed grader
(:mod:`~course_grader.autograder`) can grade the lab too. Each classic mistake costs only its cell:

* argmax over ``xR`` alone (no ``-xR``) only reaches half the buckets: :func:`check_hash` says so;
* an unstable sort (``torch.argsort``) shuffles positions inside a bucket: :func:`check_sort` says so,
  and :func:`check_undo` checks ``undo`` against the student's *own* order;
* a backward that uses inputs stored by the forward pass instead of rebuilding them:
  :func:`check_backward` calls the forward on the same inputs first (so such a backward gets its
  gradients right), :func:`check_backward_recomputes` calls it on *other* inputs first;
* the wrong reconstruction order (``x1`` before ``x2``): :func:`check_inverse`; the backward checks
  swap the reference ``reversible_inverse`` into the student's namespace while they run.

Not covered: the attention itself inside the chunks (the chapter's business), several heads, causal masks.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..reformer import hash_vectors as library_hash_vectors
from ..reformer import look_adjacent
from ..reformer import sort_by_bucket as library_sort_by_bucket
from .rubric import Criterion, Rubric
from .toolkit import (
    Trial,
    call_student,
    expect_close,
    expect_tensor,
    fail,
    is_close,
    trials,
)

__all__ = [
    "RUBRIC",
    "check_backward",
    "check_backward_recomputes",
    "check_chunk",
    "check_forward",
    "check_hash",
    "check_inverse",
    "check_look_back",
    "check_sort",
    "check_undo",
    "reference_forward",
    "reference_inverse",
    "sublayer_f",
    "sublayer_g",
]

TRIALS = 6
BUCKET_COUNTS = (2, 4, 6, 8, 16)


# --- references ------------------------------------------------------------------------------

def sublayer_f(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The lab's ``F`` (attention's place in a Reformer layer): ``tanh(x @ weight)``."""
    return torch.tanh(x @ weight)


def sublayer_g(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The lab's ``G`` (the feed-forward's place): ``gelu(x @ weight)``."""
    return torch.nn.functional.gelu(x @ weight)


def reference_forward(x1, x2, f_weight, g_weight):
    y1 = x1 + sublayer_f(x2, f_weight)
    return y1, x2 + sublayer_g(y1, g_weight)


def reference_inverse(y1, y2, f_weight, g_weight):
    """``x2 = y2 - G(y1)`` first (outputs only), then ``x1 = y1 - F(x2)`` (needs ``x2``)."""
    x2 = y2 - sublayer_g(y1, g_weight)
    return y1 - sublayer_f(x2, f_weight), x2


def reference_gradients(x1, x2, f_weight, g_weight, dy1, dy2):
    """``dx1, dx2, df_weight, dg_weight`` by plain autograd on the stored inputs."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x1, x2, f_weight, g_weight)]
    with torch.enable_grad():
        y1, y2 = reference_forward(*leaves)
        return torch.autograd.grad((y1, y2), leaves, (dy1, dy2))


def reference_backward(y1, y2, dy1, dy2, f_weight, g_weight):
    """The lab's ``reversible_backward``: ``(x1, x2, dx1, dx2, df_weight, dg_weight)``, inputs rebuilt first."""
    x1, x2 = reference_inverse(y1, y2, f_weight, g_weight)
    return (x1, x2, *reference_gradients(x1, x2, f_weight, g_weight, dy1, dy2))


def reference_hash(x, rotations, n_buckets):
    """The lab's ``hash_vectors`` for one sequence ``x (T, d)``: :func:`course_lib.reformer.hash_vectors`, ``(R, T)``."""
    return library_hash_vectors(x[None, None], rotations[None], n_buckets)[0, 0]


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


# --- inputs ----------------------------------------------------------------------------------

def _random_block(trial: Trial):
    """x1, x2 (T, d), weights (d, d) scaled so F and G are neither tiny nor saturated, dy1, dy2 (T, d)."""
    seq_len, dim = trial.randint(2, 9), trial.randint(2, 8)
    x1, x2, dy1, dy2 = (trial.randn(seq_len, dim) for _ in range(4))
    f_weight, g_weight = (trial.randn(dim, dim) / math.sqrt(dim) for _ in range(2))
    return x1, x2, f_weight, g_weight, dy1, dy2


def _as_tensors(value, count: int, name: str, context: str) -> tuple[torch.Tensor, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != count:
        what = type(value).__name__ if not isinstance(value, (tuple, list)) else f"{len(value)} values"
        fail(f"{name} should return {count} tensors, got {what} ({context})",
             "did you forget a `return`?" if value is None else None)
    for index, item in enumerate(value):
        expect_tensor(item, name=f"{name}'s result #{index + 1}", context=context)
    return tuple(value)


# --- LSH: hash, sort, chunk --------------------------------------------------------------------

def check_hash(hash_vectors: Callable) -> None:
    """``hash_vectors(x, rotations, n_buckets)``: argmax over ``[xR, -xR]``, one row per hash round."""
    for trial in trials(TRIALS, seed=100):
        seq_len, dim, rounds = trial.randint(4, 40), (4, 8, 16)[trial.randint(0, 2)], trial.randint(1, 3)
        n_buckets = BUCKET_COUNTS[trial.randint(0, len(BUCKET_COUNTS) - 1)]
        x, rotations = trial.randn(seq_len, dim), trial.randn(dim, rounds, n_buckets // 2)
        context = f"x {tuple(x.shape)}, rotations {tuple(rotations.shape)}, n_buckets={n_buckets}"
        got = expect_tensor(call_student(hash_vectors, x, rotations, n_buckets, name="hash_vectors"),
                            name="hash_vectors' result", shape=(rounds, seq_len), context=context)
        expected = library_hash_vectors(x[None, None], rotations[None], n_buckets)[0, 0]  # (R, T)
        rotated = _reference_rotated(x, rotations)
        both = torch.cat([rotated, -rotated], dim=-1).sort(dim=-1, descending=True).values
        clear = (both[..., 0] - both[..., 1]) > 1e-4  # near-ties may fall either way in fp32
        got = got.to(expected.device).long()
        if torch.equal(got[clear], expected[clear]):
            continue
        if torch.equal(got[clear], rotated.argmax(-1)[clear]):
            fail(f"hash_vectors takes the argmax over xR only, so it never uses buckets {n_buckets // 2} to "
                 f"{n_buckets - 1} ({context})",
                 "R has n_buckets/2 columns; the bucket is the argmax over the concatenation [xR, -xR] "
                 "(n_buckets candidates): torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1). A vector and "
                 "its opposite must land in different buckets.")
        if torch.equal(got[clear], torch.cat([-rotated, rotated], dim=-1).argmax(-1)[clear]):
            fail(f"hash_vectors concatenates [-xR, xR]; the library's order is [xR, -xR] ({context})",
                 "torch.cat([rotated, -rotated], dim=-1): bucket i < n_buckets/2 means column i is the largest.")
        fail(f"hash_vectors gives other buckets than the library ({context}): got {got[0, :8].tolist()}..., "
             f"expected {expected[0, :8].tolist()}...",
             "rotate with torch.einsum('td,drb->rtb', x, rotations) (one row per hash round r), then take "
             "the argmax over [xR, -xR] along the last axis.")


def _random_buckets(trial: Trial) -> torch.Tensor:
    """(T,) bucket ids with many repeats, so the order inside a bucket matters."""
    seq_len, n_buckets = trial.randint(64, 200), trial.randint(2, 8)
    return torch.randint(0, n_buckets, (seq_len,), generator=trial.generator).to(trial.device)


def reference_sort(buckets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab's ``sort_by_bucket`` for one sequence: :func:`course_lib.reformer.sort_by_bucket`'s ``(order, undo)``."""
    order, undo = library_sort_by_bucket(buckets[None, None, None], int(buckets.max()) + 1)
    return order[0, 0], undo[0, 0]


def _sort_cases() -> list[torch.Tensor]:
    device = next(trials(1)).device
    return [torch.tensor([1, 0, 1, 0], device=device)] + [_random_buckets(t) for t in trials(TRIALS, seed=200)]


def _call_sort(sort_by_bucket, buckets, context):
    result = call_student(sort_by_bucket, buckets, name="sort_by_bucket")
    order, undo = _as_tensors(result, 2, "sort_by_bucket", context)
    shape = tuple(buckets.shape)
    return (expect_tensor(order, name="order", shape=shape, context=context).to(buckets.device).long(),
            expect_tensor(undo, name="undo", shape=shape, context=context).to(buckets.device).long())


def check_sort(sort_by_bucket: Callable) -> None:
    """``order`` lists the positions sorted by bucket, and by position inside a bucket (a stable sort)."""
    for buckets in _sort_cases():
        context = f"buckets {tuple(buckets.shape)} with {int(buckets.max()) + 1} distinct ids"
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
    """``undo`` puts sorted things back: ``sorted[undo] == original``, i.e. ``order[undo] == arange(T)``."""
    for buckets in _sort_cases():
        context = f"buckets {tuple(buckets.shape)}"
        order, undo = _call_sort(sort_by_bucket, buckets, context)
        positions = torch.arange(len(buckets), device=buckets.device)
        if not torch.equal(order.sort().values, positions):
            order, _ = reference_sort(buckets)  # their order is graded elsewhere: judge undo against ours
        if torch.equal(undo.sort().values, positions) and torch.equal(order[undo], positions):
            continue
        if torch.equal(undo, order):
            fail(f"undo equals order ({context})",
                 "undo is the inverse permutation: undo[order[k]] = k, e.g. undo = torch.argsort(order) or "
                 "undo = torch.empty_like(order); undo[order] = torch.arange(T).")
        fail(f"order[undo] should be 0, 1, ..., T-1 but is {order[undo][:10].tolist()}... ({context})",
             "undo[order[k]] = k: scatter the positions 0..T-1 to the places order names (or torch.argsort(order)).")


def check_chunk(chunk: Callable) -> None:
    """``chunk(x, c)``: ``(T, ...) -> (T/c, c, ...)`` in order; a ``ValueError`` when ``c`` does not divide ``T``."""
    for trial in trials(TRIALS, seed=300):
        num_chunks, length = trial.randint(1, 6), trial.randint(1, 5)
        shape = (num_chunks * length,) + ((trial.randint(1, 4),) if trial.index % 2 else ())
        x = trial.randn(*shape)
        context = f"x {tuple(x.shape)}, chunk_len={length}"
        got = expect_tensor(call_student(chunk, x, length, name="chunk"), name="chunk's result",
                            shape=(num_chunks, length, *shape[1:]), context=context)
        expect_close(got, x.reshape(num_chunks, length, *shape[1:]), name="chunk's result", context=context,
                     hint="chunk n holds positions n*c ... n*c + c - 1: x.reshape(T // c, c, *x.shape[1:]).")
    for seq_len, length in ((10, 4), (7, 2), (5, 3)):
        context = f"x ({seq_len}, 3), chunk_len={length}"
        try:
            result = chunk(torch.zeros(seq_len, 3), length)
        except ValueError:
            continue
        except Exception as error:  # noqa: BLE001 (any other exception is the mistake reported)
            fail(f"chunk raised {type(error).__name__} on {context}; expected a ValueError",
                 f"check `T % chunk_len` first and raise ValueError with a message saying to pad to a multiple "
                 f"of chunk_len ({type(error).__name__} is what reshape says, not a message for a user).")
        fail(f"chunk returned {type(result).__name__} on {context}, where {length} does not divide {seq_len}; "
             "expected a ValueError",
             "dropping or padding tokens silently changes the model's input: raise ValueError instead.")


def check_look_back(look_back: Callable) -> None:
    """``look_back(chunks (N, c, ...)) -> (N, 2c, ...)``: the previous chunk (the last one for chunk 0), then its own."""
    for trial in trials(TRIALS, seed=400):
        num_chunks, length = trial.randint(2, 6), trial.randint(1, 4)
        shape = (num_chunks, length) + ((trial.randint(1, 3),) if trial.index % 2 else ())
        chunks = trial.randn(*shape)
        context = f"chunks {tuple(chunks.shape)}"
        got = expect_tensor(call_student(look_back, chunks, name="look_back"), name="look_back's result",
                            shape=(num_chunks, 2 * length, *shape[2:]), context=context)
        got = got.to(chunks.device)
        expected = look_adjacent(chunks[None, None], 1, 0)[0, 0]
        if is_close(got, expected):
            continue
        previous, following = torch.roll(chunks, 1, dims=0), torch.roll(chunks, -1, dims=0)
        if is_close(got, torch.cat([chunks, previous], dim=1)):
            fail(f"look_back puts the chunk first and its predecessor second ({context})",
                 "the keys are [previous chunk, own chunk], in sequence order: torch.cat([previous, chunks], dim=1).")
        if is_close(got, torch.cat([following, chunks], dim=1)):
            fail(f"look_back attaches the *next* chunk, not the previous one ({context})",
                 "torch.roll(chunks, 1, dims=0) moves chunk n - 1 to place n (roll by +1, not -1).")
        if is_close(got[1:], expected[1:]):
            fail(f"look_back gets every chunk right except the first ({context})",
                 "the first chunk looks back at the last one (wrapping around, as in the Reformer): "
                 "torch.roll(chunks, 1, dims=0) does that for you.")
        expect_close(got, expected, name="look_back's result", context=context,
                     hint="previous = torch.roll(chunks, 1, dims=0); return torch.cat([previous, chunks], dim=1).")


# --- the reversible block ----------------------------------------------------------------------

def check_forward(reversible_forward: Callable) -> None:
    """``reversible_forward(x1, x2, wf, wg) = (x1 + F(x2), x2 + G(y1))``."""
    for trial in trials(TRIALS, seed=500):
        x1, x2, wf, wg, _, _ = _random_block(trial)
        context = f"x1, x2 {tuple(x1.shape)}"
        result = call_student(reversible_forward, x1, x2, wf, wg, name="reversible_forward")
        y1, y2 = _as_tensors(result, 2, "reversible_forward", context)
        expected1, expected2 = reference_forward(x1, x2, wf, wg)
        expect_close(y1.to(x1.device), expected1, name="y1", context=context,
                     hint="y1 = x1 + F(x2, f_weight): F reads the *other* stream.")
        if is_close(y2.to(x1.device), x2 + sublayer_g(x1, wg)):
            fail(f"y2 = x2 + G(x1), but G must read the new y1 ({context})",
                 "y2 = x2 + G(y1, g_weight): that G sees y1 is what makes x2 recoverable from the outputs.")
        expect_close(y2.to(x1.device), expected2, name="y2", context=context,
                     hint="y2 = x2 + G(y1, g_weight), with the y1 you just computed.")


def check_inverse(reversible_inverse: Callable) -> None:
    """``reversible_inverse(y1, y2, wf, wg)`` rebuilds ``(x1, x2)``: ``x2`` first, then ``x1``."""
    for trial in trials(TRIALS, seed=600):
        x1, x2, wf, wg, _, _ = _random_block(trial)
        y1, y2 = reference_forward(x1, x2, wf, wg)
        context = f"y1, y2 {tuple(y1.shape)} from random x1, x2"
        result = call_student(reversible_inverse, y1, y2, wf, wg, name="reversible_inverse")
        got1, got2 = (t.to(x1.device) for t in _as_tensors(result, 2, "reversible_inverse", context))
        if is_close(got1, x1) and is_close(got2, x2):
            continue
        uses_y2 = y1 - sublayer_f(y2, wf)  # x1 computed before x2 is known
        if is_close(got1, uses_y2) or is_close(got1, y1 - sublayer_f(y2 - sublayer_g(uses_y2, wg), wf)):
            fail(f"reversible_inverse rebuilds x1 before x2 ({context})",
                 "x1 = y1 - F(x2) needs x2, which you do not have yet; y2 - G(y1) needs only outputs. Undo the "
                 "forward steps in reverse order: x2 = y2 - G(y1, g_weight) first, then x1 = y1 - F(x2, f_weight).")
        expect_close(got2, x2, name="x2", context=context, hint="x2 = y2 - G(y1, g_weight).")
        expect_close(got1, x1, name="x1", context=context, hint="x1 = y1 - F(x2, f_weight), with the rebuilt x2.")


def _call_backward(reversible_backward, y1, y2, dy1, dy2, wf, wg, context):
    result = call_student(reversible_backward, y1, y2, dy1, dy2, wf, wg, name="reversible_backward")
    return tuple(t.to(y1.device) for t in _as_tensors(result, 6, "reversible_backward", context))


def _run_forward_quietly(reversible_forward, *args) -> None:
    """Call the student's forward for its side effects only (its result is graded by check_forward)."""
    try:
        reversible_forward(*(a.clone() for a in args))
    except Exception:  # noqa: BLE001, S110 (a broken forward is check_forward's business)
        pass


def check_backward(reversible_forward: Callable, reversible_backward: Callable) -> None:
    """Right after the forward pass on the same inputs, the backward's gradients equal autograd's."""
    for trial in trials(TRIALS, seed=700):
        x1, x2, wf, wg, dy1, dy2 = _random_block(trial)
        context = f"x1, x2 {tuple(x1.shape)}, weights {tuple(wf.shape)}"
        _run_forward_quietly(reversible_forward, x1, x2, wf, wg)
        y1, y2 = reference_forward(x1, x2, wf, wg)
        _, _, dx1, dx2, dwf, dwg = _call_backward(reversible_backward, y1, y2, dy1, dy2, wf, wg, context)
        expected = reference_gradients(x1, x2, wf, wg, dy1, dy2)
        if all(is_close(a, b) for a, b in zip((dx1, dx2, dwf, dwg), expected)):
            continue
        if is_close(dwf, expected[3]) and is_close(dwg, expected[2]):
            fail(f"the weight gradients come back swapped ({context})",
                 "return x1, x2, dx1, dx2, then the gradient of f_weight, then that of g_weight.")
        if is_close(dx1, dy1) and not is_close(dx1, expected[0]):
            fail(f"dx1 equals dy1: the path from y1 through G into y2 is missing ({context})",
                 "y1 feeds y2 through G, so dL/dy1 = dy1 + (what flows back through G); re-run both steps "
                 "with gradients on and let torch.autograd.backward((y1, y2), (dy1, dy2)) add it up.")
        for name, got, want in zip(("dx1", "dx2", "df_weight", "dg_weight"), (dx1, dx2, dwf, dwg), expected):
            expect_close(got, want, name=name, context=context,
                         hint="rebuild x1, x2 with reversible_inverse, make x1, x2 and both weights leaves "
                              "(.detach().requires_grad_()), re-run the block inside torch.enable_grad(), then "
                              "torch.autograd.backward((y1, y2), (dy1, dy2)) and read the .grad of each leaf.")


def check_backward_recomputes(reversible_forward: Callable, reversible_backward: Callable) -> None:
    """The backward rebuilds ``x1, x2`` from ``y1, y2``, even when the last forward call saw other inputs."""
    for trial in trials(TRIALS, seed=800):
        x1, x2, wf, wg, dy1, dy2 = _random_block(trial)
        other1, other2 = trial.randn(*x1.shape), trial.randn(*x2.shape)
        context = f"x1, x2 {tuple(x1.shape)}; the forward pass last ran on other inputs"
        _run_forward_quietly(reversible_forward, other1, other2, wf, wg)
        y1, y2 = reference_forward(x1, x2, wf, wg)
        got1, got2, *_ = _call_backward(reversible_backward, y1, y2, dy1, dy2, wf, wg, context)
        if is_close(got1, x1) and is_close(got2, x2):
            continue
        if is_close(got1, other1) or is_close(got2, other2):
            fail(f"reversible_backward returns the inputs of the last forward call, not the inputs of these "
                 f"outputs ({context})",
                 "your backward uses activations stored during the forward pass, so the layer saves no memory: "
                 "the forward must keep nothing; the backward rebuilds x1, x2 = reversible_inverse(y1, y2, ...) "
                 "from the outputs it is given.")
        fail(f"the x1, x2 that reversible_backward returns are not the inputs that produced y1, y2 ({context})",
             "start the backward with x1, x2 = reversible_inverse(y1, y2, f_weight, g_weight) and return them "
             "first: the block below needs them as its outputs.")


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
