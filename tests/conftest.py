"""Shared test set-up: deterministic seeds, headless plotting, the real data folder."""
from __future__ import annotations

import os
import pathlib

import matplotlib
import pytest

matplotlib.use("Agg")  # headless: no display in CI

REPO = pathlib.Path(__file__).resolve().parents[1]

# Tests read the real datasets from ../shared/data unless told otherwise (never from the internet).
os.environ.setdefault("COURSE_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("COURSE_FAST", "1")


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO
