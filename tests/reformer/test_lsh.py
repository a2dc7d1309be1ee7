"""LSH bucketing and LSH self-attention pinned to HF transformers' Reformer (fp32, eval mode).

Same random rotations on both sides: HF draws them with ``torch.manual_seed(hash_seed)`` then
``torch.randn(H, d, n_hashes, buckets/2)``; ours draw the same numbers from a private generator
seeded with ``hash_seed`` (or take them as an argument).
"""
from __future__ import annotations

import pytest
import torch

from course_lib.reformer import LSHSelfAttention, hash_vectors, random_rotations, sort_by_bucket, total_buckets

transformers = pytest.importorskip("transformers")
from transformers.models.reformer import modeling_reformer as hf_reformer

ATOL = 1e-5


def hf_config(**overrides):
    settings = dict(
        hidden_size=32, num_attention_heads=2, attention_head_size=8, lsh_attn_chunk_length=4,
        num_buckets=4, num_hashes=1, is_decoder=False, hash_seed=7, lsh_attention_probs_dropout_prob=0.0,
    )
    settings.update(overrides)
    return transformers.ReformerConfig(**settings)


def padding(batch: int, seq_len: int, lengths: list[int]) -> torch.Tensor:
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


# --- hashing -------------------------------------------------------------------------------

def test_argmax_runs_over_rotation_and_its_negation():
    rotations = torch.eye(2).view(1, 2, 1, 2)  # (H=1, d=2, n_hashes=1, 2 columns) -> 4 buckets
    vectors = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.1], [0.1, -1.0]]).view(1, 1, 4, 2)
    buckets = hash_vectors(vectors, rotations, 4)
    # the negated half gives buckets 2 and 3: only half the dimensions would never reach them
    assert buckets.flatten().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("num_buckets", [4, 8, [2, 4], [4, 8]])
@pytest.mark.parametrize("num_hashes", [1, 3])
@pytest.mark.parametrize("lengths", [None, [16, 11]])
def test_buckets_equal_hf(num_buckets, num_hashes, lengths):
    hf = hf_reformer.LSHSelfAttention(hf_config(num_buckets=num_buckets, num_hashes=num_hashes, hash_seed=11))
    vectors = torch.randn(2, 2, 16, 8)  # (B, H, T, d)
    mask = None if lengths is None else padding(2, 16, lengths)
    expected = hf._hash_vectors(vectors, num_hashes, mask)  # (B, H, R*T), rounds offset

    rotations = random_rotations(2, 8, num_hashes, num_buckets, seed=11)
    ours = hash_vectors(vectors, rotations, num_buckets, mask)  # (B, H, R, T)
    per_round = total_buckets(num_buckets) + (lengths is not None)
    offsets = torch.arange(num_hashes).view(1, 1, -1, 1) * per_round
    assert torch.equal((ours + offsets).flatten(2), expected)
    assert int(ours.max()) < per_round
    if lengths is not None:  # padding tokens share the extra bucket
        assert (ours[1, :, :, 11:] == total_buckets(num_buckets)).all()


def test_sort_is_stable_and_inverted_like_hf():
    buckets = torch.randint(0, 3, (2, 2, 2, 20))  # many ties
    order, undo = sort_by_bucket(buckets, 3)
    offsets = torch.arange(2).view(1, 1, -1, 1) * 3
    expected_order, expected_undo = hf_reformer.LSHSelfAttention(hf_config())\
        ._get_sorted_bucket_idx_and_undo_sorted_bucket_idx(20, (buckets + offsets).flatten(2), 2)
    assert torch.equal(order, expected_order) and torch.equal(undo, expected_undo)
    flat = (buckets + offsets).flatten(2)
    sorted_keys = flat.gather(-1, order)
    assert (sorted_keys.diff(dim=-1) >= 0).all()
    same_bucket = sorted_keys.diff(dim=-1) == 0
    assert (order.diff(dim=-1)[same_bucket] > 0).all()  # positions ascending inside a bucket
    assert torch.equal(order.gather(-1, undo), torch.arange(40).expand(2, 2, 40))


