"""course_lib.distributed.widgets: the simulated ring all-reduce ends where gloo's all_reduce ends, sends what the
cost model charges for, and the memory and pipeline figures match the ZeRO and GPipe papers' numbers."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from course_lib.distributed.launch import setup_process_group, spawn
from course_lib.distributed.widgets import (
    fit_ring_cost_model, parallelism_explorer, pipeline_schedule, ring_all_reduce, ring_all_reduce_seconds,
    ring_explorer, zero_memory_explorer, zero_memory_per_rank,
)
from course_lib.viz import Explorer


def _integer_vectors(devices: int, length: int, seed: int = 0) -> torch.Tensor:
    """Whole numbers in float32: every order of addition gives the same sum, so results compare exactly."""
    return torch.randint(-50, 50, (devices, length), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("devices,length", [(2, 2), (3, 7), (4, 8), (5, 23), (6, 6)])
def test_every_device_ends_with_the_sum_and_holds_every_origin(devices, length):
    vectors = _integer_vectors(devices, length)
    states = ring_all_reduce(vectors)
    assert len(states) == 2 * devices - 1 and [s.step for s in states] == list(range(2 * devices - 1))
    assert torch.equal(states[0].values, vectors)
    assert torch.equal(states[-1].values, vectors.sum(0).expand(devices, -1))
    assert states[-1].holds.all()
    floats = torch.randn(devices, length, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(ring_all_reduce(floats)[-1].values, floats.sum(0).expand(devices, -1))


@pytest.mark.parametrize("devices", [2, 3, 4, 5])
def test_reduce_scatter_leaves_each_device_one_finished_chunk(devices):
    vectors = _integer_vectors(devices, 4 * devices, seed=2)
    state = ring_all_reduce(vectors)[devices - 1]
    assert state.phase == "reduce-scatter"
    complete = state.holds.all(-1)  # (device, chunk): every device's numbers are in it
    for d in range(devices):
        assert complete[d].nonzero().flatten().tolist() == [(d + 1) % devices]
        chunk = slice(4 * ((d + 1) % devices), 4 * ((d + 1) % devices) + 4)
        assert torch.equal(state.values[d, chunk], vectors[:, chunk].sum(0))
    for s, earlier in enumerate(ring_all_reduce(vectors)[1:devices]):  # step s+1: the chunk just received holds s+2
        for _, receiver, c in earlier.transfers:
            assert int(earlier.holds[receiver, c].sum()) == s + 2


@pytest.mark.parametrize("devices", [2, 3, 4, 6])
def test_each_device_sends_what_the_cost_model_charges(devices):
    length = 12 * devices
    states = ring_all_reduce(_integer_vectors(devices, length))
    sent = {d: 0 for d in range(devices)}
    for state in states[1:]:
        assert sorted(s for s, _, _ in state.transfers) == list(range(devices))  # everyone sends once ...
        assert sorted(r for _, r, _ in state.transfers) == list(range(devices))  # ... and receives once
        assert all(r == (s + 1) % devices for s, r, _ in state.transfers)  # to its right-hand neighbour
        for sender, _, _ in state.transfers:
            sent[sender] += length // devices
    assert set(sent.values()) == {2 * (devices - 1) * length // devices}
    size_bytes, bandwidth = 4 * length, 1e9
    assert ring_all_reduce_seconds(size_bytes, devices, bandwidth, 0.0) == pytest.approx(4 * sent[0] / bandwidth)
    assert ring_all_reduce_seconds(0, devices, bandwidth, 1e-5) == pytest.approx(len(states[1:]) * 1e-5)


def _gloo_all_reduce(vectors: torch.Tensor) -> torch.Tensor:
    """One spawned rank: torch.distributed's own all-reduce (gloo) of this rank's row."""
    rank, _, _ = setup_process_group("gloo")
    mine = vectors[rank].clone()
    dist.all_reduce(mine)
    return mine


def test_the_simulated_ring_ends_where_gloos_all_reduce_ends():
    vectors = _integer_vectors(3, 10, seed=4)
    reduced = spawn(_gloo_all_reduce, 3, vectors, timeout=120, start_method="fork")  # forked: no re-import of torch
    simulated = ring_all_reduce(vectors)[-1].values
    for rank in range(3):
        assert torch.equal(reduced[rank], simulated[rank])


def test_the_cost_model_fit_reads_back_latency_and_bandwidth():
    sizes = [4e3, 4e4, 4e5, 4e6, 4e7]
    times = [ring_all_reduce_seconds(size, 2, 2e9, 3e-5) for size in sizes]
    latency, bandwidth = fit_ring_cost_model(sizes, times, 2)
    assert latency == pytest.approx(3e-5, rel=1e-6) and bandwidth == pytest.approx(2e9, rel=1e-6)
    noisy = [t * (1.3 if i % 2 else 0.8) for i, t in enumerate(times)]  # ±30 %: every size still counts
    latency, bandwidth = fit_ring_cost_model(sizes, noisy, 2)
    assert 1e-5 < latency < 1e-4 and 1e9 < bandwidth < 4e9
    with pytest.raises(ValueError, match="do not grow with the size"):
        fit_ring_cost_model([1e3, 1e6, 1e7], [0.03, 0.02, 0.01], 2)
    with pytest.raises(ValueError, match="at least two different sizes"):
        fit_ring_cost_model([1e3, 1e3], [0.01, 0.02], 2)


def test_zero_memory_matches_the_zero_papers_figures():
    """ZeRO (Rajbhandari et al., 2020), figure 1: 7.5 B parameters on 64 GPUs, mixed-precision Adam."""
    per_stage = [sum(zero_memory_per_rank(7.5e9, 64, stage).values()) / 1e9 for stage in range(4)]
    assert [round(gb, 1) for gb in per_stage] == [120.0, 31.4, 16.6, 1.9]
    assert zero_memory_per_rank(1e6, 8, 1) == {"weights": 2e6, "gradients": 2e6, "optimizer state": 1.5e6}
    assert zero_memory_per_rank(1e6, 1, 3) == zero_memory_per_rank(1e6, 1, 0)  # one rank: nothing to shard
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        zero_memory_per_rank(1e6, 8, 4)


@pytest.mark.parametrize("stages,micro_batches", [(1, 1), (4, 1), (4, 4), (3, 8), (6, 2)])
def test_pipeline_schedule_respects_dependencies_and_has_gpipes_bubble(stages, micro_batches):
    grid, bubble = pipeline_schedule(stages, micro_batches)
    when = {}
    for (s, t), job in zip(grid.nonzero().tolist(), grid[grid != 0].tolist()):
        assert (s, job) not in when, "each stage runs each pass of each micro-batch once"
        when[s, job] = t
    assert len(when) == 2 * stages * micro_batches
    for m in range(1, micro_batches + 1):
        for s in range(stages):
            if s > 0:
                assert when[s, m] > when[s - 1, m]  # forward needs the previous stage's activations
            if s < stages - 1:
                assert when[s, -m] > when[s + 1, -m]  # backward needs the next stage's gradients
            assert when[s, -m] > when[s, m]
    assert bubble == pytest.approx((stages - 1) / (micro_batches + stages - 1))  # GPipe's bubble
    with pytest.raises(ValueError, match="stages >= 1"):
        pipeline_schedule(0, 4)


def test_bad_ring_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="N >= 2 devices"):
        ring_all_reduce(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="L >= N"):
        ring_all_reduce(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bandwidth > 0"):
        ring_all_reduce_seconds(1e6, 4, 0, 1e-5)


def test_explorers_draw_every_kind_and_clamp_the_ring_step():
    ring = ring_explorer(world_size=3)
    assert isinstance(ring, Explorer) and ring.png()[:4] == b"\x89PNG"
    ring.controls["step"].value = 10  # past the last step (4 for 3 devices): the last state is drawn
    assert "step 4 of 4" in ring.figure().axes[0].get_title()
    assert ring.book_controls["step"].max == 4 and ring.book_controls["devices"].disabled
    parallelism = parallelism_explorer()
    for kind in ("data", "tensor", "pipeline"):
        parallelism.controls["kind"].value = kind
        assert len(parallelism.figure().axes) == 2
    assert zero_memory_explorer().png()[:4] == b"\x89PNG"
