"""The book's extension (:mod:`course_lib.viz.book`): views share one copy of their libraries; scripts are not repeated.

The browser tests use Debian's chromium through playwright, as tests/viz/test_bertviz_offline.py does.
"""
from __future__ import annotations

import pytest

from course_lib.models.reverser import attention_maps, load_reverser
from course_lib.viz import book
from course_lib.viz.bertviz_offline import head_view, model_view


@pytest.fixture(scope="module")
def reverser_attention():
    model, _ = load_reverser()
    return attention_maps(model, "reverse2024")  # (tokens, attentions)


def test_each_views_libraries_are_replaced_by_the_pages_copy(bertviz_assets, reverser_attention):
    tokens, attentions = reverser_attention
    body = head_view(attentions, tokens).data + model_view(attentions, tokens).data
    assert body.count("d3js.org v5.16.0") == 2
    shared, replaced = book.share_libraries(body)
    assert replaced == 2 and "d3js.org v5.16.0" not in shared and "jQuery v3.7.1" not in shared
    assert shared.count("libs = window.courseViewLibraries;") == 2
    assert len(shared) < len(body) - 2 * 300_000
    assert book.share_libraries("<p>no view here</p>") == ("<p>no view here</p>", 0)


def test_repeated_inline_scripts_are_dropped_and_order_is_kept():
    from sphinx.builders.html._assets import _JavaScript

    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("_static/b.js", priority=800),
               _JavaScript("", body=thebe), _JavaScript("_static/a.js"), _JavaScript("", body="var other = 1")]
    book.unique_scripts(scripts)
    assert [(s.filename, s.attributes.get("body")) for s in scripts] == [
        ("_static/a.js", None), (None, thebe), ("_static/b.js", None), ("", "var other = 1")]


@pytest.mark.slow  # starts chromium: a few seconds
def test_views_draw_from_the_pages_shared_libraries(bertviz_assets, offline_page, reverser_attention, tmp_path):
    tokens, attentions = reverser_attention
    sources = {name: path.read_text(encoding="utf-8") for name, path in bertviz_assets.items()}
    (tmp_path / book.SHARED_FILE).write_text(book.shared_script(sources), encoding="utf-8")
    body, replaced = book.share_libraries(head_view(attentions, tokens, layer=1).data
                                          + model_view(attentions, tokens).data)
    assert replaced == 2
    page = tmp_path / "page.html"
    page.write_text(f'<!doctype html><html><head><script src="{book.SHARED_FILE}"></script></head>'
                    f'<body style="width: 600px">{body}</body></html>', encoding="utf-8")
    offline_page.errors.clear()
    offline_page.blocked.clear()
    offline_page.goto(page.as_uri())
    offline_page.wait_for_timeout(500)
    assert offline_page.errors == [] and offline_page.blocked == []
    drawn = offline_page.evaluate("""() => [...document.querySelectorAll('div[id^="bertviz-"]')]
        .map(view => view.querySelectorAll('svg line').length)""")
    assert len(drawn) == 2 and all(lines > 0 for lines in drawn), drawn
    # the model view (drawn 970 px wide) is scaled into the 600 px body, every thumbnail with it
    widths = offline_page.evaluate("""() => [...document.querySelectorAll('svg, svg rect')]
        .map(e => e.getBoundingClientRect()).filter(r => r.width > 0).map(r => r.right)""")
    assert max(widths) <= 600 + 8 + 1  # the body's 8 px margin


def test_pages_show_the_books_own_colab_badge_and_have_a_colour_mode():
    import xml.etree.ElementTree as ElementTree

    class App:
        course_view_libraries = False

    context = {"body": f'<a href="x"><img alt="Open In Colab" src="{book.REMOTE_BADGE}" /></a>',
               "pathto": lambda target, resource: "../" + target}
    book._page(App(), "chapters/01_attention", "page.html", context, None)
    assert context["body"] == f'<a href="x"><img alt="Open In Colab" src="../_static/{book.BADGE_FILE}" /></a>'
    assert context["default_mode"] == "auto"
    assert ElementTree.fromstring(book.BADGE).get("aria-label") == "Open in Colab"
