"""The Jupyter Book builds offline, and its pages show the heatmap and the attention view."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_book(repo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jupyter_book = os.path.join(os.path.dirname(sys.executable), "jupyter-book")
    env = {**os.environ, "COURSE_FAST": "1"}
    start = time.perf_counter()
    result = subprocess.run(
        [jupyter_book, "build", str(repo_root), "--config", "book/_config.yml", "--toc", "book/_toc.yml",
         "--path-output", str(out)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900,
    )
    seconds = time.perf_counter() - start
    print(f"book built in {seconds:.0f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = out / "_build" / "html"
    assert (html / "index.html").exists()
    return html


def test_book_has_the_chapter_and_the_student_lab(built_book):
    chapter = (built_book / "chapters" / "01_attention.html").read_text()
    lab = (built_book / "labs" / "release" / "01_attention" / "attention.html").read_text()
    assert "colab.research.google.com/github/" in chapter and "colab.research.google.com/github/" in lab
    assert "BEGIN SOLUTION" not in lab and "### BEGIN HIDDEN TESTS" not in lab
    assert "NotImplementedError" in lab  # students get stubs, not answers


def test_chapter_page_shows_heatmap_and_attention_view_offline(built_book, offline_page, artifacts_dir):
    page = offline_page
    page.goto((built_book / "chapters" / "01_attention.html").as_uri())
    page.wait_for_load_state("load")
    heatmaps = page.locator(".tag_heatmap img")
    assert heatmaps.count() >= 1, "no cell tagged 'heatmap' with an image output"
    assert heatmaps.first.evaluate("img => img.complete && img.naturalWidth > 100")
    view = page.locator(".tag_attention-view")
    view.first.scroll_into_view_if_needed()
    # bertviz draws one line per (query, key) pair into its SVG once its scripts have loaded
    page.wait_for_function(
        "() => [...document.querySelectorAll('.tag_attention-view svg')]"
        ".some(svg => svg.querySelectorAll('line, path, rect').length > 20)",
        timeout=20_000,
    )
    view.first.screenshot(path=str(artifacts_dir / "book-attention-view.png"))
    page.screenshot(path=str(artifacts_dir / "book-chapter-01.png"), full_page=False)
    remote_scripts = [u for u in page.blocked if u.endswith(".js")]
    assert not remote_scripts, f"the page tried to load scripts from the internet: {remote_scripts}"
