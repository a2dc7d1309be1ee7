"""The preallocated key/value cache gives exactly what the plain, concatenated cache gives."""
import pytest
import torch

from course_lib.models.gpt import GPT, GPTConfig, reorder_cache
from course_lib.models.kv_cache import LayerKVBuffer, preallocate


def _kv(rows, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 3, generator=g), torch.randn(rows, 2, length, 5, generator=g)


def test_append_and_reorder_equal_cat_and_index_select():
    keys, values = _kv(4, 3, 0)
    layer = LayerKVBuffer(keys, values, capacity=9)
    expected_k, expected_v = keys, values
    for step in range(5):
        rows = torch.tensor([[0, 0, 2, 1], [3, 2, 1, 0], [1, 1, 1, 1], [0, 1, 2, 3], [2, 0, 0, 3]][step])
        layer.reorder(rows)
        if step == 2:  # two reorders before one append compose
            layer.reorder(torch.tensor([3, 0, 2, 1]))
            rows = rows[torch.tensor([3, 0, 2, 1])]
        new_k, new_v = _kv(4, 1, step + 1)
        expected_k = torch.cat([expected_k[rows], new_k], dim=2)
        expected_v = torch.cat([expected_v[rows], new_v], dim=2)
        k, v = layer.append(new_k, new_v)
        assert torch.equal(k, expected_k) and torch.equal(v, expected_v)
        assert k.is_contiguous() and v.is_contiguous()  # attention reads them without another copy
        assert layer.length == 4 + step and torch.equal(layer[0], expected_k)
    layer.reorder(torch.tensor([3, 3, 0, 1]))  # a pending reorder is visible through indexing
    assert torch.equal(layer[1], expected_v[torch.tensor([3, 3, 0, 1])])


def test_bad_use_is_refused_clearly():
    layer = LayerKVBuffer(*_kv(2, 3, 0), capacity=4)
    layer.append(*_kv(2, 1, 1))
    with pytest.raises(ValueError, match="at most 4 tokens"):
        layer.append(*_kv(2, 1, 2))
    with pytest.raises(ValueError, match="keeps the number of rows"):
        layer.reorder(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="capacity 2 is smaller"):
        LayerKVBuffer(*_kv(2, 3, 0), capacity=2)


def test_gpt_logits_with_preallocated_cache_equal_the_plain_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=32, dim=16, num_layers=2, num_heads=2, dropout=0.0)).eval()
    prompt = torch.randint(0, 50, (2, 4))
    with torch.no_grad():
        first = model(prompt, use_cache=True)
        rows = torch.tensor([0, 0, 1, 1])
        plain = reorder_cache(first.past_key_values, rows)
        buffered = preallocate(first.past_key_values, capacity=10, rows=rows)
        mask = torch.ones(4, 4, dtype=torch.long)
        for step in range(5):
            token = torch.randint(0, 50, (4, 1))
            mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
            a = model(token, attention_mask=mask, past_key_values=plain, use_cache=True)
            b = model(token, attention_mask=mask, past_key_values=buffered, use_cache=True)
            assert torch.equal(a.logits, b.logits)
            beams = torch.tensor([1, 0, 3, 3]) if step % 2 else torch.tensor([0, 0, 2, 3])
            plain, buffered = reorder_cache(a.past_key_values, beams), reorder_cache(b.past_key_values, beams)
            mask = mask[beams]
