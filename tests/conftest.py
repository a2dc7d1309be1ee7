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


# The test files (or round-trip classes) that take longest, longest first. `./course test` hands the two
# workers one file at a time in collection order (`--dist loadscope --no-loadscope-reorder`), so starting
# with these lets both finish together instead of one starting the Binder run when the other is done.
# Durations from a full run with --durations: seconds, not a contract; a stale order is only slower.
HEAVIEST_FIRST = [
    "tests/grader/test_round_trips.py::TestRoundTrip_04_seq2seq",
    "tests/course/test_binder.py",
    "tests/grader/test_round_trips.py::TestRoundTrip_05_decoding",
    "tests/course/test_book.py",
    "tests/grader/test_round_trips.py",
    "tests/grader/test_autograder.py",
    "tests/grader/test_feedback.py",
    "tests/grader/test_cli.py",
    "tests/grader/test_reference_policy.py",
    "tests/grader/test_locks.py",
    "tests/grader/test_sandbox.py",
]


def _weight(item: pytest.Item) -> int:
    return next((rank for rank, prefix in enumerate(HEAVIEST_FIRST) if item.nodeid.startswith(prefix)),
                len(HEAVIEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_weight)  # stable: within a file, and for every other file, the written order


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


CHROMIUM = "/usr/bin/chromium"  # Debian's package; never `playwright install`
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def skip_or_fail(reason: str):
    """Skip on a developer's machine that lacks a tool; in CI a missing tool is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def offline_page():
    """A headless Chromium page that may load only local files and loopback servers.

    ``page.blocked`` lists the URLs it tried to fetch beyond them; ``page.errors`` its script errors;
    ``page.console_errors`` what it logged as errors in the console.
    """
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"{CHROMIUM} not found: install the chromium package (./course test does on Debian as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.blocked, page.errors, page.console_errors = [], [], []

        def local_only(route):
            url = route.request.url
            if url.startswith(("file:", "data:", "blob:", "about:")) or "://127.0.0.1" in url or "://localhost" in url:
                route.continue_()
            else:
                page.blocked.append(url)
                route.abort()

        page.route("**/*", local_only)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
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


class _DisplayHandle:
    """What IPython's ``display(..., display_id=True)`` returns: records the updates an explorer sends."""

    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


@pytest.fixture
def displayed(monkeypatch):
    """Record what an explorer displays, as a notebook front end would receive it: ``(calls, handle)``."""
    import IPython.display

    calls, handle = [], _DisplayHandle()

    def fake_display(obj, display_id=None, **kwargs):
        calls.append((obj, display_id))
        return handle if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    return calls, handle


@pytest.fixture(scope="module")
def bertviz_assets():
    """The attention views' JavaScript from the cache, fetched with npm if it is not there yet."""
    import shutil

    from course_lib.viz.bertviz_offline import fetch_assets, find_assets

    found = find_assets()
    if found is None:
        if shutil.which("npm") is None:
            skip_or_fail("npm is not installed and the attention views' JavaScript is not cached")
        try:
            found = fetch_assets(quiet=True)
        except RuntimeError as error:
            skip_or_fail(f"could not fetch the JavaScript from npm: {error}")
    return found

