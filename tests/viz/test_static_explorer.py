"""Explorers in the static book (:mod:`course_lib.viz.static_explorer`): each setting shows the figure drawn for it.

The reference is the explorer's own ``draw`` called directly with a setting's values, and the state
numbering is recomputed here (row-major over the moving controls, as the page's script reads it).
"""
from __future__ import annotations

import base64
import io
import itertools
import json
import math
import re

import ipywidgets as widgets
import pytest
from matplotlib.figure import Figure
from PIL import Image

from course_lib.viz import Explorer, book, static_explorer
from course_lib.viz.static_explorer import ENVIRONMENT_FLAG, all_stops, choose_stops, render_static


def draw_values(**values) -> Figure:
    """A small figure that shows its values, so that different values give different pictures."""
    figure = Figure(figsize=(2.5, 0.6))
    figure.text(0.02, 0.3, " ".join(f"{k}={v}" for k, v in sorted(values.items())), fontsize=7)
    return figure


def page_data(page_html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json">(.*?)</script>', page_html, re.DOTALL).group(1))


def pixels(png_base64: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(png_base64))).convert("RGB").tobytes()


def test_the_stops_of_each_kind_of_control():
    assert all_stops(widgets.Checkbox(value=True)) == [(False, "off"), (True, "on")]
    assert all_stops(widgets.Dropdown(options=[("mean", "mean"), ("head 0", 0)])) == [("mean", "mean"), (0, "head 0")]
    assert [v for v, _ in all_stops(widgets.SelectionSlider(options=[2, 4, 8], value=4))] == [2, 4, 8]
    assert [v for v, _ in all_stops(widgets.IntSlider(5, min=0, max=10, step=5))] == [0, 5, 10]
    assert [v for v, _ in all_stops(widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.25))] == [0, 0.25, 0.5, 0.75, 1]
    log = [v for v, _ in all_stops(widgets.FloatLogSlider(1.0, base=10, min=-1, max=1, step=1))]
    assert log == pytest.approx([0.1, 1.0, 10.0])
    assert all_stops(widgets.Text("Hallo")) == [("Hallo", "Hallo")]  # free text: only what is there


@pytest.mark.parametrize("cap", [1, 2, 5, 16, 24, 1000])
def test_stops_stay_within_the_cap_and_keep_each_controls_starting_value(cap):
    controls = {"angle": widgets.IntSlider(160, min=0, max=355, step=5), "on": widgets.Checkbox(True),
                "scale": widgets.FloatLogSlider(0.5, base=10, min=-2, max=1, step=0.05),
                "text": widgets.Text("fixed"), "off": widgets.IntSlider(3, min=0, max=9, disabled=True)}
    stops = choose_stops(controls, cap)
    assert math.prod(len(s) for s in stops.values()) <= cap
    assert 160 in [v for v, _ in stops["angle"]] and True in [v for v, _ in stops["on"]]
    assert min(abs(v - 0.5) for v, _ in stops["scale"]) < 0.01  # the slider's stop nearest its value, 10^-0.3
    assert stops["text"] == [("fixed", "fixed")] and stops["off"] == [(3, "3")]  # disabled: stays where it is
    if cap >= 16:  # enough room: the checkbox has both states, a slider at least its two ends
        assert len(stops["on"]) == 2 and {0, 355} <= {v for v, _ in stops["angle"]}
    if cap == 1000:
        assert len(stops["angle"]) * len(stops["scale"]) * 2 > 500  # the room is used, not left empty
    with pytest.raises(ValueError, match="at least 1"):
        choose_stops(controls, 0)


def test_every_state_shows_the_figure_drawn_for_its_values():
    controls = {"n": widgets.IntSlider(2, min=0, max=4), "mode": widgets.Dropdown(options=["sum", "max"], value="max"),
                "text": widgets.Text("fixed"), "flag": widgets.Checkbox(False)}
    page_html = render_static("Explore", controls, draw_values, max_states=24)
    data = page_data(page_html)
    stops = choose_stops(controls, 24)
    assert data["controls"] == ["n", "mode", "flag"]  # the text box does not move
    moving = [stops[name] for name in data["controls"]]
    assert len(data["states"]) == math.prod(len(s) for s in moving) <= 24
    for state, combination in enumerate(itertools.product(*moving)):
        values = {"text": "fixed", **{name: value for name, (value, _) in zip(data["controls"], combination)}}
        expected = static_explorer._png_base64(draw_values(**values))
        assert pixels(data["images"][data["states"][state]]) == pixels(expected), values
    start = [[v for v, _ in s].index(controls[n].value) for n, s in zip(data["controls"], moving)]
    first = sum(i * math.prod(len(s) for s in moving[k + 1:]) for k, i in enumerate(start))
    assert f'data-state="{first}"' in page_html and data["images"][data["states"][first]] in page_html


