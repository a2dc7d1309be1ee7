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
    strings = random_strings(500, seed=2024, max_len=model.config["max_len"])
    exact = sum(model.reverse(s) == s[::-1] for s in strings) / len(strings)
    assert exact >= 0.95, f"exact-match accuracy {exact:.1%}"
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
    # Redo the forward pass by hand, asking each attention module for its weights directly.
    with torch.no_grad():
        x = model.positions(model.embedding(vocab.encode(text)[None]))
        for layer, weights in zip(model.layers, recorded, strict=True):
            attended, direct = layer.attention(layer.attention_norm(x), need_weights=True)
            torch.testing.assert_close(weights, direct, rtol=0, atol=0)
            x = x + attended
            x = x + layer.ffn(layer.ffn_norm(x))


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
        [sys.executable, str(repo_root / "scripts" / "train_toy_models.py"), "--dry-run", "--steps", "150"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "exact-match accuracy" in result.stdout
