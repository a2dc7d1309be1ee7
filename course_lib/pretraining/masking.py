"""The two self-supervised objectives' data and losses: masked-LM (BERT/RoBERTa) and causal-LM (GPT).

**Masked LM, dynamic masking** (:func:`mask_tokens` = :func:`choose_positions` then :func:`corrupt`):
each ordinary token is *chosen* with probability ``mlm_probability`` (15 %); special tokens and
padding never are. Of the chosen, 80 % become the mask token, 10 % a random token, 10 % stay as they
are. The labels hold the original id at chosen positions and :data:`IGNORE_INDEX` (−100) everywhere
else, so only the chosen positions give a loss. This is the rule of HF
``DataCollatorForLanguageModeling.torch_mask_tokens``, drawn in the same order (one Bernoulli draw for
the choice, one for "mask", one for "random among the rest", one ``randint`` for the random ids, all
on the CPU from one ``torch.Generator``), so results are reproducible and, with
``random_ids="vocabulary"``, equal HF's collator bit for bit under the same seed.

*Where random tokens come from.* HF draws them from the whole vocabulary, special ids included, so a
chosen token now and then becomes ``<pad>``, ``<s>`` or ``<mask>``: noise the model cannot learn
from. Ours, by default (``random_ids="ordinary"``), draws uniformly from the ordinary ids only (the
same one ``randint`` per position, over their count); ``"vocabulary"`` is HF's choice.

Signatures (ids are integer tensors of any shape, usually ``(B, T)``)::

    mask_tokens(input_ids, *, mask_id, vocab_size, special_ids, attention_mask=None, mlm_probability=0.15,
                mask_fraction=0.8, random_fraction=0.1, random_ids="ordinary", generator=None)
        -> (corrupted_ids, labels)
    special_positions(input_ids, special_ids, attention_mask=None) -> special (B, T) bool
    choose_positions(special (B, T) bool, mlm_probability=0.15, generator=None) -> chosen (B, T) bool
    corrupt(input_ids, chosen, *, mask_id, vocab_size, special_ids, mask_fraction=0.8, random_fraction=0.1,
            random_ids="ordinary", generator=None) -> corrupted_ids
    mlm_loss(logits (B, T, V), labels (B, T)) -> scalar
    shift_labels(input_ids (B, T), attention_mask=None) -> targets (B, T)   # targets[:, t] = input_ids[:, t + 1]
    causal_lm_loss(logits (B, T, V), labels (B, T), attention_mask=None) -> scalar

**Losses.** Both objectives are the mean cross-entropy over the positions that have a target; they
differ in which positions have one. :func:`mlm_loss` averages over the chosen positions only (equal to
``BertForMaskedLM``/``RobertaForMaskedLM``'s loss with the same labels). :func:`causal_lm_loss` takes
*unshifted* labels, like ``GPT2LMHeadModel(labels=input_ids)``, and shifts them itself: position ``t``
predicts token ``t + 1``; the last position and every target that is padding (``attention_mask == 0``)
or −100 give no loss. **A batch with no target at all** returns 0 (a zero joined to ``logits``' graph,
so ``backward`` gives zero gradients), where HF's mean over nothing gives nan that would poison a
running loss or an optimizer step.

Not covered: whole-word masking, span masking (T5, SpanBERT), NSP pairs, the models themselves
(:mod:`.encoder`, :mod:`course_lib.models`) and the training loop.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = [
    "IGNORE_INDEX", "special_positions", "choose_positions", "corrupt", "mask_tokens", "mlm_loss", "shift_labels",
    "causal_lm_loss",
]

IGNORE_INDEX = -100  # label of a position that gives no loss (torch's cross_entropy default ignore_index)
RANDOM_IDS = ("ordinary", "vocabulary")


def _check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor, got {getattr(input_ids, 'dtype', type(input_ids))}")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must lie in [0, {vocab_size}) (the vocabulary), "
                         f"got values from {int(input_ids.min())} to {int(input_ids.max())}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def special_positions(input_ids: torch.Tensor, special_ids: Iterable[int],
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, T)`` bool: True where the token is special (padding included) or ``attention_mask`` is 0."""
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype, device=input_ids.device))
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids {tuple(input_ids.shape)}: they must match")
        special |= attention_mask == 0
    return special


