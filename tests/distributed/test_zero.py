"""course_lib.distributed.zero in one process: the partition, the optimizer state's size, bad input.

ZeRO-1 against torch's ``ZeroRedundancyOptimizer`` and the unsharded AdamW, with 2 and 3 processes, and its
state per rank: ``test_data_parallel_torchrun.py`` (one launch runs every equality).
"""
from __future__ import annotations

import pytest
import torch

from course_lib.distributed.zero import ShardedOptimizer, optimizer_state_bytes, partition_parameters
from course_lib.models.gpt import GPT, GPTConfig


def _gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, context_length=8, dim=16, num_layers=2, num_heads=2, dropout=0.0))


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_the_partition_gives_every_parameter_one_owner_and_balances_the_load(world_size):
    params = list(_gpt().parameters())
    shards = partition_parameters(params, world_size)
    assert len(shards) == world_size
    owned = [id(p) for shard in shards for p in shard]
    assert sorted(owned) == sorted(id(p) for p in params)  # each once
    loads = [sum(p.numel() for p in shard) for shard in shards]
    largest = max(p.numel() for p in params)
    assert max(loads) - min(loads) <= largest  # greedy, largest first: within one parameter of even
    positions = {id(p): i for i, p in enumerate(params)}
    assert all([positions[id(p)] for p in shard] == sorted(positions[id(p)] for p in shard) for shard in shards)


def test_the_partition_is_the_same_on_every_call():
    params = list(_gpt().parameters())
    first, second = partition_parameters(params, 3), partition_parameters(params, 3)
    assert [[id(p) for p in s] for s in first] == [[id(p) for p in s] for s in second]


def test_one_process_sharded_adamw_steps_exactly_as_adamw():
    ours, plain = _gpt(), _gpt()
    sharded = ShardedOptimizer(ours.parameters(), torch.optim.AdamW, lr=1e-2, weight_decay=0.1)
    adamw = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, 32, (2, 8))
    for model, optimizer in ((ours, sharded), (plain, adamw)):
        for _ in range(3):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten()).backward()
            optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), plain.parameters()))
    assert optimizer_state_bytes(sharded) == optimizer_state_bytes(adamw)


def test_adamw_state_is_two_moments_per_weight_and_a_step_counter():
    model = _gpt()
    adamw = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).logits.sum().backward()
    adamw.step()
    params = list(model.parameters())
    weights = sum(p.numel() * p.element_size() for p in params)
    step_counters = sum(state["step"].numel() * state["step"].element_size() for state in adamw.state.values())
    assert optimizer_state_bytes(adamw) == 2 * weights + step_counters
    assert optimizer_state_bytes(torch.optim.AdamW(model.parameters())) == 0  # no state before the first step


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        ShardedOptimizer([], torch.optim.AdamW)
    with pytest.raises(TypeError, match="not parameter-group dicts"):
        ShardedOptimizer([{"params": list(_gpt().parameters())}], torch.optim.AdamW)
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        partition_parameters(list(_gpt().parameters()), 0)
