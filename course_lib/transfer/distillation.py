"""Knowledge distillation, DistilBERT's recipe.

* :func:`distillation_loss` — the soft-target loss: KL(teacher ‖ student) between the two distributions
  softened by the temperature T, times T² so that its gradients keep their size as T changes.

(Skeleton: the hard-label and cosine terms, the student built from every other teacher layer and the
training loop are added next.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss"]


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
