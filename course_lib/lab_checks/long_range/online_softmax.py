"""The long-range lab's online-softmax checks: one tile of keys folded into a running softmax.

Students write ``online_softmax_update(running_max, running_sum, accumulator, scores, values)`` returning
the new ``(max, sum, accumulator)``: shapes ``(..., T_q)``, ``(..., T_q)``, ``(..., T_q, d)``, the
accumulator *unnormalised* (``Σ exp(s − max) · v``), −inf in ``scores`` where a key is not allowed, the
empty state ``(−inf, 0, 0)``. The reference is :func:`course_lib.long_range.tiled.online_softmax_update`,
the step of the library's tiled attention (pinned to torch's SDPA in tests/long_range).

Two cells. ``test_online_update``: finite states (built by folding earlier tiles with the reference) and
finite tiles; a tile that raises every row's maximum, one that lowers it, rows of both kinds, batch and
head dimensions, one query and one key, scores near ±1000 (``exp`` would overflow without the max).
``test_online_masked``: −inf scores: the first tile (empty state) with rows all allowed, partly allowed
and fully masked; a fully masked tile on a finite state (nothing may change); a partly masked tile that
leaves the maximum where it was; an empty state meeting a fully masked tile (still ``(−inf, 0, 0)``).
Those masked cases need no rescaling of a non-empty state, so forgetting the rescale costs only the first
cell and a NaN on a fully masked row only the second; a rescale by ``exp(new − old)`` or a normalised
accumulator changes what the state means and fails both. Classic mistakes named: no rescaling, the wrong
sign, the maximum of the tile alone, the accumulator normalised inside the update, no max subtracted
(plain exp, which overflows), NaN from (−inf) − (−inf), the maximum of an empty row reset to 0.

Not covered: the loop over tiles and the final division (the library's ``tiled_attention``), the
backward pass, causal masks (they only decide where the −inf are).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ...long_range.tiled import online_softmax_update as library_online_softmax_update
from ..toolkit import (
    ATOL, RTOL, call_student, diagnose, expect_close, expect_results, expect_tensor, fail, is_close, trials,
)

__all__ = ["check_online_masked", "check_online_update", "masked_cases", "reference_online_softmax_update",
           "update_cases"]

NAMES = ("running_max", "running_sum", "accumulator")


def reference_online_softmax_update(running_max, running_sum, accumulator, scores, values):
    """The lab's ``online_softmax_update``: :func:`course_lib.long_range.tiled.online_softmax_update`."""
    return library_online_softmax_update(running_max, running_sum, accumulator, scores, values)


def empty_state(lead: tuple[int, ...], queries: int, width: int, device) -> tuple[torch.Tensor, ...]:
    """(−inf, 0, 0): no key seen yet."""
    return (torch.full((*lead, queries), float("-inf"), device=device), torch.zeros(*lead, queries, device=device),
            torch.zeros(*lead, queries, width, device=device))


def _folded(trial, lead, queries, width, tiles: int, scale: float = 2.0, offset: float = 0.0):
    """A finite state: ``tiles`` random tiles folded from the empty state by the reference."""
    state = empty_state(lead, queries, width, trial.device)
    for _ in range(tiles):
        keys = trial.randint(1, 5)
        scores = trial.randn(*lead, queries, keys) * scale + offset
        state = reference_online_softmax_update(*state, scores, trial.randn(*lead, keys, width))
    return state


def update_cases():
    """(state, scores, values, context) with finite numbers everywhere."""
    for trial in trials(3, seed=3100):
        lead = [(), (2,), (2, 3)][trial.index]
        queries, keys, width = trial.randint(2, 5), trial.randint(2, 6), trial.randint(1, 4)
        state = _folded(trial, lead, queries, width, tiles=trial.randint(1, 2))
        shift = torch.tensor([4.0, -4.0], device=trial.device).repeat(queries)[:queries]  # rows up, rows down
        scores = trial.randn(*lead, queries, keys) + shift[:, None]
        yield (*state, scores, trial.randn(*lead, keys, width),
               f"batch dims {lead}, {queries} queries, a tile of {keys} keys, d = {width}; rows whose max rises, "
               "rows whose max falls")
    for trial in trials(1, seed=3150):
        lead, queries, keys, width = (2, 2), 3, 4, 2
        state = _folded(trial, lead, queries, width, tiles=2)
        yield (*state, trial.randn(*lead, queries, keys) + 8, trial.randn(*lead, keys, width),
               "a tile that raises every row's maximum by about 8")
        yield (*state, trial.randn(*lead, queries, keys) - 8, trial.randn(*lead, keys, width),
               "a tile that lowers nothing: its scores are about 8 below the running maximum")
        state = _folded(trial, (1,), 1, 3, tiles=1)
        yield (*state, trial.randn(1, 1, 1), trial.randn(1, 1, 3), "one query, a tile of one key")
        state = _folded(trial, (2,), 3, 2, tiles=2, scale=3.0, offset=1000.0)
        yield (*state, trial.randn(2, 3, 4) * 3 + 1000, trial.randn(2, 4, 2),
               "scores near 1000: exp(1000) overflows unless the maximum is subtracted")
        state = _folded(trial, (2,), 3, 2, tiles=1, scale=3.0, offset=-1000.0)
        yield (*state, trial.randn(2, 3, 4) * 3 - 1000, trial.randn(2, 4, 2), "scores near -1000")


