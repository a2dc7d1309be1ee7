"""Lab 08 (transfer): what only its checks need; what every lab shares is in ``test_structure.py``.

The lab's references are the library's own (``course_lib.transfer.heads.pool``,
``course_lib.pretraining.tagging.align_labels``, ``course_lib.transfer.distillation.distillation_loss``),
pinned here to direct formulas (HF's masked mean as sentence-transformers computes it, the word-ids
alignment of HF's token-classification examples, KL written with ``torch.distributions``); the set-up's
special ids are the checks'; the checks' inputs reach the edge cases the issue names (padding in every
batch, a row of one real token, all-real rows, T = 1; single- and many-piece words, one-word sentences;
T = 1, large T, identical logits, logits near ±1000); the temperature cell judges the student's own
divergence (a wrong divergence with a right temperature keeps that cell, a constant loss does not);
a correct solution's gradient is the reference's (the checks compare values: this is why that suffices);
mistakes no fixture holds (a sum for a mean, the last real token for [CLS], 0 on continuation pieces,
missing specials, a modified tag list, a hand-written exp overflowing, T instead of T², the teacher
softened alone, no temperature at all, reduction="sum", a float list, a non-scalar loss) get their own
message; each cell is fast. The known mistakes (``tests/fixtures/labs/transfer/``), the reference
solution and the notebooks: ``test_structure.py``; nbgrader: ``tests/grader/``.
"""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from course_lib.lab_checks import transfer as transfer_checks
from course_lib.lab_checks.toolkit import CheckFailed
from course_lib.lab_checks.transfer import alignment, distillation, pooling
from tests.labs.support import kernel as lab_kernel
from tests.labtools import lab_files


@pytest.fixture(scope="module")
def kernel() -> dict:
    """The set-up cell and the solution cells run in one namespace, as in a kernel."""
    return lab_kernel(lab_files("transfer"))


def failure(grade_id: str, *functions) -> str:
    with pytest.raises(CheckFailed) as caught:
        transfer_checks.RUBRIC.run(grade_id, *functions)
    return str(caught.value)


def solution_pool(hidden, mask, how="cls"):
    return hidden[:, 0] if how == "cls" else (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


# --- the references and the inputs -----------------------------------------------------------------

def test_setup_cell_special_ids_are_the_checks(kernel):
    assert (kernel["CLS_ID"], kernel["SEP_ID"], kernel["IGNORE_INDEX"]) == (alignment.BOS_ID, alignment.EOS_ID, -100)


def test_reference_pool_is_the_first_position_and_the_masked_mean():
    hidden = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    assert torch.equal(pooling.reference_pool(hidden, mask, "cls"), hidden[:, 0])
    expected = torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0), hidden[2, 0]])
    torch.testing.assert_close(pooling.reference_pool(hidden, mask, "mean"), expected)


def test_reference_alignment_is_hf_word_ids_labelling():
    """HF's token-classification examples: label the first piece of each word (word_ids), -100 elsewhere."""
    pieces, tags = [[5, 6, 7], [8], [9, 10]], [3, 0, 12]
    word_ids = [None, 0, 0, 0, 1, 2, 2, None]
    expected, previous = [], None
    for word in word_ids:
        expected.append(-100 if word is None or word == previous else tags[word])
        previous = word
    assert alignment.reference_align_labels(pieces, tags, 101, 102) == ([101, 5, 6, 7, 8, 9, 10, 102], expected)


def test_reference_distillation_loss_is_t_squared_kl_teacher_student_batchmean():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(6, 5, generator=generator) * 3, torch.randn(6, 5, generator=generator) * 3
    for temperature in (1.0, 2.0, 0.5, 20.0):
        kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=teacher / temperature),
                                               torch.distributions.Categorical(logits=student / temperature))
        torch.testing.assert_close(distillation.reference_distillation_loss(student, teacher, temperature),
                                   temperature ** 2 * kl.mean())


def test_checks_inputs_hold_the_edge_cases():
    pools = list(pooling.pool_cases())
    assert all((mask == 0).any() for _, mask, _ in pools[:3])  # padding in every random batch
    assert all((mask == 1).all(dim=1).any() for _, mask, _ in pools[:3])  # and a full row
    assert 1 in pools[3][1].sum(dim=1).tolist() and bool((pools[4][1] == 1).all()) and pools[5][0].shape[1] == 1
    for hidden, mask, _ in pools:  # padding holds numbers, not zeros, so a mean over it shows
        assert bool((hidden[mask == 0] != 0).all())
    aligns = list(alignment.alignment_cases())
    sizes = [len(word) for pieces, _, _ in aligns for word in pieces]
    assert min(sizes) == 1 and max(sizes) >= 6
    assert any(len(pieces) == 1 for pieces, _, _ in aligns) and any(0 in tags for _, tags, _ in aligns)
    assert any(all(len(word) == 1 for word in pieces) for pieces, _, _ in aligns)
    soft = list(distillation.soft_target_cases())
    assert any(torch.equal(s, t) for s, t, _ in soft) and max(s.abs().max().item() for s, _, _ in soft) > 900
    assert any(len(s) == 1 for s, _, _ in soft)
    temperatures = [temperature for *_, temperature, _ in distillation.temperature_cases()]
    assert min(temperatures) < 1 < max(temperatures) and max(temperatures) >= 20


