"""Logits processors: small functions that reshape the next-token scores before a token is chosen.

Each takes scores ``(N, V)`` (one row per sequence being decoded) and returns new scores of the
same shape; a removed token gets ``-inf``, so the softmax gives it probability 0 and the
remaining probabilities are renormalised automatically. :mod:`course_lib.decoding` applies them
in HF ``generate``'s order: :func:`repetition_penalty`, :func:`no_repeat_ngram_mask`, then, when
sampling, :func:`sampling_logits`: :func:`temperature`, :func:`top_k_filter`, :func:`top_p_filter`
(the one place that order is written down).

Each gives the same result as the matching HF class (``RepetitionPenaltyLogitsProcessor``,
``NoRepeatNGramLogitsProcessor``, ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``); ``tests/decoding/test_search.py`` checks it on random scores. Not covered:
min-p, typical, epsilon/eta sampling, sequence bias, bad-words lists, watermarking.
"""
from __future__ import annotations

import torch

__all__ = ["temperature", "top_k_filter", "top_p_filter", "sampling_logits", "repetition_penalty",
           "no_repeat_ngram_mask", "validate_sampling_args"]


def validate_sampling_args(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """Raise a ``ValueError`` naming the problem for a temperature ≤ 0, top-k < 1 or top-p outside (0, 1]."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r} "
                         "(for the most likely token every time, use greedy decoding instead of temperature 0)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no top-k filter), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p!r}")


def temperature(scores: torch.Tensor, value: float) -> torch.Tensor:
    """Divide the scores by ``value``: < 1 sharpens the distribution, > 1 flattens it.

    >>> temperature(torch.tensor([[2.0, 1.0]]), 0.5)
    tensor([[4., 2.]])
    """
    validate_sampling_args(temperature=value)
    return scores / value


def top_k_filter(scores: torch.Tensor, k: int, filter_value: float = float("-inf")) -> torch.Tensor:
    """Keep the ``k`` highest scores of each row (and any tied with the k-th), set the rest to -inf.

    >>> top_k_filter(torch.tensor([[1.0, 3.0, 2.0]]), 2)
    tensor([[-inf, 3., 2.]])
    """
    validate_sampling_args(top_k=k)
    k = min(k, scores.shape[-1])
    kth_best = torch.topk(scores, k, dim=-1).values[..., -1:]  # (N, 1)
    return scores.masked_fill(scores < kth_best, filter_value)


def top_p_filter(scores: torch.Tensor, p: float, filter_value: float = float("-inf"),
                 min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability is at least ``p``.

    The token that carries the total *over* ``p`` is kept (dropping it is the classic mistake: the
    kept mass would then be below ``p``). We sort from least to most likely: the tail whose
    cumulative probability is at most ``1 - p`` can go, everything above it stays.

    >>> top_p_filter(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), 0.6).exp()
    tensor([[0.5000, 0.3000, 0.0000]])
    """
    validate_sampling_args(top_p=p)
    ascending, order = torch.sort(scores, dim=-1)  # (N, V), least likely first
    tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)  # probability of this token and all less likely
    drop_sorted = tail_mass <= 1 - p
    drop_sorted[..., -min_tokens_to_keep:] = False  # the most likely token(s) always survive
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, filter_value)


def sampling_logits(scores: torch.Tensor, temperature_value: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> torch.Tensor:
    """The scores sampling draws from: :func:`temperature`, then :func:`top_k_filter`, then :func:`top_p_filter`.

    HF ``generate``'s order (its warpers run in this order too). The order matters: top-p measures its
    mass *after* the temperature and *after* top-k has cut the tail. ``top_k=None`` and ``top_p=None``
    (or 1.0) switch a filter off; the softmax of the result is the distribution to sample.

    >>> sampling_logits(torch.log(torch.tensor([[0.5, 0.3, 0.2]])), top_k=2).softmax(-1)
    tensor([[0.6250, 0.3750, 0.0000]])
    """
    validate_sampling_args(temperature_value, top_k, top_p)
    if temperature_value != 1.0:
        scores = temperature(scores, temperature_value)
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None and top_p < 1.0:
        scores = top_p_filter(scores, top_p)
    return scores


def repetition_penalty(scores: torch.Tensor, previous_ids: torch.Tensor, penalty: float,
                       ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Make every token already in ``previous_ids`` ``(N, T)`` less likely (Keskar et al., 2019).

    A positive score is divided by ``penalty``, a negative one multiplied by it (dividing a negative
    score would *raise* it). Each token is penalised once however often it occurred. ``ignore``
    ``(N, T)`` is True at positions not to count (HF skips the left padding of the prompt).

    >>> repetition_penalty(torch.tensor([[2.0, -2.0, 1.0]]), torch.tensor([[0, 1]]), 2.0)
    tensor([[ 1., -4.,  1.]])
    """
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = no penalty), got {penalty!r}")
    vocab_size = scores.shape[-1]
    if ignore is not None:  # send ignored positions to a spare column past the vocabulary
        previous_ids = previous_ids.masked_fill(ignore, vocab_size)
    padded = torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=-1)  # (N, V + 1)
    seen = padded.gather(-1, previous_ids)  # (N, T), scores of the tokens already there
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return padded.scatter(-1, previous_ids, seen)[:, :vocab_size]


def no_repeat_ngram_mask(previous_ids: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """``(N, V)`` boolean, True at tokens that would repeat an n-gram already in ``previous_ids`` ``(N, T)``.

    The next token completes the n-gram ``(last n-1 tokens, token)``; it is banned if some window
    of ``n`` tokens earlier in the row starts with those same ``n-1`` tokens. Apply with
    ``scores.masked_fill(mask, -inf)``. Like HF, every position counts, prompt (and padding) included.

    >>> no_repeat_ngram_mask(torch.tensor([[1, 2, 3, 1]]), 2, 5).nonzero().tolist()  # "1 2" seen: ban 2 after 1
    [[0, 2]]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"no_repeat_ngram_size must be an integer >= 1, got {n!r}")
    rows, length = previous_ids.shape
    banned = torch.zeros(rows, vocab_size + 1, dtype=torch.bool, device=previous_ids.device)
    if length < n:  # no complete n-gram yet
        return banned[:, :vocab_size]
    last = previous_ids[:, length - n + 1:]  # (N, n-1), what the next n-gram starts with
    windows = previous_ids.unfold(1, n, 1)  # (N, T-n+1, n), every n-gram so far
    same_start = (windows[..., :-1] == last[:, None, :]).all(dim=-1)  # (N, T-n+1)
    # A matching window bans its last token; the others point at the spare column V.
    banned.scatter_(1, torch.where(same_start, windows[..., -1], vocab_size), True)
    return banned[:, :vocab_size]
