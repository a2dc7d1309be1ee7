"""DistilBERT's losses (course_lib.transfer.distillation) pinned to formulas written out and to torch's modules.

* soft targets: against Σ p_t (log p_t − log p_s) / N · T² computed by hand, against ``torch.nn.KLDivLoss``,
  the closed-form gradient T (softmax(z_s/T) − softmax(z_t/T)) / N, zero at student = teacher, no gradient
  to the teacher, T = 1 is plain KL, bad shapes and T ≤ 0 refused;
* hard labels: against ``torch.nn.CrossEntropyLoss`` and −log p of the gold class by hand;
* cosine: against ``torch.nn.CosineEmbeddingLoss`` (target 1) on the real tokens only; padding cannot move it;
* the weighted sum: its parts, its weights (DistilBERT's 5 : 2 : 1), its errors.
"""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.transfer.distillation import (
    DISTILBERT_WEIGHTS, LossWeights, distilbert_loss, distillation_loss, hard_label_loss, hidden_cosine_loss,
)


def logits_pair(n=7, c=5, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale


def by_hand(student, teacher, temperature):
    """Σ_rows Σ_c p_t (log p_t − log p_s) / N · T², with the softmax written out too."""
    def log_softmax(z):
        z = z / temperature
        return z - torch.log(torch.exp(z - z.max(-1, keepdim=True).values).sum(-1, keepdim=True)) - z.max(-1, keepdim=True).values

    log_p_s, log_p_t = log_softmax(student.double()), log_softmax(teacher.double())
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum() / student.shape[0] * temperature ** 2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
def test_soft_loss_equals_the_formula_by_hand_and_kldivloss(temperature):
    student, teacher = logits_pair()
    ours = distillation_loss(student, teacher, temperature)
    assert ours.item() == pytest.approx(by_hand(student, teacher, temperature).item(), rel=1e-5, abs=1e-7)
    kl = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(student / temperature, -1),
                                                    torch.softmax(teacher / temperature, -1))
    assert ours.item() == pytest.approx(kl.item() * temperature ** 2, rel=1e-5, abs=1e-7)


