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


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _local_only(route):
    """Let the page load only local files and loopback servers: proves it works offline."""
    url = route.request.url
    if url.startswith(("file:", "data:", "blob:", "about:")) or "://127.0.0.1" in url or "://localhost" in url:
        return route.continue_()
    return route.abort()


@pytest.fixture
def offline_page():
    """A headless Chromium page that cannot reach the internet (skipped without Chromium, except in CI)."""
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} not found: install your distribution's chromium package (./course test does on Debian)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.route("**/*", _local_only)
        page.blocked = []  # URLs the page tried to fetch from the internet
        page.on("requestfailed", lambda request: page.blocked.append(request.url))
        try:
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> pathlib.Path:
    """Screenshots and logs worth keeping after a run (gitignored; CI may upload it)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def available_devices() -> list[str]:
    """The CPU always; CUDA too when present, so the same tests pin the GPU path."""
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
