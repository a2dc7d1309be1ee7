"""The committed reverser checkpoint: it loads, it reverses, and its attention is recorded faithfully."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from course_lib import MultiHeadAttention
from course_lib.attention.recorder import record_attention
from course_lib.models.reverser import REVERSER_ALPHABET, REVERSER_CHECKPOINT, CharVocab, attention_maps, load_reverser
from course_lib.seq2seq.layers import TransformerEncoderLayer


@pytest.fixture(scope="module")
def reverser():
    return load_reverser()


def random_strings(n: int, seed: int, max_len: int) -> list[str]:
    rng = random.Random(seed)  # a stream the training script never used
    return ["".join(rng.choices(REVERSER_ALPHABET, k=rng.randint(1, max_len))) for _ in range(n)]


def test_checkpoint_is_small_and_loads_on_cpu_in_eval_mode(reverser):
    model, vocab = reverser
    assert REVERSER_CHECKPOINT.stat().st_size < 300 * 1024
    assert not model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert sum(isinstance(m, MultiHeadAttention) for m in model.modules()) == model.config["num_layers"]
    assert len(vocab) == model.config["vocab_size"]


def test_vocab_round_trip_and_errors():
    vocab = CharVocab(REVERSER_ALPHABET)
    ids = vocab.encode("abc123")
    assert ids.dtype == torch.long and ids.shape == (6,)
    assert vocab.decode(ids) == "abc123"
    assert torch.equal(vocab.encode(list("ab")), vocab.encode("ab"))
    with pytest.raises(ValueError, match="unknown token"):
        vocab.encode("Hello!")
    with pytest.raises(ValueError, match="distinct"):
        CharVocab("aa")


def test_reverses_held_out_strings(reverser):
    model, _ = reverser
    strings = random_strings(1000, seed=2024, max_len=model.config["max_len"])
    exact = sum(model.reverse(s) == s[::-1] for s in strings) / len(strings)
    assert exact >= 0.99, f"exact-match accuracy {exact:.1%}"  # 99.5 % when the checkpoint was converted
    assert model.reverse("hello42") == "24olleh"
    assert model.reverse("") == ""


def test_rejects_sequences_longer_than_training(reverser):
    model, _ = reverser
    with pytest.raises(ValueError, match="longer than"):
        model.reverse("a" * (model.config["max_len"] + 1))


def test_attention_maps_follow_bertviz_contract(reverser):
    model, _ = reverser
    tokens, attentions = attention_maps(model, "attention")
    heads, layers, T = model.config["num_heads"], model.config["num_layers"], len("attention")
    assert tokens == list("attention")
    assert isinstance(attentions, list) and len(attentions) == layers
    for weights in attentions:
        assert weights.shape == (1, heads, T, T)
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, heads, T))
        assert (weights >= 0).all()


def test_a_last_layer_head_attends_to_the_mirrored_position(reverser):
    """The teaching picture: query i looks mostly at key T-1-i."""
    model, _ = reverser
    _, attentions = attention_maps(model, "abcdefghij")
    anti_diagonal_mass = attentions[-1][0].flip(-1).diagonal(dim1=-2, dim2=-1).mean(-1)  # (H,)
    assert anti_diagonal_mass.max() > 0.5, anti_diagonal_mass


def test_recorded_weights_equal_direct_module_calls(reverser):
    model, vocab = reverser
    text = "pytorch2"
    _, recorded = attention_maps(model, text)
    # Redo the forward pass by hand (pre-norm layers), asking each attention module for its weights directly.
    with torch.no_grad():
        x = model.positions(model.embedding(vocab.encode(text)[None]))
        for layer, weights in zip(model.layers, recorded, strict=True):
            attended, direct = layer.self_attn(layer.norm1(x), need_weights=True)
            torch.testing.assert_close(weights, direct, rtol=0, atol=0)
            x = x + attended
            x = x + layer.ffn(layer.norm2(x))


# Computed with the reverser's own EncoderLayer (attention_norm, attention, ffn_norm, ffn.0/ffn.2) on the
# checkpoint before its parameters were renamed for TransformerEncoderLayer: the same weights must give
# the same logits (they were bitwise equal on the machine that converted it).
OLD_ARCHITECTURE = {
    "strings": ["q9u3", "176wok97y", "d07axm", "jw5le3o2mf", "ctj1rtgph", "nn3rcoulgd", "e4b", "vjjaz2xn"],
    "predictions": ["3u9q", "y79kow671", "mxa70d", "fm2o3el5wj", "hpgtr1jtc", "dgluocr3nn", "b4e", "nx2zajjv"],
    "logits_sum": 39.410188616253436,
    "logits_sum_of_squares": 21306.63644033978,
    "first_logits": [-1.763335, 1.365003, 0.855900, 1.616579, -0.158539, 2.056210],
}


def test_the_library_encoder_layer_gives_the_old_architectures_logits(reverser):
    model, vocab = reverser
    assert all(isinstance(layer, TransformerEncoderLayer) and layer.norm_first for layer in model.layers)
    strings = OLD_ARCHITECTURE["strings"]
    ids = torch.zeros(len(strings), model.config["max_len"], dtype=torch.long)
    real = torch.zeros_like(ids, dtype=torch.bool)
    for i, text in enumerate(strings):
        ids[i, :len(text)], real[i, :len(text)] = vocab.encode(text), True
    with torch.no_grad():
        logits = model(ids, key_padding_mask=real)  # (B, T, V)
    predictions = [vocab.decode(logits[i, :len(text)].argmax(-1)) for i, text in enumerate(strings)]
    assert predictions == OLD_ARCHITECTURE["predictions"] == [text[::-1] for text in strings]
    kept = logits[real].double()
    assert float(kept.sum()) == pytest.approx(OLD_ARCHITECTURE["logits_sum"], abs=1e-3)
    assert float((kept ** 2).sum()) == pytest.approx(OLD_ARCHITECTURE["logits_sum_of_squares"], rel=1e-6)
    torch.testing.assert_close(logits[0, 0, :6], torch.tensor(OLD_ARCHITECTURE["first_logits"]), atol=1e-5, rtol=1e-5)
    checkpoint = torch.load(REVERSER_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"config", "characters", "state_dict"}
    assert all(t.dtype == torch.float16 for t in checkpoint["state_dict"].values())


def test_recorder_removes_its_hooks_and_leaves_outputs_unchanged(reverser):
    model, vocab = reverser
    ids = vocab.encode("hooks")[None]
    with torch.no_grad():
        plain = model(ids)
        with record_attention(model) as weights:
            recorded = model(ids)
        after = model(ids)
    assert len(weights) == model.config["num_layers"]
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-5)  # readable path vs fused kernel
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(after, plain, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no attention module"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass


def test_attention_maps_needs_tokens_the_vocab_knows(reverser):
    model, _ = reverser
    with pytest.raises(ValueError, match="unknown token"):
        attention_maps(model, "UPPER")
    with pytest.raises(ValueError, match="empty"):
        attention_maps(model, "")


@pytest.mark.slow
def test_training_script_runs_and_reports_accuracy(repo_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "train_reverser.py"), "--dry-run", "--steps", "150"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "exact-match accuracy" in result.stdout
