"""The pretraining lab's masking checks: which positions are chosen, and how the chosen are corrupted.

The lab's convention: ids ``0 .. n_special - 1`` are the special tokens (``<s>``, ``<pad>``, ``</s>``,
``<unk>``, ``<mask>`` in EsperBERTo's tokenizer), so ``input_ids >= n_special`` marks the ordinary ones.
Students write ``choose_positions(input_ids (B, T), n_special, probability, seed) -> chosen (B, T) bool``
and ``corrupt(input_ids, chosen, n_special, mask_id, vocab_size, seed) -> corrupted (B, T)``; the
references (``reference_*``) are :func:`course_lib.pretraining.masking.choose_positions` and ``corrupt``
with a ``torch.Generator`` seeded by ``seed``.

**Randomness.** A correct solution may draw its random numbers in any order, with ``bernoulli``,
``rand < p``, one uniform for the three corruptions or ``multinomial``, from the seed or from the
global generator: no check compares with one seed's exact output. Each check judges the *rule*
exactly (special tokens never chosen, unchosen positions unchanged, random ids ordinary) and the
*rates* statistically, on about 10^5 tokens per trial, within 5 binomial standard deviations (a false
alarm about once in 3.5 million checks; the mistakes below are 15 or more standard deviations off).

Each classic mistake costs only its cell: choosing special tokens or padding, or the complement of
the probability, fails :func:`check_choose`; the 80/10/10 applied to every token (unchosen ones
change) or random ids drawn from the whole vocabulary (specials included) or missing its last id fail
:func:`check_corrupt`; taking "random" as 10 % of the remaining 20 % (2 % random, 18 % unchanged) fails
:func:`check_corrupt_rates` only, which measures the rates among the positions the check chose.

Not covered: the losses (:mod:`.losses`), the rubric (:mod:`.pretraining`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ...pretraining.masking import choose_positions as library_choose, corrupt as library_corrupt
from ..toolkit import Trial, call_for_tensor, fail, trials

__all__ = [
    "check_choose", "check_corrupt", "check_corrupt_rates", "reference_choose", "reference_corrupt", "token_batch",
]

SIGMAS = 5.0  # binomial standard deviations a rate may stray before it is called wrong
N_SPECIAL, MASK_ID = 5, 4  # <s> <pad> </s> <unk> <mask>, as in EsperBERTo's tokenizer
PAD_ID = 1


# --- references ------------------------------------------------------------------------------

def reference_choose(input_ids, n_special, probability, seed):
    """The lab's ``choose_positions``: each ordinary position chosen with ``probability`` (HF's Bernoulli draw)."""
    return library_choose(input_ids < n_special, probability, torch.Generator().manual_seed(seed))


def reference_corrupt(input_ids, chosen, n_special, mask_id, vocab_size, seed):
    """The lab's ``corrupt``: 80 % mask, 10 % a random *ordinary* id, 10 % unchanged, at chosen positions only."""
    return library_corrupt(input_ids, chosen.bool(), mask_id=mask_id, vocab_size=vocab_size,
                           special_ids=range(n_special), generator=torch.Generator().manual_seed(seed))


# --- inputs ----------------------------------------------------------------------------------

def token_batch(trial: Trial, rows: int, length: int, vocab_size: int) -> torch.Tensor:
    """(rows, length) ids like a padded batch: ``<s>`` ordinary ids ``</s>``, then ``<pad>`` up to the length;
    every fourth row has no padding, and a few ordinary positions hold ``<unk>`` or ``<mask>`` (special too)."""
    ids = torch.randint(N_SPECIAL, vocab_size, (rows, length), generator=trial.generator)
    lengths = torch.randint(3, length + 1, (rows,), generator=trial.generator)
    lengths[::4] = length
    positions = torch.arange(length)[None, :]
    ids[torch.rand(rows, length, generator=trial.generator) < 0.01] = 3  # <unk>
    ids[torch.rand(rows, length, generator=trial.generator) < 0.01] = MASK_ID
    ids[:, 0] = 0
    ids[positions == lengths[:, None] - 1] = 2
    ids[positions >= lengths[:, None]] = PAD_ID
    return ids.to(trial.device)


def _outside(rate: float, expected: float, count: int) -> bool:
    """Whether ``rate`` (of ``count`` draws) is further than :data:`SIGMAS` standard deviations from ``expected``."""
    sigma = math.sqrt(max(expected * (1 - expected), 1e-12) / max(count, 1))
    return abs(rate - expected) > SIGMAS * sigma + 1e-12


def _as_bool(chosen: torch.Tensor, name: str, context: str) -> torch.Tensor:
    """A student's 0/1 or bool tensor as bool; anything else fails."""
    if chosen.dtype == torch.bool:
        return chosen
    if chosen.is_floating_point() or not bool(((chosen == 0) | (chosen == 1)).all()):
        fail(f"{name} should be a boolean tensor (True where chosen), got dtype {chosen.dtype} ({context})",
             "return a comparison, e.g. (u < probability) & (input_ids >= n_special), which is already bool.")
    return chosen.bool()