def test_a_correct_solutions_gradient_is_the_references(kernel):
    """The checks compare values (the sandboxed grader exchanges no autograd graph); a function equal to the
    reference everywhere has its gradient, as the solution shows: d/ds of T² KL = T (softmax(s/T) - softmax(t/T)) / N."""
    generator = torch.Generator().manual_seed(2)
    student = (torch.randn(4, 3, generator=generator) * 2).requires_grad_()
    teacher = torch.randn(4, 3, generator=generator) * 2
    kernel["distillation_loss"](student, teacher, 3.0).backward()
    expected = 3.0 * (F.softmax(student.detach() / 3, -1) - F.softmax(teacher / 3, -1)) / 4
    torch.testing.assert_close(student.grad, expected)
    hidden = torch.randn(2, 3, 4, requires_grad=True)
    kernel["pool"](hidden, torch.tensor([[1, 1, 1], [1, 0, 0]]), "mean").sum().backward()
    assert torch.equal(hidden.grad[1, 1:], torch.zeros(2, 4))  # no gradient reaches padding


# --- mistakes no fixture holds -----------------------------------------------------------------------

def test_pool_mistakes_no_fixture_holds_are_named():
    def last_real(hidden, mask, how="cls"):
        return hidden[torch.arange(len(hidden)), mask.sum(1) - 1] if how == "cls" else solution_pool(hidden, mask, how)

    def summed(hidden, mask, how="cls"):
        return (hidden * mask[..., None]).sum(1) if how == "mean" else hidden[:, 0]

    assert "last real token" in failure("test_pool_cls", last_real)
    assert "the sum of the real tokens" in failure("test_pool_mean", summed)
    assert "has shape" in failure("test_pool_mean", lambda hidden, mask, how="cls": hidden.sum(-1))


def test_align_mistakes_no_fixture_holds_are_named():
    def continuation_zero(pieces, tags, bos, eos):
        labels = [-100] + [label for word, tag in zip(pieces, tags) for label in [tag] + [0] * (len(word) - 1)]
        return [bos] + [p for word in pieces for p in word] + [eos], labels + [-100]

    def no_specials(pieces, tags, bos, eos):
        return [p for word in pieces for p in word], [t for word, t in zip(pieces, tags) for _ in word]

    def edits_tags(pieces, tags, bos, eos):
        ids, labels = alignment.reference_align_labels(pieces, tags, bos, eos)
        tags.insert(0, -100)
        return ids, labels

    def float_labels(pieces, tags, bos, eos):
        ids, labels = alignment.reference_align_labels(pieces, tags, bos, eos)
        return ids, [float(label) for label in labels]

    assert "other sub-words 0 instead of -100" in failure("test_align", continuation_zero)
    assert "lack the special tokens" in failure("test_align", no_specials)
    assert "modified its input tag_ids in place" in failure("test_align", edits_tags)
    assert "should be a list of ints" in failure("test_align", float_labels)
    assert "a pair (ids, labels)" in failure("test_align", lambda pieces, tags, bos, eos: None)


def _kl(student, teacher, temperature, soften=(True, True), power=2, reduction="batchmean", by_hand=False):
    s = student / temperature if soften[0] else student
    t = teacher / temperature if soften[1] else teacher
    if by_hand:  # exp without subtracting the maximum: overflows near 1000
        log_q, log_p = s - torch.log(torch.exp(s).sum(-1, keepdim=True)), t - torch.log(torch.exp(t).sum(-1, keepdim=True))
    else:
        log_q, log_p = F.log_softmax(s, -1), F.log_softmax(t, -1)
    return F.kl_div(log_q, log_p, reduction=reduction, log_target=True) * temperature ** power


@pytest.mark.parametrize(("grade_id", "loss", "phrase"), [
    ("test_soft_targets", lambda s, t, T: _kl(s, t, T, reduction="sum"), 'reduction="sum"'),
    ("test_soft_targets", lambda s, t, T: _kl(s, t, T, by_hand=True), "exp(1000) overflows"),
    ("test_soft_targets", lambda s, t, T: _kl(s, t, T, reduction="none").sum(-1), "one number"),  # per row
    ("test_temperature", lambda s, t, T: _kl(s, t, T, power=1), "T instead of T²"),
    ("test_temperature", lambda s, t, T: _kl(s, t, T, soften=(False, True)), "teacher's logits by T but not"),
    ("test_temperature", lambda s, t, T: _kl(s, t, T, soften=(False, False)), "never divides the logits"),
    ("test_temperature", lambda s, t, T: _kl(s, t, T, soften=(False, False), power=0), "ignores the temperature"),
    ("test_temperature", lambda s, t, T: s.sum() * 0, "for two different batches"),
])
def test_distillation_mistakes_no_fixture_holds_are_named(grade_id, loss, phrase):
    assert phrase in failure(grade_id, loss)


def test_each_distillation_mistake_costs_only_its_cell():
    """A wrong divergence with the right temperature keeps the temperature cell, and the reverse."""
    def wrong_direction(s, t, T):
        return _kl(t, s, T)

    transfer_checks.RUBRIC.run("test_temperature", wrong_direction)
    transfer_checks.RUBRIC.run("test_soft_targets", lambda s, t, T: _kl(s, t, T, power=0))


# --- CI time -------------------------------------------------------------------------------------------

def test_each_cell_is_fast(kernel):
    """CI time: every cell's hidden checks on the reference solution within 1 s on a shared 2-core machine."""
    for criterion in transfer_checks.RUBRIC:
        start = time.perf_counter()
        transfer_checks.RUBRIC.run(criterion.grade_id, *(kernel[name] for name in criterion.functions))
        assert time.perf_counter() - start < 1.0, criterion.grade_id