# --- LSH self-attention ----------------------------------------------------------------------

CASES = [
    dict(num_buckets=4, num_hashes=1),
    dict(num_buckets=4, num_hashes=3),
    dict(num_buckets=[2, 4], num_hashes=2),
    dict(num_buckets=4, num_hashes=2, is_decoder=True),
    dict(num_buckets=8, num_hashes=2, lsh_num_chunks_before=1, lsh_num_chunks_after=1),
    dict(num_buckets=4, num_hashes=1, lsh_num_chunks_before=0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("lengths", [None, [16, 10]], ids=["no-mask", "padding-mask"])
def test_lsh_attention_equals_hf(case, lengths):
    hf = hf_reformer.LSHSelfAttention(hf_config(**case)).eval()
    ours = LSHSelfAttention.from_hf(hf).eval()
    x = torch.randn(2, 16, 32)
    mask = None if lengths is None else padding(2, 16, lengths)
    expected = hf(x, attention_mask=mask).hidden_states
    torch.testing.assert_close(ours(x, mask), expected, atol=ATOL, rtol=0)


def test_lsh_attention_gradients_equal_hf():
    hf = hf_reformer.LSHSelfAttention(hf_config(num_hashes=2, is_decoder=True)).eval()
    ours = LSHSelfAttention.from_hf(hf).eval()
    x_hf, x_ours = torch.randn(2, 16, 32, requires_grad=True), None
    x_ours = x_hf.detach().clone().requires_grad_(True)
    weights = torch.randn(2, 16, 16)
    (hf(x_hf).hidden_states * weights).sum().backward()
    (ours(x_ours) * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_hf.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.query_key.weight.grad, hf.query_key.weight.grad, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.value.weight.grad, hf.value.weight.grad, atol=ATOL, rtol=0)


def test_passed_rotations_replace_the_seed():
    hf = hf_reformer.LSHSelfAttention(hf_config(num_hashes=2, hash_seed=3)).eval()
    ours = LSHSelfAttention.from_hf(hf).eval()
    ours.hash_seed = None  # would draw from the global generator
    torch.manual_seed(3)
    rotations = torch.randn(2, 8, 2, 2)  # HF's draw: manual_seed(hash_seed), randn(H, d, R, buckets/2)
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(ours(x, rotations=rotations), hf(x).hidden_states, atol=ATOL, rtol=0)


def test_short_sequence_is_full_attention_without_self_unless_alone():
    hf = hf_reformer.LSHSelfAttention(hf_config(is_decoder=True)).eval()
    ours = LSHSelfAttention.from_hf(hf).eval()
    x = torch.randn(1, 3, 32)  # shorter than one chunk: no hashing
    out = ours(x)
    torch.testing.assert_close(out, hf(x).hidden_states, atol=ATOL, rtol=0)
    # causal: token 0 has no other key, so it attends to itself and returns its own value
    torch.testing.assert_close(out[0, 0], ours.value(x)[0, 0], atol=ATOL, rtol=0)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("num_buckets", [3, [2, 3], 0, [], [4, True]])
def test_odd_or_invalid_bucket_counts_are_rejected(num_buckets):
    with pytest.raises(ValueError, match="num_buckets"):
        LSHSelfAttention(32, 2, 8, 4, num_buckets)


def test_sequence_not_multiple_of_chunk_length_is_rejected():
    attention = LSHSelfAttention(32, 2, 8, 4, 4)
    with pytest.raises(ValueError, match="not a multiple of the chunk length 4.*pad the sequence to 20"):
        attention(torch.randn(1, 18, 32))


def test_rotations_of_the_wrong_shape_are_rejected():
    attention = LSHSelfAttention(32, 2, 8, 4, 4)
    with pytest.raises(ValueError, match="rotations of shape"):
        attention(torch.randn(1, 16, 32), rotations=torch.randn(2, 8, 1, 4))
