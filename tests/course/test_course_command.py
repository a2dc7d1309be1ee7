"""The README's commands: `./course lab` opens JupyterLab on the course (`./course test` is this run);
`./course start-lab NAME` opens a copy of a lab in work/; `./course book` builds in fast mode unless --full.

The last two run on a copy of the script in a scratch checkout, with a virtual environment whose
``python`` is the course's and whose ``jupyter`` and ``jupyter-book`` only record how they were called.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_starts_with_the_two_commands(repo_root):
    head = (repo_root / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("./course lab") for line in head)
    assert any(line.startswith("./course test") for line in head)
    ci = (repo_root / ".ci" / "run").read_text()
    assert "./course test" in ci


@pytest.mark.slow
def test_course_lab_serves_the_course(repo_root):
    port = _free_port()
    process = subprocess.Popen(
        [str(repo_root / "course"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password="],
        cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/chapters", timeout=5) as response:
                    listing = json.load(response)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n" + (process.stdout.read() if process.poll() is not None else ""))
                time.sleep(1)
        names = {item["name"] for item in listing["content"]}
        assert "01_attention.ipynb" in names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=10) as response:
            assert response.status == 200 and b"JupyterLab" in response.read()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def scratch_checkout(repo_root, tmp_path):
    """``(checkout, run)``: the course script and its labs in a scratch folder; ``run(*args)`` runs the script
    there and returns ``(result, record)``, ``record`` the lines the fake jupyter command wrote (or None)."""
    root = tmp_path / "course"
    (root / "grader").mkdir(parents=True)
    for name in ("course", "pyproject.toml", "constraints.txt", "grader/pyproject.toml"):
        shutil.copy2(repo_root / name, root / name)
    shutil.copytree(repo_root / "labs" / "release", root / "labs" / "release")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "record.txt"
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for fake in ("jupyter", "jupyter-book"):
        (venv / "bin" / fake).write_text(f'#!/bin/sh\nprintf "%s\\n" "COURSE_FAST=$COURSE_FAST" "$@" > "{record}"\n')
    for path in (venv / "bin").iterdir():
        path.chmod(0o755)
    pins = b"".join((root / name).read_bytes() for name in ("pyproject.toml", "grader/pyproject.toml", "constraints.txt"))
    (venv / ".course-setup").write_text(hashlib.sha256(pins).hexdigest())  # set up already: no pip install

    def run(*args):
        record.unlink(missing_ok=True)
        env = {**os.environ, "COURSE_VENV": str(venv)}
        env.pop("COURSE_FAST", None)
        result = subprocess.run([str(root / "course"), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=300)
        return result, (record.read_text().splitlines() if record.exists() else None)

    return root, run


def test_setup_says_what_it_fetches(scratch_checkout):
    _, run = scratch_checkout
    result, _ = run("setup")
    assert result.returncode == 0, result.stderr
    assert "(d3 and jQuery, from npm)" in result.stderr and "require.js" not in result.stderr


def test_book_builds_in_fast_mode_unless_asked_for_the_full_one(scratch_checkout):
    root, run = scratch_checkout
    result, record = run("book")
    assert result.returncode == 0, result.stderr
    assert record[0] == "COURSE_FAST=1" and "fast mode" in result.stderr
    assert record[1:] == ["build", str(root), "--config", "book/_config.yml", "--toc", "book/_toc.yml",
                          "--path-output", str(root / "book")]
    result, record = run("book", "--full", "--keep-going")
    assert result.returncode == 0, result.stderr
    assert record[0] == "COURSE_FAST=0" and "full mode" in result.stderr
    assert "--full" not in record and record[-1] == "--keep-going"  # other arguments go to jupyter-book


def test_start_lab_opens_jupyterlab_on_a_copy_that_is_never_overwritten(scratch_checkout):
    root, run = scratch_checkout
    mine = root / "work" / "01_attention" / "attention.ipynb"
    result, record = run("start-lab", "attention", "--no-browser")
    assert result.returncode == 0, result.stderr
    assert mine.read_bytes() == (root / "labs" / "release" / "01_attention" / "attention.ipynb").read_bytes()
    assert record[1:3] == ["lab", f"--notebook-dir={root / 'work'}"]
    assert "--no-browser" in record and record[-1] == str(mine)

    mine.write_text("my work")
    result, record = run("start-lab", "01_attention")
    assert result.returncode == 0 and mine.read_text() == "my work"
    assert "is kept as it is" in result.stderr and record[-1] == str(mine)


def test_start_lab_without_a_known_lab_says_which_labs_there_are(scratch_checkout):
    _, run = scratch_checkout
    result, record = run("start-lab")
    assert result.returncode == 2 and record is None
    assert "usage: ./course start-lab NAME" in result.stderr and "01_attention" in result.stderr
    result, record = run("start-lab", "attenion")
    assert result.returncode == 2 and record is None
    assert "there is no lab 'attenion'; the labs are: 01_attention (attention)" in result.stderr
