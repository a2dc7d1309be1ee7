"""course_lib.distributed.launch: backend and device choice, torchrun's environment, spawn, failing ranks.

The nccl/CUDA path is checked for its choices only (CUDA faked): no GPU ran it here. The process tests
start real gloo groups: spawn from this process, torchrun as a subprocess; a rank that raises must end the
job within 30 s with an error naming that rank and its exception.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from course_lib.distributed import launch, workers
from course_lib.distributed.launch import (
    RankFailedError, default_backend, is_rank_zero, on_rank_zero, setup_process_group, spawn,
)
from tests.paths import REPO

FAILURE_BOUND_S = 30.0  # from the rank's exception to the job's end (start-up, slow on a busy machine, apart)


def _seconds_since_the_failure(message: str) -> float:
    raised_at = float(re.search(r"deliberate failure on rank \d+ at t=([0-9.]+)", message).group(1))
    return time.time() - raised_at


@pytest.fixture
def no_torchrun_environment(monkeypatch):
    for name in launch.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_backend_is_gloo_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_backend() == "gloo"
    assert launch._device_for("gloo", 3) == torch.device("cpu")


def test_backend_is_nccl_with_cuda_and_each_local_rank_gets_its_gpu(fake_gpus):
    assert default_backend() == "nccl"
    assert launch._device_for("nccl", 0) == torch.device("cuda", 0)
    assert launch._device_for("nccl", 1) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="LOCAL_RANK 2 but only 2 GPU"):
        launch._device_for("nccl", 2)


def test_nccl_without_cuda_and_unknown_backends_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="nccl' needs CUDA"):
        launch._device_for("nccl", 0)
    with pytest.raises(ValueError, match="unknown backend 'mpi'"):
        launch._device_for("mpi", 0)


def test_a_plain_process_is_rank_zero_of_one_without_a_group(no_torchrun_environment):
    assert setup_process_group("gloo") == (0, 1, torch.device("cpu"))
    assert not dist.is_initialized()
    assert is_rank_zero()
    assert on_rank_zero(lambda x: x + 1)(1) == 2
    launch.teardown()  # nothing to leave: must not raise


def test_an_incomplete_torchrun_environment_names_what_is_missing(no_torchrun_environment, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        setup_process_group("gloo")


def test_spawn_refuses_bad_input():
    with pytest.raises(ValueError, match="nprocs must be a positive int"):
        spawn(workers.rank_probe, 0)

    def defined_in_a_notebook():
        pass

    defined_in_a_notebook.__module__ = "__main__"
    with pytest.raises(ValueError, match="cannot import: put it in a module"):
        spawn(defined_in_a_notebook, 2)


def test_spawn_gives_each_process_its_rank_and_returns_the_results_by_rank():
    # Forked, for speed (the children inherit this process's imports); the failure test below uses the
    # default start method, "spawn", which notebooks need.
    results = spawn(workers.rank_probe, 2, timeout=120, start_method="fork")
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 and r["device"] == "cpu" and r["rank_sum"] == 1.0 for r in results)
    assert [r["is_rank_zero"] for r in results] == [True, False]
    assert [r["written"] for r in results] == ["written by rank 0", None]  # on_rank_zero: rank 0 only


@pytest.mark.slow
def test_spawn_a_failing_rank_ends_the_job_with_its_rank_and_exception():
    with pytest.raises(RankFailedError, match="rank 1 of 2 raised") as failure:
        spawn(workers.fail_on_rank, 2, 1, timeout=120)  # rank 0 waits in a barrier rank 1 never reaches
    assert _seconds_since_the_failure(str(failure.value)) < FAILURE_BOUND_S
    assert failure.value.rank == 1
    assert "RuntimeError: deliberate failure on rank 1" in str(failure.value)


def test_spawn_names_the_rank_that_failed_first_not_a_peer_that_failed_after_it(tmp_path):
    # A rank waiting on a dead peer fails too, a moment later; whichever exit the parent sees first, the
    # error must name the root cause.
    for index, (when, what) in enumerate([(2.0, "peer closed the connection"), (1.0, "the real error")]):
        (tmp_path / f"rank{index}.error.json").write_text(json.dumps({"time": when, "traceback": what}))
    rank, trace = launch._first_failure(str(tmp_path), 3, reported=0, default="?")
    assert rank == 1 and trace.startswith("the real error") and "then rank(s) 0 failed too" in trace
    assert launch._first_failure(str(tmp_path / "none"), 2, reported=0, default="?") == (0, "?")


def test_spawn_past_its_timeout_kills_every_rank():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="still running after 1 s; all killed"):
        spawn(time.sleep, 2, 600, timeout=1)
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_torchrun_a_failing_rank_ends_the_job_with_its_rank_and_exception():
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "-m", "course_lib.distributed.workers", "fail", "--rank", "1"]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert finished.returncode != 0
    elapsed = _seconds_since_the_failure(finished.stderr)
    assert elapsed < FAILURE_BOUND_S, f"the job ended {elapsed:.0f} s after the failure"
    summary = finished.stderr.split("Root Cause", 1)[-1]  # torchrun's summary: the first rank that failed
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", summary), finished.stderr[-3000:]
    assert "deliberate failure on rank 1" in summary, finished.stderr[-3000:]