def test_equal_figures_are_stored_once_and_fixed_controls_say_so():
    controls = {"n": widgets.IntSlider(0, min=0, max=3), "ignored": widgets.Checkbox(False)}
    page_html = render_static("t", controls, lambda n, ignored: draw_values(n=n))
    data = page_data(page_html)
    assert len(data["states"]) == 8 and len(data["images"]) == 4
    menu = render_static("t", {"k": widgets.Dropdown(options=[1, 2, 3])}, lambda k: draw_values(k=k))
    assert '<select data-control="k">' in menu and 'type="range"' not in menu  # numbers in a menu: still a menu
    only_text = render_static("t", {"text": widgets.Text("a")}, lambda text: draw_values(text=text))
    assert "(fixed in the book)" in only_text and page_data(only_text)["images"].__len__() == 1


def test_the_explorer_is_static_when_the_book_asks_and_live_otherwise(displayed, monkeypatch):
    calls, _ = displayed
    seen = []

    def draw(text, size):
        seen.append((text, size))
        return draw_values(text=text, size=size)

    controls = {"text": widgets.Text("typed"), "size": widgets.IntSlider(1, min=1, max=2)}
    menu = widgets.Dropdown(options=["eins", "zwei"], value="eins")
    explorer = Explorer("Translate", controls, draw, book_controls={"text": menu})
    monkeypatch.setenv(ENVIRONMENT_FLAG, "1")
    explorer._ipython_display_()
    (bundle, _), = calls
    assert set(bundle) == {"text/html", "text/plain"}
    assert '<select data-control="text">' in bundle["text/html"] and 'type="range"' in bundle["text/html"]
    assert sorted(seen) == [("eins", 1), ("eins", 2), ("zwei", 1), ("zwei", 2)]  # the menu replaced the text box
    monkeypatch.setenv(ENVIRONMENT_FLAG, "0")
    explorer._ipython_display_()
    assert calls[1][0] is explorer.widget
    with pytest.raises(ValueError, match=r"\['typo'\] are not controls"):
        Explorer("t", controls, draw, book_controls={"typo": menu})


def test_the_book_extension_asks_for_static_explorers(monkeypatch):
    environment = {}
    monkeypatch.setattr(book.os, "environ", environment)

    class App:
        def connect(self, *args, **kwargs):
            pass

    book.setup(App())
    assert environment == {ENVIRONMENT_FLAG: "1"}


@pytest.mark.slow  # starts chromium: a few seconds
def test_moving_a_control_in_the_browser_shows_that_settings_figure(offline_page, tmp_path):
    controls = {"n": widgets.IntSlider(0, min=0, max=3, description="n"), "flag": widgets.Checkbox(False),
                "mode": widgets.Dropdown(options=["sum", "max"])}
    body = render_static("Explore", controls, draw_values)
    data = page_data(body)
    page_file = tmp_path / "page.html"
    page_file.write_text(f"<!doctype html><html><body>{body}</body></html>", encoding="utf-8")
    page = offline_page
    page.errors.clear()
    page.console_errors.clear()
    page.goto(page_file.as_uri())

    def shown():
        return page.evaluate("() => document.querySelector('.course-static-explorer img').src.split(',')[1]")

    assert shown() == data["images"][data["states"][0]]
    page.focus("input[type=range]")
    page.keyboard.press("ArrowRight")  # n: 0 -> 1, as a reader moves it
    assert shown() == data["images"][data["states"][1 * 4]]
    assert page.inner_text("input[type=range] + output") == "1"
    page.check("input[type=checkbox]")
    page.select_option("select", "1")
    assert shown() == data["images"][data["states"][1 * 4 + 1 * 2 + 1]]
    assert page.errors == [] and page.console_errors == []
