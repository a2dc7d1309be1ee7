"""The Jupyter Book builds offline, and its pages show the heatmap and the attention views.

Every page opens with its title, runs without a script error, and loads the attention views' libraries
(d3, jQuery) once, from the book's own file; the views fit the column. Every chapter's explorers move
without a kernel: moving a control shows another figure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from course_lib.viz.book import SHARED_FILE
from tests.paths import REPO

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


def _pages(built_book):
    return sorted([*built_book.glob("chapters/*.html"), *built_book.glob("labs/release/*/*.html"),
                   built_book / "book" / "intro.html"])


def test_every_page_opens_with_its_title_and_runs_without_errors(built_book, offline_page):
    page = offline_page
    problems = []
    for path in _pages(built_book):
        page.blocked.clear()
        page.errors.clear()
        page.console_errors.clear()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        page.wait_for_timeout(500)
        name = path.relative_to(built_book)
        if page.errors or page.console_errors or page.blocked:
            problems.append(f"{name}: script errors {page.errors}, console errors {page.console_errors}, "
                            f"requests to the internet {page.blocked}")
        if not page.evaluate("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"):
            problems.append(f"{name}: an image did not load")
        first = page.evaluate("""() => {
            const main = document.querySelector('main article, article, main');
            const first = main.querySelector('h1, a[href*="colab.research.google.com"], .cell');
            return first && first.tagName;
        }""")
        if first != "H1" and name.parts[0] != "book":
            problems.append(f"{name}: the first thing on the page is {first}, not the title")
    assert problems == []


def test_attention_views_share_one_copy_of_their_libraries_and_fit_the_column(built_book, offline_page,
                                                                              artifacts_dir):
    shared = built_book / "_static" / SHARED_FILE
    assert shared.is_file() and "d3js.org v5.16.0" in shared.read_text() and "jQuery v3.7.1" in shared.read_text()
    for path in _pages(built_book):
        html = path.read_text(encoding="utf-8")
        assert "d3js.org v5.16.0" not in html and "jQuery v3.7.1" not in html, f"{path.name} inlines the libraries"
        views = html.count('<div id="bertviz-')
        assert html.count(f'src="../_static/{SHARED_FILE}') == (1 if views else 0), path.name
    page = offline_page
    for chapter, views in (("01_attention", 1), ("04_transformer", 2), ("07_pretraining", 1), ("08_transfer_learning", 1)):
        page.errors.clear()
        page.goto((built_book / "chapters" / f"{chapter}.html").as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function(
            f"() => [...document.querySelectorAll('div[id^=\"bertviz-\"]')]"
            f".filter(v => v.querySelectorAll('svg line, svg rect').length > 20).length === {views}",
            timeout=20_000)
        page.wait_for_timeout(300)
        fits = page.evaluate("""() => [...document.querySelectorAll('div[id^="bertviz-"]')].map(view => {
            const box = (view.closest('.cell_output') || view.parentElement).getBoundingClientRect();
            const drawn = [...view.querySelectorAll('svg, svg rect')].map(e => e.getBoundingClientRect())
                .filter(r => r.width > 0);
            const inside = r => r.left >= box.left - 1 && r.right <= box.right + 1;
            const heads = [...view.querySelectorAll('svg text')].filter(t => t.textContent === 'Heads').length;
            const head3 = [...view.querySelectorAll('svg text')].filter(t => t.textContent === '3')
                .map(t => inside(t.getBoundingClientRect()));
            return {view: view.scrollWidth, container: Math.round(box.width), heads, head3,
                    outside: drawn.filter(r => !inside(r)).length};
        })""")
        assert len(fits) == views and page.errors == [], (fits, page.errors)
        for fit in fits:  # the model view is drawn 970 px wide: all of it must fit the column
            assert fit["view"] <= fit["container"] and fit["outside"] == 0, (chapter, fit)
            if fit["heads"]:  # a model view: its head 3 (the last of four, hidden before) is on the page
                assert fit["head3"] and all(fit["head3"]), (chapter, fit)
        page.screenshot(path=str(artifacts_dir / f"book-{chapter}-views.png"), full_page=True)


def test_every_chapters_explorers_move_without_a_kernel(built_book, offline_page, artifacts_dir):
    page = offline_page
    moved = {}
    for path in sorted(built_book.glob("chapters/*.html")):
        page.errors.clear()
        page.console_errors.clear()
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        explorers = page.locator(".course-static-explorer")
        assert explorers.count() >= 1, f"{path.name} has no explorer that works without a kernel"
        explorer = explorers.first
        explorer.scroll_into_view_if_needed()
        image = explorer.locator("img")
        before = image.get_attribute("src")
        control = explorer.locator("[data-control]").first
        kind = control.evaluate("c => c.tagName === 'SELECT' ? 'select' : c.type")
        if kind == "select":
            options = control.locator("option")
            control.select_option(index=(int(control.input_value()) + 1) % options.count())
        elif kind == "checkbox":
            control.click()
        else:  # a range: as a reader would, one stop with the keyboard
            control.focus()
            page.keyboard.press("ArrowLeft" if control.input_value() == control.get_attribute("max") else "ArrowRight")
        after = image.get_attribute("src")
        assert after.startswith("data:image/png;base64,") and after != before, (path.name, kind)
        assert page.errors == [] and page.console_errors == [], (path.name, page.errors, page.console_errors)
        explorer.screenshot(path=str(artifacts_dir / f"book-explorer-{path.stem}.png"))
        moved[path.stem] = explorers.count()
    assert len(moved) == len(list(REPO.glob("chapters/*.ipynb"))), moved  # every chapter has one