# --- choose_positions ------------------------------------------------------------------------

def _choose_cases():
    """(input_ids, probability, label): random batches of ~10^5 tokens at 0.15 and 0.3, then probability 1 and 0."""
    for trial in trials(2, seed=1400):
        ids = token_batch(trial, 256, 400, vocab_size=50 + 50 * trial.index)
        yield ids, (0.15, 0.3)[trial.index], f"{tuple(ids.shape)} ids", trial.index
    for trial in trials(1, seed=1450):
        ids = token_batch(trial, 8, 20, vocab_size=40)
        yield ids, 1.0, f"probability 1 on {tuple(ids.shape)} ids", 2
        yield ids, 0.0, f"probability 0 on {tuple(ids.shape)} ids", 3


def check_choose(choose_positions: Callable) -> None:
    """Never a special token or padding; every ordinary token at probability 1, none at 0; the rate ~ probability."""
    for ids, probability, label, seed in _choose_cases():
        context = f"{label}, n_special={N_SPECIAL}, probability={probability}"
        chosen = _as_bool(call_for_tensor(choose_positions, ids, N_SPECIAL, probability, seed,
                                          name="choose_positions", label="chosen", shape=tuple(ids.shape),
                                          context=context), "chosen", context).to(ids.device)
        special = ids < N_SPECIAL
        if bool((chosen & special).any()):
            kinds = sorted({int(i) for i in ids[chosen & special].unique()})
            fail(f"choose_positions chose special tokens (ids {kinds}: padding, <s>, </s>, <unk> or <mask>) "
                 f"({context})",
                 "special tokens and padding carry nothing to predict: choose only ordinary ids, "
                 "e.g. chosen = (u < probability) & (input_ids >= n_special).")
        ordinary = ~special
        rate = float(chosen[ordinary].float().mean())
        if probability in (0.0, 1.0) and rate != probability:
            fail(f"at probability {probability} choose_positions chose {rate:.1%} of the ordinary tokens ({context})",
                 "each ordinary token is chosen with probability `probability`: at 1 every one, at 0 none.")
        if _outside(rate, probability, int(ordinary.sum())):
            hint = ("you chose a token when the uniform number is *above* p; choose it when u < probability."
                    if not _outside(rate, 1 - probability, int(ordinary.sum())) else
                    "draw one uniform number per position and choose it when u < probability (or torch.bernoulli "
                    "of a tensor full of `probability`); use the argument, not a fixed 0.15.")
            fail(f"choose_positions chose {rate:.2%} of the ordinary tokens, expected {probability:.0%} "
                 f"(± {SIGMAS:g} standard deviations) ({context})", hint)


# --- corrupt ---------------------------------------------------------------------------------

def _corrupt_cases():
    """(input_ids, chosen, vocab_size, label, seed): ~10^5 tokens chosen at 0.15 (by the reference) and every
    ordinary token chosen (~10^4 random replacements, so every ordinary id is drawn); then nothing chosen."""
    for trial in trials(2, seed=1500):
        vocab_size = (60, 12)[trial.index]  # a small vocabulary: each of its 7 ordinary ids drawn ~1500 times
        ids = token_batch(trial, 256, 400, vocab_size)
        probability = (0.15, 1.0)[trial.index]
        chosen = reference_choose(ids, N_SPECIAL, probability, seed=trial.index)
        yield ids, chosen, vocab_size, f"{tuple(ids.shape)} ids, {int(chosen.sum())} chosen", 10 + trial.index
    for trial in trials(1, seed=1550):
        ids = token_batch(trial, 6, 16, 40)
        yield ids, torch.zeros_like(ids, dtype=torch.bool), 40, f"{tuple(ids.shape)} ids, nothing chosen", 20


def _call_corrupt(corrupt, ids, chosen, vocab_size, seed, context):
    corrupted = call_for_tensor(corrupt, ids, chosen, N_SPECIAL, MASK_ID, vocab_size, seed, name="corrupt",
                                label="corrupted", shape=tuple(ids.shape), context=context)
    if corrupted.is_floating_point() or corrupted.dtype == torch.bool:
        fail(f"corrupted should hold token ids (an integer tensor), got dtype {corrupted.dtype} ({context})",
             "start from input_ids.clone() and write ids into it: the result keeps input_ids' dtype.")
    return corrupted.to(ids.device).long()


