"""The distributed-training chapter's pictures: the ring all-reduce step by step, its cost model, what each
device holds under data, tensor and pipeline parallelism, and memory per rank under ZeRO.

* :func:`ring_all_reduce` simulates the ring algorithm on ``N`` devices' vectors, each cut into ``N`` chunks:
  ``N − 1`` reduce-scatter steps (each device passes one chunk to its right-hand neighbour, who adds it to
  its own) and then ``N − 1`` all-gather steps (the finished chunks go once more round the ring, copied).
  It returns every state with who sent which chunk where, and which devices' numbers each chunk holds;
  :func:`ring_explorer` draws them (sliders: devices, step).
* :func:`ring_all_reduce_seconds` is the cost model: ``2(N−1)`` messages of ``size/N`` each per device,
  ``2(N−1)·latency + 2(N−1)/N · size/bandwidth``; :func:`fit_ring_cost_model` reads latency and bandwidth off
  measured times by least squares.
* :func:`zero_memory_per_rank`: mixed-precision Adam's 16 bytes per parameter (2 fp16 weights, 2 fp16
  gradients, 12 of fp32 master weights, momentum and variance), as ZeRO stages 1, 2 and 3 shard them.
* :func:`pipeline_schedule`: GPipe's schedule (all forwards, then all backwards) and its idle "bubble";
  :func:`parallelism_explorer` draws which device holds which layers and which part of the batch.

Not covered: the collectives themselves (torch.distributed's; :mod:`.data_parallel` uses them), tree and
hierarchical all-reduce, interleaved (1F1B) pipeline schedules.
"""
from __future__ import annotations

from typing import NamedTuple

import ipywidgets as widgets
import matplotlib.patches as patches
import torch
from matplotlib.figure import Figure

from ..viz import Explorer

__all__ = ["RingState", "ring_all_reduce", "ring_all_reduce_seconds", "fit_ring_cost_model", "ring_explorer",
           "zero_memory_per_rank", "zero_memory_explorer", "pipeline_schedule", "parallelism_explorer"]

DEVICE_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f", "#76b7b2", "#edc948"]


class RingState(NamedTuple):
    phase: str  # "start", "reduce-scatter" or "all-gather"
    step: int  # 0 at the start, then 1 .. 2(N−1) over both phases
    values: torch.Tensor  # (N, L) each device's vector after this step
    holds: torch.Tensor  # (N, N, N) bool: [device, chunk, origin] — origin's numbers are summed into that chunk
    transfers: tuple[tuple[int, int, int], ...]  # (sender, receiver, chunk) of this step's messages


def ring_all_reduce(vectors: torch.Tensor) -> list[RingState]:
    """Every state of the ring all-reduce of ``vectors (N, L)`` (device ``d``'s vector in row ``d``), ``2N − 1`` of them.

    The vectors are cut into ``N`` chunks as :func:`torch.tensor_split` cuts them (``L`` need not divide).
    At reduce-scatter step ``s`` (from 0) device ``d`` sends chunk ``(d − s) mod N`` to ``d + 1``, which adds it;
    after ``N − 1`` steps device ``d`` holds the finished chunk ``(d + 1) mod N``. At all-gather step ``s``
    device ``d`` sends chunk ``(d + 1 − s) mod N`` to ``d + 1``, which keeps it. All messages of a step
    leave at once (each is computed from the state before the step).
    """
    vectors = torch.as_tensor(vectors)
    if vectors.ndim != 2 or vectors.shape[0] < 2 or vectors.shape[1] < vectors.shape[0]:
        raise ValueError(f"vectors must be (N, L) with N >= 2 devices and L >= N numbers to cut into N chunks, "
                         f"got {tuple(vectors.shape)}")
    n = vectors.shape[0]
    pieces = torch.tensor_split(torch.arange(vectors.shape[1]), n)
    spans = [slice(int(piece[0]), int(piece[-1]) + 1) for piece in pieces]  # chunk c's positions in a vector
    values = vectors.clone()
    holds = torch.eye(n, dtype=torch.bool)[:, None, :].expand(n, n, n).clone()  # each chunk: its own device's
    states = [RingState("start", 0, values.clone(), holds.clone(), ())]
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            shift = -s if phase == "reduce-scatter" else 1 - s
            transfers = tuple((d, (d + 1) % n, (d + shift) % n) for d in range(n))
            sent = [(values[d, spans[c]].clone(), holds[d, c].clone()) for d, _, c in transfers]
            for (_, receiver, c), (numbers, origins) in zip(transfers, sent):
                if phase == "reduce-scatter":
                    values[receiver, spans[c]] += numbers
                    holds[receiver, c] |= origins
                else:
                    values[receiver, spans[c]] = numbers
                    holds[receiver, c] = origins
            states.append(RingState(phase, len(states), values.clone(), holds.clone(), transfers))
    return states


