"""The README's commands: `./course lab` opens JupyterLab on the course (`./course test` is this run)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
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