def masked_cases():
    """(state, scores, values, context) with −inf scores; no case needs a non-empty state rescaled."""
    for trial in trials(1, seed=3200):
        lead, queries, keys, width = (2, 2), 4, 5, 3
        scores = trial.randn(*lead, queries, keys)
        scores[..., 1, :2] = float("-inf")  # row 1: partly masked
        scores[..., 2, :] = float("-inf")  # row 2: no allowed key
        yield (*empty_state(lead, queries, width, trial.device), scores, trial.randn(*lead, keys, width),
               "the first tile (state −inf, 0, 0): row 0 all allowed, row 1 partly masked, row 2 fully masked")
        state = _folded(trial, lead, queries, width, tiles=2)
        below = state[0][..., None] - 1 - trial.randn(*lead, queries, keys).abs()  # under every row's max
        below[..., 0, :] = float("-inf")
        below[..., 1, ::2] = float("-inf")
        below[..., 3, :] = float("-inf")
        yield (*state, below, trial.randn(*lead, keys, width),
               "a finite state; rows 0 and 3 of the tile fully masked, row 1 partly, every allowed score below "
               "the running maximum")
        yield (*empty_state((3,), 2, 2, trial.device), torch.full((3, 2, 4), float("-inf"), device=trial.device),
               trial.randn(3, 4, 2), "the empty state and a fully masked tile: nothing seen yet, still nothing")
        large = trial.randn(2, 3, 4) * 3 + 1000
        large[:, 0, 1:] = float("-inf")
        large[:, 2, :] = float("-inf")
        yield (*empty_state((2,), 3, 2, trial.device), large, trial.randn(2, 4, 2),
               "the first tile, scores near 1000 with −inf: rows 0 partly, 2 fully masked")


def _call(update: Callable, state, scores, values, context) -> tuple[torch.Tensor, ...]:
    result = call_student(update, *state, scores, values, name="online_softmax_update")
    got = expect_results(result, ("new_max", "new_sum", "new_accumulator"), function="online_softmax_update",
                         context=context, tensors=True)
    for name, value, like in zip(NAMES, got, state):
        expect_tensor(value, name=f"the new {name}", shape=tuple(like.shape), context=context)
    return got


def _candidates(state, scores, values):
    """What the classic mistakes return: name -> (max, sum, accumulator)."""
    old_max, old_sum, old_acc = state
    new_max = torch.maximum(old_max, scores.amax(dim=-1))
    shift = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
    exp_scores = torch.exp(scores - shift[..., None])
    tile_sum, tile_acc = exp_scores.sum(dim=-1), exp_scores @ values

    def rescaled(rescale):
        return new_max, old_sum * rescale + tile_sum, old_acc * rescale[..., None] + tile_acc

    tile_max = scores.amax(dim=-1)
    tile_shift = torch.where(torch.isneginf(tile_max), torch.zeros_like(tile_max), tile_max)
    tile_exp = torch.exp(scores - tile_shift[..., None])
    own = torch.exp(old_max - tile_shift)
    reference = rescaled(torch.exp(old_max - shift))
    return {
        "none": rescaled(torch.ones_like(new_max)),
        "sign": rescaled(torch.exp(new_max - old_max)),
        "tile": (tile_max, old_sum * own + tile_exp.sum(-1), old_acc * own[..., None] + tile_exp @ values),
        "normalised": (reference[0], reference[1], reference[2] / reference[1][..., None]),
        "plain": (new_max, old_sum + torch.exp(scores).sum(-1), old_acc + torch.exp(scores) @ values),
    }


def _matches(got, expected) -> bool:
    return all(is_close(g, e) for g, e in zip(got, expected))


def _matches_with_nan(got, expected) -> bool:
    """:func:`_matches`, NaN matching NaN: a mistake's NaN pattern on masked rows is part of its signature."""
    return all(tuple(g.shape) == tuple(e.shape) and torch.allclose(g.detach().cpu().float(), e.detach().cpu().float(),
                                                                   atol=ATOL, rtol=RTOL, equal_nan=True)
               for g, e in zip(got, expected))