def choose_positions(special: torch.Tensor, mlm_probability: float = 0.15,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Which positions the model must predict: each non-special one with probability ``mlm_probability``.

    ``special`` (B, T) bool -> chosen (B, T) bool. One Bernoulli draw per position on the CPU (HF's draw).
    """
    _check_probability("mlm_probability", mlm_probability)
    probabilities = torch.full(special.shape, float(mlm_probability))
    probabilities.masked_fill_(special.cpu(), 0.0)  # special tokens and padding are never chosen
    return torch.bernoulli(probabilities, generator=generator).bool().to(special.device)


def corrupt(input_ids: torch.Tensor, chosen: torch.Tensor, *, mask_id: int, vocab_size: int,
            special_ids: Iterable[int], mask_fraction: float = 0.8, random_fraction: float = 0.1,
            random_ids: str = "ordinary", generator: torch.Generator | None = None) -> torch.Tensor:
    """The model's input: chosen positions become ``mask_id`` (``mask_fraction``), a random token
    (``random_fraction``) or stay (the rest); the others are left as they are. Returns a new tensor.
    """
    _check_probability("mask_fraction", mask_fraction)
    _check_probability("random_fraction", random_fraction)
    if mask_fraction + random_fraction > 1.0 + 1e-9:
        raise ValueError(f"mask_fraction + random_fraction = {mask_fraction + random_fraction} exceeds 1")
    if random_ids not in RANDOM_IDS:
        raise ValueError(f"random_ids must be one of {RANDOM_IDS}, got {random_ids!r}")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id {mask_id} is not in the vocabulary [0, {vocab_size})")
    corrupted, chosen_cpu = input_ids.clone(), chosen.cpu()
    masked = torch.bernoulli(torch.full(chosen.shape, float(mask_fraction)), generator=generator).bool() & chosen_cpu
    corrupted[masked.to(input_ids.device)] = mask_id
    if mask_fraction == 1.0 or random_fraction == 0.0:  # HF draws nothing more here: keep its stream
        return corrupted
    # "random" is decided among the chosen positions that were not masked: 0.1 of all = 0.5 of the remaining 0.2
    replaced = (torch.bernoulli(torch.full(chosen.shape, random_fraction / (1.0 - mask_fraction)),
                                generator=generator).bool() & chosen_cpu & ~masked)
    if random_ids == "vocabulary":  # HF's choice: special ids included
        random_tokens = torch.randint(vocab_size, chosen.shape, dtype=torch.long, generator=generator)
    else:
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[[i for i in special_ids if 0 <= i < vocab_size]] = True
        ordinary = torch.nonzero(~is_special).flatten()  # (n_ordinary,)
        if len(ordinary) == 0:
            raise ValueError("every id of the vocabulary is special: there is no ordinary token to draw")
        random_tokens = ordinary[torch.randint(len(ordinary), chosen.shape, dtype=torch.long, generator=generator)]
    replaced = replaced.to(input_ids.device)
    corrupted[replaced] = random_tokens.to(input_ids.device, input_ids.dtype)[replaced]
    return corrupted


def mask_tokens(input_ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Iterable[int],
                attention_mask: torch.Tensor | None = None, mlm_probability: float = 0.15,
                mask_fraction: float = 0.8, random_fraction: float = 0.1, random_ids: str = "ordinary",
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic masking of one batch: ``(corrupted_ids, labels)``, both shaped like ``input_ids``.

    ``special_ids`` must include the padding id (or give ``attention_mask``, 0 at padding): those
    positions are never chosen. ``labels`` hold the original id where chosen, -100 elsewhere.
    """
    _check_ids(input_ids, vocab_size)
    special_ids = [int(i) for i in special_ids]
    if mask_id not in special_ids:
        special_ids.append(mask_id)  # a text that already holds the mask token must not have it chosen
    chosen = choose_positions(special_positions(input_ids, special_ids, attention_mask), mlm_probability, generator)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX).long()
    corrupted = corrupt(input_ids, chosen, mask_id=mask_id, vocab_size=vocab_size, special_ids=special_ids,
                        mask_fraction=mask_fraction, random_fraction=random_fraction, random_ids=random_ids,
                        generator=generator)
    return corrupted, labels


def _cross_entropy_over_targets(logits: torch.Tensor, targets: torch.Tensor, name: str) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -100; 0 (on logits' graph) if there are none."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"{name} expects logits (B, T, V) and labels (B, T), "
                         f"got logits {tuple(logits.shape)} and labels {tuple(targets.shape)}")
    vocab_size = logits.shape[-1]
    has_target = targets != IGNORE_INDEX
    if bool(((targets < 0) | (targets >= vocab_size))[has_target].any()):
        raise ValueError(f"labels must be ids in [0, {vocab_size}) or {IGNORE_INDEX} (no loss), "
                         f"got values from {int(targets.min())} to {int(targets.max())}")
    if not bool(has_target.any()):
        return logits[..., :0].sum()  # an exact 0 joined to the graph: backward gives zero gradients, not nan
    return F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1).long(), ignore_index=IGNORE_INDEX)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-LM loss: mean cross-entropy over the chosen positions (``labels != -100``) only.

    logits (B, T, V), labels (B, T) -> scalar; 0 when nothing is chosen (HF: nan).
    """
    return _cross_entropy_over_targets(logits, labels, "mlm_loss")


def shift_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal-LM targets: position t predicts token t + 1, so ``targets[:, t] = input_ids[:, t + 1]``.

    input_ids (B, T) -> targets (B, T): the last position, and every position whose next token is padding
    (``attention_mask == 0``) or already -100, get -100.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"shift_labels expects input_ids (B, T), got shape {tuple(input_ids.shape)}")
    labels = input_ids.long()
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids {tuple(input_ids.shape)}: they must match")
        labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
    last = torch.full_like(labels[:, :1], IGNORE_INDEX)  # (B, 1): nothing follows the last token
    return torch.cat([labels[:, 1:], last], dim=1)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Causal-LM loss with *unshifted* labels (``input_ids``, or them with -100 where no loss is wanted),
    as ``GPT2LMHeadModel(labels=...)`` takes them: shifted here, then the mean cross-entropy over real targets.

    logits (B, T, V), labels (B, T) -> scalar; 0 when no position has a target.
    """
    return _cross_entropy_over_targets(logits, shift_labels(labels, attention_mask), "causal_lm_loss")
