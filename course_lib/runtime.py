"""Where and how the course runs: the device, fast mode, and the shipped checkpoints.

* :func:`get_device`: CUDA when present, else the CPU. Every chapter, lab check and benchmark calls
  it rather than hard-coding ``"cuda"`` or ``"cpu"``, so the same code runs on a laptop, on Binder
  or Colab, and on an instructor's GPU machine (``COURSE_DEVICE`` overrides it).
* :func:`fast_mode`: ``COURSE_FAST=1`` puts every chapter in its fast mode (fewer steps, smaller
  sizes) so the whole book executes in minutes on a 2-core CPU; CI and the book build set it.
* :data:`CHECKPOINT_DIR`: the small models the course trained itself, shipped inside the package.
* :func:`cpu_name`: the processor's model name, for the training scripts' records.

Not covered here: multi-GPU placement and Apple's MPS (the course never needs them;
``COURSE_DEVICE=mps`` still works if you ask for it), the data folder (:mod:`course_lib.data`).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["CHECKPOINT_DIR", "cpu_name", "describe_device", "fast_mode", "get_device"]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"  # written by scripts/train_*.py


def fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to anything but ``""``/``0``/``false``."""
    return os.environ.get("COURSE_FAST", "").strip().lower() not in ("", "0", "false", "no")


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Order: the ``prefer`` argument, then the ``COURSE_DEVICE`` environment variable, then
    ``cuda`` if :func:`torch.cuda.is_available`, else ``cpu``.

    >>> get_device("cpu")
    device(type='cpu')
    """
    choice = prefer if prefer is not None else os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(device)!r} was requested but CUDA is not available on this machine; "
            "unset COURSE_DEVICE or pass prefer='cpu'"
        )
    return device


def describe_device(device: torch.device | None = None) -> str:
    """A one-line human description, e.g. ``'cpu (2 threads)'`` or ``'cuda:0 (NVIDIA H100)'``."""
    device = device or get_device()
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def cpu_name() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), or what :mod:`platform` knows where lscpu is missing."""
    try:
        lscpu = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"
