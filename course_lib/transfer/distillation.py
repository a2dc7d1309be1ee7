"""Knowledge distillation, DistilBERT's recipe: the three losses and the student built from the teacher.

Losses (every one with the teacher's side detached: the teacher is a fixed target, never trained):

* :func:`distillation_loss` — the soft-target loss: KL(teacher ‖ student) between the two distributions
  softened by the temperature T, times T² so that its gradients keep their size as T changes
  (∂/∂z_s = T · (softmax(z_s / T) − softmax(z_t / T)) / N, so the softened targets alone would shrink them by 1/T).
* :func:`hard_label_loss` — the ordinary cross-entropy on the gold labels.
* :func:`hidden_cosine_loss` — 1 − cos between the student's and the teacher's last hidden state at each
  real token (padding excluded), averaged: ``torch.nn.CosineEmbeddingLoss`` with target 1. It needs the
  same hidden size on both sides, which a student made from the teacher's own layers has.
* :func:`distilbert_loss` — the weighted sum. DistilBERT (Sanh et al. 2019) distilled during pre-training
  with α = 5 (soft targets, T = 2), 2 (its hard-label term was the masked-LM loss) and 1 (cosine);
  :data:`DISTILBERT_WEIGHTS` keeps those proportions, divided by their sum so that the total has the size of
  one loss (the hard-label-only baseline's), and T = 2.

Students (:func:`student_from_teacher`): DistilBERT's rule — half the layers, every other one of the
teacher's (0, 2, 4 of MiniLM's 6), plus everything around them (embeddings, pooler, classification head),
copied. The SST-2 experiment takes them from the *fine-tuned* teacher, not from the pretrained MiniLM:
DistilBERT initialised its student from the very model it distilled, only the fine-tuned teacher has a
trained head (and a pooler or layers already adapted to the task), so the student starts as a truncated copy
of the function it is asked to imitate. :func:`student_from_scratch` builds the same shape with every weight
drawn afresh.

Not covered: distilling intermediate layers or attention maps (TinyBERT, MiniLM itself), a student with a
different hidden size (it would need a projection for the cosine term), distillation during pre-training.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DISTILBERT_WEIGHTS", "LossWeights", "distillation_loss", "hard_label_loss", "hidden_cosine_loss",
           "distilbert_loss", "every_other_layer", "student_from_teacher", "student_from_scratch"]


class LossWeights(NamedTuple):
    soft: float  # the temperature-softened KL (× T²)
    hard: float  # cross-entropy on the gold labels
    cosine: float  # 1 − cos between last hidden states


# DistilBERT's 5 : 2 : 1, normalised to sum to 1.
DISTILBERT_WEIGHTS = LossWeights(soft=5 / 8, hard=2 / 8, cosine=1 / 8)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the rows: logits ``(N, C)`` each.

    Rows are examples (or token positions, flattened); the teacher's side carries no gradient.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"student and teacher logits must both be (N, C); got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)  # (N, C)
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)  # (N, C)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits ``(N, C)`` against gold class indices ``(N,)``, averaged over the rows."""
    if student_logits.dim() != 2 or labels.shape != student_logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and labels (N,); got {tuple(student_logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if labels.dtype.is_floating_point or not ((labels >= 0) & (labels < student_logits.shape[1])).all():
        raise ValueError(f"labels must be integer class indices in [0, {student_logits.shape[1]})")
    return F.cross_entropy(student_logits, labels)


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of 1 − cos(student, teacher) over the real tokens: hidden states ``(B, T, D)``, mask ``(B, T)``
    with 1 at real tokens. Padding positions hold whatever the layers computed there and are left out."""
    if student_hidden.shape != teacher_hidden.shape or student_hidden.dim() != 3:
        raise ValueError(f"student and teacher hidden states must both be (B, T, D); got "
                         f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)} (a student of another "
                         "width needs a projection first)")
    if attention_mask.shape != student_hidden.shape[:2]:
        raise ValueError(f"attention_mask must be (B, T) = {tuple(student_hidden.shape[:2])}, got "
                         f"{tuple(attention_mask.shape)}")
    real = attention_mask.bool()  # (B, T)
    if not real.any():
        raise ValueError("attention_mask marks no real token: the cosine loss would average over nothing")
    student_vectors, teacher_vectors = student_hidden[real], teacher_hidden.detach()[real]  # (M, D) each
    return (1 - F.cosine_similarity(student_vectors, teacher_vectors, dim=-1)).mean()


def distilbert_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float = 2.0, weights: LossWeights = DISTILBERT_WEIGHTS,
                    student_hidden: torch.Tensor | None = None, teacher_hidden: torch.Tensor | None = None,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``weights.soft · distillation_loss + weights.hard · hard_label_loss + weights.cosine · hidden_cosine_loss``.

    The hidden states and the mask are needed only when ``weights.cosine`` is not 0.
    """
    weights = LossWeights(*weights)
    if min(weights) < 0 or sum(weights) == 0:
        raise ValueError(f"weights must be ≥ 0 and not all 0, got {weights}")
    total = weights.soft * distillation_loss(student_logits, teacher_logits, temperature)
    total = total + weights.hard * hard_label_loss(student_logits, labels)
    if weights.cosine:
        if student_hidden is None or teacher_hidden is None or attention_mask is None:
            raise ValueError("the cosine term needs student_hidden, teacher_hidden and attention_mask "
                             "(or weights.cosine = 0)")
        total = total + weights.cosine * hidden_cosine_loss(student_hidden, teacher_hidden, attention_mask)
    return total


# --- students -------------------------------------------------------------------------------------------

def every_other_layer(num_layers: int) -> list[int]:
    """DistilBERT's choice of teacher layers: 0, 2, 4, … (half of them, rounded up)."""
    return list(range(0, num_layers, 2))


def student_from_teacher(teacher: nn.Module, layers: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``teacher`` (any model whose ``.encoder`` is the library's :class:`Encoder`) that keeps only
    the encoder layers ``layers`` (default :func:`every_other_layer`), in that order; embeddings, pooler and
    head are copied whole. The teacher is left untouched and shares no tensor with the student."""
    encoder = getattr(teacher, "encoder", None)
    if encoder is None or not hasattr(encoder, "layers"):
        raise TypeError(f"{type(teacher).__name__} has no .encoder with .layers: pass a model built on the library's Encoder")
    count = len(encoder.layers)
    layers = every_other_layer(count) if layers is None else list(layers)
    if not layers or any(not 0 <= i < count for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct indices in [0, {count}), at least one; got {layers}")
    student = copy.deepcopy(teacher)
    student.encoder.layers = nn.ModuleList(student.encoder.layers[i] for i in layers)
    config = dataclasses.replace(encoder.config, num_layers=len(layers))
    student.encoder.config = config
    if getattr(student, "config", None) is not None and student.config == encoder.config:
        student.config = config  # a model that keeps its encoder's config beside it
    return student


def student_from_scratch(teacher: nn.Module, num_layers: int | None = None) -> nn.Module:
    """The same shape as :func:`student_from_teacher` (``num_layers`` layers, default half the teacher's,
    rounded up), every weight drawn afresh: BERT's initialisation (N(0, 0.02) matrices and embeddings, zero
    biases, LayerNorms at identity). Seed with ``torch.manual_seed`` beforehand for a repeatable draw."""
    count = len(teacher.encoder.layers)
    num_layers = len(every_other_layer(count)) if num_layers is None else num_layers
    if not 1 <= num_layers <= count:
        raise ValueError(f"num_layers must be in [1, {count}], got {num_layers}")
    student = student_from_teacher(teacher, range(num_layers))
    student.apply(student.encoder._init_weights)  # matrices, embeddings, biases, the head's too
    for module in student.modules():
        if isinstance(module, nn.LayerNorm):
            module.reset_parameters()
    return student
