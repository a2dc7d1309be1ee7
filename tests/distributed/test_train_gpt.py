"""scripts/train_gpt.py on one process and under torchrun / accelerate launch (course_lib.distributed.trainer).

Pinned: each rank's windows are its slice of the one-process draw of the global batch (world 1: the draw the
script made before it was distributed); the schedule's fixed points; resuming: a run of 2N steps and N steps +
resume + N steps end with bitwise-equal weights and optimizer state, in one process and in two (torchrun, gloo),
and a tampered data position or swapped per-rank RNG states break it (the check can fail); rank 0 alone prints, logs and writes; the
record states the world size and global batch; `accelerate launch` runs the same script. The runs use the "tiny"
model on the corpus's first 20,000 characters, a 300-token vocabulary and a few steps.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from course_lib.distributed.launch import spawn
from course_lib.distributed.trainer import TrainSettings, cosine_learning_rate, rank_windows, train
from course_lib.distributed.training_state import load_state, save_state
from course_lib.models.gpt import GPT, GPTConfig
from tests.paths import REPO

TINY = ["--model", "tiny", "--vocab-size", "300", "--corpus-chars", "20000", "--batch-size", "2",
        "--sample-tokens", "0", "--eval-every", "1e9"]
STEPS, HALF = 6, 3


def tiny(tmp_path, **changes) -> TrainSettings:
    settings = dict(model="tiny", vocab_size=300, corpus_chars=20_000, batch_size=2, sample_tokens=0,
                    eval_every=1e9, steps=STEPS, out_dir=tmp_path, dry_run=True)
    return TrainSettings(**{**settings, **changes})


def assert_states_equal(first, second):
    """Bitwise-equal weights and optimizer state (moments and step counts) of two saved training states."""
    a, b = (torch.load(path, weights_only=True) for path in (first, second))
    assert a["progress"]["step"] == b["progress"]["step"] == STEPS
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), f"{name} differs by {(tensor - b['model'][name]).abs().max()}"
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), f"optimizer state {index}.{key} differs"
    assert torch.equal(a["data_generator"], b["data_generator"])


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()  # train() sets 1 thread per process; give pytest's process its own back
    yield
    torch.set_num_threads(threads)


def test_each_rank_takes_its_slice_of_the_one_process_draw():
    ids, context, batch = torch.arange(1000), 16, 3
    whole = rank_windows(ids, 2 * batch, context, torch.Generator().manual_seed(5))  # one process, global batch
    slices = [rank_windows(ids, batch, context, torch.Generator().manual_seed(5), rank, 2) for rank in (0, 1)]
    assert torch.equal(torch.cat([inputs for inputs, _ in slices]), whole[0])
    assert torch.equal(torch.cat([targets for _, targets in slices]), whole[1])
    assert not torch.equal(slices[0][0], slices[1][0])  # the ranks train on different windows
    # World size 1 draws what the script drew before it was distributed: randint, then windows of context + 1.
    starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=torch.Generator().manual_seed(5))
    inputs, targets = rank_windows(ids, batch, context, torch.Generator().manual_seed(5))
    assert torch.equal(inputs, torch.stack([ids[s:s + context] for s in starts.tolist()]))
    assert torch.equal(targets, inputs + 1)  # ids are consecutive integers: the targets are the next tokens
    with pytest.raises(ValueError, match="too few"):
        rank_windows(ids[:10], batch, context, torch.Generator())


def test_schedule_warms_up_then_falls_to_a_tenth():
    assert cosine_learning_rate(0.0, 1.0) == 0.0
    assert cosine_learning_rate(0.015, 1.0) == pytest.approx(0.5)
    assert cosine_learning_rate(0.03, 1.0) == pytest.approx(1.0)
    assert cosine_learning_rate(0.515, 1.0) == pytest.approx(0.55)  # half-way through the cosine
    assert cosine_learning_rate(1.0, 1.0) == pytest.approx(0.1) == cosine_learning_rate(2.0, 1.0)


def test_resume_in_one_process_equals_an_uninterrupted_run(tmp_path, one_thread):
    train(tiny(tmp_path, state=tmp_path / "whole.pt"))
    train(tiny(tmp_path, stop_after=HALF, state=tmp_path / "half.pt"))
    train(tiny(tmp_path, resume=tmp_path / "half.pt", state=tmp_path / "resumed.pt"))
    assert torch.load(tmp_path / "half.pt", weights_only=True)["progress"]["step"] == HALF
    assert_states_equal(tmp_path / "whole.pt", tmp_path / "resumed.pt")

    # The check can fail: a resume that lost the data position (another generator state) ends elsewhere.
    state = torch.load(tmp_path / "half.pt", weights_only=True)
    state["data_generator"] = torch.Generator().manual_seed(99).get_state()
    torch.save(state, tmp_path / "tampered.pt")
    train(tiny(tmp_path, resume=tmp_path / "tampered.pt", state=tmp_path / "lost.pt"))
    with pytest.raises(AssertionError):
        assert_states_equal(tmp_path / "whole.pt", tmp_path / "lost.pt")

    with pytest.raises(ValueError, match="other settings.*'lr'"):
        train(tiny(tmp_path, resume=tmp_path / "half.pt", lr=1e-3))


def test_periodic_states_resume_as_an_uninterrupted_run(tmp_path, one_thread, monkeypatch):
    # --state-every 2 over 6 steps writes the state at steps 2 and 4 and (the end) 6; a run that died after
    # step 4 resumes from the file as it was then and ends where the uninterrupted run ends, bit for bit.
    from course_lib.distributed import trainer as trainer_module
    written = []

    def save_and_keep_a_copy(path, *args, **kwargs):
        save_state(path, *args, **kwargs)
        step = torch.load(path, weights_only=True)["progress"]["step"]
        written.append(step)
        shutil.copy(path, tmp_path / f"at{step}.pt")

    monkeypatch.setattr(trainer_module, "save_state", save_and_keep_a_copy)
    train(tiny(tmp_path, state=tmp_path / "periodic.pt", state_every=2))
    assert written == [2, 4, STEPS]
    train(tiny(tmp_path, resume=tmp_path / "at4.pt", state=tmp_path / "resumed.pt"))
    assert_states_equal(tmp_path / "periodic.pt", tmp_path / "resumed.pt")
    with pytest.raises(ValueError, match="needs a state file"):
        tiny(tmp_path, state_every=2)
    with pytest.raises(ValueError, match="state_every must be at least 1"):
        tiny(tmp_path, state=tmp_path / "s.pt", state_every=0)


def test_a_save_that_dies_midway_leaves_the_previous_state_whole(tmp_path, monkeypatch):
    from course_lib.distributed import training_state
    model = GPT(GPTConfig(vocab_size=50, context_length=8, dim=8, num_layers=1, num_heads=2))
    optimizer, generator = torch.optim.AdamW(model.parameters()), torch.Generator()
    path, cpu = tmp_path / "state.pt", torch.device("cpu")
    save_state(path, model, optimizer, generator, {"step": 1}, 0, 1, cpu)
    real_save = torch.save

    def killed_while_writing(obj, target):
        real_save({"half": "written"}, target)
        raise KeyboardInterrupt

    monkeypatch.setattr(training_state.torch, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, model, optimizer, generator, {"step": 2}, 0, 1, cpu)
    assert load_state(path, model, optimizer, generator, 0, 1, cpu)["step"] == 1


def test_a_state_resumes_only_with_the_same_number_of_processes(tmp_path):
    model = GPT(GPTConfig(vocab_size=50, context_length=8, dim=8, num_layers=1, num_heads=2))
    optimizer, generator = torch.optim.AdamW(model.parameters()), torch.Generator()
    save_state(tmp_path / "state.pt", model, optimizer, generator, {"step": 0}, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="saved by 1 processes and this run has 2"):
        load_state(tmp_path / "state.pt", model, optimizer, generator, 0, 2, torch.device("cpu"))
    model.save(tmp_path / "checkpoint.pt")  # the float16 checkpoint --out holds
    with pytest.raises(ValueError, match="not a training state written by --state"):
        load_state(tmp_path / "checkpoint.pt", model, optimizer, generator, 0, 1, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        TrainSettings(model="huge")


def test_no_option_of_the_script_is_taken_by_torchrun_or_accelerate():
    from accelerate.commands.launch import launch_command_parser
    from torch.distributed.run import get_args_parser

    spec = importlib.util.spec_from_file_location("train_gpt", REPO / "scripts" / "train_gpt.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ours = {o for action in script.build_parser()._actions for o in action.option_strings if o.startswith("--")}
    ours.discard("--help")  # shared, and harmless: each launcher answers its own before the script starts
    assert {"--steps", "--resume", "--state", "--log-file", "--record"} <= ours
    for parser in (get_args_parser(), launch_command_parser()):
        theirs = {o for action in parser._actions for o in action.option_strings}
        # argparse reads abbreviations: an option of ours that starts one of theirs would be taken (or refused)
        assert not {(o, t) for o in ours for t in theirs if t.startswith(o)}, parser.prog


def _launch(launcher: list[str], args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(REPO / "scripts" / "train_gpt.py"), *TINY, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _stop_then_resume(directory) -> dict:
    """One rank of a 2-process job: HALF steps and a state, then a resumed run to STEPS, then one resumed with the
    ranks' RNG states swapped, and a short run on a wall-clock budget, in one process group; then (sharing the
    start-up) test_benchmark's live all-reduce timing of 1 KiB and 64 KiB."""
    from course_lib.distributed.benchmark import all_reduce_rows
    from course_lib.distributed.launch import setup_process_group

    rank, _, _ = setup_process_group()  # open for every run: train() joins it and leaves it open
    train(tiny(directory, stop_after=HALF, state=directory / "half.pt"))
    train(tiny(directory, resume=directory / "half.pt", state=directory / "resumed.pt"))
    if rank == 0:  # the check can fail: with each rank given the other's RNG state, dropout differs
        state = torch.load(directory / "half.pt", weights_only=True)
        state["rng_states"] = state["rng_states"][::-1]
        torch.save(state, directory / "swapped.pt")
    torch.distributed.barrier()
    train(tiny(directory, resume=directory / "swapped.pt", state=directory / "swapped_end.pt"))
    # A wall-clock budget (the default): the ranks must agree on each step's learning rate and on when to stop,
    # or one would wait for the other forever (spawn's timeout would end the job).
    timed = train(tiny(directory, steps=None, minutes=0.02, state=directory / "timed.pt"))
    return dict(timed=timed, timings=all_reduce_rows([1024, 65536], repeats=3, warmup=1))