def ring_all_reduce_seconds(size_bytes: float, world_size: int, bandwidth: float, latency: float) -> float:
    """The ring all-reduce's time: ``2(N−1)`` steps, each one message of ``size/N`` bytes (bandwidth in bytes/s)."""
    if world_size < 1 or bandwidth <= 0 or latency < 0 or size_bytes < 0:
        raise ValueError("need world_size >= 1, bandwidth > 0, latency >= 0 and size_bytes >= 0")
    steps = 2 * (world_size - 1)
    return steps * latency + steps / world_size * size_bytes / bandwidth


def fit_ring_cost_model(sizes_bytes, seconds, world_size: int) -> tuple[float, float]:
    """``(latency s, bandwidth bytes/s)`` that fit measured all-reduce ``seconds`` best to the cost model
    ``2(N−1)·latency + 2(N−1)/N · size/bandwidth``: least squares on the *relative* error, so that a 1 kB
    all-reduce counts as much as a 64 MB one (plain least squares would fit the largest sizes alone)."""
    sizes = torch.as_tensor(sizes_bytes, dtype=torch.float64)
    times = torch.as_tensor(seconds, dtype=torch.float64)
    if world_size < 2 or sizes.ndim != 1 or sizes.shape != times.shape or len(set(sizes.tolist())) < 2:
        raise ValueError("need world_size >= 2 and one time per size, for at least two different sizes")
    steps = 2 * (world_size - 1)
    if (times <= 0).any():
        raise ValueError("every measured time must be positive")
    design = torch.stack([torch.full_like(sizes, float(steps)), steps / world_size * sizes], dim=1)  # (K, 2)
    relative = design / times[:, None]  # (K, 2): each row divided by its own time, so the target is 1
    latency, inverse_bandwidth = torch.linalg.lstsq(relative, torch.ones_like(times)[:, None]).solution[:, 0].tolist()
    if inverse_bandwidth <= 0:
        raise ValueError("the times do not grow with the size: no bandwidth can be read off them "
                         "(too few sizes, or too much noise — was the machine busy?)")
    return max(latency, 0.0), 1 / inverse_bandwidth


def _draw_ring(figure: Figure, states: list[RingState], step: int) -> None:
    state = states[step]
    n = state.values.shape[0]
    ax = figure.subplots()
    ax.set(xlim=(-0.65, n * 1.6 + 0.05), ylim=(-0.1, n + 0.9))
    ax.axis("off")
    for d in range(n):
        x = d * 1.6
        ax.text(x + 0.5, n + 0.35, f"device {d}", ha="center", fontsize=9, color=DEVICE_COLOURS[d % 8],
                weight="bold")
        for c in range(n):
            y = n - 1 - c
            origins = state.holds[d, c].nonzero().flatten().tolist()
            complete = len(origins) == n
            ax.add_patch(patches.Rectangle((x, y + 0.08), 1.0, 0.84, facecolor="#c7e9c0" if complete else "white",
                                           edgecolor="0.3", lw=1.6 if complete else 0.8))
            for k, origin in enumerate(origins):  # one coloured stripe per device whose numbers are in the sum
                ax.add_patch(patches.Rectangle((x + 0.04 + k * 0.92 / n, y + 0.12), 0.92 / n, 0.14,
                                               facecolor=DEVICE_COLOURS[origin % 8], lw=0))
            ax.text(x + 0.5, y + 0.6, f"chunk {c}\n" + ("sum of all" if complete else
                                                        "+".join(str(o) for o in origins)),
                    ha="center", va="center", fontsize=7.5)
    for sender, receiver, c in state.transfers:
        y = n - 1 - c + 0.5
        if receiver == sender + 1:
            ax.annotate("", (receiver * 1.6 - 0.02, y), (sender * 1.6 + 1.02, y),
                        arrowprops={"arrowstyle": "->", "color": DEVICE_COLOURS[sender % 8], "lw": 2})
        else:  # the ring closes: the last device's message leaves on the right and enters device 0 on the left
            style = {"arrowstyle": "->", "color": DEVICE_COLOURS[sender % 8], "lw": 2}
            ax.annotate("", (sender * 1.6 + 1.55, y), (sender * 1.6 + 1.02, y), arrowprops=style)
            ax.annotate("", (-0.02, y), (-0.55, y), arrowprops=style)
            ax.text(sender * 1.6 + 1.3, y + 0.12, "to 0", ha="center", va="bottom", fontsize=7)
            ax.text(-0.3, y + 0.12, f"from {sender}", ha="center", va="bottom", fontsize=7)
    verb = {"start": "each device holds its own gradients, cut into chunks",
            "reduce-scatter": "reduce-scatter: each device sends one chunk right; the receiver ADDS it",
            "all-gather": "all-gather: finished chunks travel on; the receiver KEEPS them"}[state.phase]
    ax.set_title(f"step {state.step} of {2 * (n - 1)} — {verb}", fontsize=10)


