"""One key/value cache protocol: the buffered cache gives exactly what the plain, concatenated cache gives."""
import pytest
import torch

from course_lib.models.gpt import GPT, GPTConfig
from course_lib.models.kv_cache import KVCache, LayerKVBuffer, LayerKVCache, reorder_cache


def _kv(rows, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 3, generator=g), torch.randn(rows, 2, length, 5, generator=g)


@pytest.mark.parametrize("make", [lambda k, v: LayerKVCache(k, v), lambda k, v: LayerKVBuffer(k, v, capacity=9)],
                         ids=["plain", "buffered"])
def test_append_and_reorder_equal_cat_and_index_select(make):
    keys, values = _kv(4, 3, 0)
    layer = make(keys, values)
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
        assert layer.length == 4 + step and torch.equal(layer.keys, expected_k)
    layer.reorder(torch.tensor([3, 3, 0, 1]))  # a pending reorder is visible when the cache is read
    keys, values = layer
    assert torch.equal(values, expected_v[torch.tensor([3, 3, 0, 1])])


def test_an_empty_plain_layer_starts_with_the_first_append():
    layer = LayerKVCache()
    assert layer.length == 0
    keys, values = _kv(2, 3, 0)
    assert layer.append(keys, values)[0] is keys and layer.length == 3


def test_bad_use_is_refused_clearly():
    layer = LayerKVBuffer(*_kv(2, 3, 0), capacity=4)
    layer.append(*_kv(2, 1, 1))
    with pytest.raises(ValueError, match="at most 4 tokens"):
        layer.append(*_kv(2, 1, 2))
    with pytest.raises(ValueError, match="keeps the number of rows"):
        layer.reorder(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="capacity 2 is smaller"):
        LayerKVBuffer(*_kv(2, 3, 0), capacity=2)


def test_reorder_cache_copies_and_reads_tuples_of_pairs():
    pairs = (_kv(3, 2, 0), _kv(3, 2, 1))  # the decoding lab's layout: a tuple of (k, v) per layer
    rows = torch.tensor([2, 2, 0])
    copy = reorder_cache(pairs, rows)
    assert isinstance(copy, KVCache) and len(copy) == 2 and copy.length == 2
    for (k, v), (old_k, old_v) in zip(copy, pairs):
        assert torch.equal(k, old_k[rows]) and torch.equal(v, old_v[rows])
    cache = KVCache.wrap(pairs, num_layers=2)
    again = reorder_cache(cache, rows)
    assert torch.equal(cache[0].keys, pairs[0][0])  # the original stays as it was
    assert torch.equal(again[1].values, pairs[1][1][rows])


def _gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, context_length=32, dim=16, num_layers=2, num_heads=2, dropout=0.0)).eval()


def test_gpt_logits_with_buffered_cache_equal_the_plain_cache():
    model = _gpt()
    prompt = torch.randint(0, 50, (2, 4))
    with torch.no_grad():
        first = model(prompt, use_cache=True)
        rows = torch.tensor([0, 0, 1, 1])
        plain = reorder_cache(first.past_key_values, rows)
        buffered = first.past_key_values.buffered(capacity=10, rows=rows)
        assert all(isinstance(layer, LayerKVBuffer) for layer in buffered) and buffered.length == 4
        mask = torch.ones(4, 4, dtype=torch.long)
        for step in range(5):
            token = torch.randint(0, 50, (4, 1))
            mask = torch.cat([mask, torch.ones(4, 1, dtype=torch.long)], dim=1)
            a = model(token, attention_mask=mask, past_key_values=plain, use_cache=True)
            b = model(token, attention_mask=mask, past_key_values=buffered, use_cache=True)
            assert torch.equal(a.logits, b.logits)
            assert a.past_key_values is plain and b.past_key_values is buffered  # extended in place
            beams = torch.tensor([1, 0, 3, 3]) if step % 2 else torch.tensor([0, 0, 2, 3])
            plain, buffered = a.past_key_values.reorder(beams), b.past_key_values.reorder(beams)
            mask = mask[beams]


def test_gpt_logits_with_cache_equal_one_pass_without():
    model = _gpt()
    ids = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :5], use_cache=True)
        assert out.past_key_values.length == 5
        pieces = [out.logits]
        for t in range(5, 9):
            out = model(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            pieces.append(out.logits)
        assert model(ids, use_cache=False).past_key_values is None
        as_pairs = tuple((k, v) for k, v in model(ids[:, :8], use_cache=True).past_key_values)
        last = model(ids[:, 8:], past_key_values=as_pairs).logits  # a tuple of (k, v) per layer works too
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, full[:, 8:], atol=1e-5, rtol=1e-5)


def test_gpt_and_the_steppers_call_only_the_protocol():
    """The model and the steppers name no cache class and branch on no cache type: the protocol is the interface."""
    import inspect

    import course_lib.decoding.steppers as steppers
    import course_lib.models.gpt as gpt

    for module in (gpt, steppers):
        source = inspect.getsource(module)
        assert "LayerKV" not in source and "isinstance(past" not in source and "isinstance(cache" not in source
    assert "isinstance" not in inspect.getsource(steppers) and "models" not in steppers.__dict__