@pytest.mark.slow
def test_torchrun_two_processes_rank_zero_writes_and_resume_is_exact(tmp_path):
    out = tmp_path / "out"
    whole = _launch(TORCHRUN, ["--steps", str(STEPS), "--out", str(out), "--log-file", str(tmp_path / "run.log"),
                               "--record", str(tmp_path / "record.json"), "--state", str(tmp_path / "whole.pt"),
                               "--state-every", "2"],  # periodic saves on 2 ranks must not change the run
                    tmp_path)
    record = json.loads((tmp_path / "record.json").read_text())
    assert (record["world_size"], record["global_batch_size"], record["backend"]) == (2, 4, "gloo")
    assert record["steps"] == STEPS and record["tokens"] == STEPS * 4 * 32  # every rank's tokens
    assert sorted(p.name for p in out.iterdir()) == ["gpt_shakespeare-merges.txt", "gpt_shakespeare-vocab.json",
                                                     "gpt_shakespeare.pt"]
    assert GPT.load(out / "gpt_shakespeare.pt")[1]["training"]["world_size"] == 2
    log = (tmp_path / "run.log").read_text()
    for text in (whole.stdout, log):  # one rank printed and logged: each line once, not once per rank
        assert text.count("model: ") == 1 and text.count(f"trained {STEPS} steps") == 1, text
    assert "2 process(es) on cpu; 2 windows per process, global batch 4" in log
    assert [log.count(f"wrote the resumable state at step {k} ") for k in (2, 4, STEPS)] == [1, 1, 1]

    # Stopped at HALF and resumed, on 2 processes started by spawn (one start-up for both runs): the same end,
    # bit for bit, as torchrun's uninterrupted run.
    results = spawn(_stop_then_resume, 2, tmp_path, timeout=150)
    assert results[1]["timed"] is None and results[0]["timed"]["world_size"] == 2  # rank 0 alone returns the record
    timed = torch.load(tmp_path / "timed.pt", weights_only=True)["progress"]
    assert timed["step"] >= 1 and timed["elapsed"] >= 0.02 * 60  # ran until the budget, both ranks together
    timings = results[0]["timings"]
    assert len(torch.load(tmp_path / "half.pt", weights_only=True)["rng_states"]) == 2  # every rank's dropout RNG
    assert_states_equal(tmp_path / "whole.pt", tmp_path / "resumed.pt")
    with pytest.raises(AssertionError):
        assert_states_equal(tmp_path / "whole.pt", tmp_path / "swapped_end.pt")

    # course_lib.distributed.benchmark's live timing (the worker checked that the all-reduce summed first).
    assert [row["bytes"] for row in timings] == [1024, 65536]
    for row in timings:
        assert row["repeats"] == 3 and 0 < row["median_seconds"] < 10
        assert row["busbw_GBps"] == pytest.approx(row["bytes"] / row["median_seconds"] / 1e9)  # 2 processes: = algbw


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None,
                    reason="accelerate is not installed (./course setup installs it)")
def test_accelerate_launch_runs_the_same_script_on_two_processes(tmp_path):
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    # --multi_gpu is accelerate's "N processes through torchrun" (gloo here, no GPU); --cpu would start one process.
    _launch([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
             "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"],  # port 0: a free one
            ["--steps", "2", "--dry-run", "--record", str(tmp_path / "record.json")], tmp_path)
    record = json.loads((tmp_path / "record.json").read_text())
    assert (record["world_size"], record["global_batch_size"], record["steps"]) == (2, 4, 2)
