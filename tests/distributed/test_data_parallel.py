"""course_lib.distributed.data_parallel in one process: buckets, single-process behaviour, bad input.

The equalities with several processes (against DDP and against one process on the combined batch) are in
``test_data_parallel_torchrun.py``; here, what needs no process group.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.distributed.data_parallel import (
    DataParallel, average_gradients, average_gradients_bucketed, broadcast_parameters, gradient_buckets,
)
from course_lib.models.gpt import GPT, GPTConfig

MB = 2**20


def _tensors(*sizes, dtype=torch.float32):
    return [torch.zeros(n, dtype=dtype) for n in sizes]


def test_buckets_hold_consecutive_tensors_up_to_the_limit():
    tensors = _tensors(MB // 4, MB // 4, MB // 4, MB // 8)  # float32: 1, 1, 1, 0.5 MB
    buckets = gradient_buckets(tensors, bucket_mb=2)
    assert [[id(t) for t in b] for b in buckets] == [[id(t) for t in tensors[:2]], [id(t) for t in tensors[2:]]]


def test_a_tensor_larger_than_a_bucket_travels_alone_and_nothing_is_lost():
    tensors = _tensors(10, 3 * MB // 4, 10, 10)  # 40 B, 3 MB, 40 B, 40 B
    buckets = gradient_buckets(tensors, bucket_mb=1)
    assert [len(b) for b in buckets] == [1, 1, 2]
    assert [id(t) for b in buckets for t in b] == [id(t) for t in tensors]


def test_a_bucket_never_mixes_dtypes():
    tensors = _tensors(4, 4) + _tensors(4, dtype=torch.float64) + _tensors(4)
    assert [len(b) for b in gradient_buckets(tensors, bucket_mb=1)] == [2, 1, 1]


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bucket_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="bucket_mb must be positive"):
        gradient_buckets(_tensors(4), bad)
    with pytest.raises(ValueError, match="bucket_mb must be positive"):
        DataParallel(nn.Linear(2, 2), bucket_mb=bad)


def _model_with_gradients():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, context_length=8, dim=16, num_layers=1, num_heads=2, dropout=0.0))
    ids = torch.randint(0, 32, (2, 8))
    nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten()).backward()
    return model


def test_one_process_has_nothing_to_average():
    model = _model_with_gradients()
    before = [p.grad.clone() for p in model.parameters()]
    assert average_gradients(model) == 0 and average_gradients_bucketed(model, 0.01) == 0
    broadcast_parameters(model)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_the_wrapper_in_one_process_is_the_module():
    plain = _model_with_gradients()
    torch.manual_seed(0)
    wrapped = DataParallel(GPT(GPTConfig(vocab_size=32, context_length=8, dim=16, num_layers=1, num_heads=2,
                                         dropout=0.0)), bucket_mb=0.01)
    ids = torch.randint(0, 32, (2, 8))  # the same draws as _model_with_gradients
    with wrapped.no_sync():
        assert not wrapped.require_sync
    assert wrapped.require_sync  # restored on leaving
    wrapped.all_reduces = -1
    nn.functional.cross_entropy(wrapped(ids).logits.flatten(0, 1), ids.flatten()).backward()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(wrapped.module.parameters(), plain.parameters()))
    assert wrapped.all_reduces == 0  # the end-of-backward hook ran and found one process
