"""The attention views draw with every outside request blocked, and fall back visibly when they cannot.

The browser tests use Debian's chromium through playwright (never ``playwright install``). Without
chromium or npm they skip, except under ``CI``, where a missing tool is a failure.
"""
from __future__ import annotations

import pathlib
import re
import shutil

import pytest

from course_lib.models.reverser import attention_maps, load_reverser
from course_lib.viz import bertviz_offline
from course_lib.viz.bertviz_offline import ASSETS, fetch_assets, find_assets, head_view, make_offline, model_view
from tests.conftest import skip_or_fail

ARTIFACTS = pathlib.Path(__file__).resolve().parents[2] / "test-artifacts"




@pytest.fixture(scope="module")
def reverser_attention():
    model, _ = load_reverser()
    return attention_maps(model, "reverse2024")  # (tokens, attentions)


def script_sources(html: str) -> list[str]:
    return re.findall(r"<script[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", html, flags=re.IGNORECASE)


def test_offline_head_view_has_no_remote_scripts(bertviz_assets, reverser_attention):
    tokens, attentions = reverser_attention
    html = head_view(attentions, tokens, layer=1).data
    assert script_sources(html) == []
    assert "cdnjs" not in html and "require.config" not in html
    assert html.count("</script>") == 1  # one inline script (library code has its own "<script" strings)
    assert "d3js.org v5.16.0" in html and "jQuery v3.7.1" in html  # the libraries are inlined
    assert '"layer": 1' in html  # keyword arguments reach bertviz


def test_offline_model_view_has_no_remote_scripts(bertviz_assets, reverser_attention):
    tokens, attentions = reverser_attention
    html = model_view(attentions, tokens).data
    assert script_sources(html) == [] and "cdnjs" not in html


def test_without_the_files_the_view_falls_back_to_the_cdn_visibly(tmp_path, monkeypatch, reverser_attention):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    tokens, attentions = reverser_attention
    with pytest.warns(UserWarning, match="needs internet"):
        html = head_view(attentions, tokens, fetch=False).data
    assert "stays blank without internet" in html
    assert any("cdnjs" in src for src in script_sources(html))


def test_a_tampered_cache_file_is_not_used(bertviz_assets, tmp_path):
    for path in bertviz_assets.values():
        shutil.copy(path, tmp_path / path.name)
    assert find_assets(tmp_path) is not None
    d3 = tmp_path / ASSETS["d3"].filename
    d3.write_bytes(d3.read_bytes() + b"\nalert('hi');")
    assert find_assets(tmp_path) is None


def test_fetch_rejects_a_tarball_that_does_not_match_its_pin(tmp_path, monkeypatch):
    if shutil.which("npm") is None:
        skip_or_fail("npm is not installed")
    wrong = bertviz_offline.Asset("jquery", "3.7.1", "package/dist/jquery.min.js", "sha512-AAAA", "0" * 64)
    monkeypatch.setattr(bertviz_offline, "ASSETS", {"jquery": wrong})
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        fetch_assets(tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_make_offline_refuses_html_it_does_not_recognise():
    with pytest.raises(ValueError, match="layout"):
        make_offline("<div>not bertviz</div>", {"d3": "", "jquery": ""})


def test_inline_script_cannot_be_closed_early():
    escaped = bertviz_offline._escape_for_script('var s = "</script><!--";')
    assert "</script" not in escaped.lower() and "<!--" not in escaped


# --- in a real browser, offline ------------------------------------------------------------------

def open_html(page, html: str, path: pathlib.Path) -> None:
    page.blocked.clear()
    page.errors.clear()
    path.write_text(f"<!doctype html><html><body>{html}</body></html>", encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_timeout(300)


def drawn_lines(page) -> int:
    return page.locator("svg line").count()


def test_views_draw_offline_in_chromium(bertviz_assets, offline_page, reverser_attention, tmp_path):
    tokens, attentions = reverser_attention
    ARTIFACTS.mkdir(exist_ok=True)
    for name, html in (("head_view", head_view(attentions, tokens, layer=1).data),  # layer 1: the mirror
                       ("model_view", model_view(attentions, tokens).data)):
        open_html(offline_page, html, tmp_path / f"{name}.html")
        offline_page.screenshot(path=str(ARTIFACTS / f"bertviz_{name}_offline.png"), full_page=True)
        assert offline_page.errors == [], offline_page.errors
        assert offline_page.blocked == [], f"{name} tried to reach {offline_page.blocked}"
        assert drawn_lines(offline_page) > 0, f"{name} drew no attention lines"


def test_cdn_fallback_is_blank_offline(offline_page, reverser_attention, tmp_path, monkeypatch):
    """The control: bertviz's own HTML draws nothing here, so the test above can tell."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    tokens, attentions = reverser_attention
    with pytest.warns(UserWarning):
        html = head_view(attentions, tokens, fetch=False).data
    open_html(offline_page, html, tmp_path / "cdn.html")
    assert offline_page.blocked, "the CDN version should have tried to reach the internet"
    assert drawn_lines(offline_page) == 0


def test_view_draws_when_its_output_is_attached_after_the_script_runs(bertviz_assets, offline_page, reverser_attention,
                                                                     tmp_path):
    """JupyterLab runs an output's scripts possibly before the output joins the page."""
    tokens, attentions = reverser_attention
    open_html(offline_page, "", tmp_path / "empty.html")
    offline_page.evaluate(
        """html => {
            const host = document.createElement('div');
            host.innerHTML = html;  // scripts do not run from innerHTML...
            for (const old of host.querySelectorAll('script')) {
                const script = document.createElement('script');
                script.textContent = old.textContent;
                old.remove();
                document.body.appendChild(script);  // ...so run them now, while host is detached
            }
            setTimeout(() => document.body.appendChild(host), 150);
        }""",
        head_view(attentions, tokens).data,
    )
    assert drawn_lines(offline_page) == 0  # nothing to draw into yet
    offline_page.wait_for_timeout(600)
    assert offline_page.errors == [], offline_page.errors
    assert drawn_lines(offline_page) > 0