def test_soft_loss_direction_is_teacher_to_student():
    # KL is not symmetric: the swapped direction is a known mistake and must give another number here.
    student, teacher = logits_pair(seed=3)
    assert distillation_loss(student, teacher, 2.0).item() != pytest.approx(
        distillation_loss(teacher, student, 2.0).item(), rel=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_gradient_is_the_closed_form(temperature):
    student, teacher = logits_pair(n=6, c=4, seed=1)
    student = student.double().requires_grad_()
    distillation_loss(student, teacher.double(), temperature).backward()
    expected = temperature * (torch.softmax(student.detach() / temperature, -1)
                              - torch.softmax(teacher.double() / temperature, -1)) / student.shape[0]
    torch.testing.assert_close(student.grad, expected, rtol=1e-10, atol=1e-12)


def test_zero_when_the_student_matches_and_positive_otherwise():
    student, teacher = logits_pair()
    assert distillation_loss(teacher.clone(), teacher, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    # adding a constant to a row leaves its softmax unchanged
    assert distillation_loss(teacher + 5.0, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-5)
    assert distillation_loss(student, teacher, 3.0).item() > 1e-3


def test_the_teacher_gets_no_gradient():
    student, teacher = logits_pair()
    student.requires_grad_()
    teacher.requires_grad_()
    distillation_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def test_temperature_one_is_plain_kl():
    student, teacher = logits_pair(seed=2)
    p_t = torch.softmax(teacher.double(), -1)
    plain = (p_t * (p_t.log() - torch.log_softmax(student.double(), -1))).sum(-1).mean()
    assert distillation_loss(student, teacher, 1.0).item() == pytest.approx(plain.item(), rel=1e-5)


def test_soft_loss_refuses_bad_input():
    student, teacher = logits_pair()
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        distillation_loss(student, teacher[:, :3], 2.0)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        distillation_loss(student[0], teacher[0], 2.0)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            distillation_loss(student, teacher, bad)


def test_hard_label_loss_is_cross_entropy():
    student, _ = logits_pair()
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    ours = hard_label_loss(student, labels)
    assert ours.item() == pytest.approx(torch.nn.CrossEntropyLoss()(student, labels).item(), rel=1e-6)
    log_p = torch.log_softmax(student.double(), -1)
    assert ours.item() == pytest.approx(-log_p[torch.arange(7), labels].mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        hard_label_loss(student, torch.tensor([0, 5, 0, 0, 0, 0, 0]))  # class 5 of 5
    with pytest.raises(ValueError, match=r"\(N,\)"):
        hard_label_loss(student, labels[:3])
    with pytest.raises(ValueError, match="integer"):
        hard_label_loss(student, labels.float())


def hidden_pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(3, 6, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    return student, teacher, mask


def test_cosine_loss_is_cosine_embedding_loss_over_real_tokens():
    student, teacher, mask = hidden_pair()
    real = mask.bool()
    expected = torch.nn.CosineEmbeddingLoss()(student[real], teacher[real], torch.ones(int(real.sum())))
    assert hidden_cosine_loss(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    by_hand = 1 - (student[real] * teacher[real]).sum(-1) / (student[real].norm(dim=-1) * teacher[real].norm(dim=-1))
    assert hidden_cosine_loss(student, teacher, mask).item() == pytest.approx(by_hand.mean().item(), rel=1e-5)


def test_cosine_loss_ignores_padding_and_length_of_vectors():
    student, teacher, mask = hidden_pair(1)
    before = hidden_cosine_loss(student, teacher, mask)
    scrambled = student.clone()
    scrambled[~mask.bool()] = 1e3 * torch.randn(int((~mask.bool()).sum()), 8)
    assert hidden_cosine_loss(scrambled, teacher, mask).item() == pytest.approx(before.item(), rel=1e-6)
    assert hidden_cosine_loss(3.0 * teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_cosine_loss(-teacher, teacher, mask).item() == pytest.approx(2.0, abs=1e-6)
    # a real token that is wrong does count
    student = teacher.clone()
    student[1, 2] = -student[1, 2]
    assert hidden_cosine_loss(student, teacher, mask).item() == pytest.approx(2.0 / int(mask.sum()), rel=1e-5)


def test_cosine_loss_gives_the_teacher_no_gradient_and_refuses_bad_input():
    student, teacher, mask = hidden_pair(2)
    student.requires_grad_()
    teacher.requires_grad_()
    hidden_cosine_loss(student, teacher, mask).backward()
    assert teacher.grad is None and student.grad[~mask.bool()].abs().sum() == 0 and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="projection"):
        hidden_cosine_loss(student[..., :4], teacher, mask)
    with pytest.raises(ValueError, match="attention_mask"):
        hidden_cosine_loss(student, teacher, mask[:, :4])
    with pytest.raises(ValueError, match="no real token"):
        hidden_cosine_loss(student, teacher, torch.zeros_like(mask))


def test_distilbert_loss_is_the_weighted_sum_of_its_parts():
    student, teacher = logits_pair(n=3, c=2, seed=4)
    labels = torch.tensor([1, 0, 1])
    s_hidden, t_hidden, mask = hidden_pair(3)
    weights = LossWeights(0.3, 0.5, 0.2)
    total = distilbert_loss(student, teacher, labels, 2.5, weights, s_hidden, t_hidden, mask)
    parts = (0.3 * distillation_loss(student, teacher, 2.5) + 0.5 * hard_label_loss(student, labels)
             + 0.2 * hidden_cosine_loss(s_hidden, t_hidden, mask))
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
    # without the cosine term the hidden states are not needed
    assert distilbert_loss(student, teacher, labels, 2.0, (1.0, 0.0, 0.0)).item() == pytest.approx(
        distillation_loss(student, teacher, 2.0).item(), rel=1e-6)
    assert distilbert_loss(student, teacher, labels, 2.0, (0.0, 1.0, 0.0)).item() == pytest.approx(
        hard_label_loss(student, labels).item(), rel=1e-6)


def test_distilbert_weights_keep_distilberts_proportions():
    assert sum(DISTILBERT_WEIGHTS) == pytest.approx(1.0)
    assert DISTILBERT_WEIGHTS.soft / DISTILBERT_WEIGHTS.cosine == pytest.approx(5.0)
    assert DISTILBERT_WEIGHTS.hard / DISTILBERT_WEIGHTS.cosine == pytest.approx(2.0)


def test_distilbert_loss_refuses_bad_input():
    student, teacher = logits_pair(n=3, c=2)
    labels = torch.tensor([1, 0, 1])
    with pytest.raises(ValueError, match="cosine term needs"):
        distilbert_loss(student, teacher, labels)
    with pytest.raises(ValueError, match="weights"):
        distilbert_loss(student, teacher, labels, 2.0, (1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="weights"):
        distilbert_loss(student, teacher, labels, 2.0, (0.0, 0.0, 0.0))