def ring_explorer(world_size: int = 4, step: int = 0) -> Explorer:
    """Sliders for the number of devices and the step (clamped to the last one, ``2(N−1)``)."""
    style = {"style": {"description_width": "80px"}, "layout": widgets.Layout(width="380px"), "continuous_update": False}
    controls = {"devices": widgets.IntSlider(world_size, min=2, max=6, description="devices", **style),
                "step": widgets.IntSlider(step, min=0, max=10, description="step", **style)}

    def draw(devices: int, step: int) -> Figure:
        numbers = torch.arange(devices * devices, dtype=torch.float32).reshape(devices, devices)
        states = ring_all_reduce(numbers)
        figure = Figure(figsize=(min(2.0 + 1.6 * devices, 11), 1.6 + 0.75 * devices), layout="constrained")
        _draw_ring(figure, states, min(step, len(states) - 1))
        return figure

    book = {"devices": widgets.IntSlider(world_size, min=2, max=6, description="devices", disabled=True),
            "step": widgets.IntSlider(step, min=0, max=2 * (world_size - 1), description="step")}
    return Explorer("Ring all-reduce, step by step", controls, draw, book_controls=book)


def zero_memory_per_rank(num_parameters: float, world_size: int, stage: int) -> dict[str, float]:
    """Bytes per rank of mixed-precision Adam training under ZeRO ``stage`` (0 = plain data parallelism).

    fp16 weights (2 bytes/parameter), fp16 gradients (2) and the optimizer state (12: fp32 master weights,
    momentum and variance); stage 1 shards the optimizer state over the ``world_size`` ranks, stage 2 the
    gradients too, stage 3 the weights too. Activations and buffers are not counted.
    """
    if stage not in (0, 1, 2, 3) or world_size < 1 or num_parameters < 0:
        raise ValueError(f"stage must be 0, 1, 2 or 3 and world_size >= 1; got stage={stage}, world_size={world_size}")
    share = 1 / world_size
    return {"weights": 2 * num_parameters * (share if stage >= 3 else 1),
            "gradients": 2 * num_parameters * (share if stage >= 2 else 1),
            "optimizer state": 12 * num_parameters * (share if stage >= 1 else 1)}


def zero_memory_explorer(num_parameters: float = 7.5e9, world_size: int = 64) -> Explorer:
    """Stacked bars: memory per rank for ZeRO stages 0-3, for a model size and a number of ranks."""
    sizes = {"124 M (GPT-2 small)": 124e6, "1.5 B (GPT-2 XL)": 1.5e9, "7.5 B (ZeRO paper)": 7.5e9, "70 B": 70e9}
    style = {"style": {"description_width": "90px"}, "layout": widgets.Layout(width="380px")}
    controls = {"num_parameters": widgets.Dropdown(options=list(sizes.items()), value=num_parameters,
                                                   description="parameters", **style),
                "world_size": widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 64, 256, 1024], value=world_size,
                                                      description="ranks", continuous_update=False, **style)}

    def draw(num_parameters: float, world_size: int) -> Figure:
        figure = Figure(figsize=(8, 3.4), layout="constrained")
        ax = figure.subplots()
        bottoms = [0.0] * 4
        for part, colour in (("weights", "#4e79a7"), ("gradients", "#f28e2b"), ("optimizer state", "#59a14f")):
            heights = [zero_memory_per_rank(num_parameters, world_size, stage)[part] / 1e9 for stage in range(4)]
            ax.bar(range(4), heights, bottom=bottoms, color=colour, label=part)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        for stage, total in enumerate(bottoms):
            ax.text(stage, total, f"{total:,.1f} GB", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(4), ["stage 0\n(plain DDP)", "stage 1\n(optimizer state)", "stage 2\n(+ gradients)",
                                 "stage 3\n(+ weights)"])
        ax.set(ylabel="GB per rank", ylim=(0, bottoms[0] * 1.15),
               title=f"mixed-precision Adam, {num_parameters / 1e9:g} B parameters on {world_size} ranks")
        ax.legend(fontsize=8)
        return figure

    return Explorer("Memory per rank under ZeRO", controls, draw)


