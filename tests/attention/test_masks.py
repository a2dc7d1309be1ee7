"""course_lib.attention.masks: the True = may-attend convention, checked against torch's own masks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib import causal_mask, padding_mask, to_additive


@pytest.mark.parametrize("size", [1, 2, 7, 33])
def test_causal_mask_is_the_inverse_of_torch_transformer_mask(size):
    # nn.Transformer's helper gives an additive mask: 0 = keep, -inf = blocked.
    reference = nn.Transformer.generate_square_subsequent_mask(size)
    assert causal_mask(size).dtype == torch.bool
    assert torch.equal(causal_mask(size), reference == 0)
    assert torch.equal(to_additive(causal_mask(size)), reference)


def test_padding_mask_marks_real_tokens():
    mask = padding_mask([3, 1, 4], max_len=5)
    assert mask.shape == (3, 5) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [3, 1, 4]
    assert mask[0].tolist() == [True, True, True, False, False]
    assert torch.equal(padding_mask(torch.tensor([2, 2])), torch.ones(2, 2, dtype=torch.bool))


def test_padding_mask_keeps_padded_keys_from_changing_the_output():
    from course_lib import scaled_dot_product_attention

    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = padding_mask([4, 6], max_len=6)[:, None, :]  # (B, 1, T_k) against scores (B, T_q, T_k)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    k[0, 4:], v[0, 4:] = 1e3, -1e3  # garbage in the padding of sequence 0
    out2, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out[0], out2[0], atol=0, rtol=0)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3"])
def test_causal_mask_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive integer"):
        causal_mask(bad)


def test_padding_mask_rejects_bad_lengths():
    with pytest.raises(ValueError, match="does not fit"):
        padding_mask([3, 6], max_len=5)
    with pytest.raises(ValueError, match=">= 0"):
        padding_mask([3, -1])
    with pytest.raises(TypeError, match="integers"):
        padding_mask([1.5, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        padding_mask([])


def test_to_additive_rejects_float_masks():
    with pytest.raises(TypeError, match="boolean"):
        to_additive(torch.zeros(2, 2))