def check_corrupt(corrupt: Callable) -> None:
    """Unchosen positions unchanged; chosen ones become <mask>, stay, or a random *ordinary* id, any of them."""
    for ids, chosen, vocab_size, label, seed in _corrupt_cases():
        context = f"{label}, n_special={N_SPECIAL}, mask_id={MASK_ID}, vocab_size={vocab_size}"
        corrupted = _call_corrupt(corrupt, ids, chosen, vocab_size, seed, context)
        changed_unchosen = ~chosen & (corrupted != ids)
        if bool(changed_unchosen.any()):
            fail(f"corrupt changed {int(changed_unchosen.sum())} positions that were not chosen "
                 f"({float(changed_unchosen.float().mean()):.1%} of the unchosen) ({context})",
                 "the 80/10/10 split applies to the chosen positions only: combine every decision with `& chosen` "
                 "(masked = chosen & (u < 0.8), ...); every other token must reach the model as it was.")
        replaced = chosen & (corrupted != ids) & (corrupted != MASK_ID)  # by a random id
        if bool(((corrupted < 0) | (corrupted >= vocab_size)).any()):
            fail(f"corrupt wrote ids outside the vocabulary [0, {vocab_size}) ({context})",
                 "draw random ids with torch.randint(n_special, vocab_size, ...): its upper end is excluded.")
        if bool((replaced & (corrupted < N_SPECIAL)).any()):
            drawn = sorted({int(i) for i in corrupted[replaced & (corrupted < N_SPECIAL)].unique()})
            fail(f"corrupt's random replacements include special ids {drawn} ({context})",
                 "draw random tokens from the ordinary ids only, torch.randint(n_special, vocab_size, ...): a "
                 "<pad> or <s> in the middle of a sentence is noise the model cannot learn from.")
        if int(replaced.sum()) > 5000:  # enough draws to see every ordinary id
            missing = sorted(set(range(N_SPECIAL, vocab_size)) - {int(i) for i in corrupted[replaced].unique()})
            if missing:
                fail(f"corrupt's random replacements never use ids {missing} ({context})",
                     "draw from every ordinary id: torch.randint(n_special, vocab_size, ...) (high is excluded, "
                     "so vocab_size, not vocab_size - 1).")


def _rates_cases():
    """(input_ids, chosen, vocab_size, label, seed): two large batches, 15 % and half the ordinary tokens chosen."""
    for trial in trials(2, seed=1560):
        vocab_size = (60, 200)[trial.index]  # large enough that a random id rarely equals <mask> or the original
        ids = token_batch(trial, (256, 200)[trial.index], (400, 600)[trial.index], vocab_size)
        chosen = reference_choose(ids, N_SPECIAL, (0.15, 0.5)[trial.index], seed=30 + trial.index)
        yield ids, chosen, vocab_size, f"{tuple(ids.shape)} ids, {int(chosen.sum())} chosen", 40 + trial.index


def check_corrupt_rates(corrupt: Callable) -> None:
    """Among the chosen: 80 % <mask>, 10 % a random ordinary id, 10 % unchanged (a random id equal to the
    original counts as unchanged), within :data:`SIGMAS` standard deviations."""
    for ids, chosen, vocab_size, label, seed in _rates_cases():
        context = f"{label}, n_special={N_SPECIAL}, mask_id={MASK_ID}, vocab_size={vocab_size}"
        corrupted = _call_corrupt(corrupt, ids, chosen, vocab_size, seed, context)
        _judge_rates(ids, chosen, corrupted, vocab_size, context)


def _judge_rates(ids, chosen, corrupted, vocab_size, context):
    count = int(chosen.sum())
    masked = float((chosen & (corrupted == MASK_ID) & (ids != MASK_ID)).sum()) / count
    same = float((chosen & (corrupted == ids)).sum()) / count
    other = 1.0 - masked - same
    n_ordinary = vocab_size - N_SPECIAL
    # a random ordinary id equals the original one time in n_ordinary; <mask> ids in the input stay <mask>
    expected = {"<mask>": 0.8, "a random id": 0.1 * (1 - 1 / n_ordinary), "unchanged": 0.1 + 0.1 / n_ordinary}
    got = {"<mask>": masked, "a random id": other, "unchanged": same}
    wrong = [name for name in expected if _outside(got[name], expected[name], count)]
    if not wrong:
        return
    shares = ", ".join(f"{name} {got[name]:.1%} (expected {expected[name]:.1%})" for name in expected)
    if abs(other - 0.02) < 0.01 and abs(same - 0.18) < 0.015:
        hint = ("you drew 'random' with probability 0.1 among the 20 % left after masking, which is 2 % of the "
                "chosen; it must be half of them (0.1 / 0.2 = 0.5), or use one uniform u per position: "
                "u < 0.8 mask, 0.8 <= u < 0.9 random, else keep.")
    else:
        hint = ("of the chosen positions 80 % become <mask>, 10 % a random ordinary id and 10 % stay as they were: "
                "one uniform u per position, u < 0.8 mask, 0.8 <= u < 0.9 random, u >= 0.9 keep.")
    fail(f"among the {count} chosen positions corrupt gives {shares} ({context})", hint)