def pipeline_schedule(stages: int, micro_batches: int) -> tuple[torch.Tensor, float]:
    """GPipe's schedule on ``stages`` devices: ``(grid (S, 2(M+S−1)) int, bubble fraction)``.

    ``grid[s, t]`` is ``m + 1`` when stage ``s`` runs the forward pass of micro-batch ``m`` at time ``t``,
    ``-(m + 1)`` for its backward pass, 0 when it waits. A backward takes as long as a forward here (a real
    one takes about twice as long). Stage ``s`` runs forward ``m`` at ``s + m`` and, once every forward is
    done, backward ``m`` at ``M + S − 1 + (S − 1 − s) + (M − 1 − m)`` (the last micro-batch first).
    """
    if stages < 1 or micro_batches < 1:
        raise ValueError(f"need stages >= 1 and micro_batches >= 1, got {stages} and {micro_batches}")
    span = micro_batches + stages - 1
    grid = torch.zeros(stages, 2 * span, dtype=torch.long)
    for s in range(stages):
        for m in range(micro_batches):
            grid[s, s + m] = m + 1
            grid[s, span + (stages - 1 - s) + (micro_batches - 1 - m)] = -(m + 1)
    return grid, float((grid == 0).float().mean())


def _draw_holdings(ax, kind: str, devices: int, layers: int) -> None:
    ax.set(xlim=(-0.5, devices * 1.3), ylim=(-1.4, layers + 1.0))
    ax.axis("off")
    per_stage = -(-layers // devices)
    for d in range(devices):
        x = d * 1.3
        ax.text(x + 0.5, layers + 0.4, f"device {d}", ha="center", fontsize=9, weight="bold",
                color=DEVICE_COLOURS[d])
        for layer in range(layers):
            y = layers - 1 - layer
            ax.add_patch(patches.Rectangle((x, y + 0.1), 1.0, 0.8, facecolor="white", edgecolor="0.75"))
            if kind == "data" or (kind == "pipeline" and layer // per_stage == d):
                ax.add_patch(patches.Rectangle((x, y + 0.1), 1.0, 0.8, facecolor=DEVICE_COLOURS[d], alpha=0.55))
                ax.text(x + 0.5, y + 0.5, f"layer {layer + 1}", ha="center", va="center", fontsize=7.5)
            elif kind == "tensor":  # a 1/N column slice of every weight matrix
                ax.add_patch(patches.Rectangle((x + d / devices, y + 0.1), 1 / devices, 0.8,
                                               facecolor=DEVICE_COLOURS[d], alpha=0.7))
        batch = {"data": f"batch slice {d + 1}/{devices}", "tensor": "the whole batch",
                 "pipeline": "micro-batches in turn"}[kind]
        ax.text(x + 0.5, -0.45, batch, ha="center", fontsize=7.5)
    travels = {"data": "travels: gradients, one all-reduce per step (or per bucket), after backward",
               "tensor": "travels: activations, an all-reduce or all-gather inside every layer, forward and backward",
               "pipeline": "travels: activations to the next stage, their gradients back: point to point"}[kind]
    ax.text(devices * 0.65 - 0.15, -1.2, travels, ha="center", fontsize=8.5, style="italic")


def parallelism_explorer(kind: str = "data", micro_batches: int = 4) -> Explorer:
    """Which device holds which layers (4 devices, 8 layers) per kind of parallelism; the pipeline's schedule."""
    controls = {"kind": widgets.Dropdown(options=["data", "tensor", "pipeline"], value=kind, description="parallelism"),
                "micro_batches": widgets.IntSlider(micro_batches, min=1, max=12, description="micro-batches",
                                                   continuous_update=False)}

    def draw(kind: str, micro_batches: int) -> Figure:
        figure = Figure(figsize=(11, 3.8), layout="constrained")
        holdings, schedule = figure.subplots(1, 2, width_ratios=[1.1, 1])
        _draw_holdings(holdings, kind, devices=4, layers=8)
        grid, bubble = pipeline_schedule(4, micro_batches)
        colours = torch.where(grid > 0, 1, torch.where(grid < 0, 2, 0))
        schedule.imshow(colours.numpy(), cmap=_schedule_colours(), vmin=0, vmax=2, aspect="auto",
                        alpha=1.0 if kind == "pipeline" else 0.25)
        if grid.shape[1] <= 32:
            for (s, t), m in zip(grid.nonzero().tolist(), grid[grid != 0].tolist()):
                schedule.text(t, s, str(abs(m)), ha="center", va="center", fontsize=7)
        schedule.set(xlabel="time (one forward or backward of a micro-batch)", ylabel="pipeline stage (device)",
                     yticks=range(4), title=f"GPipe schedule: forward (blue), backward (orange); idle: {bubble:.0%}"
                     + ("" if kind == "pipeline" else "\n(pipeline parallelism only)"))
        schedule.title.set_fontsize(9)
        return figure

    book = {"micro_batches": widgets.SelectionSlider(options=sorted({1, 4, 12, micro_batches}), value=micro_batches,
                                                     description="micro-batches")}  # 3 kinds × 3 stops in the book
    return Explorer("Data, tensor and pipeline parallelism: who holds what", controls, draw, book_controls=book)


def _schedule_colours():
    from matplotlib.colors import ListedColormap

    return ListedColormap(["white", "#9ecae1", "#fdae6b"])
