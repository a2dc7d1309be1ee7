"""The Reformer lab's reversible-layer checks: the forward pass, its inverse, the backward by recomputation.

The block is ``y1 = x1 + F(x2, wf)``, ``y2 = x2 + G(y1, wg)`` with the fixed sub-layers
:func:`sublayer_f` / :func:`sublayer_g` (the notebook's locked set-up cell defines the same ``F`` and
``G``), as in :class:`course_lib.reformer.ReversibleBlock`; gradients are compared with autograd's
(:func:`reference_gradients`). The references in the lab's signatures are here too (``reference_*``).

Each classic mistake costs only its cell:

* every check ends with a block whose F is zero and one whose G is zero (where a diagnosis may equal the
  right answer, so each is tried only after the comparison with the reference failed);
* a backward that uses inputs stored by the forward pass instead of rebuilding them:
  :func:`check_backward` calls the forward on the same inputs first (so such a backward gets its
  gradients right), :func:`check_backward_recomputes` calls it on *other* inputs first;
* the wrong reconstruction order (``x1`` before ``x2``): :func:`check_inverse`; the backward checks
  run with the reference ``reversible_inverse`` in the student's namespace
  (:meth:`~course_lib.lab_checks.rubric.Rubric.run`).

Not covered: a stack of blocks, random sub-layers (dropout), the rubric (:mod:`.reformer`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..toolkit import Trial, call_student, close_to_any, diagnose, expect_close, expect_results, fail, is_close, trials

__all__ = [
    "check_forward", "check_inverse", "check_backward", "check_backward_recomputes",
    "sublayer_f", "sublayer_g", "reference_forward", "reference_inverse", "reference_gradients", "reference_backward",
]

TRIALS = 6


# --- references ------------------------------------------------------------------------------

def sublayer_f(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The lab's ``F`` (attention's place in a Reformer layer): ``tanh(x @ weight)``."""
    return torch.tanh(x @ weight)


def sublayer_g(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The lab's ``G`` (the feed-forward's place): ``gelu(x @ weight)``."""
    return torch.nn.functional.gelu(x @ weight)


def reference_forward(x1, x2, f_weight, g_weight):
    """The lab's ``reversible_forward``: ``y1 = x1 + F(x2)``, then ``y2 = x2 + G(y1)``."""
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


def _random_block(trial: Trial):
    """x1, x2 (T, d), weights (d, d) scaled so F and G are neither tiny nor saturated, dy1, dy2 (T, d)."""
    seq_len, dim = trial.randint(2, 9), trial.randint(2, 8)
    x1, x2, dy1, dy2 = (trial.randn(seq_len, dim) for _ in range(4))
    f_weight, g_weight = (trial.randn(dim, dim) / math.sqrt(dim) for _ in range(2))
    return x1, x2, f_weight, g_weight, dy1, dy2


def _blocks(seed: int):
    """``(x1, x2, f_weight, g_weight, dy1, dy2)``: TRIALS random blocks, then one whose F is zero (f_weight = 0)
    and one whose G is zero, where a stream passes through unchanged but the weight still gets a gradient."""
    for trial in trials(TRIALS, seed=seed):
        yield _random_block(trial)
    for trial, zero in zip(trials(2, seed=seed + 50), (2, 3)):
        block = list(_random_block(trial))
        block[zero] = torch.zeros_like(block[zero])
        yield tuple(block)


# --- the checks ------------------------------------------------------------------------------

def check_forward(reversible_forward: Callable) -> None:
    """``reversible_forward(x1, x2, wf, wg) = (x1 + F(x2), x2 + G(y1))``."""
    for x1, x2, wf, wg, _, _ in _blocks(500):
        context = f"x1, x2 {tuple(x1.shape)}"
        result = call_student(reversible_forward, x1, x2, wf, wg, name="reversible_forward")
        y1, y2 = expect_results(result, ("y1", "y2"), function="reversible_forward", context=context, tensors=True)
        expected1, expected2 = reference_forward(x1, x2, wf, wg)
        expect_close(y1.to(x1.device), expected1, name="y1", context=context,
                     hint="y1 = x1 + F(x2, f_weight): F reads the *other* stream.")
        if not is_close(y2.to(x1.device), expected2) and is_close(y2.to(x1.device), x2 + sublayer_g(x1, wg)):
            fail(f"y2 = x2 + G(x1), but G must read the new y1 ({context})",
                 "y2 = x2 + G(y1, g_weight): that G sees y1 is what makes x2 recoverable from the outputs.")
        expect_close(y2.to(x1.device), expected2, name="y2", context=context,
                     hint="y2 = x2 + G(y1, g_weight), with the y1 you just computed.")


def check_inverse(reversible_inverse: Callable) -> None:
    """``reversible_inverse(y1, y2, wf, wg)`` rebuilds ``(x1, x2)``: ``x2`` first, then ``x1``."""
    for x1, x2, wf, wg, _, _ in _blocks(600):
        y1, y2 = reference_forward(x1, x2, wf, wg)
        context = f"y1, y2 {tuple(y1.shape)} from random x1, x2"
        result = call_student(reversible_inverse, y1, y2, wf, wg, name="reversible_inverse")
        got1, got2 = (t.to(x1.device) for t in expect_results(result, ("x1", "x2"), function="reversible_inverse",
                                                               context=context, tensors=True))
        if is_close(got1, x1) and is_close(got2, x2):
            continue
        uses_y2 = y1 - sublayer_f(y2, wf)  # x1 computed before x2 is known
        diagnose(got1, [
            ((uses_y2, y1 - sublayer_f(y2 - sublayer_g(uses_y2, wg), wf)),
             f"reversible_inverse rebuilds x1 before x2 ({context})",
             "x1 = y1 - F(x2) needs x2, which you do not have yet; y2 - G(y1) needs only outputs. Undo the "
             "forward steps in reverse order: x2 = y2 - G(y1, g_weight) first, then x1 = y1 - F(x2, f_weight)."),
        ], matches=close_to_any)
        expect_close(got2, x2, name="x2", context=context, hint="x2 = y2 - G(y1, g_weight).")
        expect_close(got1, x1, name="x1", context=context, hint="x1 = y1 - F(x2, f_weight), with the rebuilt x2.")


def _call_backward(reversible_backward, y1, y2, dy1, dy2, wf, wg, context):
    result = call_student(reversible_backward, y1, y2, dy1, dy2, wf, wg, name="reversible_backward")
    names = ("x1", "x2", "dx1", "dx2", "df_weight", "dg_weight")
    results = expect_results(result, names, function="reversible_backward", context=context, tensors=True)
    return tuple(t.to(y1.device) for t in results)


def _run_forward_quietly(reversible_forward, *args) -> None:
    """Call the student's forward for its side effects only (its result is graded by check_forward)."""
    try:
        reversible_forward(*(a.clone() for a in args))
    except Exception:  # noqa: BLE001, S110 (a broken forward is check_forward's business)
        pass


def check_backward(reversible_forward: Callable, reversible_backward: Callable) -> None:
    """Right after the forward pass on the same inputs, the backward's gradients equal autograd's."""
    for x1, x2, wf, wg, dy1, dy2 in _blocks(700):
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