MISTAKES = {
    "none": ("online_softmax_update adds the tile without rescaling the old sum and accumulator",
             "they were computed relative to the old maximum: multiply both by exp(old max − new max) before "
             "adding the tile's exp(scores − new max), or the old keys keep too much weight when the max rises."),
    "sign": ("online_softmax_update rescales the old state by exp(new max − old max): the sign is reversed",
             "the old terms are exp(s − old max); to make them exp(s − new max), multiply by "
             "exp(old max − new max), "
             "which is ≤ 1 (0 for an empty state, whose max is −inf)."),
    "tile": ("online_softmax_update takes the tile's own maximum as the new maximum",
             "the running maximum covers every key so far: new_max = torch.maximum(running_max, scores.amax(dim=-1))."),
    "normalised": ("online_softmax_update divides the accumulator by the sum inside the update",
                   "the accumulator stays unnormalised, Σ exp(s − max) · v; the division by the sum happens once, "
                   "after the last tile."),
    "plain": ("online_softmax_update adds exp(scores) without subtracting the maximum",
              "the sum and the accumulator are kept relative to the running maximum: add exp(scores − new_max), "
              "after rescaling the old state by exp(old max − new max); a plain exp(1000) is inf in float32."),
}


def _diagnose(got, state, scores, values, context, names, matches=_matches) -> None:
    candidates = _candidates(state, scores, values)
    diagnose(got, [(candidates[name], *MISTAKES[name]) for name in names], context=context, matches=matches)


def _compare(got, expected, context, hint) -> None:
    for name, value, wanted in zip(NAMES, got, expected):
        expect_close(value, wanted, name=f"the new {name}", context=context, hint=hint)


def check_online_update(update: Callable) -> None:
    """Finite state and tile: the new (max, sum, accumulator) equal the reference's."""
    for *state, scores, values, context in update_cases():
        got = _call(update, state, scores, values, context)
        expected = reference_online_softmax_update(*state, scores, values)
        if _matches(got, expected):
            continue
        if not all(torch.isfinite(value).all() for value in got):
            fail(f"online_softmax_update returns inf or NaN on finite scores (on {context})",
                 "exp of a large score overflows: subtract the new maximum before exp, exp(scores − new_max), "
                 "and rescale the old state by exp(old max − new max); every exponent is then ≤ 0.")
        _diagnose(got, state, scores, values, context, ("none", "sign", "tile", "normalised", "plain"))
        _compare(got, expected, context, "new_max = max(running_max, the tile's max); rescale = exp(running_max − "
                 "new_max); sum = sum · rescale + Σ exp(scores − new_max); accumulator = accumulator · rescale + "
                 "exp(scores − new_max) @ values.")


def check_online_masked(update: Callable) -> None:
    """−inf scores: masked keys add nothing, an empty row stays (−inf, 0, 0), no NaN anywhere."""
    for *state, scores, values, context in masked_cases():
        got = _call(update, state, scores, values, context)
        expected = reference_online_softmax_update(*state, scores, values)
        if _matches(got, expected):
            continue
        _diagnose(got, state, scores, values, context, ("sign", "normalised"), matches=_matches_with_nan)
        nan_rows = torch.isnan(got[1]) | torch.isnan(got[2]).any(dim=-1)
        if nan_rows.any():
            if torch.isfinite(expected[0][nan_rows]).any():  # NaN where a key was allowed: an infinite rescale
                fail(f"online_softmax_update gives NaN on a row whose state was empty but whose tile has allowed "
                     f"keys (on {context})", MISTAKES["sign"][1])
            fail(f"online_softmax_update gives NaN on a row with no allowed key yet (max −inf) (on {context})",
                 "(−inf) − (−inf) is NaN: where the new maximum is −inf, subtract 0 instead, e.g. shift = "
                 "torch.where(torch.isneginf(new_max), 0.0, new_max); exp(−inf − shift) is then 0, as it should "
                 "be.")
        if bool((torch.isneginf(expected[0]) & ~torch.isneginf(got[0])).any()):
            fail(f"online_softmax_update gives a row with no allowed key a finite maximum (on {context})",
                 "a row that has seen no allowed key keeps max −inf (and sum 0, accumulator 0); a made-up maximum "
                 "such as 0 would make the next tile's exp(s − 0) underflow for very negative scores.")
        _compare(got, expected, context, "masked keys (−inf) add exp(−inf) = 0: a fully masked tile leaves the "
                 "state as it was, and the empty state (−inf, 0, 0) stays empty.")
